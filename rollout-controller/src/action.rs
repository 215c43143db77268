//! An action carried out: decided on the rollout as read (`decision.rs`), written with the
//! resourceVersion it was decided on, and decided again when the apiserver refuses the write
//! because the rollout changed since. The REST API and the CLI act through this one loop, so
//! both retry alike and answer a conflict only when the action no longer applies.

use api::{Action, ControlError};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::crd::Rollout;
use crate::decision::{action_patch, pinned};

/// How many times an action is decided again when the rollout changed under it: the
/// controller's own status writes move the resourceVersion several times a step.
pub const ACT_TRIES: usize = 5;

/// Where an action finds the ReplicaSets a rollout owns (an undo decides on them): the REST
/// API in its store, the CLI from the apiserver.
pub trait OwnedReplicaSets {
    fn owned_replica_sets(
        &self,
        rollout: &Rollout,
    ) -> impl Future<Output = Result<Vec<ReplicaSet>, kube::Error>> + Send;
}

/// Why an action was not written.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// The action does not apply to the rollout as it is now.
    #[error("{0}")]
    Refused(String),
    /// The rollout changed under each of [`ACT_TRIES`] decisions.
    #[error("the rollout changed {ACT_TRIES} times while the action was decided")]
    KeptChanging,
    /// Reading the rollout, or what it owns, failed.
    #[error(transparent)]
    Read(kube::Error),
    /// The write failed, and not because the rollout had changed.
    #[error(transparent)]
    Write(kube::Error),
}

impl ActError {
    /// As the REST API answers it about rollout `namespace/name`: a conflict when the action does
    /// not apply or the rollout kept changing, not found when it is gone.
    pub fn into_control_error(self, namespace: &str, name: &str) -> ControlError {
        match self {
            ActError::Refused(why) => ControlError::Conflict(why),
            ActError::KeptChanging => ControlError::Conflict(format!(
                "the rollout changed {ACT_TRIES} times while this request was decided; look again"
            )),
            ActError::Read(e) | ActError::Write(e) => read_error(e, namespace, name),
        }
    }
}

/// A failed request about rollout `namespace/name`: not found on a 404, else the Kubernetes
/// API is unavailable.
pub fn read_error(e: kube::Error, namespace: &str, name: &str) -> ControlError {
    match e {
        kube::Error::Api(status) if status.is_not_found() => ControlError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        },
        e => ControlError::Unavailable(e.to_string()),
    }
}

/// An action written: the rollout as the apiserver answered the write, and the action as it was
/// pinned on the first read (`decision::pinned`).
#[derive(Debug)]
pub struct Acted {
    pub rollout: Rollout,
    pub action: Action,
}

/// Decides `action` on rollout `name` as it stands and writes the patch, guarded by the
/// resourceVersion it was decided on; on a conflict, decides again, up to [`ACT_TRIES`] times.
pub async fn decide_and_write(
    rollouts: &Api<Rollout>,
    name: &str,
    params: &PatchParams,
    replica_sets: &impl OwnedReplicaSets,
    action: Action,
) -> Result<Acted, ActError> {
    let mut action = action;
    for tried in 0..ACT_TRIES {
        let rollout = rollouts.get(name).await.map_err(ActError::Read)?;
        let owned = replica_sets
            .owned_replica_sets(&rollout)
            .await
            .map_err(ActError::Read)?;
        if tried == 0 {
            action = pinned(&rollout, &owned, action);
        }
        let mut patch = action_patch(&rollout, &owned, &action).map_err(ActError::Refused)?;
        // Decided on this version: if the rollout changed since (most often by the
        // controller's own status write), the apiserver refuses the write and the action is
        // decided again on what is there now, so two callers never both act on one state
        // and a caller hears of a conflict only when its action no longer applies.
        patch["metadata"] = json!({"resourceVersion": rollout.resource_version()});
        match rollouts.patch(name, params, &Patch::Merge(&patch)).await {
            Ok(written) => {
                return Ok(Acted {
                    rollout: written,
                    action,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(ActError::Write(e)),
        }
    }
    Err(ActError::KeptChanging)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decision::tests::{paused_at, rollout};
    use crate::rest::tests::{FakeApiServer, Race};

    /// A canary without history: nothing to undo to, and nothing to read.
    struct NoReplicaSets;

    impl OwnedReplicaSets for NoReplicaSets {
        async fn owned_replica_sets(&self, _: &Rollout) -> Result<Vec<ReplicaSet>, kube::Error> {
            Ok(Vec::new())
        }
    }

    const PROMOTE: Action = Action::Promote {
        full: false,
        from_step: None,
    };

    /// Each refused write is decided again, on the rollout as it is then, and what the caller
    /// hears it did is the action pinned on the first read; after ACT_TRIES refusals it stops.
    #[tokio::test]
    async fn a_refused_write_is_decided_again_up_to_act_tries() {
        let paused = rollout(paused_at(1), json!(null));
        let status_write: Race = Box::new(|r| r["status"]["readyReplicas"] = json!(4));
        let server = FakeApiServer::new(&paused, 2, status_write);
        let rollouts = Api::namespaced(server.client(), "shop");
        let params = PatchParams::default();
        let acted = decide_and_write(&rollouts, "web", &params, &NoReplicaSets, PROMOTE)
            .await
            .unwrap();
        assert_eq!(
            acted.action,
            Action::Promote {
                full: false,
                from_step: Some(1)
            }
        );
        assert_eq!(
            acted.rollout.spec.decision.and_then(|d| d.promoted_step),
            Some(1)
        );
        assert_eq!(
            server.stored().patches,
            3,
            "two refused, then the one that landed"
        );

        let restless: Race = Box::new(|r| r["status"]["readyReplicas"] = json!(3));
        let server = FakeApiServer::new(&paused, usize::MAX, restless);
        let rollouts = Api::namespaced(server.client(), "shop");
        let error = decide_and_write(&rollouts, "web", &params, &NoReplicaSets, PROMOTE)
            .await
            .unwrap_err();
        assert!(matches!(error, ActError::KeptChanging), "{error:?}");
        assert_eq!(server.stored().patches, ACT_TRIES);
    }
}
