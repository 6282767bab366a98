//! headroom's kernel side.
//!
//! Every program is a thin tracepoint entry that calls a `try_*` function. High-rate events
//! (page faults seen through rss_stat, thread creation and exit) only update counters and
//! high-water marks in kernel maps, with atomic instructions where CPUs can race; user space
//! reads the maps when it needs figures, so no peak is lost between reads. The ring buffer
//! carries process start/exit, OOM kills and, for capture sessions only, mapping changes (so
//! user space can keep exact per-region reserved memory). Every event that does not fit is
//! counted in `DROPS`.
//!
//! What is traced: processes in a tracked cgroup (`TRACKED_CGROUPS`, or every cgroup with
//! `TRACE_ALL_CGROUPS`), and process trees followed from a root pid (`TRACKED_TGIDS`). Counters
//! are kept per *target*: the cgroup id, or the id user space gave the process tree.
//!
//! Layout: `programs` holds the tracepoint entries, grouped by what they trace; `counters`,
//! `sampling` and `events` the work they share; `maps` and `config` the state user space sees
//! and sets; `targets`, `atomics` and `helpers` the building blocks below them.
#![no_std]
#![no_main]
// The BPF target has no `Atomic*` read-modify-write methods in core; the intrinsics lower to
// BPF atomic instructions: add (BPF_XADD), exchange and compare-exchange (Linux 5.12+).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic intrinsics are the only way to emit BPF atomics from Rust"
)]

mod atomics;
mod config;
mod counters;
mod events;
mod helpers;
mod maps;
mod programs;
mod sampling;
mod targets;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this never runs in a loaded program.
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
