//! CEL rules that kube's client-side validator cannot evaluate, evaluated by the `cel` crate
//! itself. kube's validator is built on an older `cel` without `type()`, so a rule such as
//! `type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')` on an int-or-string field (the
//! usual way to bound both forms) would otherwise go unchecked offline.

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Context, Program, Value};
use serde_json::Value as Json;

/// What a rule says of an object.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Passed,
    /// The rule is false: the rule's message, as the apiserver reports it.
    Failed(String),
    /// The rule could not be evaluated here either: why.
    Unevaluable(String),
}

/// Evaluates `rule` of the schema node at `field_path` (`spec.strategy.canary.maxSurge`,
/// `spec.steps[2]`) with `self` bound to the object's value there.
pub(super) fn evaluate(schema: &Json, object: &Json, field_path: &str, rule: &str) -> Verdict {
    let Some((node, value)) = locate(schema, object, field_path) else {
        return Verdict::Unevaluable(format!("no value at {field_path:?}"));
    };
    let program = match Program::compile(rule) {
        Ok(program) => program,
        Err(e) => return Verdict::Unevaluable(format!("does not compile: {e}")),
    };
    let mut context = Context::default();
    context.add_variable_from_value("self", to_cel(value));
    match program.execute(&context) {
        Ok(Value::Bool(true)) => Verdict::Passed,
        Ok(Value::Bool(false)) => Verdict::Failed(message(node, rule)),
        Ok(other) => Verdict::Unevaluable(format!("evaluates to {other:?}, not a bool")),
        Err(e) => Verdict::Unevaluable(e.to_string()),
    }
}

/// The message of `rule` at the schema node of `field_path` in `object`.
pub(super) fn message_at(schema: &Json, object: &Json, field_path: &str, rule: &str) -> String {
    match locate(schema, object, field_path) {
        Some((node, _)) => message(node, rule),
        None => format!("failed rule: {rule}"),
    }
}

/// The message the schema gives `rule`, or the apiserver's own.
fn message(node: &Json, rule: &str) -> String {
    node.get("x-kubernetes-validations")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .find(|r| r.get("rule").and_then(Json::as_str) == Some(rule))
        .and_then(|r| r.get("message").and_then(Json::as_str))
        .map_or_else(|| format!("failed rule: {rule}"), str::to_owned)
}

/// The schema node and the value at a field path.
fn locate<'a>(schema: &'a Json, value: &'a Json, path: &str) -> Option<(&'a Json, &'a Json)> {
    let (mut node, mut at) = (schema, value);
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indices) = match part.split_once('[') {
            Some((key, rest)) => (key, Some(rest)),
            None => (part, None),
        };
        if !key.is_empty() {
            node = node
                .get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| node.get("additionalProperties"))?;
            at = at.get(key)?;
        }
        for index in indices.into_iter().flat_map(|rest| rest.split('[')) {
            let index = index.trim_end_matches(']');
            match at {
                Json::Array(items) => {
                    node = node.get("items")?;
                    at = items.get(index.parse::<usize>().ok()?)?;
                }
                _ => {
                    node = node.get("additionalProperties")?;
                    at = at.get(index)?;
                }
            }
        }
    }
    Some((node, at))
}

/// JSON as Kubernetes gives it to CEL: every JSON integer an `int`.
fn to_cel(value: &Json) -> Value {
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(map) => {
            let map: HashMap<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            Value::from(map)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const INT_OR_PERCENT: &str =
        "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')";

    fn schema() -> Json {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "surge": {"x-kubernetes-int-or-string": true, "x-kubernetes-validations": [
                {"rule": INT_OR_PERCENT, "message": "a count or a percentage"}]},
            "steps": {"type": "array", "items": {"type": "object", "x-kubernetes-validations": [
                {"rule": "has(self.a) != has(self.b)"}]}},
        }}}})
    }

    #[test]
    fn an_int_or_string_rule_is_evaluated_on_both_forms() {
        let verdict = |surge: Json| {
            evaluate(
                &schema(),
                &json!({"spec": {"surge": surge}}),
                "spec.surge",
                INT_OR_PERCENT,
            )
        };
        assert_eq!(verdict(json!(1)), Verdict::Passed);
        assert_eq!(verdict(json!("25%")), Verdict::Passed);
        for bad in [json!(-1), json!("abc"), json!("101%"), json!("1.5")] {
            assert_eq!(
                verdict(bad.clone()),
                Verdict::Failed("a count or a percentage".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn items_are_found_by_index_and_the_default_message_names_the_rule() {
        let object = json!({"spec": {"steps": [{"a": 1}, {"a": 1, "b": 2}]}});
        let rule = "has(self.a) != has(self.b)";
        assert_eq!(
            evaluate(&schema(), &object, "spec.steps[0]", rule),
            Verdict::Passed
        );
        assert_eq!(
            evaluate(&schema(), &object, "spec.steps[1]", rule),
            Verdict::Failed(format!("failed rule: {rule}"))
        );
        assert!(matches!(
            evaluate(&schema(), &object, "spec.steps[7]", rule),
            Verdict::Unevaluable(_)
        ));
        assert!(matches!(
            evaluate(
                &schema(),
                &object,
                "spec.steps[0]",
                "self.a.noSuchFunction()"
            ),
            Verdict::Unevaluable(_)
        ));
    }
}
