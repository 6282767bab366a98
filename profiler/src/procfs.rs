//! Readers of /proc, with the filesystem root as a parameter so that they test on fixtures.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

/// Sums the `Rss:` of the mappings in a /proc/PID/smaps text whose start lies in one of
/// `ranges` (half-open `[start, end)`).
pub fn smaps_rss_in_ranges(smaps: &str, ranges: &[(u64, u64)]) -> u64 {
    let mut total: u64 = 0;
    let mut counting = false;
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            if counting {
                // A value too large to be bytes is as unreadable as garbage: counted as 0.
                let bytes = rss
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .and_then(|kib| kib.checked_mul(1024))
                    .unwrap_or(0);
                total = total.saturating_add(bytes);
            }
            continue;
        }
        // A mapping header starts with `start-end `; attribute lines start with a capital.
        let header_start = line
            .split_once('-')
            .filter(|(start, _)| !start.is_empty() && start.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|(start, _)| u64::from_str_radix(start, 16).ok());
        if let Some(start) = header_start {
            counting = ranges
                .iter()
                .any(|&(low, high)| start >= low && start < high);
        }
    }
    total
}

/// Resident bytes of a process's mappings that start inside `ranges`.
pub fn resident_in_ranges(root: &Path, pid: u32, ranges: &[(u64, u64)]) -> Option<u64> {
    if ranges.is_empty() {
        return Some(0);
    }
    let smaps = fs::read_to_string(root.join(format!("proc/{pid}/smaps"))).ok()?;
    Some(smaps_rss_in_ranges(&smaps, ranges))
}

/// A process and all its living descendants, from the ppid field of /proc/*/stat.
pub fn process_tree(root: &Path, pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir(root.join("proc")) {
        for entry in entries.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(parent) = fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| parent_pid(&stat))
            {
                children.entry(parent).or_default().push(child);
            }
        }
    }
    let mut tree = vec![pid];
    let mut seen: HashSet<u32> = HashSet::from([pid]);
    let mut index = 0;
    while index < tree.len() {
        for &child in children
            .get(&tree[index])
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if seen.insert(child) {
                tree.push(child);
            }
        }
        index += 1;
    }
    tree
}

/// The ppid field of a /proc/PID/stat text (after the parenthesised command, which may itself
/// contain spaces and parentheses).
pub fn parent_pid(stat: &str) -> Option<u32> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    after_command.split_whitespace().nth(1)?.parse().ok()
}

/// The `Threads:` count of /proc/PID/status.
pub fn thread_count(root: &Path, pid: u32) -> Option<u64> {
    let status = fs::read_to_string(root.join(format!("proc/{pid}/status"))).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
}

/// Resident memory of a process by `profiler_common::rss_member` (file, anon, swap, shmem),
/// in bytes, from /proc/PID/status (the same per-mm counters rss_stat reports).
pub fn resident_by_member(root: &Path, pid: u32) -> Option<[i64; 4]> {
    let status = fs::read_to_string(root.join(format!("proc/{pid}/status"))).ok()?;
    Some(parse_status_resident(&status))
}

pub fn parse_status_resident(status: &str) -> [i64; 4] {
    let read = |key: &str| -> i64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<i64>()
                    .ok()
            })
            .and_then(|kib| kib.checked_mul(1024))
            .unwrap_or(0)
    };
    [
        read("RssFile:"),
        read("RssAnon:"),
        read("VmSwap:"),
        read("RssShmem:"),
    ]
}

