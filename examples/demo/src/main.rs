//! Sluice's one-command demo: `cargo run --bin demo`.
//!
//! Starts the local control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok), Prometheus, Traefik and the controller, all on 127.0.0.1; installs the
//! CRDs and examples/demo/app.yaml (a canary Rollout with a sequential analysis, routed by
//! Traefik as ingress-nginx or, with `--router gateway`, as a Gateway API implementation), whose
//! pods the harness's pod runner runs as demo-app processes on their own pod IPs; and a steady
//! client sending its requests through Traefik, counting which version answered each. Then it
//! ships v2, which rolls out step by step, and v3, whose pod template makes demo-app fail 5% of
//! requests, which Sluice aborts by itself — shown live with `kubectl-sluice get rollout web -w`
//! — and ends with a summary. Ctrl-C stops everything it started and removes its files.

mod console;
mod manifests;
mod narrate;
mod observe;
mod pods;
mod prereq;
mod summary;
mod view;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use rollout_controller::crd::analysis::{AnalysisRun, ROLLOUT_LABEL};
use rollout_controller::crd::{Phase, Rollout};
use serde_json::json;
use sluice_tests::load::{Load, LoadSpec, Tally};
use sluice_tests::process::ManagedProcess;
use sluice_tests::prometheus_live::{LivePrometheus, PodScrape};
use sluice_tests::traefik::Traefik;
use sluice_tests::{ClusterOptions, ControlPlane};
use tokio::task::JoinSet;

use crate::console::Console;
use crate::manifests::{FIELD_MANAGER, Release, Router};
use crate::narrate::History;
use crate::observe::Watched;
use crate::summary::{ClientRun, Report, Shipped};
use crate::view::{Footer, LiveView};

const NAMESPACE: &str = "demo";
const ROLLOUT: &str = "web";
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// Bounds on each wait: the whole demo takes about two minutes.
const V1_TIMEOUT: Duration = Duration::from_secs(120);
const V2_TIMEOUT: Duration = Duration::from_secs(180);
const V3_TIMEOUT: Duration = Duration::from_secs(120);
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(30);
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The client stops by itself after this long: longer than every wait above together.
const LOAD_LIMIT: Duration = Duration::from_secs(600);
/// The footer's share is of the answers to requests sent this long back.
const RECENT: Duration = Duration::from_secs(5);
/// How long the view lingers on a finished state before the demo moves on.
const LINGER: Duration = Duration::from_secs(5);

#[derive(Parser)]
#[command(
    name = "demo",
    about = "Sluice's demo: a local cluster, Prometheus, Traefik and the controller; v2 rolls out, v3 (5% errors) is aborted by the analysis, measured by a client through Traefik"
)]
struct Cli {
    /// Requests per second the client sends through Traefik.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// What Sluice writes its weights to, and Traefik routes by: app.yaml's Ingress with
    /// ingress-nginx's canary annotations, or an HTTPRoute on the Gateway API.
    #[arg(long, value_enum, default_value_t = Router::Nginx)]
    router: Router,
    /// Keep the logs (control plane, Prometheus, controller, each demo-app) after a successful
    /// run too; after a failure they are always kept.
    #[arg(long)]
    keep_logs: bool,
}

/// Everything the demo started, so that it can all be stopped, whatever point it reached.
struct Demo {
    console: Console,
    logs: tempfile::TempDir,
    cluster: Option<ControlPlane>,
    prometheus: Option<Arc<LivePrometheus>>,
    traefik: Option<Traefik>,
    controller: Option<ManagedProcess>,
    /// The client; dropping its last handle stops it.
    load: Option<Arc<Load>>,
    view: Option<LiveView>,
    tasks: JoinSet<()>,
}

