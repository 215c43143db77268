//! Decisions across revisions and attempts, written exactly as the REST API and the CLI write
//! them (`action_patch`, applied as the apiserver applies a JSON merge patch): an indefinite
//! pause is passed only when a promote of that revision, attempt and step, or a full promote of
//! that attempt, was written. And what an aborted rollout says about why.

use std::collections::BTreeSet;

use api::Action;

use super::*;
use crate::decision::action_patch;
use crate::decision::tests::merge;

/// Indefinite pauses at 1, 3 and 6, a timed one at 4.
fn three_pause_steps() -> serde_json::Value {
    json!([{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}},
           {"pause": {"duration": "30s"}}, {"setWeight": 75}, {"pause": {}}])
}

const INDEFINITE_PAUSES: [i32; 3] = [1, 3, 6];
const STEPS: i32 = 7;

/// What the CLI and the REST API wrote: promotes as (revision, attempt, step) and full
/// promotes as (revision, attempt), each taken from the status it was decided on.
#[derive(Default)]
struct Written {
    promotes: BTreeSet<(String, i32, i32)>,
    fulls: BTreeSet<(String, i32)>,
}

impl Sim {
    /// Decides `action` on the rollout as it stands and writes the patch; the reason it did not
    /// apply otherwise.
    fn act(&mut self, action: &Action, written: &mut Written) -> Result<(), String> {
        let patch = action_patch(&self.rollout, &[], action)?;
        let status = self.status();
        let revision = status.updated_revision.clone().unwrap_or_default();
        match action {
            Action::Promote { full: true, .. } => {
                written.fulls.insert((revision, status.attempt));
            }
            Action::Promote { full: false, .. } => {
                let step = status.current_step_index.unwrap_or(0);
                written.promotes.insert((revision, status.attempt, step));
            }
            _ => {}
        }
        let mut rollout = serde_json::to_value(&self.rollout).unwrap();
        merge(&mut rollout, &patch);
        self.rollout = serde_json::from_value(rollout).unwrap();
        Ok(())
    }
}

/// The indefinite pauses passed between two statuses, as (revision, attempt, step). A new
/// attempt (a new template, the same one again, a retry) starts from step 0.
fn pauses_passed(before: &RolloutStatus, after: &RolloutStatus) -> Vec<(String, i32, i32)> {
    let Some(revision) = after.updated_revision.clone() else {
        return Vec::new();
    };
    if before.stable_revision.as_ref() == Some(&revision) {
        // Back to the stable template: it finishes at once, nothing is rolled out.
        return Vec::new();
    }
    let same_attempt =
        before.updated_revision.as_ref() == Some(&revision) && before.attempt == after.attempt;
    let from = if same_attempt {
        before.current_step_index.unwrap_or(0)
    } else {
        0
    };
    let to = if after.stable_revision.as_ref() == Some(&revision) {
        STEPS
    } else {
        after.current_step_index.unwrap_or(0)
    };
    INDEFINITE_PAUSES
        .iter()
        .filter(|p| from <= **p && **p < to)
        .map(|p| (revision.clone(), after.attempt, *p))
        .collect()
}

/// One reconcile; the first pause passed without a decision for it, if any.
fn reconcile_checked(sim: &mut Sim, written: &Written) -> Result<(), String> {
    let before = sim.status();
    sim.reconcile();
    let after = sim.status();
    for (revision, attempt, step) in pauses_passed(&before, &after) {
        let promoted = written
            .promotes
            .contains(&(revision.clone(), attempt, step));
        let full = written.fulls.contains(&(revision.clone(), attempt));
        if !promoted && !full {
            return Err(format!(
                "revision {revision} passed its pause at step {step} in attempt {attempt} \
                 without a promote of it; decision {:?}; status {after:?}",
                sim.rollout.spec.decision
            ));
        }
    }
    Ok(())
}

