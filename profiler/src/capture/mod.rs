//! Capture sessions: watch a command (run in a cgroup of its own), an existing cgroup, or a
//! process tree, with the probes attached, and report its memory: charged, resident and
//! reserved, over a timeline of maxima, with startup, steady state, spikes and OOM kills.
//!
//! - `mod.rs`: options, errors and the async loop that dispatches timers and events;
//! - [`session`]: the loop's state (tested without root, with a fake kernel);
//! - `watch`: setting up the kernel side and the charge reader for a target;
//! - `command`: starting a command inside its cgroup, signals, leftovers;
//! - `pod`: finding a pod's cgroup; `node`: `capture --all`.
//!
//! Cleanup is structural: the session cgroup and the probes are owned values whose `Drop`
//! removes and detaches them, and SIGINT/SIGTERM are caught so that the session always reaches
//! the end of [`run`] and writes its report.

mod command;
mod node;
mod pod;
pub mod session;
mod watch;

use std::{
    io,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use crate::attribution::MetadataSource;
pub use command::resolve_command;
use thiserror::Error;
use tokio::time::MissedTickBehavior;

use crate::{
    accounting::analysis::AnalysisConfig,
    attribution::{self, kubernetes::KubernetesError, KubernetesMeta, PodWatch},
    cgroups::{self, CgroupError},
    probes::{EventStream, ProbeConfig, ProbeError, Probes},
    report::{Attribution, CaptureReport, ExitSummary, TargetKind},
    stacks::{StackCollector, StackSettings},
};
use session::{CaptureSession, SessionEnd, SessionLimits};

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
    /// How the recommendation is sized: headroom, floor and maximum, limit/request ratio.
    pub policy: crate::sizing::Policy,
    /// Stack sampling where memory is made; `None` turns it off.
    pub stacks: Option<StackSettings>,
    /// Ring buffer size for mapping, process and stack events.
    pub ring_buffer_bytes: u32,
    /// Where pod names come from for cgroup targets that are containers.
    pub metadata: MetadataSource,
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
            policy: crate::sizing::Policy::default(),
            stacks: Some(StackSettings::default()),
            ring_buffer_bytes: profiler_common::capacity::EVENTS_BYTES,
            metadata: MetadataSource::Auto,
        }
    }
}

/// How often thread-stack resident memory is sampled from smaps.
const STACK_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often cgroup and pid targets are checked for having any process left.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(250);

