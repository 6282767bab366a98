//! Capture sessions: watch a command (run in a cgroup of its own), an existing cgroup, or a
//! process tree, with the probes attached, and report its memory: charged, resident and
//! reserved, over a timeline of maxima, with startup, steady state, spikes and OOM kills.
//!
//! Cleanup is structural: the session cgroup and the probes are owned values whose `Drop`
//! removes and detaches them, and SIGINT/SIGTERM are caught so that the session always reaches
//! the end of [`run`] and writes its report.

use std::{
    ffi::{CString, OsStr},
    io,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use crate::attribution::MetadataSource;
use thiserror::Error;
use tokio::{
    signal::unix::{signal, SignalKind},
    time::MissedTickBehavior,
};

use crate::{
    accounting::{
        analysis::{analyse, AnalysisConfig, Phases},
        regions::RegionTracker,
        timeline::{BucketPeaks, Timeline},
        ActivitySummary, ProcessTable,
    },
    attribution::{
        self,
        kubernetes::{self as k8s, KubernetesError},
        Attribution, CgroupResolver, KubernetesMeta,
    },
    cgroups::{self, CgroupError, ChargeReader, ChargeVersion, SessionCgroup},
    probes::{DecodeError, ProbeConfig, ProbeError, ProbeEvent, Probes},
    procfs,
    report::{
        CaptureReport, ChargedMemory, ExitSummary, OomKill, ReservedMemory, ResidentMemory,
        ResidentPhases, SourceFigures, TargetReport, Threads, TimelineExcerpt, REPORT_SCHEMA,
    },
    stacks::{StackCollector, StackProfile, StackSettings},
};
use profiler_common::rss_member;

fn positive(value: i64) -> u64 {
    value.max(0) as u64
}

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("no command given: use `headroom capture -- COMMAND [ARGS...]`")]
    EmptyCommand,
    #[error("command not found: `{0}` (not in PATH; give a path such as ./{0})")]
    CommandNotFound(String),
    #[error("`{0}` is not an executable file (check the path and its x permission)")]
    NotExecutable(PathBuf),
    #[error("no process with pid {0} (check `ps -p {0}`)")]
    UnknownPid(u32),
    #[error("--memory-limit needs a cgroup with a memory controller; this host has none for the session")]
    NoMemoryController,
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    #[error(
        "pod {namespace}/{name} has no cgroup on this node (looked for its UID {uid} under {root}): \
         run headroom on the node the pod is scheduled on"
    )]
    PodNotOnThisNode {
        namespace: String,
        name: String,
        uid: String,
        root: PathBuf,
    },
    #[error(
        "container `{container}` of pod {namespace}/{name} has not started (no container id yet)"
    )]
    ContainerNotStarted {
        namespace: String,
        name: String,
        container: String,
    },
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("could not start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for the command failed")]
    Wait(#[source] io::Error),
    #[error("installing the SIGINT/SIGTERM handler failed")]
    Signals(#[source] io::Error),
}

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// Run this command (program and arguments) in a cgroup of its own.
    Command(Vec<String>),
    /// An existing cgroup, by its path as /proc/PID/cgroup shows it.
    Cgroup(String),
    /// A running process and everything it forks from now on.
    Pid(u32),
    /// A pod (or one of its containers), found through the Kubernetes API and this node's
    /// cgroup tree.
    Pod {
        namespace: String,
        name: String,
        container: Option<String>,
    },
    /// Every cgroup on the node, each attributed to a container, a host service, or
    /// "unattributed" with the reason.
    Node(NodeOptions),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    pub metadata: MetadataSource,
    /// The node whose pods to watch (default: this host's name).
    pub node: Option<String>,
}

/// How to capture.
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    pub target: TargetSpec,
    /// Stop after this long; without it, run until the target exits or Ctrl-C.
    pub duration: Option<Duration>,
    /// Most process records kept in the report; the rest are counted, not listed.
    pub max_processes: usize,
    /// Limit to put on a command's session cgroup.
    pub memory_limit: Option<u64>,
    /// How often the charge is sampled.
    pub sample_interval: Duration,
    /// Timeline resolution (it halves as needed to stay within `timeline_buckets`).
    pub bucket: Duration,
    pub timeline_buckets: usize,
    /// Bound on tracked mapping regions (about 80 bytes each).
    pub max_regions: usize,
    pub analysis: AnalysisConfig,
    /// Headroom over the worst realistic peak for the recommended limit.
    pub headroom: f64,
    /// Stack sampling where memory is made; `None` turns it off.
    pub stacks: Option<StackSettings>,
    /// Ring buffer size for mapping, process and stack events.
    pub ring_buffer_bytes: u32,
}

impl CaptureOptions {
    pub fn new(target: TargetSpec) -> Self {
        Self {
            target,
            duration: None,
            max_processes: 10_000,
            memory_limit: None,
            sample_interval: Duration::from_millis(10),
            bucket: Duration::from_millis(50),
            timeline_buckets: 2048,
            max_regions: 262_144,
            analysis: AnalysisConfig::default(),
            headroom: crate::sizing::DEFAULT_HEADROOM,
            stacks: Some(StackSettings::default()),
            ring_buffer_bytes: profiler_common::capacity::EVENTS_BYTES,
        }
    }
}

