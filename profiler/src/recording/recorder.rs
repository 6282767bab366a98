//! One recorder for every session: charge samples and bucket closes in, a timeline of bucket
//! maxima and the peaks that need no timeline out.

use profiler_common::{rss_member, MemoryCounters, WindowPeaks};

use crate::{
    accounting::timeline::Timeline,
    cgroups::{ChargeReader, IntervalPeak},
    report::{BucketPeaks, ResidentMemory},
};

/// The kernel's figures for one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelBucket {
    pub resident: u64,
    /// Highest anonymous resident within the bucket.
    pub anon: u64,
    /// Anonymous resident at the bucket's end.
    pub anon_now: u64,
    pub reserved: u64,
    pub tasks: u64,
}

impl KernelBucket {
    /// Each figure at least `start`'s: the values when the bucket began. The kernel's window
    /// marks rise only on growth, so a bucket in which memory only fell would otherwise
    /// record its end value and cut a spike's falling edge.
    pub fn at_least(self, start: &KernelBucket) -> Self {
        Self {
            resident: self.resident.max(start.resident),
            anon: self.anon.max(start.anon),
            // A figure at the bucket's end, not a peak.
            anon_now: self.anon_now,
            reserved: self.reserved.max(start.reserved),
            tasks: self.tasks.max(start.tasks),
        }
    }

    /// From the target's counters now and (where windows are tracked) the window's peaks;
    /// `baseline_tasks` are tasks that were there before counting began.
    pub fn from_kernel(
        counters: &MemoryCounters,
        window: Option<&WindowPeaks>,
        baseline_tasks: u64,
    ) -> Self {
        let resident = counters.resident_bytes().max(0) as u64;
        let anon = counters.rss_bytes[rss_member::ANON].max(0) as u64;
        let live_tasks = counters.live_tasks.max(0);
        match window {
            Some(window) => Self {
                resident: window.resident_peak_bytes.max(resident),
                anon: window.anon_peak_bytes.max(anon),
                anon_now: anon,
                reserved: 0,
                tasks: baseline_tasks.saturating_add_signed(window.live_tasks_peak.max(live_tasks)),
            },
            None => Self {
                resident,
                anon,
                anon_now: anon,
                reserved: 0,
                tasks: baseline_tasks.saturating_add_signed(live_tasks),
            },
        }
    }
}

/// The charge's figures for one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChargeBucket {
    /// The kernel's own peak over the bucket, where it says (see [`IntervalPeak`]).
    pub interval_peak: Option<IntervalPeak>,
    pub current: u64,
    /// Charge less reclaimable page cache (see `ChargeReader::reclaimable_cache`); 0 when
    /// not read.
    pub working_set: u64,
}

impl ChargeBucket {
    /// Reads the charge at a bucket's end, with the working set (one more file read);
    /// None when the cgroup is gone or unreadable.
    pub fn read(charge: &mut ChargeReader) -> Option<Self> {
        let mut bucket = Self::read_charge(charge)?;
        bucket.working_set = bucket
            .current
            .saturating_sub(charge.reclaimable_cache().unwrap_or(0));
        Some(bucket)
    }

    /// The charge and its interval peak only (the agent's per-container tick).
    pub fn read_charge(charge: &mut ChargeReader) -> Option<Self> {
        let interval_peak = charge.interval_peak();
        let current = charge.current()?;
        Some(Self {
            interval_peak,
            current,
            working_set: 0,
        })
    }
}

/// Charge samples and bucket closes of one target.
#[derive(Clone, Debug)]
pub struct Recorder {
    timeline: Timeline,
    sampled_charge_peak: u64,
    window_charge_peak: Option<u64>,
    record_charge_peak: Option<u64>,
    resident_peak: u64,
    anon_peak: u64,
    /// Highest charge sampled since the last bucket closed: the working set at the bucket's
    /// peak is estimated from it (see [`Recorder::close_bucket`]).
    bucket_sampled_peak: u64,
}

impl Recorder {
    /// `bucket_ms` is the starting resolution; it halves as needed to stay within `buckets`.
    pub fn new(bucket_ms: u64, buckets: usize) -> Self {
        Self {
            timeline: Timeline::new(bucket_ms, buckets),
            sampled_charge_peak: 0,
            window_charge_peak: None,
            record_charge_peak: None,
            resident_peak: 0,
            anon_peak: 0,
            bucket_sampled_peak: 0,
        }
    }

    /// A charge peak from before recording began (the agent's first sight of a cgroup).
    pub fn seed_charge_peak(&mut self, peak: u64) {
        self.sampled_charge_peak = self.sampled_charge_peak.max(peak);
    }

    /// One charge sample between bucket closes.
    pub fn sample_charge(&mut self, elapsed_ms: u64, current: u64) {
        self.sampled_charge_peak = self.sampled_charge_peak.max(current);
        self.bucket_sampled_peak = self.bucket_sampled_peak.max(current);
        self.timeline.record(
            elapsed_ms,
            &BucketPeaks {
                charged: current,
                ..BucketPeaks::default()
            },
        );
    }

