//! The seed's checklist, each question answered from what was observed, with the evidence.

use super::{
    wording::{at_seconds, basis_name, plural},
    Observation,
};
use crate::{
    report::{Basis, Checklist, ChecklistItem},
    units::format_bytes,
};

/// Answers the five questions for an observation sized with `limit_bytes` and `headroom`.
pub(super) fn checklist(o: &Observation, limit_bytes: u64, headroom: f64) -> Checklist {
    Checklist {
        startup_peaks_measured: startup_peaks_measured(o),
        real_traffic_spikes_observed: real_traffic_spikes_observed(o),
        allocator_reserved_memory_included: allocator_reserved_memory_included(o),
        headroom_added: headroom_added(headroom),
        limits_far_enough_from_averages: limits_far_enough_from_averages(o, limit_bytes),
    }
}

/// Yes only when the capture saw the target start and its startup end.
fn startup_peaks_measured(o: &Observation) -> ChecklistItem {
    ChecklistItem {
        answer: o.saw_start && o.startup_seconds.is_some(),
        evidence: match (o.saw_start, o.startup_seconds) {
            (true, Some(end)) => format!(
                "startup seen: peak {}{}, over at {:.1} s",
                format_bytes(o.startup_peak_bytes),
                at_seconds(o.startup_peak_at_seconds),
                end
            ),
            (true, None) => {
                "seen from the start, but startup did not end: capture longer".to_owned()
            }
            (false, _) => {
                "the capture began after the target started: restart it under capture".to_owned()
            }
        },
    }
}

/// Yes when at least one spike rose above steady state; the evidence names the largest.
fn real_traffic_spikes_observed(o: &Observation) -> ChecklistItem {
    ChecklistItem {
        answer: !o.spikes.is_empty(),
        evidence: match o.spikes.iter().max_by_key(|s| s.peak_bytes) {
            Some(spike) => format!(
                "{} spike{}; the largest peaked at {} at {:.1} s for {} ms",
                o.spikes.len(),
                plural(o.spikes.len() as u64),
                format_bytes(spike.peak_bytes),
                spike.start_seconds,
                spike.duration_ms
            ),
            None => format!(
                "no spike above steady state in {:.0} s: capture under real (peak) traffic",
                o.duration_seconds
            ),
        },
    }
}

/// Yes when sized from the cgroup charge, which counts what the allocator keeps after a free.
fn allocator_reserved_memory_included(o: &Observation) -> ChecklistItem {
    ChecklistItem {
        answer: o.basis == Basis::Charged,
        evidence: format!(
            "sized from the {}, which counts memory the allocator keeps after the program frees it; address space reserved {} ({} of it no-access arenas and guards), resident peak {}",
            basis_name(o.basis),
            format_bytes(o.reserved_peak_bytes),
            format_bytes(o.no_access_peak_bytes),
            format_bytes(o.resident_peak_bytes)
        ),
    }
}

/// Yes for any headroom above zero.
fn headroom_added(headroom: f64) -> ChecklistItem {
    ChecklistItem {
        answer: headroom > 0.0,
        evidence: format!("{:.0} % over the worst realistic peak", headroom * 100.0),
    }
}

/// Yes when the limit is at least 1.2 × the steady-state average (the mean bucket maximum).
fn limits_far_enough_from_averages(o: &Observation, limit_bytes: u64) -> ChecklistItem {
    let average = if o.steady_series.is_empty() {
        None
    } else {
        Some(o.steady_series.iter().sum::<u64>() / o.steady_series.len() as u64)
    };
    ChecklistItem {
        answer: average.is_some_and(|avg| limit_bytes as f64 >= avg as f64 * 1.2),
        evidence: match average {
            Some(avg) => format!(
                "the limit is {:.1}× the steady-state average {}",
                limit_bytes as f64 / avg.max(1) as f64,
                format_bytes(avg)
            ),
            None => "no steady state to compare with".to_owned(),
        },
    }
}
