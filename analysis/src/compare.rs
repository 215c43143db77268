//! The `compare` judge: canary against baseline on per-interval samples, Kayenta-style.

use crate::spec::{ComparePlan, CompareTest, Direction};
use crate::stats::{self, Alternative, TwoSampleResult};
use crate::verdict::{Evidence, Judgement, Verdict, finite, format_values};

/// Judges canary samples against baseline samples.
///
/// The verdict comes from the two-sided interval for the shift (canary − baseline) at the plan's
/// confidence: the canary is "high" when the whole interval lies above the tolerated margin and
/// "low" when it lies below minus the margin, and the margin is `tolerance` × |the baseline's
/// level| (its median for Mann–Whitney, its mean for Welch) — "10% worse than stable is fine".
/// The p-value is reported for the bad direction. Non-finite samples (intervals without data) are
/// dropped; fewer than `min_samples` left on either side is Inconclusive.
pub fn judge(plan: &ComparePlan, canary: &[f64], baseline: &[f64]) -> Judgement {
    let canary_finite: Vec<f64> = canary.iter().copied().filter(|v| v.is_finite()).collect();
    let baseline_finite: Vec<f64> = baseline.iter().copied().filter(|v| v.is_finite()).collect();
    let canary_mean = stats::mean(&canary_finite);
    let baseline_mean = stats::mean(&baseline_finite);
    let mut evidence = Evidence {
        values: Some(format!(
            "canary {} baseline {}",
            format_values(canary),
            format_values(baseline)
        )),
        test: Some(
            match plan.test {
                CompareTest::MannWhitney => "mannWhitney",
                CompareTest::Welch => "welch",
            }
            .to_owned(),
        ),
        canary_samples: Some(canary_finite.len() as u64),
        baseline_samples: Some(baseline_finite.len() as u64),
        canary_mean: finite(canary_mean),
        baseline_mean: finite(baseline_mean),
        effect_size: finite(canary_mean / baseline_mean),
        ..Evidence::default()
    };
    if canary_finite.len() < plan.min_samples || baseline_finite.len() < plan.min_samples {
        let message = format!(
            "too few samples: canary {}, baseline {}, need {} each",
            canary_finite.len(),
            baseline_finite.len(),
            plan.min_samples
        );
        return Judgement::new(Verdict::Inconclusive, message, evidence);
    }
    let alternative = match plan.bad {
        Direction::Increase => Alternative::Greater,
        Direction::Decrease => Alternative::Less,
        Direction::Either => Alternative::TwoSided,
    };
    let (result, baseline_level) = match plan.test {
        CompareTest::MannWhitney => (
            stats::mann_whitney(
                &canary_finite,
                &baseline_finite,
                alternative,
                plan.confidence,
            ),
            stats::median(&baseline_finite),
        ),
        CompareTest::Welch => (
            stats::welch_t(
                &canary_finite,
                &baseline_finite,
                alternative,
                plan.confidence,
            ),
            baseline_mean,
        ),
    };
    let result: TwoSampleResult = match result {
        Ok(result) => result,
        Err(error) => return Judgement::new(Verdict::Error, error.to_string(), evidence),
    };
    evidence.statistic = finite(result.statistic);
    evidence.degrees_of_freedom = result.degrees_of_freedom.and_then(finite);
    evidence.p_value = finite(result.p_value);
    evidence.shift = finite(result.estimate);
    evidence.interval_low = finite(result.interval.0);
    evidence.interval_high = finite(result.interval.1);

    let margin = plan.tolerance * baseline_level.abs();
    let (low, high) = result.interval;
    let is_high = low > margin;
    let is_low = high < -margin;
    let description = format!(
        "shift {:.4} with {}% interval [{:.4}, {:.4}], tolerated ±{:.4}",
        result.estimate,
        plan.confidence * 100.0,
        low,
        high,
        margin
    );
    let bad = match plan.bad {
        Direction::Increase => is_high,
        Direction::Decrease => is_low,
        Direction::Either => is_high || is_low,
    };
    if bad {
        let which = if is_high { "higher" } else { "lower" };
        let message = format!("canary is significantly {which} than baseline: {description}");
        Judgement::new(Verdict::Fail, message, evidence)
    } else {
        Judgement::new(
            Verdict::Pass,
            format!("no significant bad shift: {description}"),
            evidence,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn plan(test: CompareTest, bad: Direction, tolerance: f64) -> ComparePlan {
        ComparePlan {
            baseline_query: "b".into(),
            test,
            bad,
            tolerance,
            confidence: 0.98,
            step: Duration::from_secs(60),
            min_samples: 5,
        }
    }

    fn series(level: f64, n: usize) -> Vec<f64> {
        // A deterministic spread around `level`, so both tests have variance to work with.
        (0..n)
            .map(|i| level * (1.0 + 0.05 * ((i * 7 % 11) as f64 - 5.0) / 5.0))
            .collect()
    }

    #[test]
    fn a_clearly_worse_canary_fails_and_a_similar_one_passes() {
        for test in [CompareTest::MannWhitney, CompareTest::Welch] {
            let baseline = series(100.0, 20);
            let worse = series(130.0, 20);
            let similar = series(101.0, 20);
            let judgement = judge(&plan(test, Direction::Increase, 0.1), &worse, &baseline);
            assert_eq!(
                judgement.verdict,
                Verdict::Fail,
                "{test:?}: {}",
                judgement.message
            );
            assert!((judgement.evidence.effect_size.unwrap() - 1.3).abs() < 1e-9);
            let judgement = judge(&plan(test, Direction::Increase, 0.1), &similar, &baseline);
            assert_eq!(
                judgement.verdict,
                Verdict::Pass,
                "{test:?}: {}",
                judgement.message
            );
        }
    }

    #[test]
    fn direction_and_tolerance_matter() {
        let baseline = series(100.0, 20);
        let better = series(80.0, 20);
        let slightly_worse = series(105.0, 20);
        let mw = CompareTest::MannWhitney;
        assert_eq!(
            judge(&plan(mw, Direction::Increase, 0.0), &better, &baseline).verdict,
            Verdict::Pass
        );
        assert_eq!(
            judge(&plan(mw, Direction::Decrease, 0.0), &better, &baseline).verdict,
            Verdict::Fail
        );
        assert_eq!(
            judge(&plan(mw, Direction::Either, 0.0), &better, &baseline).verdict,
            Verdict::Fail
        );
        // 5% worse is significant with no tolerance, and fine with 10%.
        assert_eq!(
            judge(
                &plan(mw, Direction::Increase, 0.0),
                &slightly_worse,
                &baseline
            )
            .verdict,
            Verdict::Fail
        );
        assert_eq!(
            judge(
                &plan(mw, Direction::Increase, 0.1),
                &slightly_worse,
                &baseline
            )
            .verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn too_few_finite_samples_are_inconclusive() {
        let baseline = series(100.0, 20);
        let mut canary = vec![f64::NAN; 10];
        canary.extend(series(200.0, 4));
        let judgement = judge(
            &plan(CompareTest::Welch, Direction::Increase, 0.0),
            &canary,
            &baseline,
        );
        assert_eq!(judgement.verdict, Verdict::Inconclusive);
        assert_eq!(judgement.evidence.canary_samples, Some(4));
        assert!(serde_json::to_string(&judgement).is_ok());
    }
}
