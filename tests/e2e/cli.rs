//! kubectl-sluice and curl against the real control plane, run as users and pipelines run them:
//! processes with a kubeconfig or a ServiceAccount token. One canary is driven to completion
//! from the CLI (`status` exits 0 for Healthy and 3 for an abort; an action that does not apply
//! now exits 5; `get -w` shows each change; `undo` goes back a revision); another from curl
//! against the REST API (`wait` answers when Healthy and 409 once aborted, `events` streams,
//! `undo` by revision number), with `kubectl sluice status` as the pipeline's gate.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use libtest_mimic::Trial;
use rollout_controller::crd::{Phase, RETIRED_LABEL, REVISION_ANNOTATION};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::rollouts::{create_rollout, create_service, rollout_manifest, status_until};
use crate::support::eventually;
use crate::support::{Env, RunningController, TestNamespace};
use sluice_tests::tokens::service_account_token;

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(cli::a_canary_driven_to_completion_from_the_cli),
        trial!(cli::a_pipeline_drives_a_canary_with_curl_and_gates_on_kubectl_sluice_status),
        trial!(cli::lint_checks_files_offline),
        trial!(
            cli::restart_replaces_every_stable_pod_within_max_unavailable_without_a_new_revision
        ),
    ]
}

/// A binary `cargo test --workspace` built beside this test binary.
pub(crate) fn built_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("no target directory")?;
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "{} not built (cargo build --workspace)",
        path.display()
    );
    Ok(path)
}

pub(crate) async fn sluice(env: &Env, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
    let kubeconfig = env.cluster().await?.admin_kubeconfig().to_owned();
    let output = tokio::process::Command::new(built_binary("kubectl-sluice")?)
        .arg("-n")
        .arg(ns)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await?;
    Ok(output)
}

pub(crate) fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn rollout_view(env: &Env, ns: &str) -> anyhow::Result<Value> {
    let get = sluice(env, ns, &["get", "rollout", "web", "-o", "json"]).await?;
    ensure!(code(&get) == 0, "get: {get:?}");
    Ok(serde_json::from_slice(&get.stdout)?)
}

/// A column of `kubectl get rollouts` for `name`: the apiserver's Table, which applies the
/// CRD's additionalPrinterColumns as kubectl asks it to.
async fn printed_column(
    client: &kube::Client,
    ns: &str,
    name: &str,
    column: &str,
) -> anyhow::Result<Value> {
    let request = http::Request::get(format!(
        "/apis/sluice.dev/v1alpha1/namespaces/{ns}/rollouts/{name}"
    ))
    .header(
        http::header::ACCEPT,
        "application/json;as=Table;v=v1;g=meta.k8s.io",
    )
    .body(Vec::new())?;
    let table: Value = serde_json::from_str(&client.request_text(request).await?)?;
    let index = table["columnDefinitions"]
        .as_array()
        .and_then(|c| c.iter().position(|d| d["name"] == column))
        .with_context(|| format!("no column {column}: {table}"))?;
    Ok(table["rows"][0]["cells"][index].clone())
}

pub(crate) const FOUR_STEPS: &str = r#"{"canary": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]}}"#;

