//! Which code made the memory: user stacks sampled where memory is made, symbolized, and
//! turned into the report's sources, spike frames, folded stacks and flame graphs.
//!
//! The kernel side takes a stack (1) for every `mmap` or `brk` growth at or above a threshold,
//! and (2) once per `fault_sample_bytes` faulted in per process, weighted by the bytes since
//! the previous sample (byte-weighted sampling: a 200 MiB allocation gets ~400 samples at
//! 512 KiB, a 4 KiB one is rarely seen, and the weights add up to the bytes faulted in).
//! Samples are rare by construction, so they travel through the ring buffer; everything per
//! fault stays in the kernel.
//!
//! Unwinding: the kernel walks frame pointers. Code built without them (Debian's glibc, most
//! release builds) stops the walk after 1-3 frames; those samples name the allocator function
//! but not its caller. With [`Unwinding::EhFrame`] the probe also copies the registers and
//! 8 KiB of stack, and user space unwinds with `.eh_frame` (framehop). That costs a ~9 KiB
//! ring-buffer record and an unwind per sample, so it is a flag.

pub mod flamegraph;
pub mod modules;
pub mod naming;
pub mod pprof;
pub mod symbol_copy;
pub mod unwind;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use profiler_common::{stack_source, StackSampling};

use crate::probes::events::StackSample;
pub use crate::report::{StackEntry, StackSummary, Unwinding};
use modules::{ExecMapping, ModuleCache};
use naming::InternalFrames;
use unwind::ProcessUnwinder;

/// Stack sampling settings of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSettings {
    pub fault_sample_bytes: u64,
    pub reservation_threshold_bytes: u64,
    pub unwinding: Unwinding,
    /// Distinct stacks kept; samples of further stacks are counted, not kept.
    pub max_stacks: usize,
    /// Frames that do not name a source (allocator, libc, std, ...).
    pub internal_frames: InternalFrames,
}

impl Default for StackSettings {
    fn default() -> Self {
        Self {
            fault_sample_bytes: 512 * 1024,
            reservation_threshold_bytes: 1024 * 1024,
            unwinding: Unwinding::FramePointers,
            max_stacks: 8192,
            internal_frames: InternalFrames::default(),
        }
    }
}

impl StackSettings {
    /// The settings as the kernel side reads them.
    pub fn for_kernel(&self) -> StackSampling {
        StackSampling {
            fault_sample_bytes: self.fault_sample_bytes,
            reservation_threshold_bytes: self.reservation_threshold_bytes,
            snapshot: u32::from(self.unwinding == Unwinding::EhFrame),
            _pad: 0,
        }
    }
}

/// Most distinct stacks a session may keep (`--max-stacks`, agent sessions' `max_stacks`):
/// with up to 127 frames each, about 64 MiB of addresses and more once symbolized.
pub const MAX_STACKS_LIMIT: usize = 65_536;

/// Frames kept over all distinct stacks of a session (8 bytes each raw, ~40 symbolized):
/// deep stacks fill it before `max_stacks` does, and further stacks are counted, not kept.
pub const MAX_KEPT_FRAMES: usize = 1 << 20;

/// Re-reads of one process's mappings after its first sample.
const MAX_REFRESHES: u32 = 8;

/// Processes whose address-space view is kept at once.
const MAX_PROCESSES: usize = 4096;

/// Timestamped samples kept for attributing spikes (about 24 bytes each).
const MAX_TIMED_SAMPLES: usize = 200_000;

/// Stacks with at most this many frames are "shallow": the walk stopped early.
const SHALLOW_FRAMES: usize = 3;

/// Stacks listed in the report.
const TOP_STACKS: usize = 20;

/// Frames shown per stack in sources and spikes (innermost first).
const FRAMES_SHOWN: usize = 12;

struct ProcessView {
    mappings: Arc<Vec<ExecMapping>>,
    /// Times the mappings were read again because a sampled address was not in them.
    refreshes: u32,
    unwinder: Option<ProcessUnwinder>,
}

struct RawStack {
    /// The process's executable mappings when the stack was taken (an exec replaces them).
    mappings: Arc<Vec<ExecMapping>>,
    frames: Vec<u64>,
    fault_bytes: u64,
    reserved_bytes: u64,
    samples: u64,
}

