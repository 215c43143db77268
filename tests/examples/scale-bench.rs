//! The scale benchmark: N canary Rollouts on the local control plane with kwok nodes, driven
//! through creation, idle and repeated mass image changes, against a controller run as its own
//! process (Sluice's release build, or Argo Rollouts built by
//! tests/cluster/build-argo-rollouts.sh), one controller at a time, each on a control plane of
//! its own started the same way.
//!
//!   cargo build --release -p rollout-controller
//!   cargo run --release -p sluice-tests --example scale-bench -- \
//!       [--rollouts 1000] [--replicas 1] [--controllers sluice,argo] [--cycles 1] [--soak 1h] \
//!       [--idle 150s] [--env MALLOC_ARENA_MAX=2] [--json out.json] \
//!       [--controller-replicas 3 --shards 6]
//!
//! Every Rollout is one spec shape: `replicas` R, canary `setWeight 50`, `pause 5s`. Measured
//! per phase from /proc: the controller's CPU seconds, resident memory and its high-water mark;
//! from the bench's own watch: the time until every Rollout is Healthy at its new generation,
//! and per Rollout the time from its update to Healthy beyond the 5 s its pause asks (a fair
//! controller keeps p99 near p50); from the apiserver's audit log (the controller runs as a
//! ServiceAccount of the audited namespace): requests by verb and resource per Rollout update,
//! and watch and list requests (a relist or a re-watch). The apiserver's own
//! `apiserver_request_total` cannot say whose requests they are: it has no client label.
//! Repeated updates (`--cycles`, `--soak`) print RSS per cycle and its slope. With
//! `--controller-replicas`, Sluice runs as that many processes (sharded with `--shards`): CPU and
//! memory are their sums, each process's RSS beside them. Every wait is
//! bounded; the control plane is stopped however the run ends.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use rollout_controller::crd::RETIRED_LABEL;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_tests::process::ManagedProcess;
use sluice_tests::procfs::{Memory, ProcessStat};
use sluice_tests::quantile::quantile;
use sluice_tests::{AUDITED_NAMESPACE, ClusterOptions, ControlPlane, wait};

const NAMESPACE: &str = "scale";
/// The ServiceAccount each controller runs as: in the audited namespace, so that the audit log
/// holds exactly its requests.
const ACCOUNT: &str = "scale-bench-controller";
/// What the spec's pause step asks, subtracted from each Rollout's update-to-Healthy time.
const PAUSE: Duration = Duration::from_secs(5);
/// kwok nodes hold 110 pods; fill them to this many.
const PODS_PER_NODE: usize = 100;
const DEFAULT_ARGO_VERSION: &str = "v1.10.2";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Controller {
    Sluice,
    Argo,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Self::Sluice => "Sluice",
            Self::Argo => "Argo Rollouts",
        }
    }

    fn resource(self) -> ApiResource {
        let (group, version) = match self {
            Self::Sluice => ("sluice.dev", "v1alpha1"),
            Self::Argo => ("argoproj.io", "v1alpha1"),
        };
        ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: format!("{group}/{version}"),
            kind: "Rollout".into(),
            plural: "rollouts".into(),
        }
    }
}

