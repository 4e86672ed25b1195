//! Order statistics: exact latency percentiles from recorded samples and medians across runs.
//!
//! Samples are kept whole (one `u64` of nanoseconds each) rather than in a histogram: a 30-second run at
//! 20k records/s is 600k samples, under 5 MB, and exact percentiles leave nothing to argue about.

use std::collections::BTreeMap;

/// Nearest-rank percentile (`q` in `0.0..=1.0`) of an ascending slice; `None` when empty.
pub(crate) fn percentile_sorted(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    debug_assert!(sorted.windows(2).all(|pair| pair[0] <= pair[1]));
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(sorted.len() - 1);
    Some(sorted[index])
}

/// Median of the values (mean of the middle two for an even count); `None` when empty or any is NaN.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|value| value.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// Summary of a set of latency samples in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LatencySummary {
    pub(crate) count: usize,
    pub(crate) p50_ns: u64,
    pub(crate) p99_ns: u64,
    pub(crate) p999_ns: u64,
    pub(crate) max_ns: u64,
    pub(crate) mean_ns: f64,
}

impl LatencySummary {
    /// Sorts the samples and summarizes them; `None` when there are none.
    pub(crate) fn from_samples(mut samples: Vec<u64>) -> Option<LatencySummary> {
        samples.sort_unstable();
        let count = samples.len();
        let total: u128 = samples.iter().map(|&sample| u128::from(sample)).sum();
        Some(LatencySummary {
            count,
            p50_ns: percentile_sorted(&samples, 0.50)?,
            p99_ns: percentile_sorted(&samples, 0.99)?,
            p999_ns: percentile_sorted(&samples, 0.999)?,
            max_ns: *samples.last()?,
            mean_ns: total as f64 / count as f64,
        })
    }

    /// Adds `{prefix}_p50_ms` … `{prefix}_max_ms`, `{prefix}_mean_ms` to `metrics`.
    pub(crate) fn add_to(&self, prefix: &str, metrics: &mut BTreeMap<String, f64>) {
        let ms = |ns: f64| ns / 1e6;
        metrics.insert(format!("{prefix}_p50_ms"), ms(self.p50_ns as f64));
        metrics.insert(format!("{prefix}_p99_ms"), ms(self.p99_ns as f64));
        metrics.insert(format!("{prefix}_p999_ms"), ms(self.p999_ns as f64));
        metrics.insert(format!("{prefix}_max_ms"), ms(self.max_ns as f64));
        metrics.insert(format!("{prefix}_mean_ms"), ms(self.mean_ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile_sorted(&samples, 0.5), Some(500));
        assert_eq!(percentile_sorted(&samples, 0.99), Some(990));
        assert_eq!(percentile_sorted(&samples, 0.999), Some(999));
        assert_eq!(percentile_sorted(&samples, 1.0), Some(1000));
        assert_eq!(percentile_sorted(&samples, 0.0), Some(1));
        assert_eq!(percentile_sorted(&[], 0.5), None);
        assert_eq!(percentile_sorted(&[7], 0.999), Some(7));
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let samples: Vec<u64> = (1..=100).rev().map(|value| value * 1_000_000).collect();
        let summary = LatencySummary::from_samples(samples).expect("non-empty");
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50_ns, 50_000_000);
        assert_eq!(summary.p99_ns, 99_000_000);
        assert_eq!(summary.max_ns, 100_000_000);
        let mut metrics = BTreeMap::new();
        summary.add_to("ack", &mut metrics);
        assert_eq!(metrics["ack_p50_ms"], 50.0);
        assert_eq!(metrics["ack_mean_ms"], 50.5);
        assert!(LatencySummary::from_samples(Vec::new()).is_none());
    }
}
