//! headroom's kernel side.
//!
//! Every program is a thin tracepoint entry that calls a `try_*` function. High-rate events
//! (page faults seen through rss_stat, thread creation and exit) only update counters and
//! high-water marks in kernel maps, with atomic instructions where CPUs can race; user space
//! reads the maps when it needs figures, so no peak is lost between reads. The ring buffer
//! carries process start/exit, OOM kills and, for capture sessions only, mapping changes (so
//! user space can keep exact per-region reserved memory). Every event that does not fit is
//! counted in `DROPS`.
//!
//! What is traced: processes in a tracked cgroup (`TRACKED_CGROUPS`, or every cgroup with
//! `TRACE_ALL_CGROUPS`), and process trees followed from a root pid (`TRACKED_TGIDS`). Counters
//! are kept per *target*: the cgroup id, or the id user space gave the process tree.
#![no_std]
#![no_main]
// The BPF target has no `Atomic*` read-modify-write methods in core; the intrinsics lower to
// BPF atomic instructions: add (BPF_XADD), exchange and compare-exchange (Linux 5.12+).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic intrinsics are the only way to emit BPF atomics from Rust"
)]

use core::intrinsics::{atomic_cxchg, atomic_xadd, atomic_xchg, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_NOEXIST},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task_btf, bpf_get_stack, bpf_probe_read_kernel, bpf_probe_read_user,
            bpf_task_pt_regs,
        },
    },
    macros::{map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use profiler_common::{
    call_kind, capacity, classify_mmap, drop_reason, event_kind, mapping_kind, mapping_op,
    page_round_up, rss_member, stack_source, EventHeader, MappingEvent, MemoryCounters, MmOwner,
    OomVictimEvent, PendingCall, ProcessCounters, ProcessExitEvent, ProcessStartEvent,
    StackSampleEvent, StackSampling, StackSnapshotEvent, WindowKey, WindowPeaks, CLONE_THREAD,
    MAX_STACK_FRAMES, STACK_SNAPSHOT_BYTES,
};

/// 1: count every cgroup (node agent). 0: only tracked cgroups and process trees.
/// Overridden by the loader; read with `read_volatile` so the compiler cannot fold it.
#[no_mangle]
static TRACE_ALL_CGROUPS: u8 = 0;

/// 1: send mapping changes through the ring buffer (capture sessions).
#[no_mangle]
static TRACK_REGIONS: u8 = 0;

/// 1: keep per-window high-water marks (capture sessions read and reset them every bucket).
/// The agent reads lifetime marks only, and skips the work on every page fault.
#[no_mangle]
static TRACK_WINDOWS: u8 = 0;

/// 1: stack snapshots for `.eh_frame` unwinding may be taken (the loader sets it only where
/// the kernel has BTF: bpf_get_current_task_btf needs it). A read-only constant at load, so
/// with 0 the verifier prunes the snapshot code and BTF-less kernels load the rest.
#[no_mangle]
static STACK_SNAPSHOTS: u8 = 0;

#[map]
static TARGET_COUNTERS: HashMap<u64, MemoryCounters> =
    HashMap::with_max_entries(capacity::TARGETS, 0);

#[map]
static PROCESS_COUNTERS: LruHashMap<u32, ProcessCounters> =
    LruHashMap::with_max_entries(capacity::PROCESSES, 0);

/// LRU so that an entry whose syscall exit never came (a task killed mid-call) ages out
/// instead of filling the map over the months an agent runs.
#[map]
static PENDING_CALLS: LruHashMap<u64, PendingCall> =
    LruHashMap::with_max_entries(capacity::PENDING_CALLS, 0);

#[map]
static TRACKED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(capacity::TRACKED_CGROUPS, 0);

/// Followed processes (tgid to target id); forks of a followed process are followed too.
#[map]
static TRACKED_TGIDS: HashMap<u32, u64> = HashMap::with_max_entries(capacity::TRACKED_TGIDS, 0);

#[map]
static MM_OWNERS: LruHashMap<u32, MmOwner> = LruHashMap::with_max_entries(capacity::MM_OWNERS, 0);

#[map]
static WINDOW_PEAKS: HashMap<WindowKey, WindowPeaks> =
    HashMap::with_max_entries(capacity::TARGETS * 2, 0);

#[map]
static WINDOW_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// Per-CPU room to build a process entry: it is too large for the 512-byte BPF stack next to
/// everything else a program keeps there.
#[map]
static SCRATCH: PerCpuArray<ProcessCounters> = PerCpuArray::with_max_entries(1, 0);

#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_reason::COUNT, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

/// Targets whose allocating stacks are sampled, with their settings. Sampling is for capture
/// sessions (standalone or through the agent), never for every container of a node.
#[map]
static SAMPLED_TARGETS: HashMap<u64, StackSampling> =
    HashMap::with_max_entries(capacity::SAMPLED_TARGETS, 0);

/// Slot 0: 1 while `SAMPLED_TARGETS` has entries. An array read is inlined by the verifier, so
/// every page fault of an agent with no session pays for it instead of a hash lookup.
#[map]
static SAMPLING_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

// x86_64 `struct pt_regs` offsets (bp, ip, sp), for stack snapshots.
const PT_REGS_BP: usize = 4 * 8;
const PT_REGS_IP: usize = 16 * 8;
const PT_REGS_SP: usize = 19 * 8;

// Tracepoint field offsets, read off /sys/kernel/tracing/events/*/*/format. These records are
// stable ABI for syscalls:* and have been stable for years for the others.
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const PROCESS_EXIT_GROUP_DEAD: usize = 32;
const PROCESS_EXEC_PID: usize = 12;
const ATTACH_DST_ROOT: usize = 8;
const ATTACH_DST_ID: usize = 16;
const ATTACH_PID: usize = 24;
const RSS_MM_ID: usize = 8;
const RSS_CURR: usize = 12;
const RSS_MEMBER: usize = 16;
const RSS_SIZE: usize = 24;
const VICTIM_PID: usize = 8;
const VICTIM_TOTAL_VM_KB: usize = 16;
const VICTIM_ANON_RSS_KB: usize = 24;
const VICTIM_FILE_RSS_KB: usize = 32;
const VICTIM_SHMEM_RSS_KB: usize = 40;
const SYSCALL_ARG: [usize; 4] = [16, 24, 32, 40];
const SYSCALL_RET: usize = 16;

/// cgroup v2's hierarchy id. cgroup_attach_task also fires for v1 hierarchies, whose ids live
/// in another namespace and would collide.
const CGROUP2_HIERARCHY_ID: i32 = 0;

/// Largest errno a syscall returns as a negative value.
const MAX_ERRNO: i64 = 4095;

/// Compare-exchange retries before a high-water mark update gives up (only under contention
/// far beyond anything measured; the next update raises it anyway).
const RAISE_RETRIES: u32 = 8;

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
fn current_cgroup_id() -> u64 {
    // SAFETY: a plain BPF helper call with no arguments; available to tracepoint programs.
    unsafe { bpf_get_current_cgroup_id() }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a plain BPF helper call with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn flag_set(flag: &'static u8) -> bool {
    // SAFETY: reading a static the loader may have rewritten; volatile so it is really read.
    unsafe { core::ptr::read_volatile(flag) != 0 }
}

/// The target a process is counted in, if it is traced at all.
#[inline(always)]
fn target_of(tgid: u32, cgroup_id: u64) -> Option<u64> {
    if let Some(target) = TRACKED_TGIDS.get_ptr(tgid) {
        // SAFETY: map value pointer from a successful lookup.
        return Some(unsafe { *target });
    }
    if flag_set(&TRACE_ALL_CGROUPS) || TRACKED_CGROUPS.get_ptr(cgroup_id).is_some() {
        return Some(cgroup_id);
    }
    None
}

#[inline(always)]
fn current_target() -> Option<(u32, u64)> {
    let tgid = current_tgid();
    target_of(tgid, current_cgroup_id()).map(|target| (tgid, target))
}

#[inline(always)]
fn count_drop(reason: u32) {
    if let Some(slot) = DROPS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and the pointer comes from the map.
        unsafe { *slot += 1 };
    }
}

/// Adds to a counter that another CPU may update at the same time.
#[inline(always)]
fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points into a map value that lives as long as the map, aligned to 8.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// Adds to a signed counter and returns a value it had after the addition. (A fetch-add that
/// returns the old value needs BPF cpu v3 from LLVM; the read-back may include another CPU's
/// concurrent addition, which is still a value the counter really reached.)
#[inline(always)]
fn add_signed(counter: *mut i64, value: i64) -> i64 {
    // SAFETY: as in `add`.
    unsafe {
        atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(counter, value);
        core::ptr::read_volatile(counter)
    }
}

/// Raises a high-water mark to `value` if it is higher, exactly under concurrency.
#[inline(always)]
fn raise(mark: *mut u64, value: u64) {
    // SAFETY: `mark` points into a map value, aligned to 8.
    let mut seen = unsafe { core::ptr::read_volatile(mark) };
    for _ in 0..RAISE_RETRIES {
        if value <= seen {
            return;
        }
        // SAFETY: as above.
        let (previous, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                mark, seen, value,
            )
        };
        if swapped {
            return;
        }
        seen = previous;
    }
}

