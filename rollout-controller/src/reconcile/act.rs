//! Carrying a plan out: one small adapter per [`Write`], each idempotent, under one field
//! manager.

use std::collections::HashMap;
use std::time::Instant;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType as KubeEventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};
use traffic::{Applied, ServiceSelectorRouter, TrafficRouter};

use super::objects::{new_analysis_run, new_replica_set};
use super::{Context, FIELD_MANAGER, ReconcileError, kube_err, replica_set_err, wrote};
use crate::crd::analysis::AnalysisRun;
use crate::crd::{POD_TEMPLATE_HASH_LABEL, RETIRED_LABEL, REVISION_ANNOTATION, Rollout};
use crate::history;
use crate::metrics::reason;
use crate::plan::refused;
use crate::plan::restart::PodRestart;
use crate::plan::runs::NewAnalysisRun;
use crate::plan::status_write::{self, CountsHold};
use crate::plan::writes::{Write, transition_event};
use crate::plan::{
    EventType, Plan, PlannedEvent, PodMetadataChange, ReplicaSetTarget, TrafficPlan,
};

/// Carries out `plan`, one write at a time in the order [`Plan::writes`] decides. A status whose
/// counts alone changed is held back until it is due ([`CountsHold`]); then the time it is due
/// is returned, for the requeue.
pub(super) async fn act(
    rollout: &Rollout,
    namespace: &str,
    plan: &Plan,
    now: Timestamp,
    ctx: &Context,
) -> Result<Option<Timestamp>, ReconcileError> {
    let uid = rollout.uid().unwrap_or_default();
    {
        let mut holds = counts_holds(ctx);
        let hold = holds.entry(uid.clone()).or_default();
        hold.plan(plan.status_change);
        if hold.is_fresh() {
            holds.remove(&uid);
        }
    }
    let mut created = Vec::new();
    let mut held_until = None;
    for write in plan.writes() {
        let counts_only = matches!(
            write,
            Write::Status {
                counts_only: true,
                ..
            }
        );
        if counts_only {
            let due = counts_holds(ctx)
                .entry(uid.clone())
                .or_default()
                .due_after(now);
            if due.is_some() {
                held_until = due;
                continue;
            }
        }
        execute(rollout, namespace, write, &mut created, ctx).await?;
        if counts_only && let Some(hold) = counts_holds(ctx).get_mut(&uid) {
            hold.written();
        }
    }
    Ok(held_until)
}

fn counts_holds(ctx: &Context) -> std::sync::MutexGuard<'_, HashMap<String, CountsHold>> {
    ctx.counts_holds.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes one write. `created`: the pod-template hashes of the ReplicaSets this reconcile
/// created so far, which were born with their role metadata.
async fn execute<'a>(
    rollout: &Rollout,
    namespace: &str,
    write: Write<'a>,
    created: &mut Vec<&'a str>,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    match write {
        Write::ScaleUp { target, role } => {
            if write_replica_set(rollout, namespace, target, role, ctx).await? {
                created.push(target.hash.as_str());
            }
            wrote(ctx, "ReplicaSet");
        }
        Write::PodMetadata(change) => {
            // A ReplicaSet created just now was born with its role.
            if !created.contains(&change.hash.as_str()) {
                move_role_metadata(rollout, namespace, change, ctx).await?;
            }
        }
        Write::Selector(change) => {
            ServiceSelectorRouter::new(ctx.client.clone(), namespace, FIELD_MANAGER)
                .select(&change.service, POD_TEMPLATE_HASH_LABEL, &change.hash)
                .await?;
            wrote(ctx, "Service");
            info!(service = %change.service, hash = %change.hash, "Service selector moved");
        }
        Write::Traffic(traffic) => set_traffic(rollout, namespace, traffic, ctx).await?,
        Write::ScaleDown(target) => {
            write_replica_set(rollout, namespace, target, None, ctx).await?;
            wrote(ctx, "ReplicaSet");
        }
        Write::DeleteReplicaSet(name) => delete_replica_set(namespace, name, ctx).await?,
        Write::PruneHistory { limit } => prune_history(rollout, namespace, limit, ctx).await?,
        Write::TrafficOnStable { failed_at } => {
            let latency = Timestamp::now().duration_since(failed_at).as_secs_f64();
            ctx.metrics.abort_latency.observe(latency.max(0.0));
            info!(
                seconds = latency,
                "aborted on a failed analysis: traffic on stable"
            );
        }
        Write::RestartPod(restart) => delete_pod(namespace, restart, ctx).await?,
        Write::CreateRun(new) => create_run(rollout, namespace, new, ctx).await?,
        Write::TerminateRun(name) => terminate_run(namespace, name, ctx).await?,
        Write::DeleteRun(name) => delete_run(namespace, name, ctx).await?,
        Write::Status { status, .. } => write_status(rollout, namespace, status, ctx).await?,
        Write::Events(events) => publish_transition(rollout, events, ctx).await,
    }
    Ok(())
}

