//! Loading, attaching and reading headroom's eBPF probes.
//!
//! [`Probes`] owns the loaded object. Dropping it detaches every program (aya links are not
//! pinned), so an early return, an error or an unwinding panic all leave the kernel clean.

pub mod btf;
pub mod events;
pub mod layout;
pub mod preflight;
mod view;

use std::path::Path;

use aya::{
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint},
    Ebpf, EbpfError, EbpfLoader,
};
pub use events::{
    decode_event, DecodeError, MappingChange, OomVictim, ProbeEvent, ProcessExit, ProcessStart,
};
use profiler_common::{
    capacity, drop_reason, exit_mode, global, map, program, rss_member, MemoryCounters, MmOwner,
    PendingCall, ProcessCounters, StackSampling, WindowKey, WindowPeaks,
};
use thiserror::Error;
use tokio::io::{unix::AsyncFd, Interest};

/// The compiled eBPF object, built by build.rs and embedded in the binary.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler"));

/// Every tracepoint headroom attaches: (program name, category, event).
pub const TRACEPOINTS: [(&str, &str, &str); 15] = [
    (program::TASK_NEWTASK, "task", "task_newtask"),
    (program::SCHED_PROCESS_EXIT, "sched", "sched_process_exit"),
    (program::SCHED_PROCESS_EXEC, "sched", "sched_process_exec"),
    (program::CGROUP_ATTACH_TASK, "cgroup", "cgroup_attach_task"),
    (program::SYS_ENTER_MMAP, "syscalls", "sys_enter_mmap"),
    (program::SYS_EXIT_MMAP, "syscalls", "sys_exit_mmap"),
    (program::SYS_ENTER_MUNMAP, "syscalls", "sys_enter_munmap"),
    (program::SYS_EXIT_MUNMAP, "syscalls", "sys_exit_munmap"),
    (program::SYS_ENTER_MREMAP, "syscalls", "sys_enter_mremap"),
    (program::SYS_EXIT_MREMAP, "syscalls", "sys_exit_mremap"),
    (
        program::SYS_ENTER_MPROTECT,
        "syscalls",
        "sys_enter_mprotect",
    ),
    (program::SYS_EXIT_MPROTECT, "syscalls", "sys_exit_mprotect"),
    (program::SYS_EXIT_BRK, "syscalls", "sys_exit_brk"),
    (program::RSS_STAT, "kmem", "rss_stat"),
    (program::MARK_VICTIM, "oom", "mark_victim"),
];

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error("loading the eBPF object into the kernel failed")]
    Load(#[source] Box<EbpfError>),
    #[error("the eBPF object has no program `{0}` (build mismatch: rebuild headroom)")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map `{0}` (build mismatch: rebuild headroom)")]
    MissingMap(&'static str),
    #[error(
        "the kernel's verifier refused program `{name}` ({io_error}){others}; the end of its \
         log:\n{log_tail}"
    )]
    Verifier {
        name: &'static str,
        io_error: std::io::Error,
        log_tail: String,
        /// The other programs it refused too (every program is tried), as text.
        others: String,
    },
    #[error("the kernel refused to load program `{name}`")]
    ProgramLoad {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attaching program `{name}` to tracepoint {category}:{event} failed")]
    Attach {
        name: &'static str,
        category: &'static str,
        event: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("map `{name}` has an unexpected type or layout")]
    MapType {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("reading map `{name}` failed")]
    MapRead {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("updating map `{name}` failed")]
    MapWrite {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("watching the event ring buffer failed")]
    RingBufPoll(#[source] std::io::Error),
    #[error("enabling the kernel's BPF run-time statistics failed")]
    Stats(#[source] std::io::Error),
}

/// What to trace and how big the kernel maps may grow.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// Count every cgroup on the host (agent) instead of only the ones passed to
    /// [`Probes::track_cgroup`] and [`Probes::follow_process`] (capture sessions).
    pub trace_all_cgroups: bool,
    /// Send every mapping change through the ring buffer, for exact per-region reserved memory.
    pub track_regions: bool,
    /// Keep per-window high-water marks for [`Probes::close_window`] (capture timelines).
    pub track_windows: bool,
    /// Attach the syscalls:* tracepoints (mmap, munmap, mremap, mprotect, brk). Enabling any
    /// syscall tracepoint sends every syscall of every process through the kernel's tracing
    /// slow path, which syscall-heavy services feel; the always-on agent goes without them.
    pub trace_syscalls: bool,
    /// Targets counted at once.
    pub max_targets: u32,
    /// Processes counted at once (and address spaces known): see `capacity::PROCESSES`.
    pub max_processes: u32,
    /// Size of the ring buffer for rare events (a power of two, at least one page).
    pub events_bytes: u32,
    /// Allow stack snapshots for `.eh_frame` unwinding. Needs kernel BTF; off, the verifier
    /// never sees the snapshot code (a load-time constant prunes it), so kernels without BTF
    /// still load everything else.
    pub stack_snapshots: bool,
    /// How process exits are told apart from thread exits. `Auto` takes the best this kernel
    /// offers; the others force a fallback, so tests can check it on any kernel.
    pub exit_tracking: ExitTrackingChoice,
}

/// See [`ProbeConfig::exit_tracking`] and [`preflight::ExitTracking`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitTrackingChoice {
    #[default]
    Auto,
    /// `task->signal->live` through BTF offsets, even where the record has `group_dead`.
    SignalLive,
    /// The kernel map's thread counts and leader exits (the no-BTF fallback).
    LiveCount,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            trace_all_cgroups: false,
            track_regions: true,
            track_windows: true,
            trace_syscalls: true,
            max_targets: capacity::TARGETS,
            max_processes: preflight::process_capacity(Path::new("/")),
            events_bytes: capacity::EVENTS_BYTES,
            stack_snapshots: false,
            exit_tracking: ExitTrackingChoice::Auto,
        }
    }
}