#[derive(Clone, Copy, Debug)]
struct TimedSample {
    elapsed_ms: u64,
    stack: usize,
    bytes: u64,
}

/// Collects samples during a session.
pub struct StackCollector {
    settings: StackSettings,
    proc_root: PathBuf,
    started_ns: u64,
    modules: ModuleCache,
    processes: HashMap<u32, ProcessView>,
    index: HashMap<(u32, Vec<u64>), usize>,
    stacks: Vec<RawStack>,
    timed: Vec<TimedSample>,
    samples: u64,
    fault_bytes: u64,
    reserved_bytes: u64,
    samples_not_kept: u64,
    samples_without_stack: u64,
    shallow_samples: u64,
    /// Frames held by `stacks`, against [`MAX_KEPT_FRAMES`].
    kept_frames: usize,
}

impl StackCollector {
    pub fn new(settings: StackSettings, proc_root: PathBuf, started_ns: u64) -> Self {
        Self {
            settings,
            proc_root,
            started_ns,
            modules: ModuleCache::new(),
            processes: HashMap::new(),
            index: HashMap::new(),
            stacks: Vec::new(),
            timed: Vec::new(),
            samples: 0,
            fault_bytes: 0,
            reserved_bytes: 0,
            samples_not_kept: 0,
            samples_without_stack: 0,
            shallow_samples: 0,
            kept_frames: 0,
        }
    }

    pub fn settings(&self) -> &StackSettings {
        &self.settings
    }

    /// Takes one sample. The process's executable mappings are read on its first sample (its
    /// files stay open, so symbolization works after it exits); symbolization itself waits
    /// for the end of the session.
    pub fn record(&mut self, sample: &StackSample) {
        self.samples += 1;
        if sample.source == stack_source::FAULT {
            self.fault_bytes += sample.bytes;
        } else {
            self.reserved_bytes += sample.bytes;
        }
        self.refresh_view(sample);
        let frames = match (&sample.snapshot, self.processes.get_mut(&sample.tgid)) {
            (Some(snapshot), Some(view)) => {
                let unwinder = view
                    .unwinder
                    .get_or_insert_with(|| ProcessUnwinder::new(&view.mappings, &mut self.modules));
                let unwound = unwinder.unwind(snapshot);
                // Keep whichever walk went further: frame pointers can beat a missing .eh_frame.
                if unwound.len() >= sample.frames.len() {
                    unwound
                } else {
                    sample.frames.clone()
                }
            }
            _ => sample.frames.clone(),
        };
        if frames.is_empty() {
            self.samples_without_stack += 1;
        } else if frames.len() <= SHALLOW_FRAMES {
            self.shallow_samples += 1;
        }
        let key = (sample.tgid, frames);
        let stack = match self.index.get(&key) {
            Some(&stack) => stack,
            None if self.stacks.len() < self.settings.max_stacks.min(MAX_STACKS_LIMIT)
                && self.kept_frames + key.1.len() <= MAX_KEPT_FRAMES =>
            {
                self.kept_frames += key.1.len();
                let mappings = self
                    .processes
                    .get(&sample.tgid)
                    .map(|view| view.mappings.clone())
                    .unwrap_or_default();
                self.stacks.push(RawStack {
                    mappings,
                    frames: key.1.clone(),
                    fault_bytes: 0,
                    reserved_bytes: 0,
                    samples: 0,
                });
                self.index.insert(key, self.stacks.len() - 1);
                self.stacks.len() - 1
            }
            None => {
                self.samples_not_kept += 1;
                return;
            }
        };
        let Some(entry) = self.stacks.get_mut(stack) else {
            return;
        };
        entry.samples += 1;
        if sample.source == stack_source::FAULT {
            entry.fault_bytes += sample.bytes;
            if self.timed.len() < MAX_TIMED_SAMPLES {
                self.timed.push(TimedSample {
                    elapsed_ms: sample.timestamp_ns.saturating_sub(self.started_ns) / 1_000_000,
                    stack,
                    bytes: sample.bytes,
                });
            }
        } else {
            entry.reserved_bytes += sample.bytes;
        }
    }

