//! The kernel as the capture loop and the agent tick see it: counters per target, windows of
//! high-water marks, drops and leftover entries. [`Probes`] is the real one; [`FakeKernel`]
//! serves figures a test sets, so both loops have unit tests that run without root.

use std::collections::HashMap;

use profiler_common::{MemoryCounters, ProcessCounters, WindowPeaks};

use super::{DropCounts, KernelEntries, ProbeError, Probes};

/// Reads of the kernel side's maps that the session and agent loops make.
pub trait KernelView {
    /// A target's counters; None when the kernel has not counted anything for it yet.
    fn target_counters(&self, target_id: u64) -> Result<Option<MemoryCounters>, ProbeError>;
    /// Every target's counters.
    fn all_target_counters(&self) -> Result<Vec<(u64, MemoryCounters)>, ProbeError>;
    /// Ends the current window of high-water marks for a target and returns its peaks.
    fn close_window(&mut self, target_id: u64) -> Result<WindowPeaks, ProbeError>;
    fn drops(&self) -> Result<DropCounts, ProbeError>;
    /// Entries the kernel still holds for a target (all zero once its processes are gone).
    fn kernel_entries(&self, target_id: u64) -> Result<KernelEntries, ProbeError>;
    /// Per-process counters of every process the kernel still tracks.
    fn live_processes(&self) -> Result<Vec<(u32, ProcessCounters)>, ProbeError>;
    /// Drops a target's counters (its cgroup is gone).
    fn forget_target(&mut self, target_id: u64) -> Result<(), ProbeError>;
}

impl KernelView for Probes {
    fn target_counters(&self, target_id: u64) -> Result<Option<MemoryCounters>, ProbeError> {
        Probes::target_counters(self, target_id)
    }

    fn all_target_counters(&self) -> Result<Vec<(u64, MemoryCounters)>, ProbeError> {
        Probes::all_target_counters(self)
    }

    fn close_window(&mut self, target_id: u64) -> Result<WindowPeaks, ProbeError> {
        Probes::close_window(self, target_id)
    }

    fn drops(&self) -> Result<DropCounts, ProbeError> {
        Probes::drops(self)
    }

    fn kernel_entries(&self, target_id: u64) -> Result<KernelEntries, ProbeError> {
        Probes::kernel_entries(self, target_id)
    }

    fn live_processes(&self) -> Result<Vec<(u32, ProcessCounters)>, ProbeError> {
        Probes::live_processes(self)
    }

    fn forget_target(&mut self, target_id: u64) -> Result<(), ProbeError> {
        Probes::forget_target(self, target_id)
    }
}

/// A kernel whose figures a test sets: counters per target and the next window's peaks.
#[derive(Clone, Debug, Default)]
pub struct FakeKernel {
    pub counters: HashMap<u64, MemoryCounters>,
    pub windows: HashMap<u64, WindowPeaks>,
    pub drops: DropCounts,
    pub entries: HashMap<u64, KernelEntries>,
    pub processes: Vec<(u32, ProcessCounters)>,
    /// Targets forgotten, in order.
    pub forgotten: Vec<u64>,
}

impl FakeKernel {
    /// Sets a target's resident memory (anon, file) and live tasks, raising its peaks.
    pub fn set_resident(&mut self, target_id: u64, anon: u64, file: u64, tasks: i64) {
        let counters = self.counters.entry(target_id).or_default();
        counters.rss_bytes[profiler_common::rss_member::ANON] = anon as i64;
        counters.rss_bytes[profiler_common::rss_member::FILE] = file as i64;
        counters.live_tasks = tasks;
        counters.peak_live_tasks = counters.peak_live_tasks.max(tasks);
        counters.resident_peak_bytes = counters.resident_peak_bytes.max(anon + file);
        counters.anon_peak_bytes = counters.anon_peak_bytes.max(anon);
        counters.file_peak_bytes = counters.file_peak_bytes.max(file);
        let window = self.windows.entry(target_id).or_default();
        window.resident_peak_bytes = window.resident_peak_bytes.max(anon + file);
        window.anon_peak_bytes = window.anon_peak_bytes.max(anon);
        window.file_peak_bytes = window.file_peak_bytes.max(file);
        window.live_tasks_peak = window.live_tasks_peak.max(tasks);
    }
}

impl KernelView for FakeKernel {
    fn target_counters(&self, target_id: u64) -> Result<Option<MemoryCounters>, ProbeError> {
        Ok(self.counters.get(&target_id).copied())
    }

    fn all_target_counters(&self) -> Result<Vec<(u64, MemoryCounters)>, ProbeError> {
        let mut all: Vec<(u64, MemoryCounters)> =
            self.counters.iter().map(|(id, c)| (*id, *c)).collect();
        all.sort_by_key(|(id, _)| *id);
        Ok(all)
    }

    fn close_window(&mut self, target_id: u64) -> Result<WindowPeaks, ProbeError> {
        Ok(self.windows.remove(&target_id).unwrap_or_default())
    }

    fn drops(&self) -> Result<DropCounts, ProbeError> {
        Ok(self.drops)
    }

    fn kernel_entries(&self, target_id: u64) -> Result<KernelEntries, ProbeError> {
        Ok(self.entries.get(&target_id).copied().unwrap_or_default())
    }

    fn live_processes(&self) -> Result<Vec<(u32, ProcessCounters)>, ProbeError> {
        Ok(self.processes.clone())
    }

    fn forget_target(&mut self, target_id: u64) -> Result<(), ProbeError> {
        self.counters.remove(&target_id);
        self.forgotten.push(target_id);
        Ok(())
    }
}
