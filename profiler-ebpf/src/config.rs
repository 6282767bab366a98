//! Globals the loader rewrites before load (which work is switched on, and what it found out
//! about this kernel: record layouts, BTF offsets), and how to read them.

use profiler_common::exit_mode;

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

/// How a process's last exiting thread is told apart (one of `profiler_common::exit_mode`).
/// The default is the one that needs nothing from the kernel.
#[no_mangle]
pub(crate) static EXIT_MODE: u8 = exit_mode::LIVE_COUNT;

/// Offset of `group_dead` in sched_process_exit's record (Linux 6.16+; `exit_mode::GROUP_DEAD_FIELD`).
#[no_mangle]
pub(crate) static EXIT_GROUP_DEAD_OFFSET: u32 = 0;

/// Offsets of `task_struct.signal` and `signal_struct.live`, from the kernel's BTF
/// (`exit_mode::SIGNAL_LIVE`).
#[no_mangle]
pub(crate) static TASK_SIGNAL_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static SIGNAL_LIVE_OFFSET: u32 = 0;

/// Offsets of oom:mark_victim's size fields; 0 where the kernel's record lacks them.
#[no_mangle]
pub(crate) static OOM_TOTAL_VM_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static OOM_ANON_RSS_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static OOM_FILE_RSS_OFFSET: u32 = 0;
#[no_mangle]
pub(crate) static OOM_SHMEM_RSS_OFFSET: u32 = 0;

/// Reads a `u8` global the loader set (its value is a verifier-known constant: the branches
/// it rules out are never verified nor run).
#[inline(always)]
pub(crate) fn global_u8(global: &'static u8) -> u8 {
    // SAFETY: reading a static the loader may have rewritten; volatile so it is really read.
    unsafe { core::ptr::read_volatile(global) }
}

#[inline(always)]
pub(crate) fn global_u32(global: &'static u32) -> u32 {
    // SAFETY: as in `global_u8`.
    unsafe { core::ptr::read_volatile(global) }
}
