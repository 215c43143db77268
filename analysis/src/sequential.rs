//! The `sequential` judge: an anytime-valid test on event counts, canary against stable.
//!
//! This is the Poisson-process test of Lindon & Malek (NeurIPS 2022), in the form that stays
//! valid when the canary's share of traffic changes between looks. Per look t, with request counts
//! n_A (stable) and n_B (canary), ρ_t = n_B / (n_A + n_B). With θ = canary event rate / stable
//! event rate, conditionally on the exposures an event of look t came from the canary with
//! probability π_t(θ) = ρ_t·θ / (ρ_t·θ + 1 − ρ_t). For a tolerated ratio θ0 the e-value is a
//! mixture, over a grid of θ > θ0 with equal weights on log θ, of
//! Π_t π_t(θ)^{e_B}·(1−π_t(θ))^{e_A} / (π_t(θ0)^{e_B}·(1−π_t(θ0))^{e_A}).
//! Each product is a non-negative martingale under θ = θ0 and a supermartingale under θ < θ0
//! (the binomial family has monotone likelihood ratio), so by Ville's inequality the test that
//! fails when the e-value reaches 1/α aborts a canary that is no worse than θ0 with probability
//! at most α, however often it looks. `bad: decrease` mirrors the grid below θ0.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use crate::counters::{CounterSnapshot, counter_increase};
use crate::spec::{Bad, SequentialPlan};
use crate::verdict::{Evidence, Judgement, Verdict, finite};

/// Event and exposure counts of one look (or their totals), canary (B) and stable (A).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LookCounts {
    /// Events on the canary.
    pub canary_events: f64,
    /// Events on stable.
    pub stable_events: f64,
    /// Requests to the canary.
    pub canary_exposure: f64,
    /// Requests to stable.
    pub stable_exposure: f64,
}

impl LookCounts {
    fn add(&mut self, other: &LookCounts) {
        self.canary_events += other.canary_events;
        self.stable_events += other.stable_events;
        self.canary_exposure += other.canary_exposure;
        self.stable_exposure += other.stable_exposure;
    }

    /// The canary's share of requests, if both versions had any.
    pub fn canary_share(&self) -> Option<f64> {
        let total = self.canary_exposure + self.stable_exposure;
        (self.canary_exposure > 0.0 && self.stable_exposure > 0.0)
            .then(|| self.canary_exposure / total)
    }
}

/// One point of the mixture: a rate ratio θ and the log of its running likelihood ratio.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MixtureComponent {
    /// The alternative rate ratio.
    pub theta: f64,
    /// Log prior weight (the weights sum to one).
    pub log_weight: f64,
    /// Σ over looks of the log likelihood ratio of θ against θ0.
    pub log_likelihood_ratio: f64,
}

/// The running test: enough to continue it after a restart, and serializable into status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialTest {
    /// The tolerated rate ratio θ0.
    pub theta0: f64,
    /// The false-abort rate this test holds (already split between metrics).
    pub alpha: f64,
    /// The mixture.
    pub components: Vec<MixtureComponent>,
    /// Looks that entered the test.
    pub looks: u32,
    /// Counts summed over those looks.
    pub totals: LookCounts,
    /// Log of the running e-value.
    pub log_e_value: f64,
    /// The e-value reached 1/α at some look; a Fail stays a Fail.
    pub rejected: bool,
}

/// Steps of the grid on log θ away from θ0: from a 2% to a ~13× change, geometric, so that small
/// and large regressions both find a component near them.
const GRID_LOG_STEPS: [f64; 13] = [
    0.02, 0.03, 0.045, 0.0675, 0.101, 0.152, 0.228, 0.342, 0.513, 0.769, 1.153, 1.730, 2.595,
];

impl SequentialTest {
    /// A fresh test for the bad direction, θ0 and α, with the default grid.
    pub fn new(bad: Bad, theta0: f64, alpha: f64) -> Self {
        let log_weight = -(GRID_LOG_STEPS.len() as f64).ln();
        let components = GRID_LOG_STEPS
            .iter()
            .map(|step| MixtureComponent {
                theta: match bad {
                    Bad::Increase => theta0 * step.exp(),
                    Bad::Decrease => theta0 * (-step).exp(),
                },
                log_weight,
                log_likelihood_ratio: 0.0,
            })
            .collect();
        Self::with_components(theta0, alpha, components)
    }

