//! The capture loop's state: what one session learns between its start and its report. The
//! async loop in `run` only dispatches timers and event batches here, so everything below is
//! tested with a fake kernel and a cgroup directory made of plain files.

use std::path::{Path, PathBuf};

use crate::{
    accounting::{analysis::AnalysisConfig, regions::RegionTracker, ProcessTable},
    cgroups::{ChargeReader, SessionCgroup},
    probes::{DecodeError, KernelView, ProbeError, ProbeEvent},
    procfs,
    recording::{
        ChargeBucket, ChargeFacts, KernelBucket, PeakPolicy, Recorder, RegionFigures,
        TargetReportBuilder,
    },
    report::{
        Attribution, CaptureReport, DropCounts, ExitSummary, KubernetesMeta, OomKill, ReportMode,
        TargetKind, TimelineExcerpt, REPORT_SCHEMA,
    },
    stacks::StackCollector,
};

/// What is being watched, once set up.
pub struct Watched {
    pub kind: TargetKind,
    pub target_id: u64,
    pub cgroup_path: Option<String>,
    pub charge: Option<ChargeReader>,
    /// The command's own cgroup, removed at the end.
    pub session: Option<SessionCgroup>,
    pub root_pids: Vec<u32>,
    /// Tasks present when counting began.
    pub baseline_tasks: u64,
    pub oom_kills_at_start: Option<u64>,
}

/// Bounds and settings of one session's state.
#[derive(Clone, Debug)]
pub struct SessionLimits {
    pub max_processes: usize,
    pub max_regions: usize,
    pub bucket_ms: u64,
    pub timeline_buckets: usize,
    pub sample_interval_ms: u64,
    pub analysis: AnalysisConfig,
}

/// How the session ended, for its report.
pub struct SessionEnd {
    pub command: Option<Vec<String>>,
    pub exit: Option<ExitSummary>,
    pub duration_seconds: f64,
    pub kubernetes: Option<KubernetesMeta>,
}

/// Everything one capture session learns while it runs.
pub struct CaptureSession {
    pub watched: Watched,
    limits: SessionLimits,
    /// Where /proc is read (`/` on a real host).
    proc_root: PathBuf,
    table: ProcessTable,
    regions: RegionTracker,
    recorder: Recorder,
    undecodable: u64,
    started_ns: u64,
    reserved_window_peak: u64,
    stack_resident_peak: u64,
    oom_events: Vec<OomKill>,
    stacks: Option<StackCollector>,
}

impl CaptureSession {
    pub fn new(
        watched: Watched,
        limits: SessionLimits,
        proc_root: &Path,
        started_ns: u64,
        stacks: Option<StackCollector>,
    ) -> Self {
        Self {
            table: ProcessTable::new(watched.target_id, limits.max_processes),
            regions: RegionTracker::new(limits.max_regions),
            recorder: Recorder::new(limits.bucket_ms, limits.timeline_buckets),
            watched,
            limits,
            proc_root: proc_root.to_path_buf(),
            undecodable: 0,
            started_ns,
            reserved_window_peak: 0,
            stack_resident_peak: 0,
            oom_events: Vec::new(),
            stacks,
        }
    }

    /// Reads the address spaces of processes that were there before the first event.
    pub fn seed_regions(&mut self, pids: &[u32]) {
        for &pid in pids {
            if let Some(maps) = procfs::read_maps(&self.proc_root, pid) {
                self.regions.seed_from_maps(pid, &maps);
            }
        }
    }

    fn elapsed_ms(&self, timestamp_ns: u64) -> u64 {
        timestamp_ns.saturating_sub(self.started_ns) / 1_000_000
    }

    /// The highest figure so far, for progress displays.
    pub fn live_peak(&self) -> u64 {
        self.recorder.live_peak()
    }

    /// Applies a batch of ring-buffer events.
    pub fn record(&mut self, batch: Vec<Result<ProbeEvent, DecodeError>>) {
        for event in batch {
            match event {
                Ok(event) => self.apply(&event),
                Err(err) => {
                    self.undecodable += 1;
                    tracing::warn!(error = %err, "undecodable ring buffer record");
                }
            }
        }
    }

    fn apply(&mut self, event: &ProbeEvent) {
        let target_id = self.watched.target_id;
        match event {
            ProbeEvent::Mapping(change) if change.header.target_id == target_id => {
                self.regions.apply(change);
                if change.op == profiler_common::mapping_op::EXEC {
                    let tgid = change.header.tgid;
                    if let Some(stacks) = &mut self.stacks {
                        stacks.exec(tgid);
                    }
                    // execve maps the binary, the interpreter and the main stack without
                    // mmap calls; read them once. Later events re-apply idempotently.
                    self.seed_regions(&[tgid]);
                }
                self.reserved_window_peak =
                    self.reserved_window_peak.max(self.regions.current.total());
            }
            ProbeEvent::ProcessExit(exit) if exit.target_id == target_id => {
                self.regions.forget(exit.tgid);
            }
            ProbeEvent::StackSample(sample) if sample.target_id == target_id => {
                if let Some(stacks) = &mut self.stacks {
                    stacks.record(sample);
                }
            }
            ProbeEvent::OomVictim(victim) if victim.target_id == target_id => {
                self.oom_events.push(OomKill {
                    seconds: self.elapsed_ms(victim.timestamp_ns) as f64 / 1000.0,
                    pid: victim.tgid,
                    command: procfs::command_name(&self.proc_root, victim.tgid),
                    total_vm_bytes: victim.total_vm_bytes,
                    anon_rss_bytes: victim.anon_rss_bytes,
                    file_rss_bytes: victim.file_rss_bytes,
                    shmem_rss_bytes: victim.shmem_rss_bytes,
                    timeline_before: TimelineExcerpt::default(),
                });
            }
            _ => {}
        }
        self.table.apply(event);
    }

