//! What sizing reads: an [`Observation`] of one target, taken from its typed report. Sizing
//! never sees JSON: `headroom recommend` parses saved reports into [`CaptureReport`] first.

use thiserror::Error;

use super::{phases, trend};
use crate::report::{
    Basis, BucketPeaks, CaptureReport, PeakBeforeCapture, TargetKind, TargetReport, REPORT_SCHEMA,
};

#[derive(Debug, Error)]
pub enum SizingError {
    #[error("the report has no targets (is it a headroom.report/v1 document?)")]
    NoTargets,
    #[error("the report's schema is `{0}`, expected headroom.report/v1")]
    WrongSchema(String),
}

/// An OOM kill, as sizing needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OomSeen {
    pub seconds: f64,
    /// Highest charge in the seconds before the kill (the charge it was stopped at).
    pub charge_before_bytes: u64,
    /// The limit in force at the kill, where known: demand went past it.
    pub limit_bytes: Option<u64>,
    /// The victim's own anon + file + shmem resident at the kill (0: the record had none).
    pub victim_bytes: u64,
}

impl OomSeen {
    /// The least the killed workload needed: more than what the kill record shows it held,
    /// and more than the limit that stopped it.
    pub fn demand_above_bytes(&self) -> u64 {
        self.charge_before_bytes
            .max(self.victim_bytes)
            .max(self.limit_bytes.unwrap_or(0))
    }
}

/// A spike, as sizing needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeSeen {
    pub start_seconds: f64,
    pub duration_ms: u64,
    pub peak_bytes: u64,
}

/// What one capture target observed, distilled for sizing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    pub name: String,
    pub basis: Basis,
    pub duration_seconds: f64,
    /// Whether the capture saw the target start (so a startup peak can have been seen).
    pub saw_start: bool,
    pub startup_seconds: Option<f64>,
    pub startup_peak_bytes: u64,
    pub startup_peak_at_seconds: Option<f64>,
    /// Bucket maxima after startup, `resolution_ms` apart.
    pub steady_series: Vec<u64>,
    /// Without a startup end, the whole series (for the leak rule, which tells a ramp that
    /// never settles from a warm-up); empty otherwise.
    pub unsettled_series: Vec<u64>,
    pub resolution_ms: u64,
    pub peak_bytes: u64,
    pub spikes: Vec<SpikeSeen>,
    pub ooms: Vec<OomSeen>,
    pub current_limit_bytes: Option<u64>,
    pub current_request_bytes: Option<u64>,
    pub reserved_peak_bytes: u64,
    pub no_access_peak_bytes: u64,
    pub resident_peak_bytes: u64,
    /// Processes that arrived in the target from outside (a restart brings a new one).
    pub restarts: u64,
    /// Highest reclaimable page cache in the charge (charge less working set per bucket).
    pub page_cache_peak_bytes: u64,
    /// Highest charge, cache included.
    pub charge_peak_bytes: u64,
    /// The kernel's high-water mark from before the capture, where the target was running.
    pub peak_before_capture: Option<PeakBeforeCapture>,
    /// Microseconds all tasks stalled on memory during the capture (PSI `full`), where known.
    pub pressure_full_us: Option<u64>,
    /// How many replicas this observation stands for, and which one set the steady state.
    pub replicas: usize,
    pub steady_from: Option<String>,
    /// The runtime of each process read at capture time (JVM heap, GOMEMLIMIT, allocator).
    pub runtime: Vec<crate::report::ProcessRuntime>,
    /// The span asked for when it is not what was observed (Prometheus: `--window`, while
    /// `duration_seconds` is the span of the data Prometheus holds); None for captures.
    pub asked_seconds: Option<f64>,
}

impl Observation {
    /// Reads every target of a `headroom.report/v1` document.
    pub fn from_report(report: &CaptureReport) -> Result<Vec<Self>, SizingError> {
        if report.schema != REPORT_SCHEMA {
            return Err(SizingError::WrongSchema(report.schema.clone()));
        }
        if report.targets.is_empty() {
            return Err(SizingError::NoTargets);
        }
        Ok(report
            .targets
            .iter()
            .map(|target| Self::from_target(target, report.duration_seconds))
            .collect())
    }

