//! The `Rollout` custom resource (`sluice.dev/v1alpha1`).
//!
//! What the apiserver can check, the schema and its CEL rules check: exactly one strategy,
//! weights within 0..=100, maxSurge and maxUnavailable counts or percentages and not both zero,
//! durations in humantime form, and what a ReplicaSet needs of the selector and pod template
//! (`pod_template`). What only the controller can see (a missing Service) becomes an
//! `InvalidSpec` condition; what only a ReplicaSet's validation can say, a
//! `ReplicaSetCreateError` one.

// The CRD types are public API (kubectl-sluice, the tests and the demo read them), but kube's
// KubeSchema derive re-emits each struct where rustc sees no public path to it.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub mod analysis;
pub mod bounds;
mod pause;
mod pod_template;
mod recorded;

pub use analysis::RolloutAnalysis;
pub use pause::{PauseDurationError, PauseStep};
pub use recorded::Recorded;

/// The API group of every Sluice kind.
pub const GROUP: &str = "sluice.dev";
/// Label on ReplicaSets, their selectors and their pods: the pod-template hash.
pub const POD_TEMPLATE_HASH_LABEL: &str = "rollouts-pod-template-hash";
/// Annotation on ReplicaSets: the revision number, growing with every new template.
pub const REVISION_ANNOTATION: &str = "sluice.dev/revision";
/// Label on a ReplicaSet the controller scaled to zero and keeps only as history: its value is
/// the Rollout's name. The controller watches only ReplicaSets without it, so that what it
/// caches is the live revisions, not `revisionHistoryLimit` old ones per Rollout
/// (`crate::history`).
pub const RETIRED_LABEL: &str = "sluice.dev/retired";
/// Annotation on ReplicaSets: the Rollout's pod template as the user wrote it (JSON), which
/// `undo` puts back. The ReplicaSet's own template cannot serve: the apiserver fills in defaults
/// (imagePullPolicy, dnsPolicy, ...) that a Rollout's template does not have, so it would hash
/// differently and roll out as a new version.
pub const TEMPLATE_ANNOTATION: &str = "sluice.dev/pod-template";
/// Templates larger than this are not kept in [`TEMPLATE_ANNOTATION`]: all annotations of an
/// object share 256 KiB.
pub const TEMPLATE_ANNOTATION_LIMIT: usize = 64 * 1024;

/// Every matchLabels entry is a template label. (matchExpressions, whose values lists the schema
/// leaves unbounded, are the controller's to check.) The CRD bounds matchLabels and its values,
/// so that the apiserver can afford this rule.
const SELECTOR_MATCHES_TEMPLATE_RULE: &str = "!has(self.selector.matchLabels) || \
    self.selector.matchLabels.all(k, has(self.template.metadata) && \
    has(self.template.metadata.labels) && k in self.template.metadata.labels && \
    self.template.metadata.labels[k] == self.selector.matchLabels[k])";
const SELECTOR_MATCHES_TEMPLATE_MESSAGE: &str = "selector does not match the template: every matchLabels entry must be in \
     spec.template.metadata.labels with the same value";
/// An empty selector selects every pod of the namespace, not only the rollout's own.
const NON_EMPTY_SELECTOR_RULE: &str = "(has(self.matchLabels) && size(self.matchLabels) > 0) || \
    (has(self.matchExpressions) && size(self.matchExpressions) > 0)";
const NON_EMPTY_SELECTOR_MESSAGE: &str =
    "must not be empty: set matchLabels or matchExpressions that the template's labels carry";

/// A humantime duration such as `30s`, `2m` or `1h30m`.
const DURATION_PATTERN: &str = r"^([0-9]+(ns|us|ms|s|m|h|d))+$";

/// The longest Rollout name: it is a label value (`sluice.dev/rollout`) on what Sluice makes for
/// the rollout. The CRD refuses longer ones; the controller marks one stored before that rule.
pub const MAX_ROLLOUT_NAME: usize = 63;

