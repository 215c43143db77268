//! Restarting the stable version's pods without a new revision (`spec.restartAt`, the field
//! Argo Rollouts uses for this): every pod of the stable ReplicaSet created before `restartAt` is
//! deleted, one at a time, and the ReplicaSet puts a new one in its place. The next goes only
//! once nothing is terminating and the ReplicaSet has all its pods again, and only while
//! `replicas - maxUnavailable` ready pods remain; where maxUnavailable is 0 (blue-green, a
//! canary with a router, or as written), the ReplicaSet is first grown by one pod, so that a
//! restart never takes a ready pod away from the desired count. When no pod older than
//! `restartAt` is left, `status.restartedAt` records it.
//!
//! Only a finished rollout restarts: while a new revision rolls out or stays aborted, its
//! stable pods are what traffic falls back on, and a restart waits until the rollout is
//! settled again. Pods are not watched: the reconcile lists the stable ReplicaSet's pods only
//! while a restart is [`due`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::EventReason;
use super::conditions::set_condition;
use super::{EventType, Planner};
use crate::crd::{Phase, Rollout, RolloutSpec, RolloutStatus};

/// How often a restart in progress is looked at again: pods are not watched, and a deleted
/// pod's replacement may become ready without the ReplicaSet's counts changing.
const RESTART_POLL: SignedDuration = SignedDuration::from_secs(2);
const CONDITION: &str = "Restarting";

/// One pod of the stable ReplicaSet, as listed while a restart is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPod {
    pub name: String,
    pub uid: String,
    /// Its pod-template hash label: the version it belongs to.
    pub hash: String,
    pub created_at: Option<Timestamp>,
    /// Its Ready condition is True.
    pub ready: bool,
    /// It has a deletionTimestamp.
    pub terminating: bool,
}

/// A pod to delete, by name and uid: the uid makes the delete miss a pod of the same name that
/// was created since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRestart {
    pub name: String,
    pub uid: String,
}

/// The restart `spec.restartAt` asks for, unless `status.restartedAt` says it is done.
pub(crate) fn requested(spec: &RolloutSpec, status: Option<&RolloutStatus>) -> Option<Timestamp> {
    let at = spec.restart_at.as_ref()?.0;
    let done = status
        .and_then(|s| s.restarted_at.as_ref())
        .is_some_and(|done| done.0 >= at);
    (!done).then_some(at)
}

/// A restart is asked for and its time has come: the reconcile lists the stable pods.
pub(crate) fn due(rollout: &Rollout, now: Timestamp) -> bool {
    requested(&rollout.spec, rollout.status.as_ref()).is_some_and(|at| at <= now)
}

