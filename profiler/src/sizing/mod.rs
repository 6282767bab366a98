//! Sizing: memory requests and limits from what a capture observed, with the reasons behind
//! them, a confidence, a comparison with what is set now, and the seed's checklist.
//!
//! **Basis.** Sizing reads the cgroup's *working set* as the OOM killer sees it: the charge
//! less clean page cache that no process maps, per bucket (anonymous memory, shmem, kernel
//! memory, dirty and writeback pages and mapped files stay in it; the kernel reclaims the rest
//! before it OOM-kills). Stricter than the kubelet's charge less `inactive_file`: on cgroup v2
//! a file just written often sits on the active list, and would count as needed. Page cache gets its own line and its own advice,
//! never the limit: a charge at the limit with no OOM kill is cache filling the room it has,
//! so captures under a limit do not ratchet it up. Reports without a working-set series are
//! sized from the charge; process trees (no cgroup) from resident memory.
//!
//! **Phases** (`phases.rs`): a baseline (20th percentile within 3 s) that survives bursts
//! recurring every 0.5-2 s; startup ends when the baseline holds still; spikes are buckets
//! above the baseline; the steady state is the buckets between spikes; a leak is a baseline
//! that keeps rising in most of eight parts, never a single step, still rising at the end.
//!
//! **Limit** = worst realistic peak × (1 + headroom), rounded up to a MiB. The worst realistic
//! peak is the highest of: the startup peak, the steady state's highest bucket, the highest
//! spike, the kernel's high-water mark from before the capture (less the cache reclaimable at
//! the start), and after an OOM kill a floor of max(demand + 100 MiB, demand × 1.2), where
//! demand is the most the kill record shows (the charge before it, the victim's resident
//! sizes, the limit that stopped it): the true demand is only known to be above that, so
//! confidence is Low and the advice is to measure again without the limit.
//!
//! **Request** = the 95th percentile of the steady state (buckets between spikes), at least
//! the floor, and at least limit ÷ the maximum limit/request ratio (3 by default: a node
//! overcommitted further than that by its limits OOM-kills under correlated bursts).
//!
//! **Policy**: both values at least 32 MiB (or `--min`), the limit at least a runtime ceiling
//! the runtime grows into (a JVM's `-Xmx` + 25 % non-heap, GOMEMLIMIT under `GOGC=off` + 10 %;
//! with a `runtime_reservation` flag, see `runtime.rs`), the limit at most `--max` (with an
//! `oom_risk` flag when that is below the worst peak); replicas count equally: each one's
//! peaks and steady state, and the worst governs.
//!
//! Inputs are read from the typed `headroom.report/v1` document ([`Observation::from_target`]),
//! so a capture, an agent's exported figures and `headroom recommend` over saved reports go
//! through the same code. Every reason and checklist line is formatted from the values the
//! recommendation emits (a property test parses them back).

mod checklist;
mod confidence;
mod flags;
mod limit;
mod observation;
mod phases;
mod request;
mod runtime;
mod trend;
mod wording;

pub use observation::{basis_of, basis_series, Observation, OomSeen, SizingError, SpikeSeen};
pub use phases::{leak, Leak};
pub use runtime::{GO_OTHER_ALLOWANCE, JVM_NON_HEAP_ALLOWANCE, MANY_THREADS};

use crate::{
    report::{CaptureReport, Checklist, Recommendation},
    units::{quantity, round_up_mib, MIB},
};

/// Smallest request or limit recommended: below it a measurement is almost certainly wrong
/// (a runtime alone needs more), and the kubelet's own accounting noise is of that order.
pub const FLOOR_BYTES: u64 = 32 * MIB;
/// The old name of [`FLOOR_BYTES`], which once applied to the request only.
pub const REQUEST_FLOOR_BYTES: u64 = FLOOR_BYTES;
/// Default headroom over the worst realistic peak.
pub const DEFAULT_HEADROOM: f64 = 0.25;
/// The seed's range for headroom; outside it is allowed, with a warning.
pub const HEADROOM_RANGE: (f64, f64) = (0.20, 0.30);
/// Default highest limit/request ratio.
pub const DEFAULT_MAX_RATIO: f64 = 3.0;

/// The rules sizing applies on top of what was observed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub headroom: f64,
    /// Neither value below this (never below [`FLOOR_BYTES`]).
    pub min_bytes: Option<u64>,
    /// The limit not above this (the request follows it).
    pub max_bytes: Option<u64>,
    /// The limit at most this many times the request.
    pub max_ratio: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self::with_headroom(DEFAULT_HEADROOM)
    }
}

