//! One measurement of a metric: run its provider's queries and its judge. The caller owns the
//! clock and the status: it passes `now` and what the previous measurement carried, and keeps
//! what this one carries.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ProviderError;
use crate::http::Credentials;
use crate::prometheus::{PrometheusClient, PrometheusConfig};
use crate::scrape::{ScrapeClient, ScrapeSample, SeriesKind};
use crate::sequential::{self, CounterReadings, SequentialState};
use crate::spec::{JudgePlan, MetricPlan, ProviderPlan};
use crate::units::Timestamp;
use crate::verdict::Judgement;

/// What a metric keeps between measurements, in AnalysisRun status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Carry {
    /// A sequential test's counters and running e-value.
    Sequential(Box<SequentialState>),
    /// The last scrape of a counter, from which the next rate is taken.
    Scrape(ScrapeSample),
}

/// Inputs of one measurement that are not in the spec.
#[derive(Clone, Debug)]
pub struct MeasureContext {
    /// The caller's clock at the start of the measurement; queries are evaluated at this time.
    pub now: Timestamp,
    /// When the run started; `compare` judges the samples since then (after `initialDelay`).
    pub run_started_at: Timestamp,
    /// Resolved credentials for the Prometheus provider.
    pub credentials: Credentials,
    /// Resolved PEM CA bundle for the Prometheus provider.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// What the previous measurement (or baseline) carried.
    pub carry: Option<Carry>,
    /// Sequential metrics in this run, between which α is split.
    pub sequential_metrics: usize,
    /// The canary weight Sluice set for the period since the last look, as a fraction.
    pub expected_canary_share: Option<f64>,
}

/// What a measurement produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The verdict; `None` when counters were read for the first time (a baseline): record no
    /// measurement, keep the carry, and measure again an interval later.
    pub judgement: Option<Judgement>,
    /// State for the next measurement, if the judge keeps any.
    pub carry: Option<Carry>,
}

impl Outcome {
    fn judged(judgement: Judgement, carry: Option<Carry>) -> Self {
        Self {
            judgement: Some(judgement),
            carry,
        }
    }

    fn baseline(carry: Carry) -> Self {
        Self {
            judgement: None,
            carry: Some(carry),
        }
    }
}

/// A provider failure is an `Error` verdict; the previous carry is kept so that a sequential
/// test or a rate continues after it.
fn error(error: &ProviderError, carry: Option<Carry>) -> Outcome {
    Outcome::judged(Judgement::error(error.to_string()), carry)
}

/// Runs one measurement of `plan`. Provider failures become `Error` verdicts; a previous carry is
/// kept across an error so a sequential test or a rate continues afterwards.
pub async fn measure(plan: &MetricPlan, context: MeasureContext) -> Outcome {
    let now = context.now;
    match &plan.provider {
        ProviderPlan::Scrape {
            spec,
            timeout,
            selector,
        } => {
            let headers: Vec<(String, String)> = spec
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
            let sample = match ScrapeClient::new(&spec.url, *timeout, &headers) {
                Ok(client) => client.sample(selector, now).await,
                Err(error) => Err(error),
            };
            let sample = match sample {
                Ok(sample) => sample,
                Err(failure) => return error(&failure, context.carry),
            };
            let previous = match &context.carry {
                Some(Carry::Scrape(previous)) => Some(previous),
                _ => None,
            };
            if sample.kind == SeriesKind::Counter && previous.is_none() {
                return Outcome::baseline(Carry::Scrape(sample));
            }
            let values = sample.result(previous);
            let judgement = match &plan.judge {
                JudgePlan::Threshold(judge) => judge.judge(&values),
                // `plan()` allows only threshold judges with the scrape provider.
                _ => Judgement::error("compare and sequential need the prometheus provider"),
            };
            let carry = (sample.kind == SeriesKind::Counter).then_some(Carry::Scrape(sample));
            Outcome::judged(judgement, carry)
        }
        ProviderPlan::Prometheus { spec, timeout } => {
            let config = PrometheusConfig::from_spec(
                spec,
                *timeout,
                context.credentials.clone(),
                context.ca_cert_pem.clone(),
            );
            let client = match PrometheusClient::new(&config) {
                Ok(client) => client,
                Err(failure) => return error(&failure, context.carry),
            };
            match &plan.judge {
                JudgePlan::Threshold(judge) => match client.instant(&spec.query, Some(now)).await {
                    Ok(samples) => {
                        let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
                        Outcome::judged(judge.judge(&values), None)
                    }
                    Err(failure) => error(&failure, None),
                },
                JudgePlan::Compare(compare) => {
                    let start = context.run_started_at.plus(plan.limits.initial_delay);
                    let canary = client.range(&spec.query, start, now, compare.step).await;
                    let baseline = client
                        .range(&compare.baseline_query, start, now, compare.step)
                        .await;
                    match (canary, baseline) {
                        (Ok(canary), Ok(baseline)) => Outcome::judged(
                            crate::compare::judge(compare, &pooled(&canary), &pooled(&baseline)),
                            None,
                        ),
                        (Err(failure), _) | (_, Err(failure)) => error(&failure, None),
                    }
                }
                JudgePlan::Sequential(sequential_plan) => {
                    let readings = match read_counters(&client, sequential_plan, now).await {
                        Ok(readings) => readings,
                        Err(failure) => return error(&failure, context.carry),
                    };
                    match context.carry {
                        Some(Carry::Sequential(state)) => {
                            let (state, judgement) =
                                sequential::look(&state, readings, context.expected_canary_share);
                            Outcome::judged(judgement, Some(Carry::Sequential(Box::new(state))))
                        }
                        _ => {
                            let alpha = sequential::alpha_per_metric(
                                sequential_plan.confidence,
                                context.sequential_metrics,
                            );
                            Outcome::baseline(Carry::Sequential(Box::new(sequential::start(
                                sequential_plan,
                                readings,
                                alpha,
                            ))))
                        }
                    }
                }
            }
        }
    }
}

/// All points of all series, as per-interval samples.
fn pooled(series: &[crate::prometheus::RangeSeries]) -> Vec<f64> {
    series
        .iter()
        .flat_map(|s| s.points.iter().map(|(_, value)| *value))
        .collect()
}

async fn read_counters(
    client: &PrometheusClient,
    plan: &crate::spec::SequentialPlan,
    now: Timestamp,
) -> Result<CounterReadings, ProviderError> {
    let now = Some(now);
    // All four at the same evaluation time, so the look's counts line up.
    Ok(CounterReadings {
        canary_events: client.counters(&plan.events.canary, now).await?,
        stable_events: client.counters(&plan.events.stable, now).await?,
        canary_exposure: client.counters(&plan.exposure.canary, now).await?,
        stable_exposure: client.counters(&plan.exposure.stable, now).await?,
    })
}
