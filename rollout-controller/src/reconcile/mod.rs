//! The thin edge: observe from the reflector stores, plan, then carry the plan out in a safe
//! order (grow, move traffic, shrink, status) with idempotent writes under one field manager.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};
use traffic::{Applied, ServiceSelectorRouter, TrafficRouter};

use crate::crd::analysis::{
    ANALYSIS_KIND_LABEL, AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate, ROLLOUT_LABEL,
};
use crate::crd::{
    POD_TEMPLATE_HASH_LABEL, PodMetadata, REVISION_ANNOTATION, Rollout, TEMPLATE_ANNOTATION,
    TEMPLATE_ANNOTATION_LIMIT,
};
use crate::metrics::{InfoLabels, Metrics, kind as kind_label, reason};
use crate::plan::analysis::{NewAnalysisRun, ObservedRun, TemplateKey, referenced_templates};
use crate::plan::refused::{self, Refusal};
use crate::plan::restart::{self, ObservedPod, PodRestart};
use crate::plan::writes::Write;
use crate::plan::{
    EventType, InvalidSpec, Observed, ObservedReplicaSet, Plan, PodMetadataChange,
    ReplicaSetTarget, TrafficPlan, plan,
};

/// The one field manager every write of the controller goes through.
pub const FIELD_MANAGER: &str = "sluice";
/// How long a store may lag behind our own status write before we plan from it anyway.
const STORE_LAG_LIMIT: Duration = Duration::from_secs(5);
/// How often a quiet rollout is looked at again, in case a watch event was missed.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a rollout whose router carries canary traffic is looked at again.
const ROUTER_RESYNC: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("rollout has no namespace")]
    NoNamespace,
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Traffic(#[from] traffic::TrafficError),
    #[error("building ReplicaSet {name}: {detail}")]
    Manifest { name: String, detail: String },
    /// A ReplicaSet write the apiserver refused with a status that retrying the same request
    /// cannot change; the rollout's status says so.
    #[error("{}: refused by the apiserver: {}", .0.action, .0.message)]
    Refused(Refusal),
}

impl ReconcileError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::NoNamespace => "NoNamespace",
            ReconcileError::Kube { .. } => "KubeApi",
            ReconcileError::Traffic(_) => "Traffic",
            ReconcileError::Manifest { .. } => "Manifest",
            ReconcileError::Refused(_) => refused::CONDITION,
        }
    }
}