/// How long to wait for processes the command left behind to die after being killed.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);
/// How often thread-stack resident memory is sampled from smaps.
const STACK_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often cgroup and pid targets are checked for having any process left.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(250);
/// Process-tree targets are counted under ids with the top bit set: cgroup ids never have it.
const PROCESS_TREE_TARGET: u64 = 1 << 63;
/// Timeline kept in the report before each OOM kill.
const OOM_TIMELINE_MS: u64 = 5_000;

/// Resolves a command name the way a shell does: a name with a slash is a path, anything else
/// is looked up in PATH.
pub fn resolve_command(name: &str) -> Result<PathBuf, CaptureError> {
    let is_executable = |path: &Path| {
        path.metadata()
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        if !path.exists() {
            return Err(CaptureError::CommandNotFound(name.to_owned()));
        }
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(CaptureError::NotExecutable(path))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| CaptureError::CommandNotFound(name.to_owned()))
}

pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Everything the session learns while it runs.
struct Observations {
    target_id: u64,
    table: ProcessTable,
    regions: RegionTracker,
    timeline: Timeline,
    undecodable: u64,
    started_ns: u64,
    sampled_charge_peak: u64,
    window_charge_peak: Option<u64>,
    reserved_window_peak: u64,
    stack_resident_peak: u64,
    oom_events: Vec<OomKill>,
    stacks: Option<StackCollector>,
}

impl Observations {
    fn elapsed_ms(&self, timestamp_ns: u64) -> u64 {
        timestamp_ns.saturating_sub(self.started_ns) / 1_000_000
    }

    fn record(&mut self, batch: Vec<Result<ProbeEvent, DecodeError>>) {
        for event in batch {
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    self.undecodable += 1;
                    tracing::warn!(error = %err, "undecodable ring buffer record");
                    continue;
                }
            };
            match &event {
                ProbeEvent::Mapping(change) if change.header.target_id == self.target_id => {
                    self.regions.apply(change);
                    if change.op == profiler_common::mapping_op::EXEC {
                        if let Some(stacks) = &mut self.stacks {
                            stacks.exec(change.header.tgid);
                        }
                        // execve maps the binary, the interpreter and the main stack without
                        // mmap calls; read them once. Later events re-apply idempotently.
                        if let Ok(maps) =
                            std::fs::read_to_string(format!("/proc/{}/maps", change.header.tgid))
                        {
                            self.regions.seed_from_maps(change.header.tgid, &maps);
                        }
                    }
                    self.reserved_window_peak =
                        self.reserved_window_peak.max(self.regions.current.total());
                }
                ProbeEvent::ProcessExit(exit) if exit.target_id == self.target_id => {
                    self.regions.forget(exit.tgid);
                }
                ProbeEvent::StackSample(sample) if sample.target_id == self.target_id => {
                    if let Some(stacks) = &mut self.stacks {
                        stacks.record(sample);
                    }
                }
                ProbeEvent::OomVictim(victim) if victim.target_id == self.target_id => {
                    self.oom_events.push(OomKill {
                        seconds: self.elapsed_ms(victim.timestamp_ns) as f64 / 1000.0,
                        pid: victim.tgid,
                        command: procfs::command_name(Path::new("/"), victim.tgid),
                        total_vm_bytes: victim.total_vm_bytes,
                        anon_rss_bytes: victim.anon_rss_bytes,
                        file_rss_bytes: victim.file_rss_bytes,
                        shmem_rss_bytes: victim.shmem_rss_bytes,
                        timeline_before: TimelineExcerpt::default(),
                    });
                }
                _ => {}
            }
            self.table.apply(&event);
        }
    }

    /// Resident thread-stack memory, read from /proc/PID/smaps for the MAP_STACK regions the
    /// region tracker knows. Why this method: rss_stat says how much of an mm is resident, not
    /// where, and following every page fault's address into stack ranges in the kernel would
    /// put a range lookup on the hottest path there is. smaps is the kernel's own per-mapping
    /// count; stack pages, once touched, stay until the thread's stack is freed, so sampling
    /// every 250 ms and keeping the maximum misses only stacks touched and released faster.
    fn sample_stack_resident(&mut self) {
        let pids: Vec<u32> = self.regions.tracked_processes().collect();
        let total: u64 = pids
            .into_iter()
            .filter_map(|pid| {
                procfs::resident_in_ranges(Path::new("/"), pid, &self.regions.stack_ranges(pid))
            })
            .sum();
        self.stack_resident_peak = self.stack_resident_peak.max(total);
    }
}

/// What is being watched, once set up.
struct Watched {
    kind: &'static str,
    target_id: u64,
    cgroup_path: Option<String>,
    charge: Option<ChargeReader>,
    /// The command's own cgroup, removed at the end.
    session: Option<SessionCgroup>,
    root_pids: Vec<u32>,
    /// Tasks present when counting began.
    baseline_tasks: u64,
    oom_kills_at_start: Option<u64>,
}