// Every printcolumn names its own `type_`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "ro",
    category = "sluice",
    // The name is the value of the `sluice.dev/rollout` label on its AnalysisRuns and canary
    // Ingress: a label value is at most 63 characters (MAX_ROLLOUT_NAME).
    validation = kube::core::Rule::new("size(self.metadata.name) <= 63").message(
        "metadata.name: a Rollout's name is at most 63 characters (it is a label value on its AnalysisRuns and canary Ingress)"
    ),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".status.strategy"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.currentStepIndex"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.updatedWeight"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(SELECTOR_MATCHES_TEMPLATE_RULE)
    .message(SELECTOR_MATCHES_TEMPLATE_MESSAGE)
    .field_path(".selector"))]
pub struct RolloutSpec {
    /// Desired number of pods of the stable version (default 1).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Selects the pods of every version; must match the template's labels.
    #[schemars(transform = pod_template::label_selector_schema)]
    #[x_kube(validation = kube::core::Rule::new(NON_EMPTY_SELECTOR_RULE).message(NON_EMPTY_SELECTOR_MESSAGE))]
    pub selector: LabelSelector,
    #[schemars(transform = pod_template::pod_template_schema)]
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_ready_seconds: Option<i32>,
    /// Old ReplicaSets kept for undo (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub revision_history_limit: Option<i32>,
    /// Time spent waiting for pods without progress before the rollout is Degraded (default
    /// 600). Paused and analysing time do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,
    /// Abort when the progress deadline passes (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_abort: Option<bool>,
    /// Pause: no step advances until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// What a person or pipeline decided about one revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Re-create the stable version's pods that are older than this, one at a time, without a
    /// new revision (`kubectl sluice restart`; Argo Rollouts' field of the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_at: Option<Time>,
    pub strategy: Strategy,
}

fn default_replicas() -> i32 {
    1
}

/// A decision about one attempt at one revision (pod-template hash); ignored for any other, so
/// that it never leaks onto the next release or the next attempt. A decision is written whole:
/// a field it does not set is unset (the CLI and the REST API write every other field as null),
/// so nothing of an earlier decision survives under a new name. Every field is idempotent: two
/// pipelines that both promote step 3 move the rollout one step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The pod-template hash this decision is about.
    pub revision: String,
    /// The attempt (`status.attempt`) this decision is about: a new template, the same one
    /// again, or a retry each start a new attempt, where promotedStep, full and abort of an
    /// earlier one count for nothing. The CLI and the REST API always set it; without it the
    /// decision counts in whichever attempt is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub attempt: Option<i32>,
    /// Approves this step index only, and only while the rollout is at it: a paused step (an
    /// indefinite or timed pause, an inconclusive analysis, a blue-green or A/B promotion at 0).
    /// Earlier and later steps are not approved by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub promoted_step: Option<i32>,
    /// Skip the remaining steps and analyses of this attempt while it progresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<bool>,
    /// Abort this attempt while it is rolling out (not once it is stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<bool>,
    /// Raise above `status.retries` to retry this revision once after an abort; a value that
    /// is not above it, or that arrives while the rollout is not aborted, starts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub retry: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.rollingUpdate) ? 1 : 0) + (has(self.blueGreen) ? 1 : 0) + (has(self.canary) ? 1 : 0) + (has(self.abTest) ? 1 : 0) == 1"
).message("exactly one of strategy.rollingUpdate, strategy.blueGreen, strategy.canary or strategy.abTest must be set"))]
pub struct Strategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_test: Option<AbTest>,
}

/// The Services and router of a rollout whose traffic a router moves (a canary with
/// `trafficRouting`, or an A/B test).
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    pub stable_service: &'a str,
    pub canary_service: &'a str,
    pub routing: &'a traffic::TrafficRouting,
    /// The spec path of `routing`, for errors.
    pub field: &'static str,
}

impl Strategy {
    pub fn routed(&self) -> Option<Routed<'_>> {
        if let Some(c) = &self.canary
            && let Some(routing) = &c.traffic_routing
        {
            return Some(Routed {
                stable_service: c.stable_service.as_deref().unwrap_or_default(),
                canary_service: c.canary_service.as_deref().unwrap_or_default(),
                routing,
                field: "spec.strategy.canary.trafficRouting",
            });
        }
        self.ab_test.as_ref().map(|ab| Routed {
            stable_service: &ab.stable_service,
            canary_service: &ab.canary_service,
            routing: &ab.traffic_routing,
            field: "spec.strategy.abTest.trafficRouting",
        })
    }
}

