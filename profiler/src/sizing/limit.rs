//! The limit: the worst realistic peak, what set it, the limit with headroom over it, the
//! policy's floor and cap, and the reasons, each formatted from the values emitted.

use super::{
    trend::SteadyState,
    wording::{at_seconds, basis_name},
    Observation, Policy, HEADROOM_RANGE,
};
use crate::{
    report::{Flag, FlagKind, PeakKind},
    units::{format_bytes, quantity, round_up_mib, MIB},
};

/// The worst realistic peak and the kind of observation that set it.
pub(super) struct WorstPeak {
    pub source: PeakKind,
    pub bytes: u64,
}

/// The limit, the reason for it, what the policy changed, and a flag when a cap leaves the
/// worst peak uncovered.
pub(super) struct Limit {
    pub bytes: u64,
    /// What the observation alone calls for (the peak with headroom, at least the floor),
    /// before a runtime ceiling raised it and a maximum capped it.
    pub observed_bytes: u64,
    pub reason: String,
    pub policy_reasons: Vec<String>,
    pub flag: Option<Flag>,
}

/// Headroom outside the seed's 20-30 % is allowed, with a warning.
pub(super) fn headroom_warning(headroom: f64) -> Option<String> {
    (!(HEADROOM_RANGE.0..=HEADROOM_RANGE.1).contains(&headroom)).then(|| {
        format!(
            "headroom {:.0} % is outside the 20-30 % the sizing rule calls for",
            headroom * 100.0
        )
    })
}

/// VPA's floor after an OOM kill, over every kill: max(demand + 100 MiB, demand × 1.2), where
/// demand is the most the kill record shows. None without a kill.
pub(super) fn oom_floor(o: &Observation) -> Option<u64> {
    o.ooms
        .iter()
        .map(|kill| {
            let demand = kill.demand_above_bytes();
            (demand + 100 * MIB).max((demand as f64 * 1.2) as u64)
        })
        .max()
}

/// The highest of the OOM floor, the peak before the capture, the largest spike, the steady
/// state's highest bucket and the startup peak, never below the highest value seen. A tie
/// goes to the most specific cause: an OOM floor, then the peak before the capture, a spike,
/// startup, steady state. When startup did not end, the highest value seen stands for both the
/// startup peak and the peak after it.
pub(super) fn worst_peak(o: &Observation, steady_peak: u64) -> WorstPeak {
    let spike_peak = o.spikes.iter().map(|s| s.peak_bytes).max().unwrap_or(0);
    let (startup_peak, seen_after_startup) = if o.startup_seconds.is_some() {
        (o.startup_peak_bytes, 0)
    } else {
        (o.peak_bytes, o.peak_bytes)
    };
    let before = o
        .peak_before_capture
        .as_ref()
        .map_or(0, |peak| peak.demand_bytes());
    // max_by_key keeps the last of equal maxima: least specific first.
    let candidates = [
        (PeakKind::Steady, steady_peak.max(seen_after_startup)),
        (PeakKind::Startup, startup_peak),
        (PeakKind::Spike, spike_peak),
        (PeakKind::BeforeCapture, before),
        (PeakKind::Oom, oom_floor(o).unwrap_or(0)),
    ];
    // A cause that saw nothing (no kill, no spike) never names the peak.
    let (source, bytes) = candidates
        .iter()
        .copied()
        .filter(|&(_, bytes)| bytes > 0)
        .max_by_key(|&(_, bytes)| bytes)
        .unwrap_or((PeakKind::Startup, 0));
    // The highest value seen with no phase of its own (the kernel's high-water mark between
    // two buckets) is the steady state's or startup's, whichever phase it fell in.
    if o.peak_bytes > bytes {
        let source = if o.startup_seconds.is_some() && source != PeakKind::Startup {
            PeakKind::Steady
        } else {
            PeakKind::Startup
        };
        return WorstPeak {
            source,
            bytes: o.peak_bytes,
        };
    }
    WorstPeak { source, bytes }
}

