//! headroom's kernel side.
//!
//! Every program is a thin tracepoint entry that calls a `try_*` function. High-rate events
//! (mmap, munmap, brk, thread creation and exit) only update counters in kernel maps, with atomic
//! adds where two CPUs can race; user space reads the maps when it needs figures. The ring buffer
//! carries only rare events (a process starts or ends), and every one that does not fit is
//! counted in `DROPS`, never lost silently.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's Atomic*::fetch_add does not exist there.
// The intrinsic lowers to the BPF atomic add instruction (BPF_XADD), which the kernel supports.
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only way to emit BPF_XADD from Rust"
)]

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use profiler_common::{
    capacity, classify_mmap, drop_reason, event_kind, mapping_kind, page_round_up, EventHeader,
    MemoryCounters, PendingMmap, ProcessCounters, ProcessExitEvent, ProcessStartEvent,
    CLONE_THREAD,
};

/// 1: count every cgroup (node agent). 0: only cgroups in `TRACKED_CGROUPS` (capture sessions).
/// Overridden by the loader; read with `read_volatile` so the compiler cannot fold it.
#[no_mangle]
static TRACE_ALL_CGROUPS: u8 = 0;

#[map]
static CGROUP_COUNTERS: HashMap<u64, MemoryCounters> =
    HashMap::with_max_entries(capacity::CGROUPS, 0);

#[map]
static PROCESS_COUNTERS: LruHashMap<u32, ProcessCounters> =
    LruHashMap::with_max_entries(capacity::PROCESSES, 0);

/// LRU so that an entry whose syscall exit never came (a task killed mid-call) ages out
/// instead of filling the map over the months an agent runs.
#[map]
static PENDING_MMAPS: LruHashMap<u64, PendingMmap> =
    LruHashMap::with_max_entries(capacity::PENDING_MMAPS, 0);

#[map]
static TRACKED_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(capacity::TRACKED_CGROUPS, 0);

#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_reason::COUNT, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(capacity::EVENTS_BYTES, 0);

// Tracepoint field offsets, read off /sys/kernel/tracing/events/*/*/format. These records are
// stable ABI for syscalls:* and have been stable for years for the others.
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const PROCESS_EXIT_GROUP_DEAD: usize = 32;
const PROCESS_EXEC_PID: usize = 12;
const ATTACH_DST_ROOT: usize = 8;
const ATTACH_DST_ID: usize = 16;
const ATTACH_PID: usize = 24;
const SYSCALL_ARG1: usize = 24;
const SYSCALL_ARG2: usize = 32;
const SYSCALL_ARG3: usize = 40;
const SYSCALL_RET: usize = 16;

/// cgroup v2's hierarchy id. cgroup_attach_task also fires for v1 hierarchies, whose ids live
/// in another namespace and would collide.
const CGROUP2_HIERARCHY_ID: i32 = 0;

/// Largest errno a syscall returns as a negative value.
const MAX_ERRNO: i64 = 4095;

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
fn is_tracked(cgroup_id: u64) -> bool {
    // SAFETY: reading a static the loader may have rewritten; volatile so it is really read.
    let trace_all = unsafe { core::ptr::read_volatile(&TRACE_ALL_CGROUPS) };
    trace_all != 0 || TRACKED_CGROUPS.get_ptr(cgroup_id).is_some()
}

#[inline(always)]
fn count_drop(reason: u32) {
    if let Some(slot) = DROPS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and the pointer comes from the map.
        unsafe { *slot += 1 };
    }
}

/// Adds to a counter that another CPU may update at the same time (compiles to BPF atomic add).
#[inline(always)]
fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points into a map value that lives as long as the map, aligned to 8.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// One more (or one fewer) live task, and a new peak if it is one. The peak update is a plain
/// read-compare-write: two CPUs creating tasks in the same cgroup in the same instant can lose
/// one increment of the *peak* (never of the live count). BPF atomics that return a value need
/// cpu v3, which we do not require.
#[inline(always)]
fn change_live_tasks(counters: *mut MemoryCounters, delta: i64) {
    // SAFETY: `counters` is a map value pointer from a successful lookup.
    unsafe {
        atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(
            &raw mut (*counters).live_tasks,
            delta,
        );
        if delta > 0 {
            let live = core::ptr::read_volatile(&raw const (*counters).live_tasks);
            if live > (*counters).peak_live_tasks {
                (*counters).peak_live_tasks = live;
            }
        }
    }
}

