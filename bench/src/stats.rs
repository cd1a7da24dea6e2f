//! Latency samples and percentiles. Every sample is kept (a 10 s run at a few thousand
//! requests per second is well under a million `u32`s), so percentiles are exact, with no
//! histogram bucketing error.

use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    us: Vec<u32>,
    sorted: bool,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            us: Vec::with_capacity(n),
            sorted: true,
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.us
            .push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        self.sorted = false;
    }

    pub fn record_us(&mut self, us: u32) {
        self.us.push(us);
        self.sorted = false;
    }

    pub fn merge(&mut self, other: Samples) {
        self.us.extend(other.us);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.us.len()
    }

    pub fn is_empty(&self) -> bool {
        self.us.is_empty()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.us.sort_unstable();
            self.sorted = true;
        }
    }

    /// The `p`-th percentile (0 < p <= 100), nearest-rank, in microseconds; `None` when
    /// there are no samples.
    pub fn percentile(&mut self, p: f64) -> Option<u32> {
        self.sort();
        percentile_sorted(&self.us, p)
    }

    /// Mean in microseconds.
    pub fn mean(&self) -> Option<f64> {
        if self.us.is_empty() {
            return None;
        }
        Some(self.us.iter().map(|&u| f64::from(u)).sum::<f64>() / self.us.len() as f64)
    }

    pub fn max(&mut self) -> Option<u32> {
        self.sort();
        self.us.last().copied()
    }
}

/// Nearest-rank percentile of an ascending slice: the smallest value such that at least
/// `p` percent of the samples are at or below it.
pub fn percentile_sorted(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    // The epsilon keeps float noise (0.999 * 1000 = 999.0000000000001) from moving the
    // rank up by one.
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[idx])
}

/// Median of a list of ratios or rates (the mean of the two middle values for an even
/// count); `None` for an empty list. NaNs are ignored.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Microseconds as milliseconds with two decimals, for the reports.
pub fn ms(us: Option<u32>) -> String {
    match us {
        Some(us) => format!("{:.2}", f64::from(us) / 1000.0),
        None => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 50.0), Some(50));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99));
        assert_eq!(percentile_sorted(&v, 99.9), Some(100));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1));
        assert_eq!(percentile_sorted(&[], 50.0), None);
        assert_eq!(percentile_sorted(&[7], 99.9), Some(7));
        // 1000 samples: p99.9 is the 999th value, not the maximum.
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile_sorted(&v, 99.9), Some(999));
        assert_eq!(percentile_sorted(&v, 99.0), Some(990));
    }

    #[test]
    fn samples_sort_lazily_and_merge() {
        let mut a = Samples::new();
        for us in [30, 10, 20] {
            a.record_us(us);
        }
        let mut b = Samples::new();
        b.record(Duration::from_micros(40));
        a.merge(b);
        assert_eq!(a.len(), 4);
        assert_eq!(a.percentile(50.0), Some(20));
        assert_eq!(a.max(), Some(40));
        assert_eq!(a.mean(), Some(25.0));
        a.record_us(5);
        assert_eq!(a.percentile(1.0), Some(5));
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn ms_formatting() {
        assert_eq!(ms(Some(1234)), "1.23");
        assert_eq!(ms(None), "-");
    }
}
