//! What a ReplicaSet may not have, in a Rollout: each bad pod template or bound is refused when
//! the Rollout is written, naming the field, or the rollout ends Degraded with the apiserver's
//! own message in its status, a condition, an Event and a metric. Never `status: null`.

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use rollout_controller::crd::{Phase, Rollout};
use serde_json::{Value, json};

use crate::cli::{code, sluice};
use crate::rollouts::{create_rollout, rollout_manifest, status_until};
use crate::support::{Env, RunningController, TestNamespace, events_with_reason, eventually};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(bad_templates::templates_the_schema_can_judge_are_refused_naming_the_field),
        trial!(
            bad_templates::a_refused_replica_set_degrades_the_rollout_with_the_apiservers_message
        ),
        trial!(bad_templates::bounds_that_are_not_counts_or_percentages_are_refused),
    ]
}

/// A rolling Rollout `name` with `change` merged into its spec (a JSON merge patch: `null`
/// removes).
fn manifest(name: &str, change: Value) -> Value {
    let strategy = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let mut manifest = rollout_manifest(name, 2, "web:1", strategy);
    merge(&mut manifest["spec"], change);
    manifest
}

fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(into), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    into.remove(&key);
                } else {
                    merge(into.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (into, patch) => *into = patch,
    }
}

/// The apiserver's answer to a server-side dry run of creating `manifest`, sent as written (a
/// typed Rollout could not even carry some of these values): `Err` with its message when it
/// refuses.
async fn dry_run(
    client: &kube::Client,
    ns: &str,
    manifest: Value,
) -> anyhow::Result<Result<(), String>> {
    let resource = ApiResource::erase::<Rollout>(&());
    let rollouts: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let object: DynamicObject = serde_json::from_value(manifest)?;
    match rollouts.create(&params, &object).await {
        Ok(_) => Ok(Ok(())),
        Err(kube::Error::Api(status)) => Ok(Err(status.message)),
        Err(e) => Err(e.into()),
    }
}

/// The apiserver's message refusing `manifest`; an error if it accepts it.
async fn refusal(client: &kube::Client, ns: &str, manifest: Value) -> anyhow::Result<String> {
    match dry_run(client, ns, manifest).await? {
        Ok(()) => bail!("accepted"),
        Err(message) => Ok(message),
    }
}

async fn templates_the_schema_can_judge_are_refused_naming_the_field(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("bad-templates", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let long = "x".repeat(64);
        let containers = |list: Value| json!({"template": {"spec": {"containers": list}}});
        // (what, the change, what the apiserver's message must say)
        let cases = [
            (
                "duplicate container names",
                containers(
                    json!([{"name": "app", "image": "web:1"}, {"name": "app", "image": "web:2"}]),
                ),
                vec![
                    "spec.template.spec.containers",
                    "containers must have unique names",
                ],
            ),
            (
                "an empty container name",
                containers(json!([{"name": "", "image": "web:1"}])),
                vec!["spec.template.spec.containers[0].name"],
            ),
            (
                "a container without an image",
                containers(json!([{"name": "app"}])),
                vec!["spec.template.spec.containers[0].image", "Required"],
            ),
            (
                "an empty image",
                containers(json!([{"name": "app", "image": ""}])),
                vec!["spec.template.spec.containers[0].image"],
            ),
            (
                "an init container without an image",
                json!({"template": {"spec": {"initContainers": [{"name": "init"}]}}}),
                vec!["spec.template.spec.initContainers[0].image", "Required"],
            ),
            (
                "a label value over 63 characters",
                json!({"template": {"metadata": {"labels": {"tier": long}}}}),
                vec!["spec.template.metadata.labels.tier", "63"],
            ),
            (
                "a label value that is not label syntax",
                json!({"template": {"metadata": {"labels": {"tier": "front end"}}}}),
                vec!["spec.template.metadata.labels.tier", "should match"],
            ),
            (
                "a selector that misses the template",
                json!({"selector": {"matchLabels": {"app": "api"}}}),
                vec!["spec.selector", "selector does not match the template"],
            ),
            (
                "a selector that asks for more than the template has",
                json!({"selector": {"matchLabels": {"tier": "front"}}}),
                vec!["spec.selector", "selector does not match the template"],
            ),
            (
                "an empty selector",
                json!({"selector": {"matchLabels": null}}),
                vec!["spec.selector", "must not be empty"],
            ),
            (
                "a selector value that is not label syntax",
                json!({"selector": {"matchLabels": {"app": "-web"}},
                       "template": {"metadata": {"labels": {"app": "-web"}}}}),
                vec!["spec.selector.matchLabels.app"],
            ),
        ];
        for (what, change, expected) in cases {
            let message = refusal(&client, &ns, manifest("web", change))
                .await
                .with_context(|| format!("{what}: the apiserver"))?;
            for part in expected {
                ensure!(
                    message.contains(part),
                    "{what}: refused with {message:?}, which does not say {part:?}"
                );
            }
        }
        Ok(())
    })
    .await
}

