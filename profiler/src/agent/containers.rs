//! The agent's containers: one record per cgroup the kernel counted, bounded and expiring
//! with the cgroup. A tick reads the kernel's counters (through [`KernelView`]) and each
//! cgroup's charge into the container's [`Recorder`]; the container's report comes from the
//! shared [`TargetReportBuilder`], and its exported recommendation from that report, so
//! `/metrics` and `headroom recommend` over `/api/v1/report` agree by construction.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use profiler_common::MemoryCounters;

use crate::{
    accounting::analysis::AnalysisConfig,
    attribution::{self, CgroupResolver, PodCache},
    cgroups::{ChargeReader, Hierarchies},
    exporters::{ContainerFigures, ContainerLabels, Metrics},
    probes::{KernelView, ProbeError},
    procfs,
    recording::{ChargeFacts, KernelBucket, PeakPolicy, Recorder, TargetReportBuilder},
    report::{Attribution, KubernetesMeta, Recommendation, TargetKind, TargetReport},
    sizing::{self, Observation},
};

/// Limits, OOM-kill counts and charge files that could not be opened are read every this
/// many ticks: they change rarely, and reading them for every container every tick was most
/// of an idle agent's CPU with hundreds of containers. Recommendations are refreshed as often.
pub const SLOW_READ_TICKS: u64 = 10;
/// Processes of one container whose address space is read per slow tick.
const MAX_PROCESSES_READ: usize = 256;
/// A cgroup whose path cannot be resolved is dropped after this long.
const UNRESOLVED_GRACE: Duration = Duration::from_secs(60);

/// How the table is bounded and read.
#[derive(Clone, Copy, Debug)]
pub struct TableSettings {
    pub max_containers: usize,
    pub interval: Duration,
    pub timeline_buckets: usize,
    pub headroom: f64,
}

/// The node's filesystem as a tick reads it: cgroup mounts, the id → path resolver, /proc.
pub struct NodeFiles<'a> {
    pub hierarchies: &'a Hierarchies,
    pub resolver: &'a mut CgroupResolver,
    pub proc_root: &'a Path,
}

/// One tracked container (cgroup).
pub struct Container {
    pub path: Option<String>,
    pub labels: ContainerLabels,
    pub attribution: Attribution,
    pub kubernetes: Option<KubernetesMeta>,
    recorder: Recorder,
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
    /// The charge at the last tick.
    charged_now: Option<u64>,
    /// The effective limit, read with the charge.
    limit: Option<u64>,
    figures: ContainerFigures,
    recommendation: Option<Recommendation>,
    counters: MemoryCounters,
    first_seen: Instant,
}

impl Container {
    fn names_known(&self) -> bool {
        !matches!(
            self.attribution,
            Attribution::Kubernetes {
                names_known: false,
                ..
            }
        )
    }

    /// The container's `headroom.report/v1` target, without a recommendation.
    pub fn report(&self, id: u64, interval: Duration) -> TargetReport {
        let facts = self.charged_now.map(|_| ChargeFacts {
            version: self
                .charge
                .as_ref()
                .map_or(crate::cgroups::ChargeVersion::V2, ChargeReader::version),
            limit: self.limit,
            lifetime_peak: None,
            policy: PeakPolicy::AgentIntervals {
                interval_ms: interval.as_millis() as u64,
            },
        });
        TargetReportBuilder::new(TargetKind::Cgroup, id)
            .watched(None, self.path.clone(), Vec::new())
            .identity(Some(self.attribution.clone()), self.kubernetes.clone())
            .counters(&self.counters, None)
            .oom_kills_at_least(self.cgroup_oom_kills)
            .timeline(
                &self.recorder,
                facts.as_ref(),
                interval.as_millis() as u64,
                &AnalysisConfig::default(),
            )
            .build()
            .0
    }
}

/// Every container the agent tracks.
pub struct ContainerTable {
    containers: HashMap<u64, Container>,
    settings: TableSettings,
    started: Instant,
}

impl ContainerTable {
    pub fn new(settings: TableSettings) -> Self {
        Self {
            containers: HashMap::new(),
            settings,
            started: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.containers.len()
    }

    pub fn get(&self, id: u64) -> Option<&Container> {
        self.containers.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Container)> {
        self.containers.iter().map(|(id, c)| (*id, c))
    }

    /// Seconds since the agent started: the span every container's figures cover at most.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn interval(&self) -> Duration {
        self.settings.interval
    }