async fn a_canary_driven_to_completion_from_the_cli(env: &'static Env) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("cli", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        create_service(&client, &ns, "web", "web").await?;
        let strategy: Value = serde_json::from_str(FOUR_STEPS)?;
        create_rollout(&client, &ns, rollout_manifest("web", 4, "web:1", strategy)).await?;
        let status = sluice(env, &ns, &["status", "web", "--timeout", "60s"]).await?;
        ensure!(code(&status) == 0, "v1 status: {status:?}");

        // A live view while the release moves: each change printed, the current step marked.
        let mut watch = tokio::process::Command::new(built_binary("kubectl-sluice")?)
            .args(["-n", &ns, "get", "rollout", "web", "-w"])
            .env("KUBECONFIG", env.cluster().await?.admin_kubeconfig())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let set = sluice(env, &ns, &["set", "image", "web", "app=web:2"]).await?;
        ensure!(code(&set) == 0, "set image: {set:?}");
        for step in [1, 3] {
            status_until(
                &client,
                &ns,
                "web",
                &format!("the pause at step {step}"),
                |s| s.current_step_index == Some(step) && s.phase == Phase::Paused,
            )
            .await?;
            let view = rollout_view(env, &ns).await?;
            ensure!(
                view["currentStep"] == step && view["phase"] == "Paused",
                "{view}"
            );
            // `get -w` looks once a second: give it time to show the pause.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            // Argo Rollouts' spelling of a single-step promote, at the second pause.
            let promote = if step == 1 {
                sluice(env, &ns, &["promote", "web"]).await?
            } else {
                sluice(env, &ns, &["promote", "web", "--skip-current-step"]).await?
            };
            ensure!(code(&promote) == 0, "promote at {step}: {promote:?}");
        }
        let status = sluice(env, &ns, &["status", "web", "--watch", "--timeout", "60s"]).await?;
        ensure!(code(&status) == 0, "v2 status: {status:?}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        watch.start_kill()?;
        let mut watched = String::new();
        if let Some(mut out) = watch.stdout.take() {
            out.read_to_string(&mut watched).await?;
        }
        for shown in [
            "▶  1  pause (until promoted)",
            "▶  3  pause (until promoted)",
            "Healthy",
        ] {
            ensure!(
                watched.contains(shown),
                "`get -w` never showed {shown:?}:\n{watched}"
            );
        }
        ensure!(
            !watched.contains('\x1b'),
            "colour off a terminal:\n{watched}"
        );

        let view = rollout_view(env, &ns).await?;
        // Finished: all traffic on the new stable, shown as 100, not the canary's 0.
        ensure!(
            view["weight"] == 100,
            "weight of a finished rollout: {view}"
        );
        let list = sluice(env, &ns, &["list", "rollouts"]).await?;
        let row = stdout(&list)
            .lines()
            .find(|l| l.starts_with("web "))
            .map(str::to_owned)
            .unwrap_or_default();
        ensure!(
            code(&list) == 0 && row.split_whitespace().nth(4) == Some("100"),
            "`list rollouts` must show weight 100: {list:?}"
        );
        let get = sluice(env, &ns, &["get", "rollouts"]).await?;
        ensure!(
            code(&get) == 0 && stdout(&get).lines().any(|l| l.starts_with("web ")),
            "`get rollouts` lists: {get:?}"
        );
        // Plain `kubectl get rollouts` prints the CRD's columns: the same 100.
        let printed = printed_column(&client, &ns, "web", "Weight").await?;
        ensure!(
            printed == 100,
            "`kubectl get rollouts` Weight of a finished rollout: {printed}"
        );
        let revisions = view["revisions"].as_array().context("revisions")?;
        ensure!(
            revisions.len() == 2
                && revisions[0]["revision"] == 2
                && revisions[0]["role"] == "stable"
                && revisions[0]["ready"] == 4
                && revisions[0]["images"] == json!(["app=web:2"]),
            "{view}"
        );
        ensure!(
            view["steps"][1]["description"] == "pause (until promoted)",
            "{view}"
        );
        let promote = sluice(env, &ns, &["promote", "web"]).await?;
        ensure!(
            code(&promote) == 5,
            "promoting a Healthy rollout must exit 5: {promote:?}"
        );

        // v3, aborted from the CLI: `status` exits 3.
        let set = sluice(env, &ns, &["set", "image", "web", "app=web:3"]).await?;
        ensure!(code(&set) == 0, "set image: {set:?}");
        status_until(&client, &ns, "web", "v3 at its first pause", |s| {
            s.current_step_index == Some(1) && s.phase == Phase::Paused
        })
        .await?;
        let abort = sluice(env, &ns, &["abort", "web"]).await?;
        ensure!(code(&abort) == 0, "abort: {abort:?}");
        let status = sluice(env, &ns, &["status", "web", "--timeout", "60s"]).await?;
        ensure!(
            code(&status) == 3,
            "an aborted rollout's status must exit 3: {status:?}"
        );
        let list = sluice(env, &ns, &["list"]).await?;
        let text = stdout(&list);
        ensure!(
            text.contains("web") && text.contains("Aborted") && !text.contains('\x1b'),
            "{text}"
        );
        // Argo Rollouts' `retry rollout NAME`: v3 starts again and pauses at step 1, where a
        // look without watching says it is not done (exit 4); then it is aborted again.
        let retry = sluice(env, &ns, &["retry", "rollout", "web"]).await?;
        ensure!(code(&retry) == 0, "retry rollout web: {retry:?}");
        status_until(&client, &ns, "web", "v3 retried, at its first pause", |s| {
            !s.abort && s.current_step_index == Some(1) && s.phase == Phase::Paused
        })
        .await?;
        let look = sluice(env, &ns, &["status", "web", "--watch=false"]).await?;
        ensure!(
            code(&look) == 4,
            "status --watch=false of a paused rollout: {look:?}"
        );
        let abort = sluice(env, &ns, &["abort", "web"]).await?;
        ensure!(code(&abort) == 0, "abort after the retry: {abort:?}");
        status_until(&client, &ns, "web", "v3 aborted again", |s| {
            s.phase == Phase::Aborted
        })
        .await?;

        // Undo: the template goes back to the stable revision (2), which finishes at once.
        let undo = sluice(env, &ns, &["undo", "web"]).await?;
        ensure!(code(&undo) == 0, "undo: {undo:?}");
        let status = sluice(env, &ns, &["status", "web", "--timeout", "60s"]).await?;
        ensure!(code(&status) == 0, "after undo: {status:?}");
        let view = rollout_view(env, &ns).await?;
        let stable = &view["revisions"][0];
        ensure!(
            stable["role"] == "stable" && stable["images"] == json!(["app=web:2"]),
            "{view}"
        );
        let undo = sluice(env, &ns, &["undo", "web", "--to-revision", "42"]).await?;
        ensure!(
            code(&undo) == 5 && String::from_utf8_lossy(&undo.stderr).contains("revision 42"),
            "{undo:?}"
        );
        Ok(())
    })
    .await
}

