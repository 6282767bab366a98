//! Wire types shared by headroom's eBPF programs and its user space.
//!
//! Every struct that crosses the kernel/user boundary is `#[repr(C)]`, `Copy`, built only from
//! fixed-width integers (no `bool`, no enums), padded explicitly, aligned to at most 8 bytes, and
//! has its size asserted at compile time. A layout change therefore fails the build on both sides
//! instead of silently misreading a map.
#![no_std]

/// Page size the kernel side rounds mapping lengths to. The kernel rounds `mmap`/`munmap` lengths
/// up to whole pages, so we do the same to report what the address space really grew by.
/// 4 KiB covers x86_64 and the common arm64 configuration.
pub const PAGE_SIZE: u64 = 4096;

/// Names of the programs in the eBPF object, shared so that user space attaches exactly what the
/// kernel side defines.
pub mod program {
    pub const TASK_NEWTASK: &str = "task_newtask";
    pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    pub const CGROUP_ATTACH_TASK: &str = "cgroup_attach_task";
    pub const SYS_ENTER_MMAP: &str = "sys_enter_mmap";
    pub const SYS_EXIT_MMAP: &str = "sys_exit_mmap";
    pub const SYS_ENTER_MUNMAP: &str = "sys_enter_munmap";
    pub const SYS_EXIT_MUNMAP: &str = "sys_exit_munmap";
    pub const SYS_ENTER_MREMAP: &str = "sys_enter_mremap";
    pub const SYS_EXIT_MREMAP: &str = "sys_exit_mremap";
    pub const SYS_ENTER_MPROTECT: &str = "sys_enter_mprotect";
    pub const SYS_EXIT_MPROTECT: &str = "sys_exit_mprotect";
    pub const SYS_EXIT_BRK: &str = "sys_exit_brk";
    pub const RSS_STAT: &str = "rss_stat";
    pub const MARK_VICTIM: &str = "mark_victim";
}

/// Names of the maps in the eBPF object.
pub mod map {
    pub const TARGET_COUNTERS: &str = "TARGET_COUNTERS";
    pub const PROCESS_COUNTERS: &str = "PROCESS_COUNTERS";
    pub const PENDING_CALLS: &str = "PENDING_CALLS";
    pub const TRACKED_CGROUPS: &str = "TRACKED_CGROUPS";
    pub const TRACKED_TGIDS: &str = "TRACKED_TGIDS";
    pub const MM_OWNERS: &str = "MM_OWNERS";
    pub const WINDOW_PEAKS: &str = "WINDOW_PEAKS";
    pub const WINDOW_EPOCH: &str = "WINDOW_EPOCH";
    pub const SCRATCH: &str = "SCRATCH";
    pub const DROPS: &str = "DROPS";
    pub const EVENTS: &str = "EVENTS";
    pub const SAMPLED_TARGETS: &str = "SAMPLED_TARGETS";
    pub const SAMPLING_ACTIVE: &str = "SAMPLING_ACTIVE";
    pub const SNAPSHOT_SCRATCH: &str = "SNAPSHOT_SCRATCH";
    pub const EXIT_CLAIMS: &str = "EXIT_CLAIMS";
}

