//! The objects the controller creates, built from the Rollout: its ReplicaSets and AnalysisRuns.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::ReconcileError;
use crate::crd::analysis::{ANALYSIS_KIND_LABEL, AnalysisRun, ROLLOUT_LABEL};
use crate::crd::{
    POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, Rollout, TEMPLATE_ANNOTATION,
    TEMPLATE_ANNOTATION_LIMIT,
};
use crate::plan::runs::NewAnalysisRun;
use crate::plan::{PodMetadataChange, ReplicaSetTarget};

/// An AnalysisRun owned by the Rollout, labelled with the rollout, revision and what it gates.
pub(crate) fn new_analysis_run(
    rollout: &Rollout,
    new: &NewAnalysisRun,
) -> Result<AnalysisRun, ReconcileError> {
    let owner = rollout
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Manifest {
            name: new.name.clone(),
            detail: "the Rollout has no uid yet".into(),
        })?;
    let value = json!({
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {
            "name": new.name,
            "labels": {
                ROLLOUT_LABEL: rollout.name_any(),
                POD_TEMPLATE_HASH_LABEL: new.hash,
                ANALYSIS_KIND_LABEL: new.kind,
            },
            "ownerReferences": [owner],
        },
        "spec": new.spec,
    });
    serde_json::from_value(value).map_err(|e| ReconcileError::Manifest {
        name: new.name.clone(),
        detail: e.to_string(),
    })
}

/// The ReplicaSet of the Rollout's current template: its labels plus the pod-template hash on
/// the ReplicaSet, its selector and its pods; owned by the Rollout.
pub(crate) fn new_replica_set(
    rollout: &Rollout,
    target: &ReplicaSetTarget,
    name: &str,
    role: Option<&PodMetadataChange>,
) -> Result<ReplicaSet, ReconcileError> {
    let mut template = rollout.spec.template.clone();
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    if let Some(role) = role {
        apply_changes(
            metadata.labels.get_or_insert_with(BTreeMap::new),
            &role.labels,
        );
        apply_changes(
            metadata.annotations.get_or_insert_with(BTreeMap::new),
            &role.annotations,
        );
    }
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_TEMPLATE_HASH_LABEL.into(), target.hash.clone());
    let labels = labels.clone();
    let mut selector = rollout.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), target.hash.clone());
    let mut annotations = BTreeMap::from([(
        REVISION_ANNOTATION.to_owned(),
        target.revision.unwrap_or(1).to_string(),
    )]);
    if let Ok(original) = serde_json::to_string(&rollout.spec.template)
        && original.len() <= TEMPLATE_ANNOTATION_LIMIT
    {
        annotations.insert(TEMPLATE_ANNOTATION.to_owned(), original);
    }
    let owner = rollout
        .controller_owner_ref(&())
        .ok_or_else(|| ReconcileError::Manifest {
            name: name.into(),
            detail: "the Rollout has no uid yet".into(),
        })?;
    let value = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": {
            "replicas": target.replicas,
            "minReadySeconds": rollout.spec.min_ready_seconds.unwrap_or(0),
            "selector": selector,
            "template": template,
        },
    });
    serde_json::from_value(value).map_err(|e| ReconcileError::Manifest {
        name: name.into(),
        detail: e.to_string(),
    })
}

fn apply_changes(map: &mut BTreeMap<String, String>, changes: &BTreeMap<String, Option<String>>) {
    for (key, value) in changes {
        match value {
            Some(value) => map.insert(key.clone(), value.clone()),
            None => map.remove(key),
        };
    }
}
