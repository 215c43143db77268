//! Measures the pod runner at scale: a ReplicaSet of N demo-app pods on the local control plane,
//! each a real process in its own network namespace, Ready only once its readiness probe
//! passes; then all of them probing at steady state; then the ReplicaSet's deletion.
//!
//!   cargo build --release --workspace --bins   # the runner and demo-app run from beside us
//!   cargo run --release -p sluice-tests --example pod-bench -- [--pods 100] [--steady-seconds 20]
//!
//! Prints two tables: start-to-Ready latencies, and the runner's CPU time and memory (from
//! /proc) in each phase. Needs root, as the runner does. Every wait is bounded, and the
//! cluster is stopped (its namespaces with it) however the run ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use sluice_tests::pods::netns;
use sluice_tests::procfs::Reading;
use sluice_tests::quantile::quantile;
use sluice_tests::{ClusterOptions, ControlPlane, wait};
use tokio::sync::mpsc;

const NAMESPACE: &str = "pod-bench";
const IMAGE: &str = "registry.example.com/demo-app:v1";
/// Pods per kwok node at most (a node allows 110).
const PODS_PER_NODE: usize = 100;

#[derive(Parser)]
#[command(about = "Start-to-Ready latency and the pod runner's cost for N running pods")]
struct Args {
    /// How many demo-app pods to run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pods: u32,
    /// How long to measure the steady state, every pod Ready and probed every second.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
    steady_seconds: u64,
    /// How long the pods may take to become Ready, and then to be gone, each.
    #[arg(long, default_value_t = 180, value_parser = clap::value_parser!(u64).range(1..=1800))]
    timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_tests::install_crypto_provider();
    let args = Args::parse();
    let pods = args.pods as usize;
    let cluster = ControlPlane::start(ClusterOptions {
        nodes: cluster_nodes(pods),
        ..ClusterOptions::default()
    })
    .await
    .context(
        "starting the control plane (as root, after cargo build --release --workspace --bins)",
    )?;
    let outcome = bench(&cluster, &args).await;
    cluster.stop(false).await;
    let report = outcome?;
    report.print(&args);
    Ok(())
}

struct Report {
    nodes: usize,
    /// Each pod's time from its creation (seen by our watch) to its Ready condition (seen).
    start_to_ready: Vec<Duration>,
    all_ready_in: Duration,
    deleted_in: Duration,
    networks_left: usize,
    readings: [Reading; 4],
}

