//! The demo's pods are real processes: the harness's pod runner plays every `*/demo-app:*`
//! container as a demo-app inside a network namespace of its own, on the pod's IP, with the
//! container's env (so a version's behaviour comes from the Rollout), and reports readiness from
//! its probe. This module only reads what runs: which pods are ready and what version each is.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use rollout_controller::crd::POD_TEMPLATE_HASH_LABEL;

/// A ready pod the runner plays, as the footer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunningPod {
    pub hash: String,
    pub version: String,
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
    // Without an address no endpoint, and so no proxy, can reach it.
    pod.status
        .as_ref()?
        .pod_ip
        .as_deref()?
        .parse::<Ipv4Addr>()
        .ok()?;
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
    Some(RunningPod { hash, version })
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
    fn a_ready_pod_runs_its_version() {
        let running = running(&[pod(ready_pod())]);
        assert_eq!(running.len(), 1);
        let web = &running[0];
        assert_eq!((web.hash.as_str(), web.version.as_str()), ("abc", "v2"));
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
}
