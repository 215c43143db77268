//! The REST API's kube side: rollouts read from the reflector store, actions written as
//! `spec.paused` / `spec.decision` with a merge patch guarded by the resourceVersion they were
//! decided on, and callers checked with TokenReview and SubjectAccessReview.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::{
    Action, AnalysisRunView, AuthError, Authorizer, ControlError, RolloutControl, RolloutView, Verb,
};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::crd::{GROUP, Phase, Rollout};
use crate::reconcile::FIELD_MANAGER;

/// How long an authorization decision is reused.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);

pub struct KubeControl {
    client: Client,
    rollouts: Store<Rollout>,
}

impl KubeControl {
    pub fn new(client: Client, rollouts: Store<Rollout>) -> Self {
        Self { client, rollouts }
    }
}

/// The API's view of a rollout.
pub fn view(rollout: &Rollout) -> RolloutView {
    let status = rollout.status.clone().unwrap_or_default();
    RolloutView {
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.name_any(),
        generation: rollout.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        strategy: status.strategy.clone(),
        phase: status.phase.as_str().into(),
        message: status.message.clone(),
        current_step: status.current_step_index,
        steps: rollout
            .spec
            .strategy
            .canary
            .as_ref()
            .map(|c| c.steps.len() as i32),
        paused: rollout.spec.paused == Some(true),
        weight: status.canary.as_ref().map(|c| c.weight),
        stable_revision: status.stable_revision.clone(),
        updated_revision: status.updated_revision.clone(),
        analysis_runs: status
            .analysis_runs
            .iter()
            .map(|r| AnalysisRunView {
                name: r.name.clone(),
                kind: r.kind.clone(),
                phase: r.phase.clone(),
            })
            .collect(),
    }
}

fn unavailable(e: kube::Error) -> ControlError {
    ControlError::Unavailable(e.to_string())
}

/// The `spec` patch an action makes, decided on `rollout` as read; the reason it does not apply
/// now otherwise. Pure, so that the CLI writes the very same fields.
pub fn action_patch(rollout: &Rollout, action: &Action) -> Result<serde_json::Value, String> {
    let status = rollout.status.clone().unwrap_or_default();
    let updated = status.updated_revision.clone().unwrap_or_default();
    let in_progress = !updated.is_empty() && status.stable_revision.as_deref() != Some(&updated);
    let current = rollout
        .spec
        .decision
        .clone()
        .filter(|d| d.revision == updated)
        .unwrap_or_default();
    let decision = |change: serde_json::Value| {
        let mut value = serde_json::to_value(&current).unwrap_or_default();
        value["revision"] = json!(updated);
        if let (Some(target), Some(fields)) = (value.as_object_mut(), change.as_object()) {
            for (k, v) in fields {
                target.insert(k.clone(), v.clone());
            }
        }
        json!({"spec": {"decision": value}})
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
                return Ok(decision(json!({"full": true})));
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
            if current.promoted_step.is_some_and(|p| p >= step) {
                return Err(format!("step {step} is already promoted"));
            }
            Ok(decision(json!({"promotedStep": step})))
        }
        Action::Abort => {
            if !in_progress || status.abort {
                return Err(format!(
                    "nothing to abort: the rollout is {}",
                    status.phase.as_str()
                ));
            }
            Ok(decision(json!({"abort": true})))
        }
        Action::Retry => {
            if !status.abort {
                return Err(format!(
                    "only an aborted rollout can be retried; it is {}",
                    status.phase.as_str()
                ));
            }
            Ok(decision(
                json!({"abort": false, "retry": status.retries + 1}),
            ))
        }
        Action::Pause => Ok(json!({"spec": {"paused": true}})),
        Action::Resume => Ok(json!({"spec": {"paused": false}})),
    }
}

impl RolloutControl for KubeControl {
    async fn list(&self, namespace: Option<&str>) -> Result<Vec<RolloutView>, ControlError> {
        let mut views: Vec<RolloutView> = self
            .rollouts
            .state()
            .iter()
            .filter(|r| namespace.is_none_or(|ns| r.namespace().as_deref() == Some(ns)))
            .map(|r| view(r))
            .collect();
        views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(views)
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<RolloutView, ControlError> {
        if let Some(rollout) = self.rollouts.get(&ObjectRef::new(name).within(namespace)) {
            return Ok(view(&rollout));
        }
        // Not in the store (yet): ask the apiserver, so a rollout created a moment ago is found.
        let rollouts: Api<Rollout> = Api::namespaced(self.client.clone(), namespace);
        match rollouts.get_opt(name).await.map_err(unavailable)? {
            Some(rollout) => Ok(view(&rollout)),
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
        let rollout = rollouts
            .get_opt(name)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ControlError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            })?;
        let mut patch = action_patch(&rollout, &action).map_err(ControlError::Conflict)?;
        // Decided on this version: if the rollout changed since, the apiserver refuses the write
        // and the caller asks again, so two callers never both act on one state.
        patch["metadata"] = json!({"resourceVersion": rollout.resource_version()});
        let params = PatchParams {
            field_manager: Some(format!("{FIELD_MANAGER}-api")),
            ..PatchParams::default()
        };
        match rollouts.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(rollout) => Ok(view(&rollout)),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(ControlError::Conflict(
                "the rollout changed while this request was decided; look again".into(),
            )),
            Err(e) => Err(unavailable(e)),
        }
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
mod tests {
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
        assert_eq!(
            action_patch(&r, &promote).unwrap(),
            json!({"spec": {"decision": {"revision": "b", "promotedStep": 1}}})
        );
        let full = Action::Promote {
            full: true,
            from_step: None,
        };
        assert_eq!(
            action_patch(&r, &full).unwrap()["spec"]["decision"]["full"],
            true
        );
        assert_eq!(
            action_patch(&r, &Action::Abort).unwrap()["spec"]["decision"]["abort"],
            true
        );
        assert_eq!(
            action_patch(&r, &Action::Pause).unwrap(),
            json!({"spec": {"paused": true}})
        );
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
            let error = action_patch(&r, &action).unwrap_err();
            assert!(error.contains(why), "{action:?}: {error}");
        }
        let aborted = rollout(
            json!({"phase": "Aborted", "abort": true, "retries": 2, "stableRevision": "a", "updatedRevision": "b"}),
            json!({"revision": "b", "abort": true, "retry": 2}),
        );
        assert_eq!(
            action_patch(&aborted, &Action::Retry).unwrap(),
            json!({"spec": {"decision": {"revision": "b", "abort": false, "retry": 3}}})
        );
    }
}