/// Counts an API write that has been made.
pub(crate) fn wrote(ctx: &Context, kind: &'static str) {
    let count = ctx.writes.fetch_add(1, Ordering::SeqCst) + 1;
    ctx.metrics
        .api_writes
        .get_or_create(&kind_label(kind))
        .inc();
    #[cfg(feature = "fault-injection")]
    if std::env::var("SLUICE_FAULT_EXIT_AFTER_WRITES")
        .ok()
        .and_then(|k| k.parse::<u64>().ok())
        == Some(count)
    {
        eprintln!("fault injection: exiting after API write {count} ({kind})");
        std::process::exit(137);
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = count;
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let action = action.into();
    move |source| ReconcileError::Kube { action, source }
}

/// As [`kube_err`], for a ReplicaSet write: a 400, 413 or 422 (the apiserver's validation
/// refused the object) comes back on every retry, and becomes a [`Refusal`] the rollout's
/// status reports.
fn replica_set_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> ReconcileError {
    let action = action.into();
    move |source| match source {
        kube::Error::Api(status) if matches!(status.code, 400 | 413 | 422) => {
            ReconcileError::Refused(Refusal {
                action,
                reason: status.reason.clone(),
                message: status.message.clone(),
            })
        }
        source => ReconcileError::Kube { action, source },
    }
}

pub struct Context {
    pub client: Client,
    /// API writes made by this process, for the writes metric and fault injection.
    pub writes: AtomicU64,
    /// Every store has its initial list. Until then a ReplicaSet or Service missing from a
    /// store may exist in the cluster, so no plan is made.
    pub synced: Arc<AtomicBool>,
    /// For each Rollout (by uid) whose status this process wrote: the resourceVersion that
    /// write was based on. While the store still shows that version, it has not seen the write,
    /// and planning from it would repeat the step just taken. (A cache of what is in flight,
    /// not progress: a restarted process lists afresh and needs none of it.)
    pub status_written_over: Mutex<HashMap<String, (String, Instant)>>,
    /// Failed reconciles in a row, by Rollout uid, for the error policy's backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    pub replica_sets: Store<ReplicaSet>,
    pub services: Store<Service>,
    pub analysis_runs: Store<AnalysisRun>,
    pub templates: Store<AnalysisTemplate>,
    pub cluster_templates: Store<ClusterAnalysisTemplate>,
    /// The objects of each watched kind that do not decode, which the stores do not hold.
    pub undecodable: crate::undecodable::Undecodables,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

/// What the stores say about `rollout`: its ReplicaSets (by controller owner reference) and the
/// Services its spec names.
pub fn observe(rollout: &Rollout, namespace: &str, ctx: &Context) -> Observed {
    let uid = rollout.uid();
    let replica_sets = ctx
        .replica_sets
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(namespace))
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
        .filter_map(|rs| {
            let hash = rs.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone();
            let status = rs.status.as_ref();
            Some(ObservedReplicaSet {
                name: rs.name_any(),
                hash,
                revision: rs
                    .annotations()
                    .get(REVISION_ANNOTATION)
                    .and_then(|r| r.parse().ok())
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
        .state()
        .iter()
        .filter(|run| run.namespace().as_deref() == Some(namespace))
        .filter(|run| {
            run.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
        })
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
        router_problem: None,
        undecodable: crate::undecodable::observe(rollout, namespace, &ctx.undecodable),
        pods: None,
    }
}

/// The Services a rollout's spec names.
pub fn referenced_services(rollout: &Rollout) -> Vec<String> {
    let strategy = &rollout.spec.strategy;
    let mut names = Vec::new();
    if let Some(bg) = &strategy.blue_green {
        names.push(bg.active_service.clone());
        names.extend(bg.preview_service.clone());
    }
    if let Some(c) = &strategy.canary {
        names.extend(c.stable_service.clone());
        names.extend(c.canary_service.clone());
    }
    if let Some(ab) = &strategy.ab_test {
        names.push(ab.stable_service.clone());
        names.push(ab.canary_service.clone());
    }
    names
}

pub async fn reconcile(rollout: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    if !ctx.synced.load(Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let namespace = rollout.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = rollout.name_any();
    let uid = rollout.uid().unwrap_or_default();
    {
        let mut in_flight = ctx
            .status_written_over
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((version, at)) = in_flight.get(&uid)
            && Some(version) == rollout.resource_version().as_ref()
            && at.elapsed() < STORE_LAG_LIMIT
        {
            // Our last status write has not reached the store yet: its watch event will
            // bring the rollout back here.
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        in_flight.remove(&uid);
    }
    if rollout.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget_rollout(&namespace, &name);
        return Ok(Action::await_change());
    }
    let mut observed = observe(&rollout, &namespace, &ctx);
    observed.router_problem = check_router(&rollout, &namespace, &ctx).await?;
    // Whole seconds, as metav1.Time stores them: a status planned at sub-second precision would
    // never equal the status read back, and be written again on every reconcile.
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
    if restart::due(&rollout, now) {
        observed.pods = Some(stable_pods(&rollout, &namespace, &ctx).await?);
    }
    let plan = plan(&rollout, &observed, now);
    if let Err(error) = act(&rollout, &namespace, &plan, &ctx).await {
        report_refusal(&rollout, &namespace, &error, now, &ctx).await;
        return Err(error);
    }
    ctx.failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&uid);

    ctx.metrics.observe_rollout(
        InfoLabels {
            namespace: namespace.clone(),
            name: name.clone(),
            strategy: plan.status.strategy.clone(),
            phase: plan.status.phase.as_str().into(),
        },
        i64::from(plan.status.current_step_index.unwrap_or(0)),
        i64::from(plan.status.canary.as_ref().map_or(0, |c| c.weight)),
    );
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    // While a router carries canary traffic, its objects are looked at often: a hand edit of a
    // weight or rule Sluice owns is put back within ROUTER_RESYNC. (Ingresses and HTTPRoutes
    // are read on demand, not watched: the HTTPRoute CRD may not be installed at all.)
    let resync = if plan.traffic.as_ref().is_some_and(|t| t.state.is_some()) {
        ROUTER_RESYNC
    } else {
        RESYNC
    };
    Ok(Action::requeue(plan.requeue_after.map_or(resync, |d| {
        d.min(resync).max(Duration::from_millis(100))
    })))
}

/// Carries out `plan`, one write at a time in the order [`Plan::writes`] decides.
async fn act(
    rollout: &Rollout,
    namespace: &str,
    plan: &Plan,
    ctx: &Context,
) -> Result<(), ReconcileError> {
    let mut created = Vec::new();
    for write in plan.writes() {
        execute(rollout, namespace, write, &mut created, ctx).await?;
    }
    Ok(())
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
        Write::Status(status) => {
            if rollout.status.as_ref() != Some(status) {
                write_status(rollout, namespace, status, ctx).await?;
            }
        }
        Write::Event(event) => publish(rollout, event, ctx).await,
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

/// Publishes a planned Event on the rollout, counting it in the metrics.
async fn publish(rollout: &Rollout, event: &crate::plan::PlannedEvent, ctx: &Context) {
    let reference = rollout.object_ref(&());
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
    let type_ = match event.type_ {
        EventType::Normal => KubeEventType::Normal,
        EventType::Warning => KubeEventType::Warning,
    };
    match event.type_ {
        EventType::Normal => info!(reason = event.reason.as_str(), "{}", event.message),
        EventType::Warning => warn!(reason = event.reason.as_str(), "{}", event.message),
    }
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
async fn report_refusal(
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
    if rollout.status.as_ref() != Some(&status)
        && let Err(e) = write_status(rollout, namespace, &status, ctx).await
    {
        warn!(namespace, rollout = %rollout.name_any(), error = %e, "could not report a refused ReplicaSet");
    }
    if let Some(event) = event {
        publish(rollout, &event, ctx).await;
    }
}

/// The stable ReplicaSet's pods, for a restart: listed by its pod-template hash, each owned by
/// that ReplicaSet. Only while a restart is due, so that pods are never watched or cached.
async fn stable_pods(
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

/// Reads the router's objects and says what is wrong with them for the planner, which then
/// marks the rollout InvalidSpec and changes nothing. Only a failing API is an error here.
async fn check_router(
    rollout: &Rollout,
    namespace: &str,
    ctx: &Context,
) -> Result<Option<InvalidSpec>, ReconcileError> {
    let Some(routed) = rollout.spec.strategy.routed() else {
        return Ok(None);
    };
    let (Some(field), Some(router)) = (
        router_field(&routed),
        traffic_router(rollout, namespace, routed.routing, ctx),
    ) else {
        return Ok(None);
    };
    let checked = router.check(&routed_backends(rollout, &routed)).await;
    Ok(invalid_spec(field, checked)?)
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

fn routed_backends(rollout: &Rollout, routed: &crate::crd::Routed<'_>) -> traffic::Backends {
    traffic::Backends {
        rollout: rollout.name_any(),
        stable_service: routed.stable_service.to_owned(),
        canary_service: routed.canary_service.to_owned(),
    }
}

/// The user's object a rollout's router starts from, as read.
#[derive(Debug, Clone)]
pub(crate) enum RouterObject {
    /// The stable Ingress (`trafficRouting.nginx.stableIngress`).
    Ingress(Box<k8s_openapi::api::networking::v1::Ingress>),
    /// The HTTPRoute (`trafficRouting.gatewayAPI.httpRoute`), as JSON.
    HttpRoute(serde_json::Value),
}

/// The spec field that names the router's object, which an [`InvalidSpec`] about it points at.
pub(crate) fn router_field(routed: &crate::crd::Routed<'_>) -> Option<String> {
    if routed.routing.nginx.is_some() {
        Some(format!("{}.nginx.stableIngress", routed.field))
    } else if routed.routing.gateway_api.is_some() {
        Some(format!("{}.gatewayAPI.httpRoute", routed.field))
    } else {
        None
    }
}

/// What is wrong with the router's object for the planner, from the result of reading it:
/// pure, so that the offline linter (`crate::lint`) concludes what a reconcile concludes (both
/// end in the router's own pure check). An error that is not about the user's objects (a
/// failing API) stays an error.
pub(crate) fn router_problem(
    rollout: &Rollout,
    found: Result<RouterObject, traffic::TrafficError>,
) -> Result<Option<InvalidSpec>, traffic::TrafficError> {
    let Some(routed) = rollout.spec.strategy.routed() else {
        return Ok(None);
    };
    let Some(field) = router_field(&routed) else {
        return Ok(None);
    };
    let backends = routed_backends(rollout, &routed);
    let checked = found.and_then(|object| match object {
        RouterObject::Ingress(stable) => traffic::nginx::check_stable_ingress(&stable, &backends),
        RouterObject::HttpRoute(route) => traffic::gateway::check_route(&route, &backends),
    });
    invalid_spec(field, checked)
}

/// A router's check as the planner takes it: a problem with the user's objects becomes an
/// [`InvalidSpec`] at `field`; any other error stays one.
fn invalid_spec(
    field: String,
    checked: Result<(), traffic::TrafficError>,
) -> Result<Option<InvalidSpec>, traffic::TrafficError> {
    match checked {
        Ok(()) => Ok(None),
        Err(e) if e.is_invalid_spec() => Ok(Some(InvalidSpec {
            field,
            message: e.to_string(),
        })),
        Err(e) => Err(e),
    }
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

/// An AnalysisRun owned by the Rollout, labelled with the rollout, revision and what it gates.
pub fn new_analysis_run(
    rollout: &Rollout,
    new: &NewAnalysisRun,
) -> Result<AnalysisRun, ReconcileError> {
    let owner = rollout
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Manifest {
            name: new.name.clone(),
            detail: "the Rollout has no uid yet".into(),
        })?;
    let value = json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {
            "name": new.name,
            "labels": {
                ROLLOUT_LABEL: rollout.name_any(),
                POD_TEMPLATE_HASH_LABEL: new.hash,
                ANALYSIS_KIND_LABEL: new.kind,
            },
            "ownerReferences": [owner],
        },
        "spec": new.spec,
    });
    serde_json::from_value(value).map_err(|e| ReconcileError::Manifest {
        name: new.name.clone(),
        detail: e.to_string(),
    })
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
/// one with a merge patch that touches nothing else. True when it created one.
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
    let existing = api
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading ReplicaSet {name}")))?;
    match existing {
        Some(_) => {
            let mut patch = json!({"spec": {"replicas": target.replicas}});
            if let Some(revision) = target.revision {
                patch["metadata"] =
                    json!({"annotations": {REVISION_ANNOTATION: revision.to_string()}});
            }
            api.patch(&name, &params, &Patch::Merge(&patch))
                .await
                .map_err(kube_err(format!("scaling ReplicaSet {name}")))?;
            info!(replica_set = %name, replicas = target.replicas, "ReplicaSet scaled");
            Ok(false)
        }
        None => {
            let replica_set = new_replica_set(rollout, target, &name, role)?;
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&replica_set),
            )
            .await
            .map_err(replica_set_err(format!("creating ReplicaSet {name}")))?;
            info!(replica_set = %name, replicas = target.replicas, "ReplicaSet created");
            Ok(true)
        }
    }
}

/// The ReplicaSet of the Rollout's current template: its labels plus the pod-template hash on
/// the ReplicaSet, its selector and its pods; owned by the Rollout.
pub fn new_replica_set(
    rollout: &Rollout,
    target: &ReplicaSetTarget,
    name: &str,
    role: Option<&PodMetadataChange>,
) -> Result<ReplicaSet, ReconcileError> {
    let mut template = rollout.spec.template.clone();
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    if let Some(role) = role {
        apply_changes(
            metadata.labels.get_or_insert_with(BTreeMap::new),
            &role.labels,
        );
        apply_changes(
            metadata.annotations.get_or_insert_with(BTreeMap::new),
            &role.annotations,
        );
    }
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), target.hash.clone());
    let labels = labels.clone();
    let mut selector = rollout.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), target.hash.clone());
    let mut annotations = BTreeMap::from([(
        REVISION_ANNOTATION.to_owned(),
        target.revision.unwrap_or(1).to_string(),
    )]);
    if let Ok(original) = serde_json::to_string(&rollout.spec.template)
        && original.len() <= TEMPLATE_ANNOTATION_LIMIT
    {
        annotations.insert(TEMPLATE_ANNOTATION.to_owned(), original);
    }
    let owner = rollout
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Manifest {
            name: name.into(),
            detail: "the Rollout has no uid yet".into(),
        })?;
    let value = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": {
            "replicas": target.replicas,
            "minReadySeconds": rollout.spec.min_ready_seconds.unwrap_or(0),
            "selector": selector,
            "template": template,
        },
    });
    serde_json::from_value(value).map_err(|e| ReconcileError::Manifest {
        name: name.into(),
        detail: e.to_string(),
    })
}

fn apply_changes(map: &mut BTreeMap<String, String>, changes: &BTreeMap<String, Option<String>>) {
    for (key, value) in changes {
        match value {
            Some(value) => map.insert(key.clone(), value.clone()),
            None => map.remove(key),
        };
    }
}

/// The error policy runs outside the reconcile's span, so its line names the namespace itself:
/// rollouts of one name in two namespaces are otherwise told apart by nothing.
pub(crate) fn log_reconcile_failure(rollout: &Rollout, error: &ReconcileError) {
    warn!(
        namespace = %rollout.namespace().unwrap_or_default(),
        rollout = %rollout.name_any(),
        error = %error,
        "reconcile failed"
    );
}

/// Retries a failed reconcile after 0.5 s, doubling with each failure in a row up to a minute.
pub fn error_policy(rollout: Arc<Rollout>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    log_reconcile_failure(&rollout, error);
    ctx.metrics
        .reconcile_errors
        .get_or_create(&reason(error.reason()))
        .inc();
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = failures
        .entry(rollout.uid().unwrap_or_default())
        .or_insert(0);
    *count = (*count + 1).min(8);
    Action::requeue(Duration::from_millis(500 * (1 << (*count - 1))).min(Duration::from_secs(60)))
}