/// Deletes an old ReplicaSet beyond revisionHistoryLimit; gone already is fine.
async fn delete_replica_set(
    namespace: &str,
    name: &str,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    match replica_sets.delete(name, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => return Err(kube_err(format!("deleting old ReplicaSet {name}"))(source)),
    }
    wrote(ctx, "ReplicaSet");
    info!(replica_set = %name, "old ReplicaSet beyond revisionHistoryLimit deleted");
    Ok(())
}

/// Lists the rollout's retired ReplicaSets, which are not watched, and deletes those beyond the
/// newest `limit`.
async fn prune_history(
    rollout: &Rollout,
    namespace: &str,
    limit: usize,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let retired = history::retired(&ctx.client, rollout)
        .await
        .map_err(kube_err("listing the retired ReplicaSets"))?;
    for name in history::beyond_limit(&retired, limit) {
        delete_replica_set(namespace, &name, ctx).await?;
    }
    Ok(())
}

/// Writes the rollout's whole status with server-side apply, and notes what it was based on.
async fn write_status(
    rollout: &Rollout,
    namespace: &str,
    status: &crate::crd::RolloutStatus,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let rollouts: Api<Rollout> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "status": status,
    });
    rollouts
        .patch_status(
            &rollout.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(kube_err("writing status"))?;
    wrote(ctx, "RolloutStatus");
    if let (Some(uid), Some(version)) = (rollout.uid(), rollout.resource_version()) {
        ctx.status_written_over
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid, (version, Instant::now()));
    }
    Ok(())
}

/// Counts and logs each thing a reconcile did, then publishes them as one Event on the rollout
/// ([`transition_event`]).
async fn publish_transition(rollout: &Rollout, events: &[PlannedEvent], ctx: &Context) {
    for event in events {
        count_and_log(event, ctx);
    }
    if let Some(event) = transition_event(events) {
        publish(rollout, &event, ctx).await;
    }
}

/// What happened, in the metrics and the log.
fn count_and_log(event: &PlannedEvent, ctx: &Context) {
    ctx.metrics
        .transitions
        .get_or_create(&reason(event.reason.as_str()))
        .inc();
    if event.reason.is_abort() {
        ctx.metrics
            .aborts
            .get_or_create(&reason(event.reason.as_str()))
            .inc();
    }
    match event.type_ {
        EventType::Normal => info!(reason = event.reason.as_str(), "{}", event.message),
        EventType::Warning => warn!(reason = event.reason.as_str(), "{}", event.message),
    }
}

/// Publishes an Event on the rollout.
async fn publish(rollout: &Rollout, event: &PlannedEvent, ctx: &Context) {
    let reference = rollout.object_ref(&());
    let type_ = match event.type_ {
        EventType::Normal => KubeEventType::Normal,
        EventType::Warning => KubeEventType::Warning,
    };
    let published = ctx
        .recorder
        .publish(
            &Event {
                type_,
                reason: event.reason.as_str().into(),
                note: Some(event.message.clone()),
                action: "Reconcile".into(),
                secondary: None,
            },
            &reference,
        )
        .await;
    match published {
        Ok(()) => wrote(ctx, "Event"),
        // An Event that cannot be written must not stop the rollout.
        Err(e) => warn!(reason = event.reason.as_str(), error = %e, "could not publish an Event"),
    }
}

