//! Deciding, purely: `plan(&Rollout, &Observed, now) -> Plan`. No I/O, no clock reads, no
//! randomness; everything a reconcile does follows from what this returns.

mod ab_test;
mod abort;
mod attempt;
mod blue_green;
pub(crate) mod canary;
mod conditions;
mod finish;
mod pause;
mod progress_deadline;
mod reason;
pub(crate) mod refused;
pub(crate) mod replicas;
pub(crate) mod restart;
mod rolling;
pub(crate) mod router;
pub mod runs;
mod selector;
pub(crate) mod services;
pub mod status_write;
pub(crate) mod undecodable;
pub(crate) mod updated_weight;
pub(crate) mod validate;
pub(crate) mod writes;

pub use reason::EventReason;
pub(crate) use validate::validate;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::analysis::AnalysisTemplateSpec;
use crate::crd::{Decision, Phase, PodMetadata, Rollout, RolloutSpec, RolloutStatus};
use crate::hash::pod_template_hash;
use runs::{NewAnalysisRun, ObservedRun, TemplateKey};

/// A ReplicaSet of the Rollout, as the reflector store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedReplicaSet {
    pub name: String,
    pub hash: String,
    pub revision: u64,
    /// `spec.replicas`.
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
    /// Labels and annotations of its pod template.
    pub pod_metadata: PodMetadata,
}

/// What a reconcile read from the stores.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub replica_sets: Vec<ObservedReplicaSet>,
    /// The Services the spec names that exist, by name, with their selectors.
    pub services: BTreeMap<String, BTreeMap<String, String>>,
    /// The rollout's AnalysisRuns, by name.
    pub analysis_runs: BTreeMap<String, ObservedRun>,
    /// The templates the spec refers to that exist.
    pub templates: BTreeMap<TemplateKey, AnalysisTemplateSpec>,
    /// The traffic router's object the spec names (the stable Ingress, the HTTPRoute), or its
    /// absence, as read; `validate` judges it (`router::problem`). `None`: not read (no router,
    /// or the linter has not got it).
    pub(crate) router: Option<router::ObservedRouter>,
    /// Objects the rollout names or owns that the controller cannot decode: nothing is planned
    /// around them (`undecodable::invalid_spec`).
    pub undecodable: Vec<undecodable::Undecodable>,
    /// The stable ReplicaSet's pods, listed only while a restart is due (`restart::due`);
    /// `None`: not listed.
    pub pods: Option<Vec<restart::ObservedPod>>,
}

/// What the traffic router should make true after this reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficPlan {
    pub routing: traffic::TrafficRouting,
    pub backends: traffic::Backends,
    /// `None`: no canary traffic; remove what Sluice made (the canary Ingress, header rules) and
    /// send everything to the stable Service.
    pub state: Option<traffic::TrafficState>,
}

impl Observed {
    fn replica_set(&self, hash: &str) -> Option<&ObservedReplicaSet> {
        self.replica_sets.iter().find(|rs| rs.hash == hash)
    }

    fn available(&self, hash: &str) -> i32 {
        self.replica_set(hash)
            .map_or(0, |rs| rs.available.min(rs.replicas))
    }
}

/// The replica count one ReplicaSet should have after this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetTarget {
    pub hash: String,
    pub replicas: i32,
    /// `Some` when the ReplicaSet does not exist yet and is created from the Rollout's template
    /// with this revision number, or when an existing one becomes the newest revision again.
    pub revision: Option<u64>,
    /// The ReplicaSet is not in the store: it is created, not patched. (Asking the apiserver
    /// first would cost a GET per write, and one that finds nothing before every create.)
    pub create: bool,
    /// Scaled to zero as history: labelled retired in the same write, so that the controller
    /// stops watching it (`crate::history`).
    pub retire: bool,
}

/// Labels and annotations to set (`Some`) or remove (`None`) on one version's pod template and
/// pods: the role metadata of the canary (`canaryMetadata`) or of stable (`stableMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodMetadataChange {
    pub hash: String,
    pub labels: BTreeMap<String, Option<String>>,
    pub annotations: BTreeMap<String, Option<String>>,
}

/// Point `service`'s selector at pods of `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorChange {
    pub service: String,
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    pub type_: EventType,
    pub reason: EventReason,
    pub message: String,
}

