//! Reading a timeline the way a limit has to be set: where startup ends, what steady state is,
//! and which spikes rose above it. This is the one phase analysis: the report's phases and the
//! sizing recommendation (`sizing::phases` adds the leak rule) both come from it, so a report
//! and its recommendation cannot name different phases for the same series.
//!
//! **Baseline.** Each bucket's baseline is the 20th percentile of the bucket maxima within
//! [`BASELINE_WINDOW_MS`] around it (centred; at most a quarter of the series). Bursts that
//! recur at most every 2 s and last less than that leave quiet buckets in every such window, so
//! the baseline is the level memory returns to between bursts, however busy the service is.
//!
//! **Startup** ends where memory reaches the level it holds afterwards: the steady level is
//! the median baseline over the second half of the series; startup ends at the first bucket
//! at that level (within 5 % or 4 MiB below, the spike tolerance above) from which the
//! baseline never again falls clearly below it (memory released in the last 5 % is shutdown).
//! At least a stable window (`stable_ms`, default 2 s, at most a fifth of the series, at least
//! 3 buckets) must follow, and startup is not looked for past `max_startup_ms`. A startup
//! peak released later is startup; a baseline that never settles (a leak) has no startup end.
//!
//! **A warm-up is not a spike.** Memory on its way up to a startup peak passes through the
//! steady level. A rise that comes before memory has held the level for as long as the rise
//! lasts or a stable window, whichever is shorter (and at least [`MIN_QUIET_BUCKETS`]
//! buckets), is still startup: a spike is a departure from a steady state, and there was none
//! yet.
//!
//! **Spikes** are runs of buckets after startup above the baseline by more than 10 % of it (at
//! least 8 MiB); the **steady state** is every other bucket after startup, summarised by its
//! median and 95th percentile.

use serde::Serialize;

pub use crate::report::Spike;
use crate::units::MIB;

/// Width of the window the baseline is taken over.
pub const BASELINE_WINDOW_MS: u64 = 3_000;
/// The fewest buckets memory must hold the steady level before a rise counts as a spike.
const MIN_QUIET_BUCKETS: usize = 3;

#[derive(Clone, Copy, Debug)]
pub struct AnalysisConfig {
    /// How long the baseline must hold still for startup to end.
    pub stable_ms: u64,
    /// Startup is not looked for past this.
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

/// The phases of a series, as the report shows them.
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

/// A run of buckets above the baseline, by index into the series read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rise {
    pub start: usize,
    pub buckets: usize,
    pub peak_bytes: u64,
}

/// The phases of a series, by bucket index (what both the report and sizing build on).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesPhases {
    /// Index of the first steady bucket; None when startup did not end.
    pub startup_end: Option<usize>,
    /// Highest bucket before startup ended (the whole series when it did not).
    pub startup_peak: u64,
    /// Where that peak was (the latest bucket at it).
    pub startup_peak_index: Option<usize>,
    /// Spikes after startup, indices into the whole series.
    pub spikes: Vec<Rise>,
}

/// How far a baseline may move and still be "the same level".
fn stable_tolerance(level: u64) -> u64 {
    (level / 20).max(4 * MIB)
}

/// How far above the baseline a bucket must rise to be part of a spike.
pub fn spike_tolerance(level: u64) -> u64 {
    (level / 10).max(8 * MIB)
}

fn percentile(sorted: &[u64], fraction: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted.get(rank).copied()
}

