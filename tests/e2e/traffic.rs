//! Sluice driving a real proxy, measured at the client. A canary Rollout of demo-app pods (real
//! processes on their pod IPs) behind Traefik, on each router Sluice writes: the Gateway API
//! (HTTPRoute weights and a header-match rule) and ingress-nginx (canary annotations). A client
//! on 127.0.0.1 sends a steady 100 requests a second through Traefik for the whole release and
//! records which version answered each; at every step the canary's share must be within 3
//! binomial standard deviations of the step's weight, a request with the step's header must
//! always reach the canary, and no request may fail from the first answer to the last. A canary
//! that fails its analysis is emptied at the client: the tests measure, from the Fail verdict,
//! how long until the last answer from the canary and how many it still gave.

use std::time::{Duration, SystemTime};

use anyhow::{Context, ensure};
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use rollout_controller::crd::analysis::{AnalysisRun, AnalysisTemplate};
use serde_json::{Value, json};
use sluice_tests::load::{Load, LoadSpec, Record, Tally};
use sluice_tests::prometheus_live::{LivePrometheus, PodScrape};
use sluice_tests::shares::within_binomial;
use sluice_tests::traefik::{INGRESS_CLASS, Traefik};
use traffic::gateway::http_route_resource;

use crate::rollouts::{
    create_rollout, create_service, decide, running_rollout, set_container, status_until,
};
use crate::support::{Env, RunningController, TestNamespace, demo_app_container, eventually};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(traffic::a_canary_through_the_gateway_gets_its_weight_and_no_request_fails),
        trial!(traffic::a_canary_through_nginx_gets_its_weight_and_no_request_fails),
        trial!(traffic::an_ab_test_through_the_gateway_sends_only_matching_requests_to_b),
        trial!(traffic::an_ab_test_through_nginx_sends_only_matching_requests_to_b),
        trial!(traffic::an_aborted_canary_through_the_gateway_is_emptied_at_the_client),
        trial!(traffic::an_aborted_canary_through_nginx_is_emptied_at_the_client),
    ]
}

/// Requests a second, from the client's one loop.
pub(crate) const RATE: f64 = 100.0;
/// Answers counted at each step.
pub(crate) const PER_STEP: usize = 1000;
/// Answers counted with the canary's header.
const HEADER_REQUESTS: usize = 200;
const CANARY_HEADER: (&str, &str) = ("X-Canary", "1");
/// Traefik applies a change within its providers' throttle (200 ms) of the apiserver's event;
/// counting starts this long after Sluice says a step is reached.
pub(crate) const SETTLE: Duration = Duration::from_millis(1500);
/// The old version stays this long after promotion (short for the test; the default is 30 s).
pub(crate) const SCALE_DOWN_DELAY_S: u64 = 3;
/// Bounds the client: the whole release takes about a minute.
pub(crate) const LOAD_LIMIT: Duration = Duration::from_secs(300);
const REPLICAS: i32 = 4;
/// demo-app keeps answering this long after SIGTERM, as an app with a preStop sleep does: the
/// proxy learns of a terminating endpoint a moment after the pod does.
pub(crate) const SHUTDOWN_DELAY_MS: u64 = 2000;

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
pub(crate) fn container(version: &str) -> Value {
    let mut container = demo_app_container(version);
    if let Some(env) = container["env"].as_array_mut() {
        env.push(json!({"name": "DEMO_SHUTDOWN_DELAY_MS", "value": SHUTDOWN_DELAY_MS.to_string()}));
    }
    container
}

