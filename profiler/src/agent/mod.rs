//! `headroom agent`: the node agent. It loads the probes once, tracks every container on the
//! node (bounded, expiring with the container), and serves `/metrics`, `/healthz`, `/readyz`
//! and `/api/v1/report` over HTTP.

pub mod config;
mod containers;
mod http;
pub mod session;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

pub use config::{AgentConfig, ConfigError, ConfigFile};
use prometheus::Registry;
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    attribution::{
        self, kubernetes::KubernetesError, Attribution, CgroupResolver, KubernetesMeta, PodWatch,
    },
    cgroups::{is_outside_namespace, CgroupError, Hierarchies, NamespaceRoot},
    exporters::{ContainerLabels, Metrics, MetricsError},
    probes::{self, DropCounts, ProbeConfig, ProbeError, Probes},
    report::{CaptureReport, ReportMode, TargetKind, TargetReport, REPORT_SCHEMA},
};
use containers::{Container, ContainerTable, NodeFiles, TableSettings};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Probes(#[from] ProbeError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("cannot listen on {address} (is another agent running? choose another with --listen)")]
    Listen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("installing the SIGINT/SIGTERM handler failed")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Session(#[from] session::SessionError),
}

/// Ring-buffer batches drained but not yet handled by the agent's loop (each is what the ring
/// held at one wake-up, at most its capacity).
const EVENT_BATCHES: usize = 16;
/// Pods kept in the metadata cache.
const POD_CAPACITY: usize = 1024;
/// What the HTTP handlers read.
pub struct Shared {
    containers: ContainerTable,
    /// Ticks done: the rendered report is reused until this moves.
    tick: u64,
    drops: DropCounts,
    headroom: f64,
}

pub(crate) fn labels_for(
    path: Option<&str>,
    attribution: &Attribution,
    meta: Option<&KubernetesMeta>,
) -> ContainerLabels {
    let kind = attribution.kind_label();
    let (namespace, pod, container, workload) = match (meta, attribution) {
        (Some(meta), _) => (
            meta.namespace.clone().unwrap_or_default(),
            meta.pod.clone().unwrap_or_else(|| meta.pod_uid.clone()),
            meta.container
                .clone()
                .or_else(|| {
                    meta.container_id
                        .as_ref()
                        .map(|id| id.chars().take(12).collect())
                })
                .unwrap_or_default(),
            match (&meta.workload_kind, &meta.workload_name) {
                (Some(kind), Some(name)) => format!("{kind}/{name}"),
                _ => String::new(),
            },
        ),
        (None, Attribution::Host { name }) => {
            (String::new(), String::new(), name.clone(), String::new())
        }
        (None, _) => (
            String::new(),
            String::new(),
            path.unwrap_or("unresolved").to_owned(),
            String::new(),
        ),
    };
    ContainerLabels {
        namespace,
        pod,
        container,
        workload,
        attribution: kind.to_owned(),
    }
}

impl Shared {
    /// The `headroom.report/v1` document for every container, or those whose cgroup path is
    /// `cgroup`, with each target's recommendation (the same one `/metrics` exports).
    pub fn report(&self, cgroup: Option<&str>) -> CaptureReport {
        let interval = self.containers.interval();
        let mut targets: Vec<TargetReport> = self
            .containers
            .iter()
            .filter(|(_, c)| cgroup.is_none_or(|wanted| c.path.as_deref() == Some(wanted)))
            .map(|(id, c)| c.report(id, interval))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.resident.peak_bytes));
        let mut report = CaptureReport {
            schema: REPORT_SCHEMA.to_owned(),
            mode: ReportMode::Agent,
            duration_seconds: self.containers.elapsed().as_secs_f64(),
            sample_interval_ms: interval.as_millis() as u64,
            targets,
            drops: self.drops,
            undecodable_events: 0,
            folded_stacks: Vec::new(),
            stack_profile: None,
        };
        crate::sizing::recommend_report(&mut report, self.headroom);
        report
    }
}

