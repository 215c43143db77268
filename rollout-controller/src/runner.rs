//! Measuring AnalysisRuns: a controller of its own beside the Rollout controller, so that a slow
//! Prometheus never holds up a rollout's reconcile. Each reconcile of a run takes the metrics that
//! are due, measures them concurrently, and writes the results into the run's status in one write;
//! the Rollout controller, which owns the run, wakes on that write. The Controller's concurrency
//! bounds how many runs measure at once. Everything a run needs to continue (tallies, the last
//! look, a sequential test's state) is in its status, so a restart continues it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use analysis::lifecycle::{
    MetricOutcome, Phase as RunPhase, metric_phase, next_measurement_at, run_phase,
};
use analysis::measure::{MeasureContext, measure};
use analysis::spec::{JudgePlan, KeySelector, ProviderPlan};
use analysis::{Credentials, Measurement, MetricPlan, Timestamp, Verdict};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::crd::Rollout;
use crate::crd::analysis::{
    AnalysisRun, AnalysisRunStatus, MEASUREMENT_HISTORY, MetricResult, ROLLOUT_LABEL,
};
use crate::metrics::{MeasurementLabels, Metrics};
use crate::reconcile::FIELD_MANAGER;

/// How long a run waits before it looks again when nothing is due (a resync).
const IDLE_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("analysis run has no namespace")]
    NoNamespace,
    #[error("writing status of AnalysisRun {name}: {source}")]
    WriteStatus {
        name: String,
        #[source]
        source: kube::Error,
    },
}

pub struct RunnerContext {
    pub client: Client,
    pub rollouts: Store<Rollout>,
    pub metrics: Arc<Metrics>,
    pub synced: Arc<AtomicBool>,
}

/// A metric of the run, ready to measure, or why it cannot be.
struct Prepared {
    plan: Result<MetricPlan, String>,
    result: MetricResult,
}