/// Runs one capture session to the end and returns its report.
pub async fn run(options: &CaptureOptions) -> Result<CaptureReport, CaptureError> {
    let (target, kubernetes) = match &options.target {
        TargetSpec::Node(node) => return run_node(options, node).await,
        TargetSpec::Pod {
            namespace,
            name,
            container,
        } => {
            let (path, meta) = resolve_pod(namespace, name, container.as_deref()).await?;
            (TargetSpec::Cgroup(path), Some(meta))
        }
        other => (other.clone(), None),
    };
    // Validate everything that needs no privileges before loading anything.
    let command = match &target {
        TargetSpec::Command(command) => {
            let (program, args) = command.split_first().ok_or(CaptureError::EmptyCommand)?;
            Some((resolve_command(program)?, program.clone(), args.to_vec()))
        }
        TargetSpec::Pid(pid) => {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(CaptureError::UnknownPid(*pid));
            }
            None
        }
        TargetSpec::Cgroup(path) => {
            cgroups::resolve_cgroup_path(Path::new("/"), path)?;
            None
        }
        TargetSpec::Pod { .. } | TargetSpec::Node(_) => None,
    };

    let mut probes = Probes::load(&ProbeConfig {
        events_bytes: options.ring_buffer_bytes,
        stack_snapshots: options
            .stacks
            .as_ref()
            .is_some_and(|stacks| stacks.unwinding == crate::stacks::Unwinding::EhFrame),
        ..ProbeConfig::default()
    })?;
    let mut watched = watch(&target, &mut probes, options.memory_limit)?;
    if kubernetes.is_some() {
        watched.kind = "pod";
    }
    let mut events = probes
        .take_event_stream()?
        .ok_or_else(|| ProbeError::MissingMap(profiler_common::map::EVENTS))?;
    let mut seen = Observations {
        target_id: watched.target_id,
        table: ProcessTable::new(watched.target_id, options.max_processes),
        regions: RegionTracker::new(options.max_regions),
        timeline: Timeline::new(options.bucket.as_millis() as u64, options.timeline_buckets),
        undecodable: 0,
        started_ns: monotonic_ns(),
        sampled_charge_peak: 0,
        window_charge_peak: None,
        reserved_window_peak: 0,
        stack_resident_peak: 0,
        oom_events: Vec::new(),
        stacks: None,
    };
    if let Some(settings) = &options.stacks {
        probes.sample_stacks(watched.target_id, settings.for_kernel())?;
        seen.stacks = Some(StackCollector::new(
            settings.clone(),
            PathBuf::from("/"),
            seen.started_ns,
        ));
    }
    for &pid in &watched.root_pids {
        if let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            seen.regions.seed_from_maps(pid, &maps);
        }
    }

    let mut interrupts = signal(SignalKind::interrupt()).map_err(CaptureError::Signals)?;
    let mut terminations = signal(SignalKind::terminate()).map_err(CaptureError::Signals)?;
    let started = Instant::now();

    let (child, child_pid) = match (&command, &watched.session) {
        (Some((path, program, args)), Some(session)) => {
            let child = spawn_in_cgroup(path, program, args, session)?;
            let pid = child.id().unwrap_or(0);
            watched.root_pids = vec![pid];
            (Some(child), Some(pid))
        }
        _ => (None, None),
    };
    let wait = async move {
        match child {
            Some(mut child) => child.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(wait);
    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);

    let ticker = |period: Duration| {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
        interval
    };
    let mut sample_tick = ticker(options.sample_interval);
    let mut bucket_tick = ticker(options.bucket);
    let progress = progress_bar(options);
    let mut stack_tick = ticker(STACK_SAMPLE_INTERVAL);
    let mut liveness_tick = ticker(LIVENESS_INTERVAL);
    let mut signals_seen = 0u32;

    let exit = loop {
        tokio::select! {
            status = &mut wait => break Some(status.map_err(CaptureError::Wait)?),
            () = &mut deadline => break None,
            batch = events.next_batch() => seen.record(batch?),
            _ = sample_tick.tick() => sample_charge(&watched, &mut seen, started),
            _ = bucket_tick.tick() => {
                close_bucket(&mut probes, &mut watched, &mut seen, started)?;
                if let Some(bar) = &progress {
                    bar.set_position(started.elapsed().as_millis() as u64);
                    let peak = seen.sampled_charge_peak.max(
                        seen.timeline.buckets().iter().map(|b| b.resident).max().unwrap_or(0),
                    );
                    bar.set_message(crate::report::format_bytes(peak));
                }
            }
            _ = stack_tick.tick() => seen.sample_stack_resident(),
            _ = liveness_tick.tick(), if child_pid.is_none() => {
                if !target_alive(&watched, &probes)? {
                    break None;
                }
            }
            _ = interrupts.recv() => {
                signals_seen += 1;
                if !stop(child_pid, nix::sys::signal::Signal::SIGINT, signals_seen, &watched) {
                    break None;
                }
            }
            _ = terminations.recv() => {
                signals_seen += 1;
                if !stop(child_pid, nix::sys::signal::Signal::SIGTERM, signals_seen, &watched) {
                    break None;
                }
            }
        }
    };
    let duration = started.elapsed();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    // A command's session ends with the command: what it left running is ended so the cgroup
    // can go. Existing cgroups and process trees are left alone.
    if let Some(session) = &watched.session {
        finish_leftovers(session).await;
    }
    seen.record(events.drain_now());
    close_bucket(&mut probes, &mut watched, &mut seen, started)?;

    let mut report = build_report(options, &probes, &watched, seen, exit, duration)?;
    if let Some(target) = report.targets.first_mut() {
        target.attribution = kubernetes.as_ref().map(|_| Attribution::Kubernetes {
            names_known: true,
            reason: None,
        });
        target.kubernetes = kubernetes;
    }
    report.recommend(options.headroom);
    if let Some(session) = watched.session.take() {
        session.remove()?;
    }
    drop(probes);
    Ok(report)
}

