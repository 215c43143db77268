//! Deciding, purely: `plan(&Rollout, &Observed, now) -> Plan`. No I/O, no clock reads, no
//! randomness; everything a reconcile does follows from what this returns.

pub mod analysis;
mod conditions;
pub mod refused;
pub mod replicas;
pub mod restart;
mod selector;
pub mod undecodable;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::analysis::AnalysisTemplateSpec;
use crate::crd::{
    AbTest, AbTestStatus, BlueGreenStatus, CanaryStatus, CanaryStep, Decision, PauseCondition,
    Phase, PodMetadata, PromoteMode, Rollout, RolloutSpec, RolloutStatus,
};
use crate::hash::pod_template_hash;
use analysis::{Gate, NewAnalysisRun, ObservedRun, RunKind, TemplateKey};
use conditions::set_condition;
use replicas::{Bound, Bounds, replicas_for_weight, step_towards};

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
    /// What is wrong with the traffic router's objects (a missing Ingress or HTTPRoute, one that
    /// does not send traffic to the stable Service), as the reconcile found before planning.
    pub router_problem: Option<InvalidSpec>,
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
    pub reason: &'static str,
    pub message: String,
}

/// What to do, in order: grow ReplicaSets, move selectors, shrink ReplicaSets, write status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub scale_up: Vec<ReplicaSetTarget>,
    /// Role metadata to move, after scaling up and before traffic moves.
    pub pod_metadata: Vec<PodMetadataChange>,
    pub selectors: Vec<SelectorChange>,
    pub scale_down: Vec<ReplicaSetTarget>,
    /// Old ReplicaSets beyond revisionHistoryLimit, by name: deleted after the scale-down.
    pub delete: Vec<String>,
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
const REASON_CANARY_PAUSE: &str = "CanaryPauseStep";
const REASON_BLUE_GREEN_PAUSE: &str = "BlueGreenPause";
const REASON_USER_PAUSE: &str = "UserPause";
const REASON_AB_TEST_PAUSE: &str = "AbTestPause";

