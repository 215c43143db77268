//! The API's view of a rollout ([`api::RolloutView`]), built from the rollout and the
//! ReplicaSets and AnalysisRuns it owns. Pure, so that the CLI shows exactly what the REST API
//! does.

use analysis::Verdict;
use analysis::lifecycle::Phase as AnalysisPhase;
use api::{
    Action, ActionsView, AnalysisRunView, Applies, LookView, MeasurementView, MetricView,
    RevisionView, RolloutView, StepView,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::Value;

use crate::crd::analysis::{AnalysisRun, MetricResult};
use crate::crd::{CanaryStep, POD_TEMPLATE_HASH_LABEL, Phase, Rollout, RolloutStatus};
use crate::decision::{applies, revision_number};
use crate::decode::Undecodable;
use crate::plan::canary::describe_step;
use crate::plan::updated_weight::updated_weight;
use crate::undecodable::rollout_message;

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
                undo: match revision_number(rs) {
                    Some(n) => Applies::from_decision(applies(
                        rollout,
                        replica_sets,
                        &Action::Undo {
                            to_revision: Some(n),
                        },
                    )),
                    None => Applies::from_decision::<()>(Err(
                        "this ReplicaSet has no revision number".into(),
                    )),
                },
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
                started_at: run_status.and_then(|s| s.started_at).map(|t| t.to_string()),
                completed_at: run_status
                    .and_then(|s| s.completed_at)
                    .map(|t| t.to_string()),
                kind: r.kind.to_string(),
                phase: r.phase.to_string(),
                message: run_status.map(|s| s.message.clone()).unwrap_or_default(),
                metrics: run_status
                    .map(|s| s.metric_results.iter().map(metric_view).collect())
                    .unwrap_or_default(),
            }
        })
        .collect();
    let steps: &[CanaryStep] = strategy.canary.as_ref().map_or(&[], |c| &c.steps);
    RolloutView {
        namespace: rollout.namespace().unwrap_or_default(),
        name: rollout.name_any(),
        created_at: rollout.metadata.creation_timestamp.as_ref().map(shown_time),
        labels: rollout.labels().clone(),
        annotations: shown_annotations(rollout.annotations()),
        generation: rollout.metadata.generation.unwrap_or(0),
        observed_generation: status.observed_generation.unwrap_or(0),
        strategy: status.strategy.clone(),
        phase: status.phase.as_str().into(),
        message: status.message.clone(),
        current_step: status.current_step_index,
        steps: steps
            .iter()
            .zip(0..)
            .map(|(step, index)| step_view(step, index))
            .collect(),
        pause_started_at: status
            .pause_conditions
            .iter()
            .map(|c| &c.start_time)
            .min_by_key(|t| t.0)
            .map(shown_time),
        pause_ends_at: pause_ends_at(&status, steps),
        paused: rollout.spec.paused == Some(true),
        aborted: status.abort,
        // From the rest of the status, as the planner writes `status.updatedWeight` for the
        // printer column, so a status written before that field existed shows the same.
        weight: updated_weight(&status),
        traffic_router: traffic_router.map(str::to_owned),
        desired: rollout.spec.replicas,
        ready: status.ready_replicas,
        stable_revision: status.stable_revision.clone(),
        updated_revision: status.updated_revision.clone(),
        revisions,
        analysis_runs,
        actions: actions_view(rollout, replica_sets),
        undecodable: None,
    }
}

fn shown_time(time: &Time) -> String {
    time.0.to_string()
}