pub async fn reconcile_run(
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
    let started_at = previous.started_at.unwrap_or(now);
    let stopped = run.spec.terminate == Some(true);

    let args = resolve_args(&run, &namespace, &ctx.client).await;
    let sequential_metrics = run
        .spec
        .metrics
        .iter()
        .filter(|m| m.sequential.is_some())
        .count();
    let mut prepared: Vec<Prepared> = run
        .spec
        .metrics
        .iter()
        .map(|spec| {
            let dry_run = run.spec.dry_run.iter().any(|d| d.metric_name == spec.name);
            let result = previous
                .metric_results
                .iter()
                .find(|r| r.name == spec.name)
                .cloned()
                .unwrap_or_else(|| MetricResult::new(&spec.name, dry_run));
            let plan = match &args {
                Ok(values) => spec
                    .with_args(values)
                    .and_then(|s| s.plan())
                    .map_err(|e| e.to_string()),
                Err(why) => Err(why.clone()),
            };
            Prepared { plan, result }
        })
        .collect();

    let expected_share = expected_canary_share(&run, &ctx.rollouts);
    let mut due = Vec::new();
    for (index, metric) in prepared.iter().enumerate() {
        let Ok(plan) = &metric.plan else { continue };
        if stopped || metric.result.phase.is_terminal() {
            continue;
        }
        let at = next_measurement_at(
            &plan.limits,
            started_at,
            metric.result.last_look_at,
            metric.result.phase,
        );
        if at.is_some_and(|at| at <= now) {
            due.push(index);
        }
    }
    let measurements = due.iter().map(|&index| {
        let metric = &prepared[index];
        let client = ctx.client.clone();
        let namespace = namespace.clone();
        let carry = metric.result.carry.clone();
        async move {
            let Ok(plan) = &metric.plan else {
                return (index, None, now);
            };
            let context = match provider_secrets(plan, &namespace, &client).await {
                Ok((credentials, ca_cert_pem)) => MeasureContext {
                    now,
                    run_started_at: started_at,
                    credentials,
                    ca_cert_pem,
                    carry,
                    sequential_metrics,
                    expected_canary_share: match plan.judge {
                        JudgePlan::Sequential(_) => expected_share,
                        _ => None,
                    },
                },
                Err(why) => {
                    let judgement = analysis::Judgement::error(why);
                    let outcome = analysis::measure::Outcome {
                        judgement: Some(judgement),
                        carry,
                    };
                    return (index, Some(outcome), Timestamp(SystemTime::now()));
                }
            };
            let outcome = measure(plan, context).await;
            (index, Some(outcome), Timestamp(SystemTime::now()))
        }
    });
    let results = futures::future::join_all(measurements).await;

    for (index, outcome, finished_at) in results {
        let Some(outcome) = outcome else { continue };
        let metric = &mut prepared[index];
        metric.result.carry = outcome.carry;
        metric.result.last_look_at = Some(finished_at);
        if let Some(judgement) = outcome.judgement {
            ctx.metrics
                .measurements
                .get_or_create(&MeasurementLabels {
                    metric: metric.result.name.clone(),
                    verdict: format!("{:?}", judgement.verdict),
                })
                .inc();
            info!(
                analysis_run = %name,
                metric = %metric.result.name,
                verdict = ?judgement.verdict,
                "{}",
                judgement.message
            );
            metric.result.tally.add(judgement.verdict);
            metric.result.measurements.push(Measurement {
                started_at: now,
                finished_at,
                judgement,
            });
            let excess = metric
                .result
                .measurements
                .len()
                .saturating_sub(MEASUREMENT_HISTORY);
            metric.result.measurements.drain(..excess);
        }
    }

    let mut status = AnalysisRunStatus {
        phase: RunPhase::Pending,
        message: String::new(),
        started_at: Some(started_at),
        completed_at: None,
        metric_results: Vec::new(),
    };
    let mut next_due: Option<Timestamp> = None;
    for metric in &mut prepared {
        match &metric.plan {
            Ok(plan) => {
                metric.result.phase = metric_phase(&plan.limits, &metric.result.tally, stopped);
                if let Some(at) = next_measurement_at(
                    &plan.limits,
                    started_at,
                    metric.result.last_look_at,
                    metric.result.phase,
                ) {
                    next_due = Some(next_due.map_or(at, |n| n.min(at)));
                }
            }
            Err(why) => {
                // A spec that cannot run (or a Secret that cannot be read) is an error of the
                // metric that never counts as data.
                if !metric.result.phase.is_terminal() {
                    let judgement = analysis::Judgement::error(why.clone());
                    metric.result.tally.add(Verdict::Error);
                    metric.result.measurements.push(Measurement {
                        started_at: now,
                        finished_at: now,
                        judgement,
                    });
                }
                metric.result.phase = RunPhase::Error;
            }
        }
        status.metric_results.push(metric.result.clone());
    }
    let outcomes: Vec<MetricOutcome> = status
        .metric_results
        .iter()
        .map(|r| MetricOutcome {
            phase: r.phase,
            dry_run: r.dry_run,
        })
        .collect();
    status.phase = run_phase(&outcomes);
    status.message = run_message(&status);
    if status.phase.is_terminal() {
        status.completed_at = Some(Timestamp(SystemTime::now()));
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
    let wait = next_due.map_or(IDLE_RECHECK, |at| at.since(Timestamp(SystemTime::now())));
    Ok(Action::requeue(
        wait.clamp(Duration::from_millis(100), IDLE_RECHECK),
    ))
}

/// One line saying which metric decided and why, or how far the run is.
fn run_message(status: &AnalysisRunStatus) -> String {
    let last_message = |result: &MetricResult| {
        result
            .measurements
            .last()
            .map(|m| m.judgement.message.clone())
            .unwrap_or_default()
    };
    match status.phase {
        RunPhase::Failed | RunPhase::Error | RunPhase::Inconclusive => status
            .metric_results
            .iter()
            .find(|r| !r.dry_run && r.phase == status.phase)
            .map(|r| {
                let t = &r.tally;
                format!(
                    "metric {} {:?} ({} passed, {} failed, {} inconclusive, {} errors): {}",
                    r.name,
                    r.phase,
                    t.passed,
                    t.failed,
                    t.inconclusive,
                    t.errors,
                    last_message(r)
                )
            })
            .unwrap_or_else(|| format!("{:?}", status.phase)),
        RunPhase::Successful => format!("{} metrics passed", status.metric_results.len()),
        RunPhase::Pending | RunPhase::Running => {
            let parts: Vec<String> = status
                .metric_results
                .iter()
                .map(|r| format!("{}: {} measured", r.name, r.tally.total()))
                .collect();
            parts.join(", ")
        }
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
pub fn run_error_policy(
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