/// What to do; [`Plan::writes`] gives the order the writes are made in.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub scale_up: Vec<ReplicaSetTarget>,
    /// Role metadata to move, after scaling up and before traffic moves.
    pub pod_metadata: Vec<PodMetadataChange>,
    pub selectors: Vec<SelectorChange>,
    pub scale_down: Vec<ReplicaSetTarget>,
    /// Old ReplicaSets beyond revisionHistoryLimit, by name: deleted after the scale-down.
    pub delete: Vec<String>,
    /// Set when this plan retires a ReplicaSet: the history's limit. The retired ReplicaSets,
    /// which are not watched, are then listed and those beyond it deleted.
    pub prune_history: Option<usize>,
    /// The router's state, set after the selectors move and before anything shrinks.
    pub traffic: Option<TrafficPlan>,
    /// AnalysisRuns to create, before the status that names them is written.
    pub create_runs: Vec<NewAnalysisRun>,
    /// AnalysisRuns that gate nothing any more: told to stop measuring.
    pub terminate_runs: Vec<String>,
    /// Finished AnalysisRuns beyond the history kept.
    pub delete_runs: Vec<String>,
    /// Set when this plan aborts on a failed analysis: when the run failed, so that the time to
    /// traffic on stable can be measured once the plan is carried out.
    pub abort_latency_since: Option<Timestamp>,
    pub status: RolloutStatus,
    /// How `status` differs from the rollout's: whether it is written, and how soon.
    pub status_change: status_write::StatusChange,
    /// What this reconcile did that people are told of; written as one Event
    /// ([`writes::transition_event`]), each counted in the metrics.
    pub events: Vec<PlannedEvent>,
    pub requeue_after: Option<Duration>,
    /// A stable pod to delete for a restart, after the ReplicaSets are written.
    pub restart: Option<restart::PodRestart>,
}

/// The field and reason of a spec the controller cannot act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
pub const DEFAULT_SCALE_DOWN_DELAY_SECONDS: i32 = 30;

/// Decides the next move of `rollout` given what was `observed` at `now`.
pub fn plan(rollout: &Rollout, observed: &Observed, now: Timestamp) -> Plan {
    let mut planner = Planner::new(rollout, observed, now);
    planner.run();
    let mut plan = planner.finish();
    plan.status.updated_weight = updated_weight::updated_weight(&plan.status);
    plan.status_change = status_write::change(
        rollout.status.as_ref(),
        &plan.status,
        !plan.events.is_empty(),
    );
    plan
}

struct Planner<'a> {
    name: String,
    spec: &'a RolloutSpec,
    observed: &'a Observed,
    now: Timestamp,
    previous: RolloutStatus,
    status: RolloutStatus,
    events: Vec<PlannedEvent>,
    requeue: Option<Timestamp>,
    /// The pod-template hash of the revision being rolled out: the new version, whatever the
    /// strategy calls it (canary, preview, B). The version it replaces is the stable one.
    new: String,
    /// ReplicaSet targets of this reconcile, and which to grow first.
    targets: BTreeMap<String, i32>,
    order: Vec<String>,
    urgent: bool,
    selectors: Vec<SelectorChange>,
    /// True while the rollout waits for pods (the progress deadline runs).
    waiting_for_pods: bool,
    invalid: Option<InvalidSpec>,
    create_runs: Vec<NewAnalysisRun>,
    /// The runs that gate the rollout after this reconcile; any other that measures is stopped.
    wanted_runs: Vec<String>,
    abort_latency_since: Option<Timestamp>,
    /// Blue-green: the active Service already points at the new version (post-promotion
    /// analysis runs before it becomes stable).
    active_on_new: bool,
    /// The canary's traffic router, when it has one.
    router: Option<traffic::TrafficRouting>,
    /// The router's state to reach; `None` with a router means "remove".
    traffic_state: Option<traffic::TrafficState>,
    /// The pod a restart deletes now, and what the status says while a restart goes on.
    restart: Option<restart::PodRestart>,
    restart_message: Option<String>,
}

impl<'a> Planner<'a> {
    fn new(rollout: &'a Rollout, observed: &'a Observed, now: Timestamp) -> Self {
        let previous = rollout.status.clone().unwrap_or_default();
        let mut status = previous.clone();
        status.observed_generation = rollout.metadata.generation;
        status.strategy = strategy_name(&rollout.spec).into();
        status.selector = selector_string(&rollout.spec);
        Self {
            name: rollout.metadata.name.clone().unwrap_or_default(),
            spec: &rollout.spec,
            observed,
            now,
            previous,
            status,
            events: Vec::new(),
            requeue: None,
            new: pod_template_hash(&rollout.spec.template),
            targets: BTreeMap::new(),
            order: Vec::new(),
            urgent: false,
            selectors: Vec::new(),
            waiting_for_pods: false,
            invalid: None,
            create_runs: Vec::new(),
            wanted_runs: Vec::new(),
            abort_latency_since: None,
            active_on_new: false,
            router: rollout.spec.strategy.routed().map(|r| r.routing.clone()),
            traffic_state: None,
            restart: None,
            restart_message: None,
        }
    }