/// The middle value (the upper one of an even count); 0 for none.
pub fn median(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// The centred sliding 20th percentile over [`BASELINE_WINDOW_MS`], or a quarter of the
/// series when that is shorter (in a run of a second or two, a 3 s window would make the first
/// bucket the baseline of everything). A low percentile rather than the minimum: bursts fill
/// well under 80 % of any window, while one bucket read low (a working set caught mid-reclaim)
/// does not drag 3 s of baseline down with it.
pub fn baseline(series: &[u64], resolution_ms: u64) -> Vec<u64> {
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

/// Startup, its peak, and the spikes after it, of a series of bucket maxima `resolution_ms`
/// apart.
pub fn read_series(series: &[u64], resolution_ms: u64, config: &AnalysisConfig) -> SeriesPhases {
    let resolution_ms = resolution_ms.max(1);
    let end = startup_end(series, resolution_ms, config);
    let startup = &series[..end.unwrap_or(series.len())];
    let startup_peak_index = startup
        .iter()
        .enumerate()
        .rev()
        .max_by_key(|(_, v)| **v)
        .map(|(i, _)| i);
    // The baseline of the steady part alone: startup's low buckets are not its level.
    let spikes = end.map_or_else(Vec::new, |end| {
        rises(&series[end..], resolution_ms)
            .into_iter()
            .map(|rise| Rise {
                start: rise.start + end,
                ..rise
            })
            .collect()
    });
    SeriesPhases {
        startup_end: end,
        startup_peak: startup.iter().copied().max().unwrap_or(0),
        startup_peak_index,
        spikes,
    }
}

/// The report's view of a series read on its own: [`summarise`] of [`read_series`].
pub fn analyse(series: &[u64], resolution_ms: u64, config: &AnalysisConfig) -> Phases {
    summarise(
        series,
        resolution_ms,
        &read_series(series, resolution_ms, config),
    )
}

/// The figures of `series` over phases already read (from it, or from another series of the
/// same buckets, so that the charge and resident rows of a report share the phases sizing
/// reads): the startup peak before the startup end, the steady state over the buckets after
/// it that are in no spike, and each spike's peak. Times are seconds from the first bucket.
pub fn summarise(series: &[u64], resolution_ms: u64, read: &SeriesPhases) -> Phases {
    let resolution_ms = resolution_ms.max(1);
    let seconds_at = |index: usize| (index as u64 * resolution_ms) as f64 / 1000.0;
    let peak_over = |range: std::ops::Range<usize>| {
        series
            .get(range.start.min(series.len())..range.end.min(series.len()))
            .and_then(|slice| slice.iter().copied().max())
            .unwrap_or(0)
    };
    let Some(end) = read.startup_end.filter(|&end| end <= series.len()) else {
        return Phases {
            startup_seconds: None,
            startup_peak_bytes: peak_over(0..series.len()),
            ..Phases::default()
        };
    };
    let in_spike = |i: usize| {
        read.spikes
            .iter()
            .any(|rise| (rise.start..rise.start + rise.buckets).contains(&i))
    };
    let mut quiet: Vec<u64> = (end..series.len())
        .filter(|&i| !in_spike(i))
        .map(|i| series[i])
        .collect();
    quiet.sort_unstable();
    let median = percentile(&quiet, 0.5);
    let spikes = read
        .spikes
        .iter()
        .map(|rise| {
            let peak = peak_over(rise.start..rise.start + rise.buckets);
            Spike {
                start_seconds: seconds_at(rise.start),
                duration_ms: rise.buckets as u64 * resolution_ms,
                peak_bytes: peak,
                bytes_above_steady: peak.saturating_sub(median.unwrap_or(0)),
                source: None,
                source_bytes: None,
                frames: Vec::new(),
            }
        })
        .collect();
    Phases {
        startup_seconds: Some(seconds_at(end)),
        startup_peak_bytes: peak_over(0..end),
        steady_bytes: median,
        steady_p95_bytes: percentile(&quiet, 0.95),
        spikes,
    }
}

fn startup_end(series: &[u64], resolution_ms: u64, config: &AnalysisConfig) -> Option<usize> {
    let window = ((config.stable_ms.div_ceil(resolution_ms)) as usize)
        .min(series.len() / 5)
        .max(3);
    // The last 5 % (at least a bucket) is shutdown: memory released on the way out.
    let checked_end = series.len().saturating_sub((series.len() / 20).max(1));
    if checked_end < window {
        return None;
    }
    let max_startup = (config.max_startup_ms / resolution_ms) as usize;
    let base = baseline(&series[..checked_end], resolution_ms);
    // The level memory holds in the second half: a cache released before then is startup, a
    // baseline that keeps rising never settles, and a slow shutdown at the very end does not
    // become the steady state.
    let level = median(&base[checked_end / 2..]);
    let floor = level.saturating_sub(stable_tolerance(level));
    let ceiling = level + spike_tolerance(level);
    // The earliest bucket from which the baseline never falls clearly below the level.
    let mut first = checked_end;
    while first > 0 && base[first - 1] >= floor {
        first -= 1;
    }
    if checked_end - first < window || first > max_startup {
        return None;
    }
    // The centred baseline lags by up to half a window on either side: memory may have
    // settled a little earlier (walk back over buckets at the level) or be in a burst here
    // (walk on to the first bucket at it).
    let at_level = |k: usize| series[k] >= floor && series[k] <= ceiling;
    let mut end = first;
    while end > 0 && at_level(end - 1) {
        end -= 1;
    }
    if !at_level(end) {
        end = (end..checked_end).find(|&k| at_level(k))?;
    }
    // A rise before memory has held the level as long as the rise lasts (or a stable window,
    // if that is shorter) is the warm-up passing through the level on its way up: startup
    // goes on past it.
    loop {
        let quiet = (end..checked_end)
            .take_while(|&k| series[k] <= ceiling)
            .count();
        let rise_start = end + quiet;
        if rise_start >= checked_end {
            break;
        }
        let rise = (rise_start..checked_end)
            .take_while(|&k| series[k] > ceiling)
            .count();
        if quiet >= rise.min(window).max(MIN_QUIET_BUCKETS) {
            break;
        }
        end = (rise_start + rise..checked_end).find(|&k| at_level(k))?;
    }
    (end <= max_startup && checked_end.saturating_sub(end) >= window).then_some(end)
}

/// Whether bucket `i` rises above the baseline far enough to be part of a spike.
fn above_baseline(series: &[u64], base: &[u64], i: usize) -> bool {
    series[i] > base[i] + spike_tolerance(base[i])
}

/// The runs above a series' own baseline.
fn rises(series: &[u64], resolution_ms: u64) -> Vec<Rise> {
    let base = baseline(series, resolution_ms);
    let mut found = Vec::new();
    let mut index = 0;
    while index < series.len() {
        if !above_baseline(series, &base, index) {
            index += 1;
            continue;
        }
        let start = index;
        while index < series.len() && above_baseline(series, &base, index) {
            index += 1;
        }
        found.push(Rise {
            start,
            buckets: index - start,
            peak_bytes: series[start..index].iter().copied().max().unwrap_or(0),
        });
    }
    found
}

/// The buckets of a steady series that are not part of a spike: what the service holds
/// between bursts.
pub fn between_spikes(steady: &[u64], resolution_ms: u64) -> Vec<u64> {
    let base = baseline(steady, resolution_ms);
    (0..steady.len())
        .filter(|&i| !above_baseline(steady, &base, i))
        .map(|i| steady[i])
        .collect()
}

/// The buckets from the first to the last one in which the target had a task (all of them
/// when no bucket counted tasks): an empty cgroup before its workload starts, or after it
/// ends, is neither startup nor steady state.
pub fn alive_span(buckets: &[crate::report::BucketPeaks]) -> std::ops::Range<usize> {
    let first = buckets.iter().position(|b| b.tasks > 0);
    let last = buckets.iter().rposition(|b| b.tasks > 0);
    match (first, last) {
        (Some(first), Some(last)) => first..last + 1,
        _ => 0..buckets.len(),
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

    /// The demo's shape: the first bucket before the warm-up, one bucket passing through the
    /// steady level on the way up, 400 ms at a 301 MiB peak, then 100 MiB steady.
    #[test]
    fn a_warm_up_passing_through_the_steady_level_is_startup_not_a_spike() {
        let mut series = vec![MIB * 3 / 2, 105 * MIB];
        series.extend(std::iter::repeat_n(301 * MIB, 4));
        series.extend(std::iter::repeat_n(100 * MIB, 60));
        let phases = analyse(&series, 100, &AnalysisConfig::default());
        assert_eq!(phases.startup_seconds, Some(0.6));
        assert_eq!(phases.startup_peak_bytes, 301 * MIB);
        assert_eq!(phases.steady_bytes, Some(100 * MIB));
        assert!(phases.spikes.is_empty(), "{:?}", phases.spikes);
    }

    /// A spike after memory has held its level is a spike, even a long one.
    #[test]
    fn a_rise_after_a_steady_stretch_is_a_spike() {
        let mut series = vec![100 * MIB; 20];
        series.extend(std::iter::repeat_n(300 * MIB, 10));
        series.extend(std::iter::repeat_n(100 * MIB, 50));
        let phases = analyse(&series, 100, &AnalysisConfig::default());
        assert_eq!(phases.startup_seconds, Some(0.0));
        assert_eq!(phases.spikes.len(), 1);
        assert_eq!(phases.spikes[0].start_seconds, 2.0);
        assert_eq!(phases.spikes[0].bytes_above_steady, 200 * MIB);
    }

    /// A spike longer than the steady stretch before it (an emulated guest faults 200 MiB in
    /// 3 s) is still a spike once memory held its level for a stable window.
    #[test]
    fn a_slow_spike_after_a_stable_window_is_a_spike() {
        let mut series = vec![40 * MIB; 15];
        series.extend((1..=30).map(|i| 40 * MIB + i * 20 * MIB / 3));
        series.extend(std::iter::repeat_n(240 * MIB, 3));
        series.extend(std::iter::repeat_n(40 * MIB, 15));
        let phases = analyse(&series, 100, &AnalysisConfig::default());
        assert_eq!(phases.startup_seconds, Some(0.0));
        assert_eq!(phases.steady_bytes, Some(40 * MIB));
        assert!(
            phases
                .spikes
                .iter()
                .any(|s| s.peak_bytes == 240 * MIB && s.bytes_above_steady == 200 * MIB),
            "{:?}",
            phases.spikes
        );
    }

    /// Bursts every half second (0.2 s each) over 60 MiB: steady state is the base.
    #[test]
    fn bursts_every_half_second_leave_a_steady_state_in_the_report() {
        let series: Vec<u64> = (0..300)
            .map(|i| if i % 5 < 2 { 160 * MIB } else { 60 * MIB })
            .collect();
        let phases = analyse(&series, 100, &AnalysisConfig::default());
        assert!(phases.startup_seconds.is_some_and(|s| s <= 0.5));
        assert_eq!(phases.steady_bytes, Some(60 * MIB));
        assert!(phases.spikes.len() >= 55, "{}", phases.spikes.len());
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
