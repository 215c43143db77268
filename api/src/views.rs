//! What the API shows of a rollout. These types are the API's own, so the wire format does not
//! move when the CRD does; the controller fills them from the Rollout, its ReplicaSets and its
//! AnalysisRuns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A rollout as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp`, RFC 3339.
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The rollout's annotations, but kubectl's copy of the last applied object.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
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
    /// When the pause the rollout is in began (a pause step, blue-green's, an inconclusive
    /// analysis, or `spec.paused`), RFC 3339.
    #[serde(default)]
    pub pause_started_at: Option<String>,
    /// When the timed pause step the rollout is at ends, RFC 3339.
    #[serde(default)]
    pub pause_ends_at: Option<String>,
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
    /// `spec.replicas`.
    #[serde(default)]
    pub desired: i32,
    /// `status.readyReplicas`.
    #[serde(default)]
    pub ready: i32,
    /// Pod-template hash of the stable version.
    pub stable_revision: Option<String>,
    /// Pod-template hash of the desired version.
    pub updated_revision: Option<String>,
    /// The versions that have pods, or may get them again: newest first.
    #[serde(default)]
    pub revisions: Vec<RevisionView>,
    /// Analysis runs of the current revision, with each metric's latest verdict.
    pub analysis_runs: Vec<AnalysisRunView>,
    /// Which actions apply now, decided as the actions themselves decide: one that does not
    /// would answer 409 with `reason`.
    #[serde(default)]
    pub actions: ActionsView,
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
    /// `setWeight`, `pause`, `setCanaryScale`, `analysis` or `setHeaderRoute`.
    #[serde(default)]
    pub kind: String,
    /// The traffic percentage a `setWeight` step sets.
    #[serde(default)]
    pub weight: Option<i32>,
    /// A timed pause's length; `None` for a pause until promoted.
    #[serde(default)]
    pub pause_seconds: Option<u64>,
}

/// Whether an action applies now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Applies {
    pub applies: bool,
    /// Why not, as the 409 would say it.
    #[serde(default)]
    pub reason: Option<String>,
}

impl Applies {
    /// From an action's decision: applies, or the reason it is refused.
    pub fn from_decision<T>(decision: Result<T, String>) -> Self {
        match decision {
            Ok(_) => Self {
                applies: true,
                reason: None,
            },
            Err(reason) => Self {
                applies: false,
                reason: Some(reason),
            },
        }
    }
}

/// Each action of the REST API, and whether it applies to the rollout now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionsView {
    /// Promote the current step (`fromStep` = `currentStep`).
    pub promote: Applies,
    /// Promote with `full`.
    pub promote_full: Applies,
    pub abort: Applies,
    pub retry: Applies,
    pub pause: Applies,
    pub resume: Applies,
    /// Undo to the revision before the current; per revision, see [`RevisionView::undo`].
    pub undo: Applies,
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
    /// Whether `undo` to this revision applies now.
    #[serde(default)]
    pub undo: Applies,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunView {
    pub name: String,
    /// When the run started and, once its phase is final, ended; RFC 3339.
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub completed_at: Option<String>,
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
    /// The looks the run keeps (the newest 10), oldest first, with what each saw.
    #[serde(default)]
    pub looks: Vec<LookView>,
    /// Index into `looks` of the look that decided the metric's final phase.
    #[serde(default)]
    pub deciding_look: Option<usize>,
}

/// One look of a metric: what the judge saw and what it said. Numbers a judge did not compute,
/// or that were not finite, are absent (the raw values stay in `values`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LookView {
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    /// `Pass`, `Fail`, `Inconclusive` or `Error`.
    pub verdict: String,
    pub message: String,
    /// `cel` (a threshold), `mannWhitney`, `welch` or `sequentialPoisson`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// The canary's value: a threshold's mean result, a comparison's canary mean, a sequential
    /// test's canary event rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
    /// Stable's mean or event rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<f64>,
    /// Samples, or for rates the requests they are counted over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_samples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_samples: Option<u64>,
    /// Events counted (sequential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_events: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_events: Option<f64>,
    /// The test statistic (U, t).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// A sequential test's e-value, and the one at which it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_size: Option<f64>,
    /// The measured values as text (`[0.012, NaN]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
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