#[inline(always)]
fn raise_signed(mark: *mut i64, value: i64) {
    // SAFETY: `mark` points into a map value, aligned to 8.
    let mut seen = unsafe { core::ptr::read_volatile(mark) };
    for _ in 0..RAISE_RETRIES {
        if value <= seen {
            return;
        }
        // SAFETY: as above.
        let (previous, swapped) = unsafe {
            atomic_cxchg::<i64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                mark, seen, value,
            )
        };
        if swapped {
            return;
        }
        seen = previous;
    }
}

fn positive(value: i64) -> u64 {
    if value > 0 {
        value as u64
    } else {
        0
    }
}

/// The counters of a target, created zeroed on first sight.
#[inline(always)]
fn target_counters(target_id: u64) -> Option<*mut MemoryCounters> {
    if let Some(counters) = TARGET_COUNTERS.get_ptr_mut(target_id) {
        return Some(counters);
    }
    let zero = MemoryCounters::default();
    // NOEXIST: another CPU may have created it in the meantime; then we use theirs.
    if TARGET_COUNTERS
        .insert(target_id, zero, BPF_NOEXIST as u64)
        .is_err()
        && TARGET_COUNTERS.get_ptr_mut(target_id).is_none()
    {
        count_drop(drop_reason::TARGET_MAP_FULL);
        return None;
    }
    TARGET_COUNTERS.get_ptr_mut(target_id)
}

/// This window's high-water marks of a target (see `WindowKey`).
#[inline(always)]
fn window_peaks(target_id: u64) -> Option<*mut WindowPeaks> {
    if !flag_set(&TRACK_WINDOWS) {
        return None;
    }
    // SAFETY: array value pointer from a successful lookup.
    let epoch = unsafe { *WINDOW_EPOCH.get_ptr(0)? };
    let key = WindowKey {
        target_id,
        slot: epoch & 1,
    };
    if let Some(peaks) = WINDOW_PEAKS.get_ptr_mut(key) {
        return Some(peaks);
    }
    let _ = WINDOW_PEAKS.insert(key, WindowPeaks::default(), BPF_NOEXIST as u64);
    WINDOW_PEAKS.get_ptr_mut(key)
}