/// The Events with `reason` about rollout `name`.
async fn events_about(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> anyhow::Result<Vec<CoreEvent>> {
    let events = events_with_reason(client, ns, reason).await?;
    Ok(events
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect())
}

async fn a_refused_replica_set_degrades_the_rollout_with_the_apiservers_message(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("refused-rs", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::start(client.clone(), &ns);
        let label = |key: &str| json!({"template": {"metadata": {"labels": {key: "x"}}}});
        let big = "x".repeat(300 * 1024);
        // (rollout, the change, what the apiserver says of its ReplicaSet)
        let cases = [
            (
                "long-label-key",
                label(&"k".repeat(64)),
                "name part must be no more than 63",
            ),
            (
                "label-key-syntax",
                label("bad key!"),
                "name part must consist of alphanumeric characters",
            ),
            (
                "big-annotation",
                json!({"template": {"metadata": {"annotations": {"notes": big}}}}),
                "Too long",
            ),
            (
                "stable-metadata",
                json!({"strategy": {"rollingUpdate": null, "canary": {
                    "steps": [{"setWeight": 50}],
                    "stableMetadata": {"labels": {"role!": "stable"}}}}}),
                "name part must consist of alphanumeric characters",
            ),
        ];
        for (name, change, _) in &cases {
            create_rollout(&client, &ns, manifest(name, change.clone()))
                .await
                .with_context(|| format!("creating {name}"))?;
        }
        for (name, _, said) in &cases {
            let status = status_until(&client, &ns, name, &format!("{name} Degraded"), |s| {
                s.phase == Phase::Degraded
            })
            .await?;
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == "ReplicaSetCreateError")
                .with_context(|| format!("{name}: no ReplicaSetCreateError in {status:?}"))?;
            ensure!(condition.status == "True", "{name}: {condition:?}");
            ensure!(
                condition.message.contains(said)
                    && condition.message.contains(&format!("ReplicaSet {name}-"))
                    && status.message == condition.message,
                "{name}: the condition does not carry the apiserver's message {said:?}: \
                 {condition:?}, status message {:?}",
                status.message
            );
            eventually(
                &format!("a ReplicaSetCreateError Event on {name}"),
                || async {
                    let events = events_about(&client, &ns, name, "ReplicaSetCreateError").await?;
                    Ok(events
                        .iter()
                        .any(|e| e.message.as_deref().is_some_and(|m| m.contains(said)))
                        .then_some(()))
                },
            )
            .await?;
            // The pipeline's gate says why, and exits as for Degraded.
            let gate = sluice(env, &ns, &["status", name, "--timeout", "30s"]).await?;
            let stdout = String::from_utf8_lossy(&gate.stdout);
            ensure!(
                code(&gate) == 6 && stdout.contains("Degraded") && stdout.contains(said),
                "{name}: kubectl sluice status exited {} with {stdout:?}",
                code(&gate)
            );
        }
        let metrics = controller.metrics().await?;
        for series in [
            "sluice_reconcile_errors_total{reason=\"ReplicaSetCreateError\"}",
            "sluice_rollout_transitions_total{reason=\"ReplicaSetCreateError\"}",
        ] {
            let count = metrics
                .lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
                .with_context(|| format!("no {series} in the controller's metrics"))?;
            ensure!(count >= cases.len() as f64, "{series} {count}");
        }
        // Backoff, not a hot loop, and one Event per cause however often it is retried.
        let events = events_about(&client, &ns, "big-annotation", "ReplicaSetCreateError").await?;
        let count: i32 = events.iter().map(|e| e.count.unwrap_or(1)).sum();
        ensure!(
            count <= 2,
            "{count} ReplicaSetCreateError Events for one cause"
        );

        // Fixed, the rollout proceeds and the condition clears.
        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
        let fix = json!({"spec": {"template": {"metadata": {"annotations": null}}}});
        rollouts
            .patch(
                "big-annotation",
                &PatchParams::default(),
                &Patch::Merge(&fix),
            )
            .await?;
        let status = status_until(&client, &ns, "big-annotation", "fixed, Healthy", |s| {
            s.phase == Phase::Healthy
        })
        .await?;
        ensure!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "ReplicaSetCreateError" && c.status == "False"),
            "the refusal is still reported: {:?}",
            status.conditions
        );

        // What the schema leaves to the controller: matchExpressions that miss the template.
        let expressions = json!({"selector": {"matchLabels": null, "matchExpressions": [
            {"key": "app", "operator": "In", "values": ["api"]}]}});
        create_rollout(&client, &ns, manifest("expressions", expressions)).await?;
        let status = status_until(&client, &ns, "expressions", "expressions Degraded", |s| {
            s.phase == Phase::Degraded
        })
        .await?;
        ensure!(
            status
                .message
                .starts_with("spec.selector.matchExpressions[0]: "),
            "{}",
            status.message
        );
        Ok(())
    })
    .await
}

async fn bounds_that_are_not_counts_or_percentages_are_refused(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("bad-bounds", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let bad = [
            json!("abc"),
            json!(-1),
            json!("-1"),
            json!("1.5"),
            json!(1.5),
            json!("101%"),
            json!("3"),
        ];
        for strategy in ["rollingUpdate", "canary"] {
            for (field, other) in [
                ("maxSurge", "maxUnavailable"),
                ("maxUnavailable", "maxSurge"),
            ] {
                for value in &bad {
                    let change = json!({"strategy": {"rollingUpdate": null,
                                                     strategy: {field: value, other: 0}}});
                    let what = format!("{strategy}.{field} {value}");
                    let message = refusal(&client, &ns, manifest("web", change))
                        .await
                        .with_context(|| format!("{what}: the apiserver"))?;
                    let path = format!("spec.strategy.{strategy}.{field}");
                    ensure!(
                        message.contains(&path),
                        "{what}: refused with {message:?}, which does not name {path}"
                    );
                }
                for good in [json!(2), json!("0%"), json!("100%")] {
                    let change = json!({"strategy": {"rollingUpdate": null,
                                                     strategy: {field: good, other: 1}}});
                    if let Err(message) = dry_run(&client, &ns, manifest("web", change)).await? {
                        bail!("{strategy}.{field} {good} was refused: {message}");
                    }
                }
            }
        }
        Ok(())
    })
    .await
}