/// Makes a refused ReplicaSet write seen: the rollout Degraded with the apiserver's message
/// (`plan::refused`), and an Event when the refusal is new. The error still goes to the error
/// policy, whose backoff retries it: what the apiserver refuses can change without the Rollout
/// changing (an admission policy, a quota's scope).
pub(super) async fn report_refusal(
    rollout: &Rollout,
    namespace: &str,
    error: &ReconcileError,
    now: Timestamp,
    ctx: &Context,
) {
    let ReconcileError::Refused(refusal) = error else {
        return;
    };
    let (status, event) = refused::refused(rollout, refusal, now);
    let current = rollout.status.clone().unwrap_or_default();
    if !status_write::same(&current, &status)
        && let Err(e) = write_status(rollout, namespace, &status, ctx).await
    {
        warn!(namespace, rollout = %rollout.name_any(), error = %e, "could not report a refused ReplicaSet");
    }
    if let Some(event) = event {
        count_and_log(&event, ctx);
        publish(rollout, &event, ctx).await;
    }
}

/// Deletes the pod a restart replaces now, if it is still the one the plan chose (its uid).
async fn delete_pod(
    namespace: &str,
    restart: &PodRestart,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(restart.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(&restart.name, &params).await {
        Ok(_) => {
            wrote(ctx, "Pod");
            info!(pod = %restart.name, "pod deleted for a restart");
            Ok(())
        }
        // Gone already, or replaced by a pod of the same name: nothing of the old one is left.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(source) => Err(kube_err(format!(
            "deleting pod {} for a restart",
            restart.name
        ))(source)),
    }
}

/// The router `routing` names, for this rollout's objects.
fn traffic_router(
    rollout: &Rollout,
    namespace: &str,
    routing: &traffic::TrafficRouting,
    ctx: &Context,
) -> Option<traffic::Router> {
    traffic::Router::for_routing(
        ctx.client.clone(),
        namespace,
        FIELD_MANAGER,
        routing,
        rollout.controller_owner_ref(&()),
    )
}

/// Brings the router to the plan's state; the router writes only what differs.
async fn set_traffic(
    rollout: &Rollout,
    namespace: &str,
    plan: &TrafficPlan,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let Some(router) = traffic_router(rollout, namespace, &plan.routing, ctx) else {
        return Ok(());
    };
    let max = plan.routing.max_traffic_weight.unwrap_or(100);
    if let Applied::Wrote(kind) = router
        .apply(&plan.backends, plan.state.as_ref(), max)
        .await?
    {
        wrote(ctx, kind);
    }
    Ok(())
}

/// Creates an AnalysisRun the plan starts, with server-side apply.
async fn create_run(
    rollout: &Rollout,
    namespace: &str,
    new: &NewAnalysisRun,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let runs: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), namespace);
    let run = new_analysis_run(rollout, new)?;
    runs.patch(
        &new.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&run),
    )
    .await
    .map_err(kube_err(format!("creating AnalysisRun {}", new.name)))?;
    wrote(ctx, "AnalysisRun");
    info!(analysis_run = %new.name, kind = %new.kind, "AnalysisRun created");
    Ok(())
}

/// Stops a run that gates nothing any more; gone already is fine.
async fn terminate_run(namespace: &str, name: &str, ctx: &Context) -> Result<(), ReconcileError> {
    let runs: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = json!({"spec": {"terminate": true}});
    match runs.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => wrote(ctx, "AnalysisRun"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => {
            return Err(kube_err(format!("terminating AnalysisRun {name}"))(source));
        }
    }
    info!(analysis_run = %name, "AnalysisRun terminated: it gates nothing any more");
    Ok(())
}

