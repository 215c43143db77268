//! What the apiserver checks of an object's `metadata` when it is created, which a CRD's schema
//! leaves out: apimachinery's `ValidateObjectMeta` (names, namespace, labels, annotations,
//! finalizers, owner references) and the fields and types of ObjectMeta, whose unknown fields
//! kubectl's strict field validation refuses.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value as Json;

use super::Finding;
use super::schema::{is_date_time, show, type_name};

/// A lowercase RFC 1123 subdomain: most object names, label and annotation key prefixes.
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// A lowercase RFC 1123 label: a namespace.
const DNS1123_LABEL_MAX: usize = 63;
/// The name part of a label or annotation key, and a label value.
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
/// All annotations of one object together, keys and values.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// A pattern of apimachinery's; `None` (a pattern that does not compile) matches nothing, so
/// that every lint test would fail on it.
type Pattern = LazyLock<Option<Regex>>;

static DNS1123_SUBDOMAIN: Pattern = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").ok()
});
static DNS1123_LABEL: Pattern =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").ok());
static QUALIFIED_NAME: Pattern =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").ok());

fn matches(pattern: &Pattern, text: &str) -> bool {
    pattern.as_ref().is_some_and(|re| re.is_match(text))
}

const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// The JSON type of each field ObjectMeta has.
const FIELDS: [(&str, &str); 16] = [
    ("name", "string"),
    ("generateName", "string"),
    ("namespace", "string"),
    ("selfLink", "string"),
    ("uid", "string"),
    ("resourceVersion", "string"),
    ("generation", "integer"),
    ("creationTimestamp", "string"),
    ("deletionTimestamp", "string"),
    ("deletionGracePeriodSeconds", "integer"),
    ("labels", "object"),
    ("annotations", "object"),
    ("ownerReferences", "array"),
    ("finalizers", "array"),
    ("managedFields", "array"),
    ("clusterName", "string"),
];

/// The findings on `metadata` (the object's field, or `None` when it has none) of an object
/// of a kind that is `namespaced` or not. Every one is an error the apiserver answers with.
pub(super) fn check(metadata: Option<&Json>, namespaced: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let empty = serde_json::Map::new();
    let map = match metadata {
        None | Some(Json::Null) => &empty,
        Some(Json::Object(map)) => map,
        Some(other) => {
            findings.push(Finding::error(
                "metadata",
                format!("must be of type object, not {}", type_name(other)),
            ));
            return findings;
        }
    };
    for (key, value) in map {
        let field = format!("metadata.{key}");
        match FIELDS.iter().find(|(name, _)| name == key) {
            None => findings.push(Finding::error(field, "unknown field: not in ObjectMeta")),
            Some((_, ty)) if !value.is_null() && !has_type(value, ty) => {
                findings.push(Finding::error(
                    field,
                    format!("must be of type {ty}, not {}", type_name(value)),
                ))
            }
            Some(_) => {}
        }
    }
    if !findings.is_empty() {
        // The apiserver cannot decode such metadata at all, so it checks nothing else of it.
        return findings;
    }
    let text = |key: &str| map.get(key).and_then(Json::as_str).unwrap_or_default();

    let generate_name = text("generateName");
    if !generate_name.is_empty() {
        for why in subdomain(&mask_trailing_dash(generate_name)) {
            findings.push(invalid("metadata.generateName", generate_name, why));
        }
    }
    let name = text("name");
    if name.is_empty() {
        if generate_name.is_empty() {
            findings.push(Finding::error(
                "metadata.name",
                "required: name or generateName is required",
            ));
        }
    } else {
        for why in subdomain(name) {
            findings.push(invalid("metadata.name", name, why));
        }
    }
    let namespace = text("namespace");
    // A cluster-scoped object's namespace is dropped by the apiserver, not checked.
    if namespaced && !namespace.is_empty() {
        for why in dns_label(namespace) {
            findings.push(invalid("metadata.namespace", namespace, why));
        }
    }
    for field in ["creationTimestamp", "deletionTimestamp"] {
        if let Some(time) = map.get(field).and_then(Json::as_str)
            && !is_date_time(time)
        {
            findings.push(invalid(
                &format!("metadata.{field}"),
                time,
                "must be an RFC 3339 date-time".into(),
            ));
        }
    }
    findings.extend(labels(map.get("labels")));
    findings.extend(annotations(map.get("annotations")));
    findings.extend(finalizers(map.get("finalizers")));
    findings.extend(owner_references(map.get("ownerReferences")));
    findings
}

fn has_type(value: &Json, ty: &str) -> bool {
    match ty {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => true,
    }
}

fn invalid(field: &str, value: &str, why: String) -> Finding {
    Finding::error(
        field,
        format!("{}: {why}", show(&Json::String(value.to_owned()))),
    )
}

