//! Readers of /proc, with the filesystem root as a parameter so that they test on fixtures.
//! Every /proc file headroom reads is read here:
//!
//! - [`maps`]: /proc/PID/maps, its one line parser, and the thread stacks found in it;
//! - [`smaps`]: resident bytes of chosen mappings (/proc/PID/smaps);
//! - [`status`]: /proc/PID/status counters (threads, resident members, VmSize);
//! - [`tree`]: process trees from /proc/PID/stat;
//! - [`lines`]: streaming, capped reads under a per-tick budget, and why a read was skipped;
//! - [`runtime`]: the language runtime, allocator and memory ceilings of a process (bounded
//!   reads of cmdline, environ and maps);
//!
//! plus the pid lists of cgroup files (`cgroup.procs`, `cgroup.threads`), streamed.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

pub mod lines;
mod maps;
pub mod runtime;
mod smaps;
mod status;
mod tree;

pub use lines::{ReadBudget, Skip, Skips};
pub use maps::{
    parse_maps_line, read_maps, thread_stack_ranges, thread_stacks, MapsLine, StackFinder,
    MAX_MAPPINGS_READ,
};
pub use smaps::{resident_in_ranges, resident_in_ranges_bounded, smaps_rss_in_ranges};
pub use status::{
    parse_status_resident, parse_status_vm_size, peak_resident_bytes, reserved_and_threads,
    reserved_bytes, resident_by_member, thread_count,
};
pub use tree::{parent_pid, process_tree};

#[derive(Debug, Error)]
pub enum ProcfsError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a /proc/PID/maps line: no valid {field}")]
    MapsLine { field: &'static str },
}

/// /proc/`pid`/`name` under `root` (`pid` None: the calling process, /proc/self).
pub fn proc_path(root: &Path, pid: Option<u32>, name: &str) -> PathBuf {
    match pid {
        Some(pid) => root.join(format!("proc/{pid}/{name}")),
        None => root.join(format!("proc/self/{name}")),
    }
}

/// Reads /proc/`pid`/`name` under `root` (`pid` None: the calling process, /proc/self).
pub fn read_proc_file(root: &Path, pid: Option<u32>, name: &str) -> Result<String, ProcfsError> {
    let path = proc_path(root, pid, name);
    fs::read_to_string(&path).map_err(|source| ProcfsError::Read { path, source })
}

/// Whether /proc/`pid` exists under `root`.
pub fn process_exists(root: &Path, pid: u32) -> bool {
    root.join(format!("proc/{pid}")).exists()
}

/// The pids (or thread ids) listed in a `cgroup.procs` or `cgroup.threads` file, at most
/// `limit` of them; empty when the file is gone or unreadable. Streamed: a cgroup with a
/// million tasks costs `limit` entries, not the file.
pub fn read_pids(file: &Path, limit: usize) -> Vec<u32> {
    read_pids_bounded(file, limit, &mut ReadBudget::unlimited())
        .map(|(pids, _)| pids)
        .unwrap_or_default()
}

/// Limits of a pid list line (a pid is at most 7 digits; garbage longer than this is skipped).
const PID_LINE: lines::Limits = lines::Limits {
    max_line_bytes: 32,
    max_lines: u64::MAX,
};

/// The first `limit` pids of a `cgroup.procs` or `cgroup.threads` file, and whether there were
/// more; `Err` when the file could not be read (counted in `budget.skips`). Reading stops at
/// the first pid past `limit`, so the budget pays for `limit + 1` lines at most.
pub fn read_pids_bounded(
    file: &Path,
    limit: usize,
    budget: &mut ReadBudget,
) -> Result<(Vec<u32>, bool), Skip> {
    let mut pids = Vec::new();
    let mut more = false;
    lines::for_each_line(file, PID_LINE, budget, |line| {
        if let Ok(pid) = line.trim().parse() {
            if pids.len() >= limit {
                more = true;
                return std::ops::ControlFlow::Break(());
            }
            pids.push(pid);
        }
        std::ops::ControlFlow::Continue(())
    })?;
    Ok((pids, more))
}

/// The number of pids in a `cgroup.procs` or `cgroup.threads` file, counted without keeping
/// them (a line costs the budget like any other).
pub fn count_pids(file: &Path, budget: &mut ReadBudget) -> Result<u64, Skip> {
    let mut count = 0u64;
    lines::for_each_line(file, PID_LINE, budget, |line| {
        count += u64::from(line.trim().parse::<u32>().is_ok());
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(count)
}

/// The process's command name (/proc/PID/comm).
pub fn command_name(root: &Path, pid: u32) -> Option<String> {
    read_proc_file(root, Some(pid), "comm")
        .ok()
        .map(|name| name.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pids_up_to_the_limit_and_names_unreadable_files() {
        let root = std::env::temp_dir().join(format!("headroom-procfs-{}", std::process::id()));
        fs::create_dir_all(root.join("proc/7")).expect("fixture");
        fs::write(root.join("cgroup.procs"), "12\n\nx\n 34 \n56\n").expect("fixture");
        assert_eq!(
            read_pids(&root.join("cgroup.procs"), usize::MAX),
            [12, 34, 56]
        );
        assert_eq!(read_pids(&root.join("cgroup.procs"), 2), [12, 34]);
        assert!(read_pids(&root.join("missing"), usize::MAX).is_empty());
        fs::write(root.join("proc/7/comm"), "worker\n").expect("fixture");
        assert_eq!(command_name(&root, 7).as_deref(), Some("worker"));
        assert!(process_exists(&root, 7));
        assert!(!process_exists(&root, 8));
        assert_eq!(
            proc_path(&root, None, "cgroup"),
            root.join("proc/self/cgroup")
        );
        let err = read_proc_file(&root, Some(8), "maps").expect_err("no such process");
        assert!(err.to_string().contains("proc/8/maps"), "{err}");
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