#[tokio::main]
async fn main() -> ExitCode {
    sluice_tests::install_crypto_provider();
    let cli = Cli::parse();
    let console = Console::new(std::io::stdout().is_terminal());
    let logs = match tempfile::Builder::new().prefix("sluice-demo-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: creating a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut demo = Demo {
        console: console.clone(),
        logs,
        cluster: None,
        prometheus: None,
        traefik: None,
        controller: None,
        load: None,
        view: None,
        tasks: JoinSet::new(),
    };
    let mut interrupted_by = None;
    let outcome = tokio::select! {
        outcome = run(&cli, &mut demo) => outcome,
        signal = interrupted() => {
            interrupted_by = Some(signal);
            Err(anyhow::anyhow!("interrupted ({signal})"))
        }
    };
    // The view first, so that it does not paint over what comes next.
    if let Some(view) = demo.view.take() {
        view.stop().await;
    }
    if let Err(e) = &outcome {
        eprintln!(
            "\n{}{e:#}",
            if interrupted_by.is_some() {
                ""
            } else {
                "error: "
            }
        );
    }
    println!("stopping everything the demo started …");
    // A failure keeps the logs to read; an interruption is the user's wish to stop and clean.
    let failed = outcome.is_err() && interrupted_by.is_none();
    let kept = demo.shutdown(failed || cli.keep_logs).await;
    match outcome {
        Ok(summary) => {
            print!("{summary}");
            println!(
                "wall time {:.1} s; everything stopped and removed",
                console.elapsed().as_secs_f64()
            );
            if let Some(kept) = kept {
                println!("logs kept in {}", kept.display());
            }
            ExitCode::SUCCESS
        }
        Err(_) => {
            if let Some(kept) = kept {
                eprintln!("logs kept in {}", kept.display());
            } else {
                eprintln!("everything stopped and removed");
            }
            // 130: the shell's code for a job ended by Ctrl-C.
            ExitCode::from(if interrupted_by.is_some() { 130 } else { 1 })
        }
    }
}

async fn interrupted() -> &'static str {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "Ctrl-C";
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = terminate.recv() => "SIGTERM",
    }
}

impl Demo {
    /// Stops everything in reverse order of start. Returns where the logs are when they are kept.
    async fn shutdown(mut self, keep_logs: bool) -> Option<PathBuf> {
        if let Some(view) = self.view.take() {
            view.stop().await;
        }
        self.tasks.shutdown().await;
        if let Some(load) = self.load.take() {
            match Arc::try_unwrap(load) {
                Ok(load) => drop(load.stop().await),
                // Still shared: it stops when its last handle goes.
                Err(shared) => drop(shared),
            }
        }
        if let Some(mut controller) = self.controller.take() {
            controller.stop().await;
        }
        if let Some(traefik) = self.traefik.take() {
            traefik.stop().await;
        }
        if let Some(prometheus) = self.prometheus.take() {
            match Arc::try_unwrap(prometheus) {
                Ok(prometheus) => prometheus.stop().await,
                // Still shared: dropping the last handle kills it.
                Err(shared) => drop(shared),
            }
        }
        let cluster_logs = match self.cluster.take() {
            Some(cluster) => cluster.stop(keep_logs).await,
            None => None,
        };
        let empty = std::fs::read_dir(self.logs.path()).map_or(true, |mut d| d.next().is_none());
        // Nothing started, nothing to read: a failed preflight leaves no directory behind.
        if !keep_logs || (empty && cluster_logs.is_none()) {
            return None;
        }
        let dir = self.logs.keep();
        if let Some(cluster) = cluster_logs {
            let _ = std::os::unix::fs::symlink(cluster.join("logs"), dir.join("control-plane"));
        }
        Some(dir)
    }
}

/// What the story needs, started by [`run`].
struct Stage<'a> {
    console: &'a Console,
    rollouts: Api<Rollout>,
    rollout_watch: &'a Watched<Rollout>,
    pods: Arc<Watched<Pod>>,
    load: Arc<Load>,
    router: Router,
    /// Traefik's `web` entrypoint, where the client sends.
    target: std::net::SocketAddr,
    /// The Host the client asks for (app.yaml's).
    host: String,
    rate: f64,
    history: &'a History,
    kubectl_sluice: &'a Path,
    kubeconfig: &'a Path,
    log_dir: &'a Path,
    health_url: String,
    prometheus_url: String,
}

