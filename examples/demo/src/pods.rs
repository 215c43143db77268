//! kwok's pods run no process, so the demo plays the kubelet's part for them: every scheduled
//! pod of the namespace gets one demo-app process on a free 127.0.0.1 port, started with exactly
//! the literal `env` of the pod's first container (the pod template's, so a version's behaviour
//! comes from the Rollout), and stopped when the pod is deleted. Prometheus scrapes each process
//! with the labels a Kubernetes service discovery would give it: the pod, its pod-template hash
//! and its version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use rollout_controller::crd::POD_TEMPLATE_HASH_LABEL;
use sluice_tests::process::ManagedProcess;
use sluice_tests::prometheus_live::{LivePrometheus, ScrapeTarget};
use tokio::sync::Mutex;

use crate::console::Console;
use crate::observe::Watched;

/// Where a pod's process listens, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    pub port: u16,
    pub hash: String,
    pub version: String,
}

struct PodProcess {
    backend: Backend,
    process: ManagedProcess,
}

pub(crate) struct Pods {
    demo_app: PathBuf,
    env: PathBuf,
    log_dir: PathBuf,
    prometheus: Arc<LivePrometheus>,
    console: Console,
    processes: Mutex<BTreeMap<String, PodProcess>>,
    /// By pod name; what the load generator sends requests to.
    backends: RwLock<BTreeMap<String, Backend>>,
}

/// What a pod asks to run.
#[derive(Debug, Clone, PartialEq)]
struct Wanted {
    hash: String,
    env: Vec<(String, String)>,
}

impl Pods {
    pub(crate) fn new(
        demo_app: PathBuf,
        env: PathBuf,
        log_dir: &Path,
        prometheus: Arc<LivePrometheus>,
        console: Console,
    ) -> Self {
        Self {
            demo_app,
            env,
            log_dir: log_dir.to_path_buf(),
            prometheus,
            console,
            processes: Mutex::new(BTreeMap::new()),
            backends: RwLock::new(BTreeMap::new()),
        }
    }

    /// Keeps one process per scheduled, undeleted pod until an error (a process that died).
    pub(crate) async fn supervise(&self, pods: &Watched<Pod>) -> anyhow::Error {
        let mut changes = pods.changes();
        loop {
            if let Err(e) = self.sync(&pods.state()).await {
                return e;
            }
            // The watch wakes us at once; the tick notices a process that exited on its own.
            let _ = tokio::time::timeout(Duration::from_millis(500), changes.changed()).await;
        }
    }

