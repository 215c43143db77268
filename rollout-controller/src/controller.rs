//! Wiring: reflector stores for Rollouts, their ReplicaSets and Services, the kube-runtime
//! Controller, and the health and metrics endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{Instrument, info, info_span, warn};

use crate::crd::{POD_TEMPLATE_HASH_LABEL, Rollout};
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile, referenced_services};

/// What to watch and where to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// `/healthz`, `/readyz` and `/metrics`.
    pub health_addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("binding the health and metrics address {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

#[derive(Clone)]
struct Health {
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until the process is told to stop (SIGTERM or Ctrl-C).
pub async fn run(client: Client, options: Options) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(options.health_addr)
        .await
        .map_err(|e| RunError::Bind(options.health_addr, e))?;
    let health = Health {
        ready: ready.clone(),
        metrics: metrics.clone(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "health server stopped");
        }
    });

    let rollouts: Api<Rollout> = api(&client, &options.namespace);
    let replica_sets: Api<ReplicaSet> = api(&client, &options.namespace);
    let services: Api<Service> = api(&client, &options.namespace);

    let (rs_store, rs_writer) = reflector::store();
    let rs_stream = watcher(
        replica_sets,
        watcher::Config::default().labels(POD_TEMPLATE_HASH_LABEL),
    )
    .default_backoff()
    .reflect(rs_writer)
    .touched_objects();
    let (svc_store, svc_writer) = reflector::store();
    let svc_stream = watcher(services, watcher::Config::default())
        .default_backoff()
        .reflect(svc_writer)
        .touched_objects();

    let controller = Controller::new(rollouts, watcher::Config::default());
    let rollout_store = controller.store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        writes: Default::default(),
        synced: ready.clone(),
        status_written_over: Default::default(),
        failures: Default::default(),
        replica_sets: rs_store.clone(),
        services: svc_store.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
    });

    let readiness = {
        let (rollout_store, rs_store, svc_store) =
            (rollout_store.clone(), rs_store.clone(), svc_store.clone());
        async move {
            // A store's readiness wakes only its latest waiter (kube-runtime keeps one waker),
            // and the Controller waits on the rollout store too: so look again every 100 ms.
            loop {
                let synced = synced(&rollout_store).await
                    && synced(&rs_store).await
                    && synced(&svc_store).await;
                if synced {
                    ready.store(true, Ordering::SeqCst);
                    info!("caches synced; ready");
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    tokio::spawn(readiness);

    let services_to_rollouts = move |service: Service| {
        let namespace = service.namespace();
        let name = service.name_any();
        rollout_store
            .state()
            .iter()
            .filter(|r| r.namespace() == namespace && referenced_services(r).contains(&name))
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect::<Vec<_>>()
    };

    controller
        .owns_stream(rs_stream)
        .watches_stream(svc_stream, services_to_rollouts)
        .shutdown_on_signal()
        .run(
            |rollout, ctx| {
                let span = info_span!("reconcile", rollout = %rollout.name_any(), namespace = rollout.namespace().unwrap_or_default());
                reconcile(rollout, ctx).instrument(span)
            },
            error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
    info!("controller stopped");
    Ok(())
}

async fn synced<K>(store: &reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_millis(10),
            store.wait_until_ready()
        )
        .await,
        Ok(Ok(()))
    )
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if health.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
    }
}

async fn metrics_text(State(health): State<Health>) -> String {
    health.metrics.encode()
}
