//! The thin edge: observe from the reflector stores, plan, then carry the plan out in a safe
//! order (grow, move traffic, shrink, status) with idempotent writes under one field manager.

mod act;
mod objects;
mod observe;
mod requeue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tracing::warn;

use crate::crd::Rollout;
use crate::crd::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use crate::metrics::{InfoLabels, Metrics, kind as kind_label, reason};
use crate::owner::OwnedIndex;
use crate::plan::refused::{self, Refusal};
use crate::plan::status_write::CountsHold;
use crate::plan::{plan, restart};

#[cfg(test)]
pub(crate) use objects::new_replica_set;

/// The one field manager every write of the controller goes through.
pub(crate) const FIELD_MANAGER: &str = "sluice";
/// How long a store may lag behind our own status write before we plan from it anyway.
const STORE_LAG_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReconcileError {
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
    pub(crate) fn reason(&self) -> &'static str {
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

pub(crate) struct Context {
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
    /// For each Rollout (by uid) whose counts alone changed since its last progress: whether
    /// this process holds that write back and since when, and how many such writes it made in a
    /// row (`plan::status_write::CountsHold`). A cache too: a restarted process holds such a
    /// write back once more, from the shortest delay.
    pub counts_holds: Mutex<HashMap<String, CountsHold>>,
    /// Failed reconciles in a row, by Rollout uid, for the error policy's backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// The cached ReplicaSets by the uid of their controller, as a reconcile finds them.
    pub replica_sets: OwnedIndex<ReplicaSet>,
    pub services: Store<Service>,
    pub analysis_runs: OwnedIndex<AnalysisRun>,
    pub templates: Store<AnalysisTemplate>,
    pub cluster_templates: Store<ClusterAnalysisTemplate>,
    /// The objects of each watched kind that do not decode, which the stores do not hold.
    pub undecodable: crate::undecodable::Undecodables,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

pub(crate) async fn reconcile(
    rollout: Arc<Rollout>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
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
        ctx.counts_holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid);
        return Ok(Action::await_change());
    }
    let mut observed = observe::from_stores(&rollout, &namespace, &ctx);
    observed.router = observe::read_router(&rollout, &namespace, &ctx).await?;
    // Whole seconds, as metav1.Time stores them: a status planned at sub-second precision would
    // never equal the status read back, and be written again on every reconcile.
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH);
    if restart::due(&rollout, now) {
        observed.pods = Some(observe::stable_pods(&rollout, &namespace, &ctx).await?);
    }
    let plan = plan(&rollout, &observed, now);
    let counts_held_until = match act::act(&rollout, &namespace, &plan, now, &ctx).await {
        Ok(held) => held,
        Err(error) => {
            act::report_refusal(&rollout, &namespace, &error, now, &ctx).await;
            return Err(error);
        }
    };
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
        requeue::ROUTER_RESYNC
    } else {
        requeue::RESYNC
    };
    let counts_due = counts_held_until
        .map(|at| Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO));
    Ok(Action::requeue(requeue::after_success(
        [plan.requeue_after, counts_due],
        resync,
        &uid,
    )))
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

/// Retries a failed reconcile with backoff (`requeue::after_failure`).
pub(crate) fn error_policy(
    rollout: Arc<Rollout>,
    error: &ReconcileError,
    ctx: Arc<Context>,
) -> Action {
    log_reconcile_failure(&rollout, error);
    ctx.metrics
        .reconcile_errors
        .get_or_create(&reason(error.reason()))
        .inc();
    let uid = rollout.uid().unwrap_or_default();
    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    let count = failures.entry(uid.clone()).or_insert(0);
    *count = (*count + 1).min(8);
    Action::requeue(requeue::after_failure(*count, &uid))
}