/// Decides the next move of `rollout` given what was `observed` at `now`.
pub fn plan(rollout: &Rollout, observed: &Observed, now: Timestamp) -> Plan {
    let mut planner = Planner::new(rollout, observed, now);
    planner.run();
    planner.finish()
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
    updated: String,
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
            updated: pod_template_hash(&rollout.spec.template),
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

    fn event(&mut self, type_: EventType, reason: &'static str, message: impl Into<String>) {
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
            .filter(|d| d.revision == self.updated)
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
        let same_attempt = self.previous.updated_revision.as_deref() == Some(self.updated.as_str())
            && self.previous.attempt == self.status.attempt;
        self.previous.current_step_index.filter(|_| same_attempt)
    }

    /// The weight the router may send: `weight`, or less while canary pods that carried it are
    /// not ready, so that traffic never points at pods that are not there. The step's weight in
    /// status stays; the router's comes back as the pods do.
    fn routable_weight(&self, weight: i32) -> i32 {
        let replicas = self.replicas().max(1);
        let max = self.max_weight();
        let ready = self
            .observed
            .replica_set(&self.updated)
            .map_or(0, |rs| rs.available.min(rs.replicas));
        let (needed, _) = self.split_for(weight, None);
        if ready >= needed {
            weight
        } else {
            weight.min(ready * max / replicas)
        }
    }

    fn max_weight(&self) -> i32 {
        self.router
            .as_ref()
            .and_then(|r| r.max_traffic_weight)
            .unwrap_or(100)
            .max(1)
    }

    /// Canary and stable pods for a weight. With a router stable stays whole and the canary
    /// gets pods for its share of traffic (or what setCanaryScale says); without one the weight
    /// is made of pods.
    fn split_for(&self, weight: i32, scale_override: Option<i32>) -> (i32, i32) {
        let replicas = self.replicas();
        match &self.router {
            Some(_) => {
                let max = self.max_weight();
                let percent = (weight.clamp(0, max) * 100 + max - 1) / max;
                let canary =
                    scale_override.unwrap_or_else(|| replicas_for_weight(percent, replicas));
                (canary.min(replicas), replicas)
            }
            None => canary_split(weight, scale_override, replicas),
        }
    }

    /// The header routes in force at `index`: those of the last setHeaderRoute step before it.
    fn header_routes(&self, steps: &[CanaryStep], index: usize) -> Vec<Vec<traffic::RequestMatch>> {
        let Some((i, route)) = steps
            .iter()
            .enumerate()
            .take(index)
            .filter_map(|(i, s)| s.set_header_route.as_ref().map(|r| (i, r)))
            .next_back()
        else {
            return Vec::new();
        };
        let field = format!("spec.strategy.canary.steps[{i}].setHeaderRoute.match");
        let conditions: Vec<traffic::RequestMatch> = route
            .matches
            .iter()
            .enumerate()
            .filter_map(|(j, m)| m.resolve(&format!("{field}[{j}]")).ok())
            .collect();
        if conditions.is_empty() {
            Vec::new()
        } else {
            vec![conditions]
        }
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
        if self.name.len() > crate::crd::MAX_ROLLOUT_NAME {
            self.invalid = Some(InvalidSpec {
                field: "metadata.name".into(),
                message: format!(
                    "{} characters: a Rollout's name is at most {} (it is a label value on its \
                     AnalysisRuns and canary Ingress)",
                    self.name.len(),
                    crate::crd::MAX_ROLLOUT_NAME
                ),
            });
            return;
        }
        if let Err(invalid) = validate(self.spec, self.observed) {
            self.invalid = Some(invalid);
            return;
        }
        // The phase is decided afresh each time; only progress carries over.
        self.status.phase = Phase::Progressing;
        self.track_revision();
        self.apply_decisions();
        let stable = self.status.stable_revision.clone().unwrap_or_default();
        if stable == self.updated {
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

    /// A new template starts from step 0; the first template ever is stable from the start.
    fn track_revision(&mut self) {
        let stable_exists = self
            .status
            .stable_revision
            .as_deref()
            .is_some_and(|hash| self.observed.replica_set(hash).is_some());
        if !stable_exists {
            let previous_stable = self.status.stable_revision.clone();
            // No stable version (a first rollout, or its ReplicaSet was deleted by hand): the
            // newest ReplicaSet that still has pods is the best stand-in, else the new template.
            let stand_in = self
                .observed
                .replica_sets
                .iter()
                .filter(|rs| rs.available > 0 && Some(&rs.hash) != previous_stable.as_ref())
                .max_by_key(|rs| rs.revision)
                .map(|rs| rs.hash.clone())
                .unwrap_or_else(|| self.updated.clone());
            if let Some(previous) = &previous_stable
                && previous != &stand_in
            {
                let message = format!(
                    "the ReplicaSet of stable revision {previous} is gone (deleted by hand?): \
                     revision {stand_in} is taken as stable"
                );
                self.event(EventType::Warning, "StableReplicaSetMissing", message);
            }
            self.status.stable_revision = Some(stand_in);
        }
        if self.status.updated_revision.as_deref() != Some(self.updated.as_str()) {
            let fresh = self.status.updated_revision.is_some();
            self.status.updated_revision = Some(self.updated.clone());
            self.status.canary = self
                .spec
                .strategy
                .canary
                .as_ref()
                .map(|_| CanaryStatus::default());
            if self.spec.strategy.ab_test.is_some() {
                self.status
                    .ab_test
                    .get_or_insert_with(AbTestStatus::default);
            }
            self.status.retries = self.decision().and_then(|d| d.retry).unwrap_or(0);
            self.start_attempt();
            if fresh || self.status.stable_revision.as_deref() != Some(self.updated.as_str()) {
                let message = format!("rolling out revision {}", self.updated);
                self.event(EventType::Normal, "NewRevision", message);
            }
        }
    }

    /// A new attempt at the revision being rolled out, for a new template and for a retry alike:
    /// step 0, no abort, no pause, no analysis, and no timer of the attempt before it (an
    /// autoPromotionSeconds counted from before an abort would promote without waiting).
    fn start_attempt(&mut self) {
        self.status.current_step_index = Some(0);
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.abort_cause = None;
        self.status.pause_conditions.clear();
        self.status.waiting_since = None;
        if let Some(canary) = self.status.canary.as_mut() {
            canary.scale_override = None;
        }
        if let Some(bg) = self.status.blue_green.as_mut() {
            bg.ready_since = None;
        }
        if let Some(ab) = self.status.ab_test.as_mut() {
            ab.started_at = None;
            ab.passed = false;
        }
        self.status.attempt += 1;
        self.status.analysis_runs.clear();
    }

    /// A retry, then an abort, each only when the decision is about this attempt and the
    /// rollout is in the state the action is for.
    fn apply_decisions(&mut self) {
        let Some(decision) = self.decision() else {
            return;
        };
        let retry = decision.retry.unwrap_or(0);
        if retry > self.status.retries {
            // Taken as acted on even when it starts nothing, so that a retry value that arrives
            // while the rollout is not aborted never restarts a later abort.
            self.status.retries = retry;
            let this_attempt = self.decided().is_some();
            if self.status.abort && decision.abort != Some(true) && this_attempt {
                self.start_attempt();
                let message = format!("retrying revision {}", self.updated);
                self.event(EventType::Normal, "Retried", message);
            }
        }
        let abort = self.decided().is_some_and(|d| d.abort == Some(true));
        if abort && !self.status.abort && !self.is_stable_updated() {
            self.abort(
                "AbortedByUser",
                "by a decision (spec.decision.abort)".into(),
            );
        }
    }

    fn is_stable_updated(&self) -> bool {
        self.status.stable_revision.as_deref() == Some(self.updated.as_str())
    }

    fn abort(&mut self, reason: &'static str, why: String) {
        self.status.abort = true;
        self.status.aborted_at = Some(Time(self.now));
        self.status.pause_conditions.clear();
        let message = format!("revision {} aborted: {why}", self.updated);
        self.status.abort_cause = Some(why);
        self.event(EventType::Warning, reason, message);
    }

    /// Aborts in this very reconcile: whatever the strategy planned is dropped for the aborted
    /// hold (all traffic on stable, stable whole).
    fn abort_now(&mut self, reason: &'static str, why: String) {
        self.abort(reason, why);
        let stable = self.status.stable_revision.clone().unwrap_or_default();
        self.targets.clear();
        self.order.clear();
        self.selectors.clear();
        self.active_on_new = false;
        self.waiting_for_pods = false;
        self.wanted_runs.clear();
        self.hold_aborted(&stable);
    }

    /// The template is the stable one (finished, or changed back): stable at full size, every
    /// other version scaled down (a blue-green's previous one after its delay).
    fn finish_on_stable(&mut self, stable: &str) {
        let replicas = self.replicas();
        self.targets.insert(stable.to_owned(), replicas);
        self.order = vec![stable.to_owned()];
        self.keep_blue_green_previous();
        let steps = self.steps_len();
        self.status.current_step_index = steps.map(|n| n as i32);
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.abort_cause = None;
        self.status.pause_conditions.clear();
        self.status.analysis_runs.clear();
        self.wanted_runs.clear();
        self.active_on_new = false;
        self.traffic_state = None;
        if let Some(canary) = self.status.canary.as_mut() {
            canary.weight = 0;
            canary.scale_override = None;
        }
        self.pin_services(stable, stable);
        if self.observed.available(stable) < replicas {
            self.waiting_for_pods = true;
        }
    }

    /// Keeps the previous version (of a blue-green, or of a canary with a router) at its size
    /// until `scaleDownAt`, so connections to it can drain.
    fn keep_blue_green_previous(&mut self) {
        let kept = match (
            &self.status.blue_green,
            &self.status.canary,
            &self.status.ab_test,
        ) {
            (Some(bg), _, _) if bg.scale_down_revision.is_some() => {
                (bg.scale_down_revision.clone(), bg.scale_down_at.clone())
            }
            (_, Some(c), _) if c.scale_down_revision.is_some() => {
                (c.scale_down_revision.clone(), c.scale_down_at.clone())
            }
            (_, _, Some(ab)) => (ab.scale_down_revision.clone(), ab.scale_down_at.clone()),
            _ => return,
        };
        let (Some(previous), Some(at)) = kept else {
            return;
        };
        if self.now < at.0
            && let Some(rs) = self.observed.replica_set(&previous)
        {
            self.targets.insert(previous, rs.replicas);
            self.wake_at(at.0);
        } else {
            if let Some(bg) = self.status.blue_green.as_mut() {
                bg.scale_down_at = None;
                bg.scale_down_revision = None;
            }
            if let Some(c) = self.status.canary.as_mut() {
                c.scale_down_at = None;
                c.scale_down_revision = None;
            }
            if let Some(ab) = self.status.ab_test.as_mut() {
                ab.scale_down_at = None;
                ab.scale_down_revision = None;
            }
        }
    }

    /// Aborted: all traffic on stable, stable at full size first, the new version down after.
    fn hold_aborted(&mut self, stable: &str) {
        let replicas = self.replicas();
        self.targets.insert(stable.to_owned(), replicas);
        self.order = vec![stable.to_owned()];
        self.urgent = true;
        if let Some(canary) = self.status.canary.as_mut() {
            canary.weight = 0;
        }
        self.traffic_state = None;
        if self.spec.strategy.blue_green.is_some() || self.router.is_some() {
            // Traffic left it at once; the new version stays up for abortScaleDownDelaySeconds,
            // for a look at it.
            let delay = self
                .spec
                .strategy
                .blue_green
                .as_ref()
                .and_then(|bg| bg.abort_scale_down_delay_seconds)
                .or_else(|| {
                    self.spec
                        .strategy
                        .canary
                        .as_ref()
                        .and_then(|c| c.abort_scale_down_delay_seconds)
                })
                .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS);
            let aborted_at = self.status.aborted_at.as_ref().map_or(self.now, |t| t.0);
            let until = aborted_at + SignedDuration::from_secs(i64::from(delay));
            if self.now < until
                && let Some(rs) = self.observed.replica_set(&self.updated)
            {
                self.targets.insert(self.updated.clone(), rs.replicas);
                self.wake_at(until);
            }
        }
        self.pin_services(stable, stable);
        self.status.phase = Phase::Aborted;
        // The runs stay listed, so people see which one failed; none of them gates anything.
        for reference in &mut self.status.analysis_runs {
            if let Some(run) = self.observed.analysis_runs.get(&reference.name) {
                reference.phase = run.phase.into();
            }
        }
    }

    /// Pins the stable/active and canary/preview Services, each only to a version with pods
    /// ready to take its traffic.
    fn pin_services(&mut self, stable: &str, canary: &str) {
        let replicas = self.replicas();
        if let Some(bg) = &self.spec.strategy.blue_green {
            let active = bg.active_service.clone();
            let active_target = if self.active_on_new { canary } else { stable };
            if self.observed.available(active_target) >= replicas.max(1) {
                self.select(&active, active_target);
                self.blue_green_status().active_selector = Some(active_target.to_owned());
            }
            if let Some(preview) = bg.preview_service.clone() {
                let preview_count = bg.preview_replica_count.unwrap_or(replicas).min(replicas);
                let target = if self.observed.available(canary) >= preview_count.max(1) {
                    canary
                } else {
                    stable
                };
                if self.observed.available(target) > 0 {
                    self.select(&preview, target);
                    self.blue_green_status().preview_selector = Some(target.to_owned());
                }
            }
        }
        let services = match (&self.spec.strategy.canary, &self.spec.strategy.ab_test) {
            (Some(c), _) => Some((c.stable_service.clone(), c.canary_service.clone())),
            (None, Some(ab)) => Some((
                Some(ab.stable_service.clone()),
                Some(ab.canary_service.clone()),
            )),
            _ => None,
        };
        if let Some((stable_service, canary_service)) = services {
            if let Some(service) = stable_service
                && self.observed.available(stable) > 0
            {
                self.select(&service, stable);
            }
            if let Some(service) = canary_service {
                // Only a version that keeps pods after this plan takes the canary Service.
                let keeps_pods = self.targets.get(canary).is_none_or(|&n| n > 0);
                let target = if self.observed.available(canary) > 0 && keeps_pods {
                    canary
                } else {
                    stable
                };
                if self.observed.available(target) > 0 {
                    self.select(&service, target);
                }
            }
        }
    }

    fn blue_green_status(&mut self) -> &mut BlueGreenStatus {
        self.status
            .blue_green
            .get_or_insert_with(BlueGreenStatus::default)
    }

    fn select(&mut self, service: &str, hash: &str) {
        let current = self
            .observed
            .services
            .get(service)
            .and_then(|selector| selector.get(crate::crd::POD_TEMPLATE_HASH_LABEL));
        if current.map(String::as_str) != Some(hash) {
            self.selectors.push(SelectorChange {
                service: service.to_owned(),
                hash: hash.to_owned(),
            });
        }
    }

    fn steps_len(&self) -> Option<usize> {
        self.spec.strategy.canary.as_ref().map(|c| c.steps.len())
    }

    fn user_paused(&mut self) -> bool {
        let paused = self.spec.paused == Some(true);
        let has = self
            .status
            .pause_conditions
            .iter()
            .any(|p| p.reason == REASON_USER_PAUSE);
        if paused && !has {
            self.status.pause_conditions.push(PauseCondition {
                reason: REASON_USER_PAUSE.into(),
                start_time: Time(self.now),
            });
            self.event(EventType::Normal, "Paused", "paused by the user");
        } else if !paused && has {
            self.status
                .pause_conditions
                .retain(|p| p.reason != REASON_USER_PAUSE);
            self.event(EventType::Normal, "Resumed", "resumed by the user");
        }
        paused
    }

    fn canary(&mut self, stable: &str, steps: &[CanaryStep]) {
        let replicas = self.replicas();
        let mut paused = self.user_paused();
        if paused {
            self.keep_runs();
        }
        let full = self.is_full();
        let mut index = self.status.current_step_index.unwrap_or(0).max(0) as usize;
        if full {
            index = index.max(steps.len());
        }
        let mut canary_status = self.status.canary.clone().unwrap_or_default();
        let mut blocked_on_pause = false;
        let mut waiting = false;
        let mut analysing: Option<String> = None;
        let background = self
            .spec
            .strategy
            .canary
            .as_ref()
            .and_then(|c| c.analysis.clone());
        if let Some(background) = &background
            && index < steps.len()
            && index >= background.starting_step.unwrap_or(0).max(0) as usize
        {
            match self.gate(
                RunKind::Background,
                background,
                "spec.strategy.canary.analysis",
            ) {
                Gate::Failed(why) => return self.abort_now("AnalysisFailed", why),
                Gate::Inconclusive(_) if self.approved(index) => {
                    self.dismiss(RunKind::Background);
                }
                Gate::Inconclusive(why) => {
                    self.pause_inconclusive(&why);
                    paused = true;
                }
                Gate::Passed | Gate::Running => {}
            }
        }
        while index < steps.len() && !paused {
            let step = &steps[index];
            if let Some(analysis) = &step.analysis {
                let field = format!("spec.strategy.canary.steps[{index}].analysis");
                let kind = RunKind::Step(index);
                let gate = if self.approved(index) {
                    Gate::Passed
                } else {
                    self.gate(kind, analysis, &field)
                };
                match gate {
                    Gate::Passed => {
                        self.clear_inconclusive();
                        self.status.analysis_runs.retain(|r| r.kind != kind);
                        let name = self.run_name(kind);
                        self.wanted_runs.retain(|n| n != &name);
                        self.step_done(index, steps.len(), "analysis passed".into());
                        index += 1;
                        continue;
                    }
                    Gate::Failed(why) => return self.abort_now("AnalysisFailed", why),
                    Gate::Inconclusive(why) => {
                        self.pause_inconclusive(&why);
                        blocked_on_pause = true;
                    }
                    Gate::Running => analysing = Some(self.run_name(kind)),
                }
                break;
            }
            if let Some(weight) = step.set_weight {
                let (canary_want, stable_want) =
                    self.split_for(weight, canary_status.scale_override);
                // With a router, a smaller weight takes traffic off at once (pods follow after);
                // a larger one waits for the canary's pods.
                let lowering = self.router.is_some() && weight <= canary_status.weight;
                if lowering || self.split_reached(stable, canary_want, stable_want) {
                    canary_status.weight = weight;
                    self.step_done(index, steps.len(), format!("setWeight {weight}"));
                    index += 1;
                    continue;
                }
                waiting = true;
                break;
            }
            if step.set_header_route.is_some() {
                self.step_done(index, steps.len(), "setHeaderRoute".into());
                index += 1;
                continue;
            }
            if let Some(scale) = &step.set_canary_scale {
                canary_status.scale_override = if scale.match_traffic_weight == Some(true) {
                    None
                } else if let Some(n) = scale.replicas {
                    Some(n)
                } else {
                    scale.weight.map(|w| replicas_for_weight(w, replicas))
                };
                self.step_done(index, steps.len(), "setCanaryScale".into());
                index += 1;
                continue;
            }
            if let Some(pause) = &step.pause {
                if self.approved(index) {
                    self.status
                        .pause_conditions
                        .retain(|p| p.reason != REASON_CANARY_PAUSE);
                    self.step_done(index, steps.len(), "pause (promoted)".into());
                    index += 1;
                    continue;
                }
                let started = match self
                    .status
                    .pause_conditions
                    .iter()
                    .find(|p| p.reason == REASON_CANARY_PAUSE)
                {
                    Some(p) => p.start_time.0,
                    None => {
                        self.status.pause_conditions.push(PauseCondition {
                            reason: REASON_CANARY_PAUSE.into(),
                            start_time: Time(self.now),
                        });
                        self.now
                    }
                };
                let duration = pause.length().and_then(Result::ok);
                if let Some(duration) = duration {
                    let ends =
                        started + SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
                    if self.now >= ends {
                        self.status
                            .pause_conditions
                            .retain(|p| p.reason != REASON_CANARY_PAUSE);
                        self.step_done(
                            index,
                            steps.len(),
                            format!("pause {}", pause.shown().unwrap_or_default()),
                        );
                        index += 1;
                        continue;
                    }
                    self.wake_at(ends);
                }
                blocked_on_pause = true;
                break;
            }
            // A step with no action (rejected by the schema) is passed over.
            index += 1;
        }
        self.status.current_step_index = Some(index as i32);

        if index >= steps.len() && !paused {
            // Every step done: the canary becomes stable once it runs at full size. Background
            // analysis has nothing left to gate.
            self.status
                .analysis_runs
                .retain(|r| r.kind != RunKind::Background);
            self.wanted_runs.clear();
            let (canary_want, stable_want) = if self.router.is_some() {
                (replicas, replicas)
            } else {
                (replicas, 0)
            };
            self.set_split(stable, canary_want, stable_want);
            if self.split_reached(stable, canary_want, stable_want) {
                self.promote(stable);
                canary_status.weight = 100;
                canary_status.scale_override = None;
                if self.router.is_some() {
                    // The stable Service moves to the new version and the router's weight goes
                    // back to it; the old version drains for scaleDownDelaySeconds.
                    let delay = self
                        .spec
                        .strategy
                        .canary
                        .as_ref()
                        .and_then(|c| c.scale_down_delay_seconds)
                        .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS);
                    canary_status.scale_down_revision = Some(stable.to_owned());
                    canary_status.scale_down_at =
                        Some(Time(self.now + SignedDuration::from_secs(i64::from(delay))));
                }
                self.status.canary = Some(canary_status);
                self.finish_on_stable(&self.updated.clone());
                return;
            }
            if self.router.is_some() {
                self.traffic_state = Some(traffic::TrafficState {
                    canary_weight: self.routable_weight(canary_status.weight),
                    routes: self.header_routes(steps, index),
                });
            }
            self.waiting_for_pods = true;
            self.status.phase = Phase::Progressing;
            self.status.message = format!(
                "promoting: {} of {replicas} pods of the new version available",
                self.observed.available(&self.updated)
            );
        } else {
            // Hold the split of the step we are at (its weight, or the last one reached).
            let weight = match steps.get(index).and_then(|s| s.set_weight) {
                Some(w) if !paused => w,
                _ => canary_status.weight,
            };
            let (canary_want, stable_want) = self.split_for(weight, canary_status.scale_override);
            self.set_split(stable, canary_want, stable_want);
            if self.router.is_some() {
                self.traffic_state = Some(traffic::TrafficState {
                    canary_weight: self.routable_weight(canary_status.weight),
                    routes: self.header_routes(steps, index),
                });
            }
            self.waiting_for_pods = waiting;
            self.status.phase = if paused || blocked_on_pause {
                Phase::Paused
            } else {
                Phase::Progressing
            };
            self.status.message = match &analysing {
                Some(run) => format!("step {}/{}: analysis {run} running", index + 1, steps.len()),
                None => format!(
                    "step {}/{}: {}",
                    index + 1,
                    steps.len(),
                    describe_step(steps.get(index), paused)
                ),
            };
            let inconclusive = self
                .status
                .pause_conditions
                .iter()
                .any(|p| p.reason == analysis::REASON_ANALYSIS_INCONCLUSIVE);
            if inconclusive && (paused || blocked_on_pause) {
                // Name the run and the metric that could not decide, so a person knows what
                // to look at before promoting.
                let why = self
                    .status
                    .analysis_runs
                    .iter()
                    .filter(|r| r.phase == ::analysis::Phase::Inconclusive && !r.dismissed)
                    .find_map(|r| {
                        let run = self.observed.analysis_runs.get(&r.name)?;
                        Some(format!(
                            "analysis run {} is inconclusive: {}",
                            r.name, run.message
                        ))
                    })
                    .unwrap_or_else(|| "analysis inconclusive".into());
                self.status.message = format!(
                    "step {}/{}: paused: {why}; promote the step or abort",
                    index + 1,
                    steps.len()
                );
            }
        }
        self.status.canary = Some(canary_status);
        self.pin_services(stable, &self.updated.clone());
    }

    fn step_done(&mut self, index: usize, count: usize, what: String) {
        let message = format!("step {}/{count} done: {what}", index + 1);
        self.event(EventType::Normal, "StepCompleted", message);
    }

    /// Targets: the new version `canary` pods, stable `stable_pods`, every other version 0.
    fn set_split(&mut self, stable: &str, canary: i32, stable_pods: i32) {
        self.targets.insert(self.updated.clone(), canary);
        self.targets.insert(stable.to_owned(), stable_pods);
        // Growing stable first keeps it whole when the canary shrinks; otherwise the canary.
        let stable_grows = self
            .observed
            .replica_set(stable)
            .map_or(0, |rs| rs.replicas)
            < stable_pods;
        self.order = if stable_grows {
            vec![stable.to_owned(), self.updated.clone()]
        } else {
            vec![self.updated.clone(), stable.to_owned()]
        };
    }

    /// The new version has `canary` pods, all available, and every other version has shrunk
    /// to its target.
    fn split_reached(&self, stable: &str, canary: i32, stable_pods: i32) -> bool {
        let canary_ok = self
            .observed
            .replica_set(&self.updated)
            .map_or(canary == 0, |rs| {
                rs.replicas == canary && rs.available >= canary
            });
        let stable_ok = self
            .observed
            .replica_set(stable)
            .map_or(stable_pods == 0, |rs| {
                rs.replicas == stable_pods && rs.available >= stable_pods
            });
        let others_gone = self
            .observed
            .replica_sets
            .iter()
            .filter(|rs| rs.hash != stable && rs.hash != self.updated)
            .all(|rs| rs.replicas == 0);
        canary_ok && stable_ok && others_gone
    }

    fn promote(&mut self, previous: &str) {
        self.status.stable_revision = Some(self.updated.clone());
        let message = format!(
            "revision {} promoted to stable (was {previous})",
            self.updated
        );
        self.event(EventType::Normal, "Promoted", message);
    }

    fn blue_green(&mut self, stable: &str) {
        let Some(bg) = self.spec.strategy.blue_green.clone() else {
            return;
        };
        let replicas = self.replicas();
        let paused = self.user_paused();
        if paused {
            self.keep_runs();
        }
        let preview_count = bg.preview_replica_count.unwrap_or(replicas).min(replicas);
        let new_available = self.observed.available(&self.updated);
        let preview_ready = new_available >= preview_count;
        if preview_ready && self.blue_green_status().ready_since.is_none() {
            self.blue_green_status().ready_since = Some(Time(self.now));
        }
        let auto_at = self
            .status
            .blue_green
            .as_ref()
            .and_then(|s| s.ready_since.clone())
            .map(|t| {
                t.0 + SignedDuration::from_secs(i64::from(bg.auto_promotion_seconds.unwrap_or(0)))
            });
        let decided = self.approved(0);
        let full = self.is_full();
        let auto =
            bg.auto_promotion_enabled != Some(false) && auto_at.is_some_and(|at| self.now >= at);
        // The switch waits for the pre-promotion analysis of the ready preview.
        let mut analysis_message = None;
        let mut inconclusive = false;
        if preview_ready
            && !full
            && let Some(pre) = &bg.pre_promotion_analysis
        {
            let kind = RunKind::PrePromotion;
            match self.gate(kind, pre, "spec.strategy.blueGreen.prePromotionAnalysis") {
                Gate::Passed => {}
                Gate::Failed(why) => return self.abort_now("AnalysisFailed", why),
                Gate::Inconclusive(_) if decided => self.dismiss(kind),
                Gate::Inconclusive(why) => {
                    self.pause_inconclusive(&why);
                    inconclusive = true;
                    analysis_message = Some(format!(
                        "pre-promotion analysis inconclusive: promote or abort ({why})"
                    ));
                }
                Gate::Running => {
                    analysis_message = Some(format!(
                        "pre-promotion analysis {} running",
                        self.run_name(kind)
                    ));
                }
            }
        }
        let promoting = !paused && preview_ready && analysis_message.is_none() && (decided || auto);
        if !promoting
            && preview_ready
            && bg.auto_promotion_enabled != Some(false)
            && let Some(at) = auto_at
        {
            self.wake_at(at);
        }

        let new_target = if promoting || decided {
            replicas
        } else {
            preview_count
        };
        self.targets.insert(self.updated.clone(), new_target);
        self.targets.insert(stable.to_owned(), replicas);
        self.order = vec![stable.to_owned(), self.updated.clone()];
        self.urgent = true;

        if promoting
            && new_available >= replicas
            && !full
            && let Some(post) = &bg.post_promotion_analysis
        {
            // The active Service moves to the new version now; it becomes stable, and the old
            // version may go, only once the post-promotion analysis passes.
            self.active_on_new = true;
            let kind = RunKind::PostPromotion;
            let message =
                match self.gate(kind, post, "spec.strategy.blueGreen.postPromotionAnalysis") {
                    Gate::Passed => None,
                    Gate::Failed(why) => return self.abort_now("AnalysisFailed", why),
                    Gate::Inconclusive(why) => {
                        self.pause_inconclusive(&why);
                        inconclusive = true;
                        Some(format!(
                            "post-promotion analysis inconclusive: promote --full or abort ({why})"
                        ))
                    }
                    Gate::Running => Some(format!(
                        "switched to {}: post-promotion analysis {} running",
                        self.updated,
                        self.run_name(kind)
                    )),
                };
            if let Some(message) = message {
                self.status.phase = if inconclusive {
                    Phase::Paused
                } else {
                    Phase::Progressing
                };
                self.status.message = message;
                self.pin_services(stable, &self.updated.clone());
                return;
            }
        }
        if promoting && new_available >= replicas {
            // Switch the active Service, then keep the old version for scaleDownDelaySeconds.
            let delay = bg
                .scale_down_delay_seconds
                .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS);
            let until = self.now + SignedDuration::from_secs(i64::from(delay));
            let status = self.blue_green_status();
            status.scale_down_revision = Some(stable.to_owned());
            status.scale_down_at = Some(Time(until));
            self.promote(stable);
            self.status
                .pause_conditions
                .retain(|p| p.reason != REASON_BLUE_GREEN_PAUSE);
            let updated = self.updated.clone();
            self.targets.clear();
            self.finish_on_stable(&updated);
            return;
        }
        self.waiting_for_pods = new_available < new_target;
        let waiting_for_decision =
            preview_ready && !promoting && bg.auto_promotion_enabled == Some(false);
        if waiting_for_decision
            && !self
                .status
                .pause_conditions
                .iter()
                .any(|p| p.reason == REASON_BLUE_GREEN_PAUSE)
        {
            self.status.pause_conditions.push(PauseCondition {
                reason: REASON_BLUE_GREEN_PAUSE.into(),
                start_time: Time(self.now),
            });
        }
        self.status.phase = if paused || waiting_for_decision || inconclusive {
            Phase::Paused
        } else {
            Phase::Progressing
        };
        self.status.message = if let Some(message) = analysis_message {
            message
        } else if waiting_for_decision {
            format!("preview of {} ready: waiting for promotion", self.updated)
        } else if promoting {
            format!("promoting: {new_available} of {replicas} pods of the new version available")
        } else {
            format!("preview: {new_available} of {preview_count} pods of the new version available")
        };
        self.pin_services(stable, &self.updated.clone());
    }

    /// A/B: B runs whole beside A; once it is ready the matching requests go to it for
    /// `duration`, under analysis; then it is promoted, by itself or by a decision.
    fn ab_test(&mut self, stable: &str, ab: &AbTest) {
        let replicas = self.replicas();
        let paused = self.user_paused();
        if paused {
            self.keep_runs();
        }
        let updated = self.updated.clone();
        self.targets.insert(stable.to_owned(), replicas);
        self.targets.insert(updated.clone(), replicas);
        self.order = vec![stable.to_owned(), updated.clone()];
        self.urgent = true;
        let available = self.observed.available(&updated);
        let mut test = self.status.ab_test.clone().unwrap_or_default();
        if available < replicas.max(1) {
            self.waiting_for_pods = true;
            self.status.phase = if paused {
                Phase::Paused
            } else {
                Phase::Progressing
            };
            self.status.message = format!("B: {available} of {replicas} pods available");
            self.status.ab_test = Some(test);
            self.pin_services(stable, &updated);
            return;
        }
        let routes = ab_routes(ab).unwrap_or_default();
        self.traffic_state = Some(traffic::TrafficState {
            canary_weight: 0,
            routes,
        });
        let started = match &test.started_at {
            Some(t) => t.0,
            None => {
                test.started_at = Some(Time(self.now));
                let message = format!("A/B test of revision {updated} started for {}", ab.duration);
                self.event(EventType::Normal, "AbTestStarted", message);
                self.now
            }
        };
        let duration = humantime::parse_duration(&ab.duration).unwrap_or_default();
        let ends = started + SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX);
        let ended = self.now >= ends;
        if !ended {
            self.wake_at(ends);
        }
        let full = self.is_full();
        let mut message = format!("A/B test running until {ends}");
        let mut verdict = ended || full;
        let mut inconclusive = false;
        if !full
            && !test.passed
            && let Some(analysis) = &ab.analysis
        {
            let kind = RunKind::AbTest;
            match self.gate(kind, analysis, "spec.strategy.abTest.analysis") {
                Gate::Failed(why) => return self.abort_now("AnalysisFailed", why),
                Gate::Inconclusive(_) if self.approved(0) => self.dismiss(kind),
                Gate::Inconclusive(why) => {
                    self.pause_inconclusive(&why);
                    message = format!("A/B analysis inconclusive: promote or abort ({why})");
                    inconclusive = true;
                    verdict = false;
                }
                Gate::Passed => {}
                Gate::Running => {
                    verdict = false;
                    if ended {
                        // The test's time is up: the run is stopped and decides with what it has.
                        let name = self.run_name(kind);
                        self.wanted_runs.retain(|n| n != &name);
                        message = format!("A/B test over: analysis run {name} finishing");
                    }
                }
            }
        }
        if verdict && !test.passed {
            test.passed = true;
            let message = format!("A/B test of revision {updated} passed");
            self.event(EventType::Normal, "AbTestPassed", message);
        }
        if test.passed && !paused && (ab.promote == PromoteMode::Auto || self.approved(0)) {
            let delay = DEFAULT_SCALE_DOWN_DELAY_SECONDS;
            test.scale_down_revision = Some(stable.to_owned());
            test.scale_down_at = Some(Time(self.now + SignedDuration::from_secs(i64::from(delay))));
            self.status.ab_test = Some(test);
            self.promote(stable);
            self.finish_on_stable(&updated);
            return;
        }
        let waiting_for_decision = test.passed;
        if waiting_for_decision {
            message = "A/B test passed: waiting for promotion".into();
            if !self
                .status
                .pause_conditions
                .iter()
                .any(|p| p.reason == REASON_AB_TEST_PAUSE)
            {
                self.status.pause_conditions.push(PauseCondition {
                    reason: REASON_AB_TEST_PAUSE.into(),
                    start_time: Time(self.now),
                });
            }
        }
        self.status.phase = if paused || inconclusive || waiting_for_decision {
            Phase::Paused
        } else {
            Phase::Progressing
        };
        self.status.message = message;
        self.status.ab_test = Some(test);
        self.pin_services(stable, &updated);
    }

    fn rolling(&mut self, stable: &str) {
        let replicas = self.replicas();
        let mut paused = self.user_paused();
        if paused {
            self.keep_runs();
        }
        let mut message = "paused".to_owned();
        if !self.is_full()
            && let Some(background) = self
                .spec
                .strategy
                .rolling_update
                .as_ref()
                .and_then(|r| r.analysis.as_ref())
        {
            let kind = RunKind::Background;
            match self.gate(kind, background, "spec.strategy.rollingUpdate.analysis") {
                Gate::Failed(why) => return self.abort_now("AnalysisFailed", why),
                Gate::Inconclusive(_) if self.approved(0) => self.dismiss(kind),
                Gate::Inconclusive(why) => {
                    self.pause_inconclusive(&why);
                    message = format!("paused: analysis inconclusive; promote or abort ({why})");
                    paused = true;
                }
                Gate::Passed | Gate::Running => {}
            }
        }
        if paused {
            // Hold the current sizes.
            for rs in &self.observed.replica_sets {
                self.targets.insert(rs.hash.clone(), rs.replicas);
            }
            self.status.phase = Phase::Paused;
            self.status.message = message;
            return;
        }
        self.targets.insert(self.updated.clone(), replicas);
        self.order = vec![self.updated.clone()];
        let done = self
            .observed
            .replica_set(&self.updated)
            .is_some_and(|rs| rs.replicas == replicas && rs.available >= replicas)
            && self
                .observed
                .replica_sets
                .iter()
                .filter(|rs| rs.hash != self.updated)
                .all(|rs| rs.replicas == 0);
        if done {
            self.promote(stable);
            self.finish_on_stable(&self.updated.clone());
            return;
        }
        self.waiting_for_pods = true;
        self.status.phase = Phase::Progressing;
        self.status.message = format!(
            "rolling: {} of {replicas} pods of the new version available",
            self.observed.available(&self.updated)
        );
    }

    /// Time waiting for pods counts toward progressDeadlineSeconds; any new available pod of
    /// the new version, or a step, restarts the count.
    fn check_progress_deadline(&mut self) {
        let progressed = self.status.current_step_index != self.previous.current_step_index
            || self
                .observed
                .replica_set(&self.updated)
                .map_or(0, |rs| rs.ready)
                != self.previous.updated_replicas;
        if !self.waiting_for_pods || self.status.abort {
            self.status.waiting_since = None;
            return;
        }
        let since = match (&self.status.waiting_since, progressed) {
            (Some(t), false) => t.0,
            _ => self.now,
        };
        self.status.waiting_since = Some(Time(since));
        let deadline = self
            .spec
            .progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
        let at = since + SignedDuration::from_secs(i64::from(deadline));
        if self.now >= at {
            let why = format!("no progress for {deadline}s while waiting for pods");
            if self.spec.progress_deadline_abort != Some(false) && !self.is_stable_updated() {
                self.abort(
                    "ProgressDeadlineExceeded",
                    format!("progress deadline exceeded: {why}"),
                );
                let stable = self.status.stable_revision.clone().unwrap_or_default();
                self.targets.clear();
                self.selectors.clear();
                self.hold_aborted(&stable);
            } else {
                // Not an abort, still a transition: said with an Event (and so counted), once.
                if self.previous.phase != Phase::Degraded || self.previous.message != why {
                    self.event(EventType::Warning, "ProgressStalled", why.clone());
                }
                self.status.phase = Phase::Degraded;
                self.status.message = why;
            }
        } else {
            self.wake_at(at);
        }
    }

    fn finish(mut self) -> Plan {
        let now = self.now;
        let generation = self.status.observed_generation;
        // A bound that cannot be read stops the rollout as InvalidSpec (validate() reads them
        // first): pods never move by a guessed number.
        let bounds = match (self.invalid.take(), self.bounds()) {
            (None, Ok(bounds)) => bounds,
            (Some(invalid), _) | (None, Err(invalid)) => {
                let message = format!("{}: {}", invalid.field, invalid.message);
                let changed = !self.previous.conditions.iter().any(|c| {
                    c.type_ == "InvalidSpec" && c.status == "True" && c.message == message
                });
                self.status.phase = Phase::Degraded;
                self.status.message = message.clone();
                set_condition(
                    &mut self.status.conditions,
                    "InvalidSpec",
                    true,
                    "InvalidSpec",
                    &message,
                    now,
                    generation,
                );
                if changed {
                    self.event(EventType::Warning, "InvalidSpec", message);
                }
                return Plan {
                    status: self.status,
                    events: self.events,
                    ..Plan::default()
                };
            }
        };
        set_condition(
            &mut self.status.conditions,
            "InvalidSpec",
            false,
            "Valid",
            "",
            now,
            generation,
        );

        refused::clear(
            &mut self.status,
            self.observed.replica_set(&self.updated).is_some(),
            now,
            generation,
        );
        let replicas = self.replicas();
        let order: Vec<&str> = self.order.iter().map(String::as_str).collect();
        let next = step_towards(
            &self.observed.replica_sets,
            &self.targets,
            &order,
            replicas,
            bounds,
            self.urgent,
        );
        let max_revision = self
            .observed
            .replica_sets
            .iter()
            .map(|rs| rs.revision)
            .max()
            .unwrap_or(0);
        let mut scale_up = Vec::new();
        let mut scale_down = Vec::new();
        for (hash, want) in next {
            let existing = self.observed.replica_set(&hash);
            let revision = match existing {
                None => Some(max_revision + 1),
                Some(rs) if hash == self.updated && rs.revision < max_revision => {
                    Some(max_revision + 1)
                }
                Some(_) => None,
            };
            if existing.is_none() && hash != self.updated {
                continue;
            }
            let current = existing.map_or(-1, |rs| rs.replicas);
            let target = ReplicaSetTarget {
                hash,
                replicas: want,
                revision,
            };
            if want > current || target.revision.is_some() {
                scale_up.push(target);
            } else if want < current {
                scale_down.push(target);
            }
        }

        // Counts and conditions for people and the scale subresource.
        let updated = self.observed.replica_set(&self.updated);
        self.status.replicas = self
            .observed
            .replica_sets
            .iter()
            .map(|rs| rs.replicas)
            .sum();
        self.status.ready_replicas = self.observed.replica_sets.iter().map(|rs| rs.ready).sum();
        self.status.available_replicas = self
            .observed
            .replica_sets
            .iter()
            .map(|rs| rs.available.min(rs.replicas))
            .sum();
        self.status.updated_replicas = updated.map_or(0, |rs| rs.ready);
        // Retiring an old version (to zero, with the new one whole) is the last act of a
        // finished rollout, not progress still to come: counting it would flip a Healthy
        // rollout back to Progressing for the reconcile that retires a version kept for
        // scaleDownDelaySeconds.
        // A restart in progress is not Healthy until its last pod is replaced: `status` waits
        // for it, and the Healthy Event comes once, at the end.
        let healthy = self.is_stable_updated()
            && self.restart_message.is_none()
            && updated.is_some_and(|rs| rs.available >= replicas && rs.replicas == replicas)
            && scale_down
                .iter()
                .all(|t| t.replicas == 0 && t.hash != self.updated);
        if self.is_stable_updated() && self.status.phase != Phase::Degraded {
            self.status.phase = if healthy {
                Phase::Healthy
            } else {
                Phase::Progressing
            };
            self.status.message = if healthy {
                format!("revision {} healthy", self.updated)
            } else {
                format!(
                    "revision {}: {} of {replicas} pods available",
                    self.updated,
                    self.observed.available(&self.updated)
                )
            };
        }
        if self.status.phase == Phase::Aborted {
            self.status.message = aborted_message(&self.updated, &self.status);
        }
        if let Some(message) = &self.restart_message
            && self.status.phase == Phase::Progressing
        {
            self.status.message = message.clone();
        }
        if healthy && self.previous.phase != Phase::Healthy {
            let message = format!("revision {} is healthy", self.updated);
            self.event(EventType::Normal, "Healthy", message);
        }
        let available = self.status.available_replicas >= replicas - bounds.unavailable;
        let phase = self.status.phase;
        set_condition(
            &mut self.status.conditions,
            "Available",
            available,
            if available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            "",
            now,
            generation,
        );
        set_condition(
            &mut self.status.conditions,
            "Healthy",
            healthy,
            phase.as_str(),
            &self.status.message.clone(),
            now,
            generation,
        );
        let paused = phase == Phase::Paused;
        set_condition(
            &mut self.status.conditions,
            "Paused",
            paused,
            if paused { "Paused" } else { "NotPaused" },
            "",
            now,
            generation,
        );
        let progressing = matches!(phase, Phase::Progressing | Phase::Paused | Phase::Healthy);
        let reason = match phase {
            Phase::Healthy => "RolloutCompleted",
            Phase::Aborted => "RolloutAborted",
            Phase::Degraded => "ProgressDeadlineExceeded",
            _ => "RolloutProgressing",
        };
        set_condition(
            &mut self.status.conditions,
            "Progressing",
            progressing,
            reason,
            &self.status.message.clone(),
            now,
            generation,
        );

        let delete = self.history_beyond_limit(&scale_up, &scale_down);
        let pod_metadata = self.role_metadata_changes(&scale_up);
        let (terminate_runs, delete_runs) = self.run_housekeeping();
        let traffic = self.spec.strategy.routed().map(|routed| TrafficPlan {
            routing: routed.routing.clone(),
            backends: traffic::Backends {
                rollout: self.name.clone(),
                stable_service: routed.stable_service.to_owned(),
                canary_service: routed.canary_service.to_owned(),
            },
            state: self.traffic_state.clone(),
        });

        let requeue_after = self.requeue.map(|at| {
            let wait = at.duration_since(now);
            Duration::try_from(wait).unwrap_or(Duration::ZERO)
        });
        Plan {
            scale_up,
            pod_metadata,
            selectors: self.selectors,
            scale_down,
            delete,
            traffic,
            create_runs: self.create_runs,
            terminate_runs,
            delete_runs,
            abort_latency_since: self.abort_latency_since,
            status: self.status,
            events: self.events,
            requeue_after,
            restart: self.restart,
        }
    }

    /// The role metadata each version's pods should carry: stableMetadata on stable, and
    /// canaryMetadata on the new version while it is a canary. Keys the Rollout's own template
    /// sets are the user's and never removed.
    fn role_metadata_changes(&self, scale_up: &[ReplicaSetTarget]) -> Vec<PodMetadataChange> {
        let Some(canary) = &self.spec.strategy.canary else {
            return Vec::new();
        };
        let empty = PodMetadata::default();
        let canary_meta = canary.canary_metadata.as_ref().unwrap_or(&empty);
        let stable_meta = canary.stable_metadata.as_ref().unwrap_or(&empty);
        if canary_meta == &empty && stable_meta == &empty {
            return Vec::new();
        }
        let template = self.spec.template.metadata.as_ref();
        let own_labels = template.and_then(|m| m.labels.clone()).unwrap_or_default();
        let own_annotations = template
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        let stable = self.status.stable_revision.as_deref();
        let mut changes = Vec::new();
        let created: Vec<ObservedReplicaSet> = scale_up
            .iter()
            .filter(|t| self.observed.replica_set(&t.hash).is_none())
            .map(|t| ObservedReplicaSet {
                name: String::new(),
                hash: t.hash.clone(),
                revision: 0,
                replicas: t.replicas,
                ready: 0,
                available: 0,
                pod_metadata: PodMetadata {
                    labels: own_labels.clone(),
                    annotations: own_annotations.clone(),
                },
            })
            .collect();
        for rs in self.observed.replica_sets.iter().chain(&created) {
            let role = if Some(rs.hash.as_str()) == stable {
                stable_meta
            } else if rs.hash == self.updated && !self.status.abort {
                canary_meta
            } else {
                &empty
            };
            let diff = |managed: [&BTreeMap<String, String>; 2],
                        want: &BTreeMap<String, String>,
                        have: &BTreeMap<String, String>,
                        own: &BTreeMap<String, String>| {
                let mut out = BTreeMap::new();
                for key in managed.iter().flat_map(|m| m.keys()) {
                    let target = want.get(key).or_else(|| own.get(key));
                    if target != have.get(key) {
                        out.insert(key.clone(), target.cloned());
                    }
                }
                out
            };
            let labels = diff(
                [&canary_meta.labels, &stable_meta.labels],
                &role.labels,
                &rs.pod_metadata.labels,
                &own_labels,
            );
            let annotations = diff(
                [&canary_meta.annotations, &stable_meta.annotations],
                &role.annotations,
                &rs.pod_metadata.annotations,
                &own_annotations,
            );
            if !labels.is_empty() || !annotations.is_empty() {
                changes.push(PodMetadataChange {
                    hash: rs.hash.clone(),
                    labels,
                    annotations,
                });
            }
        }
        changes
    }

    /// Old ReplicaSets with no pods and no role, beyond the newest `revisionHistoryLimit`.
    fn history_beyond_limit(
        &self,
        scale_up: &[ReplicaSetTarget],
        scale_down: &[ReplicaSetTarget],
    ) -> Vec<String> {
        let limit = self
            .spec
            .revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
            .max(0) as usize;
        let kept_for_a_delay = self
            .status
            .blue_green
            .as_ref()
            .and_then(|bg| bg.scale_down_revision.as_deref());
        let touched = |hash: &str| scale_up.iter().chain(scale_down).any(|t| t.hash == hash);
        let mut idle: Vec<&ObservedReplicaSet> = self
            .observed
            .replica_sets
            .iter()
            .filter(|rs| {
                rs.hash != self.updated
                    && Some(rs.hash.as_str()) != self.status.stable_revision.as_deref()
                    && Some(rs.hash.as_str()) != kept_for_a_delay
                    && rs.replicas == 0
                    && rs.ready == 0
                    && !touched(&rs.hash)
            })
            .collect();
        idle.sort_by_key(|rs| std::cmp::Reverse(rs.revision));
        idle.into_iter()
            .skip(limit)
            .map(|rs| rs.name.clone())
            .collect()
    }

    fn bounds(&self) -> Result<Bounds, InvalidSpec> {
        bounds(self.spec)
    }
}

