//! Pods that run: the pod runner plays demo-app images as real processes on their pod IPs.
//! Readiness comes from their probes, a crash restarts them, a deletion drains them, and what
//! the runner made for a pod goes away with it. Traffic goes only to pod IPs whose namespace
//! the runner made (checked before each test connects).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use libtest_mimic::Trial;
use serde_json::json;
use sluice_tests::pods::netns::{self, PodNetwork};
use sluice_tests::prometheus_live::{JOB, LivePrometheus, PodScrape};
use tracing::Instrument;

use crate::support::{
    self, Env, TestNamespace, demo_app_service as service, demo_app_template as template,
    eventually, object,
};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(pods::replica_set_pods_serve_on_their_ips_and_leave_when_unready),
        trial!(pods::crashing_and_unhealthy_programs_are_restarted_and_counted),
        trial!(pods::a_deleted_pod_drains_while_its_endpoint_is_terminating),
        trial!(pods::prometheus_discovers_the_pods_and_counts_what_they_served),
    ]
}

const PORT: u16 = support::DEMO_APP_PORT;
const PROBE_PERIOD_S: u64 = support::DEMO_APP_PROBE_PERIOD_S;
const FAILURE_THRESHOLD: u64 = support::DEMO_APP_FAILURE_THRESHOLD;

/// How many of `service`'s ready endpoints answer as each version: one request to each
/// endpoint's pod IP (once the runner's namespace for that pod is checked), then the `version`
/// label demo-app itself puts on its series.
pub(crate) async fn versions_served(
    client: &Client,
    ns: &str,
    service: &str,
) -> anyhow::Result<BTreeMap<String, usize>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let by_name: BTreeMap<String, Pod> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect();
    let http = http()?;
    let mut served = BTreeMap::new();
    for endpoint in support::ready_endpoints(client, ns, service).await? {
        let name = endpoint
            .target_ref
            .as_ref()
            .and_then(|t| t.name.clone())
            .context("an endpoint without a pod")?;
        let pod = by_name
            .get(&name)
            .with_context(|| format!("endpoint pod {name} is not listed"))?;
        let net = network_of(pod).await?;
        ensure!(
            endpoint.addresses.contains(&net.ip.to_string()),
            "endpoint {:?} is not pod {name}'s IP {}",
            endpoint.addresses,
            net.ip
        );
        http.get(format!("http://{}:{PORT}/", net.ip))
            .send()
            .await?
            .error_for_status()?;
        let metrics = http
            .get(format!("http://{}:{PORT}/metrics", net.ip))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let version = metrics
            .split("version=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .with_context(|| format!("pod {name}'s metrics name no version"))?;
        *served.entry(version.to_owned()).or_insert(0) += 1;
    }
    Ok(served)
}

/// Waits until `service`'s ready endpoints answer as exactly `want` (version, count).
pub(crate) async fn served_until(
    client: &Client,
    ns: &str,
    service: &str,
    want: &[(&str, usize)],
) -> anyhow::Result<()> {
    let want: BTreeMap<String, usize> = want.iter().map(|(v, n)| ((*v).to_owned(), *n)).collect();
    let what = format!("{service}'s ready endpoints to answer as {want:?}");
    // Endpoints lag pods by a moment while versions change: a pod already gone, or one whose
    // network is not made yet, is looked at again (and never sent to) rather than failing.
    let last = std::sync::Mutex::new(String::new());
    let outcome = eventually(&what, || async {
        let seen = versions_served(client, ns, service).await;
        let reached = matches!(&seen, Ok(served) if *served == want);
        *last.lock().unwrap_or_else(|p| p.into_inner()) = format!("{seen:?}");
        Ok(reached.then_some(()))
    })
    .await;
    outcome.with_context(|| {
        let last = last.lock().unwrap_or_else(|p| p.into_inner());
        format!("last seen: {last}")
    })
}

