//! The pod runner (see `sluice_tests::pods`), started by the harness beside kwok:
//!
//!   sluice-pod-runner --kubeconfig K --logs DIR --programs DIR
//!
//! Stops on SIGTERM or SIGINT, and then stops every process and removes every namespace it
//! made. The harness stops it so, and the kernel sends it SIGTERM should the harness die first
//! (a parent-death signal) — unless the cluster is detachable (`sluice-cluster up`), when
//! `sluice-cluster down` does.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sluice_tests::cluster::client_from_kubeconfig;
use sluice_tests::pods::{self, Shared};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::Instrument;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    kubeconfig: PathBuf,
    /// One log file per pod goes here.
    #[arg(long)]
    logs: PathBuf,
    /// Where the programs of the table are (the workspace's target directory).
    #[arg(long)]
    programs: PathBuf,
    /// The pod address blocks its cluster claimed: held for as long as the runner lives, so
    /// that they stay the cluster's after the harness that claimed them exits.
    #[arg(long, default_value = "")]
    pod_blocks: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Plain text: the log is a file, read with less or in CI's artifacts.
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false)
        .init();
    sluice_tests::install_crypto_provider();
    let cli = Cli::parse();
    let blocks = pods::range::parse_arg(&cli.pod_blocks)
        .map_err(|e| anyhow::anyhow!("--pod-blocks {}: {e}", cli.pod_blocks))?;
    let _blocks = pods::range::PodBlocks::hold(&blocks).context("holding the pod blocks")?;
    let client = client_from_kubeconfig(&cli.kubeconfig)
        .await
        .context("the runner's kubeconfig")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let watchdog = async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    };
    let watchdog = tokio::spawn(
        async move {
            let why = watchdog.await;
            tracing::info!("stopping: {why}");
            let _ = stop_tx.send(true);
        }
        .instrument(tracing::info_span!("watchdog")),
    );
    let shared = Shared {
        client,
        programs_dir: cli.programs,
        logs: cli.logs,
    };
    let outcome = pods::run(shared, stop_rx).await;
    watchdog.abort();
    outcome.context("running pods")
}