/// The loaded and attached probes, with typed handles on their maps.
pub use crate::report::{DropCounts, KernelEntries};
pub use view::{FakeKernel, KernelView};

/// The loaded and attached probes, with typed handles on their maps.
pub struct Probes {
    // Field order matters for drop: the maps close first, then `ebpf` detaches the programs.
    /// Whether [`Probes::attach`] attaches the syscalls:* tracepoints.
    attach_syscalls: bool,
    /// Size of the process map (see [`ProbeConfig::max_processes`]).
    max_processes: u32,
    target_counters: HashMap<MapData, u64, MemoryCounters>,
    process_counters: HashMap<MapData, u32, ProcessCounters>,
    pending_calls: HashMap<MapData, u64, PendingCall>,
    tracked_cgroups: HashMap<MapData, u64, u8>,
    tracked_tgids: HashMap<MapData, u32, u64>,
    mm_owners: HashMap<MapData, u32, MmOwner>,
    window_peaks: HashMap<MapData, WindowKey, WindowPeaks>,
    window_epoch: Array<MapData, u64>,
    epoch: u64,
    drops: PerCpuArray<MapData, u64>,
    sampled_targets: HashMap<MapData, u64, StackSampling>,
    sampling_active: Array<MapData, u32>,
    events: Option<RingBuf<MapData>>,
    features: preflight::KernelFeatures,
    ebpf: Ebpf,
}

/// Load-time globals that tell the programs how this kernel does things.
struct KernelGlobals {
    exit_mode: u8,
    exit_group_dead_offset: u32,
    task_signal_offset: u32,
    signal_live_offset: u32,
    oom_sizes: [u32; 4],
}

