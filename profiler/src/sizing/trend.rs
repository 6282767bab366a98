//! The statistics sizing reads from the steady state (the buckets between spikes after
//! startup).

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
    /// Highest bucket between spikes after startup (0 without a steady state).
    pub peak: u64,
    /// 95th percentile: what the request is based on.
    pub p95: Option<u64>,
    pub median: Option<u64>,
    pub mean: Option<u64>,
}

impl SteadyState {
    /// Summarises a steady series once, for every step that reads it.
    pub(super) fn of(series: &[u64]) -> Self {
        Self {
            peak: series.iter().copied().max().unwrap_or(0),
            p95: percentile(series, 0.95),
            median: percentile(series, 0.5),
            mean: (!series.is_empty()).then(|| series.iter().sum::<u64>() / series.len() as u64),
        }
    }
}
