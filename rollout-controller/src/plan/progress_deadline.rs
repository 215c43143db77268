//! progressDeadlineSeconds: how long a rollout may wait for pods before it aborts (or, with
//! progressDeadlineAbort false, is Degraded).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::EventReason;
use super::{DEFAULT_PROGRESS_DEADLINE_SECONDS, EventType, Planner};
use crate::crd::Phase;

impl Planner<'_> {
    /// Time waiting for pods counts toward progressDeadlineSeconds; any new available pod of
    /// the new version, or a step, restarts the count.
    pub(super) fn check_progress_deadline(&mut self) {
        let progressed = self.status.current_step_index != self.previous.current_step_index
            || self
                .observed
                .replica_set(&self.new)
                .map_or(0, |rs| rs.ready)
                != self.previous.updated_replicas;
        if !self.waiting_for_pods || self.status.abort {
            self.status.waiting_since = None;
            return;
        }
        let since = match (&self.status.waiting_since, progressed) {
            (Some(t), false) => t.0,
            _ => self.now,
        };
        self.status.waiting_since = Some(Time(since));
        let deadline = self
            .spec
            .progress_deadline_seconds
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE_SECONDS);
        let at = since + SignedDuration::from_secs(i64::from(deadline));
        if self.now >= at {
            let why = format!("no progress for {deadline}s while waiting for pods");
            if self.spec.progress_deadline_abort != Some(false) && !self.is_new_stable() {
                self.abort(
                    EventReason::ProgressDeadlineExceeded,
                    format!("progress deadline exceeded: {why}"),
                );
                let stable = self.status.stable_revision.clone().unwrap_or_default();
                self.targets.clear();
                self.selectors.clear();
                self.hold_aborted(&stable);
            } else {
                // Not an abort, still a transition: said with an Event (and so counted), once.
                if self.previous.phase != Phase::Degraded || self.previous.message != why {
                    self.event(
                        EventType::Warning,
                        EventReason::ProgressStalled,
                        why.clone(),
                    );
                }
                self.status.phase = Phase::Degraded;
                self.status.message = why;
            }
        } else {
            self.wake_at(at);
        }
    }
}