/// The counters of a process, created on first sight (`tasks_known` 0: it was already running).
#[inline(always)]
fn process_counters(tgid: u32, target_id: u64) -> Option<*mut ProcessCounters> {
    if let Some(process) = PROCESS_COUNTERS.get_ptr_mut(tgid) {
        // SAFETY: map value pointer from a successful lookup. Written only on a change (a
        // migration), so the hot paths do not dirty the entry's cache line for nothing.
        unsafe {
            if (*process).target_id != target_id {
                (*process).target_id = target_id;
            }
        }
        return Some(process);
    }
    new_process_counters(tgid, target_id, 0, BPF_NOEXIST as u64)
}

/// Creates (or with `flags` = BPF_ANY, replaces) the entry of a process.
#[inline(always)]
fn new_process_counters(
    tgid: u32,
    target_id: u64,
    tasks_known: u32,
    flags: u64,
) -> Option<*mut ProcessCounters> {
    let fresh = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: a per-CPU scratch slot, used by this program alone until it returns.
    unsafe {
        core::ptr::write_bytes(fresh, 0, 1);
        (*fresh).target_id = target_id;
        (*fresh).first_seen_ns = now_ns();
        (*fresh).tasks_known = tasks_known;
    }
    // SAFETY: `fresh` points at the per-CPU scratch value, valid for reads; the insert copies
    // from it (a reference, so the 288 bytes never land on the BPF stack).
    let fresh: &ProcessCounters = unsafe { &*fresh };
    if PROCESS_COUNTERS.insert(tgid, fresh, flags).is_err()
        && PROCESS_COUNTERS.get_ptr_mut(tgid).is_none()
    {
        count_drop(drop_reason::PROCESS_MAP_FULL);
        return None;
    }
    PROCESS_COUNTERS.get_ptr_mut(tgid)
}

/// Applies one update to the target's counters and, when present, the process's.
#[inline(always)]
fn update_both(
    target: *mut MemoryCounters,
    process: Option<*mut ProcessCounters>,
    update: impl Fn(*mut MemoryCounters),
) {
    update(target);
    if let Some(process) = process {
        // SAFETY: map value pointer from a successful lookup; taking a field's address only.
        update(unsafe { &raw mut (*process).counters });
    }
}

/// One more (or one fewer) live task, with exact peaks for the target and the process.
#[inline(always)]
fn change_live_tasks(
    target_id: u64,
    target: *mut MemoryCounters,
    process: Option<*mut ProcessCounters>,
    delta: i64,
) {
    update_both(target, process, |c| {
        // SAFETY: field addresses within a valid map value.
        unsafe {
            let live = add_signed(&raw mut (*c).live_tasks, delta);
            if delta > 0 {
                raise_signed(&raw mut (*c).peak_live_tasks, live);
            }
        }
    });
    if delta > 0 {
        if let Some(window) = window_peaks(target_id) {
            // SAFETY: field addresses within valid map values.
            unsafe {
                raise_signed(
                    &raw mut (*window).live_tasks_peak,
                    core::ptr::read_volatile(&raw const (*target).live_tasks),
                );
            }
        }
    }
}

fn emit_process_start(tgid: u32, parent_tgid: u32, target_id: u64) {
    let Some(mut entry) = EVENTS.reserve::<ProcessStartEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved, 8-byte aligned ring buffer slot of the right size.
    unsafe {
        (*event).header = EventHeader {
            kind: event_kind::PROCESS_START,
            tgid,
            target_id,
            timestamp_ns: now_ns(),
        };
        (*event).parent_tgid = parent_tgid;
        (*event)._pad = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
    }
    entry.submit(0);
}

fn emit_process_exit(tgid: u32, target_id: u64, process: *const ProcessCounters) {
    let Some(mut entry) = EVENTS.reserve::<ProcessExitEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved ring buffer slot of the right size; `process` is a
    // map value pointer from a successful lookup.
    unsafe {
        (*event).header = EventHeader {
            kind: event_kind::PROCESS_EXIT,
            tgid,
            target_id,
            timestamp_ns: now_ns(),
        };
        (*event).process = *process;
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
    }
    entry.submit(0);
}

/// Sends one mapping change to user space (capture sessions only).
#[inline(always)]
fn emit_mapping(tgid: u32, target_id: u64, op: u32, args: [u64; 6]) {
    if !flag_set(&TRACK_REGIONS) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<MappingEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return;
    };
    let [addr, len, prot, flags, new_addr, new_len] = args;
    entry.write(MappingEvent {
        header: EventHeader {
            kind: event_kind::MAPPING,
            tgid,
            target_id,
            timestamp_ns: now_ns(),
        },
        op,
        prot: prot as u32,
        flags,
        addr,
        len,
        new_addr,
        new_len,
    });
    entry.submit(0);
}

/// The stack sampling settings of a target, when a session switched them on.
#[inline(always)]
fn sampling_of(target_id: u64) -> Option<StackSampling> {
    let active = SAMPLING_ACTIVE.get_ptr(0)?;
    // SAFETY: array value pointer from a successful lookup.
    if unsafe { core::ptr::read_volatile(active) } == 0 {
        return None;
    }
    // SAFETY: map value pointer from a successful lookup; copied out at once.
    SAMPLED_TARGETS
        .get_ptr(target_id)
        .map(|sampling| unsafe { *sampling })
}

