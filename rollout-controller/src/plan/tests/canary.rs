//! The canary: weights made of pods or of router traffic, pauses, role metadata, analysis
//! steps and background analysis, aborts and full promotion.

use super::*;
use crate::plan::canary::describe_step;

/// A 5-replica canary (setWeight 20, pause 5s, setWeight 60, pause {}) Healthy on v1 and just
/// given v2: the simulation, the stable hash and the canary hash.
fn four_step_canary_on_v2() -> (Sim, String, String) {
    let steps =
        json!([{"setWeight": 20}, {"pause": {"duration": "5s"}}, {"setWeight": 60}, {"pause": {}}]);
    let mut sim = deployed(canary_rollout(5, steps));
    let stable = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    (sim, stable, canary)
}

#[test]
fn canary_weights_become_replica_counts() {
    let steps = json!([{"setWeight": 20}, {"setWeight": 40}, {"setWeight": 60}, {"setWeight": 80}]);
    let mut sim = deployed(canary_rollout(5, steps));
    let stable = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    let mut seen = Vec::new();
    for _ in 0..40 {
        sim.reconcile();
        sim.pods_ready();
        let split = (sim.replicas_of(&canary), sim.replicas_of(&stable));
        if seen.last() != Some(&split) {
            seen.push(split);
        }
        if sim.status().phase == Phase::Healthy {
            break;
        }
    }
    for split in [(1, 4), (2, 3), (3, 2), (4, 1), (5, 0)] {
        assert!(seen.contains(&split), "{split:?} never reached: {seen:?}");
    }
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(canary.as_str())
    );
    assert_eq!(
        sim.selector_of("web-stable").as_deref(),
        Some(canary.as_str())
    );
    assert_eq!(
        sim.selector_of("web-canary").as_deref(),
        Some(canary.as_str())
    );
    sim.assert_ok();
}

#[test]
fn a_canary_pauses_for_a_time_and_for_a_decision() {
    let (mut sim, stable, canary) = four_step_canary_on_v2();
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(1));
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (1, 4));
    assert_eq!(sim.status().updated_weight, Some(20));
    let plan = sim.reconcile();
    assert_eq!(plan.requeue_after, Some(std::time::Duration::from_secs(5)));

    sim.advance(5);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(3));
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (3, 2));
    assert_eq!(sim.status().canary.as_ref().map(|c| c.weight), Some(60));

    // Hours later it still waits: only a decision moves it.
    sim.advance(36_000);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(3));
    sim.decide(|d| d.promoted_step = Some(3));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(canary.as_str())
    );
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (5, 0));
    // `kubectl get rollouts` prints `status.updatedWeight`: 100 on the new stable, though the
    // canary's own weight, which a router follows, is back at 0; the view shows the same.
    assert_eq!(sim.status().canary.as_ref().map(|c| c.weight), Some(0));
    assert_eq!(sim.status().updated_weight, Some(100));
    assert_eq!(crate::view::view(&sim.rollout, &[], &[]).weight, Some(100));
    sim.assert_ok();
}

#[test]
fn an_aborted_canary_goes_back_to_stable_and_stays_there() {
    let (mut sim, stable, canary) = four_step_canary_on_v2();
    sim.advance(5);
    sim.settle();
    sim.advance(5);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(3));
    sim.decide(|d| d.abort = Some(true));
    let plan = sim.reconcile();
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::AbortedByUser)
    );
    // Stable back to full size before the canary shrinks, in the same reconcile where possible.
    assert_eq!(sim.replicas_of(&stable), 5);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Aborted);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (0, 5));
    assert_eq!(
        sim.selector_of("web-canary").as_deref(),
        Some(stable.as_str())
    );
    assert_eq!(sim.status().canary.as_ref().map(|c| c.weight), Some(0));
    assert_eq!(sim.status().updated_weight, Some(0));

    sim.advance(3600);
    sim.settle();
    assert_eq!(
        sim.status().phase,
        Phase::Aborted,
        "an abort stays until a retry"
    );

    sim.decide(|d| {
        d.abort = Some(false);
        d.retry = Some(1);
    });
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(1));
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (1, 4));
    sim.assert_ok();
}