/// Names of load-time globals (overridden by user space before load).
pub mod global {
    /// `u8`: 1 counts every cgroup (node agent), 0 only tracked cgroups and process trees.
    pub const TRACE_ALL_CGROUPS: &str = "TRACE_ALL_CGROUPS";
    /// `u8`: 1 sends every mapping change (mmap, munmap, mremap, mprotect, brk) through the ring
    /// buffer so user space can keep exact per-region reserved memory (capture sessions).
    pub const TRACK_REGIONS: &str = "TRACK_REGIONS";
    /// `u8`: 1 keeps per-window high-water marks (capture sessions).
    pub const TRACK_WINDOWS: &str = "TRACK_WINDOWS";
    /// `u8`: 1 allows stack snapshots (needs kernel BTF). 0 makes the snapshot code dead for
    /// the verifier, so kernels without BTF load the rest.
    pub const STACK_SNAPSHOTS: &str = "STACK_SNAPSHOTS";
    /// `u8`, one of [`super::exit_mode`]: how the kernel side tells a process's last exiting
    /// thread from the others.
    pub const EXIT_MODE: &str = "EXIT_MODE";
    /// `u32`: offset of `group_dead` in sched_process_exit's record (`exit_mode::GROUP_DEAD_FIELD`).
    pub const EXIT_GROUP_DEAD_OFFSET: &str = "EXIT_GROUP_DEAD_OFFSET";
    /// `u32`: byte offset of `signal` in the kernel's `struct task_struct`, from its BTF
    /// (`exit_mode::SIGNAL_LIVE`).
    pub const TASK_SIGNAL_OFFSET: &str = "TASK_SIGNAL_OFFSET";
    /// `u32`: byte offset of `live` (an `atomic_t`) in `struct signal_struct`, from BTF.
    pub const SIGNAL_LIVE_OFFSET: &str = "SIGNAL_LIVE_OFFSET";
    /// `u32` each: offsets of oom:mark_victim's size fields (in kB), 0 where the kernel's
    /// record has no such field (upstream kernels before 6.9 carry only `pid`).
    pub const OOM_TOTAL_VM_OFFSET: &str = "OOM_TOTAL_VM_OFFSET";
    pub const OOM_ANON_RSS_OFFSET: &str = "OOM_ANON_RSS_OFFSET";
    pub const OOM_FILE_RSS_OFFSET: &str = "OOM_FILE_RSS_OFFSET";
    pub const OOM_SHMEM_RSS_OFFSET: &str = "OOM_SHMEM_RSS_OFFSET";
}

/// How sched_process_exit's program decides that the exiting task is its process's last
/// (values of the `EXIT_MODE` global). The loader picks the first this kernel supports.
pub mod exit_mode {
    /// Neither of the two below: the kernel map's live-thread count of the process where it
    /// saw all of its threads born (`ProcessCounters::tasks_known`), else the exit of the
    /// thread-group leader. Approximate: a leader that exits before its threads ends the
    /// process early.
    pub const LIVE_COUNT: u8 = 0;
    /// The record's own `group_dead` field (Linux 6.16+).
    pub const GROUP_DEAD_FIELD: u8 = 1;
    /// `current->signal->live`, read with `bpf_probe_read_kernel` at offsets user space took
    /// from the kernel's BTF. `do_exit` decrements it before the tracepoint, so the last
    /// thread reads 0 (threads exiting at the same moment may read 0 too: the kernel side
    /// lets only the one that removes the process's entry report the exit).
    pub const SIGNAL_LIVE: u8 = 2;
}

/// Offsets of the tracepoint record fields the programs read at fixed positions. User space
/// checks each one against the kernel's tracefs `format` file before loading (see
/// [`FIXED_FIELDS`]), so a kernel with another layout is refused with the field named, never
/// misread. Fields whose presence or position changed across kernels are load-time globals
/// instead (see [`global`]).
pub mod record {
    pub const SYSCALL_ARGS: [usize; 4] = [16, 24, 32, 40];
    pub const SYSCALL_RET: usize = 16;
    pub const NEWTASK_PID: usize = 8;
    pub const NEWTASK_CLONE_FLAGS: usize = 32;
    pub const EXEC_PID: usize = 12;
    pub const ATTACH_DST_ROOT: usize = 8;
    pub const ATTACH_DST_ID: usize = 16;
    pub const ATTACH_PID: usize = 24;
    pub const RSS_MM_ID: usize = 8;
    pub const RSS_CURR: usize = 12;
    pub const RSS_MEMBER: usize = 16;
    pub const RSS_SIZE: usize = 24;
    pub const VICTIM_PID: usize = 8;
}

