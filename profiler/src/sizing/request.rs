//! The request: the steady-state p95 (buckets between spikes), or without a steady state half
//! the highest value seen as a placeholder; at least the policy's floor and limit ÷ the
//! maximum ratio, never above the limit.

use super::{trend::SteadyState, Observation, Policy};
use crate::units::{format_bytes, quantity, round_up_mib};

/// The request and the reasons for it, in the order the recommendation lists them.
pub(super) struct Request {
    pub bytes: u64,
    pub reasons: Vec<String>,
}

pub(super) fn request(
    o: &Observation,
    steady: &SteadyState,
    limit_bytes: u64,
    policy: &Policy,
) -> Request {
    let (basis, mut reason) = match steady.p95 {
        Some(p95) => (
            round_up_mib(p95),
            format!(
                "steady-state p95 {} (median {}) of {} s after startup, between spikes{}",
                format_bytes(p95),
                format_bytes(steady.median.unwrap_or(p95)),
                (o.steady_series.len() as u64 * o.resolution_ms) / 1000,
                o.steady_from
                    .as_ref()
                    .map_or_else(String::new, |name| format!(
                        "; of {} replicas, {name} holds the most",
                        o.replicas
                    )),
            ),
        ),
        None => (
            round_up_mib(o.peak_bytes / 2),
            format!(
                "half the highest value seen {}: no steady state was observed, so this is a placeholder",
                format_bytes(o.peak_bytes)
            ),
        ),
    };
    let floor = policy.floor_bytes();
    // Rounded up so that limit ÷ request never exceeds the ratio after rounding.
    let for_ratio = round_up_mib((limit_bytes as f64 / policy.max_ratio.max(1.0)).ceil() as u64);
    let mut bytes = basis;
    let mut reasons = Vec::new();
    if bytes < floor {
        reasons.push(format!(
            "request raised from {} to the {} floor",
            quantity(bytes),
            quantity(floor)
        ));
        bytes = floor;
    }
    if bytes < for_ratio {
        reasons.push(format!(
            "request raised from {} to {} so the limit {} is at most {:.1}× the request (a node whose limits overcommit it further OOM-kills when bursts coincide)",
            quantity(bytes),
            quantity(for_ratio),
            quantity(limit_bytes),
            policy.max_ratio
        ));
        bytes = for_ratio;
    }
    if bytes > limit_bytes {
        reasons.push(format!(
            "request lowered from {} to the limit {}",
            quantity(bytes),
            quantity(limit_bytes)
        ));
        bytes = limit_bytes;
    }
    reason = format!("request {} = {reason}", quantity(basis));
    reasons.insert(0, reason);
    Request { bytes, reasons }
}