#[derive(Parser)]
#[command(about = "N canary Rollouts: create, idle, mass updates; CPU, memory, API requests")]
struct Args {
    /// How many Rollouts.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=20000))]
    rollouts: u32,
    /// Replicas of each Rollout.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    replicas: u32,
    /// Sluice only: run this many controller processes (replicas of the controller's Deployment,
    /// each its own identity); their CPU and memory are summed, and each one's memory is shown.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    controller_replicas: u32,
    /// Sluice only: the controllers' --shards (default: theirs, one shard: a leader and standbys).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    shards: Option<u16>,
    /// The controllers to measure, one after the other, each on a fresh control plane.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sluice")]
    controllers: Vec<Controller>,
    /// How long to measure the controller idle with every Rollout Healthy.
    #[arg(long, default_value = "150s")]
    idle: humantime::Duration,
    /// Mass updates, one after the other (each: every image changed, then all Healthy).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10000))]
    cycles: u32,
    /// Keep doing mass updates until this long has passed since the first (at least --cycles).
    #[arg(long)]
    soak: Option<humantime::Duration>,
    /// After each cycle's all-Healthy, wait this long before reading memory and going on, so
    /// that old versions are scaled down (Argo Rollouts' scaleDownDelaySeconds is 30 s by
    /// default) and the caches settle; its requests count as the update's.
    #[arg(long, default_value = "35s")]
    settle: humantime::Duration,
    /// How long all Rollouts may take to become Healthy, in each phase.
    #[arg(long, default_value = "30m")]
    timeout: humantime::Duration,
    /// Each Rollout's spec.progressDeadlineSeconds. The default 600 s aborts (Sluice) or marks
    /// Degraded (Argo Rollouts) a Rollout whose pods the apiserver takes longer to bring up, as
    /// a two-core control plane does for some of 10,000 updated at once; the scenario measures
    /// the controller's throughput, not that deadline.
    #[arg(long, default_value = "1h")]
    progress_deadline: humantime::Duration,
    /// Each Rollout's spec.revisionHistoryLimit (default: unset, the controller's default of 10
    /// old ReplicaSets kept).
    #[arg(long)]
    revision_history_limit: Option<u32>,
    /// Requests the bench keeps in flight when it creates or updates Rollouts.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Environment for the controller process, KEY=VALUE (repeatable): MALLOC_ARENA_MAX=2, ...
    #[arg(long = "env")]
    env: Vec<String>,
    /// Sluice's controller binary (default: rollout-controller beside this example).
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
    /// The Argo Rollouts version build-argo-rollouts.sh built.
    #[arg(long, default_value = DEFAULT_ARGO_VERSION)]
    argo_version: String,
    /// After each cycle has settled, have gdb call glibc's malloc_trim(0) in the controller and
    /// read its RSS again: the difference is memory the allocator held freed, not live data.
    #[arg(long)]
    malloc_trim: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_tests::install_crypto_provider();
    let args = Args::parse();
    if args.controllers.contains(&Controller::Argo) {
        ensure!(
            args.controller_replicas == 1 && args.shards.is_none(),
            "--controller-replicas and --shards are Sluice's: Argo Rollouts runs one controller"
        );
    }
    let mut results = Vec::new();
    for &controller in &args.controllers {
        let nodes = nodes_for(&args);
        let cluster = ControlPlane::start(ClusterOptions {
            nodes,
            // kwok's simulated pods only: no image here maps to a program.
            run_pods: false,
            ..ClusterOptions::default()
        })
        .await
        .context("starting the control plane (as root, after tests/cluster/build.sh)")?;
        let outcome = bench(&cluster, &args, controller).await;
        let kept = cluster.stop(outcome.is_err()).await;
        match outcome {
            Ok(result) => {
                result.print(&args);
                results.push(result);
            }
            Err(e) => {
                if let Some(dir) = kept {
                    eprintln!("the cluster's files (logs, audit log) are kept in {dir:?}");
                }
                return Err(e.context(format!("benchmarking {}", controller.name())));
            }
        }
    }
    print_side_by_side(&args, &results);
    if let Some(path) = &args.json {
        let value = json!({
            "rollouts": args.rollouts,
            "replicas": args.replicas,
            "controller_replicas": args.controller_replicas,
            "shards": args.shards,
            "results": results.iter().map(RunResult::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Room for every pod at the peak of an update (stable and canary of each Rollout, and the
/// ones still terminating), at [`PODS_PER_NODE`] a node.
fn nodes_for(args: &Args) -> usize {
    let replicas = args.replicas as usize;
    let peak = args.rollouts as usize * (replicas + replicas.div_ceil(2));
    (peak + peak / 5).div_ceil(PODS_PER_NODE).max(3)
}

/// One phase: from one reading to the next, with the controller's requests in between.
struct Phase {
    name: String,
    from: Sample,
    to: Sample,
    /// Memory once the phase's work has settled (after --settle), when it differs from `to`.
    settled: Option<Sample>,
    requests: Requests,
    /// Per Rollout, update acknowledged to Healthy seen, beyond the spec's pause.
    overrun: Vec<Duration>,
}

impl Phase {
    fn wall(&self) -> f64 {
        (self.to.at - self.from.at).as_secs_f64()
    }

    fn cpu(&self) -> f64 {
        self.to.cpu.saturating_sub(self.from.cpu).as_secs_f64()
    }

    /// The controllers' memory, summed.
    fn memory(&self) -> Memory {
        self.sample().memory
    }

    /// Each controller's memory.
    fn each(&self) -> &[Memory] {
        &self.sample().each
    }

    fn sample(&self) -> &Sample {
        self.settled.as_ref().unwrap_or(&self.to)
    }
}

/// The controller's processes at one moment: their CPU time and memory summed, and each one's
/// memory.
#[derive(Clone)]
struct Sample {
    at: Instant,
    cpu: Duration,
    memory: Memory,
    each: Vec<Memory>,
}

impl Sample {
    fn take(pids: &[u32]) -> anyhow::Result<Self> {
        let at = Instant::now();
        let mut cpu = Duration::ZERO;
        let mut each = Vec::with_capacity(pids.len());
        for &pid in pids {
            cpu += ProcessStat::read(pid)
                .with_context(|| format!("controller process {pid} is gone"))?
                .cpu;
            each.push(Memory::read(pid)?);
        }
        Ok(Self {
            at,
            cpu,
            memory: sum(&each),
            each,
        })
    }
}

/// Resident memory summed over processes (and their high-water marks, each reached at its own
/// time: an upper bound of the sum's).
fn sum(each: &[Memory]) -> Memory {
    Memory {
        rss_kib: each.iter().map(|m| m.rss_kib).sum(),
        peak_rss_kib: each.iter().map(|m| m.peak_rss_kib).sum(),
    }
}

struct RunResult {
    controller: Controller,
    version: String,
    posting: Duration,
    phases: Vec<Phase>,
    /// The cycles' memory (after settling) and when each ended, since the first update began.
    cycles: Vec<Cycle>,
}

async fn bench(
    cluster: &ControlPlane,
    args: &Args,
    controller: Controller,
) -> anyhow::Result<RunResult> {
    let client = cluster.admin_client().await?;
    let version = match controller {
        Controller::Sluice => {
            sluice_tests::crds::install(&client, "scale-bench").await?;
            env!("CARGO_PKG_VERSION").to_owned()
        }
        Controller::Argo => {
            let crds = argo_dir(cluster, args).join("crds");
            sluice_tests::crds::install_from_dir(&client, "scale-bench", &crds)
                .await
                .context("installing Argo Rollouts' CRDs (tests/cluster/build-argo-rollouts.sh)")?;
            args.argo_version.clone()
        }
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in [NAMESPACE, AUDITED_NAMESPACE] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}}))?,
            )
            .await?;
    }
    let kubeconfig = controller_kubeconfig(cluster, &client).await?;
    let mut audit = AuditReader::new(
        cluster.audit_log(),
        format!("system:serviceaccount:{AUDITED_NAMESPACE}:{ACCOUNT}"),
    );

    let resource = controller.resource();
    let rollouts: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &resource);
    let board = Arc::new(Board::default());
    let watch = tokio::spawn(watch_rollouts(rollouts.clone(), controller, board.clone()));

