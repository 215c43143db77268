//! Whether a planned status is written, and how soon. Most of what changes in a status while a
//! rollout waits is its counts: pods are created and become ready one at a time, and a write for
//! each was most of a rollout's writes. So a status is written
//!
//! - never when the rollout has it already (compared as values: the order of its conditions,
//!   pauses and runs means nothing);
//! - at once when anything besides the counts changed (a step, a phase, a pause, a run, a timer,
//!   a condition's status: whatever a restart continues from), or when the plan has an Event (an
//!   Event tells of a status that is there);
//! - when only the counts changed (replicas, ready, available, updated, the messages that show
//!   them, the restart of the progress deadline's count that a new ready pod makes), with the
//!   next transition's write, or [`COUNTS_WRITE_DELAY`] after the controller first held it back;
//!   twice that after one such write with no progress since, four times after two, and so on up
//!   to [`COUNTS_WRITE_DELAY_MAX`] ([`CountsHold`]). Pods that take minutes to come (a loaded
//!   control plane, a ReplicaSet of ten scaled a few at a time) then cost a handful of writes,
//!   not one every ten seconds; the first change after a transition still shows within ten.
//!
//! Nothing is lost by holding counts: the planner never decides from the counts in the status
//! but from the ReplicaSets (the progress deadline only restarts its count sooner while they are
//! held), so a restart plans the same from the status written before.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::RolloutStatus;

/// How long a change of counts alone may wait for a transition to carry it, when no counts
/// alone were written since the last progress.
pub const COUNTS_WRITE_DELAY: Duration = Duration::from_secs(10);

/// The longest a change of counts alone waits, however many went out in a row before it.
pub const COUNTS_WRITE_DELAY_MAX: Duration = Duration::from_secs(60);

/// How a planned status differs from the one the rollout has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusChange {
    /// The rollout has it.
    #[default]
    None,
    /// Only counts: written with the next transition, or after [`COUNTS_WRITE_DELAY`].
    Counts,
    /// Progress, or a status an Event tells of: written now.
    Progress,
}

/// How `planned` differs from `current` (the rollout's status), for a plan with or without
/// Events.
pub(crate) fn change(
    current: Option<&RolloutStatus>,
    planned: &RolloutStatus,
    has_events: bool,
) -> StatusChange {
    let current = current.cloned().unwrap_or_default();
    if same(&current, planned) {
        StatusChange::None
    } else if !has_events && same(&without_counts(&current), &without_counts(planned)) {
        StatusChange::Counts
    } else {
        StatusChange::Progress
    }
}

/// Whether two statuses say the same, whatever order their lists are in.
pub(crate) fn same(a: &RolloutStatus, b: &RolloutStatus) -> bool {
    a == b || in_order(a) == in_order(b)
}

/// Where one rollout's changes of counts alone stand in this process: whether one is held back
/// and since when, and how many went out since its last progress was written. A cache, not
/// progress: a restarted process starts every rollout from the shortest delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CountsHold {
    held_since: Option<Timestamp>,
    written_in_a_row: u32,
}

impl CountsHold {
    /// Follows a plan whose status differs from the rollout's by `change`: a status the
    /// rollout has ends a hold, and progress (written at once) ends the series as well.
    pub(crate) fn plan(&mut self, change: StatusChange) {
        match change {
            StatusChange::None => self.held_since = None,
            StatusChange::Progress => *self = Self::default(),
            StatusChange::Counts => {}
        }
    }

    /// For a write of counts alone planned at `now`: when it is due, while that is later than
    /// `now`. The hold starts at `now` if none had.
    pub(crate) fn due_after(&mut self, now: Timestamp) -> Option<Timestamp> {
        let since = *self.held_since.get_or_insert(now);
        let due = since + SignedDuration::try_from(self.delay()).unwrap_or(SignedDuration::ZERO);
        (now < due).then_some(due)
    }

