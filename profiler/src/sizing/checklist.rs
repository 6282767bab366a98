//! The seed's checklist, each question answered from what was observed, with the evidence.

use super::{
    limit::WorstPeak,
    trend::SteadyState,
    wording::{at_seconds, basis_name, plural},
    Observation,
};
use crate::{
    report::{Checklist, ChecklistItem},
    units::{format_bytes, quantity},
};

/// Answers the five questions for an observation sized with `limit_bytes` and `headroom`.
pub(super) fn checklist(
    o: &Observation,
    worst: &WorstPeak,
    limit_bytes: u64,
    headroom: f64,
    steady: &SteadyState,
) -> Checklist {
    Checklist {
        startup_peaks_measured: startup_peaks_measured(o),
        real_traffic_spikes_observed: real_traffic_spikes_observed(o),
        allocator_reserved_memory_included: allocator_reserved_memory_included(o, limit_bytes),
        headroom_added: headroom_added(worst, limit_bytes, headroom),
        limits_far_enough_from_averages: limits_far_enough_from_averages(
            worst,
            limit_bytes,
            steady,
        ),
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

/// Memory an allocator or runtime keeps is in the figures once touched; what it has only
/// reserved is not. Yes unless the writable address space reserved (less no-access arenas
/// and guards) exceeds the limit, or a runtime ceiling read from the processes (a JVM's
/// `-Xmx`, GOMEMLIMIT) with its allowance does: then the heap or arenas can grow past it.
fn allocator_reserved_memory_included(o: &Observation, limit_bytes: u64) -> ChecklistItem {
    let writable_reserved = o.reserved_peak_bytes.saturating_sub(o.no_access_peak_bytes);
    let reserved_within = writable_reserved <= limit_bytes;
    let (ceilings_within, runtime_words) = super::runtime::checklist_words(o, limit_bytes);
    let answer = reserved_within && ceilings_within;
    ChecklistItem {
        answer,
        evidence: format!(
            "sized from the {}, which counts what the allocator keeps after a free once touched; writable address space reserved {} ({} the limit {}; {} more no-access), resident peak {}{}{}",
            basis_name(o.basis),
            format_bytes(writable_reserved),
            if reserved_within { "within" } else { "beyond" },
            quantity(limit_bytes),
            format_bytes(o.no_access_peak_bytes),
            format_bytes(o.resident_peak_bytes),
            runtime_words.map_or_else(String::new, |words| format!("; runtime: {words}")),
            if answer {
                ""
            } else {
                ": a runtime heap (-Xmx, GOMEMLIMIT) or allocator arenas sized to that reservation can grow past the limit"
            }
        ),
    }
}

/// Yes when the limit is at least the worst peak × (1 + headroom) with headroom above zero
/// (a `--max` cap can take it away).
fn headroom_added(worst: &WorstPeak, limit_bytes: u64, headroom: f64) -> ChecklistItem {
    let over = limit_bytes as f64 / worst.bytes.max(1) as f64 - 1.0;
    ChecklistItem {
        answer: headroom > 0.0 && over >= headroom - 1e-9,
        evidence: format!(
            "the limit {} is {:.0} % over the worst realistic peak {} ({:.0} % asked)",
            quantity(limit_bytes),
            over * 100.0,
            format_bytes(worst.bytes),
            headroom * 100.0
        ),
    }
}

/// Yes when the limit is at least 1.2 × the steady-state average and the worst peak fits
/// under it: a limit near the average kills at the first burst.
fn limits_far_enough_from_averages(
    worst: &WorstPeak,
    limit_bytes: u64,
    steady: &SteadyState,
) -> ChecklistItem {
    let average = steady.mean;
    ChecklistItem {
        answer: average.is_some_and(|avg| limit_bytes as f64 >= avg as f64 * 1.2)
            && limit_bytes >= worst.bytes,
        evidence: match average {
            Some(avg) => format!(
                "the limit {} is {:.1}× the steady-state average {} and {:.1}× the worst peak {}",
                quantity(limit_bytes),
                limit_bytes as f64 / avg.max(1) as f64,
                format_bytes(avg),
                limit_bytes as f64 / worst.bytes.max(1) as f64,
                format_bytes(worst.bytes),
            ),
            None => "no steady state to compare with".to_owned(),
        },
    }
}
