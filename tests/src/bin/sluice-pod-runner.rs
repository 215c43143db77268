//! The pod runner (see `sluice_tests::pods`), started by the harness beside kwok:
//!
//!   sluice-pod-runner --kubeconfig K --logs DIR --programs DIR [--state-file F]
//!
//! Stops on SIGTERM or SIGINT. When its parent (the harness) dies, it stops too — unless the
//! cluster was detached (`--state-file` exists), which a `sluice-cluster up` leaves behind for
//! `down`. Either way it stops every process and removes every namespace it made.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sluice_tests::cluster::client_from_kubeconfig;
use sluice_tests::pods::{self, Shared};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::Instrument;

/// How often the runner looks whether its parent is still there.
const PARENT_POLL: Duration = Duration::from_millis(500);

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
    /// A detached cluster's state file: while it exists, the runner outlives its parent.
    #[arg(long)]
    state_file: Option<PathBuf>,
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
    let client = client_from_kubeconfig(&cli.kubeconfig)
        .await
        .context("the runner's kubeconfig")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let parent = nix::unistd::getppid();
    let state_file = cli.state_file.clone();
    let watchdog = async move {
        let mut tick = tokio::time::interval(PARENT_POLL);
        // Ends with the runner: on a signal, or when the parent is gone.
        loop {
            tokio::select! {
                _ = term.recv() => return "SIGTERM",
                _ = int.recv() => return "SIGINT",
                _ = tick.tick() => {
                    let orphaned = nix::unistd::getppid() != parent;
                    let detached = state_file.as_ref().is_some_and(|f| f.exists());
                    if orphaned && !detached {
                        return "the harness is gone";
                    }
                }
            }
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