/// A tracepoint record field read at a fixed offset: (category, event, field, offset, size).
pub type FixedField = (&'static str, &'static str, &'static str, usize, usize);

/// Every field the programs read at a fixed offset, for the loader to check against tracefs.
/// (The syscall records' argument names differ per syscall; their positions are the ABI.)
pub const FIXED_FIELDS: [FixedField; 29] = [
    ("task", "task_newtask", "pid", record::NEWTASK_PID, 4),
    (
        "task",
        "task_newtask",
        "clone_flags",
        record::NEWTASK_CLONE_FLAGS,
        8,
    ),
    ("sched", "sched_process_exec", "pid", record::EXEC_PID, 4),
    (
        "cgroup",
        "cgroup_attach_task",
        "dst_root",
        record::ATTACH_DST_ROOT,
        4,
    ),
    (
        "cgroup",
        "cgroup_attach_task",
        "dst_id",
        record::ATTACH_DST_ID,
        8,
    ),
    ("cgroup", "cgroup_attach_task", "pid", record::ATTACH_PID, 4),
    ("kmem", "rss_stat", "mm_id", record::RSS_MM_ID, 4),
    ("kmem", "rss_stat", "curr", record::RSS_CURR, 4),
    ("kmem", "rss_stat", "member", record::RSS_MEMBER, 4),
    ("kmem", "rss_stat", "size", record::RSS_SIZE, 8),
    ("oom", "mark_victim", "pid", record::VICTIM_PID, 4),
    (
        "syscalls",
        "sys_enter_mmap",
        "addr",
        record::SYSCALL_ARGS[0],
        8,
    ),
    (
        "syscalls",
        "sys_enter_mmap",
        "len",
        record::SYSCALL_ARGS[1],
        8,
    ),
    (
        "syscalls",
        "sys_enter_mmap",
        "prot",
        record::SYSCALL_ARGS[2],
        8,
    ),
    (
        "syscalls",
        "sys_enter_mmap",
        "flags",
        record::SYSCALL_ARGS[3],
        8,
    ),
    ("syscalls", "sys_exit_mmap", "ret", record::SYSCALL_RET, 8),
    (
        "syscalls",
        "sys_enter_munmap",
        "addr",
        record::SYSCALL_ARGS[0],
        8,
    ),
    (
        "syscalls",
        "sys_enter_munmap",
        "len",
        record::SYSCALL_ARGS[1],
        8,
    ),
    ("syscalls", "sys_exit_munmap", "ret", record::SYSCALL_RET, 8),
    (
        "syscalls",
        "sys_enter_mremap",
        "addr",
        record::SYSCALL_ARGS[0],
        8,
    ),
    (
        "syscalls",
        "sys_enter_mremap",
        "old_len",
        record::SYSCALL_ARGS[1],
        8,
    ),
    (
        "syscalls",
        "sys_enter_mremap",
        "new_len",
        record::SYSCALL_ARGS[2],
        8,
    ),
    (
        "syscalls",
        "sys_enter_mremap",
        "flags",
        record::SYSCALL_ARGS[3],
        8,
    ),
    ("syscalls", "sys_exit_mremap", "ret", record::SYSCALL_RET, 8),
    (
        "syscalls",
        "sys_enter_mprotect",
        "start",
        record::SYSCALL_ARGS[0],
        8,
    ),
    (
        "syscalls",
        "sys_enter_mprotect",
        "len",
        record::SYSCALL_ARGS[1],
        8,
    ),
    (
        "syscalls",
        "sys_enter_mprotect",
        "prot",
        record::SYSCALL_ARGS[2],
        8,
    ),
    (
        "syscalls",
        "sys_exit_mprotect",
        "ret",
        record::SYSCALL_RET,
        8,
    ),
    ("syscalls", "sys_exit_brk", "ret", record::SYSCALL_RET, 8),
];

/// Default map sizes. User space may override them at load time; each one bounds kernel memory.
pub mod capacity {
    /// Targets (cgroups or process trees) counted at once.
    pub const TARGETS: u32 = 4096;
    /// Most processes counted at once; the loader lowers it to the kernel's own limit on tasks
    /// (`kernel.pid_max`, `kernel.threads-max`) where that is smaller, so on most nodes every
    /// process fits. A plain hash map without preallocation, never LRU: kernel memory for live
    /// entries only (plus 16 bytes a bucket), and no live process is ever evicted (an evicted
    /// process's memory stayed in its target's sums and came back at its next page fault). A
    /// process past it is not counted, and that is a `process_map_full` drop.
    pub const PROCESSES: u32 = 131_072;
    /// Syscalls in flight between entry and exit (one per thread at most). LRU.
    pub const PENDING_CALLS: u32 = 8192;
    /// Cgroups a capture session can select.
    pub const TRACKED_CGROUPS: u32 = 1024;
    /// Processes a `--pid` capture follows (the root and its descendants).
    pub const TRACKED_TGIDS: u32 = 16384;
    /// mm_id to process, for rss_stat events raised outside the process (reclaim). One per
    /// counted process at most: sized and allocated like `PROCESSES`.
    pub const MM_OWNERS: u32 = PROCESSES;
    /// Ring buffer for process, mapping, OOM and stack-sample events. Power of two, multiple of
    /// the page size.
    pub const EVENTS_BYTES: u32 = 4 * 1024 * 1024;
    /// Targets with stack sampling switched on at once (capture sessions, agent sessions).
    pub const SAMPLED_TARGETS: u32 = 64;
    /// Processes whose exit was reported in the last second (to report each once where
    /// several of its threads can look like the last: see `exit_mode::SIGNAL_LIVE`). LRU.
    pub const EXIT_CLAIMS: u32 = 1024;
}

/// Why an event or an update was lost. Indexes the per-CPU `DROPS` array.
pub mod drop_reason {
    /// The ring buffer had no room for an event.
    pub const RINGBUF_FULL: u32 = 0;
    /// `PENDING_CALLS` insert failed, so one syscall was not counted.
    pub const PENDING_CALLS_FULL: u32 = 1;
    /// `TARGET_COUNTERS` was full, so a new target got no counters.
    pub const TARGET_MAP_FULL: u32 = 2;
    /// `PROCESS_COUNTERS` insert failed.
    pub const PROCESS_MAP_FULL: u32 = 3;
    /// `TRACKED_TGIDS` was full, so a child of a followed process is not followed.
    pub const TRACKED_TGIDS_FULL: u32 = 4;
    /// A stack sample could not be taken (`bpf_get_stack` failed); its bytes go unattributed.
    pub const STACK_UNAVAILABLE: u32 = 5;
    /// Number of reasons; the size of the `DROPS` array.
    pub const COUNT: u32 = 6;
}

/// What kind of address space an `mmap` reserved. Indexes `MemoryCounters::mmap_bytes`.
pub mod mapping_kind {
    /// Private anonymous memory that is accessible (heap-like: malloc's large blocks, JIT heaps).
    pub const ANONYMOUS: usize = 0;
    /// Backed by a file (shared libraries, mapped data files).
    pub const FILE: usize = 1;
    /// Thread stacks (`MAP_STACK`: glibc and musl mark pthread stacks with it).
    pub const STACK: usize = 2;
    /// `MAP_SHARED` anonymous memory (shared with children, shm-like).
    pub const SHARED: usize = 3;
    /// Reserved but not accessible yet: `PROT_NONE` or `MAP_NORESERVE` (malloc arenas, guard
    /// regions, JVM/Go heap reservations). Counts toward address space, not toward the charge.
    pub const NO_ACCESS: usize = 4;
    /// Number of kinds.
    pub const COUNT: usize = 5;
    /// Human names, indexed by kind.
    pub const NAMES: [&str; COUNT] = ["anonymous", "file", "stack", "shared", "no_access"];
}

/// Members of the kernel's per-mm RSS counters (`kmem:rss_stat`'s `member`).
pub mod rss_member {
    pub const FILE: usize = 0;
    pub const ANON: usize = 1;
    pub const SWAP: usize = 2;
    pub const SHMEM: usize = 3;
    pub const COUNT: usize = 4;
}

/// `mmap` flag and protection bits the classifier needs (Linux UAPI values, same on every
/// architecture headroom supports).
pub mod mmap_bits {
    pub const PROT_NONE: u64 = 0;
    pub const MAP_SHARED: u64 = 0x01;
    pub const MAP_FIXED: u64 = 0x10;
    pub const MAP_ANONYMOUS: u64 = 0x20;
    pub const MAP_NORESERVE: u64 = 0x4000;
    pub const MAP_STACK: u64 = 0x20000;
    /// mremap: the mapping may move.
    pub const MREMAP_MAYMOVE: u64 = 1;
    /// mremap: keep the old mapping (Linux 5.7+).
    pub const MREMAP_DONTUNMAP: u64 = 4;
}

/// `clone` flag that marks a new thread (as opposed to a new process).
pub const CLONE_THREAD: u64 = 0x0001_0000;
/// `clone` flag: the child runs on its parent's address space (vfork, posix_spawn).
pub const CLONE_VM: u64 = 0x0000_0100;

/// Classifies one successful `mmap` by its protection and flags. Kept here, in plain Rust, so
/// that the exact same rule runs in the kernel and in unit tests.
#[inline(always)]
pub fn classify_mmap(prot: u64, flags: u64) -> usize {
    use mmap_bits::*;
    // Order matters: glibc reserves thread stacks PROT_NONE with MAP_STACK and mprotects them
    // afterwards, so MAP_STACK wins over PROT_NONE.
    if flags & MAP_STACK != 0 {
        mapping_kind::STACK
    } else if flags & MAP_ANONYMOUS == 0 {
        mapping_kind::FILE
    } else if flags & MAP_SHARED != 0 {
        // MAP_SHARED (0x1) and MAP_SHARED_VALIDATE (0x3) both have the low bit; MAP_PRIVATE is 0x2.
        mapping_kind::SHARED
    } else if prot == PROT_NONE || flags & MAP_NORESERVE != 0 {
        mapping_kind::NO_ACCESS
    } else {
        mapping_kind::ANONYMOUS
    }
}

/// Rounds a byte length up to whole pages, saturating instead of overflowing.
#[inline(always)]
pub fn page_round_up(len: u64) -> u64 {
    match len.checked_add(PAGE_SIZE - 1) {
        Some(padded) => padded & !(PAGE_SIZE - 1),
        None => !(PAGE_SIZE - 1),
    }
}

/// Counters kept in the kernel, per target (cgroup or process tree) and per process. Updated
/// with atomic instructions where two CPUs can race; read by user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryCounters {
    /// Successful `mmap` calls.
    pub mmap_calls: u64,
    /// `mmap` calls that returned an error.
    pub mmap_failures: u64,
    /// Bytes reserved by successful `mmap`, page-rounded, indexed by [`mapping_kind`]. A volume
    /// (what was mapped), not the live size: user space keeps the live size per region.
    pub mmap_bytes: [u64; mapping_kind::COUNT],
    /// Successful `munmap` calls.
    pub munmap_calls: u64,
    /// Bytes successfully asked to be unmapped, page-rounded.
    pub munmap_bytes: u64,
    /// Successful `mremap` and `mprotect` calls.
    pub mremap_calls: u64,
    pub mprotect_calls: u64,
    /// `brk` calls.
    pub brk_calls: u64,
    /// Bytes the program break moved up.
    pub brk_grown_bytes: u64,
    /// Bytes the program break moved down.
    pub brk_shrunk_bytes: u64,
    /// Threads created (`clone` with `CLONE_THREAD`).
    pub threads_created: u64,
    /// Processes created (`fork`, `vfork`, `clone` without `CLONE_THREAD`).
    pub processes_created: u64,
    /// Tasks moved into the target.
    pub tasks_attached: u64,
    /// Tasks (threads, main threads included) that exited.
    pub tasks_exited: u64,
    /// Processes whose last thread exited.
    pub processes_exited: u64,
    /// Successful `execve` calls.
    pub execs: u64,
    /// Tasks created or attached minus tasks exited since tracking began. User space adds the
    /// number present when tracking began. Signed: a task present before tracking can exit.
    pub live_tasks: i64,
    /// Highest `live_tasks` seen.
    pub peak_live_tasks: i64,
    /// Resident bytes now, by [`rss_member`], summed over the processes (from rss_stat).
    pub rss_bytes: [i64; rss_member::COUNT],
    /// Highest resident total (file + anon + shmem) seen.
    pub resident_peak_bytes: u64,
    /// Highest anon resident seen.
    pub anon_peak_bytes: u64,
    /// Highest file + shmem resident seen.
    pub file_peak_bytes: u64,
    /// OOM kills of processes of this target (oom:mark_victim).
    pub oom_kills: u64,
}