impl KernelGlobals {
    fn of(features: &preflight::KernelFeatures) -> Self {
        let mut globals = Self {
            exit_mode: exit_mode::LIVE_COUNT,
            exit_group_dead_offset: 0,
            task_signal_offset: 0,
            signal_live_offset: 0,
            oom_sizes: [0; 4],
        };
        match features.exit_tracking {
            preflight::ExitTracking::GroupDeadField { offset } => {
                globals.exit_mode = exit_mode::GROUP_DEAD_FIELD;
                globals.exit_group_dead_offset = offset as u32;
            }
            preflight::ExitTracking::SignalLive {
                task_signal,
                signal_live,
            } => {
                globals.exit_mode = exit_mode::SIGNAL_LIVE;
                globals.task_signal_offset = task_signal;
                globals.signal_live_offset = signal_live;
            }
            preflight::ExitTracking::LiveCount { .. } => {}
        }
        if let Some(offsets) = features.layouts.oom_victim_sizes {
            globals.oom_sizes = offsets.map(|offset| offset as u32);
        }
        globals
    }
}

impl Probes {
    /// Checks privileges and kernel features, loads the object and attaches every program.
    pub fn load(config: &ProbeConfig) -> Result<Self, ProbeError> {
        let mut probes = Self::load_unattached(config)?;
        probes.attach()?;
        Ok(probes)
    }