/// Byte-weighted fault sampling: a process's faulted bytes accumulate as credit, and each time
/// the credit passes `fault_sample_bytes` one stack is taken, weighted by the whole credit. Big
/// allocations are thus sampled in proportion to their size, small ones rarely, and the
/// samples' weights add up to the bytes faulted in.
#[inline(always)]
fn sample_fault(
    ctx: &TracePointContext,
    tgid: u32,
    target_id: u64,
    process: *mut ProcessCounters,
    grown: u64,
    member: u32,
) {
    let Some(sampling) = sampling_of(target_id) else {
        return;
    };
    if sampling.fault_sample_bytes == 0 {
        return;
    }
    // SAFETY: `process` is a valid map value pointer; the credit is updated atomically because
    // the threads of a process fault concurrently.
    let taken = unsafe {
        let credit = &raw mut (*process).fault_sample_credit;
        add(credit, grown);
        if core::ptr::read_volatile(credit) < sampling.fault_sample_bytes {
            return;
        }
        let taken = atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(credit, 0);
        if taken < sampling.fault_sample_bytes {
            // Another thread took the sample first: give the remainder back.
            add(credit, taken);
            return;
        }
        taken
    };
    let origin = SampleOrigin {
        tgid,
        source: stack_source::FAULT,
        target_id,
        bytes: taken,
        address: 0,
        detail: member,
    };
    emit_stack_sample(ctx, &origin, sampling.snapshot != 0);
}

/// Samples one reservation (`mmap` or `brk` growth) at or above the target's threshold.
#[inline(always)]
fn sample_reservation(
    ctx: &TracePointContext,
    tgid: u32,
    target_id: u64,
    bytes: u64,
    address: u64,
    source: u32,
    detail: u32,
) {
    let Some(sampling) = sampling_of(target_id) else {
        return;
    };
    if sampling.reservation_threshold_bytes == 0 || bytes < sampling.reservation_threshold_bytes {
        return;
    }
    let origin = SampleOrigin {
        tgid,
        source,
        target_id,
        bytes,
        address,
        detail,
    };
    emit_stack_sample(ctx, &origin, sampling.snapshot != 0);
}

/// What a stack sample stands for.
struct SampleOrigin {
    tgid: u32,
    source: u32,
    target_id: u64,
    bytes: u64,
    address: u64,
    detail: u32,
}

/// Sends the current user stack, as return addresses walked through frame pointers, and with
/// `snapshot` also the user registers and a raw copy of the stack, for `.eh_frame` unwinding
/// in user space. (Not inlined: three callers, and BPF calls take at most five arguments.)
#[inline(never)]
fn emit_stack_sample(ctx: &TracePointContext, origin: &SampleOrigin, snapshot: bool) {
    if snapshot && flag_set(&STACK_SNAPSHOTS) {
        let Some(mut entry) = EVENTS.reserve::<StackSnapshotEvent>(0) else {
            count_drop(drop_reason::RINGBUF_FULL);
            return;
        };
        let event = entry.as_mut_ptr();
        // SAFETY: `event` points at a reserved ring buffer slot of the right size.
        unsafe {
            let sample = &raw mut (*event).sample;
            fill_sample(ctx, sample, origin);
            copy_user_stack(sample, &raw mut (*event).snapshot);
        }
        entry.submit(0);
    } else {
        let Some(mut entry) = EVENTS.reserve::<StackSampleEvent>(0) else {
            count_drop(drop_reason::RINGBUF_FULL);
            return;
        };
        // SAFETY: as above.
        unsafe { fill_sample(ctx, entry.as_mut_ptr(), origin) };
        entry.submit(0);
    }
}

/// Fills a sample in place (it is too large for the BPF stack).
///
/// # Safety
/// `sample` must point at writable memory of a `StackSampleEvent`'s size.
#[inline(always)]
unsafe fn fill_sample(
    ctx: &TracePointContext,
    sample: *mut StackSampleEvent,
    origin: &SampleOrigin,
) {
    // SAFETY: per the contract; `frames` is exactly the size passed to the helper.
    unsafe {
        (*sample).header = EventHeader {
            kind: event_kind::STACK_SAMPLE,
            tgid: origin.tgid,
            target_id: origin.target_id,
            timestamp_ns: now_ns(),
        };
        (*sample).bytes = origin.bytes;
        (*sample).address = origin.address;
        (*sample).source = origin.source;
        (*sample).detail = origin.detail;
        (*sample).snapshot_len = 0;
        (*sample).ip = 0;
        (*sample).sp = 0;
        (*sample).bp = 0;
        let written = bpf_get_stack(
            ctx.as_ptr(),
            (&raw mut (*sample).frames).cast(),
            (MAX_STACK_FRAMES * 8) as u32,
            BPF_F_USER_STACK as u64,
        );
        if written < 0 {
            (*sample).frame_count = 0;
            count_drop(drop_reason::STACK_UNAVAILABLE);
        } else {
            (*sample).frame_count = (written as u32) / 8;
        }
    }
}

/// Copies the user registers and up to `STACK_SNAPSHOT_BYTES` of user stack from `sp` up.
///
/// # Safety
/// `sample` and `snapshot` must point into a reserved ring buffer slot.
#[inline(always)]
unsafe fn copy_user_stack(
    sample: *mut StackSampleEvent,
    snapshot: *mut [u8; STACK_SNAPSHOT_BYTES],
) {
    // SAFETY: helper calls on the current task (valid for the program's run); every read goes
    // through bpf_probe_read_*, which fails cleanly on a bad address.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        let read_reg = |offset: usize| {
            let mut value = 0u64;
            let _ = bpf_probe_read_kernel((&raw mut value).cast(), 8, regs.add(offset).cast());
            value
        };
        let (ip, sp, bp) = (
            read_reg(PT_REGS_IP),
            read_reg(PT_REGS_SP),
            read_reg(PT_REGS_BP),
        );
        (*sample).ip = ip;
        (*sample).sp = sp;
        (*sample).bp = bp;
        // A stack shorter than the snapshot ends in an unmapped page: retry with less.
        let mut length = 0u32;
        if bpf_probe_read_user(snapshot.cast(), STACK_SNAPSHOT_BYTES as u32, sp as *const _) == 0 {
            length = STACK_SNAPSHOT_BYTES as u32;
        } else if bpf_probe_read_user(
            snapshot.cast(),
            (STACK_SNAPSHOT_BYTES / 4) as u32,
            sp as *const _,
        ) == 0
        {
            length = (STACK_SNAPSHOT_BYTES / 4) as u32;
        }
        (*sample).snapshot_len = length;
    }
}

