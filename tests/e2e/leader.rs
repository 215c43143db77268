//! Leader election between two real controller processes: only the leader writes. Killed with
//! SIGKILL mid-canary, or frozen with SIGSTOP past its lease, the leader is replaced by the
//! standby within a lease duration and a few seconds, which carries the canary on from where the
//! status says, with no step repeated, skipped or undone; a frozen leader that wakes up writes
//! nothing more and exits.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use libtest_mimic::Trial;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rollout_controller::crd::{Phase, Rollout, RolloutStatus};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::cli::built_binary;
use crate::rollouts::{
    create_rollout, create_service, rollout_manifest, set_image, status_until, status_until_within,
};
use crate::support::{Env, TestNamespace, events_with_reason, eventually, watch_step_history};

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial!(leader::the_standby_takes_over_from_a_killed_leader_mid_canary),
        trial!(leader::a_frozen_leader_is_replaced_and_writes_nothing_when_it_wakes),
    ]
}

/// Short, so that the test waits seconds, not client-go's 15 s.
const LEASE_DURATION: Duration = Duration::from_secs(4);
const TIMING: Timing = Timing {
    lease: LEASE_DURATION,
    renew_deadline: Duration::from_secs(3),
    retry_period: Duration::from_secs(1),
};

/// A replica's `--lease-duration`, `--renew-deadline` and `--retry-period`.
#[derive(Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) lease: Duration,
    pub(crate) renew_deadline: Duration,
    pub(crate) retry_period: Duration,
}
const LEASE_NAME: &str = "sluice-controller";
/// The steps: four weights, each followed by a short pause.
const WEIGHTS: [i32; 4] = [20, 40, 60, 80];
/// For a wait across the remaining steps of the canary: each moves a pod, which a control plane
/// loaded by the tests that run beside this one has been seen to take 30 s to make ready (the
/// failover's own speed is bounded separately, by the Lease).
const STEPS_DEADLINE: Duration = Duration::from_secs(240);

/// `rollout-controller` as a process of its own, named `identity`; SIGKILLed when dropped.
pub(crate) struct Replica {
    pub(crate) identity: String,
    pub(crate) child: Child,
    health: SocketAddr,
    pub(crate) log: PathBuf,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Replica {
    fn start(identity: &str, kubeconfig: &Path, ns: &str) -> anyhow::Result<Self> {
        Self::start_with(identity, kubeconfig, ns, TIMING, &[])
    }

    /// As [`Replica::start`], with this timing and more flags.
    pub(crate) fn start_with(
        identity: &str,
        kubeconfig: &Path,
        ns: &str,
        timing: Timing,
        flags: &[String],
    ) -> anyhow::Result<Self> {
        let (health, api) = (free_port()?, free_port()?);
        let log = std::env::temp_dir().join(format!("sluice-leader-{ns}-{identity}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(built_binary("rollout-controller")?)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", ns])
            .args(["--health-addr", &health.to_string()])
            .args(["--api-addr", &api.to_string()])
            .args(["--leader-election-namespace", ns])
            .args([
                "--lease-duration",
                &format!("{}ms", timing.lease.as_millis()),
                "--renew-deadline",
                &format!("{}ms", timing.renew_deadline.as_millis()),
                "--retry-period",
                &format!("{}ms", timing.retry_period.as_millis()),
            ])
            .args(flags)
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("starting rollout-controller")?;
        Ok(Self {
            identity: identity.into(),
            child,
            health,
            log,
        })
    }

    /// The sum of the samples of `metric` on its `/metrics`.
    pub(crate) async fn metric(&self, metric: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.health))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.split([' ', '{']).next() == Some(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.child.id().context("already exited")?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }

    /// `kill -9`, and waits until it is gone.
    pub(crate) async fn kill_9(&mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.child.wait().await?;
        Ok(())
    }
}

async fn holder(client: &Client, ns: &str) -> anyhow::Result<Option<String>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    Ok(leases
        .get_opt(LEASE_NAME)
        .await?
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty()))
}

async fn step_and_weight(client: &Client, ns: &str, name: &str) -> anyhow::Result<(i32, i32)> {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let status = rollouts.get(name).await?.status.unwrap_or_default();
    Ok((
        status.current_step_index.unwrap_or(0),
        status.canary.map_or(0, |c| c.weight),
    ))
}

/// How the leader is taken out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    /// `kill -9`.
    Kill,
    /// SIGSTOP until the standby has moved the rollout on, then SIGCONT.
    Freeze,
}

async fn the_standby_takes_over_from_a_killed_leader_mid_canary(
    env: &'static Env,
) -> anyhow::Result<()> {
    with_two_replicas(env, "leader-kill", Interrupt::Kill).await
}

async fn a_frozen_leader_is_replaced_and_writes_nothing_when_it_wakes(
    env: &'static Env,
) -> anyhow::Result<()> {
    with_two_replicas(env, "leader-freeze", Interrupt::Freeze).await
}

