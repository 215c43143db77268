//! Real requests through a real proxy: Traefik routes them to demo-app pods (real processes on
//! their pod IPs) by an HTTPRoute's backendRef weights and header match, and by ingress-nginx's
//! canary annotations. The client is on 127.0.0.1 and counts which version answered each
//! request (demo-app names it in a response header): the share each version gets must be
//! within 3 binomial standard deviations of the weight, and a matching header must reach the
//! canary every time. The routes are written by hand here, as Sluice writes them; the rollouts
//! that write them are other tests'.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use demo_app::VERSION_HEADER;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, DynamicObject, PostParams};
use libtest_mimic::Trial;
use serde_json::json;
use sluice_tests::shares::within_binomial;
use sluice_tests::traefik::{INGRESS_CLASS, Traefik};
use traffic::gateway::http_route_resource;

use crate::support::{
    self, Env, TestNamespace, demo_app_service, demo_app_template, eventually, object,
};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(proxy::gateway_weights_and_header_match_split_real_requests),
        trial!(proxy::nginx_canary_weight_and_header_split_real_requests),
    ]
}

/// Requests per share measured: enough that 3 standard deviations of a 20% share are ±3.8
/// points.
const REQUESTS: usize = 1000;
/// Requests that carry the canary's header: every one must reach the canary.
const HEADER_REQUESTS: usize = 200;
const CANARY_WEIGHT: u32 = 20;
const CANARY_HEADER: (&str, &str) = ("X-Canary", "1");
const STABLE: &str = "v1";
const CANARY: &str = "v2";
/// demo-app pods behind each version's Service.
const REPLICAS: i32 = 2;

/// Services `web-v1` and `web-v2`, each in front of a ReplicaSet of demo-app pods that answer
/// as that version; returns once all of them are ready endpoints.
async fn two_versions(client: &Client, ns: &str) -> anyhow::Result<()> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    for version in [STABLE, CANARY] {
        let app = format!("web-{version}");
        demo_app_service(client, ns, &app).await?;
        replica_sets
            .create(
                &PostParams::default(),
                &object(json!({
                    "metadata": {"name": app},
                    "spec": {
                        "replicas": REPLICAS,
                        "selector": {"matchLabels": {"app": app}},
                        "template": demo_app_template(&app, version, json!([]), 5),
                    },
                }))?,
            )
            .await?;
    }
    for version in [STABLE, CANARY] {
        let app = format!("web-{version}");
        eventually(&format!("{REPLICAS} ready endpoints of {app}"), || async {
            let ready = support::ready_endpoints(client, ns, &app).await?;
            Ok((ready.len() == REPLICAS as usize).then_some(()))
        })
        .await?;
    }
    Ok(())
}

/// The client: HTTP to Traefik's entrypoint only, keeping its connection (Traefik picks a
/// backend per request, not per connection).
struct ProxyClient {
    http: reqwest::Client,
    entrypoint: SocketAddr,
    host: String,
}

impl ProxyClient {
    fn new(traefik: &Traefik, host: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()?,
            entrypoint: traefik.web_addr(),
            host: host.to_owned(),
        })
    }

    /// One `GET /` for the route's host; the version that answered, or why none did.
    async fn version(&self, header: Option<(&str, &str)>) -> anyhow::Result<String> {
        let mut request = self
            .http
            .get(format!("http://{}/", self.entrypoint))
            .header(reqwest::header::HOST, &self.host);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        let answer = request.send().await?;
        ensure!(
            answer.status() == 200,
            "{} answered {}",
            self.host,
            answer.status()
        );
        let version = answer
            .headers()
            .get(VERSION_HEADER)
            .context("an answer without demo-app's version header")?;
        Ok(version.to_str()?.to_owned())
    }

    /// Answers to `n` requests, by version. Any request that fails fails the count: the routes
    /// measured here are all between ready pods.
    async fn count(
        &self,
        n: usize,
        header: Option<(&str, &str)>,
    ) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let version = self
                .version(header)
                .await
                .with_context(|| format!("request {i} of {n}"))?;
            *counts.entry(version).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Waits until the route answers with `version`: then Traefik has applied the configuration
    /// that names it, which it applies whole, with its weights.
    async fn wait_for(&self, version: &str, header: Option<(&str, &str)>) -> anyhow::Result<()> {
        eventually(
            &format!("Traefik to route {} to {version}", self.host),
            || async {
                // Bounded: a route at 20% answers with the canary within a few requests.
                for _ in 0..20 {
                    if self.version(header).await.ok().as_deref() == Some(version) {
                        return Ok(Some(()));
                    }
                }
                Ok(None)
            },
        )
        .await
    }
}

/// The canary's share of `REQUESTS` answers is within 3 binomial standard deviations of
/// [`CANARY_WEIGHT`], and every answer is one of the two versions.
fn check_share(router: &str, counts: &BTreeMap<String, usize>) -> anyhow::Result<()> {
    let total: usize = counts.values().sum();
    let canary = counts.get(CANARY).copied().unwrap_or(0);
    let stable = counts.get(STABLE).copied().unwrap_or(0);
    ensure!(
        canary + stable == total,
        "{router}: answers from other versions: {counts:?}"
    );
    let p = f64::from(CANARY_WEIGHT) / 100.0;
    eprintln!(
        "proxy: {router}: canary weight {CANARY_WEIGHT}%: canary answered {canary} of {total} \
         ({:.1}%; 3σ = ±{:.1} points)",
        100.0 * canary as f64 / total as f64,
        300.0 * (p * (1.0 - p) / total as f64).sqrt()
    );
    if !within_binomial(canary, total, p, 3.0) {
        bail!("{router}: the canary answered {canary} of {total}, not within 3σ of {p}");
    }
    Ok(())
}

