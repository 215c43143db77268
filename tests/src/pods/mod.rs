//! The pod runner: a small kubelet for processes. For each pod on a kwok node whose first
//! container's image the table in [`programs`] maps to a program, it runs that program in a
//! network namespace holding the pod IP kwok assigned, reports readiness from the pod's probe,
//! restarts the program when it exits, and stops it gracefully when the pod is deleted. kwok's
//! stages leave these pods alone (see [`kwok_stages`]).
//!
//! It runs as its own process (`sluice-pod-runner`), started by the harness beside kwok, so
//! that a detached cluster (`sluice-cluster up`) keeps its pods running.

pub mod netns;
mod pod;
pub mod probe;
pub mod process;
pub mod programs;
pub mod range;
mod status;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::Result;

pub use pod::Shared;

/// How long the pod tasks get to stop their processes and remove their networks when the
/// runner stops; within the harness's grace for the runner itself.
const STOP_TIMEOUT: Duration = Duration::from_secs(4);

struct Running {
    pod: watch::Sender<Pod>,
}

/// Watches scheduled pods and runs those the table maps until `stop` fires; then stops every
/// process and removes every network it made.
pub async fn run(shared: Shared, mut stop: watch::Receiver<bool>) -> Result<()> {
    let swept = netns::sweep().await;
    if !swept.is_empty() {
        tracing::info!(?swept, "removed what an earlier runner left behind");
    }
    netns::guard_pod_range().await?;
    let shared = Arc::new(shared);
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields("spec.nodeName!=");
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let (stop_pods, stop_rx) = watch::channel(false);
    let mut running: HashMap<String, Running> = HashMap::new();
    let mut tasks = JoinSet::new();
    // Pods seen since the watcher's last (re)list began: after it, the others are gone.
    let mut listed: Vec<String> = Vec::new();
    // Ends when `stop` fires or the watch stream ends.
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let Some(event) = event else { break };
        let pod = match event {
            Ok(Event::Apply(pod)) => pod,
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listed.push(uid);
                }
                pod
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    running.remove(uid);
                }
                continue;
            }
            Ok(Event::Init) => {
                listed.clear();
                continue;
            }
            Ok(Event::InitDone) => {
                running.retain(|uid, _| listed.contains(uid));
                continue;
            }
            Err(e) => {
                tracing::warn!("watching pods: {e}");
                continue;
            }
        };
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        if let Some(existing) = running.get(&uid) {
            existing.pod.send_replace(pod);
            continue;
        }
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_deref())
            .unwrap_or_default();
        if programs::program_for(image).is_none() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::info!(pod = %name, %uid, %image, "running");
        let (tx, rx) = watch::channel(pod);
        running.insert(uid.clone(), Running { pod: tx });
        let task = pod::supervise(shared.clone(), uid, rx, stop_rx.clone());
        // Named by its span (task names need tokio_unstable): every log line of it says
        // which pod it runs.
        tasks.spawn(task.instrument(tracing::info_span!("pod task", pod = %name)));
    }
    tracing::info!(pods = running.len(), "stopping");
    let _ = stop_pods.send(true);
    drop(running);
    let drained = tokio::time::timeout(STOP_TIMEOUT, async {
        // Bounded by the set: each turn takes one task out.
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    let swept = netns::sweep().await;
    if !swept.is_empty() {
        tracing::warn!(?swept, "removed what pod tasks left behind");
    }
    Ok(())
}

/// kwok's stages for the pods the runner owns, and the selector to keep kwok's own stages off
/// them: kwok only marks them Running with an IP (so that the runner knows their address),
/// never Ready, and never deletes them.
pub mod kwok_stages {
    use super::programs::kwok_selector;

    /// A matchExpression (YAML, indented for a Stage's `selector.matchExpressions`) that holds
    /// for pods the runner does not own.
    pub fn not_runner_pod() -> String {
        expression("NotIn")
    }

    fn expression(operator: &str) -> String {
        format!(
            "    - key: '{}'\n      operator: '{operator}'\n      values:\n      - 'true'\n",
            kwok_selector().replace('\'', "''")
        )
    }

    /// The stage that starts a runner pod: Running, with kwok's IP, not ready.
    pub fn runner_pod_start() -> String {
        format!(
            r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: sluice-runner-pod-start
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Pending'
{runner}  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "False"
        type: Ready
      - lastTransitionTime: {{{{ $now | Quote }}}}
        status: "False"
        type: ContainersReady
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: false
        restartCount: 0
        started: false
        state:
          waiting:
            reason: ContainerCreating
      {{{{ end }}}}
      {{{{ $hostIPs := NodeIPsWith .spec.nodeName }}}}
      {{{{ with $hostIPs }}}}
      hostIP: {{{{ index . 0 | Quote }}}}
      hostIPs:
      {{{{ range . }}}}
      - ip: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ end }}}}
      {{{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}}}
      {{{{ with $podIPs }}}}
      podIP: {{{{ index . 0 | Quote }}}}
      podIPs:
      {{{{ range . }}}}
      - ip: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
"#,
            runner = expression("In")
        )
    }

    /// Adds [`not_runner_pod`] to a kwok Stage's `selector.matchExpressions`.
    pub fn exclude_runner_pods(stage: &str) -> Option<String> {
        let marker = "    matchExpressions:\n";
        let at = stage.find(marker)? + marker.len();
        let (head, tail) = stage.split_at(at);
        Some(format!("{head}{}{tail}", not_runner_pod()))
    }
}

/// The directory of the workspace's cargo-built binaries: `$SLUICE_BIN_DIR`, else the
/// directory of the running executable (its parent for a test or an example, which cargo puts
/// in `deps/` or `examples/`).
pub fn cargo_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(crate::HarnessError::io("finding our executable"))?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let nested = dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples");
    Ok(if nested {
        dir.parent().map(PathBuf::from).unwrap_or(dir)
    } else {
        dir
    })
}
