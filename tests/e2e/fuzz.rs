//! A seeded fuzz of the controller: mutated examples (`sluice_tests::fuzz`, which draws on
//! `sluice_tests::mutate` too) are created for real, side by side in one namespace, under one
//! controller process. Each must end one of three ways, within a bound: refused by the
//! apiserver with a message that names a field; or stored and marked Degraded (InvalidSpec or
//! another cause) with a message, and an Event; or run: Healthy, or Paused where its steps say,
//! or still waiting with a message that says on what. A second revision (a new image) of each
//! stored rollout must be seen by the controller too. Never a status left empty, never a
//! stopped controller: after the batch, an unchanged example under the same controller still
//! becomes Healthy, `/readyz` answers 200, and the controller's log shows no panic.
//!
//! `SLUICE_FUZZ_SEED` picks another seed (the run prints the one it used).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use libtest_mimic::Trial;
use rollout_controller::crd::analysis::AnalysisTemplate;
use rollout_controller::crd::{Phase, Rollout};
use serde_json::{Value, json};
use sluice_tests::fuzz::{Case, cases, prepared, unchanged};
use sluice_tests::mutate::Example;
use tokio::io::AsyncWriteExt;

use crate::examples::{STRATEGIES, example};
use crate::restart::ControllerProcess;
use crate::support::{Env, TestNamespace, free_port, kubectl_reached_the_apiserver};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(fuzz::mutated_examples_are_rejected_degraded_or_run)]
}

const DEFAULT_SEED: u64 = 20_261_111;
/// Cases from the schema mutations, and from the controller's own.
const SCHEMA_CASES: usize = 20;
const SEMANTIC_CASES: usize = 30;
/// Pods one Rollout may ask for: fifty cases share a small cluster with the other trials.
const MAX_REPLICAS: f64 = 6.0;
const REPLICAS: i64 = 2;
/// kubectl processes at once.
const PARALLEL: usize = 4;
/// From its creation, a rollout's first revision must be settled within this; from the image
/// change, its second must be seen within [`SECOND`].
const FIRST: Duration = Duration::from_secs(30);
const SECOND: Duration = Duration::from_secs(25);
/// The whole batch, creation to the last verdict.
const CAP: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(500);
/// A rollout Progressing with the same message this long is waiting, and says on what.
const STEADY: Duration = Duration::from_secs(8);
/// Once every case has its verdict, the controller's API writes over this window must stay
/// under [`QUIET_WRITES_PER_SECOND`]: analyses measuring now and then write a little, a
/// controller fighting itself writes without end.
const QUIET: Duration = Duration::from_secs(5);
const QUIET_WRITES_PER_SECOND: f64 = 10.0;
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);
const IMAGE_V2: &str = "registry.example.com/fuzz:v2";

/// Where a revision ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Healthy,
    Paused,
    InvalidSpec,
    Degraded,
    Aborted,
    /// Still Progressing, saying what it waits for: the same message for [`STEADY`], or at
    /// its bound.
    Waiting,
}

/// What the status of one revision says, judged.
enum Judged {
    Settled(Seen, String),
    /// Progressing, with this message: waiting for something, or on its way.
    Progressing(String),
    /// Not settled; what would be wrong if it stayed so.
    Pending(String),
}

/// The message of an InvalidSpec, or of a refusal, says where: a field path of the object.
fn names_a_field(message: &str) -> bool {
    [
        "spec.",
        "metadata.",
        "spec:",
        "metadata:",
        ".spec",
        "unknown field",
    ]
    .iter()
    .any(|f| message.contains(f))
}

/// kubectl's words for the apiserver's refusals, not its own.
fn from_the_apiserver(said: &str) -> bool {
    said.contains("Error from server") || said.contains(" is invalid")
}