    /// One target of a report that lasted `duration_seconds`. Phases are read here, from
    /// the series sizing uses (see `phases.rs`), not taken from the report's charge phases.
    pub fn from_target(t: &TargetReport, duration_seconds: f64) -> Self {
        let buckets = &t.timeline.buckets;
        let basis = basis_of(t.memory.is_some(), buckets);
        let resolution_ms = t.timeline.resolution_ms.max(1);
        let series = basis_series(basis, buckets);
        let alive = crate::accounting::analysis::alive_span(buckets);
        let alive_series = &series[alive.clone()];
        let offset_seconds = (alive.start as u64 * resolution_ms) as f64 / 1000.0;
        let read = phases::read_phases(alive_series, resolution_ms, offset_seconds);
        let seconds_at =
            |index: usize| offset_seconds + (index as u64 * resolution_ms) as f64 / 1000.0;
        let (steady_series, unsettled_series) = match read.startup_end {
            Some(end) => (alive_series[end..].to_vec(), Vec::new()),
            None => (Vec::new(), alive_series.to_vec()),
        };
        // The report's own peak is the kernel's where it has one (exact between buckets);
        // it is a charge, so it stands for the basis only when the basis is the charge.
        let reported_peak = match (&t.memory, basis) {
            (Some(memory), Basis::Charged) => memory.peak_bytes,
            (Some(memory), Basis::WorkingSet) => memory.working_set_peak_bytes,
            _ => t.resident.peak_bytes,
        };
        let peak_before_capture = t
            .memory
            .as_ref()
            .and_then(|m| m.peak_before_capture.clone())
            .or_else(|| t.resident.peak_before_capture.clone());
        let first_alive = buckets.iter().position(|b| b.tasks > 0);
        Self {
            name: CaptureReport::target_name(t),
            basis,
            duration_seconds,
            // A command is seen from its first process; any other target only if the
            // capture saw its cgroup go from (nearly) nothing to its startup peak.
            saw_start: t.kind == TargetKind::Command
                || first_alive.is_some_and(|i| {
                    series.get(i).copied().unwrap_or(0) * 4 < read.startup_peak.max(1)
                }),
            startup_seconds: read.startup_end.map(seconds_at),
            startup_peak_bytes: read.startup_peak,
            startup_peak_at_seconds: read.startup_peak_index.map(seconds_at),
            steady_series,
            unsettled_series,
            resolution_ms,
            peak_bytes: series.iter().copied().max().unwrap_or(0).max(reported_peak),
            spikes: read.spikes,
            ooms: ooms_seen(t, basis),
            // The pod spec's limit when known (what kubelet enforces), else the cgroup's.
            current_limit_bytes: t
                .kubernetes
                .as_ref()
                .and_then(|k| k.spec_limit_bytes)
                .or_else(|| t.memory.as_ref().and_then(|m| m.limit_bytes)),
            current_request_bytes: t.kubernetes.as_ref().and_then(|k| k.spec_request_bytes),
            reserved_peak_bytes: t.reserved.peak_bytes,
            no_access_peak_bytes: t.reserved.peak_by_kind.no_access,
            resident_peak_bytes: t.resident.peak_bytes,
            // Processes that arrived without a parent in the target, beyond the first.
            restarts: t
                .processes
                .iter()
                .filter(|p| p.parent_pid.is_none())
                .count()
                .saturating_sub(1) as u64,
            page_cache_peak_bytes: if basis == Basis::WorkingSet {
                page_cache_peak(buckets)
            } else {
                0
            },
            charge_peak_bytes: t.memory.as_ref().map_or(0, |m| m.peak_bytes),
            peak_before_capture,
            pressure_full_us: t.memory.as_ref().and_then(|m| m.pressure_full_us),
            replicas: 1,
            steady_from: None,
            runtime: t
                .runtime
                .as_ref()
                .map(|r| r.processes.clone())
                .unwrap_or_default(),
            asked_seconds: None,
        }
    }

