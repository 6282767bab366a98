//! Reading a timeline the way a limit has to be set: where startup ends, what steady state is,
//! and which spikes rose above it.
//!
//! **Startup rule.** Startup ends at the start of the first *stable window* after which memory
//! never again falls clearly below that window. A stable window is `stable_ms` (default 2 s, but
//! at most a fifth of the observed time and at least 3 buckets, so short runs can have one) of
//! buckets whose highest and lowest values differ by at most 5 % (or 4 MiB, whichever is
//! larger). The second condition makes a startup cache that is later released part of startup,
//! rather than mistaking its plateau for steady state; memory released in the last 5 % of the
//! observation is shutdown and does not count. Startup is capped at `max_startup_ms`;
//! when no window qualifies, startup has not ended and no steady state is reported.
//!
//! **Steady state** is the median and 95th percentile of bucket maxima after startup.
//!
//! **Spikes** are runs of buckets after startup that rise above the steady median by more than
//! 10 % of it (and at least 8 MiB).

use serde::Serialize;

pub use crate::report::Spike;

const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug)]
pub struct AnalysisConfig {
    pub stable_ms: u64,
    pub max_startup_ms: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            stable_ms: 2_000,
            max_startup_ms: 300_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Phases {
    /// When startup ended; None if it did not within the run (or the cap).
    pub startup_seconds: Option<f64>,
    /// Highest value during startup (the whole run when startup did not end).
    pub startup_peak_bytes: u64,
    pub steady_bytes: Option<u64>,
    pub steady_p95_bytes: Option<u64>,
    pub spikes: Vec<Spike>,
}

fn tolerance(level: u64) -> u64 {
    (level / 20).max(4 * MIB)
}

fn percentile(sorted: &[u64], fraction: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted.get(rank).copied()
}

/// Splits `series` (bucket maxima, `resolution_ms` apart) into startup, steady state and spikes.
pub fn analyse(series: &[u64], resolution_ms: u64, config: &AnalysisConfig) -> Phases {
    let resolution_ms = resolution_ms.max(1);
    let window = (config.stable_ms.div_ceil(resolution_ms) as usize)
        .min(series.len() / 5)
        .max(3);
    let cap = (config.max_startup_ms / resolution_ms) as usize;
    // Lowest value from each index to the end, to check "never falls clearly below" in O(n).
    // The last 5 % (at least one bucket) is shutdown, when memory is released on the way out,
    // and does not count as falling below.
    let checked_end = series.len().saturating_sub((series.len() / 20).max(1));
    let mut suffix_min = vec![u64::MAX; series.len() + 1];
    for index in (0..checked_end).rev() {
        suffix_min[index] = suffix_min[index + 1].min(series[index]);
    }
    let startup_end = (0..series.len().saturating_sub(window - 1))
        .take_while(|&start| start <= cap)
        .find(|&start| {
            let slice = &series[start..start + window];
            let (low, high) = slice
                .iter()
                .fold((u64::MAX, 0), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            high - low <= tolerance(high)
                && suffix_min[start + window].saturating_add(tolerance(low)) >= low
        });

    let Some(end) = startup_end else {
        return Phases {
            startup_seconds: None,
            startup_peak_bytes: series.iter().copied().max().unwrap_or(0),
            ..Phases::default()
        };
    };
    let startup_peak = series[..end.max(1)].iter().copied().max().unwrap_or(0);
    let steady = &series[end..];
    let mut sorted = steady.to_vec();
    sorted.sort_unstable();
    let median = percentile(&sorted, 0.5);
    let p95 = percentile(&sorted, 0.95);
    let mut spikes = Vec::new();
    if let Some(median) = median {
        let threshold = median + (median / 10).max(8 * MIB);
        let mut index = 0;
        while index < steady.len() {
            if steady[index] <= threshold {
                index += 1;
                continue;
            }
            let start = index;
            while index < steady.len() && steady[index] > threshold {
                index += 1;
            }
            let peak = steady[start..index].iter().copied().max().unwrap_or(0);
            spikes.push(Spike {
                start_seconds: ((end + start) as u64 * resolution_ms) as f64 / 1000.0,
                duration_ms: (index - start) as u64 * resolution_ms,
                peak_bytes: peak,
                bytes_above_steady: peak - median,
                source: None,
                source_bytes: None,
                frames: Vec::new(),
            });
        }
    }
    Phases {
        startup_seconds: Some((end as u64 * resolution_ms) as f64 / 1000.0),
        startup_peak_bytes: startup_peak,
        steady_bytes: median,
        steady_p95_bytes: p95,
        spikes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AnalysisConfig {
        AnalysisConfig {
            stable_ms: 1_000,
            max_startup_ms: 60_000,
        }
    }

    /// 100 ms buckets: ramp to a 300 MiB cache, hold it, release to 100 MiB steady.
    #[test]
    fn a_released_startup_cache_is_startup_not_steady_state() {
        let mut series = vec![50 * MIB, 150 * MIB, 250 * MIB];
        series.extend(std::iter::repeat_n(300 * MIB, 15));
        series.extend(std::iter::repeat_n(100 * MIB, 40));
        let phases = analyse(&series, 100, &config());
        assert_eq!(phases.startup_seconds, Some(1.8));
        assert_eq!(phases.startup_peak_bytes, 300 * MIB);
        assert_eq!(phases.steady_bytes, Some(100 * MIB));
        assert!(phases.spikes.is_empty());
    }

    #[test]
    fn memory_released_at_shutdown_does_not_hide_steady_state() {
        let mut series = vec![300 * MIB; 6];
        series.extend(std::iter::repeat_n(100 * MIB, 80));
        series.push(20 * MIB);
        let phases = analyse(&series, 50, &config());
        assert_eq!(phases.startup_seconds, Some(0.3));
        assert_eq!(phases.steady_bytes, Some(100 * MIB));
    }

    #[test]
    fn a_short_spike_over_steady_state_is_listed() {
        let mut series = vec![40 * MIB; 30];
        series[20] = 240 * MIB;
        let phases = analyse(&series, 50, &config());
        assert_eq!(phases.startup_seconds, Some(0.0));
        assert_eq!(phases.steady_bytes, Some(40 * MIB));
        assert_eq!(phases.spikes.len(), 1);
        let spike = &phases.spikes[0];
        assert_eq!(spike.start_seconds, 1.0);
        assert_eq!(spike.duration_ms, 50);
        assert_eq!(spike.bytes_above_steady, 200 * MIB);
    }

    #[test]
    fn noise_within_tolerance_is_not_a_spike() {
        let series: Vec<u64> = (0..40).map(|i| 100 * MIB + (i % 3) * MIB).collect();
        let phases = analyse(&series, 100, &config());
        assert!(phases.spikes.is_empty());
        assert_eq!(phases.steady_p95_bytes, Some(102 * MIB));
    }

    #[test]
    fn no_stable_window_means_no_steady_state() {
        let series: Vec<u64> = (0..20).map(|i| i * 50 * MIB).collect();
        let phases = analyse(&series, 100, &config());
        assert_eq!(phases.startup_seconds, None);
        assert_eq!(phases.steady_bytes, None);
        assert_eq!(phases.startup_peak_bytes, 950 * MIB);
    }

    #[test]
    fn a_short_run_gets_a_shorter_stable_window() {
        // 3 s at 50 ms: 1 s of base, a spike, 2 s of base. A 2 s window would not fit.
        let mut series = vec![40 * MIB; 60];
        series[20] = 240 * MIB;
        let phases = analyse(&series, 50, &AnalysisConfig::default());
        assert_eq!(phases.startup_seconds, Some(0.0));
        assert_eq!(phases.spikes.len(), 1);
    }

    #[test]
    fn empty_and_tiny_series_do_not_panic() {
        assert_eq!(analyse(&[], 100, &config()).startup_seconds, None);
        assert_eq!(analyse(&[MIB], 100, &config()).startup_seconds, None);
    }
}
