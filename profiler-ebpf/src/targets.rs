//! Which processes are traced, and the target (cgroup id or followed process tree) each one is
//! counted in.

use crate::{
    config::{flag_set, TRACE_ALL_CGROUPS},
    helpers::{current_cgroup_id, current_tgid},
    maps::{TRACKED_CGROUPS, TRACKED_TGIDS},
};

/// The target a process is counted in, if it is traced at all.
#[inline(always)]
pub(crate) fn target_of(tgid: u32, cgroup_id: u64) -> Option<u64> {
    if let Some(target) = TRACKED_TGIDS.get_ptr(tgid) {
        // SAFETY: map value pointer from a successful lookup.
        return Some(unsafe { *target });
    }
    if flag_set(&TRACE_ALL_CGROUPS) || TRACKED_CGROUPS.get_ptr(cgroup_id).is_some() {
        return Some(cgroup_id);
    }
    None
}

#[inline(always)]
pub(crate) fn current_target() -> Option<(u32, u64)> {
    let tgid = current_tgid();
    target_of(tgid, current_cgroup_id()).map(|target| (tgid, target))
}