fn check_header(router: &str, counts: &BTreeMap<String, usize>) -> anyhow::Result<()> {
    eprintln!("proxy: {router}: with {CANARY_HEADER:?}: {counts:?}");
    ensure!(
        counts.len() == 1 && counts.get(CANARY) == Some(&HEADER_REQUESTS),
        "{router}: requests with the canary's header were answered by {counts:?}"
    );
    Ok(())
}

/// Once the route `created` then answers with the canary: the canary's share of
/// [`REQUESTS`] follows the weight, and every request with the header reaches the canary.
async fn weight_and_header(
    router: &str,
    proxy: &ProxyClient,
    created: Instant,
) -> anyhow::Result<()> {
    proxy.wait_for(CANARY, None).await?;
    eprintln!(
        "proxy: {router}: routes created to the canary answering in {:.2}s",
        created.elapsed().as_secs_f64()
    );
    check_share(router, &proxy.count(REQUESTS, None).await?)?;
    check_header(
        router,
        &proxy.count(HEADER_REQUESTS, Some(CANARY_HEADER)).await?,
    )
}

/// Traefik's ServiceAccount has every right its providers use: the apiserver refused it
/// nothing (a refused watch leaves a provider blind to a kind, silently, but for its log).
fn nothing_was_forbidden(traefik: &Traefik) -> anyhow::Result<()> {
    let log = std::fs::read_to_string(traefik.log())
        .with_context(|| format!("reading {}", traefik.log().display()))?;
    let forbidden: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
    ensure!(
        forbidden.is_empty(),
        "the apiserver refused Traefik: {forbidden:#?}"
    );
    Ok(())
}

async fn gateway_weights_and_header_match_split_real_requests(
    env: &'static Env,
) -> anyhow::Result<()> {
    let traefik = env.traefik().await?;
    env.in_namespace("proxy-gw", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;
        two_versions(&client, &name).await?;
        let host = format!("{name}.proxy.test");
        let routes: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &name, &http_route_resource());
        let backend = |version: &str, weight: u32| {
            json!({"name": format!("web-{version}"), "port": 80, "weight": weight})
        };
        let route: DynamicObject = object(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {
                "parentRefs": [Traefik::gateway_parent_ref()],
                "hostnames": [host],
                "rules": [
                    {"backendRefs": [
                        backend(STABLE, 100 - CANARY_WEIGHT),
                        backend(CANARY, CANARY_WEIGHT),
                    ]},
                    {"matches": [{"headers": [
                        {"name": CANARY_HEADER.0, "value": CANARY_HEADER.1},
                    ]}], "backendRefs": [backend(CANARY, 1)]},
                ],
            },
        }))?;
        let created = Instant::now();
        routes.create(&PostParams::default(), &route).await?;
        let proxy = ProxyClient::new(traefik, &host)?;
        weight_and_header("gateway", &proxy, created).await?;
        nothing_was_forbidden(traefik)
    })
    .await
}

async fn nginx_canary_weight_and_header_split_real_requests(
    env: &'static Env,
) -> anyhow::Result<()> {
    let traefik = env.traefik().await?;
    env.in_namespace("proxy-nginx", |ns: TestNamespace| async move {
        let TestNamespace { name, client } = ns;
        two_versions(&client, &name).await?;
        let host = format!("{name}.proxy.test");
        let ingresses: Api<Ingress> = Api::namespaced(client.clone(), &name);
        let ingress = |ingress: &str, version: &str, annotations: serde_json::Value| {
            json!({
                "metadata": {"name": ingress, "annotations": annotations},
                "spec": {"ingressClassName": INGRESS_CLASS, "rules": [{"host": host, "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {
                        "name": format!("web-{version}"), "port": {"number": 80},
                    }}},
                ]}}]},
            })
        };
        let nginx = |key: &str| format!("nginx.ingress.kubernetes.io/{key}");
        let created = Instant::now();
        ingresses
            .create(&PostParams::default(), &object(ingress("web", STABLE, json!({})))?)
            .await?;
        let canary = ingress(
            "web-canary",
            CANARY,
            json!({
                nginx("canary"): "true",
                nginx("canary-weight"): CANARY_WEIGHT.to_string(),
                nginx("canary-by-header"): CANARY_HEADER.0,
                nginx("canary-by-header-value"): CANARY_HEADER.1,
            }),
        );
        ingresses
            .create(&PostParams::default(), &object(canary)?)
            .await?;
        let proxy = ProxyClient::new(traefik, &host)?;
        weight_and_header("nginx", &proxy, created).await?;
        // Another value of the header is not a match: those requests follow the weight.
        check_share(
            "nginx, another header value",
            &proxy.count(REQUESTS, Some((CANARY_HEADER.0, "0"))).await?,
        )?;
        nothing_was_forbidden(traefik)
    })
    .await
}