const _: () = assert!(core::mem::size_of::<MemoryCounters>() == 30 * 8);
const _: () = assert!(core::mem::align_of::<MemoryCounters>() == 8);

impl MemoryCounters {
    /// Resident total as the kernel charges it to RSS: file + anon + shmem (swap excluded).
    pub fn resident_bytes(&self) -> i64 {
        self.rss_bytes[rss_member::FILE]
            + self.rss_bytes[rss_member::ANON]
            + self.rss_bytes[rss_member::SHMEM]
    }
}

/// Bits of [`ProcessCounters::inherited`].
pub mod inherited {
    /// The process runs on an address space it did not build, until its exec.
    pub const ADDRESS_SPACE: u32 = 1;

    /// The inherited size of RSS counter `member` is known (taken at its first event).
    pub const fn size_known(member: usize) -> u32 {
        2 << member
    }

    /// Born with `CLONE_VM`: until its exec the process runs on its parent's address space,
    /// whose events belong to the parent. (Only such a process is matched to another's
    /// address space by the mm_id hash, so a hash collision cannot move memory.)
    pub const SHARED_WITH_PARENT: u32 = 2 << 5;
}

/// Per-process state kept in the kernel (LRU map keyed by tgid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessCounters {
    pub counters: MemoryCounters,
    /// Target (cgroup id, or process-tree id) the process is counted in.
    pub target_id: u64,
    /// Program break at the first `brk` seen since the last exec (0 = none seen yet).
    pub brk_start: u64,
    /// Program break after the last `brk`.
    pub brk_current: u64,
    /// Highest program break seen since the last exec.
    pub brk_highest: u64,
    /// `bpf_ktime_get_ns` when the entry was created.
    pub first_seen_ns: u64,
    /// 1 when the entry was created at the process's birth or arrival in a tracked target, so
    /// `live_tasks` counts all of its threads; 0 when it was already running.
    pub tasks_known: u32,
    /// The kernel's mm_id hash of the process's address space (0 until its first rss_stat).
    pub mm_id: u32,
    /// Resident bytes faulted in since this process's last stack sample (byte-weighted page
    /// fault sampling; only moves while its target is sampled).
    pub fault_sample_credit: u64,
    /// [`inherited`] bits: whether the process runs on an address space it did not build (a
    /// fork child, or a process that moved itself into the target, before its exec), and for
    /// which RSS counters the inherited size is known.
    pub inherited: u32,
    /// 1 once the process's exit has taken its resident memory out of its target's sums (the
    /// entry is about to go). An rss_stat update racing with that exit on another CPU checks
    /// it after its own exchange and takes back what it added (see `programs::memory`).
    pub released: u32,
    /// Resident bytes by [`rss_member`] that the address space had when the process was first
    /// seen on it: pages shared copy-on-write with the parent (or charged where the process
    /// came from), not added to the target's sums. Only the growth beyond them is.
    pub inherited_rss: [i64; rss_member::COUNT],
}