async fn bench(cluster: &ControlPlane, args: &Args) -> anyhow::Result<Report> {
    let pods_wanted = args.pods as usize;
    let timeout = Duration::from_secs(args.timeout_seconds);
    let runner = cluster
        .pid_of("pod-runner")
        .context("the cluster has no pod runner")?;
    let client = cluster.admin_client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let watch = tokio::spawn(watch_start_to_ready(pods.clone(), ready_tx));

    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let idle = Reading::take(runner)?;
    replica_sets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "bench"},
                "spec": {
                    "replicas": pods_wanted,
                    "selector": {"matchLabels": {"app": "bench"}},
                    "template": {
                        "metadata": {"labels": {"app": "bench"}},
                        "spec": {
                            "terminationGracePeriodSeconds": 5,
                            "containers": [{
                                "name": "app",
                                "image": IMAGE,
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": "http"},
                                    "periodSeconds": 1,
                                    "failureThreshold": 2,
                                },
                            }],
                        },
                    },
                },
            }))?,
        )
        .await?;
    let mut start_to_ready = Vec::with_capacity(pods_wanted);
    let deadline = tokio::time::Instant::now() + timeout;
    while start_to_ready.len() < pods_wanted {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(latency)) => start_to_ready.push(latency),
            Ok(None) => bail!("the pod watch ended"),
            Err(_) => bail!(
                "{} of {pods_wanted} pods Ready after {timeout:?}",
                start_to_ready.len()
            ),
        }
    }
    let ready = Reading::take(runner)?;
    watch.abort();

    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady = Reading::take(runner)?;
    let still_ready = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|p| is_ready(p))
        .count();
    ensure!(
        still_ready == pods_wanted,
        "{still_ready} of {pods_wanted} pods Ready at steady state"
    );
    let uids: Vec<String> = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();

    let deleting = Instant::now();
    replica_sets
        .delete("bench", &DeleteParams::background())
        .await?;
    wait::until::<_, anyhow::Error, _, _>("every pod to be gone", timeout, || async {
        Ok(pods
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await?;
    let deleted_in = deleting.elapsed();
    let gone = Reading::take(runner)?;
    let namespaces_now = netns::namespaces().await;
    let networks_left = uids
        .iter()
        .filter(|uid| namespaces_now.contains(&format!("{}-{uid}", netns::PREFIX)))
        .count();
    Ok(Report {
        nodes: cluster_nodes(pods_wanted),
        all_ready_in: ready.at - idle.at,
        start_to_ready,
        deleted_in,
        networks_left,
        readings: [idle, ready, steady, gone],
    })
}

fn cluster_nodes(pods: usize) -> usize {
    pods.div_ceil(PODS_PER_NODE).max(1)
}

/// Sends each pod's time from first sight to first seen Ready, once per pod.
async fn watch_start_to_ready(pods: Api<Pod>, ready: mpsc::UnboundedSender<Duration>) {
    let mut events = watcher::watcher(pods, watcher::Config::default()).boxed();
    let mut seen: HashMap<String, Option<Instant>> = HashMap::new();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            _ => continue,
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        let since = seen.entry(uid).or_insert_with(|| Some(Instant::now()));
        if is_ready(&pod)
            && let Some(first_seen) = since.take()
            && ready.send(first_seen.elapsed()).is_err()
        {
            return;
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    fn print(mut self, args: &Args) {
        self.start_to_ready.sort();
        let latencies = &self.start_to_ready;
        println!(
            "pod-bench: {} demo-app pods on {} kwok nodes, run by sluice-pod-runner",
            args.pods, self.nodes
        );
        println!();
        println!(
            "start to Ready (s): a pod's creation seen by a watch to its Ready condition seen"
        );
        println!(
            "{:>6} {:>7} {:>7} {:>7} {:>16}",
            "pods", "p50", "p99", "max", "all Ready after"
        );
        println!(
            "{:>6} {:>7.2} {:>7.2} {:>7.2} {:>16.2}",
            latencies.len(),
            quantile(latencies, 0.5).as_secs_f64(),
            quantile(latencies, 0.99).as_secs_f64(),
            quantile(latencies, 1.0).as_secs_f64(),
            self.all_ready_in.as_secs_f64(),
        );
        println!();
        println!(
            "pod runner, from /proc: CPU of its own and of the commands it waited for (ip), \
             resident memory at the end of each phase and its peak so far"
        );
        println!(
            "{:<28} {:>7} {:>7} {:>9} {:>9} {:>8} {:>9}",
            "phase", "wall s", "CPU s", "% of core", "ip CPU s", "RSS MiB", "peak MiB"
        );
        let [idle, ready, steady, gone] = &self.readings;
        let phases = [
            (format!("start: {} pods to Ready", args.pods), idle, ready),
            (format!("steady: {} probing", args.pods), ready, steady),
            (format!("delete: {} to all gone", args.pods), steady, gone),
        ];
        for (name, from, to) in phases {
            let wall = (to.at - from.at).as_secs_f64();
            let cpu = to.stat.cpu.saturating_sub(from.stat.cpu).as_secs_f64();
            let children = to
                .stat
                .children_cpu
                .saturating_sub(from.stat.children_cpu)
                .as_secs_f64();
            println!(
                "{:<28} {:>7.2} {:>7.2} {:>9.1} {:>9.2} {:>8.1} {:>9.1}",
                name,
                wall,
                cpu,
                100.0 * cpu / wall.max(f64::EPSILON),
                children,
                mib(to.memory.rss_kib),
                mib(to.memory.peak_rss_kib),
            );
        }
        println!();
        println!(
            "deleting the ReplicaSet: all {} pods gone in {:.2} s; network namespaces left: {}",
            args.pods,
            self.deleted_in.as_secs_f64(),
            self.networks_left
        );
    }
}
