//! The controller against the real control plane: blue-green, canary without a router,
//! rolling within its bounds, and bad input. The blue-green and canary tests run on pods that
//! run (demo-app processes on their pod IPs) and check which version answers behind each
//! Service.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use libtest_mimic::Trial;
use rollout_controller::crd::{POD_TEMPLATE_HASH_LABEL, Phase, Rollout};
use serde_json::json;

pub(crate) use sluice_tests::rollouts::{
    create_rollout, create_service, decide, promote_until_stable, rollout_manifest,
    running_rollout, set_container, status_until, status_until_within,
};

use crate::pods::{served_until, versions_served};
use crate::support::{
    Env, RunningController, TestNamespace, demo_app_container, events_with_reason, eventually,
    ready_endpoints,
};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(rollouts::blue_green_previews_then_switches_on_promotion),
        trial!(rollouts::canary_without_router_moves_by_replica_counts),
        trial!(rollouts::rolling_stays_within_surge_and_unavailability),
        trial!(rollouts::the_scale_subresource_resizes_a_rollout),
        trial!(rollouts::pods_that_never_schedule_abort_at_the_progress_deadline),
        trial!(rollouts::a_missing_service_is_an_invalid_spec),
        trial!(rollouts::the_apiserver_rejects_invalid_specs),
    ]
}

pub(crate) async fn set_image(
    client: &Client,
    ns: &str,
    name: &str,
    image: &str,
) -> anyhow::Result<()> {
    Ok(set_container(client, ns, name, json!({"name": "app", "image": image})).await?)
}

/// spec.replicas of each ReplicaSet, by pod-template hash.
pub(crate) async fn replica_counts(
    client: &Client,
    ns: &str,
) -> anyhow::Result<BTreeMap<String, i32>> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    Ok(replica_sets
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|rs| {
            let hash = rs.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone();
            Some((hash, rs.spec.replicas.unwrap_or(0)))
        })
        .collect())
}

async fn counts_until(
    client: &Client,
    ns: &str,
    what: &str,
    want: &[(&str, i32)],
) -> anyhow::Result<()> {
    eventually(what, || async {
        let counts = replica_counts(client, ns).await?;
        let reached = want
            .iter()
            .all(|(hash, n)| counts.get(*hash).copied().unwrap_or(0) == *n);
        Ok(reached.then_some(()))
    })
    .await
}

/// Waits until `count` pods of version `hash` exist, all labelled `role=<role>`.
async fn roles_until(
    client: &Client,
    ns: &str,
    hash: &str,
    role: &str,
    count: usize,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let what = format!("{count} pods of {hash} labelled role={role}");
    eventually(&what, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("{POD_TEMPLATE_HASH_LABEL}={hash}")))
            .await?;
        let labelled = list
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.labels().get("role").map(String::as_str) == Some(role))
            .count();
        Ok((labelled == count && list.items.len() == count).then_some(()))
    })
    .await
}

async fn selector_hash(client: &Client, ns: &str, service: &str) -> anyhow::Result<Option<String>> {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let service = services.get(service).await?;
    Ok(service
        .spec
        .and_then(|s| s.selector)
        .and_then(|s| s.get(POD_TEMPLATE_HASH_LABEL).cloned()))
}

/// Names of the pods behind `service`'s ready endpoints.
async fn endpoint_pods(client: &Client, ns: &str, service: &str) -> anyhow::Result<Vec<String>> {
    Ok(ready_endpoints(client, ns, service)
        .await?
        .into_iter()
        .filter_map(|e| e.target_ref.and_then(|t| t.name))
        .collect())
}

async fn endpoints_until(
    client: &Client,
    ns: &str,
    service: &str,
    pod_prefix: &str,
    count: usize,
) -> anyhow::Result<()> {
    let what = format!("{count} ready endpoints of {service}, all pods {pod_prefix}*");
    eventually(&what, || async {
        let pods = endpoint_pods(client, ns, service).await?;
        Ok((pods.len() == count && pods.iter().all(|p| p.starts_with(pod_prefix))).then_some(()))
    })
    .await
}

