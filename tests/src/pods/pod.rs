//! One pod's life under the runner: wait for its IP, make its network, run its first
//! container (restarting it when it exits or fails liveness), report readiness from its probe,
//! and on deletion stop it gracefully before removing the pod object and the network.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use tokio::sync::watch;
use tokio::time::Instant;

use super::netns::PodNetwork;
use super::probe::{Probe, ProbeState};
use super::process::{ContainerProcess, Launch};
use super::programs::{executable, program_for};
use super::status::{ContainerReport, State, Terminated};

/// The first restart waits this long; each further one twice as long, up to [`BACKOFF_MAX`]
/// (kubelet starts at 10 s and caps at 5 min; tests want restarts within seconds).
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// A run this long resets the backoff, as kubelet does after 10 minutes.
const BACKOFF_RESET: Duration = Duration::from_secs(30);
/// kubelet's default terminationGracePeriodSeconds.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// When the runner itself stops (the cluster is going away), processes get this long.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The `lastState.terminated.reason` of a container killed for failing its liveness probe
/// (kubelet says `Error`, and tells the cause in an Event; the runner writes no Events).
const LIVENESS_FAILED: &str = "LivenessProbeFailed";
/// The port a program listens on when its container declares none.
const DEFAULT_PORT: i32 = 8080;

/// What every pod task shares.
pub struct Shared {
    pub client: kube::Client,
    pub programs_dir: PathBuf,
    pub logs: PathBuf,
}

/// Why a container run ended.
enum Ended {
    Exited {
        code: i32,
        reason: &'static str,
    },
    Deleting,
    /// The pod object is gone (deleted with grace 0 by someone else), or the runner stops.
    Abandon,
}