const _: () = assert!(core::mem::size_of::<ProcessCounters>() == 30 * 8 + 12 * 8);
const _: () = assert!(core::mem::align_of::<ProcessCounters>() == 8);

/// Which syscall a [`PendingCall`] belongs to.
pub mod call_kind {
    pub const MMAP: u32 = 1;
    pub const MUNMAP: u32 = 2;
    pub const MREMAP: u32 = 3;
    pub const MPROTECT: u32 = 4;
}

/// Arguments of a mapping syscall between entry and exit, keyed by pid_tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingCall {
    /// One of [`call_kind`].
    pub kind: u32,
    pub _pad: u32,
    pub target_id: u64,
    /// mmap: addr, len, prot, flags. munmap: addr, len. mremap: old addr, old len, new len,
    /// flags. mprotect: addr, len, prot.
    pub args: [u64; 4],
}

const _: () = assert!(core::mem::size_of::<PendingCall>() == 48);

/// Who an mm belongs to, learned from rss_stat events raised by the process itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmOwner {
    pub tgid: u32,
    pub _pad: u32,
    pub target_id: u64,
}

const _: () = assert!(core::mem::size_of::<MmOwner>() == 16);

/// Key of `WINDOW_PEAKS`: a target and the parity of the window epoch. User space flips the
/// epoch at each timeline bucket, then reads and clears the slot the kernel stopped writing,
/// so no update is lost between a read and a reset.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowKey {
    pub target_id: u64,
    pub slot: u64,
}

