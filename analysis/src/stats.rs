//! Two-sample tests used by the `compare` judge. Distributions come from statrs.

use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

/// Which alternative a p-value is for, canary (x) against baseline (y).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alternative {
    /// x and y differ in location.
    TwoSided,
    /// x is greater than y.
    Greater,
    /// x is less than y.
    Less,
}

/// Result of a two-sample test of x (canary) against y (baseline).
#[derive(Clone, Debug, PartialEq)]
pub struct TwoSampleResult {
    /// W (Mann–Whitney, R's convention: rank sum of x − n_x(n_x+1)/2) or t (Welch).
    pub statistic: f64,
    /// Welch's degrees of freedom; `None` for Mann–Whitney.
    pub degrees_of_freedom: Option<f64>,
    /// p-value for the requested alternative.
    pub p_value: f64,
    /// Point estimate of the shift x − y (Hodges–Lehmann for Mann–Whitney, difference of means
    /// for Welch).
    pub estimate: f64,
    /// Two-sided confidence interval for the shift at the requested confidence.
    pub interval: (f64, f64),
}

/// Why a test could not be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// A sample is too small or holds NaN/Inf.
    #[error("{0}")]
    InvalidSample(String),
    /// The confidence level is not in (0, 1).
    #[error("confidence must be strictly between 0 and 1")]
    InvalidConfidence,
}

fn check(x: &[f64], y: &[f64], minimum: usize, confidence: f64) -> Result<(), StatsError> {
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(StatsError::InvalidConfidence);
    }
    for (name, sample) in [("canary", x), ("baseline", y)] {
        if sample.len() < minimum {
            return Err(StatsError::InvalidSample(format!(
                "the {name} sample has {} values, the test needs {minimum}",
                sample.len()
            )));
        }
        if sample.iter().any(|value| !value.is_finite()) {
            return Err(StatsError::InvalidSample(format!(
                "the {name} sample holds NaN or Inf"
            )));
        }
    }
    Ok(())
}

fn standard_normal() -> Normal {
    // Parameters are constants that statrs accepts; fall back cannot happen, but avoid a panic.
    Normal::standard()
}

/// Mann–Whitney U (Wilcoxon rank-sum) test with the normal approximation, tie correction and
/// continuity correction, as R's `wilcox.test(x, y, exact = FALSE, correct = TRUE)`.
///
/// The interval for the shift x − y is the distribution-free one: order statistics of the n·m
/// pairwise differences, with the rank cut-off from the same tie-corrected normal approximation
/// (Hollander & Wolfe, ch. 4); the estimate is their median (Hodges–Lehmann).
pub fn mann_whitney(
    x: &[f64],
    y: &[f64],
    alternative: Alternative,
    confidence: f64,
) -> Result<TwoSampleResult, StatsError> {
    check(x, y, 1, confidence)?;
    let (n_x, n_y) = (x.len() as f64, y.len() as f64);
    let mut pooled: Vec<(f64, bool)> = x
        .iter()
        .map(|v| (*v, true))
        .chain(y.iter().map(|v| (*v, false)))
        .collect();
    pooled.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_x = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < pooled.len() {
        let mut end = start + 1;
        while end < pooled.len() && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        // Tied values share the mean of the ranks start+1..=end.
        let mid_rank = (start + 1 + end) as f64 / 2.0;
        let from_x = pooled[start..end].iter().filter(|(_, is_x)| *is_x).count();
        rank_sum_x += mid_rank * from_x as f64;
        let tied = (end - start) as f64;
        tie_term += tied * tied * tied - tied;
        start = end;
    }
    let statistic = rank_sum_x - n_x * (n_x + 1.0) / 2.0;
    let total = n_x + n_y;
    let sigma = ((n_x * n_y / 12.0)
        * ((total + 1.0) - tie_term / (total * (total - 1.0)).max(1.0)))
    .max(0.0)
    .sqrt();
    let centred = statistic - n_x * n_y / 2.0;
    let normal = standard_normal();
    let p_value = if sigma == 0.0 {
        // Every observation is tied: no evidence of any shift.
        1.0
    } else {
        let correction = match alternative {
            Alternative::TwoSided => 0.5 * centred.signum(),
            Alternative::Greater => 0.5,
            Alternative::Less => -0.5,
        };
        let z = (centred - correction) / sigma;
        match alternative {
            Alternative::TwoSided => (2.0 * normal.cdf(-z.abs())).min(1.0),
            Alternative::Greater => normal.sf(z),
            Alternative::Less => normal.cdf(z),
        }
    };

    let mut differences: Vec<f64> = x
        .iter()
        .flat_map(|xi| y.iter().map(move |yj| xi - yj))
        .collect();
    differences.sort_by(f64::total_cmp);
    let pairs = differences.len();
    let estimate = median_of_sorted(&differences);
    let z = normal.inverse_cdf(1.0 - (1.0 - confidence) / 2.0);
    // Rank (1-based) of the lower end: the count of differences the interval leaves out below.
    let cut = (n_x * n_y / 2.0 - z * sigma + 0.5).floor();
    let lower_rank = if cut < 1.0 {
        1
    } else {
        (cut as usize).min(pairs)
    };
    let upper_rank = pairs + 1 - lower_rank;
    let interval = if sigma == 0.0 {
        (estimate, estimate)
    } else {
        (differences[lower_rank - 1], differences[upper_rank - 1])
    };
    Ok(TwoSampleResult {
        statistic,
        degrees_of_freedom: None,
        p_value,
        estimate,
        interval,
    })
}

fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Median of a sample (sorts a copy).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    median_of_sorted(&sorted)
}

/// Arithmetic mean; NaN for an empty sample.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn sample_variance(values: &[f64], mean: f64) -> f64 {
    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (values.len() as f64 - 1.0)
}

/// Welch's unequal-variance t-test of x − y, as R's `t.test(x, y)` (var.equal = FALSE).
pub fn welch_t(
    x: &[f64],
    y: &[f64],
    alternative: Alternative,
    confidence: f64,
) -> Result<TwoSampleResult, StatsError> {
    check(x, y, 2, confidence)?;
    let (n_x, n_y) = (x.len() as f64, y.len() as f64);
    let (mean_x, mean_y) = (mean(x), mean(y));
    let (var_x, var_y) = (sample_variance(x, mean_x), sample_variance(y, mean_y));
    let (se_x2, se_y2) = (var_x / n_x, var_y / n_y);
    let standard_error = (se_x2 + se_y2).sqrt();
    let estimate = mean_x - mean_y;
    if standard_error == 0.0 {
        // Both samples are constant: the difference is known exactly.
        let p_value = if estimate == 0.0 { 1.0 } else { 0.0 };
        let p_value = match alternative {
            Alternative::Greater if estimate < 0.0 => 1.0,
            Alternative::Less if estimate > 0.0 => 1.0,
            _ => p_value,
        };
        return Ok(TwoSampleResult {
            statistic: if estimate == 0.0 {
                0.0
            } else {
                estimate.signum() * f64::INFINITY
            },
            degrees_of_freedom: None,
            p_value,
            estimate,
            interval: (estimate, estimate),
        });
    }
    let df = (se_x2 + se_y2).powi(2) / (se_x2 * se_x2 / (n_x - 1.0) + se_y2 * se_y2 / (n_y - 1.0));
    let t = estimate / standard_error;
    let distribution = StudentsT::new(0.0, 1.0, df).map_err(|error| {
        StatsError::InvalidSample(format!(
            "t distribution with {df} degrees of freedom: {error}"
        ))
    })?;
    let p_value = match alternative {
        Alternative::TwoSided => (2.0 * distribution.cdf(-t.abs())).min(1.0),
        Alternative::Greater => distribution.sf(t),
        Alternative::Less => distribution.cdf(t),
    };
    let quantile = distribution.inverse_cdf(1.0 - (1.0 - confidence) / 2.0);
    Ok(TwoSampleResult {
        statistic: t,
        degrees_of_freedom: Some(df),
        p_value,
        estimate,
        interval: (
            estimate - quantile * standard_error,
            estimate + quantile * standard_error,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "got {actual}, expected {expected} ± {tolerance}"
        );
    }

    // Hollander & Wolfe (1973), p. 69 f., the example of R's `?wilcox.test`: permeability
    // constants at term (x) and at 12–26 weeks (y). R documents
    // `wilcox.test(x, y, alternative = "greater", exact = FALSE, correct = FALSE)`:
    // W = 35, p-value = 0.1103.
    const TERM: [f64; 10] = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
    const EARLY: [f64; 5] = [1.15, 0.88, 0.90, 0.74, 1.21];

    #[test]
    fn mann_whitney_matches_r_on_hollander_wolfe() {
        let result = mann_whitney(&TERM, &EARLY, Alternative::Greater, 0.95).unwrap();
        close(result.statistic, 35.0, 1e-12);
        // With continuity correction (R's default): z = (35 − 25 − 0.5)/sqrt(10·5·16/12),
        // p = 1 − Φ(1.16351) = 0.12231.
        close(result.p_value, 0.12231, 5e-5);
        // The documented uncorrected value, by removing the correction from z by hand.
        let sigma = (10.0_f64 * 5.0 * 16.0 / 12.0).sqrt();
        close(Normal::standard().sf(10.0 / sigma), 0.1103, 5e-5);
        // Hodges–Lehmann estimate: the median of the 50 pairwise differences.
        let mut differences: Vec<f64> = TERM
            .iter()
            .flat_map(|x| EARLY.iter().map(move |y| x - y))
            .collect();
        differences.sort_by(f64::total_cmp);
        close(
            result.estimate,
            (differences[24] + differences[25]) / 2.0,
            1e-12,
        );
        assert!(result.interval.0 <= result.estimate && result.estimate <= result.interval.1);
    }

    // R's `?wilcox.test`: `wilcox.test(Ozone ~ Month, data = airquality, subset = Month %in%
    // c(5, 8))` gives W = 127.5, p-value = 0.0001208 (ties, normal approximation, continuity
    // correction). Ozone for May and August from R's `airquality`, NAs dropped.
    const OZONE_MAY: [f64; 26] = [
        41., 36., 12., 18., 28., 23., 19., 8., 7., 16., 11., 14., 18., 14., 34., 6., 30., 11., 1.,
        11., 4., 32., 23., 45., 115., 37.,
    ];
    const OZONE_AUGUST: [f64; 26] = [
        39., 9., 16., 78., 35., 66., 122., 89., 110., 44., 28., 65., 22., 59., 23., 31., 44., 21.,
        9., 45., 168., 73., 76., 118., 84., 85.,
    ];

    #[test]
    fn mann_whitney_matches_r_with_ties() {
        let result = mann_whitney(&OZONE_MAY, &OZONE_AUGUST, Alternative::TwoSided, 0.95).unwrap();
        close(result.statistic, 127.5, 1e-12);
        close(result.p_value, 0.0001208, 5e-7);
        assert!(
            result.interval.1 < 0.0,
            "May is lower: {:?}",
            result.interval
        );
    }

    #[test]
    fn mann_whitney_interval_covers_and_narrows() {
        let x: Vec<f64> = (0..30).map(|i| 10.0 + i as f64 * 0.37 % 3.0).collect();
        let y: Vec<f64> = (0..30).map(|i| 8.0 + i as f64 * 0.53 % 3.0).collect();
        let wide = mann_whitney(&x, &y, Alternative::TwoSided, 0.99).unwrap();
        let narrow = mann_whitney(&x, &y, Alternative::TwoSided, 0.80).unwrap();
        assert!(wide.interval.0 <= narrow.interval.0 && narrow.interval.1 <= wide.interval.1);
        assert!(narrow.interval.0 <= narrow.estimate && narrow.estimate <= narrow.interval.1);
        let all_tied =
            mann_whitney(&[1.0, 1.0], &[1.0, 1.0, 1.0], Alternative::TwoSided, 0.98).unwrap();
        assert_eq!(all_tied.p_value, 1.0);
        assert_eq!(all_tied.interval, (0.0, 0.0));
    }

    // Student's sleep data (Cushny & Peebles), R's `?t.test`: `t.test(extra ~ group, data =
    // sleep)` gives t = -1.8608, df = 17.776, p-value = 0.07939, 95 percent confidence interval
    // -3.3654832 0.2054832.
    const SLEEP_DRUG_1: [f64; 10] = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
    const SLEEP_DRUG_2: [f64; 10] = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];

    #[test]
    fn welch_matches_r_on_sleep() {
        let result = welch_t(&SLEEP_DRUG_1, &SLEEP_DRUG_2, Alternative::TwoSided, 0.95).unwrap();
        close(result.statistic, -1.8608, 5e-5);
        close(result.degrees_of_freedom.unwrap(), 17.776, 5e-4);
        close(result.p_value, 0.07939, 5e-6);
        close(result.interval.0, -3.3654832, 1e-6);
        close(result.interval.1, 0.2054832, 1e-6);
        close(result.estimate, -1.58, 1e-12);
        let less = welch_t(&SLEEP_DRUG_1, &SLEEP_DRUG_2, Alternative::Less, 0.95).unwrap();
        close(less.p_value, 0.07939 / 2.0, 5e-6);
    }

    #[test]
    fn invalid_samples_are_rejected() {
        assert!(welch_t(&[1.0], &[1.0, 2.0], Alternative::TwoSided, 0.95).is_err());
        assert!(mann_whitney(&[f64::NAN], &[1.0], Alternative::TwoSided, 0.95).is_err());
        assert!(mann_whitney(&[1.0], &[1.0], Alternative::TwoSided, 1.0).is_err());
        let constant = welch_t(&[2.0, 2.0], &[1.0, 1.0], Alternative::Greater, 0.95).unwrap();
        assert_eq!(constant.p_value, 0.0);
    }
}
