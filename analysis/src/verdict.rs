//! Verdicts, their evidence, and measurements as they are kept in AnalysisRun status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Timestamp;

/// The outcome of one measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    /// The data say the canary is fine.
    Pass,
    /// The data say the canary is worse.
    Fail,
    /// Not enough data to say (empty result, NaN, too few samples, a broken traffic split).
    Inconclusive,
    /// The measurement itself failed (provider unreachable, timeout, malformed answer, ...).
    Error,
}

impl Verdict {
    /// The name it has on the wire (in status and in metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::Inconclusive => "Inconclusive",
            Verdict::Error => "Error",
        }
    }
}

/// Why a verdict was reached. Every field is optional: each judge fills what it has. Numbers are
/// finite (JSON has no NaN); values that were not are left out and shown in `values`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The measured values as text (`[0.012, NaN]`), so NaN and Inf stay visible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
    /// Which statistic was computed (`cel`, `mannWhitney`, `welch`, `sequentialPoisson`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// Canary sample size (samples, or requests for counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_samples: Option<u64>,
    /// Baseline sample size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_samples: Option<u64>,
    /// Canary mean (or event rate; a threshold's mean result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_mean: Option<f64>,
    /// Baseline mean (or event rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_mean: Option<f64>,
    /// The test statistic (U, t).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// Degrees of freedom, for t.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrees_of_freedom: Option<f64>,
    /// p-value of a fixed-horizon test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// e-value of a sequential test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
    /// The e-value at which the test fails (1/α).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value_threshold: Option<f64>,
    /// Effect size: canary mean / baseline mean, or the estimated rate ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_size: Option<f64>,
    /// Point estimate of the shift (canary − baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    /// Lower end of the confidence interval for the shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_low: Option<f64>,
    /// Upper end of the confidence interval for the shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_high: Option<f64>,
    /// Events counted on the canary (sequential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_events: Option<f64>,
    /// Events counted on stable (sequential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_events: Option<f64>,
    /// The canary's measured share of requests in the last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_share: Option<f64>,
    /// The canary's share of traffic Sluice set for the last look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_share: Option<f64>,
}

/// Keeps a number only if JSON can carry it.
pub(crate) fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

/// Formats values the way users read them, NaN and Inf included.
pub(crate) fn format_values(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|value| format!("{value}")).collect();
    format!("[{}]", parts.join(", "))
}

/// A verdict with its reason and evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Judgement {
    /// The outcome.
    pub verdict: Verdict,
    /// One line a person can read.
    pub message: String,
    /// The numbers behind it.
    #[serde(default)]
    pub evidence: Evidence,
}

impl Judgement {
    /// A judgement with evidence.
    pub fn new(verdict: Verdict, message: impl Into<String>, evidence: Evidence) -> Self {
        Self {
            verdict,
            message: message.into(),
            evidence,
        }
    }

    /// An `Error` from a failed measurement.
    pub fn error(message: impl Into<String>) -> Self {
        Self::new(Verdict::Error, message, Evidence::default())
    }
}

/// One measurement of a metric, as kept in the AnalysisRun's bounded history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// When the measurement started.
    pub started_at: Timestamp,
    /// When it finished; the next one is due an interval after this.
    pub finished_at: Timestamp,
    /// Its outcome, reason and evidence.
    #[serde(flatten)]
    pub judgement: Judgement,
}

impl Measurement {
    /// The measurement's verdict.
    pub fn verdict(&self) -> Verdict {
        self.judgement.verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdicts_name_is_its_wire_name() {
        for verdict in [
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Inconclusive,
            Verdict::Error,
        ] {
            assert_eq!(
                serde_json::to_value(verdict).unwrap(),
                serde_json::Value::String(verdict.as_str().into())
            );
        }
    }
}
