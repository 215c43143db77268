//! The metric part of an AnalysisTemplate spec, as users write it (docs/API.md), and its validation into
//! a [`MetricPlan`] that the lifecycle and the judges use.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SpecError;
use crate::threshold::ThresholdJudge;
use crate::units::{HumanDuration, Percent};

/// One metric of an AnalysisTemplate: what to measure, how often, and how to judge it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Unique within the template.
    pub name: String,
    /// Time between measurements (humantime: `30s`, `1m`). Required unless `count` is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<HumanDuration>,
    /// Wait this long after the run starts before the first measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<HumanDuration>,
    /// Number of measurements; omitted in background analysis means until the run is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// More `Fail` measurements than this fail the metric (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// More `Inconclusive` measurements than this make the metric Inconclusive (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<u32>,
    /// More `Error` measurements in a row than this put the metric in Error (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<u32>,
    /// Where the numbers come from.
    pub provider: MetricProvider,
    /// CEL over `result` (the vector of sample values); true means the measurement passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    /// CEL over `result`; true means the measurement failed. Checked before `successCondition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    /// Judge the canary against a baseline query with a two-sample test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<CompareSpec>,
    /// Judge event counts with an anytime-valid sequential test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequential: Option<SequentialSpec>,
}

/// Exactly one provider must be set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    /// PromQL over the Prometheus HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusProviderSpec>,
    /// Direct scrape of a `/metrics` endpoint in the text exposition format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrape: Option<ScrapeProviderSpec>,
}

/// A Prometheus server and the query to run on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusProviderSpec {
    /// Base URL of the server, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// PromQL; for `compare`, the canary's query.
    pub query: String,
    /// Give up on a query after this long (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Credentials sent with every query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// Extra request headers (e.g. a tenant id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
    /// TLS settings for an https address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// At most one of bearer token or basic auth.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretSource>,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
}

/// HTTP basic authentication; the password comes from a Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// Where the password is.
    pub password: SecretSource,
}

/// A value held in a Secret; the controller resolves it, this crate never reads the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource {
    /// The Secret (in the run's namespace) and its key.
    pub secret_key_ref: KeySelector,
}

/// A key of a Secret or ConfigMap in the run's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    /// Object name.
    pub name: String,
    /// Key in its data.
    pub key: String,
}

/// One extra request header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// Header name.
    pub key: String,
    /// Header value.
    pub value: String,
}

/// TLS trust for the provider's server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// PEM CA certificate(s) to trust in addition to none: when set, only these are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<CaSource>,
}

/// Where a PEM CA bundle is: exactly one of a Secret key or a ConfigMap key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaSource {
    /// A Secret key holding the PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// A ConfigMap key holding the PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
}

/// Scrape a `/metrics` endpoint directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScrapeProviderSpec {
    /// Full URL of the exposition, e.g. `http://10.0.0.7:8080/metrics`.
    pub url: String,
    /// Series selector: `name` or `name{label="v",other!="x",code=~"5.."}`.
    pub metric: String,
    /// Give up on a scrape after this long (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
}

/// Canary against baseline with a two-sample test on per-interval samples (Kayenta's way).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompareSpec {
    /// PromQL for the baseline (usually stable); the provider's `query` is the canary's.
    pub baseline_query: String,
    /// Which test (default mannWhitney).
    #[serde(default)]
    pub test: CompareTest,
    /// Which direction is bad (default increase).
    #[serde(default)]
    pub bad: Direction,
    /// How much worse than the baseline is still fine, relative to the baseline's level
    /// (default 0%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Percent>,
    /// Confidence level of the interval for the shift (default 0.98, as Kayenta).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Resolution of the per-interval samples (default: the metric's interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<HumanDuration>,
    /// Fewer samples than this on either side is Inconclusive (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
}

/// Two-sample test of [`CompareSpec`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CompareTest {
    /// Mann–Whitney U (Wilcoxon rank sum), with a Hodges–Lehmann interval for the shift.
    #[default]
    MannWhitney,
    /// Welch's unequal-variance t-test, with an interval for the difference of means.
    Welch,
}

/// Which change of the canary relative to the baseline is bad.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Higher is worse (errors, latency).
    #[default]
    Increase,
    /// Lower is worse (throughput, success rate).
    Decrease,
    /// Any significant change is bad.
    Either,
}

/// Which change of a rate is bad for the sequential test (one-sided by construction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Bad {
    /// A higher event rate on the canary is bad.
    #[default]
    Increase,
    /// A lower event rate on the canary is bad.
    Decrease,
}