/// The counters of a cgroup, created zeroed on first sight.
#[inline(always)]
fn cgroup_counters(cgroup_id: u64) -> Option<*mut MemoryCounters> {
    if let Some(counters) = CGROUP_COUNTERS.get_ptr_mut(cgroup_id) {
        return Some(counters);
    }
    let zero = MemoryCounters::default();
    // NOEXIST: another CPU may have created it in the meantime; then we use theirs.
    if CGROUP_COUNTERS
        .insert(cgroup_id, zero, BPF_NOEXIST as u64)
        .is_err()
        && CGROUP_COUNTERS.get_ptr_mut(cgroup_id).is_none()
    {
        count_drop(drop_reason::CGROUP_MAP_FULL);
        return None;
    }
    CGROUP_COUNTERS.get_ptr_mut(cgroup_id)
}

/// The counters of a process, created on first sight. `tasks_known` says whether the entry is
/// created at a moment when the process's task count is known (0 before the first event).
#[inline(always)]
fn process_counters(tgid: u32, cgroup_id: u64) -> Option<*mut ProcessCounters> {
    if let Some(process) = PROCESS_COUNTERS.get_ptr_mut(tgid) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { (*process).cgroup_id = cgroup_id };
        return Some(process);
    }
    new_process_counters(tgid, cgroup_id, 0, BPF_NOEXIST as u64)
}

/// Creates (or with `flags` = BPF_ANY, replaces) the entry of a process.
#[inline(always)]
fn new_process_counters(
    tgid: u32,
    cgroup_id: u64,
    tasks_known: u32,
    flags: u64,
) -> Option<*mut ProcessCounters> {
    let fresh = ProcessCounters {
        cgroup_id,
        first_seen_ns: now_ns(),
        tasks_known,
        ..ProcessCounters::default()
    };
    if PROCESS_COUNTERS.insert(tgid, fresh, flags).is_err()
        && PROCESS_COUNTERS.get_ptr_mut(tgid).is_none()
    {
        count_drop(drop_reason::PROCESS_MAP_FULL);
        return None;
    }
    PROCESS_COUNTERS.get_ptr_mut(tgid)
}

/// Applies one update to the cgroup's counters and, when present, the process's.
#[inline(always)]
fn update_both(
    cgroup: *mut MemoryCounters,
    process: Option<*mut ProcessCounters>,
    update: impl Fn(*mut MemoryCounters),
) {
    update(cgroup);
    if let Some(process) = process {
        // SAFETY: map value pointer from a successful lookup; taking a field's address only.
        update(unsafe { &raw mut (*process).counters });
    }
}

fn emit_process_start(tgid: u32, parent_tgid: u32, cgroup_id: u64) {
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
            cgroup_id,
            timestamp_ns: now_ns(),
        };
        (*event).parent_tgid = parent_tgid;
        (*event)._pad = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
    }
    entry.submit(0);
}

fn emit_process_exit(tgid: u32, cgroup_id: u64, process: *const ProcessCounters) {
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
            cgroup_id,
            timestamp_ns: now_ns(),
        };
        (*event).process = *process;
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
    }
    entry.submit(0);
}

