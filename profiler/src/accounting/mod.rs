//! Aggregation in user space: turns the kernel's counters and events into per-process records,
//! per-target totals, live reserved memory by region, a bounded timeline of maxima, and its
//! reading (startup, steady state, spikes). Everything here is bounded, whatever the run length.
//!
//! - [`ProcessTable`]: per-process records, folded into a count past `max_processes`;
//! - [`regions`]: live reserved address space per process, region by region;
//! - [`timeline`]: fixed-resolution bucket maxima;
//! - [`analysis`]: startup, steady state and spikes.

pub mod analysis;
pub mod regions;
pub mod timeline;

use std::collections::HashMap;

use profiler_common::{mapping_kind, MemoryCounters, ProcessCounters};

pub use crate::report::{ActivitySummary, MappedBytes, ProcessRecord};

use crate::probes::{ProbeEvent, ProcessExit, ProcessStart};

impl MappedBytes {
    pub fn from_counters(counters: &MemoryCounters) -> Self {
        let bytes = &counters.mmap_bytes;
        Self {
            anonymous: bytes[mapping_kind::ANONYMOUS],
            file: bytes[mapping_kind::FILE],
            stack: bytes[mapping_kind::STACK],
            shared: bytes[mapping_kind::SHARED],
            no_access: bytes[mapping_kind::NO_ACCESS],
        }
    }

    pub fn total(&self) -> u64 {
        self.anonymous + self.file + self.stack + self.shared + self.no_access
    }
}

impl ActivitySummary {
    /// `baseline_tasks`: tasks present when counting began (None: unknown, so no peak).
    pub fn from_counters(counters: &MemoryCounters, baseline_tasks: Option<u64>) -> Self {
        Self {
            threads_created: counters.threads_created,
            processes_created: counters.processes_created,
            peak_tasks: baseline_tasks
                .map(|baseline| baseline.saturating_add_signed(counters.peak_live_tasks.max(0))),
            tasks_exited: counters.tasks_exited,
            execs: counters.execs,
            oom_kills: counters.oom_kills,
            mmap_calls: counters.mmap_calls,
            mmap_failures: counters.mmap_failures,
            mmapped: MappedBytes::from_counters(counters),
            munmap_calls: counters.munmap_calls,
            munmapped_bytes: counters.munmap_bytes,
            mremap_calls: counters.mremap_calls,
            mprotect_calls: counters.mprotect_calls,
            brk_calls: counters.brk_calls,
            brk_grown_bytes: counters.brk_grown_bytes,
            brk_shrunk_bytes: counters.brk_shrunk_bytes,
        }
    }
}

impl ProcessRecord {
    fn new(pid: u32) -> Self {
        Self {
            pid,
            parent_pid: None,
            command: String::new(),
            exited: false,
            activity: ActivitySummary::default(),
            brk_heap_bytes: 0,
            resident_peak_bytes: 0,
        }
    }

    fn fill(&mut self, counters: &ProcessCounters) {
        let baseline = (counters.tasks_known != 0).then_some(0);
        self.activity = ActivitySummary::from_counters(&counters.counters, baseline);
        self.brk_heap_bytes = counters.brk_highest.saturating_sub(counters.brk_start);
        self.resident_peak_bytes = counters.counters.resident_peak_bytes;
    }
}

/// Processes of one target, built from events and the kernel's process table.
#[derive(Debug)]
pub struct ProcessTable {
    target_id: u64,
    max_records: usize,
    running: HashMap<u32, ProcessRecord>,
    finished: Vec<ProcessRecord>,
    /// Processes not kept because the table was full.
    pub folded: u64,
    /// Events that belonged to another target (none expected in a capture session).
    pub foreign_events: u64,
}

impl ProcessTable {
    pub fn new(target_id: u64, max_records: usize) -> Self {
        Self {
            target_id,
            max_records: max_records.max(1),
            running: HashMap::new(),
            finished: Vec::new(),
            folded: 0,
            foreign_events: 0,
        }
    }

    fn len(&self) -> usize {
        self.running.len() + self.finished.len()
    }

    pub fn apply(&mut self, event: &ProbeEvent) {
        match event {
            ProbeEvent::ProcessStart(start) => self.started(start),
            ProbeEvent::ProcessExit(exit) => self.exited(exit),
            ProbeEvent::Mapping(_) | ProbeEvent::OomVictim(_) | ProbeEvent::StackSample(_) => {}
        }
    }

    fn started(&mut self, start: &ProcessStart) {
        if start.target_id != self.target_id {
            self.foreign_events += 1;
            return;
        }
        // A pid reused within the session: the old record is finished.
        if let Some(previous) = self.running.remove(&start.tgid) {
            self.finished.push(previous);
        }
        if self.len() >= self.max_records {
            // Counted as folded when it exits or at the end, not here, so once per process.
            return;
        }
        let mut record = ProcessRecord::new(start.tgid);
        record.parent_pid = (start.parent_tgid != 0).then_some(start.parent_tgid);
        record.command = start.comm.clone();
        self.running.insert(start.tgid, record);
    }

