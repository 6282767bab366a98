//! Phases read from the series sizing uses, robust to traffic: a steady state exists even when
//! bursts recur every half second to two seconds, each burst is a spike, and only sustained
//! growth is a leak.
//!
//! **Baseline.** Each bucket's baseline is the 20th percentile of the bucket maxima within
//! [`BASELINE_WINDOW_MS`] around it (centred; at most a quarter of the series). Bursts that recur at most every 2 s and last
//! less than that leave at least one quiet bucket in every such window, so the baseline is the
//! level memory returns to between bursts, however busy the service is.
//!
//! **Startup** ends where memory reaches the level it holds afterwards: the steady level is
//! the median baseline over the second half of the series; startup ends at the first bucket
//! at that level (within 5 % or 4 MiB below, the spike tolerance above) from which the
//! baseline never again falls clearly below it (memory released in the last 5 % is shutdown).
//! At least a stable window (2 s, at most a fifth of the series, at least 3 buckets) must
//! follow, and startup is not looked for past 5 minutes. A startup peak released later is
//! startup; a baseline that never settles (a leak) has no startup end.
//!
//! **Spikes** are runs of buckets after startup above the baseline by more than 10 % of it (at
//! least 8 MiB); the **steady state** is every other bucket after startup.
//!
//! **A leak** needs the baseline after startup to keep rising: split into eight equal parts,
//! the medians must rise in at least five of the seven steps, no single step may carry more
//! than half the total rise (that is a one-time step: a cache filled once, allocator arenas
//! kept after the first burst), the last quarter must still be rising (a warm-up ramp
//! flattens out), and the total rise must be at least 10 % of the start (and 8 MiB).

use super::SpikeSeen;
use crate::units::MIB;

/// Width of the window the baseline is the minimum of.
pub const BASELINE_WINDOW_MS: u64 = 3_000;
/// How long the baseline must hold still for startup to end.
const STABLE_MS: u64 = 2_000;
/// Startup is not looked for past this.
const MAX_STARTUP_MS: u64 = 300_000;
/// Parts the steady baseline is split into for the leak rule.
const LEAK_PARTS: usize = 8;

/// How far a baseline may move and still be "the same level".
fn stable_tolerance(level: u64) -> u64 {
    (level / 20).max(4 * MIB)
}

/// How far above the baseline a bucket must rise to be part of a spike.
pub(super) fn spike_tolerance(level: u64) -> u64 {
    (level / 10).max(8 * MIB)
}

/// The centred sliding 20th percentile over [`BASELINE_WINDOW_MS`], or a quarter of the
/// series when that is shorter (in a run of a second or two, a 3 s window would make the first
/// bucket the baseline of everything). A low percentile rather than the minimum: bursts fill
/// well under 80 % of any window, while one bucket read low (a working set caught mid-reclaim)
/// does not drag 3 s of baseline down with it.
pub(super) fn baseline(series: &[u64], resolution_ms: u64) -> Vec<u64> {
    let half = ((BASELINE_WINDOW_MS / resolution_ms.max(1) / 2) as usize).min(series.len() / 8);
    let mut window = Vec::with_capacity(2 * half + 1);
    (0..series.len())
        .map(|i| {
            let from = i.saturating_sub(half);
            let to = (i + half + 1).min(series.len());
            window.clear();
            window.extend_from_slice(&series[from..to]);
            window.sort_unstable();
            window.get((window.len() - 1) / 5).copied().unwrap_or(0)
        })
        .collect()
}

/// What the phases of a whole series are.
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
/// apart; times in the spikes are `offset_seconds` later (the series may start mid-timeline).
pub(super) fn read_phases(series: &[u64], resolution_ms: u64, offset_seconds: f64) -> SeriesPhases {
    let resolution_ms = resolution_ms.max(1);
    let end = startup_end(series, resolution_ms);
    let startup = &series[..end.unwrap_or(series.len())];
    let startup_peak_index = startup
        .iter()
        .enumerate()
        .rev()
        .max_by_key(|(_, v)| **v)
        .map(|(i, _)| i);
    let spikes = end.map_or_else(Vec::new, |end| {
        // The baseline of the steady part alone: startup's low buckets are not its level.
        let from_seconds = offset_seconds + (end as u64 * resolution_ms) as f64 / 1000.0;
        spikes(&series[end..], resolution_ms, from_seconds)
    });
    SeriesPhases {
        startup_end: end,
        startup_peak: startup.iter().copied().max().unwrap_or(0),
        startup_peak_index,
        spikes,
    }
}

fn startup_end(series: &[u64], resolution_ms: u64) -> Option<usize> {
    let window = ((STABLE_MS.div_ceil(resolution_ms)) as usize)
        .min(series.len() / 5)
        .max(3);
    // The last 5 % (at least a bucket) is shutdown: memory released on the way out.
    let checked_end = series.len().saturating_sub((series.len() / 20).max(1));
    if checked_end < window {
        return None;
    }
    let base = baseline(&series[..checked_end], resolution_ms);
    // The level memory holds in the second half: a cache released before then is startup, a
    // baseline that keeps rising never settles, and a slow shutdown at the very end does not
    // become the steady state.
    let level = median(&base[checked_end / 2..]);
    let floor = level.saturating_sub(stable_tolerance(level));
    let settled_above = |k: usize| base[k] >= floor;
    // The earliest bucket from which the baseline never falls clearly below the level.
    let mut first = checked_end;
    while first > 0 && settled_above(first - 1) {
        first -= 1;
    }
    if checked_end - first < window || first > (MAX_STARTUP_MS / resolution_ms) as usize {
        return None;
    }
    // The centred baseline lags by up to half a window on either side: memory may have
    // settled a little earlier (walk back over buckets at the level) or be in a burst here
    // (walk on to the first bucket at it).
    let at_level = |k: usize| series[k] >= floor && series[k] <= level + spike_tolerance(level);
    let mut end = first;
    while end > 0 && at_level(end - 1) {
        end -= 1;
    }
    if !at_level(end) {
        end = (end..checked_end).find(|&k| at_level(k))?;
    }
    Some(end)
}

/// Whether bucket `i` rises above the baseline far enough to be part of a spike.
pub(super) fn above_baseline(series: &[u64], base: &[u64], i: usize) -> bool {
    series[i] > base[i] + spike_tolerance(base[i])
}

fn spikes(series: &[u64], resolution_ms: u64, offset_seconds: f64) -> Vec<SpikeSeen> {
    let base = baseline(series, resolution_ms);
    let base = base.as_slice();
    let mut spikes = Vec::new();
    let mut index = 0;
    while index < series.len() {
        if !above_baseline(series, base, index) {
            index += 1;
            continue;
        }
        let start = index;
        while index < series.len() && above_baseline(series, base, index) {
            index += 1;
        }
        spikes.push(SpikeSeen {
            start_seconds: offset_seconds + (start as u64 * resolution_ms) as f64 / 1000.0,
            duration_ms: (index - start) as u64 * resolution_ms,
            peak_bytes: series[start..index].iter().copied().max().unwrap_or(0),
        });
    }
    spikes
}

/// The buckets of a steady series that are not part of a spike: what the service holds
/// between bursts.
pub(super) fn between_spikes(steady: &[u64], resolution_ms: u64) -> Vec<u64> {
    let base = baseline(steady, resolution_ms);
    (0..steady.len())
        .filter(|&i| !above_baseline(steady, &base, i))
        .map(|i| steady[i])
        .collect()
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

fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
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