    /// [`Probes::load`] without attaching: the maps can be written (the agent's seeding, see
    /// [`Probes::seed_resident`]) while no program runs. [`Probes::attach`] starts them.
    pub fn load_unattached(config: &ProbeConfig) -> Result<Self, ProbeError> {
        let started = std::time::Instant::now();
        let mut features = preflight::check(
            Path::new("/"),
            preflight::Needs {
                btf: config.stack_snapshots,
            },
        )?;
        features.force_exit_tracking(config.exit_tracking)?;
        for (feature, status) in features.describe() {
            tracing::info!("kernel: {feature}: {status}");
        }
        if let Some(version) = features
            .version
            .filter(|&version| version < preflight::OLDEST_TESTED_KERNEL)
        {
            let (major, minor) = version;
            let (tested_major, tested_minor) = preflight::OLDEST_TESTED_KERNEL;
            tracing::warn!(
                "kernel {major}.{minor} is older than the oldest kernel headroom is tested on \
                 ({tested_major}.{tested_minor}, Debian 12's, in CI's kernel matrix): it loads \
                 only if this kernel's verifier accepts the programs, and its figures are \
                 unverified here"
            );
        }
        if let preflight::ExitTracking::LiveCount { why } = &features.exit_tracking {
            tracing::warn!(
                "process exits are approximate on this kernel: no group_dead field and no \
                 usable BTF ({why})"
            );
        }
        let kernel = KernelGlobals::of(&features);
        let trace_all = u8::from(config.trace_all_cgroups);
        let track_regions = u8::from(config.track_regions);
        let track_windows = u8::from(config.track_windows);
        let stack_snapshots = u8::from(config.stack_snapshots);
        let [oom_total_vm, oom_anon, oom_file, oom_shmem] = kernel.oom_sizes;
        let mut ebpf = EbpfLoader::new()
            .override_global(global::TRACE_ALL_CGROUPS, &trace_all, true)
            .override_global(global::TRACK_REGIONS, &track_regions, true)
            .override_global(global::TRACK_WINDOWS, &track_windows, true)
            .override_global(global::STACK_SNAPSHOTS, &stack_snapshots, true)
            .override_global(global::EXIT_MODE, &kernel.exit_mode, true)
            .override_global(
                global::EXIT_GROUP_DEAD_OFFSET,
                &kernel.exit_group_dead_offset,
                true,
            )
            .override_global(global::TASK_SIGNAL_OFFSET, &kernel.task_signal_offset, true)
            .override_global(global::SIGNAL_LIVE_OFFSET, &kernel.signal_live_offset, true)
            .override_global(global::OOM_TOTAL_VM_OFFSET, &oom_total_vm, true)
            .override_global(global::OOM_ANON_RSS_OFFSET, &oom_anon, true)
            .override_global(global::OOM_FILE_RSS_OFFSET, &oom_file, true)
            .override_global(global::OOM_SHMEM_RSS_OFFSET, &oom_shmem, true)
            .map_max_entries(map::TARGET_COUNTERS, config.max_targets)
            .map_max_entries(map::PROCESS_COUNTERS, config.max_processes)
            .map_max_entries(map::MM_OWNERS, config.max_processes)
            .map_max_entries(map::EVENTS, config.events_bytes)
            .load(EBPF_OBJECT)
            .map_err(|err| match preflight::explain_load_error(&err) {
                Some(preflight_error) => ProbeError::Preflight(preflight_error),
                None => ProbeError::Load(Box::new(err)),
            })?;

        // Every program is loaded before any is attached, and a refusal does not stop the
        // others: the error names all the programs this kernel's verifier refused.
        let wanted = || {
            TRACEPOINTS
                .into_iter()
                .filter(|(_, category, _)| *category != "syscalls" || config.trace_syscalls)
        };
        let mut refused: Vec<ProbeError> = Vec::new();
        for (name, _, _) in wanted() {
            let program = tracepoint_mut(&mut ebpf, name)?;
            match program.load() {
                Ok(()) => {
                    if let Ok(info) = program.info() {
                        tracing::debug!(
                            program = name,
                            verified_insns = info.verified_instruction_count(),
                            xlated_insns = info.size_translated().map(|bytes| bytes / 8),
                            "program loaded"
                        );
                    }
                }
                Err(ProgramError::LoadError {
                    io_error,
                    verifier_log,
                }) => {
                    let log = verifier_log.to_string();
                    tracing::debug!(program = name, "the verifier's whole log:\n{log}");
                    refused.push(ProbeError::Verifier {
                        name,
                        io_error,
                        log_tail: last_lines(&log, 25),
                        others: String::new(),
                    });
                }
                Err(source) => {
                    return Err(ProbeError::ProgramLoad {
                        name,
                        source: Box::new(source),
                    })
                }
            }
        }
        let names: Vec<&'static str> = refused
            .iter()
            .filter_map(|err| match err {
                ProbeError::Verifier { name, .. } => Some(*name),
                _ => None,
            })
            .collect();
        if let Some(mut first) = refused.into_iter().next() {
            if let (ProbeError::Verifier { others, .. }, [_, rest @ ..]) = (&mut first, &names[..])
            {
                if !rest.is_empty() {
                    *others = format!(" (and {})", rest.join(", "));
                }
            }
            return Err(first);
        }
        tracing::info!(
            programs = TRACEPOINTS.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "probes loaded"
        );
        Ok(Self {
            attach_syscalls: config.trace_syscalls,
            max_processes: config.max_processes,
            target_counters: take_map(&mut ebpf, map::TARGET_COUNTERS)?,
            process_counters: take_map(&mut ebpf, map::PROCESS_COUNTERS)?,
            pending_calls: take_map(&mut ebpf, map::PENDING_CALLS)?,
            tracked_cgroups: take_map(&mut ebpf, map::TRACKED_CGROUPS)?,
            tracked_tgids: take_map(&mut ebpf, map::TRACKED_TGIDS)?,
            mm_owners: take_map(&mut ebpf, map::MM_OWNERS)?,
            window_peaks: take_map(&mut ebpf, map::WINDOW_PEAKS)?,
            window_epoch: take_map(&mut ebpf, map::WINDOW_EPOCH)?,
            epoch: 0,
            drops: take_map(&mut ebpf, map::DROPS)?,
            sampled_targets: take_map(&mut ebpf, map::SAMPLED_TARGETS)?,
            sampling_active: take_map(&mut ebpf, map::SAMPLING_ACTIVE)?,
            events: Some(take_map(&mut ebpf, map::EVENTS)?),
            features,
            ebpf,
        })
    }