/// Sets up the kernel side and the charge reader for the target.
fn watch(
    target: &TargetSpec,
    probes: &mut Probes,
    memory_limit: Option<u64>,
) -> Result<Watched, CaptureError> {
    let root = Path::new("/");
    match target {
        TargetSpec::Command(_) => {
            let session = SessionCgroup::create(root)?;
            probes.track_cgroup(session.id)?;
            let charge = ChargeReader::open(&session.unified_dir, session.memory_v1_dir.as_deref());
            if let Some(limit) = memory_limit {
                charge
                    .as_ref()
                    .ok_or(CaptureError::NoMemoryController)?
                    .set_limit(limit)?;
            }
            Ok(Watched {
                kind: "command",
                target_id: session.id,
                cgroup_path: Some(session.relative_path.clone()),
                oom_kills_at_start: charge.as_ref().and_then(ChargeReader::oom_kills),
                charge,
                session: Some(session),
                root_pids: Vec::new(),
                baseline_tasks: 0,
            })
        }
        TargetSpec::Cgroup(path) => {
            let (unified, memory_v1) = cgroups::resolve_cgroup_path(root, path)?;
            let id = cgroups::cgroup_id(&unified)?;
            let running: Vec<u32> = std::fs::read_to_string(unified.join("cgroup.procs"))
                .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
                .unwrap_or_default();
            seed_running(probes, id, &running)?;
            probes.track_cgroup(id)?;
            let charge = ChargeReader::open(&unified, memory_v1.as_deref());
            let read_ids = |file: &str| -> Vec<u32> {
                std::fs::read_to_string(unified.join(file))
                    .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
                    .unwrap_or_default()
            };
            Ok(Watched {
                kind: "cgroup",
                target_id: id,
                cgroup_path: Some(path.clone()),
                oom_kills_at_start: charge.as_ref().and_then(ChargeReader::oom_kills),
                charge,
                session: None,
                root_pids: read_ids("cgroup.procs"),
                baseline_tasks: read_ids("cgroup.threads").len() as u64,
            })
        }
        TargetSpec::Pid(pid) => {
            let target_id = PROCESS_TREE_TARGET | u64::from(*pid);
            let tree = procfs::process_tree(root, *pid);
            seed_running(probes, target_id, &tree)?;
            for &member in &tree {
                probes.follow_process(member, target_id)?;
            }
            let baseline_tasks = tree
                .iter()
                .filter_map(|&member| procfs::thread_count(root, member))
                .sum();
            Ok(Watched {
                kind: "pid",
                target_id,
                cgroup_path: None,
                charge: None,
                session: None,
                root_pids: tree,
                baseline_tasks,
                oom_kills_at_start: None,
            })
        }
        TargetSpec::Pod { .. } | TargetSpec::Node(_) => {
            Err(CaptureError::Cgroup(CgroupError::BadCgroupPath {
                path: String::new(),
                reason: "pods and nodes are resolved before they are watched".to_owned(),
            }))
        }
    }
}

