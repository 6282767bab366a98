//! The agent's containers: one record per cgroup the kernel counted, bounded and expiring
//! with the cgroup. A tick reads the kernel's counters (through [`KernelView`]) and each
//! cgroup's charge into the container's [`Recorder`]; the container's report comes from the
//! shared [`TargetReportBuilder`], and its exported recommendation from that report, so
//! `/metrics` and `headroom recommend` over `/api/v1/report` agree by construction.

use std::{
    collections::{HashMap, HashSet, VecDeque},
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
    procfs::{ReadBudget, Skip},
    recording::{
        ChargeBucket, ChargeFacts, KernelBucket, PeakPolicy, Recorder, TargetReportBuilder,
    },
    report::{Attribution, KubernetesMeta, Recommendation, TargetKind, TargetReport},
    sizing::{self, Observation},
};

/// Limits, OOM-kill counts and charge files that could not be opened are read every this
/// many ticks: they change rarely, and reading them for every container every tick was most
/// of an idle agent's CPU with hundreds of containers. Recommendations are refreshed as often.
pub const SLOW_READ_TICKS: u64 = 10;
/// Processes of one container whose address space is read per slow tick; a container with
/// more has its reserved and thread-stack figures marked unavailable (`process_cap`), not
/// summed over a part of it.
const MAX_PROCESSES_READ: usize = 1024;
/// Lines of /proc and cgroup files that grow with a tenant (cgroup.threads, cgroup.procs,
/// /proc/PID/maps and smaps) read per tick, across every container: about 40,000 mappings of
/// smaps, tens of milliseconds of the agent's CPU. Containers whose reads did not fit go first
/// at the next slow tick, so every one is read in turn.
pub const TICK_READ_LINES: u64 = 1 << 20;
/// A cgroup whose path cannot be resolved is dropped after this long.
const UNRESOLVED_GRACE: Duration = Duration::from_secs(60);
/// How long a gone container's series are kept at their final values (OOM counter, limit at
/// the last kill, limit, peaks) after its cgroup goes, by default: a container killed and
/// removed between two scrapes still reaches Prometheus. Four 15 s scrape intervals. The
/// agent's `gone_series_retention` key (`--gone-series-retention`) sets it.
pub const GONE_SERIES_RETENTION: Duration = Duration::from_secs(60);
/// At most this many gone containers' series are kept at once; past it the oldest are deleted
/// early and counted in `headroom_agent_retired_series_dropped_total`, so a node that churns
/// containers cannot grow the registry without bound.
pub const MAX_RETIRED_CONTAINERS: usize = 256;

/// How the table is bounded and read.
#[derive(Clone, Copy, Debug)]
pub struct TableSettings {
    pub max_containers: usize,
    pub interval: Duration,
    pub timeline_buckets: usize,
    pub headroom: f64,
    /// Lines of tenant-sized files read per tick ([`TICK_READ_LINES`] in the agent).
    pub read_lines: u64,
    /// How long a gone container's kept series stay ([`GONE_SERIES_RETENTION`] by default).
    pub gone_series_retention: Duration,
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
    /// Why each slow-path figure that is `None` could not be read.
    gaps: TaskGaps,
    /// The tick of the last complete slow-path read; `None` before the first.
    tasks_read: Option<u64>,
    /// The cgroup's charge files, opened once and re-read with pread each tick; None until
    /// they can be opened (retried every [`SLOW_READ_TICKS`]) or after a read fails.
    charge: Option<ChargeReader>,
    /// The charge at the last tick.
    charged_now: Option<u64>,
    /// The effective limit, read with the charge.
    limit: Option<u64>,
    /// The OOM kills counted so far, and the limit in force when the count last rose.
    kills_noted: u64,
    limit_at_oom: Option<u64>,
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
    /// Gone containers whose kept series are deleted once `elapsed` passes the time given,
    /// oldest first.
    retired: VecDeque<(ContainerLabels, Duration)>,
    settings: TableSettings,
    /// Time since the agent started, as of the last tick.
    elapsed: Duration,
    /// Targets the kernel counts that were turned away (the table was full), each counted
    /// once. Bounded by the kernel's target map, whose entries they are.
    turned_away: HashSet<u64>,
}

