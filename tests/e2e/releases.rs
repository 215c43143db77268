//! Releases without a traffic router, through Traefik as an ingress controller, measured at the
//! client: plain Ingresses send each host to one Service, and Sluice moves traffic only by which
//! pods that Service selects. A router-less canary's share follows its replica ratio; a
//! blue-green's preview serves only the new version and the active Service's switch moves every
//! request at once; a rolling update of 10 replicas replaces every pod. No request fails in any
//! of them.

use std::time::Duration;

use anyhow::{Context, ensure};
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use serde_json::json;
use sluice_tests::load::{Load, LoadSpec, Tally};

use sluice_tests::demo_pods::{SHUTDOWN_DELAY, draining_container};
use sluice_tests::rollouts::healthy_v1;
use sluice_tests::routes::ingress;

use crate::rollouts::{create_service, decide, promote_until_stable, set_container, status_until};
use crate::support::{Env, TestNamespace};
use crate::traffic::{
    LOAD_LIMIT, PER_STEP, RATE, SCALE_DOWN_DELAY_S, SETTLE, no_request_failed, past_the_scale_down,
    routed_to_v1, share_follows_the_weight,
};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(releases::a_router_less_canary_gets_its_replica_share_and_no_request_fails),
        trial!(releases::a_blue_green_switch_moves_every_request_at_once_and_none_fails),
        trial!(releases::a_rolling_update_of_10_replicas_fails_no_request),
    ]
}

/// The steady client for `host`, once Traefik routes it to v1.
async fn load_on(env: &'static Env, host: &str) -> anyhow::Result<Load> {
    let traefik = env.traefik().await?;
    let load = Load::start(LoadSpec::new(traefik.web_addr(), host, RATE, LOAD_LIMIT))?;
    routed_to_v1(&load).await?;
    Ok(load)
}

/// The next [`PER_STEP`] answers from now on, counted, once Traefik has had [`SETTLE`].
async fn measure(load: &Load) -> Tally {
    tokio::time::sleep(SETTLE).await;
    let mut answers = load.collect(load.now(), PER_STEP).await;
    answers.truncate(PER_STEP);
    Tally::of(&answers)
}

async fn a_router_less_canary_gets_its_replica_share_and_no_request_fails(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("plain-canary", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let host = format!("web.{ns}.example");
        create_service(&client, &ns, "web", "web").await?;
        ingress(&client, &ns, "web", &host, "web").await?;
        // Without a router, weight 25 of 4 replicas is 1 new pod beside 3 old ones.
        let strategy = json!({"canary": {
            "maxSurge": 1, "maxUnavailable": 0,
            "steps": [{"setWeight": 25}, {"pause": {}}],
        }});
        let (_controller, stable) = healthy_v1(&client, &ns, 4, strategy).await?;
        let load = load_on(env, &host).await?;
        let outcome = async {
            set_container(&client, &ns, "web", draining_container("v2", &[])).await?;
            let paused = status_until(&client, &ns, "web", "v2 paused at weight 25", |s| {
                s.phase == Phase::Paused
                    && s.current_step_index == Some(1)
                    && s.updated_revision.as_deref() != Some(stable.as_str())
            })
            .await?;
            let canary = paused.updated_revision.context("no updated revision")?;
            // The split is in pods: wait until exactly 1 of 4 ready endpoints is new.
            crate::pods::served_until(&client, &ns, "web", &[("v1", 3), ("v2", 1)]).await?;
            share_follows_the_weight("router-less canary", 25, &measure(&load).await)?;
            decide(
                &client,
                &ns,
                "web",
                json!({"revision": canary, "promotedStep": 1}),
            )
            .await?;
            status_until(&client, &ns, "web", "v2 Healthy", |s| {
                s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(canary.as_str())
            })
            .await?;
            crate::pods::served_until(&client, &ns, "web", &[("v2", 4)]).await?;
            past_the_scale_down().await;
            share_follows_the_weight("router-less canary", 100, &measure(&load).await)
        }
        .await;
        let recorded = load.stop().await;
        outcome?;
        no_request_failed("router-less canary", &recorded.records, false)
    })
    .await
}