fn condition_true(status: &Value, type_: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

/// Judges `object`'s status for the spec of `generation`.
fn judge(object: &DynamicObject, generation: i64) -> Judged {
    let status = &object.data["status"];
    if status.is_null() {
        return Judged::Pending("status is null".into());
    }
    let Some(phase) = status["phase"].as_str().filter(|p| !p.is_empty()) else {
        return Judged::Pending("status has no phase".into());
    };
    let observed = status["observedGeneration"].as_i64();
    if observed != Some(generation) {
        return Judged::Pending(format!(
            "status is of generation {observed:?}, the spec of {generation}"
        ));
    }
    let message = status["message"].as_str().unwrap_or_default().to_owned();
    let said = !message.trim().is_empty();
    let seen = if phase == Phase::Healthy.as_str() {
        return Judged::Settled(Seen::Healthy, message);
    } else if phase == Phase::Paused.as_str() {
        Seen::Paused
    } else if phase == Phase::Aborted.as_str() {
        Seen::Aborted
    } else if phase == Phase::Degraded.as_str() {
        if condition_true(status, "InvalidSpec") {
            if !names_a_field(&message) {
                return Judged::Pending(format!(
                    "InvalidSpec whose message names no field: {message:?}"
                ));
            }
            Seen::InvalidSpec
        } else {
            Seen::Degraded
        }
    } else if phase == Phase::Progressing.as_str() {
        return if said {
            Judged::Progressing(message)
        } else {
            Judged::Pending("Progressing without a message".into())
        };
    } else {
        return Judged::Pending(format!("unknown phase {phase:?}"));
    };
    if said {
        Judged::Settled(seen, message)
    } else {
        Judged::Pending(format!("{phase} without a message"))
    }
}

/// Where one case is.
enum Stage {
    First {
        name: String,
        since: Instant,
    },
    Second {
        name: String,
        since: Instant,
        generation: i64,
        revision: Option<String>,
    },
    Done,
}

#[derive(Default)]
struct Record {
    refused: Option<String>,
    rollout: Option<String>,
    first: Option<(Seen, String)>,
    second: Option<(Seen, String)>,
    /// Why no second revision was shipped, or the apiserver's refusal of it.
    no_second: Option<String>,
    failure: Option<String>,
}

struct Created {
    names: Vec<String>,
    said: String,
}

async fn kubectl_create(
    kubectl: &Path,
    kubeconfig: &Path,
    ns: &str,
    documents: &[String],
) -> anyhow::Result<Created> {
    let mut child = tokio::process::Command::new(kubectl)
        .args(["create", "-o", "name", "-n", ns, "-f", "-"])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("kubectl's stdin")?;
    stdin.write_all(documents.join("---\n").as_bytes()).await?;
    drop(stdin);
    let output = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
        .await
        .context("kubectl create timed out")??;
    let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    kubectl_reached_the_apiserver(&said)?;
    Ok(Created {
        names: String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect(),
        said,
    })
}

/// The second revision: the first container's image changed, the rest as it is.
async fn ship_second(rollouts: &Api<DynamicObject>, object: &DynamicObject) -> Result<i64, String> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let mut containers = object.data["spec"]["template"]["spec"]["containers"].clone();
    match containers.pointer_mut("/0") {
        Some(first) if first.is_object() => first["image"] = json!(IMAGE_V2),
        _ => return Err("no container to change".into()),
    }
    let patch = json!({"spec": {"template": {"spec": {"containers": containers}}}});
    match rollouts
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(patched) => patched
            .metadata
            .generation
            .ok_or_else(|| "no generation".into()),
        Err(e) => Err(format!("the image change was refused: {e}")),
    }
}

