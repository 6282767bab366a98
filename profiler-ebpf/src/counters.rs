//! Per-target and per-process counters: finding or creating their map entries, applying an
//! update to both, live task counts, resident memory and its lifetime and per-window
//! high-water marks.
//!
//! Map value pointers are passed around as `NonNull` (`Option<NonNull<T>>` is one register, null
//! for none). An `Option<*mut T>` is a tag and a pointer; spilled to the stack with no pointer
//! written, older verifiers (6.1) refuse the program for reading the unwritten slot.

use core::{
    intrinsics::{atomic_xchg, AtomicOrdering},
    ptr::NonNull,
};

use aya_ebpf::bindings::BPF_NOEXIST;
use profiler_common::{
    drop_reason, inherited, rss_member, MemoryCounters, ProcessCounters, WindowKey, WindowPeaks,
};

use crate::{
    atomics::{add_signed, raise, raise_signed},
    config::{flag_set, TRACK_WINDOWS},
    helpers::{count_drop, now_ns},
    maps::{
        EXIT_CLAIMS, MM_OWNERS, PROCESS_COUNTERS, SCRATCH, TARGET_COUNTERS, WINDOW_EPOCH,
        WINDOW_PEAKS, ZERO_TARGET,
    },
};

fn positive(value: i64) -> u64 {
    if value > 0 {
        value as u64
    } else {
        0
    }
}

/// The counters of a target, created zeroed on first sight.
#[inline(always)]
pub(crate) fn target_counters(target_id: u64) -> Option<NonNull<MemoryCounters>> {
    if let Some(counters) = TARGET_COUNTERS
        .get_ptr_mut(target_id)
        .and_then(NonNull::new)
    {
        return Some(counters);
    }
    let zero = ZERO_TARGET.get_ptr(0)?;
    // SAFETY: a per-CPU array value that nothing writes: valid for reads, all zero. The insert
    // copies from it.
    let zero: &MemoryCounters = unsafe { &*zero };
    // NOEXIST: another CPU may have created it in the meantime; then we use theirs.
    if TARGET_COUNTERS
        .insert(target_id, zero, BPF_NOEXIST as u64)
        .is_err()
        && TARGET_COUNTERS.get_ptr_mut(target_id).is_none()
    {
        count_drop(drop_reason::TARGET_MAP_FULL);
        return None;
    }
    TARGET_COUNTERS
        .get_ptr_mut(target_id)
        .and_then(NonNull::new)
}

/// This window's high-water marks of a target (see `WindowKey`).
#[inline(always)]
pub(crate) fn window_peaks(target_id: u64) -> Option<NonNull<WindowPeaks>> {
    if !flag_set(&TRACK_WINDOWS) {
        return None;
    }
    // SAFETY: array value pointer from a successful lookup.
    let epoch = unsafe { *WINDOW_EPOCH.get_ptr(0)? };
    let key = WindowKey {
        target_id,
        slot: epoch & 1,
    };
    if let Some(peaks) = WINDOW_PEAKS.get_ptr_mut(key).and_then(NonNull::new) {
        let stale = peaks.as_ptr();
        // SAFETY: map value pointer from a successful lookup. A slot left over from two
        // windows ago (see `WindowPeaks::epoch`) starts this window afresh; the caller then
        // raises it to the current sums.
        unsafe {
            if (*stale).epoch != epoch {
                *stale = WindowPeaks {
                    epoch,
                    ..WindowPeaks::default()
                };
            }
        }
        return Some(peaks);
    }
    let fresh = WindowPeaks {
        epoch,
        ..WindowPeaks::default()
    };
    let _ = WINDOW_PEAKS.insert(key, fresh, BPF_NOEXIST as u64);
    WINDOW_PEAKS.get_ptr_mut(key).and_then(NonNull::new)
}

/// The counters of a process if it has an entry (never creates one).
#[inline(always)]
pub(crate) fn existing_process(tgid: u32) -> Option<NonNull<ProcessCounters>> {
    PROCESS_COUNTERS.get_ptr_mut(tgid).and_then(NonNull::new)
}