async fn blue_green_previews_then_switches_on_promotion(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("bluegreen", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        create_service(&client, &ns, "web-active", "web").await?;
        create_service(&client, &ns, "web-preview", "web").await?;
        let strategy = json!({"blueGreen": {
            "activeService": "web-active", "previewService": "web-preview",
            "autoPromotionEnabled": false, "scaleDownDelaySeconds": 3,
        }});
        create_rollout(&client, &ns, running_rollout("web", 2, "v1", strategy)).await?;
        let v1 = status_until(&client, &ns, "web", "v1 Healthy", |s| {
            s.phase == Phase::Healthy
        })
        .await?;
        let blue = v1.stable_revision.context("no stable revision")?;
        endpoints_until(&client, &ns, "web-active", &format!("web-{blue}-"), 2).await?;
        served_until(&client, &ns, "web-active", &[("v1", 2)]).await?;

        set_container(&client, &ns, "web", demo_app_container("v2")).await?;
        let previewing = status_until(&client, &ns, "web", "v2 previewed and paused", |s| {
            s.phase == Phase::Paused && s.updated_revision != s.stable_revision
        })
        .await?;
        let green = previewing.updated_revision.context("no updated revision")?;
        eventually("the preview Service to select v2", || async {
            Ok(
                (selector_hash(&client, &ns, "web-preview").await?.as_deref()
                    == Some(green.as_str()))
                .then_some(()),
            )
        })
        .await?;
        ensure!(
            selector_hash(&client, &ns, "web-active").await?.as_deref() == Some(blue.as_str()),
            "the active Service moved before promotion"
        );
        endpoints_until(&client, &ns, "web-active", &format!("web-{blue}-"), 2).await?;
        endpoints_until(&client, &ns, "web-preview", &format!("web-{green}-"), 2).await?;
        // The preview serves only the new version, and the active Service only the old.
        served_until(&client, &ns, "web-preview", &[("v2", 2)]).await?;
        ensure!(
            versions_served(&client, &ns, "web-active").await?
                == BTreeMap::from([("v1".to_owned(), 2)]),
            "the active Service served v2 before promotion"
        );

        promote_until_stable(&client, &ns, "web", &green, 0).await?;
        ensure!(
            selector_hash(&client, &ns, "web-active").await?.as_deref() == Some(green.as_str()),
            "the active Service does not select v2 after promotion"
        );
        endpoints_until(&client, &ns, "web-active", &format!("web-{green}-"), 2).await?;
        served_until(&client, &ns, "web-active", &[("v2", 2)]).await?;
        // The old version stays for scaleDownDelaySeconds, then goes.
        ensure!(
            replica_counts(&client, &ns).await?.get(&blue) == Some(&2),
            "blue scaled down before its delay"
        );
        counts_until(
            &client,
            &ns,
            "blue at 0 after the delay",
            &[(&blue, 0), (&green, 2)],
        )
        .await?;
        status_until(&client, &ns, "web", "Healthy", |s| {
            s.phase == Phase::Healthy
        })
        .await?;
        Ok(())
    })
    .await
}