/// A Rollout named `web` of `replicas` demo-app v1 pods (draining as a real app would) with
/// `strategy`, its controller, and Healthy: the controller (stopped when dropped) and v1's
/// revision.
pub(crate) async fn healthy_v1(
    client: &Client,
    ns: &str,
    replicas: i32,
    strategy: Value,
) -> anyhow::Result<(RunningController, String)> {
    let mut manifest = running_rollout("web", replicas, "v1", strategy);
    manifest["spec"]["template"]["spec"]["containers"] = json!([container("v1")]);
    let controller = RunningController::start(client.clone(), ns);
    create_rollout(client, ns, manifest).await?;
    let v1 = status_until(client, ns, "web", "v1 Healthy", |s| {
        s.phase == Phase::Healthy
    })
    .await?;
    let stable = v1.stable_revision.context("no stable revision")?;
    Ok((controller, stable))
}

/// The stable and canary Services and the router's object for `host`; the Rollout's
/// `trafficRouting` for it.
async fn routed(client: &Client, ns: &str, host: &str, via: Via) -> anyhow::Result<Value> {
    create_service(client, ns, "web-stable", "web").await?;
    create_service(client, ns, "web-canary", "web").await?;
    Ok(match via {
        Via::Gateway => {
            http_route(client, ns, host).await?;
            json!({"gatewayAPI": {"httpRoute": "web"}})
        }
        Via::Nginx => {
            ingress(client, ns, "web", host, "web-stable").await?;
            json!({"nginx": {"stableIngress": "web"}})
        }
    })
}

