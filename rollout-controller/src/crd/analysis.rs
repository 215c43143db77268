//! `AnalysisTemplate`, `ClusterAnalysisTemplate` and `AnalysisRun`, and the `analysis` blocks a
//! Rollout uses to refer to templates. The metric specs themselves are the `analysis` crate's.

use std::fmt;
use std::str::FromStr;

use analysis::lifecycle::Phase as AnalysisPhase;
use analysis::measure::Carry;
use analysis::spec::KeySelector;
use analysis::{Measurement, MetricSpec, Tally, Timestamp};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::recorded::Recorded;

/// Label on AnalysisRuns: the Rollout they belong to.
pub const ROLLOUT_LABEL: &str = "sluice.dev/rollout";
/// Label on AnalysisRuns: what they gate ([`RunKind`]).
pub(crate) const ANALYSIS_KIND_LABEL: &str = "sluice.dev/analysis";
/// Measurements kept per metric in AnalysisRun status; the tally counts them all.
pub(crate) const MEASUREMENT_HISTORY: usize = 10;

/// What an AnalysisRun gates. Written as the run's [`ANALYSIS_KIND_LABEL`] and as the `kind` a
/// Rollout's status lists the run under: `step-2`, `background`, `pre-promotion`,
/// `post-promotion`, `ab-test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Step(usize),
    Background,
    PrePromotion,
    PostPromotion,
    AbTest,
}

impl RunKind {
    /// The part of the run's name after the hash.
    pub(crate) fn name_part(self) -> String {
        match self {
            RunKind::Step(index) => index.to_string(),
            RunKind::Background => "bg".into(),
            RunKind::PrePromotion => "pre".into(),
            RunKind::PostPromotion => "post".into(),
            RunKind::AbTest => "ab".into(),
        }
    }
}

/// The label and status value.
impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunKind::Step(index) => write!(f, "step-{index}"),
            RunKind::Background => f.write_str("background"),
            RunKind::PrePromotion => f.write_str("pre-promotion"),
            RunKind::PostPromotion => f.write_str("post-promotion"),
            RunKind::AbTest => f.write_str("ab-test"),
        }
    }
}

impl FromStr for RunKind {
    type Err = String;

    fn from_str(written: &str) -> Result<Self, Self::Err> {
        Ok(match written {
            "background" => RunKind::Background,
            "pre-promotion" => RunKind::PrePromotion,
            "post-promotion" => RunKind::PostPromotion,
            "ab-test" => RunKind::AbTest,
            _ => written
                .strip_prefix("step-")
                .and_then(|index| index.parse().ok())
                .map(RunKind::Step)
                .ok_or_else(|| format!("unknown analysis kind {written:?}"))?,
        })
    }
}

impl Serialize for RunKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RunKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = String::deserialize(deserializer)?;
        written.parse().map_err(serde::de::Error::custom)
    }
}

/// Compares with the value as written, as people and the end-to-end tests read it.
impl PartialEq<&str> for Recorded<RunKind> {
    fn eq(&self, other: &&str) -> bool {
        self.is_written_as(other)
    }
}

/// Compares with the value as written, as people and the end-to-end tests read it.
impl PartialEq<&str> for Recorded<AnalysisPhase> {
    fn eq(&self, other: &&str) -> bool {
        self.is_written_as(other)
    }
}

/// Metrics, their arguments and which of them only inform.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "AnalysisTemplate",
    namespaced,
    shortname = "at",
    category = "sluice"
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateSpec {
    /// Arguments the metrics refer to as `{{args.name}}`; a value here is a default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Metrics that are measured and shown but never decide the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRunMetric>,
    #[schemars(length(min = 1))]
    pub metrics: Vec<MetricSpec>,
}

/// An AnalysisTemplate every namespace can use.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "ClusterAnalysisTemplate",
    shortname = "cat",
    category = "sluice"
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAnalysisTemplateSpec {
    #[serde(flatten)]
    pub template: AnalysisTemplateSpec,
}