#[test]
fn role_metadata_follows_the_canary_into_stable() {
    let mut r = canary_rollout(2, json!([{"setWeight": 50}, {"pause": {}}]));
    if let Some(c) = r.spec.strategy.canary.as_mut() {
        c.canary_metadata = Some(PodMetadata {
            labels: BTreeMap::from([("role".into(), "canary".into())]),
            ..PodMetadata::default()
        });
        c.stable_metadata = Some(PodMetadata {
            labels: BTreeMap::from([
                ("role".into(), "stable".into()),
                ("tier".into(), "gold".into()),
            ]),
            ..PodMetadata::default()
        });
    }
    let mut sim = deployed(r);
    let v1 = hash_of(&sim.rollout);
    let role = |sim: &Sim, hash: &str, key: &str| {
        sim.rs(hash)
            .and_then(|rs| rs.pod_metadata.labels.get(key).cloned())
    };
    assert_eq!(role(&sim, &v1, "role").as_deref(), Some("stable"));
    set_image(&mut sim.rollout, "web:2");
    let v2 = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(role(&sim, &v2, "role").as_deref(), Some("canary"));
    assert_eq!(role(&sim, &v2, "tier"), None);
    assert_eq!(role(&sim, &v1, "role").as_deref(), Some("stable"));
    assert_eq!(
        role(&sim, &v2, "app").as_deref(),
        Some("web"),
        "the template's own labels stay"
    );
    sim.decide(|d| d.full = Some(true));
    sim.settle();
    assert_eq!(role(&sim, &v2, "role").as_deref(), Some("stable"));
    assert_eq!(role(&sim, &v2, "tier").as_deref(), Some("gold"));
    // Quiet once in place: no more writes.
    assert!(sim.reconcile().pod_metadata.is_empty());
}

#[test]
fn full_promotion_skips_the_remaining_steps() {
    let mut sim = deployed(canary_rollout(
        4,
        json!([{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]),
    ));
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    sim.settle();
    sim.decide(|d| d.full = Some(true));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(canary.as_str())
    );
}

#[test]
fn a_new_template_mid_canary_starts_over_from_stable() {
    let mut sim = deployed(canary_rollout(5, json!([{"setWeight": 40}, {"pause": {}}])));
    let stable = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let abandoned = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(sim.replicas_of(&abandoned), 2);
    set_image(&mut sim.rollout, "web:3");
    let next = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(1));
    assert_eq!(sim.replicas_of(&abandoned), 0);
    assert_eq!((sim.replicas_of(&next), sim.replicas_of(&stable)), (2, 3));
    assert_eq!(sim.rs(&next).unwrap().revision, 3);
    sim.assert_ok();
}

#[test]
fn an_analysis_step_waits_for_its_run_and_goes_on_when_it_passes() {
    let (mut sim, canary) = analysed_canary(
        json!([{"setWeight": 25}, {"analysis": error_rate()}, {"setWeight": 50}]),
        None,
    );
    sim.settle();
    let run = format!("web-{canary}-1-2");
    assert_eq!(sim.run_names(), std::slice::from_ref(&run));
    assert_eq!(sim.status().current_step_index, Some(1));
    assert_eq!(sim.status().phase, Phase::Progressing);
    assert!(
        sim.status().message.contains(&run),
        "{}",
        sim.status().message
    );
    assert_eq!(sim.status().analysis_runs[0].kind, "step-1");
    assert_eq!(sim.status().canary.unwrap().weight, 25);
    sim.end_run(&run, RunPhase::Successful);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(sim.status().stable_revision, Some(canary));
    assert!(sim.status().analysis_runs.is_empty());
    sim.assert_ok();
}

