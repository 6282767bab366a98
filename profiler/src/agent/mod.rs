//! `headroom agent`: the node agent. It loads the probes once, tracks every container on the
//! node (bounded, expiring with the container), and serves `/metrics`, `/healthz`, `/readyz`
//! and `/api/v1/report` over HTTP.

pub mod config;
mod http;
pub mod session;

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use config::{AgentConfig, ConfigError, ConfigFile};
use profiler_common::{capacity, MemoryCounters};
use prometheus::Registry;
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    accounting::{
        analysis::{analyse, AnalysisConfig, Phases},
        timeline::{BucketPeaks, Timeline},
        ActivitySummary,
    },
    attribution::{
        self, kubernetes::KubernetesError, Attribution, CgroupResolver, KubernetesMeta, PodWatch,
    },
    cgroups::{CgroupError, ChargeReader, Hierarchies},
    exporters::{ContainerFigures, ContainerLabels, Metrics, MetricsError},
    probes::{self, DropCounts, ProbeConfig, ProbeError, Probes},
    report::{
        CaptureReport, ChargedMemory, ReservedMemory, ResidentMemory, ResidentPhases, TargetReport,
        Threads, TimelineExcerpt, REPORT_SCHEMA,
    },
    sizing::{self, Observation},
};

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

/// Pods kept in the metadata cache.
const POD_CAPACITY: usize = 1024;
/// Limits, OOM-kill counts and charge files that could not be opened are read every this
/// many ticks: they change rarely, and reading them for every container every tick was most
/// of an idle agent's CPU with hundreds of containers.
const SLOW_READ_TICKS: u64 = 10;
/// Processes of one container whose address space is read per slow tick.
const MAX_PROCESSES_READ: usize = 256;
/// A cgroup whose path cannot be resolved is dropped after this long.
const UNRESOLVED_GRACE: Duration = Duration::from_secs(60);

/// One tracked container (cgroup).
struct Container {
    path: Option<String>,
    labels: ContainerLabels,
    attribution: Attribution,
    kubernetes: Option<KubernetesMeta>,
    timeline: Timeline,
    charged_peak: u64,
    /// OOM kills the cgroup itself counted (memory.events / memory.oom_control): the kernel's
    /// lifetime figure, so an agent restart neither loses nor double-counts them.
    cgroup_oom_kills: u64,
    /// Threads alive now, counted from cgroup.threads on the slow path.
    threads: Option<u64>,
    /// Address space of its processes (VmSize sum) on the slow path, and the highest.
    reserved: Option<u64>,
    reserved_peak: u64,
    /// Thread stacks (reserved, resident) on the slow path.
    thread_stacks: Option<(u64, u64)>,
    /// The cgroup's charge files, opened once and re-read with pread each tick; None until
    /// they can be opened (retried every [`SLOW_READ_TICKS`]) or after a read fails.
    charge: Option<ChargeReader>,
    /// The effective limit, read with the charge.
    limit: Option<u64>,
    figures: ContainerFigures,
    counters: MemoryCounters,
    first_seen: Instant,
}

impl Container {
    /// The charge timeline, read once: its bucket maxima, their resolution and the phases.
    fn charged_phases(&self) -> (Vec<u64>, u64, Phases) {
        let resolution = self.timeline.resolution_ms();
        let series: Vec<u64> = self.timeline.buckets().iter().map(|b| b.charged).collect();
        let phases = analyse(&series, resolution, &AnalysisConfig::default());
        (series, resolution, phases)
    }

    fn names_known(&self) -> bool {
        !matches!(
            self.attribution,
            Attribution::Kubernetes {
                names_known: false,
                ..
            }
        )
    }
}

/// What the HTTP handlers read.
pub struct Shared {
    containers: HashMap<u64, Container>,
    ready: bool,
    started: Instant,
    drops: DropCounts,
    headroom: f64,
    interval: Duration,
}

