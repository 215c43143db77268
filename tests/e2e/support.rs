//! What every e2e test shares: the runtime, the one control plane, fresh namespaces.

use std::future::Future;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use libtest_mimic::{Failed, Trial};
use serde_json::json;
use sluice_tests::traefik::Traefik;
use sluice_tests::{ClusterOptions, ControlPlane, wait};
use tokio::runtime::Runtime;
use tokio::sync::OnceCell;

pub(crate) use sluice_tests::controller::{RunningController, free_port};
pub(crate) use sluice_tests::demo_pods::{
    DEMO_APP_FAILURE_THRESHOLD, DEMO_APP_PORT, DEMO_APP_PROBE_PERIOD_S, demo_app_container,
};

pub(crate) static ENV: LazyLock<Env> = LazyLock::new(Env::new);

/// A generous bound for the cluster to reach a state; tests pass in a few seconds.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it yields a value, for up to [`DEADLINE`]; the error names `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    wait::until::<T, anyhow::Error, F, Fut>(what, DEADLINE, check).await
}

pub(crate) struct Env {
    runtime: Runtime,
    cluster: OnceCell<Result<ControlPlane, String>>,
    crds: OnceCell<Result<(), String>>,
    traefik: OnceCell<Result<Traefik, String>>,
    namespaces: AtomicUsize,
}

/// A namespace made for one test, deleted when the test ends.
#[derive(Clone)]
pub(crate) struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl Env {
    fn new() -> Self {
        sluice_tests::install_crypto_provider();
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                eprintln!("cannot start the tokio runtime: {e}");
                std::process::exit(2);
            }
        };
        Self {
            runtime,
            cluster: OnceCell::new(),
            crds: OnceCell::new(),
            traefik: OnceCell::new(),
            namespaces: AtomicUsize::new(0),
        }
    }

    /// The control plane, started by the first test that asks for it. A failed start fails
    /// every test that needs it, with the same message, and is not retried.
    pub(crate) async fn cluster(&self) -> anyhow::Result<&ControlPlane> {
        let started = self
            .cluster
            .get_or_init(|| async {
                let options = ClusterOptions::from_env().map_err(|e| e.to_string())?;
                match ControlPlane::start(options).await {
                    Ok(cluster) => {
                        eprintln!(
                            "control plane up in {:.1}s at {} (kubeconfig {})",
                            cluster.started_in().as_secs_f64(),
                            cluster.api_server_url(),
                            cluster.admin_kubeconfig().display()
                        );
                        Ok(cluster)
                    }
                    Err(e) => Err(format!("starting the control plane: {e}")),
                }
            })
            .await;
        started.as_ref().map_err(|e| anyhow!("{e}"))
    }

    /// Sluice's CRDs, installed once per run with server-side apply, as users install them.
    pub(crate) async fn install_crds(&self) -> anyhow::Result<()> {
        let installed = self
            .crds
            .get_or_init(|| async {
                let install = async {
                    let client = self.cluster().await?.admin_client().await?;
                    sluice_tests::crds::install(&client, "sluice-e2e").await?;
                    sluice_tests::crds::install_gateway_api(&client, "sluice-e2e").await?;
                    anyhow::Ok(())
                };
                install
                    .await
                    .map_err(|e: anyhow::Error| format!("installing the CRDs: {e:#}"))
            })
            .await;
        installed.clone().map_err(|e| anyhow!("{e}"))
    }

    /// Traefik in front of the pods, started by the first test that asks for it (after the
    /// CRDs, the Gateway API's among them), stopped with the control plane. A failed start
    /// fails every test that needs it, with the same message.
    pub(crate) async fn traefik(&self) -> anyhow::Result<&Traefik> {
        let started = self
            .traefik
            .get_or_init(|| async {
                let start = async {
                    self.install_crds().await?;
                    let traefik = Traefik::start(self.cluster().await?).await?;
                    eprintln!(
                        "traefik up: web entrypoint {}, providersThrottleDuration {:?}, log {}",
                        traefik.web_addr(),
                        sluice_tests::traefik::PROVIDERS_THROTTLE,
                        traefik.log().display()
                    );
                    anyhow::Ok(traefik)
                };
                start
                    .await
                    .map_err(|e: anyhow::Error| format!("starting Traefik: {e:#}"))
            })
            .await;
        started.as_ref().map_err(|e| anyhow!("{e}"))
    }

    /// Runs `test` in a fresh namespace named after `prefix`, then deletes the namespace,
    /// whatever the outcome.
    pub(crate) async fn in_namespace<F, Fut>(&self, prefix: &str, test: F) -> anyhow::Result<()>
    where
        F: FnOnce(TestNamespace) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let cluster = self.cluster().await?;
        let client = cluster.admin_client().await?;
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{n}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"sluice.dev/e2e": "true"}}
        }))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let outcome = test(TestNamespace {
            name: name.clone(),
            client,
        })
        .await;
        if let Err(e) = namespaces.delete(&name, &DeleteParams::default()).await {
            eprintln!("could not delete namespace {name}: {e}");
        }
        outcome
    }

    /// Stops the control plane on Ctrl-C or SIGTERM, so that an interrupted run leaves nothing
    /// behind (its processes do not share our terminal's process group).
    pub(crate) fn stop_on_signal(&'static self) {
        self.runtime.spawn(async move {
            let mut terminate =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(signal) => signal,
                    Err(e) => {
                        eprintln!("cannot listen for SIGTERM: {e}");
                        return;
                    }
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            eprintln!("interrupted: stopping the control plane");
            if let Some(Ok(traefik)) = self.traefik.get() {
                traefik.stop().await;
            }
            if let Some(Ok(cluster)) = self.cluster.get() {
                cluster.stop(false).await;
            }
            std::process::exit(130);
        });
    }

    /// Stops the control plane; after a failure its logs are kept, and their place printed.
    pub(crate) fn teardown(&self, failed: bool) {
        if let Some(Ok(traefik)) = self.traefik.get() {
            self.runtime.block_on(traefik.stop());
        }
        if let Some(Ok(cluster)) = self.cluster.get()
            && let Some(kept) = self.runtime.block_on(cluster.stop(failed))
        {
            eprintln!("control plane logs kept in {}", kept.join("logs").display());
        }
    }
}