/// task:task_newtask runs in the parent. `CLONE_THREAD` marks a new thread of the parent's
/// process; anything else is a new process, born in the parent's cgroup.
#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    try_task_newtask(&ctx).unwrap_or(0)
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<u32, i64> {
    let cgroup_id = current_cgroup_id();
    if !is_tracked(cgroup_id) {
        return Ok(0);
    }
    // SAFETY: offsets of task_newtask's record (pid_t pid @8, u64 clone_flags @32).
    let (child_pid, clone_flags) = unsafe {
        (
            ctx.read_at::<i32>(NEWTASK_PID)?,
            ctx.read_at::<u64>(NEWTASK_CLONE_FLAGS)?,
        )
    };
    let tgid = current_tgid();
    let cgroup = cgroup_counters(cgroup_id).ok_or(0)?;
    let parent = process_counters(tgid, cgroup_id);
    if clone_flags & CLONE_THREAD != 0 {
        update_both(cgroup, parent, |c| {
            // SAFETY: field address within a valid map value.
            add(unsafe { &raw mut (*c).threads_created }, 1);
            change_live_tasks(c, 1);
        });
    } else {
        update_both(cgroup, parent, |c| {
            // SAFETY: field address within a valid map value.
            add(unsafe { &raw mut (*c).processes_created }, 1);
        });
        change_live_tasks(cgroup, 1);
        let child_tgid = child_pid as u32;
        // BPF_ANY: a stale entry of a reused pid is replaced, not continued.
        if let Some(child) = new_process_counters(child_tgid, cgroup_id, 1, 0) {
            // SAFETY: map value pointer from a successful lookup.
            change_live_tasks(unsafe { &raw mut (*child).counters }, 1);
        }
        emit_process_start(child_tgid, tgid, cgroup_id);
    }
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
    if dst_root != CGROUP2_HIERARCHY_ID || !is_tracked(dst_id) {
        return Ok(0);
    }
    let cgroup = cgroup_counters(dst_id).ok_or(0)?;
    // SAFETY: field address within a valid map value.
    add(unsafe { &raw mut (*cgroup).tasks_attached }, 1);
    change_live_tasks(cgroup, 1);

    // The record names a thread id only. When the task moves itself (how capture sessions and
    // container runtimes start), the current task is that thread and we know its process.
    let pid_tgid = bpf_get_current_pid_tgid();
    let moving_itself = pid_tgid as u32 == pid as u32;
    let tgid = (pid_tgid >> 32) as u32;
    if moving_itself && tgid == pid as u32 {
        if let Some(process) = new_process_counters(tgid, dst_id, 1, 0) {
            // SAFETY: map value pointer from a successful lookup.
            unsafe {
                add(&raw mut (*process).counters.tasks_attached, 1);
                change_live_tasks(&raw mut (*process).counters, 1);
            }
        }
        emit_process_start(tgid, 0, dst_id);
    }
    Ok(0)
}

/// sched:sched_process_exit fires once per exiting task; `group_dead` marks the process's last.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    try_sched_process_exit(&ctx).unwrap_or(0)
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let cgroup_id = current_cgroup_id();
    if !is_tracked(cgroup_id) {
        return Ok(0);
    }
    // SAFETY: offset of sched_process_exit's record (bool group_dead @32).
    let group_dead = unsafe { ctx.read_at::<u8>(PROCESS_EXIT_GROUP_DEAD)? } != 0;
    let tgid = current_tgid();
    let cgroup = cgroup_counters(cgroup_id).ok_or(0)?;
    let process = process_counters(tgid, cgroup_id);
    update_both(cgroup, process, |c| {
        // SAFETY: field addresses within a valid map value.
        unsafe {
            add(&raw mut (*c).tasks_exited, 1);
            if group_dead {
                add(&raw mut (*c).processes_exited, 1);
            }
        }
        change_live_tasks(c, -1);
    });
    if group_dead {
        if let Some(process) = process {
            emit_process_exit(tgid, cgroup_id, process);
        }
        // The process is gone: free its slot now rather than waiting for LRU eviction.
        let _ = PROCESS_COUNTERS.remove(tgid);
    }
    Ok(0)
}

/// sched:sched_process_exec: a new program image, so a new heap: restart the brk baseline.
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    try_sched_process_exec(&ctx).unwrap_or(0)
}

