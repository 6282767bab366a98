//! Process lifecycle: task creation (threads and processes), arrival in a cgroup, exit and
//! exec.

use core::{
    intrinsics::{atomic_xchg, AtomicOrdering},
    ptr::NonNull,
};

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, generated::bpf_get_current_task},
    macros::tracepoint,
    programs::TracePointContext,
};
use profiler_common::{
    drop_reason, exit_mode, inherited, mapping_op,
    record::{
        ATTACH_DST_ID, ATTACH_DST_ROOT, ATTACH_PID, EXEC_PID, NEWTASK_CLONE_FLAGS, NEWTASK_PID,
    },
    ProcessCounters, ProcessExitEvent, CLONE_THREAD, CLONE_VM,
};

use crate::{
    atomics::{add, add_signed, raise_signed},
    config::{
        global_u32, global_u8, EXIT_GROUP_DEAD_OFFSET, EXIT_MODE, SIGNAL_LIVE_OFFSET,
        TASK_SIGNAL_OFFSET,
    },
    counters::{
        change_live_tasks, existing_process, new_process_counters, process_counters,
        raise_resident_peaks, release_at_exit, release_resident, target_counters, update_both,
        EXIT_CLAIM_NS,
    },
    events::{emit_mapping, emit_process_start, fill_process_exit, submit_flags},
    helpers::{count_drop, now_ns},
    maps::{EVENTS, EXIT_CLAIMS, MM_OWNERS, PROCESS_COUNTERS, TRACKED_TGIDS},
    targets::{current_target, target_of},
};

/// cgroup v2's hierarchy id. cgroup_attach_task also fires for v1 hierarchies, whose ids live
/// in another namespace and would collide.
const CGROUP2_HIERARCHY_ID: i32 = 0;

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
        let child = child.as_ptr();
        // SAFETY: field addresses within a valid map value.
        unsafe {
            let live = add_signed(&raw mut (*child).counters.live_tasks, 1);
            raise_signed(&raw mut (*child).counters.peak_live_tasks, live);
            // A copy of the parent's address space (or the parent's own, CLONE_VM) until
            // its exec: the parent counts those pages.
            (*child).inherited = if clone_flags & CLONE_VM != 0 {
                inherited::ADDRESS_SPACE | inherited::SHARED_WITH_PARENT
            } else {
                inherited::ADDRESS_SPACE
            };
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
    add(unsafe { &raw mut (*target.as_ptr()).tasks_attached }, 1);
    let process = if moving_itself_whole {
        new_process_counters(tgid, target_id, 1, 0)
    } else {
        None
    };
    if let Some(process) = process {
        // SAFETY: field address within a valid map value.
        let attached = unsafe { &raw mut (*process.as_ptr()).counters.tasks_attached };
        add(attached, 1);
        // What it brought stays charged where it came from (cgroup v2 does not move charges),
        // and is most often a runtime's or headroom's fork before the exec of the workload:
        // only its growth here counts.
        // SAFETY: field address within a valid map value.
        unsafe { (*process.as_ptr()).inherited = inherited::ADDRESS_SPACE };
    }
    change_live_tasks(target_id, target, process, 1);
    if moving_itself_whole {
        emit_process_start(tgid, 0, target_id);
    }
    Ok(0)
}

/// sched:sched_process_exit fires once per exiting task (pre-6.16 after the task dropped its
/// address space, from 6.16 before). Every task's exit is counted; the process's own exit
/// (its last thread's) is reported once, with its final counters, and frees its entries.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    try_sched_process_exit(&ctx).unwrap_or(0)
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let Some((tgid, target_id)) = current_target() else {
        return Ok(0);
    };
    let target = target_counters(target_id).ok_or(0)?;
    // Never created here: once the process's exit is reported its entry is gone, and a
    // thread exiting after that must not bring it back.
    let process = existing_process(tgid);
    update_both(target, process, |c| {
        // SAFETY: field address within a valid map value.
        add(unsafe { &raw mut (*c).tasks_exited }, 1);
    });
    change_live_tasks(target_id, target, process, -1);
    if !process_is_dead(ctx, process) || !claim_exit(tgid) {
        return Ok(0);
    }
    let _ = TRACKED_TGIDS.remove(tgid);
    // SAFETY: field address within a valid map value.
    add(unsafe { &raw mut (*target.as_ptr()).processes_exited }, 1);
    let Some(process) = process else {
        // No entry (evicted, or the map was full): counted, nothing to report.
        return Ok(0);
    };
    match EVENTS.reserve::<ProcessExitEvent>(0) {
        Some(mut entry) => {
            fill_process_exit(entry.as_mut_ptr(), tgid, target_id, process);
            entry.submit(submit_flags());
        }
        None => count_drop(drop_reason::RINGBUF_FULL),
    }
    // The address space is going (6.16+) or gone (before, its teardown already counted
    // through `MM_OWNERS`): take what is left of the process's resident memory out of the
    // target, forget its mm so teardown events are not counted again, and free its slot.
    release_at_exit(target, process);
    // SAFETY: map value pointer from a successful lookup, read before the entry is removed.
    let mm_id = unsafe { (*process.as_ptr()).mm_id };
    let _ = MM_OWNERS.remove(mm_id);
    let _ = PROCESS_COUNTERS.remove(tgid);
    Ok(0)
}