impl ContainerTable {
    pub fn new(settings: TableSettings) -> Self {
        Self {
            containers: HashMap::new(),
            retired: VecDeque::new(),
            settings,
            elapsed: Duration::ZERO,
            turned_away: HashSet::new(),
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

    /// Time since the agent started, as of the last tick: the span every container's figures
    /// cover at most.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    pub fn interval(&self) -> Duration {
        self.settings.interval
    }

    /// One tick, `elapsed` after the agent started: every target the kernel counted is
    /// recorded, new ones are named, gone ones expire (with their series and kernel entries),
    /// and the exported figures are set.
    pub fn tick(
        &mut self,
        kernel: &mut dyn KernelView,
        mut node: NodeFiles<'_>,
        pods: Option<&PodCache>,
        metrics: &Metrics,
        (tick, elapsed): (u64, Duration),
    ) -> Result<(), ProbeError> {
        self.elapsed = elapsed;
        let elapsed_ms = elapsed.as_millis() as u64;
        let mut seen = Vec::new();
        let mut untracked = Vec::new();
        for (id, counters) in kernel.all_target_counters()? {
            if !self.track(id, &mut node, pods) {
                if self.turned_away.insert(id) {
                    metrics
                        .containers_not_tracked
                        .with_label_values(&[] as &[&str])
                        .inc();
                }
                untracked.push(id);
                continue;
            }
            self.turned_away.remove(&id);
            seen.push(id);
            if let Some(container) = self.containers.get_mut(&id) {
                container.rename(pods, metrics);
                container.observe(&node, counters, tick, elapsed_ms, self.settings.interval);
            }
        }
        let skips = self.read_tasks(&node, tick, &seen);
        for (reason, count) in skips.by_reason() {
            if count > 0 {
                metrics
                    .reads_skipped
                    .with_label_values(&[reason.label()])
                    .inc_by(count);
            }
        }
        self.turned_away.retain(|id| untracked.contains(id));
        if tick.is_multiple_of(SLOW_READ_TICKS) {
            self.release_gone_untracked(kernel, &mut node, &untracked, metrics)?;
        }
        self.expire(kernel, node.hierarchies, &seen, metrics, tick)?;
        self.export(metrics, tick);
        self.delete_retired(metrics, None);
        metrics
            .containers_tracked
            .set(i64::try_from(self.containers.len()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Targets turned away because the table was full stay in the kernel's map, where their
    /// processes keep them counted (one is tracked as soon as a slot frees). Once a target's
    /// cgroup is gone nothing would remove its entry, and enough of them would fill the map
    /// and leave new containers uncounted: they are removed here.
    fn release_gone_untracked(
        &mut self,
        kernel: &mut dyn KernelView,
        node: &mut NodeFiles<'_>,
        untracked: &[u64],
        metrics: &Metrics,
    ) -> Result<(), ProbeError> {
        for &id in untracked {
            let gone = node.resolver.resolve(id).is_none_or(|path| {
                !node
                    .hierarchies
                    .unified
                    .join(path.trim_start_matches('/'))
                    .exists()
            });
            if gone {
                kernel.forget_target(id)?;
                self.turned_away.remove(&id);
                metrics
                    .untracked_targets_released
                    .with_label_values(&[] as &[&str])
                    .inc();
            }
        }
        Ok(())
    }

    /// Starts tracking a target the kernel counted; false when the table is full.
    fn track(&mut self, id: u64, node: &mut NodeFiles<'_>, pods: Option<&PodCache>) -> bool {
        if self.containers.contains_key(&id) {
            return true;
        }
        if self.containers.len() >= self.settings.max_containers {
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
                gaps: TaskGaps::default(),
                tasks_read: None,
                charge: None,
                charged_now: None,
                limit: None,
                kills_noted: 0,
                limit_at_oom: None,
                figures: ContainerFigures::default(),
                recommendation: None,
                counters: MemoryCounters::default(),
                first_seen: Instant::now(),
            },
        );
        true
    }

    /// The slow-path reads of tasks (threads, reserved address space, thread stacks) under one
    /// [`ReadBudget`] for the tick: containers never read, then those read longest ago, go
    /// first. Returns what was skipped, by reason.
    fn read_tasks(&mut self, node: &NodeFiles<'_>, tick: u64, seen: &[u64]) -> procfs::Skips {
        let slow = tick.is_multiple_of(SLOW_READ_TICKS);
        let mut due: Vec<(Option<u64>, u64)> = seen
            .iter()
            .filter_map(|id| Some((*id, self.containers.get(id)?)))
            .filter(|(_, c)| slow || c.tasks_read.is_none())
            .map(|(id, c)| (c.tasks_read, id))
            .collect();
        due.sort_unstable();
        let mut budget = ReadBudget::new(self.settings.read_lines);
        for (index, (_, id)) in due.into_iter().enumerate() {
            if let Some(container) = self.containers.get_mut(&id) {
                container.read_tasks(node, &mut budget, tick, index == 0);
            }
        }
        budget.skips
    }

    /// Expires containers that are gone (their cgroup directory is). Their series are retired:
    /// set to their final figures (this tick's kernel counters included) and kept for
    /// [`GONE_SERIES_RETENTION`], at most [`MAX_RETIRED_CONTAINERS`] at once.
    fn expire(
        &mut self,
        kernel: &mut dyn KernelView,
        hierarchies: &Hierarchies,
        seen: &[u64],
        metrics: &Metrics,
        tick: u64,
    ) -> Result<(), ProbeError> {
        let slow = tick.is_multiple_of(SLOW_READ_TICKS);
        let gone: Vec<u64> = self
            .containers
            .iter()
            .filter(|(id, c)| match &c.path {
                // A readable charge file usually means the cgroup is there: look only otherwise,
                // and on slow ticks (an open descriptor can outlive its directory).
                Some(path) => {
                    (c.charge.is_none() || slow)
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
                let figures = container.figures(None);
                metrics.retire(&container.labels, &figures, &container.figures);
                self.retired
                    .retain(|(labels, _)| *labels != container.labels);
                self.retired.push_back((
                    container.labels,
                    self.elapsed + self.settings.gone_series_retention,
                ));
            }
            kernel.forget_target(id)?;
        }
        while self.retired.len() > MAX_RETIRED_CONTAINERS {
            metrics
                .retired_series_dropped
                .with_label_values(&[] as &[&str])
                .inc();
            self.delete_retired(metrics, Some(1));
        }
        Ok(())
    }

    /// Deletes the series of retired containers whose retention has ended (or the `count`
    /// oldest, whatever their time), unless a live container now exports under the same labels
    /// (a container restarted in its pod carries the series on).
    fn delete_retired(&mut self, metrics: &Metrics, count: Option<usize>) {
        let mut deleted = 0;
        while let Some((_, until)) = self.retired.front() {
            let due = match count {
                Some(count) => deleted < count,
                None => *until <= self.elapsed,
            };
            if !due {
                break;
            }
            let Some((labels, _)) = self.retired.pop_front() else {
                break;
            };
            deleted += 1;
            if !self.containers.values().any(|c| c.labels == labels) {
                metrics.remove(&labels);
            }
        }
    }

    /// Gone containers whose series are still kept.
    #[cfg(test)]
    fn retired(&self) -> usize {
        self.retired.len()
    }

    /// Sets every container's series; recommendations are refreshed on slow ticks.
    fn export(&mut self, metrics: &Metrics, tick: u64) {
        let interval = self.settings.interval;
        let elapsed = self.elapsed.as_secs_f64();
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

/// Why the slow-path figures that are missing could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TaskGaps {
    threads: Option<Skip>,
    reserved: Option<Skip>,
    thread_stacks: Option<Skip>,
}

impl TaskGaps {
    /// (figure, reason) pairs for `headroom_container_figure_unavailable`.
    fn unavailable(&self) -> Vec<(&'static str, &'static str)> {
        [
            ("threads", self.threads),
            ("reserved_bytes", self.reserved),
            ("thread_stack_bytes", self.thread_stacks),
        ]
        .into_iter()
        .filter_map(|(figure, gap)| Some((figure, gap?.label())))
        .collect()
    }
}

/// Reserved address space (sum of VmSize) and thread stacks (reserved, resident) of these
/// processes. A process that exits while it is read had nothing reserved by then and is left
/// out; any other failure makes the figure unknown. Only processes with more than one thread
/// have their maps read: a single thread's stack is the main stack, which the heuristic does
/// not count.
fn read_processes(
    proc_root: &Path,
    pids: &[u32],
    budget: &mut ReadBudget,
) -> (Result<u64, Skip>, Result<(u64, u64), Skip>) {
    let mut reserved: Result<u64, Skip> = Ok(0);
    let mut stacks: Result<(u64, u64), Skip> = Ok((0, 0));
    for &pid in pids {
        let threads = match procfs::reserved_and_threads(proc_root, pid, &mut budget.skips) {
            Ok((bytes, threads)) => {
                if let Ok(sum) = &mut reserved {
                    *sum = sum.saturating_add(bytes);
                }
                threads
            }
            Err(Skip::Gone) => continue,
            Err(reason) => {
                reserved = Err(reason);
                continue;
            }
        };
        if threads < 2 || stacks.is_err() {
            continue;
        }
        match procfs::thread_stacks(proc_root, pid, budget) {
            Ok((r, s)) => {
                if let Ok((reserved, resident)) = &mut stacks {
                    *reserved = reserved.saturating_add(r);
                    *resident = resident.saturating_add(s);
                }
            }
            Err(Skip::Gone) => {}
            Err(reason) => stacks = Err(reason),
        }
    }
    (reserved, stacks)
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
        let charge = self.charge.as_mut().and_then(ChargeBucket::read_charge);
        self.charged_now = charge.map(|bucket| bucket.current);
        if self.charged_now.is_none() {
            // Gone, or not readable: reopened later; the expiry check decides.
            self.charge = None;
        }
        if fresh || tick.is_multiple_of(SLOW_READ_TICKS) {
            self.read_limits();
        }
        if counters.oom_kills > self.counters.oom_kills {
            // A kill this tick: the limit it hit is read now, not at the next slow tick.
            self.read_limits();
        }
        self.counters = counters;
        self.note_kills();
        // The interval's kernel peak (v2 6.12+), or a new lifetime record: a spike between two
        // ticks still reaches the timeline and the exported peak.
        self.recorder.close_bucket(
            elapsed_ms,
            KernelBucket::from_kernel(&counters, None, 0),
            charge,
        );
    }

    /// When the OOM count rose, the limit in force then (the last one read: read again at the
    /// tick the kernel counted the kill, else at most [`SLOW_READ_TICKS`] old). Kills the
    /// cgroup counted before the agent first saw it are dated to then.
    fn note_kills(&mut self) {
        let kills = self.counters.oom_kills.max(self.cgroup_oom_kills);
        if kills > self.kills_noted {
            self.kills_noted = kills;
            self.limit_at_oom = self.limit.or(self.limit_at_oom);
        }
    }

    /// The limit and OOM kills from the charge files, every [`SLOW_READ_TICKS`].
    fn read_limits(&mut self) {
        if let Some(charge) = &self.charge {
            self.limit = charge.limit();
            if let Some(kills) = charge.oom_kills() {
                self.cgroup_oom_kills = self.cgroup_oom_kills.max(kills);
            }
        }
    }

    /// Threads, reserved address space and thread stacks from cgroupfs and /proc, streamed
    /// under `budget`. A figure that could not be read is `None` with its reason in `gaps`,
    /// never a partial sum or a zero. When the budget runs out the container keeps its last
    /// figures and is read first next time; `first` (the container that waited longest) is
    /// read to the end or marked, so that one huge container cannot starve every other.
    fn read_tasks(
        &mut self,
        node: &NodeFiles<'_>,
        budget: &mut ReadBudget,
        tick: u64,
        first: bool,
    ) {
        let Some(path) = self.path.as_deref() else {
            return;
        };
        if budget.exhausted() && !first {
            budget.skips.add(Skip::TickBudget);
            self.defer();
            return;
        }
        let dir = node.hierarchies.unified.join(path.trim_start_matches('/'));
        let threads = procfs::count_pids(&dir.join("cgroup.threads"), budget);
        let (reserved, stacks) = match procfs::read_pids_bounded(
            &dir.join("cgroup.procs"),
            MAX_PROCESSES_READ,
            budget,
        ) {
            Ok((_, true)) => {
                budget.skips.add(Skip::ProcessCap);
                (Err(Skip::ProcessCap), Err(Skip::ProcessCap))
            }
            Ok((pids, false)) => read_processes(node.proc_root, &pids, budget),
            Err(reason) => (Err(reason), Err(reason)),
        };
        let out_of_budget =
            [threads.err(), reserved.err(), stacks.err()].contains(&Some(Skip::TickBudget));
        if out_of_budget && !first {
            self.defer();
            return;
        }
        self.gaps = TaskGaps {
            threads: threads.err(),
            reserved: reserved.err(),
            thread_stacks: stacks.err(),
        };
        self.threads = threads.ok();
        self.reserved = reserved.ok();
        if let Some(reserved) = self.reserved {
            self.reserved_peak = self.reserved_peak.max(reserved);
        }
        self.thread_stacks = stacks.ok();
        self.tasks_read = Some(tick);
    }

    /// The reads did not fit this tick: the last figures stay; a figure never read is a gap.
    fn defer(&mut self) {
        let never = Some(Skip::TickBudget);
        if self.threads.is_none() {
            self.gaps.threads = self.gaps.threads.or(never);
        }
        if self.reserved.is_none() {
            self.gaps.reserved = self.gaps.reserved.or(never);
        }
        if self.thread_stacks.is_none() {
            self.gaps.thread_stacks = self.gaps.thread_stacks.or(never);
        }
    }

    /// The figures exported now; `report` is this tick's report when it was rebuilt.
    fn figures(&self, report: Option<&TargetReport>) -> ContainerFigures {
        let memory = report.and_then(|report| report.memory.as_ref());
        let previous = &self.figures;
        ContainerFigures {
            charged_bytes: self.charged_now.filter(|_| self.path.is_some()),
            charged_peak_bytes: Some(self.recorder.charge_peak()).filter(|&p| p > 0),
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
            limit_at_oom_bytes: self.limit_at_oom,
            threads: self.threads,
            reserved_bytes: self.reserved,
            reserved_peak_bytes: self.reserved.map(|_| self.reserved_peak),
            thread_stack_reserved_bytes: self.thread_stacks.map(|(reserved, _)| reserved),
            thread_stack_resident_bytes: self.thread_stacks.map(|(_, resident)| resident),
            unavailable: self.gaps.unavailable(),
            recommended_request_bytes: self.recommendation.as_ref().map(|r| r.request_bytes),
            recommended_limit_bytes: self.recommendation.as_ref().map(|r| r.limit_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::MetadataExt as _, path::PathBuf};

    use prometheus::Registry;

    use super::*;
    use crate::probes::FakeKernel;

    const MIB: u64 = 1 << 20;

    /// A cgroup2 tree made of plain directories and files: one service with charge files.
    struct FakeNode {
        root: PathBuf,
        hierarchies: Hierarchies,
    }

    impl FakeNode {
        fn new(tag: &str) -> Self {
            let root = std::env::temp_dir()
                .join(format!("headroom-fake-node-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("test.slice/svc.service")).expect("temp tree");
            let node = Self {
                hierarchies: Hierarchies {
                    unified: root.clone(),
                    memory_v1: None,
                },
                root,
            };
            node.write("memory.max", "1073741824\n");
            node.write("memory.events", "oom 0\noom_kill 0\n");
            node.write("memory.stat", "file 0\n");
            node.write("cgroup.procs", "");
            node.write("cgroup.threads", "1\n2\n3\n");
            node.set_charge(0);
            node
        }

        fn dir(&self) -> PathBuf {
            self.root.join("test.slice/svc.service")
        }

        fn id(&self) -> u64 {
            fs::metadata(self.dir()).expect("dir").ino()
        }

        fn write(&self, file: &str, text: &str) {
            fs::write(self.dir().join(file), text).expect("write");
        }

        fn set_charge(&self, bytes: u64) {
            self.write("memory.current", &format!("{bytes}\n"));
        }
    }

    impl Drop for FakeNode {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    fn table() -> ContainerTable {
        ContainerTable::new(TableSettings {
            max_containers: 8,
            interval: Duration::from_millis(100),
            timeline_buckets: 4096,
            headroom: 0.25,
            read_lines: TICK_READ_LINES,
            gone_series_retention: GONE_SERIES_RETENTION,
        })
    }

    /// The first series of counter `name`.
    fn counter_value(registry: &Registry, name: &str) -> Option<f64> {
        registry
            .gather()
            .iter()
            .find(|family| family.name() == name)
            .and_then(|family| {
                family
                    .get_metric()
                    .first()
                    .map(|m| m.get_counter().get_value())
            })
    }

    fn metric(registry: &Registry, name: &str) -> Option<f64> {
        registry
            .gather()
            .iter()
            .find(|family| family.name() == name)
            .and_then(|family| {
                family
                    .get_metric()
                    .first()
                    .map(|m| m.get_gauge().get_value())
            })
    }

    fn tick(
        table: &mut ContainerTable,
        kernel: &mut FakeKernel,
        node: &FakeNode,
        resolver: &mut CgroupResolver,
        metrics: &Metrics,
        number: u64,
    ) {
        let files = NodeFiles {
            hierarchies: &node.hierarchies,
            resolver,
            proc_root: Path::new("/nonexistent-proc-root"),
        };
        let elapsed = Duration::from_millis(number * 100);
        table
            .tick(kernel, files, None, metrics, (number, elapsed))
            .expect("tick");
    }

    /// The exported recommendation is the one sizing gives for the container's own report.
    #[test]
    fn the_agent_tick_exports_what_its_own_report_recommends() {
        let node = FakeNode::new("tick");
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let mut table = table();
        let mut kernel = FakeKernel::default();
        let id = node.id();
        for number in 1..=60u64 {
            // 300 MiB for the first second, then 120 MiB with one tick at 250 MiB.
            let charge = match number {
                1..=10 => 300 * MIB,
                40 => 250 * MIB,
                _ => 120 * MIB,
            };
            node.set_charge(charge);
            kernel.set_resident(id, charge - 20 * MIB, 20 * MIB, 3);
            tick(
                &mut table,
                &mut kernel,
                &node,
                &mut resolver,
                &metrics,
                number,
            );
        }
        let container = table.get(id).expect("tracked");
        assert_eq!(container.path.as_deref(), Some("/test.slice/svc.service"));
        let mut report = crate::report::CaptureReport {
            schema: crate::report::REPORT_SCHEMA.to_owned(),
            mode: crate::report::ReportMode::Agent,
            duration_seconds: table.elapsed().as_secs_f64(),
            sample_interval_ms: 100,
            targets: vec![container.report(id, table.interval())],
            drops: Default::default(),
            undecodable_events: 0,
            folded_stacks: Vec::new(),
            stack_profile: None,
        };
        crate::sizing::recommend_report(&mut report, 0.25);
        let target = &report.targets[0];
        let recommendation = target.recommendation.as_ref().expect("recommended");
        assert_eq!(
            metric(
                &registry,
                "headroom_container_memory_recommended_limit_bytes"
            ),
            Some(recommendation.limit_bytes as f64)
        );
        assert_eq!(
            metric(
                &registry,
                "headroom_container_memory_recommended_request_bytes"
            ),
            Some(recommendation.request_bytes as f64)
        );
        // The startup peak sets the limit; the request is the 120 MiB steady state raised to
        // 375 / 3 (the limit/request ratio is at most 3).
        assert_eq!(recommendation.limit_bytes, 375 * MIB);
        assert_eq!(recommendation.request_bytes, 125 * MIB);
        assert_eq!(
            metric(&registry, "headroom_container_memory_charged_peak_bytes"),
            Some((300 * MIB) as f64)
        );
        assert_eq!(metric(&registry, "headroom_container_threads"), Some(3.0));
        assert_eq!(target.spikes.len(), 1);
        assert_eq!(target.spikes[0].peak_bytes, 250 * MIB);
    }

    /// A 400 MiB spike that rises and falls between two ticks reaches the exported peak and
    /// the timeline through the kernel's per-interval peak (v2 memory.peak, reset per
    /// descriptor): sampling the charge at each tick alone would report 100 MiB.
    #[test]
    fn a_spike_between_two_ticks_is_exported_from_the_kernels_interval_peak() {
        let node = FakeNode::new("spike");
        node.write("memory.peak", &format!("{}\n", 100 * MIB));
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let mut table = table();
        let mut kernel = FakeKernel::default();
        let id = node.id();
        for number in 1..=30u64 {
            node.set_charge(100 * MIB);
            let peak = if number == 20 { 400 * MIB } else { 100 * MIB };
            node.write("memory.peak", &format!("{peak}\n"));
            kernel.set_resident(id, 90 * MIB, 0, 1);
            tick(
                &mut table,
                &mut kernel,
                &node,
                &mut resolver,
                &metrics,
                number,
            );
        }
        assert_eq!(
            metric(&registry, "headroom_container_memory_charged_peak_bytes"),
            Some((400 * MIB) as f64)
        );
        assert_eq!(
            metric(&registry, "headroom_container_memory_charged_bytes"),
            Some((100 * MIB) as f64)
        );
        let report = table.get(id).expect("tracked").report(id, table.interval());
        let charged: Vec<u64> = report.timeline.buckets.iter().map(|b| b.charged).collect();
        assert_eq!(
            charged.iter().filter(|&&c| c == 400 * MIB).count(),
            1,
            "{charged:?}"
        );
        let memory = report.memory.expect("charge");
        assert_eq!(memory.peak_bytes, 400 * MIB);
        assert!(
            memory.peak_source.contains("reset per interval"),
            "{}",
            memory.peak_source
        );
    }

    #[test]
    fn a_container_whose_cgroup_goes_expires_with_its_series_and_kernel_entries() {
        let node = FakeNode::new("expire");
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let mut table = table();
        let mut kernel = FakeKernel::default();
        let id = node.id();
        node.set_charge(64 * MIB);
        kernel.set_resident(id, 60 * MIB, 0, 1);
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 1);
        assert_eq!(table.len(), 1);
        assert!(metric(&registry, "headroom_container_memory_charged_bytes").is_some());
        fs::remove_dir_all(node.dir()).expect("remove the cgroup");
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 2);
        // A descriptor that still reads is checked against the directory on slow ticks.
        tick(
            &mut table,
            &mut kernel,
            &node,
            &mut resolver,
            &metrics,
            SLOW_READ_TICKS,
        );
        assert_eq!(table.len(), 0);
        assert_eq!(kernel.forgotten, vec![id]);
        assert!(metric(&registry, "headroom_container_memory_charged_bytes").is_none());
    }

    /// A container OOM-killed and removed within a tick or two: its OOM counter (at 0 from the
    /// first tick) and the limit at the kill stay exported, at their final values, for
    /// [`GONE_SERIES_RETENTION`] after it goes; its charge now does not.
    #[test]
    fn a_gone_containers_oom_counter_and_limit_at_the_kill_outlive_it_for_the_retention() {
        let node = FakeNode::new("retire");
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let mut table = table();
        let mut kernel = FakeKernel::default();
        let id = node.id();
        node.write("memory.max", &format!("{}\n", 64 * MIB));
        node.set_charge(10 * MIB);
        kernel.set_resident(id, 10 * MIB, 0, 1);
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 1);
        let counter = |registry: &Registry| {
            registry
                .gather()
                .iter()
                .find(|f| f.name() == "headroom_container_oom_kills_total")
                .and_then(|f| f.get_metric().first().map(|m| m.get_counter().get_value()))
        };
        assert_eq!(
            counter(&registry),
            Some(0.0),
            "exported at 0 when first seen"
        );
        // The kill: the kernel counts it; then the cgroup goes.
        kernel.counters.entry(id).or_default().oom_kills = 1;
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 2);
        fs::remove_dir_all(node.dir()).expect("remove the cgroup");
        tick(
            &mut table,
            &mut kernel,
            &node,
            &mut resolver,
            &metrics,
            SLOW_READ_TICKS,
        );
        assert_eq!(table.len(), 0);
        assert_eq!(table.retired(), 1);
        assert_eq!(counter(&registry), Some(1.0));
        assert_eq!(
            metric(&registry, "headroom_container_memory_limit_at_oom_bytes"),
            Some((64 * MIB) as f64)
        );
        assert!(metric(&registry, "headroom_container_memory_charged_bytes").is_none());
        let retention_ticks = GONE_SERIES_RETENTION.as_millis() as u64 / 100;
        tick(
            &mut table,
            &mut kernel,
            &node,
            &mut resolver,
            &metrics,
            SLOW_READ_TICKS + retention_ticks - 1,
        );
        assert_eq!(
            counter(&registry),
            Some(1.0),
            "kept until the retention ends"
        );
        tick(
            &mut table,
            &mut kernel,
            &node,
            &mut resolver,
            &metrics,
            SLOW_READ_TICKS + retention_ticks,
        );
        assert_eq!(table.retired(), 0);
        assert_eq!(counter(&registry), None, "deleted after the retention");
        assert!(metric(&registry, "headroom_container_memory_limit_at_oom_bytes").is_none());
    }

    /// More gone containers than [`MAX_RETIRED_CONTAINERS`]: the oldest kept series are
    /// deleted early and counted, so churn cannot grow the registry.
    #[test]
    fn retired_series_are_bounded_and_the_excess_is_counted() {
        let node = FakeNode::new("retired-bound");
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let mut table = table();
        let mut kernel = FakeKernel::default();
        let labels = |n: usize| ContainerLabels {
            namespace: String::new(),
            pod: String::new(),
            container: format!("/gone-{n}"),
            workload: String::new(),
            attribution: "host".into(),
        };
        for n in 0..MAX_RETIRED_CONTAINERS {
            metrics.retire(
                &labels(n),
                &ContainerFigures::default(),
                &ContainerFigures::default(),
            );
            table.retired.push_back((labels(n), GONE_SERIES_RETENTION));
        }
        node.set_charge(MIB);
        kernel.set_resident(node.id(), MIB, 0, 1);
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 1);
        fs::remove_dir_all(node.dir()).expect("remove the cgroup");
        tick(
            &mut table,
            &mut kernel,
            &node,
            &mut resolver,
            &metrics,
            SLOW_READ_TICKS,
        );
        assert_eq!(table.retired(), MAX_RETIRED_CONTAINERS);
        let text = crate::exporters::encode(&registry).expect("encode");
        assert!(
            text.contains("headroom_agent_retired_series_dropped_total 1"),
            "{text}"
        );
        assert!(!text.contains("container=\"/gone-0\""), "the oldest went");
        assert!(text.contains("container=\"/gone-1\""), "the others stay");
    }

    /// A process with more mappings than the agent reads: its container's thread-stack figure
    /// is a gap with its reason (not a zero or a partial sum), the skip is counted, and the
    /// figures that could be read are still exported.
    #[test]
    fn a_process_with_too_many_mappings_is_a_counted_gap_not_a_zero() {
        let node = FakeNode::new("mappings");
        let proc_root = node.root.join("procfs");
        let pid_dir = proc_root.join("proc/4242");
        fs::create_dir_all(&pid_dir).expect("fixture");
        fs::write(pid_dir.join("status"), "VmSize:\t  4096 kB\nThreads:\t2\n").expect("w");
        let mut maps = String::new();
        for i in 0..(procfs::MAX_MAPPINGS_READ + 10) {
            let start = 0x1000_0000 + i * 0x2000;
            maps.push_str(&format!(
                "{start:x}-{:x} r--p 00000000 00:00 0\n",
                start + 0x1000
            ));
        }
        fs::write(pid_dir.join("maps"), maps).expect("w");
        node.write("cgroup.procs", "4242\n");
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let mut table = table();
        let mut kernel = FakeKernel::default();
        let id = node.id();
        node.set_charge(64 * MIB);
        kernel.set_resident(id, 60 * MIB, 0, 2);
        let files = NodeFiles {
            hierarchies: &node.hierarchies,
            resolver: &mut resolver,
            proc_root: &proc_root,
        };
        table
            .tick(
                &mut kernel,
                files,
                None,
                &metrics,
                (1, Duration::from_millis(100)),
            )
            .expect("tick");
        let text = crate::exporters::encode(&registry).expect("encode");
        assert!(
            text.contains(r#"headroom_agent_reads_skipped_total{reason="file_cap"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"figure="thread_stack_bytes""#)
                && text.contains(r#"reason="file_cap""#),
            "{text}"
        );
        assert!(
            !text.contains("headroom_container_thread_stack_reserved_bytes{"),
            "{text}"
        );
        assert_eq!(
            metric(&registry, "headroom_container_memory_reserved_bytes"),
            Some(4096.0 * 1024.0)
        );
        assert_eq!(metric(&registry, "headroom_container_threads"), Some(3.0));
    }

    /// Two containers whose reads do not both fit the tick's budget: the one that waited is
    /// read first, the other keeps a gap (`tick_budget`, not a zero) until the next tick, when
    /// it goes first and is read in turn.
    #[test]
    fn reads_that_do_not_fit_the_budget_wait_and_go_first_next_time() {
        let node = FakeNode::new("budget");
        let second = node.root.join("test.slice/other.service");
        fs::create_dir_all(&second).expect("second cgroup");
        for file in ["memory.current", "memory.max"] {
            fs::write(second.join(file), "1048576\n").expect("w");
        }
        fs::write(second.join("cgroup.procs"), "").expect("w");
        fs::write(second.join("cgroup.threads"), "4\n5\n6\n").expect("w");
        let ids = [node.id(), fs::metadata(&second).expect("dir").ino()];
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        // Three lines of cgroup.threads each: room for one container and a bit.
        let mut table = ContainerTable::new(TableSettings {
            read_lines: 4,
            ..table().settings
        });
        let mut kernel = FakeKernel::default();
        for id in ids {
            kernel.set_resident(id, MIB, 0, 3);
        }
        let read = |table: &ContainerTable| -> Vec<Option<u64>> {
            ids.iter()
                .map(|id| table.get(*id).expect("tracked").threads)
                .collect()
        };
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 1);
        let first = read(&table);
        assert_eq!(
            first.iter().filter(|t| **t == Some(3)).count(),
            1,
            "{first:?}"
        );
        let waiting = ids[first.iter().position(Option::is_none).expect("one waits")];
        assert_eq!(
            table.get(waiting).expect("tracked").gaps.threads,
            Some(Skip::TickBudget)
        );
        let text = crate::exporters::encode(&registry).expect("encode");
        assert!(
            text.contains(r#"headroom_agent_reads_skipped_total{reason="tick_budget"}"#),
            "{text}"
        );
        assert!(text.contains(r#"reason="tick_budget""#) && text.contains(r#"figure="threads""#));
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 2);
        assert_eq!(read(&table), [Some(3), Some(3)]);
        assert_eq!(
            table.get(waiting).expect("tracked").gaps,
            TaskGaps::default()
        );
    }

    #[test]
    fn containers_past_the_bound_are_counted_not_tracked() {
        let node = FakeNode::new("bound");
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let mut table = ContainerTable::new(TableSettings {
            max_containers: 2,
            ..table().settings
        });
        let mut kernel = FakeKernel::default();
        for id in [node.id(), 1_000_001, 1_000_002, 1_000_003] {
            kernel.set_resident(id, MIB, 0, 1);
        }
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 1);
        assert_eq!(table.len(), 2);
        let not_tracked = counter_value(&registry, "headroom_agent_containers_not_tracked_total");
        assert_eq!(not_tracked, Some(2.0));
    }

    /// Turned-away targets are counted once each, and a gone one leaves the kernel's map on
    /// the next slow tick; a live one stays there, to be tracked when a slot frees.
    #[test]
    fn targets_past_the_bound_leave_the_kernel_once_their_cgroup_is_gone() {
        let node = FakeNode::new("bound-gone");
        let mut resolver = CgroupResolver::new(&node.root, 16);
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let mut table = ContainerTable::new(TableSettings {
            max_containers: 1,
            ..table().settings
        });
        let mut kernel = FakeKernel::default();
        // Two cgroups that exist (the node's own and a second one) and one already gone.
        let second = node.root.join("second");
        std::fs::create_dir_all(&second).expect("fixture");
        let second_id = crate::cgroups::cgroup_id(&second).expect("id");
        let gone_id = 1_000_001;
        // The node's own cgroup first, so that it takes the one slot.
        kernel.set_resident(node.id(), MIB, 0, 1);
        tick(&mut table, &mut kernel, &node, &mut resolver, &metrics, 1);
        for id in [second_id, gone_id] {
            kernel.set_resident(id, MIB, 0, 1);
        }
        for number in 2..=SLOW_READ_TICKS {
            tick(
                &mut table,
                &mut kernel,
                &node,
                &mut resolver,
                &metrics,
                number,
            );
        }
        assert_eq!(table.len(), 1);
        assert_eq!(
            counter_value(&registry, "headroom_agent_containers_not_tracked_total"),
            Some(2.0),
            "each turned-away target once, not once per tick"
        );
        assert!(table.get(node.id()).is_some());
        assert_eq!(kernel.forgotten, [gone_id], "the live untracked one stays");
        assert_eq!(
            counter_value(&registry, "headroom_agent_untracked_targets_released_total"),
            Some(1.0)
        );
    }
}
