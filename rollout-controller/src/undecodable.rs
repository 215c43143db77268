//! What the controller does about the objects it watches but cannot decode (`crate::decode`):
//! a rollout that names or owns one is InvalidSpec with the decode error (`observe`, for the
//! planner); the object itself gets a Warning Event, and a Rollout that cannot be decoded is
//! Degraded through a status merge patch, which needs no typed object (`report`). The number of
//! such objects by kind is the gauge `sluice_undecodable_objects`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::crd::Rollout;
use crate::crd::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use crate::decode::{Registry, Tolerant, Undecodable as Object};
use crate::owner::owned_by;
use crate::plan::runs::referenced_templates;
use crate::plan::services::referenced_services;
use crate::plan::undecodable::Undecodable;
use crate::reconcile::{Context, FIELD_MANAGER, wrote};

/// Event reason on an object the controller cannot decode.
pub(crate) const REASON: &str = "Undecodable";
/// Condition reason on a Rollout the controller cannot decode (its condition is `InvalidSpec`,
/// which the planner clears once the rollout decodes again).
const CONDITION_REASON: &str = "Undecodable";
/// How often failed reports are tried again when nothing changes.
const RETRY: Duration = Duration::from_secs(30);

/// The undecodable objects of every kind the controller watches.
#[derive(Clone)]
pub(crate) struct Undecodables {
    pub rollouts: Registry<Rollout>,
    pub replica_sets: Registry<ReplicaSet>,
    pub services: Registry<Service>,
    pub analysis_runs: Registry<AnalysisRun>,
    pub templates: Registry<AnalysisTemplate>,
    pub cluster_templates: Registry<ClusterAnalysisTemplate>,
    changed: Arc<Notify>,
}

impl Default for Undecodables {
    fn default() -> Self {
        let changed = Arc::new(Notify::new());
        Self {
            rollouts: Registry::new(changed.clone()),
            replica_sets: Registry::new(changed.clone()),
            services: Registry::new(changed.clone()),
            analysis_runs: Registry::new(changed.clone()),
            templates: Registry::new(changed.clone()),
            cluster_templates: Registry::new(changed.clone()),
            changed,
        }
    }
}

/// The objects `rollout` names (templates, Services) or owns (ReplicaSets, AnalysisRuns) that
/// do not decode.
pub(crate) fn observe(rollout: &Rollout, namespace: &str, all: &Undecodables) -> Vec<Undecodable> {
    let mut found = Vec::new();
    for key in referenced_templates(&rollout.spec) {
        let bad = if key.cluster_scope {
            all.cluster_templates.get(&ObjectRef::new(&key.name))
        } else {
            all.templates
                .get(&ObjectRef::new(&key.name).within(namespace))
        };
        if let Some(bad) = bad {
            found.push(Undecodable::Template {
                key,
                error: bad.error.clone(),
            });
        }
    }
    for name in referenced_services(rollout) {
        if let Some(bad) = all.services.get(&ObjectRef::new(&name).within(namespace)) {
            found.push(Undecodable::Service {
                name,
                error: bad.error.clone(),
            });
        }
    }
    let owned = |object: &Object| {
        object.metadata.namespace.as_deref() == Some(namespace)
            && owned_by(rollout, &object.metadata)
    };
    for bad in all.replica_sets.state().iter().filter(|o| owned(o)) {
        found.push(Undecodable::ReplicaSet {
            name: bad.metadata.name.clone().unwrap_or_default(),
            error: bad.error.clone(),
        });
    }
    for bad in all.analysis_runs.state().iter().filter(|o| owned(o)) {
        found.push(Undecodable::AnalysisRun {
            name: bad.metadata.name.clone().unwrap_or_default(),
            error: bad.error.clone(),
        });
    }
    found
}