pub(crate) fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Pods kept for naming a cgroup target (kubelet's default is 110 a node).
const TARGET_POD_CAPACITY: usize = 1024;

/// Runs one capture session to the end and returns its report.
pub async fn run(options: &CaptureOptions) -> Result<CaptureReport, CaptureError> {
    let (target, kubernetes) = match &options.target {
        TargetSpec::Node(node) => return node::run(options, node).await,
        TargetSpec::Pod {
            namespace,
            name,
            container,
        } => {
            let (path, meta) = pod::resolve(namespace, name, container.as_deref()).await?;
            (TargetSpec::Cgroup(path), Some(meta))
        }
        other => (other.clone(), None),
    };
    let command = validate(&target)?;
    // A cgroup that is a container is named like `capture --all` names it: the watch starts
    // now so that pod names are known by the end.
    let metadata = match (&target, &kubernetes) {
        (TargetSpec::Cgroup(_), None) => {
            attribution::start_metadata(options.metadata, None, TARGET_POD_CAPACITY).await?
        }
        _ => None,
    };
    // Caught before the session's cgroup exists and the command starts: a SIGINT that arrives
    // while the probes load (seconds on a slow machine) is passed on once the loop runs,
    // instead of killing headroom and leaving the cgroup behind.
    let mut signals = command::Signals::install()?;
    let (mut probes, mut events, mut session) = start(options, &target, kubernetes.is_some())?;
    announce(&options.target, options.duration);
    let started = Instant::now();
    let exit = capture_loop(
        options,
        command,
        &mut signals,
        &mut session,
        &mut probes,
        &mut events,
        started,
    )
    .await?;
    let duration = started.elapsed();

    // A command's session ends with the command: what it left running is ended so the cgroup
    // can go. Existing cgroups and process trees are left alone.
    if let Some(cgroup) = &session.watched.session {
        command::finish_leftovers(cgroup).await;
    }
    session.record(events.drain_now());
    session.close_bucket(&mut probes, started.elapsed().as_millis() as u64)?;
    wait_for_first_pod_list(metadata.as_ref()).await;
    let kubernetes = kubernetes.or_else(|| name_cgroup(&session, metadata.as_ref()));
    let end = SessionEnd {
        command: match &options.target {
            TargetSpec::Command(command) => Some(command.clone()),
            _ => None,
        },
        exit: exit.map(|status| ExitSummary {
            code: status.code(),
            signal: status.signal(),
        }),
        duration_seconds: duration.as_secs_f64(),
        kubernetes,
    };
    let (mut report, cgroup) = session.finish(&probes, end)?;
    if let Some(target) = report.targets.first_mut() {
        if target.kind == TargetKind::Cgroup {
            target.attribution = attribution_of(target.cgroup.as_deref(), metadata.as_ref());
        }
    }
    crate::sizing::recommend_report_with(&mut report, &options.policy);
    if let Some(cgroup) = cgroup {
        cgroup.remove()?;
    }
    if let Some((_, task)) = metadata {
        task.abort();
    }
    drop(probes);
    Ok(report)
}

/// Says on stderr that an existing target is now being measured, and what ends the capture:
/// from this line on, whatever the target does is in the report. A command's output is left
/// as the command wrote it (its capture starts with it).
pub(super) fn announce(target: &TargetSpec, duration: Option<Duration>) {
    let what = match target {
        TargetSpec::Command(_) => return,
        TargetSpec::Node(_) => "every cgroup of the node".to_owned(),
        TargetSpec::Cgroup(path) => format!("cgroup {path}"),
        TargetSpec::Pid(pid) => format!("process {pid} and its descendants"),
        TargetSpec::Pod {
            namespace, name, ..
        } => format!("pod {namespace}/{name}"),
    };
    let until = match duration {
        Some(duration) => format!("for {:.1} s", duration.as_secs_f64()),
        None => "until it ends".to_owned(),
    };
    eprintln!("headroom: capturing {what} {until} (SIGINT ends the capture with its report)");
}

/// Loads the probes, sets the target up and starts the session's state.
fn start(
    options: &CaptureOptions,
    target: &TargetSpec,
    is_pod: bool,
) -> Result<(Probes, EventStream, CaptureSession), CaptureError> {
    let mut probes = Probes::load(&ProbeConfig {
        events_bytes: options.ring_buffer_bytes,
        stack_snapshots: options
            .stacks
            .as_ref()
            .is_some_and(|stacks| stacks.unwinding == crate::stacks::Unwinding::EhFrame),
        ..ProbeConfig::default()
    })?;
    let mut watched = watch::watch(target, &mut probes, options.memory_limit)?;
    if is_pod {
        watched.kind = TargetKind::Pod;
    }
    let events = probes
        .take_event_stream()?
        .ok_or_else(|| ProbeError::MissingMap(profiler_common::map::EVENTS))?;
    let started_ns = monotonic_ns();
    let stacks = match &options.stacks {
        Some(settings) => {
            probes.sample_stacks(watched.target_id, settings.for_kernel())?;
            Some(StackCollector::new(
                settings.clone(),
                PathBuf::from("/"),
                started_ns,
            ))
        }
        None => None,
    };
    let roots = watched.root_pids.clone();
    let mut session =
        CaptureSession::new(watched, limits(options), Path::new("/"), started_ns, stacks);
    session.seed_regions(&roots);
    session.inspect_runtimes(&roots, 0);
    Ok((probes, events, session))
}

/// Checks everything that needs no privileges before anything is loaded; returns the
/// resolved command for command targets.
fn validate(target: &TargetSpec) -> Result<Option<command::Resolved>, CaptureError> {
    match target {
        TargetSpec::Command(command) => Ok(Some(command::Resolved::new(command)?)),
        TargetSpec::Pid(pid) => {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Err(CaptureError::UnknownPid(*pid));
            }
            Ok(None)
        }
        TargetSpec::Cgroup(path) => {
            cgroups::resolve_cgroup_path(Path::new("/"), path)?;
            Ok(None)
        }
        TargetSpec::Pod { .. } | TargetSpec::Node(_) => Ok(None),
    }
}

