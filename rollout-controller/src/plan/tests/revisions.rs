//! What every strategy shares about revisions: the first template, a stable ReplicaSet deleted
//! by hand, decisions about another revision, a change back to stable, undo, and history.

use super::*;

#[test]
fn the_first_template_is_stable_at_once() {
    let sim = deployed(canary_rollout(5, json!([{"setWeight": 20}])));
    let hash = hash_of(&sim.rollout);
    assert_eq!(sim.status().stable_revision.as_deref(), Some(hash.as_str()));
    assert_eq!(sim.replicas_of(&hash), 5);
    assert_eq!(
        sim.selector_of("web-stable").as_deref(),
        Some(hash.as_str())
    );
    assert_eq!(sim.rs(&hash).unwrap().revision, 1);
    sim.assert_ok();
}

#[test]
fn a_stable_replica_set_deleted_by_hand_is_reported_and_replaced() {
    let mut sim = deployed(canary_rollout(3, json!([{"setWeight": 34}, {"pause": {}}])));
    let v1 = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let v2 = hash_of(&sim.rollout);
    sim.settle();
    sim.replica_sets.retain(|rs| rs.hash != v1);
    let plan = sim.reconcile();
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::StableReplicaSetMissing),
        "{:?}",
        plan.events
    );
    sim.settle();
    assert_eq!(sim.status().stable_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(
        sim.replicas_of(&v2),
        3,
        "the remaining version runs at full size"
    );
    sim.assert_ok();
}

#[test]
fn a_decision_for_another_revision_is_ignored() {
    let mut sim = deployed(canary_rollout(4, json!([{"setWeight": 50}, {"pause": {}}])));
    set_image(&mut sim.rollout, "web:2");
    sim.rollout.spec.decision = Some(Decision {
        revision: "someotherx".into(),
        full: Some(true),
        abort: Some(true),
        ..Decision::default()
    });
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Paused);
    assert_eq!(sim.status().current_step_index, Some(1));
}

#[test]
fn changing_back_to_stable_finishes_at_once() {
    let mut sim = deployed(canary_rollout(5, json!([{"setWeight": 40}, {"pause": {}}])));
    let stable = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let canary = hash_of(&sim.rollout);
    sim.settle();
    set_image(&mut sim.rollout, "web:1");
    sim.settle();
    assert_eq!(sim.status().phase, Phase::Healthy);
    assert_eq!((sim.replicas_of(&canary), sim.replicas_of(&stable)), (0, 5));
    assert_eq!(
        sim.status().stable_revision.as_deref(),
        Some(stable.as_str())
    );
    sim.assert_ok();
}

#[test]
fn an_undo_to_an_old_template_reuses_its_replica_set_as_the_newest_revision() {
    let mut sim = deployed(rolling_rollout(2, 1, 0));
    let v1 = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    sim.settle();
    set_image(&mut sim.rollout, "web:1");
    sim.settle();
    assert_eq!(sim.status().stable_revision.as_deref(), Some(v1.as_str()));
    assert_eq!(sim.rs(&v1).unwrap().revision, 3);
    // v1 was retired when v2 became stable, and came back; v2 is the history now.
    assert_eq!((sim.replica_sets.len(), sim.retired.len()), (1, 1));
    assert_eq!(sim.retired[0].revision, 2);
    sim.assert_ok();
}

#[test]
fn a_new_revision_is_numbered_after_the_highest_even_when_that_one_is_retired() {
    let mut sim = deployed(rolling_rollout(2, 1, 0));
    // As after revisions 2 to 5 were rolled out, retired, and pruned from the history.
    let mut status = sim.status();
    status.latest_revision = Some(5);
    sim.rollout.status = Some(status);
    set_image(&mut sim.rollout, "web:6");
    sim.settle();
    let v6 = hash_of(&sim.rollout);
    assert_eq!(sim.rs(&v6).map(|rs| rs.revision), Some(6));
    assert_eq!(sim.status().latest_revision, Some(6));
    assert_eq!(
        sim.retired.iter().map(|rs| rs.revision).collect::<Vec<_>>(),
        [1]
    );
    sim.assert_ok();
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let mut r = rolling_rollout(2, 1, 0);
    r.spec.revision_history_limit = Some(1);
    let mut sim = deployed(r);
    for image in ["web:2", "web:3", "web:4"] {
        set_image(&mut sim.rollout, image);
        sim.settle();
    }
    let current = hash_of(&sim.rollout);
    let live: Vec<u64> = sim.replica_sets.iter().map(|rs| rs.revision).collect();
    let history: Vec<u64> = sim.retired.iter().map(|rs| rs.revision).collect();
    assert_eq!(live, [4], "only the current one is live");
    assert_eq!(sim.rs(&current).map(|rs| rs.revision), Some(4));
    assert_eq!(history, [3], "the newest old revision is kept");
    sim.assert_ok();
}