/// maxSurge and maxUnavailable of the strategy, resolved against `spec.replicas`; a value that is
/// not a count or a percentage is an [`InvalidSpec`] at its field, never a number.
pub fn bounds(spec: &RolloutSpec) -> Result<Bounds, InvalidSpec> {
    let replicas = spec.replicas.max(0);
    let strategy = &spec.strategy;
    let declared = strategy_bounds(spec)?;
    Ok(match declared {
        Some((surge, unavailable))
            if strategy
                .canary
                .as_ref()
                .is_none_or(|c| c.traffic_routing.is_none()) =>
        {
            Bounds::resolve(surge, unavailable, replicas)
        }
        // Blue-green, and a canary with a router, keep the stable version whole: its pods go only
        // after traffic has left it.
        _ => Bounds {
            surge: replicas,
            unavailable: 0,
        },
    })
}

/// The strategy's maxSurge and maxUnavailable, read (for a canary also when a router makes them
/// unused: a value that cannot be read is wrong wherever it stands).
fn strategy_bounds(spec: &RolloutSpec) -> Result<Option<(Bound, Bound)>, InvalidSpec> {
    let strategy = &spec.strategy;
    let (field, surge, unavailable) = if let Some(c) = &strategy.canary {
        ("spec.strategy.canary", &c.max_surge, &c.max_unavailable)
    } else if let Some(r) = &strategy.rolling_update {
        (
            "spec.strategy.rollingUpdate",
            &r.max_surge,
            &r.max_unavailable,
        )
    } else {
        return Ok(None);
    };
    let read = |name: &str, value| {
        Bound::parse(value).map_err(|message| InvalidSpec {
            field: format!("{field}.{name}"),
            message,
        })
    };
    Ok(Some((
        read("maxSurge", surge)?,
        read("maxUnavailable", unavailable)?,
    )))
}