    /// One tick: every target the kernel counted is recorded, new ones are named, gone ones
    /// expire (with their series and kernel entries), and the exported figures are set.
    pub fn tick(
        &mut self,
        kernel: &mut dyn KernelView,
        mut node: NodeFiles<'_>,
        pods: Option<&PodCache>,
        metrics: &Metrics,
        tick: u64,
    ) -> Result<(), ProbeError> {
        let elapsed_ms = self.started.elapsed().as_millis() as u64;
        let mut seen = Vec::new();
        for (id, counters) in kernel.all_target_counters()? {
            if !self.track(id, &mut node, pods, metrics) {
                continue;
            }
            seen.push(id);
            if let Some(container) = self.containers.get_mut(&id) {
                container.rename(pods, metrics);
                container.observe(&node, counters, tick, elapsed_ms, self.settings.interval);
            }
        }
        self.expire(kernel, node.hierarchies, &seen, metrics)?;
        self.export(metrics, tick);
        metrics
            .containers_tracked
            .set(i64::try_from(self.containers.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Starts tracking a target the kernel counted; false when the table is full.
    fn track(
        &mut self,
        id: u64,
        node: &mut NodeFiles<'_>,
        pods: Option<&PodCache>,
        metrics: &Metrics,
    ) -> bool {
        if self.containers.contains_key(&id) {
            return true;
        }
        if self.containers.len() >= self.settings.max_containers {
            metrics
                .containers_not_tracked
                .with_label_values(&[] as &[&str])
                .inc();
            return false;
        }
        let path = node.resolver.resolve(id);
        let (attribution, kubernetes) = attribution::attribute(path.as_deref(), pods);
        let mut recorder = Recorder::new(
            self.settings.interval.as_millis() as u64,
            self.settings.timeline_buckets,
        );
        // State from before the agent started (or restarted) comes from the kernel's own
        // high-water mark of the cgroup, not from zero.
        if let Some((peak, _)) = path
            .as_deref()
            .and_then(|path| node.hierarchies.charge_reader(path))
            .and_then(|charge| charge.lifetime_peak())
        {
            recorder.seed_charge_peak(peak);
        }
        self.containers.insert(
            id,
            Container {
                labels: crate::agent::labels_for(
                    path.as_deref(),
                    &attribution,
                    kubernetes.as_ref(),
                ),
                path,
                attribution,
                kubernetes,
                recorder,
                cgroup_oom_kills: 0,
                threads: None,
                reserved: None,
                reserved_peak: 0,
                thread_stacks: None,
                charge: None,
                charged_now: None,
                limit: None,
                figures: ContainerFigures::default(),
                recommendation: None,
                counters: MemoryCounters::default(),
                first_seen: Instant::now(),
            },
        );
        true
    }

    /// Expires containers that are gone (their cgroup directory is), and their series.
    fn expire(
        &mut self,
        kernel: &mut dyn KernelView,
        hierarchies: &Hierarchies,
        seen: &[u64],
        metrics: &Metrics,
    ) -> Result<(), ProbeError> {
        let gone: Vec<u64> = self
            .containers
            .iter()
            .filter(|(id, c)| match &c.path {
                // A readable charge file means the cgroup is there; only otherwise look.
                Some(path) => {
                    c.charge.is_none()
                        && !hierarchies
                            .unified
                            .join(path.trim_start_matches('/'))
                            .exists()
                }
                None => !seen.contains(id) || c.first_seen.elapsed() > UNRESOLVED_GRACE,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(container) = self.containers.remove(&id) {
                metrics.remove(&container.labels);
            }
            kernel.forget_target(id)?;
        }
        Ok(())
    }

    /// Sets every container's series; recommendations are refreshed on slow ticks.
    fn export(&mut self, metrics: &Metrics, tick: u64) {
        let interval = self.settings.interval;
        let elapsed = self.started.elapsed().as_secs_f64();
        for (&id, container) in &mut self.containers {
            let refresh =
                tick.is_multiple_of(SLOW_READ_TICKS) || container.recommendation.is_none();
            let report = refresh.then(|| container.report(id, interval));
            if let Some(report) = &report {
                container.recommendation = report
                    .memory
                    .as_ref()
                    .and_then(|memory| memory.steady_bytes)
                    .map(|_| {
                        sizing::recommend(
                            &Observation::from_target(report, elapsed),
                            self.settings.headroom,
                        )
                        .0
                    });
            }
            let figures = container.figures(report.as_ref());
            metrics.set(&container.labels, &figures, &container.figures);
            container.figures = figures;
        }
    }
}

impl Container {
    /// A pod that was not known yet may be now.
    fn rename(&mut self, pods: Option<&PodCache>, metrics: &Metrics) {
        if self.names_known() || pods.is_none() {
            return;
        }
        let (attribution, kubernetes) = attribution::attribute(self.path.as_deref(), pods);
        let labels =
            crate::agent::labels_for(self.path.as_deref(), &attribution, kubernetes.as_ref());
        if labels != self.labels {
            metrics.remove(&self.labels);
            self.figures = ContainerFigures::default();
        }
        self.labels = labels;
        self.attribution = attribution;
        self.kubernetes = kubernetes;
    }

    /// Records one tick of the container: its charge, slow-path reads, the kernel's counters.
    fn observe(
        &mut self,
        node: &NodeFiles<'_>,
        counters: MemoryCounters,
        tick: u64,
        elapsed_ms: u64,
        interval: Duration,
    ) {
        let fresh = self.charge.is_none();
        if fresh && (tick % SLOW_READ_TICKS == 1 || self.first_seen.elapsed() < interval) {
            self.charge = self
                .path
                .as_deref()
                .and_then(|path| node.hierarchies.charge_reader(path));
        }
        self.charged_now = self.charge.as_ref().and_then(ChargeReader::current);
        if self.charged_now.is_none() {
            // Gone, or not readable: reopened later; the expiry check decides.
            self.charge = None;
        }
        if fresh || tick.is_multiple_of(SLOW_READ_TICKS) {
            self.read_slow(node);
        }
        self.counters = counters;
        if let Some(charged) = self.charged_now {
            self.recorder.sample_charge(elapsed_ms, charged);
        }
        self.recorder.close_bucket(
            elapsed_ms,
            KernelBucket::from_kernel(&counters, None, 0),
            None,
        );
    }

    /// Threads, reserved address space and thread stacks from cgroupfs and /proc, and the
    /// limit and OOM kills from the charge files: every [`SLOW_READ_TICKS`].
    fn read_slow(&mut self, node: &NodeFiles<'_>) {
        if let Some(path) = self.path.as_deref() {
            let dir = node.hierarchies.unified.join(path.trim_start_matches('/'));
            let threads = procfs::read_pids(&dir.join("cgroup.threads"), usize::MAX);
            self.threads = dir
                .join("cgroup.threads")
                .exists()
                .then_some(threads.len() as u64);
            // The agent traces no mapping syscalls (they slow every syscall on the node):
            // reserved address space is the processes' VmSize, sampled here.
            let pids = procfs::read_pids(&dir.join("cgroup.procs"), MAX_PROCESSES_READ);
            let reserved: u64 = pids
                .iter()
                .filter_map(|&pid| procfs::reserved_bytes(node.proc_root, pid))
                .sum();
            self.reserved = Some(reserved);
            self.reserved_peak = self.reserved_peak.max(reserved);
            self.thread_stacks = Some(
                pids.iter()
                    .filter_map(|&pid| procfs::thread_stacks(node.proc_root, pid))
                    .fold((0, 0), |(reserved, resident), (r, s)| {
                        (reserved + r, resident + s)
                    }),
            );
        }
        if let Some(charge) = &self.charge {
            self.limit = charge.limit();
            if let Some(kills) = charge.oom_kills() {
                self.cgroup_oom_kills = self.cgroup_oom_kills.max(kills);
            }
        }
    }

    /// The figures exported now; `report` is this tick's report when it was rebuilt.
    fn figures(&self, report: Option<&TargetReport>) -> ContainerFigures {
        let memory = report.and_then(|report| report.memory.as_ref());
        let previous = &self.figures;
        ContainerFigures {
            charged_bytes: self.charged_now.filter(|_| self.path.is_some()),
            charged_peak_bytes: Some(self.recorder.sampled_charge_peak()).filter(|&p| p > 0),
            startup_peak_bytes: match (report, memory) {
                (Some(_), Some(m)) => m.startup_seconds.map(|_| m.startup_peak_bytes),
                (Some(_), None) => None,
                (None, _) => previous.startup_peak_bytes,
            },
            steady_bytes: match report {
                Some(_) => memory.and_then(|m| m.steady_bytes),
                None => previous.steady_bytes,
            },
            limit_bytes: self.limit,
            resident_bytes: self.counters.resident_bytes().max(0) as u64,
            resident_peak_bytes: self.counters.resident_peak_bytes,
            threads_created: self.counters.threads_created,
            oom_kills: self.counters.oom_kills.max(self.cgroup_oom_kills),
            threads: self.threads,
            reserved_bytes: self.reserved,
            reserved_peak_bytes: self.reserved.map(|_| self.reserved_peak),
            thread_stack_reserved_bytes: self.thread_stacks.map(|(reserved, _)| reserved),
            thread_stack_resident_bytes: self.thread_stacks.map(|(_, resident)| resident),
            recommended_request_bytes: self.recommendation.as_ref().map(|r| r.request_bytes),
            recommended_limit_bytes: self.recommendation.as_ref().map(|r| r.limit_bytes),
        }
    }
}