#[test]
fn a_stable_scaled_to_zero_during_its_canary_is_retired_by_the_promotion() {
    // One replica at weight 50: the canary's pod replaces stable's, which goes to zero while it
    // is still stable, and its ReplicaSet's status still counts a pod that is going.
    let steps = json!([{"setWeight": 50}, {"pause": {"duration": "5s"}}]);
    let mut sim = deployed(canary_rollout(1, steps));
    let v1 = hash_of(&sim.rollout);
    set_image(&mut sim.rollout, "web:2");
    let v2 = hash_of(&sim.rollout);
    for _ in 0..20 {
        sim.reconcile();
        if let Some(rs) = sim.replica_sets.iter_mut().find(|rs| rs.hash == v2) {
            rs.ready = rs.replicas;
        }
        if let Some(rs) = sim.replica_sets.iter_mut().find(|rs| rs.hash == v1)
            && rs.replicas == 0
        {
            rs.ready = 1;
        }
        if sim.status().stable_revision.as_deref() == Some(v2.as_str()) {
            break;
        }
        sim.advance(1);
    }
    assert_eq!(sim.status().stable_revision.as_deref(), Some(v2.as_str()));
    assert!(
        sim.rs(&v1).is_none() && sim.retired.iter().any(|rs| rs.hash == v1),
        "v1 retired in the reconcile that promoted v2"
    );
    sim.assert_ok();
}

#[test]
fn a_store_behind_the_status_does_not_renumber_the_revision_rolling_out() {
    let mut sim = deployed(canary_rollout(1, json!([{"setWeight": 50}, {"pause": {}}])));
    set_image(&mut sim.rollout, "web:2");
    let v2 = hash_of(&sim.rollout);
    sim.reconcile();
    let numbered = sim.rs(&v2).expect("v2 is created").revision;
    assert_eq!(sim.status().updated_revision.as_deref(), Some(v2.as_str()));
    // As when the Rollout's status comes back from the watch with the number the last reconcile
    // gave v2 before the ReplicaSet does: the store still holds v2 under an older one.
    let mut status = sim.status();
    status.latest_revision = Some(numbered + 1);
    sim.rollout.status = Some(status);
    for _ in 0..3 {
        let plan = plan(&sim.rollout, &sim.observed(), sim.now);
        let renumbered: Vec<u64> = replica_set_writes(&plan, &v2)
            .into_iter()
            .filter_map(|(_, revision)| revision)
            .collect();
        assert!(renumbered.is_empty(), "v2 renumbered to {renumbered:?}");
        assert_eq!(plan.status.latest_revision, Some(numbered + 1));
        sim.rollout.status = Some(plan.status);
    }

    // Nor does a store that has not caught up with v2's creation number it again.
    sim.replica_sets.retain(|rs| rs.hash != v2);
    let mut status = sim.status();
    status.latest_revision = Some(numbered);
    sim.rollout.status = Some(status);
    let plan = plan(&sim.rollout, &sim.observed(), sim.now);
    assert_eq!(replica_set_writes(&plan, &v2), [(true, Some(numbered))]);
}

/// The writes a plan makes of one version's ReplicaSet: (created, the revision it is given).
fn replica_set_writes(plan: &Plan, hash: &str) -> Vec<(bool, Option<u64>)> {
    plan.writes()
        .into_iter()
        .filter_map(|write| match write {
            Write::ScaleUp { target, .. } | Write::ScaleDown(target) if target.hash == hash => {
                Some((target.create, target.revision))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_template_changed_back_to_a_live_replica_set_makes_it_the_newest_revision() {
    let mut sim = deployed(canary_rollout(4, json!([{"setWeight": 50}, {"pause": {}}])));
    set_image(&mut sim.rollout, "web:2");
    let v2 = hash_of(&sim.rollout);
    sim.settle();
    set_image(&mut sim.rollout, "web:3");
    sim.reconcile();
    assert_eq!(sim.status().latest_revision, Some(3));
    // v2 is still live, on its way down for v3; back to it.
    assert!(sim.rs(&v2).is_some(), "v2 was retired");
    set_image(&mut sim.rollout, "web:2");
    sim.reconcile();
    assert_eq!(sim.status().updated_revision.as_deref(), Some(v2.as_str()));
    assert_eq!(sim.rs(&v2).map(|rs| rs.revision), Some(4));
    assert_eq!(sim.status().latest_revision, Some(4));
    sim.settle();
    assert_eq!(sim.rs(&v2).map(|rs| rs.revision), Some(4));
    sim.assert_ok();
}