    /// Reads a process's executable mappings on its first sample, and again when the sampled
    /// instruction lies outside them: the process exec'd (agent sessions see no exec events)
    /// or loaded a library since. Bounded per process, for code that runs from unmapped
    /// memory.
    fn refresh_view(&mut self, sample: &StackSample) {
        let stale = match self.processes.get(&sample.tgid) {
            None => true,
            Some(view) => {
                view.refreshes < MAX_REFRESHES
                    && sample.frames.first().is_some_and(|&ip| {
                        !view.mappings.iter().any(|m| ip >= m.start && ip < m.end)
                    })
            }
        };
        if !stale {
            return;
        }
        if self.processes.len() >= MAX_PROCESSES {
            self.processes.clear();
        }
        let refreshes = self
            .processes
            .get(&sample.tgid)
            .map_or(0, |view| view.refreshes + 1);
        let mappings = Arc::new(self.modules.snapshot_process(&self.proc_root, sample.tgid));
        self.processes.insert(
            sample.tgid,
            ProcessView {
                mappings,
                refreshes,
                unwinder: None,
            },
        );
    }

    /// A process replaced its image (exec): later samples need a fresh view of its mappings.
    pub fn exec(&mut self, tgid: u32) {
        self.processes.remove(&tgid);
        self.index.retain(|(process, _), _| *process != tgid);
    }

    /// Symbolizes every kept stack and merges stacks that read the same.
    pub fn finish(mut self) -> StackProfile {
        let mut dropped_frames = 0;
        let mut samples_outside_mappings = 0;
        let names: Vec<Vec<Frame>> = (0..self.stacks.len())
            .map(|index| {
                let (frames, dropped) = self.symbolize(index);
                let samples = self.stacks.get(index).map_or(0, |stack| stack.samples);
                dropped_frames += dropped * samples;
                if frames.is_empty() && dropped > 0 {
                    samples_outside_mappings += samples;
                }
                frames
            })
            .collect();
        let mut merged: Vec<SymbolizedStack> = Vec::new();
        let mut merged_index: HashMap<Vec<Frame>, usize> = HashMap::new();
        let mut raw_to_merged = Vec::with_capacity(self.stacks.len());
        for (raw, frames) in self.stacks.iter().zip(names) {
            let index = *merged_index.entry(frames.clone()).or_insert_with(|| {
                merged.push(SymbolizedStack {
                    frames,
                    fault_bytes: 0,
                    reserved_bytes: 0,
                    samples: 0,
                });
                merged.len() - 1
            });
            if let Some(stack) = merged.get_mut(index) {
                stack.fault_bytes += raw.fault_bytes;
                stack.reserved_bytes += raw.reserved_bytes;
                stack.samples += raw.samples;
            }
            raw_to_merged.push(index);
        }
        let timed = self
            .timed
            .iter()
            .filter_map(|sample| {
                Some(TimedSample {
                    stack: *raw_to_merged.get(sample.stack)?,
                    ..*sample
                })
            })
            .collect();
        let mut limits = Vec::new();
        let walked = self.samples - self.samples_without_stack;
        if walked > 0
            && self.shallow_samples * 2 > walked
            && self.settings.unwinding == Unwinding::EhFrame
        {
            // Advice to use eh-frame would be wrong here: it was used.
            limits.push(format!(
                "{} of {} sampled stacks ended within {} frames even with .eh_frame \
                 unwinding: the code that made the memory has no unwind information (JIT \
                 code, a module built without .eh_frame, a file that could not be read), or \
                 its stack was deeper than the {} bytes copied per sample.",
                self.shallow_samples,
                walked,
                SHALLOW_FRAMES,
                profiler_common::STACK_SNAPSHOT_BYTES
            ));
        } else if walked > 0 && self.shallow_samples * 2 > walked {
            limits.push(format!(
                "{} of {} sampled stacks ended within {} frames: the code that made the memory \
                 was built without frame pointers (Debian's glibc is), so only the innermost \
                 frames are named. Rebuild with -fno-omit-frame-pointer, or capture with \
                 --unwind eh-frame.",
                self.shallow_samples, walked, SHALLOW_FRAMES
            ));
        }
        if samples_outside_mappings * 10 > walked.max(1) {
            limits.push(format!(
                "{samples_outside_mappings} of {walked} sampled stacks had no frame in a known \
                 executable mapping (code that ran before its mappings could be read, such as \
                 exec and the dynamic loader, or a walk that read data as return addresses): \
                 their bytes are counted in the totals but under no code path."
            ));
        }
        if self.samples_not_kept > 0 {
            limits.push(format!(
                "{} samples of stacks beyond the first {} distinct ones ({} frames at most) were \
                 counted but not kept (raise --max-stacks, up to {MAX_STACKS_LIMIT}).",
                self.samples_not_kept,
                self.stacks.len(),
                MAX_KEPT_FRAMES
            ));
        }
        if self.modules.unreadable > 0 {
            limits.push(format!(
                "{} executable files could not be read (gone, too large, or not permitted); \
                 their frames show as module+offset.",
                self.modules.unreadable
            ));
        }
        StackProfile {
            summary: StackSummary {
                unwinding: self.settings.unwinding,
                fault_sample_bytes: self.settings.fault_sample_bytes,
                reservation_threshold_bytes: self.settings.reservation_threshold_bytes,
                samples: self.samples,
                sampled_fault_bytes: self.fault_bytes,
                sampled_reserved_bytes: self.reserved_bytes,
                distinct_stacks: merged.len() as u64,
                samples_not_kept: self.samples_not_kept,
                samples_without_stack: self.samples_without_stack,
                shallow_samples: self.shallow_samples,
                dropped_frames,
                samples_outside_mappings,
                modules_opened: self.modules.len() as u64,
                limits,
                top: Vec::new(),
            },
            stacks: merged,
            timed,
            internal: self.settings.internal_frames.clone(),
        }
        .with_top()
    }

