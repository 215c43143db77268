//! The demo's pods are real processes: the harness's pod runner plays every `*/demo-app:*`
//! container as a demo-app inside a network namespace of its own, on the pod's IP, with the
//! container's env (so a version's behaviour comes from the Rollout), and reports readiness from
//! its probe. This module only reads what runs: which pods are ready, what version each is, and
//! which pod IPs belong to a network namespace the runner made — the only ones the load
//! generator may send to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use rollout_controller::crd::POD_TEMPLATE_HASH_LABEL;
use sluice_tests::pods::netns::{self, PodNetwork};

/// A ready pod the runner plays, as the load generator and the footer see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunningPod {
    pub name: String,
    pub ip: Ipv4Addr,
    pub hash: String,
    pub version: String,
    /// The network namespace the runner makes for this pod.
    pub namespace: String,
}

/// The ready pods of a Rollout's ReplicaSets (they carry a pod-template hash), with an IP.
pub(crate) fn running(pods: &[Arc<Pod>]) -> Vec<RunningPod> {
    pods.iter().filter_map(|pod| running_pod(pod)).collect()
}

fn running_pod(pod: &Pod) -> Option<RunningPod> {
    if pod.metadata.deletion_timestamp.is_some() || !is_ready(pod) {
        return None;
    }
    let hash = pod.labels().get(POD_TEMPLATE_HASH_LABEL)?.clone();
    let ip: Ipv4Addr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let uid = pod.metadata.uid.as_deref()?;
    let version = pod
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "DEMO_VERSION")
        .and_then(|var| var.value.clone())
        .unwrap_or_else(|| hash.clone());
    Some(RunningPod {
        name: pod.name_any(),
        ip,
        hash,
        version,
        namespace: PodNetwork::for_pod(uid, ip).namespace,
    })
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready pods per pod-template hash.
pub(crate) fn count_by_hash(pods: &[RunningPod]) -> BTreeMap<String, usize> {
    count(pods.iter().map(|p| p.hash.clone()))
}

/// Ready pods per version.
pub(crate) fn count_by_version(pods: &[RunningPod]) -> BTreeMap<String, usize> {
    count(pods.iter().map(|p| p.version.clone()))
}

fn count(keys: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for key in keys {
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// The network namespaces that exist now, refreshed in the background: a pod IP is sent to
/// only while its namespace is among them.
#[derive(Default)]
pub(crate) struct Networks {
    present: RwLock<BTreeSet<String>>,
}

impl Networks {
    /// Keeps the set current until dropped.
    pub(crate) async fn refresh(&self) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            let present: BTreeSet<String> = netns::namespaces().await.into_iter().collect();
            *self
                .present
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = present;
        }
    }

    pub(crate) fn owns(&self, pod: &RunningPod) -> bool {
        self.present
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&pod.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn ready_pod() -> serde_json::Value {
        json!({
            "metadata": {"name": "web-1", "uid": "0a1b2c3d-0000-4000-8000-000000000001",
                         "labels": {"rollouts-pod-template-hash": "abc"}},
            "spec": {"nodeName": "kwok-node-0", "containers": [{"name": "web", "env": [
                {"name": "DEMO_VERSION", "value": "v2"},
            ]}]},
            "status": {"podIP": "198.18.0.7", "conditions": [{"type": "Ready", "status": "True"}]},
        })
    }

    #[test]
    fn a_ready_pod_runs_its_version_in_the_runners_namespace() {
        let running = running(&[pod(ready_pod())]);
        assert_eq!(running.len(), 1);
        let web = &running[0];
        assert_eq!((web.name.as_str(), web.version.as_str()), ("web-1", "v2"));
        assert_eq!(web.ip, Ipv4Addr::new(198, 18, 0, 7));
        assert_eq!(
            web.namespace,
            PodNetwork::for_pod("0a1b2c3d-0000-4000-8000-000000000001", web.ip).namespace
        );
        assert_eq!(count_by_version(&running)["v2"], 1);
        assert_eq!(count_by_hash(&running)["abc"], 1);
    }

    #[test]
    fn unready_deleted_unowned_and_addressless_pods_are_not_running() {
        let mut unready = ready_pod();
        unready["status"]["conditions"][0]["status"] = json!("False");
        let mut deleted = ready_pod();
        deleted["metadata"]["deletionTimestamp"] = json!("2026-12-01T07:00:00Z");
        let mut unowned = ready_pod();
        unowned["metadata"]["labels"] = json!({});
        let mut addressless = ready_pod();
        addressless["status"]
            .as_object_mut()
            .unwrap()
            .remove("podIP");
        for value in [unready, deleted, unowned, addressless] {
            assert!(running(&[pod(value.clone())]).is_empty(), "{value}");
        }
    }

    #[test]
    fn a_pod_is_owned_only_while_its_namespace_exists() {
        let networks = Networks::default();
        let web = running(&[pod(ready_pod())]).remove(0);
        assert!(!networks.owns(&web));
        networks
            .present
            .write()
            .unwrap()
            .insert(web.namespace.clone());
        assert!(networks.owns(&web));
    }
}
