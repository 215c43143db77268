//! Wiring: reflector stores for Rollouts, their ReplicaSets, Services, AnalysisRuns and
//! templates; the Rollout controller and the AnalysisRun runner; the health and metrics
//! endpoints; leader election.
//!
//! With leader election every replica watches everything (its caches stay warm, and its REST API
//! serves from them), but only the leader's controllers act: their reconciles wait until this
//! replica leads and its caches have caught up with the cluster, and every write they send goes
//! through [`leader_only_client`], which refuses it once the lease may have lapsed. Losing the
//! lease ends [`run`] with an error, and the binary exits (Kubernetes restarts it as a standby).
//!
//! With `--shards N` the same holds per shard: each rollout (and its AnalysisRuns) belongs to
//! one shard ([`crate::shard`]), its reconcile waits until this replica holds that shard's lease
//! and has caught up since, and writes through that shard's gate. One shard is the leader lease.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::crd::Rollout;
use crate::crd::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use crate::decode::{Registry, Tolerant, decoded, tolerant_watcher};
use crate::leader::shards::{ShardElector, ShardLeases};
use crate::leader::{Elector, LeaderElection, LeaderError, WriteLog, leader_only_client};
use crate::metrics::Metrics;
use crate::plan::runs::{TemplateKey, referenced_templates};
use crate::plan::services::referenced_services;
use crate::rate_limit::{ApiRate, RateLimit};
use crate::reconcile::{Context, error_policy, reconcile};
use crate::rest::{KubeAuthorizer, KubeControl};
use crate::runner::{RunnerContext, reconcile_run, run_error_policy};
use crate::shard::{self, Assignment, ShardCount};
use crate::undecodable::{self, Undecodables};

/// What to watch and where to serve.
#[derive(Debug, Clone)]
pub struct Options {
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// `/healthz`, `/readyz` and `/metrics`.
    pub health_addr: SocketAddr,
    /// AnalysisRuns measured at once, across all rollouts.
    pub analysis_concurrency: u16,
    /// Rollouts reconciled at once.
    pub reconcile_concurrency: u16,
    /// The bucket the controllers' requests wait in (`crate::rate_limit`); `None`: they do not
    /// wait.
    pub api_rate: Option<ApiRate>,
    /// Where the REST API is served; `None`: not served.
    pub api_addr: Option<SocketAddr>,
    pub api_auth: ApiAuth,
    /// Elect a leader among replicas with this Lease; `None`: this process is the only one and
    /// always acts.
    pub leader_election: Option<LeaderElection>,
    /// Shards the rollouts are spread over, each a Lease of its own (more than one needs
    /// leader election).
    pub shards: ShardCount,
    /// Where every write and every change of write permission is logged, one JSON line each.
    pub write_log: Option<std::path::PathBuf>,
}

/// How the REST API checks callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApiAuth {
    /// Bearer tokens, checked with TokenReview and SubjectAccessReview.
    #[default]
    Kubernetes,
    /// Nobody is checked: for local use only.
    None,
}

/// Default of [`Options::analysis_concurrency`].
pub const DEFAULT_ANALYSIS_CONCURRENCY: u16 = 16;
/// Default of [`Options::reconcile_concurrency`]: a reconcile mostly waits on the apiserver,
/// and the rate limit paces what they send.
pub const DEFAULT_RECONCILE_CONCURRENCY: u16 = 32;