    fn exited(&mut self, exit: &ProcessExit) {
        if exit.target_id != self.target_id {
            self.foreign_events += 1;
            return;
        }
        let mut record = match self.running.remove(&exit.tgid) {
            Some(record) => record,
            None if self.len() < self.max_records => ProcessRecord::new(exit.tgid),
            None => {
                self.folded += 1;
                return;
            }
        };
        record.command = exit.comm.clone();
        record.exited = true;
        record.fill(&exit.counters);
        self.finished.push(record);
    }

    /// Takes the kernel's view of processes that have not exited (or whose exit event was
    /// dropped) and returns every record, largest reservation first.
    pub fn finish(
        mut self,
        still_in_kernel: &[(u32, ProcessCounters)],
    ) -> (Vec<ProcessRecord>, u64) {
        for (pid, counters) in still_in_kernel {
            if counters.target_id != self.target_id {
                continue;
            }
            if let Some(record) = self.running.get_mut(pid) {
                record.fill(counters);
            } else if self.len() < self.max_records {
                let mut record = ProcessRecord::new(*pid);
                record.fill(counters);
                self.running.insert(*pid, record);
            } else {
                self.folded += 1;
            }
        }
        let mut records: Vec<ProcessRecord> = self
            .finished
            .into_iter()
            .chain(self.running.into_values())
            .collect();
        records.sort_by(|a, b| {
            b.activity
                .mmapped
                .total()
                .cmp(&a.activity.mmapped.total())
                .then(a.pid.cmp(&b.pid))
        });
        (records, self.folded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(threads: u64, anon: u64) -> ProcessCounters {
        let mut counters = ProcessCounters::default();
        counters.counters.threads_created = threads;
        counters.counters.mmap_bytes[mapping_kind::ANONYMOUS] = anon;
        counters.counters.peak_live_tasks = 1 + threads as i64;
        counters.tasks_known = 1;
        counters.target_id = 5;
        counters.brk_start = 1000;
        counters.brk_highest = 5096;
        counters
    }

    fn start(pid: u32, parent: u32) -> ProbeEvent {
        ProbeEvent::ProcessStart(ProcessStart {
            tgid: pid,
            parent_tgid: parent,
            target_id: 5,
            timestamp_ns: 1,
            comm: "parent".into(),
        })
    }

    fn exit(pid: u32, threads: u64, anon: u64) -> ProbeEvent {
        ProbeEvent::ProcessExit(Box::new(ProcessExit {
            tgid: pid,
            target_id: 5,
            timestamp_ns: 2,
            comm: "child".into(),
            counters: counters(threads, anon),
        }))
    }

    #[test]
    fn start_then_exit_makes_one_finished_record() {
        let mut table = ProcessTable::new(5, 10);
        table.apply(&start(10, 1));
        table.apply(&exit(10, 7, 3 << 26));
        let (records, folded) = table.finish(&[]);
        assert_eq!(folded, 0);
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.parent_pid, Some(1));
        assert_eq!(record.command, "child");
        assert!(record.exited);
        assert_eq!(record.activity.threads_created, 7);
        assert_eq!(record.activity.peak_tasks, Some(8));
        assert_eq!(record.activity.mmapped.anonymous, 192 << 20);
        assert_eq!(record.brk_heap_bytes, 4096);
    }

    #[test]
    fn running_processes_come_from_the_kernel_table() {
        let mut table = ProcessTable::new(5, 10);
        table.apply(&start(11, 0));
        let mut other_cgroup = counters(1, 1);
        other_cgroup.target_id = 6;
        let (records, _) = table.finish(&[(11, counters(2, 4096)), (12, other_cgroup)]);
        assert_eq!(records.len(), 1);
        assert!(!records[0].exited);
        assert_eq!(records[0].activity.threads_created, 2);
        assert_eq!(records[0].parent_pid, None);
    }

    #[test]
    fn table_is_bounded_and_counts_what_it_folds() {
        let mut table = ProcessTable::new(5, 2);
        for pid in 1..=5 {
            table.apply(&start(pid, 0));
            table.apply(&exit(pid, 0, u64::from(pid)));
        }
        let (records, folded) = table.finish(&[]);
        assert_eq!(records.len(), 2);
        assert_eq!(folded, 3);
    }

    #[test]
    fn unknown_baseline_gives_no_peak() {
        let mut counters = counters(3, 0);
        counters.tasks_known = 0;
        let mut record = ProcessRecord::new(1);
        record.fill(&counters);
        assert_eq!(record.activity.peak_tasks, None);
    }
}