/// Canary and stable pods for a weight: the canary gets whole pods for its share, stable the
/// rest of the desired count. Without a traffic router the weight is made of pods, so a
/// setCanaryScale override can add canary pods but never take the canary below its weight.
pub fn canary_split(weight: i32, scale_override: Option<i32>, replicas: i32) -> (i32, i32) {
    let by_weight = replicas_for_weight(weight, replicas);
    let canary = scale_override.map_or(by_weight, |n| n.max(by_weight));
    (canary, replicas - by_weight)
}

/// What an aborted rollout says for as long as it stays aborted: the revision, why (the cause
/// is kept in status, as the Event that told it once is gone), and where traffic is.
fn aborted_message(revision: &str, status: &RolloutStatus) -> String {
    let stable = status.stable_revision.as_deref().unwrap_or_default();
    match &status.abort_cause {
        Some(cause) => format!("revision {revision} aborted: {cause}; traffic on stable {stable}"),
        None => format!("revision {revision} aborted; traffic on stable {stable}"),
    }
}

fn describe_step(step: Option<&CanaryStep>, paused: bool) -> String {
    let what = match step {
        Some(CanaryStep {
            set_weight: Some(w),
            ..
        }) => format!("setWeight {w}"),
        Some(CanaryStep { pause: Some(p), .. }) => match p.shown() {
            Some(d) => format!("pause {d}"),
            None => "paused until promoted".into(),
        },
        Some(CanaryStep {
            set_canary_scale: Some(_),
            ..
        }) => "setCanaryScale".into(),
        Some(CanaryStep {
            analysis: Some(_), ..
        }) => "analysis".into(),
        _ => "promoting".into(),
    };
    if paused {
        format!("{what} (rollout paused)")
    } else {
        what
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

/// The routes of an A/B test: each match is one route to B.
pub fn ab_routes(ab: &AbTest) -> Result<Vec<Vec<traffic::RequestMatch>>, InvalidSpec> {
    ab.matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("spec.strategy.abTest.match[{i}]");
            m.resolve(&field).map_err(|e| InvalidSpec {
                field,
                message: e.to_string(),
            })
        })
        .collect()
}