fn limits(options: &CaptureOptions) -> SessionLimits {
    SessionLimits {
        max_processes: options.max_processes,
        max_regions: options.max_regions,
        bucket_ms: options.bucket.as_millis() as u64,
        timeline_buckets: options.timeline_buckets,
        sample_interval_ms: options.sample_interval.as_millis() as u64,
        analysis: options.analysis,
    }
}

/// Who a cgroup target belongs to, read like `capture --all` reads it.
fn attribution_of(path: Option<&str>, metadata: Option<&PodWatch>) -> Option<Attribution> {
    let pods = metadata.and_then(|(cache, _)| cache.lock().ok());
    Some(attribution::attribute(path, pods.as_deref()).0)
}

/// A capture shorter than the API server's first answer would name no pod: wait (a bounded
/// while) for the watch's first complete list before naming the cgroup.
async fn wait_for_first_pod_list(metadata: Option<&PodWatch>) {
    const PATIENCE: Duration = Duration::from_secs(10);
    let Some((cache, _)) = metadata else {
        return;
    };
    let started = Instant::now();
    while started.elapsed() < PATIENCE {
        if cache.lock().map_or(true, |pods| pods.lists > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(
        "the Kubernetes API listed no pods within 10 s: the cgroup is named by its path"
    );
}

fn name_cgroup(session: &CaptureSession, metadata: Option<&PodWatch>) -> Option<KubernetesMeta> {
    if session.watched.kind != TargetKind::Cgroup {
        return None;
    }
    let pods = metadata.and_then(|(cache, _)| cache.lock().ok());
    attribution::attribute(session.watched.cgroup_path.as_deref(), pods.as_deref()).1
}

/// The loop: timers and events go to the session until the command exits, the duration
/// ends, the target is gone, or a signal ends it. Returns how the command exited.
async fn capture_loop(
    options: &CaptureOptions,
    command: Option<command::Resolved>,
    signals: &mut command::Signals,
    session: &mut CaptureSession,
    probes: &mut Probes,
    events: &mut EventStream,
    started: Instant,
) -> Result<Option<std::process::ExitStatus>, CaptureError> {
    let (child, child_pid) = match (command, &session.watched.session) {
        (Some(resolved), Some(cgroup)) => {
            let child = command::spawn_in_cgroup(&resolved, cgroup)?;
            let pid = child.id().unwrap_or(0);
            session.watched.root_pids = vec![pid];
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
    let deadline = sleep_or_forever(options.duration);
    tokio::pin!(deadline);
    let mut sample_tick = ticker(options.sample_interval);
    let mut bucket_tick = ticker(options.bucket);
    let mut stack_tick = ticker(STACK_SAMPLE_INTERVAL);
    let mut liveness_tick = ticker(LIVENESS_INTERVAL);
    let progress = progress_bar(options);
    let elapsed_ms = || started.elapsed().as_millis() as u64;
    let exit = loop {
        tokio::select! {
            status = &mut wait => break Some(status.map_err(CaptureError::Wait)?),
            () = &mut deadline => break None,
            batch = events.next_batch() => session.record(batch?),
            _ = sample_tick.tick() => session.sample_charge(elapsed_ms()),
            _ = bucket_tick.tick() => {
                session.close_bucket(probes, elapsed_ms())?;
                if let Some(bar) = &progress {
                    bar.set_position(elapsed_ms());
                    bar.set_message(crate::units::format_bytes(session.live_peak()));
                }
            }
            _ = stack_tick.tick() => {
                session.sample_stack_resident();
                session.sample_runtimes(elapsed_ms());
            }
            _ = liveness_tick.tick(), if child_pid.is_none() => {
                if !session.target_alive(probes)? {
                    break None;
                }
            }
            signal = signals.next() => {
                if !command::pass_on(child_pid, signal, signals.seen, session.watched.session.as_ref()) {
                    break None;
                }
            }
        }
    };
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(exit)
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
    interval
}

async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
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