/// task:task_newtask runs in the parent. `CLONE_THREAD` marks a new thread of the parent's
/// process; anything else is a new process, born in the parent's cgroup.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    try_task_newtask(&ctx).unwrap_or(0)
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((tgid, target_id)) = current_target() else {
        return Ok(0);
    };
    // SAFETY: offsets of task_newtask's record (pid_t pid @8, u64 clone_flags @32).
    let (child_pid, clone_flags) = unsafe {
        (
            ctx.read_at::<i32>(NEWTASK_PID)?,
            ctx.read_at::<u64>(NEWTASK_CLONE_FLAGS)?,
        )
    };
    let target = target_counters(target_id).ok_or(0)?;
    let parent = process_counters(tgid, target_id);
    if clone_flags & CLONE_THREAD != 0 {
        update_both(target, parent, |c| {
            // SAFETY: field address within a valid map value.
            add(unsafe { &raw mut (*c).threads_created }, 1);
        });
        change_live_tasks(target_id, target, parent, 1);
        return Ok(0);
    }
    update_both(target, parent, |c| {
        // SAFETY: field address within a valid map value.
        add(unsafe { &raw mut (*c).processes_created }, 1);
    });
    let child_tgid = child_pid as u32;
    // A followed process tree follows its children.
    if TRACKED_TGIDS.get_ptr(tgid).is_some()
        && TRACKED_TGIDS.insert(child_tgid, target_id, 0).is_err()
    {
        count_drop(drop_reason::TRACKED_TGIDS_FULL);
    }
    // BPF_ANY: a stale entry of a reused pid is replaced, not continued.
    let child = new_process_counters(child_tgid, target_id, 1, 0);
    change_live_tasks(target_id, target, None, 1);
    if let Some(child) = child {
        // SAFETY: field addresses within a valid map value.
        unsafe {
            let live = add_signed(&raw mut (*child).counters.live_tasks, 1);
            raise_signed(&raw mut (*child).counters.peak_live_tasks, live);
        }
    }
    emit_process_start(child_tgid, tgid, target_id);
    Ok(0)
}

/// cgroup:cgroup_attach_task: a task moved into a cgroup (a container's first process, or a
/// capture session's command). Counted as arriving, like a birth.
#[tracepoint]
pub fn cgroup_attach_task(ctx: TracePointContext) -> u32 {
    try_cgroup_attach_task(&ctx).unwrap_or(0)
}

fn try_cgroup_attach_task(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: offsets of cgroup_attach_task's record (int dst_root @8, u64 dst_id @16,
    // int pid @24).
    let (dst_root, dst_id, pid) = unsafe {
        (
            ctx.read_at::<i32>(ATTACH_DST_ROOT)?,
            ctx.read_at::<u64>(ATTACH_DST_ID)?,
            ctx.read_at::<i32>(ATTACH_PID)?,
        )
    };
    if dst_root != CGROUP2_HIERARCHY_ID {
        return Ok(0);
    }
    // The record names a thread id only. When the task moves itself (how capture sessions and
    // container runtimes start), the current task is that thread and we know its process.
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let moving_itself_whole = pid_tgid as u32 == pid as u32 && tgid == pid as u32;
    let Some(target_id) = target_of(if moving_itself_whole { tgid } else { 0 }, dst_id) else {
        return Ok(0);
    };
    let target = target_counters(target_id).ok_or(0)?;
    // SAFETY: field address within a valid map value.
    add(unsafe { &raw mut (*target).tasks_attached }, 1);
    let process = if moving_itself_whole {
        new_process_counters(tgid, target_id, 1, 0)
    } else {
        None
    };
    if let Some(process) = process {
        // SAFETY: field address within a valid map value.
        add(unsafe { &raw mut (*process).counters.tasks_attached }, 1);
    }
    change_live_tasks(target_id, target, process, 1);
    if moving_itself_whole {
        emit_process_start(tgid, 0, target_id);
    }
    Ok(0)
}

/// sched:sched_process_exit fires once per exiting task; `group_dead` marks the process's last.
/// On 6.16+ it fires before the address space is torn down.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    try_sched_process_exit(&ctx).unwrap_or(0)
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((tgid, target_id)) = current_target() else {
        return Ok(0);
    };
    // SAFETY: offset of sched_process_exit's record (bool group_dead @32).
    let group_dead = unsafe { ctx.read_at::<u8>(PROCESS_EXIT_GROUP_DEAD)? } != 0;
    let target = target_counters(target_id).ok_or(0)?;
    let process = process_counters(tgid, target_id);
    update_both(target, process, |c| {
        // SAFETY: field addresses within a valid map value.
        unsafe {
            add(&raw mut (*c).tasks_exited, 1);
            if group_dead {
                add(&raw mut (*c).processes_exited, 1);
            }
        }
    });
    change_live_tasks(target_id, target, process, -1);
    if !group_dead {
        return Ok(0);
    }
    if let Some(process) = process {
        emit_process_exit(tgid, target_id, process);
        // The address space is about to go: take the process's resident memory out of the
        // target now, and forget its mm so teardown events are not counted again.
        release_resident(target, process);
        // SAFETY: map value pointer from a successful lookup.
        let mm_id = unsafe { (*process).mm_id };
        let _ = MM_OWNERS.remove(mm_id);
    }
    // The process is gone: free its slots now rather than waiting for LRU eviction.
    let _ = PROCESS_COUNTERS.remove(tgid);
    let _ = TRACKED_TGIDS.remove(tgid);
    Ok(0)
}

