//! OOM kills: oom:mark_victim, counted for the victim's target and reported to user space.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use profiler_common::{drop_reason, event_kind, EventHeader, OomVictimEvent};

use crate::{
    atomics::add,
    counters::{target_counters, update_both},
    helpers::{count_drop, now_ns},
    maps::{EVENTS, PROCESS_COUNTERS},
};

// Tracepoint field offsets, read off /sys/kernel/tracing/events/*/*/format. These records are
// stable ABI for syscalls:* and have been stable for years for the others.
const VICTIM_PID: usize = 8;
const VICTIM_TOTAL_VM_KB: usize = 16;
const VICTIM_ANON_RSS_KB: usize = 24;
const VICTIM_FILE_RSS_KB: usize = 32;
const VICTIM_SHMEM_RSS_KB: usize = 40;

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
