//! The /proc parsers: maps, smaps, stat and status (`procfs`), and /proc/PID/cgroup and
//! /proc/PID/mountinfo (`cgroups`). Each input is fed to every parser: the formats share
//! enough shape (colons, hex ranges, `kB` values) that mutations of one exercise the others.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use profiler::{cgroups, procfs};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Everything, nothing, and a typical heap range, so the Rss sums are reached.
    for ranges in [
        &[(0, u64::MAX)][..],
        &[],
        &[
            (0x5555_0000_0000, 0x5556_0000_0000),
            (0x7f00_0000_0000, 0x7fff_ffff_ffff),
        ],
    ] {
        let _ = procfs::smaps_rss_in_ranges(&text, ranges);
    }
    for line in text.lines() {
        if let Err(err) = procfs::parse_maps_line(line) {
            drop(err.to_string());
        }
    }
    let _ = procfs::thread_stack_ranges(&text);
    let _ = procfs::parent_pid(&text);
    let _ = procfs::parse_status_resident(&text);
    match cgroups::parse_proc_cgroup(&text, Path::new("/proc/fuzz/cgroup")) {
        Ok(found) => {
            assert!(found.unified.starts_with('/'), "{found:?}");
        }
        Err(err) => drop(err.to_string()),
    }
    let _ = cgroups::parse_mountinfo(&text);
});
