//! "Never loses its place": the controller is killed right after each API write of a step
//! transition in turn, restarted, and must end where an uninterrupted run ends, with no step
//! repeated or skipped and traffic never moved backwards.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use kube::Client;
use libtest_mimic::Trial;
use rollout_controller::crd::{Phase, RolloutStatus};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::rollouts::{
    create_rollout, create_service, replica_counts, rollout_manifest, set_image, status_until,
};
use crate::support::{Env, TestNamespace, events_with_reason, watch_step_history};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        restart::killed_after_every_write_of_a_transition_it_carries_on
    )]
}

/// The controller as a child process, killed when dropped.
pub(crate) struct ControllerProcess {
    child: Child,
    /// `127.0.0.1:PORT` of /healthz, /readyz and /metrics.
    pub(crate) health: String,
}

impl ControllerProcess {
    pub(crate) fn start(
        kubeconfig: &Path,
        namespace: &str,
        log: &Path,
        exit_after_writes: Option<u64>,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let health = format!("127.0.0.1:{port}");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice-controller-under-test"));
        command
            .args([namespace, &health])
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        if let Some(k) = exit_after_writes {
            command.env("SLUICE_FAULT_EXIT_AFTER_WRITES", k.to_string());
        }
        Ok(Self {
            child: command.spawn()?,
            health,
        })
    }

    /// API writes so far, from its own `sluice_api_writes_total`.
    async fn writes(&self) -> anyhow::Result<u64> {
        let text = reqwest::get(format!("http://{}/metrics", self.health))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("sluice_api_writes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    async fn exited(&mut self) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("the controller did not exit after its k-th write")??;
        Ok(())
    }

    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Where one case ended, and what it went through on the way.
#[derive(Debug, PartialEq)]
struct Outcome {
    step: Option<i32>,
    weight: i32,
    phase: Phase,
    canary_pods: i32,
    stable_pods: i32,
}

struct Case {
    outcome: Outcome,
    /// The controller was killed (the transition had at least k writes).
    killed: bool,
    /// (step index, weight) as a watch saw them, in order.
    history: Vec<(i32, i32)>,
    step_events: usize,
    writes: Option<u64>,
}

/// v1 Healthy under a healthy controller; then v2 under one that exits after `fault` writes (and
/// a fresh one after it), until v2 waits at its `pause {}`.
async fn run_case(
    client: &Client,
    kubeconfig: &Path,
    ns: &str,
    name: &str,
    fault: Option<u64>,
) -> anyhow::Result<Case> {
    let log = std::env::temp_dir().join(format!("sluice-restart-{ns}-{name}.log"));
    create_service(client, ns, &format!("{name}-stable"), name).await?;
    let strategy = json!({"canary": {
        "stableService": format!("{name}-stable"), "maxSurge": 1, "maxUnavailable": 0,
        "steps": [{"setWeight": 50}, {"pause": {}}],
    }});
    let setup = ControllerProcess::start(kubeconfig, ns, &log, None)?;
    create_rollout(client, ns, rollout_manifest(name, 2, "app:1", strategy)).await?;
    let v1 = status_until(client, ns, name, "v1 Healthy", |s| {
        s.phase == Phase::Healthy
    })
    .await?;
    let stable = v1.stable_revision.context("no stable revision")?;
    setup.kill().await;

    let (history, watch) = watch_step_history(client, ns, name);

    let mut first = ControllerProcess::start(kubeconfig, ns, &log, fault)?;
    set_image(client, ns, name, "app:2").await?;
    let at_pause = |s: &RolloutStatus| {
        s.phase == Phase::Paused
            && s.current_step_index == Some(1)
            && s.stable_revision.as_deref() == Some(stable.as_str())
    };
    // How many writes a transition takes varies a little with pod timing: a run that needs
    // fewer than k reaches the pause without being killed, and is reported as such.
    let mut killed = false;
    let last = match fault {
        Some(_) => {
            tokio::select! {
                exited = first.exited() => {
                    exited?;
                    killed = true;
                    ControllerProcess::start(kubeconfig, ns, &log, None)?
                }
                reached = status_until(client, ns, name, "v2 waiting at its pause", at_pause) => {
                    reached?;
                    first
                }
            }
        }
        None => first,
    };
    let paused = status_until(client, ns, name, "v2 waiting at its pause", at_pause).await?;
    let writes = match fault {
        None => Some(last.writes().await?),
        Some(_) => None,
    };
    last.kill().await;
    // The history's watch may be a moment behind the read that saw the pause: let it see the
    // pause too before it stops, or a run that went through every step would seem to skip one.
    let reached = (
        paused.current_step_index.unwrap_or(0),
        paused.canary.as_ref().map_or(0, |c| c.weight),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while history.lock().unwrap_or_else(|p| p.into_inner()).last() != Some(&reached)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();

    let canary = paused
        .updated_revision
        .clone()
        .context("no updated revision")?;
    let counts = replica_counts(client, ns).await?;
    let step_events = events_with_reason(client, ns, "StepCompleted")
        .await?
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count.unwrap_or(1)))
        .sum::<i32>() as usize;
    let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Case {
        outcome: Outcome {
            step: paused.current_step_index,
            weight: paused.canary.map_or(0, |c| c.weight),
            phase: paused.phase,
            canary_pods: counts.get(&canary).copied().unwrap_or(0),
            stable_pods: counts.get(&stable).copied().unwrap_or(0),
        },
        history,
        killed,
        step_events,
        writes,
    })
}

async fn killed_after_every_write_of_a_transition_it_carries_on(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let kubeconfig = env.cluster().await?.admin_kubeconfig().to_path_buf();
    env.in_namespace("restart", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let baseline = run_case(&client, &kubeconfig, &ns, "base", None).await?;
        let writes = baseline.writes.context("no write count")?;
        ensure!(writes > 0, "the uninterrupted run made no API writes");
        eprintln!("restart: the transition v1 -> step 2 (setWeight 50 done, pause) took {writes} API writes");
        ensure!(baseline.history.last() == Some(&(1, 50)), "{:?}", baseline.history);
        let mut killed_at = Vec::new();
        for k in 1..=writes {
            let name = format!("kill{k}");
            let case = run_case(&client, &kubeconfig, &ns, &name, Some(k)).await?;
            if case.killed {
                killed_at.push(k);
            }
            ensure!(case.outcome == baseline.outcome, "killed after write {k}: ended at {:?}, want {:?}", case.outcome, baseline.outcome);
            let backwards = case.history.windows(2).any(|w| w[1].0 < w[0].0 || w[1].1 < w[0].1);
            ensure!(!backwards, "killed after write {k}: went backwards: {:?}", case.history);
            ensure!(case.step_events <= 1, "killed after write {k}: the step was completed {} times", case.step_events);
            ensure!(
                case.history.iter().any(|(step, _)| *step == 1),
                "killed after write {k}: step 1 never seen: {:?}",
                case.history
            );
        }
        eprintln!("restart: killed and restarted after write {killed_at:?} of {writes}");
        ensure!(
            killed_at.len() * 4 >= writes as usize * 3,
            "only {} of {writes} kill points were reached: {killed_at:?}",
            killed_at.len()
        );
        Ok(())
    })
    .await
}
