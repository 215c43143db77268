//! Measures the controller's reconcile latency on the local control plane: from a spec change
//! (acknowledged by the apiserver, so its watch event is out) to the status that answers it
//! (`status.observedGeneration` reaching the new generation, seen through a watch).
//!
//!   cargo run --release -p sluice-tests --example reconcile-latency [CHANGES]
//!
//! Prints one table. The controller runs in this process; every part is real.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use rollout_controller::controller::{Options, run};
use rollout_controller::crd::{Phase, Rollout};
use serde_json::json;
use sluice_tests::{ClusterOptions, ControlPlane, wait};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let changes: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(200);
    let cluster = ControlPlane::start(ClusterOptions {
        // kwok's simulated pods only: no image here maps to a program, and `cargo run
        // --example` does not build the runner.
        run_pods: false,
        ..ClusterOptions::default()
    })
    .await?;
    let outcome = measure(&cluster, changes).await;
    cluster.stop(false).await;
    outcome
}

async fn measure(cluster: &ControlPlane, changes: usize) -> anyhow::Result<()> {
    let client = cluster.admin_client().await?;
    sluice_tests::crds::install(&client, "sluice-bench").await?;
    let namespace = "bench";
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}}))?,
        )
        .await?;
    let controller = tokio::spawn(run(
        client.clone(),
        Options {
            namespace: Some(namespace.into()),
            health_addr: ([127, 0, 0, 1], 0).into(),
            analysis_concurrency: rollout_controller::controller::DEFAULT_ANALYSIS_CONCURRENCY,
            api_addr: None,
            api_auth: rollout_controller::controller::ApiAuth::Kubernetes,
            leader_election: None,
            shards: rollout_controller::shard::ShardCount::ONE,
            write_log: None,
        },
    ));

    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), namespace);
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": "web:1"}]}},
            "strategy": {"canary": {"steps": [{"pause": {}}]}},
        },
    }))?;
    rollouts.create(&PostParams::default(), &rollout).await?;
    wait::until::<_, anyhow::Error, _, _>(
        "the rollout to be Healthy",
        Duration::from_secs(60),
        || async {
            let status = rollouts.get("web").await?.status.unwrap_or_default();
            Ok((status.phase == Phase::Healthy).then_some(()))
        },
    )
    .await?;

    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(0i64);
    let mut stream = watcher(rollouts.clone(), watcher::Config::default()).boxed();
    let watch = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) = event {
                let observed = r.status.and_then(|s| s.observed_generation).unwrap_or(0);
                seen_tx.send_replace(observed);
            }
        }
    });

    let mut latencies = Vec::with_capacity(changes);
    for i in 0..changes {
        let patch = json!({"spec": {"paused": i % 2 == 0}});
        let started = Instant::now();
        let changed = rollouts
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        let generation = changed.metadata.generation.context("no generation")?;
        tokio::time::timeout(
            Duration::from_secs(30),
            seen_rx.wait_for(|g| *g >= generation),
        )
        .await
        .context("no status for a change within 30 s")??;
        latencies.push(started.elapsed());
    }
    watch.abort();
    controller.abort();

    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("reconcile latency: spec change acknowledged -> status.observedGeneration seen (ms)");
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>8}",
        "changes", "p50", "p90", "p99", "max"
    );
    println!(
        "{:>8} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
        latencies.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(1.0))
    );
    Ok(())
}
