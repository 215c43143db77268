//! What an action on a rollout writes: the `spec.paused` / `spec.decision` / `spec.template`
//! merge patch decided on the rollout as read, or why it does not apply now. Pure, so that the
//! REST API and the CLI write the very same fields.

use api::Action;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;
use serde_json::json;

use crate::crd::{
    Decision, POD_TEMPLATE_HASH_LABEL, Phase, REVISION_ANNOTATION, Rollout, TEMPLATE_ANNOTATION,
};
use crate::hash::pod_template_hash;

pub(crate) fn revision_number(rs: &ReplicaSet) -> Option<i64> {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
}

/// The `spec.template` patch that goes back to revision `to` (default: the newest revision
/// older than the current template's), or why it cannot. The template is the one the
/// ReplicaSet keeps in [`TEMPLATE_ANNOTATION`], and it must hash to the ReplicaSet's own hash,
/// so an undo never writes a template that is not the one that revision ran.
fn undo_patch(
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
pub(crate) fn pinned(rollout: &Rollout, replica_sets: &[ReplicaSet], action: Action) -> Action {
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
pub(crate) fn action_patch(
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

/// Whether `action` applies to `rollout` now: decided by [`action_patch`], so that what the
/// dashboard offers is what the action would do, and a pause of a paused rollout (or a resume
/// of one that is not), which would change nothing, is not offered either.
pub(crate) fn applies(
    rollout: &Rollout,
    replica_sets: &[ReplicaSet],
    action: &Action,
) -> Result<(), String> {
    let paused = rollout.spec.paused == Some(true);
    match action {
        Action::Pause if paused => Err("the rollout is paused already".into()),
        Action::Resume if !paused => Err("the rollout is not paused".into()),
        _ => action_patch(rollout, replica_sets, action).map(|_| ()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rollout(status: serde_json::Value, decision: serde_json::Value) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"selector": {}, "template": {}, "strategy": {"canary": {}}, "decision": decision},
            "status": status,
        }))
        .unwrap()
    }

    pub(crate) fn paused_at(step: i32) -> serde_json::Value {
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
    pub(crate) fn rollout_of(image: &str, template_labels: serde_json::Value) -> Rollout {
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
    pub(crate) fn replica_set_of(rollout: &Rollout, revision: u64, role: &str) -> ReplicaSet {
        let hash = pod_template_hash(&rollout.spec.template);
        let target = crate::plan::ReplicaSetTarget {
            hash: hash.clone(),
            replicas: 1,
            revision: Some(revision),
            create: true,
            retire: false,
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
}
