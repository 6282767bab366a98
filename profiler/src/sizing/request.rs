//! The request: the steady-state p95, or (without a steady state) half the peak, at least the
//! floor and never above the limit.

use super::{trend::SteadyState, Observation, REQUEST_FLOOR_BYTES};
use crate::units::{format_bytes, quantity, round_up_mib};

/// The request and the reasons for it, in the order the recommendation lists them.
pub(super) struct Request {
    pub bytes: u64,
    pub reasons: Vec<String>,
}

/// Request = steady p95 (or half the peak as a placeholder without a steady state), raised to
/// [`REQUEST_FLOOR_BYTES`], rounded up to whole MiB, capped at the limit.
pub(super) fn request(o: &Observation, steady: &SteadyState, limit_bytes: u64) -> Request {
    let (basis, reason) = match steady.p95 {
        Some(p95) => (
            p95,
            format!(
                "request {} = steady-state p95 {} (median {}) of {} s after startup",
                quantity(p95.max(REQUEST_FLOOR_BYTES)),
                format_bytes(p95),
                format_bytes(steady.median.unwrap_or(p95)),
                (o.steady_series.len() as u64 * o.resolution_ms) / 1000
            ),
        ),
        None => (
            o.peak_bytes / 2,
            format!(
                "request {} = half the peak: no steady state was observed, so this is a placeholder",
                quantity((o.peak_bytes / 2).max(REQUEST_FLOOR_BYTES))
            ),
        ),
    };
    let mut reasons = vec![reason];
    if basis < REQUEST_FLOOR_BYTES {
        reasons.push(format!(
            "request raised to the {} floor",
            format_bytes(REQUEST_FLOOR_BYTES)
        ));
    }
    Request {
        bytes: round_up_mib(basis.max(REQUEST_FLOOR_BYTES)).min(limit_bytes),
        reasons,
    }
}
