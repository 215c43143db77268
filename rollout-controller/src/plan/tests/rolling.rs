//! The rolling update: within maxSurge and maxUnavailable, under background analysis.

use super::*;

#[test]
fn rolling_stays_within_surge_and_unavailability() {
    let mut sim = deployed(rolling_rollout(10, 2, 1));
    let old = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let new = hash_of(&sim.rollout);
    sim.peak_pods = 0;
    for _ in 0..40 {
        sim.reconcile();
        sim.pods_ready();
        if sim.status().phase == Phase::Healthy {
            break;
        }
    }
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!(sim.peak_pods, 12, "the surge reaches maxSurge");
    assert_eq!((sim.replicas_of(&new), sim.replicas_of(&old)), (10, 0));
    sim.assert_ok();
}

#[test]
fn rolling_background_analysis_gates_and_aborts() {
    let mut rollout = rolling_rollout(4, 1, 0);
    if let Some(rolling) = rollout.spec.strategy.rolling_update.as_mut() {
        rolling.analysis = Some(serde_json::from_value(error_rate()).unwrap());
    }
    let mut sim = deployed(rollout);
    let old = sim.status().stable_revision.unwrap();
    set_image(&mut sim.rollout, "web:2");
    let new = hash_of(&sim.rollout);
    sim.reconcile();
    sim.pods_ready();
    let run = format!("web-{new}-bg-2");
    sim.end_run(&run, RunPhase::Failed);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Aborted);
    assert_eq!(sim.replicas_of(&old), 4);
    assert_eq!(sim.replicas_of(&new), 0);
    sim.assert_ok();
}