/// The counters of a process, created on first sight (`tasks_known` 0: it was already running).
#[inline(always)]
pub(crate) fn process_counters(tgid: u32, target_id: u64) -> Option<NonNull<ProcessCounters>> {
    if let Some(process) = existing_process(tgid) {
        let process_ptr = process.as_ptr();
        // SAFETY: map value pointer from a successful lookup. Written only on a change (a
        // migration), so the hot paths do not dirty the entry's cache line for nothing.
        let moved_from = unsafe { (*process_ptr).target_id };
        if moved_from != target_id {
            migrate(tgid, process, moved_from, target_id);
        }
        return Some(process);
    }
    // A process whose exit was just reported is dead: its other threads, still on their way
    // out, raise events (before 6.2 each exiting thread's exit_mm flushes its cached RSS
    // changes through rss_stat) that must not bring its entry back with its whole address
    // space in the sums, where nothing would ever take it out again.
    if exit_just_reported(tgid) {
        return None;
    }
    new_process_counters(tgid, target_id, 0, BPF_NOEXIST as u64)
}

/// How long a process's exit claim stands (see `programs::process::claim_exit`). On hardware
/// every thread of a process passes its exit within milliseconds; an emulated 6.1 guest
/// (the kernel matrix) spread a killed process's exit_mm flushes over more than the 1 s this
/// was, and its entry came back with 15 MB in the sums. 10 s costs nothing real: a pid
/// reused within it only has its entry created on its first event after the claim, from the
/// address space's absolute counters, so nothing it holds is lost.
pub(crate) const EXIT_CLAIM_NS: u64 = 10_000_000_000;

/// Whether the exit of process `tgid` was reported within [`EXIT_CLAIM_NS`] (only kernels
/// without `group_dead` keep claims; there the question does not arise the same way).
#[inline(always)]
fn exit_just_reported(tgid: u32) -> bool {
    match EXIT_CLAIMS.get_ptr(tgid) {
        // SAFETY: map value pointer from a successful lookup.
        Some(claim) => now_ns().saturating_sub(unsafe { *claim }) <= EXIT_CLAIM_NS,
        None => false,
    }
}

/// A process moved to another target (runc exec, `kubectl exec`, CLONE_INTO_CGROUP, a
/// systemd scope): its resident memory leaves the old target's sums and joins the new one's,
/// and events of its address space raised by others (reclaim, teardown) follow it.
#[inline(always)]
fn migrate(tgid: u32, process: NonNull<ProcessCounters>, from: u64, to: u64) {
    let process_ptr = process.as_ptr();
    let old = TARGET_COUNTERS.get_ptr_mut(from).and_then(NonNull::new);
    if let Some(new) = target_counters(to) {
        for member in 0..rss_member::COUNT {
            let counted = counted_resident(process_ptr, member);
            if counted == 0 {
                continue;
            }
            // SAFETY: field addresses within valid map values; `member` < COUNT.
            unsafe {
                if let Some(old) = old {
                    add_signed(
                        (&raw mut (*old.as_ptr()).rss_bytes)
                            .cast::<i64>()
                            .add(member),
                        -counted,
                    );
                }
                add_signed(
                    (&raw mut (*new.as_ptr()).rss_bytes)
                        .cast::<i64>()
                        .add(member),
                    counted,
                );
            }
        }
        raise_resident_peaks(new.as_ptr(), None);
    }
    // SAFETY: map value pointers from successful lookups.
    unsafe {
        (*process_ptr).target_id = to;
        let mm_id = (*process_ptr).mm_id;
        if mm_id != 0 {
            if let Some(owner) = MM_OWNERS.get_ptr_mut(mm_id) {
                if (*owner).tgid == tgid {
                    (*owner).target_id = to;
                }
            }
        }
    }
}

/// What of a process's RSS counter `member` its target's sum holds: all of it, or on an
/// inherited address space only what lies above the inherited size.
#[inline(always)]
fn counted_resident(process: *mut ProcessCounters, member: usize) -> i64 {
    // SAFETY: field address within a valid map value; `member` < COUNT.
    let now = unsafe {
        core::ptr::read_volatile(
            (&raw const (*process).counters.rss_bytes)
                .cast::<i64>()
                .add(member),
        )
    };
    counted_part(process, member, now)
}

/// The part of an RSS counter's `value` that its target's sum holds: all of it, or on an
/// inherited address space what lies above the inherited size (see
/// `programs::memory::counted_change`).
#[inline(always)]
pub(crate) fn counted_part(process: *const ProcessCounters, member: usize, value: i64) -> i64 {
    // SAFETY: field addresses within a valid map value; `member` < COUNT.
    unsafe {
        if (*process).inherited & inherited::ADDRESS_SPACE == 0 {
            return value;
        }
        let base = (&raw const (*process).inherited_rss)
            .cast::<i64>()
            .add(member);
        (value - *base).max(0)
    }
}