    /// A test with a mixture of one's own (weights must sum to one).
    pub fn with_components(theta0: f64, alpha: f64, components: Vec<MixtureComponent>) -> Self {
        Self {
            theta0,
            alpha,
            components,
            looks: 0,
            totals: LookCounts::default(),
            log_e_value: 0.0,
            rejected: false,
        }
    }

    /// The e-value at which the test fails.
    pub fn threshold(&self) -> f64 {
        1.0 / self.alpha
    }

    /// The running e-value.
    pub fn e_value(&self) -> f64 {
        self.log_e_value.exp()
    }

    /// Adds one look; returns whether the look carried information (both versions had requests).
    pub fn observe(&mut self, counts: &LookCounts) -> bool {
        let Some(rho) = counts.canary_share() else {
            return false;
        };
        let share = |theta: f64| rho * theta / (rho * theta + 1.0 - rho);
        let null_share = share(self.theta0);
        let (null_in, null_out) = (null_share.ln(), (1.0 - null_share).ln());
        for component in &mut self.components {
            let alternative_share = share(component.theta);
            component.log_likelihood_ratio += counts.canary_events
                * (alternative_share.ln() - null_in)
                + counts.stable_events * ((1.0 - alternative_share).ln() - null_out);
        }
        self.looks += 1;
        self.totals.add(counts);
        self.log_e_value = log_sum_exp(
            self.components
                .iter()
                .map(|c| c.log_weight + c.log_likelihood_ratio),
        );
        if self.log_e_value >= -self.alpha.ln() {
            self.rejected = true;
        }
        true
    }
}

fn log_sum_exp(terms: impl Iterator<Item = f64> + Clone) -> f64 {
    let largest = terms.clone().fold(f64::NEG_INFINITY, f64::max);
    if !largest.is_finite() {
        return largest;
    }
    largest + terms.map(|t| (t - largest).exp()).sum::<f64>().ln()
}

/// The closed form of the two-sided Bayes factor for a constant share ρ, with a
/// Beta(kρ, k(1−ρ)) prior on the canary's share of events, against θ = 1:
/// B(kρ + N_B, k(1−ρ) + N_A) / B(kρ, k(1−ρ)) / (ρ^N_B (1−ρ)^N_A), in logs.
pub fn closed_form_log_bayes_factor(
    rho: f64,
    k: f64,
    canary_events: f64,
    stable_events: f64,
) -> f64 {
    use statrs::function::beta::ln_beta;
    let (a, b) = (k * rho, k * (1.0 - rho));
    ln_beta(a + canary_events, b + stable_events)
        - ln_beta(a, b)
        - canary_events * rho.ln()
        - stable_events * (1.0 - rho).ln()
}

/// α per sequential metric: the run's false-abort budget 1 − confidence split equally (Bonferroni)
/// between its `sequential_metrics` sequential metrics.
pub fn alpha_per_metric(confidence: f64, sequential_metrics: usize) -> f64 {
    (1.0 - confidence) / sequential_metrics.max(1) as f64
}

/// Counter values read at one look, per query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CounterReadings {
    /// Canary events counter.
    pub canary_events: CounterSnapshot,
    /// Stable events counter.
    pub stable_events: CounterSnapshot,
    /// Canary requests counter.
    pub canary_exposure: CounterSnapshot,
    /// Stable requests counter.
    pub stable_exposure: CounterSnapshot,
}

impl CounterReadings {
    /// The counts between `previous` and these readings.
    pub fn since(&self, previous: &CounterReadings) -> LookCounts {
        LookCounts {
            canary_events: counter_increase(&previous.canary_events, &self.canary_events),
            stable_events: counter_increase(&previous.stable_events, &self.stable_events),
            canary_exposure: counter_increase(&previous.canary_exposure, &self.canary_exposure),
            stable_exposure: counter_increase(&previous.stable_exposure, &self.stable_exposure),
        }
    }
}

