//! Stack sampling of allocating code: which targets are sampled, byte-weighted fault samples,
//! reservation samples, and the ring buffer events with the user stack (frame-pointer return
//! addresses, and optionally registers and a raw stack copy for `.eh_frame` unwinding).

use core::intrinsics::{atomic_xchg, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::generated::{
        bpf_get_current_task_btf, bpf_get_stack, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_task_pt_regs,
    },
    programs::TracePointContext,
    EbpfContext,
};
use profiler_common::{
    drop_reason, event_kind, stack_source, EventHeader, ProcessCounters, StackSampleEvent,
    StackSampling, StackSnapshotEvent, MAX_STACK_FRAMES, STACK_SNAPSHOT_BYTES,
};

use crate::{
    atomics::add,
    config::{flag_set, STACK_SNAPSHOTS},
    events::submit_flags,
    helpers::{count_drop, now_ns},
    maps::{EVENTS, SAMPLED_TARGETS, SAMPLING_ACTIVE},
};

// x86_64 `struct pt_regs` offsets (bp, ip, sp), for stack snapshots.
const PT_REGS_BP: usize = 4 * 8;
const PT_REGS_IP: usize = 16 * 8;
const PT_REGS_SP: usize = 19 * 8;

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
pub(crate) fn sample_fault(
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
pub(crate) fn sample_reservation(
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
        entry.submit(submit_flags());
    } else {
        let Some(mut entry) = EVENTS.reserve::<StackSampleEvent>(0) else {
            count_drop(drop_reason::RINGBUF_FULL);
            return;
        };
        // SAFETY: as above.
        unsafe { fill_sample(ctx, entry.as_mut_ptr(), origin) };
        entry.submit(submit_flags());
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
        // A stack shorter than the snapshot ends in an unmapped page: retry with less. The
        // main thread's stack ends 3-11 KiB above `sp` in `main` (ASLR places its top), so a
        // single fallback to 2 KiB lost the callers of shallow code in about one run in six;
        // the ladder keeps at least half of what is there.
        let mut length = 0u32;
        for size in [
            STACK_SNAPSHOT_BYTES,
            STACK_SNAPSHOT_BYTES * 3 / 4,
            STACK_SNAPSHOT_BYTES / 2,
            STACK_SNAPSHOT_BYTES * 3 / 8,
            STACK_SNAPSHOT_BYTES / 4,
            STACK_SNAPSHOT_BYTES / 8,
            STACK_SNAPSHOT_BYTES / 16,
        ] {
            if bpf_probe_read_user(snapshot.cast(), size as u32, sp as *const _) == 0 {
                length = size as u32;
                break;
            }
        }
        (*sample).snapshot_len = length;
    }
}
