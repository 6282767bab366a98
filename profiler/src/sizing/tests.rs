//! `recommend` end to end on hand-built observations, and properties of the limit and request
//! over generated ones.

use super::*;
use crate::report::{Basis, Confidence, FlagKind, PeakKind};

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

    #[test]
    fn a_spike_that_ties_with_the_steady_maximum_is_named_as_the_spike() {
        // The spike's own bucket is in the steady series, so the two maxima are equal.
        let mut series = vec![100 * MIB; 600];
        series[300] = 300 * MIB;
        let mut o = observation(series);
        o.startup_peak_bytes = 120 * MIB;
        o.spikes = vec![SpikeSeen {
            start_seconds: 32.0,
            duration_ms: 100,
            peak_bytes: 300 * MIB,
        }];
        o.peak_bytes = 300 * MIB;
        let (r, _) = recommend(&o, 0.25);
        assert_eq!(r.worst_peak_source, PeakKind::Spike);
        assert!(
            r.reasons[0].contains("spike peak 300.0 MiB"),
            "{}",
            r.reasons[0]
        );
    }
}
