//! A/B tests: matching requests to the new version for a duration, under analysis, then a
//! promotion by itself or by a decision.

use super::*;

#[test]
fn an_ab_test_routes_matching_requests_to_b_then_promotes_it_when_it_passes() {
    let matches =
        json!([{"headers": [{"name": "X-Canary", "exact": "always"}]}, {"cookie": "canary"}]);
    let mut sim = deployed(ab_rollout(gateway(), matches, "auto"));
    let a = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let b = hash_of(&sim.rollout);
    let plan = sim.reconcile();
    assert_eq!(
        plan.traffic.unwrap().state,
        None,
        "nothing goes to B before it is ready"
    );
    sim.settle();
    assert_eq!((sim.replicas_of(&a), sim.replicas_of(&b)), (3, 3));
    assert_eq!(sim.selector_of("web-canary"), Some(b.clone()));
    let state = sim.reconcile().traffic.unwrap().state.unwrap();
    assert_eq!(state.canary_weight, 0);
    assert_eq!(state.routes.len(), 2);
    let run = format!("web-{b}-ab-2");
    assert!(sim.runs.contains_key(&run));
    // The run passing early is not enough: the test lasts its duration.
    sim.end_run(&run, RunPhase::Successful);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Progressing);
    sim.advance(601);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(sim.selector_of("web-stable"), Some(b.clone()));
    assert_eq!(
        sim.reconcile().traffic.unwrap().state,
        None,
        "the B routes are removed"
    );
    sim.advance(31);
    sim.settle();
    assert_eq!(sim.replicas_of(&a), 0);
    sim.assert_ok();
}

#[test]
fn a_manual_ab_test_waits_for_a_decision_and_a_failed_one_aborts() {
    let matches = json!([{"cookie": "canary"}]);
    let mut sim = deployed(ab_rollout(gateway(), matches, "manual"));
    set_image(&mut sim.rollout, "web:2");
    let b = hash_of(&sim.rollout);
    sim.settle();
    let run = format!("web-{b}-ab-2");
    sim.advance(601);
    sim.settle();
    assert!(
        sim.runs[&run].terminating,
        "time is up: the run is stopped and decides"
    );
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    assert!(
        sim.status().message.contains("waiting for promotion"),
        "{}",
        sim.status().message
    );
    sim.decide(|d| d.promoted_step = Some(0));
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);

    set_image(&mut sim.rollout, "web:3");
    let c = hash_of(&sim.rollout);
    sim.settle();
    sim.end_run(&format!("web-{c}-ab-3"), RunPhase::Failed);
    let plan = sim.reconcile();
    assert_eq!(plan.status.phase, Phase::Aborted);
    assert_eq!(plan.traffic.unwrap().state, None);
    sim.assert_ok();
}

#[test]
fn an_ab_match_nginx_cannot_express_is_an_invalid_spec() {
    let matches = json!([{"headers": [{"name": "a", "exact": "1"}, {"name": "b", "prefix": "x"}]}]);
    let sim = Sim::new(ab_rollout(
        json!({"nginx": {"stableIngress": "web"}}),
        matches,
        "auto",
    ));
    let plan = plan(&sim.rollout, &sim.observed(), sim.now);
    assert_eq!(plan.status.phase, Phase::Degraded);
    assert!(
        plan.status
            .message
            .starts_with("spec.strategy.abTest.match: "),
        "{}",
        plan.status.message
    );
}
