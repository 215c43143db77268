//! What the demo needs before it starts anything: the control plane, Prometheus and Traefik
//! built (tests/cluster/build.sh, once per machine; run here when they are missing), and the workspace
//! binaries it runs — demo-app, rollout-controller and kubectl-sluice — and what the pod runner
//! needs to give each pod a network namespace: root and `ip` (iproute2).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use sluice_tests::HarnessError;
use sluice_tests::binaries::{Binaries, on_path};
use tokio::process::Command;

use crate::console::Console;

pub(crate) struct Tools {
    pub controller: PathBuf,
    pub kubectl_sluice: PathBuf,
}

/// The workspace binaries the demo runs, beside its own. The harness starts the last, the pod
/// runner, from the same directory.
const WORKSPACE_BINARIES: [&str; 4] = [
    "demo-app",
    "rollout-controller",
    "kubectl-sluice",
    "sluice-pod-runner",
];

pub(crate) fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

pub(crate) async fn check(console: &Console) -> anyhow::Result<Tools> {
    pod_networks()?;
    control_plane(console).await?;
    let built = workspace_binaries(console).await?;
    let [_demo_app, controller, kubectl_sluice, _pod_runner] = built;
    Ok(Tools {
        controller,
        kubectl_sluice,
    })
}

/// The pod runner makes a network namespace, a veth pair and a host route per pod: that takes
/// root and iproute2's `ip`. Said before anything starts, rather than as a runner that fails.
fn pod_networks() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    if effective_uid(&status) != Some(0) {
        bail!(
            "the demo runs each pod as a process in a network namespace of its own, which needs \
             root: run it as root (for example `sudo -E cargo run --bin demo`)"
        );
    }
    on_path("ip", "").map_err(|_| {
        anyhow::anyhow!(
            "`ip` (iproute2) is not on PATH: install it (Debian: apt-get install iproute2)"
        )
    })?;
    Ok(())
}

/// The effective uid from /proc/self/status (`Uid:` real, effective, saved, filesystem).
fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The cached control plane, Prometheus and Traefik, built first by tests/cluster/build.sh
/// when any is not there (its progress goes to the terminal: minutes, once per machine).
async fn control_plane(console: &Console) -> anyhow::Result<Binaries> {
    let located = Binaries::locate().and_then(|binaries| {
        binaries.prometheus()?;
        binaries.traefik()?;
        Ok(binaries)
    });
    match located {
        Ok(binaries) => return Ok(binaries),
        Err(HarnessError::MissingBinary { binary, dir, .. }) => console.say(format!(
            "the local control plane, Prometheus or Traefik is not built yet ({binary} is not in \
             {}): building them with tests/cluster/build.sh — minutes, once per machine",
            dir.display()
        )),
        Err(e) => return Err(e).context("finding the control plane and Prometheus binaries"),
    }
    if std::env::var_os("SLUICE_K8S_BIN").is_some() {
        // build.sh writes to the cache, not to a directory named by hand.
        bail!(
            "SLUICE_K8S_BIN names a directory without the control plane, Prometheus or Traefik \
             beside it; unset it to use the cache"
        );
    }
    if on_path("go", "").is_err() {
        bail!(
            "building the control plane, Prometheus and Traefik needs Go (https://go.dev/dl/, 1.26.7 or \
             newer) on PATH, and the Go module proxy"
        );
    }
    let script = workspace_root().join("tests/cluster/build.sh");
    let status = Command::new(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!(
            "{} failed ({status}); its output is above",
            script.display()
        );
    }
    let binaries = Binaries::locate().context("the control plane binaries after build.sh")?;
    binaries.prometheus().context("Prometheus after build.sh")?;
    binaries.traefik().context("Traefik after build.sh")?;
    Ok(binaries)
}

/// demo-app, rollout-controller and kubectl-sluice from this build's target directory. Under
/// `cargo run` they are built first, in the same profile — a no-op when they are fresh, which
/// they are after `cargo build --workspace --bins`.
async fn workspace_binaries(console: &Console) -> anyhow::Result<[PathBuf; 4]> {
    let exe = std::env::current_exe().context("finding the demo's own binary")?;
    let dir = exe
        .parent()
        .context("the demo's binary has no directory")?
        .to_path_buf();
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut command = Command::new(cargo);
        // `--workspace` resolves features over every member, as `cargo build --workspace
        // --bins` and `cargo run --bin demo` do, so the build shares their artifacts; naming
        // the bins alone would resolve them for those three packages and rebuild half the
        // dependency tree with other features.
        command
            .current_dir(workspace_root())
            .args(["build", "--workspace"]);
        // What `cargo run` set for us describes the demo package, not the build: build scripts
        // that watch these (ring watches CARGO_MANIFEST_DIR and CARGO_PKG_*) would see them
        // change and rebuild, and the next plain `cargo build` would rebuild them back.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || matches!(
                    &*key,
                    "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
                )
            {
                command.env_remove(&*key);
            }
        }
        for name in WORKSPACE_BINARIES {
            command.args(["--bin", name]);
        }
        // target/<profile>/demo: build the others in the same profile.
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                command.arg("--release");
            }
            Some(profile) => {
                command.args(["--profile", profile]);
            }
        }
        console.say(format!(
            "building {} (cargo; a no-op when they are fresh)",
            WORKSPACE_BINARIES.join(", ")
        ));
        let status = command
            .stdin(Stdio::null())
            .status()
            .await
            .context("running cargo build")?;
        if !status.success() {
            bail!(
                "cargo build of {} failed ({status})",
                WORKSPACE_BINARIES.join(", ")
            );
        }
    }
    let path = |name: &str| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            bail!(
                "{} is missing: build the workspace's binaries first with \
                 `cargo build --workspace --bins` (or start the demo with `cargo run --bin demo`)",
                path.display()
            )
        }
    };
    Ok([
        path(WORKSPACE_BINARIES[0])?,
        path(WORKSPACE_BINARIES[1])?,
        path(WORKSPACE_BINARIES[2])?,
        path(WORKSPACE_BINARIES[3])?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_uid_is_the_second_of_four() {
        assert_eq!(
            effective_uid("Name:\tdemo\nUid:\t1000\t0\t0\t0\nGid:\t0\n"),
            Some(0)
        );
        assert_eq!(effective_uid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tdemo\n"), None);
    }
}