    /// Closes a bucket with the kernel's figures and, for cgroups, the charge's.
    pub fn close_bucket(
        &mut self,
        elapsed_ms: u64,
        kernel: KernelBucket,
        charge: Option<ChargeBucket>,
    ) {
        self.resident_peak = self.resident_peak.max(kernel.resident);
        self.anon_peak = self.anon_peak.max(kernel.anon);
        let mut peaks = BucketPeaks {
            resident: kernel.resident,
            anon: kernel.anon,
            reserved: kernel.reserved,
            tasks: kernel.tasks,
            ..BucketPeaks::default()
        };
        if let Some(charge) = charge {
            if let Some(peak) = charge.interval_peak {
                let kept = match peak {
                    IntervalPeak::Window(_) => &mut self.window_charge_peak,
                    IntervalPeak::NewRecord(_) => &mut self.record_charge_peak,
                };
                *kept = Some(kept.unwrap_or(0).max(peak.bytes()));
            }
            peaks.charged = charge
                .interval_peak
                .map_or(0, IntervalPeak::bytes)
                .max(charge.current);
            // The working set is read once, at the bucket's end; an allocation burst between
            // two reads shows in the charge and, exactly, in the kernel's anonymous peak of
            // the window. The bucket's working set is the one at its end plus that burst
            // (anon peak over anon at the end), never more than its charge peak less the
            // reclaimable cache at the end. The charge alone would not do: under a limit
            // it touches the limit between reclaims with no working set behind it.
            if charge.working_set > 0 {
                let reclaimable = charge.current.saturating_sub(charge.working_set);
                let bucket_peak = peaks.charged.max(self.bucket_sampled_peak);
                let burst = kernel.anon.saturating_sub(kernel.anon_now);
                peaks.working_set = charge
                    .working_set
                    .max((charge.working_set + burst).min(bucket_peak.saturating_sub(reclaimable)));
            }
            self.sampled_charge_peak = self.sampled_charge_peak.max(charge.current);
        }
        self.bucket_sampled_peak = 0;
        self.timeline.record(elapsed_ms, &peaks);
    }

    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Highest sampled charge (and any seeded peak).
    pub fn sampled_charge_peak(&self) -> u64 {
        self.sampled_charge_peak
    }

    /// Highest of the kernel's windowed charge peaks, where the cgroup keeps them.
    pub fn window_charge_peak(&self) -> Option<u64> {
        self.window_charge_peak
    }

    /// Highest new record of the cgroup's lifetime high-water mark seen while recording.
    pub fn record_charge_peak(&self) -> Option<u64> {
        self.record_charge_peak
    }

    /// The charge peak recorded: samples, windows and records together.
    pub fn charge_peak(&self) -> u64 {
        self.sampled_charge_peak
            .max(self.window_charge_peak.unwrap_or(0))
            .max(self.record_charge_peak.unwrap_or(0))
    }

    /// The highest figure so far, for progress displays.
    pub fn live_peak(&self) -> u64 {
        self.charge_peak().max(self.resident_peak)
    }

    /// Resident memory as this recorder saw it: peaks of its own buckets, not of the
    /// target's lifetime (for sessions on a target that was already running).
    pub fn resident_seen(&self, now: &MemoryCounters) -> ResidentMemory {
        ResidentMemory {
            peak_bytes: self.resident_peak,
            anon_peak_bytes: self.anon_peak,
            file_peak_bytes: now.file_peak_bytes,
            current_bytes: now.resident_bytes().max(0) as u64,
            peak_before_capture: None,
        }
    }
}

impl ResidentMemory {
    /// Resident memory from the kernel's counters of the whole target.
    pub fn from_counters(counters: &MemoryCounters) -> Self {
        Self {
            peak_bytes: counters.resident_peak_bytes,
            anon_peak_bytes: counters.anon_peak_bytes,
            file_peak_bytes: counters.file_peak_bytes,
            current_bytes: counters.resident_bytes().max(0) as u64,
            peak_before_capture: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_sample_between_buckets_is_kept_as_the_bucket_maximum() {
        let mut recorder = Recorder::new(50, 100);
        recorder.sample_charge(10, 300 * MIB);
        recorder.close_bucket(
            49,
            KernelBucket::default(),
            Some(ChargeBucket {
                interval_peak: None,
                current: 100 * MIB,
                working_set: 90 * MIB,
            }),
        );
        let bucket = recorder.timeline().buckets()[0];
        assert_eq!(bucket.charged, 300 * MIB);
        // No anonymous burst in the bucket: the charge's 300 MiB sample was not working set.
        assert_eq!(bucket.working_set, 90 * MIB);
        assert_eq!(recorder.sampled_charge_peak(), 300 * MIB);
        assert_eq!(recorder.window_charge_peak(), None);
    }

    #[test]
    fn an_anonymous_burst_between_reads_raises_the_buckets_working_set() {
        let mut recorder = Recorder::new(50, 100);
        recorder.sample_charge(10, 300 * MIB);
        let kernel = KernelBucket {
            anon: 250 * MIB,
            anon_now: 50 * MIB,
            ..KernelBucket::default()
        };
        let charge = ChargeBucket {
            interval_peak: None,
            current: 100 * MIB,
            working_set: 90 * MIB,
        };
        recorder.close_bucket(49, kernel, Some(charge));
        // 90 MiB at the end + the 200 MiB anonymous burst, within the charge peak less the
        // 10 MiB of reclaimable cache.
        assert_eq!(recorder.timeline().buckets()[0].working_set, 290 * MIB);
    }

    #[test]
    fn the_kernels_window_peak_raises_the_bucket_and_is_remembered() {
        let mut recorder = Recorder::new(50, 100);
        recorder.close_bucket(
            20,
            KernelBucket::default(),
            Some(ChargeBucket {
                interval_peak: Some(IntervalPeak::Window(500 * MIB)),
                current: 100 * MIB,
                working_set: 100 * MIB,
            }),
        );
        assert_eq!(recorder.timeline().buckets()[0].charged, 500 * MIB);
        assert_eq!(recorder.window_charge_peak(), Some(500 * MIB));
        assert_eq!(recorder.sampled_charge_peak(), 100 * MIB);
    }
}
