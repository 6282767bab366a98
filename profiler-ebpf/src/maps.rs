//! Every map of the object, with its key and value types and its capacity. The map names are
//! what user space looks the maps up by.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use profiler_common::{
    capacity, drop_reason, MemoryCounters, MmOwner, PendingCall, ProcessCounters, StackSampling,
    WindowKey, WindowPeaks,
};

#[map]
pub(crate) static TARGET_COUNTERS: HashMap<u64, MemoryCounters> =
    HashMap::with_max_entries(capacity::TARGETS, 0);

/// `BPF_F_NO_PREALLOC`: entries are allocated when a process is first seen (a rare event), so
/// a map sized for every task the kernel allows costs only what its live processes use.
const NO_PREALLOC: u32 = aya_ebpf::bindings::BPF_F_NO_PREALLOC;

/// Never LRU (see `capacity::PROCESSES`): an entry leaves at its process's exit.
#[map]
pub(crate) static PROCESS_COUNTERS: HashMap<u32, ProcessCounters> =
    HashMap::with_max_entries(capacity::PROCESSES, NO_PREALLOC);

/// LRU so that an entry whose syscall exit never came (a task killed mid-call) ages out
/// instead of filling the map over the months an agent runs.
#[map]
pub(crate) static PENDING_CALLS: LruHashMap<u64, PendingCall> =
    LruHashMap::with_max_entries(capacity::PENDING_CALLS, 0);

#[map]
pub(crate) static TRACKED_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(capacity::TRACKED_CGROUPS, 0);

/// Followed processes (tgid to target id); forks of a followed process are followed too.
#[map]
pub(crate) static TRACKED_TGIDS: HashMap<u32, u64> =
    HashMap::with_max_entries(capacity::TRACKED_TGIDS, 0);

/// Never LRU: an entry leaves with its process's entry (exit, exec).
#[map]
pub(crate) static MM_OWNERS: HashMap<u32, MmOwner> =
    HashMap::with_max_entries(capacity::MM_OWNERS, NO_PREALLOC);

#[map]
pub(crate) static WINDOW_PEAKS: HashMap<WindowKey, WindowPeaks> =
    HashMap::with_max_entries(capacity::TARGETS * 2, 0);

#[map]
pub(crate) static WINDOW_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU room to build a process entry: it is too large for the 512-byte BPF stack next to
/// everything else a program keeps there.
#[map]
pub(crate) static SCRATCH: PerCpuArray<ProcessCounters> = PerCpuArray::with_max_entries(1, 0);

/// A zeroed target entry to insert from: never written, so it stays all zero, and the 240
/// bytes do not land on the BPF stack (older verifiers count every inlined copy).
#[map]
pub(crate) static ZERO_TARGET: PerCpuArray<MemoryCounters> = PerCpuArray::with_max_entries(1, 0);

/// tgid to the time its exit was reported (see `programs::process`). Entries are never
/// removed: a claim older than a second is stale (the pid was reused), and LRU ages them out.
#[map]
pub(crate) static EXIT_CLAIMS: LruHashMap<u32, u64> =
    LruHashMap::with_max_entries(capacity::EXIT_CLAIMS, 0);

#[map]
pub(crate) static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_reason::COUNT, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

/// Targets whose allocating stacks are sampled, with their settings. Sampling is for capture
/// sessions (standalone or through the agent), never for every container of a node.
#[map]
pub(crate) static SAMPLED_TARGETS: HashMap<u64, StackSampling> =
    HashMap::with_max_entries(capacity::SAMPLED_TARGETS, 0);

/// Slot 0: 1 while `SAMPLED_TARGETS` has entries. An array read is inlined by the verifier, so
/// every page fault of an agent with no session pays for it instead of a hash lookup.
#[map]
pub(crate) static SAMPLING_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
