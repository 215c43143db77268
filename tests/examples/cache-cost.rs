//! What one ReplicaSet costs in a controller's cache: N ReplicaSets shaped as Sluice writes them
//! and the apiserver lists them (two managedFields entries, the `sluice.dev/pod-template`
//! annotation), deserialized into `k8s_openapi` objects behind `Arc`s as a reflector store holds
//! them; the same without managedFields and without the annotation; for the scale bench's
//! one-container template and for a template of about 2 KB. Then a watch's churn (every object
//! replaced by a new copy, over four threads) and what glibc still holds after `malloc_trim(0)`.
//!
//!   cargo run --release -p sluice-tests --example cache-cost
//!
//! No cluster: the objects are made here. RSS is read from /proc before and after, with
//! `malloc_trim(0)` (called through gdb, since the workspace forbids unsafe code) first, so
//! that freed memory is not counted.
use std::sync::Arc;

use anyhow::{Context, ensure};

use k8s_openapi::api::apps::v1::ReplicaSet;
use serde_json::{Value, json};

/// Has glibc give back the free memory it holds.
fn trim() -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("gdb")
        .args(["-p", &pid, "-batch", "-ex", "call (int) malloc_trim(0)"])
        .output()
        .context("running gdb")?;
    ensure!(out.status.success(), "gdb could not call malloc_trim");
    Ok(())
}

fn rss_kib() -> anyhow::Result<u64> {
    Ok(sluice_tests::procfs::Memory::read(std::process::id())?.rss_kib)
}

/// A pod template: the scale bench's one container, or one of about 2 KB as services have.
fn template(big: bool) -> Value {
    let mut c = json!({
        "name": "app", "image": "bench:2", "resources": {},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    });
    if big {
        let env: Vec<Value> = (0..15)
            .map(|i| json!({"name": format!("SETTING_NUMBER_{i}"), "value": format!("some-value-of-moderate-length-{i}")}))
            .collect();
        c["env"] = json!(env);
        c["ports"] = json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]);
        c["resources"] = json!({"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}});
        c["readinessProbe"] = json!({
            "httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
            "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3,
        });
        c["livenessProbe"] = c["readinessProbe"].clone();
    }
    json!({
        "metadata": {"labels": {"app": "r-00001", "rollouts-pod-template-hash": "5d8f7c9b6"}},
        "spec": {
            "containers": [c], "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst", "securityContext": {}, "schedulerName": "default-scheduler",
        },
    })
}

#[derive(Clone, Copy)]
struct Shape {
    big: bool,
    managed_fields: bool,
    template_annotation: bool,
}

/// The `i`th ReplicaSet, as the apiserver lists one that Sluice applied and
/// kube-controller-manager counted the pods of.
fn replica_set(i: usize, shape: Shape) -> anyhow::Result<Vec<u8>> {
    let t = template(shape.big);
    let mut annotations = json!({"sluice.dev/revision": "2"});
    if shape.template_annotation {
        annotations["sluice.dev/pod-template"] = json!(serde_json::to_string(&t)?);
    }
    let mut rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": format!("r-{i:05}-5d8f7c9b6"), "namespace": "scale",
            "uid": format!("7f3c2a1e-0000-4000-8000-{i:012}"),
            "resourceVersion": format!("{}", 100000 + i), "generation": 2,
            "creationTimestamp": "2026-12-02T01:00:00Z",
            "labels": {"app": "r-00001", "rollouts-pod-template-hash": "5d8f7c9b6"},
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": format!("r-{i:05}"),
                "uid": format!("1a2b3c4d-0000-4000-8000-{i:012}"), "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "replicas": 1, "minReadySeconds": 0,
            "selector": {"matchLabels": {"app": "r-00001", "rollouts-pod-template-hash": "5d8f7c9b6"}},
            "template": t,
        },
        "status": {"replicas": 1, "fullyLabeledReplicas": 1, "readyReplicas": 1, "availableReplicas": 1, "observedGeneration": 2},
    });
    if shape.managed_fields {
        rs["metadata"]["managedFields"] = json!([
            {"manager": "sluice", "operation": "Apply", "apiVersion": "apps/v1", "time": "2026-12-02T01:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {"f:sluice.dev/pod-template": {}, "f:sluice.dev/revision": {}},
                    "f:labels": {"f:app": {}, "f:rollouts-pod-template-hash": {}},
                    "f:ownerReferences": {"k:{\"uid\":\"1a2b\"}": {}},
                },
                "f:spec": {
                    "f:minReadySeconds": {}, "f:replicas": {}, "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}, "f:rollouts-pod-template-hash": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}},
                    },
                },
            }},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
             "time": "2026-12-02T01:00:02Z", "fieldsType": "FieldsV1", "subresource": "status",
             "fieldsV1": {"f:status": {"f:availableReplicas": {}, "f:fullyLabeledReplicas": {}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}}}},
        ]);
    }
    Ok(serde_json::to_vec(&rs)?)
}