/// The agent's moving parts between ticks.
struct Agent {
    config: AgentConfig,
    probes: Probes,
    resolver: CgroupResolver,
    hierarchies: Hierarchies,
    pods: Option<PodWatch>,
    metrics: Arc<Metrics>,
    shared: Arc<Mutex<Shared>>,
    ready: Arc<AtomicBool>,
    previous_drops: DropCounts,
    previous_bpf: HashMap<&'static str, (Duration, u64)>,
    started: std::time::Instant,
    ticks: u64,
    sessions: Vec<session::ActiveSession>,
}

impl Agent {
    /// Starts a capture session asked for over the socket, or tells the client why not.
    fn start_session(&mut self, start: session::SessionStart) {
        use session::{ServerMessage, SessionTarget};
        let refuse = |start: session::SessionStart, message: String| {
            let _ = start.replies.try_send(ServerMessage::Error { message });
        };
        if self.sessions.len() >= session::MAX_SESSIONS {
            let message = format!(
                "{} sessions are already running on this agent; wait for one to end",
                self.sessions.len()
            );
            return refuse(start, message);
        }
        let found = {
            let shared = self
                .shared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match &start.request.target {
                SessionTarget::Cgroup { path } => {
                    match crate::cgroups::resolve_cgroup_path(Path::new("/"), path)
                        .and_then(|(unified, _)| crate::cgroups::cgroup_id(&unified))
                    {
                        Ok(id) => Ok((
                            id,
                            path.clone(),
                            TargetKind::Cgroup,
                            shared.containers.get(id).and_then(|c| c.kubernetes.clone()),
                        )),
                        Err(err) => Err(err.to_string()),
                    }
                }
                SessionTarget::Pod {
                    namespace,
                    name,
                    container,
                } => find_pod(&shared, namespace, name, container.as_deref()),
            }
        };
        let (target_id, path, kind, kubernetes) = match found {
            Ok(found) => found,
            Err(message) => return refuse(start, message),
        };
        if self.sessions.iter().any(|s| s.target_id == target_id) {
            return refuse(start, format!("a session for {path} is already running"));
        }
        let settings = start.request.stack_settings();
        if settings.unwinding == crate::stacks::Unwinding::EhFrame
            && !probes::preflight::has_btf(Path::new("/"))
        {
            return refuse(
                start,
                "--unwind eh-frame needs the kernel's BTF (/sys/kernel/btf/vmlinux), which this node lacks; use --unwind frame-pointers".to_owned(),
            );
        }
        if let Err(err) = self.probes.sample_stacks(target_id, settings.for_kernel()) {
            return refuse(start, format!("switching stack sampling on failed: {err}"));
        }
        let place = session::SessionPlace {
            target_id,
            charge: self.hierarchies.charge_reader(&path),
            cgroup_path: path,
            kind,
            kubernetes,
            started_ns: crate::capture::monotonic_ns(),
        };
        let active = session::ActiveSession::new(start, place, &self.probes);
        active.announce();
        tracing::info!(cgroup = %active.cgroup_path, "capture session started");
        self.sessions.push(active);
    }

    /// One 10 ms step of every session; finished ones send their reports.
    fn step_sessions(&mut self, stopping: bool) {
        let mut index = 0;
        while index < self.sessions.len() {
            let target_id = self.sessions[index].target_id;
            let running = self.sessions[index].step(&self.probes);
            if running && !stopping {
                index += 1;
                continue;
            }
            let finished = self.sessions.swap_remove(index);
            if let Err(err) = self.probes.stop_sampling_stacks(target_id) {
                tracing::warn!(error = %err, "switching stack sampling off failed");
            }
            tracing::info!(cgroup = %finished.cgroup_path, "capture session finished");
            finished.finish(&self.probes);
        }
    }
}