#[test]
fn a_failed_analysis_aborts_in_the_reconcile_that_sees_it() {
    let (mut sim, canary) = analysed_canary(
        json!([{"setWeight": 50}, {"analysis": error_rate()}, {"setWeight": 75}]),
        None,
    );
    sim.settle();
    let stable = sim.status().stable_revision.unwrap();
    let run = format!("web-{canary}-1-2");
    sim.advance(5);
    sim.end_run(&run, RunPhase::Failed);
    let plan = sim.reconcile();
    assert!(plan.status.abort);
    assert_eq!(plan.status.phase, Phase::Aborted);
    assert_eq!(plan.abort_latency_since, Some(sim.now));
    let event = plan
        .events
        .iter()
        .find(|e| e.reason == EventReason::AnalysisFailed)
        .unwrap();
    assert!(
        event.message.contains("metric errors Failed"),
        "{}",
        event.message
    );
    assert!(event.message.contains(&run), "{}", event.message);
    assert_eq!(sim.selector_of("web-canary"), Some(stable.clone()));
    assert_eq!(sim.replicas_of(&stable), 4);
    sim.settle();
    assert_eq!(sim.replicas_of(&canary), 0);
    assert_eq!(sim.status().phase, Phase::Aborted);
    // The failed run stays listed for people to see; nothing new is started.
    assert_eq!(sim.status().analysis_runs[0].phase, "Failed");
    assert_eq!(sim.run_names(), [run]);
    sim.assert_ok();
}

#[test]
fn an_inconclusive_analysis_pauses_until_the_step_is_promoted() {
    let (mut sim, canary) =
        analysed_canary(json!([{"setWeight": 25}, {"analysis": error_rate()}]), None);
    sim.settle();
    let run = format!("web-{canary}-1-2");
    sim.end_run(&run, RunPhase::Inconclusive);
    let plan = sim.reconcile();
    assert_eq!(plan.status.phase, Phase::Paused);
    assert_eq!(
        plan.status.message,
        format!(
            "step 2/2: paused: analysis run {run} is inconclusive: metric errors Inconclusive; promote the step or abort"
        )
    );
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::AnalysisInconclusive)
    );
    assert!(
        plan.status
            .pause_conditions
            .iter()
            .any(|p| p.reason == pause::PauseReason::AnalysisInconclusive.as_str())
    );
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    sim.decide(|d| d.promoted_step = Some(1));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    sim.assert_ok();
}

