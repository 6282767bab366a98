//! Ring buffer events about processes and mappings (stack samples are in `sampling`).

use core::ptr::NonNull;

use aya_ebpf::helpers::bpf_get_current_comm;
use profiler_common::{
    drop_reason, event_kind, EventHeader, MappingEvent, ProcessCounters, ProcessExitEvent,
    ProcessStartEvent,
};

use crate::{
    config::{flag_set, TRACK_REGIONS},
    helpers::{count_drop, now_ns},
    maps::EVENTS,
};

/// How a record is submitted: without waking the reader, unless the ring is a quarter full.
/// A wakeup is an interrupt the kernel raises on this CPU; in a virtual machine (where most
/// nodes run) that is a VM exit, and it was most of what a process start or exit cost: about
/// 8 µs and 9.5 µs per run on this project's VM, 1.7 µs and 1.3 µs without (BPF run-time
/// statistics, 3,000 fork+exec+exit of /bin/true). User space reads the ring every 100 ms
/// anyway (`EventStream::next_batch`); a burst that fills a quarter of it wakes the reader at
/// once, before the ring overflows.
#[inline(always)]
pub(crate) fn submit_flags() -> u64 {
    use aya_ebpf::bindings::{
        BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
    };
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let size = EVENTS.query(BPF_RB_RING_SIZE as u64);
    if waiting.saturating_mul(4) >= size {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

pub(crate) fn emit_process_start(tgid: u32, parent_tgid: u32, target_id: u64) {
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
    entry.submit(submit_flags());
}

/// Fills a process exit event in place (it is too large for the BPF stack) with the final
/// counters of `process`, counting its own exit in them.
#[inline(always)]
pub(crate) fn fill_process_exit(
    event: *mut ProcessExitEvent,
    tgid: u32,
    target_id: u64,
    process: NonNull<ProcessCounters>,
) {
    // SAFETY: `event` points at a reserved, 8-byte aligned ring buffer slot of the right size;
    // `process` is a map value pointer from a successful lookup. Every byte of the slot is
    // written (the counters copied whole, the comm by the helper or zeroed).
    unsafe {
        (*event).header = EventHeader {
            kind: event_kind::PROCESS_EXIT,
            tgid,
            target_id,
            timestamp_ns: now_ns(),
        };
        core::ptr::copy_nonoverlapping(process.as_ptr(), &raw mut (*event).process, 1);
        (*event).process.counters.processes_exited += 1;
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
    }
}

/// Sends one mapping change to user space (capture sessions only).
#[inline(always)]
pub(crate) fn emit_mapping(tgid: u32, target_id: u64, op: u32, args: [u64; 6]) {
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
    entry.submit(submit_flags());
}
