//! Specs the controller must refuse whole, naming the field, even when the apiserver let them
//! through (a Rollout stored before the CRD's rules, or its schema skipped): bounds that are not
//! counts or percentages, an empty selector, a selector whose expressions miss the template,
//! Services and templates that are not there; and every finding of a spec, in order.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;

/// The plan of `rollout` at its first reconcile, which must be an InvalidSpec at `field`: a
/// Degraded status saying so, an Event, and no write to the cluster.
fn assert_refused_whole(rollout: &Rollout, field: &str) {
    let plan = plan(rollout, &Observed::default(), Timestamp::UNIX_EPOCH);
    assert_eq!(
        plan.status.phase,
        Phase::Degraded,
        "{field}: {}",
        plan.status.message
    );
    assert!(
        plan.status.message.starts_with(&format!("{field}: ")),
        "{field}: {}",
        plan.status.message
    );
    let invalid = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec")
        .unwrap();
    assert_eq!(invalid.status, "True");
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::InvalidSpec)
    );
    assert!(
        plan.scale_up.is_empty() && plan.scale_down.is_empty() && plan.selectors.is_empty(),
        "{field}: {plan:?}"
    );
}

#[test]
fn bounds_that_are_not_counts_or_percentages_stop_the_rollout_as_invalid() {
    let bad = [
        IntOrString::String("abc".into()),
        IntOrString::Int(-1),
        IntOrString::String("-1".into()),
        IntOrString::String("1.5".into()),
        IntOrString::String("101%".into()),
        IntOrString::String("3".into()),
    ];
    for value in bad {
        let mut rolling = rolling_rollout(3, 1, 0);
        let mut canary = canary_rollout(3, json!([{"setWeight": 50}]));
        let mut routed = canary_rollout(3, json!([{"setWeight": 50}]));
        routed
            .spec
            .strategy
            .canary
            .as_mut()
            .unwrap()
            .traffic_routing =
            Some(serde_json::from_value(json!({"nginx": {"stableIngress": "web"}})).unwrap());
        if let Some(r) = rolling.spec.strategy.rolling_update.as_mut() {
            r.max_surge = value.clone();
        }
        assert_refused_whole(&rolling, "spec.strategy.rollingUpdate.maxSurge");
        rolling.spec.strategy.rolling_update = Some(crate::crd::RollingUpdate {
            max_unavailable: value.clone(),
            ..Default::default()
        });
        assert_refused_whole(&rolling, "spec.strategy.rollingUpdate.maxUnavailable");
        for canary in [&mut canary, &mut routed] {
            if let Some(c) = canary.spec.strategy.canary.as_mut() {
                c.max_unavailable = value.clone();
            }
            assert_refused_whole(canary, "spec.strategy.canary.maxUnavailable");
        }
    }
}

#[test]
fn an_empty_selector_stops_the_rollout_as_invalid() {
    let mut r = rolling_rollout(2, 1, 0);
    r.spec.selector = LabelSelector::default();
    assert_refused_whole(&r, "spec.selector");
}

#[test]
fn a_selector_expression_that_misses_the_template_stops_the_rollout_as_invalid() {
    let mut r = rolling_rollout(2, 1, 0);
    r.spec.selector.match_expressions = Some(vec![LabelSelectorRequirement {
        key: "app".into(),
        operator: "In".into(),
        values: Some(vec!["api".into()]),
    }]);
    assert_refused_whole(&r, "spec.selector.matchExpressions[0]");
}

#[test]
fn a_rollout_name_longer_than_a_label_value_stops_the_rollout_as_invalid() {
    let mut r = rolling_rollout(2, 1, 0);
    r.metadata.name = Some("w".repeat(crate::crd::MAX_ROLLOUT_NAME + 1));
    assert_refused_whole(&r, "metadata.name");
    r.metadata.name = Some("w".repeat(crate::crd::MAX_ROLLOUT_NAME));
    let plan = plan(&r, &Observed::default(), Timestamp::UNIX_EPOCH);
    assert_ne!(
        plan.status.phase,
        Phase::Degraded,
        "{}",
        plan.status.message
    );
}

#[test]
fn every_finding_is_reported_in_order_and_the_planner_names_the_first() {
    // Two errors that do not depend on each other: a bound that is not a count, and a canary
    // Service that is not there.
    let mut r = canary_rollout(3, json!([{"setWeight": 50}]));
    if let Some(c) = r.spec.strategy.canary.as_mut() {
        c.max_surge = IntOrString::String("abc".into());
    }
    let observed = Observed {
        services: BTreeMap::from([("web-stable".to_owned(), BTreeMap::new())]),
        ..Observed::default()
    };
    let found = validate::findings(&r.spec, &observed);
    let fields: Vec<&str> = found.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.strategy.canary.maxSurge",
            "spec.strategy.canary.canaryService"
        ],
        "{found:?}"
    );
    assert_eq!(found[1].message, "Service web-canary not found");
    assert_eq!(validate(&r.spec, &observed), Err(found[0].clone()));
    let plan = plan(&r, &observed, Timestamp::UNIX_EPOCH);
    assert_eq!(
        plan.status.message,
        format!("{}: {}", found[0].field, found[0].message)
    );
}

#[test]
fn a_missing_service_is_an_invalid_spec_and_changes_nothing() {
    let mut sim = Sim::new(blue_green_rollout(2, true));
    sim.services.remove("web-active");
    let plan = sim.reconcile();
    assert!(plan.scale_up.is_empty() && plan.selectors.is_empty() && plan.scale_down.is_empty());
    assert_eq!(plan.status.phase, Phase::Degraded);
    let condition = plan
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "InvalidSpec")
        .unwrap();
    assert_eq!(condition.status, "True");
    assert!(
        condition
            .message
            .contains("spec.strategy.blueGreen.activeService"),
        "{}",
        condition.message
    );
    assert!(
        condition.message.contains("web-active"),
        "{}",
        condition.message
    );
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == EventReason::InvalidSpec)
    );
    // The same invalid spec again: no second event.
    let again = sim.reconcile();
    assert!(again.events.is_empty());
}

#[test]
fn a_selector_that_misses_the_template_is_an_invalid_spec() {
    let mut r = rolling_rollout(2, 1, 0);
    r.spec.selector.match_labels = Some(BTreeMap::from([("app".into(), "other".into())]));
    let plan = plan(&r, &Observed::default(), Timestamp::UNIX_EPOCH);
    assert!(
        plan.status.message.starts_with("spec.selector"),
        "{}",
        plan.status.message
    );
    assert!(plan.scale_up.is_empty());
}

#[test]
fn a_missing_template_is_an_invalid_spec_and_starts_nothing() {
    let (mut sim, _) =
        analysed_canary(json!([{"setWeight": 25}, {"analysis": error_rate()}]), None);
    if let Some(canary) = sim.rollout.spec.strategy.canary.as_mut() {
        canary.steps[1] =
            serde_json::from_value(json!({"analysis": {"templates": [{"templateName": "nope"}]}}))
                .unwrap();
    }
    let before = sim.replica_sets.len();
    let plan = sim.reconcile();
    assert_eq!(plan.status.phase, Phase::Degraded);
    assert!(
        plan.status.message.starts_with(
            "spec.strategy.canary.steps[1].analysis.templates[0].templateName: AnalysisTemplate nope not found"
        ),
        "{}",
        plan.status.message
    );
    assert!(plan.create_runs.is_empty() && plan.scale_up.is_empty());
    assert_eq!(sim.replica_sets.len(), before);
}
