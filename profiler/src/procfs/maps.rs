//! /proc/PID/maps: reading it, the one parser of its lines (used by stack symbolization,
//! region accounting and the thread-stack heuristic), and thread stacks found in it.

use std::path::Path;

use std::ops::ControlFlow;

use super::{
    lines::{for_each_line, Limits, ReadBudget, Skip},
    proc_path, read_proc_file, resident_in_ranges_bounded, ProcfsError,
};

/// Largest guard mapping the thread-stack heuristic accepts below a stack.
const MAX_STACK_GUARD_BYTES: u64 = 1 << 20;

/// One line of /proc/PID/maps: `start-end perms offset dev inode [path]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapsLine<'a> {
    pub start: u64,
    pub end: u64,
    /// `rwxp`-style permissions: read, write, execute, then `p` (private) or `s` (shared).
    pub perms: &'a str,
    /// File offset mapped at `start`.
    pub offset: u64,
    /// `major:minor` of the mapped file's device.
    pub device: &'a str,
    /// The mapped file's inode; 0 for anonymous mappings.
    pub inode: u64,
    /// The file's path, a `[heap]`-style name, or empty for anonymous mappings. May contain
    /// spaces (a deleted file ends in ` (deleted)`).
    pub path: &'a str,
}

impl MapsLine<'_> {
    pub fn readable(&self) -> bool {
        self.perm(0, b'r')
    }

    pub fn writable(&self) -> bool {
        self.perm(1, b'w')
    }

    pub fn executable(&self) -> bool {
        self.perm(2, b'x')
    }

    /// A `MAP_SHARED` mapping (`s` in the fourth permission).
    pub fn shared(&self) -> bool {
        self.perm(3, b's')
    }

    /// The permissions as `PROT_READ | PROT_WRITE | PROT_EXEC` bits.
    pub fn prot(&self) -> u32 {
        u32::from(self.readable())
            | (u32::from(self.writable()) << 1)
            | (u32::from(self.executable()) << 2)
    }

    /// No file and no name: plain anonymous memory.
    pub fn anonymous(&self) -> bool {
        self.inode == 0 && self.path.is_empty()
    }

    fn perm(&self, index: usize, flag: u8) -> bool {
        self.perms.as_bytes().get(index) == Some(&flag)
    }
}

/// Parses one /proc/PID/maps line; the error names the first field that is missing or
/// malformed.
pub fn parse_maps_line(line: &str) -> Result<MapsLine<'_>, ProcfsError> {
    let bad = |field| ProcfsError::MapsLine { field };
    let (range, rest) = next_field(line).ok_or(bad("address range"))?;
    let (perms, rest) = next_field(rest).ok_or(bad("permissions"))?;
    let (offset, rest) = next_field(rest).ok_or(bad("offset"))?;
    let (device, rest) = next_field(rest).ok_or(bad("device"))?;
    let (inode, rest) = next_field(rest).ok_or(bad("inode"))?;
    let (start, end) = range.split_once('-').ok_or(bad("address range"))?;
    let hex = |text: &str, field| u64::from_str_radix(text, 16).map_err(|_| bad(field));
    Ok(MapsLine {
        start: hex(start, "start address")?,
        end: hex(end, "end address")?,
        perms,
        offset: hex(offset, "offset")?,
        device,
        inode: inode.parse().map_err(|_| bad("inode"))?,
        path: rest.trim_start(),
    })
}

/// The next whitespace-separated field of `text`, and what follows it.
fn next_field(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    Some(text.split_at(text.find(char::is_whitespace).unwrap_or(text.len())))
}

/// A process's /proc/PID/maps text; None when it is gone or unreadable.
pub fn read_maps(root: &Path, pid: u32) -> Option<String> {
    read_proc_file(root, Some(pid), "maps").ok()
}

/// Most mappings of one process the agent reads: a process may hold 65,530 (the default
/// `vm.max_map_count`) or far more; one with more thread stacks than this reads as a gap.
pub const MAX_MAPPINGS_READ: u64 = 16_384;
/// Most thread stacks kept for one process (each range is 16 bytes).
const MAX_STACKS: usize = 16_384;

/// Thread stacks as glibc and musl lay them out, found one /proc/PID/maps line at a time: an
/// anonymous private read-write mapping directly above a no-access guard mapping (the stack
/// grows down towards its guard). A heuristic for the agent, which traces no mmap calls:
/// runtimes with their own stack layout (Go, the JVM) are not recognised.
#[derive(Debug, Default)]
pub struct StackFinder {
    ranges: Vec<(u64, u64)>,
    guard: Option<(u64, u64)>,
    overflow: bool,
}