const _: () = assert!(core::mem::size_of::<WindowKey>() == 16);

/// High-water marks within one timeline window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowPeaks {
    pub resident_peak_bytes: u64,
    pub anon_peak_bytes: u64,
    pub file_peak_bytes: u64,
    pub live_tasks_peak: i64,
    /// The window (epoch) these marks belong to. A program that read the epoch just before
    /// user space closed that window can re-create its slot after user space removed it; two
    /// windows later the slot is in use again, and the stale marks are told apart by this.
    pub epoch: u64,
}

const _: () = assert!(core::mem::size_of::<WindowPeaks>() == 40);

/// Kinds of ring-buffer event.
pub mod event_kind {
    /// A process was born in, or moved into, a tracked target.
    pub const PROCESS_START: u32 = 1;
    /// A process's last thread exited; carries its final counters.
    pub const PROCESS_EXIT: u32 = 2;
    /// A mapping changed (only with `TRACK_REGIONS`).
    pub const MAPPING: u32 = 3;
    /// The OOM killer chose a victim.
    pub const OOM_VICTIM: u32 = 4;
    /// A user stack where memory was made (sampled page faults, large reservations).
    pub const STACK_SAMPLE: u32 = 5;
}

/// Header shared by every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`event_kind`].
    pub kind: u32,
    /// Process id (thread-group id) the event is about.
    pub tgid: u32,
    /// Target (cgroup id or process-tree id) of the process; 0 when unknown.
    pub target_id: u64,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the event happened.
    pub timestamp_ns: u64,
}