/// Seeds every running process's resident memory under its cgroup, so that containers which
/// stay idle after the agent starts (or restarts) are tracked at once instead of at their next
/// page fault. Returns the number of cgroups seeded.
fn seed_running_processes(probes: &mut Probes, hierarchies: &Hierarchies, bound: usize) -> usize {
    let root = Path::new("/");
    let mut by_cgroup: HashMap<u64, Vec<(u32, [i64; 4])>> = HashMap::new();
    let mut namespace: Option<Result<NamespaceRoot, CgroupError>> = None;
    // Processes whose cgroup path could not be placed under the mount: the first, and how many.
    let mut unresolved: Option<(u32, String)> = None;
    let mut unresolved_count = 0usize;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cgroups) = crate::cgroups::process_cgroups(root, Some(pid)) else {
            continue;
        };
        let shown = cgroups.unified;
        let under_mount = if is_outside_namespace(&shown) {
            // The agent's own cgroup namespace is private (containerd and CRI-O on cgroup v2):
            // the path is relative to its root, found once.
            let namespace = namespace.get_or_insert_with(|| {
                NamespaceRoot::find(&hierarchies.unified, std::process::id())
            });
            match namespace
                .as_ref()
                .map_err(ToString::to_string)
                .and_then(|ns| ns.path_under_mount(&shown).map_err(|err| err.to_string()))
            {
                Ok(path) => path,
                Err(reason) => {
                    unresolved.get_or_insert((pid, reason));
                    unresolved_count += 1;
                    continue;
                }
            }
        } else {
            shown
        };
        let dir = hierarchies
            .unified
            .join(under_mount.trim_start_matches('/'));
        let Ok(id) = crate::cgroups::cgroup_id(&dir) else {
            continue;
        };
        // Kernel threads have no memory of their own.
        let Some(rss) =
            crate::procfs::resident_by_member(root, pid).filter(|r| r.iter().any(|&v| v > 0))
        else {
            continue;
        };
        if by_cgroup.len() < bound || by_cgroup.contains_key(&id) {
            by_cgroup.entry(id).or_default().push((pid, rss));
        }
    }
    if let Some((pid, reason)) = unresolved {
        tracing::warn!(
            processes = unresolved_count,
            first_pid = pid,
            %reason,
            "running processes not seeded: their cgroups are counted from their next page fault"
        );
    }
    let seeded = by_cgroup.len();
    for (id, mut processes) in by_cgroup {
        // A process that exited since its /proc read would stay counted (no program runs
        // yet to see its exit): seed only those still there.
        processes.retain(|(pid, _)| root.join(format!("proc/{pid}")).exists());
        if let Err(err) = probes.seed_resident(id, &processes) {
            tracing::warn!(cgroup_id = id, error = %err, "seeding running processes failed");
        }
    }
    seeded
}

