//! The REST API's kube side: rollouts read from the reflector store, actions written as
//! `spec.paused` / `spec.decision` with a merge patch guarded by the resourceVersion they were
//! decided on ([`crate::action`]), and callers checked with TokenReview and SubjectAccessReview
//! ([`auth`]).

mod auth;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::{Action, ControlError, RolloutControl, RolloutView};
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

pub(crate) use auth::KubeAuthorizer;

use crate::action::{OwnedReplicaSets, decide_and_write};
use crate::crd::Rollout;
use crate::crd::analysis::AnalysisRun;
use crate::decode::{Registry, Tolerant};
use crate::history;
use crate::owner::OwnedIndex;
use crate::reconcile::FIELD_MANAGER;
use crate::undecodable::rollout_message;
use crate::view::{undecodable_view, view};

/// How long an action waits for the store to see what it wrote.
const STORE_CATCH_UP: Duration = Duration::from_secs(2);

pub(crate) struct KubeControl {
    client: Client,
    rollouts: Store<Rollout>,
    replica_sets: OwnedIndex<ReplicaSet>,
    analysis_runs: OwnedIndex<AnalysisRun>,
    /// The Rollouts the controller cannot decode, which the store of `rollouts` leaves out.
    undecodable: Registry<Rollout>,
    /// The retired ReplicaSets of the rollouts viewed lately, which no watch caches.
    history: Mutex<HashMap<String, Listed>>,
}

/// A rollout's retired ReplicaSets as listed, when, and with which live ReplicaSets.
struct Listed {
    at: Instant,
    live: Vec<String>,
    replica_sets: Arc<Vec<ReplicaSet>>,
}

/// How long a view of one rollout shows its history as listed while its live ReplicaSets stay
/// the same: `wait` and the event streams look at a rollout four times a second, and the
/// controller changes the history only where a ReplicaSet leaves the live ones (retired) or
/// joins them (brought back). What else changes it (a ReplicaSet deleted by hand) shows within
/// this.
const HISTORY_FRESH: Duration = Duration::from_secs(5);
/// A listed history not looked at for this long is dropped.
const HISTORY_KEPT: Duration = Duration::from_secs(60);

impl KubeControl {
    pub(crate) fn new(
        client: Client,
        rollouts: Store<Rollout>,
        replica_sets: OwnedIndex<ReplicaSet>,
        analysis_runs: OwnedIndex<AnalysisRun>,
        undecodable: Registry<Rollout>,
    ) -> Self {
        Self {
            client,
            rollouts,
            replica_sets,
            analysis_runs,
            undecodable,
            history: Mutex::default(),
        }
    }

    /// The rollout's live ReplicaSets and AnalysisRuns, from the stores.
    fn parts(&self, rollout: &Rollout) -> (Vec<ReplicaSet>, Vec<AnalysisRun>) {
        (
            owned_in(&self.replica_sets, rollout),
            owned_in(&self.analysis_runs, rollout),
        )
    }

    /// A view of the rollout with its live revisions: what a list of many shows.
    fn view(&self, rollout: &Rollout) -> RolloutView {
        let (replica_sets, runs) = self.parts(rollout);
        view(rollout, &replica_sets, &runs)
    }

    /// A view of the rollout with its history too (each revision that can be undone to): what a
    /// look at one rollout shows.
    async fn full_view(&self, rollout: &Rollout) -> Result<RolloutView, ControlError> {
        let (live, runs) = self.parts(rollout);
        let history = self.history_of(rollout, &live).await?;
        let replica_sets = history::with_history(live, &history);
        Ok(view(rollout, &replica_sets, &runs))
    }