async fn canary_without_router_moves_by_replica_counts(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("canary", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        create_service(&client, &ns, "web", "web").await?;
        let strategy = json!({"canary": {
            "maxSurge": 1, "maxUnavailable": 0,
            "canaryMetadata": {"labels": {"role": "canary"}},
            "stableMetadata": {"labels": {"role": "stable"}},
            "steps": [{"setWeight": 20}, {"pause": {"duration": "5s"}}, {"setWeight": 60}, {"pause": {}}],
        }});
        create_rollout(&client, &ns, running_rollout("web", 5, "v1", strategy)).await?;
        let v1 = status_until(&client, &ns, "web", "v1 Healthy", |s| s.phase == Phase::Healthy).await?;
        let stable = v1.stable_revision.context("no stable revision")?;

        // A canary promoted to the end.
        served_until(&client, &ns, "web", &[("v1", 5)]).await?;
        set_container(&client, &ns, "web", demo_app_container("v2")).await?;
        let paused = status_until(&client, &ns, "web", "step 2 (pause 5s)", |s| {
            s.current_step_index == Some(1) && s.updated_revision != s.stable_revision
        })
        .await?;
        ensure!(paused.phase == Phase::Paused, "{paused:?}");
        let canary = paused.updated_revision.context("no updated revision")?;
        counts_until(&client, &ns, "1 canary / 4 stable at weight 20", &[(&canary, 1), (&stable, 4)]).await?;
        served_until(&client, &ns, "web", &[("v1", 4), ("v2", 1)]).await?;
        let at_60 = status_until(&client, &ns, "web", "step 4 (pause until promoted)", |s| {
            s.current_step_index == Some(3)
        })
        .await?;
        ensure!(at_60.canary.map(|c| c.weight) == Some(60), "weight is not 60 at step 4");
        counts_until(&client, &ns, "3 canary / 2 stable at weight 60", &[(&canary, 3), (&stable, 2)]).await?;
        served_until(&client, &ns, "web", &[("v1", 2), ("v2", 3)]).await?;
        roles_until(&client, &ns, &canary, "canary", 3).await?;
        roles_until(&client, &ns, &stable, "stable", 2).await?;
        decide(&client, &ns, "web", json!({"revision": canary, "promotedStep": 3})).await?;
        status_until(&client, &ns, "web", "v2 Healthy", |s| {
            s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(canary.as_str())
        })
        .await?;
        counts_until(&client, &ns, "5 new / 0 old", &[(&canary, 5), (&stable, 0)]).await?;
        served_until(&client, &ns, "web", &[("v2", 5)]).await?;
        roles_until(&client, &ns, &canary, "stable", 5).await?;

        // A canary aborted at its pause.
        let stable = canary;
        set_container(&client, &ns, "web", demo_app_container("v3")).await?;
        let at_pause = status_until(&client, &ns, "web", "v3 at step 4", |s| {
            s.current_step_index == Some(3) && s.updated_revision.as_deref() != Some(stable.as_str())
        })
        .await?;
        let canary = at_pause.updated_revision.context("no updated revision")?;
        decide(&client, &ns, "web", json!({"revision": canary, "abort": true})).await?;
        status_until(&client, &ns, "web", "v3 Aborted", |s| s.phase == Phase::Aborted).await?;
        counts_until(&client, &ns, "all stable, canary at 0", &[(&canary, 0), (&stable, 5)]).await?;
        served_until(&client, &ns, "web", &[("v2", 5)]).await?;
        let aborted = !events_with_reason(&client, &ns, "AbortedByUser").await?.is_empty();
        ensure!(aborted, "no AbortedByUser Event");
        Ok(())
    })
    .await
}

