//! An offline linter for Rollout manifests (`kubectl sluice lint -f FILE`): the rules the
//! apiserver and the controller apply, taken from the controller's own code, run on a file.
//!
//! For every `sluice.dev/v1alpha1` Rollout of a (multi-document) YAML file:
//!
//! 1. **What the apiserver would reject**, from the generated CRD's `openAPIV3Schema`: unknown
//!    fields (kubectl's default strict field validation rejects them), types, `required`,
//!    `enum`, `minimum`/`maximum`, `minLength`/`maxLength`, `pattern`, `minItems`/`maxItems`,
//!    `x-kubernetes-int-or-string`, `x-kubernetes-embedded-resource` and
//!    `x-kubernetes-preserve-unknown-fields` (whose schema-less parts are not looked into), and
//!    the `x-kubernetes-validations` CEL rules. As in the apiserver, unknown fields and `null`s in
//!    non-nullable fields are pruned and schema defaults applied first, and the CEL rules are
//!    not evaluated when a type, `required`, `enum`, `maxLength` or `maxItems` error was found.
//!    The rules are evaluated by kube's client-side CRD validator (`kube::core::cel`, the `cel`
//!    crate with the Kubernetes CEL libraries), with `self` bound to the value at each node and
//!    no `oldSelf`. A rule it cannot compile or evaluate is an error finding of its own, never
//!    a silent pass.
//! 2. **Deserialization** into [`Rollout`]: a serde error is a finding, with the line and column
//!    (this is where `metadata`, which the CRD schema leaves to the apiserver, is checked).
//! 3. **What the controller checks** ([`plan::validate`]), with an [`Observed`] built from the
//!    file. Offline the cluster is unknown, so every Service the rollout names counts as present;
//!    AnalysisTemplates, ClusterAnalysisTemplates, the stable Ingress and the HTTPRoute are taken
//!    from the file, and one that is not in it is a warning ("not checked"), not an error. An
//!    analysis block that names such a template is not checked at all: its arguments and metrics
//!    depend on the template. The router's objects get the checks a reconcile makes
//!    (`reconcile::router_problem`). Like the controller, this part stops at the first problem
//!    it finds.
//!
//! Steps 2 and 3 are skipped for an object the apiserver would reject: the controller never
//! sees it.
//!
//! AnalysisTemplates and ClusterAnalysisTemplates in the file are checked against their CRDs and
//! deserialized as well, since a rollout uses them. Other documents are ignored, but a file
//! without any Rollout is an error.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use k8s_openapi::api::networking::v1::Ingress;
use kube::core::cel::{ErrorKind, Validator, apply_defaults};
use regex::Regex;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::crd::Rollout;
use crate::crd::analysis::{AnalysisTemplate, AnalysisTemplateSpec, ClusterAnalysisTemplate};
use crate::plan::analysis::{TemplateKey, analyses, referenced_templates};
use crate::plan::{self, Observed};
use crate::reconcile::{RouterObject, referenced_services, router_field, router_problem};

/// The apiVersion of every Sluice kind.
const API_VERSION: &str = "sluice.dev/v1alpha1";

/// Why a file could not be linted at all.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    /// Not YAML: nothing after this point of the file can be read.
    #[error("document {document} is not readable YAML: {source}")]
    Yaml {
        /// Index of the document, from 0.
        document: usize,
        #[source]
        source: serde_norway::Error,
    },
    /// The CRDs built into this binary could not be turned into JSON schemas (a bug).
    #[error("internal lint error: the CRD schemas could not be prepared: {0}")]
    Schemas(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// The apiserver would reject it, or the controller would mark the rollout InvalidSpec.
    Error,
    /// Something that could not be checked offline.
    Warning,
}

/// One problem, at one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub severity: Severity,
    /// The field, named as the apiserver names it (`spec.strategy.canary.steps[0].setWeight`);
    /// empty for the document as a whole.
    pub field: String,
    pub message: String,
}

impl Finding {
    fn error(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            field: field.into(),
            message: message.into(),
        }
    }

    fn warning(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// What the linter found in one document (or, with no `document`, in the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Index of the document in the file, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    /// The document's kind; empty for the file as a whole.
    pub kind: String,
    /// The document's `metadata.name` (empty when it has none).
    pub name: String,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// How a line names the document: `Rollout web`, `Rollout (document 2)`, `file`.
    fn subject(&self) -> String {
        match (self.kind.is_empty(), self.name.is_empty(), self.document) {
            (true, _, None) => "file".to_owned(),
            (true, _, Some(i)) => format!("document {i}"),
            (false, false, _) => format!("{} {}", self.kind, self.name),
            (false, true, Some(i)) => format!("{} (document {i})", self.kind),
            (false, true, None) => self.kind.clone(),
        }
    }
}

/// True when any report has an error (the lint fails); warnings alone pass.
pub fn has_errors(reports: &[Report]) -> bool {
    reports.iter().any(Report::has_errors)
}