/// A pair of queries, one per version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStable {
    /// Query for the canary.
    pub canary: String,
    /// Query for stable.
    pub stable: String,
}

/// Anytime-valid test on counts: events per exposure, canary against stable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SequentialSpec {
    /// Raw counter sums of the events (errors, slow requests), e.g. `sum by (pod)(errors_total{..})`.
    pub events: CanaryStable,
    /// Raw counter sums of the exposure (requests).
    pub exposure: CanaryStable,
    /// Which direction is bad (default increase).
    #[serde(default)]
    pub bad: Bad,
    /// Rate ratio that is still fine (`10%` → 1.1 for increase, 0.9 for decrease; default 0%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Percent>,
    /// 1 − false-abort rate, at every look (default 0.95); split between the run's sequential
    /// metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// Which judge a metric uses, resolved from the spec.
#[derive(Clone, Debug)]
pub enum JudgePlan {
    /// CEL conditions over the query result.
    Threshold(ThresholdJudge),
    /// Two-sample comparison with a baseline query.
    Compare(ComparePlan),
    /// Sequential test on counts.
    Sequential(SequentialPlan),
}

/// A validated [`CompareSpec`].
#[derive(Clone, Debug, PartialEq)]
pub struct ComparePlan {
    /// PromQL for the baseline.
    pub baseline_query: String,
    /// The test.
    pub test: CompareTest,
    /// The bad direction.
    pub bad: Direction,
    /// Tolerance as a fraction of the baseline's level.
    pub tolerance: f64,
    /// Confidence level in (0, 1).
    pub confidence: f64,
    /// Resolution of range queries.
    pub step: Duration,
    /// Minimum samples per side.
    pub min_samples: usize,
}

/// A validated [`SequentialSpec`].
#[derive(Clone, Debug, PartialEq)]
pub struct SequentialPlan {
    /// Event counter queries.
    pub events: CanaryStable,
    /// Exposure counter queries.
    pub exposure: CanaryStable,
    /// The bad direction.
    pub bad: Bad,
    /// The tolerated rate ratio θ0 (1.1 for `increase` with 10%).
    pub theta0: f64,
    /// Confidence level in (0, 1) before splitting between metrics.
    pub confidence: f64,
}

/// The lifecycle numbers of a metric, with defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricLimits {
    /// Time between measurements.
    pub interval: Duration,
    /// Delay before the first measurement.
    pub initial_delay: Duration,
    /// Number of measurements, `None` = until stopped.
    pub count: Option<u32>,
    /// Tolerated `Fail` measurements.
    pub failure_limit: u32,
    /// Tolerated `Inconclusive` measurements.
    pub inconclusive_limit: u32,
    /// Tolerated consecutive `Error` measurements.
    pub consecutive_error_limit: u32,
}

/// A metric checked and ready to run: durations parsed, CEL compiled, defaults applied.
#[derive(Clone, Debug)]
pub struct MetricPlan {
    /// The metric's name.
    pub name: String,
    /// Lifecycle numbers.
    pub limits: MetricLimits,
    /// The provider (exactly one set).
    pub provider: ProviderPlan,
    /// The judge.
    pub judge: JudgePlan,
}

/// The provider of a [`MetricPlan`].
#[derive(Clone, Debug, PartialEq)]
pub enum ProviderPlan {
    /// Prometheus HTTP API.
    Prometheus {
        /// The spec as written.
        spec: PrometheusProviderSpec,
        /// Parsed timeout.
        timeout: Duration,
    },
    /// Direct scrape.
    Scrape {
        /// The spec as written.
        spec: ScrapeProviderSpec,
        /// Parsed timeout.
        timeout: Duration,
        /// Parsed selector.
        selector: crate::scrape::SeriesSelector,
    },
}

/// Default query timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default consecutive error limit, as Argo Rollouts.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: u32 = 4;
/// Default confidence of `compare`, as Kayenta.
pub const DEFAULT_COMPARE_CONFIDENCE: f64 = 0.98;
/// Default confidence of `sequential`.
pub const DEFAULT_SEQUENTIAL_CONFIDENCE: f64 = 0.95;
/// Default minimum samples per side of `compare`.
pub const DEFAULT_MIN_SAMPLES: u32 = 5;