/// A/B: requests matching any of `match` go to B (the new version), all others stay on A, for
/// `duration`; then B is promoted (by itself, or after a decision) unless its analysis failed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.trafficRouting.nginx) ? 1 : 0) + (has(self.trafficRouting.gatewayAPI) ? 1 : 0) == 1"
).message("trafficRouting sets exactly one of nginx or gatewayAPI"))]
pub struct AbTest {
    #[schemars(length(min = 1))]
    pub stable_service: String,
    #[schemars(length(min = 1))]
    pub canary_service: String,
    /// A/B needs a router: requests are split by what they carry, not by weight.
    pub traffic_routing: traffic::TrafficRouting,
    /// Requests matching any of these go to B.
    #[serde(rename = "match")]
    #[schemars(length(min = 1, max = 8))]
    pub matches: Vec<AbMatch>,
    /// How long B is tried (humantime: `30m`).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub duration: String,
    /// A against B, while the test runs; a Fail aborts at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    /// `auto` promotes B when the test passes; `manual` waits for a decision.
    #[serde(default)]
    pub promote: PromoteMode,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
#[serde(rename_all = "camelCase")]
pub enum PromoteMode {
    #[default]
    Auto,
    Manual,
}

/// One way a request is sent to B: all of `headers`, or the cookie `cookie` with value `always`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.headers) ? 1 : 0) + (has(self.cookie) ? 1 : 0) == 1"
).message("a match sets exactly one of headers or cookie"))]
pub struct AbMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<AbHeaderMatch>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.exact) ? 1 : 0) + (has(self.prefix) ? 1 : 0) + (has(self.regex) ? 1 : 0) == 1"
).message("a header match sets exactly one of exact, prefix or regex"))]
pub struct AbHeaderMatch {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl AbMatch {
    /// The conditions of this match, all of which must hold; `field` names it in errors.
    pub fn resolve(
        &self,
        field: &str,
    ) -> Result<Vec<traffic::RequestMatch>, traffic::TrafficError> {
        if let Some(cookie) = &self.cookie {
            return Ok(vec![traffic::RequestMatch::Cookie {
                name: cookie.clone(),
            }]);
        }
        self.headers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, h)| {
                traffic::spec::HeaderRouteMatch {
                    header_name: h.name.clone(),
                    header_value: traffic::spec::StringMatch {
                        exact: h.exact.clone(),
                        prefix: h.prefix.clone(),
                        regex: h.regex.clone(),
                    },
                }
                .resolve(&format!("{field}.headers[{i}]"))
            })
            .collect()
    }
}

/// maxSurge and maxUnavailable are a count of pods (`minimum` checks the integer form) or a
/// percentage of the desired count (`pattern` checks the string form; a string without `%` is
/// not a count, as for a Deployment). Schema keywords rather than CEL: a rule telling the two
/// forms apart needs CEL's `type()`, which the client-side validator `lint` uses cannot evaluate.
const PERCENT_PATTERN: &str = "^(100|[1-9]?[0-9])%$";

fn count_or_percent(schema: &mut schemars::Schema) {
    schema.insert("minimum".into(), 0.into());
    schema.insert("pattern".into(), PERCENT_PATTERN.into());
}

const SURGE_RULE: &str =
    "!(string(self.maxSurge) in ['0', '0%'] && string(self.maxUnavailable) in ['0', '0%'])";
const SURGE_MESSAGE: &str = "maxSurge and maxUnavailable must not both be 0";

/// Replace pods in batches, as a Deployment does.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(SURGE_RULE).message(SURGE_MESSAGE))]
pub struct RollingUpdate {
    /// Pods above the desired count while replacing (count or percentage; default 25%).
    #[serde(default = "default_max_surge")]
    #[schemars(transform = count_or_percent)]
    pub max_surge: IntOrString,
    /// Pods below the desired count while replacing (count or percentage; default 0).
    #[serde(default = "default_max_unavailable")]
    #[schemars(transform = count_or_percent)]
    pub max_unavailable: IntOrString,
    /// Background analysis while the new version rolls out; a Fail aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
}

