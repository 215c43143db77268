//! Loads the controller's REST API on the local control plane: GETs of one rollout at a steady
//! rate, first alone and then while many `wait` long-polls hang on a rollout that stays Paused,
//! and the controller's memory through it all.
//!
//!   cargo build --workspace --bins   # the controller runs as its own process, from beside us
//!   cargo run --release --example api-load -- [--waits 200] [--rate 50] [--seconds 30]
//!
//! Prints one table. The controller is the real `rollout-controller` binary (so /proc tells its
//! memory apart from ours), checking every call with TokenReview and SubjectAccessReview.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rollout_controller::crd::{Phase, Rollout, RolloutStatus};
use serde_json::json;
use sluice_tests::process::ManagedProcess;
use sluice_tests::procfs::Memory;
use sluice_tests::{ClusterOptions, ControlPlane, wait};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

const NAMESPACE: &str = "bench";
const ROLLOUT: &str = "web";
/// Waits are opened this long before the GETs start, so that every one is past authorization
/// and parked in the controller when the measured GETs begin.
const WAITS_SETTLE: Duration = Duration::from_secs(3);
/// How often the controller's RSS is read under load.
const RSS_SAMPLE: Duration = Duration::from_millis(500);
/// A GET slower than this counts as failed rather than stretching the run.
const GET_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "Load benchmark of the controller's REST API under many open `wait` calls")]
struct Args {
    /// Concurrent `wait?phase=Healthy` long-polls held open during the load phase.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=5000))]
    waits: u32,
    /// GETs per second, in both phases.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=2000))]
    rate: u32,
    /// Length of the GET phase under load, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
    /// Length of the baseline GET phase, with no waits open, in seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    baseline_seconds: u64,
    /// The waits' `timeout`, in seconds; it must outlast the GET phase. Default: --seconds + 10.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    wait_timeout: Option<u64>,
}

impl Args {
    fn wait_timeout(&self) -> Duration {
        Duration::from_secs(self.wait_timeout.unwrap_or(self.seconds + 10))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let gets_end = WAITS_SETTLE + Duration::from_secs(args.seconds);
    ensure!(
        args.wait_timeout() > gets_end,
        "--wait-timeout must outlast the {} s from opening the waits to the last GET",
        gets_end.as_secs()
    );
    let controller = controller_binary()?;
    sluice_tests::install_crypto_provider();
    let cluster = ControlPlane::start(ClusterOptions {
        // kwok's simulated pods only: no image here maps to a program, and `cargo run
        // --example` does not build the runner.
        run_pods: false,
        ..ClusterOptions::default()
    })
    .await?;
    // Dropping `bench` on Ctrl-C kills the controller; the control plane is stopped below.
    let outcome = tokio::select! {
        outcome = bench(&cluster, &controller, &args) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if let Some(kept) = cluster.stop(outcome.is_err()).await {
        eprintln!(
            "control plane and controller logs kept in {}",
            kept.display()
        );
    }
    outcome
}

/// `rollout-controller` from the target directory this example was built into: examples live in
/// `target/<profile>/examples/`, binaries one level up.
fn controller_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("no target directory above this example")?;
    let path = dir.join("rollout-controller");
    ensure!(
        path.is_file(),
        "{} not built (cargo build --workspace --bins, same profile as this example)",
        path.display()
    );
    Ok(path)
}

/// Two loopback ports for the controller. Both listeners are held until both are picked, so the
/// ports differ; the library's picker is private to it.
fn free_ports() -> anyhow::Result<[u16; 2]> {
    let first = std::net::TcpListener::bind("127.0.0.1:0")?;
    let second = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok([first.local_addr()?.port(), second.local_addr()?.port()])
}

async fn bench(cluster: &ControlPlane, program: &Path, args: &Args) -> anyhow::Result<()> {
    let client = cluster.admin_client().await?;
    sluice_tests::crds::install(&client, "sluice-bench").await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;

    let [health_port, api_port] = free_ports()?;
    let controller_args = vec![
        format!("--kubeconfig={}", cluster.admin_kubeconfig().display()),
        format!("--namespace={NAMESPACE}"),
        format!("--health-addr=127.0.0.1:{health_port}"),
        format!("--api-addr=127.0.0.1:{api_port}"),
        "--api-auth=kubernetes".into(),
    ];
    let mut controller = ManagedProcess::spawn(
        "rollout-controller",
        program,
        &controller_args,
        &cluster.dir().join("logs"),
    )?;
    let outcome = measure(&client, &controller, health_port, api_port, args).await;
    controller.stop().await;
    let report =
        outcome.with_context(|| format!("controller log: {}", controller.log().display()))?;
    report.print(args);
    Ok(())
}

async fn measure(
    client: &Client,
    controller: &ManagedProcess,
    health_port: u16,
    api_port: u16,
    args: &Args,
) -> anyhow::Result<Report> {
    let pid = controller.pid();
    let probe = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let readyz = format!("http://127.0.0.1:{health_port}/readyz");
    wait::until::<_, anyhow::Error, _, _>(
        "the controller's /readyz to answer 200",
        Duration::from_secs(60),
        || async {
            controller.ensure_running()?;
            let ready = probe.get(&readyz).send().await.ok();
            Ok(ready.filter(|r| r.status() == 200).map(|_| ()))
        },
    )
    .await?;

    pause_a_canary(client).await?;
    let token = sluice_tests::tokens::service_account_token(
        client,
        NAMESPACE,
        "bench",
        &["get", "list", "update"],
    )
    .await?;

    let base =
        format!("http://127.0.0.1:{api_port}/api/v1/namespaces/{NAMESPACE}/rollouts/{ROLLOUT}");
    let gets = reqwest::Client::builder().timeout(GET_TIMEOUT).build()?;
    let first = gets.get(&base).bearer_auth(&token).send().await?;
    let status = first.status();
    ensure!(
        status == 200,
        "a first GET answered {status}: {}",
        first.text().await?
    );

    // Whatever the first reconciles and the first call allocated is in place before "idle".
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = Memory::read(pid)?;
    let baseline = get_at_rate(
        &gets,
        &base,
        &token,
        args.rate,
        Duration::from_secs(args.baseline_seconds),
    )
    .await;

    let peak = Arc::new(AtomicU64::new(Memory::read(pid)?.rss_kib));
    let wait_timeout = args.wait_timeout();
    let sampler = {
        let peak = peak.clone();
        // Bounded by count as well as by the abort below.
        let samples =
            (wait_timeout + Duration::from_secs(120)).as_millis() / RSS_SAMPLE.as_millis();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(RSS_SAMPLE);
            for _ in 0..samples {
                ticker.tick().await;
                if let Ok(m) = Memory::read(pid) {
                    peak.fetch_max(m.rss_kib, Ordering::Relaxed);
                }
            }
        })
    };
    let waits = open_waits(&base, &token, args.waits, wait_timeout)?;
    tokio::time::sleep(WAITS_SETTLE).await;
    controller.ensure_running()?;
    let loaded = get_at_rate(
        &gets,
        &base,
        &token,
        args.rate,
        Duration::from_secs(args.seconds),
    )
    .await;
    let waited = collect_waits(waits, wait_timeout).await;
    sampler.abort();
    controller.ensure_running()?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = Memory::read(pid)?;

    Ok(Report {
        baseline,
        loaded,
        waits: waited,
        wait_timeout,
        idle_rss_kib: idle.rss_kib,
        peak_rss_kib: peak.load(Ordering::Relaxed).max(after.rss_kib),
        after_rss_kib: after.rss_kib,
        hwm_kib: after.peak_rss_kib,
    })
}

