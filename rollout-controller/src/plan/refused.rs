//! A ReplicaSet write the apiserver refused for good: the rollout is Degraded, with the
//! apiserver's own message, instead of silently retrying. Many templates a Rollout's schema
//! accepts make no valid ReplicaSet (a label key that is not label syntax, annotations over
//! 256 KiB, ...); only the apiserver's ReplicaSet validation says which, and how.

use k8s_openapi::jiff::Timestamp;

use super::EventReason;
use super::conditions::set_condition;
use super::{EventType, PlannedEvent, selector_string, strategy_name};
use crate::crd::{Phase, Rollout, RolloutStatus};

/// The condition (and Event reason) that says a ReplicaSet could not be written.
pub(crate) const CONDITION: &str = "ReplicaSetCreateError";
/// Events carry at most 1 KiB of note (events.k8s.io/v1 refuses more).
pub(super) const EVENT_NOTE_LIMIT: usize = 1024;
/// The apiserver's message can quote the value it refused, which may be large: status carries
/// the head of it.
const MESSAGE_LIMIT: usize = 4096;

/// A ReplicaSet write the apiserver refused, with a status code that retrying the same request
/// cannot change (400, 413, 422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// What was being written: `creating ReplicaSet web-5d8f7c`.
    pub action: String,
    /// The apiserver's reason (`Invalid`, `RequestEntityTooLarge`).
    pub reason: String,
    /// The apiserver's message.
    pub message: String,
}

/// The status to write after `refusal`, and the Event to publish when the refusal is new. The
/// status is the one the rollout had, Degraded: the plan whose write was refused did not happen,
/// so none of its progress is recorded.
pub(crate) fn refused(
    rollout: &Rollout,
    refusal: &Refusal,
    now: Timestamp,
) -> (RolloutStatus, Option<PlannedEvent>) {
    let previous = rollout.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let generation = rollout.metadata.generation;
    status.observed_generation = generation;
    status.strategy = strategy_name(&rollout.spec).into();
    status.selector = selector_string(&rollout.spec);
    let message = cut(
        &format!(
            "{} refused by the apiserver: {}",
            refusal.action, refusal.message
        ),
        MESSAGE_LIMIT,
    );
    status.phase = Phase::Degraded;
    status.message = message.clone();
    set_condition(
        &mut status.conditions,
        CONDITION,
        true,
        &condition_reason(&refusal.reason),
        &message,
        now,
        generation,
    );
    for (type_, reason) in [
        ("Progressing", CONDITION),
        ("Healthy", Phase::Degraded.as_str()),
    ] {
        set_condition(
            &mut status.conditions,
            type_,
            false,
            reason,
            &message,
            now,
            generation,
        );
    }
    let known = previous
        .conditions
        .iter()
        .any(|c| c.type_ == CONDITION && c.status == "True" && c.message == message);
    let event = (!known).then(|| PlannedEvent {
        type_: EventType::Warning,
        reason: EventReason::ReplicaSetCreateError,
        message: cut(&message, EVENT_NOTE_LIMIT),
    });
    (status, event)
}

/// Once the new version's ReplicaSet exists, a refusal recorded earlier is over.
pub(super) fn clear(
    status: &mut RolloutStatus,
    created: bool,
    now: Timestamp,
    generation: Option<i64>,
) {
    let refused = status
        .conditions
        .iter()
        .any(|c| c.type_ == CONDITION && c.status == "True");
    if created && refused {
        set_condition(
            &mut status.conditions,
            CONDITION,
            false,
            "Created",
            "",
            now,
            generation,
        );
    }
}

/// A condition's reason must be a CamelCase word: the apiserver's, when it is one.
fn condition_reason(reason: &str) -> String {
    let word = reason.len() <= 64
        && reason.starts_with(|c: char| c.is_ascii_alphabetic())
        && reason.chars().all(|c| c.is_ascii_alphanumeric());
    if word { reason } else { "Refused" }.to_owned()
}