#[test]
fn background_analysis_starts_at_its_step_and_stops_at_promotion() {
    let background = json!({"templates": [{"templateName": "error-rate"}], "startingStep": 1});
    let (mut sim, canary) = analysed_canary(
        json!([{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]),
        Some(background),
    );
    sim.settle();
    let run = format!("web-{canary}-bg-2");
    assert_eq!(sim.run_names(), std::slice::from_ref(&run));
    sim.decide(|d| d.promoted_step = Some(1));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert!(
        sim.runs[&run].terminating,
        "the background run is stopped at promotion"
    );
    sim.assert_ok();
}

#[test]
fn a_failing_background_analysis_aborts_at_any_step() {
    let background = json!({"templates": [{"templateName": "error-rate"}]});
    let (mut sim, canary) =
        analysed_canary(json!([{"setWeight": 25}, {"pause": {}}]), Some(background));
    sim.settle();
    let run = format!("web-{canary}-bg-2");
    sim.end_run(&run, RunPhase::Error);
    let plan = sim.reconcile();
    assert_eq!(plan.status.phase, Phase::Aborted);
    // A retry is a new attempt, with runs of its own.
    sim.settle();
    sim.decide(|d| d.retry = Some(1));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    assert!(
        sim.runs.contains_key(&format!("web-{canary}-bg-3")),
        "{:?}",
        sim.run_names()
    );
    sim.assert_ok();
}

fn routed_canary(steps: serde_json::Value) -> Rollout {
    rollout(
        json!({"canary": {"steps": steps, "maxSurge": 1, "maxUnavailable": 0,
                           "stableService": "web-stable", "canaryService": "web-canary",
                           "trafficRouting": {"nginx": {"stableIngress": "web"}}}}),
        4,
    )
}

#[test]
fn with_a_router_stable_stays_whole_and_weight_follows_ready_canary_pods() {
    let steps = json!([{"setWeight": 25},
                       {"setHeaderRoute": {"match": [{"headerName": "X-Canary", "headerValue": {"exact": "1"}}]}},
                       {"pause": {}}, {"setWeight": 75}, {"pause": {}}]);
    let mut sim = deployed(routed_canary(steps));
    let stable = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    let plan = sim.reconcile();
    assert_eq!(
        plan.traffic
            .as_ref()
            .unwrap()
            .state
            .as_ref()
            .unwrap()
            .canary_weight,
        0
    );
    assert_eq!(sim.replicas_of(&canary), 1);
    assert_eq!(sim.replicas_of(&stable), 4);
    sim.settle();
    assert_eq!(sim.status().current_step_index, Some(2));
    let plan = sim.reconcile();
    let state = plan.traffic.unwrap().state.unwrap();
    assert_eq!(state.canary_weight, 25);
    assert_eq!(
        state.routes.len(),
        1,
        "the header route is in force after its step"
    );
    assert_eq!(
        sim.replicas_of(&stable),
        4,
        "stable stays whole with a router"
    );
    sim.decide(|d| d.promoted_step = Some(2));
    sim.settle();
    assert_eq!(sim.status().canary.unwrap().weight, 75);
    assert_eq!(sim.replicas_of(&canary), 3);
    sim.decide(|d| d.promoted_step = Some(4));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(sim.selector_of("web-stable"), Some(canary.clone()));
    assert_eq!(
        sim.reconcile().traffic.unwrap().state,
        None,
        "canary Ingress removed"
    );
    assert_eq!(sim.replicas_of(&stable), 4, "the old version drains first");
    sim.advance(31);
    sim.settle();
    assert_eq!(sim.replicas_of(&stable), 0);
    sim.assert_ok();
}

#[test]
fn with_a_router_an_abort_takes_all_traffic_at_once_and_keeps_the_canary_a_while() {
    let mut sim = deployed(routed_canary(json!([{"setWeight": 50}, {"pause": {}}])));
    let stable = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    sim.settle();
    assert_eq!(sim.status().canary.unwrap().weight, 50);
    sim.decide(|d| d.abort = Some(true));
    let plan = sim.reconcile();
    assert_eq!(plan.traffic.unwrap().state, None);
    assert_eq!(
        sim.replicas_of(&canary),
        2,
        "kept for abortScaleDownDelaySeconds"
    );
    assert_eq!(sim.replicas_of(&stable), 4);
    sim.advance(31);
    sim.settle();
    assert_eq!(sim.replicas_of(&canary), 0);
    sim.assert_ok();
}

#[test]
fn a_header_route_nginx_cannot_express_is_an_invalid_spec() {
    let steps = json!([{"setHeaderRoute": {"match": [
        {"headerName": "a", "headerValue": {"exact": "1"}},
        {"headerName": "b", "headerValue": {"exact": "2"}}]}}]);
    let sim = Sim::new(routed_canary(steps));
    let plan = plan(&sim.rollout, &sim.observed(), sim.now);
    assert_eq!(plan.status.phase, Phase::Degraded);
    assert!(
        plan.status
            .message
            .starts_with("spec.strategy.canary.steps[0].setHeaderRoute: "),
        "{}",
        plan.status.message
    );
}

#[test]
fn the_status_message_describes_the_step_as_the_rest_view_does() {
    let mut sim = deployed(canary_rollout(
        4,
        json!([{"setWeight": 25}, {"pause": {}}, {"setCanaryScale": {"replicas": 2}}]),
    ));
    set_image(&mut sim.rollout, "web:2");
    sim.settle();
    assert_eq!(sim.status().message, "step 2/3: pause (until promoted)");
    let steps = &sim.rollout.spec.strategy.canary.as_ref().unwrap().steps;
    assert_eq!(describe_step(&steps[1]), "pause (until promoted)");
    assert_eq!(describe_step(&steps[2]), "setCanaryScale 2 replicas");
}

/// Updates the deployed `sim` to web:2 and reconciles, one pod becoming ready a reconcile later,
/// one ReplicaSet at a time, as they do in a cluster, until the canary is stable (at most
/// `reconciles` times): the (step, phase) states it went through and the writes it made.
fn update_until_stable(sim: &mut Sim, reconciles: usize) -> (Vec<(Option<i32>, Phase)>, usize) {
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    let before = sim.writes;
    let state = |sim: &Sim| (sim.status().current_step_index, sim.status().phase);
    let mut states = vec![state(sim)];
    for _ in 0..reconciles {
        sim.reconcile();
        if let Some(rs) = sim
            .replica_sets
            .iter_mut()
            .find(|rs| rs.ready < rs.replicas)
        {
            rs.ready += 1;
        }
        sim.advance(1);
        if states.last() != Some(&state(sim)) {
            states.push(state(sim));
        }
        if sim.status().phase == Phase::Healthy
            && sim.status().stable_revision.as_deref() == Some(canary.as_str())
        {
            break;
        }
    }
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(canary.as_str()),
        "not stable after {reconciles} reconciles: {states:?}"
    );
    (states, sim.writes - before)
}

