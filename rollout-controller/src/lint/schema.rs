//! The apiserver's checks of an object against a CRD's structural schema (OpenAPI v3 with the
//! `x-kubernetes-*` extensions), in the apiserver's order: prune unknown fields and nulls,
//! default, validate, then evaluate the `x-kubernetes-validations` CEL rules unless a blocking
//! error was found. Nothing here knows Sluice: it takes any CRD's schema and any object.
//!
//! The walk is our own because JSON Schema validators (the `jsonschema` crate) implement the JSON
//! Schema drafts, not this dialect (`nullable`, the `x-kubernetes-*` keywords, pruning before
//! validation, CEL skipped after a blocking error, the apiserver's field paths and messages),
//! and kube's client-side validator covers only defaults and the CEL rules, which it is used for.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use kube::core::cel::{ErrorKind, Validator, apply_defaults};
use regex::Regex;
use serde_json::Value as Json;

use super::{Finding, Level, Severity, cel_rules};

/// What the apiserver says of an object against its CRD's schema.
pub(super) struct SchemaCheck {
    pub(super) findings: Vec<Finding>,
    /// The apiserver would reject the object.
    pub(super) rejected: bool,
    /// The object as the apiserver would store it: pruned and defaulted.
    pub(super) stored: Json,
}

/// The apiserver's order: prune unknown fields and nulls, default, validate the schema, and
/// evaluate the CEL rules unless a blocking error was found.
#[cfg(test)]
fn check_schema(schema: &Json, object: &Json) -> SchemaCheck {
    check_object_schema(schema, object, false)
}

/// [`check_schema`], for a kind with a status subresource when `drop_status`: the status of an
/// object being created is then dropped after its unknown fields are found (kubectl's strict
/// field validation still refuses those), and its values are not checked.
pub(super) fn check_object_schema(schema: &Json, object: &Json, drop_status: bool) -> SchemaCheck {
    let mut walk = Walk::default();
    let mut pruned = object.clone();
    walk.prune(schema, &mut pruned, "", true);
    if drop_status && let Some(map) = pruned.as_object_mut() {
        map.remove("status");
    }
    let defaulted = apply_defaults(schema, &pruned);
    walk.check(schema, &defaulted, "");
    let mut rejected = walk.findings.iter().any(|f| f.severity == Severity::Error);
    if walk.blocking {
        walk.findings.push(Finding {
            level: Level::Admission,
            ..Finding::warning(
                "",
                "the CEL rules (x-kubernetes-validations) were not checked, as the apiserver \
                 does not check them while the errors above remain",
            )
        });
    } else if let Err(errors) =
        Validator::new().validate(&without_defaults(schema), &without_nulls(&defaulted), None)
    {
        for error in errors {
            let unevaluable = match error.kind {
                ErrorKind::ValidationFailure => {
                    rejected = true;
                    walk.findings
                        .push(Finding::error(error.field_path, error.message));
                    continue;
                }
                // A rule that fails to run on this object (it reads a field that is not there,
                // as `maxSurge: null` leaves it) fails in the apiserver too, which refuses the
                // object naming the rule.
                ErrorKind::EvaluationError => {
                    rejected = true;
                    let why =
                        cel_rules::message_at(schema, &defaulted, &error.field_path, &error.rule);
                    walk.findings.push(Finding::error(
                        error.field_path,
                        format!("{} evaluating rule: {why}", error.message),
                    ));
                    continue;
                }
                ErrorKind::UnsupportedReference => {
                    match cel_rules::evaluate(schema, &defaulted, &error.field_path, &error.rule) {
                        cel_rules::Verdict::Passed => continue,
                        cel_rules::Verdict::Failed(message) => {
                            rejected = true;
                            walk.findings
                                .push(Finding::error(error.field_path, message));
                            continue;
                        }
                        cel_rules::Verdict::Unevaluable(why) => {
                            format!("{}; with the cel crate: {why}", error.message)
                        }
                    }
                }
                _ => error.message,
            };
            walk.findings.push(Finding::error(
                error.field_path,
                format!(
                    "internal lint error: the CRD rule `{}` could not be evaluated: {unevaluable}",
                    error.rule
                ),
            ));
        }
    }
    SchemaCheck {
        findings: walk.findings,
        rejected,
        stored: defaulted,
    }
}

