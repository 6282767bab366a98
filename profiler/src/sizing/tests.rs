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
        replicas: 1,
        ..Observation::default()
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
    // The steady state is 100 MiB, but 410 / 3 rounds up to 137 MiB: the ratio rule.
    assert_eq!(r.request_bytes, 137 * MIB);
    assert!(r
        .reasons
        .iter()
        .any(|reason| reason.starts_with("request raised from 100Mi to 137Mi")));
    assert!(
        r.reasons[0].starts_with("limit 410Mi = startup peak 328.0 MiB × 1.25 (the peak at 0.8 s"),
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
    assert!(leak(&[100 * MIB; 100], 100).is_none());
}

#[test]
fn an_oom_kill_sets_a_floor_above_the_charge_it_was_stopped_at() {
    let mut o = observation(vec![50 * MIB; 100]);
    o.startup_peak_bytes = 60 * MIB;
    o.ooms = vec![OomSeen {
        seconds: 12.0,
        charge_before_bytes: 256 * MIB,
        ..OomSeen::default()
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
fn a_few_seconds_of_data_is_low_confidence_even_with_startup_seen() {
    let mut o = observation(vec![100 * MIB; 40]);
    o.duration_seconds = 6.0;
    assert_eq!(recommend(&o, 0.25).0.confidence, Confidence::Low);
    // A long capture whose target had only 10 buckets after startup: what is present counts.
    let mut o = observation(vec![100 * MIB; 10]);
    o.duration_seconds = 600.0;
    let (r, _) = recommend(&o, 0.25);
    assert_ne!(r.confidence, Confidence::High);
    assert!(
        r.confidence_reasons[0].contains("10 buckets"),
        "{:?}",
        r.confidence_reasons
    );
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
fn replicas_merge_to_the_highest_peaks_and_the_worst_steady_state() {
    let mut a = observation(vec![100 * MIB; 100]);
    a.startup_peak_bytes = 200 * MIB;
    let mut b = observation(vec![140 * MIB; 100]);
    b.startup_peak_bytes = 300 * MIB;
    b.peak_bytes = 300 * MIB;
    let merged = Observation::merge(&[a, b]).expect("two");
    assert_eq!(merged.startup_peak_bytes, 300 * MIB);
    // The worst replica's steady state, not the two pooled.
    assert_eq!(merged.steady_series, vec![140 * MIB; 100]);
    let (r, _) = recommend(&merged, 0.25);
    assert_eq!(r.request_bytes, 140 * MIB);
    assert_eq!(r.limit_bytes, 375 * MIB);
}

#[test]
fn replicas_count_equally_however_long_each_was_watched() {
    let long = observation(vec![100 * MIB; 600]);
    let mut short = observation(vec![300 * MIB; 25]);
    short.name = "svc-b".into();
    let merged = Observation::merge(&[long, short]).expect("two");
    let (r, _) = recommend(&merged, 0.25);
    assert_eq!(r.request_bytes, 300 * MIB);
    assert!(
        r.reasons
            .iter()
            .any(|reason| reason.contains("svc-b holds the most")),
        "{:?}",
        r.reasons
    );
}

#[test]
fn page_cache_under_a_limit_is_not_sized_and_does_not_ratchet() {
    // Working set 20 MiB; the charge sat at the 96 MiB limit with cache, no OOM kill.
    let mut o = observation(vec![20 * MIB; 600]);
    o.basis = Basis::WorkingSet;
    o.startup_peak_bytes = 20 * MIB;
    o.page_cache_peak_bytes = 76 * MIB;
    o.charge_peak_bytes = 96 * MIB;
    o.current_limit_bytes = Some(96 * MIB);
    let (first, _) = recommend(&o, 0.25);
    assert_eq!(first.limit_bytes, 32 * MIB, "{:?}", first.reasons);
    assert!(first.flags.iter().all(|f| f.kind != FlagKind::OomRisk));
    assert!(first
        .reasons
        .iter()
        .any(|r| r.starts_with("page cache: up to 76.0 MiB")));
    // Captured again under the recommended limit: the same answer, not × 1.25.
    o.current_limit_bytes = Some(first.limit_bytes);
    o.charge_peak_bytes = first.limit_bytes;
    let (second, _) = recommend(&o, 0.25);
    assert_eq!(second.limit_bytes, first.limit_bytes);
}

#[test]
fn a_charge_at_the_limit_is_cache_unless_the_workload_stalled_on_memory() {
    // A charge-only report: the charge sat at the 96 MiB limit, no OOM kill.
    let mut o = observation(vec![96 * MIB; 600]);
    o.startup_peak_bytes = 96 * MIB;
    o.charge_peak_bytes = 96 * MIB;
    o.current_limit_bytes = Some(96 * MIB);
    let (r, _) = recommend(&o, 0.25);
    assert!(
        r.flags.iter().all(|f| f.kind != FlagKind::OomRisk),
        "{:?}",
        r.flags
    );
    // PSI says every task stalled 250 ms of the 60 s: the cost of caching, no risk.
    o.duration_seconds = 60.0;
    o.pressure_full_us = Some(250_000);
    let (r, _) = recommend(&o, 0.25);
    assert!(
        r.flags.iter().all(|f| f.kind != FlagKind::OomRisk),
        "0.4 % of the time stalled is the cost of caching: {:?}",
        r.flags
    );
    // 1.2 s of 60 s (2 %): the charge at the limit may be the workload itself, a risk.
    o.pressure_full_us = Some(1_200_000);
    let (r, _) = recommend(&o, 0.25);
    assert!(
        r.flags.iter().any(|f| f.kind == FlagKind::OomRisk),
        "{:?}",
        r.flags
    );
    // With a working-set basis the limit is not in question, but the stall is: pressure.
    o.basis = Basis::WorkingSet;
    o.steady_series = vec![40 * MIB; 600];
    o.peak_bytes = 40 * MIB;
    o.startup_peak_bytes = 40 * MIB;
    o.page_cache_peak_bytes = 56 * MIB;
    let (r, _) = recommend(&o, 0.25);
    assert!(
        r.flags.iter().all(|f| f.kind != FlagKind::OomRisk),
        "{:?}",
        r.flags
    );
    assert!(
        r.flags.iter().any(|f| f.kind == FlagKind::MemoryPressure
            && f.message.contains("stalled 1200.0 ms")
            && f.message.contains("2.0 % of the 60 s")
            && f.message.contains("56.0 MiB")),
        "{:?}",
        r.flags
    );
    o.pressure_full_us = Some(0);
    let (r, _) = recommend(&o, 0.25);
    assert!(
        r.flags
            .iter()
            .all(|f| f.kind != FlagKind::OomRisk && f.kind != FlagKind::MemoryPressure),
        "{:?}",
        r.flags
    );
}

#[test]
fn an_oom_kill_is_a_lower_bound_with_low_confidence_and_a_re_run_advice() {
    let mut o = observation(vec![100 * MIB; 600]);
    o.startup_peak_bytes = 110 * MIB;
    o.ooms = vec![OomSeen {
        seconds: 30.0,
        charge_before_bytes: 120 * MIB,
        limit_bytes: Some(128 * MIB),
        victim_bytes: 126 * MIB,
    }];
    let (r, _) = recommend(&o, 0.25);
    assert_eq!(r.confidence, Confidence::Low);
    // Demand above 128 MiB (the limit): floor = max(128 + 100, 128 × 1.2) = 228 MiB.
    assert_eq!(r.oom_floor_bytes, Some(228 * MIB));
    assert_eq!(r.limit_bytes, 285 * MIB);
    assert!(r
        .reasons
        .iter()
        .any(|reason| reason.contains("re-run the capture without the limit")));
}

#[test]
fn the_peak_before_a_late_capture_counts_in_the_limit() {
    let mut o = observation(vec![100 * MIB; 600]);
    o.saw_start = false;
    o.startup_peak_bytes = 110 * MIB;
    o.peak_before_capture = Some(crate::report::PeakBeforeCapture {
        bytes: 310 * MIB,
        reclaimable_bytes: 9 * MIB,
        source: "memory.max_usage_in_bytes".into(),
    });
    let (r, _) = recommend(&o, 0.25);
    assert_eq!(r.worst_peak_source, PeakKind::BeforeCapture);
    assert_eq!(r.worst_peak_bytes, 301 * MIB);
    assert!(r.limit_bytes as f64 >= 1.2 * 301.0 * MIB as f64);
    assert!(
        r.reasons[0].contains("peak before the capture 301.0 MiB"),
        "{}",
        r.reasons[0]
    );
}

#[test]
fn a_bucket_without_a_working_set_read_keeps_the_last_cache_not_zero() {
    use crate::report::BucketPeaks;
    let bucket = |charged, working_set| BucketPeaks {
        charged: charged * MIB,
        working_set: working_set * MIB,
        ..BucketPeaks::default()
    };
    // 60 MiB of cache; the third bucket's close was skipped, its charge from samples only.
    let buckets = [
        bucket(100, 40),
        bucket(100, 40),
        bucket(130, 0),
        bucket(100, 40),
    ];
    assert_eq!(
        super::observation::basis_series(Basis::WorkingSet, &buckets),
        vec![40 * MIB, 40 * MIB, 70 * MIB, 40 * MIB]
    );
    assert_eq!(
        super::observation::basis_series(Basis::Charged, &buckets)[2],
        130 * MIB
    );
}

#[test]
fn policy_floors_caps_and_ratio() {
    let tiny = observation(vec![2 * MIB; 600]);
    let (r, _) = recommend(&tiny, 0.25);
    assert_eq!((r.request_bytes, r.limit_bytes), (32 * MIB, 32 * MIB));
    assert!(
        r.reasons
            .iter()
            .any(|x| x == "limit raised from 3Mi to the 32Mi floor"),
        "{:?}",
        r.reasons
    );

    let policy = Policy {
        min_bytes: Some(64 * MIB),
        ..Policy::default()
    };
    let (r, _) = recommend_with(&tiny, &policy);
    assert_eq!((r.request_bytes, r.limit_bytes), (64 * MIB, 64 * MIB));

    let mut big = observation(vec![100 * MIB; 600]);
    big.startup_peak_bytes = 800 * MIB;
    let policy = Policy {
        max_bytes: Some(512 * MIB),
        ..Policy::default()
    };
    let (r, checklist) = recommend_with(&big, &policy);
    assert_eq!(r.limit_bytes, 512 * MIB);
    assert!(r
        .flags
        .iter()
        .any(|f| f.kind == FlagKind::OomRisk && f.message.contains("maximum")));
    assert!(!checklist.headroom_added.answer);
    assert!(!checklist.limits_far_enough_from_averages.answer);
    // 512 / 3 → 171 MiB request, not the 100 MiB steady state.
    assert_eq!(r.request_bytes, 171 * MIB);
}

#[test]
fn a_reservation_beyond_the_limit_fails_the_allocator_item() {
    let mut o = observation(vec![40 * MIB; 600]);
    o.reserved_peak_bytes = 2300 * MIB;
    o.no_access_peak_bytes = 100 * MIB;
    let (_, checklist) = recommend(&o, 0.25);
    assert!(!checklist.allocator_reserved_memory_included.answer);
    o.reserved_peak_bytes = 150 * MIB;
    let (_, checklist) = recommend(&o, 0.25);
    assert!(checklist.allocator_reserved_memory_included.answer);
}

fn java(max_heap: Option<u64>, percentage: Option<f64>) -> crate::report::ProcessRuntime {
    use crate::report::{JvmSettings, ProcessRuntime, RuntimeKind};
    ProcessRuntime {
        pid: 42,
        command: "java".into(),
        runtime: RuntimeKind::Jvm,
        runtime_from: "argv[0] is java".into(),
        jvm: Some(JvmSettings {
            max_heap_bytes: max_heap,
            max_heap_from: max_heap.map(|_| "-Xmx2g on the command line".into()),
            max_ram_percentage: percentage,
            max_ram_percentage_from: percentage
                .map(|_| "-XX:MaxRAMPercentage in JAVA_TOOL_OPTIONS".into()),
            heap_ceiling_bytes: max_heap,
        }),
        ..ProcessRuntime::default()
    }
}

fn go(limit: u64, gc_off: bool) -> crate::report::ProcessRuntime {
    use crate::report::{GoSettings, ProcessRuntime, RuntimeKind};
    ProcessRuntime {
        pid: 7,
        command: "server".into(),
        runtime: RuntimeKind::Go,
        runtime_from: "GOMEMLIMIT in the environment".into(),
        go: Some(GoSettings {
            memory_limit_bytes: Some(limit),
            memory_limit_from: Some("GOMEMLIMIT=... in the environment".into()),
            gc_off,
        }),
        ..ProcessRuntime::default()
    }
}

fn runtime_flags(r: &Recommendation) -> Vec<&str> {
    r.flags
        .iter()
        .filter(|f| f.kind == FlagKind::RuntimeReservation)
        .map(|f| f.message.as_str())
        .collect()
}

#[test]
fn a_jvm_max_heap_beyond_what_was_observed_raises_the_limit_and_is_flagged() {
    // 50 MiB touched, -Xmx2g: the observation alone calls for 63Mi.
    let mut o = observation(vec![50 * MIB; 600]);
    o.startup_peak_bytes = 50 * MIB;
    o.reserved_peak_bytes = 2200 * MIB;
    o.no_access_peak_bytes = 2100 * MIB;
    o.runtime = vec![java(Some(2 << 30), None)];
    let (r, checklist) = recommend(&o, 0.25);
    // 2 GiB + 25 % non-heap = 2560 MiB.
    assert_eq!(r.limit_bytes, 2560 * MIB, "{:?}", r.reasons);
    assert!(
        r.reasons.iter().any(|x| x.starts_with(
            "limit raised from 63Mi to 2560Mi to hold the JVM max heap 2.0 GiB (-Xmx2g on the command line, pid 42 java) + 25 % for non-heap memory"
        )),
        "{:?}",
        r.reasons
    );
    let flags = runtime_flags(&r);
    assert_eq!(flags.len(), 1, "{:?}", r.flags);
    assert!(
        flags[0].starts_with("JVM max heap 2.0 GiB (-Xmx2g on the command line, pid 42 java) lies beyond the 63Mi the observed peak calls for: the limit was raised to 2560Mi"),
        "{}",
        flags[0]
    );
    // 63 MiB / 1.25 = 50.4 MiB.
    assert!(
        flags[0].contains("lower -Xmx to at most 50.4 MiB"),
        "{}",
        flags[0]
    );
    // The current 1Gi limit cannot hold it either.
    assert!(
        flags[0].ends_with("The current limit 1024Mi is below that too."),
        "{}",
        flags[0]
    );
    // ... and that is said once: 1Gi is ample headroom over the 50 MiB observed.
    assert!(
        r.flags.iter().all(|f| f.kind != FlagKind::OomRisk),
        "{:?}",
        r.flags
    );
    // The limit holds the heap: the item is ticked, and says with what numbers.
    let item = &checklist.allocator_reserved_memory_included;
    assert!(item.answer, "{}", item.evidence);
    assert!(
        item.evidence
            .contains("runtime: JVM max heap 2.0 GiB + 25 % = 2.5 GiB within the limit"),
        "{}",
        item.evidence
    );
    assert!(r.reasons.iter().any(|x| x.starts_with(
        "runtime read from /proc: pid 42 java: jvm (argv[0] is java), max heap 2.0 GiB (-Xmx2g on the command line)"
    )), "{:?}", r.reasons);
}

#[test]
fn a_jvm_max_heap_beyond_a_capped_limit_fails_the_allocator_item() {
    let mut o = observation(vec![50 * MIB; 600]);
    o.startup_peak_bytes = 50 * MIB;
    o.runtime = vec![java(Some(2 << 30), None)];
    let policy = Policy {
        max_bytes: Some(512 * MIB),
        ..Policy::default()
    };
    let (r, checklist) = recommend_with(&o, &policy);
    assert_eq!(r.limit_bytes, 512 * MIB);
    let flags = runtime_flags(&r);
    assert!(
        flags[0].contains("= 2.5 GiB lies beyond the limit 512Mi (capped at the maximum)")
            && flags[0].contains("lower -Xmx to at most 409.6 MiB, or allow a limit of 2560Mi"),
        "{}",
        flags[0]
    );
    let item = &checklist.allocator_reserved_memory_included;
    assert!(!item.answer, "{}", item.evidence);
    assert!(
        item.evidence
            .contains("JVM max heap 2.0 GiB + 25 % = 2.5 GiB beyond the limit"),
        "{}",
        item.evidence
    );
}

#[test]
fn a_jvm_heap_within_what_was_observed_changes_nothing() {
    let mut o = observation(vec![400 * MIB; 600]);
    o.startup_peak_bytes = 400 * MIB;
    o.runtime = vec![java(Some(256 * MIB), None)];
    let (r, checklist) = recommend(&o, 0.25);
    assert_eq!(r.limit_bytes, 500 * MIB);
    assert!(runtime_flags(&r).is_empty(), "{:?}", r.flags);
    assert!(checklist.allocator_reserved_memory_included.answer);
}

#[test]
fn a_soft_gomemlimit_is_flagged_not_sized_and_gogc_off_is_held() {
    let mut o = observation(vec![50 * MIB; 600]);
    o.startup_peak_bytes = 50 * MIB;
    o.reserved_peak_bytes = 0;
    o.runtime = vec![go(4 << 30, false)];
    let (r, checklist) = recommend(&o, 0.25);
    assert_eq!(r.limit_bytes, 63 * MIB, "not raised: {:?}", r.reasons);
    let flags = runtime_flags(&r);
    assert!(
        flags[0].starts_with("GOMEMLIMIT 4.0 GiB (GOMEMLIMIT=... in the environment, pid 7 server) lies beyond the limit 63Mi")
            && flags[0].contains("Set GOMEMLIMIT to at most 57.3 MiB"),
        "{}",
        flags[0]
    );
    assert!(r
        .reasons
        .iter()
        .any(|x| x.starts_with("the limit is not raised for the GOMEMLIMIT 4.0 GiB")));
    let item = &checklist.allocator_reserved_memory_included;
    assert!(!item.answer, "{}", item.evidence);
    assert!(
        item.evidence
            .contains("runtime: GOMEMLIMIT 4.0 GiB + 10 % = 4.4 GiB beyond the limit"),
        "{}",
        item.evidence
    );
    // GOGC=off: the heap grows to GOMEMLIMIT, so the limit holds it + 10 %.
    o.runtime = vec![go(1 << 30, true)];
    let (r, checklist) = recommend(&o, 0.25);
    assert_eq!(r.limit_bytes, 1127 * MIB, "{:?}", r.reasons);
    assert_eq!(runtime_flags(&r).len(), 1);
    assert!(checklist.allocator_reserved_memory_included.answer);
}

#[test]
fn a_max_ram_percentage_that_crowds_out_non_heap_is_flagged() {
    let mut o = observation(vec![100 * MIB; 600]);
    o.startup_peak_bytes = 100 * MIB;
    o.reserved_peak_bytes = 0;
    o.runtime = vec![java(None, Some(75.0))];
    let (r, checklist) = recommend(&o, 0.25);
    assert!(runtime_flags(&r).is_empty(), "{:?}", r.flags);
    assert!(checklist.allocator_reserved_memory_included.answer);
    o.runtime = vec![java(None, Some(90.0))];
    let (r, checklist) = recommend(&o, 0.25);
    assert_eq!(r.limit_bytes, 125 * MIB, "a share of any limit: not raised");
    let flags = runtime_flags(&r);
    assert!(
        flags[0].contains("leaving 10 % beside it") && flags[0].ends_with("lower it to at most 80"),
        "{}",
        flags[0]
    );
    assert!(!checklist.allocator_reserved_memory_included.answer);
}

#[test]
fn glibc_with_many_threads_and_no_arena_bound_gets_a_note_not_a_limit() {
    let mut o = observation(vec![100 * MIB; 600]);
    o.startup_peak_bytes = 100 * MIB;
    let without = recommend(&o, 0.25).0;
    o.runtime = vec![crate::report::ProcessRuntime {
        pid: 9,
        command: "svc".into(),
        allocator: Some(crate::report::AllocatorKind::Glibc),
        allocator_from: Some("libc.so.6 mapped".into()),
        threads_peak: Some(40),
        ..crate::report::ProcessRuntime::default()
    }];
    let (r, _) = recommend(&o, 0.25);
    assert_eq!(r.limit_bytes, without.limit_bytes);
    assert!(
        r.reasons.iter().any(|x| x.starts_with(
            "note: pid 9 svc uses glibc malloc with 40 threads and MALLOC_ARENA_MAX unset"
        )),
        "{:?}",
        r.reasons
    );
    o.runtime[0].malloc_arena_max = Some(2);
    let (r, _) = recommend(&o, 0.25);
    assert!(r.reasons.iter().all(|x| !x.starts_with("note: pid 9")));
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

    /// Every "limit Q = ...", "limit raised/capped from A to/at B", "request Q = ..." and
    /// "request raised/lowered from A to B" in the reasons, read back as a chain: each step
    /// starts where the last ended, and the chain ends at the value emitted.
    fn chain_ends_at(reasons: &[String], what: &str) -> Option<u64> {
        let mut value: Option<u64> = None;
        for reason in reasons {
            let Some(rest) = reason.strip_prefix(what) else {
                continue;
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.get(1) == Some(&"=") {
                value = parse_quantity(words[0]);
            } else if let Some(from) = words.iter().position(|w| *w == "from") {
                let start = parse_quantity(words[from + 1]);
                assert_eq!(start, value, "{reason} does not start where {what} was");
                let to = words[from + 2..]
                    .iter()
                    .find_map(|w| parse_quantity(w))
                    .expect("a target quantity");
                value = Some(to);
            }
        }
        value
    }

    fn parse_quantity(word: &str) -> Option<u64> {
        let word = word.trim_end_matches([',', ':', ';']);
        if let Some(g) = word.strip_suffix("Gi") {
            return g.parse::<u64>().ok().map(|g| g << 30);
        }
        word.strip_suffix("Mi")?
            .parse::<u64>()
            .ok()
            .map(|m| m * MIB)
    }

    /// The size after `label`, formatted as `format_bytes` does, in MiB, and how far off
    /// its one decimal can be.
    fn mib_in(text: &str, label: &str) -> Option<(f64, f64)> {
        let at = text.find(label)? + label.len();
        let mut words = text[at..].split_whitespace();
        let number: f64 = words.next()?.parse().ok()?;
        let scale = match words.next()?.trim_end_matches([',', ')', ';']) {
            "B" => 1.0 / MIB as f64,
            "KiB" => 1.0 / 1024.0,
            "MiB" => 1.0,
            "GiB" => 1024.0,
            _ => return None,
        };
        Some((number * scale, 0.06 * scale))
    }

    proptest! {
        #[test]
        fn every_reason_agrees_with_the_numbers_emitted(
            steady in vec(1u64..2048, 0..200),
            startup in 0u64..4096,
            spike in 0u64..4096,
            kill in proptest::option::of(1u64..2048),
            before in proptest::option::of(1u64..4096),
            headroom in 0.05f64..0.6,
            min in proptest::option::of(1u64..512),
            max in proptest::option::of(16u64..8192),
            ratio in 1.0f64..6.0,
            reserved in 0u64..8192,
            xmx in proptest::option::of(1u64..8192),
        ) {
            let mut o = build(steady.clone(), startup, spike);
            if steady.is_empty() {
                o.startup_seconds = None;
            }
            o.ooms = kill.map(|k| OomSeen { seconds: 1.0, charge_before_bytes: k * MIB, limit_bytes: Some(k * MIB), victim_bytes: 0 }).into_iter().collect();
            o.peak_before_capture = before.map(|b| crate::report::PeakBeforeCapture { bytes: b * MIB, reclaimable_bytes: 0, source: "memory.peak".into() });
            o.reserved_peak_bytes = reserved * MIB;
            o.runtime = xmx.map(|x| super::java(Some(x * MIB), None)).into_iter().collect();
            let policy = Policy { headroom, min_bytes: min.map(|m| m * MIB), max_bytes: max.map(|m| m * MIB), max_ratio: ratio };
            let (r, checklist) = recommend_with(&o, &policy);
            prop_assert_eq!(chain_ends_at(&r.reasons, "limit "), Some(r.limit_bytes), "{:?}", r.reasons);
            prop_assert_eq!(chain_ends_at(&r.reasons, "request "), Some(r.request_bytes), "{:?}", r.reasons);
            prop_assert_eq!(&r.limit, &crate::units::quantity(r.limit_bytes));
            prop_assert_eq!(&r.request, &crate::units::quantity(r.request_bytes));
            // The first reason's peak × factor is the limit it names, to the MiB.
            let first = &r.reasons[0];
            let named = parse_quantity(first.split_whitespace().nth(1).unwrap_or("")).unwrap_or(0);
            prop_assert_eq!(named, crate::units::round_up_mib((r.worst_peak_bytes as f64 * (1.0 + headroom)).ceil() as u64), "{}", first);
            let factor: f64 = first.split('×').nth(1).and_then(|t| t.split_whitespace().next()).and_then(|t| t.trim_end_matches(':').parse().ok()).unwrap_or(0.0);
            prop_assert!((factor - (1.0 + headroom)).abs() < 0.006, "{}", first);
            // Both values respect the policy, and the ratio holds unless the limit is capped.
            let floor = policy.floor_bytes();
            prop_assert!(r.limit_bytes >= floor && r.request_bytes >= floor.min(r.limit_bytes));
            prop_assert!(r.request_bytes <= r.limit_bytes);
            prop_assert!(r.limit_bytes as f64 <= r.request_bytes as f64 * ratio + MIB as f64, "{:?}", r.reasons);
            // Checklist evidence quotes the limit emitted; its answers follow the numbers.
            let quoted = format!("the limit {} ", r.limit);
            prop_assert!(checklist.headroom_added.evidence.contains(&quoted));
            prop_assert_eq!(checklist.headroom_added.answer, r.limit_bytes as f64 >= r.worst_peak_bytes as f64 * (1.0 + headroom) - 1.0);
            let (mib, error) = mib_in(&checklist.headroom_added.evidence, "worst realistic peak ").expect("the peak quoted");
            prop_assert!((mib - r.worst_peak_bytes as f64 / MIB as f64).abs() <= error);
            // "... <peak> × <factor>": the two words before the first × are the worst peak.
            let head = first.split(" × ").next().unwrap_or("");
            let mut tail: Vec<&str> = head.rsplitn(3, ' ').collect();
            tail.reverse();
            let quoted = tail[1..].join(" ");
            let (mib, error) = mib_in(&format!("@{quoted}"), "@").expect("the peak before ×");
            prop_assert!((mib - r.worst_peak_bytes as f64 / MIB as f64).abs() <= error, "{}", first);
            if kill.is_some() {
                prop_assert_eq!(r.confidence, Confidence::Low);
            }
            // A max heap with its allowance is held unless a maximum caps the limit, and the
            // allocator item answers whether it fits.
            if let Some(x) = xmx {
                let need = crate::units::round_up_mib((x as f64 * MIB as f64 * 1.25).ceil() as u64);
                prop_assert!(r.limit_bytes >= need || max.is_some_and(|m| r.limit_bytes <= crate::units::round_up_mib(m * MIB).max(floor)), "{:?}", r.reasons);
                if r.limit_bytes < need {
                    prop_assert!(!checklist.allocator_reserved_memory_included.answer);
                }
            }
        }
    }

    proptest! {
        /// On the working set, what is set now never moves the recommendation: a capture
        /// under the recommended limit recommends it again (no ratchet).
        #[test]
        fn the_current_limit_never_moves_the_recommendation(
            steady in vec(1u64..1024, 20..200),
            startup in 0u64..2048,
            cache in 0u64..4096,
            current in 1u64..8192,
        ) {
            let mut o = build(steady, startup, 0);
            o.basis = Basis::WorkingSet;
            o.page_cache_peak_bytes = cache * MIB;
            o.current_limit_bytes = None;
            let free = recommend(&o, 0.25).0;
            o.current_limit_bytes = Some(current * MIB);
            o.charge_peak_bytes = current * MIB;
            let under = recommend(&o, 0.25).0;
            prop_assert_eq!(free.limit_bytes, under.limit_bytes);
            prop_assert_eq!(free.request_bytes, under.request_bytes);
            o.current_limit_bytes = Some(free.limit_bytes);
            prop_assert!(recommend(&o, 0.25).0.flags.iter().all(|f| f.kind != FlagKind::OomRisk));
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

#[test]
fn the_time_asked_for_is_named_but_confidence_comes_from_the_data_present() {
    // 40 s of data at 1 s, when an hour was asked for: Medium (under a minute), and said so.
    let mut o = observation(vec![100 * MIB; 40]);
    o.duration_seconds = 40.0;
    o.resolution_ms = 1000;
    o.asked_seconds = Some(3600.0);
    let (r, _) = recommend(&o, 0.25);
    assert_eq!(
        r.confidence,
        Confidence::Medium,
        "{:?}",
        r.confidence_reasons
    );
    assert!(r.confidence_reasons[0].starts_with("observed 40 s (40 buckets"));
    assert!(
        r.confidence_reasons
            .iter()
            .any(|line| line == "the data covers 40 s of the 60 min asked for"),
        "{:?}",
        r.confidence_reasons
    );
    // The whole hour present: High, and nothing to say about coverage.
    o.duration_seconds = 3600.0;
    o.steady_series = vec![100 * MIB; 240];
    let (r, _) = recommend(&o, 0.25);
    assert_eq!(r.confidence, Confidence::High, "{:?}", r.confidence_reasons);
    assert!(!r.confidence_reasons.iter().any(|l| l.contains("asked for")));
}