/// One line per finding (`Rollout web: spec.strategy.canary.steps[1].setWeight: 150 is above
/// 100`), or `Rollout web: ok`.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let subject = self.subject();
        if self.findings.is_empty() {
            return write!(f, "{subject}: ok");
        }
        for (i, finding) in self.findings.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{subject}: {finding}")?;
        }
        Ok(())
    }
}

/// Lints the YAML text of a file: one report per Sluice object in it (Rollouts and analysis
/// templates), plus one per other document that has a finding, in the file's order.
pub fn lint(yaml: &str) -> Result<Vec<Report>, LintError> {
    let schemas = schemas()?;
    let documents = read_documents(yaml)?;
    let mut reports: BTreeMap<usize, Report> = BTreeMap::new();
    let mut file = FileObjects::default();
    let mut rollouts = Vec::new();
    for doc in &documents {
        let report = |findings| Report {
            document: Some(doc.index),
            kind: doc.kind.clone(),
            name: doc.name.clone(),
            findings,
        };
        let value = match &doc.value {
            Ok(value) => value,
            Err(finding) => {
                reports.insert(doc.index, report(vec![finding.clone()]));
                continue;
            }
        };
        let group = doc.api_version.split('/').next().unwrap_or_default();
        match (doc.api_version.as_str(), doc.kind.as_str()) {
            (API_VERSION, "Rollout") => rollouts.push((doc, value)),
            (API_VERSION, kind @ ("AnalysisTemplate" | "ClusterAnalysisTemplate")) => {
                let cluster_scope = kind == "ClusterAnalysisTemplate";
                let (findings, spec) = if cluster_scope {
                    lint_object::<ClusterAnalysisTemplate>(yaml, doc, value, schemas)
                        .map_spec(|t| t.spec.template)
                } else {
                    lint_object::<AnalysisTemplate>(yaml, doc, value, schemas).map_spec(|t| t.spec)
                };
                file.templates.push(Found {
                    name: doc.name.clone(),
                    namespace: doc.namespace.clone(),
                    index: doc.index,
                    object: (cluster_scope, spec),
                });
                reports.insert(doc.index, report(findings));
            }
            (_, "Rollout") => {
                let finding = Finding::warning(
                    "apiVersion",
                    format!(
                        "not checked: {:?} is not Sluice's apiVersion {API_VERSION}",
                        doc.api_version
                    ),
                );
                reports.insert(doc.index, report(vec![finding]));
            }
            ("v1", "Service") => file.services.push(Found {
                name: doc.name.clone(),
                namespace: doc.namespace.clone(),
                index: doc.index,
                object: string_map(&value["spec"]["selector"]),
            }),
            ("networking.k8s.io/v1", "Ingress") => {
                let ingress = serde_json::from_value::<Ingress>(value.clone());
                if let Err(e) = &ingress {
                    let finding = Finding::error("", format!("not a valid Ingress: {e}"));
                    reports.insert(doc.index, report(vec![finding]));
                }
                file.ingresses.push(Found {
                    name: doc.name.clone(),
                    namespace: doc.namespace.clone(),
                    index: doc.index,
                    object: ingress.ok(),
                });
            }
            (_, "HTTPRoute") if group == "gateway.networking.k8s.io" => {
                file.routes.push(Found {
                    name: doc.name.clone(),
                    namespace: doc.namespace.clone(),
                    index: doc.index,
                    object: value.clone(),
                });
            }
            _ => {}
        }
    }
    for (doc, value) in &rollouts {
        let linted = lint_object::<Rollout>(yaml, doc, value, schemas);
        let mut findings = linted.findings;
        if let Some(rollout) = linted.object {
            findings.extend(controller_findings(&rollout, &file));
        }
        reports.insert(
            doc.index,
            Report {
                document: Some(doc.index),
                kind: doc.kind.clone(),
                name: doc.name.clone(),
                findings,
            },
        );
    }
    let mut reports: Vec<Report> = reports.into_values().collect();
    if rollouts.is_empty() {
        reports.push(Report {
            document: None,
            kind: String::new(),
            name: String::new(),
            findings: vec![Finding::error(
                "",
                format!("no Rollout ({API_VERSION}) in this file: nothing was checked"),
            )],
        });
    }
    Ok(reports)
}

/// One document of the file, as far as it could be read.
struct Document {
    index: usize,
    api_version: String,
    kind: String,
    name: String,
    namespace: Option<String>,
    /// The document as JSON, or why it is not a Kubernetes object.
    value: Result<Json, Finding>,
}