async fn with_two_replicas(
    env: &'static Env,
    prefix: &'static str,
    interrupt: Interrupt,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let kubeconfig = env.cluster().await?.admin_kubeconfig().to_path_buf();
    env.in_namespace(prefix, |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let mut replicas = [
            Replica::start("sluice-a", &kubeconfig, &ns)?,
            Replica::start("sluice-b", &kubeconfig, &ns)?,
        ];
        let logs = replicas
            .iter()
            .map(|r| r.log.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let outcome = failover(&client, &ns, &mut replicas, interrupt).await;
        // Both go, whatever the outcome (and they are killed when dropped, should this
        // future itself be dropped); a frozen one is woken first so that it can die.
        for replica in &mut replicas {
            if let Some(pid) = replica.child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            let _ = replica.child.kill().await;
        }
        outcome
            .and_then(|()| logs_are_plain(&replicas))
            .with_context(|| format!("controller logs: {logs}"))
    })
    .await
}

/// Written to a file, the controller's text log carries no colour codes.
fn logs_are_plain(replicas: &[Replica]) -> anyhow::Result<()> {
    for replica in replicas {
        let log = std::fs::read(&replica.log)?;
        ensure!(!log.is_empty(), "{} logged nothing", replica.identity);
        ensure!(
            !log.contains(&0x1b),
            "{}'s log file carries ANSI escape codes",
            replica.identity
        );
    }
    Ok(())
}

