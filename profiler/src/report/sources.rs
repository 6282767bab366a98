//! Who made the memory: code paths from sampled stacks and the hidden consumers the seed
//! names (thread stacks, allocator arenas, file mappings, shared memory), and how the stacks
//! were sampled.

use serde::{Deserialize, Serialize};

/// What kind of consumer a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A code path, from sampled stacks.
    CodePath,
    ThreadStacks,
    AllocatorArenas,
    FileMappings,
    SharedMemory,
}

/// What a source's `bytes` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Bytes faulted in by this code path, from byte-weighted samples.
    SampledResident,
    /// Peak resident memory.
    Resident,
    /// Address space only: not charged until touched.
    Reserved,
}

/// One consumer of memory, by kind. `sources` lists them heaviest first by `bytes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemorySource {
    pub kind: SourceKind,
    /// The function for code paths; the allocator for arenas; a description otherwise.
    pub name: String,
    pub measure: Measure,
    #[serde(default)]
    pub bytes: u64,
    /// Address space reserved for it (large mmap/brk for code paths), where known.
    #[serde(default)]
    pub reserved_bytes: Option<u64>,
    /// Innermost frame first (code paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<String>,
}

/// How user stacks are walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unwinding {
    /// In the kernel, through frame pointers (cheap; stops at code built without them).
    FramePointers,
    /// In user space, from a copied stack and each module's `.eh_frame` (complete; costs more).
    EhFrame,
}

/// One stack as the report lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackEntry {
    pub code_path: String,
    #[serde(default)]
    pub resident_bytes: u64,
    #[serde(default)]
    pub reserved_bytes: u64,
    #[serde(default)]
    pub samples: u64,
    /// Innermost first.
    #[serde(default)]
    pub frames: Vec<String>,
}

/// The report's `stacks` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StackSummary {
    pub unwinding: Unwinding,
    #[serde(default)]
    pub fault_sample_bytes: u64,
    #[serde(default)]
    pub reservation_threshold_bytes: u64,
    #[serde(default)]
    pub samples: u64,
    /// Bytes faulted in, as the samples' weights add up (resident memory made).
    #[serde(default)]
    pub sampled_fault_bytes: u64,
    /// Bytes reserved by sampled large mmap/brk calls.
    #[serde(default)]
    pub sampled_reserved_bytes: u64,
    #[serde(default)]
    pub distinct_stacks: u64,
    #[serde(default)]
    pub samples_not_kept: u64,
    #[serde(default)]
    pub samples_without_stack: u64,
    /// Samples whose stack ended within three frames (code without frame pointers).
    #[serde(default)]
    pub shallow_samples: u64,
    /// Frames dropped because they lay outside every known executable mapping of the process
    /// (with the frames found through them), added up over samples: never shown as addresses.
    #[serde(default)]
    pub dropped_frames: u64,
    /// Samples none of whose frames lay in a known executable mapping: in the totals, under no
    /// code path.
    #[serde(default)]
    pub samples_outside_mappings: u64,
    #[serde(default)]
    pub modules_opened: u64,
    /// What the stacks cannot show, and how to get it.
    #[serde(default)]
    pub limits: Vec<String>,
    /// Heaviest stacks by resident bytes made.
    #[serde(default)]
    pub top: Vec<StackEntry>,
}

super::schema_words!(SourceKind {
    CodePath => "code_path",
    ThreadStacks => "thread_stacks",
    AllocatorArenas => "allocator_arenas",
    FileMappings => "file_mappings",
    SharedMemory => "shared_memory",
});

super::schema_words!(Measure {
    SampledResident => "sampled_resident",
    Resident => "resident",
    Reserved => "reserved",
});