/// Reads every document of the file; empty ones are skipped, as kubectl skips them.
fn read_documents(yaml: &str) -> Result<Vec<Document>, LintError> {
    let mut documents = Vec::new();
    // After a syntax error the YAML parser can only repeat it, so the first error ends the read.
    for (index, document) in serde_norway::Deserializer::from_str(yaml).enumerate() {
        let yaml_error = |source| LintError::Yaml {
            document: index,
            source,
        };
        let mut value = serde_norway::Value::deserialize(document).map_err(yaml_error)?;
        value.apply_merge().map_err(yaml_error)?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value)
            .map_err(|e| Finding::error("", format!("cannot be read as JSON: {e}")))
            .and_then(|json| {
                if json.is_object() {
                    Ok(json)
                } else {
                    Err(Finding::error(
                        "",
                        "not a Kubernetes object: the document is not a mapping",
                    ))
                }
            });
        let text = |pointer: &str| {
            json.as_ref()
                .ok()
                .and_then(|j| j.pointer(pointer))
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        let kind = text("/kind").unwrap_or_default();
        let api_version = text("/apiVersion").unwrap_or_default();
        let name = text("/metadata/name")
            .or_else(|| text("/metadata/generateName"))
            .unwrap_or_default();
        let namespace = text("/metadata/namespace");
        let value = json.and_then(|json| {
            if kind.is_empty() {
                Err(Finding::error(
                    "kind",
                    "not a Kubernetes object: it has no kind",
                ))
            } else {
                Ok(json)
            }
        });
        documents.push(Document {
            index,
            api_version,
            kind,
            name,
            namespace,
            value,
        });
    }
    Ok(documents)
}

/// A document deserialized again, this time into `T`, so that serde_norway can say where in
/// the file a field does not fit.
fn typed<T: DeserializeOwned>(yaml: &str, index: usize) -> Result<T, serde_norway::Error> {
    match serde_norway::Deserializer::from_str(yaml).nth(index) {
        Some(document) => T::deserialize(document),
        None => Err(<serde_norway::Error as serde::de::Error>::custom(format!(
            "document {index} is not in the file"
        ))),
    }
}

/// A serde error as a finding: serde_norway puts the field path before the message.
fn serde_finding(kind: &str, error: &serde_norway::Error) -> Finding {
    let text = error.to_string();
    match text.split_once(": ") {
        Some((path, message)) if !path.is_empty() && !path.contains(char::is_whitespace) => {
            Finding::error(path, format!("cannot be read as a {kind}: {message}"))
        }
        _ => Finding::error("", format!("cannot be read as a {kind}: {text}")),
    }
}

/// What the apiserver and deserialization say of one Sluice object.
struct Linted<T> {
    findings: Vec<Finding>,
    /// The object, when the apiserver would accept it and it deserializes.
    object: Option<T>,
}

impl<T> Linted<T> {
    fn map_spec<S>(self, f: impl FnOnce(T) -> S) -> (Vec<Finding>, Option<S>) {
        (self.findings, self.object.map(f))
    }
}

fn lint_object<T: DeserializeOwned>(
    yaml: &str,
    doc: &Document,
    value: &Json,
    schemas: &BTreeMap<String, Json>,
) -> Linted<T> {
    let Some(schema) = schemas.get(&doc.kind) else {
        return Linted {
            findings: vec![Finding::error(
                "",
                format!("internal lint error: no CRD for kind {}", doc.kind),
            )],
            object: None,
        };
    };
    let checked = check_schema(schema, value);
    let mut findings = checked.findings;
    // A rejected object never reaches the controller, and reading it would mostly repeat the
    // schema's findings.
    if checked.rejected {
        return Linted {
            findings,
            object: None,
        };
    }
    match typed::<T>(yaml, doc.index) {
        Ok(object) => Linted {
            findings,
            object: Some(object),
        },
        Err(e) => {
            findings.push(serde_finding(&doc.kind, &e));
            Linted {
                findings,
                object: None,
            }
        }
    }
}

/// An object of the file that a rollout may refer to by name.
struct Found<T> {
    name: String,
    namespace: Option<String>,
    index: usize,
    object: T,
}

#[derive(Default)]
struct FileObjects {
    /// Selectors.
    services: Vec<Found<BTreeMap<String, String>>>,
    /// `None`: in the file, but not a valid Ingress.
    ingresses: Vec<Found<Option<Ingress>>>,
    routes: Vec<Found<Json>>,
    /// Cluster scope, and the spec (`None`: in the file, but invalid).
    templates: Vec<Found<(bool, Option<AnalysisTemplateSpec>)>>,
}

/// The object named `name` that a rollout in `namespace` would see. A missing namespace is
/// whatever namespace kubectl applies the file to, so it matches any; like kubectl, the last
/// one of a name wins.
fn find<'a, T>(
    found: &'a [Found<T>],
    name: &str,
    namespace: Option<&str>,
    keep: impl Fn(&T) -> bool,
) -> Option<&'a Found<T>> {
    found.iter().rev().find(|f| {
        f.name == name
            && match (namespace, f.namespace.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
            && keep(&f.object)
    })
}