/// The Service at `field` is not the one at `other` (`name`): the controller pins each to a
/// version of its own, and one Service pinned to two would have its selector moved back and
/// forth on every reconcile.
fn apart(field: &str, other: &str, name: &str, service: Option<&str>) -> Result<(), InvalidSpec> {
    if service == Some(name) {
        return Err(InvalidSpec {
            field: field.into(),
            message: format!(
                "Service {name} is the {other} too; one Service cannot select both versions"
            ),
        });
    }
    Ok(())
}

/// What the schema cannot check: Services that must exist, a selector that selects the
/// template (its matchExpressions too), maxSurge and maxUnavailable that read as counts or
/// percentages (checked by the CRD as well, but a Rollout stored before that rule, or written
/// past it, must not move pods by a guessed number), durations that parse, a
/// Service for each version.
pub fn validate(spec: &RolloutSpec, observed: &Observed) -> Result<(), InvalidSpec> {
    // First: an object that cannot be read would otherwise be reported as missing.
    if let Some(invalid) = undecodable::invalid_spec(spec, &observed.undecodable) {
        return Err(invalid);
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    selector::check(&spec.selector, &labels)?;
    strategy_bounds(spec)?;
    let require = |field: &str, name: &Option<String>| -> Result<(), InvalidSpec> {
        match name {
            Some(name) if !observed.services.contains_key(name) => Err(InvalidSpec {
                field: field.into(),
                message: format!("Service {name} not found"),
            }),
            _ => Ok(()),
        }
    };
    if let Some(bg) = &spec.strategy.blue_green {
        require(
            "spec.strategy.blueGreen.activeService",
            &Some(bg.active_service.clone()),
        )?;
        require(
            "spec.strategy.blueGreen.previewService",
            &bg.preview_service,
        )?;
        apart(
            "spec.strategy.blueGreen.previewService",
            "activeService",
            &bg.active_service,
            bg.preview_service.as_deref(),
        )?;
    }
    analysis::validate_analyses(spec, &observed.templates)?;
    if let Some(problem) = &observed.router_problem {
        return Err(problem.clone());
    }
    if let Some(c) = &spec.strategy.canary
        && let Some(routing) = &c.traffic_routing
    {
        let max = routing.max_traffic_weight.unwrap_or(100);
        for (i, step) in c.steps.iter().enumerate() {
            if let Some(w) = step.set_weight
                && w > max
            {
                return Err(InvalidSpec {
                    field: format!("spec.strategy.canary.steps[{i}].setWeight"),
                    message: format!("{w} is above trafficRouting.maxTrafficWeight {max}"),
                });
            }
            let Some(route) = &step.set_header_route else {
                continue;
            };
            let field = format!("spec.strategy.canary.steps[{i}].setHeaderRoute");
            let mut conditions = Vec::new();
            for (j, m) in route.matches.iter().enumerate() {
                let resolved =
                    m.resolve(&format!("{field}.match[{j}]"))
                        .map_err(|e| InvalidSpec {
                            field: format!("{field}.match[{j}]"),
                            message: e.to_string(),
                        })?;
                conditions.push(resolved);
            }
            if routing.nginx.is_some() {
                traffic::nginx::lint(&[conditions], &field).map_err(|e| InvalidSpec {
                    field: field.clone(),
                    message: e.to_string(),
                })?;
            }
        }
    }
    if let Some(ab) = &spec.strategy.ab_test {
        require(
            "spec.strategy.abTest.stableService",
            &Some(ab.stable_service.clone()),
        )?;
        require(
            "spec.strategy.abTest.canaryService",
            &Some(ab.canary_service.clone()),
        )?;
        apart(
            "spec.strategy.abTest.canaryService",
            "stableService",
            &ab.stable_service,
            Some(&ab.canary_service),
        )?;
        humantime::parse_duration(&ab.duration).map_err(|e| InvalidSpec {
            field: "spec.strategy.abTest.duration".into(),
            message: format!("{:?} is not a duration: {e}", ab.duration),
        })?;
        let routes = ab_routes(ab)?;
        if ab.traffic_routing.nginx.is_some() {
            traffic::nginx::lint(&routes, "spec.strategy.abTest.match").map_err(|e| {
                InvalidSpec {
                    field: "spec.strategy.abTest.match".into(),
                    message: e.to_string(),
                }
            })?;
        }
    }
    if let Some(c) = &spec.strategy.canary {
        require("spec.strategy.canary.stableService", &c.stable_service)?;
        require("spec.strategy.canary.canaryService", &c.canary_service)?;
        if let Some(stable) = &c.stable_service {
            apart(
                "spec.strategy.canary.canaryService",
                "stableService",
                stable,
                c.canary_service.as_deref(),
            )?;
        }
        for (i, step) in c.steps.iter().enumerate() {
            if let Some(Err(e)) = step.pause.as_ref().and_then(|p| p.length()) {
                return Err(InvalidSpec {
                    field: format!("spec.strategy.canary.steps[{i}].pause.duration"),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