/// A progress bar on stderr for captures with a duration: time left and the live peak. Only
/// when the target is not a command (whose own output would tear through it) and stderr is a
/// terminal (indicatif draws nothing otherwise).
fn progress_bar(options: &CaptureOptions) -> Option<indicatif::ProgressBar> {
    let duration = options.duration?;
    if matches!(options.target, TargetSpec::Command(_)) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(duration.as_millis() as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} capturing [{bar:30}] {eta} left, peak {msg} (Ctrl-C ends early and still reports)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

/// Seeds the resident memory of processes already running in a target, before it is tracked.
fn seed_running(probes: &mut Probes, target_id: u64, pids: &[u32]) -> Result<(), CaptureError> {
    let resident: Vec<(u32, [i64; 4])> = pids
        .iter()
        .filter_map(|&pid| Some((pid, procfs::resident_by_member(Path::new("/"), pid)?)))
        .collect();
    probes.seed_resident(target_id, &resident)?;
    Ok(())
}

fn sample_charge(watched: &Watched, seen: &mut Observations, started: Instant) {
    let Some(charge) = &watched.charge else {
        return;
    };
    if let Some(current) = charge.current() {
        seen.sampled_charge_peak = seen.sampled_charge_peak.max(current);
        seen.timeline.record(
            started.elapsed().as_millis() as u64,
            &BucketPeaks {
                charged: current,
                ..BucketPeaks::default()
            },
        );
    }
}

/// Closes a timeline bucket: the kernel's window high-water marks, the window's reserved
/// maximum, the working set, and (v2) the kernel's windowed charge peak.
fn close_bucket(
    probes: &mut Probes,
    watched: &mut Watched,
    seen: &mut Observations,
    started: Instant,
) -> Result<(), CaptureError> {
    let window = probes.close_window(watched.target_id)?;
    let counters = probes
        .target_counters(watched.target_id)?
        .unwrap_or_default();
    let mut peaks = BucketPeaks {
        resident: window
            .resident_peak_bytes
            .max(counters.resident_bytes().max(0) as u64),
        anon: window.anon_peak_bytes,
        reserved: seen.reserved_window_peak.max(seen.regions.current.total()),
        tasks: watched
            .baseline_tasks
            .saturating_add_signed(window.live_tasks_peak.max(counters.live_tasks).max(0)),
        ..BucketPeaks::default()
    };
    seen.reserved_window_peak = 0;
    if let Some(charge) = watched.charge.as_mut() {
        if let Some(window_peak) = charge.take_window_peak() {
            peaks.charged = window_peak;
            seen.window_charge_peak = Some(seen.window_charge_peak.unwrap_or(0).max(window_peak));
        }
        if let Some(current) = charge.current() {
            peaks.charged = peaks.charged.max(current);
            seen.sampled_charge_peak = seen.sampled_charge_peak.max(current);
            peaks.working_set = current.saturating_sub(charge.inactive_file().unwrap_or(0));
        }
    }
    seen.timeline
        .record(started.elapsed().as_millis() as u64, &peaks);
    Ok(())
}

/// Whether a cgroup or process-tree target still has a process.
fn target_alive(watched: &Watched, probes: &Probes) -> Result<bool, CaptureError> {
    if watched.kind == "cgroup" {
        // A cgroup can be empty for a while and refilled (a restarting container): keep going
        // until the duration or Ctrl-C, unless the cgroup itself is gone.
        return Ok(watched
            .charge
            .as_ref()
            .is_none_or(|charge| charge.dir().exists()));
    }
    let alive_roots = watched
        .root_pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists());
    Ok(alive_roots || probes.kernel_entries(watched.target_id)?.followed_processes > 0)
}

/// The buckets from the first to the last one in which the target had a task.
fn alive_span(buckets: &[BucketPeaks]) -> std::ops::Range<usize> {
    let first = buckets.iter().position(|b| b.tasks > 0);
    let last = buckets.iter().rposition(|b| b.tasks > 0);
    match (first, last) {
        (Some(first), Some(last)) => first..last + 1,
        _ => 0..buckets.len(),
    }
}

fn phases_to_resident(phases: &Phases) -> ResidentPhases {
    ResidentPhases {
        startup_seconds: phases.startup_seconds,
        startup_peak_bytes: phases.startup_peak_bytes,
        steady_bytes: phases.steady_bytes,
        steady_p95_bytes: phases.steady_p95_bytes,
    }
}