impl StackFinder {
    /// Takes the next maps line.
    pub fn line(&mut self, line: &str) {
        let Ok(mapping) = parse_maps_line(line) else {
            self.guard = None;
            return;
        };
        let anonymous = mapping.anonymous();
        match self.guard {
            Some((guard_start, guard_end))
                if anonymous && mapping.perms.starts_with("rw-p") && mapping.start == guard_end =>
            {
                if self.ranges.len() < MAX_STACKS {
                    self.ranges.push((guard_start, mapping.end));
                } else {
                    self.overflow = true;
                }
                self.guard = None;
            }
            _ => {
                let small = mapping
                    .end
                    .checked_sub(mapping.start)
                    .is_some_and(|length| length <= MAX_STACK_GUARD_BYTES);
                self.guard = (anonymous && mapping.perms.starts_with("---p") && small)
                    .then_some((mapping.start, mapping.end));
            }
        }
    }

    /// The stack ranges found, guard included; `Err` when there were more than could be kept.
    pub fn finish(self) -> Result<Vec<(u64, u64)>, Skip> {
        if self.overflow {
            Err(Skip::ProcessCap)
        } else {
            Ok(self.ranges)
        }
    }
}

/// [`StackFinder`] over a whole /proc/PID/maps text.
pub fn thread_stack_ranges(maps: &str) -> Vec<(u64, u64)> {
    let mut finder = StackFinder::default();
    for line in maps.lines() {
        finder.line(line);
    }
    finder.ranges
}

/// Thread-stack (reserved, resident) of a process, from /proc/PID/maps and smaps streamed
/// under `budget` and [`MAX_MAPPINGS_READ`]: `Err` names why the figure is not known (a cap,
/// the budget, no permission, or the process went away), and is counted in `budget.skips`.
pub fn thread_stacks(root: &Path, pid: u32, budget: &mut ReadBudget) -> Result<(u64, u64), Skip> {
    let mut finder = StackFinder::default();
    let limits = Limits {
        max_lines: MAX_MAPPINGS_READ,
        ..Limits::default()
    };
    for_each_line(
        &proc_path(root, Some(pid), "maps"),
        limits,
        budget,
        |line| {
            finder.line(line);
            ControlFlow::Continue(())
        },
    )?;
    let ranges = finder
        .finish()
        .inspect_err(|&reason| budget.skips.add(reason))?;
    let reserved = ranges.iter().fold(0u64, |sum, (low, high)| {
        sum.saturating_add(high.saturating_sub(*low))
    });
    let resident = resident_in_ranges_bounded(root, pid, &ranges, budget)?;
    Ok((reserved, resident))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let line = parse_maps_line(
            "7f2c1a228000-7f2c1a3a1000 r-xp 00026000 fe:01 1837606                    /usr/lib/x86_64-linux-gnu/libc.so.6",
        )
        .expect("parsed");
        assert_eq!(line.start, 0x7f2c1a228000);
        assert_eq!(line.end, 0x7f2c1a3a1000);
        assert_eq!(line.perms, "r-xp");
        assert!(line.executable() && !line.shared());
        assert_eq!(line.prot(), 0x5);
        assert_eq!(line.offset, 0x26000);
        assert_eq!(line.device, "fe:01");
        assert_eq!(line.inode, 1837606);
        assert_eq!(line.path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let anon = parse_maps_line("7ffd5a1f0000-7ffd5a1f2000 r-xp 00000000 00:00 0").expect("ok");
        assert_eq!((anon.inode, anon.path), (0, ""));
        assert!(anon.anonymous());
        let trailing = parse_maps_line("1000-2000 ---p 00000000 00:00 0 ").expect("ok");
        assert_eq!((trailing.path, trailing.prot()), ("", 0));
        let deleted =
            parse_maps_line("1000-3000 rw-s 00000000 00:01 5    /dev/zero (deleted)").expect("ok");
        assert_eq!(deleted.path, "/dev/zero (deleted)");
        assert!(deleted.shared() && !deleted.anonymous());
        let err = parse_maps_line("garbage").expect_err("one field");
        assert!(err.to_string().contains("permissions"), "{err}");
        let err = parse_maps_line("zz-10 r-xp 0 00:00 0").expect_err("bad hex");
        assert!(err.to_string().contains("start address"), "{err}");
        assert!(parse_maps_line("10-20 r-xp 0 00:00 x").is_err());
        assert!(parse_maps_line("").is_err());
    }

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
        // A guard whose end lies below its start is not a guard (and does not overflow).
        assert!(
            thread_stack_ranges("2000-1000 ---p 0 00:00 0\n1000-3000 rw-p 0 00:00 0\n").is_empty()
        );
    }
}