    /// The held counts were written.
    pub(crate) fn written(&mut self) {
        self.held_since = None;
        self.written_in_a_row = self.written_in_a_row.saturating_add(1);
    }

    /// Whether it knows nothing a fresh one would not: its entry can go.
    pub(crate) fn is_fresh(&self) -> bool {
        *self == Self::default()
    }

    fn delay(&self) -> Duration {
        let factor = 1u32.checked_shl(self.written_in_a_row).unwrap_or(u32::MAX);
        COUNTS_WRITE_DELAY
            .saturating_mul(factor)
            .min(COUNTS_WRITE_DELAY_MAX)
    }
}

/// The lists keyed by what they are about, sorted by it.
fn in_order(status: &RolloutStatus) -> RolloutStatus {
    let mut status = status.clone();
    status.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    status
        .pause_conditions
        .sort_by(|a, b| a.reason.cmp(&b.reason));
    status.analysis_runs.sort_by(|a, b| a.name.cmp(&b.name));
    status
}

/// The status with what follows the pods alone taken out.
fn without_counts(status: &RolloutStatus) -> RolloutStatus {
    let mut status = status.clone();
    status.replicas = 0;
    status.updated_replicas = 0;
    status.ready_replicas = 0;
    status.available_replicas = 0;
    status.message.clear();
    // Waiting or not is progress; the count restarting on a new ready pod is not.
    if status.waiting_since.is_some() {
        status.waiting_since = Some(Time(Timestamp::UNIX_EPOCH));
    }
    for condition in &mut status.conditions {
        // These two repeat `message`.
        if condition.type_ == "Healthy" || condition.type_ == "Progressing" {
            condition.message.clear();
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::crd::{CanaryStatus, PauseCondition, Phase};

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn condition(type_: &str, status: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "RolloutProgressing".into(),
            message: message.into(),
            last_transition_time: at(1_000),
            observed_generation: Some(2),
        }
    }

    /// A canary waiting at step 0 for its pods.
    fn waiting() -> RolloutStatus {
        RolloutStatus {
            observed_generation: Some(2),
            phase: Phase::Progressing,
            message: "step 1/2: setWeight 50".into(),
            strategy: "canary".into(),
            stable_revision: Some("v1".into()),
            updated_revision: Some("v2".into()),
            current_step_index: Some(0),
            canary: Some(CanaryStatus::default()),
            attempt: 2,
            waiting_since: Some(at(1_000)),
            replicas: 1,
            ready_replicas: 1,
            available_replicas: 1,
            conditions: vec![
                condition("Available", "True", ""),
                condition("Healthy", "False", "step 1/2: setWeight 50"),
                condition("Progressing", "True", "step 1/2: setWeight 50"),
            ],
            ..RolloutStatus::default()
        }
    }

    #[test]
    fn a_status_the_rollout_has_is_not_written_whatever_the_order_of_its_lists() {
        let current = waiting();
        let mut planned = current.clone();
        planned.conditions.reverse();
        planned.pause_conditions = vec![
            PauseCondition {
                reason: "UserPause".into(),
                start_time: at(1_000),
            },
            PauseCondition {
                reason: "CanaryPauseStep".into(),
                start_time: at(1_001),
            },
        ];
        let mut current_paused = current.clone();
        current_paused.pause_conditions = planned.pause_conditions.iter().rev().cloned().collect();
        assert_eq!(
            change(Some(&current_paused), &planned, false),
            StatusChange::None
        );
        assert_eq!(change(Some(&current), &current, true), StatusChange::None);
    }

    #[test]
    fn pods_becoming_ready_change_only_counts() {
        let current = waiting();
        let mut planned = current.clone();
        planned.replicas = 2;
        planned.ready_replicas = 2;
        planned.available_replicas = 2;
        planned.updated_replicas = 1;
        planned.waiting_since = Some(at(1_004));
        planned.message = "promoting: 1 of 1 pods of the new version available".into();
        planned.conditions[1].message = planned.message.clone();
        planned.conditions[2].message = planned.message.clone();
        assert_eq!(
            change(Some(&current), &planned, false),
            StatusChange::Counts
        );
    }

    #[test]
    fn a_step_a_phase_a_timer_or_a_condition_flip_is_progress() {
        let current = waiting();
        let progress: [fn(&mut RolloutStatus); 6] = [
            |s| s.current_step_index = Some(1),
            |s| s.phase = Phase::Paused,
            |s| s.waiting_since = None,
            |s| {
                s.canary = Some(CanaryStatus {
                    weight: 50,
                    ..CanaryStatus::default()
                })
            },
            |s| s.conditions[0].status = "False".into(),
            |s| s.observed_generation = Some(3),
        ];
        for (i, make) in progress.iter().enumerate() {
            let mut planned = current.clone();
            planned.ready_replicas += 1;
            make(&mut planned);
            assert_eq!(
                change(Some(&current), &planned, false),
                StatusChange::Progress,
                "change {i}"
            );
        }
    }

    #[test]
    fn counts_with_an_event_are_written_at_once_so_the_event_tells_of_a_written_status() {
        let current = waiting();
        let mut planned = current.clone();
        planned.ready_replicas = 0;
        assert_eq!(
            change(Some(&current), &planned, true),
            StatusChange::Progress
        );
    }

    #[test]
    fn a_first_status_is_progress() {
        assert_eq!(change(None, &waiting(), false), StatusChange::Progress);
    }

    fn second(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn held_counts_are_due_after_the_delay_from_when_they_were_first_held() {
        let mut hold = CountsHold::default();
        hold.plan(StatusChange::Counts);
        assert_eq!(hold.due_after(second(1_000)), Some(second(1_010)));
        hold.plan(StatusChange::Counts);
        assert_eq!(hold.due_after(second(1_004)), Some(second(1_010)));
        hold.plan(StatusChange::Counts);
        assert_eq!(hold.due_after(second(1_010)), None);
    }

    /// Pods coming one by one for minutes: each write of counts alone doubles the wait for the
    /// next, up to the cap, and progress starts the series again from the shortest.
    #[test]
    fn counts_written_in_a_row_wait_longer_each_time_until_progress() {
        let mut hold = CountsHold::default();
        let mut now = 1_000;
        let mut waits = Vec::new();
        for _ in 0..6 {
            hold.plan(StatusChange::Counts);
            let due = hold.due_after(second(now)).unwrap();
            waits.push(due.as_second() - now);
            now = due.as_second();
            hold.plan(StatusChange::Counts);
            assert_eq!(hold.due_after(second(now)), None);
            hold.written();
            // The write is read back: the rollout has the status planned.
            hold.plan(StatusChange::None);
        }
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        assert!(!hold.is_fresh());

        hold.plan(StatusChange::Progress);
        assert!(hold.is_fresh());
        hold.plan(StatusChange::Counts);
        assert_eq!(hold.due_after(second(now)), Some(second(now + 10)));
    }

    #[test]
    fn counts_that_fall_back_to_what_the_rollout_has_end_the_hold_not_the_series() {
        let mut hold = CountsHold::default();
        hold.plan(StatusChange::Counts);
        assert_eq!(hold.due_after(second(1_000)), Some(second(1_010)));
        hold.plan(StatusChange::Counts);
        assert_eq!(hold.due_after(second(1_010)), None);
        hold.written();
        hold.plan(StatusChange::Counts);
        assert_eq!(hold.due_after(second(1_015)), Some(second(1_035)));
        // A pod that went unready and came back: nothing to write, and the next change of
        // counts is held from when it comes, at the series' delay.
        hold.plan(StatusChange::None);
        hold.plan(StatusChange::Counts);
        assert_eq!(hold.due_after(second(1_050)), Some(second(1_070)));
    }
}