/// Moves a process's resident counters to zero and takes them out of its target's sums.
#[inline(always)]
fn release_resident(target: *mut MemoryCounters, process: *mut ProcessCounters) {
    for member in 0..rss_member::COUNT {
        // SAFETY: field addresses within valid map values; `member` < COUNT.
        unsafe {
            let field = (&raw mut (*process).counters.rss_bytes)
                .cast::<i64>()
                .add(member);
            let old = atomic_xchg::<i64, { AtomicOrdering::Relaxed }>(field, 0);
            if old != 0 {
                add_signed(
                    (&raw mut (*target).rss_bytes).cast::<i64>().add(member),
                    -old,
                );
            }
        }
    }
}

/// sched:sched_process_exec: a new program image, so a new heap: restart the brk baseline.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    try_sched_process_exec(&ctx).unwrap_or(0)
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((_, target_id)) = current_target() else {
        return Ok(0);
    };
    // SAFETY: offset of sched_process_exec's record (pid_t pid @12).
    let tgid = unsafe { ctx.read_at::<i32>(PROCESS_EXEC_PID)? } as u32;
    let target = target_counters(target_id).ok_or(0)?;
    let process = process_counters(tgid, target_id);
    update_both(target, process, |c| {
        // SAFETY: field address within a valid map value.
        add(unsafe { &raw mut (*c).execs }, 1);
    });
    if let Some(process) = process {
        // SAFETY: map value pointer from a successful lookup.
        unsafe {
            (*process).brk_start = 0;
            (*process).brk_current = 0;
            (*process).brk_highest = 0;
        }
    }
    emit_mapping(tgid, target_id, mapping_op::EXEC, [0; 6]);
    Ok(0)
}

/// kmem:rss_stat: one of an mm's RSS counters changed (about once per page fault). Aggregated
/// here: the process's counter is replaced (atomic exchange), the difference added to its
/// target's sum, and the high-water marks raised. Nothing goes to user space.
#[tracepoint]
pub fn rss_stat(ctx: TracePointContext) -> u32 {
    try_rss_stat(&ctx).unwrap_or(0)
}

fn try_rss_stat(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: offsets of rss_stat's record (u32 mm_id @8, u32 curr @12, int member @16,
    // long size @24, in bytes).
    let (mm_id, curr, member, size) = unsafe {
        (
            ctx.read_at::<u32>(RSS_MM_ID)?,
            ctx.read_at::<u32>(RSS_CURR)?,
            ctx.read_at::<i32>(RSS_MEMBER)?,
            ctx.read_at::<i64>(RSS_SIZE)?,
        )
    };
    if member < 0 || member as usize >= rss_member::COUNT {
        return Ok(0);
    }
    // The mask repeats the bound in a form the verifier tracks through the index arithmetic.
    let member = (member as u32 & 3) as usize;
    let (target_id, process, target, faulting_tgid) = if curr != 0 {
        let Some((tgid, target_id)) = current_target() else {
            return Ok(0);
        };
        let process = process_counters(tgid, target_id).ok_or(0)?;
        let target = target_counters(target_id).ok_or(0)?;
        // SAFETY: map value pointer from a successful lookup.
        let known_mm = unsafe { (*process).mm_id };
        if known_mm != mm_id {
            // A new address space after exec: the old one's memory leaves the sums. (mm_id 0 is
            // a first sight: a fresh entry holds nothing, and one seeded by user space from
            // /proc holds this very address space's figures, which the exchange below updates.)
            // The new one is remembered for events raised outside the process.
            if known_mm != 0 {
                release_resident(target, process);
                let _ = MM_OWNERS.remove(known_mm);
            }
            // SAFETY: as above.
            unsafe { (*process).mm_id = mm_id };
            let owner = MmOwner {
                tgid,
                _pad: 0,
                target_id,
            };
            let _ = MM_OWNERS.insert(mm_id, owner, 0);
        }
        (target_id, process, target, Some(tgid))
    } else {
        // Raised by another task: reclaim, or the teardown of an address space.
        let Some(owner) = MM_OWNERS.get_ptr(mm_id) else {
            return Ok(0);
        };
        // SAFETY: map value pointer from a successful lookup.
        let owner = unsafe { *owner };
        let Some(process) = PROCESS_COUNTERS.get_ptr_mut(owner.tgid) else {
            return Ok(0);
        };
        // SAFETY: as above.
        if unsafe { (*process).mm_id } != mm_id {
            return Ok(0);
        }
        let target = target_counters(owner.target_id).ok_or(0)?;
        (owner.target_id, process, target, None)
    };

    // SAFETY: field addresses within valid map values; `member` < COUNT.
    unsafe {
        let process_field = (&raw mut (*process).counters.rss_bytes)
            .cast::<i64>()
            .add(member);
        let old = atomic_xchg::<i64, { AtomicOrdering::Relaxed }>(process_field, size);
        let delta = size - old;
        if delta != 0 {
            add_signed(
                (&raw mut (*target).rss_bytes).cast::<i64>().add(member),
                delta,
            );
        }
        if delta > 0 {
            raise_resident_peaks(&raw mut (*process).counters, None);
            raise_resident_peaks(target, window_peaks(target_id));
            // Growth seen by the faulting task itself: its user stack is the code that made
            // the memory. (Swap growth is memory leaving, not arriving.)
            if let Some(tgid) = faulting_tgid {
                if member != rss_member::SWAP {
                    sample_fault(ctx, tgid, target_id, process, delta as u64, member as u32);
                }
            }
        }
    }
    Ok(0)
}

