//! Starts and stops the local control plane by hand.
//!
//!   eval "$(sluice-cluster up)"     # prints `export KUBECONFIG=…` and kubectl's PATH
//!   sluice-cluster down

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_tests::cluster::{default_detached_dir, stop_detached};
use sluice_tests::{ClusterOptions, ControlPlane};

#[derive(Parser)]
#[command(about = "A real Kubernetes control plane on 127.0.0.1, with kwok nodes, for Sluice")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the control plane and leave it running.
    Up {
        /// Where certificates, kubeconfigs, logs and etcd's data go.
        #[arg(long, default_value_os_t = default_detached_dir())]
        dir: PathBuf,
        /// How many kwok nodes to create.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How long kwok waits before a scheduled pod becomes Ready (milliseconds), at least ...
        #[arg(long, default_value_t = 1000)]
        pod_ready_delay_ms: u64,
        /// ... and at most this much longer, drawn per pod.
        #[arg(long, default_value_t = 1000)]
        pod_ready_jitter_ms: u64,
        /// Do not start the pod runner (pods whose image maps to a program stay kwok's).
        #[arg(long)]
        no_pod_runner: bool,
    },
    /// Stop a control plane started with `up`, and remove its files.
    Down {
        #[arg(long, default_value_os_t = default_detached_dir())]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Up {
            dir,
            nodes,
            pod_ready_delay_ms,
            pod_ready_jitter_ms,
            no_pod_runner,
        } => {
            eprintln!("starting the control plane in {}", dir.display());
            let cluster = ControlPlane::start(ClusterOptions {
                dir: Some(dir),
                nodes,
                pod_ready_delay: Duration::from_millis(pod_ready_delay_ms),
                pod_ready_jitter: Duration::from_millis(pod_ready_jitter_ms),
                run_pods: !no_pod_runner,
                detachable: true,
            })
            .await
            .context("starting the control plane")?;
            eprintln!(
                "up in {:.1}s: API server {}, {nodes} kwok nodes Ready, logs in {}",
                cluster.started_in().as_secs_f64(),
                cluster.api_server_url(),
                cluster.dir().join("logs").display(),
            );
            let kubeconfig = cluster.admin_kubeconfig().to_path_buf();
            let bin_dir = cluster.binaries().path("kubectl");
            let bin_dir = bin_dir.parent().unwrap_or(&bin_dir).to_path_buf();
            let dir = cluster
                .detach()
                .context("recording the running processes")?;
            eprintln!("stop it with: sluice-cluster down --dir {}", dir.display());
            // On stdout, for `eval "$(sluice-cluster up)"`: the kubeconfig, and kubectl of the
            // cluster's own version first on PATH.
            println!("export KUBECONFIG={}", kubeconfig.display());
            println!("export PATH={}:$PATH", bin_dir.display());
        }
        Command::Down { dir } => {
            stop_detached(&dir)
                .await
                .with_context(|| format!("stopping the control plane in {}", dir.display()))?;
            eprintln!("stopped, and removed {}", dir.display());
        }
    }
    Ok(())
}