    let mut processes = Vec::new();
    for replica in 0..args.controller_replicas {
        match start_controller(cluster, args, controller, &kubeconfig, replica).await {
            Ok(process) => processes.push(process),
            Err(e) => {
                for process in &mut processes {
                    process.stop().await;
                }
                return Err(e);
            }
        }
    }
    let pids: Vec<u32> = processes.iter().map(ManagedProcess::pid).collect();
    let outcome = drive(
        &client, args, controller, &rollouts, &board, &pids, &mut audit,
    )
    .await;
    let alive: Result<Vec<()>, _> = processes
        .iter()
        .map(ManagedProcess::ensure_running)
        .collect();
    for process in &mut processes {
        process.stop().await;
    }
    watch.abort();
    alive.context("a controller exited during the run")?;
    let (posting, phases, cycles) = outcome?;
    Ok(RunResult {
        controller,
        version,
        posting,
        phases,
        cycles,
    })
}

type Driven = (Duration, Vec<Phase>, Vec<Cycle>);

/// After a mass update has settled.
struct Cycle {
    /// Since the first update began.
    at: Duration,
    /// Summed over the controller's processes; `each` is per process.
    memory: Memory,
    each: Vec<Memory>,
    /// RSS after malloc_trim(0), with --malloc-trim.
    trimmed: Option<Memory>,
    /// The ReplicaSets in the Rollouts' namespace; of them `retired` are Sluice's history, which
    /// its controller does not cache.
    replica_sets: usize,
    retired: usize,
    replica_set_json_bytes: usize,
}

/// Makes glibc give back the free memory it holds in each process, and sums their memory after.
async fn malloc_trim_all(pids: &[u32]) -> anyhow::Result<Memory> {
    let mut each = Vec::with_capacity(pids.len());
    for &pid in pids {
        each.push(malloc_trim(pid).await?);
    }
    Ok(sum(&each))
}

/// Makes glibc give back the free memory it holds (gdb calls malloc_trim(0) in `pid`), and
/// reads the memory after it.
async fn malloc_trim(pid: u32) -> anyhow::Result<Memory> {
    let output = tokio::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (int) malloc_trim(0)",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running gdb (for --malloc-trim)")?;
    ensure!(
        output.status.success(),
        "gdb could not call malloc_trim in {pid}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Memory::read(pid)?)
}

/// How many ReplicaSets the Rollouts' namespace holds, how many of them are retired, and the
/// size as JSON of those not retired (what a cache of them is made of, before its own overhead).
async fn replica_sets_in(client: &Client) -> anyhow::Result<(usize, usize, usize)> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), NAMESPACE);
    let (mut count, mut retired, mut bytes) = (0, 0, 0);
    let mut params = ListParams::default().limit(500);
    loop {
        let page = api.list(&params).await?;
        for rs in &page.items {
            count += 1;
            if rs.labels().contains_key(RETIRED_LABEL) {
                retired += 1;
            } else {
                bytes += serde_json::to_vec(rs)?.len();
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok((count, retired, bytes)),
        }
    }
}

async fn drive(
    client: &Client,
    args: &Args,
    controller: Controller,
    rollouts: &Api<DynamicObject>,
    board: &Board,
    pids: &[u32],
    audit: &mut AuditReader,
) -> anyhow::Result<Driven> {
    let timeout: Duration = args.timeout.into();
    let names: Vec<String> = (0..args.rollouts).map(|i| format!("r-{i:05}")).collect();
    let mut phases = Vec::new();
    // The controller's start-up (caches filled, leadership) is not part of creating.
    tokio::time::sleep(Duration::from_secs(3)).await;
    audit.take()?;

    let start = Sample::take(pids)?;
    let posting_started = Instant::now();
    let created = for_each_bounded(&names, args.concurrency, |name| {
        let body = rollout_manifest(controller, name, args, "bench:1");
        async move {
            let object: DynamicObject = serde_json::from_value(body)?;
            let created = rollouts.create(&PostParams::default(), &object).await?;
            Ok((name.clone(), generation(&created)?, Instant::now()))
        }
    })
    .await?;
    let posting = posting_started.elapsed();
    all_healthy(board, &created, timeout, "created").await?;
    let healthy = Sample::take(pids)?;
    let phase = Phase {
        name: format!("create {} -> all Healthy", args.rollouts),
        from: start,
        to: healthy.clone(),
        settled: None,
        requests: audit.take()?,
        overrun: Vec::new(),
    };
    eprintln!(
        "[scale-bench] {} created: all Healthy in {:.1} s (posted in {:.1} s), {:.1} CPU-s, \
         RSS / HWM {:.1} / {:.1} MiB{}",
        controller.name(),
        phase.wall(),
        posting.as_secs_f64(),
        phase.cpu(),
        mib(phase.memory().rss_kib),
        mib(phase.memory().peak_rss_kib),
        each_rss(phase.each()),
    );
    phases.push(phase);

    tokio::time::sleep(args.idle.into()).await;
    let idle = Sample::take(pids)?;
    phases.push(Phase {
        name: format!("idle {}", args.idle),
        from: healthy,
        to: idle.clone(),
        settled: None,
        requests: audit.take()?,
        overrun: Vec::new(),
    });

    let soak: Option<Duration> = args.soak.map(Into::into);
    let first_update = Instant::now();
    let mut cycles = Vec::new();
    let mut from = idle;
    for cycle in 1u32.. {
        let enough = cycle > args.cycles && soak.is_none_or(|s| first_update.elapsed() >= s);
        if enough {
            break;
        }
        let image = format!("bench:{}", cycle + 1);
        let updated = for_each_bounded(&names, args.concurrency, |name| {
            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": "app", "image": image}
            ]}}}});
            async move {
                let changed = rollouts
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok((name.clone(), generation(&changed)?, Instant::now()))
            }
        })
        .await?;
        let done = all_healthy(board, &updated, timeout, &format!("updated to {image}")).await?;
        let to = Sample::take(pids)?;
        tokio::time::sleep(args.settle.into()).await;
        let settled = Sample::take(pids)?;
        // With what the settling did: scaling the old versions down is part of an update.
        let requests = audit.take()?;
        let mut overrun: Vec<Duration> = updated
            .iter()
            .zip(&done)
            .map(|((_, _, acked), healthy)| healthy.saturating_duration_since(*acked))
            .map(|d| d.saturating_sub(PAUSE))
            .collect();
        overrun.sort();
        let (replica_sets, retired, replica_set_json_bytes) = replica_sets_in(client).await?;
        let trimmed = if args.malloc_trim {
            Some(malloc_trim_all(pids).await?)
        } else {
            None
        };
        cycles.push(Cycle {
            at: first_update.elapsed(),
            memory: settled.memory,
            each: settled.each.clone(),
            trimmed,
            replica_sets,
            retired,
            replica_set_json_bytes,
        });
        let phase = Phase {
            name: format!("update {cycle} -> all Healthy"),
            from,
            to,
            settled: Some(settled),
            requests,
            overrun,
        };
        // Whole, so that a long soak stopped before its table still leaves each cycle's figures.
        eprintln!(
            "[scale-bench] {} cycle {cycle} at {:.1} min: all Healthy in {:.1} s, {:.1} CPU-s, \
             RSS / HWM {:.1} / {:.1} MiB{}, beyond the pause p50 / p99 {:.1} / {:.1} s, \
             {:.2} requests ({:.2} writes) per update, {replica_sets} ReplicaSets ({retired} retired)",
            controller.name(),
            first_update.elapsed().as_secs_f64() / 60.0,
            phase.wall(),
            phase.cpu(),
            mib(phase.memory().rss_kib),
            mib(phase.memory().peak_rss_kib),
            each_rss(phase.each()),
            quantile(&phase.overrun, 0.5).as_secs_f64(),
            quantile(&phase.overrun, 0.99).as_secs_f64(),
            phase.requests.total() as f64 / f64::from(args.rollouts),
            phase.requests.writes() as f64 / f64::from(args.rollouts),
        );
        phases.push(phase);
        from = Sample::take(pids)?;
    }
    Ok((posting, phases, cycles))
}

