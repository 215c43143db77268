//! `{{args.name}}` placeholders in a metric spec, replaced by resolved argument values.
//!
//! Every string of the spec is substituted (queries, addresses, URLs, headers, the queries of
//! `compare` and `sequential`), so a new provider field needs no change here.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use crate::SpecError;
use crate::spec::MetricSpec;

/// `{{args.name}}`, with optional spaces inside the braces as Argo Rollouts allows.
fn placeholder() -> Result<Regex, SpecError> {
    Regex::new(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}").map_err(|e| SpecError::Invalid {
        field: "args".into(),
        reason: e.to_string(),
    })
}

/// The argument names `metric` refers to, in order of first use.
pub fn referenced_args(metric: &MetricSpec) -> Vec<String> {
    let Ok(pattern) = placeholder() else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let Ok(value) = serde_json::to_value(metric) else {
        return names;
    };
    visit_strings(&value, &mut |text| {
        for capture in pattern.captures_iter(text) {
            let name = capture[1].to_owned();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    });
    names
}

fn visit_strings(value: &Value, visit: &mut impl FnMut(&str)) {
    match value {
        Value::String(text) => visit(text),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, visit)),
        Value::Object(fields) => fields.values().for_each(|v| visit_strings(v, visit)),
        _ => {}
    }
}

impl MetricSpec {
    /// The spec with every `{{args.name}}` replaced by `args[name]`. A placeholder without a value
    /// is an error naming the field it is in (`metrics[error-rate].provider.prometheus.query`).
    pub fn with_args(&self, args: &BTreeMap<String, String>) -> Result<MetricSpec, SpecError> {
        let pattern = placeholder()?;
        let path = format!("metrics[{}]", self.name);
        let mut value = serde_json::to_value(self).map_err(|e| SpecError::Invalid {
            field: path.clone(),
            reason: e.to_string(),
        })?;
        substitute(&mut value, &path, &pattern, args)?;
        serde_json::from_value(value).map_err(|e| SpecError::Invalid {
            field: path,
            reason: format!("after substituting arguments: {e}"),
        })
    }
}

fn substitute(
    value: &mut Value,
    path: &str,
    pattern: &Regex,
    args: &BTreeMap<String, String>,
) -> Result<(), SpecError> {
    match value {
        Value::String(text) => {
            if let Some(missing) = pattern
                .captures_iter(text)
                .map(|c| c[1].to_owned())
                .find(|name| !args.contains_key(name))
            {
                return Err(SpecError::Invalid {
                    field: path.to_owned(),
                    reason: format!("argument {missing:?} has no value"),
                });
            }
            let replaced = pattern.replace_all(text, |c: &regex::Captures<'_>| {
                args.get(&c[1]).cloned().unwrap_or_default()
            });
            *text = replaced.into_owned();
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), pattern, args)?;
            }
        }
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                substitute(field, &format!("{path}.{key}"), pattern, args)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric() -> MetricSpec {
        serde_json::from_value(serde_json::json!({
            "name": "error-rate",
            "interval": "30s",
            "provider": {"prometheus": {
                "address": "http://{{args.host}}:9090",
                "query": "sum(rate(errors{hash=\"{{ args.canary-hash }}\"}[1m])) / {{args.host}}",
            }},
            "successCondition": "result[0] < 0.01",
        }))
        .unwrap()
    }

    #[test]
    fn placeholders_are_replaced_everywhere() {
        let args = BTreeMap::from([
            ("host".to_owned(), "127.0.0.1".to_owned()),
            ("canary-hash".to_owned(), "abc123".to_owned()),
        ]);
        let spec = metric().with_args(&args).unwrap();
        let prometheus = spec.provider.prometheus.unwrap();
        assert_eq!(prometheus.address, "http://127.0.0.1:9090");
        assert_eq!(
            prometheus.query,
            "sum(rate(errors{hash=\"abc123\"}[1m])) / 127.0.0.1"
        );
        assert_eq!(referenced_args(&metric()), ["host", "canary-hash"]);
    }

    #[test]
    fn a_missing_argument_names_the_field() {
        let args = BTreeMap::from([("host".to_owned(), "127.0.0.1".to_owned())]);
        let error = metric().with_args(&args).unwrap_err().to_string();
        assert!(
            error.contains("metrics[error-rate].provider.prometheus.query"),
            "{error}"
        );
        assert!(error.contains("canary-hash"), "{error}");
    }
}