/// Thread stacks as glibc and musl lay them out, found in a /proc/PID/maps text: an anonymous
/// private read-write mapping directly above a no-access guard mapping (the stack grows down
/// towards its guard). Returns the stack ranges, guard included. A heuristic for the agent,
/// which traces no mmap calls: runtimes with their own stack layout (Go, the JVM) are not
/// recognised.
pub fn thread_stack_ranges(maps: &str) -> Vec<(u64, u64)> {
    let mut ranges = Vec::new();
    let mut guard: Option<(u64, u64)> = None;
    for line in maps.lines() {
        let Some(mapping) = crate::stacks::modules::parse_maps_line(line) else {
            guard = None;
            continue;
        };
        let anonymous = mapping.inode == 0 && mapping.path.is_empty();
        let perms = line.split(' ').nth(1).unwrap_or("");
        match guard {
            Some((guard_start, guard_end))
                if anonymous && perms.starts_with("rw-p") && mapping.start == guard_end =>
            {
                ranges.push((guard_start, mapping.end));
                guard = None;
            }
            _ => {
                guard = (anonymous
                    && perms.starts_with("---p")
                    && mapping.end - mapping.start <= 1 << 20)
                    .then_some((mapping.start, mapping.end));
            }
        }
    }
    ranges
}

/// Thread-stack (reserved, resident) of a process with more than one thread.
pub fn thread_stacks(root: &Path, pid: u32) -> Option<(u64, u64)> {
    let maps = fs::read_to_string(root.join(format!("proc/{pid}/maps"))).ok()?;
    let ranges = thread_stack_ranges(&maps);
    let reserved = ranges.iter().map(|(low, high)| high - low).sum();
    let resident = resident_in_ranges(root, pid, &ranges)?;
    Some((reserved, resident))
}

/// Address space reserved by a process (VmSize of /proc/PID/status), in bytes.
pub fn reserved_bytes(root: &Path, pid: u32) -> Option<u64> {
    let status = fs::read_to_string(root.join(format!("proc/{pid}/status"))).ok()?;
    parse_status_vm_size(&status)
}

pub fn parse_status_vm_size(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmSize:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .and_then(|kib| kib.checked_mul(1024))
}

/// A process's /proc/PID/maps text; None when it is gone or unreadable.
pub fn read_maps(root: &Path, pid: u32) -> Option<String> {
    fs::read_to_string(root.join(format!("proc/{pid}/maps"))).ok()
}

/// The pids (or thread ids) listed in a `cgroup.procs` or `cgroup.threads` file, at most
/// `limit` of them; empty when the file is gone or unreadable.
pub fn read_pids(file: &Path, limit: usize) -> Vec<u32> {
    fs::read_to_string(file)
        .map(|text| {
            text.lines()
                .filter_map(|line| line.trim().parse().ok())
                .take(limit)
                .collect()
        })
        .unwrap_or_default()
}

/// The process's command name (/proc/PID/comm).
pub fn command_name(root: &Path, pid: u32) -> Option<String> {
    fs::read_to_string(root.join(format!("proc/{pid}/comm")))
        .ok()
        .map(|name| name.trim_end().to_owned())
}

#[cfg(test)]
mod vm_size_tests {
    use super::*;

    #[test]
    fn glibc_thread_stacks_are_found_in_maps() {
        // Two pthread stacks (4 KiB guard + 8 MiB), a malloc arena's PROT_NONE reserve (not
        // followed by its rw part at the guard's end), libc, and the main stack.
        let maps = "\
7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n\
7f0000001000-7f0000801000 rw-p 00000000 00:00 0 \n\
7f0000801000-7f0000802000 ---p 00000000 00:00 0 \n\
7f0000802000-7f0001002000 rw-p 00000000 00:00 0 \n\
7f1000000000-7f1000021000 rw-p 00000000 00:00 0 \n\
7f1000021000-7f1004000000 ---p 00000000 00:00 0 \n\
7f2000000000-7f2000026000 r--p 00000000 fe:01 1837606 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
7ffd5a1d0000-7ffd5a1f1000 rw-p 00000000 00:00 0                          [stack]\n";
        let ranges = thread_stack_ranges(maps);
        assert_eq!(
            ranges,
            vec![
                (0x7f0000000000, 0x7f0000801000),
                (0x7f0000801000, 0x7f0001002000)
            ]
        );
        assert!(thread_stack_ranges("garbage\n").is_empty());
    }

