//! `kubectl sluice lint` agrees with the apiserver. A few hundred seeded variants of the
//! examples, each with one Sluice object changed (`sluice_tests::mutate`), go to the real
//! apiserver as kubectl sends them (a server-side dry-run create) and through the linter; the
//! verdicts must be the same. Lint may be stricter only with findings it marks as the
//! controller's (`Level::Controller`: the rollout would be stored and marked InvalidSpec), and
//! a sample of those is created for real under a running controller, which must then mark each
//! rollout Degraded at the field lint named.
//!
//! `SLUICE_LINT_SEED` picks another seed (the run prints the one it used).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use libtest_mimic::Trial;
use rollout_controller::crd::{Phase, Rollout};
use rollout_controller::lint::{Level, Severity, lint};
use serde_json::Value;
use sluice_tests::mutate::{Example, Variant, variants};

use crate::examples::{STRATEGIES, example};
use crate::support::{
    Env, RunningController, TestNamespace, eventually, kubectl_reached_the_apiserver,
};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        lint_agreement::lint_and_the_apiserver_agree_on_mutated_examples
    )]
}

const DEFAULT_SEED: u64 = 20_261_101;
const VARIANTS: usize = 320;
/// kubectl processes at once: the control plane is shared with the trials running beside.
const PARALLEL: usize = 6;
/// Of the variants lint finds only the controller's problems in, how many are run for real.
const CONTROLLER_SAMPLE: usize = 12;
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

/// What the apiserver said of one variant.
struct Answer {
    accepted: bool,
    said: String,
}

/// What lint said of the variant's changed document.
struct Verdict {
    admission: Vec<String>,
    controller: Vec<(String, String)>,
}

async fn dry_run_create(
    kubectl: &Path,
    kubeconfig: &Path,
    namespace: &str,
    file: &Path,
) -> anyhow::Result<Answer> {
    let run = tokio::process::Command::new(kubectl)
        .args([
            "create",
            "--dry-run=server",
            "-o",
            "name",
            "-n",
            namespace,
            "-f",
        ])
        .arg(file)
        .env("KUBECONFIG", kubeconfig)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(KUBECTL_TIMEOUT, run)
        .await
        .context("kubectl create --dry-run=server timed out")??;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    kubectl_reached_the_apiserver(&said)?;
    Ok(Answer {
        accepted: output.status.success(),
        said: said.trim().to_owned(),
    })
}

fn lint_verdict(variant: &Variant) -> Result<Verdict, String> {
    let reports = lint(&variant.file).map_err(|e| format!("lint could not read it: {e}"))?;
    let report = reports
        .iter()
        .find(|r| r.document == Some(variant.index))
        .ok_or("lint reported nothing on the changed document")?;
    let errors = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error);
    Ok(Verdict {
        admission: errors
            .clone()
            .filter(|f| f.level == Level::Admission)
            .map(|f| f.to_string())
            .collect(),
        controller: errors
            .filter(|f| f.level == Level::Controller)
            .map(|f| (f.field.clone(), f.to_string()))
            .collect(),
    })
}