async fn run(cli: &Cli, demo: &mut Demo) -> anyhow::Result<String> {
    let console = demo.console.clone();
    if !(cli.rate >= 10.0 && cli.rate <= 1000.0) {
        bail!("--rate {} is outside 10..=1000 requests a second", cli.rate);
    }
    let tools = prereq::check(&console).await?;
    let log_dir = demo.logs.path().to_path_buf();

    console.say(
        "starting the local control plane on 127.0.0.1: etcd, kube-apiserver, \
         kube-controller-manager, kube-scheduler, kwok (3 simulated nodes)",
    );
    let cluster = ControlPlane::start(ClusterOptions::from_env()?)
        .await
        .context("starting the control plane")?;
    let cluster = demo.cluster.insert(cluster);
    let control_plane_up = cluster.started_in();
    let kubeconfig = cluster.admin_kubeconfig().to_path_buf();
    let client = cluster.admin_client().await?;
    console.say(format!(
        "control plane up in {:.1} s at {} (KUBECONFIG={})",
        control_plane_up.as_secs_f64(),
        cluster.api_server_url(),
        kubeconfig.display()
    ));

    sluice_tests::crds::install(&client, FIELD_MANAGER)
        .await
        .context("installing the CRDs")?;
    console.say("installed Sluice's CRDs");

    let prometheus = Arc::new(
        LivePrometheus::discovering_pods(
            cluster,
            &PodScrape::namespace(NAMESPACE, SCRAPE_INTERVAL),
        )
        .await
        .context("starting Prometheus")?,
    );
    demo.prometheus = Some(prometheus.clone());
    console.say(format!(
        "Prometheus at {} finds the pods by Kubernetes service discovery and scrapes each every {} s",
        prometheus.url(),
        SCRAPE_INTERVAL.as_secs()
    ));

    let traefik = Traefik::start(cluster).await.context("starting Traefik")?;
    let traefik = demo.traefik.insert(traefik);
    console.say(format!(
        "Traefik {} up: its web entrypoint {} serves the Gateway {}/{} (Gateway API provider) \
         and IngressClass {} (ingress-nginx provider); it applies a route change {} ms after it \
         sees it (providersThrottleDuration)",
        sluice_tests::binaries::Versions::pinned()
            .map(|v| v.traefik)
            .unwrap_or_default(),
        traefik.web_addr(),
        sluice_tests::traefik::NAMESPACE,
        sluice_tests::traefik::GATEWAY,
        sluice_tests::traefik::INGRESS_CLASS,
        sluice_tests::traefik::PROVIDERS_THROTTLE.as_millis()
    ));

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {NAMESPACE}"))?;
    let documents = manifests::documents(prometheus.url(), cli.router)?;
    let host = manifests::host(&documents)?;
    let applied = manifests::apply(&client, NAMESPACE, documents).await?;
    console.say(format!(
        "applied examples/demo/app.yaml to namespace {NAMESPACE}: {}; routed by {}",
        applied.join(", "),
        cli.router.describe()
    ));

    let [health_port, api_port] = [free_port()?, free_port()?];
    let controller = ManagedProcess::spawn(
        "rollout-controller",
        &tools.controller,
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--namespace={NAMESPACE}"),
            format!("--health-addr=127.0.0.1:{health_port}"),
            format!("--api-addr=127.0.0.1:{api_port}"),
            // Loopback only, for the demo; the controller says so in its log.
            "--api-auth=none".into(),
        ],
        &log_dir,
    )?;
    let controller = demo.controller.insert(controller);
    let health_url = format!("http://127.0.0.1:{health_port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()?;
    sluice_tests::wait::until::<_, anyhow::Error, _, _>(
        "the controller to be ready",
        START_TIMEOUT,
        || async {
            controller.ensure_running()?;
            let ready = http
                .get(format!("{health_url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            Ok(ready.then_some(()))
        },
    )
    .await?;
    console.say(format!(
        "controller up (rollout-controller, watching namespace {NAMESPACE}): metrics at {health_url}/metrics, REST API at http://127.0.0.1:{api_port}"
    ));

    let (pod_watch, drive) = Watched::<Pod>::start(
        Api::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default(),
    );
    let pod_watch = Arc::new(pod_watch);
    demo.tasks.spawn(drive);
    let (rollout_watch, drive) = Watched::<Rollout>::start(
        Api::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default(),
    );
    demo.tasks.spawn(drive);
    let lists = async {
        pod_watch.ready().await?;
        rollout_watch.ready().await
    };
    tokio::time::timeout(START_TIMEOUT, lists)
        .await
        .context("waiting for the watches' first lists")??;

    // The site's users: from now on, whether or not Traefik routes the host yet.
    let target = traefik.web_addr();
    let load = Arc::new(
        Load::start(LoadSpec::new(target, &host, cli.rate, LOAD_LIMIT))
            .context("starting the client")?,
    );
    demo.load = Some(load.clone());
    console.say(format!(
        "client: {:.0} req/s to Traefik at {target}, Host {host}, for at most {} s",
        cli.rate,
        LOAD_LIMIT.as_secs()
    ));
    let history = History::default();
    let stage = Stage {
        console: &console,
        rollouts: Api::namespaced(client.clone(), NAMESPACE),
        rollout_watch: &rollout_watch,
        pods: pod_watch.clone(),
        load,
        router: cli.router,
        target,
        host,
        rate: cli.rate,
        history: &history,
        kubectl_sluice: &tools.kubectl_sluice,
        kubeconfig: &kubeconfig,
        log_dir: &log_dir,
        health_url,
        prometheus_url: prometheus.url().to_owned(),
    };
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), NAMESPACE);
    // The story, its narrator and the watchdog run side by side; any of them failing ends the
    // demo.
    let report = tokio::select! {
        report = story(&stage, &mut demo.view, &runs, control_plane_up) => report?,
        e = narrate::narrate(&rollout_watch, ROLLOUT, &history, &console) => return Err(e),
        e = watchdog(controller, &prometheus, traefik) => return Err(e),
    };
    Ok(report.render(&console))
}

