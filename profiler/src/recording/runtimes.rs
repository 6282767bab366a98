//! The runtime of each process a session sees, read from /proc while the process is alive
//! (a command that exits before the report is built leaves nothing to read at the end).
//!
//! A process is read when first seen (at its exec, or at the start for processes already
//! there) and again at most twice, at the first tick [`REREAD_AFTER_MS`] after: at exec the
//! dynamic loader has not mapped the libraries yet (libjvm.so, libjemalloc), and a few
//! seconds later they are. Three bounded reads per process, whatever the capture's length.

use std::{collections::BTreeMap, path::Path};

use crate::{
    procfs::runtime::{read_runtime, Allocator, RuntimeFacts},
    report::{AllocatorKind, GoSettings, JvmSettings, ProcessRuntime, RuntimeKind, RuntimeSection},
};

/// Ages (from first sight) at which a process is read again.
pub const REREAD_AFTER_MS: [u64; 2] = [500, 5_000];
/// Processes listed in a report's runtime section (those with a ceiling first).
pub const MAX_LISTED: usize = 32;
/// Most processes whose runtime is kept: past it, an exited process with no runtime of note
/// (no JVM, no Go) makes room for a new one, so a long capture with process churn still reads
/// the service that restarts late in it.
pub const MAX_TRACKED: usize = 1024;

#[derive(Debug)]
struct Tracked {
    first_ms: u64,
    reads: usize,
    facts: RuntimeFacts,
    /// The cgroup limit at the last read that succeeded (for MaxRAMPercentage).
    memory_limit: Option<u64>,
    threads_peak: Option<u64>,
    exited: bool,
}

impl Tracked {
    /// A JVM or Go program: kept after it exits, whatever else comes.
    fn of_note(&self) -> bool {
        self.facts.jvm.is_some() || self.facts.go.is_some()
    }
}

/// Runtime facts per process, bounded in processes.
#[derive(Debug, Default)]
pub struct RuntimeTracker {
    processes: BTreeMap<u32, Tracked>,
    max_processes: usize,
    not_tracked: u64,
}

impl RuntimeTracker {
    /// Keeps at most `max_processes` (and never more than [`MAX_TRACKED`]).
    pub fn new(max_processes: usize) -> Self {
        Self {
            max_processes: max_processes.min(MAX_TRACKED),
            ..Self::default()
        }
    }

    /// A process seen for the first time, or one that exec'd a new program: read it now.
    pub fn first_sight(&mut self, root: &Path, pid: u32, now_ms: u64, memory_limit: Option<u64>) {
        if !self.processes.contains_key(&pid) && self.processes.len() >= self.max_processes {
            let room = self
                .processes
                .iter()
                .find(|(_, tracked)| tracked.exited && !tracked.of_note())
                .map(|(&old, _)| old);
            match room {
                Some(old) => {
                    self.processes.remove(&old);
                    self.not_tracked += 1;
                }
                None => {
                    self.not_tracked += 1;
                    return;
                }
            }
        }
        let facts = read_runtime(root, pid);
        let threads_peak = facts.threads;
        self.processes.insert(
            pid,
            Tracked {
                first_ms: now_ms,
                reads: 1,
                facts,
                memory_limit,
                threads_peak,
                exited: false,
            },
        );
    }

    /// The process exited: it is not read again.
    pub fn exited(&mut self, pid: u32) {
        if let Some(tracked) = self.processes.get_mut(&pid) {
            tracked.exited = true;
        }
    }

    /// Reads again the processes whose next read is due.
    pub fn tick(&mut self, root: &Path, now_ms: u64, memory_limit: Option<u64>) {
        for (&pid, tracked) in &mut self.processes {
            let due = !tracked.exited
                && REREAD_AFTER_MS
                    .get(tracked.reads - 1)
                    .is_some_and(|&age| now_ms.saturating_sub(tracked.first_ms) >= age);
            if !due {
                continue;
            }
            tracked.reads += 1;
            let facts = read_runtime(root, pid);
            // A process gone since keeps what was read while it lived.
            if facts.cmdline_read() {
                tracked.threads_peak = tracked.threads_peak.max(facts.threads);
                tracked.facts = facts;
                tracked.memory_limit = memory_limit;
            }
        }
    }

    /// The report's section: every process read, those with a ceiling first (then by most
    /// threads), at most [`MAX_LISTED`]. None when no process was read.
    pub fn section(&self) -> Option<RuntimeSection> {
        if self.processes.is_empty() {
            return None;
        }
        let mut processes: Vec<ProcessRuntime> = self
            .processes
            .iter()
            .map(|(&pid, tracked)| process_runtime(pid, tracked))
            .collect();
        processes.sort_by_key(|p| (!p.has_ceiling(), std::cmp::Reverse(p.threads_peak), p.pid));
        let not_listed = processes.len().saturating_sub(MAX_LISTED) as u64 + self.not_tracked;
        processes.truncate(MAX_LISTED);
        Some(RuntimeSection {
            processes,
            processes_not_listed: not_listed,
        })
    }
}

