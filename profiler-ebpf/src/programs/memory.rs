//! Resident memory: kmem:rss_stat, which fires about once per page fault, aggregated into
//! the counters and high-water marks, and the faulting stack sampled.

use core::{
    intrinsics::{atomic_xchg, AtomicOrdering},
    ptr::NonNull,
};

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use profiler_common::{
    inherited,
    record::{RSS_CURR, RSS_MEMBER, RSS_MM_ID, RSS_SIZE},
    rss_member, MemoryCounters, MmOwner, ProcessCounters,
};

use crate::{
    atomics::add_signed,
    counters::{
        counted_part, existing_process, process_counters, raise_resident_peaks, release_resident,
        take_back_if_released, target_counters, window_peaks,
    },
    maps::MM_OWNERS,
    sampling::sample_fault,
    targets::current_target,
};

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
    // `faulting_tgid` is 0 for events raised outside the process (tgid 0 is never traced).
    let (target_id, process, target, faulting_tgid) = if curr != 0 {
        let Some((tgid, target_id)) = current_target() else {
            return Ok(0);
        };
        let process = process_counters(tgid, target_id).ok_or(0)?;
        // SAFETY: map value pointer from a successful lookup.
        let known_mm = unsafe { (*process.as_ptr()).mm_id };
        // SAFETY: as above.
        let shares_parents =
            unsafe { (*process.as_ptr()).inherited } & inherited::SHARED_WITH_PARENT != 0;
        if known_mm != mm_id && shares_parents {
            // An address space another live process owns: a vfork / posix_spawn / CLONE_VM
            // child before its exec. rss_stat counts the mm, not the process: its memory is
            // the owner's, counted once. (Looked up only off the fast path: a process's own
            // mm matches `known_mm`.)
            if let Some((owner_target, owner_process)) = shared_owner(mm_id, tgid) {
                let target = target_counters(owner_target).ok_or(0)?;
                return Ok(account(
                    ctx,
                    owner_target,
                    owner_process,
                    target,
                    tgid,
                    member,
                    size,
                ));
            }
        }
        let target = target_counters(target_id).ok_or(0)?;
        if known_mm != mm_id {
            // A new address space after exec: the old one's memory leaves the sums. (mm_id 0 is
            // a first sight: a fresh entry holds nothing, and one seeded by user space from
            // /proc holds this very address space's figures, which the exchange below updates.)
            // The new one is remembered for events raised outside the process.
            if known_mm != 0 {
                release_resident(target, process);
                let _ = MM_OWNERS.remove(known_mm);
                // A new address space (exec): the process built it, nothing is inherited.
                // SAFETY: map value pointer from a successful lookup.
                unsafe { (*process.as_ptr()).inherited = 0 };
            }
            // SAFETY: as above.
            unsafe { (*process.as_ptr()).mm_id = mm_id };
            let owner = MmOwner {
                tgid,
                _pad: 0,
                target_id,
            };
            let _ = MM_OWNERS.insert(mm_id, owner, 0);
        }
        (target_id, process, target, tgid)
    } else {
        // Raised by another task: reclaim, or the teardown of an address space.
        let Some(owner) = MM_OWNERS.get_ptr(mm_id) else {
            return Ok(0);
        };
        // SAFETY: map value pointer from a successful lookup.
        let owner = unsafe { *owner };
        let Some(process) = existing_process(owner.tgid) else {
            return Ok(0);
        };
        // SAFETY: as above.
        if unsafe { (*process.as_ptr()).mm_id } != mm_id {
            return Ok(0);
        }
        let target = target_counters(owner.target_id).ok_or(0)?;
        (owner.target_id, process, target, 0)
    };
    Ok(account(
        ctx,
        target_id,
        process,
        target,
        faulting_tgid,
        member,
        size,
    ))
}

/// How much of a change of the process's RSS counter `member` from `old` to `size` counts in
/// its target. All of it, unless the process runs on an inherited address space (a fork
/// child before its exec): then the size at its first event is the inherited part (pages
/// shared copy-on-write with the parent, which the parent already counts), and only what lies
/// above it counts, on the way up and on the way down.
#[inline(always)]
fn counted_change(process: *mut ProcessCounters, member: usize, old: i64, size: i64) -> i64 {
    // SAFETY: field addresses within a valid map value; `member` < COUNT. A process on an
    // inherited address space is one thread until its exec, so these plain writes do not race
    // with its own events.
    unsafe {
        let flags = (*process).inherited;
        if flags & inherited::ADDRESS_SPACE == 0 {
            return size - old;
        }
        let known = inherited::size_known(member);
        if flags & known == 0 {
            *(&raw mut (*process).inherited_rss)
                .cast::<i64>()
                .add(member) = size;
            (*process).inherited = flags | known;
            return 0;
        }
    }
    counted_part(process, member, size) - counted_part(process, member, old)
}

/// The process that owns `mm_id` and its target, when that is a live process other than
/// `tgid` still on that address space.
#[inline(always)]
fn shared_owner(mm_id: u32, tgid: u32) -> Option<(u64, NonNull<ProcessCounters>)> {
    // SAFETY: map value pointer from a successful lookup, copied out at once.
    let owner = unsafe { *MM_OWNERS.get_ptr(mm_id)? };
    if owner.tgid == tgid {
        return None;
    }
    let process = existing_process(owner.tgid)?;
    // SAFETY: map value pointer from a successful lookup.
    (unsafe { (*process.as_ptr()).mm_id } == mm_id).then_some((owner.target_id, process))
}

/// Replaces the process's counter for `member` with `size` and adds the difference to its
/// target, raising the high-water marks on growth (and sampling the stack of the faulting
/// task, when it is the one that grew it).
#[inline(always)]
fn account(
    ctx: &TracePointContext,
    target_id: u64,
    process: NonNull<ProcessCounters>,
    target: NonNull<MemoryCounters>,
    faulting_tgid: u32,
    member: usize,
    size: i64,
) -> u32 {
    let (process, target) = (process.as_ptr(), target.as_ptr());

    // SAFETY: field addresses within valid map values; `member` < COUNT.
    unsafe {
        let process_field = (&raw mut (*process).counters.rss_bytes)
            .cast::<i64>()
            .add(member);
        let old = atomic_xchg::<i64, { AtomicOrdering::SeqCst }>(process_field, size);
        let delta = counted_change(process, member, old, size);
        if delta != 0 {
            add_signed(
                (&raw mut (*target).rss_bytes).cast::<i64>().add(member),
                delta,
            );
        }
        // The process's exit may have released its memory on another CPU since this program
        // found its entry: then this update must not stay in the sums.
        take_back_if_released(target, process, member);
        if delta > 0 {
            raise_resident_peaks(&raw mut (*process).counters, None);
            raise_resident_peaks(target, window_peaks(target_id));
            // Growth seen by the faulting task itself: its user stack is the code that made
            // the memory. (Swap growth is memory leaving, not arriving.)
            if faulting_tgid != 0 && member != rss_member::SWAP {
                sample_fault(
                    ctx,
                    faulting_tgid,
                    target_id,
                    process,
                    delta as u64,
                    member as u32,
                );
            }
        }
    }
    0
}