/// `plan::validate` with what the file shows of the cluster.
fn controller_findings(rollout: &Rollout, file: &FileObjects) -> Vec<Finding> {
    let mut findings = Vec::new();
    let namespace = rollout.metadata.namespace.as_deref();
    let mut observed = Observed::default();
    for name in referenced_services(rollout) {
        let selector = find(&file.services, &name, namespace, |_| true)
            .map(|s| s.object.clone())
            .unwrap_or_default();
        observed.services.insert(name, selector);
    }

    let mut in_file: BTreeMap<TemplateKey, Result<&AnalysisTemplateSpec, usize>> = BTreeMap::new();
    for key in referenced_templates(&rollout.spec) {
        let scope = if key.cluster_scope { None } else { namespace };
        let found = find(&file.templates, &key.name, scope, |(cluster, _)| {
            *cluster == key.cluster_scope
        });
        if let Some(found) = found {
            in_file.insert(key, found.object.1.as_ref().ok_or(found.index));
        }
    }
    let mut unchecked = Vec::new();
    for (field, analysis) in analyses(&rollout.spec) {
        let mut complete = true;
        for (i, reference) in analysis.templates.iter().enumerate() {
            let key = TemplateKey {
                cluster_scope: reference.cluster_scope == Some(true),
                name: reference.template_name.clone(),
            };
            let why = match in_file.get(&key) {
                Some(Ok(spec)) => {
                    observed.templates.insert(key, (*spec).clone());
                    continue;
                }
                Some(Err(index)) => format!("is invalid in this file (document {index})"),
                None => "is not in this file".to_owned(),
            };
            complete = false;
            findings.push(Finding::warning(
                format!("{field}.templates[{i}].templateName"),
                format!("not checked: {} {} {why}", key.kind(), key.name),
            ));
        }
        if !complete {
            unchecked.push(field);
        }
    }
    let checked_rollout = match without_fields(rollout, &unchecked) {
        Ok(r) => r,
        Err(message) => {
            findings.push(Finding::error(
                "",
                format!("internal lint error: {message}"),
            ));
            return findings;
        }
    };

    if let Some(routed) = rollout.spec.strategy.routed()
        && let Some(field) = router_field(&routed)
    {
        let (kind, name, object) = if let Some(nginx) = &routed.routing.nginx {
            let found = find(&file.ingresses, &nginx.stable_ingress, namespace, |_| true);
            let object = found.map(|f| {
                f.object
                    .clone()
                    .map(|stable| RouterObject::Ingress(Box::new(stable)))
                    .ok_or(f.index)
            });
            ("Ingress", &nginx.stable_ingress, object)
        } else if let Some(gateway) = &routed.routing.gateway_api {
            let found = find(&file.routes, &gateway.http_route, namespace, |_| true);
            let object = found.map(|f| Ok(RouterObject::HttpRoute(f.object.clone())));
            ("HTTPRoute", &gateway.http_route, object)
        } else {
            ("", &String::new(), None)
        };
        match object {
            Some(Ok(object)) => match router_problem(&checked_rollout, Ok(object)) {
                Ok(problem) => observed.router_problem = problem,
                Err(e) => findings.push(Finding::error(
                    field,
                    format!("internal lint error: checking {kind} {name}: {e}"),
                )),
            },
            Some(Err(index)) => findings.push(Finding::warning(
                field,
                format!("not checked: {kind} {name} is invalid in this file (document {index})"),
            )),
            None => findings.push(Finding::warning(
                field,
                format!("not checked: {kind} {name} is not in this file"),
            )),
        }
    }

    if let Err(invalid) = plan::validate(&checked_rollout.spec, &observed) {
        // Some messages start with their field (a router's reason); a line names it once.
        let message = invalid
            .message
            .strip_prefix(&format!("{}: ", invalid.field))
            .map_or(invalid.message.clone(), str::to_owned);
        findings.push(Finding::error(invalid.field, message));
    }
    findings
}