impl Planner<'_> {
    /// After the strategy has planned: which stable pod to delete now, if any, and the target
    /// of the stable ReplicaSet while the restart goes on.
    pub(super) fn restart_pods(&mut self) {
        let Some(at) = requested(self.spec, Some(&self.status)) else {
            return;
        };
        let stable = self.status.stable_revision.clone().unwrap_or_default();
        let settled = stable == self.new
            && !self.status.abort
            && self.status.phase != Phase::Degraded
            && self.spec.paused != Some(true);
        if self.now < at {
            self.wake_at(at);
            // Asked for and not done: not Healthy, so that `status` waits for it.
            if settled {
                self.restart_message = Some(format!(
                    "restart of revision {stable} requested for {at}: not started yet"
                ));
            }
            return;
        }
        let (Some(rs), Some(listed), Ok(bounds)) = (
            self.observed.replica_set(&stable),
            self.observed.pods.as_ref(),
            self.bounds(),
        ) else {
            return;
        };
        if !settled {
            return;
        }
        let replicas = self.replicas();
        let pods: Vec<_> = listed.iter().filter(|p| p.hash == stable).collect();
        let is_old = |created: Option<Timestamp>| created.is_none_or(|t| t < at);
        let mut old: Vec<_> = pods
            .iter()
            .filter(|p| !p.terminating && is_old(p.created_at))
            .collect();
        let live = pods.iter().filter(|p| !p.terminating).count();
        let ready = pods.iter().filter(|p| p.ready && !p.terminating).count();
        let terminating = pods.iter().any(|p| p.terminating);
        let generation = self.status.observed_generation;
        let when = at.to_string();

        if old.is_empty() && !terminating && count(ready) >= replicas {
            self.status.restarted_at = Some(Time(at));
            let message = format!(
                "restart requested at {when} done: every pod of revision {stable} re-created"
            );
            set_condition(
                &mut self.status.conditions,
                CONDITION,
                false,
                "RestartCompleted",
                &message,
                self.now,
                generation,
            );
            self.event(EventType::Normal, EventReason::Restarted, message);
            return;
        }
        // With no pod to spare (maxUnavailable 0), one extra pod is up while old ones remain.
        let spare = i32::from(bounds.unavailable == 0);
        let target = if old.is_empty() {
            replicas
        } else {
            replicas + spare
        };
        self.targets.insert(stable.clone(), target);
        self.wake_at(self.now + RESTART_POLL);
        let message = format!(
            "restarting revision {stable}: {} of {replicas} pods left to re-create (requested at {when})",
            old.len()
        );
        set_condition(
            &mut self.status.conditions,
            CONDITION,
            true,
            "RestartInProgress",
            &message,
            self.now,
            generation,
        );
        self.restart_message = Some(message);
        if old.is_empty() || terminating || rs.replicas < target || count(live) < target {
            return;
        }
        // A pod that is not ready costs nothing to replace; otherwise the oldest goes first.
        old.sort_by_key(|p| (p.ready, p.created_at, p.name.clone()));
        let victim = old[0];
        let ready_after = count(ready) - i32::from(victim.ready);
        if ready_after < replicas - bounds.unavailable {
            return;
        }
        self.restart = Some(PodRestart {
            name: victim.name.clone(),
            uid: victim.uid.clone(),
        });
        let message = format!(
            "restart requested at {when}: pod {} of revision {stable} deleted ({} left to re-create)",
            victim.name,
            old.len()
        );
        self.event(EventType::Normal, EventReason::PodRestarted, message);
    }
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::hash::pod_template_hash;
    use crate::plan::tests::rollout;
    use crate::plan::{Observed, ObservedReplicaSet, Plan, plan};

    const T0: i64 = 1_800_000_000;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(T0 + second).unwrap()
    }

    struct SimPod {
        pod: ObservedPod,
        /// Becomes ready at this second.
        ready_at: i64,
        /// Gone at this second (after a delete).
        gone_at: Option<i64>,
    }

    /// One ReplicaSet and its pods, with the ReplicaSet controller's part: pods to its count,
    /// a deleted pod gone a second later, a new pod ready `ready_delay` seconds after creation.
    struct Sim {
        rollout: Rollout,
        hash: String,
        /// The ReplicaSet exists (the first plan creates it) with this many replicas.
        exists: bool,
        replicas: i32,
        pods: Vec<SimPod>,
        second: i64,
        created: usize,
        ready_delay: i64,
        /// The fewest ready pods seen between writes.
        lowest_ready: i32,
        deleted: Vec<String>,
        /// Pods listed only while a restart is due, as the reconcile does.
        listed: usize,
    }

    impl Sim {
        fn new(rollout: Rollout, ready_delay: i64) -> Self {
            let hash = pod_template_hash(&rollout.spec.template);
            let mut sim = Sim {
                rollout,
                hash,
                exists: false,
                replicas: 0,
                pods: Vec::new(),
                second: 0,
                created: 0,
                ready_delay,
                lowest_ready: i32::MAX,
                deleted: Vec::new(),
                listed: 0,
            };
            for _ in 0..20 {
                sim.tick();
            }
            assert_eq!(sim.status().phase, Phase::Healthy, "{:?}", sim.status());
            sim.lowest_ready = i32::MAX;
            sim
        }

        fn status(&self) -> RolloutStatus {
            self.rollout.status.clone().unwrap_or_default()
        }

        fn ready(&self) -> i32 {
            count(
                self.pods
                    .iter()
                    .filter(|p| p.pod.ready && !p.pod.terminating)
                    .count(),
            )
        }

        fn observed(&self, now: Timestamp) -> Observed {
            let available = self.ready();
            Observed {
                replica_sets: vec![ObservedReplicaSet {
                    name: format!("web-{}", self.hash),
                    hash: self.hash.clone(),
                    revision: 1,
                    replicas: self.replicas,
                    ready: available,
                    available,
                    pod_metadata: Default::default(),
                }]
                .into_iter()
                .filter(|_| self.exists)
                .collect(),
                services: BTreeMap::from([("web-active".to_owned(), BTreeMap::new())]),
                pods: due(&self.rollout, now)
                    .then(|| self.pods.iter().map(|p| p.pod.clone()).collect()),
                ..Observed::default()
            }
        }

        /// One second: the cluster moves, then one reconcile and its writes.
        fn tick(&mut self) -> Plan {
            self.second += 1;
            let now = at(self.second);
            let second = self.second;
            self.pods.retain(|p| p.gone_at.is_none_or(|g| g > second));
            for p in &mut self.pods {
                p.pod.ready = p.pod.ready || p.ready_at <= second;
            }
            let live = self.pods.iter().filter(|p| !p.pod.terminating).count();
            for _ in count(live)..self.replicas {
                self.created += 1;
                self.pods.push(SimPod {
                    pod: ObservedPod {
                        name: format!("web-{}", self.created),
                        uid: format!("uid-{}", self.created),
                        hash: self.hash.clone(),
                        created_at: Some(now),
                        ready: false,
                        terminating: false,
                    },
                    ready_at: second + self.ready_delay,
                    gone_at: None,
                });
            }
            let observed = self.observed(now);
            self.listed += usize::from(observed.pods.is_some());
            let plan = plan(&self.rollout, &observed, now);
            self.lowest_ready = self.lowest_ready.min(self.ready());
            for target in plan.scale_up.iter().chain(&plan.scale_down) {
                assert_eq!(target.hash, self.hash, "no other revision");
                self.exists = true;
                self.replicas = target.replicas;
            }
            if let Some(restart) = &plan.restart {
                let pod = self
                    .pods
                    .iter_mut()
                    .find(|p| p.pod.name == restart.name && p.pod.uid == restart.uid)
                    .expect("the pod to delete exists");
                assert!(!pod.pod.terminating, "{} deleted twice", restart.name);
                pod.pod.terminating = true;
                pod.gone_at = Some(second + 1);
                self.deleted.push(restart.name.clone());
            }
            self.lowest_ready = self.lowest_ready.min(self.ready());
            self.rollout.status = Some(plan.status.clone());
            plan
        }

        fn request_restart(&mut self, second: i64) {
            self.rollout.spec.restart_at = Some(Time(at(second)));
            self.rollout.metadata.generation = self.rollout.metadata.generation.map(|g| g + 1);
        }

        fn pod_names(&self) -> Vec<String> {
            self.pods.iter().map(|p| p.pod.name.clone()).collect()
        }
    }

    fn canary(replicas: i32, unavailable: i32) -> Rollout {
        rollout(
            json!({"canary": {"steps": [{"setWeight": 50}], "maxSurge": 1, "maxUnavailable": unavailable}}),
            replicas,
        )
    }

    #[test]
    fn a_restart_replaces_every_stable_pod_one_at_a_time_within_max_unavailable() {
        let mut sim = Sim::new(canary(4, 1), 2);
        let before = sim.pod_names();
        assert_eq!(sim.listed, 0, "pods are listed only while a restart is due");
        sim.request_restart(sim.second + 1);
        let mut events = Vec::new();
        for _ in 0..60 {
            let planned = sim.tick();
            events.extend(planned.events.iter().map(|e| e.reason));
            if sim.status().restarted_at.is_some() {
                break;
            }
        }
        let status = sim.status();
        assert_eq!(status.restarted_at, sim.rollout.spec.restart_at);
        assert_eq!(
            sim.deleted, before,
            "each old pod deleted once, oldest first"
        );
        assert!(sim.pod_names().iter().all(|p| !before.contains(p)));
        assert_eq!(sim.lowest_ready, 3, "never below replicas - maxUnavailable");
        assert_eq!(
            sim.replicas, 4,
            "no extra pod with a maxUnavailable to spend"
        );
        assert_eq!(
            events
                .iter()
                .filter(|r| **r == EventReason::PodRestarted)
                .count(),
            4
        );
        // Progressing while it restarts; Healthy once, when the last pod is back.
        let restarted = events.iter().position(|r| *r == EventReason::Restarted);
        let healthy: Vec<usize> = (0..events.len())
            .filter(|i| events[*i] == EventReason::Healthy)
            .collect();
        assert!(restarted.is_some(), "{events:?}");
        assert!(
            healthy.len() == 1 && restarted < healthy.first().copied(),
            "{events:?}"
        );
        // No new revision: the same ReplicaSet all along.
        assert_eq!(status.stable_revision.as_deref(), Some(sim.hash.as_str()));
        let condition = status.conditions.iter().find(|c| c.type_ == CONDITION);
        assert_eq!(condition.map(|c| c.status.as_str()), Some("False"));
        // Done means done: nothing more is deleted, and pods are no longer listed.
        let listed = sim.listed;
        for _ in 0..5 {
            assert_eq!(sim.tick().restart, None);
        }
        assert_eq!(sim.listed, listed);
        assert_eq!(sim.status().phase, Phase::Healthy);
    }

    #[test]
    fn with_no_pod_to_spare_an_extra_pod_comes_up_first() {
        let mut sim = Sim::new(canary(3, 0), 1);
        let before = sim.pod_names();
        sim.request_restart(sim.second);
        let mut peak = 0;
        for _ in 0..60 {
            sim.tick();
            peak = peak.max(sim.replicas);
            if sim.status().restarted_at.is_some() {
                break;
            }
        }
        assert!(sim.status().restarted_at.is_some(), "{:?}", sim.status());
        assert_eq!(peak, 4, "one extra pod");
        assert_eq!(sim.lowest_ready, 3, "never fewer ready pods than replicas");
        assert_eq!(sim.deleted, before);
        // The extra pod goes once every old one is replaced.
        sim.tick();
        assert_eq!(sim.replicas, 3);
    }

    #[test]
    fn a_restart_waits_for_its_time_and_for_a_finished_rollout() {
        let mut sim = Sim::new(canary(2, 1), 1);
        sim.request_restart(sim.second + 30);
        let waiting = sim.tick();
        assert_eq!(waiting.restart, None);
        assert_eq!(sim.listed, 0, "not listed before restartAt");
        assert!(waiting.requeue_after.is_some_and(|d| d.as_secs() <= 30));
        // Asked for and not done is not Healthy: `kubectl sluice status` waits for it.
        assert_eq!(waiting.status.phase, Phase::Progressing);
        assert!(
            waiting.status.message.contains("not started yet"),
            "{}",
            waiting.status.message
        );

        let mut sim = Sim::new(canary(2, 1), 1);
        sim.rollout.spec.paused = Some(true);
        sim.request_restart(sim.second);
        for _ in 0..5 {
            assert_eq!(
                sim.tick().restart,
                None,
                "a paused rollout restarts nothing"
            );
        }
        // A new revision in progress: the stable pods stay as they are until it is done.
        sim.rollout.spec.paused = None;
        let mut releasing = sim.rollout.clone();
        if let Some(spec) = releasing.spec.template.spec.as_mut() {
            spec.containers[0].image = Some("web:2".into());
        }
        let now = at(sim.second + 1);
        let planned = plan(&releasing, &sim.observed(now), now);
        assert_ne!(
            planned.status.updated_revision,
            planned.status.stable_revision
        );
        assert_eq!(planned.restart, None);
        // Once it may go on, it does.
        assert!(sim.tick().restart.is_some());
    }

    #[test]
    fn a_restart_already_done_is_not_done_again() {
        let mut rollout = canary(2, 1);
        rollout.spec.restart_at = Some(Time(at(10)));
        let mut status = RolloutStatus {
            restarted_at: Some(Time(at(10))),
            ..RolloutStatus::default()
        };
        rollout.status = Some(status.clone());
        assert_eq!(requested(&rollout.spec, rollout.status.as_ref()), None);
        assert!(!due(&rollout, at(20)));
        // A later restartAt is a new request.
        rollout.spec.restart_at = Some(Time(at(15)));
        assert_eq!(
            requested(&rollout.spec, rollout.status.as_ref()),
            Some(at(15))
        );
        status.restarted_at = None;
        rollout.status = Some(status);
        assert!(due(&rollout, at(15)) && !due(&rollout, at(14)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_old_pod_is_replaced_and_availability_holds(
            replicas in 1i32..6,
            unavailable in 0i32..3,
            ready_delay in 0i64..4,
            blue_green in any::<bool>(),
        ) {
            let rollout = if blue_green {
                rollout(json!({"blueGreen": {"activeService": "web-active"}}), replicas)
            } else {
                canary(replicas, unavailable)
            };
            let mut sim = Sim::new(rollout, ready_delay);
            let before = sim.pod_names();
            sim.request_restart(sim.second);
            let unavailable = bounds_of(&sim.rollout);
            for _ in 0..200 {
                sim.tick();
                if sim.status().restarted_at.is_some() {
                    break;
                }
            }
            prop_assert!(sim.status().restarted_at.is_some(), "{:?}", sim.status());
            prop_assert!(sim.pod_names().iter().all(|p| !before.contains(p)));
            prop_assert!(sim.lowest_ready >= replicas - unavailable);
            let mut deleted = sim.deleted.clone();
            deleted.sort();
            deleted.dedup();
            prop_assert_eq!(deleted.len(), sim.deleted.len(), "a pod deleted twice");
        }
    }

    fn bounds_of(rollout: &Rollout) -> i32 {
        crate::plan::replicas::bounds(&rollout.spec).map_or(0, |b| b.unavailable)
    }
}