/// A walk of a structural schema beside a value.
#[derive(Default)]
struct Walk {
    findings: Vec<Finding>,
    /// An error of a kind after which the apiserver does not evaluate CEL rules (type,
    /// required, enum, maxLength, maxItems, maxProperties).
    blocking: bool,
    patterns: BTreeMap<String, Result<Regex, String>>,
}

fn flag(schema: &Json, name: &str) -> bool {
    schema.get(name).and_then(Json::as_bool) == Some(true)
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// A value as a message shows it: JSON, cut short.
pub(super) fn show(value: &Json) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

pub(super) fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "number",
        Json::Number(_) => "integer",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// `schema` without its defaults: the CEL rules see the object defaulted already, where a
/// nullable field that is null stays unset (the apiserver defaults only absent fields), while
/// kube's validator would default it again once [`without_nulls`] has taken it out.
fn without_defaults(schema: &Json) -> Json {
    let Json::Object(node) = schema else {
        return schema.clone();
    };
    let mut out = serde_json::Map::new();
    for (key, value) in node {
        let kept = match key.as_str() {
            "default" => continue,
            // Maps of field names to schemas: a field may well be called `default`.
            "properties" | "patternProperties" | "definitions" => match value {
                Json::Object(fields) => Json::Object(
                    fields
                        .iter()
                        .map(|(name, child)| (name.clone(), without_defaults(child)))
                        .collect(),
                ),
                other => other.clone(),
            },
            "items" | "additionalProperties" | "not" => without_defaults(value),
            "allOf" | "anyOf" | "oneOf" => match value {
                Json::Array(branches) => {
                    Json::Array(branches.iter().map(without_defaults).collect())
                }
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), kept);
    }
    Json::Object(out)
}

/// `value` without the fields that are null: to the apiserver's CEL a null field is not there
/// (`has(self.pause)` is false for `pause: null`).
fn without_nulls(value: &Json) -> Json {
    match value {
        Json::Object(map) => Json::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Json::Array(items) => Json::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// The largest integer a JSON number holds exactly: the apiserver takes a float beyond it
/// (`18446744073709552000`, which is how kubectl sends 2^64) for no integer at all.
const MAX_JSON_INTEGER: f64 = 9_007_199_254_740_991.0;

fn is_integer(value: &Json) -> bool {
    value.is_i64()
        || value.is_u64()
        || value
            .as_f64()
            .is_some_and(|f| f.fract() == 0.0 && f.abs() <= MAX_JSON_INTEGER)
}

/// The apiserver's date-time format check (go-openapi's `IsDateTime`): a valid date, `T`, a time
/// of day and a zone (`Z` or `+hh:mm`), in either case.
pub(super) fn is_date_time(text: &str) -> bool {
    static TIME: LazyLock<Option<Regex>> = LazyLock::new(|| {
        Regex::new(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$").ok()
    });
    let lower = text.to_lowercase();
    let mut parts = lower.split('t');
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Some(captures) = TIME.as_ref().and_then(|re| re.captures(time)) else {
        return false;
    };
    let number = |i: usize| captures.get(i).map_or("", |m| m.as_str());
    let day_ok = date.len() == 10
        && date.as_bytes()[4] == b'-'
        && date.as_bytes()[7] == b'-'
        && date
            .bytes()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit())
        && match (date[..4].parse(), date[5..7].parse(), date[8..].parse()) {
            (Ok(y), Ok(m), Ok(d)) => k8s_openapi::jiff::civil::Date::new(y, m, d).is_ok(),
            _ => false,
        };
    day_ok && number(1) <= "23" && number(2) <= "59" && number(3) <= "59"
}

fn has_type(value: &Json, ty: &str) -> bool {
    match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => is_integer(value),
        _ => true,
    }
}

/// A number as a person writes it: schemars writes bounds as floats (`100.0`).
fn number(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// `a < b`, `a == b` or `a > b`, exactly for integers.
fn compare(a: &serde_json::Number, b: &serde_json::Number) -> Option<std::cmp::Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

impl Walk {
    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.findings.push(Finding::error(field, message));
    }

    fn blocking_error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.blocking = true;
        self.error(field, message);
    }

    /// Drops what the apiserver drops before validating: fields the schema does not declare
    /// (each one a finding: kubectl's strict field validation rejects them) and `null` in
    /// fields that are not nullable. `resource` marks an object whose apiVersion, kind and
    /// metadata the apiserver keeps (the root, an embedded resource).
    fn prune(&mut self, schema: &Json, value: &mut Json, path: &str, resource: bool) {
        if flag(schema, "x-kubernetes-int-or-string") {
            return;
        }
        let resource = resource || flag(schema, "x-kubernetes-embedded-resource");
        match value {
            Json::Object(map) => {
                let properties = schema.get("properties").and_then(Json::as_object);
                let additional = schema.get("additionalProperties");
                let any_field = flag(schema, "x-kubernetes-preserve-unknown-fields")
                    || additional == Some(&Json::Bool(true));
                let additional = additional.filter(|a| a.is_object());
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    let (child_schema, child_path) =
                        match (properties.and_then(|p| p.get(&key)), additional) {
                            (Some(child), _) => (child, join(path, &key)),
                            (None, Some(child)) => (child, format!("{path}[{key}]")),
                            (None, None) => {
                                let meta =
                                    matches!(key.as_str(), "apiVersion" | "kind" | "metadata");
                                if !(any_field || (resource && meta)) {
                                    self.error(
                                        join(path, &key),
                                        "unknown field: not in the schema",
                                    );
                                    map.remove(&key);
                                }
                                continue;
                            }
                        };
                    let Some(child) = map.get_mut(&key) else {
                        continue;
                    };
                    if child.is_null() && !flag(child_schema, "nullable") {
                        map.remove(&key);
                        continue;
                    }
                    self.prune(child_schema, child, &child_path, false);
                }
            }
            Json::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.prune(item_schema, item, &format!("{path}[{i}]"), false);
                    }
                }
            }
            _ => {}
        }
    }

    /// The value checks of the schema at `path`, then its children. The root's metadata is the
    /// apiserver's to check (`metadata::check`), not the schema's.
    fn check(&mut self, schema: &Json, value: &Json, path: &str) {
        if value.is_null() && flag(schema, "nullable") {
            return;
        }
        if flag(schema, "x-kubernetes-int-or-string") {
            // Then on as for any value: a pattern checks the string form, minimum and maximum
            // the integer form.
            if !(is_integer(value) || value.is_string()) {
                self.blocking_error(
                    path,
                    format!("must be an integer or a string, not {}", type_name(value)),
                );
                return;
            }
        } else if let Some(ty) = schema.get("type").and_then(Json::as_str)
            && !has_type(value, ty)
        {
            self.blocking_error(
                path,
                format!("must be of type {ty}, not {}", type_name(value)),
            );
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Json::as_array)
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(show).collect();
            self.blocking_error(
                path,
                format!("{} is not one of {}", show(value), list.join(", ")),
            );
        }
        match value {
            Json::String(s) => self.check_string(schema, s, path),
            Json::Number(n) => self.check_number(schema, n, path),
            Json::Array(items) => {
                let count = items.len() as u64;
                self.check_count(schema, ["minItems", "maxItems"], count, "items", path);
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{path}[{i}]"));
                    }
                }
            }
            Json::Object(map) => self.check_object(schema, map, path),
            Json::Null | Json::Bool(_) => {}
        }
        for branch in schema
            .get("allOf")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            self.check(branch, value, path);
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(branches) = schema.get(keyword).and_then(Json::as_array) else {
                continue;
            };
            let passing = branches
                .iter()
                .filter(|branch| {
                    let mut alone = Walk::default();
                    alone.check(branch, value, path);
                    alone.findings.is_empty()
                })
                .count();
            if passing == 0 || (exactly_one && passing > 1) {
                let what = if exactly_one {
                    "exactly one"
                } else {
                    "at least one"
                };
                self.error(
                    path,
                    format!("must match {what} of the schemas of {keyword}"),
                );
            }
        }
    }

    /// `minItems` and `maxItems`, or `minProperties` and `maxProperties`: `count` of `what`
    /// against the bounds named `[min, max]`; above the maximum blocks the CEL rules.
    fn check_count(
        &mut self,
        schema: &Json,
        [min, max]: [&str; 2],
        count: u64,
        what: &str,
        path: &str,
    ) {
        if let Some(min) = schema.get(min).and_then(Json::as_u64)
            && count < min
        {
            self.error(path, format!("has {count} {what}, at least {min} needed"));
        }
        if let Some(max) = schema.get(max).and_then(Json::as_u64)
            && count > max
        {
            self.blocking_error(path, format!("has {count} {what}, at most {max} allowed"));
        }
    }

    fn check_string(&mut self, schema: &Json, s: &str, path: &str) {
        let length = s.chars().count() as u64;
        let shown = show(&Json::String(s.to_owned()));
        // Of the formats in Sluice's CRDs, date-time is the one the apiserver checks on strings.
        if schema.get("format").and_then(Json::as_str) == Some("date-time") && !is_date_time(s) {
            self.error(path, format!("{shown} is not an RFC 3339 date-time"));
        }
        if let Some(min) = schema.get("minLength").and_then(Json::as_u64)
            && length < min
        {
            self.error(path, format!("{shown} is shorter than {min} characters"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Json::as_u64)
            && length > max
        {
            self.blocking_error(path, format!("{shown} is longer than {max} characters"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Json::as_str) {
            let compiled = self
                .patterns
                .entry(pattern.to_owned())
                .or_insert_with(|| Regex::new(pattern).map_err(|e| e.to_string()));
            match compiled {
                Ok(re) if re.is_match(s) => {}
                Ok(_) => self.error(path, format!("{shown} does not match {pattern}")),
                Err(e) => {
                    let message = format!(
                        "internal lint error: the CRD pattern {pattern} does not compile: {e}"
                    );
                    self.error(path, message);
                }
            }
        }
    }

    fn check_number(&mut self, schema: &Json, n: &serde_json::Number, path: &str) {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let value = number(n);
        // The apiserver checks the two integer formats it knows.
        let format = schema.get("format").and_then(Json::as_str);
        let fits = match format {
            Some("int32") => n.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
            Some("int64") => n.as_i64().is_some(),
            _ => true,
        };
        if !fits && let Some(format) = format {
            self.error(
                path,
                format!("{value} is not an integer of format {format}"),
            );
        }
        if let Some(Json::Number(min)) = schema.get("minimum") {
            let (exclusive, min_shown) = (flag(schema, "exclusiveMinimum"), number(min));
            match compare(n, min) {
                Some(Less) => self.error(path, format!("{value} is below {min_shown}")),
                Some(Equal) if exclusive => {
                    self.error(path, format!("{value} is not above {min_shown}"))
                }
                _ => {}
            }
        }
        if let Some(Json::Number(max)) = schema.get("maximum") {
            let (exclusive, max_shown) = (flag(schema, "exclusiveMaximum"), number(max));
            match compare(n, max) {
                Some(Greater) => self.error(path, format!("{value} is above {max_shown}")),
                Some(Equal) if exclusive => {
                    self.error(path, format!("{value} is not below {max_shown}"))
                }
                _ => {}
            }
        }
        if let (Some(of), Some(v)) = (schema.get("multipleOf").and_then(Json::as_f64), n.as_f64())
            && of != 0.0
            && (v / of).fract() != 0.0
        {
            self.error(path, format!("{value} is not a multiple of {of}"));
        }
    }

    fn check_object(&mut self, schema: &Json, map: &serde_json::Map<String, Json>, path: &str) {
        let embedded = flag(schema, "x-kubernetes-embedded-resource");
        for required in schema
            .get("required")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .chain(
                embedded
                    .then_some(["apiVersion", "kind"])
                    .into_iter()
                    .flatten(),
            )
        {
            if map.get(required).is_none_or(Json::is_null) {
                self.blocking_error(join(path, required), "required");
            }
        }
        let count = map.len() as u64;
        self.check_count(
            schema,
            ["minProperties", "maxProperties"],
            count,
            "fields",
            path,
        );
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, child) in map {
            match (properties.and_then(|p| p.get(key)), additional) {
                (Some(child_schema), _) => self.check(child_schema, child, &join(path, key)),
                (None, Some(child_schema)) => {
                    self.check(child_schema, child, &format!("{path}[{key}]"))
                }
                // Schema-less: preserved unknown fields, or an embedded resource's own fields.
                (None, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
