//! The analysis crate against real Prometheus over a backfilled TSDB: series labelled with
//! pod-template hashes this test makes, timestamps relative to now. A healthy canary passes, one
//! with 5× the error rate fails, no data and NaN end Inconclusive, and a Prometheus that is down
//! or too slow ends in Error after the limit — never in a pass.

use std::time::{SystemTime, UNIX_EPOCH};

use analysis::lifecycle::metric_phase;
use analysis::measure::{MeasureContext, measure};
use analysis::{Credentials, MetricPlan, MetricSpec, Phase, Tally, Timestamp, Verdict};
use anyhow::ensure;
use libtest_mimic::Trial;
use rollout_controller::hash::pod_template_hash;
use serde_json::json;
use sluice_tests::BackfilledPrometheus;

use crate::support::Env;

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        prometheus_analysis::threshold_analysis_over_real_prometheus
    )]
}

/// A pod-template hash for `image`, as the controller would make it.
fn hash(image: &str) -> anyhow::Result<String> {
    let template = serde_json::from_value(json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": image}]},
    }))?;
    Ok(pod_template_hash(&template))
}

/// 20 minutes of request counters per version, a sample every 15 s, ending a minute ago:
/// (hash, requests per second, share of them that fail).
pub(crate) fn openmetrics(versions: &[(&str, f64, f64)]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let end = now - 60;
    let start = end - 20 * 60;
    let mut text =
        String::from("# HELP http_requests Requests served.\n# TYPE http_requests counter\n");
    for (hash, rate, error_share) in versions {
        for code in ["200", "500"] {
            let share = if code == "500" {
                *error_share
            } else {
                1.0 - error_share
            };
            for (i, t) in (start..=end).step_by(15).enumerate() {
                let value = rate * share * 15.0 * i as f64;
                text.push_str(&format!(
                    "http_requests_total{{rollouts_pod_template_hash=\"{hash}\",code=\"{code}\"}} {value} {t}\n"
                ));
            }
        }
    }
    text.push_str("# EOF\n");
    text
}

fn error_ratio_metric(address: &str, hash: &str, timeout: &str) -> anyhow::Result<MetricPlan> {
    let query = format!(
        "sum(rate(http_requests_total{{rollouts_pod_template_hash=\"{hash}\",code=~\"5..\"}}[5m])) \
         / sum(rate(http_requests_total{{rollouts_pod_template_hash=\"{hash}\"}}[5m]))"
    );
    let spec: MetricSpec = serde_json::from_value(json!({
        "name": "error-rate",
        "interval": "1s",
        "count": 3,
        "failureLimit": 0,
        "inconclusiveLimit": 0,
        "consecutiveErrorLimit": 2,
        "provider": {"prometheus": {"address": address, "query": query, "timeout": timeout}},
        "successCondition": "result[0] < 0.02",
        "failureCondition": "result[0] >= 0.04",
    }))?;
    Ok(spec.plan()?)
}

/// Measures until the metric's phase is final, as the controller's measurement task will;
/// returns the phase and every verdict on the way.
async fn run(plan: &MetricPlan) -> anyhow::Result<(Phase, Vec<Verdict>)> {
    let started = Timestamp(SystemTime::now());
    let mut tally = Tally::default();
    let mut verdicts = Vec::new();
    let mut carry = None;
    for _ in 0..20 {
        let outcome = measure(
            plan,
            MeasureContext {
                now: Timestamp(SystemTime::now()),
                run_started_at: started,
                credentials: Credentials::None,
                ca_cert_pem: None,
                carry: carry.take(),
                sequential_metrics: 0,
                expected_canary_share: None,
            },
        )
        .await;
        carry = outcome.carry;
        if let Some(judgement) = outcome.judgement {
            verdicts.push(judgement.verdict);
            tally.add(judgement.verdict);
        }
        let phase = metric_phase(&plan.limits, &tally, false);
        if phase.is_terminal() {
            return Ok((phase, verdicts));
        }
    }
    anyhow::bail!("no final phase after 20 measurements: {verdicts:?}")
}

/// A TCP server on loopback that accepts connections and never answers.
async fn silent_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    Ok((address, task))
}

async fn threshold_analysis_over_real_prometheus(_env: &'static Env) -> anyhow::Result<()> {
    let stable = hash("web:1")?;
    let healthy = hash("web:2")?;
    let bad = hash("web:3")?;
    let idle = hash("web:4")?;
    let absent = hash("web:5")?;
    let data = openmetrics(&[
        (&stable, 20.0, 0.01),
        (&healthy, 5.0, 0.01),
        (&bad, 5.0, 0.05),
        (&idle, 0.0, 0.0),
    ]);
    let prometheus = BackfilledPrometheus::start(&data).await?;
    let outcome = async {
        let url = prometheus.url().to_owned();
        let (phase, verdicts) = run(&error_ratio_metric(&url, &healthy, "5s")?).await?;
        ensure!(
            phase == Phase::Successful,
            "healthy canary: {phase:?} {verdicts:?}"
        );
        ensure!(verdicts.iter().all(|v| *v == Verdict::Pass), "{verdicts:?}");

        let (phase, verdicts) = run(&error_ratio_metric(&url, &bad, "5s")?).await?;
        ensure!(
            phase == Phase::Failed,
            "canary with 5x the errors: {phase:?} {verdicts:?}"
        );

        let (phase, verdicts) = run(&error_ratio_metric(&url, &absent, "5s")?).await?;
        ensure!(
            phase == Phase::Inconclusive,
            "no series: {phase:?} {verdicts:?}"
        );

        let (phase, verdicts) = run(&error_ratio_metric(&url, &idle, "5s")?).await?;
        ensure!(
            phase == Phase::Inconclusive,
            "0/0 = NaN: {phase:?} {verdicts:?}"
        );

        // Down: nothing listens on that port any more.
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            format!("http://{}", listener.local_addr()?)
        };
        let (phase, verdicts) = run(&error_ratio_metric(&closed, &healthy, "5s")?).await?;
        ensure!(
            phase == Phase::Error,
            "Prometheus down: {phase:?} {verdicts:?}"
        );
        ensure!(
            verdicts == vec![Verdict::Error; 3],
            "after consecutiveErrorLimit 2: {verdicts:?}"
        );

        let (silent, task) = silent_server().await?;
        let slow = run(&error_ratio_metric(&silent, &healthy, "1s")?).await;
        task.abort();
        let (phase, verdicts) = slow?;
        ensure!(
            phase == Phase::Error,
            "Prometheus too slow: {phase:?} {verdicts:?}"
        );
        ensure!(!verdicts.contains(&Verdict::Pass), "{verdicts:?}");
        Ok(())
    }
    .await;
    prometheus.stop().await;
    outcome
}
