//! The scrape provider against live demo-app servers on 127.0.0.1: real HTTP, real exposition
//! text from prometheus-client, parsed by the provider.

use std::time::{Duration, SystemTime};

use analysis::Timestamp;
use analysis::scrape::{ScrapeClient, SeriesSelector};
use anyhow::ensure;
use demo_app::{Behaviour, bind, serve};
use libtest_mimic::Trial;

use crate::support::Env;

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(scrape::the_scrape_provider_reads_live_demo_apps)]
}

/// Starts a demo-app on a free loopback port; it stops when the task is aborted.
async fn demo_app(
    error_rate: f64,
    version: &str,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let (listener, address) = bind(([127, 0, 0, 1], 0).into()).await?;
    let behaviour = Behaviour {
        error_rate,
        latency: Duration::ZERO,
        version: version.into(),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = serve(listener, behaviour).await {
            eprintln!("demo-app stopped: {e}");
        }
    });
    Ok((format!("http://{address}"), task))
}

async fn send(url: &str, requests: usize) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..requests {
        http.get(url).send().await?;
    }
    Ok(())
}

async fn the_scrape_provider_reads_live_demo_apps(_env: &'static Env) -> anyhow::Result<()> {
    let (stable, stable_task) = demo_app(0.0, "v1").await?;
    let (canary, canary_task) = demo_app(0.25, "v2").await?;
    let outcome = async {
        // A first batch so that every series exists before the baseline scrape.
        send(&stable, 4).await?;
        send(&canary, 4).await?;
        let errors = SeriesSelector::parse(r#"http_requests_total{code="500"}"#)
            .map_err(anyhow::Error::msg)?;
        let all = SeriesSelector::parse("http_requests_total").map_err(anyhow::Error::msg)?;
        let t0 = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let t1 = Timestamp(t0.0 + Duration::from_secs(10));
        let timeout = Duration::from_secs(5);
        let scrape_stable = ScrapeClient::new(&format!("{stable}/metrics"), timeout, &[])?;
        let scrape_canary = ScrapeClient::new(&format!("{canary}/metrics"), timeout, &[])?;

        let canary_errors_before = scrape_canary.sample(&errors, t0).await?;
        let canary_all_before = scrape_canary.sample(&all, t0).await?;
        let stable_errors_before = scrape_stable.sample(&errors, t0).await?;
        send(&stable, 200).await?;
        send(&canary, 200).await?;
        let canary_errors = scrape_canary
            .sample(&errors, t1)
            .await?
            .result(Some(&canary_errors_before));
        let canary_all = scrape_canary
            .sample(&all, t1)
            .await?
            .result(Some(&canary_all_before));
        let stable_errors = scrape_stable
            .sample(&errors, t1)
            .await?
            .result(Some(&stable_errors_before));

        // 200 requests in the 10 s the clock says passed: 50 of the canary's failed.
        ensure!(
            canary_errors == vec![5.0],
            "canary 5xx rate {canary_errors:?}, want [5.0]"
        );
        let total: f64 = canary_all.iter().sum();
        ensure!(
            (total - 20.0).abs() < 1e-9,
            "canary request rate {canary_all:?}, want a sum of 20"
        );
        ensure!(
            stable_errors.is_empty(),
            "stable has no 5xx series, yet got {stable_errors:?}"
        );
        Ok(())
    }
    .await;
    stable_task.abort();
    canary_task.abort();
    outcome
}
