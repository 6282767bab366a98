//! Flags: a leak the limit cannot cover, and problems with what is set now.

use super::{phases::Leak, Observation};
use crate::{
    report::{Basis, Flag, FlagKind},
    units::{format_bytes, quantity, MIB},
};

/// Seconds until a leak at its rate takes the baseline from its level at the end to `limit`
/// (0 when it is there already).
pub(super) fn seconds_to(leak: Leak, limit_bytes: u64) -> f64 {
    let room = limit_bytes.saturating_sub(leak.level_at_end) as f64;
    (room / leak.bytes_per_hour.max(1.0) * 3600.0).round()
}

/// A leak is flagged so the limit is not presented as covering it, with when it reaches it.
pub(super) fn leak_flag(leak: Leak, limit_bytes: u64) -> Flag {
    Flag {
        kind: FlagKind::Leak,
        message: format!(
            "memory kept rising after startup, about {} per hour (from {} at the end of the capture): at that rate it reaches the limit {} in {}; a leak grows past any limit, this one only covers what was observed",
            format_bytes(leak.bytes_per_hour as u64),
            format_bytes(leak.level_at_end),
            quantity(limit_bytes),
            duration_words(seconds_to(leak, limit_bytes)),
        ),
    }
}

/// "45 s", "12 min", "3.5 h", "2.0 days".
fn duration_words(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.0} s")
    } else if seconds < 7_200.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < 172_800.0 {
        format!("{:.1} h", seconds / 3_600.0)
    } else {
        format!("{:.1} days", seconds / 86_400.0)
    }
}

/// What is set now, against what was observed: the limit first, then the request.
pub(super) fn current_settings_flags(
    o: &Observation,
    worst_peak: u64,
    limit_bytes: u64,
    steady_p95: Option<u64>,
    headroom: f64,
) -> Vec<Flag> {
    // A charge that reached the limit with no OOM kill and no memory pressure is page cache
    // filling the room it has (the kernel reclaimed it instead of killing): no risk, whatever
    // the charge says.
    let stalled = stall_share(o).is_some_and(|share| share >= STALL_SHARE_FLAGGED);
    let cache_at_limit = o.ooms.is_empty()
        && !stalled
        && o.basis == Basis::Charged
        && o.current_limit_bytes
            .is_some_and(|limit| worst_peak <= limit && worst_peak as f64 >= limit as f64 * 0.95);
    current_limit_flag(o.current_limit_bytes, worst_peak, limit_bytes, headroom)
        .filter(|flag| !(cache_at_limit && flag.kind == FlagKind::OomRisk))
        .or_else(|| pressure_flag(o))
        .into_iter()
        .chain(current_request_flag(o.current_request_bytes, steady_p95))
        .collect()
}

/// The share of the capture in which every task stalled on memory that is worth a flag. Any
/// cgroup whose page cache fills its limit stalls a little (reclaim runs in the writer's
/// context); below 1 % of the time that is the cost of caching, not a problem.
const STALL_SHARE_FLAGGED: f64 = 0.01;

/// The share of the observed time every task stalled on memory (PSI `full`), where known.
fn stall_share(o: &Observation) -> Option<f64> {
    let stalled_us = o.pressure_full_us?;
    (o.duration_seconds > 0.0).then(|| stalled_us as f64 / (o.duration_seconds * 1e6))
}

/// The charge sat at the limit and the whole workload stalled on memory (PSI `full`) for at
/// least [`STALL_SHARE_FLAGGED`] of the time. Sized from the charge, that may be the workload
/// itself at the limit: an OOM risk. Sized from the working set, which fits, it is reclaim of
/// page cache slowing the service down: pressure, not a risk of an OOM kill.
fn pressure_flag(o: &Observation) -> Option<Flag> {
    let stalled_us = o.pressure_full_us?;
    let share = stall_share(o).filter(|&share| share >= STALL_SHARE_FLAGGED)?;
    let limit = o.current_limit_bytes?;
    let stall = format!(
        "the charge reached the current limit {} and all tasks stalled {:.1} ms on memory ({:.1} % of the {:.0} s observed, PSI memory.pressure full)",
        quantity(limit),
        stalled_us as f64 / 1000.0,
        share * 100.0,
        o.duration_seconds
    );
    (o.charge_peak_bytes as f64 >= limit as f64 * 0.95).then(|| match o.basis {
        Basis::WorkingSet => Flag {
            kind: FlagKind::MemoryPressure,
            message: format!(
                "{stall}: the working set fits, but reclaiming page cache slows the service; if it re-reads its files, raise the limit by the part it re-reads (up to {})",
                format_bytes(o.page_cache_peak_bytes)
            ),
        },
        _ => Flag {
            kind: FlagKind::OomRisk,
            message: format!(
                "{stall}: the workload may itself be at the limit; raise it, or capture again where the working set is read (cgroup memory.stat)"
            ),
        },
    })
}

/// No limit, a limit below the worst peak (OOM kills), or one with less than the headroom.
fn current_limit_flag(
    current: Option<u64>,
    worst_peak: u64,
    limit_bytes: u64,
    headroom: f64,
) -> Option<Flag> {
    match current {
        None => Some(Flag {
            kind: FlagKind::MissingLimit,
            message: "no memory limit is set: one runaway allocation can take the node's memory"
                .to_owned(),
        }),
        Some(limit) if limit < worst_peak => Some(Flag {
            kind: FlagKind::OomRisk,
            message: format!(
                "the current limit {} is below the worst peak {}: expect OOM kills",
                quantity(limit),
                format_bytes(worst_peak)
            ),
        }),
        Some(limit) if limit < limit_bytes => Some(Flag {
            kind: FlagKind::OomRisk,
            message: format!(
                "the current limit {} leaves less than {:.0} % headroom over the worst peak {}",
                quantity(limit),
                headroom * 100.0,
                format_bytes(worst_peak)
            ),
        }),
        Some(_) => None,
    }
}

/// A request above max(2 × steady p95, p95 + 64 MiB) reserves memory the service never holds.
fn current_request_flag(current: Option<u64>, steady_p95: Option<u64>) -> Option<Flag> {
    let (request, p95) = (current?, steady_p95?);
    (request > p95.saturating_mul(2).max(p95 + 64 * MIB)).then(|| Flag {
        kind: FlagKind::OverProvisioned,
        message: format!(
            "the current request {} is far above the steady state {}",
            quantity(request),
            format_bytes(p95)
        ),
    })
}
