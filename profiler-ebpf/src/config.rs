//! Globals the loader rewrites before load (which work is switched on), and how to read them.

/// 1: count every cgroup (node agent). 0: only tracked cgroups and process trees.
/// Overridden by the loader; read with `read_volatile` so the compiler cannot fold it.
#[no_mangle]
pub(crate) static TRACE_ALL_CGROUPS: u8 = 0;

/// 1: send mapping changes through the ring buffer (capture sessions).
#[no_mangle]
pub(crate) static TRACK_REGIONS: u8 = 0;

/// 1: keep per-window high-water marks (capture sessions read and reset them every bucket).
/// The agent reads lifetime marks only, and skips the work on every page fault.
#[no_mangle]
pub(crate) static TRACK_WINDOWS: u8 = 0;

/// 1: stack snapshots for `.eh_frame` unwinding may be taken (the loader sets it only where
/// the kernel has BTF: bpf_get_current_task_btf needs it). A read-only constant at load, so
/// with 0 the verifier prunes the snapshot code and BTF-less kernels load the rest.
#[no_mangle]
pub(crate) static STACK_SNAPSHOTS: u8 = 0;

#[inline(always)]
pub(crate) fn flag_set(flag: &'static u8) -> bool {
    // SAFETY: reading a static the loader may have rewritten; volatile so it is really read.
    unsafe { core::ptr::read_volatile(flag) != 0 }
}
