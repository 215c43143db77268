//! Canaries gated by analysis against real Prometheus: the TSDB is backfilled with series
//! labelled with the pod-template hashes the controller will make, and the AnalysisTemplate finds
//! them through `{{args.canary-hash}}`. v2 is healthy, passes its analysis step and completes;
//! v3 fails 5× as often, and the controller aborts it by itself.

use anyhow::{Context, ensure};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use libtest_mimic::Trial;
use rollout_controller::crd::analysis::{AnalysisRun, AnalysisTemplate};
use rollout_controller::crd::{POD_TEMPLATE_HASH_LABEL, Phase, Rollout};
use rollout_controller::hash::pod_template_hash;
use serde_json::{Value, json};
use sluice_tests::BackfilledPrometheus;

use crate::prometheus_analysis::openmetrics;
use crate::rollouts::{
    create_rollout, create_service, replica_counts, rollout_manifest, set_image, status_until,
};
use crate::support::{Env, RunningController, TestNamespace, events_with_reason, eventually};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        rollout_analysis::canary_analysis_passes_then_a_failing_canary_aborts_by_itself
    )]
}

/// The pod-template hash the controller makes for `image` in `manifest`'s template.
fn hash_for(manifest: &Value, image: &str) -> anyhow::Result<String> {
    let mut template = manifest["spec"]["template"].clone();
    template["spec"]["containers"][0]["image"] = json!(image);
    Ok(pod_template_hash(&serde_json::from_value(template)?))
}

pub(crate) fn error_rate_template() -> Value {
    let query = "sum(rate(http_requests_total{rollouts_pod_template_hash=\"{{args.canary-hash}}\",code=~\"5..\"}[5m])) \
                 / sum(rate(http_requests_total{rollouts_pod_template_hash=\"{{args.canary-hash}}\"}[5m]))";
    json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "error-rate"},
        "spec": {
            "args": [
                {"name": "prometheus"},
                {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
            ],
            "metrics": [{
                "name": "error-rate",
                "interval": "1s",
                "count": 2,
                "provider": {"prometheus": {"address": "{{args.prometheus}}", "query": query}},
                "successCondition": "result[0] < 0.01",
                "failureCondition": "result[0] >= 0.02",
            }],
        },
    })
}

async fn selector_of(client: &Client, ns: &str, service: &str) -> anyhow::Result<Option<String>> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    Ok(services
        .get(service)
        .await?
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get(POD_TEMPLATE_HASH_LABEL).cloned()))
}