/// Runs pod `uid` until it is deleted or `stop` fires. `pod` carries every update of it;
/// its sender is dropped when the pod object is gone.
pub(super) async fn supervise(
    shared: Arc<Shared>,
    uid: String,
    mut pod: watch::Receiver<Pod>,
    mut stop: watch::Receiver<bool>,
) {
    let name = pod.borrow().metadata.name.clone().unwrap_or_default();
    let namespace = pod.borrow().metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &namespace);
    let reporter = Reporter {
        api: api.clone(),
        name: name.clone(),
    };

    // Bounded by the pod's life: each turn waits for an update, and ends when it is deleted.
    let ip = loop {
        let current = pod.borrow_and_update().clone();
        if current.metadata.deletion_timestamp.is_some() {
            delete_now(&api, &name, &uid).await;
            return;
        }
        if let Some(ip) = pod_ip(&current) {
            break ip;
        }
        tokio::select! {
            changed = pod.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    };
    let spec = pod.borrow().clone();
    let Some(container) = spec
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .cloned()
    else {
        return;
    };
    let image = container.image.clone().unwrap_or_default();
    let Some(program) = program_for(&image) else {
        return;
    };
    let mut report = ContainerReport {
        name: container.name.clone(),
        image: image.clone(),
        restart_count: 0,
        ready: false,
        state: State::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        },
        last_terminated: None,
    };

    let network = PodNetwork::for_pod(&uid, ip);
    let log = shared.logs.join(format!("pod-{namespace}-{name}.log"));
    let exe = executable(program, &shared.programs_dir);
    let setup = match network.create().await {
        Ok(()) if exe.is_file() => Ok(()),
        Ok(()) => Err(format!(
            "{} is not built (cargo build --workspace --bins)",
            exe.display()
        )),
        Err(e) => Err(e.to_string()),
    };
    if let Err(message) = setup {
        tracing::warn!(pod = %name, "cannot run: {message}");
        report.state = State::Waiting {
            reason: "RunnerSetupFailed".into(),
            message,
        };
        reporter.send(&report).await;
        wait_for_deletion(&mut pod, &mut stop).await;
        network.remove().await;
        if deleting(&pod.borrow()) {
            delete_now(&api, &name, &uid).await;
        }
        return;
    }
    tracing::info!(pod = %name, %ip, netns = %network.namespace, "network ready");

    let launch = launch_for(&container, &network.namespace, exe, program.listen_env);
    let readiness = container
        .readiness_probe
        .as_ref()
        .map(|p| Probe::from_spec(p, &container));
    let liveness = container
        .liveness_probe
        .as_ref()
        .map(|p| Probe::from_spec(p, &container));
    for probe in readiness.iter().chain(liveness.iter()) {
        if let Some(what) = probe.unsupported() {
            tracing::warn!(pod = %name, "{what} are not run; they count as passing");
        }
    }

    let mut backoff = BACKOFF_START;
    // One turn per run of the container; ends on deletion or stop.
    let ended = loop {
        let started_at = Timestamp::now();
        let started = Instant::now();
        let mut process = match ContainerProcess::start(&launch, &log) {
            Ok(process) => process,
            Err(e) => {
                tracing::warn!(pod = %name, "start failed: {e}");
                report.state = State::Waiting {
                    reason: "StartError".into(),
                    message: e.to_string(),
                };
                reporter.send(&report).await;
                break wait_for_deletion(&mut pod, &mut stop).await;
            }
        };
        report.state = State::Running { started_at };
        report.ready = readiness.is_none();
        reporter.send(&report).await;
        let ended = run_container(
            &mut process,
            ip,
            readiness.as_ref(),
            liveness.as_ref(),
            &mut report,
            &reporter,
            &mut pod,
            &mut stop,
        )
        .await;
        let (mut code, reason) = match ended {
            Ended::Exited { code, reason } => (code, reason),
            Ended::Deleting => {
                let grace = grace_period(&pod.borrow());
                tracing::info!(pod = %name, ?grace, "deleting: SIGTERM");
                let status = process.terminate(grace).await;
                tracing::info!(pod = %name, ?status, "exited after SIGTERM");
                break Ended::Deleting;
            }
            Ended::Abandon => {
                process.terminate(SHUTDOWN_GRACE).await;
                break Ended::Abandon;
            }
        };
        if reason == LIVENESS_FAILED {
            let grace = grace_period(&pod.borrow());
            tracing::info!(pod = %name, "liveness probe failed: restarting");
            code = process.terminate(grace).await.map(exit_code).unwrap_or(-1);
        }
        tracing::info!(pod = %name, code, reason, "container ended; restarting in {backoff:?}");
        if started.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_START;
        }
        report.restart_count += 1;
        report.ready = false;
        report.last_terminated = Some(Terminated {
            exit_code: code,
            reason: reason.into(),
            started_at,
            finished_at: Timestamp::now(),
        });
        report.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!("back-off {backoff:?} restarting the container"),
        };
        reporter.send(&report).await;
        let wait = tokio::time::sleep(backoff);
        tokio::pin!(wait);
        // Bounded by the backoff; an update that is not a deletion only loops again.
        let interrupted = loop {
            tokio::select! {
                () = &mut wait => break None,
                changed = pod.changed() => {
                    if changed.is_err() { break Some(Ended::Abandon) }
                    if deleting(&pod.borrow()) { break Some(Ended::Deleting) }
                }
                _ = stop.changed() => break Some(Ended::Abandon),
            }
        };
        if let Some(ended) = interrupted {
            break ended;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    };

    // The process has exited: now the pod object may go, and then its network.
    if matches!(ended, Ended::Deleting) {
        delete_now(&api, &name, &uid).await;
    }
    network.remove().await;
    tracing::info!(pod = %name, "done");
}