/// The one container of a pod the agent tracks, by namespace, name and container name.
fn find_pod(
    shared: &Shared,
    namespace: &str,
    name: &str,
    container: Option<&str>,
) -> Result<(u64, String, TargetKind, Option<KubernetesMeta>), String> {
    let matches: Vec<(u64, &Container, &KubernetesMeta)> = shared
        .containers
        .iter()
        .filter_map(|(id, c)| Some((id, c, c.kubernetes.as_ref()?)))
        .filter(|(_, _, meta)| {
            meta.namespace.as_deref() == Some(namespace)
                && meta.pod.as_deref() == Some(name)
                && meta.container.is_some()
                && container.is_none_or(|wanted| meta.container.as_deref() == Some(wanted))
        })
        .collect();
    match matches.as_slice() {
        [] => Err(format!(
            "pod {namespace}/{name}{} is not running on this node as far as this agent knows \
             (`kubectl get pod -n {namespace} {name} -o wide` shows its node; exec into that \
             node's agent)",
            container
                .map(|c| format!(" container {c}"))
                .unwrap_or_default()
        )),
        [(id, c, meta)] => Ok((
            *id,
            c.path.clone().unwrap_or_default(),
            TargetKind::Pod,
            Some((*meta).clone()),
        )),
        several => {
            let mut names: Vec<&str> = several
                .iter()
                .filter_map(|(_, _, meta)| meta.container.as_deref())
                .collect();
            names.sort_unstable();
            Err(format!(
                "pod {namespace}/{name} has {} containers ({}): choose one with --container",
                names.len(),
                names.join(", ")
            ))
        }
    }
}
impl Agent {
    fn tick(&mut self) -> Result<(), AgentError> {
        let _timer = self.metrics.tick_seconds.start_timer();
        self.ticks += 1;
        let pods_guard = self.pods.as_ref().and_then(|(cache, _)| cache.lock().ok());
        let mut shared = self
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        shared.containers.tick(
            &mut self.probes,
            NodeFiles {
                hierarchies: &self.hierarchies,
                resolver: &mut self.resolver,
                proc_root: Path::new("/"),
            },
            pods_guard.as_deref(),
            &self.metrics,
            (self.ticks, self.started.elapsed()),
        )?;
        let tracked = shared.containers.len();
        drop(pods_guard);
        let drops = self.probes.drops()?;
        shared.drops = drops;
        shared.tick = self.ticks;
        drop(shared);
        self.ready.store(true, Ordering::Relaxed);
        self.export_self(drops, tracked);
        Ok(())
    }

    /// The agent's own metrics: drops, memory, map fill, per-program BPF cost.
    fn export_self(&mut self, drops: DropCounts, tracked: usize) {
        let previous = self.previous_drops.by_reason();
        for ((reason, now), (_, before)) in drops.by_reason().into_iter().zip(previous) {
            self.metrics
                .dropped_events
                .with_label_values(&[reason])
                .inc_by(now.saturating_sub(before));
        }
        self.previous_drops = drops;
        if let Some(rss) = crate::procfs::resident_by_member(Path::new("/"), std::process::id()) {
            let resident = rss[0] + rss[1] + rss[3];
            self.metrics.agent_resident_bytes.set(resident);
        }
        self.metrics
            .map_fill_ratio
            .with_label_values(&["targets"])
            .set(tracked as f64 / (self.config.max_containers * 2) as f64);
        if self.ticks % 10 == 1 {
            self.metrics
                .map_fill_ratio
                .with_label_values(&["processes"])
                .set(
                    self.probes.process_entries() as f64
                        / f64::from(self.probes.process_capacity().max(1)),
                );
        }
        for (program, run_time, runs) in self.probes.program_stats() {
            let (time_before, runs_before) =
                self.previous_bpf.get(program).copied().unwrap_or_default();
            self.metrics
                .bpf_run_seconds
                .with_label_values(&[program])
                .inc_by(run_time.saturating_sub(time_before).as_secs_f64());
            self.metrics
                .bpf_runs
                .with_label_values(&[program])
                .inc_by(runs.saturating_sub(runs_before));
            self.previous_bpf.insert(program, (run_time, runs));
        }
    }
}