fn labels_for(
    path: Option<&str>,
    attribution: &Attribution,
    meta: Option<&KubernetesMeta>,
) -> ContainerLabels {
    let kind = match attribution {
        Attribution::Kubernetes { .. } => "kubernetes",
        Attribution::Host { .. } => "host",
        Attribution::Unattributed { .. } => "unattributed",
    };
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

/// The observation sizing reads, from a container's charge timeline as `charged_phases` read it.
fn observation(
    container: &Container,
    (series, resolution, phases): &(Vec<u64>, u64, Phases),
    elapsed: Duration,
) -> Observation {
    let resolution = *resolution;
    let startup_end = phases.startup_seconds.map_or(series.len(), |s| {
        ((s * 1000.0) as u64 / resolution) as usize
    });
    Observation {
        name: container.labels.container.clone(),
        basis: "charged",
        duration_seconds: elapsed.as_secs_f64(),
        saw_start: false,
        startup_seconds: phases.startup_seconds,
        startup_peak_bytes: phases.startup_peak_bytes,
        startup_peak_at_seconds: None,
        steady_series: series.get(startup_end..).unwrap_or_default().to_vec(),
        resolution_ms: resolution,
        peak_bytes: container.charged_peak,
        spikes: phases
            .spikes
            .iter()
            .map(|s| sizing::SpikeSeen {
                start_seconds: s.start_seconds,
                duration_ms: s.duration_ms,
                peak_bytes: s.peak_bytes,
            })
            .collect(),
        ooms: Vec::new(),
        current_limit_bytes: container
            .kubernetes
            .as_ref()
            .and_then(|k| k.spec_limit_bytes)
            .or(container.limit),
        current_request_bytes: container
            .kubernetes
            .as_ref()
            .and_then(|k| k.spec_request_bytes),
        reserved_peak_bytes: 0,
        no_access_peak_bytes: 0,
        resident_peak_bytes: container.counters.resident_peak_bytes,
        restarts: 0,
    }
}

/// The per-container report served at /api/v1/report.
fn container_report(id: u64, container: &Container, shared: &Shared) -> TargetReport {
    let read = container.charged_phases();
    let observation = observation(container, &read, shared.started.elapsed());
    let (_, resolution, phases) = read;
    let (recommendation, checklist) = sizing::recommend(&observation, shared.headroom);
    TargetReport {
        kind: "cgroup",
        command: None,
        cgroup: container.path.clone(),
        target_id: id,
        pids: Vec::new(),
        exit: None,
        memory: container
            .figures
            .charged_bytes
            .map(|current| ChargedMemory {
                peak_bytes: container.charged_peak,
                peak_source: format!(
                    "the cgroup's kernel high-water mark when the agent first saw it, then the maximum of every {} ms interval",
                    shared.interval.as_millis()
                ),
                startup_peak_bytes: phases.startup_peak_bytes,
                startup_seconds: phases.startup_seconds,
                steady_bytes: phases.steady_bytes,
                steady_p95_bytes: phases.steady_p95_bytes,
                working_set_peak_bytes: 0,
                limit_bytes: container.figures.limit_bytes,
                sampled_peak_bytes: container.charged_peak.max(current),
            }),
        resident: ResidentMemory::from_counters(&container.counters),
        reserved: ReservedMemory::default(),
        threads: Threads {
            created: container.counters.threads_created,
            peak: None,
            stack_reserved_bytes: 0,
            stack_resident_bytes: 0,
        },
        resident_phases: ResidentPhases::default(),
        spikes: phases.spikes,
        sources: Vec::new(),
        stacks: None,
        oom_kills: container.counters.oom_kills.max(container.cgroup_oom_kills),
        oom_kills_cgroup: None,
        oom_events: Vec::new(),
        activity: ActivitySummary::from_counters(&container.counters, None),
        processes: Vec::new(),
        processes_not_listed: 0,
        kernel_entries_at_end: probes::KernelEntries::default(),
        timeline: TimelineExcerpt {
            start_seconds: 0.0,
            resolution_ms: resolution,
            buckets: container.timeline.buckets().to_vec(),
        },
        recommendation: Some(recommendation),
        checklist: Some(checklist),
        attribution: Some(container.attribution.clone()),
        kubernetes: container.kubernetes.clone(),
    }
}

impl Shared {
    /// The `headroom.report/v1` document for every container, or those whose cgroup path is
    /// `cgroup`.
    pub fn report(&self, cgroup: Option<&str>) -> CaptureReport {
        let mut targets: Vec<TargetReport> = self
            .containers
            .iter()
            .filter(|(_, c)| cgroup.is_none_or(|wanted| c.path.as_deref() == Some(wanted)))
            .map(|(id, c)| container_report(*id, c, self))
            .collect();
        targets.sort_by_key(|t| std::cmp::Reverse(t.resident.peak_bytes));
        CaptureReport {
            schema: REPORT_SCHEMA,
            mode: "agent",
            duration_seconds: self.started.elapsed().as_secs_f64(),
            sample_interval_ms: self.interval.as_millis() as u64,
            targets,
            drops: self.drops,
            undecodable_events: 0,
            folded_stacks: Vec::new(),
        }
    }
}

/// The agent's moving parts between ticks.
struct Agent {
    config: AgentConfig,
    probes: Probes,
    resolver: CgroupResolver,
    hierarchies: Hierarchies,
    pods: Option<PodWatch>,
    metrics: Metrics,
    shared: Arc<Mutex<Shared>>,
    previous_drops: DropCounts,
    previous_bpf: HashMap<&'static str, (Duration, u64)>,
    started: Instant,
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
                            "cgroup",
                            shared
                                .containers
                                .get(&id)
                                .and_then(|c| c.kubernetes.clone()),
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
        let at_start = self.kernel_view(target_id);
        let charge = self.hierarchies.charge_reader(&path);
        let active = session::ActiveSession::new(
            start,
            target_id,
            path,
            kind,
            kubernetes,
            charge,
            crate::capture::monotonic_ns(),
            at_start,
        );
        active.announce();
        tracing::info!(cgroup = %active.cgroup_path, "capture session started");
        self.sessions.push(active);
    }

    fn kernel_view(&self, target_id: u64) -> session::KernelView {
        session::KernelView {
            counters: self
                .probes
                .target_counters(target_id)
                .ok()
                .flatten()
                .unwrap_or_default(),
            drops: self.probes.drops().unwrap_or_default(),
        }
    }

    /// One 10 ms step of every session; finished ones send their reports.
    fn step_sessions(&mut self, stopping: bool) {
        let mut index = 0;
        while index < self.sessions.len() {
            let target_id = self.sessions[index].target_id;
            let view = self.kernel_view(target_id);
            let running = self.sessions[index].step(&view);
            if running && !stopping {
                index += 1;
                continue;
            }
            let finished = self.sessions.swap_remove(index);
            if let Err(err) = self.probes.stop_sampling_stacks(target_id) {
                tracing::warn!(error = %err, "switching stack sampling off failed");
            }
            tracing::info!(cgroup = %finished.cgroup_path, "capture session finished");
            finished.finish(&self.kernel_view(target_id));
        }
    }
}