/// Watches one run: the exit, the probes, the pod's updates. Bounded by the process's life or
/// the pod's: every arm either loops after a probe period or ends the run.
#[allow(clippy::too_many_arguments)]
async fn run_container(
    process: &mut ContainerProcess,
    ip: Ipv4Addr,
    readiness: Option<&Probe>,
    liveness: Option<&Probe>,
    report: &mut ContainerReport,
    reporter: &Reporter,
    pod: &mut watch::Receiver<Pod>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let start = Instant::now();
    let mut next_ready = readiness.map(|p| start + p.initial_delay);
    let mut next_live = liveness.map(|p| start + p.initial_delay);
    let mut ready_state = ProbeState::default();
    let mut live_state = ProbeState::default();
    let mut alive = true;
    loop {
        let next = match (next_ready, next_live) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            // No probes: only the other arms can end the run; this one just loops.
            (None, None) => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            status = process.wait() => {
                let code = status.map(exit_code).unwrap_or(-1);
                return Ended::Exited { code, reason: if code == 0 { "Completed" } else { "Error" } };
            }
            () = tokio::time::sleep_until(next) => {
                let now = Instant::now();
                if let (Some(probe), Some(at)) = (readiness, next_ready)
                    && at <= now
                {
                    let passed = probe.run(ip).await;
                    if let Some(verdict) = probe.record(&mut ready_state, passed, report.ready) {
                        report.ready = verdict;
                        reporter.send(report).await;
                    }
                    next_ready = Some(at + probe.period);
                }
                if let (Some(probe), Some(at)) = (liveness, next_live)
                    && at <= now
                {
                    let passed = probe.run(ip).await;
                    if let Some(verdict) = probe.record(&mut live_state, passed, alive) {
                        alive = verdict;
                    }
                    if !alive {
                        return Ended::Exited { code: 0, reason: LIVENESS_FAILED };
                    }
                    next_live = Some(at + probe.period);
                }
            }
            changed = pod.changed() => {
                if changed.is_err() { return Ended::Abandon }
                if deleting(&pod.borrow()) { return Ended::Deleting }
            }
            _ = stop.changed() => return Ended::Abandon,
        }
    }
}

/// Sends status patches for one pod; a failed patch is logged (the next change sends the whole
/// state again).
struct Reporter {
    api: Api<Pod>,
    name: String,
}

impl Reporter {
    async fn send(&self, report: &ContainerReport) {
        let patch = report.patch();
        if let Err(e) = self
            .api
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            tracing::warn!(pod = %self.name, "status patch: {e}");
        }
    }
}

/// Waits until the pod is being deleted, is gone, or the runner stops.
async fn wait_for_deletion(
    pod: &mut watch::Receiver<Pod>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    // Bounded by the pod's life: each turn is one update.
    loop {
        if deleting(&pod.borrow_and_update()) {
            return Ended::Deleting;
        }
        tokio::select! {
            changed = pod.changed() => if changed.is_err() { return Ended::Abandon },
            _ = stop.changed() => return Ended::Abandon,
        }
    }
}

/// Removes the pod object now that nothing of it runs, as kubelet does once its containers
/// have stopped (grace 0, and only the pod we ran: a new pod of the same name is not touched).
async fn delete_now(api: &Api<Pod>, name: &str, uid: &str) {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(e) => tracing::warn!(pod = %name, "deleting: {e}"),
    }
}

/// As a container runtime reports it: the exit code, or 128 + the signal that killed it.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn deleting(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// The deletion's grace period, else the pod's, else kubelet's default.
fn grace_period(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds);
    seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_GRACE)
}

/// The container's `args` and literal `env` (valueFrom is not resolved), and the listen
/// address on its first declared port unless its env sets one.
fn launch_for(
    container: &Container,
    namespace: &str,
    executable: PathBuf,
    listen_env: &str,
) -> Launch {
    let mut env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect();
    if !env.iter().any(|(k, _)| k == listen_env) {
        let port = container
            .ports
            .iter()
            .flatten()
            .next()
            .map(|p| p.container_port)
            .unwrap_or(DEFAULT_PORT);
        env.push((listen_env.to_owned(), format!("0.0.0.0:{port}")));
    }
    Launch {
        namespace: namespace.to_owned(),
        executable,
        args: container.args.clone().unwrap_or_default(),
        env,
    }
}