async fn failover(
    client: &Client,
    ns: &str,
    replicas: &mut [Replica; 2],
    interrupt: Interrupt,
) -> anyhow::Result<()> {
    let name = "web";
    create_service(client, ns, "web-stable", name).await?;
    let steps: Vec<_> = WEIGHTS
        .iter()
        .flat_map(|w| {
            [
                json!({"setWeight": w}),
                json!({"pause": {"duration": "2s"}}),
            ]
        })
        .collect();
    let step_count = steps.len();
    let strategy = json!({"canary": {
        "stableService": "web-stable", "maxSurge": 1, "maxUnavailable": 0, "steps": steps,
    }});
    create_rollout(client, ns, rollout_manifest(name, 5, "app:1", strategy)).await?;
    let v1 = status_until(client, ns, name, "v1 Healthy", |s| {
        s.phase == Phase::Healthy
    })
    .await?;
    let stable = v1.stable_revision.context("no stable revision")?;

    // One leader, which the Lease names and its gauge shows; the standby has written nothing.
    let leader_id = eventually("a holder of the Lease", || async {
        holder(client, ns).await
    })
    .await?;
    let leader = replicas
        .iter()
        .position(|r| r.identity == leader_id)
        .with_context(|| format!("the Lease names {leader_id}, neither replica"))?;
    let standby = 1 - leader;
    ensure!(replicas[leader].metric("sluice_leader").await? == 1.0);
    ensure!(replicas[standby].metric("sluice_leader").await? == 0.0);
    let standby_writes = replicas[standby].metric("sluice_api_writes_total").await?;
    ensure!(
        standby_writes == 0.0,
        "the standby made {standby_writes} API writes"
    );
    eprintln!(
        "leader: {} leads, {} stands by",
        replicas[leader].identity, replicas[standby].identity
    );

    let (history, watch) = watch_step_history(client, ns, name);
    set_image(client, ns, name, "app:2").await?;
    // Mid-canary: weight 40 set, in the pause after it.
    status_until(
        client,
        ns,
        name,
        "v2 at step 4 (the pause after 40%)",
        |s| {
            s.current_step_index == Some(3) && s.stable_revision.as_deref() == Some(stable.as_str())
        },
    )
    .await?;
    let killed_at = Instant::now();
    match interrupt {
        Interrupt::Kill => replicas[leader].kill_9().await?,
        Interrupt::Freeze => replicas[leader].signal(Signal::SIGSTOP)?,
    }
    let at_kill = step_and_weight(client, ns, name).await?;

    let new_holder = eventually("the standby to take the Lease", || async {
        Ok(holder(client, ns)
            .await?
            .filter(|h| *h == replicas[standby].identity))
    })
    .await?;
    let to_holder = killed_at.elapsed();
    eventually("the next status change", || async {
        Ok((step_and_weight(client, ns, name).await? != at_kill).then_some(()))
    })
    .await?;
    let to_change = killed_at.elapsed();
    eprintln!(
        "leader: {} {} at (step {}, weight {}); {new_holder} held the Lease {:.1}s later and \
         moved the rollout on {:.1}s after (lease {}s)",
        match interrupt {
            Interrupt::Kill => "killed",
            Interrupt::Freeze => "froze",
        },
        replicas[leader].identity,
        at_kill.0,
        at_kill.1,
        to_holder.as_secs_f64(),
        to_change.as_secs_f64(),
        LEASE_DURATION.as_secs()
    );
    let bound = LEASE_DURATION + Duration::from_secs(4);
    ensure!(
        to_holder <= bound,
        "failover took {to_holder:?}, more than {bound:?}"
    );

    if interrupt == Interrupt::Freeze {
        // The frozen leader's caches and timers stopped at step 3; once the new leader is two
        // steps on, wake it: whatever it planned from its stale view must not reach the cluster,
        // and it must notice that its lease lapsed and exit.
        status_until_within(
            client,
            ns,
            name,
            "the new leader at step 6",
            STEPS_DEADLINE,
            |s| s.current_step_index >= Some(5),
        )
        .await?;
        let old = &mut replicas[leader];
        old.signal(Signal::SIGCONT)?;
        let exit = tokio::time::timeout(Duration::from_secs(10), old.child.wait())
            .await
            .context("the woken leader did not exit")??;
        ensure!(!exit.success(), "the woken leader exited with {exit}");
        let log = std::fs::read_to_string(&old.log)?;
        ensure!(
            log.contains("lost the leadership"),
            "the woken leader did not say it lost the leadership"
        );
        let refused = log
            .lines()
            .filter(|l| l.contains("does not hold the lease"))
            .count();
        let unnamed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("reconcile failed") && !l.contains(&format!("namespace={ns}")))
            .collect();
        ensure!(
            unnamed.is_empty(),
            "reconcile errors logged without their namespace: {unnamed:?}"
        );
        eprintln!(
            "leader: the woken leader exited ({exit}); writes it attempted and the gate refused: {refused}"
        );
    }

    let done = |s: &RolloutStatus| {
        s.phase == Phase::Healthy
            && s.stable_revision.is_some()
            && s.stable_revision != Some(stable.clone())
    };
    status_until_within(client, ns, name, "v2 Healthy", STEPS_DEADLINE, done).await?;
    ensure!(replicas[standby].metric("sluice_leader").await? == 1.0);
    watch.abort();

    let history = history.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eprintln!("leader: (step, weight) as watched: {history:?}");
    let backwards = history
        .windows(2)
        .any(|w| w[1].0 < w[0].0 || w[1].1 < w[0].1);
    ensure!(!backwards, "went backwards: {history:?}");
    let skipped = history.windows(2).any(|w| w[1].0 > w[0].0 + 1);
    ensure!(!skipped, "a step was skipped: {history:?}");
    for index in 1..step_count as i32 {
        ensure!(
            history.iter().any(|(step, _)| *step == index),
            "step index {index} never seen: {history:?}"
        );
    }
    for weight in WEIGHTS {
        ensure!(
            history.iter().any(|(_, w)| *w == weight),
            "weight {weight} never seen: {history:?}"
        );
    }

    // Each step completed once, across both leaders. kube's Recorder folds the Events of one
    // replica with the same reason into one series (its count), which keeps the message of the
    // first: so each replica's series must be a run of consecutive steps, and the runs must
    // follow each other from step 1 to the last with no gap or overlap.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for event in events_with_reason(client, ns, "StepCompleted").await? {
        if event.involved_object.name.as_deref() != Some(name) {
            continue;
        }
        let message = event.message.clone().unwrap_or_default();
        let first = message
            .strip_prefix("step ")
            .and_then(|m| m.split('/').next())
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("a StepCompleted Event without its step: {message:?}"))?;
        let count = event.series.as_ref().map_or(1, |s| s.count.unwrap_or(1));
        runs.push((first, usize::try_from(count)?));
    }
    runs.sort();
    eprintln!("leader: StepCompleted (first step, count) per replica: {runs:?}");
    // Except one: the interrupted leader may have stopped between the status write of a step
    // and its Event, whose publish the lease gate then refuses when it wakes (or that a kill
    // never let it make). Its log names that step done; the watched status above saw it once.
    let published = |step: usize| runs.iter().any(|(f, c)| (*f..f + c).contains(&step));
    let unpublished: Vec<usize> = std::fs::read_to_string(&replicas[leader].log)?
        .lines()
        .filter(|line| line.contains("StepCompleted") && line.contains(" done: "))
        .filter_map(|line| line.split(" step ").nth(1)?.split('/').next()?.parse().ok())
        .filter(|step| !published(*step))
        .collect();
    ensure!(
        unpublished.len() <= 1,
        "the interrupted leader lost the Events of steps {unpublished:?}: {runs:?}"
    );
    if let Some(step) = unpublished.first() {
        eprintln!("leader: the Event of step {step} was lost with the interrupted leader");
    }
    let mut next = 1;
    for (first, count) in &runs {
        if unpublished.contains(&next) {
            next += 1;
        }
        ensure!(
            *first == next,
            "steps completed out of order (a step repeated or skipped): {runs:?}"
        );
        next += count;
    }
    if unpublished.contains(&next) {
        next += 1;
    }
    ensure!(
        next == step_count + 1,
        "{} steps completed, want {step_count}: {runs:?}",
        next - 1
    );
    Ok(())
}
