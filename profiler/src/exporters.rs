//! Prometheus metrics: `headroom_*`, units in the names, `_total` on counters, one series set
//! per container labelled `namespace`, `pod`, `container`, `workload` and `attribution`.
//! When a container's cgroup goes, its instantaneous series are deleted at once and the rest
//! (its OOM counter, peaks, limit, limit at the last OOM kill) are *retired*: kept at their
//! final values for a bounded time so that at least one scrape sees them, then deleted
//! (see `agent::containers::GONE_SERIES_RETENTION`). Unbounded label sets are a leak.
//! The registry is passed in, not global, so tests read exactly what one agent exported.

use prometheus::{
    core::{AtomicU64, GenericCounterVec},
    IntGauge, IntGaugeVec, Opts, Registry,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("registering metric failed")]
    Register(#[from] prometheus::Error),
}

type CounterVec = GenericCounterVec<AtomicU64>;

/// Labels of one container's series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub workload: String,
    /// `kubernetes`, `host` or `unattributed`.
    pub attribution: String,
}

impl ContainerLabels {
    fn values(&self) -> [&str; 5] {
        [
            &self.namespace,
            &self.pod,
            &self.container,
            &self.workload,
            &self.attribution,
        ]
    }
}

const LABELS: [&str; 5] = ["namespace", "pod", "container", "workload", "attribution"];

/// Figures exported for one container at one tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerFigures {
    pub charged_bytes: Option<u64>,
    pub charged_peak_bytes: Option<u64>,
    pub startup_peak_bytes: Option<u64>,
    pub steady_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub resident_bytes: u64,
    pub resident_peak_bytes: u64,
    pub threads_created: u64,
    /// Threads alive now (lines of the cgroup's cgroup.threads).
    pub threads: Option<u64>,
    /// Address space reserved by its processes (sum of VmSize), now and its highest.
    pub reserved_bytes: Option<u64>,
    pub reserved_peak_bytes: Option<u64>,
    /// Thread stacks (glibc/musl layout found in /proc/PID/maps): reserved and resident.
    pub thread_stack_reserved_bytes: Option<u64>,
    pub thread_stack_resident_bytes: Option<u64>,
    pub oom_kills: u64,
    /// The effective limit when the last OOM kill was counted (None before any kill).
    pub limit_at_oom_bytes: Option<u64>,
    pub recommended_request_bytes: Option<u64>,
    pub recommended_limit_bytes: Option<u64>,
    /// (figure, reason) of each figure that could not be read this time: exported as
    /// `headroom_container_figure_unavailable`, instead of a zero.
    pub unavailable: Vec<(&'static str, &'static str)>,
}