/// `curl` with a bearer token: the HTTP status and the body as JSON (or as text in "text").
async fn curl(
    token: &str,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut command = tokio::process::Command::new("curl");
    command
        .args([
            "-sS",
            "--max-time",
            "90",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    let output = command.arg(url).output().await.context("running curl")?;
    ensure!(output.status.success(), "curl {method} {url}: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, status) = text.rsplit_once('\n').context("no status from curl")?;
    let value = serde_json::from_str(body).unwrap_or_else(|_| json!({"text": body}));
    Ok((status.trim().parse()?, value))
}

/// `GET {api}/wait?phase=...` with curl, as a pipeline waits.
async fn wait_for(token: &str, api: &str, phase: &str) -> anyhow::Result<(u16, Value)> {
    curl(
        token,
        "GET",
        &format!("{api}/wait?phase={phase}&timeout=60s"),
        None,
    )
    .await
}

async fn a_pipeline_drives_a_canary_with_curl_and_gates_on_kubectl_sluice_status(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    env.in_namespace("pipeline", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let controller = RunningController::with_api(client.clone(), &ns);
        let token =
            service_account_token(&client, &ns, "deployer", &["get", "list", "update"]).await?;
        create_service(&client, &ns, "web", "web").await?;
        let strategy: Value = serde_json::from_str(FOUR_STEPS)?;
        create_rollout(&client, &ns, rollout_manifest("web", 4, "web:1", strategy)).await?;
        let api = format!(
            "{}/api/v1/namespaces/{ns}/rollouts/web",
            controller.api_url()?
        );
        let (status, body) = wait_for(&token, &api, "Healthy").await?;
        ensure!(
            status == 200 && body["phase"] == "Healthy",
            "v1: {status} {body}"
        );

        let set = sluice(env, &ns, &["set", "image", "web", "app=web:2"]).await?;
        ensure!(code(&set) == 0, "set image: {set:?}");
        for step in [1, 3] {
            let (status, body) = wait_for(&token, &api, "Paused").await?;
            ensure!(
                status == 200 && body["currentStep"] == step,
                "pause {step}: {status} {body}"
            );
            let promote = format!(r#"{{"fromStep": {step}}}"#);
            let (status, body) =
                curl(&token, "POST", &format!("{api}/promote"), Some(&promote)).await?;
            ensure!(status == 200, "promote {step}: {status} {body}");
        }
        let (status, body) = wait_for(&token, &api, "Healthy").await?;
        ensure!(
            status == 200 && body["updatedRevision"] == body["stableRevision"],
            "v2: {status} {body}"
        );
        let gate = sluice(env, &ns, &["status", "web", "--timeout", "30s"]).await?;
        ensure!(code(&gate) == 0, "the pipeline's gate after v2: {gate:?}");
        // v1 is history now: scaled to zero, labelled retired (so the controller no longer
        // watches it), and still in the view of the rollout with an undo that applies.
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let retired = replica_sets
            .list(&ListParams::default().labels(&format!("{RETIRED_LABEL}=web")))
            .await?
            .items;
        ensure!(
            retired.len() == 1
                && retired[0].spec.replicas == Some(0)
                && retired[0]
                    .annotations()
                    .get(REVISION_ANNOTATION)
                    .map(String::as_str)
                    == Some("1"),
            "v1 retired: {:?}",
            retired
                .iter()
                .map(|rs| (rs.name_any(), rs.labels().clone()))
                .collect::<Vec<_>>()
        );
        let (status, body) = curl(&token, "GET", &api, None).await?;
        let old = body["revisions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["revision"] == 1))
            .cloned()
            .unwrap_or_default();
        ensure!(
            status == 200 && old["role"] == "old" && old["undo"]["applies"] == true,
            "revision 1 in the view of web: {status} {body}"
        );

        // The event stream: the view at once, then a timeout event ends it.
        let stream = tokio::process::Command::new("curl")
            .args([
                "-sSN",
                "--max-time",
                "10",
                "-H",
                &format!("Authorization: Bearer {token}"),
            ])
            .arg(format!("{api}/events?timeout=1s"))
            .output()
            .await?;
        let text = String::from_utf8_lossy(&stream.stdout);
        ensure!(
            text.starts_with("event: status\ndata: {")
                && text.contains("\"phase\":\"Healthy\"")
                && text.contains("event: timeout"),
            "{text}"
        );

        // v3 aborted by the pipeline: `wait` answers 409, and the gate exits non-zero.
        let set = sluice(env, &ns, &["set", "image", "web", "app=web:3"]).await?;
        ensure!(code(&set) == 0, "set image: {set:?}");
        let (status, _) = wait_for(&token, &api, "Paused").await?;
        ensure!(status == 200, "v3 did not pause: {status}");
        let (status, body) = curl(&token, "POST", &format!("{api}/abort"), None).await?;
        ensure!(status == 200, "abort: {status} {body}");
        let (status, body) = wait_for(&token, &api, "Healthy").await?;
        ensure!(
            status == 409 && body["error"] == "Aborted",
            "{status} {body}"
        );
        let gate = sluice(env, &ns, &["status", "web", "--timeout", "30s"]).await?;
        ensure!(
            code(&gate) != 0,
            "the gate must fail on an aborted rollout: {gate:?}"
        );

        // Undo by number through the API: back to revision 1, which rolls out as a new template.
        let (status, body) = curl(
            &token,
            "POST",
            &format!("{api}/undo"),
            Some(r#"{"toRevision": 1}"#),
        )
        .await?;
        ensure!(status == 200, "undo: {status} {body}");
        let (status, body) = wait_for(&token, &api, "Paused").await?;
        let canary = body["revisions"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["role"] == "canary"))
            .cloned();
        ensure!(
            status == 200 && canary.is_some_and(|c| c["images"] == json!(["app=web:1"])),
            "after undo to 1: {status} {body}"
        );
        // Wanted again, v1's ReplicaSet is not history any more; v3, aborted and no longer
        // the template, is.
        eventually("v3 retired, v1 brought back", || async {
            let retired: Vec<Option<String>> = replica_sets
                .list(&ListParams::default().labels(&format!("{RETIRED_LABEL}=web")))
                .await?
                .items
                .iter()
                .map(|rs| rs.annotations().get(REVISION_ANNOTATION).cloned())
                .collect();
            Ok((retired == [Some("3".to_owned())]).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

async fn lint_checks_files_offline(_env: &'static Env) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.yaml");
    let bad = dir.path().join("bad.yaml");
    let rollout = |steps: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: app, image: web:1}}]}}\n  strategy:\n    canary:\n      steps: {steps}\n"
        )
    };
    std::fs::write(
        &good,
        rollout("[{setWeight: 20}, {pause: {duration: 10s}}]"),
    )?;
    std::fs::write(
        &bad,
        rollout("[{setWeight: 150}, {pause: {duration: five minutes}}]"),
    )?;
    // No cluster: lint reads the file alone.
    let run = |file: PathBuf| async move {
        tokio::process::Command::new(built_binary("kubectl-sluice")?)
            .args(["lint", "-f"])
            .arg(file)
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .await
            .context("running kubectl-sluice lint")
    };
    let ok = run(good).await?;
    ensure!(code(&ok) == 0, "a valid file: {ok:?}");
    let failed = run(bad).await?;
    let text = stdout(&failed);
    ensure!(
        code(&failed) == 7
            && text.contains("steps[0].setWeight")
            && text.contains("steps[1].pause.duration"),
        "an invalid file: {failed:?}"
    );
    // An integer beyond 64 bits is a finding at its field, not an unreadable file (exit 1).
    let huge = dir.path().join("huge.yaml");
    std::fs::write(
        &huge,
        rollout("[{setWeight: 20}]").replace("replicas: 2", "replicas: 18446744073709551616"),
    )?;
    let failed = run(huge).await?;
    ensure!(
        code(&failed) == 7 && stdout(&failed).contains("Rollout web: spec.replicas: "),
        "an integer beyond 64 bits: {failed:?}"
    );
    // Argo Rollouts' integer seconds are a pause's duration.
    let argo = dir.path().join("argo.yaml");
    std::fs::write(&argo, rollout("[{setWeight: 20}, {pause: {duration: 10}}]"))?;
    let ok = run(argo).await?;
    ensure!(code(&ok) == 0, "pause {{duration: 10}}: {ok:?}");
    Ok(())
}

/// `kubectl sluice restart`: every pod of the stable version is re-created, one at a time, with
/// no new revision, and never fewer than replicas - maxUnavailable pods ready on the way.
async fn restart_replaces_every_stable_pod_within_max_unavailable_without_a_new_revision(
    env: &'static Env,
) -> anyhow::Result<()> {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    use kube::runtime::watcher;
    use rollout_controller::crd::{POD_TEMPLATE_HASH_LABEL, Rollout};

    const REPLICAS: usize = 4;
    const MAX_UNAVAILABLE: usize = 1;
    env.install_crds().await?;
    env.in_namespace("restart-pods", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        let strategy = json!({"canary": {"maxSurge": 1, "maxUnavailable": MAX_UNAVAILABLE,
                                         "steps": [{"setWeight": 50}]}});
        create_rollout(
            &client,
            &ns,
            rollout_manifest("web", REPLICAS as i32, "web:1", strategy),
        )
        .await?;
        let status = sluice(env, &ns, &["status", "web", "--timeout", "60s"]).await?;
        ensure!(code(&status) == 0, "v1 status: {status:?}");
        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ns);
        let before = rollouts.get("web").await?.status.unwrap_or_default();
        let stable = before
            .stable_revision
            .clone()
            .context("no stable revision")?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let selector = format!("{POD_TEMPLATE_HASH_LABEL}={stable}");
        let ready = |pod: &Pod| {
            pod.metadata.deletion_timestamp.is_none()
                && pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let uid = |pod: &Pod| pod.metadata.uid.clone().unwrap_or_default();
        let old: BTreeSet<String> = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .iter()
            .filter(|p| ready(p))
            .map(uid)
            .collect();
        ensure!(
            old.len() == REPLICAS,
            "{} ready pods before the restart",
            old.len()
        );

        // Every change to a stable pod, as a watch sees it: the fewest ready at any moment.
        let fewest = Arc::new(Mutex::new(usize::MAX));
        let watch = {
            let fewest = fewest.clone();
            let mut stream =
                watcher(pods.clone(), watcher::Config::default().labels(&selector)).boxed();
            tokio::spawn(async move {
                let mut state: BTreeMap<String, bool> = BTreeMap::new();
                let mut listed = false;
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                            state.insert(uid(&p), ready(&p));
                        }
                        Ok(watcher::Event::Delete(p)) => {
                            state.remove(&uid(&p));
                        }
                        Ok(watcher::Event::InitDone) => listed = true,
                        _ => continue,
                    }
                    // Counted once the first list is whole, not while it arrives pod by pod.
                    if !listed {
                        continue;
                    }
                    let now = state.values().filter(|r| **r).count();
                    let mut fewest = fewest.lock().unwrap_or_else(|p| p.into_inner());
                    *fewest = (*fewest).min(now);
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;

        let restart = sluice(env, &ns, &["restart", "web"]).await?;
        ensure!(
            code(&restart) == 0 && stdout(&restart).contains("restart requested at"),
            "restart: {restart:?}"
        );
        // The restart changes the spec: `status` waits for it to be done.
        let status = sluice(env, &ns, &["status", "web", "--timeout", "90s"]).await?;
        ensure!(code(&status) == 0, "status after the restart: {status:?}");
        let rollout = rollouts.get("web").await?;
        let after = rollout.status.clone().unwrap_or_default();
        ensure!(
            after.restarted_at.is_some() && after.restarted_at == rollout.spec.restart_at,
            "restartedAt {:?}, restartAt {:?}",
            after.restarted_at,
            rollout.spec.restart_at
        );
        watch.abort();
        let now: Vec<Pod> = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let replaced: BTreeSet<String> = now.iter().map(uid).collect();
        ensure!(
            now.len() == REPLICAS && now.iter().all(ready) && replaced.is_disjoint(&old),
            "after the restart: {} pods, {} ready, {} of the old ones left",
            now.len(),
            now.iter().filter(|p| ready(p)).count(),
            replaced.intersection(&old).count()
        );
        // No new revision: the same stable ReplicaSet, the only one.
        ensure!(
            after.stable_revision.as_deref() == Some(stable.as_str())
                && after.updated_revision.as_deref() == Some(stable.as_str()),
            "a restart made a new revision: {after:?}"
        );
        let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let count = replica_sets.list(&ListParams::default()).await?.items.len();
        ensure!(count == 1, "{count} ReplicaSets after a restart");
        let fewest = *fewest.lock().unwrap_or_else(|p| p.into_inner());
        ensure!(
            fewest >= REPLICAS - MAX_UNAVAILABLE,
            "only {fewest} stable pods were ready at one point of the restart"
        );
        // One Event per pod, which the recorder may keep as one series.
        let deleted = crate::support::events_with_reason(&client, &ns, "PodRestarted").await?;
        let times: i32 = deleted
            .iter()
            .map(|e| {
                e.series
                    .as_ref()
                    .and_then(|s| s.count)
                    .or(e.count)
                    .unwrap_or(1)
            })
            .sum();
        ensure!(
            times == REPLICAS as i32,
            "PodRestarted {times} times: {deleted:?}"
        );
        eprintln!("restart: {REPLICAS} pods replaced, never fewer than {fewest} ready");
        // The weight of a finished rollout is 100 on its stable, in the view and the list.
        let view = rollout_view(env, &ns).await?;
        ensure!(view["weight"] == 100, "{view}");
        // `version` answers without a cluster.
        let version = sluice(env, &ns, &["version"]).await?;
        ensure!(
            code(&version) == 0 && stdout(&version).starts_with("kubectl-sluice "),
            "{version:?}"
        );
        Ok(())
    })
    .await
}