    /// The rollout's retired ReplicaSets (`live`: the names of those the store holds), as
    /// listed at most [`HISTORY_FRESH`] ago with the same live ones.
    async fn history_of(
        &self,
        rollout: &Rollout,
        live: &[ReplicaSet],
    ) -> Result<Arc<Vec<ReplicaSet>>, ControlError> {
        let uid = rollout.uid().unwrap_or_default();
        let mut live: Vec<String> = live.iter().map(ResourceExt::name_any).collect();
        live.sort();
        {
            let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
            history.retain(|_, listed| listed.at.elapsed() < HISTORY_KEPT);
            if let Some(listed) = history.get(&uid)
                && listed.at.elapsed() < HISTORY_FRESH
                && listed.live == live
            {
                return Ok(listed.replica_sets.clone());
            }
        }
        let replica_sets = Arc::new(
            history::retired(&self.client, rollout)
                .await
                .map_err(unavailable)?,
        );
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                uid,
                Listed {
                    at: Instant::now(),
                    live,
                    replica_sets: replica_sets.clone(),
                },
            );
        Ok(replica_sets)
    }

    /// Waits, briefly, until the store holds the spec an action just wrote: reads answer from
    /// the store, and a pipeline's `wait` right after its promote must not take the generation
    /// before the promote for the current one and answer with the pause just promoted.
    async fn caught_up(&self, written: &Rollout) {
        let key = ObjectRef::from_obj(written);
        let deadline = Instant::now() + STORE_CATCH_UP;
        while let Some(stored) = self.rollouts.get(&key) {
            if stored.metadata.generation >= written.metadata.generation
                || Instant::now() >= deadline
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The cached objects `rollout` owns, as the pure views take them.
fn owned_in<K>(cache: &OwnedIndex<K>, rollout: &Rollout) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    cache
        .owned(rollout)
        .iter()
        .map(|o| o.as_ref().clone())
        .collect()
}

fn not_found(namespace: &str, name: &str) -> ControlError {
    ControlError::NotFound {
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn unavailable(e: kube::Error) -> ControlError {
    ControlError::Unavailable(e.to_string())
}

impl OwnedReplicaSets for KubeControl {
    /// The live ones from the store, the retired ones from the apiserver as they are now: an
    /// undo decides on them.
    async fn owned_replica_sets(&self, rollout: &Rollout) -> Result<Vec<ReplicaSet>, kube::Error> {
        let retired = history::retired(&self.client, rollout).await?;
        Ok(history::with_history(self.parts(rollout).0, &retired))
    }
}

impl RolloutControl for KubeControl {
    async fn list(&self, namespace: Option<&str>) -> Result<Vec<RolloutView>, ControlError> {
        let mut views: Vec<RolloutView> = self
            .rollouts
            .state()
            .iter()
            .filter(|r| namespace.is_none_or(|ns| r.namespace().as_deref() == Some(ns)))
            .map(|r| self.view(r))
            .collect();
        views.extend(
            self.undecodable
                .state()
                .iter()
                .filter(|bad| {
                    namespace.is_none_or(|ns| bad.metadata.namespace.as_deref() == Some(ns))
                })
                .map(|bad| undecodable_view(bad)),
        );
        views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        Ok(views)
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<RolloutView, ControlError> {
        if let Some(rollout) = self.rollouts.get(&ObjectRef::new(name).within(namespace)) {
            return self.full_view(&rollout).await;
        }
        let key = ObjectRef::new(name).within(namespace);
        if let Some(bad) = self.undecodable.get(&key) {
            return Ok(undecodable_view(&bad));
        }
        // Not in the store (yet): ask the apiserver, so a rollout created a moment ago is found.
        let rollouts: Api<Tolerant<Rollout>> = Api::namespaced(self.client.clone(), namespace);
        match rollouts.get_opt(name).await.map_err(unavailable)? {
            Some(Tolerant::Decoded(rollout)) => self.full_view(&rollout).await,
            Some(Tolerant::Undecodable(bad)) => Ok(undecodable_view(&bad)),
            None => Err(not_found(namespace, name)),
        }
    }

    async fn act(
        &self,
        namespace: &str,
        name: &str,
        action: Action,
    ) -> Result<RolloutView, ControlError> {
        // Every action is decided on the typed rollout; one that does not decode has none.
        if let Some(bad) = self
            .undecodable
            .get(&ObjectRef::new(name).within(namespace))
        {
            return Err(ControlError::Conflict(format!(
                "{}; fix it before acting on it",
                rollout_message(&bad.error)
            )));
        }
        let rollouts: Api<Rollout> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(format!("{FIELD_MANAGER}-api")),
            ..PatchParams::default()
        };
        match decide_and_write(&rollouts, name, &params, self, action).await {
            Ok(acted) => {
                self.caught_up(&acted.rollout).await;
                self.full_view(&acted.rollout).await
            }
            Err(e) => Err(e.into_control_error(namespace, name)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::action::ACT_TRIES;
    use crate::decision::tests::{merge, paused_at, rollout};

    /// What "the controller" does to the stored rollout between an action's read and its
    /// write, once per read, for the first `races` reads.
    pub(crate) type Race = Box<dyn FnMut(&mut serde_json::Value) + Send>;

    pub(crate) struct Stored {
        rollout: serde_json::Value,
        version: u64,
        races: usize,
        race: Race,
        pub(crate) patches: usize,
    }

    /// An apiserver holding one Rollout, as far as `act` needs one: GET answers it; a merge
    /// PATCH that carries a resourceVersion other than the stored one is a 409, as the
    /// apiserver's optimistic concurrency answers.
    #[derive(Clone)]
    pub(crate) struct FakeApiServer(std::sync::Arc<Mutex<Stored>>);

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    impl FakeApiServer {
        pub(crate) fn new(rollout: &Rollout, races: usize, race: Race) -> Self {
            let mut rollout = serde_json::to_value(rollout).unwrap();
            rollout["metadata"]["resourceVersion"] = json!("1");
            rollout["metadata"]["generation"] = json!(1);
            Self(std::sync::Arc::new(Mutex::new(Stored {
                rollout,
                version: 1,
                races,
                race,
                patches: 0,
            })))
        }

        fn control(&self) -> KubeControl {
            self.control_with_store().0
        }

        /// With the writer of its rollout store, to play the reflector.
        fn control_with_store(
            &self,
        ) -> (
            KubeControl,
            kube::runtime::reflector::store::Writer<Rollout>,
        ) {
            let client = self.client();
            let (rollouts, writer) = kube::runtime::reflector::store();
            let (replica_sets, _) = kube::runtime::reflector::store();
            let (runs, _) = kube::runtime::reflector::store();
            let (replica_sets, runs) = (OwnedIndex::new(replica_sets), OwnedIndex::new(runs));
            let undecodable = Registry::new(Default::default());
            (
                KubeControl::new(client, rollouts, replica_sets, runs, undecodable),
                writer,
            )
        }

        pub(crate) fn client(&self) -> Client {
            Client::new(self.clone(), "shop")
        }

        fn rollout(&self) -> Rollout {
            serde_json::from_value(self.stored().rollout.clone()).unwrap()
        }

        pub(crate) fn stored(&self) -> std::sync::MutexGuard<'_, Stored> {
            self.0.lock().unwrap()
        }
    }

    impl Stored {
        fn bump(&mut self) {
            self.version += 1;
            self.rollout["metadata"]["resourceVersion"] = json!(self.version.to_string());
        }
    }

    impl tower_service::Service<http::Request<kube::client::Body>> for FakeApiServer {
        type Response = http::Response<kube::client::Body>;
        type Error = BoxError;
        type Future = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
        >;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
            let server = self.clone();
            Box::pin(async move {
                let method = request.method().clone();
                let request_path = request.uri().path().to_owned();
                let body = request.into_body().collect_bytes().await?;
                let mut guard = server.stored();
                let stored = &mut *guard;
                let lists_replica_sets = request_path.ends_with("/replicasets");
                let (code, answer) = if lists_replica_sets {
                    let empty = json!({"kind": "ReplicaSetList", "apiVersion": "apps/v1",
                        "metadata": {}, "items": []});
                    (200, empty)
                } else if method == http::Method::GET {
                    let answer = stored.rollout.clone();
                    if stored.races > 0 {
                        stored.races -= 1;
                        (stored.race)(&mut stored.rollout);
                        stored.bump();
                    }
                    (200, answer)
                } else {
                    stored.patches += 1;
                    let patch: serde_json::Value = serde_json::from_slice(&body)?;
                    if patch["metadata"]["resourceVersion"]
                        != stored.rollout["metadata"]["resourceVersion"]
                    {
                        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "Conflict", "code": 409,
                            "message": "the object has been modified"});
                        (409, status)
                    } else {
                        merge(&mut stored.rollout, &patch);
                        if patch.get("spec").is_some() {
                            let generation = stored.rollout["metadata"]["generation"].as_i64();
                            stored.rollout["metadata"]["generation"] =
                                json!(generation.unwrap_or(0) + 1);
                        }
                        stored.bump();
                        (200, stored.rollout.clone())
                    }
                };
                let response = http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(serde_json::to_vec(&answer)?))?;
                Ok(response)
            })
        }
    }

    /// What `act` answers on `server` when it does not act.
    async fn refusal(server: &FakeApiServer, action: Action) -> ControlError {
        server
            .control()
            .act("shop", "web", action)
            .await
            .unwrap_err()
    }

    fn promote_step(step: i32) -> Action {
        Action::Promote {
            full: false,
            from_step: Some(step),
        }
    }

    /// The controller's own status writes move the resourceVersion under a promote: decided
    /// again on what is there, it lands, and 409 is left for a promote that no longer applies.
    #[tokio::test]
    async fn a_promote_is_decided_again_when_only_the_controllers_status_moved() {
        let paused = rollout(paused_at(1), json!(null));
        let status_write: Race = Box::new(|r| r["status"]["readyReplicas"] = json!(4));
        let server = FakeApiServer::new(&paused, 3, status_write);
        let view = server
            .control()
            .act("shop", "web", promote_step(1))
            .await
            .unwrap();
        assert_eq!(view.current_step, Some(1));
        assert_eq!(
            server.stored().patches,
            4,
            "three refused writes, then the one that landed"
        );
        assert_eq!(
            server.rollout().spec.decision.unwrap().promoted_step,
            Some(1)
        );

        // Status moving on every read: after ACT_TRIES, a 409 that says so.
        let restless: Race = Box::new(|r| r["status"]["readyReplicas"] = json!(3));
        let server = FakeApiServer::new(&paused, usize::MAX, restless);
        let error = refusal(&server, promote_step(1)).await;
        assert_eq!(
            error,
            ControlError::Conflict(format!(
                "the rollout changed {ACT_TRIES} times while this request was decided; look again"
            ))
        );
        assert_eq!(server.stored().patches, ACT_TRIES);
    }

    /// Reads answer from the store: a pipeline's `wait` right after its promote must see the
    /// promote's generation, not answer with the pause just promoted.
    #[tokio::test]
    async fn an_action_answers_once_the_store_holds_what_it_wrote() {
        use kube::runtime::watcher::Event;
        let paused = rollout(paused_at(1), json!(null));
        let server = FakeApiServer::new(&paused, 0, Box::new(|_| {}));
        let (control, mut writer) = server.control_with_store();
        writer.apply_watcher_event(&Event::Apply(server.rollout()));
        let reflector = {
            let server = server.clone();
            tokio::spawn(async move {
                // The watch event of the write arrives a moment after the write's answer.
                while server.stored().patches == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                writer.apply_watcher_event(&Event::Apply(server.rollout()));
            })
        };
        control.act("shop", "web", promote_step(1)).await.unwrap();
        let seen = control.get("shop", "web").await.unwrap();
        assert_eq!(seen.generation, 2, "a read right after the action");
        reflector.await.unwrap();
    }

    #[tokio::test]
    async fn a_promote_decided_again_stays_about_the_step_the_caller_saw() {
        // Another pipeline promoted step 1 and the rollout moved on to its pause at step 3
        // between this promote's read and its write: a plain promote must not approve step 3.
        let paused = rollout(paused_at(1), json!(null));
        let moved_on: Race = Box::new(|r| {
            r["spec"]["decision"] = json!({"revision": "b", "attempt": 0, "promotedStep": 1});
            r["status"]["currentStepIndex"] = json!(3);
        });
        let server = FakeApiServer::new(&paused, 1, moved_on);
        let plain = Action::Promote {
            full: false,
            from_step: None,
        };
        let error = refusal(&server, plain).await;
        assert_eq!(
            error,
            ControlError::Conflict("fromStep 1 is not the current step 3".into())
        );
        assert_eq!(
            server.stored().rollout["spec"]["decision"]["promotedStep"],
            1
        );

        // Another pipeline's promote of the same step won: this one no longer applies.
        let won: Race = Box::new(|r| {
            r["spec"]["decision"] = json!({"revision": "b", "attempt": 0, "promotedStep": 1});
        });
        let server = FakeApiServer::new(&paused, 1, won);
        let error = refusal(&server, promote_step(1)).await;
        assert_eq!(
            error,
            ControlError::Conflict("step 1 is already promoted".into())
        );
    }

    /// A Rollout the controller cannot decode is listed and found with its decode error, from
    /// the watch or from the apiserver, and actions on it are refused with that error: it must
    /// neither vanish from the list nor read as missing.
    #[tokio::test]
    async fn an_undecodable_rollout_is_listed_and_found_with_its_decode_error() {
        use crate::decode::TolerantWriter;
        use kube::runtime::watcher::Event;
        let server = FakeApiServer::new(&rollout(paused_at(1), json!(null)), 0, Box::new(|_| {}));
        server.stored().rollout["spec"]["replicas"] = json!(1_u64 << 32);
        let names_the_field = |v: &RolloutView| {
            v.undecodable
                .as_deref()
                .is_some_and(|e| e.starts_with("spec.replicas: "))
        };

        // Not watched yet: read from the apiserver.
        let seen = server.control().get("shop", "web").await.unwrap();
        assert_eq!(seen.phase, "Degraded");
        assert!(names_the_field(&seen), "{seen:?}");

        // Watched: beside a rollout that decodes.
        let registry = Registry::new(Default::default());
        let mut writer = TolerantWriter::new(registry.clone(), None);
        let raw = server.stored().rollout.clone();
        writer.apply(&Event::Apply(serde_json::from_value(raw).unwrap()));
        let mut other = rollout(paused_at(1), json!(null));
        other.metadata.name = Some("other".into());
        writer.apply(&Event::Apply(Tolerant::Decoded(other)));
        let (replica_sets, _) = kube::runtime::reflector::store();
        let (runs, _) = kube::runtime::reflector::store();
        let (replica_sets, runs) = (OwnedIndex::new(replica_sets), OwnedIndex::new(runs));
        let control = KubeControl::new(
            server.client(),
            writer.as_reader(),
            replica_sets,
            runs,
            registry,
        );
        let listed = control.list(Some("shop")).await.unwrap();
        let names: Vec<&str> = listed.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["other", "web"]);
        assert!(names_the_field(&listed[1]), "{:?}", listed[1]);
        assert_eq!(listed[0].undecodable, None);
        assert!(control.list(Some("elsewhere")).await.unwrap().is_empty());
        let found = control.get("shop", "web").await.unwrap();
        assert!(names_the_field(&found), "{found:?}");

        let ControlError::Conflict(why) =
            control.act("shop", "web", Action::Abort).await.unwrap_err()
        else {
            panic!("an action on an undecodable rollout must be refused");
        };
        assert!(why.contains("spec.replicas: "), "{why}");
        assert_eq!(server.stored().patches, 0);
    }
}