/// `rollout` without the fields at `paths` (`spec.strategy.canary.steps[2].analysis`): the
/// controller's checks then pass over what cannot be checked offline, and check the rest.
fn without_fields(rollout: &Rollout, paths: &[String]) -> Result<Rollout, String> {
    if paths.is_empty() {
        return Ok(rollout.clone());
    }
    let mut value = serde_json::to_value(rollout).map_err(|e| e.to_string())?;
    for path in paths {
        let (parent, last) = match path.rsplit_once('.') {
            Some((parent, last)) => (pointer(parent), last),
            None => (String::new(), path.as_str()),
        };
        if let Some(Json::Object(map)) = value.pointer_mut(&parent) {
            map.remove(last);
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// `spec.steps[2].analysis` as a JSON pointer: `/spec/steps/2/analysis`.
fn pointer(path: &str) -> String {
    path.split('.')
        .flat_map(|part| part.split('['))
        .map(|part| format!("/{}", part.trim_end_matches(']')))
        .collect()
}

/// The schemas of Sluice's CRDs, by kind.
fn schemas() -> Result<&'static BTreeMap<String, Json>, LintError> {
    static SCHEMAS: LazyLock<Result<BTreeMap<String, Json>, String>> = LazyLock::new(|| {
        crate::crds()
            .into_iter()
            .map(|(file, crd)| {
                let schema = crd
                    .spec
                    .versions
                    .iter()
                    .find_map(|v| v.schema.as_ref()?.open_api_v3_schema.as_ref())
                    .ok_or_else(|| format!("{file} has no openAPIV3Schema"))?;
                let schema = serde_json::to_value(schema).map_err(|e| format!("{file}: {e}"))?;
                Ok((crd.spec.names.kind, schema))
            })
            .collect()
    });
    SCHEMAS.as_ref().map_err(|e| LintError::Schemas(e.clone()))
}

/// What the apiserver says of an object against its CRD's schema.
struct SchemaCheck {
    findings: Vec<Finding>,
    /// The apiserver would reject the object.
    rejected: bool,
}

/// The apiserver's order: prune unknown fields and nulls, default, validate the schema, and
/// evaluate the CEL rules unless a blocking error was found.
fn check_schema(schema: &Json, object: &Json) -> SchemaCheck {
    let mut walk = Walk::default();
    let mut pruned = object.clone();
    walk.prune(schema, &mut pruned, "", true);
    let defaulted = apply_defaults(schema, &pruned);
    walk.check(schema, &defaulted, "", true);
    let mut rejected = walk.findings.iter().any(|f| f.severity == Severity::Error);
    if walk.blocking {
        walk.findings.push(Finding::warning(
            "",
            "the CEL rules (x-kubernetes-validations) were not checked, as the apiserver does \
             not check them while the errors above remain",
        ));
    } else if let Err(errors) = Validator::new().validate(schema, &pruned, None) {
        for error in errors {
            if error.kind == ErrorKind::ValidationFailure {
                rejected = true;
                walk.findings
                    .push(Finding::error(error.field_path, error.message));
            } else {
                walk.findings.push(Finding::error(
                    error.field_path,
                    format!(
                        "internal lint error: the CRD rule `{}` could not be evaluated: {}",
                        error.rule, error.message
                    ),
                ));
            }
        }
    }
    SchemaCheck {
        findings: walk.findings,
        rejected,
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
fn show(value: &Json) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

fn type_name(value: &Json) -> &'static str {
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

fn is_integer(value: &Json) -> bool {
    value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
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

fn string_map(value: &Json) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
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

    /// The value checks of the schema at `path`, then its children. `resource`: as in `prune`.
    fn check(&mut self, schema: &Json, value: &Json, path: &str, resource: bool) {
        if value.is_null() && flag(schema, "nullable") {
            return;
        }
        if flag(schema, "x-kubernetes-int-or-string") {
            if !(is_integer(value) || value.is_string()) {
                self.blocking_error(
                    path,
                    format!("must be an integer or a string, not {}", type_name(value)),
                );
            }
            return;
        }
        if let Some(ty) = schema.get("type").and_then(Json::as_str)
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
                if let Some(min) = schema.get("minItems").and_then(Json::as_u64)
                    && count < min
                {
                    self.error(path, format!("has {count} items, at least {min} needed"));
                }
                if let Some(max) = schema.get("maxItems").and_then(Json::as_u64)
                    && count > max
                {
                    self.blocking_error(path, format!("has {count} items, at most {max} allowed"));
                }
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &format!("{path}[{i}]"), false);
                    }
                }
            }
            Json::Object(map) => self.check_object(schema, map, path, resource),
            Json::Null | Json::Bool(_) => {}
        }
        for branch in schema
            .get("allOf")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            self.check(branch, value, path, resource);
        }
        for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
            let Some(branches) = schema.get(keyword).and_then(Json::as_array) else {
                continue;
            };
            let passing = branches
                .iter()
                .filter(|branch| {
                    let mut alone = Walk::default();
                    alone.check(branch, value, path, resource);
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

    fn check_string(&mut self, schema: &Json, s: &str, path: &str) {
        let length = s.chars().count() as u64;
        let shown = show(&Json::String(s.to_owned()));
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

    fn check_object(
        &mut self,
        schema: &Json,
        map: &serde_json::Map<String, Json>,
        path: &str,
        resource: bool,
    ) {
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
        if resource && path.is_empty() {
            let named = ["name", "generateName"].iter().any(|k| {
                !map.get("metadata")
                    .and_then(|m| m.get(*k))
                    .is_none_or(Json::is_null)
            });
            if !named {
                self.blocking_error("metadata.name", "required");
            }
        }
        let count = map.len() as u64;
        if let Some(min) = schema.get("minProperties").and_then(Json::as_u64)
            && count < min
        {
            self.error(path, format!("has {count} fields, at least {min} needed"));
        }
        if let Some(max) = schema.get("maxProperties").and_then(Json::as_u64)
            && count > max
        {
            self.blocking_error(path, format!("has {count} fields, at most {max} allowed"));
        }
        let properties = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, child) in map {
            match (properties.and_then(|p| p.get(key)), additional) {
                (Some(child_schema), _) => self.check(child_schema, child, &join(path, key), false),
                (None, Some(child_schema)) => {
                    self.check(child_schema, child, &format!("{path}[{key}]"), false)
                }
                // Schema-less: preserved unknown fields, or an embedded resource's own fields.
                (None, None) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A canary with nginx routing, its Services, its Ingress and the template its analysis
    /// step uses: everything the controller needs, all valid.
    const VALID: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop}
spec:
  replicas: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {team: shop}}
    spec:
      containers:
      - name: web
        image: "web:1.2"
        ports: [{name: http, containerPort: 8080}]
        env: [{name: LOG, value: info}, {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 1, memory: 128Mi}}
        readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 5}
        livenessProbe: {tcpSocket: {port: 8080}}
        volumeMounts: [{name: cache, mountPath: /cache}]
        securityContext: {runAsNonRoot: true, capabilities: {drop: [ALL]}}
      volumes: [{name: cache, emptyDir: {}}]
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting:
        nginx: {stableIngress: web}
      steps:
      - setWeight: 10
      - pause: {duration: 2m}
      - analysis:
          templates: [{templateName: error-rate}]
          args: [{name: service, value: web}]
      - setWeight: 50
      - pause: {}
---
apiVersion: v1
kind: Service
metadata: {name: web-stable, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web-stable, port: {number: 80}}}
---
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: error-rate, namespace: shop}
spec:
  args: [{name: service}]
  metrics:
  - name: error-rate
    interval: 30s
    count: 10
    provider:
      prometheus:
        address: http://prometheus.monitoring:9090
        query: 'sum(rate(http_requests_total{service="{{args.service}}",code=~"5.."}[1m]))'
    successCondition: result[0] < 0.01