/// Runs `act` on every name with at most `concurrency` in flight; the results in name order.
async fn for_each_bounded<'a, F, Fut>(
    names: &'a [String],
    concurrency: usize,
    act: F,
) -> anyhow::Result<Vec<(String, i64, Instant)>>
where
    F: Fn(&'a String) -> Fut,
    Fut: Future<Output = anyhow::Result<(String, i64, Instant)>>,
{
    let mut done: Vec<(String, i64, Instant)> = futures::stream::iter(names.iter().map(act))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    done.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(done)
}

fn generation(object: &DynamicObject) -> anyhow::Result<i64> {
    object
        .metadata
        .generation
        .context("the apiserver returned a Rollout without a generation")
}

fn rollout_manifest(controller: Controller, name: &str, args: &Args, image: &str) -> Value {
    let resource = controller.resource();
    let replicas = args.replicas;
    let mut manifest = json!({
        "apiVersion": resource.api_version,
        "kind": "Rollout",
        "metadata": {"name": name, "labels": {"bench": "scale"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
            "strategy": {"canary": {"steps": [
                {"setWeight": 50},
                {"pause": {"duration": "5s"}},
            ]}},
        },
    });
    manifest["spec"]["progressDeadlineSeconds"] =
        json!(Duration::from(args.progress_deadline).as_secs());
    if let Some(limit) = args.revision_history_limit {
        manifest["spec"]["revisionHistoryLimit"] = json!(limit);
    }
    manifest
}

/// When each Rollout was first seen Healthy at a generation, as the bench's watch saw it.
#[derive(Default)]
struct Board {
    healthy: Mutex<HashMap<String, (i64, Instant)>>,
    /// The Rollouts whose status says aborted, and at which generation: they will not become
    /// Healthy by themselves, so a wait for them fails at once rather than at its timeout.
    aborted: Mutex<HashMap<String, i64>>,
}

impl Board {
    fn healthy_at(&self, name: &str, generation: i64) -> Option<Instant> {
        let healthy = self.healthy.lock().unwrap_or_else(|p| p.into_inner());
        healthy
            .get(name)
            .and_then(|(g, at)| (*g >= generation).then_some(*at))
    }

    fn aborted_at(&self, name: &str, generation: i64) -> bool {
        let aborted = self.aborted.lock().unwrap_or_else(|p| p.into_inner());
        aborted.get(name).is_some_and(|g| *g >= generation)
    }

    fn record_aborted(&self, name: String, aborted_at: Option<i64>) {
        let mut aborted = self.aborted.lock().unwrap_or_else(|p| p.into_inner());
        match aborted_at {
            Some(generation) => aborted.insert(name, generation),
            None => aborted.remove(&name),
        };
    }

    fn record(&self, name: String, generation: i64) {
        let mut healthy = self.healthy.lock().unwrap_or_else(|p| p.into_inner());
        let entry = healthy.entry(name).or_insert((generation, Instant::now()));
        if entry.0 < generation {
            *entry = (generation, Instant::now());
        }
    }
}

async fn watch_rollouts(rollouts: Api<DynamicObject>, controller: Controller, board: Arc<Board>) {
    let mut events = watcher::watcher(rollouts, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(Event::Apply(object) | Event::InitApply(object)) => object,
            _ => continue,
        };
        if let Some(generation) = healthy_generation(controller, &object) {
            board.record(object.name_any(), generation);
        }
        board.record_aborted(object.name_any(), aborted_generation(&object));
    }
}

/// The generation at which `rollout` is done: its status answers its spec's generation, it
/// says Healthy, and the version rolled out is the stable one.
fn healthy_generation(controller: Controller, rollout: &DynamicObject) -> Option<i64> {
    let generation = rollout.metadata.generation?;
    let status = rollout.data.get("status")?;
    // Argo Rollouts writes observedGeneration as a string, Sluice as an integer.
    let observed = match &status["observedGeneration"] {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let (stable, updated) = match controller {
        Controller::Sluice => ("stableRevision", "updatedRevision"),
        Controller::Argo => ("stableRS", "currentPodHash"),
    };
    let done = observed == generation
        && status["phase"] == "Healthy"
        && status[stable].is_string()
        && status[stable] == status[updated];
    done.then_some(generation)
}

/// The generation at which `rollout` is aborted, if its status says so (`status.abort`, in
/// Sluice's status and Argo Rollouts' alike).
fn aborted_generation(rollout: &DynamicObject) -> Option<i64> {
    let aborted = rollout.data.get("status")?["abort"] == Value::Bool(true);
    aborted.then_some(rollout.metadata.generation?)
}

/// Waits until every Rollout of `targets` is Healthy at its generation; when each became so.
async fn all_healthy(
    board: &Board,
    targets: &[(String, i64, Instant)],
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Vec<Instant>> {
    let count = targets.len();
    wait::until::<_, anyhow::Error, _, _>(
        &format!("all {count} Rollouts {what} to be Healthy"),
        timeout,
        || async {
            let aborted: Vec<&str> = targets
                .iter()
                .filter(|(name, generation, _)| board.aborted_at(name, *generation))
                .map(|(name, _, _)| name.as_str())
                .collect();
            if !aborted.is_empty() {
                anyhow::bail!(
                    "{} of {count} Rollouts aborted, which no wait mends (first: {})",
                    aborted.len(),
                    aborted[..aborted.len().min(5)].join(", ")
                );
            }
            let seen: Option<Vec<Instant>> = targets
                .iter()
                .map(|(name, generation, _)| board.healthy_at(name, *generation))
                .collect();
            Ok(seen)
        },
    )
    .await
    .map_err(|e| {
        let waiting = targets
            .iter()
            .filter(|(name, generation, _)| board.healthy_at(name, *generation).is_none())
            .count();
        e.context(format!("{waiting} of {count} Rollouts not Healthy"))
    })
}

/// A ServiceAccount of the audited namespace with cluster-admin rights (the benchmark measures
/// load, not rights), and a kubeconfig presenting its token.
async fn controller_kubeconfig(cluster: &ControlPlane, client: &Client) -> anyhow::Result<PathBuf> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), AUDITED_NAMESPACE);
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ACCOUNT}}))?,
        )
        .await?;
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": ACCOUNT},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": AUDITED_NAMESPACE}],
            }))?,
        )
        .await?;
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 86400}}))?;
    let token = accounts
        .create_token_request(ACCOUNT, &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("no token issued for the controller's ServiceAccount")?;
    Ok(cluster.token_kubeconfig(ACCOUNT, &token)?)
}