/// `text`, at most `limit` bytes of it, cut on a character boundary and marked.
pub(super) fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let marker = " [...]";
    let mut end = limit - marker.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{RolloutSpec, Strategy};

    fn rollout(status: Option<RolloutStatus>) -> Rollout {
        let mut rollout = Rollout::new(
            "web",
            RolloutSpec {
                strategy: Strategy {
                    rolling_update: Some(Default::default()),
                    ..Strategy::default()
                },
                ..RolloutSpec::default()
            },
        );
        rollout.metadata.generation = Some(3);
        rollout.status = status;
        rollout
    }

    fn refusal(message: &str) -> Refusal {
        Refusal {
            action: "creating ReplicaSet web-abc".into(),
            reason: "Invalid".into(),
            message: message.into(),
        }
    }

    fn condition<'a>(
        status: &'a RolloutStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_refused_replica_set_degrades_a_rollout_without_status() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let message = "spec.template.spec.containers[1].name: Duplicate value: \"app\"";
        let (status, event) = refused(&rollout(None), &refusal(message), t0);
        assert_eq!(status.phase, Phase::Degraded);
        assert_eq!(
            status.message,
            format!("creating ReplicaSet web-abc refused by the apiserver: {message}")
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.strategy, "rollingUpdate");
        let refused_condition = condition(&status, CONDITION);
        assert_eq!(refused_condition.status, "True");
        assert_eq!(refused_condition.reason, "Invalid");
        assert_eq!(refused_condition.message, status.message);
        assert_eq!(condition(&status, "Progressing").status, "False");
        assert_eq!(condition(&status, "Progressing").reason, CONDITION);
        assert_eq!(condition(&status, "Healthy").status, "False");
        let event = event.unwrap();
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, EventReason::ReplicaSetCreateError);
        assert_eq!(event.reason.as_str(), CONDITION);
        assert_eq!(event.message, status.message);
    }

    #[test]
    fn the_same_refusal_again_writes_nothing_new() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let (first, _) = refused(&rollout(None), &refusal("no"), t0);
        let (again, event) = refused(&rollout(Some(first.clone())), &refusal("no"), t1);
        assert_eq!(again, first, "the transition times moved");
        assert!(event.is_none());
        let (other, event) = refused(&rollout(Some(first)), &refusal("other"), t1);
        assert!(event.is_some(), "a new cause is news");
        assert_eq!(
            condition(&other, CONDITION).last_transition_time.0,
            t0,
            "still refused: no transition"
        );
    }

    #[test]
    fn progress_recorded_before_the_refusal_is_kept() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let before = RolloutStatus {
            stable_revision: Some("v1".into()),
            updated_revision: Some("v1".into()),
            current_step_index: Some(2),
            attempt: 4,
            ..RolloutStatus::default()
        };
        let (status, _) = refused(&rollout(Some(before.clone())), &refusal("no"), t0);
        assert_eq!(status.stable_revision, before.stable_revision);
        assert_eq!(status.updated_revision, before.updated_revision);
        assert_eq!(status.current_step_index, Some(2));
        assert_eq!(status.attempt, 4);
    }

    #[test]
    fn long_messages_are_cut_for_status_and_event() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let huge = format!(
            "metadata.labels: Invalid value: \"{}\"",
            "ü".repeat(200_000)
        );
        let (status, event) = refused(&rollout(None), &refusal(&huge), t0);
        assert!(
            status.message.len() <= MESSAGE_LIMIT,
            "{}",
            status.message.len()
        );
        assert!(status.message.ends_with("[...]"));
        let event = event.unwrap();
        assert!(event.message.len() <= EVENT_NOTE_LIMIT);
        assert!(
            event
                .message
                .starts_with("creating ReplicaSet web-abc refused")
        );
    }

    #[test]
    fn a_reason_that_is_not_a_word_is_not_written_as_one() {
        assert_eq!(
            condition_reason("RequestEntityTooLarge"),
            "RequestEntityTooLarge"
        );
        for bad in ["", "Bad Request", "1x", "a-b", &"A".repeat(65)] {
            assert_eq!(condition_reason(bad), "Refused", "{bad:?}");
        }
    }

    #[test]
    fn the_condition_clears_once_the_replica_set_exists() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let (mut status, _) = refused(&rollout(None), &refusal("no"), t0);
        clear(&mut status, false, t1, Some(3));
        assert_eq!(condition(&status, CONDITION).status, "True");
        clear(&mut status, true, t1, Some(3));
        assert_eq!(condition(&status, CONDITION).status, "False");
        assert_eq!(condition(&status, CONDITION).last_transition_time.0, t1);
        let mut never = RolloutStatus::default();
        clear(&mut never, true, t1, Some(3));
        assert!(
            never.conditions.is_empty(),
            "no condition for what never happened"
        );
    }
}
