//! The one `TargetReport` builder. Every way in (command capture, `--cgroup`/`--pid`/`--pod`,
//! `capture --all`, agent sessions, the agent's per-container report) fills the same builder
//! with what it has, so phases, peaks and their sources, spikes and memory sources are read
//! the same way everywhere, and sizing reads the finished report.

use profiler_common::{rss_member, MemoryCounters};

use super::{memory_sources, KernelBucket, Recorder, SourceFigures};
use crate::{
    accounting::{
        analysis::{read_series, summarise, AnalysisConfig, Phases},
        regions::RegionTracker,
    },
    cgroups::{ChargeReader, ChargeVersion},
    report::{
        ActivitySummary, Attribution, BucketPeaks, ChargedMemory, ExitSummary, KernelEntries,
        KubernetesMeta, OomKill, PeakSource, ProcessRecord, ReservedMemory, ResidentMemory,
        ResidentPhases, RuntimeSection, TargetKind, TargetReport, Threads, TimelineExcerpt,
    },
    stacks::{StackFiles, StackProfile},
};

/// Timeline kept in the report before each OOM kill.
const OOM_TIMELINE_MS: u64 = 5_000;

/// How a charge peak is known, from the most exact to the least.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeakPolicy {
    /// The cgroup was made for the session: its lifetime high-water mark is the session's own.
    OwnCgroup,
    /// An existing cgroup watched for a while: the kernel's windowed marks where it resets them
    /// per descriptor, else samples.
    Watched,
    /// The agent: the lifetime mark when it first saw the cgroup (seeded into the recorder),
    /// then the maximum of every interval.
    AgentIntervals { interval_ms: u64 },
}

/// What the cgroup itself says, read at the end of a session.
#[derive(Clone, Debug)]
pub struct ChargeFacts {
    pub version: ChargeVersion,
    pub limit: Option<u64>,
    /// The kernel's lifetime high-water mark and the file it came from.
    pub lifetime_peak: Option<(u64, &'static str)>,
    pub policy: PeakPolicy,
}

impl ChargeFacts {
    pub fn read(charge: &ChargeReader, policy: PeakPolicy) -> Self {
        Self {
            version: charge.version(),
            limit: charge.limit(),
            lifetime_peak: charge.lifetime_peak(),
            policy,
        }
    }

    /// The charge peak, how it is known, and that in words.
    fn peak(&self, recorder: &Recorder, sample_interval_ms: u64) -> (u64, PeakSource, String) {
        let sampled = recorder.sampled_charge_peak();
        let recorded = recorder.charge_peak();
        let (peak, source, words) = match (self.policy, self.lifetime_peak) {
            (PeakPolicy::AgentIntervals { interval_ms }, _) => (
                recorded,
                PeakSource::AgentIntervals,
                format!(
                    "the cgroup's kernel high-water mark when the agent first saw it, then every {interval_ms} ms interval's {}",
                    if recorder.window_charge_peak().is_some() {
                        "kernel peak (memory.peak, reset per interval through the agent's own descriptor)"
                    } else {
                        "charge and each new kernel high-water mark"
                    }
                ),
            ),
            (PeakPolicy::OwnCgroup, Some((peak, file))) => (
                peak.max(recorded),
                PeakSource::SessionHighWaterMark,
                format!("{file} (kernel high-water mark of the session's own cgroup)"),
            ),
            _ => match (recorder.window_charge_peak(), recorder.record_charge_peak()) {
                (Some(_), _) => (
                    recorded,
                    PeakSource::WindowedHighWaterMark,
                    "memory.peak, reset per window through headroom's own descriptor".to_owned(),
                ),
                (None, Some(record)) if record >= sampled => (
                    recorded,
                    PeakSource::NewRecordHighWaterMark,
                    format!(
                        "the cgroup's high-water mark ({}), which rose to a new record during the capture",
                        self.lifetime_peak.map_or("memory.peak", |(_, file)| file)
                    ),
                ),
                _ => (
                    sampled,
                    PeakSource::Samples,
                    format!(
                        "samples every {sample_interval_ms} ms (the cgroup's lifetime high-water mark predates the capture)"
                    ),
                ),
            },
        };
        (
            peak,
            source,
            format!("{words}, {}", version_name(self.version)),
        )
    }
}

fn version_name(version: ChargeVersion) -> &'static str {
    match version {
        ChargeVersion::V1 => "cgroup v1",
        ChargeVersion::V2 => "cgroup v2",
    }
}

