//! The steady series (bucket maxima after startup): the statistics sizing reads from it, and
//! whether it trends upward (a leak).

use crate::units::MIB;

/// The value at `fraction` of the way through the sorted values (nearest rank); `None` when
/// there are no values.
pub(super) fn percentile(values: &[u64], fraction: f64) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len().checked_sub(1)?) as f64 * fraction).round() as usize;
    sorted.get(rank).copied()
}

/// What the request, the limit's reasons and the flags read from the steady series.
pub(super) struct SteadyState {
    /// Highest bucket maximum after startup (0 without a steady state).
    pub peak: u64,
    /// 95th percentile: what the request is based on.
    pub p95: Option<u64>,
    pub median: Option<u64>,
}

impl SteadyState {
    /// Summarises a steady series once, for every step that reads it.
    pub(super) fn of(series: &[u64]) -> Self {
        Self {
            peak: series.iter().copied().max().unwrap_or(0),
            p95: percentile(series, 0.95),
            median: percentile(series, 0.5),
        }
    }
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
