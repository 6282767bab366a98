//! Flags: a leak the limit cannot cover, and problems with what is set now.

use super::Observation;
use crate::{
    report::{Flag, FlagKind},
    units::{format_bytes, quantity, MIB},
};

/// A leak is flagged so the limit is not presented as covering it.
pub(super) fn leak_flag(bytes_per_hour: f64) -> Flag {
    Flag {
        kind: FlagKind::Leak,
        message: format!(
            "memory rose steadily after startup, about {} per hour: a leak grows past any limit; this limit only covers what was observed",
            format_bytes(bytes_per_hour as u64)
        ),
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
    current_limit_flag(o.current_limit_bytes, worst_peak, limit_bytes, headroom)
        .into_iter()
        .chain(current_request_flag(o.current_request_bytes, steady_p95))
        .collect()
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
                "the current limit {} is below the observed peak {}: expect OOM kills",
                quantity(limit),
                format_bytes(worst_peak)
            ),
        }),
        Some(limit) if limit < limit_bytes => Some(Flag {
            kind: FlagKind::OomRisk,
            message: format!(
                "the current limit {} leaves less than {:.0} % headroom over the observed peak {}",
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