/// Raises the resident high-water marks of `counters` (and of this window) to its current sums.
#[inline(always)]
fn raise_resident_peaks(counters: *mut MemoryCounters, window: Option<*mut WindowPeaks>) {
    // SAFETY: `counters` and `window` are valid map value pointers.
    unsafe {
        let rss = &raw const (*counters).rss_bytes;
        let read = |member: usize| core::ptr::read_volatile(rss.cast::<i64>().add(member));
        let anon = positive(read(rss_member::ANON));
        let file = positive(read(rss_member::FILE) + read(rss_member::SHMEM));
        raise(&raw mut (*counters).resident_peak_bytes, anon + file);
        raise(&raw mut (*counters).anon_peak_bytes, anon);
        raise(&raw mut (*counters).file_peak_bytes, file);
        if let Some(window) = window {
            raise(&raw mut (*window).resident_peak_bytes, anon + file);
            raise(&raw mut (*window).anon_peak_bytes, anon);
            raise(&raw mut (*window).file_peak_bytes, file);
        }
    }
}

/// oom:mark_victim: the OOM killer chose a process. Counted for its target and reported.
#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    try_mark_victim(&ctx).unwrap_or(0)
}

fn try_mark_victim(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: offsets of mark_victim's record (int pid @8, unsigned long total_vm @16,
    // anon_rss @24, file_rss @32, shmem_rss @40, all in kB).
    let (pid, total_vm, anon, file, shmem) = unsafe {
        (
            ctx.read_at::<i32>(VICTIM_PID)?,
            ctx.read_at::<u64>(VICTIM_TOTAL_VM_KB)?,
            ctx.read_at::<u64>(VICTIM_ANON_RSS_KB)?,
            ctx.read_at::<u64>(VICTIM_FILE_RSS_KB)?,
            ctx.read_at::<u64>(VICTIM_SHMEM_RSS_KB)?,
        )
    };
    let victim = pid as u32;
    // The killer runs in whichever task hit the limit; the victim is found by its pid.
    let Some(process) = PROCESS_COUNTERS.get_ptr_mut(victim) else {
        return Ok(0);
    };
    // SAFETY: map value pointer from a successful lookup.
    let target_id = unsafe { (*process).target_id };
    if let Some(target) = target_counters(target_id) {
        update_both(target, Some(process), |c| {
            // SAFETY: field address within a valid map value.
            add(unsafe { &raw mut (*c).oom_kills }, 1);
        });
    }
    let Some(mut entry) = EVENTS.reserve::<OomVictimEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return Ok(0);
    };
    entry.write(OomVictimEvent {
        header: EventHeader {
            kind: event_kind::OOM_VICTIM,
            tgid: victim,
            target_id,
            timestamp_ns: now_ns(),
        },
        total_vm_bytes: total_vm.saturating_mul(1024),
        anon_rss_bytes: anon.saturating_mul(1024),
        file_rss_bytes: file.saturating_mul(1024),
        shmem_rss_bytes: shmem.saturating_mul(1024),
    });
    entry.submit(0);
    Ok(0)
}

/// Remembers a mapping syscall's arguments until it returns.
#[inline(always)]
fn remember_call(ctx: &TracePointContext, kind: u32, arg_count: usize) -> Result<u32, i64> {
    let Some((_, target_id)) = current_target() else {
        return Ok(0);
    };
    let mut args = [0u64; 4];
    for (index, arg) in args.iter_mut().enumerate() {
        if index < arg_count {
            // SAFETY: syscall records hold their arguments as u64 at 16, 24, 32, 40.
            *arg = unsafe { ctx.read_at::<u64>(SYSCALL_ARG[index])? };
        }
    }
    let call = PendingCall {
        kind,
        _pad: 0,
        target_id,
        args,
    };
    if PENDING_CALLS
        .insert(bpf_get_current_pid_tgid(), call, 0)
        .is_err()
    {
        count_drop(drop_reason::PENDING_CALLS_FULL);
    }
    Ok(0)
}

/// Takes back the arguments of the call that is returning, with its return value.
#[inline(always)]
fn returning_call(ctx: &TracePointContext, kind: u32) -> Option<(PendingCall, i64)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let pending = PENDING_CALLS.get_ptr(pid_tgid)?;
    // SAFETY: map value pointer from a successful lookup; copied before the entry is removed.
    let pending = unsafe { *pending };
    let _ = PENDING_CALLS.remove(pid_tgid);
    if pending.kind != kind {
        return None;
    }
    // SAFETY: syscall exit record offset (long ret @16).
    let ret = unsafe { ctx.read_at::<i64>(SYSCALL_RET).ok()? };
    Some((pending, ret))
}

fn failed(ret: i64) -> bool {
    (-MAX_ERRNO..0).contains(&ret)
}

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    remember_call(&ctx, call_kind::MMAP, 4).unwrap_or(0)
}

/// syscalls:sys_exit_mmap: count the mapping by kind once we know it succeeded.
#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    try_sys_exit_mmap(&ctx).unwrap_or(0)
}

fn try_sys_exit_mmap(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((call, ret)) = returning_call(ctx, call_kind::MMAP) else {
        return Ok(0);
    };
    let tgid = current_tgid();
    let target = target_counters(call.target_id).ok_or(0)?;
    let process = process_counters(tgid, call.target_id);
    if failed(ret) {
        update_both(target, process, |c| {
            // SAFETY: field address within a valid map value.
            add(unsafe { &raw mut (*c).mmap_failures }, 1);
        });
        return Ok(0);
    }
    let [_, len, prot, flags] = call.args;
    let kind = classify_mmap(prot, flags);
    if kind >= mapping_kind::COUNT {
        return Ok(0);
    }
    let bytes = page_round_up(len);
    update_both(target, process, |c| {
        // SAFETY: field addresses within a valid map value; `kind` is bounds-checked above.
        unsafe {
            add(&raw mut (*c).mmap_calls, 1);
            add((&raw mut (*c).mmap_bytes).cast::<u64>().add(kind), bytes);
        }
    });
    emit_mapping(
        tgid,
        call.target_id,
        mapping_op::MAP,
        [ret as u64, bytes, prot, flags, 0, 0],
    );
    sample_reservation(
        ctx,
        tgid,
        call.target_id,
        bytes,
        ret as u64,
        stack_source::MMAP,
        kind as u32,
    );
    Ok(0)
}

