//! The revision history: the ReplicaSets of old revisions, scaled to zero and kept for an undo,
//! up to `revisionHistoryLimit` per Rollout.
//!
//! The controller labels a ReplicaSet [`RETIRED_LABEL`] in the write that scales it to zero and
//! watches only ReplicaSets without that label, so its cache holds a rollout's live revisions
//! (stable, the one rolling out, one kept for a delay) and not ten old ones: at 10,000 Rollouts
//! the history alone would be about 1 GB of cache. The history is listed from the apiserver,
//! narrowed by the label, when something asks for it: pruning after a retirement, an undo, a
//! view of one rollout. A retired ReplicaSet that is wanted again (an undo, a template changed
//! back) is written as new and loses the label, and the watch brings it back.

use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::crd::{POD_TEMPLATE_HASH_LABEL, RETIRED_LABEL, Rollout};
use crate::decision::revision_number;
use crate::decode::Tolerant;
use crate::owner::owned_by;

/// The ReplicaSets the controller watches and caches: its own (they carry the pod-template
/// hash), and of them only the live ones.
pub(crate) fn watched_selector() -> String {
    format!("{POD_TEMPLATE_HASH_LABEL},!{RETIRED_LABEL}")
}

/// The retired ReplicaSets of `rollout`, from the apiserver. One that does not decode is left
/// out: it can be neither undone to nor counted, and the apiserver still has it.
pub(crate) async fn retired(
    client: &Client,
    rollout: &Rollout,
) -> Result<Vec<ReplicaSet>, kube::Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let api: Api<Tolerant<ReplicaSet>> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("{RETIRED_LABEL}={}", rollout.name_any());
    let listed = api.list(&ListParams::default().labels(&selector)).await?;
    Ok(listed
        .items
        .into_iter()
        .filter_map(Tolerant::decoded)
        .filter(|rs| owned_by(rollout, &rs.metadata))
        .collect())
}

/// A rollout's live ReplicaSets (from the watch's store) and its retired ones (listed) as one
/// set. A name in both is a ReplicaSet the store holds a moment after it was retired: the
/// listed copy, which carries the label, is the newer.
pub(crate) fn with_history(mut live: Vec<ReplicaSet>, retired: &[ReplicaSet]) -> Vec<ReplicaSet> {
    live.retain(|rs| !retired.iter().any(|old| old.name_any() == rs.name_any()));
    live.extend(retired.iter().cloned());
    live
}

/// Of the retired ReplicaSets (name and revision number), those beyond the newest `limit`: the
/// ones to delete. A ReplicaSet without a revision number counts as the oldest.
pub(crate) fn beyond_limit(retired: &[ReplicaSet], limit: usize) -> Vec<String> {
    let mut by_age: Vec<(Option<i64>, String)> = retired
        .iter()
        .map(|rs| (revision_number(rs), rs.name_any()))
        .collect();
    by_age.sort_by(|a, b| b.cmp(a));
    by_age
        .into_iter()
        .skip(limit)
        .map(|(_, name)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::crd::REVISION_ANNOTATION;

    fn retired_rs(name: &str, revision: Option<&str>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: revision
                    .map(|r| BTreeMap::from([(REVISION_ANNOTATION.to_owned(), r.to_owned())])),
                ..ObjectMeta::default()
            },
            ..ReplicaSet::default()
        }
    }

    #[test]
    fn the_newest_revisions_are_kept_and_the_rest_deleted_oldest_first() {
        let history = [
            retired_rs("web-a", Some("3")),
            retired_rs("web-b", Some("10")),
            retired_rs("web-c", None),
            retired_rs("web-d", Some("7")),
            retired_rs("web-e", Some("not a number")),
        ];
        assert_eq!(beyond_limit(&history, 2), ["web-a", "web-e", "web-c"]);
        assert_eq!(beyond_limit(&history, 0).len(), 5);
        assert!(beyond_limit(&history, 5).is_empty());
        assert!(beyond_limit(&[], 0).is_empty());
    }

    #[test]
    fn a_replica_set_both_live_and_listed_retired_is_taken_as_listed() {
        let mut lagging = retired_rs("web-b", Some("2"));
        lagging.spec.replicas = Some(1);
        let live = vec![retired_rs("web-c", Some("3")), lagging];
        let listed = [
            retired_rs("web-a", Some("1")),
            retired_rs("web-b", Some("2")),
        ];
        let all = with_history(live, &listed);
        let names: Vec<String> = all.iter().map(ResourceExt::name_any).collect();
        assert_eq!(names, ["web-c", "web-a", "web-b"]);
        assert!(
            all.iter().all(|rs| rs.spec.replicas.is_none()),
            "the store's copy of web-b was kept"
        );
        assert_eq!(with_history(Vec::new(), &[]).len(), 0);
    }

    #[test]
    fn the_watch_leaves_retired_replica_sets_out() {
        assert_eq!(
            watched_selector(),
            "rollouts-pod-template-hash,!sluice.dev/retired"
        );
    }
}