fn build_report(
    options: &CaptureOptions,
    probes: &Probes,
    watched: &Watched,
    mut seen: Observations,
    exit: Option<std::process::ExitStatus>,
    duration: Duration,
) -> Result<CaptureReport, CaptureError> {
    let counters = probes
        .target_counters(watched.target_id)?
        .unwrap_or_default();
    let resolution = seen.timeline.resolution_ms();
    let buckets = seen.timeline.buckets().to_vec();
    // Phases are read while the target had processes: an empty cgroup before its workload
    // starts, or after it ends, is neither startup nor steady state.
    let alive = alive_span(&buckets);
    let series = |pick: fn(&BucketPeaks) -> u64| {
        buckets[alive.clone()]
            .iter()
            .map(pick)
            .collect::<Vec<u64>>()
    };
    let offset_seconds = (alive.start as u64 * resolution) as f64 / 1000.0;
    let read_phases = |values: Vec<u64>| {
        let mut phases = analyse(&values, resolution, &options.analysis);
        phases.startup_seconds = phases.startup_seconds.map(|s| s + offset_seconds);
        for spike in &mut phases.spikes {
            spike.start_seconds += offset_seconds;
        }
        phases
    };
    let resident_phases = read_phases(series(|b| b.resident));
    let charged_phases = watched
        .charge
        .as_ref()
        .map(|_| read_phases(series(|b| b.charged)));

    let memory = watched.charge.as_ref().zip(charged_phases.as_ref()).map(|(charge, charged_phases)| {
        // The kernel's lifetime high-water mark is exact, but it is the session's own only
        // when the cgroup was made for it.
        let (peak_bytes, peak_source) = match (&watched.session, charge.lifetime_peak()) {
            (Some(_), Some((peak, file))) => (
                peak.max(seen.sampled_charge_peak),
                format!("{file} (kernel high-water mark of the session's own cgroup)"),
            ),
            _ => match seen.window_charge_peak {
                Some(peak) => (
                    peak.max(seen.sampled_charge_peak),
                    "memory.peak, reset per window through headroom's own descriptor".to_owned(),
                ),
                None => (
                    seen.sampled_charge_peak,
                    format!(
                        "samples every {} ms (the cgroup's lifetime high-water mark predates the capture)",
                        options.sample_interval.as_millis()
                    ),
                ),
            },
        };
        let version = match charge.version() {
            ChargeVersion::V1 => "cgroup v1",
            ChargeVersion::V2 => "cgroup v2",
        };
        ChargedMemory {
            peak_bytes,
            peak_source: format!("{peak_source}, {version}"),
            startup_peak_bytes: charged_phases.startup_peak_bytes,
            startup_seconds: charged_phases.startup_seconds,
            steady_bytes: charged_phases.steady_bytes,
            steady_p95_bytes: charged_phases.steady_p95_bytes,
            working_set_peak_bytes: buckets.iter().map(|b| b.working_set).max().unwrap_or(0),
            limit_bytes: charge.limit(),
            sampled_peak_bytes: seen.sampled_charge_peak,
        }
    });
    // Spikes of the charge; of resident memory for process trees, which have no cgroup.
    let spikes = charged_phases
        .map(|phases| phases.spikes)
        .unwrap_or_else(|| resident_phases.spikes.clone());
    for kill in &mut seen.oom_events {
        let (start_ms, window) = seen
            .timeline
            .window_before((kill.seconds * 1000.0) as u64, OOM_TIMELINE_MS);
        kill.timeline_before = TimelineExcerpt {
            start_seconds: start_ms as f64 / 1000.0,
            resolution_ms: resolution,
            buckets: window,
        };
    }

    let profile = seen.stacks.take().map(StackCollector::finish);
    let mut spikes = spikes;
    if let Some(profile) = &profile {
        profile.name_spike_sources(&mut spikes, resolution);
    }
    let regions = &seen.regions;
    let sources = crate::report::memory_sources(
        &SourceFigures {
            stack_resident_bytes: seen.stack_resident_peak,
            stack_reserved_bytes: regions.peak_by_kind.stack,
            arena_reserved_bytes: regions.peak_by_kind.no_access,
            file_resident_peak_bytes: counters.file_peak_bytes,
            file_reserved_bytes: regions.peak_by_kind.file,
            shmem_resident_bytes: positive(counters.rss_bytes[rss_member::SHMEM]),
            shared_reserved_bytes: regions.peak_by_kind.shared,
        },
        profile.as_ref(),
    );
    let folded_stacks = profile
        .as_ref()
        .map(StackProfile::folded)
        .unwrap_or_default();
    let stacks = profile.map(|profile| profile.summary);

    let drops = probes.drops()?;
    let kernel_entries_at_end = probes.kernel_entries(watched.target_id)?;
    let (processes, processes_not_listed) = seen.table.finish(&probes.live_processes()?);
    let activity = ActivitySummary::from_counters(&counters, Some(watched.baseline_tasks));
    Ok(CaptureReport {
        schema: REPORT_SCHEMA,
        mode: "target",
        duration_seconds: duration.as_secs_f64(),
        sample_interval_ms: options.sample_interval.as_millis() as u64,
        targets: vec![TargetReport {
            kind: watched.kind,
            command: match &options.target {
                TargetSpec::Command(command) => Some(command.clone()),
                _ => None,
            },
            cgroup: watched.cgroup_path.clone(),
            target_id: watched.target_id,
            pids: watched.root_pids.clone(),
            exit: exit.map(|status| ExitSummary {
                code: status.code(),
                signal: status.signal(),
            }),
            memory,
            resident: ResidentMemory::from_counters(&counters),
            reserved: ReservedMemory {
                peak_bytes: regions.peak_total,
                by_kind: regions.at_peak,
                peak_by_kind: regions.peak_by_kind,
                events: regions.events,
                exact: drops.ringbuf_full == 0 && regions.overflowed == 0,
            },
            threads: Threads {
                created: counters.threads_created,
                peak: activity.peak_tasks,
                stack_reserved_bytes: regions.peak_by_kind.stack,
                stack_resident_bytes: seen.stack_resident_peak,
            },
            resident_phases: phases_to_resident(&resident_phases),
            spikes,
            sources,
            stacks,
            oom_kills: counters.oom_kills,
            oom_kills_cgroup: watched.charge.as_ref().and_then(|charge| {
                Some(
                    charge
                        .oom_kills()?
                        .saturating_sub(watched.oom_kills_at_start.unwrap_or(0)),
                )
            }),
            oom_events: seen.oom_events,
            activity,
            processes,
            processes_not_listed,
            kernel_entries_at_end,
            timeline: TimelineExcerpt {
                start_seconds: 0.0,
                resolution_ms: resolution,
                buckets,
            },
            recommendation: None,
            checklist: None,
            kubernetes: None,
            attribution: None,
        }],
        drops,
        undecodable_events: seen.undecodable,
        folded_stacks,
    })
}

