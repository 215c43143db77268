//! One Service named for two versions (stable and canary, A and B, active and preview): the
//! controller pins each role to its own version, so a shared Service had its selector moved
//! back and forth on every reconcile, thousands of writes a minute, while the status said only
//! that the step was running. Refused whole instead, at the second field.

use super::*;

fn with_services(names: &[&str]) -> Observed {
    let mut observed = Observed::default();
    for name in names {
        observed
            .services
            .insert((*name).to_owned(), BTreeMap::new());
    }
    observed
}

fn assert_refused_at(rollout: &Rollout, observed: &Observed, field: &str, other: &str) {
    let plan = plan(rollout, observed, Timestamp::UNIX_EPOCH);
    assert_eq!(
        plan.status.phase,
        Phase::Degraded,
        "{field}: {}",
        plan.status.message
    );
    assert!(
        plan.status
            .message
            .starts_with(&format!("{field}: Service "))
            && plan.status.message.contains(other),
        "{field}: {}",
        plan.status.message
    );
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::InvalidSpec)
    );
    assert!(
        plan.selectors.is_empty() && plan.scale_up.is_empty(),
        "{field}: {plan:?}"
    );
}

#[test]
fn one_service_for_both_versions_is_an_invalid_spec() {
    let canary = rollout(
        json!({"canary": {"stableService": "web", "canaryService": "web",
                          "steps": [{"setWeight": 50}, {"pause": {}}]}}),
        2,
    );
    assert_refused_at(
        &canary,
        &with_services(&["web"]),
        "spec.strategy.canary.canaryService",
        "stableService",
    );

    let blue_green = rollout(
        json!({"blueGreen": {"activeService": "web", "previewService": "web"}}),
        2,
    );
    assert_refused_at(
        &blue_green,
        &with_services(&["web"]),
        "spec.strategy.blueGreen.previewService",
        "activeService",
    );

    let mut ab = ab_rollout(
        gateway(),
        json!([{"headers": [{"name": "X-Canary", "exact": "always"}]}]),
        "auto",
    );
    if let Some(ab) = ab.spec.strategy.ab_test.as_mut() {
        ab.canary_service = ab.stable_service.clone();
        // The Services are what is tested; the analysis would need its template observed.
        ab.analysis = None;
    }
    let observed = with_services(&["web-stable"]);
    assert_refused_at(
        &ab,
        &observed,
        "spec.strategy.abTest.canaryService",
        "stableService",
    );
}

#[test]
fn two_services_for_two_versions_are_valid() {
    let canary = rollout(
        json!({"canary": {"stableService": "web-stable", "canaryService": "web-canary",
                          "steps": [{"setWeight": 50}]}}),
        2,
    );
    let plan = plan(
        &canary,
        &with_services(&["web-stable", "web-canary"]),
        Timestamp::UNIX_EPOCH,
    );
    assert_ne!(
        plan.status.phase,
        Phase::Degraded,
        "{}",
        plan.status.message
    );
}
