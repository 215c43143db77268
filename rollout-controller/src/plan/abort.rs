//! Aborting: all traffic back on stable at once, stable whole, the new version kept a while for
//! a look at it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

use super::EventReason;
use super::{DEFAULT_SCALE_DOWN_DELAY_SECONDS, EventType, Planner};
use crate::crd::{Phase, RolloutStatus};

impl Planner<'_> {
    pub(super) fn abort(&mut self, reason: EventReason, why: String) {
        self.status.abort = true;
        self.status.aborted_at = Some(Time(self.now));
        self.clear_pauses();
        let message = format!("revision {} aborted: {why}", self.new);
        self.status.abort_cause = Some(why);
        self.event(EventType::Warning, reason, message);
    }

    /// Aborts in this very reconcile: whatever the strategy planned is dropped for the aborted
    /// hold (all traffic on stable, stable whole).
    pub(super) fn abort_now(&mut self, reason: EventReason, why: String) {
        self.abort(reason, why);
        let stable = self.status.stable_revision.clone().unwrap_or_default();
        self.targets.clear();
        self.order.clear();
        self.selectors.clear();
        self.active_on_new = false;
        self.waiting_for_pods = false;
        self.wanted_runs.clear();
        self.hold_aborted(&stable);
    }

    /// Aborted: all traffic on stable, stable at full size first, the new version down after.
    pub(super) fn hold_aborted(&mut self, stable: &str) {
        let replicas = self.replicas();
        self.targets.insert(stable.to_owned(), replicas);
        self.order = vec![stable.to_owned()];
        self.urgent = true;
        if let Some(canary) = self.status.canary.as_mut() {
            canary.weight = 0;
        }
        self.traffic_state = None;
        if self.spec.strategy.blue_green.is_some() || self.router.is_some() {
            // Traffic left it at once; the new version stays up for abortScaleDownDelaySeconds,
            // for a look at it.
            let delay = self
                .spec
                .strategy
                .blue_green
                .as_ref()
                .and_then(|bg| bg.abort_scale_down_delay_seconds)
                .or_else(|| {
                    self.spec
                        .strategy
                        .canary
                        .as_ref()
                        .and_then(|c| c.abort_scale_down_delay_seconds)
                })
                .unwrap_or(DEFAULT_SCALE_DOWN_DELAY_SECONDS);
            let aborted_at = self.status.aborted_at.as_ref().map_or(self.now, |t| t.0);
            let until = aborted_at + SignedDuration::from_secs(i64::from(delay));
            if self.now < until
                && let Some(rs) = self.observed.replica_set(&self.new)
            {
                self.targets.insert(self.new.clone(), rs.replicas);
                self.wake_at(until);
            }
        }
        self.pin_services(stable, stable);
        self.status.phase = Phase::Aborted;
        // The runs stay listed, so people see which one failed; none of them gates anything.
        for reference in &mut self.status.analysis_runs {
            if let Some(run) = self.observed.analysis_runs.get(&reference.name) {
                reference.phase = run.phase.into();
            }
        }
    }
}

/// What an aborted rollout says for as long as it stays aborted: the revision, why (the cause
/// is kept in status, as the Event that told it once is gone), and where traffic is.
pub(super) fn aborted_message(revision: &str, status: &RolloutStatus) -> String {
    let stable = status.stable_revision.as_deref().unwrap_or_default();
    match &status.abort_cause {
        Some(cause) => format!("revision {revision} aborted: {cause}; traffic on stable {stable}"),
        None => format!("revision {revision} aborted; traffic on stable {stable}"),
    }
}