/// Runs the agent until SIGINT or SIGTERM; everything is detached on the way out.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let hierarchies = Hierarchies::discover(Path::new("/"))?;
    let registry = Registry::new();
    let metrics = Arc::new(Metrics::new(&registry)?);
    // Seeded before the programs run: the agent counts every cgroup, so once attached the
    // kernel updates the very sums seeding writes.
    let mut probes = load_probes(&config)?;
    let seeded = seed_running_processes(&mut probes, &hierarchies, config.max_containers);
    tracing::info!(cgroups = seeded, "running processes seeded from /proc");
    probes.attach()?;
    let mut events = probes
        .take_event_stream()?
        .ok_or(ProbeError::MissingMap(profiler_common::map::EVENTS))?;
    // Per-program run time: counted by the kernel only while this descriptor is open.
    let _stats = probes::enable_run_time_stats()
        .map_err(|err| tracing::warn!(error = %err, "BPF run-time statistics unavailable"))
        .ok();
    let pods =
        attribution::start_metadata(config.metadata, config.node.as_deref(), POD_CAPACITY).await?;
    let shared = Arc::new(Mutex::new(Shared {
        containers: ContainerTable::new(TableSettings {
            max_containers: config.max_containers,
            interval: config.interval,
            timeline_buckets: config.timeline_buckets,
            headroom: config.headroom,
            read_lines: containers::TICK_READ_LINES,
            gone_series_retention: config.gone_series_retention,
        }),
        tick: 0,
        drops: DropCounts::default(),
        headroom: config.headroom,
    }));
    let ready = Arc::new(AtomicBool::new(false));
    let state = http::HttpState::new(
        registry,
        shared.clone(),
        ready.clone(),
        metrics.clone(),
        config.http_limits(),
    );
    let servers = Servers::start(&config, state).await?;
    let mut agent = Agent {
        resolver: CgroupResolver::new(&hierarchies.unified, config.max_containers * 4),
        hierarchies,
        config,
        probes,
        pods,
        metrics,
        shared,
        ready,
        previous_drops: DropCounts::default(),
        previous_bpf: HashMap::new(),
        started: std::time::Instant::now(),
        ticks: 0,
        sessions: Vec::new(),
    };
    let Servers {
        http,
        socket,
        mut session_requests,
    } = servers;
    // The ring is drained on a runtime worker, not on the agent's loop, so a slow tick does not
    // let it fill: batches wait in a bounded channel (when that is full too, the drainer
    // waits and the kernel counts what it drops).
    let (batch_sender, mut batches) = tokio::sync::mpsc::channel(EVENT_BATCHES);
    let drainer = tokio::spawn(async move {
        loop {
            match events.next_batch().await {
                Ok(batch) => {
                    if batch_sender.send(batch).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reading the event ring buffer failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    agent.serve(&mut batches, &mut session_requests).await?;
    drainer.abort();
    tracing::info!("shutting down: detaching probes");
    // Sessions end with their reports, so a client never waits on a dead agent.
    agent.step_sessions(true);
    if let Some(task) = socket {
        task.abort();
    }
    if let Some(path) = &agent.config.socket {
        let _ = std::fs::remove_file(path);
    }
    tokio::task::yield_now().await;
    http.abort();
    if let Some((_, task)) = agent.pods.take() {
        task.abort();
    }
    Ok(())
}

/// The probes as the agent runs them: every cgroup, no syscall tracing, no kernel windows.
/// Loaded, not attached (see `run`).
fn load_probes(config: &AgentConfig) -> Result<Probes, ProbeError> {
    Probes::load_unattached(&ProbeConfig {
        trace_all_cgroups: true,
        track_regions: false,
        // The agent keeps its own per-interval maxima; kernel windows would be wasted work.
        track_windows: false,
        // Syscall tracepoints slow every syscall on the node; the agent's figures come from
        // rss_stat, task and OOM events.
        trace_syscalls: false,
        // eh-frame sessions where the kernel has BTF; elsewhere they are refused by name.
        stack_snapshots: probes::preflight::has_btf(Path::new("/")),
        max_targets: u32::try_from(config.max_containers * 2).unwrap_or(u32::MAX),
        ..ProbeConfig::default()
    })
}

/// The HTTP server and the session socket, running as tasks.
struct Servers {
    http: tokio::task::JoinHandle<()>,
    socket: Option<tokio::task::JoinHandle<()>>,
    session_requests: tokio::sync::mpsc::Receiver<session::SessionStart>,
}

impl Servers {
    async fn start(config: &AgentConfig, state: http::HttpState) -> Result<Self, AgentError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| AgentError::Listen {
                address: config.listen,
                source,
            })?;
        tracing::info!(
            address = %config.listen,
            api = if config.expose_api { "every address" } else { "loopback connections only" },
            "serving /metrics, /healthz, /readyz, /api/v1/report"
        );
        let http = tokio::spawn(http::serve(listener, Arc::new(state)));
        let (session_sender, session_requests) = tokio::sync::mpsc::channel(8);
        let socket = match &config.socket {
            Some(path) => {
                let listener = session::listen(path)?;
                tracing::info!(socket = %path.display(), "accepting capture sessions");
                Some(tokio::spawn(session::serve(listener, session_sender)))
            }
            None => None,
        };
        Ok(Self {
            http,
            socket,
            session_requests,
        })
    }
}

/// One drain of the ring buffer.
type EventBatch = Vec<Result<probes::ProbeEvent, probes::DecodeError>>;

impl Agent {
    /// The agent's loop: ticks, ring-buffer draining, sessions, until SIGINT or SIGTERM.
    async fn serve(
        &mut self,
        batches: &mut tokio::sync::mpsc::Receiver<EventBatch>,
        session_requests: &mut tokio::sync::mpsc::Receiver<session::SessionStart>,
    ) -> Result<(), AgentError> {
        let mut interrupts = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
        let mut terminations = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut session_tick = tokio::time::interval(session::SAMPLE_INTERVAL);
        session_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(err) = self.tick() {
                        tracing::warn!(error = %err, "agent tick failed");
                    }
                }
                // Process starts and exits, OOM kills and sessions' stack samples, drained by
                // their own task so the ring never fills and drops mean real losses.
                Some(batch) = batches.recv() => self.record_events(&batch),
                Some(start) = session_requests.recv() => self.start_session(start),
                _ = session_tick.tick(), if !self.sessions.is_empty() => self.step_sessions(false),
                _ = interrupts.recv() => return Ok(()),
                _ = terminations.recv() => return Ok(()),
            }
        }
    }

    /// Counts ring-buffer events by kind and hands them to running sessions.
    fn record_events(&mut self, batch: &[Result<probes::ProbeEvent, probes::DecodeError>]) {
        for event in batch {
            let kind = match event {
                Ok(probes::ProbeEvent::ProcessStart(_)) => "process_start",
                Ok(probes::ProbeEvent::ProcessExit(_)) => "process_exit",
                Ok(probes::ProbeEvent::OomVictim(_)) => "oom_victim",
                Ok(probes::ProbeEvent::StackSample(_)) => "stack_sample",
                Ok(probes::ProbeEvent::Mapping(_)) => "mapping",
                Err(_) => "undecodable",
            };
            self.metrics.ring_events.with_label_values(&[kind]).inc();
            if let Ok(event) = event {
                for active in &mut self.sessions {
                    active.record(event);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_kubernetes_host_and_unattributed_targets() {
        let meta = KubernetesMeta {
            namespace: Some("shop".into()),
            pod: Some("web-1".into()),
            container: Some("app".into()),
            pod_uid: "u".into(),
            workload_kind: Some("Deployment".into()),
            workload_name: Some("web".into()),
            ..KubernetesMeta::default()
        };
        let labels = labels_for(
            Some("/kubepods/x"),
            &Attribution::Kubernetes {
                names_known: true,
                reason: None,
            },
            Some(&meta),
        );
        assert_eq!(labels.workload, "Deployment/web");
        assert_eq!(labels.attribution, "kubernetes");
        let host = labels_for(
            Some("/system.slice/x.service"),
            &Attribution::Host {
                name: "x.service".into(),
            },
            None,
        );
        assert_eq!(host.container, "x.service");
        let lost = labels_for(
            None,
            &Attribution::Unattributed {
                reason: "gone".into(),
            },
            None,
        );
        assert_eq!(
            (lost.container.as_str(), lost.attribution.as_str()),
            ("unresolved", "unattributed")
        );
    }
}
