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
        RuntimeTracker, TargetReportBuilder,
    },
    report::{
        Attribution, CaptureReport, DropCounts, ExitSummary, KubernetesMeta, OomKill,
        PeakBeforeCapture, ReportMode, TargetKind, TimelineExcerpt, REPORT_SCHEMA,
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
    /// The kernel's figures when the current bucket began (see [`KernelBucket::at_least`]).
    bucket_start: KernelBucket,
    stack_resident_peak: u64,
    oom_events: Vec<OomKill>,
    stacks: Option<StackCollector>,
    /// The kernel's high-water mark read when watching began (targets already running).
    peak_before_capture: Option<PeakBeforeCapture>,
    /// PSI memory `full` stall total when watching began.
    pressure_at_start: Option<u64>,
    /// The runtime of each process, read while it is alive.
    runtimes: RuntimeTracker,
}

impl CaptureSession {
    pub fn new(
        watched: Watched,
        limits: SessionLimits,
        proc_root: &Path,
        started_ns: u64,
        stacks: Option<StackCollector>,
    ) -> Self {
        let peak_before_capture = peak_before_capture(&watched, proc_root);
        let pressure_at_start = watched
            .charge
            .as_ref()
            .and_then(ChargeReader::pressure_full_us);
        Self {
            peak_before_capture,
            pressure_at_start,
            table: ProcessTable::new(watched.target_id, limits.max_processes),
            runtimes: RuntimeTracker::new(limits.max_processes),
            regions: RegionTracker::new(limits.max_regions),
            recorder: Recorder::new(limits.bucket_ms, limits.timeline_buckets),
            watched,
            limits,
            proc_root: proc_root.to_path_buf(),
            undecodable: 0,
            started_ns,
            reserved_window_peak: 0,
            bucket_start: KernelBucket::default(),
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

    /// Reads the runtime (JVM, Go, allocator, their ceilings) of processes seen for the first
    /// time or that exec'd: now, while they are alive; [`Self::sample_runtimes`] reads them
    /// again once their libraries are mapped.
    pub fn inspect_runtimes(&mut self, pids: &[u32], elapsed_ms: u64) {
        let limit = self.memory_limit();
        for &pid in pids {
            self.runtimes
                .first_sight(&self.proc_root, pid, elapsed_ms, limit);
        }
    }

    /// Reads again the runtimes whose next read is due (see `recording::runtimes`).
    pub fn sample_runtimes(&mut self, elapsed_ms: u64) {
        let limit = self.memory_limit();
        self.runtimes.tick(&self.proc_root, elapsed_ms, limit);
    }

    /// The cgroup's limit now (a JVM's MaxRAMPercentage is a share of it).
    fn memory_limit(&self) -> Option<u64> {
        self.watched.charge.as_ref().and_then(ChargeReader::limit)
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
                    // A new program: its command line and environment are there to read now,
                    // and may be gone by the end of the capture.
                    let now_ms = self.elapsed_ms(change.header.timestamp_ns);
                    self.inspect_runtimes(&[tgid], now_ms);
                }
                self.reserved_window_peak =
                    self.reserved_window_peak.max(self.regions.current.total());
            }
            ProbeEvent::ProcessExit(exit) if exit.target_id == target_id => {
                self.regions.forget(exit.tgid);
                self.runtimes.exited(exit.tgid);
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
                    sizes_unknown: !victim.sizes_known,
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
        let reserved_now = self.regions.current.total();
        let reserved = self.reserved_window_peak.max(reserved_now);
        self.reserved_window_peak = 0;
        let bucket =
            KernelBucket::from_kernel(&counters, Some(&window), self.watched.baseline_tasks)
                .with_reserved(reserved)
                .at_least(&self.bucket_start);
        self.bucket_start = KernelBucket::from_kernel(&counters, None, self.watched.baseline_tasks)
            .with_reserved(reserved_now);
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
        let (target, stack_files) = TargetReportBuilder::new(watched.kind, target_id)
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
            .runtime(self.runtimes.section())
            .build();
        let mut target = target;
        let pressure = watched
            .charge
            .as_ref()
            .and_then(ChargeReader::pressure_full_us)
            .map(|now| now.saturating_sub(self.pressure_at_start.unwrap_or(0)));
        if let Some(memory) = target.memory.as_mut() {
            memory.pressure_full_us = pressure;
        }
        if let Some(before) = self.peak_before_capture.take() {
            match target.memory.as_mut() {
                Some(memory) => memory.peak_before_capture = Some(before),
                None => target.resident.peak_before_capture = Some(before),
            }
        }
        let report = CaptureReport {
            schema: REPORT_SCHEMA.to_owned(),
            mode: ReportMode::Target,
            duration_seconds: end.duration_seconds,
            sample_interval_ms: self.limits.sample_interval_ms,
            targets: vec![target],
            drops,
            undecodable_events: self.undecodable,
            folded_stacks: stack_files.folded,
            stack_profile: stack_files.profile,
        };
        Ok((report, self.watched.session.take()))
    }
}

/// What a running target reached before the capture: its cgroup's lifetime high-water mark
/// (v2 memory.peak, v1 memory.max_usage_in_bytes) with the reclaimable page cache at the start,
/// or for a process tree the sum of its processes' VmHWM (each one's own resident mark; the
/// sum is at least their highest moment together). None for a command the capture starts, and
/// where the kernel keeps no mark.
fn peak_before_capture(watched: &Watched, proc_root: &Path) -> Option<PeakBeforeCapture> {
    if watched.kind == TargetKind::Command {
        return None;
    }
    if let Some(charge) = &watched.charge {
        let (bytes, file) = charge.peak_at_open()?;
        return Some(PeakBeforeCapture {
            bytes,
            reclaimable_bytes: charge.reclaimable_cache().unwrap_or(0).min(bytes),
            source: file.to_owned(),
        });
    }
    let marks: Vec<u64> = watched
        .root_pids
        .iter()
        .filter_map(|&pid| procfs::peak_resident_bytes(proc_root, pid))
        .collect();
    (!marks.is_empty()).then(|| PeakBeforeCapture {
        bytes: marks.iter().sum(),
        reclaimable_bytes: 0,
        source: format!(
            "VmHWM of {} process{}",
            marks.len(),
            if marks.len() == 1 { "" } else { "es" }
        ),
    })
}

/// Drops since the session began are what the session lost.
pub fn drops_during(now: DropCounts, at_start: &DropCounts) -> DropCounts {
    now.since(at_start)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{
        probes::{FakeKernel, OomVictim},
        report::{PeakKind, PeakSource},
    };

    const MIB: u64 = 1 << 20;
    const TARGET: u64 = 4242;

    /// A cgroup v2 directory made of plain files, as `ChargeReader` reads it.
    struct FakeCgroup(PathBuf);

    impl FakeCgroup {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("headroom-fake-cgroup-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("temp dir");
            let cgroup = Self(dir);
            cgroup.set_charge(0, 0);
            cgroup.write("memory.max", "max\n");
            cgroup.write("memory.events", "oom 0\noom_kill 0\n");
            cgroup
        }

        fn write(&self, file: &str, text: &str) {
            fs::write(self.0.join(file), text).expect("write fake cgroup file");
        }

        /// The charge now and the kernel's peak since the last window reset.
        fn set_charge(&self, current: u64, window_peak: u64) {
            self.write("memory.current", &format!("{current}\n"));
            self.write("memory.peak", &format!("{}\n", window_peak.max(current)));
            self.write("memory.stat", "file 0\n");
        }

        fn reader(&self) -> ChargeReader {
            ChargeReader::open(&self.0, None).expect("fake cgroup opens")
        }
    }

    impl Drop for FakeCgroup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn session(charge: Option<ChargeReader>, kind: TargetKind) -> CaptureSession {
        let watched = Watched {
            kind,
            target_id: TARGET,
            cgroup_path: charge.as_ref().map(|_| "/test.slice/svc".to_owned()),
            charge,
            session: None,
            root_pids: Vec::new(),
            baseline_tasks: 0,
            oom_kills_at_start: Some(0),
        };
        let limits = SessionLimits {
            max_processes: 16,
            max_regions: 1024,
            bucket_ms: 100,
            timeline_buckets: 4096,
            sample_interval_ms: 10,
            analysis: AnalysisConfig {
                stable_ms: 1_000,
                max_startup_ms: 60_000,
            },
        };
        // A /proc root with nothing in it: no process reads succeed.
        CaptureSession::new(
            watched,
            limits,
            Path::new("/nonexistent-proc-root"),
            0,
            None,
        )
    }

    fn end() -> SessionEnd {
        SessionEnd {
            command: None,
            exit: None,
            duration_seconds: 12.0,
            kubernetes: None,
        }
    }

    /// A cgroup watched after it peaked at 311 MiB (10 MiB of it reclaimable page cache then):
    /// the mark read at the start is reported and counted in the limit.
    #[test]
    fn a_late_cgroup_capture_counts_the_peak_before_it() {
        let cgroup = FakeCgroup::new("late");
        cgroup.write("memory.current", &format!("{}\n", 100 * MIB));
        cgroup.write("memory.peak", &format!("{}\n", 311 * MIB));
        cgroup.write("memory.stat", &format!("file {}\n", 10 * MIB));
        let mut session = session(Some(cgroup.reader()), TargetKind::Cgroup);
        let mut kernel = FakeKernel::default();
        for bucket in 0..300u64 {
            kernel.set_resident(TARGET, 90 * MIB, 10 * MIB, 2);
            cgroup.set_charge(100 * MIB, 100 * MIB);
            session.sample_charge(bucket * 100);
            session
                .close_bucket(&mut kernel, bucket * 100 + 99)
                .expect("bucket");
        }
        let (mut report, _) = session.finish(&kernel, end()).expect("report");
        crate::sizing::recommend_report(&mut report, 0.25);
        let target = &report.targets[0];
        let before = target
            .memory
            .as_ref()
            .and_then(|m| m.peak_before_capture.clone())
            .expect("the mark at the start");
        assert_eq!(
            (before.bytes, before.reclaimable_bytes),
            (311 * MIB, 10 * MIB)
        );
        assert_eq!(before.source, "memory.peak");
        let recommendation = target.recommendation.as_ref().expect("recommended");
        assert_eq!(recommendation.worst_peak_source, PeakKind::BeforeCapture);
        assert_eq!(recommendation.worst_peak_bytes, 301 * MIB);
        assert!(recommendation.limit_bytes as f64 >= 1.2 * (301 * MIB) as f64);
    }

    /// 2 s of startup at 300 MiB, then 100 MiB steady with one 50 ms spike to 400 MiB that
    /// only the kernel's windowed peak sees (it falls between two samples).
    #[test]
    fn the_capture_loop_keeps_a_spike_between_samples_and_names_the_phases() {
        let cgroup = FakeCgroup::new("loop");
        let mut session = session(Some(cgroup.reader()), TargetKind::Cgroup);
        let mut kernel = FakeKernel::default();
        for bucket in 0..120u64 {
            let at_ms = bucket * 100;
            let charge = if bucket < 20 { 300 * MIB } else { 100 * MIB };
            let window_peak = if bucket == 70 { 400 * MIB } else { charge };
            if bucket == 70 {
                // The spike is anonymous memory: the kernel's rss window sees it too.
                kernel.set_resident(TARGET, window_peak - 10 * MIB, 10 * MIB, 3);
            }
            kernel.set_resident(TARGET, charge - 10 * MIB, 10 * MIB, 3);
            cgroup.set_charge(charge, window_peak);
            session.sample_charge(at_ms);
            session
                .close_bucket(&mut kernel, at_ms + 99)
                .expect("bucket");
        }
        let (mut report, _) = session.finish(&kernel, end()).expect("report");
        crate::sizing::recommend_report(&mut report, 0.25);
        let target = &report.targets[0];
        let memory = target.memory.as_ref().expect("a cgroup has a charge");
        assert_eq!(memory.peak_bytes, 400 * MIB);
        assert_eq!(memory.peak_from, PeakSource::WindowedHighWaterMark);
        assert_eq!(memory.sampled_peak_bytes, 300 * MIB);
        assert_eq!(memory.steady_bytes, Some(100 * MIB));
        assert_eq!(memory.startup_peak_bytes, 300 * MIB);
        assert_eq!(target.spikes.len(), 1, "{:?}", target.spikes);
        assert_eq!(target.spikes[0].peak_bytes, 400 * MIB);
        assert!((target.spikes[0].start_seconds - 7.0).abs() < 0.11);
        let recommendation = target.recommendation.as_ref().expect("recommended");
        assert_eq!(recommendation.worst_peak_source, PeakKind::Spike);
        assert_eq!(recommendation.limit_bytes, 500 * MIB);
        // The 100 MiB steady state, raised to 500 / 3: the limit/request ratio is at most 3.
        assert_eq!(recommendation.request_bytes, 167 * MIB);
        assert_eq!(target.threads.peak, Some(3));
    }

    #[test]
    fn an_oom_kill_carries_the_timeline_before_it_into_the_floor() {
        let cgroup = FakeCgroup::new("oom");
        let mut session = session(Some(cgroup.reader()), TargetKind::Cgroup);
        let mut kernel = FakeKernel::default();
        for bucket in 0..50u64 {
            let charge = (50 + bucket * 4) * MIB;
            cgroup.set_charge(charge, charge);
            kernel.set_resident(TARGET, charge, 0, 1);
            session
                .close_bucket(&mut kernel, bucket * 100 + 50)
                .expect("bucket");
        }
        session.record(vec![Ok(ProbeEvent::OomVictim(OomVictim {
            tgid: 77,
            target_id: TARGET,
            timestamp_ns: 4_900 * 1_000_000,
            total_vm_bytes: 0,
            anon_rss_bytes: 240 * MIB,
            file_rss_bytes: 0,
            shmem_rss_bytes: 0,
            sizes_known: true,
        }))]);
        let (mut report, _) = session.finish(&kernel, end()).expect("report");
        crate::sizing::recommend_report(&mut report, 0.25);
        let target = &report.targets[0];
        assert_eq!(target.oom_events.len(), 1);
        let kill = &target.oom_events[0];
        assert!((kill.seconds - 4.9).abs() < 1e-9);
        assert_eq!(
            kill.timeline_before.buckets.iter().map(|b| b.charged).max(),
            Some(246 * MIB)
        );
        let recommendation = target.recommendation.as_ref().expect("recommended");
        assert_eq!(recommendation.worst_peak_source, PeakKind::Oom);
        // max(246 + 100, 246 × 1.2) = 346 MiB, × 1.25 = 432.5 → 433 MiB.
        assert_eq!(recommendation.limit_bytes, 433 * MIB);
    }

    #[test]
    fn a_process_tree_is_sized_from_resident_memory_and_ends_with_its_processes() {
        let mut session = session(None, TargetKind::Pid);
        let mut kernel = FakeKernel::default();
        kernel.set_resident(TARGET, 64 * MIB, 16 * MIB, 2);
        session.close_bucket(&mut kernel, 50).expect("bucket");
        kernel.entries.insert(
            TARGET,
            crate::report::KernelEntries {
                followed_processes: 2,
                ..Default::default()
            },
        );
        assert!(session.target_alive(&kernel).expect("alive"));
        kernel.entries.clear();
        assert!(!session.target_alive(&kernel).expect("gone"));
        let (report, _) = session.finish(&kernel, end()).expect("report");
        let target = &report.targets[0];
        assert!(target.memory.is_none());
        assert_eq!(target.resident.peak_bytes, 80 * MIB);
        assert_eq!(target.timeline.buckets[0].resident, 80 * MIB);
    }

    /// A bucket in which memory only fell gets no growth event, so its kernel window is
    /// empty: its peak is what it began with, not what it ended with.
    #[test]
    fn a_bucket_in_which_memory_only_fell_keeps_the_value_it_began_with() {
        let mut session = session(None, TargetKind::Pid);
        let mut kernel = FakeKernel::default();
        kernel.set_resident(TARGET, 200 * MIB, 0, 1);
        session.close_bucket(&mut kernel, 50).expect("bucket");
        // Freed to 40 MiB during the next bucket: no growth, no window marks.
        let counters = kernel.counters.entry(TARGET).or_default();
        counters.rss_bytes[profiler_common::rss_member::ANON] = (40 * MIB) as i64;
        session.close_bucket(&mut kernel, 150).expect("bucket");
        session.close_bucket(&mut kernel, 250).expect("bucket");
        let (report, _) = session.finish(&kernel, end()).expect("report");
        let buckets = &report.targets[0].timeline.buckets;
        let resident: Vec<u64> = buckets.iter().map(|b| b.resident / MIB).collect();
        assert_eq!(resident, vec![200, 200, 40], "{buckets:?}");
    }

    #[test]
    fn a_cgroup_target_ends_when_its_directory_goes() {
        let cgroup = FakeCgroup::new("gone");
        let session = session(Some(cgroup.reader()), TargetKind::Cgroup);
        let kernel = FakeKernel::default();
        assert!(session.target_alive(&kernel).expect("there"));
        drop(cgroup);
        assert!(!session.target_alive(&kernel).expect("gone"));
    }
}