/// Limit = worst realistic peak × (1 + headroom), rounded up to whole MiB, then the policy:
/// at least its floor, at least a runtime ceiling the runtime grows into plus its allowance
/// (see `runtime.rs`), at most its maximum.
pub(super) fn limit(o: &Observation, worst: &WorstPeak, policy: &Policy) -> Limit {
    let covered = round_up_mib((worst.bytes as f64 * (1.0 + policy.headroom)).ceil() as u64);
    let floor = policy.floor_bytes();
    let mut bytes = covered;
    let mut policy_reasons = Vec::new();
    let mut flag = None;
    if bytes < floor {
        bytes = floor;
        policy_reasons.push(format!(
            "limit raised from {} to the {} floor",
            quantity(covered),
            quantity(floor)
        ));
    }
    let observed_bytes = bytes;
    // A runtime ceiling the runtime grows into by itself (a JVM's -Xmx) is held by the limit.
    if let Some((raised, reason)) = super::runtime::raise(o, bytes) {
        policy_reasons.push(reason);
        bytes = raised;
    }
    // A maximum below the floor is raised to it (the CLI refuses one; reports may not).
    if let Some(max) = policy.max_bytes.map(|max| round_up_mib(max).max(floor)) {
        if bytes > max {
            policy_reasons.push(format!(
                "limit capped from {} at the maximum {}",
                quantity(bytes),
                quantity(max)
            ));
            bytes = max;
            if bytes < worst.bytes {
                flag = Some(Flag {
                    kind: FlagKind::OomRisk,
                    message: format!(
                        "the maximum {} is below the worst peak {}: expect OOM kills",
                        quantity(bytes),
                        format_bytes(worst.bytes)
                    ),
                });
            }
        }
    }
    Limit {
        bytes,
        observed_bytes,
        reason: limit_reason(o, worst, covered, policy.headroom),
        policy_reasons,
        flag,
    }
}

/// The first reason: the limit the peak calls for, which peak it covers, where that peak was
/// seen, and the factor.
fn limit_reason(o: &Observation, worst: &WorstPeak, covered: u64, headroom: f64) -> String {
    let (limit, peak, factor) = (quantity(covered), format_bytes(worst.bytes), 1.0 + headroom);
    match (worst.source, o.startup_seconds) {
        (PeakKind::Startup, Some(end)) => format!(
            "limit {limit} = startup peak {peak} × {factor:.2} (the peak{}; startup ended at {end:.1} s)",
            at_seconds(o.startup_peak_at_seconds),
        ),
        (PeakKind::Startup, None) => format!(
            "limit {limit} = highest {} seen {peak} × {factor:.2} (startup did not end during the capture)",
            basis_name(o.basis),
        ),
        (PeakKind::Spike, _) => {
            let spike = o.spikes.iter().max_by_key(|s| s.peak_bytes);
            format!(
                "limit {limit} = spike peak {peak} × {factor:.2} (the spike at {:.1} s lasting {} ms; {} spike{} in all)",
                spike.map_or(0.0, |s| s.start_seconds),
                spike.map_or(0, |s| s.duration_ms),
                o.spikes.len(),
                super::wording::plural(o.spikes.len() as u64),
            )
        }
        (PeakKind::Oom, _) => {
            let kill = o.ooms.iter().max_by_key(|k| k.demand_above_bytes());
            format!(
                "limit {limit} = OOM floor {peak} × {factor:.2}: the kill at {:.1} s showed a demand above {}, and the floor = max(that + 100 MiB, that × 1.2)",
                kill.map_or(0.0, |k| k.seconds),
                format_bytes(kill.map_or(0, |k| k.demand_above_bytes())),
            )
        }
        (PeakKind::BeforeCapture, _) => {
            let before = o.peak_before_capture.clone().unwrap_or_default();
            format!(
                "limit {limit} = peak before the capture {peak} × {factor:.2} (the kernel's {} read at the start was {}, less {} of file cache reclaimable then)",
                before.source,
                format_bytes(before.bytes),
                format_bytes(before.reclaimable_bytes),
            )
        }
        (PeakKind::Steady, _) => {
            format!("limit {limit} = peak after startup {peak} × {factor:.2}")
        }
    }
}

/// After an OOM kill: the demand is a lower bound, and how to measure it.
pub(super) fn oom_reason(o: &Observation) -> Option<String> {
    let kill = o.ooms.iter().max_by_key(|k| k.demand_above_bytes())?;
    let under = kill.limit_bytes.map_or_else(String::new, |limit| {
        format!(" under the limit {}", quantity(limit))
    });
    Some(format!(
        "{} OOM kill{}{under}: the workload needed more than {}, by an unknown amount, so this is a lower bound; re-run the capture without the limit (or with a higher one) to measure the real peak",
        o.ooms.len(),
        super::wording::plural(o.ooms.len() as u64),
        format_bytes(kill.demand_above_bytes()),
    ))
}

/// When startup peaked above the steady state, says by how much (over the steady median): the
/// limit has to let that phase through.
pub(super) fn startup_phase_reason(o: &Observation, steady: &SteadyState) -> Option<String> {
    let end = o.startup_seconds?;
    (o.startup_peak_bytes > steady.peak).then(|| {
        format!(
            "the startup phase (first {end:.1} s) peaks {} above steady state: the limit must let it through",
            format_bytes(o.startup_peak_bytes.saturating_sub(steady.median.unwrap_or(0)))
        )
    })
}