fn argo_dir(cluster: &ControlPlane, args: &Args) -> PathBuf {
    cluster
        .binaries()
        .path("..")
        .join(format!("argo-rollouts-{}", args.argo_version))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the controller's process number `replica` with its default flags but for where it
/// listens (and --shards), and waits until its health endpoint answers.
async fn start_controller(
    cluster: &ControlPlane,
    args: &Args,
    controller: Controller,
    kubeconfig: &Path,
    replica: u32,
) -> anyhow::Result<ManagedProcess> {
    let health = free_port()?;
    let (program, mut flags, health_path) = match controller {
        Controller::Sluice => {
            let program = match &args.sluice_bin {
                Some(path) => path.clone(),
                None => sluice_tests::pods::cargo_bin_dir()?.join("rollout-controller"),
            };
            let mut flags = vec![
                format!("--health-addr=127.0.0.1:{health}"),
                format!("--api-addr=127.0.0.1:{}", free_port()?),
            ];
            if let Some(shards) = args.shards {
                flags.push(format!("--shards={shards}"));
            }
            (program, flags, "/readyz")
        }
        Controller::Argo => {
            let program = argo_dir(cluster, args).join("rollouts-controller");
            let flags = vec![
                format!("--healthzPort={health}"),
                format!("--metricsPort={}", free_port()?),
            ];
            (program, flags, "/healthz")
        }
    };
    ensure!(
        program.is_file(),
        "no controller at {} (cargo build --release -p rollout-controller, or \
         tests/cluster/build-argo-rollouts.sh)",
        program.display()
    );
    flags.push(format!("--kubeconfig={}", kubeconfig.display()));
    // Through env(1), which execs the controller in its place (same pid), so that it gets its
    // own environment: the Lease's namespace, and what --env adds.
    let name = match args.controller_replicas {
        1 => format!("controller-{controller:?}").to_lowercase(),
        _ => format!("controller-{controller:?}-{replica}").to_lowercase(),
    };
    // POD_NAME is the identity each replica holds its Leases as.
    let mut env_args = vec![
        format!("POD_NAMESPACE={AUDITED_NAMESPACE}"),
        format!("POD_NAME={name}"),
    ];
    for pair in &args.env {
        ensure!(pair.contains('='), "--env {pair:?} is not KEY=VALUE");
        env_args.push(pair.clone());
    }
    env_args.push(program.display().to_string());
    env_args.extend(flags);
    let process = ManagedProcess::spawn(
        &name,
        Path::new("/usr/bin/env"),
        &env_args,
        &cluster.dir().join("logs"),
    )?;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{health}{health_path}");
    wait::until::<_, anyhow::Error, _, _>(
        "the controller to be ready",
        Duration::from_secs(120),
        || async {
            process.ensure_running()?;
            let ready = http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            Ok(ready.then_some(()))
        },
    )
    .await?;
    Ok(process)
}

/// The controller's requests, counted from its audit events.
#[derive(Default)]
struct Requests {
    /// `verb resource[/subresource]`, with the response code when it is not a success.
    by_kind: BTreeMap<String, u64>,
    /// Watch requests started: each is a new watch or a re-watch.
    watches: u64,
    lists: u64,
}

impl Requests {
    fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Writes to the cluster's objects; renewing the leader's Lease is not one a Rollout causes.
    fn writes(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(kind, _)| {
                let write = ["create", "update", "patch", "delete"]
                    .iter()
                    .any(|verb| kind.starts_with(&format!("{verb} ")));
                write && !kind.contains(" leases")
            })
            .map(|(_, n)| n)
            .sum()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditLine {
    stage: String,
    verb: String,
    user: AuditUser,
    object_ref: Option<AuditObject>,
    response_status: Option<AuditCode>,
}

#[derive(Deserialize)]
struct AuditUser {
    username: String,
}

#[derive(Deserialize)]
struct AuditObject {
    resource: Option<String>,
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct AuditCode {
    code: Option<u16>,
}

/// Reads the audit log as it grows, and empties it once read: the apiserver appends to it
/// (O_APPEND), so a truncated file is written from its start again, and a long soak does not
/// fill the cluster's tmpfs. The apiserver's log also rotates, by what it has written since it
/// opened the file (100 MB by default; the truncation does not reset that count): what it wrote
/// between a read and a rotation is in the backup beside it (`audit-<time>.log`), read and removed
/// here too. (Before the backups were read, a run's counts lost every such stretch, which at
/// 5,000 and 10,000 Rollouts was taken for an audit backend dropping events.)
struct AuditReader {
    path: PathBuf,
    user: String,
}

impl AuditReader {
    fn new(path: PathBuf, user: String) -> Self {
        Self { path, user }
    }

    fn take(&mut self) -> anyhow::Result<Requests> {
        let mut requests = Requests::default();
        for backup in self.backups()? {
            let file = std::fs::File::open(&backup)
                .with_context(|| format!("opening the audit log's backup {backup:?}"))?;
            self.count(file, &mut requests)?;
            std::fs::remove_file(&backup)
                .with_context(|| format!("removing the audit log's backup {backup:?}"))?;
        }
        let file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(requests),
            Err(e) => return Err(e).context("opening the audit log"),
        };
        self.count(file, &mut requests)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)?
            .set_len(0)?;
        Ok(requests)
    }

    /// The rotated backups of the audit log, oldest first (their names hold the time).
    fn backups(&self) -> anyhow::Result<Vec<PathBuf>> {
        let (Some(dir), Some(stem), Some(ext)) = (
            self.path.parent(),
            self.path.file_stem().and_then(|s| s.to_str()),
            self.path.extension().and_then(|s| s.to_str()),
        ) else {
            return Ok(Vec::new());
        };
        let prefix = format!("{stem}-");
        let suffix = format!(".{ext}");
        let mut backups = Vec::new();
        for entry in std::fs::read_dir(dir).context("listing the audit log's directory")? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&prefix) && name.ends_with(&suffix) {
                backups.push(entry.path());
            }
        }
        backups.sort();
        Ok(backups)
    }

    fn count(&self, file: std::fs::File, requests: &mut Requests) -> anyhow::Result<()> {
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            // A line the apiserver is writing as we read, or one cut by the truncation.
            let Ok(event) = serde_json::from_str::<AuditLine>(&line) else {
                continue;
            };
            if event.user.username != self.user {
                continue;
            }
            let resource = event.object_ref.as_ref().and_then(|o| o.resource.clone());
            let subresource = event
                .object_ref
                .as_ref()
                .and_then(|o| o.subresource.clone());
            match (event.verb.as_str(), event.stage.as_str()) {
                ("watch", "ResponseStarted") => {
                    requests.watches += 1;
                    continue;
                }
                ("watch", _) => continue,
                (_, "ResponseComplete") => {}
                _ => continue,
            }
            if event.verb == "list" {
                requests.lists += 1;
            }
            let mut kind = format!("{} {}", event.verb, resource.unwrap_or_else(|| "-".into()));
            if let Some(sub) = subresource {
                kind.push('/');
                kind.push_str(&sub);
            }
            if let Some(code) = event.response_status.and_then(|s| s.code)
                && !(200..300).contains(&code)
            {
                kind.push_str(&format!(" ({code})"));
            }
            *requests.by_kind.entry(kind).or_default() += 1;
        }
        Ok(())
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Each controller process's RSS, when there is more than one.
fn each_rss(each: &[Memory]) -> String {
    if each.len() < 2 {
        return String::new();
    }
    let rss: Vec<String> = each
        .iter()
        .map(|m| format!("{:.1}", mib(m.rss_kib)))
        .collect();
    format!(" (each: {} MiB)", rss.join(", "))
}