/// Reserved address space from the region tracker (sessions that trace mapping syscalls).
#[derive(Clone, Debug, Default)]
pub struct RegionFigures {
    pub memory: ReservedMemory,
    pub stack_reserved_bytes: u64,
    pub stack_resident_bytes: u64,
}

impl RegionFigures {
    /// `events_lost`: ring-buffer drops, which make the figures a lower bound.
    pub fn from_tracker(
        regions: &RegionTracker,
        stack_resident_peak: u64,
        events_lost: bool,
    ) -> Self {
        Self {
            memory: ReservedMemory {
                peak_bytes: regions.peak_total,
                by_kind: regions.at_peak,
                peak_by_kind: regions.peak_by_kind,
                events: regions.events,
                exact: !events_lost && regions.overflowed == 0,
            },
            stack_reserved_bytes: regions.peak_by_kind.stack,
            stack_resident_bytes: stack_resident_peak,
        }
    }
}

/// Fills one `TargetReport` from what a session has; [`Self::build`] finishes it.
pub struct TargetReportBuilder {
    report: TargetReport,
    figures: SourceFigures,
    profile: Option<StackProfile>,
}

impl TargetReportBuilder {
    pub fn new(kind: TargetKind, target_id: u64) -> Self {
        Self {
            report: TargetReport {
                kind,
                command: None,
                cgroup: None,
                target_id,
                pids: Vec::new(),
                exit: None,
                memory: None,
                resident: ResidentMemory::default(),
                reserved: ReservedMemory::default(),
                threads: Threads::default(),
                resident_phases: ResidentPhases::default(),
                spikes: Vec::new(),
                sources: Vec::new(),
                stacks: None,
                oom_kills: 0,
                oom_kills_cgroup: None,
                oom_events: Vec::new(),
                activity: ActivitySummary::default(),
                processes: Vec::new(),
                processes_not_listed: 0,
                kernel_entries_at_end: KernelEntries::default(),
                timeline: TimelineExcerpt::default(),
                recommendation: None,
                checklist: None,
                attribution: None,
                kubernetes: None,
                runtime: None,
            },
            figures: SourceFigures::default(),
            profile: None,
        }
    }

    /// What was watched: the command line, the cgroup path, the root processes.
    pub fn watched(
        mut self,
        command: Option<Vec<String>>,
        cgroup: Option<String>,
        pids: Vec<u32>,
    ) -> Self {
        self.report.command = command;
        self.report.cgroup = cgroup;
        self.report.pids = pids;
        self
    }

    pub fn exit(mut self, exit: Option<ExitSummary>) -> Self {
        self.report.exit = exit;
        self
    }

    pub fn identity(
        mut self,
        attribution: Option<Attribution>,
        kubernetes: Option<KubernetesMeta>,
    ) -> Self {
        self.report.attribution = attribution;
        self.report.kubernetes = kubernetes;
        self
    }

    /// The kernel's counters of the whole target: resident memory, threads, activity and OOM
    /// kills. `baseline_tasks`: tasks present when counting began (None: no task peak).
    pub fn counters(mut self, counters: &MemoryCounters, baseline_tasks: Option<u64>) -> Self {
        let activity = ActivitySummary::from_counters(counters, baseline_tasks);
        self.report.resident = ResidentMemory::from_counters(counters);
        self.report.threads.created = counters.threads_created;
        self.report.threads.peak = activity.peak_tasks;
        self.report.oom_kills = counters.oom_kills;
        self.report.activity = activity;
        self.figures.file_resident_peak_bytes = counters.file_peak_bytes;
        self.figures.shmem_resident_bytes = counters.rss_bytes[rss_member::SHMEM].max(0) as u64;
        self
    }