    async fn sync(&self, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        let wanted: BTreeMap<String, Wanted> = pods
            .iter()
            .filter_map(|pod| Some((pod.name_any(), wanted(pod)?)))
            .collect();
        let mut processes = self.processes.lock().await;
        let mut changed = false;
        let gone: Vec<String> = processes
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut running) = processes.remove(&name) {
                running.process.stop().await;
                changed = true;
            }
        }
        for (name, running) in processes.iter() {
            running
                .process
                .ensure_running()
                .with_context(|| format!("the demo-app process of pod {name}"))?;
        }
        for (name, want) in &wanted {
            if processes.contains_key(name) {
                continue;
            }
            let started = self.start(name, want)?;
            processes.insert(name.clone(), started);
            changed = true;
        }
        if changed {
            let targets: Vec<ScrapeTarget> = processes
                .iter()
                .map(|(pod, running)| ScrapeTarget {
                    port: running.backend.port,
                    labels: BTreeMap::from([
                        ("pod".to_owned(), pod.clone()),
                        (
                            POD_TEMPLATE_HASH_LABEL.replace('-', "_"),
                            running.backend.hash.clone(),
                        ),
                        ("version".to_owned(), running.backend.version.clone()),
                    ]),
                })
                .collect();
            self.prometheus
                .set_targets(&targets)
                .context("updating Prometheus' targets")?;
            let backends = processes
                .iter()
                .map(|(pod, running)| (pod.clone(), running.backend.clone()))
                .collect();
            *self
                .backends
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = backends;
        }
        Ok(())
    }

    fn start(&self, pod: &str, want: &Wanted) -> anyhow::Result<PodProcess> {
        let port = free_port()?;
        let version = want
            .env
            .iter()
            .find(|(name, _)| name == "DEMO_VERSION")
            .map_or_else(|| want.hash.clone(), |(_, value)| value.clone());
        // `env -i` gives the process the pod's environment and nothing of ours, as a container
        // would get; DEMO_LISTEN comes last so that it wins. env execs demo-app in place, so the
        // pid ManagedProcess signals is demo-app's.
        let mut args = vec!["-i".to_owned()];
        args.extend(
            want.env
                .iter()
                .map(|(name, value)| format!("{name}={value}")),
        );
        args.push(format!("DEMO_LISTEN=127.0.0.1:{port}"));
        args.push(self.demo_app.display().to_string());
        let process = ManagedProcess::spawn(pod, &self.env, &args, &self.log_dir)
            .with_context(|| format!("starting demo-app for pod {pod}"))?;
        let settings: Vec<String> = want
            .env
            .iter()
            .filter(|(name, _)| name != "DEMO_VERSION")
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        self.console.say(format!(
            "pod {pod} ({version}) scheduled: demo-app on 127.0.0.1:{port} {}",
            settings.join(" ")
        ));
        Ok(PodProcess {
            backend: Backend {
                port,
                hash: want.hash.clone(),
                version,
            },
            process,
        })
    }

    /// The running processes, by pod name.
    pub(crate) fn backends(&self) -> BTreeMap<String, Backend> {
        self.backends
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Running processes per pod-template hash.
    pub(crate) fn count_by_hash(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for backend in self.backends().values() {
            *counts.entry(backend.hash.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Running processes per version.
    pub(crate) fn count_by_version(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for backend in self.backends().values() {
            *counts.entry(backend.version.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period).
    pub(crate) async fn stop_all(&self) {
        let processes = std::mem::take(&mut *self.processes.lock().await);
        let stops = processes.into_values().map(|mut running| async move {
            running.process.stop().await;
        });
        futures::future::join_all(stops).await;
    }
}

/// A pod that a kubelet would run: scheduled, not being deleted, not finished, and made by a
/// Rollout's ReplicaSet (it has a pod-template hash).
fn wanted(pod: &Pod) -> Option<Wanted> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    spec.node_name.as_ref()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let hash = pod.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone();
    let container = spec.containers.first()?;
    // Only literal values: valueFrom (Secrets, fields) needs a kubelet.
    let env = container
        .env
        .iter()
        .flatten()
        .filter_map(|var| Some((var.name.clone(), var.value.clone()?)))
        .collect();
    Some(Wanted { hash, env })
}

/// A port the kernel just handed out on loopback and we let go of, for demo-app to bind.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_scheduled_pod_runs_its_literal_env() {
        let scheduled = pod(json!({
            "metadata": {"name": "web-1", "labels": {"rollouts-pod-template-hash": "abc"}},
            "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "web", "env": [
                {"name": "DEMO_ERROR_RATE", "value": "0.05"},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            ]}]},
        }));
        assert_eq!(
            wanted(&scheduled),
            Some(Wanted {
                hash: "abc".into(),
                env: vec![("DEMO_ERROR_RATE".into(), "0.05".into())],
            })
        );
    }

    #[test]
    fn unscheduled_deleted_and_unowned_pods_run_nothing() {
        let base = json!({
            "metadata": {"name": "web-1", "labels": {"rollouts-pod-template-hash": "abc"}},
            "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "web"}]},
        });
        let mut unscheduled = base.clone();
        unscheduled["spec"]
            .as_object_mut()
            .unwrap()
            .remove("nodeName");
        let mut deleted = base.clone();
        deleted["metadata"]["deletionTimestamp"] = json!("2026-12-01T07:00:00Z");
        let mut unowned = base.clone();
        unowned["metadata"]["labels"] = json!({});
        for value in [unscheduled, deleted, unowned] {
            assert_eq!(wanted(&pod(value.clone())), None, "{value}");
        }
        assert!(wanted(&pod(base)).is_some());
    }
}
