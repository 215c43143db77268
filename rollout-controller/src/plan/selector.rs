//! Whether a Rollout's selector selects its own pods: it is not empty, and every term of it holds
//! for the template's labels. The apiserver refuses a ReplicaSet whose selector misses its
//! template, so a rollout that would create one is an InvalidSpec instead.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::InvalidSpec;

const FIELD: &str = "spec.selector";

pub(super) fn check(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<(), InvalidSpec> {
    let match_labels = selector.match_labels.as_ref();
    let expressions = selector.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none_or(BTreeMap::is_empty) && expressions.is_empty() {
        // An empty selector selects every pod of the namespace: the rollout would count, and
        // scale down, pods that are not its own.
        return Err(InvalidSpec {
            field: FIELD.into(),
            message: "is empty: set matchLabels or matchExpressions that the template's labels \
                      carry"
                .into(),
        });
    }
    for (key, value) in match_labels.into_iter().flatten() {
        if labels.get(key) != Some(value) {
            return Err(InvalidSpec {
                field: FIELD.into(),
                message: format!(
                    "selects {key}={value}, which spec.template.metadata.labels does not have"
                ),
            });
        }
    }
    for (i, requirement) in expressions.iter().enumerate() {
        let field = format!("{FIELD}.matchExpressions[{i}]");
        if !holds(requirement, labels, &field)? {
            return Err(InvalidSpec {
                field,
                message: format!(
                    "{} {} {:?} does not hold for spec.template.metadata.labels",
                    requirement.key,
                    requirement.operator,
                    requirement.values.as_deref().unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

/// Whether `requirement` holds for `labels`; an operator or values the apiserver would refuse
/// are an error at `field`.
fn holds(
    requirement: &LabelSelectorRequirement,
    labels: &BTreeMap<String, String>,
    field: &str,
) -> Result<bool, InvalidSpec> {
    let value = labels.get(&requirement.key);
    let values = requirement.values.as_deref().unwrap_or_default();
    let needs_values = match requirement.operator.as_str() {
        "In" | "NotIn" => true,
        "Exists" | "DoesNotExist" => false,
        other => {
            return Err(InvalidSpec {
                field: format!("{field}.operator"),
                message: format!("{other:?} is not In, NotIn, Exists or DoesNotExist"),
            });
        }
    };
    if needs_values == values.is_empty() {
        return Err(InvalidSpec {
            field: format!("{field}.values"),
            message: if needs_values {
                format!("must not be empty for operator {}", requirement.operator)
            } else {
                format!("must be empty for operator {}", requirement.operator)
            },
        });
    }
    Ok(match requirement.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        // DoesNotExist, the one operator left.
        _ => value.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expression(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn with_expressions(expressions: Vec<LabelSelectorRequirement>) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(expressions),
        }
    }

    #[test]
    fn an_empty_selector_is_an_invalid_spec() {
        let template = labels(&[("app", "web")]);
        for empty in [
            LabelSelector::default(),
            LabelSelector {
                match_labels: Some(BTreeMap::new()),
                match_expressions: Some(Vec::new()),
            },
        ] {
            let invalid = check(&empty, &template).unwrap_err();
            assert_eq!(invalid.field, "spec.selector");
            assert!(
                invalid.message.starts_with("is empty"),
                "{}",
                invalid.message
            );
        }
    }

    #[test]
    fn match_expressions_must_hold_for_the_template() {
        let template = labels(&[("app", "web"), ("tier", "front")]);
        let holding = [
            expression("app", "In", &["web", "api"]),
            expression("tier", "NotIn", &["back"]),
            expression("zone", "NotIn", &["a"]),
            expression("app", "Exists", &[]),
            expression("zone", "DoesNotExist", &[]),
        ];
        assert_eq!(
            check(&with_expressions(holding.to_vec()), &template),
            Ok(())
        );
        let missing = [
            expression("app", "In", &["api"]),
            expression("tier", "NotIn", &["front"]),
            expression("zone", "Exists", &[]),
            expression("app", "DoesNotExist", &[]),
        ];
        for requirement in missing {
            let selector = with_expressions(vec![expression("app", "Exists", &[]), requirement]);
            let invalid = check(&selector, &template).unwrap_err();
            assert_eq!(
                invalid.field, "spec.selector.matchExpressions[1]",
                "{invalid:?}"
            );
            assert!(invalid.message.contains("does not hold"), "{invalid:?}");
        }
    }

    #[test]
    fn operators_and_values_the_apiserver_refuses_are_invalid() {
        let template = labels(&[("app", "web")]);
        let cases = [
            (
                expression("app", "Equals", &["web"]),
                "spec.selector.matchExpressions[0].operator",
            ),
            (
                expression("app", "In", &[]),
                "spec.selector.matchExpressions[0].values",
            ),
            (
                expression("app", "Exists", &["web"]),
                "spec.selector.matchExpressions[0].values",
            ),
        ];
        for (requirement, field) in cases {
            let invalid = check(&with_expressions(vec![requirement]), &template).unwrap_err();
            assert_eq!(invalid.field, field, "{invalid:?}");
        }
    }

    #[test]
    fn match_labels_must_be_among_the_template_labels() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "other")])),
            match_expressions: None,
        };
        let invalid = check(&selector, &labels(&[("app", "web")])).unwrap_err();
        assert_eq!(invalid.field, "spec.selector");
        assert!(invalid.message.contains("app=other"), "{}", invalid.message);
    }
}
