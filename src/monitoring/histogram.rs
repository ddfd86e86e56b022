//! Log-spaced histograms read from the hourly rollups (`histogram_hourly`,
//! `shadow_difference_hourly`: one row per hour with its bin counts as an array), merged here and
//! read by the same nearest-rank rule as the SQL functions behind the views, so the API and psql
//! give the same numbers. Bins: 16 per doubling (`histogram_bin` in
//! migrations/20261203010000_rollups.sql); a bin stands for its geometric midpoint, within 2.19 %
//! of any value in it.

use std::collections::BTreeMap;

/// Merged histogram rows: the count of each bin.
#[derive(Debug, Default)]
pub struct Histogram {
    bins: BTreeMap<i32, i64>,
}

impl Histogram {
    /// Adds a rollup row: `counts[i]` is the count of bin `first_bin + i`.
    pub fn add(&mut self, first_bin: i32, counts: &[i64]) {
        for (bin, &n) in (first_bin..).zip(counts) {
            if n != 0 {
                *self.bins.entry(bin).or_default() += n;
            }
        }
    }

    /// The bin holding the nearest-rank percentile `q` (rank ⌈q·total⌉); `None` when empty.
    pub fn percentile_bin(&self, q: f64) -> Option<i32> {
        let total: i64 = self.bins.values().sum();
        if total <= 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^53
        let rank = (q * total as f64).ceil();
        let mut cumulative = 0;
        for (&bin, &n) in &self.bins {
            cumulative += n;
            #[allow(clippy::cast_precision_loss)]
            if cumulative as f64 >= rank {
                return Some(bin);
            }
        }
        None
    }
}

/// The value a histogram bin stands for (its geometric midpoint): SQL's `histogram_value`.
pub fn histogram_value(bin: i32) -> f64 {
    if bin <= 0 { 1.0 } else { 2f64.powf((f64::from(bin) - 0.5) / 16.0) }
}

/// The difference a signed bin stands for: SQL's `shadow_difference_value` (bin 0 is 0, bin ±b
/// is ±`histogram_value(b - 1)`).
pub fn signed_value(bin: i32) -> f64 {
    match bin {
        0 => 0.0,
        b => f64::from(b.signum()) * histogram_value(b.abs() - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_over_merged_bins() {
        let mut h = Histogram::default();
        h.add(10, &[1, 0, 2]); // bins 10, 12
        h.add(11, &[1, 0, 0, 6]); // bins 11, 14
        // 10 values: ranks 1 (bin 10), 2 (11), 3-4 (12), 5-10 (14).
        assert_eq!(h.percentile_bin(0.1), Some(10));
        assert_eq!(h.percentile_bin(0.3), Some(12));
        assert_eq!(h.percentile_bin(0.5), Some(14));
        assert_eq!(h.percentile_bin(0.99), Some(14));
        assert_eq!(Histogram::default().percentile_bin(0.5), None);
    }

    #[test]
    fn a_bin_stands_for_its_geometric_midpoint() {
        assert_eq!(histogram_value(0), 1.0);
        assert!((histogram_value(16) / 2f64.powf(15.5 / 16.0) - 1.0).abs() < 1e-15);
        assert_eq!(signed_value(0), 0.0);
        assert_eq!(signed_value(-17), -histogram_value(16));
        // Removing an update's old value (a negative count) cancels it.
        let mut h = Histogram::default();
        h.add(-3, &[1, 0, 0, 0, 0, 1]);
        h.add(2, &[-1]);
        assert_eq!(h.percentile_bin(1.0), Some(-3));
    }
}
