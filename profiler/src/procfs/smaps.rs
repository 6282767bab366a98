//! /proc/PID/smaps: resident bytes of the mappings in chosen address ranges.

use std::path::Path;

use super::read_proc_file;

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
    let smaps = read_proc_file(root, Some(pid), "smaps").ok()?;
    Some(smaps_rss_in_ranges(&smaps, ranges))
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
    }
}