/// Seeds every running process's resident memory under its cgroup, so that containers which
/// stay idle after the agent starts (or restarts) are tracked at once instead of at their next
/// page fault. Returns the number of cgroups seeded.
fn seed_running_processes(probes: &mut Probes, hierarchies: &Hierarchies, bound: usize) -> usize {
    let root = Path::new("/");
    let mut by_cgroup: HashMap<u64, Vec<(u32, [i64; 4])>> = HashMap::new();
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
        let dir = hierarchies
            .unified
            .join(cgroups.unified.trim_start_matches('/'));
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
    let seeded = by_cgroup.len();
    for (id, processes) in by_cgroup {
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
) -> Result<(u64, String, &'static str, Option<KubernetesMeta>), String> {
    let matches: Vec<(u64, &Container, &KubernetesMeta)> = shared
        .containers
        .iter()
        .filter_map(|(id, c)| Some((*id, c, c.kubernetes.as_ref()?)))
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
            "pod",
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
        self.ticks += 1;
        let counters = self.probes.all_target_counters()?;
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        let pods_guard = self.pods.as_ref().and_then(|(cache, _)| cache.lock().ok());
        let mut shared = self
            .shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut seen = Vec::with_capacity(counters.len());
        for (id, kernel) in counters {
            if !shared.containers.contains_key(&id) {
                if shared.containers.len() >= self.config.max_containers {
                    self.metrics
                        .containers_not_tracked
                        .with_label_values(&[] as &[&str])
                        .inc();
                    continue;
                }
                let path = self.resolver.resolve(id);
                let (attribution, kubernetes) =
                    attribution::attribute(path.as_deref(), pods_guard.as_deref());
                // State from before the agent started (or restarted) comes from the kernel's
                // own high-water mark of the cgroup, not from zero.
                let lifetime_peak = path
                    .as_deref()
                    .and_then(|path| self.hierarchies.charge_reader(path))
                    .and_then(|charge| charge.lifetime_peak())
                    .map_or(0, |(peak, _)| peak);
                shared.containers.insert(
                    id,
                    Container {
                        labels: labels_for(path.as_deref(), &attribution, kubernetes.as_ref()),
                        path,
                        attribution,
                        kubernetes,
                        timeline: Timeline::new(
                            self.config.interval.as_millis() as u64,
                            self.config.timeline_buckets,
                        ),
                        charged_peak: lifetime_peak,
                        cgroup_oom_kills: 0,
                        threads: None,
                        reserved: None,
                        reserved_peak: 0,
                        thread_stacks: None,
                        charge: None,
                        limit: None,
                        figures: ContainerFigures::default(),
                        counters: MemoryCounters::default(),
                        first_seen: Instant::now(),
                    },
                );
            }
            seen.push(id);
            let Some(container) = shared.containers.get_mut(&id) else {
                continue;
            };
            // A pod that was not known yet may be now.
            if !container.names_known() && pods_guard.is_some() {
                let (attribution, kubernetes) =
                    attribution::attribute(container.path.as_deref(), pods_guard.as_deref());
                let labels =
                    labels_for(container.path.as_deref(), &attribution, kubernetes.as_ref());
                if labels != container.labels {
                    self.metrics.remove(&container.labels);
                    container.figures = ContainerFigures::default();
                }
                container.labels = labels;
                container.attribution = attribution;
                container.kubernetes = kubernetes;
            }
            let fresh = container.charge.is_none();
            if fresh
                && (self.ticks % SLOW_READ_TICKS == 1
                    || container.first_seen.elapsed() < self.config.interval)
            {
                container.charge = container
                    .path
                    .as_deref()
                    .and_then(|path| self.hierarchies.charge_reader(path));
            }
            let charged = container.charge.as_ref().and_then(ChargeReader::current);
            if charged.is_none() {
                // Gone, or not readable: reopened later; the expiry check below decides.
                container.charge = None;
            }
            if fresh || self.ticks.is_multiple_of(SLOW_READ_TICKS) {
                if let Some(path) = container.path.as_deref() {
                    let dir = self.hierarchies.unified.join(path.trim_start_matches('/'));
                    container.threads = std::fs::read_to_string(dir.join("cgroup.threads"))
                        .ok()
                        .map(|text| text.lines().count() as u64);
                    // The agent traces no mapping syscalls (they slow every syscall on the
                    // node): reserved address space is the processes' VmSize, sampled here.
                    let pids: Vec<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
                        .map(|procs| {
                            procs
                                .lines()
                                .take(MAX_PROCESSES_READ)
                                .filter_map(|pid| pid.trim().parse().ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    let root = Path::new("/");
                    container.reserved = Some(
                        pids.iter()
                            .filter_map(|&pid| crate::procfs::reserved_bytes(root, pid))
                            .sum(),
                    );
                    container.thread_stacks = Some(
                        pids.iter()
                            .filter_map(|&pid| crate::procfs::thread_stacks(root, pid))
                            .fold((0, 0), |(reserved, resident), (r, s)| {
                                (reserved + r, resident + s)
                            }),
                    );
                    if let Some(reserved) = container.reserved {
                        container.reserved_peak = container.reserved_peak.max(reserved);
                    }
                }
            }
            if let Some(charge) = &container.charge {
                if fresh || self.ticks.is_multiple_of(SLOW_READ_TICKS) {
                    container.limit = charge.limit();
                    if let Some(kills) = charge.oom_kills() {
                        container.cgroup_oom_kills = container.cgroup_oom_kills.max(kills);
                    }
                }
            }
            if let Some(charged) = charged {
                container.charged_peak = container.charged_peak.max(charged);
            }
            container.counters = kernel;
            container.timeline.record(
                elapsed_ms,
                &BucketPeaks {
                    charged: charged.unwrap_or(0),
                    resident: kernel.resident_bytes().max(0) as u64,
                    anon: kernel.rss_bytes[profiler_common::rss_member::ANON].max(0) as u64,
                    tasks: kernel.live_tasks.max(0) as u64,
                    ..BucketPeaks::default()
                },
            );
        }

        // Expire containers that are gone (their cgroup directory is), and their series.
        let unified = self.hierarchies.unified.clone();
        let gone: Vec<u64> = shared
            .containers
            .iter()
            .filter(|(id, c)| match &c.path {
                // A readable charge file means the cgroup is there; only otherwise look.
                Some(path) => {
                    c.charge.is_none() && !unified.join(path.trim_start_matches('/')).exists()
                }
                None => !seen.contains(id) || c.first_seen.elapsed() > UNRESOLVED_GRACE,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(container) = shared.containers.remove(&id) {
                self.metrics.remove(&container.labels);
            }
            self.probes.forget_target(id)?;
        }

        let elapsed = self.started.elapsed();
        let headroom = self.config.headroom;
        for container in shared.containers.values_mut() {
            let read = container.charged_phases();
            let phases = &read.2;
            let mut figures = ContainerFigures {
                charged_bytes: container
                    .timeline
                    .buckets()
                    .last()
                    .map(|b| b.charged)
                    .filter(|_| container.path.is_some()),
                charged_peak_bytes: Some(container.charged_peak).filter(|&p| p > 0),
                startup_peak_bytes: phases.startup_seconds.map(|_| phases.startup_peak_bytes),
                steady_bytes: phases.steady_bytes,
                limit_bytes: container.limit,
                resident_bytes: container.counters.resident_bytes().max(0) as u64,
                resident_peak_bytes: container.counters.resident_peak_bytes,
                threads_created: container.counters.threads_created,
                oom_kills: container.counters.oom_kills.max(container.cgroup_oom_kills),
                threads: container.threads,
                reserved_bytes: container.reserved,
                reserved_peak_bytes: container.reserved.map(|_| container.reserved_peak),
                thread_stack_reserved_bytes: container.thread_stacks.map(|(reserved, _)| reserved),
                thread_stack_resident_bytes: container.thread_stacks.map(|(_, resident)| resident),
                recommended_request_bytes: None,
                recommended_limit_bytes: None,
            };
            if phases.steady_bytes.is_some() {
                let (recommendation, _) =
                    sizing::recommend(&observation(container, &read, elapsed), headroom);
                figures.recommended_request_bytes = Some(recommendation.request_bytes);
                figures.recommended_limit_bytes = Some(recommendation.limit_bytes);
            }
            self.metrics
                .set(&container.labels, &figures, &container.figures);
            container.figures = figures;
        }
        self.metrics
            .containers_tracked
            .set(i64::try_from(shared.containers.len()).unwrap_or(i64::MAX));
        let tracked = shared.containers.len();
        drop(pods_guard);

        // Self metrics.
        let drops = self.probes.drops()?;
        shared.drops = drops;
        shared.ready = true;
        drop(shared);
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
                .set(self.probes.process_entries() as f64 / f64::from(capacity::PROCESSES));
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
        Ok(())
    }
}

/// Runs the agent until SIGINT or SIGTERM; everything is detached on the way out.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let hierarchies = Hierarchies::discover(Path::new("/"))?;
    let registry = Registry::new();
    let metrics = Metrics::new(&registry)?;
    let max_targets = u32::try_from(config.max_containers * 2).unwrap_or(u32::MAX);
    let mut probes = Probes::load(&ProbeConfig {
        trace_all_cgroups: true,
        track_regions: false,
        // The agent keeps its own per-interval maxima; kernel windows would be wasted work.
        track_windows: false,
        // Syscall tracepoints slow every syscall on the node; the agent's figures come from
        // rss_stat, task and OOM events.
        trace_syscalls: false,
        // eh-frame sessions where the kernel has BTF; elsewhere they are refused by name.
        stack_snapshots: probes::preflight::has_btf(Path::new("/")),
        max_targets,
        ..ProbeConfig::default()
    })?;
    let seeded = seed_running_processes(&mut probes, &hierarchies, config.max_containers);
    tracing::info!(cgroups = seeded, "running processes seeded from /proc");
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
        containers: HashMap::new(),
        ready: false,
        started: Instant::now(),
        drops: DropCounts::default(),
        headroom: config.headroom,
        interval: config.interval,
    }));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| AgentError::Listen {
            address: config.listen,
            source,
        })?;
    tracing::info!(address = %config.listen, "serving /metrics, /healthz, /readyz, /api/v1/report");
    let server = tokio::spawn(http::serve(listener, Arc::new(registry), shared.clone()));
    let (session_sender, mut session_requests) = tokio::sync::mpsc::channel(8);
    let socket_server = match &config.socket {
        Some(path) => {
            let listener = session::listen(path)?;
            tracing::info!(socket = %path.display(), "accepting capture sessions");
            Some(tokio::spawn(session::serve(listener, session_sender)))
        }
        None => None,
    };

    let mut agent = Agent {
        resolver: CgroupResolver::new(&hierarchies.unified, config.max_containers * 4),
        hierarchies,
        config,
        probes,
        pods,
        metrics,
        shared,
        previous_drops: DropCounts::default(),
        previous_bpf: HashMap::new(),
        started: Instant::now(),
        ticks: 0,
        sessions: Vec::new(),
    };
    let mut interrupts = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut terminations = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut tick = tokio::time::interval(agent.config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut session_tick = tokio::time::interval(session::SAMPLE_INTERVAL);
    session_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(err) = agent.tick() {
                    tracing::warn!(error = %err, "agent tick failed");
                }
            }
            // Process starts and exits, OOM kills and sessions' stack samples: drained always,
            // so the ring never fills and drops mean real losses.
            batch = events.next_batch() => match batch {
                Ok(batch) => {
                    for event in &batch {
                        let kind = match event {
                            Ok(probes::ProbeEvent::ProcessStart(_)) => "process_start",
                            Ok(probes::ProbeEvent::ProcessExit(_)) => "process_exit",
                            Ok(probes::ProbeEvent::OomVictim(_)) => "oom_victim",
                            Ok(probes::ProbeEvent::StackSample(_)) => "stack_sample",
                            Ok(probes::ProbeEvent::Mapping(_)) => "mapping",
                            Err(_) => "undecodable",
                        };
                        agent.metrics.ring_events.with_label_values(&[kind]).inc();
                        if let Ok(event) = event {
                            for active in &mut agent.sessions {
                                active.record(event);
                            }
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "reading the event ring buffer failed"),
            },
            Some(start) = session_requests.recv() => agent.start_session(start),
            _ = session_tick.tick(), if !agent.sessions.is_empty() => agent.step_sessions(false),
            _ = interrupts.recv() => break,
            _ = terminations.recv() => break,
        }
    }
    tracing::info!("shutting down: detaching probes");
    // Sessions end with their reports, so a client never waits on a dead agent.
    agent.step_sessions(true);
    if let Some(task) = socket_server {
        task.abort();
    }
    if let Some(path) = &agent.config.socket {
        let _ = std::fs::remove_file(path);
    }
    tokio::task::yield_now().await;
    server.abort();
    if let Some((_, task)) = agent.pods.take() {
        task.abort();
    }
    Ok(())
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
