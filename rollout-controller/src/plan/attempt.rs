//! Attempts at a revision: one starts for a new template and for a retry alike, and ends when
//! the revision is promoted to stable (or aborted, `abort.rs`).

use super::EventReason;
use super::{EventType, Planner};
use crate::crd::{AbTestStatus, CanaryStatus};

impl Planner<'_> {
    /// A new template starts from step 0; the first template ever is stable from the start.
    pub(super) fn track_revision(&mut self) {
        let stable_exists = self
            .status
            .stable_revision
            .as_deref()
            .is_some_and(|hash| self.observed.replica_set(hash).is_some());
        if !stable_exists {
            let previous_stable = self.status.stable_revision.clone();
            // No stable version (a first rollout, or its ReplicaSet was deleted by hand): the
            // newest ReplicaSet that still has pods is the best stand-in, else the new template.
            let stand_in = self
                .observed
                .replica_sets
                .iter()
                .filter(|rs| rs.available > 0 && Some(&rs.hash) != previous_stable.as_ref())
                .max_by_key(|rs| rs.revision)
                .map(|rs| rs.hash.clone())
                .unwrap_or_else(|| self.new.clone());
            if let Some(previous) = &previous_stable
                && previous != &stand_in
            {
                let message = format!(
                    "the ReplicaSet of stable revision {previous} is gone (deleted by hand?): \
                     revision {stand_in} is taken as stable"
                );
                self.event(
                    EventType::Warning,
                    EventReason::StableReplicaSetMissing,
                    message,
                );
            }
            self.status.stable_revision = Some(stand_in);
        }
        if self.status.updated_revision.as_deref() != Some(self.new.as_str()) {
            let fresh = self.status.updated_revision.is_some();
            self.status.updated_revision = Some(self.new.clone());
            self.status.canary = self
                .spec
                .strategy
                .canary
                .as_ref()
                .map(|_| CanaryStatus::default());
            if self.spec.strategy.ab_test.is_some() {
                self.status
                    .ab_test
                    .get_or_insert_with(AbTestStatus::default);
            }
            self.status.retries = self.decision().and_then(|d| d.retry).unwrap_or(0);
            self.start_attempt();
            if fresh || self.status.stable_revision.as_deref() != Some(self.new.as_str()) {
                let message = format!("rolling out revision {}", self.new);
                self.event(EventType::Normal, EventReason::NewRevision, message);
            }
        }
    }

    /// A new attempt at the revision being rolled out, for a new template and for a retry alike:
    /// step 0, no abort, no pause, no analysis, and no timer of the attempt before it (an
    /// autoPromotionSeconds counted from before an abort would promote without waiting).
    pub(super) fn start_attempt(&mut self) {
        self.status.current_step_index = Some(0);
        self.status.abort = false;
        self.status.aborted_at = None;
        self.status.abort_cause = None;
        self.clear_pauses();
        self.status.waiting_since = None;
        if let Some(canary) = self.status.canary.as_mut() {
            canary.scale_override = None;
        }
        if let Some(bg) = self.status.blue_green.as_mut() {
            bg.ready_since = None;
        }
        if let Some(ab) = self.status.ab_test.as_mut() {
            ab.started_at = None;
            ab.passed = false;
        }
        self.status.attempt += 1;
        self.status.analysis_runs.clear();
    }

    /// A retry, then an abort, each only when the decision is about this attempt and the
    /// rollout is in the state the action is for.
    pub(super) fn apply_decisions(&mut self) {
        let Some(decision) = self.decision() else {
            return;
        };
        let retry = decision.retry.unwrap_or(0);
        if retry > self.status.retries {
            // Taken as acted on even when it starts nothing, so that a retry value that arrives
            // while the rollout is not aborted never restarts a later abort.
            self.status.retries = retry;
            let this_attempt = self.decided().is_some();
            if self.status.abort && decision.abort != Some(true) && this_attempt {
                self.start_attempt();
                let message = format!("retrying revision {}", self.new);
                self.event(EventType::Normal, EventReason::Retried, message);
            }
        }
        let abort = self.decided().is_some_and(|d| d.abort == Some(true));
        if abort && !self.status.abort && !self.is_new_stable() {
            self.abort(
                EventReason::AbortedByUser,
                "by a decision (spec.decision.abort)".into(),
            );
        }
    }

    pub(super) fn promote(&mut self, previous: &str) {
        self.status.stable_revision = Some(self.new.clone());
        let message = format!("revision {} promoted to stable (was {previous})", self.new);
        self.event(EventType::Normal, EventReason::Promoted, message);
    }
}