fn try_sched_process_exec(ctx: &TracePointContext) -> Result<u32, i64> {
    let cgroup_id = current_cgroup_id();
    if !is_tracked(cgroup_id) {
        return Ok(0);
    }
    // SAFETY: offset of sched_process_exec's record (pid_t pid @12).
    let tgid = unsafe { ctx.read_at::<i32>(PROCESS_EXEC_PID)? } as u32;
    let cgroup = cgroup_counters(cgroup_id).ok_or(0)?;
    let process = process_counters(tgid, cgroup_id);
    update_both(cgroup, process, |c| {
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
    Ok(0)
}

/// syscalls:sys_enter_mmap: remember the arguments until the syscall returns.
#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    try_sys_enter_mmap(&ctx).unwrap_or(0)
}

fn try_sys_enter_mmap(ctx: &TracePointContext) -> Result<u32, i64> {
    let cgroup_id = current_cgroup_id();
    if !is_tracked(cgroup_id) {
        return Ok(0);
    }
    // SAFETY: syscall record offsets (len @24, prot @32, flags @40).
    let pending = unsafe {
        PendingMmap {
            len: ctx.read_at::<u64>(SYSCALL_ARG1)?,
            prot: ctx.read_at::<u64>(SYSCALL_ARG2)?,
            flags: ctx.read_at::<u64>(SYSCALL_ARG3)?,
            cgroup_id,
        }
    };
    if PENDING_MMAPS
        .insert(bpf_get_current_pid_tgid(), pending, 0)
        .is_err()
    {
        count_drop(drop_reason::PENDING_MMAPS_FULL);
    }
    Ok(0)
}

/// syscalls:sys_exit_mmap: count the mapping by kind once we know it succeeded.
#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    try_sys_exit_mmap(&ctx).unwrap_or(0)
}

fn try_sys_exit_mmap(ctx: &TracePointContext) -> Result<u32, i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(pending) = PENDING_MMAPS.get_ptr(pid_tgid) else {
        return Ok(0);
    };
    // SAFETY: map value pointer from a successful lookup; copied before the entry is removed.
    let pending = unsafe { *pending };
    let _ = PENDING_MMAPS.remove(pid_tgid);
    // SAFETY: syscall exit record offset (long ret @16).
    let ret = unsafe { ctx.read_at::<i64>(SYSCALL_RET)? };
    let cgroup = cgroup_counters(pending.cgroup_id).ok_or(0)?;
    let process = process_counters((pid_tgid >> 32) as u32, pending.cgroup_id);
    if (-MAX_ERRNO..0).contains(&ret) {
        update_both(cgroup, process, |c| {
            // SAFETY: field address within a valid map value.
            add(unsafe { &raw mut (*c).mmap_failures }, 1);
        });
        return Ok(0);
    }
    let kind = classify_mmap(pending.prot, pending.flags);
    if kind >= mapping_kind::COUNT {
        return Ok(0);
    }
    let bytes = page_round_up(pending.len);
    update_both(cgroup, process, |c| {
        // SAFETY: field addresses within a valid map value; `kind` is bounds-checked above.
        unsafe {
            add(&raw mut (*c).mmap_calls, 1);
            add((&raw mut (*c).mmap_bytes).cast::<u64>().add(kind), bytes);
        }
    });
    Ok(0)
}

/// syscalls:sys_enter_munmap: count what is asked to be unmapped.
#[tracepoint]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    try_sys_enter_munmap(&ctx).unwrap_or(0)
}

fn try_sys_enter_munmap(ctx: &TracePointContext) -> Result<u32, i64> {
    let cgroup_id = current_cgroup_id();
    if !is_tracked(cgroup_id) {
        return Ok(0);
    }
    // SAFETY: syscall record offset (size_t len @24).
    let len = unsafe { ctx.read_at::<u64>(SYSCALL_ARG1)? };
    let bytes = page_round_up(len);
    let cgroup = cgroup_counters(cgroup_id).ok_or(0)?;
    let process = process_counters(current_tgid(), cgroup_id);
    update_both(cgroup, process, |c| {
        // SAFETY: field addresses within a valid map value.
        unsafe {
            add(&raw mut (*c).munmap_calls, 1);
            add(&raw mut (*c).munmap_bytes, bytes);
        }
    });
    Ok(0)
}

/// syscalls:sys_exit_brk: the return value is the new program break (the old one on failure),
/// so exit alone tells how far the heap moved.
#[tracepoint]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    try_sys_exit_brk(&ctx).unwrap_or(0)
}

fn try_sys_exit_brk(ctx: &TracePointContext) -> Result<u32, i64> {
    let cgroup_id = current_cgroup_id();
    if !is_tracked(cgroup_id) {
        return Ok(0);
    }
    // SAFETY: syscall exit record offset (long ret @16).
    let new_brk = unsafe { ctx.read_at::<u64>(SYSCALL_RET)? };
    let cgroup = cgroup_counters(cgroup_id).ok_or(0)?;
    let process = process_counters(current_tgid(), cgroup_id);
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
    update_both(cgroup, process, |c| {
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