async fn rolling_stays_within_surge_and_unavailability(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("rolling", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        let strategy = json!({"rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}});
        create_rollout(&client, &ns, rollout_manifest("web", 10, "web:1", strategy)).await?;
        let v1 = status_until(&client, &ns, "web", "v1 Healthy", |s| {
            s.phase == Phase::Healthy
        })
        .await?;
        let v1 = v1.stable_revision.context("no stable revision")?;

        // Watch every ReplicaSet change for the whole rollout: the most pods at once, and the
        // fewest available.
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let seen: Arc<Mutex<(i32, i32)>> = Arc::new(Mutex::new((0, i32::MAX)));
        let watch = {
            let seen = seen.clone();
            let mut stream = watcher(replica_sets, watcher::Config::default()).boxed();
            tokio::spawn(async move {
                let mut current: BTreeMap<String, ReplicaSet> = BTreeMap::new();
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::Apply(rs) | watcher::Event::InitApply(rs)) => {
                            current.insert(rs.name_any(), rs);
                        }
                        Ok(watcher::Event::Delete(rs)) => {
                            current.remove(&rs.name_any());
                        }
                        _ => continue,
                    }
                    let pods: i32 = current
                        .values()
                        .map(|rs| rs.spec.replicas.unwrap_or(0))
                        .sum();
                    let available: i32 = current
                        .values()
                        .map(|rs| {
                            rs.status
                                .as_ref()
                                .and_then(|s| s.available_replicas)
                                .unwrap_or(0)
                        })
                        .sum();
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.0 = seen.0.max(pods);
                    if available > 0 {
                        seen.1 = seen.1.min(available);
                    }
                }
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        set_image(&client, &ns, "web", "web:2").await?;
        status_until(&client, &ns, "web", "v2 Healthy", |s| {
            s.phase == Phase::Healthy
                && s.stable_revision == s.updated_revision
                && s.stable_revision.as_deref() != Some(v1.as_str())
        })
        .await?;
        watch.abort();
        let (most_pods, fewest_available) = *seen.lock().unwrap_or_else(|p| p.into_inner());
        ensure!(
            most_pods <= 12,
            "{most_pods} pods at once: maxSurge 2 crossed"
        );
        ensure!(
            most_pods == 12,
            "the surge never reached 2 (at most {most_pods} pods)"
        );
        ensure!(
            fewest_available >= 9,
            "only {fewest_available} pods available: maxUnavailable 1 crossed"
        );
        Ok(())
    })
    .await
}

/// `kubectl scale` and an HPA go through the scale subresource: spec.replicas, status.replicas
/// and status.selector.
async fn the_scale_subresource_resizes_a_rollout(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("scale", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        let strategy = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        create_rollout(&client, &ns, rollout_manifest("web", 2, "web:1", strategy)).await?;
        let v1 = status_until(&client, &ns, "web", "Healthy at 2", |s| {
            s.phase == Phase::Healthy
        })
        .await?;
        let hash = v1.stable_revision.context("no stable revision")?;
        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
        let scale = rollouts.get_scale("web").await?;
        let selector = scale.status.as_ref().and_then(|s| s.selector.clone());
        ensure!(
            selector.as_deref() == Some("app=web"),
            "scale selector {selector:?}"
        );
        rollouts
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 4}})),
            )
            .await?;
        counts_until(&client, &ns, "4 pods after scaling", &[(&hash, 4)]).await?;
        status_until(&client, &ns, "web", "Healthy at 4", |s| {
            s.phase == Phase::Healthy && s.replicas == 4 && s.available_replicas == 4
        })
        .await?;
        let scale = rollouts.get_scale("web").await?;
        let replicas = scale.status.map(|s| s.replicas);
        ensure!(replicas == Some(4), "scale status replicas {replicas:?}");
        Ok(())
    })
    .await
}

/// A canary whose pods can never be scheduled (no node matches) aborts by itself once
/// progressDeadlineSeconds of waiting pass, and stable keeps all the pods.
async fn pods_that_never_schedule_abort_at_the_progress_deadline(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("deadline", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        let strategy = json!({"canary": {"maxSurge": 1, "maxUnavailable": 0, "steps": [{"setWeight": 50}, {"pause": {}}]}});
        let mut manifest = rollout_manifest("web", 2, "web:1", strategy);
        manifest["spec"]["progressDeadlineSeconds"] = json!(5);
        create_rollout(&client, &ns, manifest).await?;
        let v1 = status_until(&client, &ns, "web", "v1 Healthy", |s| s.phase == Phase::Healthy).await?;
        let stable = v1.stable_revision.context("no stable revision")?;

        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"template": {"spec": {
            "containers": [{"name": "app", "image": "web:2"}],
            "nodeSelector": {"sluice.dev/no-such-node": "true"},
        }}}});
        rollouts.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let aborted = status_until(&client, &ns, "web", "an abort at the progress deadline", |s| {
            s.phase == Phase::Aborted
        })
        .await?;
        let canary = aborted.updated_revision.context("no updated revision")?;
        ensure!(canary != stable, "the aborted revision is the stable one");
        counts_until(&client, &ns, "stable at 2, canary at 0", &[(&stable, 2), (&canary, 0)]).await?;
        let reported = !events_with_reason(&client, &ns, "ProgressDeadlineExceeded").await?.is_empty();
        ensure!(reported, "no ProgressDeadlineExceeded Event");
        Ok(())
    })
    .await
}