/// Every metric the agent exports.
pub struct Metrics {
    charged: IntGaugeVec,
    charged_peak: IntGaugeVec,
    startup_peak: IntGaugeVec,
    steady: IntGaugeVec,
    limit: IntGaugeVec,
    limit_at_oom: IntGaugeVec,
    resident: IntGaugeVec,
    resident_peak: IntGaugeVec,
    recommended_request: IntGaugeVec,
    recommended_limit: IntGaugeVec,
    threads: IntGaugeVec,
    reserved: IntGaugeVec,
    reserved_peak: IntGaugeVec,
    stack_reserved: IntGaugeVec,
    stack_resident: IntGaugeVec,
    threads_created: CounterVec,
    oom_kills: CounterVec,
    /// Agent self-metrics.
    pub dropped_events: CounterVec,
    /// Ring-buffer events handled, by kind.
    pub ring_events: CounterVec,
    pub containers_tracked: IntGauge,
    pub containers_not_tracked: CounterVec,
    /// Turned-away targets whose cgroup went, removed from the kernel's map.
    pub untracked_targets_released: CounterVec,
    /// Gone containers whose retired series were deleted before their retention ended,
    /// because more containers went than the retention holds.
    pub retired_series_dropped: CounterVec,
    pub map_fill_ratio: prometheus::GaugeVec,
    pub agent_resident_bytes: IntGauge,
    pub bpf_run_seconds: prometheus::CounterVec,
    pub bpf_runs: CounterVec,
    /// Reads of /proc and cgroup files skipped or cut short, by reason.
    pub reads_skipped: CounterVec,
    /// How long each tick took (procfs and cgroup reads, the table, the export).
    pub tick_seconds: prometheus::Histogram,
    /// HTTP connections refused because the cap was reached, or closed by a timeout.
    pub http_connections_closed: CounterVec,
    unavailable: IntGaugeVec,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGaugeVec, MetricsError> {
    let vec = IntGaugeVec::new(Opts::new(name, help), &LABELS)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<CounterVec, MetricsError> {
    let vec = CounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Registers every metric. Long on purpose: a declaration table, one entry a metric with
    /// its name and help text, kept in one place so the exported names read as a list.
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        let containers_tracked = IntGauge::new(
            "headroom_agent_containers_tracked",
            "Containers (cgroups) the agent tracks now.",
        )?;
        registry.register(Box::new(containers_tracked.clone()))?;
        let agent_resident_bytes = IntGauge::new(
            "headroom_agent_resident_bytes",
            "The agent's own resident memory (VmRSS).",
        )?;
        registry.register(Box::new(agent_resident_bytes.clone()))?;
        let map_fill_ratio = prometheus::GaugeVec::new(
            Opts::new(
                "headroom_agent_map_fill_ratio",
                "How full each bounded kernel map is (entries / capacity).",
            ),
            &["map"],
        )?;
        registry.register(Box::new(map_fill_ratio.clone()))?;
        let bpf_run_seconds = prometheus::CounterVec::new(
            Opts::new(
                "headroom_agent_bpf_run_seconds_total",
                "Time the kernel spent in each headroom program (BPF run-time statistics, enabled only while the agent runs).",
            ),
            &["program"],
        )?;
        registry.register(Box::new(bpf_run_seconds.clone()))?;
        let tick_seconds = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "headroom_agent_tick_seconds",
                "Duration of each agent tick (kernel counters, cgroup and /proc reads, export); it runs off the thread that serves HTTP.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )?;
        registry.register(Box::new(tick_seconds.clone()))?;
        let mut unavailable_labels = LABELS.to_vec();
        unavailable_labels.extend(["figure", "reason"]);
        let unavailable = IntGaugeVec::new(
            Opts::new(
                "headroom_container_figure_unavailable",
                "1 for each of a container's figures that could not be read this time (its series is absent, not 0), with the reason: permission, gone, file_cap, process_cap, tick_budget, line_too_long, unreadable.",
            ),
            &unavailable_labels,
        )?;
        registry.register(Box::new(unavailable.clone()))?;
        Ok(Self {
            reads_skipped: counter(
                registry,
                "headroom_agent_reads_skipped_total",
                "Reads of /proc and cgroup files skipped or cut short, by reason (file_cap, process_cap, tick_budget, line_too_long, permission, gone, unreadable).",
                &["reason"],
            )?,
            http_connections_closed: counter(
                registry,
                "headroom_agent_http_connections_closed_total",
                "HTTP connections the agent closed itself, by reason (connection_cap, timeout).",
                &["reason"],
            )?,
            tick_seconds,
            unavailable,
            charged: gauge(
                registry,
                "headroom_container_memory_charged_bytes",
                "The container's cgroup charge now (memory.current / memory.usage_in_bytes).",
            )?,
            charged_peak: gauge(
                registry,
                "headroom_container_memory_charged_peak_bytes",
                "Highest charge: the cgroup's kernel high-water mark when first seen, then every interval's maximum.",
            )?,
            startup_peak: gauge(
                registry,
                "headroom_container_memory_startup_peak_bytes",
                "Highest charge during startup, when startup was seen.",
            )?,
            steady: gauge(
                registry,
                "headroom_container_memory_steady_bytes",
                "Median charge after startup.",
            )?,
            limit: gauge(
                registry,
                "headroom_container_memory_limit_bytes",
                "The effective memory limit (absent when unlimited).",
            )?,
            limit_at_oom: gauge(
                registry,
                "headroom_container_memory_limit_at_oom_bytes",
                "The effective memory limit when the container's last OOM kill was counted (absent before any kill; kept after the container goes, with its OOM counter).",
            )?,
            resident: gauge(
                registry,
                "headroom_container_memory_resident_bytes",
                "Resident memory of the container's processes (rss_stat, summed in the kernel).",
            )?,
            resident_peak: gauge(
                registry,
                "headroom_container_memory_resident_peak_bytes",
                "Highest resident memory since the agent started.",
            )?,
            recommended_request: gauge(
                registry,
                "headroom_container_memory_recommended_request_bytes",
                "headroom's recommended memory request.",
            )?,
            recommended_limit: gauge(
                registry,
                "headroom_container_memory_recommended_limit_bytes",
                "headroom's recommended memory limit.",
            )?,
            threads: gauge(
                registry,
                "headroom_container_threads",
                "Threads alive in the container now (its cgroup.threads).",
            )?,
            reserved: gauge(
                registry,
                "headroom_container_memory_reserved_bytes",
                "Address space reserved by the container's processes (sum of VmSize).",
            )?,
            reserved_peak: gauge(
                registry,
                "headroom_container_memory_reserved_peak_bytes",
                "Highest address space reserved by the container's processes seen by the agent.",
            )?,
            stack_reserved: gauge(
                registry,
                "headroom_container_thread_stack_reserved_bytes",
                "Address space of the container's thread stacks (glibc/musl layout in /proc/PID/maps).",
            )?,
            stack_resident: gauge(
                registry,
                "headroom_container_thread_stack_resident_bytes",
                "Resident memory of the container's thread stacks (smaps of those ranges).",
            )?,
            ring_events: counter(
                registry,
                "headroom_agent_ring_events_total",
                "Ring-buffer events the agent handled, by kind (process_start, process_exit, oom_victim, stack_sample, mapping, undecodable).",
                &["kind"],
            )?,
            threads_created: counter(
                registry,
                "headroom_container_threads_created_total",
                "Threads created in the container.",
                &LABELS,
            )?,
            oom_kills: counter(
                registry,
                "headroom_container_oom_kills_total",
                "OOM kills: the higher of oom:mark_victim's count and the cgroup's own counter. Exported at 0 from the first tick the container is seen, and kept at its final value for a while after the container goes.",
                &LABELS,
            )?,
            dropped_events: counter(
                registry,
                "headroom_agent_dropped_events_total",
                "Kernel events or updates lost, by reason.",
                &["reason"],
            )?,
            containers_not_tracked: counter(
                registry,
                "headroom_agent_containers_not_tracked_total",
                "Containers turned away because max_containers was reached (each once).",
                &[],
            )?,
            untracked_targets_released: counter(
                registry,
                "headroom_agent_untracked_targets_released_total",
                "Turned-away containers whose cgroup went, removed from the kernel's target map so that it never fills with them.",
                &[],
            )?,
            retired_series_dropped: counter(
                registry,
                "headroom_agent_retired_series_dropped_total",
                "Gone containers whose kept series (OOM counter, peaks, limits) were deleted before their retention ended because too many containers went at once.",
                &[],
            )?,
            bpf_runs: counter(
                registry,
                "headroom_agent_bpf_runs_total",
                "Runs of each headroom program.",
                &["program"],
            )?,
            containers_tracked,
            agent_resident_bytes,
            map_fill_ratio,
            bpf_run_seconds,
        })
    }

    /// Sets one container's series. Counters move by the difference from `previous`.
    pub fn set(
        &self,
        labels: &ContainerLabels,
        figures: &ContainerFigures,
        previous: &ContainerFigures,
    ) {
        let values = labels.values();
        let set_optional = |vec: &IntGaugeVec, value: Option<u64>| match value {
            Some(value) => vec.with_label_values(&values).set(to_i64(value)),
            None => {
                let _ = vec.remove_label_values(&values);
            }
        };
        set_optional(&self.charged, figures.charged_bytes);
        set_optional(&self.charged_peak, figures.charged_peak_bytes);
        set_optional(&self.startup_peak, figures.startup_peak_bytes);
        set_optional(&self.steady, figures.steady_bytes);
        set_optional(&self.limit, figures.limit_bytes);
        // Kept once set: it describes the last kill under these labels, which a container
        // that replaced the killed one (same pod and container name) has not changed.
        if let Some(limit) = figures.limit_at_oom_bytes {
            self.limit_at_oom
                .with_label_values(&values)
                .set(to_i64(limit));
        }
        set_optional(&self.recommended_request, figures.recommended_request_bytes);
        set_optional(&self.recommended_limit, figures.recommended_limit_bytes);
        set_optional(&self.threads, figures.threads);
        set_optional(&self.reserved, figures.reserved_bytes);
        set_optional(&self.reserved_peak, figures.reserved_peak_bytes);
        set_optional(&self.stack_reserved, figures.thread_stack_reserved_bytes);
        set_optional(&self.stack_resident, figures.thread_stack_resident_bytes);
        self.resident
            .with_label_values(&values)
            .set(to_i64(figures.resident_bytes));
        self.resident_peak
            .with_label_values(&values)
            .set(to_i64(figures.resident_peak_bytes));
        self.threads_created.with_label_values(&values).inc_by(
            figures
                .threads_created
                .saturating_sub(previous.threads_created),
        );
        self.oom_kills
            .with_label_values(&values)
            .inc_by(figures.oom_kills.saturating_sub(previous.oom_kills));
        for &(figure, reason) in &previous.unavailable {
            if !figures.unavailable.contains(&(figure, reason)) {
                let _ = self
                    .unavailable
                    .remove_label_values(&unavailable_values(&values, figure, reason));
            }
        }
        for &(figure, reason) in &figures.unavailable {
            self.unavailable
                .with_label_values(&unavailable_values(&values, figure, reason))
                .set(1);
        }
    }

    /// A container that went away: its final figures are set (the OOM counter moves by what
    /// the last tick counted), its instantaneous series (charge, resident, threads, reserved,
    /// thread stacks, steady state, recommendations, gaps) are deleted, and the rest is kept
    /// until [`Metrics::remove`]: the OOM counter, the limit at the last kill, the limit, the
    /// peaks and the threads-created counter.
    pub fn retire(
        &self,
        labels: &ContainerLabels,
        figures: &ContainerFigures,
        previous: &ContainerFigures,
    ) {
        self.set(labels, figures, previous);
        let values = labels.values();
        self.remove_unavailable(&values);
        for vec in [
            &self.charged,
            &self.steady,
            &self.resident,
            &self.recommended_request,
            &self.recommended_limit,
            &self.threads,
            &self.reserved,
            &self.stack_reserved,
            &self.stack_resident,
        ] {
            let _ = vec.remove_label_values(&values);
        }
    }

    fn remove_unavailable(&self, values: &[&str; 5]) {
        for figure in ["threads", "reserved_bytes", "thread_stack_bytes"] {
            for reason in crate::procfs::Skip::ALL {
                let _ = self.unavailable.remove_label_values(&unavailable_values(
                    values,
                    figure,
                    reason.label(),
                ));
            }
        }
    }

    /// Deletes every series of a container that went away.
    pub fn remove(&self, labels: &ContainerLabels) {
        let values = labels.values();
        self.remove_unavailable(&values);
        for vec in [
            &self.charged,
            &self.charged_peak,
            &self.startup_peak,
            &self.steady,
            &self.limit,
            &self.limit_at_oom,
            &self.resident,
            &self.resident_peak,
            &self.recommended_request,
            &self.recommended_limit,
            &self.threads,
            &self.reserved,
            &self.reserved_peak,
            &self.stack_reserved,
            &self.stack_resident,
        ] {
            let _ = vec.remove_label_values(&values);
        }
        let _ = self.threads_created.remove_label_values(&values);
        let _ = self.oom_kills.remove_label_values(&values);
    }
}

fn unavailable_values<'a>(values: &[&'a str; 5], figure: &'a str, reason: &'a str) -> [&'a str; 7] {
    [
        values[0], values[1], values[2], values[3], values[4], figure, reason,
    ]
}