    /// The stack's frames, innermost first, and how many were dropped. The stack ends at the
    /// first address outside every executable mapping of the process: such an address is not
    /// code we can name (a frame-pointer walk that read data, `0`, or code that ran before
    /// its mappings could be read), and the frames beyond it were found through it.
    fn symbolize(&mut self, index: usize) -> (Vec<Frame>, u64) {
        let Some(raw) = self.stacks.get(index) else {
            return (Vec::new(), 0);
        };
        let mappings = raw.mappings.clone();
        let addresses = raw.frames.clone();
        let mut frames = Vec::with_capacity(addresses.len());
        for (position, &address) in addresses.iter().enumerate() {
            // Return addresses point after the call; look up the call itself.
            let lookup = if position == 0 {
                address
            } else {
                address.saturating_sub(1)
            };
            let Some(mapping) = mappings
                .iter()
                .find(|m| lookup >= m.start && lookup < m.end)
            else {
                break;
            };
            let offset = lookup - mapping.start + mapping.file_offset;
            let function = mapping
                .module
                .and_then(|module| self.modules.symbolize(module, &[offset]).pop().flatten());
            frames.push(Frame {
                function,
                module: mapping.name.clone(),
                offset,
            });
        }
        let dropped = (addresses.len() - frames.len()) as u64;
        (frames, dropped)
    }
}

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: Option<Arc<str>>,
    pub module: Arc<str>,
    /// File offset in the module (the address for unknown modules).
    pub offset: u64,
}

impl Frame {
    /// `function` when symbolized, `module+0xoffset` otherwise.
    pub fn display(&self) -> String {
        match &self.function {
            Some(function) => function.to_string(),
            None => format!("{}+{:#x}", self.module, self.offset),
        }
    }
}

/// A distinct symbolized stack and what it made.
#[derive(Clone, Debug)]
pub struct SymbolizedStack {
    /// Innermost first.
    pub frames: Vec<Frame>,
    pub fault_bytes: u64,
    pub reserved_bytes: u64,
    pub samples: u64,
}

impl SymbolizedStack {
    /// The code path's name: the innermost frame that is the application's, not internals.
    pub fn code_path(&self, internal: &InternalFrames) -> String {
        internal
            .naming_frame(&self.frames)
            .map_or_else(|| "[no stack]".to_owned(), Frame::display)
    }

    pub fn shown_frames(&self) -> Vec<String> {
        self.frames
            .iter()
            .take(FRAMES_SHOWN)
            .map(Frame::display)
            .collect()
    }
}

