//! demo-app: `demo-app --listen 127.0.0.1:8080 --error-rate 0.05 --latency-ms 20 --version v3`.
//! Every flag can also come from the environment (DEMO_ERROR_RATE, ...), as a pod template's
//! `env` would set it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use demo_app::{Behaviour, bind, serve};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (listener, address) = bind(cli.listen).await?;
    eprintln!("demo-app {} listening on http://{address}", cli.version);
    serve(
        listener,
        Behaviour {
            error_rate: cli.error_rate,
            latency: Duration::from_millis(cli.latency_ms),
            version: cli.version,
        },
    )
    .await?;
    Ok(())
}
