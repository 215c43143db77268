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
use libtest_mimic::Trial;
use rollout_controller::crd::Phase;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::rollouts::{create_rollout, create_service, rollout_manifest, status_until};
use crate::support::{Env, RunningController, TestNamespace};
use sluice_tests::tokens::service_account_token;

pub fn trials() -> Vec<Trial> {
    vec![
        trial!(cli::a_canary_driven_to_completion_from_the_cli),
        trial!(cli::a_pipeline_drives_a_canary_with_curl_and_gates_on_kubectl_sluice_status),
        trial!(cli::lint_checks_files_offline),
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

async fn sluice(env: &Env, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
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

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn rollout_view(env: &Env, ns: &str) -> anyhow::Result<Value> {
    let get = sluice(env, ns, &["get", "rollout", "web", "-o", "json"]).await?;
    ensure!(code(&get) == 0, "get: {get:?}");
    Ok(serde_json::from_slice(&get.stdout)?)
}

const FOUR_STEPS: &str = r#"{"canary": {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]}}"#;

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
            let promote = sluice(env, &ns, &["promote", "web"]).await?;
            ensure!(code(&promote) == 0, "promote at {step}: {promote:?}");
        }
        let status = sluice(env, &ns, &["status", "web", "--timeout", "60s"]).await?;
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
    Ok(())
}
