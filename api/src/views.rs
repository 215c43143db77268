//! What the API shows of a rollout. These types are the API's own, so the wire format does not
//! move when the CRD does; the controller fills them from the Rollout, its ReplicaSets and its
//! AnalysisRuns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A rollout as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub namespace: String,
    pub name: String,
    /// `metadata.generation`: grows with every spec change.
    pub generation: i64,
    /// The generation the status describes.
    pub observed_generation: i64,
    /// `canary`, `blueGreen`, `rollingUpdate` or `abTest`.
    pub strategy: String,
    /// `Progressing`, `Paused`, `Healthy`, `Degraded` or `Aborted`.
    pub phase: String,
    pub message: String,
    /// Index into `steps` of the step the rollout is at (canary).
    pub current_step: Option<i32>,
    /// The canary's steps, in order.
    #[serde(default)]
    pub steps: Vec<StepView>,
    /// `spec.paused`: a person or pipeline paused it.
    pub paused: bool,
    /// Aborted: traffic is on stable until a retry or a new template.
    #[serde(default)]
    pub aborted: bool,
    /// Percentage of traffic on the updated revision (canary): the step's weight while it rolls
    /// out, 100 once it is stable, 0 while it is aborted.
    pub weight: Option<i32>,
    /// How traffic is split: `replicas` (no router), `nginx`, `gatewayAPI`, or `services`
    /// (blue-green's selector switch).
    #[serde(default)]
    pub traffic_router: Option<String>,
    /// Pod-template hash of the stable version.
    pub stable_revision: Option<String>,
    /// Pod-template hash of the desired version.
    pub updated_revision: Option<String>,
    /// The versions that have pods, or may get them again: newest first.
    #[serde(default)]
    pub revisions: Vec<RevisionView>,
    /// Analysis runs of the current revision, with each metric's latest verdict.
    pub analysis_runs: Vec<AnalysisRunView>,
    /// Set when the controller cannot decode this Rollout (a value its types refuse, stored
    /// under an older schema or around the apiserver): the field and why, e.g.
    /// `spec.replicas: invalid value: integer ..., expected i32`. The phase is then `Degraded`,
    /// nothing is reconciled until the object is fixed, and only the fields readable without
    /// decoding it are filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undecodable: Option<String>,
}

/// One canary step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub index: i32,
    /// What the step does, e.g. `setWeight 20`, `pause 2m`, `pause (until promoted)`,
    /// `analysis error-rate`.
    pub description: String,
}

/// One version of the pod template, as a ReplicaSet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionView {
    /// The `sluice.dev/revision` number: what `undo` takes.
    pub revision: Option<i64>,
    /// Pod-template hash.
    pub hash: String,
    /// `stable`, `canary` (the desired version while it rolls out), or `old`.
    pub role: String,
    /// Container images, as `container=image`.
    pub images: Vec<String>,
    pub desired: i32,
    pub ready: i32,
    pub available: i32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunView {
    pub name: String,
    /// `step-N`, `background`, `pre-promotion`, `post-promotion` or `ab-test`.
    pub kind: String,
    /// `Pending`, `Running`, `Successful`, `Failed`, `Error` or `Inconclusive`.
    pub phase: String,
    /// Which metric decided, and why.
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub metrics: Vec<MetricView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricView {
    pub name: String,
    pub phase: String,
    /// Measured and shown, never decides.
    #[serde(default)]
    pub dry_run: bool,
    pub passed: u32,
    pub failed: u32,
    pub inconclusive: u32,
    pub errors: u32,
    pub latest: Option<MeasurementView>,
}

/// A metric's newest measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeasurementView {
    /// `Pass`, `Fail`, `Inconclusive` or `Error`.
    pub verdict: String,
    pub message: String,
    /// When it finished, RFC 3339.
    pub finished_at: String,
    /// The judge's evidence: values, sample sizes, statistic, p-value or e-value, effect size.
    #[schema(value_type = Object)]
    pub evidence: serde_json::Value,
}
