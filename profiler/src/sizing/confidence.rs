//! Confidence: how much was observed, never more certainty than that.

use super::{
    wording::{self, plural},
    Observation,
};
use crate::report::Confidence;

/// Below this much observed time a recommendation is a floor, not a measurement.
const SHORT_SECONDS: f64 = 10.0;
/// Fewer buckets after startup than this are too few for a p95.
const MIN_POINTS: usize = 20;

/// Starts at 3 (high) and loses a point for under a minute observed (two for under 10 s or
/// fewer than 20 buckets after startup: the data actually present, not the time asked for), a
/// point for a startup not seen through, and two for a leak; an OOM kill makes it Low whatever
/// else was seen (the demand is then only a lower bound). Each reason says what was (or was
/// not) seen.
pub(super) fn confidence(o: &Observation, leak: bool) -> (Confidence, Vec<String>) {
    let mut score = 3;
    let mut reasons = Vec::new();
    let points = o.steady_series.len().max(o.unsettled_series.len());
    if o.duration_seconds < SHORT_SECONDS || points < MIN_POINTS {
        score -= 2;
        reasons.push(format!(
            "observed {:.0} s ({points} buckets after startup): too little to size from, capture at least a minute under real traffic",
            o.duration_seconds
        ));
    } else if o.duration_seconds < 60.0 {
        score -= 1;
        reasons.push(format!(
            "observed {:.0} s ({points} buckets after startup): less than a minute of steady state",
            o.duration_seconds
        ));
    } else {
        reasons.push(format!(
            "observed {:.0} s ({points} buckets after startup)",
            o.duration_seconds
        ));
    }
    if let Some(asked) = o
        .asked_seconds
        .filter(|&asked| o.duration_seconds < asked * 0.9)
    {
        // Confidence is from what is there, not from the time asked for: say both.
        reasons.push(format!(
            "the data covers {} of the {} asked for",
            wording::span(o.duration_seconds),
            wording::span(asked)
        ));
    }
    if o.saw_start && o.startup_seconds.is_some() {
        reasons.push("startup seen from the first process to steady state".to_owned());
    } else if !o.saw_start {
        score -= 1;
        reasons.push(
            "the capture began after the target started: its startup peak was not seen".to_owned(),
        );
    } else {
        score -= 1;
        reasons.push("startup did not end during the capture".to_owned());
    }
    let (spikes, ooms) = (o.spikes.len() as u64, o.ooms.len() as u64);
    reasons.push(format!(
        "{spikes} spike{}, {ooms} OOM kill{}, {} restart{}",
        plural(spikes),
        plural(ooms),
        o.restarts,
        plural(o.restarts),
    ));
    if leak {
        score -= 2;
        reasons.push("a sustained upward trend (possible leak)".to_owned());
    }
    if ooms > 0 {
        score = 0;
        reasons.push(
            "an OOM kill cut the workload short: what it needed is only known to be above what it held"
                .to_owned(),
        );
    }
    let confidence = match score {
        3.. => Confidence::High,
        2 => Confidence::Medium,
        _ => Confidence::Low,
    };
    (confidence, reasons)
}
