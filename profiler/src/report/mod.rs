//! Reports: the `headroom.report/v1` document (a public contract: names and meanings of its
//! fields do not change; fields are only added). This module owns every type of the schema
//! and derives both `Serialize` and `Deserialize`, so a saved report reads back into the same
//! types that wrote it; other modules fill these types, and `render` turns them into tables,
//! Markdown and YAML. It imports nothing of the crate but `units`.

mod activity;
mod identity;
mod memory;
mod recommendation;
pub mod render;
mod runtime;
mod sources;

pub use render::Format;

use serde::{Deserialize, Serialize};

pub use activity::{
    ActivitySummary, DropCounts, ExitSummary, KernelEntries, MappedBytes, ProcessRecord,
};
pub use identity::{Attribution, KubernetesMeta, Qos, Runtime};
pub use memory::{
    BucketPeaks, ChargedMemory, OomKill, PeakBeforeCapture, PeakSource, ReservedBytes,
    ReservedMemory, ResidentMemory, ResidentPhases, Spike, Threads, TimelineExcerpt,
};
pub use recommendation::{
    Basis, Checklist, ChecklistItem, Confidence, Flag, FlagKind, PeakKind, Recommendation,
};
pub use runtime::{
    AllocatorKind, GoSettings, JvmSettings, ProcessRuntime, RuntimeKind, RuntimeSection,
};
pub use sources::{Measure, MemorySource, SourceKind, StackEntry, StackSummary, Unwinding};

pub const REPORT_SCHEMA: &str = "headroom.report/v1";

/// `as_str` and `Display` for a schema enum: the same snake_case word serde writes.
macro_rules! schema_words {
    ($type:ty { $($variant:ident => $word:literal),+ $(,)? }) => {
        impl $type {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}
pub(crate) use schema_words;

/// What a target is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A command headroom started in a cgroup of its own.
    Command,
    /// An existing cgroup.
    Cgroup,
    /// A process tree (no cgroup of its own).
    Pid,
    /// A pod or one of its containers, found through the Kubernetes API.
    Pod,
}

/// What a report covers (reports from before the field was added are target reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportMode {
    /// One command, cgroup, process tree or pod.
    #[default]
    Target,
    /// Every cgroup of the node (`capture --all`).
    Node,
    /// The node agent's containers (`/api/v1/report`).
    Agent,
}

/// One thing a capture watched: a command's cgroup, an existing cgroup, or a process tree.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetReport {
    pub kind: TargetKind,
    /// The captured command line, for command targets.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// cgroup path as /proc/PID/cgroup shows it; null for process trees.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// The id the kernel side counted the target under (cgroup v2 id, or a process-tree id).
    pub target_id: u64,
    /// Root processes: the command, the followed pid, or the cgroup's processes at the start.
    #[serde(default)]
    pub pids: Vec<u32>,
    #[serde(default)]
    pub exit: Option<ExitSummary>,
    /// Charged memory; null for process trees (they have no cgroup of their own).
    #[serde(default)]
    pub memory: Option<ChargedMemory>,
    pub resident: ResidentMemory,
    pub reserved: ReservedMemory,
    pub threads: Threads,
    /// Startup and steady state of the resident series (for process trees, the main series).
    pub resident_phases: ResidentPhases,
    /// Spikes above steady state (of the charge; of resident memory for process trees).
    #[serde(default)]
    pub spikes: Vec<Spike>,
    /// Who made the memory, heaviest first: code paths from sampled stacks, and the hidden
    /// consumers (thread stacks, allocator arenas, file mappings, shared memory).
    #[serde(default)]
    pub sources: Vec<MemorySource>,
    /// How the stacks were sampled and what they cannot show; null without stack sampling.
    #[serde(default)]
    pub stacks: Option<StackSummary>,
    #[serde(default)]
    pub oom_kills: u64,
    /// The kernel cgroup's own OOM-kill count over the session, to cross-check `oom_kills`.
    #[serde(default)]
    pub oom_kills_cgroup: Option<u64>,
    #[serde(default)]
    pub oom_events: Vec<OomKill>,
    /// Kernel counters, as volumes (what was mapped, created, exited).
    pub activity: ActivitySummary,
    /// Per process, largest reservation first.
    #[serde(default)]
    pub processes: Vec<ProcessRecord>,
    /// Processes not listed because the table reached its bound.
    #[serde(default)]
    pub processes_not_listed: u64,
    /// Kernel map entries still held for the target at the end (0 when nothing leaks).
    pub kernel_entries_at_end: KernelEntries,
    pub timeline: TimelineExcerpt,
    /// Request and limit with their reasons (see the sizing module).
    #[serde(default)]
    pub recommendation: Option<Recommendation>,
    /// The seed's checklist, answered from this capture.
    #[serde(default)]
    pub checklist: Option<Checklist>,
    /// Who the memory belongs to (node-wide and pod captures).
    #[serde(default)]
    pub attribution: Option<Attribution>,
    /// namespace, pod, container, pod_uid, container_id, qos, workload, spec request/limit.
    #[serde(default)]
    pub kubernetes: Option<KubernetesMeta>,
    /// The language runtime, allocator and memory ceilings of the target's processes, read
    /// from /proc while they ran; absent when none was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSection>,
}

/// The result of `headroom capture`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaptureReport {
    /// Always [`REPORT_SCHEMA`]; readers refuse anything else.
    pub schema: String,
    #[serde(default)]
    pub mode: ReportMode,
    #[serde(default)]
    pub duration_seconds: f64,
    #[serde(default)]
    pub sample_interval_ms: u64,
    #[serde(default)]
    pub targets: Vec<TargetReport>,
    pub drops: DropCounts,
    /// Ring buffer records that failed to decode (a build mismatch; should be 0).
    #[serde(default)]
    pub undecodable_events: u64,
    /// Folded stacks (`root;...;leaf bytes`) for `--folded` and `--flamegraph`; not in the JSON.
    #[serde(skip, default)]
    pub folded_stacks: Vec<String>,
    /// The symbolized stacks for `--pprof`; not in the JSON.
    #[serde(skip, default)]
    pub stack_profile: Option<std::sync::Arc<crate::stacks::StackProfile>>,
}

impl CaptureReport {
    /// A name for each target, for patches and headings.
    pub fn target_name(target: &TargetReport) -> String {
        match (&target.command, &target.cgroup) {
            (Some(command), _) => command.join(" "),
            (None, Some(cgroup)) => cgroup.clone(),
            (None, None) => format!("pid {}", target.pids.first().copied().unwrap_or(0)),
        }
    }
}
