//! Summaries of benchmark samples.

/// Median, minimum and maximum of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// The median.
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
}

/// Summarizes `v` (which must not be empty).
pub fn stats(mut v: Vec<f64>) -> Stats {
    assert!(!v.is_empty(), "no samples");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stats {
        median,
        min: v[0],
        max: v[n - 1],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_sets() {
        assert_eq!(stats(vec![3.0, 1.0, 2.0]).median, 2.0);
        let s = stats(vec![4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
    }
}