#[tracepoint]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    remember_call(&ctx, call_kind::MUNMAP, 2).unwrap_or(0)
}

#[tracepoint]
pub fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    try_sys_exit_munmap(&ctx).unwrap_or(0)
}

fn try_sys_exit_munmap(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((call, ret)) = returning_call(ctx, call_kind::MUNMAP) else {
        return Ok(0);
    };
    if ret != 0 {
        return Ok(0);
    }
    let tgid = current_tgid();
    let [addr, len, _, _] = call.args;
    let bytes = page_round_up(len);
    let target = target_counters(call.target_id).ok_or(0)?;
    let process = process_counters(tgid, call.target_id);
    update_both(target, process, |c| {
        // SAFETY: field addresses within a valid map value.
        unsafe {
            add(&raw mut (*c).munmap_calls, 1);
            add(&raw mut (*c).munmap_bytes, bytes);
        }
    });
    emit_mapping(
        tgid,
        call.target_id,
        mapping_op::UNMAP,
        [addr, bytes, 0, 0, 0, 0],
    );
    Ok(0)
}

#[tracepoint]
pub fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    remember_call(&ctx, call_kind::MREMAP, 4).unwrap_or(0)
}

#[tracepoint]
pub fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    try_sys_exit_mremap(&ctx).unwrap_or(0)
}

fn try_sys_exit_mremap(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((call, ret)) = returning_call(ctx, call_kind::MREMAP) else {
        return Ok(0);
    };
    if failed(ret) {
        return Ok(0);
    }
    let tgid = current_tgid();
    let [old_addr, old_len, new_len, flags] = call.args;
    let target = target_counters(call.target_id).ok_or(0)?;
    let process = process_counters(tgid, call.target_id);
    update_both(target, process, |c| {
        // SAFETY: field address within a valid map value.
        add(unsafe { &raw mut (*c).mremap_calls }, 1);
    });
    emit_mapping(
        tgid,
        call.target_id,
        mapping_op::REMAP,
        [
            old_addr,
            page_round_up(old_len),
            0,
            flags,
            ret as u64,
            page_round_up(new_len),
        ],
    );
    Ok(0)
}

#[tracepoint]
pub fn sys_enter_mprotect(ctx: TracePointContext) -> u32 {
    remember_call(&ctx, call_kind::MPROTECT, 3).unwrap_or(0)
}

#[tracepoint]
pub fn sys_exit_mprotect(ctx: TracePointContext) -> u32 {
    try_sys_exit_mprotect(&ctx).unwrap_or(0)
}

fn try_sys_exit_mprotect(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((call, ret)) = returning_call(ctx, call_kind::MPROTECT) else {
        return Ok(0);
    };
    if ret != 0 {
        return Ok(0);
    }
    let tgid = current_tgid();
    let [addr, len, prot, _] = call.args;
    let target = target_counters(call.target_id).ok_or(0)?;
    let process = process_counters(tgid, call.target_id);
    update_both(target, process, |c| {
        // SAFETY: field address within a valid map value.
        add(unsafe { &raw mut (*c).mprotect_calls }, 1);
    });
    emit_mapping(
        tgid,
        call.target_id,
        mapping_op::PROTECT,
        [addr, page_round_up(len), prot, 0, 0, 0],
    );
    Ok(0)
}

/// syscalls:sys_exit_brk: the return value is the new program break (the old one on failure),
/// so exit alone tells how far the heap moved.
#[tracepoint]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    try_sys_exit_brk(&ctx).unwrap_or(0)
}

fn try_sys_exit_brk(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((tgid, target_id)) = current_target() else {
        return Ok(0);
    };
    // SAFETY: syscall exit record offset (long ret @16).
    let new_brk = unsafe { ctx.read_at::<u64>(SYSCALL_RET)? };
    let target = target_counters(target_id).ok_or(0)?;
    let process = process_counters(tgid, target_id);
    let (grown, shrunk) = match process {
        // SAFETY: map value pointer from a successful lookup. brk calls of one process are
        // serialised by its mmap lock, so plain writes to these fields do not race.
        Some(process) => unsafe {
            if (*process).brk_start == 0 {
                // First brk since exec (glibc starts with brk(0)): the baseline.
                (*process).brk_start = new_brk;
                (*process).brk_current = new_brk;
                (*process).brk_highest = new_brk;
                (0, 0)
            } else {
                let previous = (*process).brk_current;
                (*process).brk_current = new_brk;
                if new_brk > (*process).brk_highest {
                    (*process).brk_highest = new_brk;
                }
                (
                    new_brk.saturating_sub(previous),
                    previous.saturating_sub(new_brk),
                )
            }
        },
        None => (0, 0),
    };
    update_both(target, process, |c| {
        // SAFETY: field addresses within a valid map value.
        unsafe {
            add(&raw mut (*c).brk_calls, 1);
            if grown != 0 {
                add(&raw mut (*c).brk_grown_bytes, grown);
            }
            if shrunk != 0 {
                add(&raw mut (*c).brk_shrunk_bytes, shrunk);
            }
        }
    });
    emit_mapping(tgid, target_id, mapping_op::BRK, [new_brk, 0, 0, 0, 0, 0]);
    if grown != 0 {
        sample_reservation(
            ctx,
            tgid,
            target_id,
            grown,
            new_brk - grown,
            stack_source::BRK,
            0,
        );
    }
    Ok(0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this never runs in a loaded program.
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