fn decode(text: &[u8]) -> anyhow::Result<Arc<ReplicaSet>> {
    Ok(Arc::new(serde_json::from_slice(text)?))
}

/// Bytes of RSS per cached ReplicaSet of `shape`, and its JSON's length.
fn measure(n: usize, shape: Shape) -> anyhow::Result<(f64, usize)> {
    trim()?;
    let before = rss_kib()?;
    let json_len = replica_set(0, shape)?.len();
    let cache = (0..n)
        .map(|i| decode(&replica_set(i, shape)?))
        .collect::<anyhow::Result<Vec<_>>>()?;
    trim()?;
    let after = rss_kib()?;
    drop(cache);
    Ok((
        after.saturating_sub(before) as f64 * 1024.0 / n as f64,
        json_len,
    ))
}

fn main() -> anyhow::Result<()> {
    let n = 20_000;
    println!("{n} ReplicaSets cached as k8s_openapi objects; RSS per ReplicaSet after malloc_trim");
    println!(
        "{:<22} {:<44} {:>9} {:>13}",
        "template", "as cached", "JSON B", "in memory B"
    );
    for big in [false, true] {
        let name = if big { "about 2 KB" } else { "the bench's" };
        for (what, managed_fields, template_annotation) in [
            ("as listed", true, true),
            ("without managedFields", false, true),
            ("without managedFields nor pod-template", false, false),
        ] {
            let shape = Shape {
                big,
                managed_fields,
                template_annotation,
            };
            let (bytes, json_len) = measure(n, shape)?;
            println!("{name:<22} {what:<44} {json_len:>9} {bytes:>13.0}");
        }
    }
    // A watch's churn: each object replaced by a new copy six times, the JSON text freed in
    // between, on four threads (each with its glibc arena).
    trim()?;
    let base = rss_kib()?;
    let shape = Shape {
        big: false,
        managed_fields: true,
        template_annotation: true,
    };
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || -> anyhow::Result<Vec<Arc<ReplicaSet>>> {
                let mut cache = (0..n / 4)
                    .map(|i| decode(&replica_set(i + t * n, shape)?))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                for _ in 0..5 {
                    for (i, slot) in cache.iter_mut().enumerate() {
                        *slot = decode(&replica_set(i + t * n, shape)?)?;
                    }
                }
                Ok(cache)
            })
        })
        .collect();
    let mut caches = Vec::new();
    for thread in threads {
        caches.push(
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a thread panicked"))??,
        );
    }
    let held = rss_kib()?;
    trim()?;
    let trimmed = rss_kib()?;
    println!(
        "churn, {n} cached over 4 threads, each replaced 5 times: RSS +{:.1} MiB, after malloc_trim +{:.1} MiB",
        held.saturating_sub(base) as f64 / 1024.0,
        trimmed.saturating_sub(base) as f64 / 1024.0
    );
    drop(caches);
    Ok(())
}