/// The registry in Prometheus's text format.
pub fn encode(registry: &Registry) -> Result<String, prometheus::Error> {
    let encoder = prometheus::TextEncoder::new();
    encoder.encode_to_string(&registry.gather())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(container: &str) -> ContainerLabels {
        ContainerLabels {
            namespace: "shop".into(),
            pod: "web-1".into(),
            container: container.into(),
            workload: "Deployment/web".into(),
            attribution: "kubernetes".into(),
        }
    }

    #[test]
    fn series_appear_move_and_disappear_with_the_container() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let first = ContainerFigures {
            charged_bytes: Some(100),
            resident_bytes: 90,
            threads_created: 3,
            ..ContainerFigures::default()
        };
        metrics.set(&labels("app"), &first, &ContainerFigures::default());
        let second = ContainerFigures {
            threads_created: 5,
            ..first.clone()
        };
        metrics.set(&labels("app"), &second, &first);
        let text = encode(&registry).expect("encode");
        assert!(text.contains(r#"headroom_container_memory_charged_bytes{attribution="kubernetes",container="app",namespace="shop",pod="web-1",workload="Deployment/web"} 100"#), "{text}");
        assert!(text.contains(r#"headroom_container_threads_created_total{attribution="kubernetes",container="app",namespace="shop",pod="web-1",workload="Deployment/web"} 5"#), "{text}");
        assert!(
            !text.contains("headroom_container_memory_limit_bytes{"),
            "unlimited: no series"
        );
        metrics.remove(&labels("app"));
        let text = encode(&registry).expect("encode");
        assert!(!text.contains(r#"container="app""#), "{text}");
    }

    #[test]
    fn a_retired_container_keeps_its_oom_counter_and_the_limit_at_the_kill() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).expect("metrics");
        let first = ContainerFigures {
            charged_bytes: Some(10),
            charged_peak_bytes: Some(10),
            limit_bytes: Some(64),
            ..ContainerFigures::default()
        };
        metrics.set(&labels("app"), &first, &ContainerFigures::default());
        let text = encode(&registry).expect("encode");
        assert!(
            text.contains(r#"headroom_container_oom_kills_total{attribution="kubernetes",container="app",namespace="shop",pod="web-1",workload="Deployment/web"} 0"#),
            "the OOM counter is exported at 0 from the first tick: {text}"
        );
        let last = ContainerFigures {
            charged_bytes: Some(64),
            charged_peak_bytes: Some(64),
            oom_kills: 1,
            limit_at_oom_bytes: Some(64),
            ..first.clone()
        };
        metrics.retire(&labels("app"), &last, &first);
        let text = encode(&registry).expect("encode");
        assert!(text.contains(r#"headroom_container_oom_kills_total{attribution="kubernetes",container="app",namespace="shop",pod="web-1",workload="Deployment/web"} 1"#), "{text}");
        assert!(text.contains(r#"headroom_container_memory_limit_at_oom_bytes{attribution="kubernetes",container="app",namespace="shop",pod="web-1",workload="Deployment/web"} 64"#), "{text}");
        assert!(text.contains(r#"headroom_container_memory_charged_peak_bytes{attribution="kubernetes",container="app",namespace="shop",pod="web-1",workload="Deployment/web"} 64"#), "{text}");
        assert!(
            !text.contains("headroom_container_memory_charged_bytes{"),
            "the charge now is not kept: {text}"
        );
        metrics.remove(&labels("app"));
        let text = encode(&registry).expect("encode");
        assert!(!text.contains(r#"container="app""#), "{text}");
    }
}
