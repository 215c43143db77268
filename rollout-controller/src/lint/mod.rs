//! An offline linter for Rollout manifests (`kubectl sluice lint -f FILE`): the rules the
//! apiserver and the controller apply, taken from the controller's own code, run on a file.
//!
//! The file is read as kubectl reads and sends it: an integer beyond 64 bits becomes a float
//! (which no integer field takes), a float with no fraction an integer. For every
//! `sluice.dev/v1alpha1` Rollout of a (multi-document) YAML file:
//!
//! 1. **What the apiserver would reject** (findings of [`Level::Admission`]): the object's
//!    `metadata` as the apiserver checks it on create (the `metadata` module: DNS-1123 names,
//!    namespace, label and annotation keys, values and size, finalizers, owner references,
//!    fields ObjectMeta lacks), and the generated CRD's `openAPIV3Schema`: unknown fields
//!    (kubectl's default strict field validation rejects them), types, `required`, `enum`,
//!    `minimum`/`maximum`, the `int32`/`int64` and `date-time` formats, `minLength`/`maxLength`,
//!    `pattern`, `minItems`/`maxItems`, `x-kubernetes-int-or-string` (a pattern checks its
//!    string form, minimum and maximum its integer form), `x-kubernetes-embedded-resource` and
//!    `x-kubernetes-preserve-unknown-fields` (whose schema-less parts are not looked into), and
//!    the `x-kubernetes-validations` CEL rules. As in the apiserver, unknown fields and `null`s in
//!    non-nullable fields are pruned and schema defaults applied first, a status (of a kind with
//!    a status subresource) is dropped once its unknown fields are found, and the CEL rules are
//!    not evaluated when a type, `required`, `enum`, `maxLength` or `maxItems` error was found.
//!    The rules are evaluated by kube's client-side CRD validator (`kube::core::cel`), with
//!    `self` bound to the value at each node, no `oldSelf`, and a null field absent, as the
//!    apiserver's CEL sees it; a rule it lacks a function for (`type()`) by the `cel` crate
//!    itself (the `cel_rules` module). A rule that fails to run on the object refuses it, as in
//!    the apiserver; one that cannot be compiled or evaluated here is an error finding of its
//!    own, never a silent pass.
//! 2. **Decoding** into [`Rollout`] of the object as the apiserver would store it: what does not
//!    fit is a finding at its field, of [`Level::Controller`] (the controller's decoder marks
//!    such a rollout Degraded).
//! 3. **What the controller checks** ([`plan::validate`]; [`Level::Controller`]), with an
//!    [`Observed`] built from the file. Offline the cluster is unknown, so every Service the
//!    rollout names counts as present; AnalysisTemplates, ClusterAnalysisTemplates, the stable
//!    Ingress and the HTTPRoute are taken from the file, and one that is not in it is a warning
//!    ("not checked"), not an error. An analysis block that names such a template is not checked
//!    at all: its arguments and metrics depend on the template. The router's objects get the
//!    checks a reconcile makes (`reconcile::router_problem`). Like the controller, this part
//!    stops at the first problem it finds.
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

mod cel_rules;
mod metadata;

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

/// Who refuses what a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    /// The apiserver, at admission: the CRD's schema and CEL rules, the object's metadata.
    /// The object is never stored.
    Admission,
    /// The controller: the object is stored, and the rollout is marked InvalidSpec (Degraded)
    /// and changes nothing. Warnings are of this level: what the controller would see in the
    /// cluster that the file does not show.
    Controller,
}

/// One problem, at one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub severity: Severity,
    pub level: Level,
    /// The field, named as the apiserver names it (`spec.strategy.canary.steps[0].setWeight`);
    /// empty for the document as a whole.
    pub field: String,
    pub message: String,
}