/// What the stack files are written from: folded stacks (`--folded`, `--flamegraph`) and the
/// symbolized profile (`--pprof`).
#[derive(Clone, Debug, Default)]
pub struct StackFiles {
    pub folded: Vec<String>,
    pub profile: Option<Arc<StackProfile>>,
}

/// Everything the session's stacks say.
#[derive(Debug)]
pub struct StackProfile {
    pub summary: StackSummary,
    pub stacks: Vec<SymbolizedStack>,
    timed: Vec<TimedSample>,
    internal: InternalFrames,
}

/// Resident bytes made by one code path (sources of kind `code_path`).
#[derive(Clone, Debug, PartialEq)]
pub struct CodePath {
    pub name: String,
    pub resident_bytes: u64,
    pub reserved_bytes: u64,
    /// Frames of its heaviest stack, innermost first.
    pub frames: Vec<String>,
}

impl StackProfile {
    /// A profile of the given stacks, as `finish` would make it.
    #[cfg(test)]
    pub(crate) fn for_tests(stacks: Vec<SymbolizedStack>) -> Self {
        Self {
            summary: StackSummary {
                unwinding: Unwinding::FramePointers,
                fault_sample_bytes: StackSettings::default().fault_sample_bytes,
                reservation_threshold_bytes: 0,
                samples: stacks.iter().map(|s| s.samples).sum(),
                sampled_fault_bytes: stacks.iter().map(|s| s.fault_bytes).sum(),
                sampled_reserved_bytes: stacks.iter().map(|s| s.reserved_bytes).sum(),
                distinct_stacks: stacks.len() as u64,
                samples_not_kept: 0,
                samples_without_stack: 0,
                shallow_samples: 0,
                dropped_frames: 0,
                samples_outside_mappings: 0,
                modules_opened: 0,
                limits: Vec::new(),
                top: Vec::new(),
            },
            stacks,
            timed: Vec::new(),
            internal: InternalFrames::default(),
        }
        .with_top()
    }

    fn with_top(mut self) -> Self {
        let mut order: Vec<&SymbolizedStack> = self.stacks.iter().collect();
        order.sort_by_key(|stack| std::cmp::Reverse((stack.fault_bytes, stack.reserved_bytes)));
        self.summary.top = order
            .into_iter()
            .take(TOP_STACKS)
            .map(|stack| StackEntry {
                code_path: stack.code_path(&self.internal),
                resident_bytes: stack.fault_bytes,
                reserved_bytes: stack.reserved_bytes,
                samples: stack.samples,
                frames: stack.shown_frames(),
            })
            .collect();
        self
    }

    /// Bytes by code path, heaviest first.
    pub fn code_paths(&self) -> Vec<CodePath> {
        let mut paths: HashMap<String, (u64, u64, u64, Vec<String>)> = HashMap::new();
        for stack in &self.stacks {
            // No frame to name it by (all outside known mappings), or nothing made: not a source.
            if stack.frames.is_empty() || (stack.fault_bytes == 0 && stack.reserved_bytes == 0) {
                continue;
            }
            let entry = paths.entry(stack.code_path(&self.internal)).or_default();
            entry.0 += stack.fault_bytes;
            entry.1 += stack.reserved_bytes;
            let weight = stack.fault_bytes.max(stack.reserved_bytes);
            if weight > entry.2 {
                entry.2 = weight;
                entry.3 = stack.shown_frames();
            }
        }
        let mut paths: Vec<CodePath> = paths
            .into_iter()
            .map(|(name, (resident, reserved, _, frames))| CodePath {
                name,
                resident_bytes: resident,
                reserved_bytes: reserved,
                frames,
            })
            .collect();
        paths.sort_by(|a, b| {
            (b.resident_bytes, b.reserved_bytes, &a.name).cmp(&(
                a.resident_bytes,
                a.reserved_bytes,
                &b.name,
            ))
        });
        paths
    }