/// apimachinery's `maskTrailingDash`: a generateName may end in `-`, as the generated suffix
/// follows it.
fn mask_trailing_dash(name: &str) -> String {
    if name.len() > 1 && name.ends_with('-') {
        // As apimachinery does it: the last two bytes become one `a`.
        let cut = name.len() - 2;
        if name.is_char_boundary(cut) {
            return format!("{}a", &name[..cut]);
        }
    }
    name.to_owned()
}

fn too_long(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn subdomain(value: &str) -> Vec<String> {
    let mut why = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        why.push(too_long(DNS1123_SUBDOMAIN_MAX));
    }
    if !matches(&DNS1123_SUBDOMAIN, value) {
        why.push(SUBDOMAIN_RULE.into());
    }
    why
}

fn dns_label(value: &str) -> Vec<String> {
    let mut why = Vec::new();
    if value.len() > DNS1123_LABEL_MAX {
        why.push(too_long(DNS1123_LABEL_MAX));
    }
    if !matches(&DNS1123_LABEL, value) {
        why.push(LABEL_RULE.into());
    }
    why
}

/// apimachinery's `IsQualifiedName`: `[prefix/]name`, the prefix a DNS subdomain.
fn qualified_name(key: &str) -> Vec<String> {
    let mut why = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                why.push("prefix part must be non-empty".into());
            } else {
                why.extend(
                    subdomain(prefix)
                        .into_iter()
                        .map(|w| format!("prefix part {w}")),
                );
            }
            name
        }
        _ => {
            why.push(format!(
                "a qualified name {NAME_RULE}, with an optional DNS subdomain prefix and '/'"
            ));
            return why;
        }
    };
    if name.is_empty() {
        why.push("name part must be non-empty".into());
    } else if name.len() > QUALIFIED_NAME_MAX {
        why.push(format!("name part {}", too_long(QUALIFIED_NAME_MAX)));
    }
    if !name.is_empty() && !matches(&QUALIFIED_NAME, name) {
        why.push(format!("name part {NAME_RULE}"));
    }
    why
}

fn entries(value: Option<&Json>) -> impl Iterator<Item = (&String, &Json)> {
    value.and_then(Json::as_object).into_iter().flatten()
}

fn labels(value: Option<&Json>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (key, value) in entries(value) {
        let field = format!("metadata.labels[{key}]");
        for why in qualified_name(key) {
            findings.push(Finding::error(
                &field,
                format!("key {}: {why}", show(&Json::String(key.clone()))),
            ));
        }
        match value {
            // JSON null decodes as the empty value.
            Json::Null => {}
            Json::String(text) => {
                if text.len() > LABEL_VALUE_MAX {
                    findings.push(invalid(&field, text, too_long(LABEL_VALUE_MAX)));
                }
                if !text.is_empty() && !matches(&QUALIFIED_NAME, text) {
                    findings.push(invalid(
                        &field,
                        text,
                        format!("a valid label value {NAME_RULE}"),
                    ));
                }
            }
            other => findings.push(Finding::error(
                field,
                format!("must be of type string, not {}", type_name(other)),
            )),
        }
    }
    findings
}

fn annotations(value: Option<&Json>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut bytes = 0;
    for (key, value) in entries(value) {
        let field = format!("metadata.annotations[{key}]");
        // The apiserver checks annotation keys in lower case.
        for why in qualified_name(&key.to_lowercase()) {
            findings.push(Finding::error(
                &field,
                format!("key {}: {why}", show(&Json::String(key.clone()))),
            ));
        }
        match value {
            Json::Null => bytes += key.len(),
            Json::String(text) => bytes += key.len() + text.len(),
            other => findings.push(Finding::error(
                field,
                format!("must be of type string, not {}", type_name(other)),
            )),
        }
    }
    if bytes > ANNOTATIONS_MAX_BYTES {
        findings.push(Finding::error(
            "metadata.annotations",
            format!("{bytes} bytes: may have at most {ANNOTATIONS_MAX_BYTES} bytes in all"),
        ));
    }
    findings
}

fn finalizers(value: Option<&Json>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, finalizer) in value
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("metadata.finalizers[{i}]");
        match finalizer.as_str() {
            Some(name) => {
                for why in qualified_name(name) {
                    findings.push(invalid(&field, name, why));
                }
            }
            None => findings.push(Finding::error(
                field,
                format!("must be of type string, not {}", type_name(finalizer)),
            )),
        }
    }
    findings
}