/// Least-squares slope of `ys` over `xs`; `None` with fewer than two points.
fn slope(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return None;
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

impl RunResult {
    fn updates(&self) -> impl Iterator<Item = &Phase> {
        self.phases.iter().filter(|p| p.name.starts_with("update"))
    }

    /// MiB per cycle and per hour, from the cycles' settled RSS.
    fn slopes(&self) -> (Option<f64>, Option<f64>) {
        let rss: Vec<f64> = self.cycles.iter().map(|c| mib(c.memory.rss_kib)).collect();
        let index: Vec<f64> = (1..=rss.len()).map(|i| i as f64).collect();
        let hours: Vec<f64> = self
            .cycles
            .iter()
            .map(|c| c.at.as_secs_f64() / 3600.0)
            .collect();
        (slope(&index, &rss), slope(&hours, &rss))
    }

    fn print(&self, args: &Args) {
        println!();
        println!(
            "{} {}: {} Rollouts x {} replica(s), canary setWeight 50 / pause 5s; controller \
             process from /proc",
            self.controller.name(),
            self.version,
            args.rollouts,
            args.replicas
        );
        if !args.env.is_empty() {
            println!("controller environment: {}", args.env.join(" "));
        }
        if args.controller_replicas > 1 {
            println!(
                "{} controller processes, --shards {}: CPU and memory are their sums",
                args.controller_replicas,
                args.shards.map_or("1 (default)".into(), |n| n.to_string())
            );
        }
        println!(
            "{:<30} {:>8} {:>8} {:>9} {:>8} {:>8} {:>9} {:>7} {:>6}",
            "phase",
            "wall s",
            "CPU s",
            "% of core",
            "RSS MiB",
            "HWM MiB",
            "requests",
            "watches",
            "lists"
        );
        for phase in &self.phases {
            let memory = phase.memory();
            let each = each_rss(phase.each());
            println!(
                "{:<30} {:>8.1} {:>8.2} {:>9.1} {:>8.1} {:>8.1} {:>9} {:>7} {:>6}",
                phase.name,
                phase.wall(),
                phase.cpu(),
                100.0 * phase.cpu() / phase.wall().max(f64::EPSILON),
                mib(memory.rss_kib),
                mib(memory.peak_rss_kib),
                phase.requests.total(),
                phase.requests.watches,
                phase.requests.lists,
            );
            if !each.is_empty() {
                println!("{:<30}{each}", "");
            }
        }
        println!(
            "(creating: the bench posted the {} Rollouts in {:.1} s of that; an update's memory is \
             read {} after all Healthy)",
            args.rollouts,
            self.posting.as_secs_f64(),
            args.settle
        );
        if let Some(first) = self.updates().next() {
            println!();
            println!(
                "update 1: time from each Rollout's update to Healthy beyond its 5 s pause (s): \
                 p50 {:.2}, p99 {:.2}, max {:.2}",
                quantile(&first.overrun, 0.5).as_secs_f64(),
                quantile(&first.overrun, 0.99).as_secs_f64(),
                quantile(&first.overrun, 1.0).as_secs_f64(),
            );
            println!(
                "update 1: API requests per Rollout update (audit log), {:.2} in all, {:.2} writes:",
                first.requests.total() as f64 / f64::from(args.rollouts),
                first.requests.writes() as f64 / f64::from(args.rollouts),
            );
            for (kind, count) in &first.requests.by_kind {
                println!(
                    "  {:<48} {:>8.3}",
                    kind,
                    *count as f64 / f64::from(args.rollouts)
                );
            }
        }
        if self.cycles.len() > 1 {
            let (per_cycle, per_hour) = self.slopes();
            println!();
            println!(
                "{:>6} {:>8} {:>8} {:>8} {:>13} {:>12} {:>8} {:>14}",
                "cycle",
                "min",
                "RSS MiB",
                "HWM MiB",
                "trimmed MiB",
                "ReplicaSets",
                "retired",
                "live JSON MiB"
            );
            for (i, c) in self.cycles.iter().enumerate() {
                println!(
                    "{:>6} {:>8.1} {:>8.1} {:>8.1} {:>13} {:>12} {:>8} {:>14.1}",
                    i + 1,
                    c.at.as_secs_f64() / 60.0,
                    mib(c.memory.rss_kib),
                    mib(c.memory.peak_rss_kib),
                    c.trimmed
                        .map_or("-".into(), |m| format!("{:.1}", mib(m.rss_kib))),
                    c.replica_sets,
                    c.retired,
                    c.replica_set_json_bytes as f64 / (1024.0 * 1024.0),
                );
            }
            println!(
                "slope: {:+.2} MiB per cycle, {:+.1} MiB per hour over {:.0} min",
                per_cycle.unwrap_or(0.0),
                per_hour.unwrap_or(0.0),
                self.cycles
                    .last()
                    .map_or(0.0, |c| c.at.as_secs_f64() / 60.0)
            );
        }
    }

    fn to_json(&self) -> Value {
        let (per_cycle, per_hour) = self.slopes();
        json!({
            "controller": self.controller.name(),
            "version": self.version,
            "posting_s": self.posting.as_secs_f64(),
            "phases": self.phases.iter().map(|p| json!({
                "name": p.name,
                "wall_s": p.wall(),
                "cpu_s": p.cpu(),
                "rss_mib": mib(p.memory().rss_kib),
                "hwm_mib": mib(p.memory().peak_rss_kib),
                "rss_each_mib": p.each().iter().map(|m| mib(m.rss_kib)).collect::<Vec<_>>(),
                "requests": p.requests.by_kind,
                "watches": p.requests.watches,
                "lists": p.requests.lists,
                "overrun_p50_s": quantile(&p.overrun, 0.5).as_secs_f64(),
                "overrun_p99_s": quantile(&p.overrun, 0.99).as_secs_f64(),
            })).collect::<Vec<_>>(),
            "cycles": self.cycles.iter().map(|c| json!({
                "at_s": c.at.as_secs_f64(),
                "rss_mib": mib(c.memory.rss_kib),
                "hwm_mib": mib(c.memory.peak_rss_kib),
                "rss_each_mib": c.each.iter().map(|m| mib(m.rss_kib)).collect::<Vec<_>>(),
                "trimmed_rss_mib": c.trimmed.map(|m| mib(m.rss_kib)),
                "replica_sets": c.replica_sets,
                "retired_replica_sets": c.retired,
                "replica_set_json_bytes": c.replica_set_json_bytes,
            })).collect::<Vec<_>>(),
            "slope_mib_per_cycle": per_cycle,
            "slope_mib_per_hour": per_hour,
        })
    }
}

fn phase<'a>(result: &'a RunResult, prefix: &str) -> Option<&'a Phase> {
    result.phases.iter().find(|p| p.name.starts_with(prefix))
}