impl Finding {
    /// What the apiserver refuses.
    fn error(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            level: Level::Admission,
            field: field.into(),
            message: message.into(),
        }
    }

    /// What the controller marks InvalidSpec.
    fn invalid_spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            level: Level::Controller,
            ..Self::error(field, message)
        }
    }

    fn warning(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            level: Level::Controller,
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
        f.write_str(&self.message)?;
        if self.severity == Severity::Error && self.level == Level::Controller {
            f.write_str(" (the controller would mark the rollout InvalidSpec)")?;
        }
        Ok(())
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
    // Fails early, before any document, if the built-in CRDs cannot be used.
    schemas()?;
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
                    lint_object::<ClusterAnalysisTemplate>(doc, value).map_spec(|t| t.spec.template)
                } else {
                    lint_object::<AnalysisTemplate>(doc, value).map_spec(|t| t.spec)
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
        let linted = lint_object::<Rollout>(doc, value);
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
        let KubectlYaml(mut value) = KubectlYaml::deserialize(document).map_err(yaml_error)?;
        value.apply_merge().map_err(yaml_error)?;
        if value.is_null() {
            continue;
        }
        let json = serde_json::to_value(&value)
            .map_err(|e| Finding::error("", format!("cannot be read as JSON: {e}")))
            .map(|mut json| {
                normalize_numbers(&mut json);
                json
            })
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

/// The object as the controller reads it from the apiserver (pruned and defaulted), decoded
/// into `T`; where it does not fit, a finding at the field, as the controller's own decoder
/// reports it.
fn decode<T: DeserializeOwned>(kind: &str, stored: &Json) -> Result<T, Finding> {
    serde_path_to_error::deserialize::<_, T>(stored).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        Finding::invalid_spec(field, format!("cannot be read as a {kind}: {}", e.inner()))
    })
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