/// Reports every undecodable object once per distinct error, while this replica acts (`may_act`):
/// an Event on it, and for a Rollout its Degraded status. Runs until `may_act` closes.
pub(crate) async fn report(ctx: Arc<Context>, mut may_act: watch::Receiver<bool>) {
    let all = ctx.undecodable.clone();
    // (kind, uid, error) reported by this process; what is no longer undecodable is dropped.
    let mut reported: HashSet<(String, String, String)> = HashSet::new();
    loop {
        if may_act.wait_for(|acting| *acting).await.is_err() {
            return;
        }
        let mut present = HashSet::new();
        for bad in all.rollouts.state() {
            let key = report_key::<Rollout>(&bad);
            if !reported.contains(&key) && degrade_rollout(&ctx, &bad).await {
                reported.insert(key.clone());
            }
            present.insert(key);
        }
        present.extend(report_kind(&ctx, &all.replica_sets, &mut reported, "").await);
        present.extend(report_kind(&ctx, &all.services, &mut reported, "").await);
        present.extend(report_kind(&ctx, &all.analysis_runs, &mut reported, "").await);
        let users = "; rollouts that use it are Degraded until it is fixed";
        present.extend(report_kind(&ctx, &all.templates, &mut reported, users).await);
        present.extend(report_kind(&ctx, &all.cluster_templates, &mut reported, users).await);
        reported.retain(|key| present.contains(key));
        tokio::select! {
            () = all.changed.notified() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

fn report_key<K: Resource<DynamicType = ()>>(bad: &Object) -> (String, String, String) {
    (
        K::kind(&()).into_owned(),
        bad.metadata.uid.clone().unwrap_or_default(),
        bad.error.clone(),
    )
}

/// An Event on each undecodable object of one kind not reported yet; the keys of all of them.
async fn report_kind<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    registry: &Registry<K>,
    reported: &mut HashSet<(String, String, String)>,
    consequence: &str,
) -> Vec<(String, String, String)> {
    let mut keys = Vec::new();
    for bad in registry.state() {
        let key = report_key::<K>(&bad);
        if !reported.contains(&key) {
            let note = format!(
                "the controller cannot decode this {}{consequence}: {}",
                K::kind(&()),
                bad.error
            );
            warn!(
                kind = %K::kind(&()),
                name = bad.metadata.name.as_deref().unwrap_or_default(),
                namespace = bad.metadata.namespace.as_deref().unwrap_or_default(),
                error = %bad.error,
                "object cannot be decoded"
            );
            if publish::<K>(ctx, &bad, note).await {
                reported.insert(key.clone());
            }
        }
        keys.push(key);
    }
    keys
}

/// A Warning Event on `bad`; false when it could not be written.
async fn publish<K: Resource<DynamicType = ()>>(ctx: &Context, bad: &Object, note: String) -> bool {
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: bad.metadata.name.clone(),
        namespace: bad.metadata.namespace.clone(),
        uid: bad.metadata.uid.clone(),
        resource_version: bad.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: REASON.into(),
        note: Some(note),
        action: "Decode".into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, &reference).await {
        Ok(()) => {
            wrote(ctx, "Event");
            true
        }
        Err(e) => {
            warn!(error = %e, "could not publish an Event on an undecodable object");
            false
        }
    }
}

/// Marks an undecodable Rollout Degraded (and publishes the Event) unless its status says so
/// already; false when a write failed.
async fn degrade_rollout(ctx: &Context, bad: &Object) -> bool {
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
    let Some(patch) = degraded_status(bad, now) else {
        return true;
    };
    let (Some(name), Some(namespace)) = (&bad.metadata.name, &bad.metadata.namespace) else {
        return true;
    };
    // Typed as Tolerant: the patched object that comes back does not decode either.
    let rollouts: Api<Tolerant<Rollout>> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    if let Err(e) = rollouts
        .patch_status(name, &params, &Patch::Merge(&patch))
        .await
    {
        warn!(rollout = %name, %namespace, error = %e, "could not mark an undecodable rollout Degraded");
        return false;
    }
    wrote(ctx, "RolloutStatus");
    ctx.metrics
        .transitions
        .get_or_create(&crate::metrics::reason(REASON))
        .inc();
    publish::<Rollout>(ctx, bad, rollout_message(&bad.error)).await
}

/// What an undecodable Rollout says: its status message, and the API's view of it.
pub(crate) fn rollout_message(error: &str) -> String {
    format!("the controller cannot decode this Rollout: {error}")
}

/// The status merge patch that marks an undecodable Rollout Degraded with the decode error in
/// its message and an `InvalidSpec` condition, keeping its other conditions (a merge patch
/// replaces a list whole); `None` when its status says so already.
fn degraded_status(bad: &Object, now: Timestamp) -> Option<Value> {
    let message = rollout_message(&bad.error);
    let status = bad.raw.get("status");
    let conditions: Vec<Value> = status
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let existing = conditions
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("InvalidSpec"));
    let same =
        |c: &Value, key: &str, value: &str| c.get(key).and_then(Value::as_str) == Some(value);
    let already = existing.is_some_and(|c| {
        same(c, "status", "True")
            && same(c, "reason", CONDITION_REASON)
            && same(c, "message", &message)
    }) && status
        .is_some_and(|s| same(s, "phase", "Degraded") && same(s, "message", &message));
    if already {
        return None;
    }
    let since = existing
        .filter(|c| same(c, "status", "True"))
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(Time(now)));
    let mut conditions: Vec<Value> = conditions
        .iter()
        .filter(|c| !same(c, "type", "InvalidSpec"))
        .cloned()
        .collect();
    conditions.push(json!({
        "type": "InvalidSpec",
        "status": "True",
        "reason": CONDITION_REASON,
        "message": message,
        "lastTransitionTime": since,
        "observedGeneration": bad.metadata.generation,
    }));
    Some(json!({"status": {
        "phase": "Degraded",
        "message": message,
        "observedGeneration": bad.metadata.generation,
        "conditions": conditions,
    }}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{Phase, RolloutStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn bad_rollout(status: Value) -> Object {
        Object {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("team-a".into()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            error: "spec.replicas: invalid value: integer `4294967296`, expected i32".into(),
            raw: json!({"metadata": {"name": "web"}, "spec": {"replicas": 4_294_967_296_u64}, "status": status}),
        }
    }

    fn applied(bad: &Object, patch: &Value) -> RolloutStatus {
        let mut status = bad.raw["status"].clone();
        if status.is_null() {
            status = json!({});
        }
        for (key, value) in patch["status"].as_object().unwrap() {
            status[key] = value.clone();
        }
        serde_json::from_value(status).unwrap()
    }

    #[test]
    fn an_undecodable_rollout_is_degraded_with_the_decode_error_and_keeps_other_conditions() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let bad = bad_rollout(json!({
            "phase": "Healthy",
            "conditions": [{"type": "Healthy", "status": "True", "reason": "Healthy", "message": "",
                            "lastTransitionTime": "2020-01-01T00:00:00Z"}],
        }));
        let patch = degraded_status(&bad, t0).unwrap();
        let status = applied(&bad, &patch);
        assert_eq!(status.phase, Phase::Degraded);
        assert!(
            status.message.contains("spec.replicas: invalid value"),
            "{}",
            status.message
        );
        assert_eq!(status.observed_generation, Some(3));
        let invalid = status
            .conditions
            .iter()
            .find(|c| c.type_ == "InvalidSpec")
            .unwrap();
        assert_eq!(
            (invalid.status.as_str(), invalid.reason.as_str()),
            ("True", "Undecodable")
        );
        assert_eq!(invalid.message, status.message);
        assert!(status.conditions.iter().any(|c| c.type_ == "Healthy"));
    }

    #[test]
    fn a_rollout_already_marked_is_not_written_again() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let bad = bad_rollout(Value::Null);
        let patch = degraded_status(&bad, t0).unwrap();
        let marked = Object {
            raw: json!({"status": patch["status"]}),
            ..bad.clone()
        };
        assert_eq!(
            degraded_status(&marked, Timestamp::from_second(2_000).unwrap()),
            None
        );
        // Another error is a new message, written with the original transition time.
        let other = Object {
            error: "spec.strategy: missing field".into(),
            ..marked
        };
        let patch = degraded_status(&other, Timestamp::from_second(2_000).unwrap()).unwrap();
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["lastTransitionTime"], json!(Time(t0)));
    }
}
