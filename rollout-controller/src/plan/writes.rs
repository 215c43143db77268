//! The order a plan is carried out in, decided once, purely: the reconciler executes these
//! writes one by one and the test simulator applies them in the same order, so the invariants
//! the property tests check hold for the order the controller runs.

use k8s_openapi::jiff::Timestamp;

use super::refused::{EVENT_NOTE_LIMIT, cut};
use super::restart::PodRestart;
use super::runs::NewAnalysisRun;
use super::status_write::StatusChange;
use super::{
    EventType, Plan, PlannedEvent, PodMetadataChange, ReplicaSetTarget, SelectorChange, TrafficPlan,
};
use crate::crd::RolloutStatus;

/// One write of a plan, borrowed from it. Listed in the order [`Plan::writes`] gives, which is
/// the order they are made in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Write<'a> {
    /// Grow a ReplicaSet, or create it: a new one is born with `role`, the role metadata the
    /// plan moves onto that version.
    ScaleUp {
        target: &'a ReplicaSetTarget,
        role: Option<&'a PodMetadataChange>,
    },
    /// Role labels and annotations onto a version's pod template, then onto its pods. Skipped
    /// for a ReplicaSet this reconcile created: it was born with them.
    PodMetadata(&'a PodMetadataChange),
    /// A Service's selector to one version's pods.
    Selector(&'a SelectorChange),
    /// The router's state; the router writes only what differs.
    Traffic(&'a TrafficPlan),
    ScaleDown(&'a ReplicaSetTarget),
    /// An old ReplicaSet beyond revisionHistoryLimit, by name.
    DeleteReplicaSet(&'a str),
    /// The retired ReplicaSets listed, and those beyond the newest `limit` deleted.
    PruneHistory {
        limit: usize,
    },
    /// Not a write: the point where traffic is on stable after an abort on a failed analysis
    /// (which failed at this time), where the abort latency is measured.
    TrafficOnStable {
        failed_at: Timestamp,
    },
    /// A stable pod deleted for a restart, if it is still the one chosen (its uid).
    RestartPod(&'a PodRestart),
    CreateRun(&'a NewAnalysisRun),
    /// An AnalysisRun that gates nothing any more, told to stop measuring.
    TerminateRun(&'a str),
    /// A finished AnalysisRun beyond the history kept.
    DeleteRun(&'a str),
    /// The whole status, when it differs from the rollout's. `counts_only`: nothing but counts
    /// changed, and the controller may hold it back a while (`status_write`).
    Status {
        status: &'a RolloutStatus,
        counts_only: bool,
    },
    /// The reconcile's Events, written as one ([`transition_event`]): one Event per transition,
    /// however many things it did. One that cannot be written never stops the rollout.
    Events(&'a [PlannedEvent]),
}

impl Plan {
    /// The writes this plan needs, in the order they must be made:
    ///
    /// - ReplicaSets grow (and the new version's role metadata moves) before any traffic moves
    ///   to them, and traffic (Service selectors, then the router) moves before anything
    ///   shrinks: no request is sent to pods that are not there yet, and none is left on pods
    ///   about to go.
    /// - Old ReplicaSets are deleted after the scale-down, and the abort latency is measured
    ///   once all of that is done, traffic being on stable then.
    /// - A restart deletes its pod after the ReplicaSets are written.
    /// - AnalysisRuns are created before the status that names them, so a restart of the
    ///   controller at any write never finds a status pointing at a run that does not exist.
    /// - Status last of the writes that are progress: everything before it is idempotent and
    ///   is made again from the old status if the process stops in between; and only when it
    ///   changed. Events after it, as one.
    pub(crate) fn writes(&self) -> Vec<Write<'_>> {
        let mut writes = Vec::new();
        writes.extend(self.scale_up.iter().map(|target| Write::ScaleUp {
            target,
            role: self.pod_metadata.iter().find(|c| c.hash == target.hash),
        }));
        writes.extend(self.pod_metadata.iter().map(Write::PodMetadata));
        writes.extend(self.selectors.iter().map(Write::Selector));
        writes.extend(self.traffic.iter().map(Write::Traffic));
        writes.extend(self.scale_down.iter().map(Write::ScaleDown));
        writes.extend(self.delete.iter().map(|name| Write::DeleteReplicaSet(name)));
        writes.extend(
            self.prune_history
                .map(|limit| Write::PruneHistory { limit }),
        );
        writes.extend(
            self.abort_latency_since
                .map(|failed_at| Write::TrafficOnStable { failed_at }),
        );
        writes.extend(self.restart.iter().map(Write::RestartPod));
        writes.extend(self.create_runs.iter().map(Write::CreateRun));
        writes.extend(
            self.terminate_runs
                .iter()
                .map(|name| Write::TerminateRun(name)),
        );
        writes.extend(self.delete_runs.iter().map(|name| Write::DeleteRun(name)));
        if self.status_change != StatusChange::None {
            writes.push(Write::Status {
                status: &self.status,
                counts_only: self.status_change == StatusChange::Counts,
            });
        }
        if !self.events.is_empty() {
            writes.push(Write::Events(&self.events));
        }
        writes
    }
}

/// The one Event a reconcile writes for what it did: the reason of its first Warning, else of
/// the first thing it did (the step that completed before the promotion it led to), and every
/// message, in order (as much as an Event's note holds). `None` when it did nothing to tell of.
pub(crate) fn transition_event(events: &[PlannedEvent]) -> Option<PlannedEvent> {
    let lead = events
        .iter()
        .find(|e| e.type_ == EventType::Warning)
        .or(events.first())?;
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    Some(PlannedEvent {
        type_: lead.type_,
        reason: lead.reason,
        message: cut(&messages.join("; "), EVENT_NOTE_LIMIT),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::EventReason;

    fn target(hash: &str, replicas: i32) -> ReplicaSetTarget {
        ReplicaSetTarget {
            hash: hash.into(),
            replicas,
            revision: None,
            create: false,
            retire: false,
        }
    }

    fn traffic(weight: Option<i32>) -> TrafficPlan {
        TrafficPlan {
            routing: serde_json::from_value(serde_json::json!({"nginx": {"stableIngress": "web"}}))
                .unwrap(),
            backends: traffic::Backends {
                rollout: "web".into(),
                stable_service: "web-stable".into(),
                canary_service: "web-canary".into(),
            },
            state: weight.map(|canary_weight| traffic::TrafficState {
                canary_weight,
                routes: Vec::new(),
            }),
        }
    }

    /// Where the first write `is` matches stands in `writes`.
    fn position(writes: &[Write<'_>], is: impl Fn(&Write<'_>) -> bool) -> usize {
        writes.iter().position(is).expect("write not planned")
    }

    #[test]
    fn a_canary_weight_increase_grows_the_canary_before_the_router_sends_it_traffic() {
        let plan = Plan {
            scale_up: vec![target("new", 3)],
            scale_down: vec![target("old", 2)],
            traffic: Some(traffic(Some(50))),
            ..Plan::default()
        };
        let writes = plan.writes();
        let grow = position(&writes, |w| matches!(w, Write::ScaleUp { .. }));
        let route = position(&writes, |w| matches!(w, Write::Traffic(_)));
        let shrink = position(&writes, |w| matches!(w, Write::ScaleDown(_)));
        assert!(grow < route && route < shrink, "{writes:?}");
    }

    #[test]
    fn an_abort_moves_traffic_to_stable_before_the_canary_shrinks_and_then_measures_the_latency() {
        let failed_at = Timestamp::from_second(1_800_000_000).unwrap();
        let plan = Plan {
            selectors: vec![SelectorChange {
                service: "web-canary".into(),
                hash: "old".into(),
            }],
            traffic: Some(traffic(None)),
            scale_down: vec![target("new", 0)],
            delete: vec!["web-older".into()],
            abort_latency_since: Some(failed_at),
            ..Plan::default()
        };
        let writes = plan.writes();
        assert_eq!(
            &writes[..5],
            &[
                Write::Selector(&plan.selectors[0]),
                Write::Traffic(plan.traffic.as_ref().unwrap()),
                Write::ScaleDown(&plan.scale_down[0]),
                Write::DeleteReplicaSet("web-older"),
                Write::TrafficOnStable { failed_at },
            ]
        );
    }

    #[test]
    fn a_new_version_is_created_with_its_role_and_the_role_moves_before_any_selector() {
        let role = PodMetadataChange {
            hash: "new".into(),
            labels: BTreeMap::from([("role".into(), Some("canary".into()))]),
            annotations: BTreeMap::new(),
        };
        let stable_role = PodMetadataChange {
            hash: "old".into(),
            ..role.clone()
        };
        let plan = Plan {
            scale_up: vec![target("new", 1)],
            pod_metadata: vec![role, stable_role],
            selectors: vec![SelectorChange {
                service: "web-canary".into(),
                hash: "new".into(),
            }],
            ..Plan::default()
        };
        let writes = plan.writes();
        assert_eq!(
            &writes[..4],
            &[
                Write::ScaleUp {
                    target: &plan.scale_up[0],
                    role: Some(&plan.pod_metadata[0]),
                },
                Write::PodMetadata(&plan.pod_metadata[0]),
                Write::PodMetadata(&plan.pod_metadata[1]),
                Write::Selector(&plan.selectors[0]),
            ]
        );
    }

    #[test]
    fn a_blue_green_promotion_points_the_active_service_before_the_old_version_shrinks() {
        let plan = Plan {
            selectors: vec![SelectorChange {
                service: "web-active".into(),
                hash: "new".into(),
            }],
            scale_down: vec![target("old", 0)],
            ..Plan::default()
        };
        let writes = plan.writes();
        let select = position(&writes, |w| matches!(w, Write::Selector(_)));
        let shrink = position(&writes, |w| matches!(w, Write::ScaleDown(_)));
        assert!(select < shrink, "{writes:?}");
    }

    #[test]
    fn analysis_runs_are_created_stopped_and_deleted_before_the_status_that_names_them() {
        let plan = Plan {
            create_runs: vec![NewAnalysisRun {
                name: "web-new-1-canary".into(),
                kind: crate::crd::analysis::RunKind::Step(1),
                hash: "new".into(),
                spec: serde_json::from_value(serde_json::json!({"metrics": []})).unwrap(),
            }],
            terminate_runs: vec!["web-new-0-canary".into()],
            delete_runs: vec!["web-older-0-canary".into()],
            restart: Some(PodRestart {
                name: "web-old-abc".into(),
                uid: "u1".into(),
            }),
            scale_up: vec![target("new", 1)],
            status_change: StatusChange::Progress,
            ..Plan::default()
        };
        let writes = plan.writes();
        assert_eq!(
            &writes[1..],
            &[
                Write::RestartPod(plan.restart.as_ref().unwrap()),
                Write::CreateRun(&plan.create_runs[0]),
                Write::TerminateRun("web-new-0-canary"),
                Write::DeleteRun("web-older-0-canary"),
                Write::Status {
                    status: &plan.status,
                    counts_only: false
                },
            ]
        );
    }

    fn event(type_: EventType, reason: EventReason, message: &str) -> PlannedEvent {
        PlannedEvent {
            type_,
            reason,
            message: message.into(),
        }
    }

    #[test]
    fn the_status_is_the_last_write_of_progress_and_the_events_follow_it_as_one() {
        let plan = Plan {
            scale_up: vec![target("new", 1)],
            status_change: StatusChange::Progress,
            events: vec![
                event(
                    EventType::Normal,
                    EventReason::StepCompleted,
                    "step 2/2 done",
                ),
                event(EventType::Normal, EventReason::Promoted, "promoted"),
            ],
            ..Plan::default()
        };
        let writes = plan.writes();
        assert_eq!(
            &writes[1..],
            &[
                Write::Status {
                    status: &plan.status,
                    counts_only: false
                },
                Write::Events(&plan.events),
            ]
        );
    }

    #[test]
    fn a_status_the_rollout_has_is_not_written_and_counts_alone_may_wait() {
        let unchanged = Plan::default();
        assert_eq!(unchanged.writes(), vec![]);
        let counts = Plan {
            status_change: StatusChange::Counts,
            ..Plan::default()
        };
        assert_eq!(
            counts.writes(),
            vec![Write::Status {
                status: &counts.status,
                counts_only: true
            }]
        );
    }

    #[test]
    fn one_event_tells_of_a_transition_led_by_its_first_warning_or_first_act() {
        assert_eq!(transition_event(&[]), None);
        let promoted = [
            event(
                EventType::Normal,
                EventReason::StepCompleted,
                "step 2/2 done: pause 5s",
            ),
            event(
                EventType::Normal,
                EventReason::Promoted,
                "v2 promoted to stable",
            ),
            event(EventType::Normal, EventReason::Healthy, "v2 is healthy"),
        ];
        assert_eq!(
            transition_event(&promoted),
            Some(event(
                EventType::Normal,
                EventReason::StepCompleted,
                "step 2/2 done: pause 5s; v2 promoted to stable; v2 is healthy"
            ))
        );
        let aborted = [
            event(
                EventType::Normal,
                EventReason::StepCompleted,
                "step 1/3 done",
            ),
            event(
                EventType::Warning,
                EventReason::AnalysisFailed,
                "run failed",
            ),
        ];
        assert_eq!(
            transition_event(&aborted),
            Some(event(
                EventType::Warning,
                EventReason::AnalysisFailed,
                "step 1/3 done; run failed"
            ))
        );
        let many = vec![
            event(
                EventType::Normal,
                EventReason::StepCompleted,
                &"x".repeat(600)
            );
            3
        ];
        let note = transition_event(&many).unwrap().message;
        assert!(note.len() <= EVENT_NOTE_LIMIT, "{}", note.len());
    }
}