fn lint_object<T: DeserializeOwned>(doc: &Document, value: &Json) -> Linted<T> {
    let schema = schemas().ok().and_then(|schemas| schemas.get(&doc.kind));
    let (Some(schema), Some(traits)) = (schema, kinds().get(&doc.kind)) else {
        return Linted {
            findings: vec![Finding::error(
                "",
                format!("internal lint error: no CRD for kind {}", doc.kind),
            )],
            object: None,
        };
    };
    let mut findings = metadata::check(value.get("metadata"), traits.namespaced);
    let checked = check_object_schema(schema, value, traits.status_subresource);
    let rejected = checked.rejected || findings.iter().any(|f| f.severity == Severity::Error);
    findings.extend(checked.findings);
    // A rejected object never reaches the controller, and reading it would mostly repeat the
    // schema's findings.
    if rejected {
        return Linted {
            findings,
            object: None,
        };
    }
    match decode::<T>(&doc.kind, &checked.stored) {
        Ok(object) => Linted {
            findings,
            object: Some(object),
        },
        Err(finding) => {
            findings.push(finding);
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
            findings.push(Finding::invalid_spec(
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
                Err(e) => findings.push(Finding::invalid_spec(
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
        findings.push(Finding::invalid_spec(invalid.field, message));
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
    /// The object as the apiserver would store it: pruned and defaulted.
    stored: Json,
}

/// What the apiserver does with an object of a kind besides its schema.
struct KindTraits {
    namespaced: bool,
    status_subresource: bool,
}

/// Scope and subresources of Sluice's CRDs, by kind.
fn kinds() -> &'static BTreeMap<String, KindTraits> {
    static KINDS: LazyLock<BTreeMap<String, KindTraits>> = LazyLock::new(|| {
        crate::crds()
            .into_iter()
            .map(|(_, crd)| {
                let status_subresource = crd
                    .spec
                    .versions
                    .iter()
                    .any(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some()));
                let traits = KindTraits {
                    namespaced: crd.spec.scope == "Namespaced",
                    status_subresource,
                };
                (crd.spec.names.kind, traits)
            })
            .collect()
    });
    &KINDS
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
fn check_object_schema(schema: &Json, object: &Json, drop_status: bool) -> SchemaCheck {
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
fn is_date_time(text: &str) -> bool {
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

/// Numbers as the apiserver holds them after kubectl's round trip through Go: an integer beyond
/// 64 bits signed becomes a float, and a float with no fraction that fits one an integer.
fn normalize_numbers(value: &mut Json) {
    match value {
        Json::Number(n) => {
            if let Some(u) = n.as_u64()
                && i64::try_from(u).is_err()
            {
                if let Some(f) = serde_json::Number::from_f64(u as f64) {
                    *n = f;
                }
            } else if n.is_f64()
                && let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && (-(2f64.powi(63))..2f64.powi(63)).contains(&f)
            {
                *n = serde_json::Number::from(f as i64);
            }
        }
        Json::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Json::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

/// A YAML value read as kubectl reads one (go-yaml): an integer too large for 64 bits becomes a
/// float, where serde's own value types refuse it and the whole file would be unreadable.
struct KubectlYaml(serde_norway::Value);

impl<'de> Deserialize<'de> for KubectlYaml {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KubectlYamlVisitor)
    }
}

struct KubectlYamlVisitor;

impl<'de> serde::de::Visitor<'de> for KubectlYamlVisitor {
    type Value = KubectlYaml;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Bool(b)))
    }

    fn visit_i64<E>(self, i: i64) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number(i.into())))
    }

    fn visit_u64<E>(self, u: u64) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number(u.into())))
    }

    fn visit_i128<E>(self, i: i128) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number((i as f64).into())))
    }

    fn visit_u128<E>(self, u: u128) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number((u as f64).into())))
    }

    fn visit_f64<E>(self, f: f64) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Number(f.into())))
    }

    fn visit_str<E>(self, s: &str) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::String(s.to_owned())))
    }

    fn visit_string<E>(self, s: String) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::String(s)))
    }

    fn visit_unit<E>(self) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Null))
    }

    fn visit_none<E>(self) -> Result<KubectlYaml, E> {
        Ok(KubectlYaml(serde_norway::Value::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<KubectlYaml, D::Error> {
        KubectlYaml::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<KubectlYaml, A::Error> {
        let mut items = Vec::new();
        while let Some(KubectlYaml(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(KubectlYaml(serde_norway::Value::Sequence(items)))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KubectlYaml, A::Error> {
        let mut mapping = serde_norway::Mapping::new();
        while let Some((KubectlYaml(key), KubectlYaml(value))) = map.next_entry()? {
            if mapping.contains_key(&key) {
                let shown = serde_norway::to_string(&key).unwrap_or_default();
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {}",
                    shown.trim_end()
                )));
            }
            mapping.insert(key, value);
        }
        Ok(KubectlYaml(serde_norway::Value::Mapping(mapping)))
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<KubectlYaml, A::Error> {
        use serde::de::VariantAccess;
        let (tag, contents) = data.variant::<String>()?;
        let KubectlYaml(value) = contents.newtype_variant()?;
        Ok(KubectlYaml(serde_norway::Value::Tagged(Box::new(
            serde_norway::value::TaggedValue {
                tag: serde_norway::value::Tag::new(tag),
                value,
            },
        ))))
    }
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
        assert_eq!(
            report.findings,
            [Finding::error(
                "metadata.namespace",
                "must be of type string, not array"
            )]
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
                Finding::invalid_spec(
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
            [Finding::invalid_spec(
                "spec.strategy.canary.trafficRouting.nginx.stableIngress",
                "Ingress web does not send traffic to Service web-stable"
            )]
        );
    }

    fn errors(report: &Report) -> Vec<(&str, Level)> {
        report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| (f.field.as_str(), f.level))
            .collect()
    }

    #[test]
    fn object_metadata_is_checked_as_the_apiserver_checks_it() {
        // Names the apiserver refuses and lint once passed: too long, not ASCII, empty.
        for name in [
            "a".repeat(254),
            "wéb".to_owned(),
            "''".to_owned(),
            "Web".to_owned(),
        ] {
            let yaml = edit(
                "metadata: {name: web, namespace: shop}",
                &format!("metadata: {{name: {name}, namespace: shop}}"),
            );
            let report = rollout_report(&yaml);
            // Past 63 characters the CRD's own rule on the whole object refuses it too.
            let mut expected = vec![("metadata.name", Level::Admission)];
            if name.len() > crate::crd::MAX_ROLLOUT_NAME {
                expected.push(("", Level::Admission));
            }
            assert_eq!(errors(&report), expected, "{name}: {report}");
        }
        assert!(
            rollout_report(&edit(
                "{name: web, namespace: shop}",
                "{name: web, namespace: Shop}"
            ))
            .to_string()
            .contains("metadata.namespace: \"Shop\": a lowercase RFC 1123 label")
        );
        let labelled = edit(
            "metadata: {name: web, namespace: shop}",
            "metadata: {name: web, namespace: shop, labels: {'not a key': x}}",
        );
        assert_eq!(
            errors(&rollout_report(&labelled)),
            [("metadata.labels[not a key]", Level::Admission)]
        );
        // An AnalysisTemplate with an empty name is refused, and not used.
        let yaml = edit(
            "metadata: {name: error-rate, namespace: shop}",
            "metadata: {name: '', namespace: shop}",
        );
        let reports = lint(&yaml).unwrap();
        let template = reports
            .iter()
            .find(|r| r.kind == "AnalysisTemplate")
            .unwrap();
        assert_eq!(
            errors(template),
            [("metadata.name", Level::Admission)],
            "{template}"
        );
        let unknown = edit(
            "metadata: {name: web, namespace: shop}",
            "metadata: {name: web, namespace: shop, nmae: web}",
        );
        assert_eq!(
            errors(&rollout_report(&unknown)),
            [("metadata.nmae", Level::Admission)]
        );
    }

    #[test]
    fn a_step_of_pause_null_is_refused_as_the_apiserver_refuses_it() {
        // A null field is absent to the apiserver's CEL: the step sets nothing.
        let report = rollout_report(&edit("      - pause: {}\n", "      - pause: null\n"));
        assert_eq!(
            errors(&report),
            [("spec.strategy.canary.steps[4]", Level::Admission)],
            "{report}"
        );
    }

    #[test]
    fn a_null_a_rule_reads_is_refused_not_defaulted() {
        // The apiserver keeps a nullable null and does not default it; the rule reading it
        // then finds no such key.
        let yaml = edit(
            "      stableService: web-stable\n",
            "      stableService: web-stable\n      maxSurge: null\n",
        );
        let report = rollout_report(&yaml);
        assert_eq!(
            errors(&report),
            [("spec.strategy.canary", Level::Admission)],
            "{report}"
        );
        assert!(
            report.findings[0]
                .message
                .ends_with("evaluating rule: maxSurge and maxUnavailable must not both be 0"),
            "{report}"
        );
    }

    #[test]
    fn an_integer_beyond_64_bits_is_a_finding_at_its_field_not_an_unreadable_file() {
        for huge in [
            "18446744073709551616",
            "9223372036854775808",
            "-99999999999999999999999",
        ] {
            let yaml = edit("  replicas: 5\n", &format!("  replicas: {huge}\n"));
            let report = rollout_report(&yaml);
            assert_eq!(
                errors(&report),
                [("spec.replicas", Level::Admission)],
                "{huge}: {report}"
            );
        }
        // Beyond the field's int32, as the apiserver checks the format.
        let report = rollout_report(&edit("  replicas: 5\n", "  replicas: 4294967296\n"));
        assert!(
            errors(&report).contains(&("spec.replicas", Level::Admission)),
            "{report}"
        );
        // kubectl sends 5.0 and 1e1 as the integers 5 and 10.
        for integral in ["5.0", "1e1"] {
            let yaml = edit("  replicas: 5\n", &format!("  replicas: {integral}\n"));
            assert!(errors(&rollout_report(&yaml)).is_empty(), "{integral}");
        }
    }

    #[test]
    fn a_pause_in_integer_seconds_is_accepted_as_argo_rollouts_writes_it() {
        for ok in ["10", "'10'", "0", "10s", "1h30m"] {
            let yaml = edit("duration: 2m", &format!("duration: {ok}"));
            assert!(errors(&rollout_report(&yaml)).is_empty(), "{ok}");
        }
        for bad in ["-5", "2147483648", "five", "'1.5h'", "1.5", "'10 s'"] {
            let yaml = edit("duration: 2m", &format!("duration: {bad}"));
            assert_eq!(
                errors(&rollout_report(&yaml)),
                [(
                    "spec.strategy.canary.steps[1].pause.duration",
                    Level::Admission
                )],
                "{bad}"
            );
        }
    }

    #[test]
    fn a_status_in_the_file_is_dropped_but_an_unknown_field_in_it_is_refused() {
        let with_status = |status: &str| {
            edit(
                "metadata: {name: web, namespace: shop}\n",
                &format!("metadata: {{name: web, namespace: shop}}\nstatus: {status}\n"),
            )
        };
        let report = rollout_report(&with_status("{phase: Bogus, replicas: many}"));
        assert!(report.findings.is_empty(), "{report}");
        let report = rollout_report(&with_status("{bogus: 1}"));
        assert_eq!(errors(&report), [("status.bogus", Level::Admission)]);
    }

    #[test]
    fn a_date_time_is_checked_as_the_apiserver_checks_its_format() {
        for ok in ["'2026-12-01T07:00:00Z'", "2026-12-01t07:00:00.5+01:00"] {
            let yaml = edit(
                "  replicas: 5\n",
                &format!("  replicas: 5\n  restartAt: {ok}\n"),
            );
            assert!(errors(&rollout_report(&yaml)).is_empty(), "{ok}");
        }
        for bad in [
            "'2026-12-01T07:00:00'",
            "yesterday",
            "'2026-02-30T07:00:00Z'",
            "5",
        ] {
            let yaml = edit(
                "  replicas: 5\n",
                &format!("  replicas: 5\n  restartAt: {bad}\n"),
            );
            assert_eq!(
                errors(&rollout_report(&yaml)),
                [("spec.restartAt", Level::Admission)],
                "{bad}"
            );
        }
    }

    #[test]
    fn findings_say_whether_the_apiserver_or_the_controller_refuses() {
        let yaml = without_template().replacen(
            "        nginx: {stableIngress: web}\n",
            "        nginx: {stableIngress: web}\n        maxTrafficWeight: 40\n",
            1,
        );
        let report = rollout_report(&yaml);
        assert_eq!(
            errors(&report),
            [("spec.strategy.canary.steps[3].setWeight", Level::Controller)]
        );
        assert!(
            report
                .to_string()
                .ends_with("(the controller would mark the rollout InvalidSpec)"),
            "{report}"
        );
        let report = rollout_report(&edit("- setWeight: 50", "- setWeight: 150"));
        assert_eq!(
            errors(&report),
            [("spec.strategy.canary.steps[3].setWeight", Level::Admission)]
        );
        // What the schema lets through but the controller cannot read is the controller's.
        let finding = decode::<Rollout>(
            "Rollout",
            &serde_json::json!({"metadata": {"name": "web"}, "spec": {"replicas": "five"}}),
        )
        .unwrap_err();
        assert_eq!(
            (finding.field.as_str(), finding.level),
            ("spec.replicas", Level::Controller)
        );
        assert!(
            finding.message.starts_with("cannot be read as a Rollout: "),
            "{finding}"
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
                    "level": "admission",
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