async fn mutated_examples_are_rejected_degraded_or_run(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    let cluster = env.cluster().await?;
    let kubectl = cluster.binaries().path("kubectl");
    let kubeconfig = cluster.admin_kubeconfig().to_owned();
    let seed = match std::env::var("SLUICE_FUZZ_SEED") {
        Ok(text) => text.parse().context("SLUICE_FUZZ_SEED")?,
        Err(_) => DEFAULT_SEED,
    };
    eprintln!("fuzz: seed {seed} (SLUICE_FUZZ_SEED={seed} replays this run)");
    // Analyses measure against a loopback port nobody listens on: every query fails at once,
    // and nothing leaves the machine.
    let prometheus = format!("http://{}", free_port());
    let mut originals = Vec::new();
    for strategy in STRATEGIES {
        let text = std::fs::read_to_string(example(strategy))?;
        originals.push(prepared(
            &Example::parse(strategy, &text).map_err(anyhow::Error::msg)?,
            &prometheus,
            i64::MAX,
        ));
    }
    let examples: Vec<Example> = originals
        .iter()
        .map(|e| prepared(e, &prometheus, REPLICAS))
        .collect();
    let cases = cases(&examples, seed, SCHEMA_CASES, SEMANTIC_CASES, MAX_REPLICAS)
        .map_err(anyhow::Error::msg)?;
    ensure!(
        cases.len() >= (SCHEMA_CASES + SEMANTIC_CASES) * 9 / 10,
        "only {} cases",
        cases.len()
    );
    let good = originals
        .iter()
        .find(|e| e.name == "rolling")
        .context("no rolling example")?;
    let good = unchanged(good, "-good").map_err(anyhow::Error::msg)?;

    env.in_namespace("fuzz", |ns: TestNamespace| async move {
        let started = Instant::now();
        let log = std::env::temp_dir().join(format!("sluice-fuzz-{}.log", ns.name));
        // The log is searched for panics: only this run's.
        let _ = std::fs::remove_file(&log);
        let controller = ControllerProcess::start(&kubeconfig, &ns.name, &log, None)?;
        let batch = Batch {
            kubectl,
            kubeconfig,
            ns: &ns,
            controller: &controller,
            log: log.clone(),
            rollouts: Api::namespaced_with(
                ns.client.clone(),
                &ns.name,
                &ApiResource::erase::<Rollout>(&()),
            ),
        };
        let outcome = batch.run(&cases, &good).await;
        release_finalizers(&ns).await;
        controller.kill().await;
        eprintln!(
            "fuzz: {} cases in {:.1}s (seed {seed})",
            cases.len(),
            started.elapsed().as_secs_f64()
        );
        let failures = outcome?;
        ensure!(
            failures.is_empty(),
            "{} of {} fuzz cases went wrong (seed {seed}; replay with SLUICE_FUZZ_SEED={seed}; \
             controller log {}):\n{}",
            failures.len(),
            cases.len(),
            log.display(),
            failures.join("\n")
        );
        Ok(())
    })
    .await
}

/// One batch of cases in one namespace, under one controller.
struct Batch<'a> {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    ns: &'a TestNamespace,
    controller: &'a ControllerProcess,
    /// The controller's log, searched for panics.
    log: PathBuf,
    rollouts: Api<DynamicObject>,
}