impl Default for Options {
    /// Every namespace, the ports and limits the binary's flags default to, no leader election.
    fn default() -> Self {
        Self {
            namespace: None,
            health_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            analysis_concurrency: DEFAULT_ANALYSIS_CONCURRENCY,
            reconcile_concurrency: DEFAULT_RECONCILE_CONCURRENCY,
            api_rate: Some(ApiRate::default()),
            api_addr: Some(SocketAddr::from(([0, 0, 0, 0], 8080))),
            api_auth: ApiAuth::default(),
            leader_election: None,
            shards: ShardCount::ONE,
            write_log: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error(transparent)]
    Leadership(#[from] LeaderError),
    #[error("--shards {0} needs leader election: the shards are Leases")]
    ShardsWithoutElection(usize),
    #[error("opening the write log {0}: {1}")]
    WriteLog(std::path::PathBuf, #[source] std::io::Error),
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
    let elected = options.leader_election.is_some();
    let count = options.shards;
    let log = match &options.write_log {
        None => None,
        Some(path) => {
            let identity = options
                .leader_election
                .as_ref()
                .map_or_else(crate::leader::default_identity, |e| e.identity.clone());
            let log = WriteLog::create(path, &identity)
                .map_err(|e| RunError::WriteLog(path.clone(), e))?;
            Some(Arc::new(log))
        }
    };
    metrics
        .shards
        .set(i64::try_from(count.get()).unwrap_or(i64::MAX));
    let leases = Arc::new(match &options.leader_election {
        Some(election) => ShardLeases::elected(count, &election.lease_name, log),
        None if count == ShardCount::ONE => {
            metrics.leader.set(1);
            metrics.shards_held.set(1);
            ShardLeases::always()
        }
        None => return Err(RunError::ShardsWithoutElection(count.get())),
    });
    // The controllers write through their shard's gate. The watches read, and the REST API's
    // writes are spec writes its callers ask for, which every replica may serve: they use the
    // plain client. The controllers' requests, their watches' too, wait for the rate limit first;
    // the gate checks a write after that wait, as it leaves. The Leases' and the REST API's
    // requests do not wait.
    let rate_limit = options.api_rate.map(RateLimit::new);
    let limited = |client: &Client| match &rate_limit {
        Some(limit) => limit.client(client),
        None => client.clone(),
    };
    let unlimited = client.clone();
    let writers: Vec<Client> = (0..count.get())
        .map(|shard| {
            if elected {
                limited(&leader_only_client(&client, leases.get(shard)))
            } else {
                limited(&client)
            }
        })
        .collect();
    let client = limited(&client);
    // Whether the controllers act on each shard: at once without election, else once this
    // replica holds the shard and its caches have caught up since (see `caught_up`).
    let acting: Arc<Vec<watch::Sender<bool>>> = Arc::new(
        (0..count.get())
            .map(|_| watch::Sender::new(!elected))
            .collect(),
    );
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

    // Every kind is decoded one object at a time (`crate::decode`): one object that does not
    // decode must not fail the list of all the others.
    let undecodable = Undecodables::default();
    let gauge = |kind: &str| {
        Some(
            metrics
                .undecodable_objects
                .get_or_create(&crate::metrics::kind(kind))
                .clone(),
        )
    };
    let all = watcher::Config::default;
    let (rollout_store, _, rollout_stream) = tolerant_watcher::<Rollout>(
        api(&client, &options.namespace),
        all(),
        undecodable.rollouts.clone(),
        gauge("Rollout"),
    );
    let (rs_store, rs_owned, rs_stream) = tolerant_watcher::<ReplicaSet>(
        api(&client, &options.namespace),
        all().labels(&crate::history::watched_selector()),
        undecodable.replica_sets.clone(),
        gauge("ReplicaSet"),
    );
    let (svc_store, _, svc_stream) = tolerant_watcher::<Service>(
        api(&client, &options.namespace),
        all(),
        undecodable.services.clone(),
        gauge("Service"),
    );
    let runs: Api<Tolerant<AnalysisRun>> = api(&client, &options.namespace);
    let (run_store, run_owned, run_stream) = tolerant_watcher(
        runs.clone(),
        all(),
        undecodable.analysis_runs.clone(),
        gauge("AnalysisRun"),
    );
    let (template_store, _, template_stream) = tolerant_watcher::<AnalysisTemplate>(
        api(&client, &options.namespace),
        all(),
        undecodable.templates.clone(),
        gauge("AnalysisTemplate"),
    );
    let (cluster_template_store, _, cluster_template_stream) =
        tolerant_watcher::<ClusterAnalysisTemplate>(
            Api::all(client.clone()),
            all(),
            undecodable.cluster_templates.clone(),
            gauge("ClusterAnalysisTemplate"),
        );

    // Whenever this replica starts acting on a shard: every object is looked at again (those of
    // shards it does not act on return at once), as a reconcile of a shard not held did nothing.
    let started_acting = Arc::new(watch::Sender::new(0u64));
    let controller = Controller::for_stream(decoded(rollout_stream), rollout_store.clone())
        .reconcile_all_on(acting_started(started_acting.subscribe()));
    if let Some(addr) = options.api_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Bind(addr, e))?;
        let control = Arc::new(KubeControl::new(
            unlimited.clone(),
            rollout_store.clone(),
            rs_owned.clone(),
            run_owned.clone(),
            undecodable.rollouts.clone(),
        ));
        let app = match options.api_auth {
            ApiAuth::Kubernetes => {
                api::router(control, Arc::new(KubeAuthorizer::new(unlimited.clone())))
            }
            ApiAuth::None => {
                warn!(
                    "--api-auth=none: the REST API lets anyone read and steer every rollout; local use only"
                );
                api::router(control, Arc::new(api::NoAuth))
            }
        };
        info!(%addr, "REST API listening");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                warn!(error = %e, "REST API server stopped");
            }
        });
    }
    let context = |writer: &Client| Context {
        client: writer.clone(),
        writes: Default::default(),
        synced: ready.clone(),
        status_written_over: Default::default(),
        counts_holds: Default::default(),
        failures: Default::default(),
        replica_sets: rs_owned.clone(),
        services: svc_store.clone(),
        analysis_runs: run_owned.clone(),
        templates: template_store.clone(),
        cluster_templates: cluster_template_store.clone(),
        undecodable: undecodable.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(
            writer.clone(),
            Reporter {
                controller: "sluice".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
    };
    let ctx = Arc::new(Sharded {
        count,
        contexts: writers.iter().map(|w| Arc::new(context(w))).collect(),
        acting: acting.clone(),
        reported: Default::default(),
    });

    let readiness = {
        let (rollout_store, rs_store, svc_store) =
            (rollout_store.clone(), rs_store.clone(), svc_store.clone());
        let (run_store, template_store, cluster_template_store) = (
            run_store.clone(),
            template_store.clone(),
            cluster_template_store.clone(),
        );
        let ready = ready.clone();
        async move {
            // A store's readiness wakes only its latest waiter (kube-runtime keeps one waker),
            // and the Controller waits on the rollout store too: so look again every 100 ms.
            loop {
                let synced = synced(&rollout_store).await
                    && synced(&rs_store).await
                    && synced(&svc_store).await
                    && synced(&run_store).await
                    && synced(&template_store).await
                    && synced(&cluster_template_store).await;
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

    let services_to_rollouts = {
        let rollout_store = rollout_store.clone();
        move |service: Tolerant<Service>| {
            let namespace = service.namespace();
            let name = service.name_any();
            rollout_store
                .state()
                .iter()
                .filter(|r| r.namespace() == namespace && referenced_services(r).contains(&name))
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let templates_to_rollouts = {
        let rollout_store = rollout_store.clone();
        move |template: Tolerant<AnalysisTemplate>| {
            let key = TemplateKey {
                cluster_scope: false,
                name: template.name_any(),
            };
            rollouts_using(&rollout_store, &key, template.namespace())
        }
    };
    let cluster_templates_to_rollouts = {
        let rollout_store = rollout_store.clone();
        move |template: Tolerant<ClusterAnalysisTemplate>| {
            let key = TemplateKey {
                cluster_scope: true,
                name: template.name_any(),
            };
            rollouts_using(&rollout_store, &key, None)
        }
    };

    let runner_ctx = Arc::new(Sharded {
        count,
        contexts: writers
            .iter()
            .map(|writer| {
                Arc::new(RunnerContext {
                    client: writer.clone(),
                    rollouts: rollout_store.clone(),
                    metrics: metrics.clone(),
                    synced: ready.clone(),
                })
            })
            .collect(),
        acting: acting.clone(),
        reported: Default::default(),
    });
    // The runner's own watch of the runs; the rollouts' registry of undecodable runs is the one
    // reported and planned from, this one only tells when the cache has caught up.
    let runner_registry = Registry::new(Default::default());
    let (runner_store, _, runner_stream) =
        tolerant_watcher(runs, all(), runner_registry.clone(), None);
    let runner_controller = Controller::for_stream(decoded(runner_stream), runner_store.clone())
        .reconcile_all_on(acting_started(started_acting.subscribe()));
    if elected {
        let caches = Caches {
            client: client.clone(),
            namespace: options.namespace.clone(),
            rollouts: rollout_store.clone(),
            replica_sets: rs_store.clone(),
            services: svc_store.clone(),
            runs: run_store.clone(),
            runner_runs: runner_store.clone(),
            templates: template_store.clone(),
            cluster_templates: cluster_template_store.clone(),
            undecodable: undecodable.clone(),
            runner_registry: runner_registry.clone(),
        };
        tokio::spawn(follow_leases(
            leases.clone(),
            Arc::downgrade(&acting),
            started_acting.clone(),
            ready.clone(),
            caches,
        ));
    }
    let runner = runner_controller
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(options.analysis_concurrency.max(1)),
        )
        .shutdown_on_signal()
        .run(
            {
                let rollout_store = rollout_store.clone();
                move |run, sharded: Arc<Sharded<RunnerContext>>| {
                    let shard = shard::of_run(&run, &rollout_store, count);
                    let span = info_span!(
                        "measure",
                        analysis_run = %run.name_any(),
                        rollout = run.labels().get(crate::crd::analysis::ROLLOUT_LABEL).cloned().unwrap_or_default(),
                        namespace = run.namespace().unwrap_or_default(),
                        %shard
                    );
                    async move {
                        if !sharded.acts_on(shard) {
                            return Ok(Action::await_change());
                        }
                        reconcile_run(run, sharded.contexts[shard.index()].clone()).await
                    }
                    .instrument(span)
                }
            },
            {
                let rollout_store = rollout_store.clone();
                move |run, error, sharded: Arc<Sharded<RunnerContext>>| {
                    let shard = shard::of_run(&run, &rollout_store, count);
                    run_error_policy(run, error, sharded.contexts[shard.index()].clone())
                }
            },
            runner_ctx,
        )
        .for_each(|_| futures::future::ready(()));

    // Undecodable objects have no shard to speak of: the holder of the first reports them all.
    let reporter = undecodable::report(ctx.contexts[0].clone(), acting[0].subscribe());
    let rollouts = controller
        .with_config(
            kube::runtime::controller::Config::default()
                .concurrency(options.reconcile_concurrency.max(1)),
        )
        .owns_stream(rs_stream)
        .owns_stream(run_stream)
        .watches_stream(svc_stream, services_to_rollouts)
        .watches_stream(template_stream, templates_to_rollouts)
        .watches_stream(cluster_template_stream, cluster_templates_to_rollouts)
        .shutdown_on_signal()
        .run(
            move |rollout, sharded: Arc<Sharded<Context>>| {
                let shard = shard::of_rollout(&rollout, count).shard();
                let span = info_span!("reconcile", rollout = %rollout.name_any(), namespace = rollout.namespace().unwrap_or_default(), %shard);
                async move {
                    if !sharded.acts_on(shard) {
                        return Ok(Action::await_change());
                    }
                    let assignment = shard::of_rollout(&rollout, count);
                    let ctx = sharded.contexts[shard.index()].clone();
                    if let Assignment::Invalid { label, .. } = &assignment {
                        sharded.report_invalid_label(&rollout, label, &ctx).await;
                    }
                    reconcile(rollout, ctx).await
                }
                .instrument(span)
            },
            |rollout, error, sharded: Arc<Sharded<Context>>| {
                let shard = shard::of_rollout(&rollout, count).shard();
                error_policy(rollout, error, sharded.contexts[shard.index()].clone())
            },
            ctx,
        )
        .for_each(|_| futures::future::ready(()));
    let controllers = async {
        let both = async {
            futures::join!(rollouts, runner);
        };
        futures::pin_mut!(both);
        tokio::select! {
            () = &mut both => {}
            // It ends only once this replica can no longer act; the controllers finish alone.
            () = reporter => both.await,
        }
    };
    match options.leader_election {
        None => controllers.await,
        Some(election) if count == ShardCount::ONE => {
            let mut elector = Elector::new(unlimited, election, leases.get(0), metrics);
            let lost = tokio::select! {
                () = controllers => None,
                lost = elector.run() => Some(lost),
            };
            if let Some(lost) = lost {
                // Returning drops the controllers' reconciles where they stand; the gate has
                // refused their writes since the deadline.
                return Err(lost.into());
            }
            elector.release().await;
        }
        Some(election) => {
            let mut elector = ShardElector::new(unlimited, election, count, leases, metrics);
            let lost = tokio::select! {
                () = controllers => None,
                lost = elector.run() => Some(lost),
            };
            if let Some(lost) = lost {
                return Err(lost.into());
            }
            elector.release().await;
        }
    }
    info!("controller stopped");
    Ok(())
}

/// The per-shard contexts of one controller, and whether this replica acts on each shard.
struct Sharded<C> {
    count: ShardCount,
    contexts: Vec<Arc<C>>,
    acting: Arc<Vec<watch::Sender<bool>>>,
    /// (uid, label) of the rollouts whose invalid shard label this process reported.
    reported: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl<C> Sharded<C> {
    fn acts_on(&self, shard: shard::Shard) -> bool {
        *self.acting[shard.index()].borrow()
    }
}

impl Sharded<Context> {
    /// A Warning Event, once per rollout and label value: the label is never silently ignored.
    async fn report_invalid_label(&self, rollout: &Rollout, label: &str, ctx: &Context) {
        let key = (rollout.uid().unwrap_or_default(), label.to_owned());
        {
            let reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
            if reported.contains(&key) {
                return;
            }
        }
        let event = kube::runtime::events::Event {
            type_: kube::runtime::events::EventType::Warning,
            reason: "InvalidShardLabel".into(),
            note: Some(format!(
                "label {}={label:?} names no shard of {}: reconciled on its hashed shard {} \
                 instead",
                shard::SHARD_LABEL,
                self.count.get(),
                shard::of_rollout(rollout, self.count).shard()
            )),
            action: "Reconcile".into(),
            secondary: None,
        };
        let reference = kube::Resource::object_ref(rollout, &());
        match ctx.recorder.publish(&event, &reference).await {
            Ok(()) => {
                let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
                reported.insert(key);
            }
            Err(e) => warn!(error = %e, "publishing the invalid shard label Event"),
        }
    }
}

/// Every store and what is needed to check it against the cluster.
struct Caches {
    client: Client,
    namespace: Option<String>,
    rollouts: reflector::Store<Rollout>,
    replica_sets: reflector::Store<ReplicaSet>,
    services: reflector::Store<Service>,
    runs: reflector::Store<AnalysisRun>,
    runner_runs: reflector::Store<AnalysisRun>,
    templates: reflector::Store<AnalysisTemplate>,
    cluster_templates: reflector::Store<ClusterAnalysisTemplate>,
    undecodable: Undecodables,
    runner_registry: Registry<AnalysisRun>,
}

impl Caches {
    async fn caught_up(&self) {
        let (client, namespace) = (&self.client, &self.namespace);
        let all = ListParams::default;
        let u = &self.undecodable;
        futures::join!(
            caught_up(
                api(client, namespace),
                all(),
                self.rollouts.clone(),
                &u.rollouts
            ),
            caught_up(
                api(client, namespace),
                all().labels(&crate::history::watched_selector()),
                self.replica_sets.clone(),
                &u.replica_sets
            ),
            caught_up(
                api(client, namespace),
                all(),
                self.services.clone(),
                &u.services
            ),
            caught_up(
                api(client, namespace),
                all(),
                self.runs.clone(),
                &u.analysis_runs
            ),
            caught_up(
                api(client, namespace),
                all(),
                self.runner_runs.clone(),
                &self.runner_registry
            ),
            caught_up(
                api(client, namespace),
                all(),
                self.templates.clone(),
                &u.templates
            ),
            caught_up(
                Api::all(client.clone()),
                all(),
                self.cluster_templates.clone(),
                &u.cluster_templates
            ),
        );
    }
}

/// Lets the controllers act on each shard once this replica holds it and its caches have caught
/// up since, and stops them when it no longer does. Ends when the controllers are gone.
async fn follow_leases(
    leases: Arc<ShardLeases>,
    acting: std::sync::Weak<Vec<watch::Sender<bool>>>,
    started_acting: Arc<watch::Sender<u64>>,
    ready: Arc<AtomicBool>,
    caches: Caches,
) {
    loop {
        let Some(acting) = acting.upgrade() else {
            return;
        };
        let now = std::time::Instant::now();
        let mut newly_held = Vec::new();
        for (shard, act) in acting.iter().enumerate() {
            let held = leases.get(shard).may_write(now);
            if held && !*act.borrow() {
                newly_held.push(shard);
            } else if !held && *act.borrow() {
                act.send_replace(false);
            }
        }
        if !newly_held.is_empty() && ready.load(Ordering::SeqCst) {
            caches.caught_up().await;
            let now = std::time::Instant::now();
            newly_held.retain(|shard| leases.get(*shard).may_write(now));
            for shard in &newly_held {
                acting[*shard].send_replace(true);
            }
            started_acting.send_modify(|generation| *generation += 1);
            if leases.count() == 1 {
                info!("leading, and the caches have caught up: reconciling");
            } else {
                info!(shards = ?newly_held, "holding, and the caches have caught up: reconciling");
            }
        }
        drop(acting);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tick each time `started` moves on: when this replica starts acting on a shard.
fn acting_started(started: watch::Receiver<u64>) -> impl futures::Stream<Item = ()> {
    futures::stream::unfold(started, |mut started| async move {
        started.changed().await.ok()?;
        Some(((), started))
    })
}

/// Returns once `store` holds every object a fresh list returns, at the listed resourceVersion
/// or a later one. A standby's watch may lag, or be reconnecting, when it takes over: planning
/// from a status older than the old leader's last write would repeat or undo its last step.
async fn caught_up<K>(
    api: Api<K>,
    params: ListParams,
    store: reflector::Store<K>,
    undecodable: &Registry<K>,
) where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&()).into_owned();
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        match api.list_metadata(&params).await {
            Ok(list) => {
                let behind =
                    list.items
                        .iter()
                        .filter(|listed| {
                            let mut key = ObjectRef::<K>::new(&listed.name_any());
                            if let Some(namespace) = listed.namespace() {
                                key = key.within(&namespace);
                            }
                            // An object that does not decode is cached in the registry instead.
                            let cached = store
                                .get(&key)
                                .and_then(|o| o.resource_version())
                                .or_else(|| {
                                    undecodable
                                        .get(&key)
                                        .and_then(|u| u.metadata.resource_version.clone())
                                });
                            !not_older(cached.as_deref(), listed.resource_version().as_deref())
                        })
                        .count();
                if behind == 0 {
                    return;
                }
                if !warned && started.elapsed() > Duration::from_secs(5) {
                    warn!(%kind, behind, "waiting for the cache to catch up before acting");
                    warned = true;
                }
            }
            Err(e) => warn!(%kind, error = %e, "listing to check the cache"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a cached resourceVersion is the listed one or later. They are etcd revisions on every
/// apiserver we know of; where one is not a number, only equality counts.
fn not_older(cached: Option<&str>, listed: Option<&str>) -> bool {
    match (cached, listed) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(cached), Some(listed)) => {
            cached == listed
                || matches!(
                    (cached.parse::<u64>(), listed.parse::<u64>()),
                    (Ok(cached), Ok(listed)) if cached >= listed
                )
        }
    }
}

/// The rollouts whose spec refers to a template (in `namespace`, or anywhere for a cluster one).
fn rollouts_using(
    rollouts: &reflector::Store<Rollout>,
    key: &TemplateKey,
    namespace: Option<String>,
) -> Vec<ObjectRef<Rollout>> {
    rollouts
        .state()
        .iter()
        .filter(|r| namespace.is_none() || r.namespace() == namespace)
        .filter(|r| referenced_templates(&r.spec).contains(key))
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_is_caught_up_at_the_listed_version_or_later() {
        assert!(not_older(Some("42"), Some("42")));
        assert!(not_older(Some("43"), Some("42")));
        assert!(!not_older(Some("41"), Some("42")));
        assert!(!not_older(None, Some("42")), "not in the cache yet");
        assert!(not_older(Some("a"), Some("a")));
        assert!(
            !not_older(Some("b"), Some("a")),
            "opaque: only equality counts"
        );
    }
}
