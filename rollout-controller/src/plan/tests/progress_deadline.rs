//! A progress deadline that does not abort (`progressDeadlineAbort: false`, or a rollout on its
//! stable version) still moves the rollout to Degraded, and that transition was written to the
//! status alone: no Event, so nothing counted and nothing in `kubectl get events`.

use super::*;

#[test]
fn a_deadline_that_does_not_abort_is_degraded_with_one_warning_event() {
    let mut r = canary_rollout(2, json!([{"setWeight": 50}, {"pause": {}}]));
    r.spec.progress_deadline_seconds = Some(60);
    r.spec.progress_deadline_abort = Some(false);
    let mut sim = deployed(r);
    set_image(&mut sim.rollout, "web:2");
    // The canary's pods never become ready.
    sim.reconcile();
    sim.advance(61);
    let plan = sim.reconcile();
    assert_eq!(sim.status().phase, Phase::Degraded, "{:?}", sim.status());
    let warned: Vec<&PlannedEvent> = plan
        .events
        .iter()
        .filter(|e| e.reason == EventReason::ProgressStalled && e.type_ == EventType::Warning)
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", plan.events);
    assert!(warned[0].message.contains("60s"), "{}", warned[0].message);
    // Still stalled a reconcile later: nothing new to say.
    sim.advance(10);
    let again = sim.reconcile();
    assert_eq!(sim.status().phase, Phase::Degraded);
    assert!(
        !again
            .events
            .iter()
            .any(|e| e.reason == EventReason::ProgressStalled),
        "{:?}",
        again.events
    );
}

#[test]
fn the_progress_deadline_counts_only_waiting_and_aborts() {
    let mut r = canary_rollout(2, json!([{"setWeight": 50}, {"pause": {}}]));
    r.spec.progress_deadline_seconds = Some(60);
    let mut sim = deployed(r);
    set_image(&mut sim.rollout, "web:2");
    // Paused for a long time: no deadline.
    sim.settle();
    sim.advance(600);
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    // Waiting for pods that never become ready.
    sim.decide(|d| d.promoted_step = Some(1));
    sim.reconcile();
    sim.advance(30);
    sim.reconcile();
    assert_eq!(sim.status().phase, Phase::Progressing);
    sim.advance(31);
    let plan = sim.reconcile();
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::ProgressDeadlineExceeded)
    );
    assert_eq!(sim.status().phase, Phase::Aborted);
}