fn owner_references(value: Option<&Json>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut controllers = 0;
    for (i, owner) in value
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = format!("metadata.ownerReferences[{i}]");
        let Some(owner) = owner.as_object() else {
            findings.push(Finding::error(
                field,
                format!("must be of type object, not {}", type_name(owner)),
            ));
            continue;
        };
        for key in ["apiVersion", "kind", "name", "uid"] {
            match owner.get(key) {
                Some(Json::String(s)) if !s.is_empty() => {}
                Some(Json::String(_)) | None | Some(Json::Null) => {
                    findings.push(Finding::error(
                        format!("{field}.{key}"),
                        "must not be empty",
                    ));
                }
                Some(other) => findings.push(Finding::error(
                    format!("{field}.{key}"),
                    format!("must be of type string, not {}", type_name(other)),
                )),
            }
        }
        if owner.get("controller") == Some(&Json::Bool(true)) {
            controllers += 1;
        }
    }
    if controllers > 1 {
        findings.push(Finding::error(
            "metadata.ownerReferences",
            "only one reference can have controller set to true",
        ));
    }
    findings
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(metadata: Json) -> Vec<String> {
        check(Some(&metadata), true)
            .into_iter()
            .map(|f| f.field)
            .collect()
    }

    #[test]
    fn names_are_dns_subdomains_as_the_apiserver_checks_them() {
        for good in ["web", "web-1", "a.b.c", "0", &"a".repeat(253)] {
            assert!(fields(json!({"name": good})).is_empty(), "{good}");
        }
        for bad in [
            "",
            "Web",
            "wéb",
            "-web",
            "web-",
            "a..b",
            "web_1",
            "a/b",
            &"a".repeat(254),
        ] {
            assert_eq!(fields(json!({"name": bad})), ["metadata.name"], "{bad:?}");
        }
        assert_eq!(fields(json!({})), ["metadata.name"]);
        assert_eq!(fields(json!({"name": null})), ["metadata.name"]);
        assert!(check(None, true).iter().any(|f| f.field == "metadata.name"));
        // A generateName may end in a dash; the name then comes from it.
        assert!(fields(json!({"generateName": "web-"})).is_empty());
        assert_eq!(
            fields(json!({"generateName": "Web-"})),
            ["metadata.generateName"]
        );
    }

    #[test]
    fn a_namespace_is_a_dns_label_where_the_kind_has_namespaces() {
        assert!(fields(json!({"name": "web", "namespace": "shop"})).is_empty());
        assert_eq!(
            fields(json!({"name": "web", "namespace": "a.b"})),
            ["metadata.namespace"]
        );
        assert_eq!(
            fields(json!({"name": "web", "namespace": "a".repeat(64)})),
            ["metadata.namespace"]
        );
        let cluster = check(Some(&json!({"name": "web", "namespace": "a.b"})), false);
        assert!(cluster.is_empty(), "{cluster:?}");
    }

    #[test]
    fn labels_and_annotations_keys_values_and_sizes() {
        let ok = json!({"name": "web", "labels": {"app": "web", "sluice.dev/role": "", "a": null},
                        "annotations": {"Team": "any text at all / ok", "example.com/x": "{}"}});
        assert!(fields(ok).is_empty());
        let bad = json!({"name": "web", "labels": {
            "a b": "x", "x/": "y", "/x": "y", "a/b/c": "y", "k": "-v", "l": "v".repeat(64),
            "Ex.com/k": "v", "n": 1,
        }});
        let found = fields(bad);
        for field in ["a b", "x/", "/x", "a/b/c", "k", "l", "Ex.com/k", "n"] {
            let field = format!("metadata.labels[{field}]");
            assert!(found.contains(&field), "{field} not in {found:?}");
        }
        let huge = json!({"name": "web", "annotations": {"a": "x".repeat(256 * 1024)}});
        assert_eq!(fields(huge), ["metadata.annotations"]);
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_errors() {
        assert_eq!(
            fields(json!({"name": "web", "nmae": "x"})),
            ["metadata.nmae"]
        );
        assert_eq!(
            fields(json!({"name": "web", "labels": ["app"]})),
            ["metadata.labels"]
        );
        assert_eq!(fields(json!({"name": 5})), ["metadata.name"]);
        assert_eq!(
            check(Some(&json!("web")), true)
                .into_iter()
                .map(|f| f.field)
                .collect::<Vec<_>>(),
            ["metadata"]
        );
        assert!(fields(json!({"name": "web", "creationTimestamp": null, "uid": "u"})).is_empty());
        assert_eq!(
            fields(json!({"name": "web", "creationTimestamp": "yesterday"})),
            ["metadata.creationTimestamp"]
        );
    }

    #[test]
    fn finalizers_and_owner_references() {
        assert!(fields(json!({"name": "web", "finalizers": ["example.com/cleanup"]})).is_empty());
        assert_eq!(
            fields(json!({"name": "web", "finalizers": ["a b"]})),
            ["metadata.finalizers[0]"]
        );
        let owner = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u", "controller": true});
        assert!(fields(json!({"name": "web", "ownerReferences": [owner]})).is_empty());
        assert_eq!(
            fields(json!({"name": "web", "ownerReferences": [owner, owner]})),
            ["metadata.ownerReferences"]
        );
        assert_eq!(
            fields(
                json!({"name": "web", "ownerReferences": [{"apiVersion": "v1", "kind": "K", "name": "n"}]})
            ),
            ["metadata.ownerReferences[0].uid"]
        );
    }
}