    /// Attaches every loaded program: from here on the kernel counts.
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        let attach_syscalls = self.attach_syscalls;
        for (name, category, event) in TRACEPOINTS
            .into_iter()
            .filter(|(_, category, _)| *category != "syscalls" || attach_syscalls)
        {
            tracepoint_mut(&mut self.ebpf, name)?
                .attach(category, event)
                .map_err(|source| ProbeError::Attach {
                    name,
                    category,
                    event,
                    source: Box::new(source),
                })?;
        }
        tracing::info!("probes attached");
        Ok(())
    }

    /// What the kernel offered at load, and what falls back (see [`preflight::KernelFeatures`]).
    pub fn kernel_features(&self) -> &preflight::KernelFeatures {
        &self.features
    }

    /// Starts counting the cgroup with this cgroup v2 id (capture sessions).
    pub fn track_cgroup(&mut self, cgroup_id: u64) -> Result<(), ProbeError> {
        self.tracked_cgroups
            .insert(cgroup_id, 1, 0)
            .map_err(|source| ProbeError::MapWrite {
                name: map::TRACKED_CGROUPS,
                source: Box::new(source),
            })
    }

    /// Switches stack sampling on for one target (a capture session's cgroup or process tree).
    /// Samples arrive on the event stream as `ProbeEvent::StackSample`.
    pub fn sample_stacks(
        &mut self,
        target_id: u64,
        sampling: StackSampling,
    ) -> Result<(), ProbeError> {
        self.sampled_targets
            .insert(target_id, sampling, 0)
            .map_err(|source| ProbeError::MapWrite {
                name: map::SAMPLED_TARGETS,
                source: Box::new(source),
            })?;
        self.set_sampling_active(true)
    }

    /// Switches stack sampling off for one target; the gate closes with the last one.
    pub fn stop_sampling_stacks(&mut self, target_id: u64) -> Result<(), ProbeError> {
        match self.sampled_targets.remove(&target_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(ProbeError::MapWrite {
                    name: map::SAMPLED_TARGETS,
                    source: Box::new(source),
                })
            }
        }
        let any_left = self.sampled_targets.keys().next().is_some();
        self.set_sampling_active(any_left)
    }

    fn set_sampling_active(&mut self, active: bool) -> Result<(), ProbeError> {
        self.sampling_active
            .set(0, u32::from(active), 0)
            .map_err(|source| ProbeError::MapWrite {
                name: map::SAMPLING_ACTIVE,
                source: Box::new(source),
            })
    }

    /// Follows a process and, from now on, every process it forks, counting them all under
    /// `target_id` (capture `--pid`).
    ///
    /// A process that is already dead (gone, or a zombie) when it is followed is forgotten at
    /// once: its exit passed before the kernel side could see it, so nothing else would.
    pub fn follow_process(&mut self, tgid: u32, target_id: u64) -> Result<(), ProbeError> {
        self.tracked_tgids
            .insert(tgid, target_id, 0)
            .map_err(|source| ProbeError::MapWrite {
                name: map::TRACKED_TGIDS,
                source: Box::new(source),
            })?;
        // Checked after the insert: a process alive then will have its exit seen.
        if process_is_dead(tgid) {
            match self.tracked_tgids.remove(&tgid) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(ProbeError::MapWrite {
                        name: map::TRACKED_TGIDS,
                        source: Box::new(source),
                    })
                }
            }
        }
        Ok(())
    }

    /// The kernel's counters for one target, or `None` if nothing happened in it yet.
    pub fn target_counters(&self, target_id: u64) -> Result<Option<MemoryCounters>, ProbeError> {
        match self.target_counters.get(&target_id, 0) {
            Ok(counters) => Ok(Some(counters)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(ProbeError::MapRead {
                name: map::TARGET_COUNTERS,
                source: Box::new(source),
            }),
        }
    }

    /// Seeds the resident memory of processes that were running before tracking began, so an
    /// idle one is counted before its next page fault. Must run before the target is tracked
    /// (captures) or before the probes are attached (the agent counts every cgroup: it loads
    /// with [`Probes::load_unattached`]): then nothing in the kernel races with these writes.
    /// `processes` are (tgid, rss by `rss_member`).
    pub fn seed_resident(
        &mut self,
        target_id: u64,
        processes: &[(u32, [i64; rss_member::COUNT])],
    ) -> Result<(), ProbeError> {
        let write_error = |name: &'static str| {
            move |source| ProbeError::MapWrite {
                name,
                source: Box::new(source),
            }
        };
        let mut sums = MemoryCounters::default();
        for &(tgid, rss) in processes {
            let mut process = ProcessCounters {
                target_id,
                ..ProcessCounters::default()
            };
            process.counters.rss_bytes = rss;
            raise_resident_peaks(&mut process.counters);
            // NOEXIST: an entry the kernel already made is more current than /proc was.
            match self.process_counters.insert(tgid, process, BPF_NOEXIST) {
                Ok(()) => {
                    for (sum, value) in sums.rss_bytes.iter_mut().zip(rss) {
                        *sum += value;
                    }
                }
                Err(err) if already_exists(&err) => {}
                Err(source) => return Err(write_error(map::PROCESS_COUNTERS)(source)),
            }
        }
        raise_resident_peaks(&mut sums);
        match self.target_counters.insert(target_id, sums, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(err) if already_exists(&err) => {
                // The kernel made the target meanwhile (another of its processes faulted): add
                // the seeded processes to its sums, or they would be missing for good. (A
                // kernel update landing between this read and write is the one thing lost.)
                let mut existing = match self.target_counters.get(&target_id, 0) {
                    Ok(existing) => existing,
                    Err(source) => {
                        return Err(ProbeError::MapRead {
                            name: map::TARGET_COUNTERS,
                            source: Box::new(source),
                        })
                    }
                };
                for (sum, value) in existing.rss_bytes.iter_mut().zip(sums.rss_bytes) {
                    *sum += value;
                }
                raise_resident_peaks(&mut existing);
                self.target_counters
                    .insert(target_id, existing, BPF_EXIST)
                    .map_err(write_error(map::TARGET_COUNTERS))
            }
            Err(source) => Err(write_error(map::TARGET_COUNTERS)(source)),
        }
    }

    /// Run time and run count of each program, from the kernel's BPF statistics (counted only
    /// while statistics are enabled: see [`enable_run_time_stats`]).
    pub fn program_stats(&self) -> Vec<(&'static str, std::time::Duration, u64)> {
        TRACEPOINTS
            .iter()
            .filter_map(|(name, _, _)| {
                let info = self.ebpf.program(name)?.info().ok()?;
                Some((*name, info.run_time(), info.run_count()))
            })
            .collect()
    }

    /// Forgets a target's counters (it is gone), so the map does not fill with the dead.
    pub fn forget_target(&mut self, target_id: u64) -> Result<(), ProbeError> {
        match self.target_counters.remove(&target_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(ProbeError::MapWrite {
                name: map::TARGET_COUNTERS,
                source: Box::new(source),
            }),
        }
    }

    /// Size of the process map, as loaded.
    pub fn process_capacity(&self) -> u32 {
        self.max_processes
    }

    /// Entries in the process table (for its fill ratio).
    pub fn process_entries(&self) -> usize {
        self.process_counters.keys().filter(Result::is_ok).count()
    }

    /// Every target's counters (node-wide captures).
    pub fn all_target_counters(&self) -> Result<Vec<(u64, MemoryCounters)>, ProbeError> {
        self.target_counters
            .iter()
            .map(|entry| {
                entry.map_err(|source| ProbeError::MapRead {
                    name: map::TARGET_COUNTERS,
                    source: Box::new(source),
                })
            })
            .collect()
    }

    /// Closes the current high-water-mark window of a target and returns its marks. The kernel
    /// writes into one of two slots chosen by the epoch's parity; flipping the epoch first means
    /// the slot read here is no longer written, so no update falls between read and reset.
    pub fn close_window(&mut self, target_id: u64) -> Result<WindowPeaks, ProbeError> {
        let closing_epoch = self.epoch;
        let closing = WindowKey {
            target_id,
            slot: closing_epoch & 1,
        };
        self.epoch += 1;
        self.window_epoch
            .set(0, self.epoch, 0)
            .map_err(|source| ProbeError::MapWrite {
                name: map::WINDOW_EPOCH,
                source: Box::new(source),
            })?;
        let peaks = match self.window_peaks.get(&closing, 0) {
            // Marks re-created in this slot by a program that read an older epoch (see
            // `WindowPeaks::epoch`) are not this window's: nothing grew in it.
            Ok(peaks) if peaks.epoch != closing_epoch => WindowPeaks::default(),
            Ok(peaks) => peaks,
            Err(MapError::KeyNotFound) => return Ok(WindowPeaks::default()),
            Err(source) => {
                return Err(ProbeError::MapRead {
                    name: map::WINDOW_PEAKS,
                    source: Box::new(source),
                })
            }
        };
        match self.window_peaks.remove(&closing) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(peaks),
            Err(source) => Err(ProbeError::MapWrite {
                name: map::WINDOW_PEAKS,
                source: Box::new(source),
            }),
        }
    }

    /// Kernel entries still held for a target (for checking that nothing leaks).
    pub fn kernel_entries(&self, target_id: u64) -> Result<KernelEntries, ProbeError> {
        let read_error = |name: &'static str| {
            move |source| ProbeError::MapRead {
                name,
                source: Box::new(source),
            }
        };
        let mut entries = KernelEntries::default();
        for entry in self.process_counters.iter() {
            let (_, process) = entry.map_err(read_error(map::PROCESS_COUNTERS))?;
            entries.processes += u64::from(process.target_id == target_id);
        }
        for entry in self.pending_calls.iter() {
            let (_, call) = entry.map_err(read_error(map::PENDING_CALLS))?;
            entries.pending_calls += u64::from(call.target_id == target_id);
        }
        for entry in self.tracked_tgids.iter() {
            let (_, target) = entry.map_err(read_error(map::TRACKED_TGIDS))?;
            entries.followed_processes += u64::from(target == target_id);
        }
        for entry in self.mm_owners.iter() {
            let (_, owner) = entry.map_err(read_error(map::MM_OWNERS))?;
            entries.address_space_owners += u64::from(owner.target_id == target_id);
        }
        Ok(entries)
    }

    /// Processes still in the kernel's table (alive, or exited while the event was dropped).
    pub fn live_processes(&self) -> Result<Vec<(u32, ProcessCounters)>, ProbeError> {
        self.process_counters
            .iter()
            .map(|entry| {
                entry.map_err(|source| ProbeError::MapRead {
                    name: map::PROCESS_COUNTERS,
                    source: Box::new(source),
                })
            })
            .collect()
    }

    /// Drops by reason, summed over CPUs.
    pub fn drops(&self) -> Result<DropCounts, ProbeError> {
        let read = |reason: u32| -> Result<u64, ProbeError> {
            let per_cpu = self
                .drops
                .get(&reason, 0)
                .map_err(|source| ProbeError::MapRead {
                    name: map::DROPS,
                    source: Box::new(source),
                })?;
            Ok(per_cpu.iter().sum())
        };
        Ok(DropCounts {
            ringbuf_full: read(drop_reason::RINGBUF_FULL)?,
            pending_calls_full: read(drop_reason::PENDING_CALLS_FULL)?,
            target_map_full: read(drop_reason::TARGET_MAP_FULL)?,
            process_map_full: read(drop_reason::PROCESS_MAP_FULL)?,
            tracked_tgids_full: read(drop_reason::TRACKED_TGIDS_FULL)?,
            stack_unavailable: read(drop_reason::STACK_UNAVAILABLE)?,
        })
    }

    /// Hands out the ring buffer of rare events as an async stream. Only the first call gets it.
    /// Must be called inside a tokio runtime with I/O enabled.
    pub fn take_event_stream(&mut self) -> Result<Option<EventStream>, ProbeError> {
        match self.events.take() {
            Some(ring) => {
                // SAFETY: the RingBuf owns its map fd for its whole life and always returns
                // the same one from as_raw_fd; the AsyncFd takes ownership of the RingBuf.
                let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                    .map_err(|err| ProbeError::RingBufPoll(err.into()))?;
                let mut poll = tokio::time::interval(EVENT_POLL_INTERVAL);
                poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Ok(Some(EventStream { ring, poll }))
            }
            None => Ok(None),
        }
    }
}