/// What a sequential metric keeps in AnalysisRun status between looks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialState {
    /// Counter values when the test started.
    pub start: CounterReadings,
    /// Counter values at the last look, from which the next look's counts are taken.
    pub last: CounterReadings,
    /// The running test.
    pub test: SequentialTest,
    /// The canary weight Sluice had set at the last look. The split is checked only over a look
    /// during which the weight stayed the same: a look that spans a setWeight mixes two splits,
    /// and would always seem broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_at_last_look: Option<f64>,
}

/// When the measured canary share of requests departs from the weight Sluice set by more than
/// this (relative) and significantly, the traffic split is broken.
pub const SAMPLE_RATIO_RELATIVE_TOLERANCE: f64 = 0.2;
/// Significance level of the sample-ratio check; small, because it runs at every look.
pub const SAMPLE_RATIO_ALPHA: f64 = 0.001;

/// Whether the look's split of requests is consistent with `expected_share` (the canary weight
/// Sluice set, as a fraction). Returns the two-sided p-value of the binomial z-test when the split
/// is broken.
pub fn sample_ratio_mismatch(counts: &LookCounts, expected_share: f64) -> Option<f64> {
    let total = counts.canary_exposure + counts.stable_exposure;
    if !(expected_share > 0.0 && expected_share < 1.0) || total <= 0.0 {
        return None;
    }
    let observed = counts.canary_exposure / total;
    let z = (counts.canary_exposure - total * expected_share)
        / (total * expected_share * (1.0 - expected_share)).sqrt();
    let p_value = 2.0 * Normal::standard().cdf(-z.abs());
    let relative = (observed / expected_share - 1.0).abs();
    (p_value < SAMPLE_RATIO_ALPHA && relative > SAMPLE_RATIO_RELATIVE_TOLERANCE).then_some(p_value)
}

/// Starts a test from the counter values read now.
pub fn start(plan: &SequentialPlan, readings: CounterReadings, alpha: f64) -> SequentialState {
    SequentialState {
        last: readings.clone(),
        start: readings,
        test: SequentialTest::new(plan.bad, plan.theta0, alpha),
        share_at_last_look: None,
    }
}

