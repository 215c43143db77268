use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::lint::schemas;

// --- Every CEL rule of the generated CRDs ---

/// The schema nodes (as JSON pointers into the schema) that carry CEL rules.
fn rule_nodes(schema: &Json, at: String, out: &mut BTreeMap<String, Vec<String>>) {
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Json::as_array)
    {
        let rules = rules
            .iter()
            .map(|r| r["rule"].as_str().unwrap().to_owned())
            .collect();
        out.insert(at.clone(), rules);
    }
    for (key, child) in schema
        .get("properties")
        .and_then(Json::as_object)
        .into_iter()
        .flatten()
    {
        rule_nodes(child, format!("{at}/properties/{key}"), out);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
            rule_nodes(child, format!("{at}/{key}"), out);
        }
    }
}

/// The schema nodes that `value` has a value at.
fn reached(schema: &Json, value: &Json, at: String, out: &mut BTreeSet<String>) {
    out.insert(at.clone());
    match value {
        Json::Object(map) => {
            for (key, child) in map {
                if let Some(s) = schema.get("properties").and_then(|p| p.get(key)) {
                    reached(s, child, format!("{at}/properties/{key}"), out);
                } else if let Some(s) = schema.get("additionalProperties").filter(|c| c.is_object())
                {
                    reached(s, child, format!("{at}/additionalProperties"), out);
                }
            }
        }
        Json::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    reached(s, item, format!("{at}/items"), out);
                }
            }
        }
        _ => {}
    }
}

const ARGS: &str = "args: [{name: a, value: x}, {name: b, valueFrom: {podTemplateHashValue: Latest}}, {name: c, valueFrom: {secretKeyRef: {name: s, key: k}}}]";

/// Valid objects of every kind that, together, reach every node with a CEL rule.
fn samples() -> Vec<(&'static str, String)> {
    let analysis = format!("{{templates: [{{templateName: t}}], {ARGS}}}");
    let head = "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: web, image: 'web:1'}], initContainers: [{name: init, image: 'init:1'}]}}\n  restartAt: '2026-12-01T07:00:00Z'\n  strategy:\n";
    let template = format!(
        "metadata: {{name: t}}\nspec:\n  {ARGS}\n  metrics:\n  - name: m\n    provider: {{prometheus: {{address: 'http://p', query: up}}}}\n"
    );
    vec![
        (
            "Rollout",
            format!(
                "{head}    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0, analysis: {analysis}}}\n"
            ),
        ),
        (
            "Rollout",
            format!(
                "{head}    blueGreen: {{activeService: a, prePromotionAnalysis: {analysis}, postPromotionAnalysis: {analysis}}}\n"
            ),
        ),
        (
            "Rollout",
            format!(
                "{head}    canary:\n      stableService: s\n      canaryService: c\n      trafficRouting: {{gatewayAPI: {{httpRoute: r}}}}\n      analysis: {analysis}\n      steps:\n      - setWeight: 10\n      - setCanaryScale: {{replicas: 1}}\n      - setHeaderRoute: {{match: [{{headerName: X, headerValue: {{exact: '1'}}}}]}}\n      - analysis: {analysis}\n"
            ),
        ),
        (
            "Rollout",
            format!(
                "{head}    abTest:\n      stableService: s\n      canaryService: c\n      trafficRouting: {{nginx: {{stableIngress: i}}}}\n      match: [{{headers: [{{name: X, exact: '1'}}]}}, {{cookie: beta}}]\n      duration: 30m\n      analysis: {analysis}\n"
            ),
        ),
        (
            "AnalysisTemplate",
            format!("apiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate\n{template}"),
        ),
        (
            "ClusterAnalysisTemplate",
            format!("apiVersion: sluice.dev/v1alpha1\nkind: ClusterAnalysisTemplate\n{template}"),
        ),
        (
            "AnalysisRun",
            format!(
                "apiVersion: sluice.dev/v1alpha1\nkind: AnalysisRun\n{}",
                template.replace(", valueFrom: {podTemplateHashValue: Latest}", ", value: y")
            ),
        ),
    ]
}

