//! Finishing a reconcile: targets become ReplicaSet writes within the bounds, status gets its
//! counts and conditions, old history goes; and finishing a rollout on its stable version.

use std::time::Duration;

use super::EventReason;
use super::abort::aborted_message;
use super::conditions::set_condition;
use super::refused;
use super::replicas::{Bounds, bounds, step_towards};
use super::{
    DEFAULT_REVISION_HISTORY_LIMIT, EventType, InvalidSpec, ObservedReplicaSet, Plan, Planner,
    ReplicaSetTarget, TrafficPlan,
};
use crate::crd::Phase;

impl Planner<'_> {
    pub(super) fn finish(mut self) -> Plan {
        let now = self.now;
        let generation = self.status.observed_generation;
        // A bound that cannot be read stops the rollout as InvalidSpec (validate() reads them
        // first): pods never move by a guessed number.
        let bounds = match (self.invalid.take(), self.bounds()) {
            (None, Ok(bounds)) => bounds,
            (Some(invalid), _) | (None, Err(invalid)) => {
                let message = format!("{}: {}", invalid.field, invalid.message);
                let changed = !self.previous.conditions.iter().any(|c| {
                    c.type_ == "InvalidSpec" && c.status == "True" && c.message == message
                });
                self.status.phase = Phase::Degraded;
                self.status.message = message.clone();
                set_condition(
                    &mut self.status.conditions,
                    "InvalidSpec",
                    true,
                    "InvalidSpec",
                    &message,
                    now,
                    generation,
                );
                if changed {
                    self.event(EventType::Warning, EventReason::InvalidSpec, message);
                }
                return Plan {
                    status: self.status,
                    events: self.events,
                    ..Plan::default()
                };
            }
        };
        set_condition(
            &mut self.status.conditions,
            "InvalidSpec",
            false,
            "Valid",
            "",
            now,
            generation,
        );

        refused::clear(
            &mut self.status,
            self.observed.replica_set(&self.new).is_some(),
            now,
            generation,
        );
        let replicas = self.replicas();
        let order: Vec<&str> = self.order.iter().map(String::as_str).collect();
        let next = step_towards(
            &self.observed.replica_sets,
            &self.targets,
            &order,
            replicas,
            bounds,
            self.urgent,
        );
        // Retired ReplicaSets are not watched, and the highest revision may be one of them.
        let max_revision = self
            .observed
            .replica_sets
            .iter()
            .map(|rs| rs.revision)
            .max()
            .unwrap_or(0)
            .max(self.status.latest_revision.unwrap_or(0));
        let stable = self.status.stable_revision.clone();
        // An existing ReplicaSet becomes the newest revision in the reconcile that starts
        // rolling it out (a template changed back to it), not after: the status read back may
        // already hold the number this rollout gave it while the store still holds the
        // ReplicaSet from before, and renumbering from that would chase its own number up by one
        // a reconcile for as long as the status watch beats the ReplicaSet watch.
        let starts_rolling_out =
            self.previous.updated_revision.as_deref() != Some(self.new.as_str());
        let mut scale_up = Vec::new();
        let mut scale_down = Vec::new();
        for (hash, want) in next {
            let existing = self.observed.replica_set(&hash);
            let revision = match existing {
                // The store may not hold yet what this rollout created under the number it
                // gave it: the same number again, not the next.
                None if hash == self.new
                    && !starts_rolling_out
                    && self.previous.latest_revision == Some(max_revision) =>
                {
                    Some(max_revision)
                }
                None => Some(max_revision + 1),
                Some(rs)
                    if hash == self.new && starts_rolling_out && rs.revision < max_revision =>
                {
                    Some(max_revision + 1)
                }
                Some(_) => None,
            };
            if existing.is_none() && hash != self.new {
                continue;
            }
            let current = existing.map_or(-1, |rs| rs.replicas);
            // An old version scaled to zero is history from now on; never the version rolling
            // out (an aborted one stays, for a retry) nor stable.
            let retire = want == 0 && hash != self.new && Some(&hash) != stable.as_ref();
            let target = ReplicaSetTarget {
                hash,
                replicas: want,
                revision,
                create: existing.is_none(),
                retire,
            };
            if want > current || target.revision.is_some() {
                scale_up.push(target);
            } else if want < current {
                scale_down.push(target);
            }
        }
        let latest = scale_up
            .iter()
            .filter_map(|t| t.revision)
            .fold(max_revision, u64::max);
        if latest > 0 {
            self.status.latest_revision = Some(latest);
        }

        // Counts and conditions for people and the scale subresource.
        let new_rs = self.observed.replica_set(&self.new);
        self.status.replicas = self
            .observed
            .replica_sets
            .iter()
            .map(|rs| rs.replicas)
            .sum();
        self.status.ready_replicas = self.observed.replica_sets.iter().map(|rs| rs.ready).sum();
        self.status.available_replicas = self
            .observed
            .replica_sets
            .iter()
            .map(|rs| rs.available.min(rs.replicas))
            .sum();
        self.status.updated_replicas = new_rs.map_or(0, |rs| rs.ready);
        // Retiring an old version (to zero, with the new one whole) is the last act of a
        // finished rollout, not progress still to come: counting it would flip a Healthy
        // rollout back to Progressing for the reconcile that retires a version kept for
        // scaleDownDelaySeconds.
        // A restart in progress is not Healthy until its last pod is replaced: `status` waits
        // for it, and the Healthy Event comes once, at the end.
        let healthy = self.is_new_stable()
            && self.restart_message.is_none()
            && new_rs.is_some_and(|rs| rs.available >= replicas && rs.replicas == replicas)
            && scale_down
                .iter()
                .all(|t| t.replicas == 0 && t.hash != self.new);
        if self.is_new_stable() && self.status.phase != Phase::Degraded {
            self.status.phase = if healthy {
                Phase::Healthy
            } else {
                Phase::Progressing
            };
            self.status.message = if healthy {
                format!("revision {} healthy", self.new)
            } else {
                format!(
                    "revision {}: {} of {replicas} pods available",
                    self.new,
                    self.observed.available(&self.new)
                )
            };
        }
        if self.status.phase == Phase::Aborted {
            self.status.message = aborted_message(&self.new, &self.status);
        }
        if let Some(message) = &self.restart_message
            && self.status.phase == Phase::Progressing
        {
            self.status.message = message.clone();
        }
        if healthy && self.previous.phase != Phase::Healthy {
            let message = format!("revision {} is healthy", self.new);
            self.event(EventType::Normal, EventReason::Healthy, message);
        }
        let available = self.status.available_replicas >= replicas - bounds.unavailable;
        let phase = self.status.phase;
        set_condition(
            &mut self.status.conditions,
            "Available",
            available,
            if available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            "",
            now,
            generation,
        );
        set_condition(
            &mut self.status.conditions,
            "Healthy",
            healthy,
            phase.as_str(),
            &self.status.message.clone(),
            now,
            generation,
        );
        let paused = phase == Phase::Paused;
        set_condition(
            &mut self.status.conditions,
            "Paused",
            paused,
            if paused { "Paused" } else { "NotPaused" },
            "",
            now,
            generation,
        );
        let progressing = matches!(phase, Phase::Progressing | Phase::Paused | Phase::Healthy);
        let reason = match phase {
            Phase::Healthy => "RolloutCompleted",
            Phase::Aborted => "RolloutAborted",
            Phase::Degraded => "ProgressDeadlineExceeded",
            _ => "RolloutProgressing",
        };
        set_condition(
            &mut self.status.conditions,
            "Progressing",
            progressing,
            reason,
            &self.status.message.clone(),
            now,
            generation,
        );

        let (delete, retire) = self.idle_history(&scale_up, &scale_down);
        scale_down.extend(retire.into_iter().map(|hash| ReplicaSetTarget {
            hash,
            replicas: 0,
            revision: None,
            create: false,
            retire: true,
        }));
        let prune_history = scale_down
            .iter()
            .any(|t| t.retire)
            .then(|| self.history_limit());
        let pod_metadata = self.role_metadata_changes(&scale_up);
        let (terminate_runs, delete_runs) = self.run_housekeeping();
        let traffic = self.spec.strategy.routed().map(|routed| TrafficPlan {
            routing: routed.routing.clone(),
            backends: traffic::Backends {
                rollout: self.name.clone(),
                stable_service: routed.stable_service.to_owned(),
                canary_service: routed.canary_service.to_owned(),
            },
            state: self.traffic_state.clone(),
        });

        let requeue_after = self.requeue.map(|at| {
            let wait = at.duration_since(now);
            Duration::try_from(wait).unwrap_or(Duration::ZERO)
        });
        Plan {
            scale_up,
            pod_metadata,
            selectors: self.selectors,
            scale_down,
            delete,
            prune_history,
            traffic,
            create_runs: self.create_runs,
            terminate_runs,
            delete_runs,
            abort_latency_since: self.abort_latency_since,
            status: self.status,
            // Decided by `plan`, once the status is whole.
            status_change: Default::default(),
            events: self.events,
            requeue_after,
            restart: self.restart,
        }
    }

    /// The template is the stable one (finished, or changed back): stable at full size, every
    /// other version scaled down (a blue-green's previous one after its delay).
    pub(super) fn finish_on_stable(&mut self, stable: &str) {
        let replicas = self.replicas();
        self.targets.insert(stable.to_owned(), replicas);
        self.order = vec![stable.to_owned()];
        self.keep_previous_until_scale_down();
        let steps = self.steps_len();
        self.status.current_step_index = steps.map(|n| n as i32);
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.abort_cause = None;
        self.clear_pauses();
        self.status.analysis_runs.clear();
        self.wanted_runs.clear();
        self.active_on_new = false;
        self.traffic_state = None;
        if let Some(canary) = self.status.canary.as_mut() {
            canary.weight = 0;
            canary.scale_override = None;
        }
        self.pin_services(stable, stable);
        if self.observed.available(stable) < replicas {
            self.waiting_for_pods = true;
        }
    }

    /// Keeps the previous version (of a blue-green, or of a canary with a router) at its size
    /// until `scaleDownAt`, so connections to it can drain.
    pub(super) fn keep_previous_until_scale_down(&mut self) {
        let kept = match (
            &self.status.blue_green,
            &self.status.canary,
            &self.status.ab_test,
        ) {
            (Some(bg), _, _) if bg.scale_down_revision.is_some() => {
                (bg.scale_down_revision.clone(), bg.scale_down_at.clone())
            }
            (_, Some(c), _) if c.scale_down_revision.is_some() => {
                (c.scale_down_revision.clone(), c.scale_down_at.clone())
            }
            (_, _, Some(ab)) => (ab.scale_down_revision.clone(), ab.scale_down_at.clone()),
            _ => return,
        };
        let (Some(previous), Some(at)) = kept else {
            return;
        };
        if self.now < at.0
            && let Some(rs) = self.observed.replica_set(&previous)
        {
            self.targets.insert(previous, rs.replicas);
            self.wake_at(at.0);
        } else {
            if let Some(bg) = self.status.blue_green.as_mut() {
                bg.scale_down_at = None;
                bg.scale_down_revision = None;
            }
            if let Some(c) = self.status.canary.as_mut() {
                c.scale_down_at = None;
                c.scale_down_revision = None;
            }
            if let Some(ab) = self.status.ab_test.as_mut() {
                ab.scale_down_at = None;
                ab.scale_down_revision = None;
            }
        }
    }

    /// `revisionHistoryLimit`, or its default.
    fn history_limit(&self) -> usize {
        let limit = self
            .spec
            .revision_history_limit
            .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
            .max(0);
        usize::try_from(limit).unwrap_or(0)
    }

    /// Old ReplicaSets in the cache scaled to zero and with no role, not retired yet (scaled to
    /// zero while they were stable, by someone else, or before the controller retired what it
    /// scaled down): by name those with no pods left beyond the newest `revisionHistoryLimit`,
    /// to delete, and by hash the rest, to retire (their pods may still be going: nothing
    /// watches them for that). A stable version scaled to zero during its canary's step is
    /// retired in the reconcile that promotes the canary.
    pub(super) fn idle_history(
        &self,
        scale_up: &[ReplicaSetTarget],
        scale_down: &[ReplicaSetTarget],
    ) -> (Vec<String>, Vec<String>) {
        let limit = self.history_limit();
        let kept_for_a_delay = self
            .status
            .blue_green
            .as_ref()
            .and_then(|bg| bg.scale_down_revision.as_deref());
        let touched = |hash: &str| scale_up.iter().chain(scale_down).any(|t| t.hash == hash);
        let mut idle: Vec<&ObservedReplicaSet> = self
            .observed
            .replica_sets
            .iter()
            .filter(|rs| {
                rs.hash != self.new
                    && Some(rs.hash.as_str()) != self.status.stable_revision.as_deref()
                    && Some(rs.hash.as_str()) != kept_for_a_delay
                    && rs.replicas == 0
                    && !touched(&rs.hash)
            })
            .collect();
        idle.sort_by_key(|rs| std::cmp::Reverse(rs.revision));
        let beyond = idle.split_off(limit.min(idle.len()));
        let (delete, still_going): (Vec<_>, Vec<_>) =
            beyond.into_iter().partition(|rs| rs.ready == 0);
        (
            delete.into_iter().map(|rs| rs.name.clone()).collect(),
            idle.into_iter()
                .chain(still_going)
                .map(|rs| rs.hash.clone())
                .collect(),
        )
    }

    pub(super) fn bounds(&self) -> Result<Bounds, InvalidSpec> {
        bounds(self.spec)
    }
}