const _: () = assert!(core::mem::size_of::<EventHeader>() == 24);

/// `event_kind::PROCESS_START`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessStartEvent {
    pub header: EventHeader,
    /// The process that created it (0 when it arrived by cgroup migration).
    pub parent_tgid: u32,
    pub _pad: u32,
    /// Command name at the time (NUL-padded; the parent's name right after fork).
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ProcessStartEvent>() == 48);

/// `event_kind::PROCESS_EXIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessExitEvent {
    pub header: EventHeader,
    /// Final counters of the process.
    pub process: ProcessCounters,
    /// Command name at exit (NUL-padded).
    pub comm: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<ProcessExitEvent>() == 24 + 336 + 16);

/// Operations of a [`MappingEvent`].
pub mod mapping_op {
    /// mmap succeeded: `addr`, `len`, `prot`, `flags`.
    pub const MAP: u32 = 1;
    /// munmap succeeded: `addr`, `len`.
    pub const UNMAP: u32 = 2;
    /// mremap succeeded: `addr`/`len` old, `new_addr`/`new_len` new, `flags`.
    pub const REMAP: u32 = 3;
    /// mprotect succeeded: `addr`, `len`, `prot`.
    pub const PROTECT: u32 = 4;
    /// brk returned: `addr` is the new program break.
    pub const BRK: u32 = 5;
    /// execve succeeded: the old address space is gone.
    pub const EXEC: u32 = 6;
}

/// `event_kind::MAPPING`: one change to a process's address space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MappingEvent {
    pub header: EventHeader,
    /// One of [`mapping_op`].
    pub op: u32,
    pub prot: u32,
    pub flags: u64,
    pub addr: u64,
    pub len: u64,
    pub new_addr: u64,
    pub new_len: u64,
}

const _: () = assert!(core::mem::size_of::<MappingEvent>() == 72);

/// Bits of [`OomVictimEvent::details`].
pub mod oom_details {
    /// The size fields were in the kernel's record (`total_vm_bytes` .. `shmem_rss_bytes`).
    /// Without it they are 0 and mean "unknown".
    pub const SIZES: u32 = 1;
}

/// `event_kind::OOM_VICTIM`: from oom:mark_victim.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomVictimEvent {
    pub header: EventHeader,
    /// Address space size and resident memory of the victim at the kill, in bytes (0 unless
    /// `details` has [`oom_details::SIZES`]).
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    /// Which of the fields above the kernel's record had ([`oom_details`] bits).
    pub details: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<OomVictimEvent>() == 64);

/// Deepest user stack a sample carries (the kernel's `PERF_MAX_STACK_DEPTH`).
pub const MAX_STACK_FRAMES: usize = 127;

/// Bytes of raw user stack a sample copies for `.eh_frame` unwinding in user space.
pub const STACK_SNAPSHOT_BYTES: usize = 8192;

/// What made the memory a stack sample is weighted by.
pub mod stack_source {
    /// Page faults: bytes that became resident (byte-weighted sampling of `kmem:rss_stat`).
    pub const FAULT: u32 = 1;
    /// One `mmap` at or above the reservation threshold: bytes reserved.
    pub const MMAP: u32 = 2;
    /// One `brk` growth at or above the reservation threshold: bytes reserved.
    pub const BRK: u32 = 3;
    /// Human names, indexed by source.
    pub const NAMES: [&str; 4] = ["unknown", "fault", "mmap", "brk"];
}

