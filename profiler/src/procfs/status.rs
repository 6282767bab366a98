//! /proc/PID/status: thread count, resident memory by member, reserved address space.

use std::path::Path;

use super::{
    lines::{read_small, Skip, Skips},
    proc_path, read_proc_file,
};

/// The `Threads:` count of /proc/PID/status.
pub fn thread_count(root: &Path, pid: u32) -> Option<u64> {
    let status = read_proc_file(root, Some(pid), "status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
}

/// Resident memory of a process by `profiler_common::rss_member` (file, anon, swap, shmem),
/// in bytes, from /proc/PID/status (the same per-mm counters rss_stat reports).
pub fn resident_by_member(root: &Path, pid: u32) -> Option<[i64; 4]> {
    let status = read_proc_file(root, Some(pid), "status").ok()?;
    Some(parse_status_resident(&status))
}

/// [`resident_by_member`] of a /proc/PID/status text; unreadable values count as 0.
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

/// Address space reserved by a process (VmSize of /proc/PID/status), in bytes.
pub fn reserved_bytes(root: &Path, pid: u32) -> Option<u64> {
    let status = read_proc_file(root, Some(pid), "status").ok()?;
    parse_status_vm_size(&status)
}

/// Most of a /proc/PID/status the agent reads: about 1.5 KB, but its `Groups:` line grows
/// with a process's supplementary groups (up to 65,536 of them).
const MAX_STATUS_BYTES: u64 = 64 * 1024;

/// Reserved address space (VmSize) and thread count (Threads) of a process, /proc/PID/status
/// read under a size cap; `Err` names why they are not known (the process went away, no
/// permission, or the file is not a status file), counted in `skips`. A kernel thread has no
/// address space and no VmSize line: 0.
pub fn reserved_and_threads(root: &Path, pid: u32, skips: &mut Skips) -> Result<(u64, u64), Skip> {
    let status = read_small(
        &proc_path(root, Some(pid), "status"),
        MAX_STATUS_BYTES,
        skips,
    )?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok());
    let reserved = match parse_status_vm_size(&status) {
        Some(bytes) => Some(bytes),
        None if !status.lines().any(|line| line.starts_with("VmSize:")) => Some(0),
        None => None,
    };
    match (reserved, threads) {
        (Some(reserved), Some(threads)) => Ok((reserved, threads)),
        _ => {
            skips.add(Skip::Unreadable);
            Err(Skip::Unreadable)
        }
    }
}

/// VmSize of a /proc/PID/status text, in bytes.
pub fn parse_status_vm_size(status: &str) -> Option<u64> {
    parse_status_kib(status, "VmSize:")
}

/// A process's resident high-water mark over its life (VmHWM of /proc/PID/status), in bytes.
pub fn peak_resident_bytes(root: &Path, pid: u32) -> Option<u64> {
    let status = read_proc_file(root, Some(pid), "status").ok()?;
    parse_status_kib(&status, "VmHWM:")
}

/// A `Key:   N kB` line of a /proc/PID/status text, in bytes.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .and_then(|kib| kib.checked_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resident_members_from_status() {
        let status = "Name:\tx\nVmSwap:\t       8 kB\nRssAnon:\t   49152 kB\nRssFile:\t    1024 kB\nRssShmem:\t       0 kB\n";
        assert_eq!(
            parse_status_resident(status),
            [1024 * 1024, 48 << 20, 8192, 0]
        );
        assert_eq!(parse_status_resident("garbage"), [0; 4]);
        // A value too large to be bytes is skipped, not overflowed.
        let status = "RssAnon:\t99999999999999999 kB\nRssFile:\t4 kB\n";
        assert_eq!(parse_status_resident(status), [4096, 0, 0, 0]);
    }

    #[test]
    fn reserved_and_threads_name_why_they_are_unknown() {
        let root = std::env::temp_dir().join(format!("headroom-status-{}", std::process::id()));
        std::fs::create_dir_all(root.join("proc/5")).expect("fixture");
        std::fs::create_dir_all(root.join("proc/6")).expect("fixture");
        std::fs::create_dir_all(root.join("proc/7")).expect("fixture");
        std::fs::write(root.join("proc/5/status"), "VmSize:\t 8 kB\nThreads:\t3\n").expect("w");
        std::fs::write(root.join("proc/6/status"), "Name:\tkthreadd\nThreads:\t1\n").expect("w");
        std::fs::write(root.join("proc/7/status"), "VmSize:\tlots\nThreads:\t1\n").expect("w");
        let mut skips = Skips::default();
        assert_eq!(reserved_and_threads(&root, 5, &mut skips), Ok((8192, 3)));
        assert_eq!(reserved_and_threads(&root, 6, &mut skips), Ok((0, 1)));
        assert_eq!(
            reserved_and_threads(&root, 7, &mut skips),
            Err(Skip::Unreadable)
        );
        assert_eq!(reserved_and_threads(&root, 8, &mut skips), Err(Skip::Gone));
        assert_eq!((skips.get(Skip::Unreadable), skips.get(Skip::Gone)), (1, 1));
        std::fs::remove_dir_all(&root).expect("cleanup");
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