/// One table, a column per controller, in the shape of docs/SCALE.md.
fn print_side_by_side(args: &Args, results: &[RunResult]) {
    if results.is_empty() {
        return;
    }
    let n = f64::from(args.rollouts);
    println!();
    let header: Vec<String> = results
        .iter()
        .map(|r| format!("{} {}", r.controller.name(), r.version))
        .collect();
    println!(
        "| {} rollouts x {} replica(s) | {} |",
        args.rollouts,
        args.replicas,
        header.join(" | ")
    );
    println!("|---|{}", "---|".repeat(results.len()));
    let row = |label: &str, cell: &dyn Fn(&RunResult) -> String| {
        let cells: Vec<String> = results.iter().map(cell).collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    row("create -> all Healthy", &|r| {
        phase(r, "create").map_or("-".into(), |p| {
            format!("{:.0} s, {:.1} CPU-s", p.wall(), p.cpu())
        })
    });
    row("RSS / HWM after create", &|r| {
        phase(r, "create").map_or("-".into(), |p| {
            format!(
                "{:.0} / {:.0} MiB",
                mib(p.memory().rss_kib),
                mib(p.memory().peak_rss_kib)
            )
        })
    });
    row(&format!("idle {}", args.idle), &|r| {
        phase(r, "idle").map_or("-".into(), |p| {
            format!(
                "{:.2} CPU-s, RSS {:.0} MiB",
                p.cpu(),
                mib(p.memory().rss_kib)
            )
        })
    });
    row("mass image change -> all Healthy", &|r| {
        phase(r, "update 1").map_or("-".into(), |p| {
            format!("{:.0} s, {:.1} CPU-s", p.wall(), p.cpu())
        })
    });
    row("RSS / HWM after the update", &|r| {
        phase(r, "update 1").map_or("-".into(), |p| {
            format!(
                "{:.0} / {:.0} MiB",
                mib(p.memory().rss_kib),
                mib(p.memory().peak_rss_kib)
            )
        })
    });
    if args.controller_replicas > 1 {
        row("RSS of the largest process after the update", &|r| {
            phase(r, "update 1").map_or("-".into(), |p| {
                let largest = p.each().iter().map(|m| m.rss_kib).max().unwrap_or(0);
                format!("{:.0} MiB of {}", mib(largest), p.each().len())
            })
        });
    }
    row("update to Healthy beyond the pause, p50 / p99", &|r| {
        phase(r, "update 1").map_or("-".into(), |p| {
            format!(
                "{:.1} / {:.1} s",
                quantile(&p.overrun, 0.5).as_secs_f64(),
                quantile(&p.overrun, 0.99).as_secs_f64()
            )
        })
    });
    row("API requests per rollout update (writes)", &|r| {
        phase(r, "update 1").map_or("-".into(), |p| {
            format!(
                "{:.1} ({:.1})",
                p.requests.total() as f64 / n,
                p.requests.writes() as f64 / n
            )
        })
    });
    row("watch / list requests after start-up", &|r| {
        let (watches, lists) = r.phases.iter().skip(1).fold((0, 0), |(w, l), p| {
            (w + p.requests.watches, l + p.requests.lists)
        });
        format!("{watches} / {lists}")
    });
    if results.iter().any(|r| r.cycles.len() > 1) {
        row("RSS slope over the cycles", &|r| {
            let (per_cycle, per_hour) = r.slopes();
            match (per_cycle, per_hour) {
                (Some(c), Some(h)) => format!("{c:+.1} MiB/cycle, {h:+.0} MiB/h"),
                _ => "-".into(),
            }
        });
    }
    if results.iter().any(|r| r.updates().count() > 1) {
        row("last update -> all Healthy", &|r| {
            r.updates().last().map_or("-".into(), |p| {
                format!("{:.0} s, RSS {:.0} MiB", p.wall(), mib(p.memory().rss_kib))
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "system:serviceaccount:sluice-system:scale-bench-controller";

    fn line(user: &str, verb: &str, resource: &str, subresource: Option<&str>) -> String {
        json!({
            "stage": "ResponseComplete",
            "verb": verb,
            "user": {"username": user},
            "objectRef": {"resource": resource, "subresource": subresource},
            "responseStatus": {"code": 200},
        })
        .to_string()
    }

    #[test]
    fn a_sample_of_several_processes_sums_them_and_keeps_each() -> anyhow::Result<()> {
        let me = std::process::id();
        let sample = Sample::take(&[me, me])?;
        assert_eq!(sample.each.len(), 2);
        assert_eq!(
            sample.memory.rss_kib,
            sample.each[0].rss_kib + sample.each[1].rss_kib
        );
        assert!(each_rss(&sample.each).starts_with(" (each: "));
        assert_eq!(each_rss(&sample.each[..1]), "", "one process: no breakdown");
        // A process that is gone is an error, not a zero.
        assert!(Sample::take(&[me, u32::MAX]).is_err());
        Ok(())
    }

    #[test]
    fn the_rotated_backups_are_counted_with_the_live_log_and_removed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let live = dir.path().join("audit.log");
        let backup = dir.path().join("audit-2026-12-03T15-03-43.177.log");
        let unrelated = dir.path().join("kube-apiserver.log");
        std::fs::write(
            &backup,
            [
                line(USER, "patch", "rollouts", Some("status")),
                line(USER, "patch", "replicasets", None),
                line("system:kube-scheduler", "patch", "pods", None),
            ]
            .join("\n"),
        )?;
        std::fs::write(
            &live,
            line(USER, "patch", "rollouts", Some("status")) + "\n",
        )?;
        std::fs::write(&unrelated, line(USER, "patch", "rollouts", Some("status")))?;

        let mut reader = AuditReader::new(live.clone(), USER.into());
        let requests = reader.take()?;
        assert_eq!(requests.by_kind.get("patch rollouts/status"), Some(&2));
        assert_eq!(requests.by_kind.get("patch replicasets"), Some(&1));
        assert_eq!(requests.total(), 3);
        assert!(!backup.exists(), "a counted backup is removed");
        assert!(
            unrelated.exists(),
            "only the audit log's own backups are read"
        );
        assert_eq!(
            std::fs::metadata(&live)?.len(),
            0,
            "the live log is emptied"
        );

        // Read again: nothing is counted twice.
        assert_eq!(reader.take()?.total(), 0);
        Ok(())
    }
}