/// An argument: a name and, at most, one source of its value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!(has(self.value) && has(self.valueFrom))"
).message("an argument has a value or a valueFrom, not both"))]
pub struct Argument {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<ArgumentValueFrom>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.podTemplateHashValue) ? 1 : 0) + (has(self.secretKeyRef) ? 1 : 0) == 1"
).message("valueFrom sets exactly one of podTemplateHashValue or secretKeyRef"))]
pub struct ArgumentValueFrom {
    /// The pod-template hash of the stable or the latest (new) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_hash_value: Option<HashValue>,
    /// A key of a Secret in the rollout's namespace, read when the metric is measured and never
    /// copied into the AnalysisRun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum HashValue {
    Stable,
    #[default]
    Latest,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DryRunMetric {
    pub metric_name: String,
}

/// Templates and arguments for one analysis of a Rollout.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAnalysis {
    #[schemars(length(min = 1))]
    pub templates: Vec<AnalysisTemplateRef>,
    /// Values for the templates' arguments; they override the templates' defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    /// Background analysis of a canary starts at this step (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub starting_step: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisTemplateRef {
    #[schemars(length(min = 1))]
    pub template_name: String,
    /// A ClusterAnalysisTemplate instead of an AnalysisTemplate in the rollout's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_scope: Option<bool>,
}

// Every printcolumn names its own `type_`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
/// One analysis of one revision: the templates' metrics with the arguments resolved, measured
/// until the run ends. Created by the controller, owned by the Rollout.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "AnalysisRun",
    namespaced,
    status = "AnalysisRunStatus",
    shortname = "ar",
    category = "sluice",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    #[schemars(length(min = 1))]
    pub metrics: Vec<MetricSpec>,
    /// Resolved arguments: values, or Secret references read at measurement time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<DryRunMetric>,
    /// Stop measuring: the run ends with what it has (the step or the rollout moved on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminate: Option<bool>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunStatus {
    pub phase: AnalysisPhase,
    /// Which metric decided, and why.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the phase became final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metric_results: Vec<MetricResult>,
}

impl Default for AnalysisRunStatus {
    fn default() -> Self {
        Self {
            phase: AnalysisPhase::Pending,
            message: String::new(),
            started_at: None,
            completed_at: None,
            metric_results: Vec::new(),
        }
    }
}

/// One metric's progress: its phase, counts by verdict, the latest measurements with their
/// evidence, and what its judge carries between looks (a sequential test's state), so that a
/// restarted controller continues the same test.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricResult {
    pub name: String,
    pub phase: AnalysisPhase,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub tally: Tally,
    /// When the last look finished, including one that only read a baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_look_at: Option<Timestamp>,
    /// The newest measurements, oldest first, at most `MEASUREMENT_HISTORY`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<Measurement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carry: Option<Carry>,
}

impl MetricResult {
    pub(crate) fn new(name: &str, dry_run: bool) -> Self {
        Self {
            name: name.to_owned(),
            phase: AnalysisPhase::Pending,
            dry_run,
            tally: Tally::default(),
            last_look_at: None,
            measurements: Vec::new(),
            carry: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_run_kind_is_written_as_its_label() {
        let kinds = [
            (RunKind::Step(2), "step-2"),
            (RunKind::Background, "background"),
            (RunKind::PrePromotion, "pre-promotion"),
            (RunKind::PostPromotion, "post-promotion"),
            (RunKind::AbTest, "ab-test"),
        ];
        for (kind, written) in kinds {
            assert_eq!(serde_json::to_value(kind).unwrap(), json!(written));
            assert_eq!(
                serde_json::from_value::<RunKind>(json!(written)).unwrap(),
                kind
            );
        }
        for unknown in ["step-", "step-x", "canary", ""] {
            assert!(unknown.parse::<RunKind>().is_err(), "{unknown}");
        }
        let kept: Recorded<RunKind> = serde_json::from_value(json!("canary")).unwrap();
        assert_eq!(kept, "canary");
        assert_eq!(serde_json::to_value(&kept).unwrap(), json!("canary"));
    }
}
