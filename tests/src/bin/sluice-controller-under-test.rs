//! The rollout controller as a process of its own for e2e tests that kill and restart it; built
//! with the `fault-injection` feature, so `SLUICE_FAULT_EXIT_AFTER_WRITES=k` makes it exit right
//! after its k-th API write.
//!
//!   sluice-controller-under-test NAMESPACE HEALTH_ADDR    (kubeconfig from $KUBECONFIG)

use std::io::IsTerminal;

use anyhow::Context;
use rollout_controller::controller::{Options, run};
use rollout_controller::log_colour::log_colour;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Its log goes to a file the tests read: colour only as the controller itself decides it.
    let colour = log_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info,kube=warn"))
        .with_ansi(colour)
        .init();
    let mut args = std::env::args().skip(1);
    let namespace = args
        .next()
        .context("usage: sluice-controller-under-test NAMESPACE HEALTH_ADDR")?;
    let health_addr = args
        .next()
        .context("usage: sluice-controller-under-test NAMESPACE HEALTH_ADDR")?
        .parse()?;
    let client = kube::Client::try_default().await?;
    run(
        client,
        Options {
            namespace: Some(namespace),
            health_addr,
            analysis_concurrency: rollout_controller::controller::DEFAULT_ANALYSIS_CONCURRENCY,
            api_addr: None,
            api_auth: rollout_controller::controller::ApiAuth::Kubernetes,
            leader_election: None,
            shards: rollout_controller::shard::ShardCount::ONE,
            write_log: None,
        },
    )
    .await?;
    Ok(())
}
