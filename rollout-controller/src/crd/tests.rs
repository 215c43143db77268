//! The CRD's CEL rules, evaluated by kube's client-side validator on the schema `crdgen` writes,
//! and its schema keywords, checked by `lint`'s schema checker (that the apiserver takes them as
//! these do is the e2e tests' part).

use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::*;

fn rollout(spec: Value) -> Value {
    let mut base = json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "web:1"}]},
            },
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        },
    });
    merge(&mut base["spec"], spec);
    base
}

fn with_strategy(strategy: Value) -> Value {
    let mut object = rollout(json!({}));
    object["spec"]["strategy"] = strategy;
    object
}

fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, patch) => *into = patch,
    }
}

fn schema() -> Value {
    let crd = Rollout::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// The CEL failures for `object`, as `field: message`.
fn cel_failures(object: &Value) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_iter()
            .map(|e| {
                assert_eq!(
                    e.kind,
                    kube::core::cel::ErrorKind::ValidationFailure,
                    "a rule could not be evaluated: {e}"
                );
                format!("{}: {}", e.field_path, e.message)
            })
            .collect(),
    }
}

/// The errors `kubectl sluice lint` finds in `object`, as `field: message`: its schema checker
/// reads every keyword the apiserver reads (the CEL rules above reads only the rules).
fn lint_errors(object: &Value) -> Vec<String> {
    let reports = crate::lint::lint(&object.to_string()).unwrap();
    reports
        .iter()
        .flat_map(|r| &r.findings)
        .filter(|f| f.severity == crate::lint::Severity::Error)
        .map(|f| format!("{}: {}", f.field, f.message))
        .collect()
}

#[test]
fn surge_and_unavailability_are_counts_or_percentages_up_to_100() {
    for strategy in ["rollingUpdate", "canary"] {
        for good in [json!(0), json!(3), json!("0%"), json!("25%"), json!("100%")] {
            let object = with_strategy(json!({strategy: {"maxSurge": good, "maxUnavailable": 1}}));
            assert_eq!(lint_errors(&object), Vec::<String>::new(), "{good}");
        }
        for (field, other) in [
            ("maxSurge", "maxUnavailable"),
            ("maxUnavailable", "maxSurge"),
        ] {
            for bad in [
                json!("abc"),
                json!(-1),
                json!("-1"),
                json!("1.5"),
                json!("101%"),
                json!("3"),
                json!("05%"),
            ] {
                let object = with_strategy(json!({strategy: {field: bad, other: 1}}));
                let errors = lint_errors(&object);
                let path = format!("spec.strategy.{strategy}.{field}: ");
                assert!(
                    errors.len() == 1 && errors[0].starts_with(&path),
                    "{strategy}.{field} {bad}: {errors:?}"
                );
            }
        }
    }
}

#[test]
fn an_empty_selector_is_refused() {
    for empty in [
        json!({}),
        json!({"matchLabels": {}, "matchExpressions": []}),
    ] {
        let mut object = rollout(json!({}));
        object["spec"]["selector"] = empty.clone();
        assert_eq!(
            cel_failures(&object),
            [
                "spec.selector: must not be empty: set matchLabels or matchExpressions that the \
              template's labels carry"
            ],
            "{empty}"
        );
    }
    let mut expressions = rollout(json!({}));
    expressions["spec"]["selector"] =
        json!({"matchExpressions": [{"key": "app", "operator": "Exists"}]});
    assert_eq!(cel_failures(&expressions), Vec::<String>::new());
}

#[test]
fn the_selector_must_match_the_template_labels() {
    let missing = rollout(json!({"selector": {"matchLabels": {"app": "web", "tier": "front"}}}));
    let other_value = rollout(json!({"selector": {"matchLabels": {"app": "api"}}}));
    let mut no_labels = rollout(json!({}));
    no_labels["spec"]["template"]
        .as_object_mut()
        .unwrap()
        .remove("metadata");
    for object in [missing, other_value, no_labels] {
        assert_eq!(
            cel_failures(&object),
            [
                "spec.selector: selector does not match the template: every matchLabels entry must \
              be in spec.template.metadata.labels with the same value"
            ],
            "{}",
            object["spec"]
        );
    }
    let subset = rollout(json!({"template": {"metadata": {"labels": {"tier": "front"}}}}));
    assert_eq!(cel_failures(&subset), Vec::<String>::new());
}