/// A Service `web`, and a canary Rollout `web` that reaches Healthy on web:1 and then, on web:2,
/// stops at its `pause: {}` step, where it stays: nothing here promotes it.
async fn pause_a_canary(client: &Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
            }))?,
        )
        .await?;
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), NAMESPACE);
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": ROLLOUT},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "app", "image": "web:1"}]}},
            "strategy": {"canary": {"steps": [{"setWeight": 25}, {"pause": {}}]}},
        },
    }))?;
    rollouts.create(&PostParams::default(), &rollout).await?;
    status_until(&rollouts, "web:1 to be Healthy", |s| {
        s.phase == Phase::Healthy
    })
    .await?;
    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}});
    rollouts
        .patch(ROLLOUT, &PatchParams::default(), &Patch::Merge(&image))
        .await?;
    status_until(&rollouts, "web:2 to pause at step 1", |s| {
        s.phase == Phase::Paused && s.current_step_index == Some(1)
    })
    .await
}

async fn status_until(
    rollouts: &Api<Rollout>,
    what: &str,
    check: impl Fn(&RolloutStatus) -> bool,
) -> anyhow::Result<()> {
    let check = &check;
    wait::until::<_, anyhow::Error, _, _>(what, Duration::from_secs(90), || async move {
        let status = rollouts.get(ROLLOUT).await?.status.unwrap_or_default();
        Ok(check(&status).then_some(()))
    })
    .await
}

/// How one request ended: its HTTP status (`None`: no response), and how long it took.
struct Outcome {
    status: Option<u16>,
    took: Duration,
}

