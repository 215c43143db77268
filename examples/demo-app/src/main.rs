//! demo-app: `demo-app --listen 127.0.0.1:8080 --error-rate 0.05 --latency-ms 20 --version v3`.
//! Every flag can also come from the environment (DEMO_ERROR_RATE, ...), as a pod template's
//! `env` would set it.
//!
//! On SIGTERM or SIGINT it keeps serving for `--shutdown-delay-ms` (the time a real pod gives
//! load balancers to take it out of rotation), then stops accepting connections and exits once
//! the requests in flight are answered.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use demo_app::{Behaviour, bind, serve_until};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "An HTTP service with /metrics whose error rate and latency are set by flags")]
struct Cli {
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Share of requests answered with 500, in 0..=1.
    #[arg(long, env = "DEMO_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Time taken by every request.
    #[arg(long, env = "DEMO_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// The `version` label on every series.
    #[arg(long, env = "DEMO_VERSION", default_value = "v1")]
    version: String,
    /// Exit with status 1 this long after starting (a crashing program, for restart tests).
    #[arg(long, env = "DEMO_CRASH_AFTER_MS")]
    crash_after_ms: Option<u64>,
    /// How long to keep serving after SIGTERM before draining.
    #[arg(long, env = "DEMO_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    shutdown_delay_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (listener, address) = bind(cli.listen).await?;
    eprintln!("demo-app {} listening on http://{address}", cli.version);
    if let Some(ms) = cli.crash_after_ms {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            eprintln!("demo-app crashing on purpose after {ms} ms");
            std::process::exit(1);
        });
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let delay = Duration::from_millis(cli.shutdown_delay_ms);
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("demo-app: signalled; serving {delay:?} more, then draining");
        tokio::time::sleep(delay).await;
        eprintln!("demo-app: draining");
    };
    serve_until(
        listener,
        Behaviour {
            error_rate: cli.error_rate,
            latency: Duration::from_millis(cli.latency_ms),
            version: cli.version,
        },
        shutdown,
    )
    .await?;
    eprintln!("demo-app: drained, exiting");
    Ok(())
}
