//! Key performance indicators kept in Rust (lock-free counters), exported by the bindings under
//! the seed plan's metric names (`kato_gpu_query_duration_seconds`, ...).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the duration histograms' buckets; a last `+Inf` bucket is implied.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last is `+Inf`.
    counts: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram as Prometheus exposes it: cumulative counts per upper bound (the last `+Inf`).
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = DURATION_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(DURATION_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(elapsed.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (k, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            buckets.push((DURATION_BUCKETS.get(k).copied().unwrap_or(f64::INFINITY), cumulative));
        }
        HistogramSnapshot { buckets, sum_seconds: self.sum_nanos.load(Relaxed) as f64 / 1e9, count: cumulative }
    }
}

/// Counters a matcher keeps; gauges (pattern counts, memory) are read from the matcher itself,
/// and device errors and fallbacks from its device link.
#[derive(Default)]
pub struct Kpis {
    pub gpu_query_duration: Histogram,
    pub cpu_query_duration: Histogram,
    pub sync_duration: Histogram,
    /// Queries answered, whichever tier scored them (each state of a batch counts once); the
    /// device link counts those whose bulk tier was scored on the GPU.
    pub queries: AtomicU64,
    pub patterns_matched: AtomicU64,
    pub patterns_learned: AtomicU64,
    /// Promotions applied (see `Matcher::apply_promotion` for what counts).
    pub sync_events: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        for ms in [0.1, 0.7, 3.0, 3.0, 40.0, 20_000.0] {
            h.observe(Duration::from_secs_f64(ms / 1e3));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.buckets.last().unwrap(), &(f64::INFINITY, 6));
        assert_eq!(s.buckets[0], (0.0005, 1));
        assert_eq!(s.buckets[1], (0.001, 2));
        assert_eq!(s.buckets[3], (0.005, 4));
        assert_eq!(s.buckets[6], (0.05, 5));
        assert_eq!(s.buckets[13], (10.0, 5));
        assert!((s.sum_seconds - 20.0468).abs() < 1e-6, "{}", s.sum_seconds);
    }
}
