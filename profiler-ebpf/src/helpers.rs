//! Thin wrappers around BPF helpers every module uses (the current task's ids, the clock), and
//! the count of events and entries that did not fit (`DROPS`).

use aya_ebpf::helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns};

use crate::maps::DROPS;

#[inline(always)]
pub(crate) fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub(crate) fn current_cgroup_id() -> u64 {
    // SAFETY: a plain BPF helper call with no arguments; available to tracepoint programs.
    unsafe { bpf_get_current_cgroup_id() }
}

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a plain BPF helper call with no arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub(crate) fn count_drop(reason: u32) {
    if let Some(slot) = DROPS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and the pointer comes from the map.
        unsafe { *slot += 1 };
    }
}
