//! Measuring AnalysisRuns: a controller of its own beside the Rollout controller, so that a slow
//! Prometheus never holds up a rollout's reconcile. Each reconcile of a run takes the metrics that
//! are due, measures them concurrently, and writes the results into the run's status in one write;
//! the Rollout controller, which owns the run, wakes on that write. The Controller's concurrency
//! bounds how many runs measure at once. Everything a run needs to continue (tallies, the last
//! look, a sequential test's state) is in its status, so a restart continues it.

mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use analysis::measure::{MeasureContext, Outcome, measure};
use analysis::spec::{JudgePlan, KeySelector, ProviderPlan};
use analysis::{Credentials, Judgement, MetricPlan, Timestamp};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::crd::Rollout;
use crate::crd::analysis::{AnalysisRun, ROLLOUT_LABEL};
use crate::metrics::{MeasurementLabels, Metrics};
use crate::reconcile::FIELD_MANAGER;
use status::Look;

/// How long a run waits before it looks again when nothing is due (a resync).
const IDLE_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum RunnerError {
    #[error("analysis run has no namespace")]
    NoNamespace,
    #[error("writing status of AnalysisRun {name}: {source}")]
    WriteStatus {
        name: String,
        #[source]
        source: kube::Error,
    },
}

pub(crate) struct RunnerContext {
    pub(crate) client: Client,
    pub(crate) rollouts: Store<Rollout>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) synced: Arc<AtomicBool>,
}

/// Reads the clock once: every decision of the reconcile is made for that `now`
/// ([`status::fold`]); only each look's answer is stamped when it arrives.
pub(crate) async fn reconcile_run(
    run: Arc<AnalysisRun>,
    ctx: Arc<RunnerContext>,
) -> Result<Action, RunnerError> {
    if !ctx.synced.load(Ordering::SeqCst) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let previous = run.status.clone().unwrap_or_default();
    if previous.phase.is_terminal() || run.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = run.namespace().ok_or(RunnerError::NoNamespace)?;
    let name = run.name_any();
    let now = Timestamp(SystemTime::now());
    let started_at = status::started_at(&previous, now);
    let stopped = run.spec.terminate == Some(true);

    let args = resolve_args(&run, &namespace, &ctx.client).await;
    let metrics = status::metrics(&run.spec, &previous, &args);
    let sequential_metrics = run
        .spec
        .metrics
        .iter()
        .filter(|m| m.sequential.is_some())
        .count();
    let expected_share = expected_canary_share(&run, &ctx.rollouts);
    let looks = status::due(&metrics, started_at, stopped, now)
        .into_iter()
        .filter_map(|index| {
            let metric = &metrics[index];
            let plan = metric.plan.as_ref().ok()?;
            let context = MeasureContext {
                now,
                run_started_at: started_at,
                credentials: Credentials::None,
                ca_cert_pem: None,
                carry: metric.result.carry.clone(),
                sequential_metrics,
                expected_canary_share: match plan.judge {
                    JudgePlan::Sequential(_) => expected_share,
                    _ => None,
                },
            };
            Some(look(index, plan, context, &namespace, &ctx.client))
        });
    let looks = futures::future::join_all(looks).await;
    for look in &looks {
        let Some(judgement) = &look.outcome.judgement else {
            continue;
        };
        let metric = &metrics[look.metric].result.name;
        ctx.metrics
            .measurements
            .get_or_create(&MeasurementLabels {
                metric: metric.clone(),
                verdict: judgement.verdict.as_str().to_owned(),
            })
            .inc();
        info!(
            analysis_run = %name,
            metric = %metric,
            verdict = ?judgement.verdict,
            "{}",
            judgement.message
        );
    }

    let folded = status::fold(&previous, metrics, looks, stopped, now);
    let status = folded.status;
    if status.phase.is_terminal() {
        info!(analysis_run = %name, phase = ?status.phase, "{}", status.message);
    }
    if status != previous {
        let runs: Api<AnalysisRun> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "AnalysisRun",
            "status": status,
        });
        runs.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|source| RunnerError::WriteStatus {
            name: name.clone(),
            source,
        })?;
    }
    if status.phase.is_terminal() {
        return Ok(Action::await_change());
    }
    let wait = folded
        .next_look_at
        .map_or(IDLE_RECHECK, |at| at.since(folded.as_of));
    Ok(Action::requeue(
        wait.clamp(Duration::from_millis(100), IDLE_RECHECK),
    ))
}

