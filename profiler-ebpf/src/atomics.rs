//! Atomic updates of map values that several CPUs may touch at once: counters (fetch-add) and
//! high-water marks (compare-exchange loops).

use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering};

/// Compare-exchange retries before a high-water mark update gives up (only under contention
/// far beyond anything measured; the next update raises it anyway).
const RAISE_RETRIES: u32 = 8;

/// Adds to a counter that another CPU may update at the same time.
#[inline(always)]
pub(crate) fn add(counter: *mut u64, value: u64) {
    // SAFETY: `counter` points into a map value that lives as long as the map, aligned to 8.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, value) };
}

/// Adds to a signed counter and returns a value it had after the addition. (A fetch-add that
/// returns the old value needs BPF cpu v3 from LLVM; the read-back may include another CPU's
/// concurrent addition, which is still a value the counter really reached.)
#[inline(always)]
pub(crate) fn add_signed(counter: *mut i64, value: i64) -> i64 {
    // SAFETY: as in `add`.
    unsafe {
        atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(counter, value);
        core::ptr::read_volatile(counter)
    }
}

/// Raises a high-water mark to `value` if it is higher, exactly under concurrency.
#[inline(always)]
pub(crate) fn raise(mark: *mut u64, value: u64) {
    // SAFETY: `mark` points into a map value, aligned to 8.
    let mut seen = unsafe { core::ptr::read_volatile(mark) };
    for _ in 0..RAISE_RETRIES {
        if value <= seen {
            return;
        }
        // SAFETY: as above.
        let (previous, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                mark, seen, value,
            )
        };
        if swapped {
            return;
        }
        seen = previous;
    }
}

#[inline(always)]
pub(crate) fn raise_signed(mark: *mut i64, value: i64) {
    // SAFETY: `mark` points into a map value, aligned to 8.
    let mut seen = unsafe { core::ptr::read_volatile(mark) };
    for _ in 0..RAISE_RETRIES {
        if value <= seen {
            return;
        }
        // SAFETY: as above.
        let (previous, swapped) = unsafe {
            atomic_cxchg::<i64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                mark, seen, value,
            )
        };
        if swapped {
            return;
        }
        seen = previous;
    }
}
