//! Mapping syscalls: mmap, munmap, mremap and mprotect (arguments remembered at entry, counted
//! at exit once the result is known) and brk.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use profiler_common::{
    call_kind, classify_mmap, drop_reason, mapping_kind, mapping_op, page_round_up,
    record::{SYSCALL_ARGS, SYSCALL_RET},
    stack_source, PendingCall,
};

use crate::{
    atomics::add,
    counters::{process_counters, target_counters, update_both},
    events::emit_mapping,
    helpers::{count_drop, current_tgid},
    maps::PENDING_CALLS,
    sampling::sample_reservation,
    targets::current_target,
};

/// Largest errno a syscall returns as a negative value.
const MAX_ERRNO: i64 = 4095;

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
            *arg = unsafe { ctx.read_at::<u64>(SYSCALL_ARGS[index])? };
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
            let process = process.as_ptr();
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
