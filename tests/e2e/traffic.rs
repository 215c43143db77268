//! Sluice driving a real proxy, measured at the client. A canary Rollout of demo-app pods (real
//! processes on their pod IPs) behind Traefik, on each router Sluice writes: the Gateway API
//! (HTTPRoute weights and a header-match rule) and ingress-nginx (canary annotations). A client
//! on 127.0.0.1 sends a steady 100 requests a second through Traefik for the whole release and
//! records which version answered each; at every step the canary's share must be within 3
//! binomial standard deviations of the step's weight, a request with the step's header must
//! always reach the canary, and no request may fail from the first answer to the last.

use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use serde_json::{Value, json};
use sluice_tests::load::{Load, LoadSpec, Record, Tally};
use sluice_tests::shares::within_binomial;
use sluice_tests::traefik::{INGRESS_CLASS, Traefik};

use crate::rollouts::{
    create_rollout, create_service, decide, running_rollout, set_container, status_until,
};
use crate::support::{Env, RunningController, TestNamespace, demo_app_container, eventually};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(traffic::a_canary_through_the_gateway_gets_its_weight_and_no_request_fails),
        trial!(traffic::a_canary_through_nginx_gets_its_weight_and_no_request_fails),
    ]
}

/// Requests a second, from the client's one loop.
const RATE: f64 = 100.0;
/// Answers counted at each step.
const PER_STEP: usize = 1000;
/// Answers counted with the canary's header.
const HEADER_REQUESTS: usize = 200;
const CANARY_HEADER: (&str, &str) = ("X-Canary", "1");
/// Traefik applies a change within its providers' throttle (200 ms) of the apiserver's event;
/// counting starts this long after Sluice says a step is reached.
const SETTLE: Duration = Duration::from_millis(1500);
/// The old version stays this long after promotion (short for the test; the default is 30 s).
const SCALE_DOWN_DELAY_S: u64 = 3;
/// Bounds the client: the whole release takes about a minute.
const LOAD_LIMIT: Duration = Duration::from_secs(300);
const REPLICAS: i32 = 4;
/// demo-app keeps answering this long after SIGTERM, as an app with a preStop sleep does: the
/// proxy learns of a terminating endpoint a moment after the pod does.
const SHUTDOWN_DELAY_MS: u64 = 2000;

/// The steps, and at which pause (its index) the share is measured against which weight.
fn steps() -> Value {
    json!([
        {"setWeight": 10}, {"pause": {}},
        {"setWeight": 25}, {"pause": {}},
        {"setHeaderRoute": {"match": [{"headerName": CANARY_HEADER.0,
                                       "headerValue": {"exact": CANARY_HEADER.1}}]}},
        {"setWeight": 50}, {"pause": {}},
        {"setWeight": 100}, {"pause": {}},
    ])
}
const MEASURED: [(i32, i32); 4] = [(1, 10), (3, 25), (6, 50), (8, 100)];
/// The pause after the header route is set.
const HEADER_PAUSE: i32 = 6;

#[derive(Clone, Copy)]
enum Via {
    Gateway,
    Nginx,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Gateway => "gateway",
            Via::Nginx => "nginx",
        }
    }
}

async fn a_canary_through_the_gateway_gets_its_weight_and_no_request_fails(
    env: &'static Env,
) -> anyhow::Result<()> {
    canary_through_traefik(env, Via::Gateway).await
}

async fn a_canary_through_nginx_gets_its_weight_and_no_request_fails(
    env: &'static Env,
) -> anyhow::Result<()> {
    canary_through_traefik(env, Via::Nginx).await
}

/// A demo-app container of `version` that drains as a real app would.
fn container(version: &str) -> Value {
    let mut container = demo_app_container(version);
    if let Some(env) = container["env"].as_array_mut() {
        env.push(json!({"name": "DEMO_SHUTDOWN_DELAY_MS", "value": SHUTDOWN_DELAY_MS.to_string()}));
    }
    container
}

