//! A fixed-resolution timeline that keeps each bucket's **maximum** (never a sample), bounded
//! in memory whatever the run length: when it is full, neighbouring buckets merge (keeping the
//! higher value) and the resolution halves.

pub use crate::report::BucketPeaks;

impl BucketPeaks {
    fn raise(&mut self, other: &Self) {
        self.charged = self.charged.max(other.charged);
        self.working_set = self.working_set.max(other.working_set);
        self.resident = self.resident.max(other.resident);
        self.anon = self.anon.max(other.anon);
        self.reserved = self.reserved.max(other.reserved);
        self.tasks = self.tasks.max(other.tasks);
    }
}

#[derive(Clone, Debug)]
pub struct Timeline {
    resolution_ms: u64,
    capacity: usize,
    buckets: Vec<BucketPeaks>,
}

impl Timeline {
    /// `capacity` buckets of `resolution_ms` at first (capacity is rounded up to even).
    pub fn new(resolution_ms: u64, capacity: usize) -> Self {
        let capacity = capacity.max(2).next_multiple_of(2);
        Self {
            resolution_ms: resolution_ms.max(1),
            capacity,
            buckets: Vec::with_capacity(capacity),
        }
    }

    pub fn resolution_ms(&self) -> u64 {
        self.resolution_ms
    }

    pub fn buckets(&self) -> &[BucketPeaks] {
        &self.buckets
    }

    /// Raises the bucket that covers `elapsed_ms` (since the start) to `peaks`.
    pub fn record(&mut self, elapsed_ms: u64, peaks: &BucketPeaks) {
        let mut index = (elapsed_ms / self.resolution_ms) as usize;
        while index >= self.capacity {
            self.halve_resolution();
            index = (elapsed_ms / self.resolution_ms) as usize;
        }
        if self.buckets.len() <= index {
            // Gaps (no sample landed there) carry the last known value forward: memory does not
            // drop to zero between samples.
            let filler = self.buckets.last().copied().unwrap_or_default();
            self.buckets.resize(index + 1, filler);
            if let Some(bucket) = self.buckets.get_mut(index) {
                *bucket = BucketPeaks::default();
            }
        }
        if let Some(bucket) = self.buckets.get_mut(index) {
            bucket.raise(peaks);
        }
    }

    fn halve_resolution(&mut self) {
        let merged: Vec<BucketPeaks> = self
            .buckets
            .chunks(2)
            .map(|pair| {
                let mut bucket = pair[0];
                if let Some(second) = pair.get(1) {
                    bucket.raise(second);
                }
                bucket
            })
            .collect();
        self.buckets = merged;
        self.resolution_ms *= 2;
    }

    /// The buckets covering the `window_ms` before `end_ms` (for the seconds before an OOM kill).
    pub fn window_before(&self, end_ms: u64, window_ms: u64) -> (u64, Vec<BucketPeaks>) {
        let end = ((end_ms / self.resolution_ms) as usize + 1).min(self.buckets.len());
        let start = end.saturating_sub((window_ms / self.resolution_ms) as usize);
        (
            start as u64 * self.resolution_ms,
            self.buckets[start..end].to_vec(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charged(value: u64) -> BucketPeaks {
        BucketPeaks {
            charged: value,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_the_maximum_of_each_bucket() {
        let mut timeline = Timeline::new(100, 10);
        timeline.record(10, &charged(5));
        timeline.record(60, &charged(50));
        timeline.record(90, &charged(7));
        timeline.record(150, &charged(3));
        assert_eq!(timeline.buckets()[0].charged, 50);
        assert_eq!(timeline.buckets()[1].charged, 3);
    }

    #[test]
    fn a_short_spike_survives_any_amount_of_merging() {
        let mut timeline = Timeline::new(10, 8);
        for ms in (0..100_000).step_by(10) {
            let value = if ms == 31_230 { 1000 } else { 1 };
            timeline.record(ms, &charged(value));
        }
        assert!(timeline.buckets().len() <= 8);
        assert!(timeline.resolution_ms() >= 100_000 / 8);
        assert_eq!(
            timeline.buckets().iter().map(|b| b.charged).max(),
            Some(1000)
        );
    }

    #[test]
    fn gaps_carry_the_last_value() {
        let mut timeline = Timeline::new(100, 10);
        timeline.record(0, &charged(9));
        timeline.record(450, &charged(4));
        let values: Vec<u64> = timeline.buckets().iter().map(|b| b.charged).collect();
        assert_eq!(values, vec![9, 9, 9, 9, 4]);
    }

    #[test]
    fn window_before_an_event() {
        let mut timeline = Timeline::new(100, 100);
        for ms in (0..1000).step_by(100) {
            timeline.record(ms, &charged(ms));
        }
        let (start_ms, window) = timeline.window_before(950, 300);
        assert_eq!(start_ms, 700);
        assert_eq!(
            window.iter().map(|b| b.charged).collect::<Vec<_>>(),
            vec![700, 800, 900]
        );
    }
}
