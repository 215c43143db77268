//! The REST API's kube side: rollouts read from the reflector store, actions written as
//! `spec.paused` / `spec.decision` with a merge patch guarded by the resourceVersion they were
//! decided on, and callers checked with TokenReview and SubjectAccessReview.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::{
    Action, AnalysisRunView, AuthError, Authorizer, ControlError, MeasurementView, MetricView,
    RevisionView, RolloutControl, RolloutView, StepView, Verb,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::analysis::{AnalysisRun, MetricResult};
use crate::crd::{
    CanaryStep, Decision, GROUP, POD_TEMPLATE_HASH_LABEL, Phase, REVISION_ANNOTATION, Rollout,
    TEMPLATE_ANNOTATION,
};
use crate::hash::pod_template_hash;
use crate::reconcile::FIELD_MANAGER;

/// How many times an action is decided again when the rollout changed under it: the
/// controller's own status writes move the resourceVersion several times a step.
pub const ACT_TRIES: usize = 5;

/// How long an action waits for the store to see what it wrote.
const STORE_CATCH_UP: Duration = Duration::from_secs(2);

/// How long an authorization decision is reused.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);

pub struct KubeControl {
    client: Client,
    rollouts: Store<Rollout>,
    replica_sets: Store<ReplicaSet>,
    analysis_runs: Store<AnalysisRun>,
}

impl KubeControl {
    pub fn new(
        client: Client,
        rollouts: Store<Rollout>,
        replica_sets: Store<ReplicaSet>,
        analysis_runs: Store<AnalysisRun>,
    ) -> Self {
        Self {
            client,
            rollouts,
            replica_sets,
            analysis_runs,
        }
    }

    /// The rollout's ReplicaSets and AnalysisRuns, from the stores.
    fn parts(&self, rollout: &Rollout) -> (Vec<ReplicaSet>, Vec<AnalysisRun>) {
        let namespace = rollout.namespace();
        let replica_sets = self
            .replica_sets
            .state()
            .iter()
            .filter(|rs| rs.namespace() == namespace && owned_by(rollout, rs.as_ref()))
            .map(|rs| rs.as_ref().clone())
            .collect();
        let runs = self
            .analysis_runs
            .state()
            .iter()
            .filter(|r| r.namespace() == namespace && owned_by(rollout, r.as_ref()))
            .map(|r| r.as_ref().clone())
            .collect();
        (replica_sets, runs)
    }

    fn view(&self, rollout: &Rollout) -> RolloutView {
        let (replica_sets, runs) = self.parts(rollout);
        view(rollout, &replica_sets, &runs)
    }