async fn canary_through_traefik(env: &'static Env, via: Via) -> anyhow::Result<()> {
    env.install_crds().await?;
    let traefik = env.traefik().await?;
    env.in_namespace(
        &format!("traffic-{}", via.name()),
        |ns: TestNamespace| async move {
            let TestNamespace { name: ns, client } = ns;
            let host = format!("web.{ns}.example");
            let routing = routed(&client, &ns, &host, via).await?;
            let strategy = json!({"canary": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": routing,
                "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S,
                "steps": steps(),
            }});
            let (_controller, stable) = healthy_v1(&client, &ns, REPLICAS, strategy).await?;

            let load = Load::start(LoadSpec::new(traefik.web_addr(), &host, RATE, LOAD_LIMIT))?;
            let outcome = release(&client, &ns, traefik, &host, &load, via, &stable).await;
            let recorded = load.stop().await;
            outcome?;
            no_request_failed(via.name(), &recorded.records, false)?;
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
    routed_to_v1(load).await?;
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
        share_follows_the_weight(via.name(), weight, &tally)?;
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
    only_v2_after_the_scale_down(load, via).await
}

async fn an_ab_test_through_the_gateway_sends_only_matching_requests_to_b(
    env: &'static Env,
) -> anyhow::Result<()> {
    ab_test_through_traefik(env, Via::Gateway).await
}

async fn an_ab_test_through_nginx_sends_only_matching_requests_to_b(
    env: &'static Env,
) -> anyhow::Result<()> {
    ab_test_through_traefik(env, Via::Nginx).await
}

/// How long B is tried: long enough to measure the three kinds of request in turn.
const AB_DURATION: &str = "45s";
const VARIANT_HEADER: (&str, &str) = ("X-Variant", "b");
const VARIANT_COOKIE: &str = "variant-b";

/// An A/B test of v2 against v1: a request with the variant's header or cookie reaches B, every
/// other request stays on A, then B is promoted by itself when the test's time is up; nobody
/// sees a request fail.
async fn ab_test_through_traefik(env: &'static Env, via: Via) -> anyhow::Result<()> {
    env.install_crds().await?;
    let traefik = env.traefik().await?;
    env.in_namespace(
        &format!("ab-{}", via.name()),
        |ns: TestNamespace| async move {
            let TestNamespace { name: ns, client } = ns;
            let host = format!("web.{ns}.example");
            let routing = routed(&client, &ns, &host, via).await?;
            let strategy = json!({"abTest": {
                "stableService": "web-stable", "canaryService": "web-canary",
                "trafficRouting": routing,
                "match": [
                    {"headers": [{"name": VARIANT_HEADER.0, "exact": VARIANT_HEADER.1}]},
                    {"cookie": VARIANT_COOKIE},
                ],
                "duration": AB_DURATION, "promote": "auto",
            }});
            let _controller = healthy_v1(&client, &ns, REPLICAS, strategy).await?;
            let load = Load::start(LoadSpec::new(traefik.web_addr(), &host, RATE, LOAD_LIMIT))?;
            let outcome = async {
                routed_to_v1(&load).await?;
                set_container(&client, &ns, "web", container("v2")).await?;
                let running = status_until(&client, &ns, "web", "the A/B test to start", |s| {
                    s.ab_test.as_ref().is_some_and(|t| t.started_at.is_some())
                })
                .await?;
                let b = running.updated_revision.context("no updated revision")?;
                tokio::time::sleep(SETTLE).await;
                let mut plain = load.collect(load.now(), PER_STEP).await;
                plain.truncate(PER_STEP);
                share_follows_the_weight(
                    &format!("{} A/B, plain requests", via.name()),
                    0,
                    &Tally::of(&plain),
                )?;
                let cookie = format!("{VARIANT_COOKIE}=always");
                for (what, name, value) in [
                    ("the variant's header", VARIANT_HEADER.0, VARIANT_HEADER.1),
                    ("the variant's cookie", "Cookie", cookie.as_str()),
                ] {
                    let spec =
                        LoadSpec::new(traefik.web_addr(), &host, 50.0, Duration::from_secs(30))
                            .header(name, value);
                    let matching = Load::start(spec)?;
                    let mut answers = matching.collect(Duration::ZERO, HEADER_REQUESTS).await;
                    matching.stop().await;
                    answers.truncate(HEADER_REQUESTS);
                    let tally = Tally::of(&answers);
                    eprintln!("traffic: {} A/B, with {what}: {tally:?}", via.name());
                    ensure!(
                        tally.total == HEADER_REQUESTS && tally.count("v2") == HEADER_REQUESTS,
                        "{} A/B: requests with {what} were answered {tally:?}",
                        via.name()
                    );
                }
                status_until(&client, &ns, "web", "B promoted when its time is up", |s| {
                    s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(b.as_str())
                })
                .await?;
                only_v2_after_the_scale_down(&load, via).await
            }
            .await;
            let recorded = load.stop().await;
            outcome?;
            no_request_failed(&format!("{} A/B", via.name()), &recorded.records, false)
        },
    )
    .await
}

/// Past the old version's scale-down and its pods' drain.
pub(crate) async fn past_the_scale_down() {
    let drained =
        Duration::from_secs(SCALE_DOWN_DELAY_S) + Duration::from_millis(SHUTDOWN_DELAY_MS);
    tokio::time::sleep(drained + Duration::from_secs(3)).await;
}

/// Past the old version's scale-down, with the client still sending: every answer is v2's.
async fn only_v2_after_the_scale_down(load: &Load, via: Via) -> anyhow::Result<()> {
    past_the_scale_down().await;
    let after = load.collect(load.now(), 200).await;
    let tally = Tally::of(&after);
    ensure!(
        tally.count("v2") == tally.total && tally.total > 0,
        "{}: after the release, answers {tally:?}",
        via.name()
    );
    Ok(())
}

async fn an_aborted_canary_through_the_gateway_is_emptied_at_the_client(
    env: &'static Env,
) -> anyhow::Result<()> {
    aborted_through_traefik(env, Via::Gateway).await
}

async fn an_aborted_canary_through_nginx_is_emptied_at_the_client(
    env: &'static Env,
) -> anyhow::Result<()> {
    aborted_through_traefik(env, Via::Nginx).await
}

/// A look every second at the canary's 5xx answers, as Prometheus counts them: one is a failure.
fn errors_template() -> Value {
    let query = "sum(http_requests_total{rollouts_pod_template_hash=\"{{args.canary-hash}}\",code=~\"5..\"}) or vector(0)";
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
    })
}