/// `rate` GETs a second for `length`, each on its own task so that a slow one does not hold up
/// the schedule. Latency counts from the tick a request was due at, so time it spent waiting for
/// our own runtime is charged to it rather than hidden.
async fn get_at_rate(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    rate: u32,
    length: Duration,
) -> Vec<Outcome> {
    let count = u64::from(rate) * length.as_secs();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut requests = JoinSet::new();
    for _ in 0..count {
        let due = ticker.tick().await;
        let request = http.get(url).bearer_auth(token);
        requests.spawn(async move {
            let status = answered(request).await;
            Outcome {
                status,
                took: due.elapsed(),
            }
        });
    }
    // Every request has the client's timeout, so this ends.
    requests.join_all().await
}

/// The status of a request whose whole body arrived; `None` when it failed on the way.
async fn answered(request: reqwest::RequestBuilder) -> Option<u16> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    response.bytes().await.ok().map(|_| status)
}

/// Opens `count` long-polls for a phase the rollout will not reach. Each gets a client of its
/// own, so none of them shares a connection with another or with the GETs.
fn open_waits(
    base: &str,
    token: &str,
    count: u32,
    timeout: Duration,
) -> anyhow::Result<JoinSet<Outcome>> {
    let url = format!("{base}/wait?phase=Healthy&timeout={}s", timeout.as_secs());
    let http = reqwest::Client::builder()
        .timeout(timeout + Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()?;
    let mut waits = JoinSet::new();
    for _ in 0..count {
        let request = http.get(&url).bearer_auth(token);
        waits.spawn(async move {
            let sent = Instant::now();
            let status = answered(request).await;
            Outcome {
                status,
                took: sent.elapsed(),
            }
        });
    }
    Ok(waits)
}

async fn collect_waits(mut waits: JoinSet<Outcome>, timeout: Duration) -> Vec<Outcome> {
    let deadline = Instant::now() + timeout + Duration::from_secs(60);
    let mut ended = Vec::with_capacity(waits.len());
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, waits.join_next()).await {
        if let Ok(outcome) = joined {
            ended.push(outcome);
        }
    }
    waits.abort_all();
    ended
}

struct Report {
    baseline: Vec<Outcome>,
    loaded: Vec<Outcome>,
    waits: Vec<Outcome>,
    wait_timeout: Duration,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    after_rss_kib: u64,
    hwm_kib: u64,
}

/// The nearest-rank quantile `q` of `sorted`.
fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// Non-200 answers by status, for the line under the table; `error` is no response at all.
fn non_200(outcomes: &[Outcome], expected: u16) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.status != Some(expected)) {
        let key = o.status.map_or_else(|| "error".into(), |s| s.to_string());
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

impl Report {
    fn print(&self, args: &Args) {
        let t = self.wait_timeout;
        println!(
            "REST API load: GET .../rollouts/{ROLLOUT} at {}/s; {} waits (timeout {} s) open under load",
            args.rate,
            args.waits,
            t.as_secs()
        );
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "GET latency (ms)", "requests", "non-200", "p50", "p90", "p99", "max"
        );
        for (name, outcomes) in [("baseline", &self.baseline), ("under load", &self.loaded)] {
            let mut took: Vec<Duration> = outcomes.iter().map(|o| o.took).collect();
            took.sort();
            let at = |q| quantile(&took, q).map(ms);
            println!(
                "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                outcomes.len(),
                non_200(outcomes, 200).values().sum::<usize>(),
                cell(at(0.5)),
                cell(at(0.9)),
                cell(at(0.99)),
                cell(at(1.0)),
            );
        }

        let mut overshoot: Vec<f64> = self
            .waits
            .iter()
            .filter(|o| o.status == Some(504))
            .map(|o| ms(o.took) - ms(t))
            .collect();
        overshoot.sort_by(f64::total_cmp);
        println!(
            "{:<22} {:>9} {:>9} {:>19} {:>19}",
            "waits", "count", "504", "median past T (ms)", "max past T (ms)"
        );
        println!(
            "{:<22} {:>9} {:>9} {:>19} {:>19}",
            "",
            self.waits.len(),
            overshoot.len(),
            cell(quantile(&overshoot, 0.5)),
            cell(quantile(&overshoot, 1.0)),
        );

        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>9}",
            "controller (MiB)", "idle RSS", "peak RSS", "after", "HWM"
        );
        println!(
            "{:<22} {:>9} {:>9} {:>9} {:>9}",
            "",
            mib(self.idle_rss_kib),
            mib(self.peak_rss_kib),
            mib(self.after_rss_kib),
            mib(self.hwm_kib),
        );

        for (name, outcomes, expected) in [
            ("baseline GETs", &self.baseline, 200),
            ("GETs under load", &self.loaded, 200),
            ("waits", &self.waits, 504),
        ] {
            let others = non_200(outcomes, expected);
            if !others.is_empty() {
                println!("{name} not {expected}: {others:?}");
            }
        }
        let missing = (args.waits as usize).saturating_sub(self.waits.len());
        if missing > 0 {
            println!("waits that never ended: {missing}");
        }
    }
}