/// Turns on the kernel's BPF run-time statistics for as long as the returned descriptor is
/// open (they cost a clock read per program run, so only while someone looks).
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd, ProbeError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|err| ProbeError::Stats(err.io_error))
}

/// Whether a process has exited: no /proc entry, or a zombie (state Z or X in its stat line).
fn process_is_dead(tgid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tgid}/stat")) else {
        return true;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].split_whitespace().next());
    matches!(state, Some("Z" | "X"))
}

/// Whether a map insert failed because BPF_NOEXIST found the key.
fn already_exists(err: &MapError) -> bool {
    matches!(err, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EEXIST))
}

/// BPF_NOEXIST: create only.
const BPF_NOEXIST: u64 = 1;
/// BPF_EXIST: update only.
const BPF_EXIST: u64 = 2;

/// Sets the resident high-water marks of seeded counters to their current sums.
fn raise_resident_peaks(counters: &mut MemoryCounters) {
    let anon = counters.rss_bytes[rss_member::ANON].max(0) as u64;
    let file = (counters.rss_bytes[rss_member::FILE] + counters.rss_bytes[rss_member::SHMEM]).max(0)
        as u64;
    counters.resident_peak_bytes = counters.resident_peak_bytes.max(anon + file);
    counters.anon_peak_bytes = counters.anon_peak_bytes.max(anon);
    counters.file_peak_bytes = counters.file_peak_bytes.max(file);
}

