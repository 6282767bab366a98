//! What sizing reads: an [`Observation`] of one target, taken from its typed report. Sizing
//! never sees JSON: `headroom recommend` parses saved reports into [`CaptureReport`] first.

use thiserror::Error;

use crate::report::{Basis, BucketPeaks, CaptureReport, TargetKind, TargetReport, REPORT_SCHEMA};

#[derive(Debug, Error)]
pub enum SizingError {
    #[error("the report has no targets (is it a headroom.report/v1 document?)")]
    NoTargets,
    #[error("the report's schema is `{0}`, expected headroom.report/v1")]
    WrongSchema(String),
}

/// An OOM kill, as sizing needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct OomSeen {
    pub seconds: f64,
    /// Highest charge in the seconds before the kill (the charge it was stopped at).
    pub charge_before_bytes: u64,
}

/// A spike, as sizing needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct SpikeSeen {
    pub start_seconds: f64,
    pub duration_ms: u64,
    pub peak_bytes: u64,
}

/// What one capture target observed, distilled for sizing.
#[derive(Clone, Debug, PartialEq)]
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

    /// One target of a report that lasted `duration_seconds`.
    pub fn from_target(t: &TargetReport, duration_seconds: f64) -> Self {
        let basis = if t.memory.is_some() {
            Basis::Charged
        } else {
            Basis::Resident
        };
        let (startup_seconds, startup_peak_bytes, peak_bytes) = match &t.memory {
            Some(memory) => (
                memory.startup_seconds,
                memory.startup_peak_bytes,
                memory.peak_bytes,
            ),
            None => (
                t.resident_phases.startup_seconds,
                t.resident_phases.startup_peak_bytes,
                t.resident.peak_bytes,
            ),
        };
        let phases = SeriesPhases::read(t, basis, startup_seconds, startup_peak_bytes);
        Self {
            name: CaptureReport::target_name(t),
            basis,
            duration_seconds,
            saw_start: phases.saw_start,
            startup_seconds,
            startup_peak_bytes,
            startup_peak_at_seconds: phases.startup_peak_at_seconds,
            steady_series: phases.steady_series,
            resolution_ms: phases.resolution_ms,
            peak_bytes,
            spikes: t
                .spikes
                .iter()
                .map(|s| SpikeSeen {
                    start_seconds: s.start_seconds,
                    duration_ms: s.duration_ms,
                    peak_bytes: s.peak_bytes,
                })
                .collect(),
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
        }
    }

    /// Merges observations of replicas of one workload: the highest peaks across them, and
    /// their steady-state series pooled.
    pub fn merge(observations: &[Self]) -> Option<Self> {
        let first = observations.first()?;
        let mut merged = first.clone();
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
            merged.steady_series.extend_from_slice(&other.steady_series);
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
        }
        if observations.len() > 1 {
            merged.name = format!("{} ({} replicas)", first.name, observations.len());
        }
        Some(merged)
    }
}

/// The series sizing reads (the charge, or resident memory without a cgroup).
fn pick(basis: Basis, bucket: &BucketPeaks) -> u64 {
    match basis {
        Basis::Charged => bucket.charged,
        Basis::Resident => bucket.resident,
    }
}

/// What the timeline says about phases: the steady series while the target had tasks, when
/// the startup peak was, and whether the capture saw the target start.
struct SeriesPhases {
    steady_series: Vec<u64>,
    startup_peak_at_seconds: Option<f64>,
    saw_start: bool,
    resolution_ms: u64,
}

impl SeriesPhases {
    fn read(
        t: &TargetReport,
        basis: Basis,
        startup_seconds: Option<f64>,
        startup_peak_bytes: u64,
    ) -> Self {
        let resolution_ms = t.timeline.resolution_ms.max(1);
        let buckets = &t.timeline.buckets;
        let series: Vec<u64> = buckets.iter().map(|b| pick(basis, b)).collect();
        let startup_end = startup_seconds
            .map_or(series.len(), |s| {
                ((s * 1000.0) as u64 / resolution_ms) as usize
            })
            .min(series.len());
        let alive_end = buckets
            .iter()
            .rposition(|b| b.tasks > 0)
            .map_or(series.len(), |i| i + 1);
        let steady_series = series
            .get(startup_end.min(alive_end)..alive_end)
            .unwrap_or_default()
            .to_vec();
        let startup_peak_at_seconds = series[..startup_end]
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| **v)
            .map(|(i, _)| (i as u64 * resolution_ms) as f64 / 1000.0);
        let first_alive = buckets.iter().position(|b| b.tasks > 0);
        // A target seen from its first process on has its startup in the capture.
        let saw_start = t.kind == TargetKind::Command
            || first_alive.is_some_and(|i| {
                series.get(i).copied().unwrap_or(0) * 4 < startup_peak_bytes.max(1)
            });
        Self {
            steady_series,
            startup_peak_at_seconds,
            saw_start,
            resolution_ms,
        }
    }
}

/// OOM kills with the charge they were stopped at: the highest bucket before each, or the
/// victim's own resident memory when that is higher.
fn ooms_seen(t: &TargetReport, basis: Basis) -> Vec<OomSeen> {
    t.oom_events
        .iter()
        .map(|kill| OomSeen {
            seconds: kill.seconds,
            charge_before_bytes: kill
                .timeline_before
                .buckets
                .iter()
                .map(|b| pick(basis, b))
                .max()
                .unwrap_or(0)
                .max(kill.anon_rss_bytes + kill.file_rss_bytes + kill.shmem_rss_bytes),
        })
        .collect()
}
