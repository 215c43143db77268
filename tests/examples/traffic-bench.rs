//! Sluice in front of a real proxy, measured at the client. Traefik (built by
//! tests/cluster/build.sh) routes a steady client's requests, sent from 127.0.0.1, to demo-app
//! pods (real processes on their pod IPs) by what Sluice writes: HTTPRoute weights (Gateway
//! API), ingress-nginx canary annotations, or, without a router, which pods a Service selects.
//! demo-app names the version that answered each request.
//!
//!   cargo build --release --workspace --bins   # the runner, demo-app and kubectl-sluice
//!   cargo run --release -p sluice-tests --example traffic-bench -- [--aborts 5] [--rate 100] [--per-step 1000]
//!
//! Prints four tables: the canary's share against its weight at each step (per router, and
//! against the replica ratio without one); failed requests per 1,000 through each kind of
//! release; and, for aborts by a failing analysis, the time from the Fail verdict to the
//! client's last answer from the canary beside the controller's own
//! `sluice_abort_latency_seconds` for the same abort, whose difference is the data plane's own
//! delay. Needs root, as the pod runner does. Every load and every wait is bounded, and the
//! cluster is stopped however the run ends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use anyhow::{Context, ensure};
use clap::Parser;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Client, ResourceExt};
use rollout_controller::crd::analysis::AnalysisRun;
use rollout_controller::crd::{POD_TEMPLATE_HASH_LABEL, Phase, RolloutStatus};
use serde_json::{Value, json};
use sluice_tests::controller::{RunningController, sample};
use sluice_tests::demo_pods::{SHUTDOWN_DELAY, draining_container, erring_container};
use sluice_tests::drain::Drain;
use sluice_tests::load::{Load, LoadSpec, Record};
use sluice_tests::prometheus_live::{LivePrometheus, PodScrape};
use sluice_tests::rollouts::{
    create_canary_errors_template, create_service, decide, healthy_v1, promote_until_stable,
    routed_canary, set_container, status_until, with_errors_analysis,
};
use sluice_tests::routes::{Router, ingress, routed};
use sluice_tests::traefik::{PROVIDERS_THROTTLE, Traefik};
use sluice_tests::{ClusterOptions, ControlPlane, wait};
use traffic::gateway::http_route_resource;

/// What the build script builds (tests/cluster/build.sh pins it).
const TRAEFIK_VERSION: &str = "v3.7.13";
/// Traefik applies a change within its providers' throttle of the apiserver's event; counting
/// starts this long after Sluice says a step is reached.
const SETTLE: Duration = Duration::from_millis(1500);
/// The old version stays this long after a promotion, and an aborted one after its abort.
const SCALE_DOWN_DELAY_S: u64 = 3;
/// Pods of a canary behind a router.
const REPLICAS: i32 = 4;
/// Pods of the router-less canary and of the rolling update: 10 makes a 10% step one pod.
const MANY_REPLICAS: i32 = 10;
/// The share of requests a bad canary fails with a 500: what its analysis catches.
const BAD_ERROR_RATE: f64 = 0.3;
/// A Rollout's steps: each weight held until promoted, at these pauses (step indexes).
const MEASURED: [(i32, i32); 4] = [(1, 10), (3, 25), (5, 50), (7, 100)];
/// A `trafficRouting.maxTrafficWeight` other than 100, at half of which a canary gets half.
const MAX_WEIGHT: i32 = 50;
/// How long the client may run for one release, beyond its measured answers.
const LOAD_SLACK: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(about = "Canary share, failed requests and abort drain at the client, through Traefik")]
struct Args {
    /// Aborts by a failing analysis, per router.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=50))]
    aborts: u32,
    /// The client's requests a second (at most 1000).
    #[arg(long, default_value_t = 100)]
    #[arg(value_parser = clap::value_parser!(u32).range(10..=1000))]
    rate: u32,
    /// Answers counted at each canary step.
    #[arg(long, default_value_t = 1000)]
    #[arg(value_parser = clap::value_parser!(u32).range(100..=100_000))]
    per_step: u32,
}

impl Args {
    fn rate(&self) -> f64 {
        f64::from(self.rate)
    }

