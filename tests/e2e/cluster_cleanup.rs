//! `sluice-cluster down` after a `kill -9` of `sluice-cluster up`: a cluster of its own (its own
//! directory, its own free ports), a running demo-app pod on it, `up` killed while it still
//! starts, and then nothing of that cluster may be left — no process it recorded, no pod
//! process, no namespace, veth or route of its pod. Only what this cluster made is looked at:
//! other tests make namespaces at the same time.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use libtest_mimic::Trial;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use sluice_tests::cluster::{ADMIN_KUBECONFIG, client_from_kubeconfig};
use sluice_tests::pods::netns::{self, PodNetwork};
use sluice_tests::process_record::{RecordedProcess, recorded_processes};
use sluice_tests::procfs::ProcessStat;
use tokio::process::{Child, Command};

use crate::cli::built_binary;
use crate::support::{Env, eventually};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        cluster_cleanup::down_after_kill_9_of_up_leaves_nothing_of_the_cluster
    )]
}

/// How often the record of `up`'s processes is read while it starts: kwok must be frozen
/// before it has initialised the node, which takes it far longer than this.
const RECORD_POLL: Duration = Duration::from_millis(5);

/// A process of the cluster and the reading that identifies it (pid and start time).
#[derive(Clone)]
struct Seen {
    name: String,
    pid: u32,
    stat: ProcessStat,
}

