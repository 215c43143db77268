//! A Rollout driven as its users drive one: created, its template changed, a step decided, its
//! status waited for. What the e2e tests and the benchmarks release through.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rollout_controller::crd::analysis::AnalysisTemplate;
use rollout_controller::crd::{Phase, Rollout, RolloutStatus};
use serde_json::{Value, json};

use crate::controller::RunningController;
use crate::demo_pods::{demo_app_container, draining_container};
use crate::{HarnessError, Result, object, wait};

/// What a malformed object here was meant to be.
const WHAT: &str = "a test object";

/// A generous bound for a rollout to reach a state; a step takes a few seconds.
pub const STATUS_DEADLINE: Duration = Duration::from_secs(60);

pub fn rollout_manifest(name: &str, replicas: i32, image: &str, strategy: Value) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": strategy,
        },
    })
}

/// [`rollout_manifest`] whose pods run: a demo-app container of `version`.
pub fn running_rollout(name: &str, replicas: i32, version: &str, strategy: Value) -> Value {
    let mut manifest = rollout_manifest(name, replicas, "", strategy);
    manifest["spec"]["template"]["spec"]["containers"] = json!([demo_app_container(version)]);
    manifest
}

/// A Service `name` on port 80 in front of the demo-app pods labelled `app`.
pub async fn create_service(client: &Client, ns: &str, name: &str, app: &str) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = object(
        WHAT,
        json!({
            "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80, "targetPort": 8080}]},
        }),
    )?;
    services.create(&PostParams::default(), &service).await?;
    Ok(())
}

pub async fn create_rollout(client: &Client, ns: &str, manifest: Value) -> Result<Rollout> {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    Ok(rollouts
        .create(&PostParams::default(), &object(WHAT, manifest)?)
        .await?)
}

/// Replaces the pod template's containers with `container` (a merge patch replaces the list
/// whole).
pub async fn set_container(client: &Client, ns: &str, name: &str, container: Value) -> Result<()> {
    let patch = json!({"spec": {"template": {"spec": {"containers": [container]}}}});
    patch_spec(client, ns, name, patch).await
}

/// Writes `spec.decision`, as the REST API and the CLI do.
pub async fn decide(client: &Client, ns: &str, name: &str, decision: Value) -> Result<()> {
    patch_spec(client, ns, name, json!({"spec": {"decision": decision}})).await
}

async fn patch_spec(client: &Client, ns: &str, name: &str, patch: Value) -> Result<()> {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    rollouts
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Promotes `revision` past step `step` (a decision, as the REST API writes it) and waits until
/// it is the stable revision.
pub async fn promote_until_stable(
    client: &Client,
    ns: &str,
    name: &str,
    revision: &str,
    step: i32,
) -> Result<RolloutStatus> {
    decide(
        client,
        ns,
        name,
        json!({"revision": revision, "promotedStep": step}),
    )
    .await?;
    status_until(client, ns, name, &format!("{revision} stable"), |s| {
        s.stable_revision.as_deref() == Some(revision)
    })
    .await
}

pub async fn status(client: &Client, ns: &str, name: &str) -> Result<RolloutStatus> {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    Ok(rollouts.get(name).await?.status.unwrap_or_default())
}

/// Waits, up to [`STATUS_DEADLINE`], until the rollout's status satisfies `check`, and returns
/// it.
pub async fn status_until(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&RolloutStatus) -> bool,
) -> Result<RolloutStatus> {
    status_until_within(client, ns, name, what, STATUS_DEADLINE, check).await
}

/// As [`status_until`], waiting up to `deadline`: for a wait that spans many steps, each of which
/// waits for pods that a loaded control plane may take many seconds to make ready.
pub async fn status_until_within(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    deadline: Duration,
    check: impl Fn(&RolloutStatus) -> bool,
) -> Result<RolloutStatus> {
    let check = &check;
    wait::until(what, deadline, || async move {
        let status = status(client, ns, name).await?;
        Ok::<_, HarnessError>(check(&status).then_some(status))
    })
    .await
}

/// A Rollout named `web` of `replicas` demo-app v1 pods (draining as a real app would) with
/// `strategy`, its controller, and Healthy: the controller (stopped when dropped) and v1's
/// revision.
pub async fn healthy_v1(
    client: &Client,
    ns: &str,
    replicas: i32,
    strategy: Value,
) -> Result<(RunningController, String)> {
    let mut manifest = running_rollout("web", replicas, "v1", strategy);
    manifest["spec"]["template"]["spec"]["containers"] = json!([draining_container("v1", &[])]);
    let controller = RunningController::start(client.clone(), ns);
    create_rollout(client, ns, manifest).await?;
    let v1 = status_until(client, ns, "web", "v1 Healthy", |s| {
        s.phase == Phase::Healthy
    })
    .await?;
    let stable = v1.stable_revision.ok_or_else(|| HarnessError::Invalid {
        what: "v1's status".into(),
        detail: "Healthy without a stable revision".into(),
    })?;
    Ok((controller, stable))
}

/// A canary through `steps` between the Services `web-stable` and `web-canary` (those
/// [`crate::routes::routed`] makes) with `routing` as its `trafficRouting`; the old version
/// after a promotion, and the new one after an abort, stay `scale_down_delay_s`.
pub fn routed_canary(routing: Value, steps: Value, scale_down_delay_s: u64) -> Value {
    json!({"canary": {
        "stableService": "web-stable", "canaryService": "web-canary",
        "trafficRouting": routing,
        "scaleDownDelaySeconds": scale_down_delay_s,
        "abortScaleDownDelaySeconds": scale_down_delay_s,
        "steps": steps,
    }})
}

/// `canary` (a strategy) judged in the background by [`canary_errors_template`], which it
/// must be given under that name, against the Prometheus at `prometheus`.
pub fn with_errors_analysis(mut canary: Value, prometheus: &str) -> Value {
    canary["canary"]["analysis"] = json!({
        "templates": [{"templateName": "canary-errors"}],
        "args": [{"name": "prometheus", "value": prometheus}],
    });
    canary
}

/// Creates the AnalysisTemplate `canary-errors` in `ns`: a look every second at the canary's
/// 5xx answers, as Prometheus (its address the argument `prometheus`) counts them; one is a
/// failure.
pub async fn create_canary_errors_template(client: &Client, ns: &str) -> Result<()> {
    let query = "sum(http_requests_total{rollouts_pod_template_hash=\"{{args.canary-hash}}\",code=~\"5..\"}) or vector(0)";
    let template: AnalysisTemplate = object(
        WHAT,
        json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "canary-errors"},
            "spec": {
                "args": [
                    {"name": "prometheus"},
                    {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
                ],
                "metrics": [{
                    "name": "canary-errors",
                    "interval": "1s",
                    "provider": {"prometheus": {"address": "{{args.prometheus}}", "query": query}},
                    "successCondition": "result[0] < 1",
                    "failureCondition": "result[0] >= 1",
                }],
            },
        }),
    )?;
    let templates: Api<AnalysisTemplate> = Api::namespaced(client.clone(), ns);
    templates.create(&PostParams::default(), &template).await?;
    Ok(())
}