impl MetricSpec {
    /// Checks the spec and resolves it into a plan; errors name the offending field.
    pub fn plan(&self) -> Result<MetricPlan, SpecError> {
        let path = format!("metrics[{}]", self.name);
        let field = |name: &str| format!("{path}.{name}");
        let invalid = |name: &str, reason: &str| SpecError::Invalid {
            field: field(name),
            reason: reason.to_owned(),
        };
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        let interval = match &self.interval {
            Some(interval) => interval.parse(&field("interval"))?,
            None if self.count == Some(1) => Duration::ZERO,
            None => {
                return Err(invalid(
                    "interval",
                    "required unless count is 1 (a metric measured more than once needs a pace)",
                ));
            }
        };
        if self.count != Some(1) && interval.is_zero() {
            return Err(invalid("interval", "must be longer than zero"));
        }
        if self.count == Some(0) {
            return Err(invalid(
                "count",
                "must be at least 1; omit it to measure until stopped",
            ));
        }
        let initial_delay = match &self.initial_delay {
            Some(delay) => delay.parse(&field("initialDelay"))?,
            None => Duration::ZERO,
        };
        let limits = MetricLimits {
            interval,
            initial_delay,
            count: self.count,
            failure_limit: self.failure_limit.unwrap_or(0),
            inconclusive_limit: self.inconclusive_limit.unwrap_or(0),
            consecutive_error_limit: self
                .consecutive_error_limit
                .unwrap_or(DEFAULT_CONSECUTIVE_ERROR_LIMIT),
        };
        let provider = self.provider.plan(&format!("{path}.provider"))?;
        let judge = match (&self.compare, &self.sequential) {
            (Some(_), Some(_)) => {
                return Err(invalid("compare", "compare and sequential are exclusive"));
            }
            (Some(compare), None) => {
                self.reject_conditions(&path, "compare")?;
                require_prometheus(&provider, &field("compare"))?;
                JudgePlan::Compare(compare.plan(&field("compare"), interval)?)
            }
            (None, Some(sequential)) => {
                self.reject_conditions(&path, "sequential")?;
                require_prometheus(&provider, &field("sequential"))?;
                JudgePlan::Sequential(sequential.plan(&field("sequential"))?)
            }
            (None, None) => JudgePlan::Threshold(ThresholdJudge::new(
                self.success_condition.as_deref(),
                self.failure_condition.as_deref(),
                &path,
            )?),
        };
        Ok(MetricPlan {
            name: self.name.clone(),
            limits,
            provider,
            judge,
        })
    }

    fn reject_conditions(&self, path: &str, judge: &str) -> Result<(), SpecError> {
        let reason = format!("conditions do not apply to a {judge} metric");
        if self.success_condition.is_some() {
            return Err(SpecError::Invalid {
                field: format!("{path}.successCondition"),
                reason,
            });
        }
        if self.failure_condition.is_some() {
            return Err(SpecError::Invalid {
                field: format!("{path}.failureCondition"),
                reason,
            });
        }
        Ok(())
    }
}

fn require_prometheus(provider: &ProviderPlan, field: &str) -> Result<(), SpecError> {
    match provider {
        ProviderPlan::Prometheus { .. } => Ok(()),
        ProviderPlan::Scrape { .. } => Err(SpecError::Invalid {
            field: field.to_owned(),
            reason: "needs provider.prometheus (it runs several queries)".to_owned(),
        }),
    }
}

fn confidence_in_range(value: Option<f64>, default: f64, field: &str) -> Result<f64, SpecError> {
    let confidence = value.unwrap_or(default);
    if confidence > 0.0 && confidence < 1.0 {
        Ok(confidence)
    } else {
        Err(SpecError::Invalid {
            field: field.to_owned(),
            reason: format!("must be strictly between 0 and 1, got {confidence}"),
        })
    }
}

