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
use kube::Client;
use kube::api::Api;
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use rollout_controller::crd::analysis::AnalysisRun;
use serde_json::{Value, json};
use sluice_tests::demo_pods::{SHUTDOWN_DELAY, draining_container, erring_container};
use sluice_tests::drain::{Drain, answers_since, server_errors_not_from};
use sluice_tests::load::{Load, LoadSpec, Outcome, Record, Tally};
use sluice_tests::prometheus_live::{LivePrometheus, PodScrape};
use sluice_tests::rollouts::{
    create_canary_errors_template, healthy_v1, routed_canary, with_errors_analysis,
};
use sluice_tests::routes::{Router, routed};
use sluice_tests::shares::within_binomial;
use sluice_tests::traefik::Traefik;

use crate::rollouts::{decide, set_container, status_until};
use crate::support::{DEADLINE, Env, TestNamespace};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(traffic::a_canary_through_the_gateway_gets_its_weight_and_no_request_fails),
        trial!(traffic::a_canary_through_nginx_gets_its_weight_and_no_request_fails),
        trial!(traffic::an_ab_test_through_the_gateway_sends_only_matching_requests_to_b),
        trial!(traffic::an_ab_test_through_nginx_sends_only_matching_requests_to_b),
        trial!(traffic::an_aborted_canary_through_the_gateway_is_emptied_at_the_client),
        trial!(traffic::an_aborted_canary_through_nginx_is_emptied_at_the_client),
        trial!(traffic::an_undo_through_the_gateway_fails_no_request),
        trial!(traffic::an_undo_through_nginx_fails_no_request),
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

async fn a_canary_through_the_gateway_gets_its_weight_and_no_request_fails(
    env: &'static Env,
) -> anyhow::Result<()> {
    canary_through_traefik(env, Router::Gateway).await
}

async fn a_canary_through_nginx_gets_its_weight_and_no_request_fails(
    env: &'static Env,
) -> anyhow::Result<()> {
    canary_through_traefik(env, Router::Nginx).await
}

async fn canary_through_traefik(env: &'static Env, via: Router) -> anyhow::Result<()> {
    let traefik = env.traefik().await?;
    canary_with_client(env, via, "traffic", steps(), async |c: Canary<'_>| {
        release(c.client, c.ns, traefik, c.host, c.load, via, c.stable).await
    })
    .await
}

/// What a release through Traefik runs with: the namespace and its client, the host Traefik
/// routes, the steady client on it, and v1's revision.
struct Canary<'a> {
    client: &'a Client,
    ns: &'a str,
    host: &'a str,
    load: &'a Load,
    stable: &'a str,
}

