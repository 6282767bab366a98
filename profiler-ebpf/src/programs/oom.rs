//! OOM kills: oom:mark_victim, counted for the victim's target and reported to user space.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use profiler_common::{
    drop_reason, event_kind, oom_details, record::VICTIM_PID, EventHeader, OomVictimEvent,
};

use crate::{
    atomics::add,
    config::{
        global_u32, OOM_ANON_RSS_OFFSET, OOM_FILE_RSS_OFFSET, OOM_SHMEM_RSS_OFFSET,
        OOM_TOTAL_VM_OFFSET,
    },
    counters::{existing_process, target_counters, update_both},
    helpers::{count_drop, now_ns},
    maps::EVENTS,
};

/// oom:mark_victim: the OOM killer chose a process. Counted for its target and reported.
#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    try_mark_victim(&ctx).unwrap_or(0)
}

/// One of the record's sizes in kB, as bytes; 0 when this kernel's record has no such field
/// (the loader found its offset in tracefs, or 0 when absent: upstream kernels before 6.9
/// carry only `pid`, and reading past it would return stale bytes).
#[inline(always)]
fn size_field(ctx: &TracePointContext, offset: &'static u32) -> u64 {
    let offset = global_u32(offset);
    if offset == 0 {
        return 0;
    }
    // SAFETY: an `unsigned long` field of mark_victim's record at the offset tracefs gave.
    unsafe { ctx.read_at::<u64>(offset as usize) }
        .unwrap_or(0)
        .saturating_mul(1024)
}

fn try_mark_victim(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: offset of mark_victim's record (int pid @8, checked against tracefs at load).
    let pid = unsafe { ctx.read_at::<i32>(VICTIM_PID)? };
    let victim = pid as u32;
    // The killer runs in whichever task hit the limit; the victim is found by its pid.
    let Some(process) = existing_process(victim) else {
        return Ok(0);
    };
    // SAFETY: map value pointer from a successful lookup.
    let target_id = unsafe { (*process.as_ptr()).target_id };
    if let Some(target) = target_counters(target_id) {
        update_both(target, Some(process), |c| {
            // SAFETY: field address within a valid map value.
            add(unsafe { &raw mut (*c).oom_kills }, 1);
        });
    }
    let details = if global_u32(&OOM_TOTAL_VM_OFFSET) != 0 {
        oom_details::SIZES
    } else {
        0
    };
    let Some(mut entry) = EVENTS.reserve::<OomVictimEvent>(0) else {
        count_drop(drop_reason::RINGBUF_FULL);
        return Ok(0);
    };
    // Every field written, padding included: older verifiers refuse to copy unwritten stack.
    entry.write(OomVictimEvent {
        header: EventHeader {
            kind: event_kind::OOM_VICTIM,
            tgid: victim,
            target_id,
            timestamp_ns: now_ns(),
        },
        total_vm_bytes: size_field(ctx, &OOM_TOTAL_VM_OFFSET),
        anon_rss_bytes: size_field(ctx, &OOM_ANON_RSS_OFFSET),
        file_rss_bytes: size_field(ctx, &OOM_FILE_RSS_OFFSET),
        shmem_rss_bytes: size_field(ctx, &OOM_SHMEM_RSS_OFFSET),
        details,
        _pad: 0,
    });
    // Rare, and read while the victim is still there (user space names it from /proc): the
    // reader is woken at once, unlike for the other records (see `events::submit_flags`).
    entry.submit(aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64);
    Ok(0)
}
