//! The limit: the worst realistic peak, what set it, and the limit with headroom over it.

use super::{
    trend::SteadyState,
    wording::{at_seconds, basis_name},
    Observation, HEADROOM_RANGE,
};
use crate::{
    report::PeakKind,
    units::{format_bytes, quantity, round_up_mib, MIB},
};

/// The worst realistic peak and the kind of observation that set it.
pub(super) struct WorstPeak {
    pub source: PeakKind,
    pub bytes: u64,
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

/// VPA's floor after an OOM kill: max(charge at the kill + 100 MiB, charge at the kill × 1.2),
/// over every kill (0 without one).
fn oom_floor(o: &Observation) -> u64 {
    o.ooms
        .iter()
        .map(|kill| {
            (kill.charge_before_bytes + 100 * MIB)
                .max((kill.charge_before_bytes as f64 * 1.2) as u64)
        })
        .max()
        .unwrap_or(0)
}

/// The highest of the OOM floor, the largest spike, the peak after startup and the startup
/// peak, never below the highest charge seen. A tie goes to the most specific cause: an OOM
/// floor, then a spike (a spike's buckets are part of the steady series too, so its peak always
/// ties with the steady maximum), then startup, then steady state. When startup did not end,
/// the highest charge seen stands for both the startup peak and the peak after it.
pub(super) fn worst_peak(o: &Observation, steady_peak: u64) -> WorstPeak {
    let spike_peak = o.spikes.iter().map(|s| s.peak_bytes).max().unwrap_or(0);
    let (startup_peak, seen_after_startup) = if o.startup_seconds.is_some() {
        (o.startup_peak_bytes, 0)
    } else {
        (o.peak_bytes, o.peak_bytes)
    };
    // max_by_key keeps the last of equal maxima: least specific first.
    let candidates = [
        (PeakKind::Steady, steady_peak.max(seen_after_startup)),
        (PeakKind::Startup, startup_peak),
        (PeakKind::Spike, spike_peak),
        (PeakKind::Oom, oom_floor(o)),
    ];
    let (source, bytes) = candidates
        .iter()
        .copied()
        .max_by_key(|&(_, bytes)| bytes)
        .unwrap_or((PeakKind::Startup, 0));
    WorstPeak {
        source,
        bytes: bytes.max(o.peak_bytes),
    }
}

/// Limit = worst realistic peak × (1 + headroom), rounded up to whole MiB.
pub(super) fn limit_bytes(worst_peak: u64, headroom: f64) -> u64 {
    round_up_mib((worst_peak as f64 * (1.0 + headroom)).ceil() as u64)
}

/// The first reason: the limit, which peak it covers, where that peak was seen, and the factor.
pub(super) fn limit_reason(
    o: &Observation,
    worst: &WorstPeak,
    limit_bytes: u64,
    headroom: f64,
) -> String {
    let (limit, peak, factor) = (
        quantity(limit_bytes),
        format_bytes(worst.bytes),
        1.0 + headroom,
    );
    match (worst.source, o.startup_seconds) {
        (PeakKind::Startup, Some(end)) => format!(
            "limit {limit} = startup peak {peak}{} (startup ended at {end:.1} s) × {factor:.2}",
            at_seconds(o.startup_peak_at_seconds),
        ),
        (PeakKind::Startup, None) => format!(
            "limit {limit} = highest {} seen {peak} × {factor:.2} (startup did not end during the capture)",
            basis_name(o.basis),
        ),
        (PeakKind::Spike, _) => {
            let spike = o.spikes.iter().max_by_key(|s| s.peak_bytes);
            format!(
                "limit {limit} = spike peak {peak} at {:.1} s (lasting {} ms) × {factor:.2}",
                spike.map_or(0.0, |s| s.start_seconds),
                spike.map_or(0, |s| s.duration_ms),
            )
        }
        (PeakKind::Oom, _) => format!(
            "limit {limit} = OOM floor {peak} (an OOM kill at {:.1} s stopped it at {}; floor = max(+100 MiB, ×1.2)) × {factor:.2}",
            o.ooms.first().map_or(0.0, |k| k.seconds),
            format_bytes(o.ooms.iter().map(|k| k.charge_before_bytes).max().unwrap_or(0)),
        ),
        (PeakKind::Steady, _) => format!("limit {limit} = peak after startup {peak} × {factor:.2}"),
    }
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