/// kubectl's copy of the whole last applied object is no annotation a person reads, and it
/// would carry the spec into every view.
fn shown_annotations(
    annotations: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeMap<String, String> {
    let mut shown = annotations.clone();
    shown.remove("kubectl.kubernetes.io/last-applied-configuration");
    shown
}

fn step_view(step: &CanaryStep, index: i32) -> StepView {
    let kind = if step.set_weight.is_some() {
        "setWeight"
    } else if step.pause.is_some() {
        "pause"
    } else if step.set_canary_scale.is_some() {
        "setCanaryScale"
    } else if step.analysis.is_some() {
        "analysis"
    } else {
        "setHeaderRoute"
    };
    StepView {
        index,
        description: describe_step(step),
        kind: kind.into(),
        weight: step.set_weight,
        pause_seconds: step
            .pause
            .as_ref()
            .and_then(|p| p.length())
            .and_then(Result::ok)
            .map(|d| d.as_secs()),
    }
}

/// When the timed pause step the rollout is paused at ends: its start, recorded in the pause
/// condition the planner keeps, plus its length.
fn pause_ends_at(status: &RolloutStatus, steps: &[CanaryStep]) -> Option<String> {
    let step = steps.get(usize::try_from(status.current_step_index?).ok()?)?;
    let length = step.pause.as_ref()?.length()?.ok()?;
    let started = status
        .pause_conditions
        .iter()
        .find(|c| c.reason == "CanaryPauseStep")?;
    started
        .start_time
        .0
        .checked_add(length)
        .ok()
        .map(|t| t.to_string())
}

/// Each action, and whether it applies now, as the action itself decides it.
fn actions_view(rollout: &Rollout, replica_sets: &[ReplicaSet]) -> ActionsView {
    let decide = |action: Action| Applies::from_decision(applies(rollout, replica_sets, &action));
    ActionsView {
        promote: decide(Action::Promote {
            full: false,
            from_step: None,
        }),
        promote_full: decide(Action::Promote {
            full: true,
            from_step: None,
        }),
        abort: decide(Action::Abort),
        retry: decide(Action::Retry),
        pause: decide(Action::Pause),
        resume: decide(Action::Resume),
        undo: decide(Action::Undo { to_revision: None }),
    }
}

/// The API's view of a Rollout the controller cannot decode ([`crate::decode`]): Degraded with
/// the decode error, and what its metadata and the readable part of its status say. Listed and
/// found like any other, so that it does not vanish from the API and the CLI while it stops
/// being reconciled.
pub fn undecodable_view(bad: &Undecodable) -> RolloutView {
    let status = bad.raw.get("status");
    let text = |key: &str| {
        status
            .and_then(|s| s.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let generation = bad.metadata.generation.unwrap_or(0);
    RolloutView {
        namespace: bad.metadata.namespace.clone().unwrap_or_default(),
        name: bad.metadata.name.clone().unwrap_or_default(),
        generation,
        // The decode error is of the object as it is now, whatever its status last recorded: a
        // pipeline's gate must see the generation it waits for Degraded, not still in progress.
        observed_generation: generation,
        strategy: text("strategy").unwrap_or_default(),
        phase: Phase::Degraded.as_str().into(),
        message: rollout_message(&bad.error),
        paused: bad.raw.pointer("/spec/paused") == Some(&Value::Bool(true)),
        stable_revision: text("stableRevision"),
        updated_revision: text("updatedRevision"),
        undecodable: Some(bad.error.clone()),
        actions: no_actions(&rollout_message(&bad.error)),
        ..RolloutView::default()
    }
}

/// A Rollout that does not decode has no action: each is refused with its decode error, as the
/// REST API refuses it.
fn no_actions(message: &str) -> ActionsView {
    let refused = || Applies {
        applies: false,
        reason: Some(format!("{message}; fix it before acting on it")),
    };
    ActionsView {
        promote: refused(),
        promote_full: refused(),
        abort: refused(),
        retry: refused(),
        pause: refused(),
        resume: refused(),
        undo: refused(),
    }
}

/// The look that decided a metric's final phase: the metric stops being measured at the look
/// that decides it, so it is the last one, when its verdict is the one the phase stands for (a
/// metric ended from outside, the step having moved on, was decided by no look).
fn deciding_look(result: &MetricResult) -> Option<usize> {
    let decided_by = match result.phase {
        AnalysisPhase::Successful => Verdict::Pass,
        AnalysisPhase::Failed => Verdict::Fail,
        AnalysisPhase::Inconclusive => Verdict::Inconclusive,
        AnalysisPhase::Error => Verdict::Error,
        AnalysisPhase::Pending | AnalysisPhase::Running => return None,
    };
    let last = result.measurements.len().checked_sub(1)?;
    (result.measurements[last].verdict() == decided_by).then_some(last)
}

fn look_view(measurement: &analysis::Measurement) -> LookView {
    let judgement = &measurement.judgement;
    let evidence = &judgement.evidence;
    LookView {
        started_at: measurement.started_at.to_string(),
        finished_at: measurement.finished_at.to_string(),
        verdict: judgement.verdict.as_str().into(),
        message: judgement.message.clone(),
        test: evidence.test.clone(),
        canary: evidence.canary_mean,
        stable: evidence.baseline_mean,
        canary_samples: evidence.canary_samples,
        stable_samples: evidence.baseline_samples,
        canary_events: evidence.canary_events,
        stable_events: evidence.baseline_events,
        statistic: evidence.statistic,
        p_value: evidence.p_value,
        e_value: evidence.e_value,
        e_value_threshold: evidence.e_value_threshold,
        effect_size: evidence.effect_size,
        values: evidence.values.clone(),
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
        looks: result.measurements.iter().map(look_view).collect(),
        deciding_look: deciding_look(result),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decision::tests::{paused_at, replica_set_of, rollout, rollout_of};
    use crate::hash::pod_template_hash;

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
    fn an_undecodable_rollout_is_viewed_degraded_with_the_field_that_does_not_decode() {
        let raw = json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "broken", "namespace": "shop", "generation": 4},
            "spec": {"replicas": 4_294_967_296_u64},
            "status": {"phase": "Healthy", "strategy": "canary", "observedGeneration": 3,
                       "stableRevision": "abc"},
        });
        let bad = match serde_json::from_value::<crate::decode::Tolerant<Rollout>>(raw).unwrap() {
            crate::decode::Tolerant::Undecodable(bad) => bad,
            crate::decode::Tolerant::Decoded(_) => panic!("a replica count over i32 decoded"),
        };
        let shown = undecodable_view(&bad);
        assert_eq!(
            (shown.namespace.as_str(), shown.name.as_str()),
            ("shop", "broken")
        );
        assert_eq!(shown.phase, "Degraded");
        assert_eq!((shown.generation, shown.observed_generation), (4, 4));
        let error = shown.undecodable.as_deref().unwrap();
        assert!(error.starts_with("spec.replicas: "), "{error}");
        assert!(shown.message.contains(error), "{}", shown.message);
        assert_eq!(shown.strategy, "canary");
        assert_eq!(shown.stable_revision.as_deref(), Some("abc"));
        // A decoded rollout's view says nothing of the kind.
        let healthy = json!({"phase": "Healthy", "stableRevision": "b", "updatedRevision": "b"});
        assert_eq!(
            view(&rollout(healthy, json!(null)), &[], &[]).undecodable,
            None
        );
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

    /// What the view offers is what the actions do: every action it shows as applying is one
    /// `action_patch` writes, and every one `action_patch` refuses is shown as not applying,
    /// with the 409's reason. Over rollouts paused, progressing, healthy, aborted, paused by a
    /// person, and with a history to undo to.
    #[test]
    fn the_actions_shown_are_exactly_those_that_would_not_answer_409() {
        use crate::decision::action_patch;
        let labels = json!({"app": "web"});
        let v1 = rollout_of("web:1", labels.clone());
        let mut v2 = rollout_of("web:2", labels);
        let history = [
            replica_set_of(&v1, 1, "stable"),
            replica_set_of(&v2, 2, "canary"),
        ];
        let h1 = pod_template_hash(&v1.spec.template);
        let h2 = pod_template_hash(&v2.spec.template);
        let statuses = [
            json!({"phase": "Paused", "stableRevision": h1, "updatedRevision": h2, "currentStepIndex": 1}),
            json!({"phase": "Progressing", "stableRevision": h1, "updatedRevision": h2, "currentStepIndex": 0}),
            json!({"phase": "Healthy", "stableRevision": h2, "updatedRevision": h2}),
            json!({"phase": "Aborted", "abort": true, "stableRevision": h1, "updatedRevision": h2}),
        ];
        let mut seen_applying = 0;
        let mut seen_refused = 0;
        for status in statuses {
            for user_paused in [false, true] {
                for decision in [
                    json!(null),
                    json!({"revision": h2, "attempt": 0, "promotedStep": 1}),
                ] {
                    v2.status = serde_json::from_value(status.clone()).unwrap();
                    v2.spec.paused = Some(user_paused);
                    v2.spec.decision = serde_json::from_value(decision).unwrap();
                    let shown = view(&v2, &history, &[]);
                    let a = &shown.actions;
                    let cases = [
                        (
                            &a.promote,
                            Action::Promote {
                                full: false,
                                from_step: None,
                            },
                        ),
                        (
                            &a.promote_full,
                            Action::Promote {
                                full: true,
                                from_step: None,
                            },
                        ),
                        (&a.abort, Action::Abort),
                        (&a.retry, Action::Retry),
                        (&a.pause, Action::Pause),
                        (&a.resume, Action::Resume),
                        (&a.undo, Action::Undo { to_revision: None }),
                    ];
                    let per_revision = shown.revisions.iter().map(|r| {
                        (
                            &r.undo,
                            Action::Undo {
                                to_revision: r.revision,
                            },
                        )
                    });
                    for (offered, action) in cases.into_iter().chain(per_revision) {
                        let written = action_patch(&v2, &history, &action);
                        match &written {
                            Ok(_) => {}
                            Err(why) => assert_eq!(
                                offered,
                                &Applies {
                                    applies: false,
                                    reason: Some(why.clone())
                                },
                                "{action:?} on {status}"
                            ),
                        }
                        if offered.applies {
                            seen_applying += 1;
                            assert!(
                                written.is_ok(),
                                "{action:?} offered on {status}: {written:?}"
                            );
                            assert_eq!(offered.reason, None);
                        } else {
                            seen_refused += 1;
                            assert!(offered.reason.is_some(), "{action:?}");
                        }
                    }
                    // A pause changes something only when not paused, a resume only when paused.
                    assert_eq!(a.pause.applies, !user_paused);
                    assert_eq!(a.resume.applies, user_paused);
                }
            }
        }
        assert!(
            seen_applying > 20 && seen_refused > 20,
            "{seen_applying} {seen_refused}"
        );
        // The obvious ones, by name.
        v2.status = serde_json::from_value(statuses_paused(&h1, &h2)).unwrap();
        v2.spec.decision = None;
        v2.spec.paused = None;
        let shown = view(&v2, &history, &[]);
        assert!(shown.actions.promote.applies && shown.actions.abort.applies);
        assert!(!shown.actions.retry.applies);
        let undo_to: Vec<(Option<i64>, bool)> = shown
            .revisions
            .iter()
            .map(|r| (r.revision, r.undo.applies))
            .collect();
        assert_eq!(undo_to, [(Some(2), false), (Some(1), true)]);
    }

    fn statuses_paused(stable: &str, updated: &str) -> serde_json::Value {
        json!({"phase": "Paused", "stableRevision": stable, "updatedRevision": updated, "currentStepIndex": 1})
    }

    #[test]
    fn an_undecodable_rollout_offers_no_action() {
        let raw = json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "broken", "namespace": "shop"},
            "spec": {"replicas": 4_294_967_296_u64},
        });
        let crate::decode::Tolerant::Undecodable(bad) =
            serde_json::from_value::<crate::decode::Tolerant<Rollout>>(raw).unwrap()
        else {
            panic!("decoded");
        };
        let a = undecodable_view(&bad).actions;
        for offered in [
            &a.promote,
            &a.promote_full,
            &a.abort,
            &a.retry,
            &a.pause,
            &a.resume,
            &a.undo,
        ] {
            assert!(!offered.applies);
            assert!(
                offered.reason.as_deref().unwrap().contains("spec.replicas"),
                "{offered:?}"
            );
        }
    }

    /// Every look with what the judge saw, and the look that decided marked: a sequential test
    /// that failed at its third look, a threshold metric still running, one ended from outside.
    #[test]
    fn each_metric_carries_its_looks_and_the_one_that_decided() {
        let mut rollout = rollout(
            json!({"phase": "Aborted", "abort": true, "stableRevision": "a", "updatedRevision": "b",
                   "analysisRuns": [{"name": "run", "kind": "step-2", "phase": "Failed"}]}),
            json!(null),
        );
        rollout.metadata.creation_timestamp =
            serde_json::from_value(json!("2026-12-01T07:00:00Z")).unwrap();
        let look = |minute: u32, verdict: &str, e: f64| {
            json!({"startedAt": format!("2026-12-01T07:0{minute}:00Z"),
                   "finishedAt": format!("2026-12-01T07:0{minute}:01Z"),
                   "verdict": verdict, "message": format!("e-value {e}"),
                   "evidence": {"test": "sequentialPoisson", "canaryMean": 0.05, "baselineMean": 0.01,
                                "canarySamples": 400, "baselineSamples": 1600,
                                "canaryEvents": 20.0, "baselineEvents": 16.0,
                                "eValue": e, "eValueThreshold": 20.0}})
        };
        let tally = json!({"passed": 2, "failed": 1, "inconclusive": 0, "errors": 0, "consecutiveErrors": 0});
        let run: AnalysisRun = serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisRun",
            "metadata": {"name": "run", "namespace": "shop"},
            "spec": {"metrics": [{"name": "errors", "provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "q"}}}]},
            "status": {"phase": "Failed", "message": "errors failed",
                       "startedAt": "2026-12-01T07:00:00Z", "completedAt": "2026-12-01T07:03:01Z",
                       "metricResults": [
                {"name": "errors", "phase": "Failed", "tally": tally,
                 "measurements": [look(1, "Pass", 1.5), look(2, "Pass", 6.0), look(3, "Fail", 31.0)]},
                {"name": "latency", "phase": "Running", "tally": tally,
                 "measurements": [{"startedAt": "2026-12-01T07:01:00Z", "finishedAt": "2026-12-01T07:01:01Z",
                    "verdict": "Pass", "message": "0.2 < 0.5",
                    "evidence": {"test": "cel", "values": "[0.2]", "canaryMean": 0.2, "canarySamples": 1}}]},
                {"name": "stopped", "phase": "Successful", "tally": tally,
                 "measurements": [{"startedAt": "2026-12-01T07:01:00Z", "finishedAt": "2026-12-01T07:01:01Z",
                    "verdict": "Inconclusive", "message": "no data", "evidence": {}}]},
            ]},
        }))
        .unwrap();
        let shown = view(&rollout, &[], &[run]);
        assert_eq!(shown.created_at.as_deref(), Some("2026-12-01T07:00:00Z"));
        let run = &shown.analysis_runs[0];
        assert_eq!(
            (run.started_at.as_deref(), run.completed_at.as_deref()),
            (Some("2026-12-01T07:00:00Z"), Some("2026-12-01T07:03:01Z"))
        );
        let errors = &run.metrics[0];
        assert_eq!(errors.looks.len(), 3);
        assert_eq!(errors.deciding_look, Some(2));
        let e_path: Vec<Option<f64>> = errors.looks.iter().map(|l| l.e_value).collect();
        assert_eq!(e_path, [Some(1.5), Some(6.0), Some(31.0)]);
        let decided = &errors.looks[2];
        assert_eq!(
            decided,
            &LookView {
                started_at: "2026-12-01T07:03:00Z".into(),
                finished_at: "2026-12-01T07:03:01Z".into(),
                verdict: "Fail".into(),
                message: "e-value 31".into(),
                test: Some("sequentialPoisson".into()),
                canary: Some(0.05),
                stable: Some(0.01),
                canary_samples: Some(400),
                stable_samples: Some(1600),
                canary_events: Some(20.0),
                stable_events: Some(16.0),
                e_value: Some(31.0),
                e_value_threshold: Some(20.0),
                ..LookView::default()
            }
        );
        let wire = serde_json::to_value(&errors.looks[2]).unwrap();
        assert_eq!(wire["eValueThreshold"], 20.0);
        assert_eq!(wire["stableSamples"], 1600);
        assert!(wire.get("pValue").is_none(), "absent, not null: {wire}");
        let latency = &run.metrics[1];
        assert_eq!(
            (latency.looks[0].canary, latency.deciding_look),
            (Some(0.2), None)
        );
        assert_eq!(run.metrics[2].deciding_look, None, "ended from outside");
    }

    #[test]
    fn steps_say_what_they_are_and_a_timed_pause_when_it_ends() {
        let mut r = rollout(
            json!({"phase": "Paused", "stableRevision": "a", "updatedRevision": "b", "currentStepIndex": 1,
                   "readyReplicas": 3,
                   "pauseConditions": [{"reason": "CanaryPauseStep", "startTime": "2026-12-01T07:00:00Z"}]}),
            json!(null),
        );
        r.spec.replicas = 4;
        r.metadata.annotations = Some(
            [
                ("team".to_owned(), "<b>web</b>".to_owned()),
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                    "{}".to_owned(),
                ),
            ]
            .into(),
        );
        r.spec.strategy.canary.as_mut().unwrap().steps = serde_json::from_value(json!([
            {"setWeight": 20}, {"pause": {"duration": "2m"}}, {"pause": {}},
            {"analysis": {"templates": [{"templateName": "errors"}]}}
        ]))
        .unwrap();
        let shown = view(&r, &[], &[]);
        let steps: Vec<(&str, Option<i32>, Option<u64>)> = shown
            .steps
            .iter()
            .map(|s| (s.kind.as_str(), s.weight, s.pause_seconds))
            .collect();
        assert_eq!(
            steps,
            [
                ("setWeight", Some(20), None),
                ("pause", None, Some(120)),
                ("pause", None, None),
                ("analysis", None, None)
            ]
        );
        assert_eq!(
            shown.pause_started_at.as_deref(),
            Some("2026-12-01T07:00:00Z")
        );
        assert_eq!(shown.pause_ends_at.as_deref(), Some("2026-12-01T07:02:00Z"));
        assert_eq!((shown.desired, shown.ready), (4, 3));
        let annotations: Vec<&str> = shown.annotations.keys().map(String::as_str).collect();
        assert_eq!(annotations, ["team"]);
        // At the pause until promoted, nothing ends by itself.
        r.status.as_mut().unwrap().current_step_index = Some(2);
        assert_eq!(view(&r, &[], &[]).pause_ends_at, None);
    }
}