/// v2 fails 30% of its requests at weight 25 under background analysis: Sluice aborts it, the
/// client stops hearing from it, and nobody sees a request fail in the data plane (v2's own
/// 500s are answers, and are what the analysis caught).
async fn aborted_through_traefik(env: &'static Env, via: Via) -> anyhow::Result<()> {
    env.install_crds().await?;
    let traefik = env.traefik().await?;
    let cluster = env.cluster().await?;
    env.in_namespace(
        &format!("abort-{}", via.name()),
        |ns: TestNamespace| async move {
            let TestNamespace { name: ns, client } = ns;
            let host = format!("web.{ns}.example");
            let routing = routed(&client, &ns, &host, via).await?;
            let prometheus = LivePrometheus::discovering_pods(
                cluster,
                &PodScrape::namespace(&ns, Duration::from_secs(1)),
            )
            .await?;
            let outcome = async {
                let templates: Api<AnalysisTemplate> = Api::namespaced(client.clone(), &ns);
                templates
                    .create(
                        &PostParams::default(),
                        &serde_json::from_value(errors_template())?,
                    )
                    .await?;
                let strategy = json!({"canary": {
                    "stableService": "web-stable", "canaryService": "web-canary",
                    "trafficRouting": routing,
                    "abortScaleDownDelaySeconds": SCALE_DOWN_DELAY_S,
                    "analysis": {
                        "templates": [{"templateName": "canary-errors"}],
                        "args": [{"name": "prometheus", "value": prometheus.url()}],
                    },
                    "steps": [{"setWeight": 25}, {"pause": {}}],
                }});
                let _controller = healthy_v1(&client, &ns, REPLICAS, strategy).await?;
                let load = Load::start(LoadSpec::new(traefik.web_addr(), &host, RATE, LOAD_LIMIT))?;
                let measured = abort_at_the_client(&client, &ns, &load, via).await;
                let recorded = load.stop().await;
                measured?;
                // v2's own 500s are answers: what the analysis caught, not the data plane.
                no_request_failed(via.name(), &recorded.records, true)
            }
            .await;
            prometheus.stop().await;
            outcome
        },
    )
    .await
}

async fn abort_at_the_client(
    client: &Client,
    ns: &str,
    load: &Load,
    via: Via,
) -> anyhow::Result<()> {
    routed_to_v1(load).await?;
    let mut bad = container("v2");
    if let Some(env) = bad["env"].as_array_mut() {
        env.push(json!({"name": "DEMO_ERROR_RATE", "value": "0.3"}));
    }
    set_container(client, ns, "web", bad).await?;
    let aborted = status_until(client, ns, "web", "v2 aborted by its analysis", |s| {
        s.phase == Phase::Aborted
    })
    .await?;
    let canary = aborted.updated_revision.context("no updated revision")?;
    let run_name = aborted
        .analysis_runs
        .iter()
        .find(|r| r.phase == ::analysis::Phase::Failed)
        .map(|r| r.name.clone())
        .with_context(|| format!("no failed run in {:?}", aborted.analysis_runs))?;
    let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), ns);
    let run = runs.get(&run_name).await?;
    let verdict: SystemTime = run
        .status
        .as_ref()
        .and_then(|s| s.completed_at)
        .context("the failed run has no completedAt")?
        .0;
    // Past the canary's scale-down, with the client still sending.
    tokio::time::sleep(Duration::from_secs(SCALE_DOWN_DELAY_S + 3)).await;
    let verdict_at = load.offset_of(verdict);
    let records = load.since(Duration::ZERO);
    let after: Vec<&Record> = records
        .iter()
        .filter(|r| r.version() == Some("v2") && r.sent >= verdict_at)
        .collect();
    let last = records
        .iter()
        .filter(|r| r.version() == Some("v2"))
        .map(Record::ended)
        .max()
        .context("the canary never answered")?;
    let drain = last.saturating_sub(verdict_at);
    let before = Tally::of(records.iter().filter(|r| r.sent < verdict_at));
    eprintln!(
        "traffic: {}: abort of {canary}: last canary answer {:.3} s after the Fail verdict, {} canary \
         answers sent after it; before it the canary answered {} of {}",
        via.name(),
        drain.as_secs_f64(),
        after.len(),
        before.count("v2"),
        before.total
    );
    // Emptied: nothing from the canary once Sluice has had a moment to move the weight and
    // Traefik to apply it.
    let settled = verdict_at + Duration::from_secs(2);
    let late = records
        .iter()
        .filter(|r| r.version() == Some("v2") && r.sent >= settled)
        .count();
    ensure!(
        late == 0,
        "{}: the canary still answered {late} requests more than 2 s after the verdict",
        via.name()
    );
    ensure!(
        before.count("v2") > 0,
        "the canary never got traffic before the abort"
    );
    Ok(())
}