/// Creates (or with `flags` = BPF_ANY, replaces) the entry of a process.
#[inline(always)]
pub(crate) fn new_process_counters(
    tgid: u32,
    target_id: u64,
    tasks_known: u32,
    flags: u64,
) -> Option<NonNull<ProcessCounters>> {
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
    existing_process(tgid)
}

/// Applies one update to the target's counters and, when present, the process's.
#[inline(always)]
pub(crate) fn update_both(
    target: NonNull<MemoryCounters>,
    process: Option<NonNull<ProcessCounters>>,
    update: impl Fn(*mut MemoryCounters),
) {
    update(target.as_ptr());
    if let Some(process) = process {
        // SAFETY: map value pointer from a successful lookup; taking a field's address only.
        update(unsafe { &raw mut (*process.as_ptr()).counters });
    }
}

/// One more (or one fewer) live task, with exact peaks for the target and the process.
#[inline(always)]
pub(crate) fn change_live_tasks(
    target_id: u64,
    target: NonNull<MemoryCounters>,
    process: Option<NonNull<ProcessCounters>>,
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
                    &raw mut (*window.as_ptr()).live_tasks_peak,
                    core::ptr::read_volatile(&raw const (*target.as_ptr()).live_tasks),
                );
            }
        }
    }
}

/// A dead process's last release of its resident memory: marked first, so that an rss_stat
/// update another CPU is making at this moment (a thread of the process flushing its cached
/// counters on its way out) sees the mark after its own exchange and takes back what it added
/// (`take_back_if_released`). Without it, that update puts the whole counter back into the
/// target's sums after the entry is gone, and nothing ever takes it out: an emulated 6.1 guest
/// (the kernel matrix) left 11 MB of a killed process there about one run in five.
#[inline(always)]
pub(crate) fn release_at_exit(target: NonNull<MemoryCounters>, process: NonNull<ProcessCounters>) {
    // SAFETY: field address within a valid map value. The exchanges in `release_resident` are
    // sequentially consistent, so this store is seen by any exchange ordered after them.
    unsafe { core::ptr::write_volatile(&raw mut (*process.as_ptr()).released, 1) };
    release_resident(target, process);
}

/// After an update of the process's RSS counter `member`: when the process's exit has
/// released it meanwhile (see `release_at_exit`), what the counter holds leaves the target's
/// sums again. Both sides exchange the same field, so each byte is taken out exactly once.
#[inline(always)]
pub(crate) fn take_back_if_released(
    target: *mut MemoryCounters,
    process: *mut ProcessCounters,
    member: usize,
) {
    // SAFETY: field address within a valid map value. The caller's exchange was sequentially
    // consistent, so this read is not moved before it.
    if unsafe { core::ptr::read_volatile(&raw const (*process).released) } != 0 {
        take_out(target, process, member);
    }
}

/// Exchanges the process's RSS counter `member` to zero and takes what its target's sum held
/// of it out of the sum: the one way memory leaves the sums, so racing callers on other CPUs
/// each take out only what they exchanged.
#[inline(always)]
fn take_out(target: *mut MemoryCounters, process: *mut ProcessCounters, member: usize) {
    // SAFETY: field addresses within valid map values; `member` < COUNT.
    unsafe {
        let field = (&raw mut (*process).counters.rss_bytes)
            .cast::<i64>()
            .add(member);
        let old = atomic_xchg::<i64, { AtomicOrdering::SeqCst }>(field, 0);
        let counted = counted_part(process, member, old);
        if counted != 0 {
            add_signed(
                (&raw mut (*target).rss_bytes).cast::<i64>().add(member),
                -counted,
            );
        }
    }
}

/// Moves a process's resident counters to zero and takes them out of its target's sums.
#[inline(always)]
pub(crate) fn release_resident(target: NonNull<MemoryCounters>, process: NonNull<ProcessCounters>) {
    let (target, process) = (target.as_ptr(), process.as_ptr());
    for member in 0..rss_member::COUNT {
        take_out(target, process, member);
    }
}

/// Raises the resident high-water marks of `counters` (and of this window) to its current sums.
#[inline(always)]
pub(crate) fn raise_resident_peaks(
    counters: *mut MemoryCounters,
    window: Option<NonNull<WindowPeaks>>,
) {
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
            let window = window.as_ptr();
            raise(&raw mut (*window).resident_peak_bytes, anon + file);
            raise(&raw mut (*window).anon_peak_bytes, anon);
            raise(&raw mut (*window).file_peak_bytes, file);
        }
    }
}