async fn canary_through_traefik(env: &'static Env, via: Via) -> anyhow::Result<()> {
    env.install_crds().await?;
    let traefik = env.traefik().await?;
    env.in_namespace(
        &format!("traffic-{}", via.name()),
        |ns: TestNamespace| async move {
            let TestNamespace { name: ns, client } = ns;
            let host = format!("web.{ns}.example");
            create_service(&client, &ns, "web-stable", "web").await?;
            create_service(&client, &ns, "web-canary", "web").await?;
            let routing = match via {
                Via::Gateway => {
                    http_route(&client, &ns, &host).await?;
                    json!({"gatewayAPI": {"httpRoute": "web"}})
                }
                Via::Nginx => {
                    ingress(&client, &ns, &host).await?;
                    json!({"nginx": {"stableIngress": "web"}})
                }
            };
            let strategy = json!({"canary": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": routing,
                "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S,
                "steps": steps(),
            }});
            let mut manifest = running_rollout("web", REPLICAS, "v1", strategy);
            manifest["spec"]["template"]["spec"]["containers"] = json!([container("v1")]);
            let _controller = RunningController::start(client.clone(), &ns);
            create_rollout(&client, &ns, manifest).await?;
            let v1 = status_until(&client, &ns, "web", "v1 Healthy", |s| {
                s.phase == Phase::Healthy
            })
            .await?;
            let stable = v1.stable_revision.context("no stable revision")?;

            let load = Load::start(LoadSpec::new(traefik.web_addr(), &host, RATE, LOAD_LIMIT))?;
            let outcome = release(&client, &ns, traefik, &host, &load, via, &stable).await;
            let recorded = load.stop().await;
            outcome?;
            no_request_failed(via, &recorded.records)?;
            ensure!(
                recorded.dropped == 0,
                "the client dropped {} ticks",
                recorded.dropped
            );
            Ok(())
        },
    )
    .await
}

/// v2 through every step, the share checked at each pause, then promoted to the end.
async fn release(
    client: &Client,
    ns: &str,
    traefik: &Traefik,
    host: &str,
    load: &Load,
    via: Via,
    stable: &str,
) -> anyhow::Result<()> {
    eventually("Traefik to route to v1", || async {
        Ok(load
            .since(Duration::ZERO)
            .iter()
            .any(|r| r.version() == Some("v1"))
            .then_some(()))
    })
    .await?;
    set_container(client, ns, "web", container("v2")).await?;
    let mut canary = String::new();
    for (pause, weight) in MEASURED {
        let what = format!("v2 paused at step {pause} (weight {weight})");
        let status = status_until(client, ns, "web", &what, |s| {
            s.phase == Phase::Paused
                && s.current_step_index == Some(pause)
                && s.updated_revision.as_deref() != Some(stable)
        })
        .await?;
        canary = status.updated_revision.context("no updated revision")?;
        tokio::time::sleep(SETTLE).await;
        let from = load.now();
        let mut answers = load.collect(from, PER_STEP).await;
        answers.truncate(PER_STEP);
        let tally = Tally::of(&answers);
        share_follows_the_weight(via, weight, &tally)?;
        if pause == HEADER_PAUSE {
            header_reaches_the_canary(via, traefik, host).await?;
        }
        decide(
            client,
            ns,
            "web",
            json!({"revision": canary, "promotedStep": pause}),
        )
        .await?;
    }
    status_until(client, ns, "web", "v2 Healthy", |s| {
        s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(canary.as_str())
    })
    .await?;
    // Past the old version's scale-down and its pods' drain, with the client still sending.
    let drained =
        Duration::from_secs(SCALE_DOWN_DELAY_S) + Duration::from_millis(SHUTDOWN_DELAY_MS);
    tokio::time::sleep(drained + Duration::from_secs(3)).await;
    let from = load.now();
    let after = load.collect(from, 200).await;
    let tally = Tally::of(&after);
    ensure!(
        tally.count("v2") == tally.total && tally.total > 0,
        "{}: after the release, answers {tally:?}",
        via.name()
    );
    Ok(())
}