/// Waits until the client has had an answer from v1: Traefik routes the host.
pub(crate) async fn routed_to_v1(load: &Load) -> anyhow::Result<()> {
    eventually("Traefik to route the host to v1", || async {
        Ok(load
            .since(Duration::ZERO)
            .iter()
            .any(|r| r.version() == Some("v1"))
            .then_some(()))
    })
    .await
}

pub(crate) fn share_follows_the_weight(
    label: &str,
    weight: i32,
    tally: &Tally,
) -> anyhow::Result<()> {
    let (v1, v2) = (tally.count("v1"), tally.count("v2"));
    ensure!(
        v1 + v2 == tally.total,
        "{}: at weight {weight} answers not from v1 or v2: {tally:?}",
        label
    );
    let p = f64::from(weight) / 100.0;
    eprintln!(
        "traffic: {}: weight {weight:>3}%: v2 answered {v2:>4} of {} ({:.1}%; 3σ ±{:.1} points)",
        label,
        tally.total,
        100.0 * v2 as f64 / tally.total.max(1) as f64,
        300.0 * (p * (1.0 - p) / tally.total.max(1) as f64).sqrt()
    );
    ensure!(
        tally.total >= PER_STEP && within_binomial(v2, tally.total, p, 3.0),
        "{}: at weight {weight} the canary answered {v2} of {}, not within 3σ",
        label,
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

/// From the first answer on, no request failed: none unanswered, none a 502/503/504; and, for
/// a good release (`app_errors` false), no version answered a 5xx either.
pub(crate) fn no_request_failed(
    label: &str,
    records: &[Record],
    app_errors: bool,
) -> anyhow::Result<()> {
    let first = records
        .iter()
        .position(|r| r.version().is_some())
        .context("no request was ever answered")?;
    let counted = &records[first..];
    let failed: Vec<&Record> = counted.iter().filter(|r| r.failed()).collect();
    let tally = Tally::of(counted);
    eprintln!(
        "traffic: {}: {} requests through the release, {} failed, {} 5xx; by version {:?}",
        label, tally.total, tally.failed, tally.server_errors, tally.by_version
    );
    ensure!(
        failed.is_empty() && (app_errors || tally.server_errors == 0),
        "{}: {} of {} requests failed ({} 5xx); the first: {:?}",
        label,
        failed.len(),
        tally.total,
        tally.server_errors,
        failed.iter().take(5).collect::<Vec<_>>()
    );
    Ok(())
}

async fn http_route(client: &Client, ns: &str, host: &str) -> anyhow::Result<()> {
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &http_route_resource());
    let route: DynamicObject = serde_json::from_value(Traefik::canary_http_route(
        "web",
        host,
        "web-stable",
        "web-canary",
        80,
    ))?;
    routes.create(&PostParams::default(), &route).await?;
    Ok(())
}

pub(crate) async fn ingress(
    client: &Client,
    ns: &str,
    name: &str,
    host: &str,
    service: &str,
) -> anyhow::Result<()> {
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), ns);
    let ingress: Ingress = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "ingressClassName": INGRESS_CLASS,
            "rules": [{"host": host, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 80}}},
            }]}}],
        },
    }))?;
    ingresses.create(&PostParams::default(), &ingress).await?;
    Ok(())
}