pub(crate) fn object<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
) -> anyhow::Result<T> {
    Ok(serde_json::from_value(value)?)
}

/// A pod template labelled `app` of one [`demo_app_container`] of `version`, with `env` added to
/// the container's.
pub(crate) fn demo_app_template(
    app: &str,
    version: &str,
    env: serde_json::Value,
    grace_seconds: u64,
) -> serde_json::Value {
    let mut container = demo_app_container(version);
    if let (Some(all), Some(more)) = (container["env"].as_array_mut(), env.as_array()) {
        all.extend(more.iter().cloned());
    }
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": grace_seconds,
            "containers": [container],
        },
    })
}

/// A Service `app` on port 80 in front of the demo-app pods labelled `app`.
pub(crate) async fn demo_app_service(client: &Client, ns: &str, app: &str) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    services
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": app},
                "spec": {
                    "selector": {"app": app},
                    "ports": [{"port": 80, "targetPort": DEMO_APP_PORT}],
                },
            }))?,
        )
        .await?;
    Ok(())
}

/// Every endpoint in the EndpointSlices of `service`, whatever its conditions.
pub(crate) async fn endpoints(
    client: &Client,
    ns: &str,
    service: &str,
) -> anyhow::Result<Vec<Endpoint>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .flat_map(|slice| slice.endpoints.into_iter().flatten())
        .collect())
}

/// The ready endpoints in the EndpointSlices of `service`.
pub(crate) async fn ready_endpoints(
    client: &Client,
    ns: &str,
    service: &str,
) -> anyhow::Result<Vec<Endpoint>> {
    let mut all = endpoints(client, ns, service).await?;
    all.retain(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true));
    Ok(all)
}

/// A refusal must come from the apiserver's (or kubectl's) judgement of an object, never from a
/// control plane that did not answer: `said` is kubectl's stderr.
pub(crate) fn kubectl_reached_the_apiserver(said: &str) -> anyhow::Result<()> {
    for broken in [
        "Unable to connect",
        "connection refused",
        "i/o timeout",
        "currently unable",
    ] {
        anyhow::ensure!(
            !said.contains(broken),
            "kubectl could not ask the apiserver: {said}"
        );
    }
    Ok(())
}

/// The Events in `ns` with `reason`.
pub(crate) async fn events_with_reason(
    client: &Client,
    ns: &str,
    reason: &str,
) -> anyhow::Result<Vec<CoreEvent>> {
    let events: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

/// A libtest-mimic trial that runs an async test on the shared runtime.
pub(crate) fn trial<Fut>(name: &'static str, test: fn(&'static Env) -> Fut) -> Trial
where
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Trial::test(name, move || {
        ENV.runtime
            .block_on(test(&ENV))
            .map_err(|e| Failed::from(format!("{e:#}")))
    })
}

/// (currentStepIndex, canary weight) pairs, in the order they were seen.
pub(crate) type StepHistory = std::sync::Arc<std::sync::Mutex<Vec<(i32, i32)>>>;

/// (currentStepIndex, canary weight) of rollout `name`, in the order a watch sees them while an
/// update is in progress (updated revision not yet stable), each change once; until the task is
/// aborted.
pub(crate) fn watch_step_history(
    client: &Client,
    ns: &str,
    name: &str,
) -> (StepHistory, tokio::task::JoinHandle<()>) {
    watch_rollout(client, ns, name, |r| {
        let status = r.status.unwrap_or_default();
        (status.updated_revision != status.stable_revision).then(|| {
            (
                status.current_step_index.unwrap_or(0),
                status.canary.map_or(0, |c| c.weight),
            )
        })
    })
}

/// What `pick` makes of rollout `name` each time a watch sees it, each change once, in order;
/// until the task is aborted.
pub(crate) fn watch_rollout<T: PartialEq + Send + 'static>(
    client: &Client,
    ns: &str,
    name: &str,
    pick: impl Fn(rollout_controller::crd::Rollout) -> Option<T> + Send + 'static,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<T>>>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    use rollout_controller::crd::Rollout;

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let mut stream = watcher(
        rollouts,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .boxed();
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) = event
                    && let Some(value) = pick(r)
                {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    if seen.last() != Some(&value) {
                        seen.push(value);
                    }
                }
            }
        })
    };
    (seen, task)
}