    fn replicas(&self) -> i32 {
        self.spec.replicas.max(0)
    }

    fn event(&mut self, type_: EventType, reason: EventReason, message: impl Into<String>) {
        self.events.push(PlannedEvent {
            type_,
            reason,
            message: message.into(),
        });
    }

    fn wake_at(&mut self, at: Timestamp) {
        if self.requeue.is_none_or(|current| at < current) {
            self.requeue = Some(at);
        }
    }

    /// The decision, when it is about the revision being rolled out (in whichever attempt).
    fn decision(&self) -> Option<&'a Decision> {
        self.spec
            .decision
            .as_ref()
            .filter(|d| d.revision == self.new)
    }

    /// The decision, when it is about the attempt running now: one written before a retry, or
    /// before the template changed away and back, approves, promotes and aborts nothing.
    fn decided(&self) -> Option<&'a Decision> {
        let attempt = self.status.attempt;
        self.decision()
            .filter(|d| d.attempt.is_none_or(|a| a == attempt))
    }

    /// The step this attempt was at when the reconcile began, as the status a person decided
    /// on showed it; `None` in the reconcile that starts an attempt.
    fn step_at_start(&self) -> Option<i32> {
        let same_attempt = self.previous.updated_revision.as_deref() == Some(self.new.as_str())
            && self.previous.attempt == self.status.attempt;
        self.previous.current_step_index.filter(|_| same_attempt)
    }

    /// A full promotion of this attempt, while it progresses.
    fn is_full(&self) -> bool {
        !self.status.abort && self.decided().is_some_and(|d| d.full == Some(true))
    }

    /// Whether a decision lets `step` pass: a full promotion of this attempt, or a promote of
    /// that very step while the rollout is at it. A promote never reaches past the step it
    /// names, nor into another attempt.
    fn approved(&self, step: usize) -> bool {
        let Ok(step) = i32::try_from(step) else {
            return false;
        };
        self.is_full()
            || self.decided().is_some_and(|d| {
                d.promoted_step == Some(step) && self.step_at_start() == Some(step)
            })
    }

    fn run(&mut self) {
        if let Err(invalid) =
            validate::check_name(&self.name).and_then(|()| validate(self.spec, self.observed))
        {
            self.invalid = Some(invalid);
            return;
        }
        // The phase is decided afresh each time; only progress carries over.
        self.status.phase = Phase::Progressing;
        self.track_revision();
        self.apply_decisions();
        let stable = self.status.stable_revision.clone().unwrap_or_default();
        if stable == self.new {
            self.finish_on_stable(&stable);
        } else if self.status.abort {
            self.hold_aborted(&stable);
        } else if let Some(canary) = &self.spec.strategy.canary {
            self.canary(&stable, &canary.steps);
        } else if let Some(ab) = &self.spec.strategy.ab_test {
            self.ab_test(&stable, ab);
        } else if self.spec.strategy.blue_green.is_some() {
            self.blue_green(&stable);
        } else {
            self.rolling(&stable);
        }
        self.check_progress_deadline();
        self.restart_pods();
    }

    fn is_new_stable(&self) -> bool {
        self.status.stable_revision.as_deref() == Some(self.new.as_str())
    }

    fn steps_len(&self) -> Option<usize> {
        self.spec.strategy.canary.as_ref().map(|c| c.steps.len())
    }
}

fn strategy_name(spec: &RolloutSpec) -> &'static str {
    if spec.strategy.ab_test.is_some() {
        "abTest"
    } else if spec.strategy.canary.is_some() {
        "canary"
    } else if spec.strategy.blue_green.is_some() {
        "blueGreen"
    } else {
        "rollingUpdate"
    }
}

/// `app=web,tier=front`, for the scale subresource and `kubectl get -l`.
pub fn selector_string(spec: &RolloutSpec) -> String {
    let mut parts: Vec<String> = spec
        .selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for expr in spec.selector.match_expressions.iter().flatten() {
        let values = expr.values.clone().unwrap_or_default().join(",");
        parts.push(match expr.operator.as_str() {
            "In" => format!("{} in ({values})", expr.key),
            "NotIn" => format!("{} notin ({values})", expr.key),
            "Exists" => expr.key.clone(),
            _ => format!("!{}", expr.key),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests;
