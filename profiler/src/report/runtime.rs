//! What the target's processes run: the language runtime, the allocator, and the memory
//! ceilings they were given, read from /proc while they were alive (sizing reads the ceilings:
//! a JVM's `-Xmx` is memory it will grow into whatever the capture saw it touch).

use serde::{Deserialize, Serialize};

/// A process's language runtime, as detected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    Jvm,
    Go,
    /// Neither a JVM nor Go was detected (C, C++, Rust, or a runtime headroom does not know).
    #[default]
    Native,
}

/// A process's allocator, as detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocatorKind {
    Glibc,
    Jemalloc,
    Mimalloc,
    Tcmalloc,
}

/// The `runtime` section of a target: one entry per process read, those with a ceiling first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeSection {
    pub processes: Vec<ProcessRuntime>,
    /// Processes read but not listed because the list reached its bound.
    pub processes_not_listed: u64,
}

/// What one process runs, and where each fact came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessRuntime {
    pub pid: u32,
    /// argv[0]'s file name.
    pub command: String,
    pub runtime: RuntimeKind,
    /// How the runtime was recognised (`argv[0] is java`); empty for native.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runtime_from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocator: Option<AllocatorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocator_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jvm: Option<JvmSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub go: Option<GoSettings>,
    /// glibc's arena bound (`MALLOC_ARENA_MAX`), where set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malloc_arena_max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malloc_arena_max_from: Option<String>,
    /// The most threads seen in the process's reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_peak: Option<u64>,
    /// What could not be read or parsed, and why: the facts above are then partial (an
    /// unreadable environment is an unknown GOMEMLIMIT, not none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
}

impl ProcessRuntime {
    /// The runtime ceilings this process sets (a JVM max heap, GOMEMLIMIT).
    pub fn has_ceiling(&self) -> bool {
        self.jvm
            .as_ref()
            .is_some_and(|jvm| jvm.max_heap_bytes.is_some())
            || self
                .go
                .as_ref()
                .is_some_and(|go| go.memory_limit_bytes.is_some())
    }
}

/// A JVM's heap settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JvmSettings {
    /// `-Xmx` / `-XX:MaxHeapSize` in bytes, and where it was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_heap_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_heap_from: Option<String>,
    /// `-XX:MaxRAMPercentage` (the JVM uses it only without a max heap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ram_percentage: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ram_percentage_from: Option<String>,
    /// The heap ceiling in force during the capture: the max heap, else MaxRAMPercentage ×
    /// the cgroup's limit then; absent when neither is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heap_ceiling_bytes: Option<u64>,
}

/// A Go program's memory settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GoSettings {
    /// `GOMEMLIMIT` in bytes; absent when unset or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_from: Option<String>,
    /// `GOGC=off`: the heap is collected only as it nears GOMEMLIMIT.
    pub gc_off: bool,
}

super::schema_words!(RuntimeKind {
    Jvm => "jvm",
    Go => "go",
    Native => "native",
});

super::schema_words!(AllocatorKind {
    Glibc => "glibc",
    Jemalloc => "jemalloc",
    Mimalloc => "mimalloc",
    Tcmalloc => "tcmalloc",
});