    /// Counters of a session on a target that was already running: only what changed since
    /// `at_start` counts, and resident peaks are the session's own.
    pub fn counters_since(
        mut self,
        now: &MemoryCounters,
        at_start: &MemoryCounters,
        recorder: &Recorder,
    ) -> Self {
        self.report.resident = recorder.resident_seen(now);
        self.report.threads.created = now.threads_created.saturating_sub(at_start.threads_created);
        self.report.oom_kills = now.oom_kills.saturating_sub(at_start.oom_kills);
        self.figures.file_resident_peak_bytes = now.file_peak_bytes;
        self.figures.shmem_resident_bytes = now.rss_bytes[rss_member::SHMEM].max(0) as u64;
        self
    }

    /// OOM kills: the larger of what the probe saw and what the cgroup counted.
    pub fn oom_kills_at_least(mut self, kills: u64) -> Self {
        self.report.oom_kills = self.report.oom_kills.max(kills);
        self
    }

    /// The cgroup's own OOM-kill count over the session, to cross-check the probe's.
    pub fn oom_kills_cgroup(mut self, kills: Option<u64>) -> Self {
        self.report.oom_kills_cgroup = kills;
        self
    }

    /// The timeline and what is read from it: phases of the charge (when there is one) and of
    /// resident memory, the charge peak and its source, spikes, OOM kills with the timeline
    /// before each.
    pub fn timeline(
        mut self,
        recorder: &Recorder,
        charge: Option<&ChargeFacts>,
        sample_interval_ms: u64,
        analysis: &AnalysisConfig,
    ) -> Self {
        let timeline = recorder.timeline();
        let resolution = timeline.resolution_ms();
        let buckets = timeline.buckets();
        // One reading of the phases, from the series sizing reads (the working set where it
        // was read, else the charge, else resident memory), so that the report's startup and
        // spikes are the recommendation's; each row's figures are then taken over them.
        let alive = crate::accounting::analysis::alive_span(buckets);
        let offset_seconds = (alive.start as u64 * resolution) as f64 / 1000.0;
        let basis = crate::sizing::basis_of(charge.is_some(), buckets);
        let basis_series = crate::sizing::basis_series(basis, buckets);
        let read = read_series(&basis_series[alive.clone()], resolution, analysis);
        let over_phases = |pick: fn(&BucketPeaks) -> u64| {
            let series: Vec<u64> = buckets[alive.clone()].iter().map(pick).collect();
            shifted(summarise(&series, resolution, &read), offset_seconds)
        };
        let resident_phases = over_phases(|b| b.resident);
        let charged_phases = charge.map(|_| over_phases(|b| b.charged));
        let spikes = shifted(
            summarise(&basis_series[alive.clone()], resolution, &read),
            offset_seconds,
        )
        .spikes;
        self.report.memory = charge.zip(charged_phases.as_ref()).map(|(facts, phases)| {
            let (peak_bytes, peak_from, peak_source) = facts.peak(recorder, sample_interval_ms);
            ChargedMemory {
                peak_bytes,
                peak_source,
                peak_from,
                startup_peak_bytes: phases.startup_peak_bytes,
                startup_seconds: phases.startup_seconds,
                steady_bytes: phases.steady_bytes,
                steady_p95_bytes: phases.steady_p95_bytes,
                working_set_peak_bytes: buckets.iter().map(|b| b.working_set).max().unwrap_or(0),
                limit_bytes: facts.limit,
                sampled_peak_bytes: recorder.sampled_charge_peak(),
                peak_before_capture: None,
                pressure_full_us: None,
            }
        });
        // Spikes of the series sizing reads, with their peaks in it.
        self.report.spikes = spikes;
        self.report.resident_phases = ResidentPhases {
            startup_seconds: resident_phases.startup_seconds,
            startup_peak_bytes: resident_phases.startup_peak_bytes,
            steady_bytes: resident_phases.steady_bytes,
            steady_p95_bytes: resident_phases.steady_p95_bytes,
        };
        for kill in &mut self.report.oom_events {
            let (start_ms, window) =
                timeline.window_before((kill.seconds * 1000.0) as u64, OOM_TIMELINE_MS);
            kill.timeline_before = TimelineExcerpt {
                start_seconds: start_ms as f64 / 1000.0,
                resolution_ms: resolution,
                buckets: window,
            };
        }
        self.report.timeline = TimelineExcerpt {
            start_seconds: 0.0,
            resolution_ms: resolution,
            buckets: buckets.to_vec(),
        };
        self
    }

