//! Phases read from the series sizing uses, with the shared analysis
//! ([`crate::accounting::analysis`], which the report's phases also come from), and the leak rule,
//! which only sizing needs.
//!
//! **A leak** needs the baseline after startup to keep rising: split into eight equal parts,
//! the medians must rise in at least five of the seven steps, no single step may carry more
//! than half the total rise (that is a one-time step: a cache filled once, allocator arenas
//! kept after the first burst), the last quarter must still be rising (a warm-up ramp
//! flattens out), and the total rise must be at least 10 % of the start (and 8 MiB).

use super::SpikeSeen;
pub(super) use crate::accounting::analysis::between_spikes;
use crate::{
    accounting::analysis::{self, baseline, median, AnalysisConfig},
    units::MIB,
};

/// Parts the steady baseline is split into for the leak rule.
const LEAK_PARTS: usize = 8;

/// What the phases of a whole series are, for sizing.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct SeriesPhases {
    /// Index of the first steady bucket; None when startup did not end.
    pub startup_end: Option<usize>,
    /// Highest bucket before startup ended (the whole series when it did not).
    pub startup_peak: u64,
    pub startup_peak_index: Option<usize>,
    pub spikes: Vec<SpikeSeen>,
}

/// Startup, its peak, and the spikes after it, of a series of bucket maxima `resolution_ms`
/// apart, read with the report's default analysis; times in the spikes are `offset_seconds`
/// later (the series may start mid-timeline).
pub(super) fn read_phases(series: &[u64], resolution_ms: u64, offset_seconds: f64) -> SeriesPhases {
    let resolution_ms = resolution_ms.max(1);
    let read = analysis::read_series(series, resolution_ms, &AnalysisConfig::default());
    let spikes = read
        .spikes
        .iter()
        .map(|rise| SpikeSeen {
            start_seconds: offset_seconds + (rise.start as u64 * resolution_ms) as f64 / 1000.0,
            duration_ms: rise.buckets as u64 * resolution_ms,
            peak_bytes: rise.peak_bytes,
        })
        .collect();
    SeriesPhases {
        startup_end: read.startup_end,
        startup_peak: read.startup_peak,
        startup_peak_index: read.startup_peak_index,
        spikes,
    }
}

/// A leak: bytes per hour and the baseline at the end, when the steady baseline keeps rising
/// (see the module's rule).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Leak {
    pub bytes_per_hour: f64,
    /// The baseline over the last eighth of the steady state.
    pub level_at_end: u64,
}

/// Applies the leak rule to a steady series (bucket maxima after startup).
pub fn leak(steady: &[u64], resolution_ms: u64) -> Option<Leak> {
    if steady.len() < LEAK_PARTS * 3 {
        return None;
    }
    let base = baseline(steady, resolution_ms);
    let part = base.len() / LEAK_PARTS;
    let medians: Vec<u64> = (0..LEAK_PARTS)
        .map(|k| median(&base[k * part..(k + 1) * part]))
        .collect();
    let first = medians[0];
    let last = medians[LEAK_PARTS - 1];
    let total = last.saturating_sub(first);
    if total < (first / 10).max(8 * MIB) {
        return None;
    }
    let steps: Vec<i128> = medians
        .windows(2)
        .map(|pair| i128::from(pair[1]) - i128::from(pair[0]))
        .collect();
    let total = i128::from(total);
    let rising = steps.iter().filter(|&&d| d * 14 >= total).count();
    let largest = steps.iter().copied().max().unwrap_or(0);
    let still_rising = i128::from(last) - i128::from(medians[LEAK_PARTS - 3]) >= total / 8;
    if rising < 5 || largest * 2 > total || !still_rising {
        return None;
    }
    let slope = least_squares_slope(&base);
    (slope > 0.0).then(|| Leak {
        bytes_per_hour: slope * 3_600_000.0 / resolution_ms.max(1) as f64,
        level_at_end: last,
    })
}

