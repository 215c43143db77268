//! What only the controller checks: `plan::validate` on an [`Observed`] built from what the file
//! shows of the cluster, and the router's objects as a reconcile checks them. What the file does
//! not show is a warning ("not checked"), never a guess.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use serde_json::Value as Json;

use super::Finding;
use super::documents::Document;
use crate::crd::Rollout;
use crate::crd::analysis::AnalysisTemplateSpec;
use crate::plan::router::{ObservedRouter, RouterObject, router_field};
use crate::plan::runs::{TemplateKey, analyses, referenced_templates};
use crate::plan::services::referenced_services;
use crate::plan::{self, InvalidSpec, Observed};

/// An object of the file that a rollout may refer to by name.
pub(super) struct Found<T> {
    name: String,
    namespace: Option<String>,
    index: usize,
    object: T,
}

impl<T> Found<T> {
    pub(super) fn of(doc: &Document, object: T) -> Self {
        Self {
            name: doc.name.clone(),
            namespace: doc.namespace.clone(),
            index: doc.index,
            object,
        }
    }
}

/// What the file shows of the cluster a rollout would see.
#[derive(Default)]
pub(super) struct FileObjects {
    /// Selectors.
    services: Vec<Found<BTreeMap<String, String>>>,
    /// `None`: in the file, but not a valid Ingress.
    ingresses: Vec<Found<Option<Ingress>>>,
    routes: Vec<Found<Json>>,
    /// Cluster scope, and the spec (`None`: in the file, but invalid).
    pub(super) templates: Vec<Found<(bool, Option<AnalysisTemplateSpec>)>>,
}

impl FileObjects {
    /// Keeps `value` if it is a Service, an Ingress or an HTTPRoute; a finding if it is an
    /// Ingress that cannot be read.
    pub(super) fn add(&mut self, doc: &Document, value: &Json) -> Option<Finding> {
        let group = doc.api_version.split('/').next().unwrap_or_default();
        match (doc.api_version.as_str(), doc.kind.as_str()) {
            ("v1", "Service") => self
                .services
                .push(Found::of(doc, string_map(&value["spec"]["selector"]))),
            ("networking.k8s.io/v1", "Ingress") => {
                let ingress = serde_json::from_value::<Ingress>(value.clone());
                let finding = ingress
                    .as_ref()
                    .err()
                    .map(|e| Finding::error("", format!("not a valid Ingress: {e}")));
                self.ingresses.push(Found::of(doc, ingress.ok()));
                return finding;
            }
            (_, "HTTPRoute") if group == "gateway.networking.k8s.io" => {
                self.routes.push(Found::of(doc, value.clone()));
            }
            _ => {}
        }
        None
    }
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

/// `plan::validate` with what the file shows of the cluster.
pub(super) fn controller_findings(rollout: &Rollout, file: &FileObjects) -> Vec<Finding> {
    let mut findings = Vec::new();
    let namespace = rollout.metadata.namespace.as_deref();
    let mut observed = Observed::default();
    for name in referenced_services(rollout) {
        let selector = find(&file.services, &name, namespace, |_| true)
            .map(|s| s.object.clone())
            .unwrap_or_default();
        observed.services.insert(name, selector);
    }
    let unchecked = observe_templates(rollout, file, &mut observed, &mut findings);
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
    observe_router(&checked_rollout, file, &mut observed, &mut findings);

    // Every problem, in the order the controller meets them: its condition names the first.
    let invalid = plan::validate::findings(&checked_rollout.spec, &observed);
    findings.extend(invalid.into_iter().map(invalid_spec));
    findings
}

/// An InvalidSpec as a finding. Some messages start with their field (a router's reason); a
/// line names it once.
fn invalid_spec(invalid: InvalidSpec) -> Finding {
    let message = invalid
        .message
        .strip_prefix(&format!("{}: ", invalid.field))
        .map_or(invalid.message.clone(), str::to_owned);
    Finding::invalid_spec(invalid.field, message)
}

/// Puts the analysis templates the rollout uses that the file holds, valid, into `observed`; a
/// warning for each one it does not. Returns the fields of the analysis blocks that name such a
/// template, which cannot be checked.
fn observe_templates(
    rollout: &Rollout,
    file: &FileObjects,
    observed: &mut Observed,
    findings: &mut Vec<Finding>,
) -> Vec<String> {
    let namespace = rollout.metadata.namespace.as_deref();
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
    unchecked
}

/// Puts the router's object in the file (the stable Ingress, the HTTPRoute) into `observed`, as
/// a reconcile reads it from the cluster, for `plan::validate` to judge; a warning when the file
/// does not hold it, valid, and then it is not judged.
fn observe_router(
    rollout: &Rollout,
    file: &FileObjects,
    observed: &mut Observed,
    findings: &mut Vec<Finding>,
) {
    let namespace = rollout.metadata.namespace.as_deref();
    let Some(routed) = rollout.spec.strategy.routed() else {
        return;
    };
    let Some(field) = router_field(&routed) else {
        return;
    };
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
        Some(Ok(object)) => {
            observed.router = Some(ObservedRouter {
                rollout: rollout.name_any(),
                namespace: rollout.namespace().unwrap_or_default(),
                object: Some(object),
            });
        }
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

#[cfg(test)]
mod tests;