/// Finds a pod (or one of its containers) through the API, then its cgroup on this node.
async fn resolve_pod(
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> Result<(String, KubernetesMeta), CaptureError> {
    let client = k8s::client().await?;
    let pod = k8s::get_pod(client, namespace, name).await?;
    let container_id =
        match container {
            None => None,
            Some(wanted) => {
                let info = pod
                    .containers
                    .iter()
                    .find(|c| c.name == wanted)
                    .ok_or_else(|| KubernetesError::NoSuchContainer {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        container: wanted.to_owned(),
                        known: pod
                            .containers
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                Some(info.container_id.clone().ok_or_else(|| {
                    CaptureError::ContainerNotStarted {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        container: wanted.to_owned(),
                    }
                })?)
            }
        };
    let root = Path::new("/");
    let unified = cgroups::Hierarchies::discover(root)?.unified;
    let path = attribution::find_pod_cgroup(&unified, &pod.uid, container_id.as_deref())
        .ok_or_else(|| CaptureError::PodNotOnThisNode {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: pod.uid.clone(),
            root: unified.clone(),
        })?;
    let identity = attribution::parse_cgroup_path(&path).ok();
    let mut meta = KubernetesMeta {
        pod_uid: pod.uid.clone(),
        container_id: container_id.clone(),
        runtime: identity.as_ref().and_then(|i| i.runtime),
        qos: identity.as_ref().map(|i| i.qos),
        ..KubernetesMeta::default()
    };
    attribution::fill_from_pod(&mut meta, &pod, container_id.as_deref());
    Ok((path, meta))
}

/// Pods kept by a node-wide capture (kubelet's default is 110 a node).
const NODE_POD_CAPACITY: usize = 1024;
/// Cgroup paths remembered by a node-wide capture.
const NODE_CGROUP_CAPACITY: usize = 16_384;

/// Every cgroup on the node: kernel counters per cgroup, attributed at the end.
async fn run_node(
    options: &CaptureOptions,
    node: &NodeOptions,
) -> Result<CaptureReport, CaptureError> {
    let metadata =
        attribution::start_metadata(node.metadata, node.node.as_deref(), NODE_POD_CAPACITY).await?;
    let mut probes = Probes::load(&ProbeConfig {
        trace_all_cgroups: true,
        // Every mapping change on a node is too many events; node-wide figures come from the
        // kernel counters. No timelines either, so no windows.
        track_regions: false,
        track_windows: false,
        ..ProbeConfig::default()
    })?;
    let mut events = probes
        .take_event_stream()?
        .ok_or_else(|| ProbeError::MissingMap(profiler_common::map::EVENTS))?;
    let mut interrupts = signal(SignalKind::interrupt()).map_err(CaptureError::Signals)?;
    let mut terminations = signal(SignalKind::terminate()).map_err(CaptureError::Signals)?;
    let started = Instant::now();
    let deadline = async {
        match options.duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut undecodable = 0u64;
    loop {
        tokio::select! {
            () = &mut deadline => break,
            batch = events.next_batch() => {
                // Process events are not needed per process here; only decoding is checked.
                undecodable += batch?.iter().filter(|event| event.is_err()).count() as u64;
            }
            _ = interrupts.recv() => break,
            _ = terminations.recv() => break,
        }
    }
    let duration = started.elapsed();
    undecodable += events
        .drain_now()
        .iter()
        .filter(|event| event.is_err())
        .count() as u64;

    let hierarchies = cgroups::Hierarchies::discover(Path::new("/"))?;
    let mut resolver = CgroupResolver::new(&hierarchies.unified, NODE_CGROUP_CAPACITY);
    let pods = metadata.as_ref().and_then(|(cache, _)| cache.lock().ok());
    let mut targets = Vec::new();
    for (target_id, counters) in probes.all_target_counters()? {
        let path = resolver.resolve(target_id);
        let (mut attribution, kubernetes) =
            attribution::attribute(path.as_deref(), pods.as_deref());
        // A host cgroup that is not a systemd unit is named by its main process as well.
        if let (Attribution::Host { name }, Some(path)) = (&mut attribution, path.as_deref()) {
            if name.as_str() == path {
                let main_process = std::fs::read_to_string(
                    hierarchies
                        .unified
                        .join(path.trim_start_matches('/'))
                        .join("cgroup.procs"),
                )
                .ok()
                .and_then(|procs| procs.lines().next().and_then(|pid| pid.trim().parse().ok()))
                .and_then(|pid| procfs::command_name(Path::new("/"), pid));
                if let Some(command) = main_process {
                    *name = format!("{path} ({command})");
                }
            }
        }
        let charge = path
            .as_deref()
            .and_then(|path| hierarchies.charge_reader(path));
        let memory = charge.as_ref().map(|charge| ChargedMemory {
            peak_bytes: charge.lifetime_peak().map_or(0, |(peak, _)| peak),
            peak_source: "the cgroup's lifetime high-water mark (it predates the capture)"
                .to_owned(),
            working_set_peak_bytes: charge.current().map_or(0, |current| {
                current.saturating_sub(charge.inactive_file().unwrap_or(0))
            }),
            limit_bytes: charge.limit(),
            sampled_peak_bytes: charge.current().unwrap_or(0),
            ..ChargedMemory::default()
        });
        let activity = ActivitySummary::from_counters(&counters, None);
        targets.push(TargetReport {
            kind: "cgroup",
            command: None,
            cgroup: path,
            target_id,
            pids: Vec::new(),
            exit: None,
            memory,
            resident: ResidentMemory::from_counters(&counters),
            reserved: ReservedMemory::default(),
            threads: Threads {
                created: counters.threads_created,
                peak: None,
                stack_reserved_bytes: 0,
                stack_resident_bytes: 0,
            },
            resident_phases: ResidentPhases::default(),
            spikes: Vec::new(),
            sources: Vec::new(),
            stacks: None,
            oom_kills: counters.oom_kills,
            oom_kills_cgroup: charge.as_ref().and_then(ChargeReader::oom_kills),
            oom_events: Vec::new(),
            activity,
            processes: Vec::new(),
            processes_not_listed: 0,
            kernel_entries_at_end: probes.kernel_entries(target_id)?,
            timeline: TimelineExcerpt::default(),
            recommendation: None,
            checklist: None,
            kubernetes,
            attribution: Some(attribution),
        });
    }
    drop(pods);
    if let Some((_, task)) = metadata {
        task.abort();
    }
    targets.sort_by_key(|t| std::cmp::Reverse(t.resident.peak_bytes));
    Ok(CaptureReport {
        schema: REPORT_SCHEMA,
        mode: "node",
        duration_seconds: duration.as_secs_f64(),
        sample_interval_ms: 0,
        targets,
        drops: probes.drops()?,
        undecodable_events: undecodable,
        folded_stacks: Vec::new(),
    })
}

/// A signal arrived. For a command: first pass it on and let the command end its own way
/// (true: keep capturing); second, kill every process of the session. For other targets: end
/// the capture (false), leaving the target alone.
fn stop(
    child_pid: Option<u32>,
    signal: nix::sys::signal::Signal,
    signals_seen: u32,
    watched: &Watched,
) -> bool {
    let (Some(child_pid), Some(session)) = (child_pid, &watched.session) else {
        eprintln!("headroom: {signal} received, ending the capture");
        return false;
    };
    if signals_seen >= 2 {
        eprintln!("headroom: second signal, killing every process of the session");
        session.kill_all();
        return true;
    }
    eprintln!("headroom: {signal} received, passing it on to the command (again to kill it)");
    if let Ok(pid) = i32::try_from(child_pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
    true
}

async fn finish_leftovers(session: &SessionCgroup) {
    if session.pids().is_empty() {
        return;
    }
    tracing::info!(
        count = session.pids().len(),
        "killing processes the command left in its cgroup"
    );
    session.kill_all();
    let deadline = Instant::now() + LEFTOVER_GRACE;
    while !session.pids().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts the command so that it is inside the session cgroup before its first instruction:
/// the forked child writes "0" (itself) into each `cgroup.procs` between fork and exec.
fn spawn_in_cgroup(
    program_path: &Path,
    program: &str,
    args: &[String],
    session: &SessionCgroup,
) -> Result<tokio::process::Child, CaptureError> {
    let spawn_error = |source| CaptureError::Spawn {
        command: program.to_owned(),
        source,
    };
    let procs_files: Vec<CString> = session
        .procs_files()
        .iter()
        .map(|path| CString::new(path.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|err| spawn_error(io::Error::new(io::ErrorKind::InvalidInput, err)))?;

    let mut command = tokio::process::Command::new(program_path);
    command.arg0(OsStr::new(program)).args(args);
    // SAFETY: the closure runs in the forked child before exec and only calls the
    // async-signal-safe open(2), write(2) and close(2) on buffers allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            for path in &procs_files {
                join_cgroup(path)?;
            }
            Ok(())
        });
    }
    command.spawn().map_err(spawn_error)
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is `procs_file`.
fn join_cgroup(procs_file: &CString) -> io::Result<()> {
    // SAFETY: procs_file is a valid NUL-terminated path; the fd is closed on every path.
    unsafe {
        let fd = libc::open(procs_file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let result = if written == 1 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        };
        libc::close(fd);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_commands_like_a_shell() {
        assert!(resolve_command("sh").is_ok());
        assert!(matches!(
            resolve_command("definitely-not-a-command-9f3a"),
            Err(CaptureError::CommandNotFound(_))
        ));
        assert!(matches!(
            resolve_command("./no/such/file"),
            Err(CaptureError::CommandNotFound(_))
        ));
        let plain_file =
            std::env::temp_dir().join(format!("headroom-plain-{}", std::process::id()));
        std::fs::write(&plain_file, "not a program").expect("temp file");
        let resolved = resolve_command(plain_file.to_str().expect("utf-8"));
        std::fs::remove_file(&plain_file).expect("cleanup");
        assert!(matches!(resolved, Err(CaptureError::NotExecutable(_))));
    }

    #[test]
    fn not_found_message_says_so() {
        let message = CaptureError::CommandNotFound("nope".into()).to_string();
        assert!(
            message.starts_with("command not found: `nope`"),
            "{message}"
        );
    }
}