    /// The stack that faulted in the most bytes between two session times, with those bytes.
    pub fn heaviest_between(&self, from_ms: u64, to_ms: u64) -> Option<(&SymbolizedStack, u64)> {
        let mut bytes: HashMap<usize, u64> = HashMap::new();
        let named = |sample: &&TimedSample| {
            self.stacks
                .get(sample.stack)
                .is_some_and(|stack| !stack.frames.is_empty())
        };
        for sample in self
            .timed
            .iter()
            .filter(|s| s.elapsed_ms >= from_ms && s.elapsed_ms <= to_ms)
            .filter(named)
        {
            *bytes.entry(sample.stack).or_default() += sample.bytes;
        }
        let (stack, bytes) = bytes
            .into_iter()
            .max_by_key(|&(stack, bytes)| (bytes, std::cmp::Reverse(stack)))?;
        Some((self.stacks.get(stack)?, bytes))
    }

    /// Names the code path behind each spike: the stack that faulted in the most during it
    /// (from two buckets before its start, where its first faults land, to one after its end).
    pub fn name_spike_sources(
        &self,
        spikes: &mut [crate::accounting::analysis::Spike],
        resolution_ms: u64,
    ) {
        for spike in spikes {
            let start_ms = (spike.start_seconds * 1000.0) as u64;
            let from = start_ms.saturating_sub(2 * resolution_ms);
            let to = start_ms + spike.duration_ms + resolution_ms;
            if let Some((stack, bytes)) = self.heaviest_between(from, to) {
                spike.source = Some(stack.code_path(&self.internal));
                spike.source_bytes = Some(bytes);
                spike.frames = stack.shown_frames();
            }
        }
    }

