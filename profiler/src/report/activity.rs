//! What a target's tasks did (kernel counters as volumes), its processes, and what the
//! session lost (dropped events, kernel map entries left).

use serde::{Deserialize, Serialize};

/// How a traced command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitSummary {
    /// Exit code, when it exited normally.
    #[serde(default)]
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    #[serde(default)]
    pub signal: Option<i32>,
}

impl ExitSummary {
    /// The exit code a shell would show: the code, or 128 + the signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => 1,
        }
    }
}

/// Reserved address space by kind, from the mmap counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MappedBytes {
    pub anonymous: u64,
    pub file: u64,
    pub stack: u64,
    pub shared: u64,
    pub no_access: u64,
}

/// What a set of tasks did, in the terms users reason about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActivitySummary {
    pub threads_created: u64,
    pub processes_created: u64,
    /// Most tasks (threads, main threads included) alive at once, when known.
    pub peak_tasks: Option<u64>,
    pub tasks_exited: u64,
    pub execs: u64,
    pub oom_kills: u64,
    pub mmap_calls: u64,
    pub mmap_failures: u64,
    pub mmapped: MappedBytes,
    pub munmap_calls: u64,
    pub munmapped_bytes: u64,
    pub mremap_calls: u64,
    pub mprotect_calls: u64,
    pub brk_calls: u64,
    pub brk_grown_bytes: u64,
    pub brk_shrunk_bytes: u64,
}

/// One process seen during a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    #[serde(default)]
    pub pid: u32,
    /// The process that forked it; None when it arrived by cgroup migration or was already
    /// running.
    #[serde(default)]
    pub parent_pid: Option<u32>,
    pub command: String,
    #[serde(default)]
    pub exited: bool,
    pub activity: ActivitySummary,
    /// Highest program break minus the first one seen since the last exec.
    #[serde(default)]
    pub brk_heap_bytes: u64,
    /// Highest resident total (file + anon + shmem) the kernel saw for this process.
    #[serde(default)]
    pub resident_peak_bytes: u64,
}

/// Events lost or updates skipped, summed over CPUs, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DropCounts {
    pub ringbuf_full: u64,
    pub pending_calls_full: u64,
    pub target_map_full: u64,
    pub process_map_full: u64,
    pub tracked_tgids_full: u64,
    /// Stack samples whose stack the kernel could not walk (their bytes stay unattributed).
    pub stack_unavailable: u64,
}

impl DropCounts {
    /// Each reason with its metric label.
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("ringbuf_full", self.ringbuf_full),
            ("pending_calls_full", self.pending_calls_full),
            ("target_map_full", self.target_map_full),
            ("process_map_full", self.process_map_full),
            ("tracked_tgids_full", self.tracked_tgids_full),
            ("stack_unavailable", self.stack_unavailable),
        ]
    }

    /// Drops since an earlier reading.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            ringbuf_full: self.ringbuf_full.saturating_sub(earlier.ringbuf_full),
            pending_calls_full: self
                .pending_calls_full
                .saturating_sub(earlier.pending_calls_full),
            target_map_full: self.target_map_full.saturating_sub(earlier.target_map_full),
            process_map_full: self
                .process_map_full
                .saturating_sub(earlier.process_map_full),
            tracked_tgids_full: self
                .tracked_tgids_full
                .saturating_sub(earlier.tracked_tgids_full),
            stack_unavailable: self
                .stack_unavailable
                .saturating_sub(earlier.stack_unavailable),
        }
    }

    pub fn total(&self) -> u64 {
        self.ringbuf_full
            + self.pending_calls_full
            + self.target_map_full
            + self.process_map_full
            + self.tracked_tgids_full
            + self.stack_unavailable
    }
}

/// Kernel map entries still held for one target: all zero once its processes are gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KernelEntries {
    pub processes: u64,
    pub pending_calls: u64,
    pub followed_processes: u64,
    pub address_space_owners: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_code_follows_shell_conventions() {
        assert_eq!(
            ExitSummary {
                code: Some(3),
                signal: None
            }
            .shell_code(),
            3
        );
        assert_eq!(
            ExitSummary {
                code: None,
                signal: Some(9)
            }
            .shell_code(),
            137
        );
    }
}