impl Policy {
    pub fn with_headroom(headroom: f64) -> Self {
        Self {
            headroom,
            min_bytes: None,
            max_bytes: None,
            max_ratio: DEFAULT_MAX_RATIO,
        }
    }

    /// The floor both values are raised to.
    pub fn floor_bytes(&self) -> u64 {
        round_up_mib(self.min_bytes.unwrap_or(0).max(FLOOR_BYTES))
    }
}

/// Fills each target's recommendation and checklist from the report itself: the same path
/// `headroom recommend` takes over saved reports and the agent takes for its metrics.
pub fn recommend_report(report: &mut CaptureReport, headroom: f64) {
    recommend_report_with(report, &Policy::with_headroom(headroom));
}

/// [`recommend_report`] with a full policy.
pub fn recommend_report_with(report: &mut CaptureReport, policy: &Policy) {
    let duration = report.duration_seconds;
    for target in &mut report.targets {
        let observation = Observation::from_target(target, duration);
        let (recommendation, checklist) = recommend_with(&observation, policy);
        target.recommendation = Some(recommendation);
        target.checklist = Some(checklist);
    }
}

/// Recommends a request and a limit for one (possibly merged) observation.
pub fn recommend(observation: &Observation, headroom: f64) -> (Recommendation, Checklist) {
    recommend_with(observation, &Policy::with_headroom(headroom))
}

/// [`recommend`] with a full policy.
pub fn recommend_with(observation: &Observation, policy: &Policy) -> (Recommendation, Checklist) {
    let o = observation;
    let headroom = policy.headroom;
    let quiet = phases::between_spikes(&o.steady_series, o.resolution_ms);
    let steady = trend::SteadyState::of(&quiet);
    let worst = limit::worst_peak(o, steady.peak);
    let limit = limit::limit(o, &worst, policy);
    let request = request::request(o, &steady, limit.bytes, policy);
    let leak = if o.steady_series.is_empty() {
        phases::leak(&o.unsettled_series, o.resolution_ms)
    } else {
        phases::leak(&o.steady_series, o.resolution_ms)
    };
    let (confidence, confidence_reasons) = confidence::confidence(o, leak.is_some());

    let mut reasons = vec![limit.reason.clone()];
    reasons.extend(limit.policy_reasons.iter().cloned());
    reasons.extend(request.reasons);
    reasons.extend(limit::startup_phase_reason(o, &steady));
    reasons.extend(limit::oom_reason(o));
    reasons.push(format!(
        "measured from the {}",
        wording::basis_name(o.basis)
    ));
    reasons.extend(wording::page_cache_line(o));
    reasons.extend(runtime::reasons(o, limit.bytes));

    let seconds_to_limit = leak.map(|leak| flags::seconds_to(leak, limit.bytes));
    let mut flags: Vec<_> = leak
        .map(|leak| flags::leak_flag(leak, limit.bytes))
        .into_iter()
        .collect();
    flags.extend(limit.flag.clone());
    flags.extend(runtime::flags(o, limit.observed_bytes, limit.bytes, policy));
    // The current limit is judged against what the observation calls for: a limit raised
    // for a runtime ceiling has its own flag, which says when the current limit is below it.
    flags.extend(flags::current_settings_flags(
        o,
        worst.bytes,
        limit.observed_bytes,
        steady.p95,
        headroom,
    ));

    let recommendation = Recommendation {
        request_bytes: request.bytes,
        limit_bytes: limit.bytes,
        request: quantity(request.bytes),
        limit: quantity(limit.bytes),
        headroom_fraction: headroom,
        worst_peak_bytes: worst.bytes,
        worst_peak_source: worst.source,
        basis: o.basis,
        confidence,
        confidence_reasons,
        reasons,
        flags,
        warnings: limit::headroom_warning(headroom).into_iter().collect(),
        steady_bytes: steady.median,
        spikes: o.spikes.len() as u64,
        page_cache_peak_bytes: o.page_cache_peak_bytes,
        leak_bytes_per_hour: leak.map(|leak| leak.bytes_per_hour),
        seconds_to_limit,
        oom_floor_bytes: limit::oom_floor(o),
    };
    (
        recommendation,
        checklist::checklist(o, &worst, limit.bytes, headroom, &steady),
    )
}

#[cfg(test)]
mod tests;