/// One look at a metric: its provider's Secrets read, then measured. A Secret that cannot be
/// read is the look's error.
async fn look(
    metric: usize,
    plan: &MetricPlan,
    context: MeasureContext,
    namespace: &str,
    client: &Client,
) -> Look {
    let outcome = match provider_secrets(plan, namespace, client).await {
        Ok((credentials, ca_cert_pem)) => {
            let context = MeasureContext {
                credentials,
                ca_cert_pem,
                ..context
            };
            measure(plan, context).await
        }
        Err(why) => Outcome {
            judgement: Some(Judgement::error(why)),
            carry: context.carry,
        },
    };
    Look {
        metric,
        outcome,
        finished_at: Timestamp(SystemTime::now()),
    }
}

/// Argument values, Secrets read now; a Secret that cannot be read fails every metric's
/// measurement with a message naming it.
async fn resolve_args(
    run: &AnalysisRun,
    namespace: &str,
    client: &Client,
) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for arg in &run.spec.args {
        let value = match (
            &arg.value,
            arg.value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref()),
        ) {
            (Some(value), _) => value.clone(),
            (None, Some(key)) => read_secret(client, namespace, key)
                .await
                .map_err(|why| format!("argument {}: {why}", arg.name))?,
            (None, None) => return Err(format!("argument {} has no value", arg.name)),
        };
        values.insert(arg.name.clone(), value);
    }
    Ok(values)
}

async fn read_secret(
    client: &Client,
    namespace: &str,
    key: &KeySelector,
) -> Result<String, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(&key.name)
        .await
        .map_err(|e| format!("reading Secret {}: {e}", key.name))?
        .ok_or_else(|| format!("Secret {} not found", key.name))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&key.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&key.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| format!("Secret {} has no key {}", key.name, key.key))?;
    String::from_utf8(bytes)
        .map_err(|_| format!("Secret {} key {} is not UTF-8", key.name, key.key))
}

/// The Prometheus provider's credentials and CA certificate, read from their Secrets and
/// ConfigMaps.
async fn provider_secrets(
    plan: &MetricPlan,
    namespace: &str,
    client: &Client,
) -> Result<(Credentials, Option<Vec<u8>>), String> {
    let ProviderPlan::Prometheus { spec, .. } = &plan.provider else {
        return Ok((Credentials::None, None));
    };
    let credentials = match &spec.authentication {
        Some(auth) => match (&auth.bearer_token, &auth.basic) {
            (Some(token), _) => {
                Credentials::Bearer(read_secret(client, namespace, &token.secret_key_ref).await?)
            }
            (None, Some(basic)) => Credentials::Basic {
                username: basic.username.clone(),
                password: read_secret(client, namespace, &basic.password.secret_key_ref).await?,
            },
            (None, None) => Credentials::None,
        },
        None => Credentials::None,
    };
    let ca = match spec.tls.as_ref().and_then(|t| t.ca_cert.as_ref()) {
        Some(source) => match (&source.secret_key_ref, &source.config_map_key_ref) {
            (Some(key), _) => Some(read_secret(client, namespace, key).await?.into_bytes()),
            (None, Some(key)) => {
                let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
                let map = maps
                    .get_opt(&key.name)
                    .await
                    .map_err(|e| format!("reading ConfigMap {}: {e}", key.name))?
                    .ok_or_else(|| format!("ConfigMap {} not found", key.name))?;
                let text = map
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&key.key))
                    .ok_or_else(|| format!("ConfigMap {} has no key {}", key.name, key.key))?;
                Some(text.clone().into_bytes())
            }
            (None, None) => None,
        },
        None => None,
    };
    Ok((credentials, ca))
}

/// The canary weight Sluice set, as a fraction, when the run analyses a canary's new version:
/// the sequential test's sample-ratio check compares the measured split against it.
fn expected_canary_share(run: &AnalysisRun, rollouts: &Store<Rollout>) -> Option<f64> {
    let namespace = run.namespace()?;
    let rollout_name = run.labels().get(ROLLOUT_LABEL)?;
    let rollout = rollouts.get(&ObjectRef::new(rollout_name).within(&namespace))?;
    rollout.spec.strategy.canary.as_ref()?;
    let weight = rollout.status.as_ref()?.canary.as_ref()?.weight;
    (weight > 0 && weight < 100).then(|| f64::from(weight) / 100.0)
}

/// Retries a run whose status could not be written after a few seconds.
pub(crate) fn run_error_policy(
    run: Arc<AnalysisRun>,
    error: &RunnerError,
    _: Arc<RunnerContext>,
) -> Action {
    log_run_failure(&run, error);
    Action::requeue(Duration::from_secs(2))
}

/// Outside the measuring span: the line names the namespace itself.
pub(crate) fn log_run_failure(run: &AnalysisRun, error: &RunnerError) {
    warn!(
        namespace = %run.namespace().unwrap_or_default(),
        analysis_run = %run.name_any(),
        error = %error,
        "analysis run reconcile failed"
    );
}