impl Batch<'_> {
    /// Every case created, judged and reported; what went wrong, one line each.
    async fn run(&self, cases: &[Case], good: &[String]) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let (mut records, stages) = self.create(cases).await?;
        let created_in = started.elapsed();
        self.judge(&mut records, stages, started).await?;
        let judged_in = started.elapsed();

        let (quiet_rate, quiet) = self.quiet_writes().await?;
        self.warned(&mut records).await?;
        let good_started = Instant::now();
        let good = self.still_at_work(good).await?;
        let good_in = good_started.elapsed();

        eprintln!(
            "fuzz: {} cases created in {:.1}s, judged in {:.1}s; then {quiet_rate:.1} API writes \
             a second; the unchanged example Healthy {:.1}s after: {}",
            cases.len(),
            created_in.as_secs_f64(),
            judged_in.as_secs_f64(),
            good_in.as_secs_f64(),
            counts(&records).join(", ")
        );
        if std::env::var_os("SLUICE_FUZZ_VERBOSE").is_some() {
            for (case, record) in cases.iter().zip(&records) {
                eprintln!(
                    "fuzz: {} ({:?}): refused {:?}; first {:?}; second {:?} {:?}",
                    case.label,
                    record.rollout,
                    record.refused,
                    record.first,
                    record.second,
                    record.no_second
                );
            }
        }

        let mut failures: Vec<String> = cases
            .iter()
            .zip(&records)
            .filter_map(|(case, record)| {
                let why = record.failure.as_ref()?;
                let name = record.rollout.as_deref().unwrap_or("-");
                Some(format!("{} [{name}]: {why}", case.label))
            })
            .collect();
        if quiet_rate > QUIET_WRITES_PER_SECOND {
            failures.push(format!(
                "with every case judged, the controller still wrote {quiet_rate:.1} times a \
                 second over {QUIET:?} (by kind: {quiet:?}): something is fought over"
            ));
        }
        failures.extend(good);
        Ok(failures)
    }

    /// Each case's file through `kubectl create`, a few at once; where each case starts.
    async fn create(&self, cases: &[Case]) -> anyhow::Result<(Vec<Record>, Vec<Stage>)> {
        // Owned, so that the stream's futures borrow nothing from this one.
        let jobs: Vec<(usize, PathBuf, PathBuf, String, Vec<String>)> = cases
            .iter()
            .enumerate()
            .map(|(i, case)| {
                let (kubectl, kubeconfig) = (self.kubectl.clone(), self.kubeconfig.clone());
                (
                    i,
                    kubectl,
                    kubeconfig,
                    self.ns.name.clone(),
                    case.documents.clone(),
                )
            })
            .collect();
        let created: Vec<(usize, anyhow::Result<Created>, Instant)> = futures::stream::iter(jobs)
            .map(|(i, kubectl, kubeconfig, ns, documents)| async move {
                let created = kubectl_create(&kubectl, &kubeconfig, &ns, &documents).await;
                (i, created, Instant::now())
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let mut records: Vec<Record> = (0..cases.len()).map(|_| Record::default()).collect();
        let mut stages: Vec<Stage> = (0..cases.len()).map(|_| Stage::Done).collect();
        for (i, created, at) in created {
            let created = created.with_context(|| cases[i].label.clone())?;
            let record = &mut records[i];
            if !created.said.is_empty() {
                record.refused = Some(created.said.clone());
            }
            let rollout = created
                .names
                .iter()
                .find_map(|n| n.strip_prefix("rollout.sluice.dev/"))
                .map(str::to_owned);
            if let Some(name) = rollout {
                record.rollout = Some(name.clone());
                stages[i] = Stage::First { name, since: at };
            } else if created.said.is_empty() {
                record.failure = Some(format!(
                    "no Rollout created and nothing said (created {:?})",
                    created.names
                ));
            } else if from_the_apiserver(&created.said) && !names_a_field(&created.said) {
                // kubectl refuses some files itself (a namespace that is not the one asked
                // for, metadata it cannot read) in words that are not Sluice's to choose; the
                // apiserver's refusal must say where.
                record.failure = Some(format!("refused without naming a field: {}", created.said));
            }
        }
        Ok((records, stages))
    }

    /// Polls every stored rollout until each revision has its verdict, or its bound passed.
    async fn judge(
        &self,
        records: &mut [Record],
        mut stages: Vec<Stage>,
        started: Instant,
    ) -> anyhow::Result<()> {
        // Per case: the message it has been waiting with, and since when.
        let mut waiting: BTreeMap<usize, (String, Instant)> = BTreeMap::new();
        while stages.iter().any(|s| !matches!(s, Stage::Done)) {
            let listed: BTreeMap<String, DynamicObject> = self
                .rollouts
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter_map(|o| Some((o.metadata.name.clone()?, o)))
                .collect();
            let over_cap = started.elapsed() > CAP;
            for (i, stage) in stages.iter_mut().enumerate() {
                let (name, since, bound, generation, revision) = match stage {
                    Stage::First { name, since } => (name.clone(), *since, FIRST, None, None),
                    Stage::Second {
                        name,
                        since,
                        generation,
                        revision,
                    } => (
                        name.clone(),
                        *since,
                        SECOND,
                        Some(*generation),
                        revision.clone(),
                    ),
                    Stage::Done => continue,
                };
                let record = &mut records[i];
                let Some(object) = listed.get(&name) else {
                    record.failure = Some(format!("rollout {name} is gone"));
                    *stage = Stage::Done;
                    continue;
                };
                let wanted = generation.or(object.metadata.generation).unwrap_or(1);
                let mut judged = judge(object, wanted);
                if let Judged::Settled(seen, _) = &judged
                    && generation.is_some()
                {
                    // The second revision is seen once the status names it (an InvalidSpec
                    // may name no revision at all).
                    let updated = object.data["status"]["updatedRevision"].as_str();
                    if *seen != Seen::InvalidSpec
                        && updated.is_some()
                        && updated == revision.as_deref()
                    {
                        judged = Judged::Pending(format!(
                            "{seen:?}, but still of the first revision {updated:?}"
                        ));
                    }
                }
                let timed_out = since.elapsed() > bound || over_cap;
                let steady = match &judged {
                    Judged::Progressing(message) => {
                        let (seen, from) = waiting
                            .entry(i)
                            .or_insert_with(|| (message.clone(), Instant::now()));
                        if seen != message {
                            *seen = message.clone();
                            *from = Instant::now();
                        }
                        from.elapsed() > STEADY
                    }
                    _ => {
                        waiting.remove(&i);
                        false
                    }
                };
                let verdict = match judged {
                    Judged::Settled(seen, message) => (seen, message),
                    Judged::Progressing(message) if timed_out || steady => (Seen::Waiting, message),
                    Judged::Progressing(_) => continue,
                    Judged::Pending(why) if timed_out => {
                        let which = if generation.is_some() {
                            "second"
                        } else {
                            "first"
                        };
                        record.failure = Some(format!(
                            "{which} revision after {:.0}s: {why}; status: {}",
                            since.elapsed().as_secs_f64(),
                            object.data["status"]
                        ));
                        *stage = Stage::Done;
                        continue;
                    }
                    Judged::Pending(_) => continue,
                };
                waiting.remove(&i);
                if generation.is_some() {
                    record.second = Some(verdict);
                    *stage = Stage::Done;
                    continue;
                }
                record.first = Some(verdict);
                let revision = object.data["status"]["updatedRevision"]
                    .as_str()
                    .map(str::to_owned);
                *stage = match ship_second(&self.rollouts, object).await {
                    Ok(generation) => Stage::Second {
                        name,
                        since: Instant::now(),
                        generation,
                        revision,
                    },
                    Err(why) => {
                        record.no_second = Some(why);
                        Stage::Done
                    }
                };
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// The controller's API writes a second over [`QUIET`], and by kind.
    async fn quiet_writes(&self) -> anyhow::Result<(f64, BTreeMap<String, f64>)> {
        let before = api_writes(self.controller).await?;
        tokio::time::sleep(QUIET).await;
        let after = api_writes(self.controller).await?;
        let by_kind: BTreeMap<String, f64> = after
            .into_iter()
            .map(|(kind, n)| {
                let was = before.get(&kind).copied().unwrap_or(0.0);
                (kind, n - was)
            })
            .filter(|(_, n)| *n > 0.0)
            .collect();
        let rate = by_kind.values().fold(0.0, |sum, n| sum + n) / QUIET.as_secs_f64();
        Ok((rate, by_kind))
    }

    /// Every stored rollout marked Degraded or Aborted says so with a Warning Event too.
    async fn warned(&self, records: &mut [Record]) -> anyhow::Result<()> {
        let events: Api<CoreEvent> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        let warned: BTreeSet<String> = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.involved_object.name)
            .collect();
        for record in records {
            let degraded = [&record.first, &record.second]
                .into_iter()
                .flatten()
                .any(|(s, _)| matches!(s, Seen::InvalidSpec | Seen::Degraded | Seen::Aborted));
            if let Some(name) = &record.rollout
                && degraded
                && record.failure.is_none()
                && !warned.contains(name)
            {
                record.failure = Some(format!(
                    "{name} is marked Degraded or Aborted without a Warning Event"
                ));
            }
        }
        Ok(())
    }

    /// The controller is still at work after the batch: an unchanged example becomes Healthy
    /// under it, `/readyz` answers 200, and its log shows no panic. What is wrong, if anything.
    async fn still_at_work(&self, good: &[String]) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let made = kubectl_create(&self.kubectl, &self.kubeconfig, &self.ns.name, good).await?;
        ensure!(
            made.said.is_empty(),
            "the unchanged rolling example was refused: {}",
            made.said
        );
        let name = made
            .names
            .iter()
            .find_map(|n| n.strip_prefix("rollout.sluice.dev/"))
            .context("the unchanged example made no Rollout")?;
        let mut failures = Vec::new();
        loop {
            let object = self.rollouts.get(name).await?;
            if object.data["status"]["phase"] == Phase::Healthy.as_str() {
                break;
            }
            if started.elapsed() > FIRST {
                failures.push(format!(
                    "the unchanged rolling example {name} did not become Healthy within \
                     {FIRST:?} after the batch: status {}",
                    object.data["status"]
                ));
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let ready = reqwest::get(format!("http://{}/readyz", self.controller.health))
            .await
            .map(|r| r.status().as_u16());
        if ready.as_ref().ok() != Some(&200) {
            failures.push(format!("/readyz after the batch: {ready:?}"));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
        if !panics.is_empty() {
            failures.push(format!("the controller panicked: {}", panics.join("\n")));
        }
        Ok(failures)
    }
}

/// How many cases ended each way, for the run's summary line.
fn counts(records: &[Record]) -> Vec<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for record in records {
        let first = match (&record.rollout, &record.first) {
            (None, _) if record.refused.as_deref().is_some_and(from_the_apiserver) => {
                "rejected".to_owned()
            }
            (None, _) => "refused by kubectl".to_owned(),
            (Some(_), Some((seen, _))) => format!("{seen:?}"),
            (Some(_), None) => "silent".to_owned(),
        };
        *counts.entry(format!("first: {first}")).or_default() += 1;
        if record.rollout.is_some() && record.refused.is_some() {
            *counts
                .entry("stored beside a refused document".into())
                .or_default() += 1;
        }
        let second = match (&record.second, &record.no_second) {
            (Some((seen, _)), _) => Some(format!("{seen:?}")),
            (None, Some(why)) if why.starts_with("the image change was refused") => {
                Some("refused".to_owned())
            }
            (None, Some(_)) => Some("not shipped".to_owned()),
            (None, None) if record.first.is_some() => Some("silent".to_owned()),
            _ => None,
        };
        if let Some(second) = second {
            *counts.entry(format!("second: {second}")).or_default() += 1;
        }
    }
    counts.iter().map(|(k, v)| format!("{k} {v}")).collect()
}

/// `sluice_api_writes_total` of the controller, by kind.
async fn api_writes(controller: &ControllerProcess) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = reqwest::get(format!("http://{}/metrics", controller.health))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("sluice_api_writes_total{kind=\""))
        .filter_map(|l| {
            let (kind, rest) = l.split_once('"')?;
            Some((kind.to_owned(), rest.rsplit(' ').next()?.parse().ok()?))
        })
        .collect())
}

/// Finalizers a case wrote would hold the namespace in Terminating for the rest of the run.
async fn release_finalizers(ns: &TestNamespace) {
    let patch = json!({"metadata": {"finalizers": null}});
    for resource in [
        ApiResource::erase::<Rollout>(&()),
        ApiResource::erase::<AnalysisTemplate>(&()),
    ] {
        let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &resource);
        let Ok(list) = api.list(&ListParams::default()).await else {
            continue;
        };
        for object in list.items {
            if object
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
                && let Some(name) = &object.metadata.name
                && let Err(e) = api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            {
                eprintln!("fuzz: could not release the finalizers of {name}: {e}");
            }
        }
    }
}
