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
//!    fields ObjectMeta lacks), and the generated CRD's `openAPIV3Schema` (the `schema` module,
//!    which knows nothing of Sluice): unknown fields (kubectl's default strict field validation
//!    rejects them), types, `required`, `enum`,
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
//! 3. **What the controller checks** (the `controller` module:
//!    [`plan::validate::findings`](crate::plan::validate::findings); [`Level::Controller`]), with an
//!    [`Observed`](crate::plan::Observed) built from the file. Offline the cluster is unknown, so
//!    every Service the rollout names counts as present; AnalysisTemplates,
//!    ClusterAnalysisTemplates, the stable Ingress and the HTTPRoute are taken from the file, and
//!    one that is not in it is a warning ("not checked"), not an error. An analysis block that
//!    names such a template is not checked at all: its arguments and metrics depend on the
//!    template. The router's object from the file goes into `Observed::router`, as a reconcile
//!    reads it, and gets the same checks ([`plan::router::problem`](crate::plan::router::problem)).
//!    Every problem is reported, in the order the controller meets them; the controller's
//!    condition names the first.
//!
//! Steps 2 and 3 are skipped for an object the apiserver would reject: the controller never
//! sees it.
//!
//! AnalysisTemplates and ClusterAnalysisTemplates in the file are checked against their CRDs and
//! deserialized as well, since a rollout uses them. Other documents are ignored, but a file
//! without any Rollout is an error.
//!
//! The `documents` module reads the file into documents; this one routes each to its checks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::crd::Rollout;
use crate::crd::analysis::{AnalysisTemplate, ClusterAnalysisTemplate};

use controller::{FileObjects, Found, controller_findings};
use documents::{Document, read_documents};
use schema::check_object_schema;

mod cel_rules;
mod controller;
mod documents;
mod metadata;
mod schema;
#[cfg(test)]
mod tests;

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
    fn of(doc: &Document, findings: Vec<Finding>) -> Self {
        Self {
            document: Some(doc.index),
            kind: doc.kind.clone(),
            name: doc.name.clone(),
            findings,
        }
    }

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
        let report = |findings| Report::of(doc, findings);
        let value = match &doc.value {
            Ok(value) => value,
            Err(finding) => {
                reports.insert(doc.index, report(vec![finding.clone()]));
                continue;
            }
        };
        match (doc.api_version.as_str(), doc.kind.as_str()) {
            (API_VERSION, "Rollout") => rollouts.push((doc, value)),
            (API_VERSION, kind @ ("AnalysisTemplate" | "ClusterAnalysisTemplate")) => {
                let cluster_scope = kind == "ClusterAnalysisTemplate";
                let (findings, spec) = if cluster_scope {
                    lint_object::<ClusterAnalysisTemplate>(doc, value).map_spec(|t| t.spec.template)
                } else {
                    lint_object::<AnalysisTemplate>(doc, value).map_spec(|t| t.spec)
                };
                file.templates.push(Found::of(doc, (cluster_scope, spec)));
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
            _ => {
                if let Some(finding) = file.add(doc, value) {
                    reports.insert(doc.index, report(vec![finding]));
                }
            }
        }
    }
    for (doc, value) in &rollouts {
        let linted = lint_object::<Rollout>(doc, value);
        let mut findings = linted.findings;
        if let Some(rollout) = linted.object {
            findings.extend(controller_findings(&rollout, &file));
        }
        reports.insert(doc.index, Report::of(doc, findings));
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