/// Plain HTTP straight to pod IPs: no proxy, a fresh connection per request, so that a drain
/// is seen connection by connection.
fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()?)
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The network the runner made for `pod`; an error when it made none (so that a test never
/// sends traffic to an address the harness does not own).
async fn network_of(pod: &Pod) -> anyhow::Result<PodNetwork> {
    let ip = pod_ip(pod).context("the pod has no IP")?.parse()?;
    let net = PodNetwork::for_pod(&uid(pod), ip);
    ensure!(
        netns::namespaces().await.contains(&net.namespace),
        "no network namespace {} for pod {:?}",
        net.namespace,
        pod.metadata.name
    );
    Ok(net)
}

/// Endpoint addresses of `service`'s slices, with their ready and terminating conditions.
async fn endpoints(
    client: &Client,
    ns: &str,
    service: &str,
) -> anyhow::Result<Vec<(String, bool, bool)>> {
    Ok(support::endpoints(client, ns, service)
        .await?
        .into_iter()
        .flat_map(|e| {
            let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            let terminating = e.conditions.as_ref().and_then(|c| c.terminating) == Some(true);
            e.addresses
                .into_iter()
                .map(move |a| (a, ready, terminating))
        })
        .collect())
}

async fn ready_ips(client: &Client, ns: &str, service: &str) -> anyhow::Result<Vec<String>> {
    Ok(endpoints(client, ns, service)
        .await?
        .into_iter()
        .filter(|(_, ready, _)| *ready)
        .map(|(a, ..)| a)
        .collect())
}

/// A ReplicaSet `web` of 3 demo-app v1 pods.
async fn three_web_pods(replica_sets: &Api<ReplicaSet>) -> anyhow::Result<()> {
    replica_sets
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": template("web", "v1", json!([]), 5),
                },
            }))?,
        )
        .await?;
    Ok(())
}

async fn replica_set_pods_serve_on_their_ips_and_leave_when_unready(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.in_namespace("pods-rs", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &name);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        service(&client, &name, "web").await?;
        let created = Instant::now();
        three_web_pods(&replica_sets).await?;
        let ready = eventually("3 ready endpoints of running demo-apps", || async {
            let ips = ready_ips(&client, &name, "web").await?;
            Ok((ips.len() == 3).then_some(ips))
        })
        .await?;
        eprintln!(
            "pods: ReplicaSet created to 3 ready endpoints in {:.2}s",
            created.elapsed().as_secs_f64()
        );
        let list = pods.list(&ListParams::default()).await?.items;
        ensure!(list.len() == 3, "{} pods", list.len());
        let http = http()?;
        let mut networks = Vec::new();
        for pod in &list {
            ensure!(is_ready(pod), "pod {:?} is not Ready", pod.metadata.name);
            let net = network_of(pod).await?;
            ensure!(
                ready.contains(&net.ip.to_string()),
                "{} is not among the ready endpoints {ready:?}",
                net.ip
            );
            let answer = http
                .get(format!("http://{}:{PORT}/", net.ip))
                .send()
                .await
                .with_context(|| format!("GET / on pod IP {}", net.ip))?;
            ensure!(
                answer.status() == 200,
                "{} answered {}",
                net.ip,
                answer.status()
            );
            let status = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .context("no container status")?;
            ensure!(status.ready && status.started == Some(true), "{status:?}");
            networks.push(net);
        }
        // A pod IP without its namespace must never be routed off this machine.
        ensure!(
            netns::pod_range_guarded().await,
            "no unreachable route for the pod range while the runner runs"
        );
        let owned: Vec<String> = networks.iter().map(|n| n.namespace.clone()).collect();
        let present = netns::namespaces().await;
        ensure!(
            owned.iter().all(|n| present.contains(n)),
            "namespaces {owned:?}, present {present:?}"
        );

        // One pod is told to fail readiness: it leaves the EndpointSlice within the probe's
        // period × failureThreshold, plus a margin for the EndpointSlice controller.
        let failing = &networks[0];
        http.post(format!("http://{}:{PORT}/fail-readiness", failing.ip))
            .send()
            .await?
            .error_for_status()?;
        let told = Instant::now();
        let failing_ip = failing.ip.to_string();
        eventually("the unready pod to leave the ready endpoints", || async {
            let ips = ready_ips(&client, &name, "web").await?;
            Ok((!ips.contains(&failing_ip) && ips.len() == 2).then_some(()))
        })
        .await?;
        let removal = told.elapsed();
        let bound = Duration::from_secs(PROBE_PERIOD_S * FAILURE_THRESHOLD);
        let margin = Duration::from_millis(2500);
        eprintln!(
            "pods: readiness failure to endpoint removal {:.2}s (probe bound {:?} + margin {:?})",
            removal.as_secs_f64(),
            bound,
            margin
        );
        ensure!(
            removal <= bound + margin,
            "took {removal:?}, more than {bound:?} + {margin:?}"
        );

        // Scaling to 1 leaves one namespace and nothing of the others.
        replica_sets
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await?;
        let left = eventually("one pod, and the others' networks gone", || async {
            let list = pods.list(&ListParams::default()).await?.items;
            if list.len() != 1 {
                return Ok(None);
            }
            let present = netns::namespaces().await;
            let ours: Vec<&PodNetwork> = networks
                .iter()
                .filter(|n| present.contains(&n.namespace))
                .collect();
            Ok((ours.len() == 1).then(|| (uid(&list[0]), ours[0].clone())))
        })
        .await?;
        let (kept_uid, kept) = left;
        ensure!(
            kept.namespace == PodNetwork::for_pod(&kept_uid, kept.ip).namespace,
            "the namespace left is not the remaining pod's"
        );
        let veths = netns::host_veths().await;
        let routes = netns::host_routes().await;
        for gone in networks.iter().filter(|n| n.namespace != kept.namespace) {
            ensure!(
                !veths.contains(&gone.host_veth),
                "veth {} left",
                gone.host_veth
            );
            let ip = gone.ip.to_string();
            ensure!(
                !routes
                    .iter()
                    .any(|r| r.split_whitespace().next() == Some(ip.as_str())),
                "route to {ip} left: {routes:?}"
            );
        }
        Ok(())
    })
    .await
}