impl Default for RollingUpdate {
    fn default() -> Self {
        Self {
            max_surge: default_max_surge(),
            max_unavailable: default_max_unavailable(),
            analysis: None,
        }
    }
}

fn default_max_surge() -> IntOrString {
    IntOrString::String("25%".into())
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(0)
}

/// Run the new version beside the old one, then switch the active Service at once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreen {
    /// Its selector gets the active version's pod-template hash.
    #[schemars(length(min = 1))]
    pub active_service: String,
    /// Its selector gets the new version's pod-template hash while it is previewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_service: Option<String>,
    /// Pods of the new version before promotion (default: full size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub preview_replica_count: Option<i32>,
    /// Promote without a decision once the new version is ready (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_enabled: Option<bool>,
    /// Wait this long after the new version is ready before promoting it by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub auto_promotion_seconds: Option<i32>,
    /// The old version is kept this long after the switch (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// After an abort, the new version is kept this long (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// Runs against the preview before the switch; the switch waits for its pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<RolloutAnalysis>,
    /// Runs after the switch; a failure switches back to the previous version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<RolloutAnalysis>,
}

/// Move traffic to the new version step by step. Without a traffic router the weight is made of
/// replica counts, and traffic flows through the user's own Service selecting both versions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new(SURGE_RULE).message(SURGE_MESSAGE),
    validation = kube::core::Rule::new(
        "!has(self.trafficRouting) || (has(self.trafficRouting.nginx) ? 1 : 0) + (has(self.trafficRouting.gatewayAPI) ? 1 : 0) == 1"
    ).message("trafficRouting sets exactly one of nginx or gatewayAPI"),
    validation = kube::core::Rule::new(
        "!has(self.trafficRouting) || (has(self.stableService) && has(self.canaryService))"
    ).message("trafficRouting needs stableService and canaryService"),
    validation = kube::core::Rule::new(
        "has(self.trafficRouting) || !has(self.steps) || !self.steps.exists(s, has(s.setHeaderRoute))"
    ).message("setHeaderRoute needs trafficRouting"),
)]
pub struct Canary {
    /// Its selector gets the stable version's pod-template hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_service: Option<String>,
    /// Its selector gets the canary's pod-template hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_service: Option<String>,
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub steps: Vec<CanaryStep>,
    /// Labels and annotations put on the canary's pods, moved when it is promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_metadata: Option<PodMetadata>,
    /// Labels and annotations put on the stable version's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_metadata: Option<PodMetadata>,
    /// Pods above the desired count while replacing (count or percentage; default 25%; without
    /// a router only).
    #[serde(default = "default_max_surge")]
    #[schemars(transform = count_or_percent)]
    pub max_surge: IntOrString,
    /// Pods below the desired count while replacing (count or percentage; default 0; without a
    /// router only).
    #[serde(default = "default_max_unavailable")]
    #[schemars(transform = count_or_percent)]
    pub max_unavailable: IntOrString,
    /// After promotion, the old version is kept this long (default 30; router only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_delay_seconds: Option<i32>,
    /// After an abort, the canary is kept this long (default 30; router only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub abort_scale_down_delay_seconds: Option<i32>,
    /// Background analysis from `startingStep` until promotion; a Fail aborts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    /// Move traffic with a router instead of replica counts: stable stays whole, and the
    /// canary's share is a weight the router sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_routing: Option<traffic::TrafficRouting>,
}

impl Default for Canary {
    fn default() -> Self {
        Self {
            stable_service: None,
            canary_service: None,
            steps: Vec::new(),
            canary_metadata: None,
            stable_metadata: None,
            max_surge: default_max_surge(),
            max_unavailable: default_max_unavailable(),
            scale_down_delay_seconds: None,
            abort_scale_down_delay_seconds: None,
            analysis: None,
            traffic_routing: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One step of a canary: exactly one of its fields.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.setCanaryScale) ? 1 : 0) + (has(self.analysis) ? 1 : 0) + (has(self.setHeaderRoute) ? 1 : 0) == 1"
).message("a canary step sets exactly one of setWeight, pause, setCanaryScale, analysis or setHeaderRoute"))]
pub struct CanaryStep {
    /// Percentage of traffic for the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,
    /// Wait: for `duration`, or, without one, for a decision promoting this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseStep>,
    /// Size the canary apart from its traffic weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_canary_scale: Option<SetCanaryScale>,
    /// Run an analysis; the step ends when it passes, a failure aborts the rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<RolloutAnalysis>,
    /// Send requests matching headers to the canary, whatever the weight (router only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<traffic::SetHeaderRoute>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.replicas) ? 1 : 0) + (has(self.weight) ? 1 : 0) + (has(self.matchTrafficWeight) ? 1 : 0) == 1"
).message("setCanaryScale sets exactly one of replicas, weight or matchTrafficWeight"))]
pub struct SetCanaryScale {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: Option<i32>,
    /// Back to sizing the canary by its traffic weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_traffic_weight: Option<bool>,
}

