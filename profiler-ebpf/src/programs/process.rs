//! Process lifecycle: task creation (threads and processes), arrival in a cgroup, exit and
//! exec.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use profiler_common::{drop_reason, mapping_op, CLONE_THREAD};

use crate::{
    atomics::{add, add_signed, raise_signed},
    counters::{
        change_live_tasks, new_process_counters, process_counters, release_resident,
        target_counters, update_both,
    },
    events::{emit_mapping, emit_process_exit, emit_process_start},
    helpers::count_drop,
    maps::{MM_OWNERS, PROCESS_COUNTERS, TRACKED_TGIDS},
    targets::{current_target, target_of},
};

// Tracepoint field offsets, read off /sys/kernel/tracing/events/*/*/format. These records are
// stable ABI for syscalls:* and have been stable for years for the others.
const NEWTASK_PID: usize = 8;
const NEWTASK_CLONE_FLAGS: usize = 32;
const PROCESS_EXIT_GROUP_DEAD: usize = 32;
const PROCESS_EXEC_PID: usize = 12;
const ATTACH_DST_ROOT: usize = 8;
const ATTACH_DST_ID: usize = 16;
const ATTACH_PID: usize = 24;

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
