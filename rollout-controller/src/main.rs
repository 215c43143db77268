//! The rollout controller binary.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::num::NonZeroU32;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rollout_controller::controller::{
    ApiAuth, DEFAULT_ANALYSIS_CONCURRENCY, DEFAULT_RECONCILE_CONCURRENCY, Options, run,
};
use rollout_controller::leader::{
    self, DEFAULT_LEASE_DURATION, DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY_PERIOD, LeaderElection,
    Timing,
};
use rollout_controller::log_colour::log_colour;
use rollout_controller::rate_limit::{ApiRate, DEFAULT_API_BURST, DEFAULT_API_QPS};
use rollout_controller::shard::ShardCount;

#[derive(Parser)]
#[command(about = "Sluice: progressive delivery for Kubernetes")]
struct Cli {
    /// A kubeconfig file; without one, $KUBECONFIG, ~/.kube/config or the in-cluster config.
    #[arg(long, env = "KUBECONFIG", global = true)]
    kubeconfig: Option<PathBuf>,
    /// Watch one namespace only (default: all).
    #[arg(long, env = "SLUICE_NAMESPACE")]
    namespace: Option<String>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(long, default_value = "0.0.0.0:9090")]
    health_addr: SocketAddr,
    /// AnalysisRuns measured at once, across all rollouts.
    #[arg(long, default_value_t = DEFAULT_ANALYSIS_CONCURRENCY)]
    analysis_concurrency: u16,
    /// Rollouts reconciled at once.
    #[arg(long, env = "SLUICE_RECONCILE_CONCURRENCY", default_value_t = DEFAULT_RECONCILE_CONCURRENCY)]
    reconcile_concurrency: u16,
    /// Requests per second the controllers send the apiserver, on average, watches included
    /// (0: no client-side limit). The Lease's and the REST API's requests are not limited.
    #[arg(long, env = "SLUICE_KUBE_API_QPS", default_value_t = DEFAULT_API_QPS)]
    kube_api_qps: u32,
    /// Requests the controllers may send at once after a quiet spell.
    #[arg(long, env = "SLUICE_KUBE_API_BURST", default_value_t = NonZeroU32::new(DEFAULT_API_BURST).unwrap_or(NonZeroU32::MIN))]
    kube_api_burst: NonZeroU32,
    /// Where the REST API is served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    api_addr: SocketAddr,
    /// How API callers are checked: `kubernetes` (TokenReview + SubjectAccessReview) or `none`
    /// (local use only).
    #[arg(long, value_enum, default_value_t = ApiAuthArg::Kubernetes)]
    api_auth: ApiAuthArg,
    /// Elect one leader among the replicas with a coordination.k8s.io Lease: only the leader
    /// reconciles; the others keep their caches warm, serve the REST API, and take over.
    /// `--leader-elect=false` for a single replica.
    #[arg(long, default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// Namespace of the Lease (default: the kubeconfig's namespace, or in a pod its own).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = leader::DEFAULT_LEASE_NAME)]
    leader_election_id: String,
    /// How long a lease lasts without renewal before another replica may take it.
    #[arg(long, default_value_t = DEFAULT_LEASE_DURATION.into())]
    lease_duration: humantime::Duration,
    /// How long the leader keeps trying to renew before it stops writing and exits; shorter
    /// than the lease.
    #[arg(long, default_value_t = DEFAULT_RENEW_DEADLINE.into())]
    renew_deadline: humantime::Duration,
    /// How often the leader renews and the others look.
    #[arg(long, default_value_t = DEFAULT_RETRY_PERIOD.into())]
    retry_period: humantime::Duration,
    /// Spread the rollouts over this many shards, each a Lease (`<id>-shard-<i>`) that one
    /// replica holds at a time; the replicas share them out evenly. 1: one leader for all, the
    /// Lease named `--leader-election-id`.
    #[arg(long, env = "SLUICE_SHARDS", default_value_t = NonZeroU16::MIN)]
    shards: NonZeroU16,
    /// Append every API write the controllers make, and every change of what this replica's
    /// leases let it write, to this file (one JSON line each): a witness for tests and audits.
    #[arg(long, env = "SLUICE_WRITE_LOG")]
    write_log: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ApiAuthArg {
    Kubernetes,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Write the CRDs (YAML) to deploy/crds/ and the Helm chart's copy in
    /// deploy/helm/sluice/crds/, or to one directory, or to stdout with `-`.
    Crdgen { out: Option<PathBuf> },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Crdgen { out }) = &cli.command {
        let files = rollout_controller::crd_files()?;
        if out.as_deref().is_some_and(|o| o.as_os_str() == "-") {
            let documents: Vec<String> = files.into_iter().map(|(_, yaml)| yaml).collect();
            print!("{}", documents.join("---\n"));
            return Ok(());
        }
        let dirs = match out {
            Some(dir) => vec![dir.clone()],
            None => rollout_controller::CRD_DIRS
                .iter()
                .map(PathBuf::from)
                .collect(),
        };
        for dir in dirs {
            std::fs::create_dir_all(&dir)?;
            for (file, yaml) in &files {
                let path = dir.join(file);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let colour = log_colour(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour);
    match cli.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?,
    };
    let client = Client::try_from(config)?;
    let leader_election = if cli.leader_elect {
        Some(LeaderElection {
            namespace: cli
                .leader_election_namespace
                .unwrap_or_else(|| client.default_namespace().to_owned()),
            lease_name: cli.leader_election_id,
            // $POD_NAME, else <hostname>_<pid>.
            identity: leader::default_identity(),
            timing: Timing::new(
                cli.lease_duration.into(),
                cli.renew_deadline.into(),
                cli.retry_period.into(),
            )?,
        })
    } else {
        None
    };
    run(
        client,
        Options {
            namespace: cli.namespace,
            health_addr: cli.health_addr,
            analysis_concurrency: cli.analysis_concurrency,
            reconcile_concurrency: cli.reconcile_concurrency,
            api_rate: NonZeroU32::new(cli.kube_api_qps).map(|qps| ApiRate {
                qps,
                burst: cli.kube_api_burst,
            }),
            api_addr: Some(cli.api_addr),
            api_auth: match cli.api_auth {
                ApiAuthArg::Kubernetes => ApiAuth::Kubernetes,
                ApiAuthArg::None => ApiAuth::None,
            },
            leader_election,
            shards: ShardCount::new(cli.shards),
            write_log: cli.write_log,
        },
    )
    .await?;
    Ok(())
}