    /// Waits, briefly, until the store holds the spec an action just wrote: reads answer from
    /// the store, and a pipeline's `wait` right after its promote must not take the generation
    /// before the promote for the current one and answer with the pause just promoted.
    async fn caught_up(&self, written: &Rollout) {
        let key = ObjectRef::from_obj(written);
        let deadline = Instant::now() + STORE_CATCH_UP;
        while let Some(stored) = self.rollouts.get(&key) {
            if stored.metadata.generation >= written.metadata.generation
                || Instant::now() >= deadline
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether `object` is controlled by `rollout` (its owner reference with `controller: true`).
pub fn owned_by(rollout: &Rollout, object: &impl Resource) -> bool {
    let uid = rollout.uid();
    object
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

fn revision_number(rs: &ReplicaSet) -> Option<i64> {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
}

/// What a canary step does, in a few words.
fn describe_step(step: &CanaryStep) -> String {
    if let Some(weight) = step.set_weight {
        return format!("setWeight {weight}");
    }
    if let Some(pause) = &step.pause {
        return match pause.shown() {
            Some(d) => format!("pause {d}"),
            None => "pause (until promoted)".into(),
        };
    }
    if let Some(scale) = &step.set_canary_scale {
        return match (scale.replicas, scale.weight, scale.match_traffic_weight) {
            (Some(r), _, _) => format!("setCanaryScale {r} replicas"),
            (_, Some(w), _) => format!("setCanaryScale {w}%"),
            _ => "setCanaryScale matchTrafficWeight".into(),
        };
    }
    if let Some(analysis) = &step.analysis {
        let names: Vec<&str> = analysis
            .templates
            .iter()
            .map(|t| t.template_name.as_str())
            .collect();
        return format!("analysis {}", names.join(", "));
    }
    if let Some(route) = &step.set_header_route {
        return if route.matches.is_empty() {
            "setHeaderRoute (remove)".into()
        } else {
            format!("setHeaderRoute ({} matches)", route.matches.len())
        };
    }
    "(empty step)".into()
}

fn router_name(routing: &traffic::TrafficRouting) -> &'static str {
    if routing.nginx.is_some() {
        "nginx"
    } else {
        "gatewayAPI"
    }
}

/// The API's view of a rollout, from the rollout and the ReplicaSets and AnalysisRuns it owns.
/// Pure, so that the CLI shows exactly what the REST API does.
pub fn view(rollout: &Rollout, replica_sets: &[ReplicaSet], runs: &[AnalysisRun]) -> RolloutView {
    let status = rollout.status.clone().unwrap_or_default();
    let strategy = &rollout.spec.strategy;
    let traffic_router = if let Some(c) = &strategy.canary {
        Some(c.traffic_routing.as_ref().map_or("replicas", router_name))
    } else if let Some(ab) = &strategy.ab_test {
        Some(router_name(&ab.traffic_routing))
    } else if strategy.blue_green.is_some() {
        Some("services")
    } else {
        None
    };
    let updated_role = if strategy.blue_green.is_some() {
        "preview"
    } else if strategy.rolling_update.is_some() {
        "updated"
    } else {
        "canary"
    };
    let mut revisions: Vec<RevisionView> = replica_sets
        .iter()
        .filter_map(|rs| {
            let hash = rs.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone();
            let role = if status.stable_revision.as_deref() == Some(&hash) {
                "stable"
            } else if status.updated_revision.as_deref() == Some(&hash) {
                updated_role
            } else {
                "old"
            };
            let images = rs
                .spec
                .template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .map(|p| {
                    p.containers
                        .iter()
                        .map(|c| format!("{}={}", c.name, c.image.clone().unwrap_or_default()))
                        .collect()
                })
                .unwrap_or_default();
            let rs_status = rs.status.as_ref();
            Some(RevisionView {
                revision: revision_number(rs),
                hash,
                role: role.into(),
                images,
                desired: rs.spec.replicas.unwrap_or(0),
                ready: rs_status.and_then(|s| s.ready_replicas).unwrap_or(0),
                available: rs_status.and_then(|s| s.available_replicas).unwrap_or(0),
            })
        })
        .collect();
    revisions.sort_by(|a, b| b.revision.cmp(&a.revision).then(a.hash.cmp(&b.hash)));
    let analysis_runs = status
        .analysis_runs
        .iter()
        .map(|r| {
            let run = runs.iter().find(|run| run.name_any() == r.name);
            let run_status = run.and_then(|run| run.status.as_ref());
            AnalysisRunView {
                name: r.name.clone(),
                kind: r.kind.clone(),
                phase: r.phase.clone(),
                message: run_status.map(|s| s.message.clone()).unwrap_or_default(),
                metrics: run_status
                    .map(|s| s.metric_results.iter().map(metric_view).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    RolloutView {
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.name_any(),
        generation: rollout.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        strategy: status.strategy.clone(),
        phase: status.phase.as_str().into(),
        message: status.message.clone(),
        current_step: status.current_step_index,
        steps: strategy
            .canary
            .iter()
            .flat_map(|c| c.steps.iter())
            .zip(0..)
            .map(|(step, index)| StepView {
                index,
                description: describe_step(step),
            })
            .collect(),
        paused: rollout.spec.paused == Some(true),
        aborted: status.abort,
        weight: status.canary.as_ref().map(|c| {
            // Finished: the new version is stable and has all the traffic, though the canary's
            // own weight is back at 0 for the next release.
            let finished = !status.abort
                && status.stable_revision.is_some()
                && status.stable_revision == status.updated_revision;
            if finished { 100 } else { c.weight }
        }),
        traffic_router: traffic_router.map(str::to_owned),
        stable_revision: status.stable_revision.clone(),
        updated_revision: status.updated_revision.clone(),
        revisions,
        analysis_runs,
    }
}

fn metric_view(result: &MetricResult) -> MetricView {
    MetricView {
        name: result.name.clone(),
        phase: format!("{:?}", result.phase),
        dry_run: result.dry_run,
        passed: result.tally.passed,
        failed: result.tally.failed,
        inconclusive: result.tally.inconclusive,
        errors: result.tally.errors,
        latest: result.measurements.last().map(|m| MeasurementView {
            verdict: format!("{:?}", m.judgement.verdict),
            message: m.judgement.message.clone(),
            finished_at: m.finished_at.to_string(),
            evidence: serde_json::to_value(&m.judgement.evidence).unwrap_or_default(),
        }),
    }
}

/// The `spec.template` patch that goes back to revision `to` (default: the newest revision
/// older than the current template's), or why it cannot. The template is the one the
/// ReplicaSet keeps in [`TEMPLATE_ANNOTATION`], and it must hash to the ReplicaSet's own hash,
/// so an undo never writes a template that is not the one that revision ran.
pub fn undo_patch(
    rollout: &Rollout,
    replica_sets: &[ReplicaSet],
    to: Option<i64>,
) -> Result<serde_json::Value, String> {
    let current_hash = pod_template_hash(&rollout.spec.template);
    let target = undo_target(rollout, replica_sets, to)?;
    let target_hash = target
        .labels()
        .get(POD_TEMPLATE_HASH_LABEL)
        .cloned()
        .unwrap_or_default();
    let number = revision_number(target).unwrap_or(0);
    if target_hash == current_hash {
        return Err(format!("revision {number} is the current template"));
    }
    let original = target.annotations().get(TEMPLATE_ANNOTATION).ok_or_else(|| {
        format!("revision {number}'s ReplicaSet does not keep its template ({TEMPLATE_ANNOTATION}); edit spec.template instead")
    })?;
    let template: PodTemplateSpec = serde_json::from_str(original)
        .map_err(|e| format!("revision {number}: {TEMPLATE_ANNOTATION}: {e}"))?;
    if pod_template_hash(&template) != target_hash {
        return Err(format!(
            "revision {number}: {TEMPLATE_ANNOTATION} does not hash to {target_hash}; edit spec.template instead"
        ));
    }
    let current = serde_json::to_value(&rollout.spec.template).unwrap_or_default();
    let target = serde_json::to_value(&template).unwrap_or_default();
    Ok(json!({"spec": {"template": merge_patch_between(&current, &target)}}))
}

/// The ReplicaSet of revision `to`, or of the newest revision older than the current template's.
fn undo_target<'a>(
    rollout: &Rollout,
    replica_sets: &'a [ReplicaSet],
    to: Option<i64>,
) -> Result<&'a ReplicaSet, String> {
    let current_hash = pod_template_hash(&rollout.spec.template);
    let current_revision = replica_sets
        .iter()
        .find(|rs| rs.labels().get(POD_TEMPLATE_HASH_LABEL) == Some(&current_hash))
        .and_then(revision_number);
    match to {
        Some(n) => replica_sets
            .iter()
            .find(|rs| revision_number(rs) == Some(n))
            .ok_or_else(|| format!("revision {n} is not in the rollout's history")),
        None => replica_sets
            .iter()
            .filter(|rs| rs.labels().get(POD_TEMPLATE_HASH_LABEL) != Some(&current_hash))
            .filter(|rs| match (revision_number(rs), current_revision) {
                (Some(r), Some(current)) => r < current,
                (r, None) => r.is_some(),
                _ => false,
            })
            .max_by_key(|rs| revision_number(rs))
            .ok_or_else(|| "no older revision in the rollout's history".into()),
    }
}

/// `action` as the caller meant it on `rollout` as first read: a promote of the step that was
/// current, an undo to the revision that was the one before. Decided again on a rollout that
/// changed since, it then still means that, and never promotes a step, or undoes a revision,
/// the caller did not see.
pub fn pinned(rollout: &Rollout, replica_sets: &[ReplicaSet], action: Action) -> Action {
    match action {
        Action::Promote {
            full: false,
            from_step: None,
        } => Action::Promote {
            full: false,
            from_step: rollout
                .status
                .as_ref()
                .map(|s| s.current_step_index.unwrap_or(0)),
        },
        Action::Undo { to_revision: None } => Action::Undo {
            to_revision: undo_target(rollout, replica_sets, None)
                .ok()
                .and_then(revision_number),
        },
        other => other,
    }
}

/// The JSON merge patch (RFC 7386) that turns `from` into `to`: a key `to` lacks becomes null,
/// objects are compared key by key, anything else is replaced whole.
fn merge_patch_between(from: &serde_json::Value, to: &serde_json::Value) -> serde_json::Value {
    match (from, to) {
        (serde_json::Value::Object(from), serde_json::Value::Object(to)) => {
            let mut patch = serde_json::Map::new();
            for key in from.keys().filter(|k| !to.contains_key(*k)) {
                patch.insert(key.clone(), serde_json::Value::Null);
            }
            for (key, value) in to {
                match from.get(key) {
                    Some(old) if old == value => {}
                    Some(old) => {
                        patch.insert(key.clone(), merge_patch_between(old, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            serde_json::Value::Object(patch)
        }
        _ => to.clone(),
    }
}

fn unavailable(e: kube::Error) -> ControlError {
    ControlError::Unavailable(e.to_string())
}

/// `decision` as a merge patch that replaces the stored one whole: a field it does not set is
/// written as null, so nothing of an earlier decision survives under its revision's name (a
/// merge patch leaves absent keys alone).
fn whole_decision(decision: &Decision) -> serde_json::Value {
    // Every field, listed without `..`, so that a new one does not compile until it is named.
    let every = Decision {
        revision: String::new(),
        attempt: Some(0),
        promoted_step: Some(0),
        full: Some(false),
        abort: Some(false),
        retry: Some(0),
    };
    let mut value = serde_json::to_value(decision).unwrap_or_default();
    if let (Some(fields), Ok(serde_json::Value::Object(all))) =
        (value.as_object_mut(), serde_json::to_value(&every))
    {
        for key in all.keys() {
            fields.entry(key.clone()).or_insert(serde_json::Value::Null);
        }
    }
    value
}

/// The `spec` patch an action makes, decided on `rollout` (and, for undo, the ReplicaSets it
/// owns) as read; the reason it does not apply now otherwise. Pure, so that the CLI writes the
/// very same fields.
pub fn action_patch(
    rollout: &Rollout,
    replica_sets: &[ReplicaSet],
    action: &Action,
) -> Result<serde_json::Value, String> {
    let status = rollout.status.clone().unwrap_or_default();
    let updated = status.updated_revision.clone().unwrap_or_default();
    let in_progress = !updated.is_empty() && status.stable_revision.as_deref() != Some(&updated);
    // What the controller counts for the attempt running now is kept; a decision about another
    // revision or attempt is replaced, not merged into.
    let current = rollout
        .spec
        .decision
        .clone()
        .filter(|d| d.revision == updated && d.attempt.is_none_or(|a| a == status.attempt))
        .unwrap_or_default();
    let decision = |change: &dyn Fn(&mut Decision)| {
        let mut next = Decision {
            revision: updated.clone(),
            attempt: Some(status.attempt),
            ..current.clone()
        };
        change(&mut next);
        json!({"spec": {"decision": whole_decision(&next)}})
    };
    match action {
        Action::Promote { full, from_step } => {
            if !in_progress {
                return Err(format!(
                    "nothing to promote: the rollout is {}",
                    status.phase.as_str()
                ));
            }
            if status.abort {
                return Err("the rollout is aborted: retry it first".into());
            }
            if *full {
                return Ok(decision(&|d| d.full = Some(true)));
            }
            if status.phase != Phase::Paused {
                return Err(format!(
                    "the rollout is {}, not Paused: only a paused step can be promoted (or promote with full)",
                    status.phase.as_str()
                ));
            }
            let step = status.current_step_index.unwrap_or(0);
            if let Some(from) = from_step
                && *from != step
            {
                return Err(format!("fromStep {from} is not the current step {step}"));
            }
            if current.promoted_step == Some(step) {
                return Err(format!("step {step} is already promoted"));
            }
            Ok(decision(&|d| d.promoted_step = Some(step)))
        }
        Action::Abort => {
            if !in_progress || status.abort {
                return Err(format!(
                    "nothing to abort: the rollout is {}",
                    status.phase.as_str()
                ));
            }
            Ok(decision(&|d| d.abort = Some(true)))
        }
        Action::Retry => {
            if !status.abort {
                return Err(format!(
                    "only an aborted rollout can be retried; it is {}",
                    status.phase.as_str()
                ));
            }
            // The retried attempt starts with no promote: one of the aborted attempt must not
            // approve a step of the next.
            Ok(decision(&|d| {
                d.promoted_step = None;
                d.full = None;
                d.abort = Some(false);
                d.retry = Some(status.retries + 1);
            }))
        }
        Action::Pause => Ok(json!({"spec": {"paused": true}})),
        Action::Resume => Ok(json!({"spec": {"paused": false}})),
        Action::Undo { to_revision } => undo_patch(rollout, replica_sets, *to_revision),
    }
}

impl RolloutControl for KubeControl {
    async fn list(&self, namespace: Option<&str>) -> Result<Vec<RolloutView>, ControlError> {
        let mut views: Vec<RolloutView> = self
            .rollouts
            .state()
            .iter()
            .filter(|r| namespace.is_none_or(|ns| r.namespace().as_deref() == Some(ns)))
            .map(|r| self.view(r))
            .collect();
        views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(views)
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<RolloutView, ControlError> {
        if let Some(rollout) = self.rollouts.get(&ObjectRef::new(name).within(namespace)) {
            return Ok(self.view(&rollout));
        }
        // Not in the store (yet): ask the apiserver, so a rollout created a moment ago is found.
        let rollouts: Api<Rollout> = Api::namespaced(self.client.clone(), namespace);
        match rollouts.get_opt(name).await.map_err(unavailable)? {
            Some(rollout) => Ok(self.view(&rollout)),
            None => Err(ControlError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            }),
        }
    }

    async fn act(
        &self,
        namespace: &str,
        name: &str,
        action: Action,
    ) -> Result<RolloutView, ControlError> {
        let rollouts: Api<Rollout> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(format!("{FIELD_MANAGER}-api")),
            ..PatchParams::default()
        };
        let mut action = action;
        for tried in 0..ACT_TRIES {
            let rollout = rollouts
                .get_opt(name)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ControlError::NotFound {
                    namespace: namespace.into(),
                    name: name.into(),
                })?;
            let (replica_sets, _) = self.parts(&rollout);
            if tried == 0 {
                action = pinned(&rollout, &replica_sets, action);
            }
            let mut patch =
                action_patch(&rollout, &replica_sets, &action).map_err(ControlError::Conflict)?;
            // Decided on this version: if the rollout changed since (most often by the
            // controller's own status write), the apiserver refuses the write and the action is
            // decided again on what is there now, so two callers never both act on one state
            // and a caller hears 409 only when its action no longer applies.
            patch["metadata"] = json!({"resourceVersion": rollout.resource_version()});
            match rollouts.patch(name, &params, &Patch::Merge(&patch)).await {
                Ok(written) => {
                    self.caught_up(&written).await;
                    return Ok(self.view(&written));
                }
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(ControlError::Conflict(format!(
            "the rollout changed {ACT_TRIES} times while this request was decided; look again"
        )))
    }
}

type CacheKey = (String, Option<String>, &'static str);
type CachedDecision = (Result<String, AuthError>, Instant);

/// TokenReview, then SubjectAccessReview on `rollouts` in `sluice.dev`.
pub struct KubeAuthorizer {
    client: Client,
    cache: Mutex<HashMap<CacheKey, CachedDecision>>,
}

impl KubeAuthorizer {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn review(
        &self,
        token: &str,
        namespace: Option<&str>,
        verb: Verb,
    ) -> Result<String, AuthError> {
        let unavailable = |e: kube::Error| AuthError::Unavailable(e.to_string());
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let review: TokenReview = serde_json::from_value(json!({"spec": {"token": token}}))
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let reviewed = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(unavailable)?;
        let status = reviewed.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Unauthenticated(
                status.error.unwrap_or_else(|| "token not valid".into()),
            ));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.clone().unwrap_or_default();
        let access: SubjectAccessReview = serde_json::from_value(json!({"spec": {
            "user": user.username,
            "groups": user.groups,
            "uid": user.uid,
            "extra": user.extra,
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb.as_str(),
                "group": GROUP,
                "resource": "rollouts",
            },
        }}))
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let sars: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let decided = sars
            .create(&PostParams::default(), &access)
            .await
            .map_err(unavailable)?;
        if decided.status.is_some_and(|s| s.allowed) {
            Ok(username)
        } else {
            Err(AuthError::Forbidden(format!(
                "{username} may not {} rollouts.{GROUP} in {}",
                verb.as_str(),
                namespace.unwrap_or("all namespaces")
            )))
        }
    }
}

impl Authorizer for KubeAuthorizer {
    async fn authorize(
        &self,
        token: Option<&str>,
        namespace: Option<&str>,
        verb: Verb,
    ) -> Result<String, AuthError> {
        let Some(token) = token else {
            return Err(AuthError::Unauthenticated("no bearer token".into()));
        };
        let key = (
            token.to_owned(),
            namespace.map(str::to_owned),
            verb.as_str(),
        );
        if let Some((decision, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && at.elapsed() < AUTH_CACHE_TTL
        {
            return decision.clone();
        }
        let decision = self.review(token, namespace, verb).await;
        if !matches!(decision, Err(AuthError::Unavailable(_))) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
            cache.insert(key, (decision.clone(), Instant::now()));
        }
        decision
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rollout(status: serde_json::Value, decision: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {}, "template": {}, "strategy": {"canary": {}}, "decision": decision},
            "status": status,
        }))
        .unwrap()
    }

    fn paused_at(step: i32) -> serde_json::Value {
        json!({"phase": "Paused", "stableRevision": "a", "updatedRevision": "b", "currentStepIndex": step})
    }

    #[test]
    fn actions_write_decisions_about_the_revision_rolling_out() {
        let r = rollout(paused_at(1), json!({"revision": "old", "promotedStep": 5}));
        let promote = Action::Promote {
            full: false,
            from_step: Some(1),
        };
        // The stored decision is about another revision: replaced whole, every other field null.
        assert_eq!(
            action_patch(&r, &[], &promote).unwrap(),
            json!({"spec": {"decision": {"revision": "b", "attempt": 0, "promotedStep": 1,
                                         "full": null, "abort": null, "retry": null}}})
        );
        let full = Action::Promote {
            full: true,
            from_step: None,
        };
        assert_eq!(
            action_patch(&r, &[], &full).unwrap()["spec"]["decision"]["full"],
            true
        );
        assert_eq!(
            action_patch(&r, &[], &Action::Abort).unwrap()["spec"]["decision"]["abort"],
            true
        );
        assert_eq!(
            action_patch(&r, &[], &Action::Pause).unwrap(),
            json!({"spec": {"paused": true}})
        );
    }

    /// A rollout of `image` (uid set, so it can own ReplicaSets), with canary role metadata.
    fn rollout_of(image: &str, template_labels: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "7"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": template_labels},
                             "spec": {"containers": [{"name": "app", "image": image}]}},
                "strategy": {"canary": {"canaryMetadata": {"labels": {"role": "canary"}},
                                        "stableMetadata": {"labels": {"role": "stable"}}}},
            },
            "status": {"phase": "Healthy", "stableRevision": "x", "updatedRevision": "x"},
        }))
        .unwrap()
    }

    /// The ReplicaSet the controller makes for `rollout`'s template, with role labels on it.
    fn replica_set_of(rollout: &Rollout, revision: u64, role: &str) -> ReplicaSet {
        let hash = pod_template_hash(&rollout.spec.template);
        let target = crate::plan::ReplicaSetTarget {
            hash: hash.clone(),
            replicas: 1,
            revision: Some(revision),
        };
        let change = crate::plan::PodMetadataChange {
            hash: hash.clone(),
            labels: [("role".to_owned(), Some(role.to_owned()))].into(),
            annotations: Default::default(),
        };
        crate::reconcile::new_replica_set(rollout, &target, &format!("web-{hash}"), Some(&change))
            .unwrap()
    }

    /// RFC 7386, as the apiserver applies a merge patch.
    pub(crate) fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        let Some(fields) = patch.as_object() else {
            *target = patch.clone();
            return;
        };
        if !target.is_object() {
            *target = json!({});
        }
        for (key, value) in fields {
            if value.is_null() {
                target.as_object_mut().unwrap().remove(key);
            } else {
                merge(&mut target[key], value);
            }
        }
    }

    #[test]
    fn undo_puts_back_the_template_an_older_revision_ran() {
        let labels = json!({"app": "web", "tier": "front"});
        let v1 = rollout_of("web:1", labels.clone());
        let mut v2 = rollout_of("web:2", json!({"app": "web"}));
        v2.spec.template.metadata.as_mut().unwrap().annotations =
            Some([("note".to_owned(), "v2 only".to_owned())].into());
        let v3 = rollout_of("web:3", labels.clone());
        let history = [
            replica_set_of(&v1, 1, "stable"),
            replica_set_of(&v2, 2, "stable"),
            replica_set_of(&v3, 3, "canary"),
        ];
        let undo = |from: &Rollout, to| {
            let patch = action_patch(from, &history, &Action::Undo { to_revision: to })?;
            let mut rollout = serde_json::to_value(from).unwrap();
            merge(&mut rollout, &patch);
            let rollout: Rollout = serde_json::from_value(rollout).unwrap();
            Ok::<_, String>(pod_template_hash(&rollout.spec.template))
        };
        let hash = |r: &Rollout| pod_template_hash(&r.spec.template);
        // From v3, the previous revision is v2; the label and the annotation v3 lacks come back
        // (and role labels stay off).
        assert_eq!(undo(&v3, None), Ok(hash(&v2)));
        assert_eq!(undo(&v3, Some(1)), Ok(hash(&v1)));
        // From v2 (a template change back), the one before is v1.
        assert_eq!(undo(&v2, None), Ok(hash(&v1)));
        assert_eq!(
            undo(&v3, Some(3)),
            Err("revision 3 is the current template".into())
        );
        assert_eq!(
            undo(&v3, Some(9)),
            Err("revision 9 is not in the rollout's history".into())
        );
        assert_eq!(
            undo(&v1, None),
            Err("no older revision in the rollout's history".into())
        );
        // A ReplicaSet that does not keep its template, or keeps one that is not its own, is
        // refused: an undo never guesses.
        let mut bare = replica_set_of(&v1, 1, "stable");
        bare.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(TEMPLATE_ANNOTATION);
        let error = action_patch(
            &v3,
            &[bare],
            &Action::Undo {
                to_revision: Some(1),
            },
        )
        .unwrap_err();
        assert!(error.contains("does not keep its template"), "{error}");
        let mut forged = replica_set_of(&v1, 1, "stable");
        let v2_template = serde_json::to_string(&v2.spec.template).unwrap();
        forged
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(TEMPLATE_ANNOTATION.into(), v2_template);
        let error = action_patch(
            &v3,
            &[forged],
            &Action::Undo {
                to_revision: Some(1),
            },
        )
        .unwrap_err();
        assert!(error.contains("does not hash to"), "{error}");
    }

    #[test]
    fn the_view_shows_steps_revisions_and_latest_verdicts() {
        let mut rollout = rollout_of("web:2", json!({"app": "web"}));
        let v1 = rollout_of("web:1", json!({"app": "web"}));
        let stable = replica_set_of(&v1, 1, "stable");
        let canary = replica_set_of(&rollout, 2, "canary");
        let stable_hash = pod_template_hash(&v1.spec.template);
        let canary_hash = pod_template_hash(&rollout.spec.template);
        rollout.spec.strategy.canary.as_mut().unwrap().steps = serde_json::from_value(json!([
            {"setWeight": 20}, {"pause": {}}, {"analysis": {"templates": [{"templateName": "errors"}]}}
        ]))
        .unwrap();
        rollout.status = serde_json::from_value(json!({
            "phase": "Progressing", "stableRevision": stable_hash, "updatedRevision": canary_hash,
            "currentStepIndex": 2, "canary": {"weight": 20},
            "analysisRuns": [{"name": "web-x-2-1", "kind": "step-2", "phase": "Running"}],
        }))
        .unwrap();
        let run: AnalysisRun = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": "web-x-2-1", "namespace": "shop"},
            "spec": {"metrics": [{"name": "errors", "provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "q"}}}]},
            "status": {"phase": "Running", "metricResults": [{
                "name": "errors", "phase": "Running", "tally": {"passed": 2, "failed": 0, "inconclusive": 0, "errors": 0, "consecutiveErrors": 0},
                "measurements": [
                    {"startedAt": "2026-12-01T07:00:00.000Z", "finishedAt": "2026-12-01T07:00:01.000Z",
                     "verdict": "Pass", "message": "old", "evidence": {}},
                    {"startedAt": "2026-12-01T07:01:00.000Z", "finishedAt": "2026-12-01T07:01:01.000Z",
                     "verdict": "Pass", "message": "0.004 < 0.01", "evidence": {"values": "[0.004]"}},
                ]}]},
        }))
        .unwrap();
        let view = view(&rollout, &[stable, canary], &[run]);
        let steps: Vec<&str> = view.steps.iter().map(|s| s.description.as_str()).collect();
        assert_eq!(
            steps,
            ["setWeight 20", "pause (until promoted)", "analysis errors"]
        );
        assert_eq!(view.traffic_router.as_deref(), Some("replicas"));
        let roles: Vec<(Option<i64>, &str)> = view
            .revisions
            .iter()
            .map(|r| (r.revision, r.role.as_str()))
            .collect();
        assert_eq!(roles, [(Some(2), "canary"), (Some(1), "stable")]);
        assert_eq!(view.revisions[0].images, ["app=web:2"]);
        let metric = &view.analysis_runs[0].metrics[0];
        assert_eq!((metric.name.as_str(), metric.passed), ("errors", 2));
        let latest = metric.latest.as_ref().unwrap();
        assert_eq!(
            (latest.verdict.as_str(), latest.message.as_str()),
            ("Pass", "0.004 < 0.01")
        );
        assert_eq!(latest.evidence["values"], "[0.004]");
    }

    #[test]
    fn a_finished_rollout_shows_its_weight_as_100_on_the_new_stable() {
        let weight =
            |status: serde_json::Value| view(&rollout(status, json!(null)), &[], &[]).weight;
        // The controller sets the canary's weight back to 0 when it promotes.
        let healthy = json!({"phase": "Healthy", "stableRevision": "b", "updatedRevision": "b",
                             "canary": {"weight": 0}});
        assert_eq!(weight(healthy), Some(100));
        let mut paused = paused_at(1);
        paused["canary"] = json!({"weight": 20});
        assert_eq!(weight(paused), Some(20));
        let aborted = json!({"phase": "Aborted", "abort": true, "stableRevision": "a",
                             "updatedRevision": "b", "canary": {"weight": 0}});
        assert_eq!(weight(aborted), Some(0));
    }

    #[test]
    fn actions_that_do_not_apply_now_say_why() {
        let promote = |from| Action::Promote {
            full: false,
            from_step: from,
        };
        let cases = [
            (
                rollout(paused_at(1), json!(null)),
                promote(Some(2)),
                "fromStep 2 is not the current step 1",
            ),
            (
                rollout(paused_at(1), json!({"revision": "b", "promotedStep": 1})),
                promote(None),
                "step 1 is already promoted",
            ),
            (
                rollout(
                    json!({"phase": "Progressing", "stableRevision": "a", "updatedRevision": "b"}),
                    json!(null),
                ),
                promote(None),
                "not Paused",
            ),
            (
                rollout(
                    json!({"phase": "Healthy", "stableRevision": "b", "updatedRevision": "b"}),
                    json!(null),
                ),
                Action::Abort,
                "nothing to abort",
            ),
            (
                rollout(paused_at(1), json!(null)),
                Action::Retry,
                "only an aborted rollout can be retried",
            ),
        ];
        for (r, action, why) in cases {
            let error = action_patch(&r, &[], &action).unwrap_err();
            assert!(error.contains(why), "{action:?}: {error}");
        }
        let aborted = rollout(
            json!({"phase": "Aborted", "abort": true, "retries": 2, "stableRevision": "a", "updatedRevision": "b"}),
            json!({"revision": "b", "abort": true, "retry": 2}),
        );
        assert_eq!(
            action_patch(&aborted, &[], &Action::Retry).unwrap(),
            json!({"spec": {"decision": {"revision": "b", "attempt": 0, "abort": false, "retry": 3,
                                         "promotedStep": null, "full": null}}})
        );
    }

    #[test]
    fn an_undo_decided_again_goes_to_the_revision_the_caller_saw_as_previous() {
        let labels = json!({"app": "web"});
        let v1 = rollout_of("web:1", labels.clone());
        let v2 = rollout_of("web:2", labels.clone());
        let v3 = rollout_of("web:3", labels);
        let history = [
            replica_set_of(&v1, 1, "stable"),
            replica_set_of(&v2, 2, "stable"),
            replica_set_of(&v3, 3, "canary"),
        ];
        let undo = Action::Undo { to_revision: None };
        let pinned_undo = pinned(&v3, &history, undo);
        assert_eq!(
            pinned_undo,
            Action::Undo {
                to_revision: Some(2)
            }
        );
        // Once another undo put v2 back, this one does not go on to v1.
        let error = action_patch(&v2, &history, &pinned_undo).unwrap_err();
        assert_eq!(error, "revision 2 is the current template");
    }

    /// What "the controller" does to the stored rollout between an action's read and its
    /// write, once per read, for the first `races` reads.
    type Race = Box<dyn FnMut(&mut serde_json::Value) + Send>;

    struct Stored {
        rollout: serde_json::Value,
        version: u64,
        races: usize,
        race: Race,
        patches: usize,
    }

    /// An apiserver holding one Rollout, as far as `act` needs one: GET answers it; a merge
    /// PATCH that carries a resourceVersion other than the stored one is a 409, as the
    /// apiserver's optimistic concurrency answers.
    #[derive(Clone)]
    struct FakeApiServer(std::sync::Arc<Mutex<Stored>>);

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    impl FakeApiServer {
        fn new(rollout: &Rollout, races: usize, race: Race) -> Self {
            let mut rollout = serde_json::to_value(rollout).unwrap();
            rollout["metadata"]["resourceVersion"] = json!("1");
            rollout["metadata"]["generation"] = json!(1);
            Self(std::sync::Arc::new(Mutex::new(Stored {
                rollout,
                version: 1,
                races,
                race,
                patches: 0,
            })))
        }

        fn control(&self) -> KubeControl {
            self.control_with_store().0
        }

        /// With the writer of its rollout store, to play the reflector.
        fn control_with_store(
            &self,
        ) -> (
            KubeControl,
            kube::runtime::reflector::store::Writer<Rollout>,
        ) {
            let client = Client::new(self.clone(), "shop");
            let (rollouts, writer) = kube::runtime::reflector::store();
            let (replica_sets, _) = kube::runtime::reflector::store();
            let (runs, _) = kube::runtime::reflector::store();
            (
                KubeControl::new(client, rollouts, replica_sets, runs),
                writer,
            )
        }

        fn rollout(&self) -> Rollout {
            serde_json::from_value(self.stored().rollout.clone()).unwrap()
        }

        fn stored(&self) -> std::sync::MutexGuard<'_, Stored> {
            self.0.lock().unwrap()
        }
    }