    /// Merges observations of replicas of one workload, each weighted the same however long
    /// it was watched: the highest peaks, spikes and kills of any, and the steady state of
    /// the replica whose steady state is highest (the worst governs; pooling the series would
    /// let the longest capture outvote the others).
    pub fn merge(observations: &[Self]) -> Option<Self> {
        let first = observations.first()?;
        let mut merged = first.clone();
        let steady_level = |o: &Self| {
            trend::percentile(
                &phases::between_spikes(&o.steady_series, o.resolution_ms),
                0.95,
            )
        };
        let mut governing = (steady_level(first), first.name.clone());
        for other in &observations[1..] {
            merged.duration_seconds = merged.duration_seconds.max(other.duration_seconds);
            merged.saw_start |= other.saw_start;
            if other.startup_peak_bytes > merged.startup_peak_bytes {
                merged.startup_peak_bytes = other.startup_peak_bytes;
                merged.startup_peak_at_seconds = other.startup_peak_at_seconds;
                merged.startup_seconds = other.startup_seconds;
            } else if merged.startup_seconds.is_none() {
                merged.startup_seconds = other.startup_seconds;
            }
            let level = steady_level(other);
            if level > governing.0 {
                governing = (level, other.name.clone());
                merged.steady_series = other.steady_series.clone();
                merged.unsettled_series = other.unsettled_series.clone();
                merged.resolution_ms = other.resolution_ms;
            }
            merged.peak_bytes = merged.peak_bytes.max(other.peak_bytes);
            merged.spikes.extend(other.spikes.iter().cloned());
            merged.ooms.extend(other.ooms.iter().cloned());
            merged.current_limit_bytes =
                match (merged.current_limit_bytes, other.current_limit_bytes) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            merged.reserved_peak_bytes = merged.reserved_peak_bytes.max(other.reserved_peak_bytes);
            merged.no_access_peak_bytes =
                merged.no_access_peak_bytes.max(other.no_access_peak_bytes);
            merged.resident_peak_bytes = merged.resident_peak_bytes.max(other.resident_peak_bytes);
            merged.restarts += other.restarts;
            merged.page_cache_peak_bytes = merged
                .page_cache_peak_bytes
                .max(other.page_cache_peak_bytes);
            merged.charge_peak_bytes = merged.charge_peak_bytes.max(other.charge_peak_bytes);
            merged.pressure_full_us = merged.pressure_full_us.max(other.pressure_full_us);
            if other
                .peak_before_capture
                .as_ref()
                .map(PeakBeforeCapture::demand_bytes)
                > merged
                    .peak_before_capture
                    .as_ref()
                    .map(PeakBeforeCapture::demand_bytes)
            {
                merged.peak_before_capture = other.peak_before_capture.clone();
            }
            merged.runtime.extend(other.runtime.iter().cloned());
            if other.basis != merged.basis {
                // Mixed reports: the charge is the basis every one of them has.
                merged.basis = Basis::Charged;
            }
        }
        merged.replicas = observations.len();
        if observations.len() > 1 {
            merged.name = format!("{} ({} replicas)", first.name, observations.len());
            merged.steady_from = Some(governing.1);
        }
        Some(merged)
    }
}

/// What a target is sized from: its working set where the capture read one, else its charge,
/// else (no cgroup of its own) its resident memory.
pub fn basis_of(has_charge: bool, buckets: &[BucketPeaks]) -> Basis {
    match has_charge {
        true if buckets.iter().any(|b| b.working_set > 0) => Basis::WorkingSet,
        true => Basis::Charged,
        false => Basis::Resident,
    }
}

/// The series sizing reads (the working set, the charge, or resident memory without a cgroup).
fn pick(basis: Basis, bucket: &BucketPeaks) -> u64 {
    match basis {
        Basis::Charged => bucket.charged,
        Basis::WorkingSet => bucket.working_set,
        Basis::Resident => bucket.resident,
    }
}

/// The highest page cache held for three buckets running (charge less working set, in
/// buckets whose working set was read). Cache fills and drains slowly; a single bucket where
/// the charge caught an allocation burst the working-set estimate did not is not cache.
fn page_cache_peak(buckets: &[BucketPeaks]) -> u64 {
    let cache: Vec<u64> = buckets
        .iter()
        .filter(|b| b.working_set > 0)
        .map(|b| b.charged.saturating_sub(b.working_set))
        .collect();
    cache
        .windows(3)
        .map(|three| three.iter().copied().min().unwrap_or(0))
        .max()
        .unwrap_or_else(|| cache.iter().copied().min().unwrap_or(0))
}

/// The series sizing reads, bucket by bucket. The working set is read when a bucket closes; a
/// bucket the timer skipped (its charge came from samples alone) has none, and stands at its
/// charge less the cache of the last bucket that was read (cache moves slowly), not at 0.
pub fn basis_series(basis: Basis, buckets: &[BucketPeaks]) -> Vec<u64> {
    if basis != Basis::WorkingSet {
        return buckets.iter().map(|b| pick(basis, b)).collect();
    }
    let mut cache = 0;
    buckets
        .iter()
        .map(|b| {
            if b.working_set > 0 {
                cache = b.charged.saturating_sub(b.working_set);
                b.working_set
            } else {
                b.charged.saturating_sub(cache)
            }
        })
        .collect()
}

/// OOM kills with what the kill record shows: the highest bucket before each, the victim's
/// own resident sizes, and the limit that stopped it.
fn ooms_seen(t: &TargetReport, basis: Basis) -> Vec<OomSeen> {
    let limit = t.memory.as_ref().and_then(|m| m.limit_bytes);
    t.oom_events
        .iter()
        .map(|kill| OomSeen {
            seconds: kill.seconds,
            // The charge, not the working set: at a kill the kernel had already reclaimed
            // what it could, so what was charged then was needed.
            charge_before_bytes: kill
                .timeline_before
                .buckets
                .iter()
                .map(|b| b.charged.max(pick(basis, b)))
                .max()
                .unwrap_or(0),
            limit_bytes: limit,
            victim_bytes: kill.anon_rss_bytes + kill.file_rss_bytes + kill.shmem_rss_bytes,
        })
        .collect()
}