async fn crashing_and_unhealthy_programs_are_restarted_and_counted(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.in_namespace("pods-crash", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        let mut pod = template(
            "crash",
            "v1",
            json!([{"name": "DEMO_CRASH_AFTER_MS", "value": "1500"}]),
            5,
        );
        pod["metadata"]["name"] = json!("crash");
        pods.create(&PostParams::default(), &object(pod)?).await?;
        // And one whose liveness probe fails (nothing listens on port 9 in its namespace).
        let mut unhealthy = template("unhealthy", "v1", json!([]), 5);
        unhealthy["metadata"]["name"] = json!("unhealthy");
        unhealthy["spec"]["containers"][0]["livenessProbe"] = json!({
            "tcpSocket": {"port": 9},
            "periodSeconds": 1,
            "failureThreshold": 1,
        });
        pods.create(&PostParams::default(), &object(unhealthy)?)
            .await?;
        let status = eventually("the crashing container to restart twice", || async {
            let pod = pods.get("crash").await?;
            let status = pod
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next());
            Ok(status.filter(|s| s.restart_count >= 2))
        })
        .await?;
        let last = status
            .last_state
            .and_then(|s| s.terminated)
            .context("no lastState.terminated")?;
        ensure!(
            last.exit_code == 1,
            "the last run exited {}",
            last.exit_code
        );
        eprintln!("pods: restartCount {} after crashes", status.restart_count);
        let status = eventually("the unhealthy container to be restarted", || async {
            let pod = pods.get("unhealthy").await?;
            let status = pod
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next());
            Ok(status.filter(|s| s.restart_count >= 1))
        })
        .await?;
        let reason = status
            .last_state
            .and_then(|s| s.terminated)
            .and_then(|t| t.reason)
            .unwrap_or_default();
        ensure!(
            reason == "LivenessProbeFailed",
            "lastState reason {reason:?}"
        );
        Ok(())
    })
    .await
}

/// One request's fate, with when it was sent relative to the deletion.
struct Sent {
    at: Duration,
    ok: bool,
    error: Option<String>,
}