/// One look: the counts since the last look enter the test, unless the traffic split is broken
/// (`expected_share` is the canary weight Sluice has set now, if it knows one; the split is
/// checked when it was the same at the last look).
pub fn look(
    state: &SequentialState,
    readings: CounterReadings,
    expected_share: Option<f64>,
) -> (SequentialState, Judgement) {
    let counts = readings.since(&state.last);
    let mut next = SequentialState {
        start: state.start.clone(),
        last: readings,
        test: state.test.clone(),
        share_at_last_look: expected_share,
    };
    let mut evidence = Evidence {
        test: Some("sequentialPoisson".to_owned()),
        observed_share: counts.canary_share().and_then(finite),
        expected_share: expected_share.and_then(finite),
        ..Evidence::default()
    };
    let mismatch = expected_share
        .filter(|share| state.share_at_last_look == Some(*share))
        .and_then(|share| sample_ratio_mismatch(&counts, share));
    let informative = if mismatch.is_none() && !next.test.rejected {
        next.test.observe(&counts)
    } else {
        false
    };
    let test = &next.test;
    let totals = test.totals;
    evidence.canary_samples = Some(totals.canary_exposure.round() as u64);
    evidence.baseline_samples = Some(totals.stable_exposure.round() as u64);
    evidence.canary_events = finite(totals.canary_events);
    evidence.baseline_events = finite(totals.stable_events);
    let canary_rate = totals.canary_events / totals.canary_exposure;
    let stable_rate = totals.stable_events / totals.stable_exposure;
    evidence.canary_mean = finite(canary_rate);
    evidence.baseline_mean = finite(stable_rate);
    evidence.effect_size = finite(canary_rate / stable_rate);
    evidence.e_value = finite(test.e_value());
    evidence.e_value_threshold = finite(test.threshold());
    let judgement = if test.rejected {
        Judgement::new(
            Verdict::Fail,
            format!(
                "canary's event rate is worse than {:.3}× stable's: e-value {:.3} reached {:.1}",
                test.theta0,
                test.e_value(),
                test.threshold()
            ),
            evidence,
        )
    } else if let Some(p_value) = mismatch {
        Judgement::new(
            Verdict::Inconclusive,
            format!(
                "traffic split broken: canary got {:.1}% of requests, {:.1}% expected (p = {p_value:.2e}); look left out",
                counts.canary_share().unwrap_or(0.0) * 100.0,
                expected_share.unwrap_or(0.0) * 100.0
            ),
            evidence,
        )
    } else if !informative {
        Judgement::new(
            Verdict::Inconclusive,
            "no requests on the canary or on stable in this look",
            evidence,
        )
    } else {
        Judgement::new(
            Verdict::Pass,
            format!(
                "no evidence the canary is worse than {:.3}× stable: e-value {:.3} < {:.1}",
                test.theta0,
                test.e_value(),
                test.threshold()
            ),
            evidence,
        )
    };
    (next, judgement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use rand_distr::{Distribution, Poisson};
    use statrs::distribution::{Beta, Continuous};

    fn counts(canary_events: f64, stable_events: f64, canary: f64, stable: f64) -> LookCounts {
        LookCounts {
            canary_events,
            stable_events,
            canary_exposure: canary,
            stable_exposure: stable,
        }
    }

    #[test]
    fn mixture_matches_the_beta_closed_form() {
        // A fine midpoint grid over p = the canary's share of events, weighted by the
        // Beta(kρ, k(1−ρ)) density, with θ chosen so that π(θ) = p, must reproduce the closed form.
        let (rho, k) = (0.3, 10.0);
        let prior = Beta::new(k * rho, k * (1.0 - rho)).unwrap();
        let points = 20_000;
        let components: Vec<MixtureComponent> = (0..points)
            .map(|i| {
                let p = (i as f64 + 0.5) / points as f64;
                MixtureComponent {
                    theta: p * (1.0 - rho) / (rho * (1.0 - p)),
                    log_weight: (prior.pdf(p) / points as f64).ln(),
                    log_likelihood_ratio: 0.0,
                }
            })
            .collect();
        let mut test = SequentialTest::with_components(1.0, 0.05, components);
        // Several looks at a constant share: 30% of requests on the canary.
        let looks = [(4.0, 6.0), (9.0, 11.0), (0.0, 3.0), (12.0, 15.0)];
        let (mut canary_events, mut stable_events) = (0.0, 0.0);
        for (b, a) in looks {
            test.observe(&counts(b, a, 300.0, 700.0));
            canary_events += b;
            stable_events += a;
            let expected = closed_form_log_bayes_factor(rho, k, canary_events, stable_events);
            assert!(
                (test.log_e_value - expected).abs() < 1e-4,
                "mixture {} vs closed form {expected}",
                test.log_e_value
            );
        }
    }

    #[test]
    fn a_canary_no_worse_than_theta0_never_fails() {
        // In every look the canary's share of events is at most π(θ0): each component's
        // likelihood ratio can only shrink, whatever the share of traffic.
        let mut test = SequentialTest::new(Bad::Increase, 1.1, 0.05);
        for look in 0..200 {
            let rho = [0.05, 0.2, 0.5][look % 3];
            let stable = 10_000.0 * (1.0 - rho);
            let canary = 10_000.0 * rho;
            test.observe(&counts(canary * 0.01, stable * 0.012, canary, stable));
            assert!(test.log_e_value <= 0.0);
        }
        assert!(!test.rejected);
    }

    #[test]
    fn decrease_mirrors_increase() {
        let mut increase = SequentialTest::new(Bad::Increase, 1.0, 0.05);
        let mut decrease = SequentialTest::new(Bad::Decrease, 1.0, 0.05);
        for _ in 0..10 {
            // Canary events at half the stable rate: only the `decrease` test should see it.
            increase.observe(&counts(5.0, 20.0, 1000.0, 2000.0));
            decrease.observe(&counts(5.0, 20.0, 1000.0, 2000.0));
        }
        assert!(decrease.rejected && !increase.rejected);
        // The same data with the roles of canary and stable swapped gives the same e-value.
        let mut swapped = SequentialTest::new(Bad::Increase, 1.0, 0.05);
        for _ in 0..10 {
            swapped.observe(&counts(20.0, 5.0, 2000.0, 1000.0));
        }
        assert!((swapped.log_e_value - decrease.log_e_value).abs() < 1e-9);
    }

    /// Simulates A/A or A/B streams: Poisson requests at `requests_per_look`, the canary's share
    /// moving through `shares` (setWeight steps), Poisson events at `rate` (× `ratio` on canary).
    struct Stream {
        rng: StdRng,
        requests_per_look: f64,
        rate: f64,
        ratio: f64,
    }

    impl Stream {
        fn look(&mut self, share: f64) -> LookCounts {
            let mut draw = |mean: f64| {
                if mean <= 0.0 {
                    0.0
                } else {
                    Poisson::new(mean).unwrap().sample(&mut self.rng)
                }
            };
            let canary = draw(self.requests_per_look * share);
            let stable = draw(self.requests_per_look * (1.0 - share));
            counts(
                draw(canary * self.rate * self.ratio),
                draw(stable * self.rate),
                canary,
                stable,
            )
        }
    }

    /// The canary's weight during a 30-look analysis: 5%, then 20%, then 50%.
    fn share_at(look: usize) -> f64 {
        match look {
            0..10 => 0.05,
            10..20 => 0.2,
            _ => 0.5,
        }
    }

    /// The naive procedure: a one-sided two-proportion z-test on the cumulative counts at level α,
    /// repeated at every look as if each were the planned horizon.
    fn naive_rejects(totals: &LookCounts, alpha: f64) -> bool {
        let (n_b, n_a) = (totals.canary_exposure, totals.stable_exposure);
        let pooled = (totals.canary_events + totals.stable_events) / (n_a + n_b);
        let standard_error = (pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)).sqrt();
        if standard_error <= 0.0 || !standard_error.is_finite() {
            return false;
        }
        let z = (totals.canary_events / n_b - totals.stable_events / n_a) / standard_error;
        Normal::standard().sf(z) < alpha
    }

    const LOOKS: usize = 30;

    /// Runs `runs` streams and returns the fraction the sequential test and the naive test abort.
    fn abort_rates(seed: u64, runs: usize, ratio: f64, alpha: f64) -> (f64, f64) {
        let mut stream = Stream {
            rng: StdRng::seed_from_u64(seed),
            // 50 req/s with a look every 60 s.
            requests_per_look: 3000.0,
            rate: 0.01,
            ratio,
        };
        let (mut sequential_aborts, mut naive_aborts) = (0, 0);
        for _ in 0..runs {
            let mut test = SequentialTest::new(Bad::Increase, 1.0, alpha);
            let mut naive_aborted = false;
            for look in 0..LOOKS {
                let counts = stream.look(share_at(look));
                test.observe(&counts);
                naive_aborted |= naive_rejects(&test.totals, alpha);
            }
            sequential_aborts += usize::from(test.rejected);
            naive_aborts += usize::from(naive_aborted);
        }
        (
            sequential_aborts as f64 / runs as f64,
            naive_aborts as f64 / runs as f64,
        )
    }

    #[test]
    fn false_abort_rate_holds_under_continuous_looks_and_the_naive_test_does_not() {
        // A/A: N = 10,000 runs per α, 30 looks each (a look every 60 s at 50 req/s), canary
        // shares 5% → 20% → 50%, error rate 1% on both, fixed seeds. Runs in well under a second
        // even in a debug build, so no reduction was needed.
        for (alpha, seed) in [(0.05, 7), (0.01, 8)] {
            let runs = 10_000;
            let (sequential, naive) = abort_rates(seed, runs, 1.0, alpha);
            println!("A/A N={runs} α={alpha}: sequential {sequential:.4}, naive {naive:.4}");
            assert!(
                sequential <= alpha,
                "sequential false-abort rate {sequential} > {alpha}"
            );
            assert!(
                naive > alpha,
                "naive false-abort rate {naive} should exceed {alpha}"
            );
        }
    }

    #[test]
    fn a_doubled_error_rate_is_caught() {
        let (sequential, _) = abort_rates(11, 200, 2.0, 0.05);
        assert!(sequential > 0.9, "detection rate {sequential}");
    }

    /// A one-sided test of an increase, θ0 = 1, 95% confidence (queries unused here).
    fn increase_plan() -> SequentialPlan {
        SequentialPlan {
            events: crate::spec::CanaryStable {
                canary: "a".into(),
                stable: "b".into(),
            },
            exposure: crate::spec::CanaryStable {
                canary: "c".into(),
                stable: "d".into(),
            },
            bad: Bad::Increase,
            theta0: 1.0,
            confidence: 0.95,
        }
    }

    #[test]
    fn a_restart_continues_the_same_test() {
        let plan = increase_plan();
        let reading = |step: f64| {
            let one = |value: f64| CounterSnapshot::from([("{}".to_owned(), value)]);
            CounterReadings {
                canary_events: one(step * 3.0),
                stable_events: one(step * 4.0),
                canary_exposure: one(1_000.0 + step * 100.0),
                stable_exposure: one(step * 400.0),
            }
        };
        let alpha = alpha_per_metric(plan.confidence, 2);
        assert!((alpha - 0.025).abs() < 1e-15);
        let mut uninterrupted = start(&plan, reading(0.0), alpha);
        let mut restarted = uninterrupted.clone();
        for step in 1..=12 {
            let readings = reading(step as f64);
            let (next, first) = look(&uninterrupted, readings.clone(), Some(0.2));
            uninterrupted = next;
            // Through status: serialize, deserialize, continue.
            let stored = serde_json::to_string(&restarted).unwrap();
            let reloaded: SequentialState = serde_json::from_str(&stored).unwrap();
            let (next, second) = look(&reloaded, readings, Some(0.2));
            restarted = next;
            assert_eq!(first, second);
        }
        assert_eq!(uninterrupted, restarted);
        assert!(
            uninterrupted.test.rejected,
            "3 vs 1 events per 100 requests should fail"
        );
        assert_eq!(uninterrupted.start, reading(0.0));
    }

    #[test]
    fn a_broken_split_is_inconclusive_and_left_out() {
        let one = |value: f64| CounterSnapshot::from([("{}".to_owned(), value)]);
        let readings = |canary: f64, stable: f64| CounterReadings {
            canary_events: one(canary / 100.0),
            stable_events: one(stable / 100.0),
            canary_exposure: one(canary),
            stable_exposure: one(stable),
        };
        let plan = increase_plan();
        let state = start(&plan, readings(0.0, 0.0), 0.05);
        // A look across a setWeight (0% -> 20%) mixes two splits: it is not checked, and enters
        // the test (which takes each look's measured share, whatever the weight).
        let (state, judgement) = look(&state, readings(500.0, 9500.0), Some(0.2));
        assert_eq!(judgement.verdict, Verdict::Pass, "{}", judgement.message);
        assert_eq!(state.test.looks, 1);
        // At a steady 20%, the canary got 50% of 10,000 requests: broken, and left out.
        let (next, judgement) = look(&state, readings(5500.0, 14500.0), Some(0.2));
        assert_eq!(
            judgement.verdict,
            Verdict::Inconclusive,
            "{}",
            judgement.message
        );
        assert_eq!(next.test.looks, 1);
        // 21% of 10,000 at a 20% weight is fine.
        let (next, judgement) = look(&next, readings(7600.0, 22400.0), Some(0.2));
        assert_eq!(judgement.verdict, Verdict::Pass, "{}", judgement.message);
        assert_eq!(next.test.looks, 2);
        // No canary traffic: no data, never a pass.
        let (_, judgement) = look(&next, readings(7600.0, 25400.0), None);
        assert_eq!(judgement.verdict, Verdict::Inconclusive);
    }
}