async fn a_blue_green_switch_moves_every_request_at_once_and_none_fails(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let traefik = env.traefik().await?;
    env.in_namespace("plain-bluegreen", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let host = format!("web.{ns}.example");
        let preview_host = format!("preview.{ns}.example");
        create_service(&client, &ns, "web-active", "web").await?;
        create_service(&client, &ns, "web-preview", "web").await?;
        ingress(&client, &ns, "web", &host, "web-active").await?;
        ingress(&client, &ns, "web-preview", &preview_host, "web-preview").await?;
        let strategy = json!({"blueGreen": {
            "activeService": "web-active", "previewService": "web-preview",
            "autoPromotionEnabled": false, "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S,
        }});
        let (_controller, blue) = healthy_v1(&client, &ns, 2, strategy).await?;
        let load = load_on(env, &host).await?;
        let outcome = async {
            set_container(&client, &ns, "web", draining_container("v2", &[])).await?;
            let previewing = status_until(&client, &ns, "web", "v2 previewed", |s| {
                s.phase == Phase::Paused && s.updated_revision.as_deref() != Some(blue.as_str())
            })
            .await?;
            let green = previewing.updated_revision.context("no updated revision")?;
            crate::pods::served_until(&client, &ns, "web-preview", &[("v2", 2)]).await?;
            // The preview host serves only the new version; the site only the old.
            let preview = Load::start(LoadSpec::new(
                traefik.web_addr(),
                &preview_host,
                RATE,
                Duration::from_secs(60),
            ))?;
            let previewed = async {
                tokio::time::sleep(SETTLE).await;
                let mut answers = preview.collect(preview.now(), PER_STEP).await;
                answers.truncate(PER_STEP);
                Tally::of(&answers)
            }
            .await;
            preview.stop().await;
            share_follows_the_weight("blue-green preview", 100, &previewed)?;
            share_follows_the_weight(
                "blue-green active before the switch",
                0,
                &measure(&load).await,
            )?;

            promote_until_stable(&client, &ns, "web", &green, 0).await?;
            // At once: from a moment after the switch, every answer is the new version's.
            let switched = load.now();
            share_follows_the_weight(
                "blue-green active after the switch",
                100,
                &measure(&load).await,
            )?;
            let mixed = load
                .since(switched)
                .iter()
                .filter(|r| r.version() == Some("v1"))
                .map(|r| r.sent.saturating_sub(switched))
                .max();
            eprintln!(
                "releases: blue-green: last answer from v1 {:?} after Sluice said v2 is active",
                mixed
            );
            past_the_scale_down().await;
            let after = measure(&load).await;
            ensure!(
                after.count("v2") == after.total,
                "after the scale-down: {after:?}"
            );
            Ok(())
        }
        .await;
        let recorded = load.stop().await;
        outcome?;
        no_request_failed("blue-green", &recorded.records, false)
    })
    .await
}

async fn a_rolling_update_of_10_replicas_fails_no_request(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("plain-rolling", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let host = format!("web.{ns}.example");
        create_service(&client, &ns, "web", "web").await?;
        ingress(&client, &ns, "web", &host, "web").await?;
        let strategy = json!({"rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}});
        let (_controller, stable) = healthy_v1(&client, &ns, 10, strategy).await?;
        let load = load_on(env, &host).await?;
        let outcome = async {
            set_container(&client, &ns, "web", draining_container("v2", &[])).await?;
            status_until(&client, &ns, "web", "v2 Healthy", |s| {
                s.phase == Phase::Healthy
                    && s.stable_revision.is_some()
                    && s.stable_revision.as_deref() != Some(stable.as_str())
            })
            .await?;
            crate::pods::served_until(&client, &ns, "web", &[("v2", 10)]).await?;
            tokio::time::sleep(SHUTDOWN_DELAY + SETTLE).await;
            share_follows_the_weight("rolling", 100, &measure(&load).await)
        }
        .await;
        let recorded = load.stop().await;
        outcome?;
        no_request_failed("rolling update of 10", &recorded.records, false)
    })
    .await
}
