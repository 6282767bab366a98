//! The sizing result as the report carries it: request and limit with their reasons, flags,
//! confidence, and the seed's checklist (produced by the sizing module).

use serde::{Deserialize, Serialize};

/// A problem with what is set now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    OomRisk,
    OverProvisioned,
    MissingLimit,
    Leak,
    /// Reclaim stalled the whole workload while its working set fitted the limit.
    MemoryPressure,
    /// A runtime ceiling (a JVM max heap, GOMEMLIMIT) beyond what the observation calls for.
    RuntimeReservation,
}

/// Which observation set the worst realistic peak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakKind {
    Startup,
    Steady,
    Spike,
    Oom,
    /// The kernel's high-water mark from before the capture began.
    BeforeCapture,
}

/// Which memory series sizing read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// A cgroup's charge: what the OOM killer compares with the limit (reports without a
    /// working-set series).
    #[default]
    Charged,
    /// A cgroup's working set as the OOM killer sees it: the charge less clean page cache no
    /// process maps, which the kernel reclaims before it OOM-kills.
    WorkingSet,
    /// A process tree's resident memory (it has no cgroup of its own).
    Resident,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// A problem with what is set now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    pub kind: FlagKind,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    #[serde(default)]
    pub request_bytes: u64,
    #[serde(default)]
    pub limit_bytes: u64,
    pub request: String,
    pub limit: String,
    #[serde(default)]
    pub headroom_fraction: f64,
    #[serde(default)]
    pub worst_peak_bytes: u64,
    /// Which observation set the worst peak.
    pub worst_peak_source: PeakKind,
    pub basis: Basis,
    pub confidence: Confidence,
    #[serde(default)]
    pub confidence_reasons: Vec<String>,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub flags: Vec<Flag>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The steady state sizing found (median of the buckets between spikes after startup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_bytes: Option<u64>,
    /// Spikes sizing found above the steady baseline.
    #[serde(default)]
    pub spikes: u64,
    /// Highest reclaimable page cache in the charge (charge minus working set), not sized.
    #[serde(default)]
    pub page_cache_peak_bytes: u64,
    /// A sustained rise: its rate, and how long until the recommended limit at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_bytes_per_hour: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_to_limit: Option<f64>,
    /// After an OOM kill: the demand is known only to be above this (the lower bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_floor_bytes: Option<u64>,
}

/// One question of the seed's checklist, answered from data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChecklistItem {
    #[serde(default)]
    pub answer: bool,
    pub evidence: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checklist {
    pub startup_peaks_measured: ChecklistItem,
    pub real_traffic_spikes_observed: ChecklistItem,
    pub allocator_reserved_memory_included: ChecklistItem,
    pub headroom_added: ChecklistItem,
    pub limits_far_enough_from_averages: ChecklistItem,
}

super::schema_words!(FlagKind {
    OomRisk => "oom_risk",
    OverProvisioned => "over_provisioned",
    MissingLimit => "missing_limit",
    Leak => "leak",
    MemoryPressure => "memory_pressure",
    RuntimeReservation => "runtime_reservation",
});

super::schema_words!(PeakKind {
    Startup => "startup",
    Steady => "steady",
    Spike => "spike",
    Oom => "oom",
    BeforeCapture => "before_capture",
});

super::schema_words!(Basis {
    Charged => "charged",
    WorkingSet => "working_set",
    Resident => "resident",
});
