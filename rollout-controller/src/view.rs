//! The API's view of a rollout ([`api::RolloutView`]), built from the rollout and the
//! ReplicaSets and AnalysisRuns it owns. Pure, so that the CLI shows exactly what the REST API
//! does.

use api::{AnalysisRunView, MeasurementView, MetricView, RevisionView, RolloutView, StepView};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use serde_json::Value;

use crate::crd::analysis::{AnalysisRun, MetricResult};
use crate::crd::{POD_TEMPLATE_HASH_LABEL, Phase, Rollout};
use crate::decision::revision_number;
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
                kind: r.kind.to_string(),
                phase: r.phase.to_string(),
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
        // From the rest of the status, as the planner writes `status.updatedWeight` for the
        // printer column, so a status written before that field existed shows the same.
        weight: updated_weight(&status),
        traffic_router: traffic_router.map(str::to_owned),
        stable_revision: status.stable_revision.clone(),
        updated_revision: status.updated_revision.clone(),
        revisions,
        analysis_runs,
        undecodable: None,
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
        ..RolloutView::default()
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
}
