//! Reading what a reconcile plans from: the reflector stores, and what is read on demand (the
//! router's object, the stable pods while a restart is due).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use traffic::TrafficError;

use super::{Context, ReconcileError, kube_err};
use crate::crd::{POD_TEMPLATE_HASH_LABEL, PodMetadata, Rollout};
use crate::decision::revision_number;
use crate::plan::restart::ObservedPod;
use crate::plan::router::{ObservedRouter, RouterObject};
use crate::plan::runs::{ObservedRun, TemplateKey, referenced_templates};
use crate::plan::services::referenced_services;
use crate::plan::{Observed, ObservedReplicaSet};

/// What the stores say about `rollout`: its ReplicaSets (by controller owner reference) and the
/// Services its spec names.
pub(super) fn from_stores(rollout: &Rollout, namespace: &str, ctx: &Context) -> Observed {
    let replica_sets = ctx
        .replica_sets
        .owned(rollout)
        .iter()
        .filter_map(|rs| {
            let hash = rs.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone();
            let status = rs.status.as_ref();
            Some(ObservedReplicaSet {
                name: rs.name_any(),
                hash,
                revision: revision_number(rs)
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                replicas: rs.spec.replicas.unwrap_or(1),
                ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
                available: status.and_then(|s| s.available_replicas).unwrap_or(0),
                pod_metadata: {
                    let meta = rs.spec.template.as_ref().and_then(|t| t.metadata.as_ref());
                    PodMetadata {
                        labels: meta.and_then(|m| m.labels.clone()).unwrap_or_default(),
                        annotations: meta.and_then(|m| m.annotations.clone()).unwrap_or_default(),
                    }
                },
            })
        })
        .collect();
    let mut services = BTreeMap::new();
    for name in referenced_services(rollout) {
        let key = ObjectRef::<Service>::new(&name).within(namespace);
        if let Some(service) = ctx.services.get(&key) {
            let selector = service
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            services.insert(name, selector);
        }
    }
    let analysis_runs = ctx
        .analysis_runs
        .owned(rollout)
        .iter()
        .map(|run| {
            let status = run.status.clone().unwrap_or_default();
            let observed = ObservedRun {
                phase: status.phase,
                message: status.message,
                terminating: run.spec.terminate == Some(true),
                created_at: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
                completed_at: status
                    .completed_at
                    .and_then(|t| Timestamp::try_from(t.0).ok()),
            };
            (run.name_any(), observed)
        })
        .collect();
    let templates = referenced_templates(&rollout.spec)
        .into_iter()
        .filter_map(|key| {
            let spec = if key.cluster_scope {
                ctx.cluster_templates
                    .get(&ObjectRef::new(&key.name))
                    .map(|t| t.spec.template.clone())
            } else {
                ctx.templates
                    .get(&ObjectRef::new(&key.name).within(namespace))
                    .map(|t| t.spec.clone())
            };
            spec.map(|spec| (key, spec))
        })
        .collect::<BTreeMap<TemplateKey, _>>();
    Observed {
        replica_sets,
        services,
        analysis_runs,
        templates,
        router: None,
        undecodable: crate::undecodable::observe(rollout, namespace, &ctx.undecodable),
        pods: None,
    }
}

/// The stable ReplicaSet's pods, for a restart: listed by its pod-template hash, each owned by
/// that ReplicaSet. Only while a restart is due, so that pods are never watched or cached.
pub(super) async fn stable_pods(
    rollout: &Rollout,
    namespace: &str,
    ctx: &Context,
) -> Result<Vec<ObservedPod>, ReconcileError> {
    let Some(hash) = rollout
        .status
        .as_ref()
        .and_then(|s| s.stable_revision.clone())
    else {
        return Ok(Vec::new());
    };
    let owner = format!("{}-{hash}", rollout.name_any());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(&format!("{POD_TEMPLATE_HASH_LABEL}={hash}")))
        .await
        .map_err(kube_err(format!("listing pods of ReplicaSet {owner}")))?;
    Ok(list
        .items
        .into_iter()
        .filter(|pod| {
            pod.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.kind == "ReplicaSet" && o.name == owner)
        })
        .map(|pod| {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ObservedPod {
                name: pod.name_any(),
                uid: pod.uid().unwrap_or_default(),
                hash: hash.clone(),
                created_at: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
                ready,
                terminating: pod.metadata.deletion_timestamp.is_some(),
            }
        })
        .collect())
}

/// Reads the router's object the rollout names (Ingresses and HTTPRoutes are read on demand,
/// not watched: the HTTPRoute CRD may not be installed at all). `None`: it names none. Only a
/// failing API is an error here; what the object means is the planner's to judge.
pub(super) async fn read_router(
    rollout: &Rollout,
    namespace: &str,
    ctx: &Context,
) -> Result<Option<ObservedRouter>, ReconcileError> {
    let Some(routed) = rollout.spec.strategy.routed() else {
        return Ok(None);
    };
    let failed = |kind: &'static str, name: &str| {
        let name = name.to_owned();
        move |source| {
            ReconcileError::Traffic(TrafficError::Api {
                kind,
                namespace: namespace.to_owned(),
                name,
                source: Box::new(source),
            })
        }
    };
    let object = if let Some(nginx) = &routed.routing.nginx {
        let name = &nginx.stable_ingress;
        let ingresses: Api<Ingress> = Api::namespaced(ctx.client.clone(), namespace);
        ingresses
            .get_opt(name)
            .await
            .map_err(failed("Ingress", name))?
            .map(|stable| RouterObject::Ingress(Box::new(stable)))
    } else if let Some(gateway) = &routed.routing.gateway_api {
        let name = &gateway.http_route;
        let routes: Api<DynamicObject> = Api::namespaced_with(
            ctx.client.clone(),
            namespace,
            &traffic::gateway::http_route_resource(),
        );
        routes
            .get_opt(name)
            .await
            .map_err(failed("HTTPRoute", name))?
            .map(|route| RouterObject::HttpRoute(serde_json::to_value(&route).unwrap_or_default()))
    } else {
        return Ok(None);
    };
    Ok(Some(ObservedRouter {
        rollout: rollout.name_any(),
        namespace: namespace.to_owned(),
        object,
    }))
}