/// Ends the demo, with the log's tail, as soon as the controller, Prometheus or Traefik exits:
/// a wait would otherwise only time out.
async fn watchdog(
    controller: &ManagedProcess,
    prometheus: &LivePrometheus,
    traefik: &Traefik,
) -> anyhow::Error {
    loop {
        if let Err(e) = controller.ensure_running() {
            return e.into();
        }
        if let Err(e) = prometheus.ensure_running() {
            return e.into();
        }
        if let Err(e) = traefik.ensure_running() {
            return e.into();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// v1 comes up, v2 rolls out, v3 is aborted.
async fn story(
    stage: &Stage<'_>,
    view: &mut Option<LiveView>,
    runs: &Api<AnalysisRun>,
    control_plane_up: Duration,
) -> anyhow::Result<Report> {
    let console = stage.console;
    let rate = stage.rate;
    let first = stage.rollouts.get(ROLLOUT).await?;
    let replicas = usize::try_from(first.spec.replicas).unwrap_or(1);
    console.say(format!(
        "waiting for v1: {replicas} pods, each a demo-app process on its pod IP, behind Service web-stable"
    ));
    let v1 = wait_rollout(stage, "v1 to become Healthy", V1_TIMEOUT, |ro| {
        settled(ro, first.metadata.generation.unwrap_or(1))
    })
    .await?;
    let v1_hash = v1
        .status
        .as_ref()
        .and_then(|s| s.stable_revision.clone())
        .context("v1 has no stable revision")?;
    sluice_tests::wait::until::<_, anyhow::Error, _, _>(
        "every v1 pod Ready",
        V1_TIMEOUT,
        || async {
            let running = pods::count_by_hash(&pods::running(&stage.pods.state()))
                .get(&v1_hash)
                .copied();
            Ok((running == Some(replicas)).then_some(()))
        },
    )
    .await?;
    sluice_tests::wait::until::<_, anyhow::Error, _, _>(
        "the client's first answer from v1 through Traefik",
        TRAFFIC_TIMEOUT,
        || async { Ok(answered_only(&stage.load, "v1").then_some(())) },
    )
    .await?;
    console.say(format!(
        "v1 ({v1_hash}) is stable: {replicas} ready pods; the client's {rate:.0} req/s reach them through Traefik"
    ));
    // Prometheus sends new targets to its scrapers at most every 5 s; the analysis's first
    // look must find stable's counters already there, or it would count them as new.
    let query =
        format!("sum by (pod) (http_requests_total{{rollouts_pod_template_hash=\"{v1_hash}\"}})");
    sluice_tests::wait::until::<_, anyhow::Error, _, _>(
        "Prometheus to scrape every v1 pod",
        TRAFFIC_TIMEOUT,
        || async { Ok((series(&stage.prometheus_url, &query).await >= replicas).then_some(())) },
    )
    .await?;
    console.say(format!(
        "Prometheus has the request counters of all {replicas} v1 pods"
    ));

    *view = Some(LiveView::start(
        stage.kubectl_sluice,
        stage.kubeconfig,
        NAMESPACE,
        ROLLOUT,
        stage.log_dir,
        console.clone(),
        footer(stage),
    )?);

    let v2_release = Release {
        version: "v2",
        error_rate: "0",
    };
    let v2 = ship(stage, &v2_release).await?;
    let done = wait_rollout(stage, "v2 to complete", V2_TIMEOUT, |ro| {
        settled(ro, v2.1) || aborted(ro, v2.1)
    })
    .await?;
    if aborted(&done, v2.1) {
        bail!(
            "v2 was aborted, which a healthy version should not be: {}",
            message(&done)
        );
    }
    let v2_hash = revision(&done, |s| s.stable_revision.clone())?;
    let v2_done = SystemTime::now();
    console.say(format!(
        "v2 ({v2_hash}) is stable, {:.1} s after it shipped; v3 ships in {} s",
        v2_done
            .duration_since(v2.0)
            .unwrap_or_default()
            .as_secs_f64(),
        LINGER.as_secs()
    ));
    tokio::time::sleep(LINGER).await;

    let v3_release = Release {
        version: "v3",
        error_rate: "0.05",
    };
    let v3 = ship(stage, &v3_release).await?;
    let end = wait_rollout(stage, "Sluice to abort v3", V3_TIMEOUT, |ro| {
        aborted(ro, v3.1) || settled(ro, v3.1)
    })
    .await?;
    if !aborted(&end, v3.1) {
        bail!("v3 was promoted: the analysis did not catch its 5% errors");
    }
    let v3_hash = revision(&end, |s| s.updated_revision.clone())?;
    let v3_aborted = SystemTime::now();
    console.say(format!(
        "Sluice aborted v3 ({v3_hash}), {:.1} s after it shipped: {}",
        v3_aborted
            .duration_since(v3.0)
            .unwrap_or_default()
            .as_secs_f64(),
        message(&end)
    ));
    sluice_tests::wait::until::<_, anyhow::Error, _, _>(
        "the client to hear only v2 again",
        TRAFFIC_TIMEOUT,
        || async { Ok(answered_only(&stage.load, "v2").then_some(())) },
    )
    .await?;
    console.say("the client hears only v2 again");
    tokio::time::sleep(LINGER).await;
    if let Some(view) = view.take() {
        view.stop().await;
    }

    let runs = runs
        .list(&ListParams::default().labels(&format!("{ROLLOUT_LABEL}={ROLLOUT}")))
        .await
        .context("listing the AnalysisRuns")?
        .items;
    Ok(Report {
        v2: Shipped {
            version: "v2".into(),
            describe: v2_release.describe(),
            hash: v2_hash,
            shipped_at: v2.0,
            ended_at: v2_done,
        },
        v3: Shipped {
            version: "v3".into(),
            describe: v3_release.describe(),
            hash: v3_hash,
            shipped_at: v3.0,
            ended_at: v3_aborted,
        },
        transitions: stage.history.all(),
        runs,
        controller_abort_latency: controller_abort_latency(&stage.health_url).await,
        client: ClientRun {
            router: stage.router,
            target: stage.target,
            host: stage.host.clone(),
            rate,
            started_at: stage.load.started_at(),
            records: stage.load.since(Duration::ZERO),
            dropped: stage.load.dropped(),
        },
        control_plane_up,
    })
}

/// Changes the pod template; returns when, and the generation it made.
async fn ship(stage: &Stage<'_>, release: &Release) -> anyhow::Result<(SystemTime, i64)> {
    stage.console.say(format!(
        "shipping {}: {}",
        release.version,
        release.describe()
    ));
    let at = SystemTime::now();
    let generation = manifests::ship(&stage.rollouts, ROLLOUT, release).await?;
    Ok((at, generation))
}

/// Waits, by the watch, until the rollout satisfies `done`; returns it then.
async fn wait_rollout(
    stage: &Stage<'_>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Rollout) -> bool,
) -> anyhow::Result<Rollout> {
    let mut changes = stage.rollout_watch.changes();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(rollout) = stage.rollout_watch.get(ROLLOUT)
            && done(&rollout)
        {
            return Ok((*rollout).clone());
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the rollout watch ended while waiting for {what}"),
            Err(_) => {
                let last = stage
                    .rollout_watch
                    .get(ROLLOUT)
                    .map(|ro| message(&ro))
                    .unwrap_or_default();
                bail!(
                    "timed out after {} s waiting for {what}; the rollout says: {last}",
                    timeout.as_secs()
                );
            }
        }
    }
}

/// The status is of `generation` or later.
fn observed(rollout: &Rollout, generation: i64) -> bool {
    rollout
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some_and(|g| g >= generation)
}

/// Healthy at `generation`, with the new version stable.
fn settled(rollout: &Rollout, generation: i64) -> bool {
    observed(rollout, generation)
        && rollout.status.as_ref().is_some_and(|s| {
            s.phase == Phase::Healthy
                && s.stable_revision.is_some()
                && s.stable_revision == s.updated_revision
        })
}

fn aborted(rollout: &Rollout, generation: i64) -> bool {
    observed(rollout, generation)
        && rollout
            .status
            .as_ref()
            .is_some_and(|s| s.abort || s.phase == Phase::Aborted)
}

fn message(rollout: &Rollout) -> String {
    rollout
        .status
        .as_ref()
        .map(|s| format!("{}: {}", s.phase.as_str(), s.message))
        .unwrap_or_default()
}

fn revision(
    rollout: &Rollout,
    pick: impl Fn(&rollout_controller::crd::RolloutStatus) -> Option<String>,
) -> anyhow::Result<String> {
    rollout
        .status
        .as_ref()
        .and_then(pick)
        .context("the rollout's status names no revision")
}

/// Whether every answer of the last second went to `version`, and there were some.
fn answered_only(load: &Load, version: &str) -> bool {
    let recent = Tally::of(&load.since(load.now().saturating_sub(Duration::from_secs(1))));
    recent.total > 0 && recent.count(version) == recent.total
}

/// Under the live view: what the client sees through Traefik — each version's share of the
/// latest answers, its ready pods and answers so far — and the latest events.
fn footer(stage: &Stage<'_>) -> Footer {
    let console = stage.console.clone();
    let load = stage.load.clone();
    let pods = stage.pods.clone();
    let heading = format!(
        "Client: {:.0} req/s through Traefik {} (Host {}; {})",
        stage.rate,
        stage.target,
        stage.host,
        stage.router.describe()
    );
    Arc::new(move || {
        let mut out = String::new();
        out.push_str(&heading);
        out.push('\n');
        let all = load.since(Duration::ZERO);
        let now = load.now();
        let recent = Tally::of(all.iter().filter(|r| r.sent + RECENT >= now));
        let answered: usize = recent.by_version.values().sum();
        let shares: Vec<String> = recent
            .by_version
            .iter()
            .map(|(version, n)| {
                format!(
                    "{version} {:.1}%",
                    *n as f64 * 100.0 / answered.max(1) as f64
                )
            })
            .collect();
        out.push_str(&format!(
            "  last {} s: {} of {answered} answers; {} failed (no answer, 502/503/504)\n",
            RECENT.as_secs(),
            if shares.is_empty() {
                "none".to_owned()
            } else {
                shares.join(", ")
            },
            recent.failed
        ));
        let processes = pods::count_by_version(&pods::running(&pods.state()));
        let total = Tally::of(&all);
        let versions: std::collections::BTreeSet<&String> =
            processes.keys().chain(total.by_version.keys()).collect();
        for version in versions {
            out.push_str(&format!(
                "  {version:<4} {:>2} ready pods {:>7} answers {:>5} answered 5xx\n",
                processes.get(version).copied().unwrap_or(0),
                total.count(version),
                total.server_errors_of(version)
            ));
        }
        out.push_str("Events:\n");
        for line in console.recent(5) {
            out.push_str(&format!("  {line}\n"));
        }
        out
    })
}

/// A port the kernel just handed out on loopback and we let go of, for the controller to bind.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// How many series an instant query returns now (0 when Prometheus cannot answer).
async fn series(prometheus_url: &str, query: &str) -> usize {
    let answer = async {
        let body: serde_json::Value = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .ok()?
            .get(format!("{prometheus_url}/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(body["data"]["result"].as_array()?.len())
    };
    answer.await.unwrap_or(0)
}

/// The controller's `sluice_abort_latency_seconds` histogram: (sum, count).
async fn controller_abort_latency(health_url: &str) -> Option<(f64, f64)> {
    let text = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .ok()?
        .get(format!("{health_url}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        value("sluice_abort_latency_seconds_sum ")?,
        value("sluice_abort_latency_seconds_count ")?,
    ))
}