/// The last `count` lines of a (possibly huge) verifier log.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

fn tracepoint_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut TracePoint, ProbeError> {
    ebpf.program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?
        .try_into()
        .map_err(|source| ProbeError::ProgramLoad {
            name,
            source: Box::new(source),
        })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    T::try_from(map).map_err(|source| ProbeError::MapType {
        name,
        source: Box::new(source),
    })
}

/// Rare events from the kernel, decoded.
pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    /// Keeps its schedule when `next_batch` is cancelled (callers select on it beside their
    /// own ticks), so the ring is read every interval however often they tick.
    poll: tokio::time::Interval,
}

/// How often the ring buffer is read without a wakeup. The programs submit without waking
/// the reader (a wakeup costs a VM exit per record) unless the ring is a quarter full
/// (`profiler-ebpf/src/events.rs`), so this is the latency of a rare event.
pub const EVENT_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl EventStream {
    /// Waits until events are ready (a wakeup, or [`EVENT_POLL_INTERVAL`]), then decodes all
    /// that are, in order (possibly none). Records that fail to decode are returned as errors,
    /// not skipped.
    pub async fn next_batch(&mut self) -> Result<Vec<Result<ProbeEvent, DecodeError>>, ProbeError> {
        tokio::select! {
            ready = self.ring.readable_mut() => {
                let mut guard = ready.map_err(ProbeError::RingBufPoll)?;
                let batch = drain(guard.get_inner_mut());
                guard.clear_ready();
                Ok(batch)
            }
            _ = self.poll.tick() => Ok(drain(self.ring.get_mut())),
        }
    }

    /// Decodes whatever is already in the ring buffer without waiting.
    pub fn drain_now(&mut self) -> Vec<Result<ProbeEvent, DecodeError>> {
        drain(self.ring.get_mut())
    }
}

fn drain(ring: &mut RingBuf<MapData>) -> Vec<Result<ProbeEvent, DecodeError>> {
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        batch.push(decode_event(&item));
    }
    batch
}