/// Bytes per bucket.
fn least_squares_slope(series: &[u64]) -> f64 {
    let n = series.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = series.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (i, &v) in series.iter().enumerate() {
        let dx = i as f64 - mean_x;
        covariance += dx * (v as f64 - mean_y);
        variance += dx * dx;
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 ms buckets: `base` MiB with a `burst` MiB burst of `burst_buckets` every `period`.
    fn bursty(base: u64, burst: u64, period: usize, burst_buckets: usize, len: usize) -> Vec<u64> {
        (0..len)
            .map(|i| {
                if i % period < burst_buckets {
                    burst * MIB
                } else {
                    base * MIB
                }
            })
            .collect()
    }

    #[test]
    fn bursts_every_two_seconds_leave_a_steady_state_and_each_is_a_spike() {
        // Startup ramp, then 40 MiB with a 200 MiB burst of 0.5 s every 2 s for 60 s.
        let mut series: Vec<u64> = (1..=10).map(|i| i * 8 * MIB).collect();
        series.extend(bursty(40, 200, 20, 5, 600));
        let phases = read_phases(&series, 100, 0.0);
        let end = phases.startup_end.expect("startup ends");
        assert!(end <= 40, "startup ended at bucket {end}");
        let steady = &series[end..];
        let quiet = between_spikes(steady, 100);
        assert_eq!(median(&quiet), 40 * MIB);
        // Every burst after startup is one spike.
        let bursts_after = (end..series.len())
            .filter(|&i| i >= 10 && (i - 10) % 20 == 0)
            .count();
        assert!(
            phases.spikes.len() + 1 >= bursts_after && phases.spikes.len() <= bursts_after,
            "{} spikes for {bursts_after} bursts, startup ended at {end}: {:?}",
            phases.spikes.len(),
            phases
                .spikes
                .iter()
                .map(|s| s.start_seconds)
                .collect::<Vec<_>>()
        );
        assert!(phases.spikes.iter().all(|s| s.peak_bytes == 200 * MIB));
        assert!(leak(steady, 100).is_none());
    }

    #[test]
    fn bursts_every_half_second_still_leave_a_steady_state() {
        let series = bursty(60, 120, 5, 2, 400);
        let phases = read_phases(&series, 100, 0.0);
        let end = phases.startup_end.expect("startup ends");
        assert_eq!(median(&between_spikes(&series[end..], 100)), 60 * MIB);
        assert!(phases.spikes.len() >= 70, "{}", phases.spikes.len());
    }

    #[test]
    fn a_one_time_step_is_not_a_leak() {
        let mut series = vec![100 * MIB; 300];
        series.extend(vec![180 * MIB; 300]);
        assert!(leak(&series, 100).is_none());
    }

    #[test]
    fn a_warm_up_ramp_that_flattens_is_not_a_leak() {
        let series: Vec<u64> = (0..600u64)
            .map(|i| 100 * MIB + i.min(300) * MIB / 4)
            .collect();
        assert!(leak(&series, 100).is_none());
    }

    #[test]
    fn sustained_growth_is_a_leak_with_its_rate() {
        // 1 MiB per second for 60 s, with bursts on top.
        let series: Vec<u64> = (0..600u64)
            .map(|i| 50 * MIB + i * MIB / 10 + if i % 15 < 3 { 100 * MIB } else { 0 })
            .collect();
        let found = leak(&series, 100).expect("a leak");
        let per_second = found.bytes_per_hour / 3600.0 / MIB as f64;
        assert!((per_second - 1.0).abs() < 0.1, "{per_second} MiB/s");
        assert!(found.level_at_end >= 100 * MIB);
    }

    #[test]
    fn a_cache_released_late_is_startup_and_the_level_after_it_is_steady() {
        // 100 ms buckets: 300 MiB for 25 s, then 100 MiB for the last 35 s.
        let mut series = vec![300 * MIB; 250];
        series.extend(vec![100 * MIB; 350]);
        let phases = read_phases(&series, 100, 0.0);
        assert_eq!(phases.startup_end, Some(250));
        assert_eq!(phases.startup_peak, 300 * MIB);
        assert!(phases.spikes.is_empty());
    }

    #[test]
    fn flat_noise_is_neither_leak_nor_spikes() {
        let series: Vec<u64> = (0..300u64).map(|i| 100 * MIB + (i % 3) * MIB).collect();
        let phases = read_phases(&series, 100, 0.0);
        assert_eq!(phases.startup_end, Some(0));
        assert!(phases.spikes.is_empty());
        assert!(leak(&series, 100).is_none());
    }
}