"#;

    const AB_TEST: &str = r#"
    abTest:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting:
        nginx: {stableIngress: web}
      match:
      - cookie: canary
      - cookie: beta
      duration: 30m
"#;

    const GATEWAY_ROUTE: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: gateway}]
  rules:
  - backendRefs: [{name: other, port: 80}]
"#;

    /// `VALID` with `from` replaced by `to`; `from` must be in it.
    fn edit(from: &str, to: &str) -> String {
        assert!(VALID.contains(from), "{from:?} is not in the valid file");
        VALID.replacen(from, to, 1)
    }

    /// The VALID file without its AnalysisTemplate.
    fn without_template() -> String {
        let cut = VALID.find("---\napiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate");
        VALID[..cut.unwrap()].to_owned()
    }

    fn rollout_report(yaml: &str) -> Report {
        let reports = lint(yaml).unwrap();
        reports
            .into_iter()
            .find(|r| r.kind == "Rollout")
            .expect("a report on the Rollout")
    }

    #[test]
    fn a_valid_canary_with_its_objects_has_no_findings() {
        let reports = lint(VALID).unwrap();
        for report in &reports {
            assert!(report.findings.is_empty(), "{report}");
        }
        let subjects: Vec<String> = reports
            .iter()
            .map(|r| format!("{} {} {:?}", r.kind, r.name, r.document))
            .collect();
        assert_eq!(
            subjects,
            ["Rollout web Some(0)", "AnalysisTemplate error-rate Some(4)"]
        );
        assert!(!has_errors(&reports));
    }

    #[test]
    fn each_problem_is_found_at_its_field() {
        let two_strategies = edit(
            "  strategy:\n",
            "  strategy:\n    rollingUpdate: {maxSurge: 1}\n",
        );
        let setweight_150 = edit("- setWeight: 50", "- setWeight: 150");
        let no_surge = edit(
            "      stableService: web-stable\n",
            "      stableService: web-stable\n      maxSurge: 0\n      maxUnavailable: 0%\n",
        );
        let bad_duration = edit("duration: 2m", "duration: five minutes");
        let two_actions = edit("- setWeight: 10\n", "- setWeight: 10\n        pause: {}\n");
        let selector = edit(
            "selector: {matchLabels: {app: web}}",
            "selector: {matchLabels: {app: api}}",
        );
        let two_headers = edit(
            "      - pause: {}\n",
            "      - pause: {}\n      - setHeaderRoute:\n          match:\n          - {headerName: X-A, headerValue: {exact: '1'}}\n          - {headerName: X-B, headerValue: {exact: '1'}}\n",
        );
        let canary_start = VALID.find("    canary:\n").unwrap();
        let canary_end = VALID.find("      - pause: {}\n").unwrap() + "      - pause: {}\n".len();
        let two_cookies = format!(
            "{}{}{}",
            &VALID[..canary_start],
            AB_TEST.trim_start_matches('\n'),
            &VALID[canary_end..]
        );
        let over_max = edit(
            "        nginx: {stableIngress: web}\n",
            "        nginx: {stableIngress: web}\n        maxTrafficWeight: 40\n",
        );
        let bad_metric = edit(
            "successCondition: result[0] < 0.01",
            "successCondition: 'result[0] <'",
        );
        let route_elsewhere = format!(
            "{}{GATEWAY_ROUTE}",
            edit(
                "nginx: {stableIngress: web}",
                "gatewayAPI: {httpRoute: web}"
            )
        );
        let malformed = edit(
            "metadata: {name: web, namespace: shop}",
            "metadata: {name: web, namespace: [shop]}",
        );
        let unknown_field = edit("- setWeight: 10\n", "- setWeight: 10\n        weight: 3\n");

        let cases: Vec<(&str, String, &str)> = vec![
            ("two strategies", two_strategies, "spec.strategy"),
            (
                "setWeight 150",
                setweight_150,
                "spec.strategy.canary.steps[3].setWeight",
            ),
            (
                "maxSurge and maxUnavailable 0",
                no_surge,
                "spec.strategy.canary",
            ),
            (
                "pause of five minutes",
                bad_duration,
                "spec.strategy.canary.steps[1].pause.duration",
            ),
            (
                "a step with two actions",
                two_actions,
                "spec.strategy.canary.steps[0]",
            ),
            (
                "selector not matching the labels",
                selector,
                "spec.selector",
            ),
            (
                "nginx header route on two headers",
                two_headers,
                "spec.strategy.canary.steps[5].setHeaderRoute",
            ),
            (
                "nginx A/B test on two cookies",
                two_cookies,
                "spec.strategy.abTest.match",
            ),
            (
                "setWeight above maxTrafficWeight",
                over_max,
                "spec.strategy.canary.steps[3].setWeight",
            ),
            (
                "a template's invalid metric",
                bad_metric,
                "spec.strategy.canary.steps[2].analysis.templates",
            ),
            (
                "an HTTPRoute without the stable Service",
                route_elsewhere,
                "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute",
            ),
            ("a malformed document", malformed, "metadata.namespace"),
            (
                "an unknown field",
                unknown_field,
                "spec.strategy.canary.steps[0].weight",
            ),
        ];
        for (name, yaml, field) in cases {
            let report = rollout_report(&yaml);
            let fields: Vec<(&str, Severity)> = report
                .findings
                .iter()
                .map(|f| (f.field.as_str(), f.severity))
                .collect();
            assert_eq!(fields, [(field, Severity::Error)], "{name}:\n{report}");
        }
    }

    #[test]
    fn the_messages_say_what_is_wrong() {
        let report = rollout_report(&edit("- setWeight: 50", "- setWeight: 150"));
        assert_eq!(
            report.to_string(),
            "Rollout web: spec.strategy.canary.steps[3].setWeight: 150 is above 100"
        );
        let report = rollout_report(&edit(
            "  strategy:\n",
            "  strategy:\n    rollingUpdate: {}\n",
        ));
        assert_eq!(
            report.findings[0].message,
            "exactly one of strategy.rollingUpdate, strategy.blueGreen, strategy.canary or strategy.abTest must be set"
        );
        let report = rollout_report(&edit("duration: 2m", "duration: five minutes"));
        assert!(
            report.findings[0]
                .message
                .starts_with("\"five minutes\" does not match"),
            "{report}"
        );
        let report = rollout_report(&edit(
            "metadata: {name: web, namespace: shop}",
            "metadata: {name: web, namespace: [shop]}",
        ));
        assert!(
            report.findings[0].message.contains("line 4 column"),
            "{report}"
        );
    }

    #[test]
    fn a_template_not_in_the_file_is_a_warning_only() {
        let reports = lint(&without_template()).unwrap();
        assert!(!has_errors(&reports));
        let report = rollout_report(&without_template());
        let field = "spec.strategy.canary.steps[2].analysis.templates[0].templateName";
        let message = "not checked: AnalysisTemplate error-rate is not in this file";
        assert_eq!(report.findings, [Finding::warning(field, message)]);
        assert_eq!(
            report.to_string(),
            format!("Rollout web: warning: {field}: {message}")
        );
        // The controller's checks after the analyses still run.
        let yaml = without_template().replacen(
            "        nginx: {stableIngress: web}\n",
            "        nginx: {stableIngress: web}\n        maxTrafficWeight: 40\n",
            1,
        );
        let report = rollout_report(&yaml);
        assert_eq!(
            report.findings,
            [
                Finding::warning(field, message),
                Finding::error(
                    "spec.strategy.canary.steps[3].setWeight",
                    "50 is above trafficRouting.maxTrafficWeight 40"
                )
            ]
        );
    }

    #[test]
    fn a_template_in_another_namespace_is_not_the_one_used() {
        let yaml = edit(
            "metadata: {name: error-rate, namespace: shop}",
            "metadata: {name: error-rate, namespace: other}",
        );
        let report = rollout_report(&yaml);
        assert_eq!(report.findings.len(), 1, "{report}");
        assert_eq!(report.findings[0].severity, Severity::Warning);
    }

    #[test]
    fn an_invalid_template_is_reported_and_not_used() {
        let yaml = edit("    count: 10\n", "    count: ten\n");
        let reports = lint(&yaml).unwrap();
        let template = reports
            .iter()
            .find(|r| r.kind == "AnalysisTemplate")
            .unwrap();
        assert_eq!(
            template.findings[0].field, "spec.metrics[0].count",
            "{template}"
        );
        let report = rollout_report(&yaml);
        assert_eq!(report.findings.len(), 1, "{report}");
        assert!(
            report.findings[0]
                .message
                .contains("invalid in this file (document 4)"),
            "{report}"
        );
    }

    #[test]
    fn a_router_object_not_in_the_file_is_a_warning_only() {
        let cut = VALID.find("---\napiVersion: networking.k8s.io/v1").unwrap();
        let end = VALID
            .find("---\napiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate")
            .unwrap();
        let yaml = format!("{}{}", &VALID[..cut], &VALID[end..]);
        let report = rollout_report(&yaml);
        assert_eq!(
            report.findings,
            [Finding::warning(
                "spec.strategy.canary.trafficRouting.nginx.stableIngress",
                "not checked: Ingress web is not in this file"
            )]
        );
        // An Ingress that does not send traffic to the stable Service is the reconcile's error.
        let yaml = edit(
            "backend: {service: {name: web-stable",
            "backend: {service: {name: api",
        );
        let report = rollout_report(&yaml);
        assert_eq!(
            report.findings,
            [Finding::error(
                "spec.strategy.canary.trafficRouting.nginx.stableIngress",
                "Ingress web does not send traffic to Service web-stable"
            )]
        );
    }

    #[test]
    fn a_file_without_a_rollout_fails() {
        let reports = lint("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n").unwrap();
        assert!(has_errors(&reports));
        assert_eq!(
            reports[0].to_string(),
            "file: no Rollout (sluice.dev/v1alpha1) in this file: nothing was checked"
        );
        assert!(has_errors(&lint("").unwrap()));
        // An Argo Rollout is not ours: a warning on it, and still no Rollout.
        let reports =
            lint("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web}\n")
                .unwrap();
        assert_eq!(reports[0].findings[0].severity, Severity::Warning);
        assert!(has_errors(&reports));
    }

    #[test]
    fn unreadable_yaml_is_an_error_and_a_document_without_kind_a_finding() {
        let broken = format!("{VALID}---\nkind: [unclosed\n");
        assert!(matches!(
            lint(&broken),
            Err(LintError::Yaml { document: 5, .. })
        ));
        let reports = lint(&format!("{VALID}---\n- a list\n---\nname: no kind\n")).unwrap();
        let bad: Vec<String> = reports
            .iter()
            .filter(|r| r.has_errors())
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            bad,
            [
                "document 5: not a Kubernetes object: the document is not a mapping",
                "document 6: kind: not a Kubernetes object: it has no kind"
            ]
        );
    }

    #[test]
    fn reports_serialize_for_the_cli() {
        let report = rollout_report(&edit("- setWeight: 50", "- setWeight: 150"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "document": 0,
                "kind": "Rollout",
                "name": "web",
                "findings": [{
                    "severity": "error",
                    "field": "spec.strategy.canary.steps[3].setWeight",
                    "message": "150 is above 100",
                }],
            })
        );
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
        assert!(
            serde_norway::to_string(&report)
                .unwrap()
                .contains("severity: error")
        );
    }

    #[test]
    fn the_cel_rules_are_skipped_after_a_blocking_error() {
        // `replicas: many` is a type error: the apiserver then leaves the CEL rules unevaluated.
        let yaml = edit("  replicas: 5\n", "  replicas: many\n  strategy2: {}\n").replacen(
            "  strategy:\n",
            "  strategy:\n    rollingUpdate: {}\n",
            1,
        );
        let report = rollout_report(&yaml);
        let fields: Vec<(&str, Severity)> = report
            .findings
            .iter()
            .map(|f| (f.field.as_str(), f.severity))
            .collect();
        assert_eq!(
            fields,
            [
                ("spec.strategy2", Severity::Error),
                ("spec.replicas", Severity::Error),
                ("", Severity::Warning)
            ],
            "{report}"
        );
    }

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
                    } else if let Some(s) =
                        schema.get("additionalProperties").filter(|c| c.is_object())
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
        let head = "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}}\n  strategy:\n";
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
                format!(
                    "apiVersion: sluice.dev/v1alpha1\nkind: ClusterAnalysisTemplate\n{template}"
                ),
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
}
