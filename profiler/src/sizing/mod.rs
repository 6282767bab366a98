//! Sizing: memory requests and limits from what a capture observed, with the reasons behind
//! them, a confidence, a comparison with what is set now, and the seed's checklist.
//!
//! **Limit** = worst realistic peak × (1 + headroom). The worst realistic peak is the highest of
//! the startup peak, the peak after startup (steady-window maxima and spikes), and, when the
//! OOM killer struck, an OOM floor of max(charge at the kill + 100 MiB, charge at the kill ×
//! 1.2): a kill means demand went past the charge it was stopped at, by an unknown amount, and
//! that floor is the one VPA's recommender uses for the same event.
//!
//! **Request** = the 95th percentile of the steady-state bucket maxima, at least 32 MiB. The seed
//! says "near steady state"; the p95 of per-bucket *maxima* is what the service holds nearly all
//! the time after startup, so scheduling on it neither overcommits the node against the working
//! set (as a mean or median of samples would) nor reserves the bursts (which the limit covers).
//! It is the same statistic people who size by hand use (P90-P95 of steady state).
//!
//! Inputs are read from the typed `headroom.report/v1` document ([`Observation::from_target`]),
//! so a capture, an agent's exported figures and `headroom recommend` over saved reports go
//! through the same code.
//!
//! Each step lives in its own file: `limit.rs` (worst peak, limit and its reason), `request.rs`,
//! `confidence.rs`, `flags.rs` (a leak, and what is set now), `checklist.rs`, with the
//! statistics of the steady series in `trend.rs` and the shared phrasing in `wording.rs`.

mod checklist;
mod confidence;
mod flags;
mod limit;
mod observation;
mod request;
mod trend;
mod wording;

pub use observation::{Observation, OomSeen, SizingError, SpikeSeen};
pub use trend::leak_rate;

use crate::{
    report::{CaptureReport, Checklist, Recommendation},
    units::{quantity, MIB},
};

/// Smallest request recommended: below it a measurement is almost certainly wrong.
pub const REQUEST_FLOOR_BYTES: u64 = 32 * MIB;
/// Default headroom over the worst realistic peak.
pub const DEFAULT_HEADROOM: f64 = 0.25;
/// The seed's range for headroom; outside it is allowed, with a warning.
pub const HEADROOM_RANGE: (f64, f64) = (0.20, 0.30);

/// Fills each target's recommendation and checklist from the report itself: the same path
/// `headroom recommend` takes over saved reports and the agent takes for its metrics.
pub fn recommend_report(report: &mut CaptureReport, headroom: f64) {
    let duration = report.duration_seconds;
    for target in &mut report.targets {
        let observation = Observation::from_target(target, duration);
        let (recommendation, checklist) = recommend(&observation, headroom);
        target.recommendation = Some(recommendation);
        target.checklist = Some(checklist);
    }
}

/// Recommends a request and a limit for one (possibly merged) observation.
pub fn recommend(observation: &Observation, headroom: f64) -> (Recommendation, Checklist) {
    let o = observation;
    let steady = trend::SteadyState::of(&o.steady_series);
    let worst = limit::worst_peak(o, steady.peak);
    let limit_bytes = limit::limit_bytes(worst.bytes, headroom);
    let request = request::request(o, &steady, limit_bytes);
    let leak = leak_rate(&o.steady_series, o.resolution_ms);
    let (confidence, confidence_reasons) = confidence::confidence(o, leak.is_some());

    let mut reasons = vec![limit::limit_reason(o, &worst, limit_bytes, headroom)];
    reasons.extend(request.reasons);
    reasons.extend(limit::startup_phase_reason(o, &steady));
    reasons.push(format!(
        "measured from the {}",
        wording::basis_name(o.basis)
    ));

    let mut flags: Vec<_> = leak.map(flags::leak_flag).into_iter().collect();
    flags.extend(flags::current_settings_flags(
        o,
        worst.bytes,
        limit_bytes,
        steady.p95,
        headroom,
    ));

    let recommendation = Recommendation {
        request_bytes: request.bytes,
        limit_bytes,
        request: quantity(request.bytes),
        limit: quantity(limit_bytes),
        headroom_fraction: headroom,
        worst_peak_bytes: worst.bytes,
        worst_peak_source: worst.source,
        basis: o.basis,
        confidence,
        confidence_reasons,
        reasons,
        flags,
        warnings: limit::headroom_warning(headroom).into_iter().collect(),
    };
    (
        recommendation,
        checklist::checklist(o, limit_bytes, headroom),
    )
}

#[cfg(test)]
mod tests;