/// The scale benchmark's rollout: one replica, `setWeight 50`, `pause 5s`, updated. Every count
/// that changes on the way is held for the next transition.
#[test]
fn a_one_replica_canary_update_takes_at_most_three_writes_per_step_transition() {
    let steps = json!([{"setWeight": 50}, {"pause": {"duration": "5s"}}]);
    let mut sim = deployed(rollout(json!({"canary": {"steps": steps}}), 1));
    let (states, writes) = update_until_stable(&mut sim, 40);
    let transitions = states.len() - 1;
    assert_eq!(
        states,
        [
            (Some(2), Phase::Healthy),
            (Some(0), Phase::Progressing),
            (Some(1), Phase::Paused),
            (Some(2), Phase::Healthy),
        ]
    );
    assert!(
        writes <= 3 * transitions,
        "{writes} writes over {transitions} transitions: {states:?}"
    );
    sim.assert_ok();
}

/// The same at ten replicas (maxSurge 25 %, maxUnavailable 0): the canary grows and stable
/// shrinks a pod at a time as pods become ready, a ReplicaSet write each, while every count
/// that changes on the way is held for the next transition: writes beyond the transitions' three
/// are at most one per pod moved.
#[test]
fn a_ten_replica_canary_update_adds_at_most_a_write_per_pod_moved() {
    let replicas = 10;
    let steps = json!([{"setWeight": 50}, {"pause": {"duration": "5s"}}]);
    let strategy = json!({"canary": {"steps": steps, "maxSurge": "25%", "maxUnavailable": 0}});
    let mut sim = deployed(rollout(strategy, replicas));
    let (states, writes) = update_until_stable(&mut sim, 200);
    let transitions = states.len() - 1;
    // Each pod of the new version is created once, and each of the old one removed once.
    let pods_moved = 2 * usize::try_from(replicas).unwrap();
    assert!(
        writes <= 3 * transitions + pods_moved,
        "{writes} writes over {transitions} transitions and {pods_moved} pods moved: {states:?}"
    );
    assert!(sim.peak_pods <= replicas + 3, "peak {} pods", sim.peak_pods);
    sim.assert_ok();
}
