//! The examples users copy (one directory per strategy under examples/) are what the apiserver
//! accepts and what `kubectl sluice lint` passes: each file goes to the real apiserver with a
//! server-side dry run, and through the linter.

use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use libtest_mimic::Trial;

use crate::cli::built_binary;
use crate::support::{Env, TestNamespace};

pub fn trials() -> Vec<Trial> {
    vec![trial!(
        examples::every_example_is_accepted_by_the_apiserver_and_lints_clean
    )]
}

/// The example directories, each with one `rollout.yaml`.
const STRATEGIES: [&str; 5] = [
    "rolling",
    "blue-green",
    "canary-nginx",
    "canary-gateway-api",
    "ab-test",
];

fn example(strategy: &str) -> PathBuf {
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
