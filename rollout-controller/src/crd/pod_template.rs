//! What the apiserver checks of a ReplicaSet's pod template and selector, put into the Rollout's
//! schema where a schema or CEL rule can say it, so that a template no ReplicaSet could be made
//! of is refused when the Rollout is written, naming the field, instead of failing later in the
//! controller. The schemas come from k8s-openapi, which carries no validation; these transforms
//! add it to the generated schema.
//!
//! CEL rules are costed by the apiserver for the largest value the schema allows: the lists and
//! strings they walk carry maxItems and maxLength.

use schemars::Schema;
use serde_json::{Value, json};

/// Label values, as for every Kubernetes object: at most 63 characters, alphanumerics with `-`,
/// `_` and `.` inside.
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
const LABEL_VALUE_MAX: usize = 63;
/// Container names are DNS labels.
const CONTAINER_NAME_MAX: usize = 63;
/// Containers (and init containers) of one pod. Kubernetes sets no count; the bound is what lets
/// the apiserver afford the rule that their names are unique (it compares every pair).
pub const CONTAINERS_MAX: usize = 128;
/// Entries of `selector.matchLabels`, bounded for the rule that each is a template label.
pub const MATCH_LABELS_MAX: usize = 64;

const UNIQUE_NAMES_RULE: &str = "self.all(c, self.exists_one(d, d.name == c.name))";

/// `spec.selector`: label values as the apiserver takes them, and a bounded matchLabels.
pub fn label_selector_schema(schema: &mut Schema) {
    if let Some(match_labels) = schema.pointer_mut("/properties/matchLabels") {
        label_map(match_labels);
        set(match_labels, "maxProperties", json!(MATCH_LABELS_MAX));
    }
}

/// `spec.template`: label values as the apiserver takes them; containers and init containers
/// with non-empty, unique names and an image.
pub fn pod_template_schema(schema: &mut Schema) {
    if let Some(labels) = schema.pointer_mut("/properties/metadata/properties/labels") {
        label_map(labels);
    }
    for list in ["containers", "initContainers"] {
        if let Some(containers) = schema.pointer_mut(&format!("/properties/spec/properties/{list}"))
        {
            containers_list(containers, list);
        }
    }
}

fn label_map(map: &mut Value) {
    if let Some(values) = map.get_mut("additionalProperties") {
        set(values, "maxLength", json!(LABEL_VALUE_MAX));
        set(values, "pattern", json!(LABEL_VALUE_PATTERN));
    }
}

fn containers_list(list: &mut Value, field: &str) {
    set(list, "maxItems", json!(CONTAINERS_MAX));
    let rule = json!({
        "rule": UNIQUE_NAMES_RULE,
        "message": format!("{field} must have unique names"),
    });
    match list.get_mut("x-kubernetes-validations") {
        Some(Value::Array(rules)) => rules.push(rule),
        _ => set(list, "x-kubernetes-validations", json!([rule])),
    }
    let Some(item) = list.get_mut("items") else {
        return;
    };
    if let Some(name) = item.pointer_mut("/properties/name") {
        set(name, "minLength", json!(1));
        set(name, "maxLength", json!(CONTAINER_NAME_MAX));
    }
    if let Some(image) = item.pointer_mut("/properties/image") {
        set(image, "minLength", json!(1));
    }
    if let Some(object) = item.as_object_mut() {
        let required = object.entry("required").or_insert_with(|| json!([]));
        if let Value::Array(required) = required
            && !required.iter().any(|r| r == "image")
        {
            required.push(json!("image"));
        }
    }
}

fn set(schema: &mut Value, key: &str, value: Value) {
    if let Some(object) = schema.as_object_mut() {
        object.insert(key.to_owned(), value);
    }
}