/// Stack sampling settings of one target (value of the `SAMPLED_TARGETS` map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackSampling {
    /// One sample per this many bytes faulted in, per process (0 = no fault sampling).
    pub fault_sample_bytes: u64,
    /// Every `mmap`/`brk` growth of at least this many bytes is sampled (0 = none).
    pub reservation_threshold_bytes: u64,
    /// 1: also copy registers and [`STACK_SNAPSHOT_BYTES`] of raw stack, for `.eh_frame`
    /// unwinding in user space.
    pub snapshot: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<StackSampling>() == 24);

/// `event_kind::STACK_SAMPLE`: one user stack and the bytes it stands for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSampleEvent {
    pub header: EventHeader,
    /// Bytes this sample stands for (faulted in since the process's last sample, or reserved).
    pub bytes: u64,
    /// Start of the reservation for `MMAP`/`BRK` samples; 0 for faults.
    pub address: u64,
    /// One of [`stack_source`].
    pub source: u32,
    /// For `MMAP` samples the [`mapping_kind`]; for faults the [`rss_member`] that grew.
    pub detail: u32,
    /// Valid entries of `frames` (0 when the kernel could not walk the stack).
    pub frame_count: u32,
    /// Bytes of `snapshot` that are valid (0 without snapshots).
    pub snapshot_len: u32,
    /// User registers at the sample, for `.eh_frame` unwinding (0 without snapshots).
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Return addresses walked by the kernel through frame pointers, innermost first.
    pub frames: [u64; MAX_STACK_FRAMES],
}

const _: () = assert!(
    core::mem::size_of::<StackSampleEvent>() == 24 + 8 + 8 + 16 + 24 + MAX_STACK_FRAMES * 8
);
const _: () = assert!(core::mem::align_of::<StackSampleEvent>() == 8);

/// A [`StackSampleEvent`] followed by a raw copy of the user stack from `sp` up.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSnapshotEvent {
    pub sample: StackSampleEvent,
    pub snapshot: [u8; STACK_SNAPSHOT_BYTES],
}

const _: () = assert!(
    core::mem::size_of::<StackSnapshotEvent>()
        == core::mem::size_of::<StackSampleEvent>() + STACK_SNAPSHOT_BYTES
);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type below is #[repr(C)], Copy, made only of fixed-width integers and arrays
    // of them with explicit padding fields, so any bit pattern is a valid value.
    unsafe impl aya::Pod for super::MemoryCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingCall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MmOwner {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WindowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::WindowPeaks {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MappingEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomVictimEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessStartEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessExitEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackSampling {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackSampleEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::StackSnapshotEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_thread_stack_is_a_stack_even_while_prot_none() {
        // glibc allocate_stack: PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK.
        assert_eq!(classify_mmap(0, 0x20022), mapping_kind::STACK);
    }

    #[test]
    fn glibc_malloc_arena_reservation_is_no_access() {
        // glibc new_heap: PROT_NONE, MAP_NORESERVE|MAP_ANONYMOUS|MAP_PRIVATE (0x4022).
        assert_eq!(classify_mmap(0, 0x4022), mapping_kind::NO_ACCESS);
    }

    #[test]
    fn private_anonymous_read_write_is_anonymous() {
        assert_eq!(classify_mmap(0x3, 0x22), mapping_kind::ANONYMOUS);
    }

    #[test]
    fn file_mapping_is_file_even_when_shared_or_prot_none() {
        assert_eq!(classify_mmap(0x1, 0x02), mapping_kind::FILE);
        assert_eq!(classify_mmap(0x3, 0x01), mapping_kind::FILE);
        assert_eq!(classify_mmap(0x0, 0x02), mapping_kind::FILE);
    }

    #[test]
    fn shared_anonymous_is_shared() {
        assert_eq!(classify_mmap(0x3, 0x21), mapping_kind::SHARED);
        assert_eq!(classify_mmap(0x3, 0x23), mapping_kind::SHARED);
    }

    #[test]
    fn page_rounding() {
        assert_eq!(page_round_up(0), 0);
        assert_eq!(page_round_up(1), 4096);
        assert_eq!(page_round_up(4096), 4096);
        assert_eq!(page_round_up(4097), 8192);
        assert_eq!(page_round_up(u64::MAX), !4095);
    }
}