    /// A charge read once, with no timeline (`capture --all`): the lifetime high-water mark,
    /// which predates the capture, and the charge now.
    pub fn charge_snapshot(mut self, charge: &ChargeReader) -> Self {
        let current = charge.current();
        self.report.memory = Some(ChargedMemory {
            peak_bytes: charge.lifetime_peak().map_or(0, |(peak, _)| peak),
            peak_source: format!(
                "the cgroup's lifetime high-water mark (it predates the capture), {}",
                version_name(charge.version())
            ),
            peak_from: PeakSource::LifetimeHighWaterMark,
            working_set_peak_bytes: current.map_or(0, |current| {
                current.saturating_sub(charge.reclaimable_cache().unwrap_or(0))
            }),
            limit_bytes: charge.limit(),
            sampled_peak_bytes: current.unwrap_or(0),
            ..ChargedMemory::default()
        });
        self.report.oom_kills_cgroup = charge.oom_kills();
        self
    }

    /// OOM kills seen by the probe (call before [`Self::timeline`], which adds the seconds of
    /// timeline before each).
    pub fn oom_events(mut self, events: Vec<OomKill>) -> Self {
        self.report.oom_events = events;
        self
    }

    /// Reserved address space by region, with thread stacks.
    pub fn regions(mut self, regions: RegionFigures) -> Self {
        self.report.threads.stack_reserved_bytes = regions.stack_reserved_bytes;
        self.report.threads.stack_resident_bytes = regions.stack_resident_bytes;
        self.figures.stack_reserved_bytes = regions.stack_reserved_bytes;
        self.figures.stack_resident_bytes = regions.stack_resident_bytes;
        self.figures.arena_reserved_bytes = regions.memory.peak_by_kind.no_access;
        self.figures.file_reserved_bytes = regions.memory.peak_by_kind.file;
        self.figures.shared_reserved_bytes = regions.memory.peak_by_kind.shared;
        self.report.reserved = regions.memory;
        self
    }

    pub fn processes(mut self, processes: Vec<ProcessRecord>, not_listed: u64) -> Self {
        self.report.processes = processes;
        self.report.processes_not_listed = not_listed;
        self
    }

    pub fn kernel_entries(mut self, entries: KernelEntries) -> Self {
        self.report.kernel_entries_at_end = entries;
        self
    }

    /// What the target's processes run, read while they were alive.
    pub fn runtime(mut self, section: Option<RuntimeSection>) -> Self {
        self.report.runtime = section;
        self
    }

    /// Sampled stacks: they name spikes' sources and the code paths among the sources.
    pub fn stacks(mut self, profile: Option<StackProfile>) -> Self {
        self.profile = profile;
        self
    }

    /// The finished report (without a recommendation; see `sizing::recommend_report`) and
    /// what the stack files are written from.
    pub fn build(self) -> (TargetReport, StackFiles) {
        let Self {
            mut report,
            figures,
            profile,
        } = self;
        if let Some(profile) = &profile {
            profile.name_spike_sources(&mut report.spikes, report.timeline.resolution_ms.max(1));
        }
        report.sources = memory_sources(&figures, profile.as_ref());
        let folded = profile
            .as_ref()
            .map(StackProfile::folded)
            .unwrap_or_default();
        report.stacks = profile.as_ref().map(|profile| profile.summary.clone());
        (
            report,
            StackFiles {
                folded,
                profile: profile.map(std::sync::Arc::new),
            },
        )
    }
}

/// Phases with their times moved `offset_seconds` later (the series read started at the first
/// bucket in which the target had a task).
fn shifted(mut phases: Phases, offset_seconds: f64) -> Phases {
    phases.startup_seconds = phases.startup_seconds.map(|s| s + offset_seconds);
    for spike in &mut phases.spikes {
        spike.start_seconds += offset_seconds;
    }
    phases
}

impl KernelBucket {
    /// With the reserved address space of the bucket (sessions that track regions).
    pub fn with_reserved(mut self, reserved: u64) -> Self {
        self.reserved = reserved;
        self
    }
}