async fn a_missing_service_is_an_invalid_spec(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("invalid", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        let strategy = json!({"blueGreen": {"activeService": "nowhere"}});
        create_rollout(&client, &ns, rollout_manifest("web", 2, "web:1", strategy)).await?;
        let status = status_until(&client, &ns, "web", "Degraded", |s| {
            s.phase == Phase::Degraded
        })
        .await?;
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == "InvalidSpec")
            .context("no InvalidSpec condition")?;
        ensure!(condition.status == "True", "{condition:?}");
        ensure!(
            condition
                .message
                .contains("spec.strategy.blueGreen.activeService")
                && condition.message.contains("nowhere"),
            "the condition does not name the field and the Service: {}",
            condition.message
        );
        ensure!(
            replica_counts(&client, &ns).await?.is_empty(),
            "a ReplicaSet was created"
        );
        Ok(())
    })
    .await
}

async fn the_apiserver_rejects_invalid_specs(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("rejected", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let cases = [
            (
                json!({"canary": {}, "rollingUpdate": {}}),
                "exactly one of strategy.rollingUpdate, strategy.blueGreen, strategy.canary or strategy.abTest",
            ),
            (
                json!({"canary": {"steps": [{"setWeight": 150}]}}),
                "setWeight",
            ),
            (
                json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
                "maxSurge and maxUnavailable must not both be 0",
            ),
            (
                json!({"canary": {"steps": [{"pause": {"duration": "five minutes"}}]}}),
                "duration",
            ),
            (
                json!({"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}),
                "a canary step sets exactly one of setWeight, pause, setCanaryScale, analysis or setHeaderRoute",
            ),
            (
                json!({"canary": {"steps": [{"setHeaderRoute": {"match": []}}]}}),
                "setHeaderRoute needs trafficRouting",
            ),
            (
                json!({"canary": {"stableService": "s", "canaryService": "c", "trafficRouting": {
                    "nginx": {"stableIngress": "web"}, "gatewayAPI": {"httpRoute": "web"}}}}),
                "trafficRouting sets exactly one of nginx or gatewayAPI",
            ),
            (
                json!({"canary": {"trafficRouting": {"nginx": {"stableIngress": "web"}}}}),
                "trafficRouting needs stableService and canaryService",
            ),
            (
                json!({"abTest": {"stableService": "s", "canaryService": "c", "duration": "1m",
                                  "trafficRouting": {"nginx": {"stableIngress": "web"}},
                                  "match": [{"headers": [{"name": "x", "exact": "1"}], "cookie": "c"}]}}),
                "a match sets exactly one of headers or cookie",
            ),
        ];
        for (i, (strategy, expected)) in cases.into_iter().enumerate() {
            let manifest = rollout_manifest(&format!("bad-{i}"), 1, "web:1", strategy.clone());
            match create_rollout(&client, &ns, manifest).await {
                Ok(_) => bail!("the apiserver accepted {strategy}"),
                Err(e) => {
                    let message = format!("{e:#}");
                    ensure!(
                        message.contains(expected),
                        "{strategy}: rejected with {message:?}, want it to name {expected:?}"
                    );
                }
            }
        }
        Ok(())
    })
    .await
}