    /// One charge sample (every `sample_interval`).
    pub fn sample_charge(&mut self, elapsed_ms: u64) {
        if let Some(current) = self.watched.charge.as_ref().and_then(ChargeReader::current) {
            self.recorder.sample_charge(elapsed_ms, current);
        }
    }

    /// Closes a timeline bucket: the kernel's window high-water marks, the window's reserved
    /// maximum, the working set, and (v2) the kernel's windowed charge peak.
    pub fn close_bucket(
        &mut self,
        kernel: &mut dyn KernelView,
        elapsed_ms: u64,
    ) -> Result<(), ProbeError> {
        let target_id = self.watched.target_id;
        let window = kernel.close_window(target_id)?;
        let counters = kernel.target_counters(target_id)?.unwrap_or_default();
        let reserved = self.reserved_window_peak.max(self.regions.current.total());
        self.reserved_window_peak = 0;
        let bucket =
            KernelBucket::from_kernel(&counters, Some(&window), self.watched.baseline_tasks)
                .with_reserved(reserved);
        let charge = self.watched.charge.as_mut().and_then(ChargeBucket::read);
        self.recorder.close_bucket(elapsed_ms, bucket, charge);
        Ok(())
    }

    /// Resident thread-stack memory, read from /proc/PID/smaps for the MAP_STACK regions the
    /// region tracker knows. Why this method: rss_stat says how much of an mm is resident, not
    /// where, and following every page fault's address into stack ranges in the kernel would
    /// put a range lookup on the hottest path there is. smaps is the kernel's own per-mapping
    /// count; stack pages, once touched, stay until the thread's stack is freed, so sampling
    /// every 250 ms and keeping the maximum misses only stacks touched and released faster.
    pub fn sample_stack_resident(&mut self) {
        let pids: Vec<u32> = self.regions.tracked_processes().collect();
        let total: u64 = pids
            .into_iter()
            .filter_map(|pid| {
                procfs::resident_in_ranges(&self.proc_root, pid, &self.regions.stack_ranges(pid))
            })
            .sum();
        self.stack_resident_peak = self.stack_resident_peak.max(total);
    }

    /// Whether a cgroup or process-tree target still has a process.
    pub fn target_alive(&self, kernel: &dyn KernelView) -> Result<bool, ProbeError> {
        if self.watched.kind == TargetKind::Cgroup {
            // A cgroup can be empty for a while and refilled (a restarting container): keep
            // going until the duration or Ctrl-C, unless the cgroup itself is gone.
            return Ok(self
                .watched
                .charge
                .as_ref()
                .is_none_or(|charge| charge.dir().exists()));
        }
        let alive_roots = self
            .watched
            .root_pids
            .iter()
            .any(|pid| self.proc_root.join(format!("proc/{pid}")).exists());
        Ok(alive_roots
            || kernel
                .kernel_entries(self.watched.target_id)?
                .followed_processes
                > 0)
    }

    /// The session's report, without a recommendation (see `sizing::recommend_report`).
    pub fn finish(
        mut self,
        kernel: &dyn KernelView,
        end: SessionEnd,
    ) -> Result<(CaptureReport, Option<SessionCgroup>), ProbeError> {
        let watched = &self.watched;
        let target_id = watched.target_id;
        let counters = kernel.target_counters(target_id)?.unwrap_or_default();
        let drops = kernel.drops()?;
        let policy = if watched.session.is_some() {
            PeakPolicy::OwnCgroup
        } else {
            PeakPolicy::Watched
        };
        let charge_facts = watched
            .charge
            .as_ref()
            .map(|charge| ChargeFacts::read(charge, policy));
        let oom_kills_cgroup = watched.charge.as_ref().and_then(|charge| {
            Some(
                charge
                    .oom_kills()?
                    .saturating_sub(watched.oom_kills_at_start.unwrap_or(0)),
            )
        });
        let (processes, not_listed) = self.table.finish(&kernel.live_processes()?);
        let attribution = end.kubernetes.as_ref().map(|_| Attribution::Kubernetes {
            names_known: true,
            reason: None,
        });
        let (target, folded_stacks) = TargetReportBuilder::new(watched.kind, target_id)
            .watched(
                end.command,
                watched.cgroup_path.clone(),
                watched.root_pids.clone(),
            )
            .exit(end.exit)
            .identity(attribution, end.kubernetes)
            .counters(&counters, Some(watched.baseline_tasks))
            .oom_kills_cgroup(oom_kills_cgroup)
            .oom_events(std::mem::take(&mut self.oom_events))
            .timeline(
                &self.recorder,
                charge_facts.as_ref(),
                self.limits.sample_interval_ms,
                &self.limits.analysis,
            )
            .regions(RegionFigures::from_tracker(
                &self.regions,
                self.stack_resident_peak,
                drops.ringbuf_full > 0,
            ))
            .processes(processes, not_listed)
            .kernel_entries(kernel.kernel_entries(target_id)?)
            .stacks(self.stacks.take().map(StackCollector::finish))
            .build();
        let report = CaptureReport {
            schema: REPORT_SCHEMA.to_owned(),
            mode: ReportMode::Target,
            duration_seconds: end.duration_seconds,
            sample_interval_ms: self.limits.sample_interval_ms,
            targets: vec![target],
            drops,
            undecodable_events: self.undecodable,
            folded_stacks,
        };
        Ok((report, self.watched.session.take()))
    }
}

/// Drops since the session began are what the session lost.
pub fn drops_during(now: DropCounts, at_start: &DropCounts) -> DropCounts {
    now.since(at_start)
}