    /// Folded stacks (`root;...;leaf bytes`), under a first frame saying what the bytes are.
    pub fn folded(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for stack in &self.stacks {
            let path: Vec<String> = stack.frames.iter().rev().map(Frame::display).collect();
            let path = path.join(";").replace(' ', "_");
            for (root, bytes) in [
                ("resident", stack.fault_bytes),
                ("reserved", stack.reserved_bytes),
            ] {
                if bytes > 0 {
                    let separator = if path.is_empty() { "" } else { ";" };
                    lines.push(format!("{root}{separator}{path} {bytes}"));
                }
            }
        }
        lines.sort();
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            function: Some(Arc::from(function)),
            module: Arc::from(module),
            offset: 0,
        }
    }

    #[test]
    fn code_path_skips_allocator_frames() {
        let stack = SymbolizedStack {
            frames: vec![
                frame("__memset_avx2_unaligned_erms", "libc.so.6"),
                frame("build_cache", "service"),
                frame("main", "service"),
            ],
            fault_bytes: 1,
            reserved_bytes: 0,
            samples: 1,
        };
        let internal = InternalFrames::default();
        assert_eq!(stack.code_path(&internal), "build_cache");
        let only_libc = SymbolizedStack {
            frames: vec![frame("malloc", "libc.so.6")],
            ..stack
        };
        assert_eq!(only_libc.code_path(&internal), "malloc");
    }

    fn sample(tgid: u32, frames: &[u64], bytes: u64, ms: u64) -> StackSample {
        StackSample {
            tgid,
            target_id: 1,
            timestamp_ns: ms * 1_000_000,
            bytes,
            address: 0,
            source: stack_source::FAULT,
            detail: 1,
            frames: frames.to_vec(),
            snapshot: None,
        }
    }

    #[test]
    fn samples_aggregate_by_stack_and_time() {
        let root = std::env::temp_dir().join("headroom-no-such-proc-root");
        let mut collector = StackCollector::new(StackSettings::default(), root, 0);
        collector.record(&sample(7, &[0x10, 0x20, 0x30, 0x40], 512 << 10, 100));
        collector.record(&sample(7, &[0x10, 0x20, 0x30, 0x40], 512 << 10, 150));
        collector.record(&sample(7, &[0x30], 512 << 10, 2_000));
        // Process 8 maps code at 0x1000..0x2000; 0x9000 and 0x0 lie outside it.
        collector.processes.insert(
            8,
            ProcessView {
                mappings: Arc::new(vec![ExecMapping {
                    start: 0x1000,
                    end: 0x2000,
                    file_offset: 0,
                    module: None,
                    name: Arc::from("service"),
                }]),
                refreshes: MAX_REFRESHES,
                unwinder: None,
            },
        );
        collector.record(&sample(
            8,
            &[0x1010, 0x1020, 0x9000, 0x1030],
            512 << 10,
            3_000,
        ));
        collector.record(&sample(8, &[0x0, 0x1020], 512 << 10, 3_000));
        let profile = collector.finish();
        assert_eq!(profile.summary.samples, 5);
        assert_eq!(profile.summary.sampled_fault_bytes, 5 * (512 << 10));
        // Process 7 has no known mapping: its frames are dropped, never shown as addresses, and
        // a stack without frames names no spike.
        assert!(profile.heaviest_between(0, 1_000).is_none());
        let (heaviest, bytes) = profile.heaviest_between(2_500, 3_500).expect("a stack");
        assert_eq!(bytes, 512 << 10);
        assert_eq!(heaviest.frames.len(), 2);
        // Process 8: the walk ends at the first address outside its mappings.
        let named: Vec<Vec<String>> = profile
            .stacks
            .iter()
            .map(|stack| stack.frames.iter().map(Frame::display).collect())
            .filter(|frames: &Vec<String>| !frames.is_empty())
            .collect();
        assert_eq!(named, [vec!["service+0x10", "service+0x1f"]]);
        // 4 + 4 + 1 frames of process 7, 2 of the first stack of 8, 2 of the second.
        assert_eq!(profile.summary.dropped_frames, 13);
        assert_eq!(profile.summary.samples_outside_mappings, 4);
        let folded = profile.folded();
        assert!(folded.iter().all(|line| !line.contains("unknown")));
        // Only the named stack is a source, with its bytes.
        let paths = profile.code_paths();
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].resident_bytes, 512 << 10);
        assert!(profile.summary.limits[0].contains("no frame in a known executable mapping"));
    }

    #[test]
    fn shallow_eh_frame_stacks_do_not_advise_eh_frame() {
        for (unwinding, advice) in [
            (Unwinding::FramePointers, true),
            (Unwinding::EhFrame, false),
        ] {
            let settings = StackSettings {
                unwinding,
                ..StackSettings::default()
            };
            let mut collector = StackCollector::new(settings, PathBuf::from("/nonexistent"), 0);
            collector.record(&sample(1, &[1, 2], 10, 0));
            let limits = collector.finish().summary.limits;
            let shallow = limits
                .iter()
                .find(|limit| limit.contains("ended within 3 frames"))
                .expect("a shallow-stack limit");
            assert_eq!(shallow.contains("--unwind eh-frame"), advice, "{shallow}");
        }
    }

    #[test]
    fn deep_stacks_are_bounded_by_frames_kept() {
        let settings = StackSettings {
            max_stacks: MAX_STACKS_LIMIT * 16,
            ..StackSettings::default()
        };
        let mut collector = StackCollector::new(settings, PathBuf::from("/nonexistent"), 0);
        let depth = profiler_common::MAX_STACK_FRAMES as u64;
        let distinct = 9_000;
        for stack in 0..distinct {
            let frames: Vec<u64> = (0..depth).map(|frame| stack * 1000 + frame + 1).collect();
            collector.record(&sample(1, &frames, 10, 0));
        }
        let kept = (MAX_KEPT_FRAMES as u64) / depth;
        assert_eq!(collector.stacks.len() as u64, kept);
        assert!(collector.kept_frames <= MAX_KEPT_FRAMES);
        let profile = collector.finish();
        assert_eq!(profile.summary.samples_not_kept, distinct - kept);
    }

    #[test]
    fn bounded_stacks_count_what_they_drop() {
        let settings = StackSettings {
            max_stacks: 1,
            ..StackSettings::default()
        };
        let mut collector = StackCollector::new(settings, PathBuf::from("/nonexistent"), 0);
        collector.record(&sample(1, &[1, 2, 3, 4], 10, 0));
        collector.record(&sample(1, &[5, 6, 7, 8], 10, 0));
        let profile = collector.finish();
        assert_eq!(profile.summary.samples_not_kept, 1);
        assert_eq!(profile.stacks.len(), 1);
        assert!(profile
            .summary
            .limits
            .iter()
            .any(|limit| limit.contains("--max-stacks")));
    }
}