    /// A bound on one release's client: its measured steps at the rate, and slack for the rest.
    fn load_limit(&self, counted: u32) -> Duration {
        Duration::from_secs_f64(f64::from(counted) / self.rate()) + LOAD_SLACK
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_tests::install_crypto_provider();
    let args = Args::parse();
    let cluster = ControlPlane::start(ClusterOptions::default())
        .await
        .context(
            "starting the control plane (as root, after cargo build --release --workspace --bins)",
        )?;
    let outcome = async {
        let client = cluster.admin_client().await?;
        sluice_tests::crds::install(&client, "sluice-bench").await?;
        let traefik = Traefik::start(&cluster).await?;
        let bench = Bench {
            cluster: &cluster,
            client,
            traefik: &traefik,
            args: &args,
        };
        let report = bench.run().await;
        traefik.stop().await;
        report
    }
    .await;
    cluster.stop(false).await;
    outcome?.print(&args);
    Ok(())
}

struct Bench<'a> {
    cluster: &'a ControlPlane,
    client: Client,
    traefik: &'a Traefik,
    args: &'a Args,
}

/// A column of the tables: a router, or none.
type Column = &'static str;
const ROUTER_LESS: Column = "router-less";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    CanaryToFull,
    BlueGreen,
    Rolling,
    Abort,
    Undo,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::CanaryToFull,
        Kind::BlueGreen,
        Kind::Rolling,
        Kind::Abort,
        Kind::Undo,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::CanaryToFull => "canary 10/25/50/100 to full",
            Kind::BlueGreen => "blue-green promote",
            Kind::Rolling => "rolling update of 10",
            Kind::Abort => "abort by analysis",
            Kind::Undo => "undo to v1, to full",
        }
    }
}

/// The canary's share of the answers at one step.
struct Share {
    column: Column,
    /// The share it should get, in percent: the weight, or the replica ratio.
    expected: f64,
    weight: i32,
    canary: usize,
    total: usize,
}

impl Share {
    fn observed(&self) -> f64 {
        100.0 * self.canary as f64 / self.total.max(1) as f64
    }

    fn deviation(&self) -> f64 {
        self.observed() - self.expected
    }

    /// One binomial standard deviation of the share over `total` answers, in points.
    fn sigma(&self) -> f64 {
        let p = self.expected / 100.0;
        100.0 * (p * (1.0 - p) / self.total.max(1) as f64).sqrt()
    }
}

/// What the client saw through one release: requests from v1's first answer on, and failures.
#[derive(Default, Clone)]
struct Failures {
    requests: usize,
    failed: usize,
    first: Option<String>,
}

impl Failures {
    fn of(records: &[Record]) -> Self {
        let first = records.iter().position(|r| r.version().is_some());
        let counted = first.map_or(&[][..], |at| &records[at..]);
        let failed: Vec<&Record> = counted.iter().filter(|r| r.failed()).collect();
        Self {
            requests: counted.len(),
            failed: failed.len(),
            first: failed.first().map(|r| format!("{:?}", r.outcome)),
        }
    }

    fn add(&mut self, other: &Failures) {
        self.requests += other.requests;
        self.failed += other.failed;
        if self.first.is_none() {
            self.first.clone_from(&other.first);
        }
    }
}

/// One abort, at the client and as the controller measured it.
struct Abort {
    column: Column,
    drain: Drain,
    /// `sluice_abort_latency_seconds` for this abort: the growth of its sum.
    controller: Option<f64>,
}

/// Whether Traefik had written the HTTPRoute's status for its newest generation when Sluice
/// reported the step that wrote it.
struct RouteStatus {
    generation: i64,
    observed: Option<i64>,
}

#[derive(Default)]
struct Report {
    shares: Vec<Share>,
    /// At half of [`MAX_WEIGHT`].
    max_weight: Vec<Share>,
    failures: BTreeMap<(Kind, Column), Failures>,
    aborts: Vec<Abort>,
    route_status: Vec<RouteStatus>,
    /// After each undo, the share of answers v1 gave, of how many.
    after_undo: Vec<(Column, usize, usize)>,
}

impl Report {
    fn failed(&mut self, kind: Kind, column: Column, records: &[Record]) {
        self.failures
            .entry((kind, column))
            .or_default()
            .add(&Failures::of(records));
    }
}

