//! /proc/PID/smaps: resident bytes of the mappings in chosen address ranges.

use std::{ops::ControlFlow, path::Path};

use super::{
    lines::{for_each_line, Limits, ReadBudget, Skip},
    maps::MAX_MAPPINGS_READ,
    proc_path,
};

/// Lines of one mapping in /proc/PID/smaps: a header and about 25 fields on 6.x kernels.
const SMAPS_LINES_PER_MAPPING: u64 = 32;

/// Sums the `Rss:` of smaps mappings whose start lies in one of `ranges` (half-open
/// `[start, end)`), one line at a time.
#[derive(Debug, Default)]
struct RssInRanges {
    total: u64,
    counting: bool,
}

impl RssInRanges {
    /// Takes the next smaps line; `Break` once a mapping starts at or above `end` (smaps is
    /// sorted by address, so nothing after it can be in a range).
    fn line(&mut self, line: &str, ranges: &[(u64, u64)], end: u64) -> ControlFlow<()> {
        if let Some(rss) = line.strip_prefix("Rss:") {
            if self.counting {
                // A value too large to be bytes is as unreadable as garbage: counted as 0.
                let bytes = rss
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .and_then(|kib| kib.checked_mul(1024))
                    .unwrap_or(0);
                self.total = self.total.saturating_add(bytes);
            }
            return ControlFlow::Continue(());
        }
        // A mapping header starts with `start-end `; attribute lines start with a capital.
        let header_start = line
            .split_once('-')
            .filter(|(start, _)| !start.is_empty() && start.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|(start, _)| u64::from_str_radix(start, 16).ok());
        if let Some(start) = header_start {
            if start >= end {
                return ControlFlow::Break(());
            }
            self.counting = ranges
                .iter()
                .any(|&(low, high)| start >= low && start < high);
        }
        ControlFlow::Continue(())
    }
}

/// Sums the `Rss:` of the mappings in a /proc/PID/smaps text whose start lies in one of
/// `ranges` (half-open `[start, end)`).
pub fn smaps_rss_in_ranges(smaps: &str, ranges: &[(u64, u64)]) -> u64 {
    let mut sum = RssInRanges::default();
    for line in smaps.lines() {
        if sum.line(line, ranges, u64::MAX).is_break() {
            break;
        }
    }
    sum.total
}

/// Resident bytes of a process's mappings that start inside `ranges`, /proc/PID/smaps streamed
/// without a budget (a capture's own processes).
pub fn resident_in_ranges(root: &Path, pid: u32, ranges: &[(u64, u64)]) -> Option<u64> {
    resident_in_ranges_bounded(root, pid, ranges, &mut ReadBudget::unlimited()).ok()
}

/// [`resident_in_ranges`] under `budget` and [`MAX_MAPPINGS_READ`] mappings; reading stops
/// after the highest range. `Err` names why the figure is not known.
pub fn resident_in_ranges_bounded(
    root: &Path,
    pid: u32,
    ranges: &[(u64, u64)],
    budget: &mut ReadBudget,
) -> Result<u64, Skip> {
    let Some(end) = ranges.iter().map(|&(_, high)| high).max() else {
        return Ok(0);
    };
    let limits = Limits {
        max_lines: MAX_MAPPINGS_READ * SMAPS_LINES_PER_MAPPING,
        ..Limits::default()
    };
    let mut sum = RssInRanges::default();
    for_each_line(
        &proc_path(root, Some(pid), "smaps"),
        limits,
        budget,
        |line| sum.line(line, ranges, end),
    )?;
    Ok(sum.total)
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