async fn down_after_kill_9_of_up_leaves_nothing_of_the_cluster(
    _env: &'static Env,
) -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("sluice-cleanup-")
        .tempdir_in(if Path::new("/dev/shm").is_dir() {
            Path::new("/dev/shm")
        } else {
            Path::new(".")
        })?;
    let dir = root.path().join("cluster");
    let cluster_bin = built_binary("sluice-cluster")?;
    let up_log = std::fs::File::create(root.path().join("up.log"))?;
    let mut up = Command::new(&cluster_bin)
        .args(["up", "--nodes", "1", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(up_log)
        .kill_on_drop(true)
        .spawn()
        .context("starting sluice-cluster up")?;
    let up_pid = up.id().context("up exited at once")?;
    let outcome = kill_up_with_a_pod_running(&mut up, up_pid, &dir).await;
    // Read before `down` removes the directory; whatever happened, nothing it lists (nor the
    // pod's processes) may outlive the test.
    let mut seen = recorded(&dir);
    if let Ok((_, pod_processes)) = &outcome {
        seen.extend(pod_processes.iter().cloned());
    }
    let down = Command::new(&cluster_bin)
        .args(["down", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running sluice-cluster down")?;
    let mut left = kill_leftovers(&seen);
    let (network, _) = outcome?;
    ensure!(
        down.status.success(),
        "down failed ({}): {}",
        down.status,
        String::from_utf8_lossy(&down.stderr)
    );
    left.extend(network_leftovers(&network).await);
    ensure!(left.is_empty(), "left behind after down: {left:?}");
    ensure!(!dir.exists(), "down left {}", dir.display());
    ensure!(
        [
            "etcd",
            "kube-apiserver",
            "kwok",
            "pod-runner",
            "pod process"
        ]
        .iter()
        .all(|name| seen.iter().any(|s| s.name == *name)),
        "not every process was seen: {:?}",
        seen.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    eprintln!(
        "cluster_cleanup: down reaped {} processes and the network of pod {}",
        seen.len(),
        network.namespace
    );
    Ok(())
}

/// The processes `up` recorded in `dir`, as they run now.
fn recorded(dir: &Path) -> Vec<Seen> {
    recorded_processes(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            Some(Seen {
                stat: ProcessStat::read(p.pid)?,
                name: p.name,
                pid: p.pid,
            })
        })
        .collect()
}

/// Those of `seen` that still run, SIGKILLed so as not to leave them to the next run.
fn kill_leftovers(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.stat.still_runs(s.pid))
        .map(|s| {
            let _ = kill(pid(s.pid), Signal::SIGKILL);
            format!("process {} ({})", s.pid, s.name)
        })
        .collect()
}

/// What is still there of the pod's `network`.
async fn network_leftovers(network: &PodNetwork) -> Vec<String> {
    let mut left = Vec::new();
    if netns::namespaces().await.contains(&network.namespace) {
        left.push(format!("netns {}", network.namespace));
    }
    if netns::host_veths().await.contains(&network.host_veth) {
        left.push(format!("veth {}", network.host_veth));
    }
    let ip = network.ip.to_string();
    left.extend(
        netns::host_routes()
            .await
            .into_iter()
            .filter(|r| r.split_whitespace().next() == Some(ip.as_str()))
            .map(|r| format!("route {r}")),
    );
    left
}

/// Freezes kwok as soon as `up` has started it, so that `up` waits for its node; freezes `up`
/// once the node exists, thaws kwok; runs a demo-app pod; then SIGKILLs `up`, still starting.
/// Returns the pod's network and processes.
async fn kill_up_with_a_pod_running(
    up: &mut Child,
    up_pid: u32,
    dir: &Path,
) -> anyhow::Result<(PodNetwork, Vec<Seen>)> {
    let kwok = recorded_until(up, dir, |p| p.iter().find(|p| p.name == "kwok").cloned()).await?;
    signal(kwok.pid, Signal::SIGSTOP)?;
    let thawed = freeze_up_and_run_a_pod(up, up_pid, dir, kwok.pid).await;
    // kwok must run again whatever happened, or `down` waits out its grace on a frozen process.
    let _ = signal(kwok.pid, Signal::SIGCONT);
    let client = thawed?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let running = eventually(
        "the demo-app pod to run in its network namespace",
        || async {
            let pod = pods.get("cleanup").await?;
            let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
                return Ok(None);
            };
            let network =
                PodNetwork::for_pod(pod.metadata.uid.as_deref().unwrap_or_default(), ip.parse()?);
            let pids = netns::pids_in(&network.namespace).await;
            Ok((!pids.is_empty()).then_some((network, pids)))
        },
    )
    .await?;
    let (network, pod_pids) = running;
    let pod_processes: Vec<Seen> = pod_pids
        .into_iter()
        .filter_map(|pid| {
            Some(Seen {
                name: "pod process".into(),
                pid,
                stat: ProcessStat::read(pid)?,
            })
        })
        .collect();
    ensure!(
        netns::host_veths().await.contains(&network.host_veth),
        "no veth {}",
        network.host_veth
    );
    ensure!(
        netns::host_routes()
            .await
            .iter()
            .any(|r| r.starts_with(&format!("{} ", network.ip))),
        "no host route to the pod IP {}",
        network.ip
    );
    ensure!(
        up.try_wait()?.is_none(),
        "up finished starting; this test is of a kill during start"
    );
    signal(up_pid, Signal::SIGKILL)?;
    up.wait().await?;
    Ok((network, pod_processes))
}

async fn freeze_up_and_run_a_pod(
    up: &mut Child,
    up_pid: u32,
    dir: &Path,
    kwok: u32,
) -> anyhow::Result<kube::Client> {
    let kubeconfig = dir.join(ADMIN_KUBECONFIG);
    recorded_until(up, dir, |p| {
        p.iter().any(|p| p.name == "pod-runner").then_some(())
    })
    .await?;
    let client = client_from_kubeconfig(&kubeconfig).await?;
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("up to create its node", || async {
        Ok((!nodes.list(&Default::default()).await?.items.is_empty()).then_some(()))
    })
    .await?;
    // kwok has not marked the node Ready, so `up` still waits for it: freeze it there.
    signal(up_pid, Signal::SIGSTOP)?;
    signal(kwok, Signal::SIGCONT)?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    eventually("the default ServiceAccount", || async {
        Ok(accounts.get_opt("default").await?.map(|_| ()))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": "cleanup"},
            "spec": {"containers": [{
                "name": "app",
                "image": "registry.example.com/demo-app:v1",
                "ports": [{"containerPort": 8080}],
            }]},
        }))?,
    )
    .await?;
    Ok(client)
}

/// Reads `up`'s record of its processes until `found` picks what the test waits for.
async fn recorded_until<T>(
    up: &mut Child,
    dir: &Path,
    found: impl Fn(&[RecordedProcess]) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    loop {
        if let Ok(recorded) = recorded_processes(dir)
            && let Some(value) = found(&recorded)
        {
            return Ok(value);
        }
        if let Some(status) = up.try_wait()? {
            bail!("up exited ({status}) before the test could catch it");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("up recorded no such process in time");
        }
        tokio::time::sleep(RECORD_POLL).await;
    }
}

fn signal(to: u32, signal: Signal) -> anyhow::Result<()> {
    kill(pid(to), signal).with_context(|| format!("sending {signal} to {to}"))
}

fn pid(pid: u32) -> Pid {
    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX))
}