/// Plays `events`, every action through `action_patch`; the first unapproved pass, if any.
fn play_decisions(sim: &mut Sim, events: &[Event]) -> Result<(), String> {
    let mut written = Written::default();
    for event in events {
        let action = match event {
            Event::Promote => Some(Action::Promote {
                full: false,
                from_step: None,
            }),
            Event::PromoteFull => Some(Action::Promote {
                full: true,
                from_step: None,
            }),
            Event::Abort => Some(Action::Abort),
            Event::Retry => Some(Action::Retry),
            Event::Pause(true) => Some(Action::Pause),
            Event::Pause(false) => Some(Action::Resume),
            Event::NewTemplate { image } => {
                set_image(&mut sim.rollout, &format!("web:{image}"));
                None
            }
            Event::PodsReady { replica_set, count } => {
                if let Some(rs) = sim.replica_sets.get_mut(*replica_set) {
                    rs.ready = (rs.ready + count).min(rs.replicas);
                }
                None
            }
            Event::PodUnready { replica_set } => {
                if let Some(rs) = sim.replica_sets.get_mut(*replica_set) {
                    rs.ready = (rs.ready - 1).max(0);
                }
                None
            }
            Event::Advance { seconds } => {
                sim.advance(*seconds);
                None
            }
            Event::Reconcile => None,
        };
        if let Some(action) = action {
            // An action that does not apply now writes nothing, as the API answers 409.
            let _ = sim.act(&action, &mut written);
        }
        reconcile_checked(sim, &written)?;
        // Pods come up between most reconciles, so that releases get far.
        sim.pods_ready();
        reconcile_checked(sim, &written)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn a_pause_is_passed_only_by_a_promote_of_that_revision_attempt_and_step(
        replicas in 1..6i32,
        events in proptest::collection::vec(event(), 1..80),
    ) {
        let mut sim = deployed(canary_rollout(replicas, three_pause_steps()));
        let outcome = play_decisions(&mut sim, &events);
        prop_assert_eq!(outcome, Ok(()));
        prop_assert_eq!(sim.violation.clone(), None);
    }
}

// ---- the sequences of the report, one by one ----------------------------------------------

const PROMOTE: Action = Action::Promote {
    full: false,
    from_step: None,
};
const PROMOTE_FULL: Action = Action::Promote {
    full: true,
    from_step: None,
};

/// A 4-replica canary with [`three_pause_steps`], Healthy on v1 and given v2, paused at step 1.
fn paused_v2() -> (Sim, Written) {
    let mut sim = deployed(canary_rollout(4, three_pause_steps()));
    set_image(&mut sim.rollout, "web:2");
    sim.settle();
    assert_paused_at(&sim, 1);
    (sim, Written::default())
}

fn assert_paused_at(sim: &Sim, step: i32) {
    let status = sim.status();
    assert_eq!(
        (status.phase, status.current_step_index),
        (Phase::Paused, Some(step)),
        "decision {:?}; {status:?}",
        sim.rollout.spec.decision
    );
}

/// Settles, then waits well past every timed pause: only decisions move it further.
fn settle_long(sim: &mut Sim) {
    sim.settle();
    sim.advance(3600);
    sim.settle();
}

#[test]
fn a_promote_of_one_revision_never_passes_a_pause_of_the_next_after_a_retry() {
    let (mut sim, mut written) = paused_v2();
    sim.act(&PROMOTE, &mut written).unwrap();
    settle_long(&mut sim);
    assert_paused_at(&sim, 3);
    set_image(&mut sim.rollout, "web:3");
    settle_long(&mut sim);
    assert_paused_at(&sim, 1);
    sim.act(&Action::Abort, &mut written).unwrap();
    settle_long(&mut sim);
    assert_eq!(sim.status().phase, Phase::Aborted);
    sim.act(&Action::Retry, &mut written).unwrap();
    settle_long(&mut sim);
    assert_paused_at(&sim, 1);
    sim.assert_ok();
}

#[test]
fn a_promote_before_a_retry_never_passes_a_pause_after_it() {
    let (mut sim, mut written) = paused_v2();
    sim.act(&PROMOTE, &mut written).unwrap();
    settle_long(&mut sim);
    assert_paused_at(&sim, 3);
    sim.act(&Action::Abort, &mut written).unwrap();
    settle_long(&mut sim);
    sim.act(&Action::Retry, &mut written).unwrap();
    settle_long(&mut sim);
    assert_paused_at(&sim, 1);
    let decision = sim.rollout.spec.decision.clone().unwrap();
    assert_eq!((decision.promoted_step, decision.full), (None, None));
}

#[test]
fn a_full_promote_of_one_revision_never_carries_into_the_next() {
    let (mut sim, mut written) = paused_v2();
    sim.act(&PROMOTE_FULL, &mut written).unwrap();
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    set_image(&mut sim.rollout, "web:3");
    settle_long(&mut sim);
    assert_paused_at(&sim, 1);
    sim.act(&PROMOTE, &mut written).unwrap();
    settle_long(&mut sim);
    assert_paused_at(&sim, 3);
    sim.assert_ok();
}

#[test]
fn an_abort_of_one_revision_never_aborts_the_next() {
    let (mut sim, mut written) = paused_v2();
    sim.act(&Action::Abort, &mut written).unwrap();
    settle_long(&mut sim);
    assert_eq!(sim.status().phase, Phase::Aborted);
    set_image(&mut sim.rollout, "web:3");
    settle_long(&mut sim);
    assert_paused_at(&sim, 1);
    sim.act(&PROMOTE, &mut written).unwrap();
    settle_long(&mut sim);
    assert_paused_at(&sim, 3);
    assert!(!sim.status().abort);
    sim.assert_ok();
}

#[test]
fn a_decision_for_a_new_revision_replaces_the_old_one_whole() {
    let (mut sim, mut written) = paused_v2();
    sim.act(&PROMOTE_FULL, &mut written).unwrap();
    sim.settle();
    set_image(&mut sim.rollout, "web:3");
    sim.settle();
    let patch = action_patch(&sim.rollout, &[], &PROMOTE).unwrap();
    let v3 = hash_of(&sim.rollout);
    let attempt = sim.status().attempt;
    assert_eq!(
        patch,
        json!({"spec": {"decision": {"revision": v3, "attempt": attempt, "promotedStep": 1,
                                     "full": null, "abort": null, "retry": null}}})
    );
}

#[test]
fn a_promote_of_an_earlier_attempt_counts_for_nothing_when_the_template_comes_back() {
    let (mut sim, mut written) = paused_v2();
    sim.act(&PROMOTE, &mut written).unwrap();
    settle_long(&mut sim);
    assert_paused_at(&sim, 3);
    // v3 ships and nobody decides anything about it; then v2 comes back.
    set_image(&mut sim.rollout, "web:3");
    settle_long(&mut sim);
    set_image(&mut sim.rollout, "web:2");
    settle_long(&mut sim);
    assert_eq!(
        sim.rollout.spec.decision.as_ref().unwrap().promoted_step,
        Some(1)
    );
    assert_paused_at(&sim, 1);
}

#[test]
fn a_promote_approves_only_the_step_it_names_while_the_rollout_is_at_it() {
    let (mut sim, _) = paused_v2();
    // Written by hand, ahead of time and without an attempt: it approves neither step 1 nor
    // anything before step 6, and step 6 only once the rollout stands there.
    sim.decide(|d| d.promoted_step = Some(6));
    settle_long(&mut sim);
    assert_paused_at(&sim, 1);
    sim.decide(|d| d.promoted_step = Some(1));
    settle_long(&mut sim);
    assert_paused_at(&sim, 3);
    sim.decide(|d| d.promoted_step = Some(3));
    sim.settle();
    assert_eq!(
        sim.status().current_step_index,
        Some(4),
        "the timed pause runs"
    );
    sim.advance(30);
    sim.settle();
    assert_paused_at(&sim, 6);
}

#[test]
fn a_retry_value_acts_once_and_only_on_an_aborted_attempt() {
    let (mut sim, mut written) = paused_v2();
    // A retry that arrives while nothing is aborted starts nothing, now or after a later abort.
    sim.decide(|d| d.retry = Some(5));
    sim.settle();
    assert_eq!(sim.status().retries, 5);
    sim.act(&Action::Abort, &mut written).unwrap();
    settle_long(&mut sim);
    assert_eq!(sim.status().phase, Phase::Aborted);
    let attempt = sim.status().attempt;
    sim.act(&Action::Retry, &mut written).unwrap();
    assert_eq!(sim.rollout.spec.decision.as_ref().unwrap().retry, Some(6));
    sim.settle();
    assert_eq!(sim.status().attempt, attempt + 1);
    assert_paused_at(&sim, 1);
    // A retry written for an earlier attempt does not retry a later abort.
    sim.act(&Action::Abort, &mut written).unwrap();
    sim.settle();
    let mut stale = sim.rollout.spec.decision.clone().unwrap();
    stale.attempt = Some(attempt);
    stale.abort = Some(false);
    stale.retry = Some(9);
    sim.rollout.spec.decision = Some(stale);
    settle_long(&mut sim);
    assert_eq!(sim.status().phase, Phase::Aborted);
}

// ---- why an aborted rollout is aborted -----------------------------------------------------

fn aborted_message(sim: &Sim) -> String {
    let status = sim.status();
    assert_eq!(status.phase, Phase::Aborted, "{status:?}");
    status.message
}

#[test]
fn an_abort_by_a_decision_says_so_for_as_long_as_it_lasts() {
    let (mut sim, mut written) = paused_v2();
    let (v1, v2) = (sim.status().stable_revision.unwrap(), hash_of(&sim.rollout));
    sim.act(&Action::Abort, &mut written).unwrap();
    settle_long(&mut sim);
    assert_eq!(
        aborted_message(&sim),
        format!(
            "revision {v2} aborted: by a decision (spec.decision.abort); traffic on stable {v1}"
        )
    );
    sim.act(&Action::Retry, &mut written).unwrap();
    sim.settle();
    assert_eq!(sim.status().abort_cause, None);
}

#[test]
fn an_abort_on_a_failed_analysis_names_the_run_and_the_metric() {
    let (mut sim, canary) = analysed_canary(
        json!([{"setWeight": 50}, {"analysis": error_rate()}, {"setWeight": 75}]),
        None,
    );
    sim.settle();
    let run = format!("web-{canary}-1-2");
    sim.end_run(&run, RunPhase::Failed);
    sim.settle();
    sim.advance(3600);
    sim.settle();
    let message = aborted_message(&sim);
    assert!(
        message.starts_with(&format!(
            "revision {canary} aborted: analysis run {run} ended Failed: metric errors Failed"
        )),
        "{message}"
    );
    let stable = sim.status().stable_revision.unwrap();
    assert!(
        message.ends_with(&format!("; traffic on stable {stable}")),
        "{message}"
    );
}

#[test]
fn an_abort_at_the_progress_deadline_names_the_deadline() {
    let mut r = canary_rollout(2, json!([{"setWeight": 50}, {"pause": {}}]));
    r.spec.progress_deadline_seconds = Some(60);
    let mut sim = deployed(r);
    set_image(&mut sim.rollout, "web:2");
    // The canary's pods never become ready.
    sim.reconcile();
    sim.advance(61);
    sim.reconcile();
    sim.reconcile();
    assert!(
        aborted_message(&sim).contains(
            "aborted: progress deadline exceeded: no progress for 60s while waiting for pods; traffic on stable"
        ),
        "{}",
        sim.status().message
    );
}