impl MetricProvider {
    fn plan(&self, path: &str) -> Result<ProviderPlan, SpecError> {
        match (&self.prometheus, &self.scrape) {
            (Some(prometheus), None) => {
                if prometheus.address.trim().is_empty() {
                    return Err(SpecError::Invalid {
                        field: format!("{path}.prometheus.address"),
                        reason: "must not be empty".to_owned(),
                    });
                }
                if prometheus.query.trim().is_empty() {
                    return Err(SpecError::Invalid {
                        field: format!("{path}.prometheus.query"),
                        reason: "must not be empty".to_owned(),
                    });
                }
                if let Some(authentication) = &prometheus.authentication
                    && authentication.bearer_token.is_some()
                    && authentication.basic.is_some()
                {
                    return Err(SpecError::Invalid {
                        field: format!("{path}.prometheus.authentication"),
                        reason: "set bearerToken or basic, not both".to_owned(),
                    });
                }
                if let Some(TlsSpec {
                    ca_cert: Some(ca_cert),
                }) = &prometheus.tls
                    && ca_cert.secret_key_ref.is_some() == ca_cert.config_map_key_ref.is_some()
                {
                    return Err(SpecError::Invalid {
                        field: format!("{path}.prometheus.tls.caCert"),
                        reason: "set exactly one of secretKeyRef and configMapKeyRef".to_owned(),
                    });
                }
                let timeout =
                    optional_duration(&prometheus.timeout, &format!("{path}.prometheus.timeout"))?;
                Ok(ProviderPlan::Prometheus {
                    spec: prometheus.clone(),
                    timeout,
                })
            }
            (None, Some(scrape)) => {
                let selector =
                    crate::scrape::SeriesSelector::parse(&scrape.metric).map_err(|reason| {
                        SpecError::Invalid {
                            field: format!("{path}.scrape.metric"),
                            reason,
                        }
                    })?;
                let timeout =
                    optional_duration(&scrape.timeout, &format!("{path}.scrape.timeout"))?;
                Ok(ProviderPlan::Scrape {
                    spec: scrape.clone(),
                    timeout,
                    selector,
                })
            }
            _ => Err(SpecError::Invalid {
                field: path.to_owned(),
                reason: "set exactly one of prometheus and scrape".to_owned(),
            }),
        }
    }
}

fn optional_duration(value: &Option<HumanDuration>, field: &str) -> Result<Duration, SpecError> {
    match value {
        Some(value) => {
            let duration = value.parse(field)?;
            if duration.is_zero() {
                return Err(SpecError::Invalid {
                    field: field.to_owned(),
                    reason: "must be longer than zero".to_owned(),
                });
            }
            Ok(duration)
        }
        None => Ok(DEFAULT_TIMEOUT),
    }
}

impl CompareSpec {
    fn plan(&self, path: &str, interval: Duration) -> Result<ComparePlan, SpecError> {
        let tolerance = match &self.tolerance {
            Some(tolerance) => tolerance.fraction(&format!("{path}.tolerance"))?,
            None => 0.0,
        };
        let step = match &self.step {
            Some(step) => step.parse(&format!("{path}.step"))?,
            None => interval,
        };
        if step.is_zero() {
            return Err(SpecError::Invalid {
                field: format!("{path}.step"),
                reason: "must be longer than zero (set step when count is 1)".to_owned(),
            });
        }
        let min_samples = self.min_samples.unwrap_or(DEFAULT_MIN_SAMPLES);
        if min_samples < 2 {
            return Err(SpecError::Invalid {
                field: format!("{path}.minSamples"),
                reason: "must be at least 2".to_owned(),
            });
        }
        Ok(ComparePlan {
            baseline_query: self.baseline_query.clone(),
            test: self.test,
            bad: self.bad,
            tolerance,
            confidence: confidence_in_range(
                self.confidence,
                DEFAULT_COMPARE_CONFIDENCE,
                &format!("{path}.confidence"),
            )?,
            step,
            min_samples: min_samples as usize,
        })
    }
}

