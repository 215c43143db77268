//! The examples users copy (one directory per strategy under examples/) are what the apiserver
//! accepts and what `kubectl sluice lint` passes: each file goes to the real apiserver with a
//! server-side dry run, and through the linter.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use libtest_mimic::Trial;

use crate::cli::built_binary;
use crate::support::{Env, TestNamespace};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(examples::every_example_is_accepted_by_the_apiserver_and_lints_clean),
        trial!(examples::argo_rollouts_getting_started_canary_is_accepted_and_runs),
    ]
}

/// Argo Rollouts' getting-started canary, with Sluice's apiVersion and the same spec: its
/// `pause: {duration: 10}` steps are integer seconds.
const ARGO_GETTING_STARTED: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata:
  name: rollouts-demo
spec:
  replicas: 5
  strategy:
    canary:
      steps:
      - setWeight: 20
      - pause: {}
      - setWeight: 40
      - pause: {duration: 10}
      - setWeight: 60
      - pause: {duration: 10}
      - setWeight: 80
      - pause: {duration: 10}
  revisionHistoryLimit: 2
  selector:
    matchLabels:
      app: rollouts-demo
  template:
    metadata:
      labels:
        app: rollouts-demo
    spec:
      containers:
      - name: rollouts-demo
        image: argoproj/rollouts-demo:blue
        ports:
        - name: http
          containerPort: 8080
          protocol: TCP
        resources:
          requests:
            memory: 32Mi
            cpu: 5m
"#;

/// Accepted by the apiserver and lint as Argo's users write it, and run by the controller: the
/// pause of integer seconds ends by itself, shown as `pause 10s`.
async fn argo_rollouts_getting_started_canary_is_accepted_and_runs(
    env: &'static Env,
) -> anyhow::Result<()> {
    use rollout_controller::crd::Phase;

    use crate::cli::{code, sluice, stdout};
    use crate::rollouts::status_until;
    use crate::support::RunningController;

    env.install_crds().await?;
    let cluster = env.cluster().await?;
    let kubectl = cluster.binaries().path("kubectl");
    let kubeconfig = cluster.admin_kubeconfig().to_owned();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rollouts-demo.yaml");
    std::fs::write(&file, ARGO_GETTING_STARTED)?;
    let linted = tokio::process::Command::new(built_binary("kubectl-sluice")?)
        .args(["lint", "-f"])
        .arg(&file)
        .output()
        .await?;
    ensure!(
        linted.status.success() && stdout(&linted).contains(" 0 errors, 0 warnings"),
        "lint: {linted:?}"
    );
    env.in_namespace("argo-demo", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let _controller = RunningController::start(client.clone(), &ns);
        let created = tokio::process::Command::new(&kubectl)
            .args(["create", "-n", &ns, "-f"])
            .arg(&file)
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .await?;
        ensure!(
            created.status.success(),
            "the apiserver refused it: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let name = "rollouts-demo";
        let status = sluice(env, &ns, &["status", name, "--timeout", "60s"]).await?;
        ensure!(code(&status) == 0, "v1: {status:?}");
        // Argo's demo changes the image to yellow, with the same command.
        let set = sluice(
            env,
            &ns,
            &[
                "set",
                "image",
                name,
                "rollouts-demo=argoproj/rollouts-demo:yellow",
            ],
        )
        .await?;
        ensure!(code(&set) == 0, "set image: {set:?}");
        status_until(&client, &ns, name, "the indefinite pause at step 1", |s| {
            s.current_step_index == Some(1) && s.phase == Phase::Paused
        })
        .await?;
        let promote = sluice(env, &ns, &["promote", name]).await?;
        ensure!(code(&promote) == 0, "promote: {promote:?}");
        let paused = status_until(&client, &ns, name, "the 10-second pause at step 3", |s| {
            s.current_step_index == Some(3) && s.phase == Phase::Paused
        })
        .await?;
        ensure!(
            paused.message.contains("pause 10s"),
            "the pause of integer seconds: {}",
            paused.message
        );
        // Nobody promotes it: it ends by itself ten seconds on.
        status_until(&client, &ns, name, "past the 10-second pause", |s| {
            s.current_step_index.is_some_and(|i| i >= 4)
        })
        .await?;
        Ok(())
    })
    .await
}

/// The example directories, each with one `rollout.yaml`.
pub(crate) const STRATEGIES: [&str; 5] = [
    "rolling",
    "blue-green",
    "canary-nginx",
    "canary-gateway-api",
    "ab-test",
];

pub(crate) fn example(strategy: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(strategy)
        .join("rollout.yaml")
}

async fn every_example_is_accepted_by_the_apiserver_and_lints_clean(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let cluster = env.cluster().await?;
    let kubectl = cluster.binaries().path("kubectl");
    let kubeconfig = cluster.admin_kubeconfig().to_owned();
    // Every directory of examples/ except the demo app's is a strategy listed here: a new
    // example cannot go untested.
    let mut found: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("rollout.yaml").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
    found.sort();
    let mut listed: Vec<String> = STRATEGIES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    ensure!(
        found == listed,
        "examples/ has {found:?}, the test lists {listed:?}"
    );

    env.in_namespace("examples", |ns: TestNamespace| async move {
        for strategy in STRATEGIES {
            let file = example(strategy);
            let applied = tokio::process::Command::new(&kubectl)
                .args([
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "--field-manager",
                    "sluice-e2e",
                ])
                .args(["-n", &ns.name, "-f"])
                .arg(&file)
                .env("KUBECONFIG", &kubeconfig)
                .output()
                .await
                .context("running kubectl")?;
            let said = String::from_utf8_lossy(&applied.stdout);
            ensure!(
                applied.status.success(),
                "{strategy}: the apiserver refused it: {}{}",
                said,
                String::from_utf8_lossy(&applied.stderr)
            );
            ensure!(
                said.contains("rollout.sluice.dev/"),
                "{strategy}: no Rollout applied: {said}"
            );
            let linted = tokio::process::Command::new(built_binary("kubectl-sluice")?)
                .args(["lint", "-f"])
                .arg(&file)
                .output()
                .await
                .context("running kubectl-sluice lint")?;
            let report = String::from_utf8_lossy(&linted.stdout);
            ensure!(
                linted.status.success() && report.contains(" 0 errors, 0 warnings"),
                "{strategy}: lint: {report}{}",
                String::from_utf8_lossy(&linted.stderr)
            );
        }
        Ok(())
    })
    .await
}