    #[test]
    fn vm_size_is_read_in_bytes_and_garbage_is_none() {
        assert_eq!(
            parse_status_vm_size("Name:\tx\nVmSize:\t  2048 kB\n"),
            Some(2 << 20)
        );
        assert_eq!(
            parse_status_vm_size("VmSize:\t99999999999999999999 kB\n"),
            None
        );
        assert_eq!(parse_status_vm_size("VmSize: lots\n"), None);
        assert_eq!(parse_status_vm_size(""), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
7f0000000000-7f0000001000 ---p 00000000 00:00 0 
Size:                  4 kB
Rss:                   0 kB
7f0000001000-7f0000101000 rw-p 00000000 00:00 0 
Size:               1024 kB
Rss:                  96 kB
VmFlags: rd wr mr mw me ac 
7f1000000000-7f1000100000 rw-p 00000000 00:00 0 
Size:               1024 kB
Rss:                1024 kB
";

    #[test]
    fn sums_rss_of_mappings_in_the_ranges() {
        let ranges = [(0x7f00_0000_0000, 0x7f00_0010_1000)];
        assert_eq!(smaps_rss_in_ranges(SMAPS, &ranges), 96 * 1024);
        assert_eq!(smaps_rss_in_ranges(SMAPS, &[]), 0);
        assert_eq!(smaps_rss_in_ranges("garbage\nRss: x kB\n", &ranges), 0);
    }

    #[test]
    fn reads_resident_members_from_status() {
        let status = "Name:\tx\nVmSwap:\t       8 kB\nRssAnon:\t   49152 kB\nRssFile:\t    1024 kB\nRssShmem:\t       0 kB\n";
        assert_eq!(
            parse_status_resident(status),
            [1024 * 1024, 48 << 20, 8192, 0]
        );
        assert_eq!(parse_status_resident("garbage"), [0; 4]);
    }

    /// Found by the proc_files fuzz target: a huge `Rss:` overflowed `kib * 1024` (a panic in
    /// debug builds, a wrapped sum in release).
    #[test]
    fn huge_rss_values_are_skipped_not_overflowed() {
        let smaps = "556423eb4000-       b8000 r--p 00000000 fe:00 247534      /usr/bin/mawk\n\
                     Rss:               99999999999999999kB\n\
                     556423eb8000-556423ed1000 r-xp 00004000 fe:00 247534  /usr/bin/mawk\n\
                     Rss:                 100 kB\n";
        assert_eq!(smaps_rss_in_ranges(smaps, &[(0, u64::MAX)]), 100 * 1024);
        // Two values that each fit but whose sum does not: the total saturates.
        let max_kib = u64::MAX / 1024;
        let smaps = format!("1000-2000 r--p 0 0:0 0\nRss: {max_kib} kB\n3000-4000 r--p 0 0:0 0\nRss: {max_kib} kB\n");
        assert_eq!(smaps_rss_in_ranges(&smaps, &[(0, u64::MAX)]), u64::MAX);
        let status = "RssAnon:\t99999999999999999 kB\nRssFile:\t4 kB\n";
        assert_eq!(parse_status_resident(status), [4096, 0, 0, 0]);
    }

    #[test]
    fn reads_the_parent_pid_past_a_tricky_command() {
        assert_eq!(parent_pid("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(parent_pid("no parens"), None);
    }

    #[test]
    fn builds_a_process_tree_from_a_fixture() {
        let root = std::env::temp_dir().join(format!("headroom-proc-{}", std::process::id()));
        for (pid, ppid) in [(10, 1), (11, 10), (12, 11), (13, 1)] {
            let dir = root.join(format!("proc/{pid}"));
            fs::create_dir_all(&dir).expect("fixture");
            fs::write(dir.join("stat"), format!("{pid} (x) S {ppid} 0 0")).expect("fixture");
        }
        let mut tree = process_tree(&root, 10);
        tree.sort_unstable();
        assert_eq!(tree, vec![10, 11, 12]);
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