fn process_runtime(pid: u32, tracked: &Tracked) -> ProcessRuntime {
    let facts = &tracked.facts;
    let (runtime, runtime_from) = match (&facts.jvm, &facts.go) {
        (Some(jvm), _) => (RuntimeKind::Jvm, jvm.detected_from.clone()),
        (None, Some(go)) => (RuntimeKind::Go, go.detected_from.clone()),
        (None, None) => (RuntimeKind::Native, String::new()),
    };
    ProcessRuntime {
        pid,
        command: facts.command.clone(),
        runtime,
        runtime_from,
        allocator: facts.allocator.as_ref().map(|a| match a.value {
            Allocator::Glibc => AllocatorKind::Glibc,
            Allocator::Jemalloc => AllocatorKind::Jemalloc,
            Allocator::Mimalloc => AllocatorKind::Mimalloc,
            Allocator::Tcmalloc => AllocatorKind::Tcmalloc,
        }),
        allocator_from: facts.allocator.as_ref().map(|a| a.from.clone()),
        jvm: facts.jvm.as_ref().map(|jvm| JvmSettings {
            max_heap_bytes: jvm.max_heap.as_ref().map(|h| h.value),
            max_heap_from: jvm.max_heap.as_ref().map(|h| h.from.clone()),
            max_ram_percentage: jvm.max_ram_percentage.as_ref().map(|p| p.value),
            max_ram_percentage_from: jvm.max_ram_percentage.as_ref().map(|p| p.from.clone()),
            heap_ceiling_bytes: jvm.heap_ceiling(tracked.memory_limit),
        }),
        go: facts.go.as_ref().map(|go| GoSettings {
            memory_limit_bytes: go.memory_limit.as_ref().and_then(|l| l.value),
            memory_limit_from: go.memory_limit.as_ref().map(|l| l.from.clone()),
            gc_off: go.gc_off,
        }),
        malloc_arena_max: facts.arena_max.as_ref().map(|a| a.value),
        malloc_arena_max_from: facts.arena_max.as_ref().map(|a| a.from.clone()),
        threads_peak: tracked.threads_peak,
        unknown: facts.unknown.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_read_at_first_sight_and_again_while_alive() {
        let root = std::env::temp_dir().join(format!("headroom-runtimes-{}", std::process::id()));
        let dir = root.join("proc/20");
        std::fs::create_dir_all(&dir).expect("fixture");
        std::fs::write(
            dir.join("cmdline"),
            b"java\0-XX:MaxRAMPercentage=50\0Main\0",
        )
        .expect("fixture");
        std::fs::write(dir.join("environ"), b"").expect("fixture");
        std::fs::write(dir.join("maps"), "").expect("fixture");
        std::fs::write(dir.join("status"), "VmSize:\t8 kB\nThreads:\t3\n").expect("fixture");
        let mut tracker = RuntimeTracker::new(2);
        tracker.first_sight(&root, 20, 100, Some(1 << 30));
        // Libraries mapped and threads started after exec: the read at 0.5 s sees them.
        std::fs::write(
            dir.join("maps"),
            "1000-2000 r-xp 0 fe:01 5 /usr/lib/libc.so.6\n",
        )
        .expect("fixture");
        std::fs::write(dir.join("status"), "VmSize:\t8 kB\nThreads:\t30\n").expect("fixture");
        tracker.tick(&root, 300, Some(1 << 30));
        let early = tracker.section().expect("a section");
        assert_eq!(early.processes[0].allocator, None, "not due before 0.5 s");
        tracker.tick(&root, 700, Some(1 << 30));
        // Gone before the third read: what was read while it lived stays.
        std::fs::remove_dir_all(&dir).expect("cleanup");
        tracker.tick(&root, 6_000, Some(1 << 30));
        let section = tracker.section().expect("a section");
        let process = &section.processes[0];
        assert_eq!(process.runtime, RuntimeKind::Jvm);
        assert_eq!(process.allocator, Some(AllocatorKind::Glibc));
        assert_eq!(process.threads_peak, Some(30));
        let jvm = process.jvm.as_ref().expect("JVM settings");
        assert_eq!(jvm.heap_ceiling_bytes, Some(512 << 20));
        assert!(process.unknown.is_empty(), "{:?}", process.unknown);
        // Beyond the bound: counted, not read.
        tracker.first_sight(&root, 21, 0, None);
        tracker.first_sight(&root, 22, 0, None);
        let section = tracker.section().expect("a section");
        assert_eq!(
            (section.processes.len(), section.processes_not_listed),
            (2, 1)
        );
        // A process gone before its first read is listed with why nothing is known.
        let gone = section.processes.iter().find(|p| p.pid == 21).expect("21");
        assert_eq!(gone.runtime, RuntimeKind::Native);
        assert!(gone.unknown[0].contains("(gone)"), "{:?}", gone.unknown);
        // Once it exited, it makes room; the JVM that exited is kept.
        tracker.exited(20);
        tracker.exited(21);
        tracker.first_sight(&root, 23, 0, None);
        let pids: Vec<u32> = tracker
            .section()
            .expect("a section")
            .processes
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(pids, [20, 23]);
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