/// Where a rollout stands.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Phase {
    #[default]
    Progressing,
    Paused,
    Healthy,
    Degraded,
    Aborted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Healthy => "Healthy",
            Phase::Degraded => "Degraded",
            Phase::Aborted => "Aborted",
        }
    }
}

/// Written by the controller alone. All progress lives here: a restarted controller continues
/// from it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `rollingUpdate`, `blueGreen`, `canary` or `abTest`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub strategy: String,
    /// The label selector in string form, for the scale subresource.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Pod-template hash of the stable version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Pod-template hash of the desired version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// Percentage of traffic on the updated revision (canary), as `kubectl get rollouts` prints
    /// it: the step's weight while it rolls out, 100 once it is stable, 0 while aborted. Written
    /// from the rest of the status (`plan::updated_weight`) and never read to decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub updated_weight: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_test: Option<AbTestStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pause_conditions: Vec<PauseCondition>,
    #[serde(default)]
    pub abort: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_at: Option<Time>,
    /// Why the current attempt was aborted: the failed run and its metric, a decision, or the
    /// progress deadline. `message` carries it while the rollout stays aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_cause: Option<String>,
    /// The `spec.restartAt` whose restart is done: every pod of the stable version was created
    /// after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Time>,
    /// The `spec.decision.retry` value already acted on, so that a retry happens once.
    #[serde(default)]
    pub retries: i32,
    /// The highest revision number given to a ReplicaSet of this rollout; the next new template
    /// gets one more. Kept here because retired ReplicaSets, which may hold the highest, are not
    /// watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_revision: Option<u64>,
    /// Grows each time a revision starts or is retried; AnalysisRun names end with it, so that
    /// a new attempt never meets an old attempt's runs.
    #[serde(default)]
    pub attempt: i32,
    /// The AnalysisRuns of the current attempt that gate it now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis_runs: Vec<AnalysisRunRef>,
    /// Since when the rollout waits for pods without progress (for the progress deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Percentage of traffic on the canary (without a router: made of ready replicas).
    pub weight: i32,
    /// Canary size set by a setCanaryScale step, in replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_override: Option<i32>,
    /// With a router: the previous stable version, kept whole until `scaleDownAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_at: Option<Time>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AbTestStatus {
    /// When B began to receive the matching requests; the test ends `duration` later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// The test is over and B passed.
    #[serde(default)]
    pub passed: bool,
    /// The previous version (A), kept whole until `scaleDownAt` after B was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_at: Option<Time>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// Pod-template hash the active Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_selector: Option<String>,
    /// Pod-template hash the preview Service selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_selector: Option<String>,
    /// When the new version became ready for promotion (for autoPromotionSeconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<Time>,
    /// When the previous version is scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_at: Option<Time>,
    /// The previous version, kept until `scaleDownAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_revision: Option<String>,
}

/// An AnalysisRun the rollout waits on or watches, as last seen.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunRef {
    pub name: String,
    /// `step-N`, `background`, `pre-promotion` or `post-promotion`.
    pub kind: Recorded<analysis::RunKind>,
    /// The run's phase: Pending, Running, Successful, Failed, Error or Inconclusive.
    pub phase: Recorded<::analysis::Phase>,
    /// An inconclusive background run that a person promoted past: it pauses nothing more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dismissed: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PauseCondition {
    /// `CanaryPauseStep`, `BlueGreenPause`, `AnalysisInconclusive` or `UserPause`.
    pub reason: String,
    pub start_time: Time,
}

#[cfg(test)]
mod tests;