async fn canary_analysis_passes_then_a_failing_canary_aborts_by_itself(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("analysis", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let strategy = json!({"canary": {
            "stableService": "web-stable", "canaryService": "web-canary",
            "maxSurge": 1, "maxUnavailable": 0,
            "steps": [
                {"setWeight": 50},
                {"analysis": {"templates": [{"templateName": "error-rate"}],
                              "args": [{"name": "prometheus", "value": "PROMETHEUS"}]}},
            ],
        }});
        let manifest = rollout_manifest("web", 4, "web:1", strategy);
        let (v1, v2, v3) = (
            hash_for(&manifest, "web:1")?,
            hash_for(&manifest, "web:2")?,
            hash_for(&manifest, "web:3")?,
        );
        // v1 and v2 fail 0.5% of requests; v3 fails 2.5%, 5× as often.
        let prometheus = BackfilledPrometheus::start(&openmetrics(&[
            (&v1, 20.0, 0.005),
            (&v2, 20.0, 0.005),
            (&v3, 20.0, 0.025),
        ]))
        .await?;
        let outcome = async {
            let controller = RunningController::start(client.clone(), &ns);
            for service in ["web-stable", "web-canary"] {
                create_service(&client, &ns, service, "web").await?;
            }
            let templates: Api<AnalysisTemplate> = Api::namespaced(client.clone(), &ns);
            templates
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(error_rate_template())?,
                )
                .await?;
            let manifest = serde_json::from_str::<Value>(
                &manifest.to_string().replace("PROMETHEUS", prometheus.url()),
            )?;
            create_rollout(&client, &ns, manifest).await?;
            let healthy = status_until(&client, &ns, "web", "v1 Healthy", |s| {
                s.phase == Phase::Healthy
            })
            .await?;
            ensure!(
                healthy.stable_revision.as_deref() == Some(v1.as_str()),
                "v1 hash differs: {healthy:?}"
            );

            // v2: the analysis step passes and the canary completes.
            set_image(&client, &ns, "web", "web:2").await?;
            let v2_done = status_until(&client, &ns, "web", "v2 Healthy", |s| {
                s.updated_revision.as_deref() == Some(v2.as_str())
                    && matches!(s.phase, Phase::Healthy | Phase::Aborted | Phase::Degraded)
            })
            .await?;
            ensure!(
                v2_done.phase == Phase::Healthy
                    && v2_done.stable_revision.as_deref() == Some(v2.as_str()),
                "v2 did not complete: {v2_done:?}"
            );
            let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), &ns);
            let run_name = format!("web-{v2}-1-{}", v2_done.attempt);
            let run = runs
                .get(&run_name)
                .await
                .with_context(|| format!("AnalysisRun {run_name}"))?;
            let status = run.status.clone().context("the run has no status")?;
            ensure!(format!("{:?}", status.phase) == "Successful", "{status:?}");
            let metric = &status.metric_results[0];
            ensure!(metric.tally.passed == 2, "{metric:?}");
            ensure!(
                metric.measurements[0]
                    .judgement
                    .evidence
                    .values
                    .as_deref()
                    .is_some_and(|v| v.starts_with("[0.00")),
                "{metric:?}"
            );
            let owned = run
                .owner_references()
                .iter()
                .any(|o| o.kind == "Rollout" && o.name == "web");
            ensure!(owned, "the run is not owned by the rollout");

            // v3: the analysis fails, and the controller aborts by itself.
            set_image(&client, &ns, "web", "web:3").await?;
            let aborted = status_until(&client, &ns, "web", "v3 Aborted", |s| {
                s.updated_revision.as_deref() == Some(v3.as_str())
                    && matches!(s.phase, Phase::Healthy | Phase::Aborted | Phase::Degraded)
            })
            .await?;
            ensure!(
                aborted.phase == Phase::Aborted,
                "v3 was not aborted: {aborted:?}"
            );
            ensure!(
                aborted.stable_revision.as_deref() == Some(v2.as_str()),
                "{aborted:?}"
            );
            ensure!(
                selector_of(&client, &ns, "web-canary").await?.as_deref() == Some(v2.as_str()),
                "canary Service still on v3"
            );
            ensure!(
                selector_of(&client, &ns, "web-stable").await?.as_deref() == Some(v2.as_str()),
                "stable Service not on v2"
            );
            eventually("v3 scaled to 0 and v2 whole", || async {
                let counts = replica_counts(&client, &ns).await?;
                Ok((counts.get(&v3) == Some(&0) && counts.get(&v2) == Some(&4)).then_some(()))
            })
            .await?;
            let events = events_with_reason(&client, &ns, "AnalysisFailed").await?;
            let note = events
                .first()
                .and_then(|e| e.message.clone())
                .context("no AnalysisFailed Event")?;
            ensure!(
                note.contains("metric error-rate Failed"),
                "the Event does not name the metric: {note}"
            );
            let failed_run = format!("web-{v3}-1-{}", aborted.attempt);
            ensure!(
                note.contains(&failed_run),
                "the Event does not name the run: {note}"
            );
            // The rollout says why for as long as it stays aborted, not only in the Event.
            let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
            let later = rollouts.get("web").await?.status.unwrap_or_default();
            for message in [&aborted.message, &later.message] {
                ensure!(
                    message.contains(&failed_run)
                        && message.contains("metric error-rate Failed")
                        && message.contains(&format!("traffic on stable {v2}")),
                    "the aborted rollout's message does not name the run and the metric: {message}"
                );
            }
            let listed = later.analysis_runs;
            ensure!(
                listed
                    .iter()
                    .any(|r| r.name == failed_run && r.phase == "Failed"),
                "{listed:?}"
            );
            let metrics = controller.metrics().await?;
            let value = |name: &str| {
                metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            };
            let (sum, count) = (
                value("sluice_abort_latency_seconds_sum").context("no abort latency sum")?,
                value("sluice_abort_latency_seconds_count").context("no abort latency count")?,
            );
            ensure!(count == 1.0, "{count} aborts measured, want 1");
            eprintln!(
                "rollout_analysis: abort latency (failed run -> traffic on stable) {:.0} ms",
                sum * 1000.0
            );
            let measured = metrics.lines().any(|l| {
                l.starts_with("sluice_analysis_measurements_total{")
                    && l.contains("metric=\"error-rate\"")
            });
            ensure!(
                measured,
                "no sluice_analysis_measurements_total for error-rate"
            );
            Ok(())
        }
        .await;
        prometheus.stop().await;
        outcome
    })
    .await
}
