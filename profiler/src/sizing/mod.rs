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

mod observation;

pub use observation::{Observation, OomSeen, SizingError, SpikeSeen};

use crate::{
    report::{
        Basis, CaptureReport, Checklist, ChecklistItem, Confidence, Flag, FlagKind, PeakKind,
        Recommendation,
    },
    units::{format_bytes, quantity, round_up_mib, MIB},
};

/// Smallest request recommended: below it a measurement is almost certainly wrong.
pub const REQUEST_FLOOR_BYTES: u64 = 32 * MIB;
/// Default headroom over the worst realistic peak.
pub const DEFAULT_HEADROOM: f64 = 0.25;
/// The seed's range for headroom; outside it is allowed, with a warning.
pub const HEADROOM_RANGE: (f64, f64) = (0.20, 0.30);

fn percentile(values: &[u64], fraction: f64) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len().checked_sub(1)?) as f64 * fraction).round() as usize;
    sorted.get(rank).copied()
}

/// A sustained rise after startup: least-squares slope over the steady series, counted only
/// when the last quarter sits clearly above the first (so one late spike is not a trend).
/// Returns bytes per hour.
pub fn leak_rate(series: &[u64], resolution_ms: u64) -> Option<f64> {
    if series.len() < 20 {
        return None;
    }
    let quarter = series.len() / 4;
    let first = percentile(&series[..quarter], 0.5)?;
    let last = percentile(&series[series.len() - quarter..], 0.5)?;
    let rise = last.saturating_sub(first);
    if rise < (first / 10).max(8 * MIB) {
        return None;
    }
    let n = series.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = series.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (i, &v) in series.iter().enumerate() {
        let dx = i as f64 - mean_x;
        covariance += dx * (v as f64 - mean_y);
        variance += dx * dx;
    }
    let slope_per_bucket = covariance / variance;
    (slope_per_bucket > 0.0).then(|| slope_per_bucket * 3_600_000.0 / resolution_ms as f64)
}

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
    let mib = |bytes: u64| format_bytes(bytes);
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let mut flags = Vec::new();
    let mut confidence_reasons = Vec::new();

    if !(HEADROOM_RANGE.0..=HEADROOM_RANGE.1).contains(&headroom) {
        warnings.push(format!(
            "headroom {:.0} % is outside the 20-30 % the sizing rule calls for",
            headroom * 100.0
        ));
    }

    // The worst realistic peak and what set it.
    let steady_peak = o.steady_series.iter().copied().max().unwrap_or(0);
    let spike_peak = o.spikes.iter().map(|s| s.peak_bytes).max().unwrap_or(0);
    let oom_floor = o
        .ooms
        .iter()
        .map(|kill| {
            (kill.charge_before_bytes + 100 * MIB)
                .max((kill.charge_before_bytes as f64 * 1.2) as u64)
        })
        .max()
        .unwrap_or(0);
    let startup_peak = if o.startup_seconds.is_some() {
        o.startup_peak_bytes
    } else {
        o.peak_bytes
    };
    let candidates = [
        (PeakKind::Oom, oom_floor),
        (PeakKind::Spike, spike_peak),
        (
            PeakKind::Steady,
            steady_peak.max(if o.startup_seconds.is_some() {
                0
            } else {
                o.peak_bytes
            }),
        ),
        (PeakKind::Startup, startup_peak),
    ];
    let (worst_peak_source, worst_peak) = candidates
        .iter()
        .copied()
        .max_by_key(|&(_, bytes)| bytes)
        .unwrap_or((PeakKind::Startup, 0));
    let worst_peak = worst_peak.max(o.peak_bytes);
    let limit_bytes = round_up_mib((worst_peak as f64 * (1.0 + headroom)).ceil() as u64);

    let when = |at: Option<f64>| at.map_or_else(String::new, |s| format!(" at {s:.1} s"));
    let basis_name = if o.basis == Basis::Charged {
        "cgroup charge"
    } else {
        "resident memory (no cgroup of its own)"
    };
    let limit_reason = match worst_peak_source {
        PeakKind::Startup if o.startup_seconds.is_some() => format!(
            "limit {} = startup peak {}{} (startup ended at {:.1} s) × {:.2}",
            quantity(limit_bytes),
            mib(worst_peak),
            when(o.startup_peak_at_seconds),
            o.startup_seconds.unwrap_or(0.0),
            1.0 + headroom
        ),
        PeakKind::Startup => format!(
            "limit {} = highest {} seen {} × {:.2} (startup did not end during the capture)",
            quantity(limit_bytes),
            basis_name,
            mib(worst_peak),
            1.0 + headroom
        ),
        PeakKind::Spike => {
            let spike = o.spikes.iter().max_by_key(|s| s.peak_bytes);
            format!(
                "limit {} = spike peak {} at {:.1} s (lasting {} ms) × {:.2}",
                quantity(limit_bytes),
                mib(worst_peak),
                spike.map_or(0.0, |s| s.start_seconds),
                spike.map_or(0, |s| s.duration_ms),
                1.0 + headroom
            )
        }
        PeakKind::Oom => format!(
            "limit {} = OOM floor {} (an OOM kill at {:.1} s stopped it at {}; floor = max(+100 MiB, ×1.2)) × {:.2}",
            quantity(limit_bytes),
            mib(worst_peak),
            o.ooms.first().map_or(0.0, |k| k.seconds),
            mib(o.ooms.iter().map(|k| k.charge_before_bytes).max().unwrap_or(0)),
            1.0 + headroom
        ),
        PeakKind::Steady => format!(
            "limit {} = peak after startup {} × {:.2}",
            quantity(limit_bytes),
            mib(worst_peak),
            1.0 + headroom
        ),
    };
    reasons.push(limit_reason);

    // The request: steady p95, or (without a steady state) the median of everything seen.
    let steady_p95 = percentile(&o.steady_series, 0.95);
    let steady_median = percentile(&o.steady_series, 0.5);
    let (request_basis, request_reason) = match steady_p95 {
        Some(p95) => (
            p95,
            format!(
                "request {} = steady-state p95 {} (median {}) of {} s after startup",
                quantity(p95.max(REQUEST_FLOOR_BYTES)),
                mib(p95),
                mib(steady_median.unwrap_or(p95)),
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
    let request_bytes = round_up_mib(request_basis.max(REQUEST_FLOOR_BYTES)).min(limit_bytes);
    reasons.push(request_reason);
    if request_basis < REQUEST_FLOOR_BYTES {
        reasons.push(format!(
            "request raised to the {} floor",
            mib(REQUEST_FLOOR_BYTES)
        ));
    }
    if o.startup_seconds.is_some() && o.startup_peak_bytes > steady_peak {
        reasons.push(format!(
            "the startup phase (first {:.1} s) peaks {} above steady state: the limit must let it through",
            o.startup_seconds.unwrap_or(0.0),
            mib(o.startup_peak_bytes.saturating_sub(steady_median.unwrap_or(0)))
        ));
    }
    reasons.push(format!("measured from the {basis_name}"));

    // Leak: flagged, and the limit is not presented as covering it.
    let leak = leak_rate(&o.steady_series, o.resolution_ms);
    if let Some(rate) = leak {
        flags.push(Flag {
            kind: FlagKind::Leak,
            message: format!(
                "memory rose steadily after startup, about {} per hour: a leak grows past any limit; this limit only covers what was observed",
                mib(rate as u64)
            ),
        });
    }

    // Confidence: how much was observed, never more certainty than that.
    let mut score = 3;
    if o.duration_seconds < 60.0 {
        score -= 1;
        confidence_reasons.push(format!(
            "observed {:.0} s: less than a minute of steady state",
            o.duration_seconds
        ));
    } else {
        confidence_reasons.push(format!("observed {:.0} s", o.duration_seconds));
    }
    if o.saw_start && o.startup_seconds.is_some() {
        confidence_reasons.push("startup seen from the first process to steady state".to_owned());
    } else if !o.saw_start {
        score -= 1;
        confidence_reasons.push(
            "the capture began after the target started: its startup peak was not seen".to_owned(),
        );
    } else {
        score -= 1;
        confidence_reasons.push("startup did not end during the capture".to_owned());
    }
    confidence_reasons.push(format!(
        "{} spike{}, {} OOM kill{}, {} restart{}",
        o.spikes.len(),
        if o.spikes.len() == 1 { "" } else { "s" },
        o.ooms.len(),
        if o.ooms.len() == 1 { "" } else { "s" },
        o.restarts,
        if o.restarts == 1 { "" } else { "s" },
    ));
    if leak.is_some() {
        score -= 2;
        confidence_reasons.push("a sustained upward trend (possible leak)".to_owned());
    }
    let confidence = match score {
        3.. => Confidence::High,
        2 => Confidence::Medium,
        _ => Confidence::Low,
    };

    // What is set now.
    match o.current_limit_bytes {
        None => flags.push(Flag {
            kind: FlagKind::MissingLimit,
            message: "no memory limit is set: one runaway allocation can take the node's memory"
                .to_owned(),
        }),
        Some(limit) if limit < worst_peak => flags.push(Flag {
            kind: FlagKind::OomRisk,
            message: format!(
                "the current limit {} is below the observed peak {}: expect OOM kills",
                quantity(limit),
                mib(worst_peak)
            ),
        }),
        Some(limit) if limit < limit_bytes => flags.push(Flag {
            kind: FlagKind::OomRisk,
            message: format!(
                "the current limit {} leaves less than {:.0} % headroom over the observed peak {}",
                quantity(limit),
                headroom * 100.0,
                mib(worst_peak)
            ),
        }),
        Some(_) => {}
    }
    if let (Some(request), Some(p95)) = (o.current_request_bytes, steady_p95) {
        if request > p95.saturating_mul(2).max(p95 + 64 * MIB) {
            flags.push(Flag {
                kind: FlagKind::OverProvisioned,
                message: format!(
                    "the current request {} is far above the steady state {}",
                    quantity(request),
                    mib(p95)
                ),
            });
        }
    }

    let average = if o.steady_series.is_empty() {
        None
    } else {
        Some(o.steady_series.iter().sum::<u64>() / o.steady_series.len() as u64)
    };
    let checklist = Checklist {
        startup_peaks_measured: ChecklistItem {
            answer: o.saw_start && o.startup_seconds.is_some(),
            evidence: match (o.saw_start, o.startup_seconds) {
                (true, Some(end)) => format!(
                    "startup seen: peak {}{}, over at {:.1} s",
                    mib(o.startup_peak_bytes),
                    when(o.startup_peak_at_seconds),
                    end
                ),
                (true, None) => "seen from the start, but startup did not end: capture longer".to_owned(),
                (false, _) => "the capture began after the target started: restart it under capture".to_owned(),
            },
        },
        real_traffic_spikes_observed: ChecklistItem {
            answer: !o.spikes.is_empty(),
            evidence: match o.spikes.iter().max_by_key(|s| s.peak_bytes) {
                Some(spike) => format!(
                    "{} spike{}; the largest peaked at {} at {:.1} s for {} ms",
                    o.spikes.len(),
                    if o.spikes.len() == 1 { "" } else { "s" },
                    mib(spike.peak_bytes),
                    spike.start_seconds,
                    spike.duration_ms
                ),
                None => format!(
                    "no spike above steady state in {:.0} s: capture under real (peak) traffic",
                    o.duration_seconds
                ),
            },
        },
        allocator_reserved_memory_included: ChecklistItem {
            answer: o.basis == Basis::Charged,
            evidence: format!(
                "sized from the {basis_name}, which counts memory the allocator keeps after the program frees it; address space reserved {} ({} of it no-access arenas and guards), resident peak {}",
                mib(o.reserved_peak_bytes),
                mib(o.no_access_peak_bytes),
                mib(o.resident_peak_bytes)
            ),
        },
        headroom_added: ChecklistItem {
            answer: headroom > 0.0,
            evidence: format!("{:.0} % over the worst realistic peak", headroom * 100.0),
        },
        limits_far_enough_from_averages: ChecklistItem {
            answer: average.is_some_and(|avg| limit_bytes as f64 >= avg as f64 * 1.2),
            evidence: match average {
                Some(avg) => format!(
                    "the limit is {:.1}× the steady-state average {}",
                    limit_bytes as f64 / avg.max(1) as f64,
                    mib(avg)
                ),
                None => "no steady state to compare with".to_owned(),
            },
        },
    };

    (
        Recommendation {
            request_bytes,
            limit_bytes,
            request: quantity(request_bytes),
            limit: quantity(limit_bytes),
            headroom_fraction: headroom,
            worst_peak_bytes: worst_peak,
            worst_peak_source,
            basis: o.basis,
            confidence,
            confidence_reasons,
            reasons,
            flags,
            warnings,
        },
        checklist,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(series: Vec<u64>) -> Observation {
        Observation {
            name: "svc".into(),
            basis: Basis::Charged,
            duration_seconds: 600.0,
            saw_start: true,
            startup_seconds: Some(2.0),
            startup_peak_bytes: 0,
            startup_peak_at_seconds: Some(0.8),
            peak_bytes: series.iter().copied().max().unwrap_or(0),
            steady_series: series,
            resolution_ms: 100,
            spikes: Vec::new(),
            ooms: Vec::new(),
            current_limit_bytes: Some(1 << 30),
            current_request_bytes: None,
            reserved_peak_bytes: 900 * MIB,
            no_access_peak_bytes: 512 * MIB,
            resident_peak_bytes: 120 * MIB,
            restarts: 0,
        }
    }

    #[test]
    fn startup_only_peak_sets_the_limit_and_is_named() {
        let mut o = observation(vec![100 * MIB; 600]);
        o.startup_peak_bytes = 328 * MIB;
        o.peak_bytes = 328 * MIB;
        let (r, checklist) = recommend(&o, 0.25);
        assert_eq!(r.limit_bytes, 410 * MIB);
        assert_eq!(r.worst_peak_source, PeakKind::Startup);
        assert_eq!(r.request_bytes, 100 * MIB);
        assert!(
            r.reasons[0].starts_with("limit 410Mi = startup peak 328.0 MiB at 0.8 s"),
            "{}",
            r.reasons[0]
        );
        assert!(r
            .reasons
            .iter()
            .any(|reason| reason.contains("startup phase")));
        assert_eq!(r.confidence, Confidence::High);
        assert!(checklist.startup_peaks_measured.answer);
        assert!(!checklist.real_traffic_spikes_observed.answer);
    }

    #[test]
    fn bursty_traffic_sets_the_limit_from_the_spike() {
        let mut o = observation(vec![100 * MIB; 600]);
        o.startup_peak_bytes = 120 * MIB;
        o.spikes = vec![SpikeSeen {
            start_seconds: 30.0,
            duration_ms: 60,
            peak_bytes: 300 * MIB,
        }];
        o.peak_bytes = 300 * MIB;
        let (r, checklist) = recommend(&o, 0.25);
        assert_eq!(r.worst_peak_source, PeakKind::Spike);
        assert_eq!(r.limit_bytes, 375 * MIB);
        assert!(checklist.real_traffic_spikes_observed.answer);
    }

    #[test]
    fn steady_service_gets_request_near_steady_and_no_flags_with_a_good_limit() {
        let series: Vec<u64> = (0..600).map(|i| 200 * MIB + (i % 5) * MIB).collect();
        let mut o = observation(series);
        o.startup_peak_bytes = 210 * MIB;
        let (r, checklist) = recommend(&o, 0.25);
        assert_eq!(r.request_bytes, 204 * MIB);
        assert!(r.flags.is_empty(), "{:?}", r.flags);
        assert!(checklist.limits_far_enough_from_averages.answer);
    }

    #[test]
    fn a_leak_is_flagged_and_lowers_confidence() {
        let series: Vec<u64> = (0..600).map(|i| 100 * MIB + i * MIB / 4).collect();
        let o = observation(series);
        let (r, _) = recommend(&o, 0.25);
        assert!(
            r.flags.iter().any(|f| f.kind == FlagKind::Leak),
            "{:?}",
            r.flags
        );
        assert_eq!(r.confidence, Confidence::Low);
        assert!(leak_rate(&[100 * MIB; 100], 100).is_none());
    }

    #[test]
    fn an_oom_kill_sets_a_floor_above_the_charge_it_was_stopped_at() {
        let mut o = observation(vec![50 * MIB; 100]);
        o.startup_peak_bytes = 60 * MIB;
        o.ooms = vec![OomSeen {
            seconds: 12.0,
            charge_before_bytes: 256 * MIB,
        }];
        let (r, _) = recommend(&o, 0.25);
        assert_eq!(r.worst_peak_source, PeakKind::Oom);
        // max(256 + 100, 256 × 1.2) = 356 MiB, × 1.25 = 445 MiB.
        assert_eq!(r.limit_bytes, 445 * MIB);
    }

    #[test]
    fn too_short_an_observation_lowers_confidence() {
        let mut o = observation(vec![100 * MIB; 50]);
        o.duration_seconds = 5.0;
        o.saw_start = false;
        let (r, checklist) = recommend(&o, 0.25);
        assert_eq!(r.confidence, Confidence::Low);
        assert!(!checklist.startup_peaks_measured.answer);
    }

    #[test]
    fn no_limit_set_is_flagged_and_a_low_limit_is_an_oom_risk() {
        let mut o = observation(vec![100 * MIB; 600]);
        o.current_limit_bytes = None;
        let (r, _) = recommend(&o, 0.25);
        assert!(r.flags.iter().any(|f| f.kind == FlagKind::MissingLimit));
        o.current_limit_bytes = Some(90 * MIB);
        let (r, _) = recommend(&o, 0.25);
        assert!(r
            .flags
            .iter()
            .any(|f| f.kind == FlagKind::OomRisk && f.message.contains("below")));
        o.current_limit_bytes = Some(110 * MIB);
        let (r, _) = recommend(&o, 0.25);
        assert!(r
            .flags
            .iter()
            .any(|f| f.kind == FlagKind::OomRisk && f.message.contains("headroom")));
    }

    #[test]
    fn over_provisioned_request_is_flagged() {
        let mut o = observation(vec![100 * MIB; 600]);
        o.current_request_bytes = Some(1 << 30);
        let (r, _) = recommend(&o, 0.25);
        assert!(r.flags.iter().any(|f| f.kind == FlagKind::OverProvisioned));
    }

    #[test]
    fn headroom_outside_the_range_warns() {
        let o = observation(vec![100 * MIB; 600]);
        assert!(recommend(&o, 0.25).0.warnings.is_empty());
        assert_eq!(recommend(&o, 0.5).0.warnings.len(), 1);
    }

    #[test]
    fn replicas_merge_to_the_highest_peaks_and_pooled_steady_state() {
        let mut a = observation(vec![100 * MIB; 100]);
        a.startup_peak_bytes = 200 * MIB;
        let mut b = observation(vec![140 * MIB; 100]);
        b.startup_peak_bytes = 300 * MIB;
        b.peak_bytes = 300 * MIB;
        let merged = Observation::merge(&[a, b]).expect("two");
        assert_eq!(merged.startup_peak_bytes, 300 * MIB);
        assert_eq!(merged.steady_series.len(), 200);
        let (r, _) = recommend(&merged, 0.25);
        assert_eq!(r.request_bytes, 140 * MIB);
        assert_eq!(r.limit_bytes, 375 * MIB);
    }

    mod properties {
        use proptest::{collection::vec, prelude::*};

        use super::*;

        fn build(steady_mib: Vec<u64>, startup_mib: u64, spike_mib: u64) -> Observation {
            let mut o = observation(steady_mib.iter().map(|m| m * MIB).collect());
            o.startup_peak_bytes = startup_mib * MIB;
            if spike_mib > 0 {
                o.spikes = vec![SpikeSeen {
                    start_seconds: 10.0,
                    duration_ms: 50,
                    peak_bytes: spike_mib * MIB,
                }];
            }
            o.peak_bytes = o
                .steady_series
                .iter()
                .copied()
                .chain([o.startup_peak_bytes, spike_mib * MIB])
                .max()
                .unwrap_or(0);
            o
        }

        proptest! {
            #[test]
            fn the_limit_covers_every_peak_with_its_headroom(
                steady in vec(1u64..4096, 20..200),
                startup in 0u64..8192,
                spike in 0u64..8192,
                headroom in 0.0f64..1.0,
            ) {
                let o = build(steady, startup, spike);
                let (r, _) = recommend(&o, headroom);
                prop_assert!(r.limit_bytes as f64 >= o.peak_bytes as f64 * (1.0 + headroom) - 1.0);
                prop_assert!(r.request_bytes <= r.limit_bytes);
                prop_assert_eq!(r.limit_bytes % MIB, 0);
                prop_assert_eq!(r.request_bytes % MIB, 0);
                prop_assert!(r.request_bytes >= REQUEST_FLOOR_BYTES.min(r.limit_bytes));
            }

            #[test]
            fn a_higher_spike_never_lowers_the_limit(
                steady in vec(1u64..2048, 20..100),
                startup in 0u64..4096,
                spike in 1u64..4096,
                extra in 1u64..4096,
            ) {
                let lower = recommend(&build(steady.clone(), startup, spike), 0.25).0;
                let higher = recommend(&build(steady, startup, spike + extra), 0.25).0;
                prop_assert!(higher.limit_bytes >= lower.limit_bytes);
            }

            #[test]
            fn more_headroom_never_lowers_the_limit(
                steady in vec(1u64..2048, 20..100),
                startup in 0u64..4096,
                low in 0.0f64..1.0,
                more in 0.0f64..1.0,
            ) {
                let o = build(steady, startup, 0);
                prop_assert!(recommend(&o, low + more).0.limit_bytes >= recommend(&o, low).0.limit_bytes);
            }
        }
    }
}