/// Whether the exiting task is the last of its process, by the means the loader chose for
/// this kernel (`EXIT_MODE` is a verifier-known constant: only one branch is loaded).
#[inline(always)]
fn process_is_dead(ctx: &TracePointContext, process: Option<NonNull<ProcessCounters>>) -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    let is_leader = pid_tgid as u32 == (pid_tgid >> 32) as u32;
    match global_u8(&EXIT_MODE) {
        exit_mode::GROUP_DEAD_FIELD => {
            let offset = global_u32(&EXIT_GROUP_DEAD_OFFSET) as usize;
            // SAFETY: `bool group_dead` of sched_process_exit's record, at the offset tracefs
            // gave the loader.
            unsafe { ctx.read_at::<u8>(offset) }.is_ok_and(|dead| dead != 0)
        }
        exit_mode::SIGNAL_LIVE => match live_threads() {
            // do_exit decrements `live` before the tracepoint: 0 means no thread is left.
            Some(live) => live <= 0,
            None => is_leader,
        },
        _ => match process {
            // SAFETY: map value pointer from a successful lookup.
            Some(process) if unsafe { (*process.as_ptr()).tasks_known } != 0 => {
                // SAFETY: as above.
                let live = unsafe {
                    core::ptr::read_volatile(&raw const (*process.as_ptr()).counters.live_tasks)
                };
                live <= 0
            }
            _ => is_leader,
        },
    }
}

/// `current->signal->live`: the threads of the current process that have not passed the
/// start of do_exit. Offsets come from the kernel's BTF, through the loader.
#[inline(always)]
fn live_threads() -> Option<i32> {
    let signal_offset = global_u32(&TASK_SIGNAL_OFFSET) as usize;
    let live_offset = global_u32(&SIGNAL_LIVE_OFFSET) as usize;
    // SAFETY: bpf_get_current_task has no preconditions; both reads go through
    // bpf_probe_read_kernel, which fails cleanly on a bad address.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        let signal = bpf_probe_read_kernel(task.add(signal_offset).cast::<*const u8>()).ok()?;
        if signal.is_null() {
            return None;
        }
        bpf_probe_read_kernel(signal.add(live_offset).cast::<i32>()).ok()
    }
}

/// Claims the report of a dead process's exit: true for exactly one of its threads. With
/// the record's `group_dead` that is the thread that has it; with the other means, every
/// thread that exits after the last one left `signal->live` (or the map's count) at zero
/// looks dead too, so the first to swap its time into `EXIT_CLAIMS` wins. A claim older
/// than `EXIT_CLAIM_NS` (10 s) belongs to an earlier process with the same pid (every
/// thread of a process passes this tracepoint before its pid can be freed; a process that
/// reuses the pid sooner has no entry to report, since none is created within the claim).
#[inline(always)]
fn claim_exit(tgid: u32) -> bool {
    if global_u8(&EXIT_MODE) == exit_mode::GROUP_DEAD_FIELD {
        return true;
    }
    let now = now_ns();
    let _ = EXIT_CLAIMS.insert(tgid, 0u64, BPF_NOEXIST as u64);
    let Some(claim) = EXIT_CLAIMS.get_ptr_mut(tgid) else {
        // The map could not hold it: report, rather than lose the exit.
        return true;
    };
    // SAFETY: map value pointer from a successful lookup, aligned to 8.
    let previous = unsafe { atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(claim, now) };
    now.saturating_sub(previous) > EXIT_CLAIM_NS
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
    let tgid = unsafe { ctx.read_at::<i32>(EXEC_PID)? } as u32;
    let target = target_counters(target_id).ok_or(0)?;
    let process = process_counters(tgid, target_id);
    update_both(target, process, |c| {
        // SAFETY: field address within a valid map value.
        add(unsafe { &raw mut (*c).execs }, 1);
    });
    if let Some(process_ptr) = process {
        // SAFETY: map value pointer from a successful lookup.
        let was_inherited = unsafe { (*process_ptr.as_ptr()).inherited } != 0;
        if was_inherited {
            // The inherited address space is gone (exec replaced it; rss_stat of the new one
            // may not have come yet): what is left of the counted part leaves the sums, and
            // the next event is a first sight of an address space the process built.
            release_resident(target, process_ptr);
            // SAFETY: as above.
            let old_mm = unsafe { (*process_ptr.as_ptr()).mm_id };
            if old_mm != 0 {
                let _ = MM_OWNERS.remove(old_mm);
            }
        }
        let process = process_ptr.as_ptr();
        // SAFETY: map value pointer from a successful lookup.
        unsafe {
            if was_inherited {
                (*process).inherited = 0;
                (*process).mm_id = 0;
            }
            (*process).brk_start = 0;
            (*process).brk_current = 0;
            (*process).brk_highest = 0;
            // Like the kernel's VmHWM, the process's resident peak is its address space's: a
            // new one starts from what it holds now, not from the image exec replaced (for a
            // runtime's fork, its parent's copy).
            (*process).counters.resident_peak_bytes = 0;
            (*process).counters.anon_peak_bytes = 0;
            (*process).counters.file_peak_bytes = 0;
        }
        // SAFETY: field address within a valid map value.
        raise_resident_peaks(unsafe { &raw mut (*process).counters }, None);
    }
    emit_mapping(tgid, target_id, mapping_op::EXEC, [0; 6]);
    Ok(0)
}