    impl Stored {
        fn bump(&mut self) {
            self.version += 1;
            self.rollout["metadata"]["resourceVersion"] = json!(self.version.to_string());
        }
    }

    impl tower_service::Service<http::Request<kube::client::Body>> for FakeApiServer {
        type Response = http::Response<kube::client::Body>;
        type Error = BoxError;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
        >;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
            let server = self.clone();
            Box::pin(async move {
                let method = request.method().clone();
                let body = request.into_body().collect_bytes().await?;
                let mut guard = server.stored();
                let stored = &mut *guard;
                let (code, answer) = if method == http::Method::GET {
                    let answer = stored.rollout.clone();
                    if stored.races > 0 {
                        stored.races -= 1;
                        (stored.race)(&mut stored.rollout);
                        stored.bump();
                    }
                    (200, answer)
                } else {
                    stored.patches += 1;
                    let patch: serde_json::Value = serde_json::from_slice(&body)?;
                    if patch["metadata"]["resourceVersion"]
                        != stored.rollout["metadata"]["resourceVersion"]
                    {
                        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "Conflict", "code": 409,
                            "message": "the object has been modified"});
                        (409, status)
                    } else {
                        merge(&mut stored.rollout, &patch);
                        if patch.get("spec").is_some() {
                            let generation = stored.rollout["metadata"]["generation"].as_i64();
                            stored.rollout["metadata"]["generation"] =
                                json!(generation.unwrap_or(0) + 1);
                        }
                        stored.bump();
                        (200, stored.rollout.clone())
                    }
                };
                let response = http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&answer)?))?;
                Ok(response)
            })
        }
    }

    fn promote_step(step: i32) -> Action {
        Action::Promote {
            full: false,
            from_step: Some(step),
        }
    }

    /// The controller's own status writes move the resourceVersion under a promote: decided
    /// again on what is there, it lands, and 409 is left for a promote that no longer applies.
    #[tokio::test]
    async fn a_promote_is_decided_again_when_only_the_controllers_status_moved() {
        let paused = rollout(paused_at(1), json!(null));
        let status_write: Race = Box::new(|r| r["status"]["readyReplicas"] = json!(4));
        let server = FakeApiServer::new(&paused, 3, status_write);
        let view = server
            .control()
            .act("shop", "web", promote_step(1))
            .await
            .unwrap();
        assert_eq!(view.current_step, Some(1));
        assert_eq!(
            server.stored().patches,
            4,
            "three refused writes, then the one that landed"
        );
        assert_eq!(
            server.rollout().spec.decision.unwrap().promoted_step,
            Some(1)
        );

        // Status moving on every read: after ACT_TRIES, a 409 that says so.
        let restless: Race = Box::new(|r| r["status"]["readyReplicas"] = json!(3));
        let server = FakeApiServer::new(&paused, usize::MAX, restless);
        let error = server
            .control()
            .act("shop", "web", promote_step(1))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ControlError::Conflict(format!(
                "the rollout changed {ACT_TRIES} times while this request was decided; look again"
            ))
        );
        assert_eq!(server.stored().patches, ACT_TRIES);
    }

    /// Reads answer from the store: a pipeline's `wait` right after its promote must see the
    /// promote's generation, not answer with the pause just promoted.
    #[tokio::test]
    async fn an_action_answers_once_the_store_holds_what_it_wrote() {
        use kube::runtime::watcher::Event;
        let paused = rollout(paused_at(1), json!(null));
        let server = FakeApiServer::new(&paused, 0, Box::new(|_| {}));
        let (control, mut writer) = server.control_with_store();
        writer.apply_watcher_event(&Event::Apply(server.rollout()));
        let reflector = {
            let server = server.clone();
            tokio::spawn(async move {
                // The watch event of the write arrives a moment after the write's answer.
                while server.stored().patches == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                writer.apply_watcher_event(&Event::Apply(server.rollout()));
            })
        };
        control.act("shop", "web", promote_step(1)).await.unwrap();
        let seen = control.get("shop", "web").await.unwrap();
        assert_eq!(seen.generation, 2, "a read right after the action");
        reflector.await.unwrap();
    }

    #[tokio::test]
    async fn a_promote_decided_again_stays_about_the_step_the_caller_saw() {
        // Another pipeline promoted step 1 and the rollout moved on to its pause at step 3
        // between this promote's read and its write: a plain promote must not approve step 3.
        let paused = rollout(paused_at(1), json!(null));
        let moved_on: Race = Box::new(|r| {
            r["spec"]["decision"] = json!({"revision": "b", "attempt": 0, "promotedStep": 1});
            r["status"]["currentStepIndex"] = json!(3);
        });
        let server = FakeApiServer::new(&paused, 1, moved_on);
        let plain = Action::Promote {
            full: false,
            from_step: None,
        };
        let error = server
            .control()
            .act("shop", "web", plain)
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ControlError::Conflict("fromStep 1 is not the current step 3".into())
        );
        assert_eq!(
            server.stored().rollout["spec"]["decision"]["promotedStep"],
            1
        );

        // Another pipeline's promote of the same step won: this one no longer applies.
        let won: Race = Box::new(|r| {
            r["spec"]["decision"] = json!({"revision": "b", "attempt": 0, "promotedStep": 1});
        });
        let server = FakeApiServer::new(&paused, 1, won);
        let error = server
            .control()
            .act("shop", "web", promote_step(1))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            ControlError::Conflict("step 1 is already promoted".into())
        );
    }
}