/// Deletes a finished run beyond the history; gone already is fine.
async fn delete_run(namespace: &str, name: &str, ctx: &Context) -> Result<(), ReconcileError> {
    let runs: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), namespace);
    match runs.delete(name, &Default::default()).await {
        Ok(_) => wrote(ctx, "AnalysisRun"),
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(source) => return Err(kube_err(format!("deleting AnalysisRun {name}"))(source)),
    }
    Ok(())
}

/// Puts a version's role metadata on its pod template, then on its pods that already run.
async fn move_role_metadata(
    rollout: &Rollout,
    namespace: &str,
    change: &PodMetadataChange,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let name = format!("{}-{}", rollout.name_any(), change.hash);
    let metadata = json!({"labels": change.labels, "annotations": change.annotations});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let replica_sets: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    let template_patch = json!({"spec": {"template": {"metadata": metadata}}});
    replica_sets
        .patch(&name, &params, &Patch::Merge(&template_patch))
        .await
        .map_err(replica_set_err(format!(
            "setting role metadata on ReplicaSet {name}"
        )))?;
    wrote(ctx, "ReplicaSet");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{POD_TEMPLATE_HASH_LABEL}={}", change.hash);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_err(format!("listing pods of {name}")))?;
    let pod_patch = json!({"metadata": metadata});
    for pod in list.items {
        let pod_name = pod.name_any();
        match pods
            .patch(&pod_name, &params, &Patch::Merge(&pod_patch))
            .await
        {
            Ok(_) => wrote(ctx, "Pod"),
            // A pod that went away needs no labels.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(kube_err(format!("setting role metadata on pod {pod_name}"))(source));
            }
        }
    }
    info!(replica_set = %name, "role metadata moved");
    Ok(())
}

/// Creates the new version's ReplicaSet with server-side apply, its pods carrying `role`
/// metadata from the start, or changes the size (and, for an undo, the revision) of an existing
/// one with a merge patch that touches nothing else. Which of the two the plan says, from the
/// store: a store that lags behind a create makes the apply run again, which changes nothing;
/// one that still holds a deleted ReplicaSet makes the patch fail with 404, and the retry
/// plans from a store that has caught up. True when it created one.
async fn write_replica_set(
    rollout: &Rollout,
    namespace: &str,
    target: &ReplicaSetTarget,
    role: Option<&PodMetadataChange>,
    ctx: &Context,
) -> Result<bool, ReconcileError> {
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), namespace);
    let name = format!("{}-{}", rollout.name_any(), target.hash);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    if !target.create {
        let mut patch = json!({"spec": {"replicas": target.replicas}});
        if let Some(revision) = target.revision {
            patch["metadata"] = json!({"annotations": {REVISION_ANNOTATION: revision.to_string()}});
        }
        if target.retire {
            patch["metadata"]["labels"] = json!({RETIRED_LABEL: rollout.name_any()});
        }
        api.patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(kube_err(format!("scaling ReplicaSet {name}")))?;
        if target.retire {
            info!(replica_set = %name, "ReplicaSet scaled to 0 and retired to the history");
        } else {
            info!(replica_set = %name, replicas = target.replicas, "ReplicaSet scaled");
        }
        return Ok(false);
    }
    let replica_set = new_replica_set(rollout, target, &name, role)?;
    let written = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&replica_set),
        )
        .await
        .map_err(replica_set_err(format!("creating ReplicaSet {name}")))?;
    // Not in the cache, yet there: a retired revision wanted again (an undo, a template changed
    // back). The apply owns none of the label, which the retiring patch set, so it is removed
    // here, and the watch sees the ReplicaSet again.
    if written.labels().contains_key(RETIRED_LABEL) {
        let patch = json!({"metadata": {"labels": {RETIRED_LABEL: null}}});
        api.patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(kube_err(format!("bringing back ReplicaSet {name}")))?;
        wrote(ctx, "ReplicaSet");
        info!(replica_set = %name, replicas = target.replicas, "retired ReplicaSet brought back");
        return Ok(true);
    }
    info!(replica_set = %name, replicas = target.replicas, "ReplicaSet created");
    Ok(true)
}