async fn a_deleted_pod_drains_while_its_endpoint_is_terminating(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.in_namespace("pods-drain", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        service(&client, &name, "drain").await?;
        // Each request takes 400 ms; after SIGTERM the program serves 1 s more, then drains.
        let latency = Duration::from_millis(400);
        let delay = Duration::from_millis(1000);
        let mut pod = template(
            "drain",
            "v1",
            json!([
                {"name": "DEMO_LATENCY_MS", "value": latency.as_millis().to_string()},
                {"name": "DEMO_SHUTDOWN_DELAY_MS", "value": delay.as_millis().to_string()},
            ]),
            10,
        );
        pod["metadata"]["name"] = json!("drain");
        pods.create(&PostParams::default(), &object(pod)?).await?;
        let running = eventually("the pod to be Ready", || async {
            let pod = pods.get("drain").await?;
            Ok(is_ready(&pod).then_some(pod))
        })
        .await?;
        let net = network_of(&running).await?;
        let url = format!("http://{}:{PORT}/", net.ip);

        // Four streams of sequential requests, each bounded in count, for as long as the
        // program answers (a refused connection ends a stream: the drain has begun).
        let http = http()?;
        let deleted_at = std::sync::Arc::new(tokio::sync::OnceCell::<Instant>::new());
        let mut streams = tokio::task::JoinSet::new();
        for i in 0..4 {
            let (http, url, deleted_at) = (http.clone(), url.clone(), deleted_at.clone());
            streams.spawn(
                async move {
                    let mut sent = Vec::new();
                    for _ in 0..40 {
                        let start = Instant::now();
                        let result = http.get(&url).send().await;
                        let at = deleted_at
                            .get()
                            .map(|d| start.saturating_duration_since(*d))
                            .unwrap_or_default();
                        let after = deleted_at.get().is_some_and(|d| start >= *d);
                        match result {
                            Ok(r) => sent.push((
                                after,
                                Sent {
                                    at,
                                    ok: r.status() == 200,
                                    error: None,
                                },
                            )),
                            Err(e) => {
                                let refused = e.is_connect();
                                sent.push((
                                    after,
                                    Sent {
                                        at,
                                        ok: false,
                                        error: Some(format!("{e:?}")),
                                    },
                                ));
                                if refused {
                                    break;
                                }
                            }
                        }
                    }
                    sent
                }
                .instrument(tracing::info_span!("request stream", stream = i)),
            );
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        pods.delete("drain", &DeleteParams::default()).await?;
        let _ = deleted_at.set(Instant::now());

        // The EndpointSlice marks the endpoint terminating while the process still runs.
        let ip = net.ip.to_string();
        eventually(
            "the endpoint to be terminating while the process runs",
            || async {
                let terminating = endpoints(&client, &name, "drain")
                    .await?
                    .into_iter()
                    .any(|(a, _, t)| a == ip && t);
                if !terminating {
                    return Ok(None);
                }
                let pids = netns::pids_in(&net.namespace).await;
                if pids.is_empty() {
                    bail!("the endpoint became terminating only after the process had exited");
                }
                Ok(Some(()))
            },
        )
        .await?;

        let mut results = Vec::new();
        while let Some(stream) = streams.join_next().await {
            results.extend(stream?);
        }
        // Requests sent before the drain began (deletion + delay, less a margin for the
        // runner to see the deletion) were accepted, and must all have been answered; those
        // sent in the last latency before it were still in flight when it began.
        let before_drain = delay - Duration::from_millis(100);
        let mut in_flight = 0;
        for (after, sent) in &results {
            if *after && sent.at > before_drain {
                continue;
            }
            ensure!(
                sent.ok,
                "a request sent {:?} after the deletion failed: {:?}",
                sent.at,
                sent.error
            );
            if *after && sent.at + latency > before_drain {
                in_flight += 1;
            }
        }
        ensure!(
            in_flight > 0,
            "no request was in flight when the drain began"
        );
        eprintln!(
            "pods: {} requests, {in_flight} in flight as the drain began, all answered",
            results.len()
        );
        eventually("the pod object and its namespace to go", || async {
            let gone = pods.get_opt("drain").await?.is_none()
                && !netns::namespaces().await.contains(&net.namespace);
            Ok(gone.then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

/// Prometheus finds the three pods by Kubernetes service discovery alone (no target is listed
/// anywhere), scrapes each on its pod IP, and its counters agree with what the test sent to each
/// pod: exactly, once a scrape has followed the last request, and as a rate over the sending.
async fn prometheus_discovers_the_pods_and_counts_what_they_served(
    env: &'static Env,
) -> anyhow::Result<()> {
    const INTERVAL: Duration = Duration::from_secs(1);
    /// Requests per pod: a steady `PACE` for `SENDING`.
    const PACE: Duration = Duration::from_millis(100);
    const SENDING: Duration = Duration::from_secs(12);
    let cluster = env.cluster().await?;
    env.in_namespace("pods-sd", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &name);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        three_web_pods(&replica_sets).await?;
        let prometheus =
            LivePrometheus::discovering_pods(cluster, &PodScrape::namespace(&name, INTERVAL))
                .await?;
        let outcome = async {
            let list = eventually("3 ready pods", || async {
                let list = pods.list(&ListParams::default()).await?.items;
                Ok((list.len() == 3 && list.iter().all(is_ready)).then_some(list))
            })
            .await?;
            let mut networks = Vec::new();
            for pod in &list {
                networks.push((
                    pod.metadata.name.clone().unwrap_or_default(),
                    network_of(pod).await?,
                ));
            }
            let up = format!("up{{job=\"{JOB}\",namespace=\"{name}\"}}");
            let discovered = eventually("up = 1 for each of the 3 pods", || async {
                prometheus.ensure_running()?;
                let samples = prometheus.query(&up).await?;
                Ok(
                    (samples.len() == 3 && samples.iter().all(|s| s.value == 1.0))
                        .then_some(samples),
                )
            })
            .await?;
            for (pod, net) in &networks {
                let target = discovered
                    .iter()
                    .find(|s| s.labels.get("pod") == Some(pod))
                    .with_context(|| format!("no target for pod {pod}: {discovered:?}"))?;
                ensure!(
                    target.labels.get("instance") == Some(&format!("{}:{PORT}", net.ip)),
                    "pod {pod} is scraped at {:?}, not its IP {}",
                    target.labels.get("instance"),
                    net.ip
                );
                ensure!(
                    target.labels.get("app").map(String::as_str) == Some("web"),
                    "the pod's labels are not on its target: {:?}",
                    target.labels
                );
            }

            // A steady, bounded stream to each pod, straight to its IP.
            let http = http()?;
            let mut sent = BTreeMap::<String, u64>::new();
            let mut tick = tokio::time::interval(PACE);
            let started = Instant::now();
            while started.elapsed() < SENDING {
                tick.tick().await;
                for (pod, net) in &networks {
                    http.get(format!("http://{}:{PORT}/", net.ip))
                        .send()
                        .await?
                        .error_for_status()?;
                    *sent.entry(pod.clone()).or_default() += 1;
                }
            }
            let per_pod_rate = 1.0 / PACE.as_secs_f64();
            // Over the last 10 s of sending; one scrape interval's requests either way.
            let rate_query =
                format!("sum by (pod) (rate(http_requests_total{{namespace=\"{name}\"}}[10s]))");
            let rates = prometheus.query(&rate_query).await?;
            let tolerance = per_pod_rate * INTERVAL.as_secs_f64() / 10.0 + per_pod_rate * 0.1;
            ensure!(rates.len() == 3, "rates {rates:?}");
            for rate in &rates {
                ensure!(
                    (rate.value - per_pod_rate).abs() <= tolerance,
                    "pod {:?}: rate {:.2}/s, sent {per_pod_rate:.2}/s (± {tolerance:.2})",
                    rate.labels.get("pod"),
                    rate.value
                );
            }
            let totals = format!("sum by (pod) (http_requests_total{{namespace=\"{name}\"}})");
            eventually("Prometheus' counters to equal what was sent", || async {
                let counted: BTreeMap<String, u64> = prometheus
                    .query(&totals)
                    .await?
                    .into_iter()
                    .filter_map(|s| Some((s.labels.get("pod")?.clone(), s.value as u64)))
                    .collect();
                Ok((counted == sent).then_some(()))
            })
            .await?;
            eprintln!(
                "pods: Prometheus discovered 3 pods, counted {:?}; rates {:?}",
                sent,
                rates.iter().map(|r| r.value).collect::<Vec<_>>()
            );
            anyhow::Ok(())
        }
        .await;
        prometheus.stop().await;
        outcome
    })
    .await
}