async fn lint_and_the_apiserver_agree_on_mutated_examples(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    let cluster = env.cluster().await?;
    let kubectl = cluster.binaries().path("kubectl");
    let kubeconfig = cluster.admin_kubeconfig().to_owned();
    let seed = match std::env::var("SLUICE_LINT_SEED") {
        Ok(text) => text.parse().context("SLUICE_LINT_SEED")?,
        Err(_) => DEFAULT_SEED,
    };
    let mut examples = Vec::new();
    for strategy in STRATEGIES {
        let text = std::fs::read_to_string(example(strategy))?;
        examples.push(Example::parse(strategy, &text).map_err(anyhow::Error::msg)?);
    }
    let variants = variants(&examples, seed, VARIANTS).map_err(anyhow::Error::msg)?;
    ensure!(
        variants.len() == VARIANTS,
        "only {} variants",
        variants.len()
    );

    env.in_namespace("lint-agree", |ns: TestNamespace| async move {
        let started = Instant::now();
        let dir = tempfile::tempdir()?;
        let mut files = Vec::new();
        for (i, variant) in variants.iter().enumerate() {
            let path = dir.path().join(format!("variant-{i}.yaml"));
            std::fs::write(&path, &variant.document)?;
            files.push(path);
        }
        let asked: Vec<(usize, anyhow::Result<Answer>)> =
            futures::stream::iter(files.clone().into_iter().enumerate())
                .map(|(i, file)| {
                    let (kubectl, kubeconfig, ns) =
                        (kubectl.clone(), kubeconfig.clone(), ns.name.clone());
                    async move { (i, dry_run_create(&kubectl, &kubeconfig, &ns, &file).await) }
                })
                .buffer_unordered(PARALLEL)
                .collect()
                .await;
        let asked_in = started.elapsed();
        let mut answers: BTreeMap<usize, Answer> = BTreeMap::new();
        for (i, answer) in asked {
            answers.insert(i, answer?);
        }

        let (mut rejected, mut accepted, mut stricter) = (0, 0, Vec::new());
        let mut disagreements = Vec::new();
        for (i, variant) in variants.iter().enumerate() {
            let answer = &answers[&i];
            let verdict = match lint_verdict(variant) {
                Ok(verdict) => verdict,
                Err(why) => {
                    disagreements.push(format!("{}: {why}; the apiserver: {}", variant.label, answer.said));
                    continue;
                }
            };
            match (answer.accepted, verdict.admission.is_empty()) {
                (false, false) => rejected += 1,
                (true, true) => {
                    accepted += 1;
                    if !verdict.controller.is_empty() {
                        stricter.push((i, verdict.controller));
                    }
                }
                (false, true) => disagreements.push(format!(
                    "{}: the apiserver refused it, lint found nothing it would refuse (controller findings: {:?})\n  the apiserver: {}",
                    variant.label, verdict.controller, answer.said
                )),
                (true, false) => disagreements.push(format!(
                    "{}: the apiserver accepted it ({}), lint says it would not: {:?}",
                    variant.label, answer.said, verdict.admission
                )),
            }
        }
        eprintln!(
            "lint agreement (seed {seed}): {} variants in {:.1}s: {rejected} refused by both, \
             {accepted} accepted by both ({} of them with findings lint marks as the \
             controller's InvalidSpec), {} disagreements",
            variants.len(),
            asked_in.as_secs_f64(),
            stricter.len(),
            disagreements.len()
        );
        ensure!(
            disagreements.is_empty(),
            "lint and the apiserver disagree on {} of {} variants (seed {seed}):\n{}",
            disagreements.len(),
            variants.len(),
            disagreements.join("\n")
        );
        ensure!(
            rejected > variants.len() / 4 && accepted > variants.len() / 10,
            "the variants hardly test anything: {rejected} refused, {accepted} accepted"
        );

        // Where lint is stricter, the controller must be as strict: each sampled rollout,
        // created for real beside the example's other objects, is Degraded at lint's field.
        let sample: Vec<&(usize, Vec<(String, String)>)> = stricter
            .iter()
            .filter(|(i, _)| variants[*i].kind == "Rollout")
            .take(CONTROLLER_SAMPLE)
            .collect();
        let _controller = RunningController::start(ns.client.clone(), &ns.name);
        create_supporting_objects(&kubectl, &kubeconfig, &ns.name, &examples, dir.path()).await?;
        let mut expected = Vec::new();
        for (i, findings) in &sample {
            let name = format!("invalid-{i}");
            let mut object: Value = serde_norway::from_str(&variants[*i].document)
                .with_context(|| format!("variant {i}"))?;
            object["metadata"]["name"] = Value::String(name.clone());
            let path = dir.path().join(format!("invalid-{i}.yaml"));
            std::fs::write(&path, serde_norway::to_string(&object)?)?;
            let created = tokio::process::Command::new(&kubectl)
                .args(["create", "-n", &ns.name, "-f"])
                .arg(&path)
                .env("KUBECONFIG", &kubeconfig)
                .output()
                .await?;
            ensure!(
                created.status.success(),
                "{}: accepted in a dry run, refused for real: {}",
                variants[*i].label,
                String::from_utf8_lossy(&created.stderr)
            );
            let field = findings.first().map(|(f, _)| f.clone()).unwrap_or_default();
            expected.push((name, field, variants[*i].label.clone()));
        }
        let raw: Api<DynamicObject> = Api::namespaced_with(
            ns.client.clone(),
            &ns.name,
            &kube::discovery::ApiResource::erase::<Rollout>(&()),
        );
        for (name, field, label) in &expected {
            let what = format!("{label}: the controller marks {name} Degraded at {field}");
            eventually(&what, || async {
                // Read without decoding: the controller must say why even of a rollout it
                // cannot decode.
                let object = raw.get(name).await?;
                let status = &object.data["status"];
                let degraded = status["phase"] == Phase::Degraded.as_str();
                let message = status["message"].as_str().unwrap_or_default();
                Ok((degraded && message.contains(field.as_str())).then_some(()))
            })
            .await?;
        }
        eprintln!(
            "lint agreement: {} rollouts lint marks InvalidSpec created for real: the controller \
             marked each Degraded at the same field",
            expected.len()
        );
        Ok(())
    })
    .await
}

/// Every example's Services, Ingresses, HTTPRoutes and AnalysisTemplates, unchanged, so that
/// the cluster shows a rollout what lint assumes of it.
async fn create_supporting_objects(
    kubectl: &Path,
    kubeconfig: &Path,
    namespace: &str,
    examples: &[Example],
    dir: &Path,
) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for example in examples {
        for doc in &example.documents {
            if doc["kind"] == "Rollout" {
                continue;
            }
            let key = format!("{}/{}", doc["kind"], doc["metadata"]["name"]);
            if !seen.insert(key.clone()) {
                continue;
            }
            let path: PathBuf = dir.join(format!("support-{}.yaml", seen.len()));
            std::fs::write(&path, serde_norway::to_string(doc)?)?;
            let created = tokio::process::Command::new(kubectl)
                .args(["create", "-n", namespace, "-f"])
                .arg(&path)
                .env("KUBECONFIG", kubeconfig)
                .output()
                .await?;
            ensure!(
                created.status.success(),
                "creating {key}: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
    }
    Ok(())
}