#[test]
fn every_cel_rule_of_the_crds_compiles() {
    let schemas = schemas().unwrap();
    assert_eq!(schemas.len(), crate::crds().len());
    let mut count = 0;
    for (kind, schema) in schemas {
        let compiled = kube::core::cel::compile_schema(schema);
        let mut nodes = BTreeMap::new();
        rule_nodes(schema, String::new(), &mut nodes);
        count += nodes.values().map(Vec::len).sum::<usize>();
        fn errors(c: &kube::core::cel::CompiledSchema, out: &mut Vec<String>) {
            out.extend(c.compilation_errors().iter().map(|e| e.to_string()));
            c.properties.values().for_each(|p| errors(p, out));
            c.items.iter().for_each(|i| errors(i, out));
            c.additional_properties.iter().for_each(|a| errors(a, out));
        }
        let mut found = Vec::new();
        errors(&compiled, &mut found);
        assert!(found.is_empty(), "{kind}: {found:?}");
    }
    assert!(count >= 20, "only {count} rules found");
}

#[test]
fn every_cel_rule_of_the_crds_evaluates_on_valid_objects() {
    let schemas = schemas().unwrap();
    let mut reached_nodes: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (kind, yaml) in samples() {
        let value: Json = serde_norway::from_str(&yaml).unwrap();
        let schema = &schemas[kind];
        let checked = check_schema(schema, &value);
        assert!(
            checked.findings.is_empty(),
            "{kind}:\n{yaml}\n{:?}",
            checked.findings
        );
        reached(
            schema,
            &value,
            String::new(),
            reached_nodes.entry(kind).or_default(),
        );
    }
    for (kind, schema) in schemas {
        let mut nodes = BTreeMap::new();
        rule_nodes(schema, String::new(), &mut nodes);
        let reached = reached_nodes
            .get(kind.as_str())
            .cloned()
            .unwrap_or_default();
        for (node, rules) in nodes {
            assert!(
                reached.contains(&node),
                "{kind}: no sample reaches {node} ({rules:?})"
            );
        }
    }
    // And a rule is really evaluated: the same samples, broken, fail it.
    let broken = samples()[0].1.replace("maxSurge: 1", "maxSurge: 0");
    let checked = check_schema(
        &schemas["Rollout"],
        &serde_norway::from_str(&broken).unwrap(),
    );
    assert_eq!(
        checked.findings,
        [Finding::error(
            "spec.strategy.rollingUpdate",
            "maxSurge and maxUnavailable must not both be 0"
        )]
    );
}

#[test]
fn a_rule_that_cannot_be_evaluated_is_an_internal_error() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"spec": {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "x-kubernetes-validations": [
                {"rule": "self.a >", "message": "broken"},
                {"rule": "self.a.noSuchFunction()", "message": "unknown"},
            ],
        }},
    });
    let checked = check_schema(
        &schema,
        &serde_json::json!({"metadata": {"name": "x"}, "spec": {"a": 1}}),
    );
    assert_eq!(checked.findings.len(), 2, "{:?}", checked.findings);
    for finding in &checked.findings {
        assert_eq!(finding.severity, Severity::Error);
        assert_eq!(finding.field, "spec");
        assert!(
            finding
                .message
                .starts_with("internal lint error: the CRD rule `self.a"),
            "{finding}"
        );
    }
    assert!(!checked.rejected);
}

#[test]
fn schema_keywords_are_checked() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "mode": {"type": "string", "enum": ["auto", "manual"]},
                "size": {"x-kubernetes-int-or-string": true},
                "list": {"type": "array", "maxItems": 1, "items": {"type": "integer", "minimum": 0}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "pod": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                "opt": {"type": "string", "nullable": true},
            },
        }},
    });
    let ok = serde_json::json!({"metadata": {"name": "x"}, "spec": {
        "name": "n", "mode": "auto", "size": "25%", "list": [1], "labels": {"a": "b"},
        "free": {"any": {"thing": 1}}, "pod": {"apiVersion": "v1", "kind": "Pod", "spec": {}},
        "opt": null, "gone": null,
    }});
    let checked = check_schema(&schema, &ok);
    assert_eq!(
        checked.findings,
        [Finding::error(
            "spec.gone",
            "unknown field: not in the schema"
        )]
    );
    let bad = serde_json::json!({"metadata": {"name": "x"}, "spec": {
        "mode": "sometimes", "size": true, "list": [-1, 2], "labels": {"a": 1},
        "pod": {"spec": {}},
    }});
    let checked = check_schema(&schema, &bad);
    let fields: BTreeSet<&str> = checked.findings.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "spec.name",
            "spec.mode",
            "spec.size",
            "spec.list",
            "spec.list[0]",
            "spec.labels[a]",
            "spec.pod.apiVersion",
            "spec.pod.kind",
            ""
        ]),
        "{:?}",
        checked.findings
    );
    assert!(checked.rejected);
}