impl Bench<'_> {
    async fn run(&self) -> anyhow::Result<Report> {
        let mut report = Report::default();
        for router in Router::ALL {
            self.in_namespace(&format!("bench-{}", router.name()), |ns| {
                self.routed_releases(ns, router, &mut report)
            })
            .await?;
        }
        for router in Router::ALL {
            self.in_namespace(&format!("bench-max-weight-{}", router.name()), |ns| {
                self.half_of_max_weight(ns, router, &mut report)
            })
            .await?;
        }
        self.in_namespace("bench-plain-canary", |ns| {
            self.router_less_canary(ns, &mut report)
        })
        .await?;
        self.in_namespace("bench-bluegreen", |ns| self.blue_green(ns, &mut report))
            .await?;
        self.in_namespace("bench-rolling", |ns| self.rolling(ns, &mut report))
            .await?;
        Ok(report)
    }

    /// Runs `section` in a fresh namespace `name`, then deletes it (its pods with it).
    async fn in_namespace<'s, F, Fut>(&self, name: &'s str, section: F) -> anyhow::Result<()>
    where
        F: FnOnce(&'s str) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}}))?,
            )
            .await?;
        eprintln!("traffic-bench: {name}");
        let outcome = section(name).await;
        namespaces.delete(name, &DeleteParams::default()).await?;
        outcome.with_context(|| format!("in namespace {name}"))
    }

    /// Runs `release` with a steady client for `host` (which stops by itself after `limit`):
    /// what it returned, and everything the client recorded.
    async fn measured<T>(
        &self,
        host: &str,
        limit: Duration,
        release: impl AsyncFnOnce(&Load) -> anyhow::Result<T>,
    ) -> anyhow::Result<(T, Vec<Record>)> {
        let spec = LoadSpec::new(self.traefik.web_addr(), host, self.args.rate(), limit);
        let load = Load::start(spec)?;
        let outcome = release(&load).await;
        let recorded = load.stop().await;
        Ok((outcome?, recorded.records))
    }

    /// On one router: a canary through 10/25/50/100 to the end, measured at each step; an undo
    /// back to v1 through the same steps; then aborts by a failing analysis.
    async fn routed_releases(
        &self,
        ns: &str,
        router: Router,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let client = &self.client;
        let host = format!("web.{ns}.example");
        let routing = routed(client, ns, &host, router).await?;
        let prometheus = LivePrometheus::discovering_pods(
            self.cluster,
            &PodScrape::namespace(ns, Duration::from_secs(1)),
        )
        .await?;
        let outcome = async {
            create_canary_errors_template(client, ns).await?;
            let strategy = with_errors_analysis(
                routed_canary(routing, paused_steps(), SCALE_DOWN_DELAY_S),
                prometheus.url(),
            );
            let (controller, v1) = healthy_v1(client, ns, REPLICAS, strategy).await?;
            let column = router.name();

            let limit = self.args.load_limit(3 * self.args.per_step);
            let (v2, records) = self
                .measured(&host, limit, async |load: &Load| {
                    self.canary_to_full(ns, load, router, column, &v1, report)
                        .await
                })
                .await?;
            report.failed(Kind::CanaryToFull, column, &records);

            let limit = self.args.load_limit(0);
            let (after, records) = self
                .measured(&host, limit, async |load: &Load| {
                    self.undo(ns, load, &v1).await
                })
                .await?;
            report.failed(Kind::Undo, column, &records);
            let v1_answers = after.iter().filter(|r| r.version() == Some("v1")).count();
            report.after_undo.push((column, v1_answers, after.len()));

            let aborts = self.args.aborts;
            let limit = self.args.load_limit(0) + Duration::from_secs(60 * u64::from(aborts));
            let earlier = [v1, v2];
            let ((), records) = self
                .measured(&host, limit, async |load: &Load| {
                    self.aborts(ns, load, &controller, column, &earlier, report)
                        .await
                })
                .await?;
            report.failed(Kind::Abort, column, &records);
            anyhow::Ok(())
        }
        .await;
        prometheus.stop().await;
        outcome
    }

    /// v2 from v1 through every step, the share counted at 10, 25 and 50, to the end and past
    /// v1's scale-down; v2's revision.
    async fn canary_to_full(
        &self,
        ns: &str,
        load: &Load,
        router: Router,
        column: Column,
        v1: &str,
        report: &mut Report,
    ) -> anyhow::Result<String> {
        let client = &self.client;
        v2_after_v1(client, ns, load).await?;
        let mut v2 = String::new();
        for (step, weight) in MEASURED {
            let status = paused_at(client, ns, step, |r| r != v1).await?;
            v2 = status.updated_revision.context("no updated revision")?;
            if router == Router::Gateway {
                report.route_status.push(route_status(client, ns).await?);
            }
            if weight < 100 {
                tokio::time::sleep(SETTLE).await;
                let answers = load.next(self.args.per_step as usize).await;
                report.shares.push(Share {
                    column,
                    expected: f64::from(weight),
                    weight,
                    canary: answers.iter().filter(|r| r.version() == Some("v2")).count(),
                    total: answers.len(),
                });
            }
            promote(client, ns, &v2, step).await?;
        }
        status_until(client, ns, "web", "v2 Healthy", |s| {
            s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(v2.as_str())
        })
        .await?;
        past_the_scale_down().await;
        Ok(v2)
    }

    /// `kubectl sluice undo`: v1's template back, through the same steps (each promoted once
    /// Traefik has had it), to the end and past v2's scale-down; the [`TAIL`] answers after.
    async fn undo(&self, ns: &str, load: &Load, v1: &str) -> anyhow::Result<Vec<Record>> {
        let client = &self.client;
        load.first_answer_from("v2", STATUS_WAIT).await?;
        let kubectl_sluice = sluice_tests::pods::cargo_bin_dir()?.join("kubectl-sluice");
        let undo = tokio::process::Command::new(&kubectl_sluice)
            .args(["-n", ns, "undo", "web"])
            .env("KUBECONFIG", self.cluster.admin_kubeconfig())
            .output()
            .await
            .with_context(|| format!("running {}", kubectl_sluice.display()))?;
        ensure!(undo.status.success(), "kubectl sluice undo: {undo:?}");
        for (step, _) in MEASURED {
            paused_at(client, ns, step, |r| r == v1).await?;
            tokio::time::sleep(SETTLE).await;
            promote(client, ns, v1, step).await?;
        }
        status_until(client, ns, "web", "v1 Healthy again", |s| {
            s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(v1)
        })
        .await?;
        past_the_scale_down().await;
        Ok(load.next(TAIL).await)
    }

    /// `--aborts` bad canaries, each failing 30% of its requests: each aborted by its analysis,
    /// measured from the Fail verdict at the client and by the controller.
    async fn aborts(
        &self,
        ns: &str,
        load: &Load,
        controller: &RunningController,
        column: Column,
        earlier: &[String],
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let client = &self.client;
        let runs: Api<AnalysisRun> = Api::namespaced(client.clone(), ns);
        load.first_answer_from("v1", STATUS_WAIT).await?;
        let mut revisions: BTreeSet<String> = earlier.iter().cloned().collect();
        let mut failed_runs: BTreeSet<String> = BTreeSet::new();
        for n in 1..=self.args.aborts {
            let version = format!("bad{n}");
            let (sum_before, count_before) = abort_latency(controller).await?;
            set_container(
                client,
                ns,
                "web",
                erring_container(&version, BAD_ERROR_RATE),
            )
            .await?;
            let aborted = status_until(client, ns, "web", &format!("{version} aborted"), |s| {
                s.phase == Phase::Aborted
                    && s.updated_revision
                        .as_ref()
                        .is_some_and(|r| !revisions.contains(r))
            })
            .await?;
            revisions.extend(aborted.updated_revision.clone());
            let run = aborted
                .analysis_runs
                .iter()
                .find(|r| r.phase == ::analysis::Phase::Failed && !failed_runs.contains(&r.name))
                .map(|r| r.name.clone())
                .with_context(|| format!("no new failed run in {:?}", aborted.analysis_runs))?;
            let verdict: SystemTime = runs
                .get(&run)
                .await?
                .status
                .and_then(|s| s.completed_at)
                .context("the failed run has no completedAt")?
                .0;
            failed_runs.insert(run);
            // Past the canary's scale-down and its pods' drain, with the client still sending.
            tokio::time::sleep(
                Duration::from_secs(SCALE_DOWN_DELAY_S) + SHUTDOWN_DELAY + Duration::from_secs(2),
            )
            .await;
            let records = load.since(Duration::ZERO);
            let drain = Drain::of(&records, load.offset_of(verdict), &version)
                .with_context(|| format!("{version} never answered"))?;
            let controller_latency = wait::until::<_, anyhow::Error, _, _>(
                "the controller to measure the abort",
                Duration::from_secs(10),
                || async {
                    let (sum, count) = abort_latency(controller).await?;
                    Ok((count > count_before).then_some(sum - sum_before))
                },
            )
            .await
            .ok();
            eprintln!(
                "traffic-bench: {column}: abort {n}: last canary answer {:.3} s after the verdict \
                 (controller: {controller_latency:?} s), {} answers after it, {} of them 5xx",
                drain.last_answer.as_secs_f64(),
                drain.answers_after,
                drain.bad_after
            );
            report.aborts.push(Abort {
                column,
                drain,
                controller: controller_latency,
            });
        }
        Ok(())
    }

    /// A canary at setWeight 25 of maxTrafficWeight 50 on `router`: half the traffic, as Sluice
    /// means it (on ingress-nginx it writes canary-weight 25 and canary-weight-total 50).
    async fn half_of_max_weight(
        &self,
        ns: &str,
        router: Router,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let client = &self.client;
        let host = format!("web.{ns}.example");
        let mut routing = routed(client, ns, &host, router).await?;
        routing["maxTrafficWeight"] = json!(MAX_WEIGHT);
        let steps = json!([{"setWeight": MAX_WEIGHT / 2}, {"pause": {}}]);
        let strategy = routed_canary(routing, steps, SCALE_DOWN_DELAY_S);
        let (_controller, v1) = healthy_v1(client, ns, REPLICAS, strategy).await?;
        let limit = self.args.load_limit(self.args.per_step);
        let (answers, _) = self
            .measured(&host, limit, async |load: &Load| {
                v2_after_v1(client, ns, load).await?;
                paused_at(client, ns, 1, |r| r != v1).await?;
                tokio::time::sleep(SETTLE).await;
                Ok(load.next(self.args.per_step as usize).await)
            })
            .await?;
        report.max_weight.push(Share {
            column: router.name(),
            expected: 50.0,
            weight: MAX_WEIGHT / 2,
            canary: answers.iter().filter(|r| r.version() == Some("v2")).count(),
            total: answers.len(),
        });
        Ok(())
    }

    /// Without a router, on a plain Ingress: the canary's share follows the ratio of its ready
    /// pods to all ready pods, at 10/25/50 of 10 replicas; then to the end.
    async fn router_less_canary(&self, ns: &str, report: &mut Report) -> anyhow::Result<()> {
        let client = &self.client;
        let host = plain_host(client, ns, "web").await?;
        let strategy = json!({"canary": {
            "maxSurge": 1, "maxUnavailable": 0,
            "steps": paused_steps(),
        }});
        let (_controller, v1) = healthy_v1(client, ns, MANY_REPLICAS, strategy).await?;
        let limit = self.args.load_limit(3 * self.args.per_step);
        let ((), records) = self
            .measured(&host, limit, async |load: &Load| {
                v2_after_v1(client, ns, load).await?;
                let mut v2 = String::new();
                for (step, weight) in MEASURED {
                    let status = paused_at(client, ns, step, |r| r != v1).await?;
                    v2 = status.updated_revision.context("no updated revision")?;
                    if weight < 100 {
                        let (new, old) = ready_pods_settled(client, ns, &v2).await?;
                        past_the_drain().await;
                        let answers = load.next(self.args.per_step as usize).await;
                        report.shares.push(Share {
                            column: ROUTER_LESS,
                            expected: 100.0 * new as f64 / (new + old).max(1) as f64,
                            weight,
                            canary: answers.iter().filter(|r| r.version() == Some("v2")).count(),
                            total: answers.len(),
                        });
                    }
                    promote(client, ns, &v2, step).await?;
                }
                status_until(client, ns, "web", "v2 Healthy", |s| {
                    s.phase == Phase::Healthy && s.stable_revision.as_deref() == Some(v2.as_str())
                })
                .await?;
                ready_pods_settled(client, ns, &v2).await?;
                past_the_drain().await;
                anyhow::Ok(())
            })
            .await?;
        report.failed(Kind::CanaryToFull, ROUTER_LESS, &records);
        Ok(())
    }

    /// A blue-green promote on a plain Ingress to the active Service: the switch, and v1's
    /// scale-down after it.
    async fn blue_green(&self, ns: &str, report: &mut Report) -> anyhow::Result<()> {
        let client = &self.client;
        let host = plain_host(client, ns, "web-active").await?;
        create_service(client, ns, "web-preview", "web").await?;
        let strategy = json!({"blueGreen": {
            "activeService": "web-active", "previewService": "web-preview",
            "autoPromotionEnabled": false, "scaleDownDelaySeconds": SCALE_DOWN_DELAY_S,
        }});
        let (_controller, blue) = healthy_v1(client, ns, REPLICAS, strategy).await?;
        let limit = self.args.load_limit(0);
        let ((), records) = self
            .measured(&host, limit, async |load: &Load| {
                v2_after_v1(client, ns, load).await?;
                let previewing = status_until(client, ns, "web", "v2 previewed", |s| {
                    s.phase == Phase::Paused && s.updated_revision.as_deref() != Some(blue.as_str())
                })
                .await?;
                let green = previewing.updated_revision.context("no updated revision")?;
                tokio::time::sleep(SETTLE).await;
                promote_until_stable(client, ns, "web", &green, 0).await?;
                past_the_scale_down().await;
                anyhow::Ok(())
            })
            .await?;
        report.failed(Kind::BlueGreen, ROUTER_LESS, &records);
        Ok(())
    }

    /// A rolling update of 10 replicas (surge 2, unavailable 1) on a plain Ingress.
    async fn rolling(&self, ns: &str, report: &mut Report) -> anyhow::Result<()> {
        let client = &self.client;
        let host = plain_host(client, ns, "web").await?;
        let strategy = json!({"rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}});
        let (_controller, v1) = healthy_v1(client, ns, MANY_REPLICAS, strategy).await?;
        let limit = self.args.load_limit(0);
        let ((), records) = self
            .measured(&host, limit, async |load: &Load| {
                v2_after_v1(client, ns, load).await?;
                let done = status_until(client, ns, "web", "v2 Healthy", |s| {
                    s.phase == Phase::Healthy
                        && s.stable_revision.is_some()
                        && s.stable_revision.as_deref() != Some(v1.as_str())
                })
                .await?;
                let v2 = done.stable_revision.context("no stable revision")?;
                ready_pods_settled(client, ns, &v2).await?;
                past_the_drain().await;
                anyhow::Ok(())
            })
            .await?;
        report.failed(Kind::Rolling, ROUTER_LESS, &records);
        Ok(())
    }
}

/// How long one state of a release may take to come.
const STATUS_WAIT: Duration = Duration::from_secs(60);
/// Answers counted once a release is over and the old version gone.
const TAIL: usize = 200;

fn paused_steps() -> Value {
    let steps: Vec<Value> = MEASURED
        .iter()
        .flat_map(|(_, weight)| [json!({"setWeight": weight}), json!({"pause": {}})])
        .collect();
    json!(steps)
}

/// Waits until the release of a revision `updated` accepts is paused at `step`.
async fn paused_at(
    client: &Client,
    ns: &str,
    step: i32,
    updated: impl Fn(&str) -> bool,
) -> anyhow::Result<RolloutStatus> {
    Ok(
        status_until(client, ns, "web", &format!("paused at step {step}"), |s| {
            s.phase == Phase::Paused
                && s.current_step_index == Some(step)
                && s.updated_revision.as_deref().is_some_and(&updated)
        })
        .await?,
    )
}

async fn promote(client: &Client, ns: &str, revision: &str, step: i32) -> anyhow::Result<()> {
    let decision = json!({"revision": revision, "promotedStep": step});
    Ok(decide(client, ns, "web", decision).await?)
}

/// Past the old version's scale-down and its pods' drain, and Traefik's reload after it.
async fn past_the_scale_down() {
    tokio::time::sleep(Duration::from_secs(SCALE_DOWN_DELAY_S)).await;
    past_the_drain().await;
}

/// Past the drain of pods just told to stop, and Traefik's reload after it.
async fn past_the_drain() {
    tokio::time::sleep(SHUTDOWN_DELAY + SETTLE).await;
}

/// Once the client has heard from v1, v2's template.
async fn v2_after_v1(client: &Client, ns: &str, load: &Load) -> anyhow::Result<()> {
    load.first_answer_from("v1", STATUS_WAIT).await?;
    Ok(set_container(client, ns, "web", draining_container("v2", &[])).await?)
}

/// A Service `service` of the Rollout `web`'s pods and a plain Ingress to it: its host.
async fn plain_host(client: &Client, ns: &str, service: &str) -> anyhow::Result<String> {
    let host = format!("web.{ns}.example");
    create_service(client, ns, service, "web").await?;
    ingress(client, ns, "web", &host, service).await?;
    Ok(host)
}

/// `sluice_abort_latency_seconds`: (sum, count).
async fn abort_latency(controller: &RunningController) -> anyhow::Result<(f64, f64)> {
    let metrics = controller.metrics().await?;
    let value = |name: &str| {
        sample(&metrics, name).with_context(|| format!("no {name} in the controller's metrics"))
    };
    Ok((
        value("sluice_abort_latency_seconds_sum")?,
        value("sluice_abort_latency_seconds_count")?,
    ))
}

/// The HTTPRoute `web`'s generation, and the oldest generation its parents' conditions say
/// Traefik has seen.
async fn route_status(client: &Client, ns: &str) -> anyhow::Result<RouteStatus> {
    let routes: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &http_route_resource());
    let route = routes.get("web").await?;
    let observed = route.data["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["conditions"].as_array().into_iter().flatten())
        .filter_map(|c| c["observedGeneration"].as_i64())
        .min();
    Ok(RouteStatus {
        generation: route.metadata.generation.unwrap_or(0),
        observed,
    })
}

/// Waits until every ReplicaSet of `web` has all its pods and only them ready: (ready pods of
/// `updated`, ready pods of the others).
async fn ready_pods_settled(
    client: &Client,
    ns: &str,
    updated: &str,
) -> anyhow::Result<(i32, i32)> {
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    wait::until::<_, anyhow::Error, _, _>("the pods to settle", STATUS_WAIT, || async {
        let mut new = 0;
        let mut old = 0;
        for rs in replica_sets.list(&ListParams::default()).await?.items {
            let wanted = rs.spec.replicas.unwrap_or(0);
            let status = rs.status.clone().unwrap_or_default();
            if status.replicas != wanted || status.ready_replicas.unwrap_or(0) != wanted {
                return Ok(None);
            }
            if rs.labels().get(POD_TEMPLATE_HASH_LABEL).map(String::as_str) == Some(updated) {
                new += wanted;
            } else {
                old += wanted;
            }
        }
        Ok((new > 0).then_some((new, old)))
    })
    .await
}

/// The nearest-rank quantile `q` of `sorted`.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

impl Report {
    fn print(&self, args: &Args) {
        println!(
            "traffic-bench: Traefik {TRAEFIK_VERSION} (providersThrottleDuration {} ms), one client \
             on 127.0.0.1 at {} requests/s, {} answers per step",
            PROVIDERS_THROTTLE.as_millis(),
            args.rate,
            args.per_step
        );
        println!();
        self.print_shares();
        println!();
        self.print_failures();
        println!();
        self.print_aborts(args);
        println!();
        self.print_route_status();
    }

    fn print_shares(&self) {
        println!(
            "canary share vs weight: the new version's share of the answers counted from {} ms \
             after Sluice reported the step (router-less: vs its ready pods' ratio)",
            SETTLE.as_millis()
        );
        print_share_rows(&self.shares);
        self.print_share_summary();
        println!();
        println!(
            "maxTrafficWeight {MAX_WEIGHT}, setWeight {}: half the traffic, as Sluice means it (on \
             nginx: canary-weight {} with canary-weight-total {MAX_WEIGHT})",
            MAX_WEIGHT / 2,
            MAX_WEIGHT / 2
        );
        print_share_rows(&self.max_weight);
    }

    fn print_share_summary(&self) {
        println!(
            "{:<12} {:>14} {:>13} {:>12} {:>11}",
            "router", "mean |dev| pts", "max |dev| pts", "mean |dev| σ", "max |dev| σ"
        );
        for column in columns() {
            let of: Vec<&Share> = self.shares.iter().filter(|s| s.column == column).collect();
            if of.is_empty() {
                continue;
            }
            let points: Vec<f64> = of.iter().map(|s| s.deviation().abs()).collect();
            let sigmas: Vec<f64> = of
                .iter()
                .map(|s| (s.deviation() / s.sigma()).abs())
                .collect();
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
            println!(
                "{:<12} {:>14.2} {:>13.2} {:>12.2} {:>11.2}",
                column,
                mean(&points),
                max(&points),
                mean(&sigmas),
                max(&sigmas)
            );
        }
    }

    fn print_failures(&self) {
        println!(
            "failed requests per 1,000 (no answer, or 502/503/504), from v1's first answer to past \
             the old version's scale-down: per 1,000 (failed/requests)"
        );
        print!("{:<28}", "release");
        for column in columns() {
            print!(" {column:>22}");
        }
        println!();
        for kind in Kind::ALL {
            print!("{:<28}", kind.name());
            for column in columns() {
                let cell = self.failures.get(&(kind, column)).map_or_else(
                    || "-".to_owned(),
                    |f| {
                        format!(
                            "{:.2} ({}/{})",
                            1000.0 * f.failed as f64 / f.requests.max(1) as f64,
                            f.failed,
                            f.requests
                        )
                    },
                );
                print!(" {cell:>22}");
            }
            println!();
        }
        for ((kind, column), failures) in &self.failures {
            if let Some(first) = &failures.first {
                println!("  {column}, {}: first failure {first}", kind.name());
            }
        }
        for (column, v1, total) in &self.after_undo {
            println!("  {column}, after the undo and v2's scale-down: v1 answered {v1} of {total}");
        }
    }

    fn print_aborts(&self, args: &Args) {
        println!(
            "abort drain, {} aborts per router (a canary failing {:.0}% of its requests at weight \
             10, caught by a 1 s analysis): seconds from the Fail verdict (the AnalysisRun's \
             completedAt) to the client's last answer from the canary; the controller's own \
             sluice_abort_latency_seconds (verdict to traffic written back to stable) for the \
             same aborts; their difference is the data plane's own delay",
            args.aborts,
            100.0 * BAD_ERROR_RATE
        );
        println!(
            "{:<8} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>12} {:>11}",
            "router",
            "aborts",
            "client p50",
            "client max",
            "ctrl p50",
            "ctrl max",
            "plane p50",
            "plane max",
            "answers after",
            "5xx after"
        );
        for router in Router::ALL {
            let of: Vec<&Abort> = self
                .aborts
                .iter()
                .filter(|a| a.column == router.name())
                .collect();
            if of.is_empty() {
                continue;
            }
            let client = sorted(
                of.iter()
                    .map(|a| a.drain.last_answer.as_secs_f64())
                    .collect(),
            );
            let controller = sorted(of.iter().filter_map(|a| a.controller).collect());
            let plane = sorted(
                of.iter()
                    .filter_map(|a| Some(a.drain.last_answer.as_secs_f64() - a.controller?))
                    .collect(),
            );
            let answers: usize = of.iter().map(|a| a.drain.answers_after).sum();
            let bad: usize = of.iter().map(|a| a.drain.bad_after).sum();
            println!(
                "{:<8} {:>6} {:>9} {:>9} {:>10} {:>10} {:>10} {:>10} {:>12} {:>11}",
                router.name(),
                of.len(),
                seconds(quantile(&client, 0.5)),
                seconds(quantile(&client, 1.0)),
                seconds(quantile(&controller, 0.5)),
                seconds(quantile(&controller, 1.0)),
                seconds(quantile(&plane, 0.5)),
                seconds(quantile(&plane, 1.0)),
                format!(
                    "{answers} (max {})",
                    of.iter().map(|a| a.drain.answers_after).max().unwrap_or(0)
                ),
                format!(
                    "{bad} (max {})",
                    of.iter().map(|a| a.drain.bad_after).max().unwrap_or(0)
                ),
            );
        }
    }

    fn print_route_status(&self) {
        let caught_up = self
            .route_status
            .iter()
            .filter(|r| r.observed == Some(r.generation))
            .count();
        println!(
            "HTTPRoute status when Sluice reported a gateway step: Traefik's parents' conditions \
             had observedGeneration == metadata.generation at {caught_up} of {} steps",
            self.route_status.len()
        );
        for status in &self.route_status {
            if status.observed != Some(status.generation) {
                println!(
                    "  generation {}: observedGeneration {:?}",
                    status.generation, status.observed
                );
            }
        }
    }
}

fn print_share_rows(shares: &[Share]) {
    println!(
        "{:<12} {:>6} {:>9} {:>8} {:>9} {:>8} {:>8}",
        "router", "weight", "expected%", "answers", "observed%", "dev pts", "dev σ"
    );
    for share in shares {
        println!(
            "{:<12} {:>6} {:>9.1} {:>8} {:>9.2} {:>+8.2} {:>+8.2}",
            share.column,
            share.weight,
            share.expected,
            share.total,
            share.observed(),
            share.deviation(),
            share.deviation() / share.sigma(),
        );
    }
}

fn columns() -> [Column; 3] {
    [Router::Gateway.name(), Router::Nginx.name(), ROUTER_LESS]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_hold_each_measured_weight_at_its_pause() {
        let steps = paused_steps();
        for (pause, weight) in MEASURED {
            let at = usize::try_from(pause).unwrap();
            assert_eq!(steps[at], json!({"pause": {}}));
            assert_eq!(steps[at - 1], json!({"setWeight": weight}));
        }
    }

    #[test]
    fn a_share_deviates_in_points_and_in_sigmas() {
        let share = Share {
            column: "gateway",
            expected: 20.0,
            weight: 20,
            canary: 225,
            total: 1000,
        };
        assert!((share.deviation() - 2.5).abs() < 1e-9);
        // σ = √(0.2 · 0.8 / 1000) ≈ 1.265 points.
        assert!((share.deviation() / share.sigma() - 1.976).abs() < 1e-3);
    }

    #[test]
    fn failures_count_from_the_first_answer() {
        let record = |sent_ms, status, version: Option<&str>| Record {
            sent: Duration::from_millis(sent_ms),
            took: Duration::from_millis(1),
            outcome: sluice_tests::load::Outcome::Answered {
                status,
                version: version.map(str::to_owned),
            },
        };
        let records = [
            record(0, 503, None),
            record(10, 200, Some("v1")),
            record(20, 502, None),
            record(30, 200, Some("v1")),
        ];
        let failures = Failures::of(&records);
        assert_eq!((failures.failed, failures.requests), (1, 3));
        assert!(failures.first.is_some_and(|f| f.contains("502")));
    }
}