impl SequentialSpec {
    fn plan(&self, path: &str) -> Result<SequentialPlan, SpecError> {
        let tolerance = match &self.tolerance {
            Some(tolerance) => tolerance.fraction(&format!("{path}.tolerance"))?,
            None => 0.0,
        };
        let theta0 = match self.bad {
            Bad::Increase => 1.0 + tolerance,
            Bad::Decrease => {
                if tolerance >= 1.0 {
                    return Err(SpecError::Invalid {
                        field: format!("{path}.tolerance"),
                        reason: "must be below 100% when bad is decrease".to_owned(),
                    });
                }
                1.0 - tolerance
            }
        };
        Ok(SequentialPlan {
            events: self.events.clone(),
            exposure: self.exposure.clone(),
            bad: self.bad,
            theta0,
            confidence: confidence_in_range(
                self.confidence,
                DEFAULT_SEQUENTIAL_CONFIDENCE,
                &format!("{path}.confidence"),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_yaml_like_json(json: serde_json::Value) -> MetricSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_api_md_examples_deserialize_and_plan() {
        let error_rate = from_yaml_like_json(serde_json::json!({
            "name": "error-rate",
            "interval": "30s",
            "initialDelay": "0s",
            "count": 10,
            "failureLimit": 0,
            "inconclusiveLimit": 0,
            "consecutiveErrorLimit": 4,
            "provider": {"prometheus": {
                "address": "http://prometheus.monitoring:9090",
                "query": "sum(rate(x[1m]))",
                "timeout": "10s",
                "authentication": {"bearerToken": {"secretKeyRef": {"name": "prom", "key": "token"}}}
            }},
            "successCondition": "result[0] < 0.01",
            "failureCondition": "result[0] >= 0.05"
        }));
        let plan = error_rate.plan().unwrap();
        assert_eq!(plan.limits.interval, Duration::from_secs(30));
        assert_eq!(plan.limits.count, Some(10));
        assert!(matches!(plan.judge, JudgePlan::Threshold(_)));

        let sequential = from_yaml_like_json(serde_json::json!({
            "name": "errors-vs-stable",
            "interval": "1m",
            "provider": {"prometheus": {"address": "http://p:9090", "query": "sum(x)"}},
            "sequential": {
                "events": {"canary": "a", "stable": "b"},
                "exposure": {"canary": "c", "stable": "d"},
                "bad": "increase", "tolerance": "10%", "confidence": 0.95
            }
        }));
        match sequential.plan().unwrap().judge {
            JudgePlan::Sequential(plan) => {
                assert!((plan.theta0 - 1.1).abs() < 1e-12);
                assert_eq!(plan.confidence, 0.95);
            }
            other => panic!("{other:?}"),
        }

        let compare = from_yaml_like_json(serde_json::json!({
            "name": "latency-vs-stable", "interval": "1m", "count": 15,
            "provider": {"prometheus": {"address": "http://p:9090", "query": "q"}},
            "compare": {"baselineQuery": "b", "test": "mannWhitney", "bad": "increase",
                        "tolerance": "10%", "confidence": 0.98}
        }));
        match compare.plan().unwrap().judge {
            JudgePlan::Compare(plan) => {
                assert_eq!(plan.step, Duration::from_secs(60));
                assert!((plan.tolerance - 0.1).abs() < 1e-12);
            }
            other => panic!("{other:?}"),
        }
        let round_trip: MetricSpec =
            serde_json::from_str(&serde_json::to_string(&compare).unwrap()).unwrap();
        assert_eq!(round_trip, compare);
    }

    #[test]
    fn errors_name_the_field() {
        let mut spec = from_yaml_like_json(serde_json::json!({
            "name": "m", "interval": "every minute",
            "provider": {"prometheus": {"address": "http://p", "query": "q"}}
        }));
        let message = spec.plan().unwrap_err().to_string();
        assert!(message.contains("metrics[m].interval"), "{message}");

        spec.interval = Some(HumanDuration::new("1m"));
        spec.provider.prometheus.as_mut().unwrap().timeout = Some(HumanDuration::new("ten"));
        let message = spec.plan().unwrap_err().to_string();
        assert!(
            message.contains("metrics[m].provider.prometheus.timeout"),
            "{message}"
        );

        spec.provider.prometheus.as_mut().unwrap().timeout = None;
        spec.success_condition = Some("result[0] <".to_owned());
        let message = spec.plan().unwrap_err().to_string();
        assert!(message.contains("metrics[m].successCondition"), "{message}");

        spec.success_condition = None;
        spec.interval = None;
        let message = spec.plan().unwrap_err().to_string();
        assert!(message.contains("metrics[m].interval"), "{message}");

        spec.interval = Some(HumanDuration::new("1m"));
        spec.provider.scrape = Some(ScrapeProviderSpec {
            url: "http://127.0.0.1/metrics".into(),
            metric: "up".into(),
            timeout: None,
            headers: vec![],
        });
        let message = spec.plan().unwrap_err().to_string();
        assert!(message.contains("metrics[m].provider"), "{message}");
    }

    #[test]
    fn the_schema_uses_camel_case_fields() {
        let schema = serde_json::to_value(schemars::schema_for!(MetricSpec)).unwrap();
        let text = schema.to_string();
        for field in [
            "initialDelay",
            "failureLimit",
            "inconclusiveLimit",
            "consecutiveErrorLimit",
            "successCondition",
            "failureCondition",
            "baselineQuery",
            "secretKeyRef",
        ] {
            assert!(text.contains(field), "{field} missing from the schema");
        }
    }
}
