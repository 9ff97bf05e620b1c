//! A fixed-bucket histogram cheap enough for the request path: one
//! relaxed atomic add for the bucket, one for the count and one for the
//! sum, no lock and no allocation. [`Histogram::snapshot`] reads it for a
//! scrape (Prometheus buckets, cumulative when encoded) and for the status
//! page's quantile estimates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: 50 µs to 10 s, about
/// three a decade, which covers a loopback GET (tens of µs), an fsync
/// (ms) and a request that runs into its timeout (s).
pub const LATENCY_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the group-commit batch sizes (writes one fsync covered).
pub const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Observations counted per bucket; the last bucket is `+Inf`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One more than `bounds`: the last one counts what exceeds them all.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// Sum of the observations, in millionths of their unit (µs for
    /// seconds), so that it stays an integer add.
    sum_micros: AtomicU64,
}

/// A histogram as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `(upper bound, observations in this bucket alone)`; the last bound
    /// is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram over `bounds` (increasing).
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// A histogram of durations in seconds ([`LATENCY_BOUNDS`]).
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS)
    }

    /// Counts one observation of `v` (negative and NaN count as 0).
    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() && v > 0.0 { v } else { 0.0 };
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        // Saturating: a value past u64 µs (585 000 years) is no duration.
        self.sum_micros
            .fetch_add((v * 1e6).min(u64::MAX as f64) as u64, Ordering::Relaxed);
    }

    /// Counts one duration, in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// The histogram as it stands.
    pub fn snapshot(&self) -> Snapshot {
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect::<Vec<_>>();
        Snapshot {
            // The buckets' total, not `count`: read at another moment, the
            // count could disagree with the buckets by a few observations.
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

impl Default for Histogram {
    /// A latency histogram.
    fn default() -> Self {
        Histogram::latency()
    }
}

impl Snapshot {
    /// An estimate of the `q` quantile (0..=1): the upper bound of the
    /// bucket it falls in (the largest finite bound for the `+Inf` bucket);
    /// `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        let last_finite = self
            .buckets
            .iter()
            .rev()
            .find(|(b, _)| b.is_finite())
            .map_or(0.0, |(b, _)| *b);
        for (bound, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(if bound.is_finite() {
                    *bound
                } else {
                    last_finite
                });
            }
        }
        Some(last_finite)
    }

    /// The mean observation; `None` without observations.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.0, 1.5, 3.0, 4.0, 9.0, -1.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(
            s.buckets,
            vec![(1.0, 4), (2.0, 1), (4.0, 2), (f64::INFINITY, 1)]
        );
        assert_eq!(s.count, 8);
        assert!((s.sum - 19.0).abs() < 1e-9, "{}", s.sum);
    }

    #[test]
    fn quantiles_are_bucket_bounds() {
        let h = Histogram::new(&[1.0, 2.0, 4.0]);
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..90 {
            h.observe(0.5);
        }
        for _ in 0..10 {
            h.observe(3.0);
        }
        let s = h.snapshot();
        assert_eq!(s.quantile(0.5), Some(1.0));
        assert_eq!(s.quantile(0.9), Some(1.0));
        assert_eq!(s.quantile(0.91), Some(4.0));
        assert_eq!(s.quantile(1.0), Some(4.0));
        h.observe(100.0);
        assert_eq!(h.snapshot().quantile(1.0), Some(4.0));
        assert!((s.mean().unwrap() - 0.75).abs() < 1e-9);
    }

    #[test]
    fn durations_are_seconds() {
        let h = Histogram::latency();
        h.observe_duration(Duration::from_micros(70));
        h.observe_duration(Duration::from_millis(3));
        let s = h.snapshot();
        assert_eq!(s.count, 2);
        let at = |bound: f64| s.buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.000_1), 1);
        assert_eq!(at(0.005), 1);
        assert!((s.sum - 0.003_07).abs() < 1e-9);
    }
}
