//! Memory figures of one target: charged, resident, reserved, threads, phases, the timeline
//! of bucket maxima, spikes and OOM kills.

use serde::{Deserialize, Serialize};

/// Which measurement gave a charge peak. Ordered from the most to the least exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeakSource {
    /// The kernel's lifetime high-water mark of a cgroup made for the session (exact).
    SessionHighWaterMark,
    /// The kernel's high-water mark reset per window through headroom's own descriptor
    /// (exact within the session; v2 `memory.peak` on kernels that reset it per descriptor).
    WindowedHighWaterMark,
    /// The cgroup's lifetime high-water mark rose to a new record during the capture (v1, and
    /// v2 before per-descriptor resets): exact, since the record is the session's own.
    NewRecordHighWaterMark,
    /// The cgroup's lifetime high-water mark, which predates the capture.
    LifetimeHighWaterMark,
    /// The high-water mark when the agent first saw the cgroup, then per-interval maxima.
    AgentIntervals,
    /// Samples of the current charge (misses what rises and falls between two samples).
    #[default]
    Samples,
}

/// Charged memory: the cgroup charge the OOM killer compares with the limit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChargedMemory {
    /// Highest charge: the kernel's own high-water mark where it is exclusive to the session,
    /// else the highest sample.
    pub peak_bytes: u64,
    /// Where `peak_bytes` came from, in words (the text of `peak_from`).
    pub peak_source: String,
    /// Where `peak_bytes` came from.
    #[serde(default)]
    pub peak_from: PeakSource,
    pub startup_peak_bytes: u64,
    /// When startup ended (see the startup rule in the README); null if it did not.
    pub startup_seconds: Option<f64>,
    /// Median of the timeline's bucket maxima after startup.
    pub steady_bytes: Option<u64>,
    pub steady_p95_bytes: Option<u64>,
    /// Highest charge less clean page cache no process maps (the working set sizing reads).
    pub working_set_peak_bytes: u64,
    /// Effective limit (lowest of the cgroup's and its ancestors'); null when unlimited.
    pub limit_bytes: Option<u64>,
    /// Highest sampled charge (every `sample_interval_ms`).
    pub sampled_peak_bytes: u64,
    /// The cgroup's lifetime high-water mark read when the capture began (targets that were
    /// already running): what the target reached before it was watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_before_capture: Option<PeakBeforeCapture>,
    /// Microseconds all the cgroup's tasks stalled on memory at once during the capture (PSI
    /// memory.pressure `full`); null without per-cgroup PSI (cgroup v1, kernels without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pressure_full_us: Option<u64>,
}

/// A kernel high-water mark read when a capture of a running target began.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeakBeforeCapture {
    /// The mark itself.
    pub bytes: u64,
    /// Of it, what was reclaimable page cache at the start (clean file pages no process maps);
    /// 0 for resident marks, which hold no cache.
    pub reclaimable_bytes: u64,
    /// Where it was read (memory.peak, memory.max_usage_in_bytes, VmHWM).
    pub source: String,
}

impl PeakBeforeCapture {
    /// What sizing counts: the mark less the cache that was reclaimable at the start.
    pub fn demand_bytes(&self) -> u64 {
        self.bytes.saturating_sub(self.reclaimable_bytes)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResidentMemory {
    /// Highest file + anon + shmem resident of the target's processes together (rss_stat,
    /// aggregated in the kernel).
    pub peak_bytes: u64,
    pub anon_peak_bytes: u64,
    pub file_peak_bytes: u64,
    /// At the end of the capture.
    pub current_bytes: u64,
    /// For process trees that were already running: the sum of their processes' VmHWM (each
    /// one's own resident high-water mark) when the capture began.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_before_capture: Option<PeakBeforeCapture>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservedMemory {
    /// Highest total reserved address space of the target's processes together.
    pub peak_bytes: u64,
    /// The breakdown at that peak.
    pub by_kind: ReservedBytes,
    /// Each kind's own highest value.
    pub peak_by_kind: ReservedBytes,
    /// Mapping events applied; events lost or not applied make the figures a lower bound.
    pub events: u64,
    pub exact: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Threads {
    /// Threads created during the capture (exact).
    pub created: u64,
    /// Most tasks alive at once, main threads included.
    pub peak: Option<u64>,
    /// Highest reserved thread-stack address space (MAP_STACK regions).
    pub stack_reserved_bytes: u64,
    /// Highest resident thread-stack memory seen (pages touched, sampled from smaps).
    pub stack_resident_bytes: u64,
}

/// Reserved bytes by kind. `brk_heap` is the program break's heap; the others follow
/// `profiler_common::mapping_kind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservedBytes {
    pub brk_heap: u64,
    pub stack: u64,
    pub anonymous: u64,
    pub file: u64,
    pub shared: u64,
    pub no_access: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResidentPhases {
    pub startup_seconds: Option<f64>,
    pub startup_peak_bytes: u64,
    pub steady_bytes: Option<u64>,
    pub steady_p95_bytes: Option<u64>,
}

/// The highest values seen within one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BucketPeaks {
    /// Cgroup charge (memory.current / usage_in_bytes, and the kernel's windowed peak).
    pub charged: u64,
    /// Charge less clean page cache no process maps (what the OOM killer cannot reclaim).
    pub working_set: u64,
    /// Resident (file + anon + shmem) of the target's processes.
    pub resident: u64,
    pub anon: u64,
    /// Reserved address space.
    pub reserved: u64,
    /// Tasks alive at once.
    pub tasks: u64,
}

/// One OOM kill, with the seconds of timeline before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OomKill {
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub total_vm_bytes: u64,
    #[serde(default)]
    pub anon_rss_bytes: u64,
    #[serde(default)]
    pub file_rss_bytes: u64,
    #[serde(default)]
    pub shmem_rss_bytes: u64,
    /// True when the kernel's OOM record carried no sizes (upstream kernels before 6.9 give
    /// only the victim's pid): the four sizes above are then 0, meaning unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sizes_unknown: bool,
    pub timeline_before: TimelineExcerpt,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimelineExcerpt {
    pub start_seconds: f64,
    pub resolution_ms: u64,
    pub buckets: Vec<BucketPeaks>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spike {
    #[serde(default)]
    pub start_seconds: f64,
    #[serde(default)]
    pub duration_ms: u64,
    #[serde(default)]
    pub peak_bytes: u64,
    #[serde(default)]
    pub bytes_above_steady: u64,
    /// The code path that faulted in the most bytes during the spike (with stack sampling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Bytes that code path faulted in during the spike, as sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_bytes: Option<u64>,
    /// Its stack, innermost frame first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<String>,
}