/// A canary Rollout of v1 with `steps` routed by `via`, in a fresh namespace named after
/// `prefix`, and a steady client through Traefik while `release` runs; no request may fail and
/// the client may drop no tick.
async fn canary_with_client(
    env: &'static Env,
    via: Router,
    prefix: &str,
    steps: Value,
    release: impl AsyncFnOnce(Canary<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let traefik = env.traefik().await?;
    env.in_namespace(
        &format!("{prefix}-{}", via.name()),
        |ns: TestNamespace| async move {
            let TestNamespace { name: ns, client } = ns;
            let host = format!("web.{ns}.example");
            let routing = routed(&client, &ns, &host, via).await?;
            let strategy = routed_canary(routing, steps, SCALE_DOWN_DELAY_S);
            let (_controller, stable) = healthy_v1(&client, &ns, REPLICAS, strategy).await?;

            let load = Load::start(LoadSpec::new(traefik.web_addr(), &host, RATE, LOAD_LIMIT))?;
            let canary = Canary {
                client: &client,
                ns: &ns,
                host: &host,
                load: &load,
                stable: &stable,
            };
            let outcome = release(canary).await;
            let recorded = load.stop().await;
            outcome?;
            no_request_failed(
                &format!("{prefix} {}", via.name()),
                &recorded.records,
                false,
            )?;
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
    via: Router,
    stable: &str,
) -> anyhow::Result<()> {
    routed_to_v1(load).await?;
    set_container(client, ns, "web", draining_container("v2", &[])).await?;
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
    ab_test_through_traefik(env, Router::Gateway).await
}

async fn an_ab_test_through_nginx_sends_only_matching_requests_to_b(
    env: &'static Env,
) -> anyhow::Result<()> {
    ab_test_through_traefik(env, Router::Nginx).await
}

/// How long B is tried: long enough to measure the three kinds of request in turn.
const AB_DURATION: &str = "45s";
const VARIANT_HEADER: (&str, &str) = ("X-Variant", "b");
const VARIANT_COOKIE: &str = "variant-b";

/// An A/B test of v2 against v1: a request with the variant's header or cookie reaches B, every
/// other request stays on A, then B is promoted by itself when the test's time is up; nobody
/// sees a request fail.
async fn ab_test_through_traefik(env: &'static Env, via: Router) -> anyhow::Result<()> {
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
                set_container(&client, &ns, "web", draining_container("v2", &[])).await?;
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
    let drained = Duration::from_secs(SCALE_DOWN_DELAY_S) + SHUTDOWN_DELAY;
    tokio::time::sleep(drained + Duration::from_secs(3)).await;
}

/// Past the old version's scale-down, with the client still sending: every answer is v2's.
async fn only_v2_after_the_scale_down(load: &Load, via: Router) -> anyhow::Result<()> {
    only_after_the_scale_down(load, via, "v2").await
}

/// Past the old version's scale-down, with the client still sending: every answer is
/// `version`'s.
async fn only_after_the_scale_down(load: &Load, via: Router, version: &str) -> anyhow::Result<()> {
    past_the_scale_down().await;
    let after = load.collect(load.now(), 200).await;
    let tally = Tally::of(&after);
    ensure!(
        tally.count(version) == tally.total && tally.total > 0,
        "{}: after the release, answers {tally:?}",
        via.name()
    );
    Ok(())
}

async fn an_undo_through_the_gateway_fails_no_request(env: &'static Env) -> anyhow::Result<()> {
    undo_through_traefik(env, Router::Gateway).await
}

async fn an_undo_through_nginx_fails_no_request(env: &'static Env) -> anyhow::Result<()> {
    undo_through_traefik(env, Router::Nginx).await
}

/// A canary that moves on by the clock: a moment at each weight, then full.
fn timed_steps() -> Value {
    json!([
        {"setWeight": 10}, {"pause": {"duration": "2s"}},
        {"setWeight": 25}, {"pause": {"duration": "2s"}},
        {"setWeight": 50}, {"pause": {"duration": "2s"}},
        {"setWeight": 100}, {"pause": {"duration": "2s"}},
    ])
}

/// v2 released to the end, then `kubectl sluice undo`: v1's template goes back, through the
/// same steps, to the end. The client sees no request fail through either release, and once
/// v2 has drained every answer is v1's.
async fn undo_through_traefik(env: &'static Env, via: Router) -> anyhow::Result<()> {
    canary_with_client(env, via, "undo", timed_steps(), async |c: Canary<'_>| {
        let Canary {
            client, ns, load, ..
        } = c;
        routed_to_v1(load).await?;
        set_container(client, ns, "web", draining_container("v2", &[])).await?;
        status_until(client, ns, "web", "v2 Healthy", |s| {
            s.phase == Phase::Healthy
                && s.stable_revision.is_some()
                && s.stable_revision.as_deref() != Some(c.stable)
        })
        .await?;
        only_v2_after_the_scale_down(load, via).await?;
        let undo = crate::cli::sluice(env, ns, &["undo", "web"]).await?;
        ensure!(crate::cli::code(&undo) == 0, "undo: {undo:?}");
        status_until(client, ns, "web", "v1 Healthy again", |s| {
            s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(c.stable)
        })
        .await?;
        only_after_the_scale_down(load, via, "v1").await
    })
    .await
}

async fn an_aborted_canary_through_the_gateway_is_emptied_at_the_client(
    env: &'static Env,
) -> anyhow::Result<()> {
    aborted_through_traefik(env, Router::Gateway).await
}

async fn an_aborted_canary_through_nginx_is_emptied_at_the_client(
    env: &'static Env,
) -> anyhow::Result<()> {
    aborted_through_traefik(env, Router::Nginx).await
}

/// v2 fails 30% of its requests at weight 25 under background analysis: Sluice aborts it, the
/// client stops hearing from it, and nobody sees a request fail in the data plane (v2's own
/// 500s are answers, and are what the analysis caught).
async fn aborted_through_traefik(env: &'static Env, via: Router) -> anyhow::Result<()> {
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
                create_canary_errors_template(&client, &ns).await?;
                let steps = json!([{"setWeight": 25}, {"pause": {}}]);
                let strategy = with_errors_analysis(
                    routed_canary(routing, steps, SCALE_DOWN_DELAY_S),
                    prometheus.url(),
                );
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
    via: Router,
) -> anyhow::Result<()> {
    routed_to_v1(load).await?;
    set_container(client, ns, "web", erring_container("v2", 0.3)).await?;
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
    let drain = Drain::of(&records, verdict_at, "v2").context("the canary never answered")?;
    eprintln!(
        "traffic: {}: abort of {canary}: last canary answer {:.3} s after the Fail verdict, {} canary \
         answers sent after it ({} of them 5xx); before it the canary answered {} of {}",
        via.name(),
        drain.last_answer.as_secs_f64(),
        drain.answers_after,
        drain.bad_after,
        drain.answers_before,
        drain.requests_before
    );
    // The only 5xx the client may see are the bad canary's own: v1 never erred, and the data
    // plane never answered for want of a backend (no_request_failed counts those). Counted,
    // as there, from the first answer of a version: before it the proxy may not have the
    // route's endpoints yet, and says so with its own 503.
    let served = records
        .iter()
        .position(|r| r.version().is_some())
        .context("no request was ever answered")?;
    let records = &records[served..];
    let not_the_canary = server_errors_not_from(records, "v2");
    if not_the_canary > 0 {
        // When they came and from whom: the proxy's own answers carry no version.
        let which: Vec<String> = records
            .iter()
            .filter_map(|r| match &r.outcome {
                Outcome::Answered { status, version }
                    if *status >= 500 && version.as_deref() != Some("v2") =>
                {
                    let at = r.sent.as_secs_f64() - verdict_at.as_secs_f64();
                    Some(format!("{status} from {version:?} sent {at:+.3} s"))
                }
                _ => None,
            })
            .take(10)
            .collect();
        anyhow::bail!(
            "{}: {not_the_canary} 5xx answers did not come from the canary (from the verdict): \
             {which:?}",
            via.name()
        );
    }
    // Emptied: nothing from the canary once Sluice has had a moment to move the weight and
    // Traefik to apply it.
    let late = answers_since(records, verdict_at + Duration::from_secs(2), "v2");
    ensure!(
        late == 0,
        "{}: the canary still answered {late} requests more than 2 s after the verdict",
        via.name()
    );
    ensure!(
        drain.answers_before > 0,
        "the canary never got traffic before the abort"
    );
    Ok(())
}

/// Waits until the client has had an answer from v1: Traefik routes the host.
pub(crate) async fn routed_to_v1(load: &Load) -> anyhow::Result<()> {
    Ok(load.first_answer_from("v1", DEADLINE).await?)
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
async fn header_reaches_the_canary(
    via: Router,
    traefik: &Traefik,
    host: &str,
) -> anyhow::Result<()> {
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