fn share_follows_the_weight(via: Via, weight: i32, tally: &Tally) -> anyhow::Result<()> {
    let (v1, v2) = (tally.count("v1"), tally.count("v2"));
    ensure!(
        v1 + v2 == tally.total,
        "{}: at weight {weight} answers not from v1 or v2: {tally:?}",
        via.name()
    );
    let p = f64::from(weight) / 100.0;
    eprintln!(
        "traffic: {}: weight {weight:>3}%: canary {v2:>4} of {} ({:.1}%; 3σ ±{:.1} points)",
        via.name(),
        tally.total,
        100.0 * v2 as f64 / tally.total.max(1) as f64,
        300.0 * (p * (1.0 - p) / tally.total.max(1) as f64).sqrt()
    );
    ensure!(
        tally.total >= PER_STEP && within_binomial(v2, tally.total, p, 3.0),
        "{}: at weight {weight} the canary answered {v2} of {}, not within 3σ",
        via.name(),
        tally.total
    );
    Ok(())
}

/// Every request with the header reaches the canary, whatever the weight.
async fn header_reaches_the_canary(via: Via, traefik: &Traefik, host: &str) -> anyhow::Result<()> {
    let spec = LoadSpec::new(traefik.web_addr(), host, 50.0, Duration::from_secs(30))
        .header(CANARY_HEADER.0, CANARY_HEADER.1);
    let load = Load::start(spec)?;
    let mut answers = load.collect(Duration::ZERO, HEADER_REQUESTS).await;
    load.stop().await;
    answers.truncate(HEADER_REQUESTS);
    let tally = Tally::of(&answers);
    eprintln!("traffic: {}: with {CANARY_HEADER:?}: {tally:?}", via.name());
    ensure!(
        tally.total == HEADER_REQUESTS && tally.count("v2") == HEADER_REQUESTS,
        "{}: requests with {CANARY_HEADER:?} were answered {tally:?}",
        via.name()
    );
    Ok(())
}

/// From the first answer on, no request failed: none unanswered, none a 502/503/504.
fn no_request_failed(via: Via, records: &[Record]) -> anyhow::Result<()> {
    let first = records
        .iter()
        .position(|r| r.version().is_some())
        .context("no request was ever answered")?;
    let counted = &records[first..];
    let failed: Vec<&Record> = counted.iter().filter(|r| r.failed()).collect();
    let tally = Tally::of(counted);
    eprintln!(
        "traffic: {}: {} requests through the release, {} failed, {} 5xx; by version {:?}",
        via.name(),
        tally.total,
        tally.failed,
        tally.server_errors,
        tally.by_version
    );
    ensure!(
        failed.is_empty() && tally.server_errors == 0,
        "{}: {} of {} requests failed during a good release; the first: {:?}",
        via.name(),
        failed.len(),
        tally.total,
        failed.iter().take(5).collect::<Vec<_>>()
    );
    Ok(())
}

async fn http_route(client: &Client, ns: &str, host: &str) -> anyhow::Result<()> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ));
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let route: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {
            "parentRefs": [Traefik::gateway_parent_ref()],
            "hostnames": [host],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {"name": "web-stable", "port": 80, "weight": 100},
                    {"name": "web-canary", "port": 80, "weight": 0},
                ],
            }],
        },
    }))?;
    routes.create(&PostParams::default(), &route).await?;
    Ok(())
}

async fn ingress(client: &Client, ns: &str, host: &str) -> anyhow::Result<()> {
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), ns);
    let ingress: Ingress = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            "rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web-stable", "port": {"number": 80}}},
            }]}}],
        },
    }))?;
    ingresses.create(&PostParams::default(), &ingress).await?;
    Ok(())
}