#[test]
fn container_names_are_unique() {
    for list in ["containers", "initContainers"] {
        let object = rollout(json!({"template": {"spec": {list: [
            {"name": "app", "image": "web:1"},
            {"name": "side", "image": "side:1"},
            {"name": "app", "image": "web:2"},
        ]}}}));
        assert_eq!(
            cel_failures(&object),
            [format!(
                "spec.template.spec.{list}: {list} must have unique names"
            )]
        );
    }
    let distinct = rollout(json!({"template": {"spec": {
        "containers": [{"name": "app", "image": "web:1"}, {"name": "side", "image": "side:1"}],
        "initContainers": [{"name": "init", "image": "init:1"}],
    }}}));
    assert_eq!(cel_failures(&distinct), Vec::<String>::new());
}

#[test]
fn a_template_no_replica_set_could_have_is_refused() {
    let containers = |list: Value| rollout(json!({"template": {"spec": {"containers": list}}}));
    let long = "x".repeat(64);
    let cases = [
        (
            containers(json!([{"name": "", "image": "web:1"}])),
            "spec.template.spec.containers[0].name",
        ),
        (
            containers(json!([{"name": long, "image": "web:1"}])),
            "spec.template.spec.containers[0].name",
        ),
        (
            containers(json!([{"name": "app"}])),
            "spec.template.spec.containers[0].image",
        ),
        (
            containers(json!([{"name": "app", "image": ""}])),
            "spec.template.spec.containers[0].image",
        ),
        (
            rollout(json!({"template": {"spec": {"initContainers": [{"name": "init"}]}}})),
            "spec.template.spec.initContainers[0].image",
        ),
        (
            containers(Value::Array(
                (0..=pod_template::CONTAINERS_MAX)
                    .map(|i| json!({"name": format!("c{i}"), "image": "web:1"}))
                    .collect(),
            )),
            "spec.template.spec.containers",
        ),
        (
            rollout(json!({"template": {"metadata": {"labels": {"tier": long}}}})),
            "spec.template.metadata.labels[tier]",
        ),
        (
            rollout(json!({"template": {"metadata": {"labels": {"tier": "front end"}}}})),
            "spec.template.metadata.labels[tier]",
        ),
        (
            rollout(json!({"selector": {"matchLabels": {"app": "-web"}}})),
            "spec.selector.matchLabels[app]",
        ),
        (
            {
                let labels: serde_json::Map<String, Value> = (0..=pod_template::MATCH_LABELS_MAX)
                    .map(|i| (format!("l{i}"), json!("x")))
                    .collect();
                rollout(json!({"selector": {"matchLabels": labels},
                               "template": {"metadata": {"labels": labels}}}))
            },
            "spec.selector.matchLabels",
        ),
    ];
    for (object, field) in cases {
        let errors = lint_errors(&object);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{field}: "))),
            "{field}: {errors:?}"
        );
    }
    let good = rollout(json!({"template": {
        "metadata": {"labels": {"tier": "front.end_1"}},
        "spec": {"initContainers": [{"name": "init", "image": "init:1"}]},
    }}));
    assert_eq!(lint_errors(&good), Vec::<String>::new());
}

#[test]
fn the_label_value_pattern_is_the_apiservers() {
    let pattern = regex::Regex::new(pod_template::LABEL_VALUE_PATTERN).unwrap();
    for good in ["", "web", "a.b-c_d", "A1", "1"] {
        assert!(pattern.is_match(good), "{good:?}");
    }
    for bad in ["-web", "web-", "a b", "ü", "a/b", ".a"] {
        assert!(!pattern.is_match(bad), "{bad:?}");
    }
}

#[test]
fn a_rollout_name_longer_than_a_label_value_is_refused() {
    let mut at_the_limit = rollout(json!({}));
    at_the_limit["metadata"]["name"] = json!("w".repeat(MAX_ROLLOUT_NAME));
    assert_eq!(cel_failures(&at_the_limit), Vec::<String>::new());
    assert_eq!(lint_errors(&at_the_limit), Vec::<String>::new());
    let mut longer = rollout(json!({}));
    longer["metadata"]["name"] = json!("w".repeat(MAX_ROLLOUT_NAME + 1));
    let failures = cel_failures(&longer);
    assert!(
        failures.len() == 1
            && failures[0].contains("metadata.name: a Rollout's name is at most 63"),
        "{failures:?}"
    );
    let errors = lint_errors(&longer);
    assert!(
        errors.iter().any(|e| e.contains("at most 63")),
        "lint must refuse it as the apiserver does: {errors:?}"
    );
}
