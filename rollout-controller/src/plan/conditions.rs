//! metav1.Condition bookkeeping: lastTransitionTime moves only when the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

pub(super) fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    // A reason must match the metav1.Condition pattern: a non-empty CamelCase word.
    let reason = if reason.is_empty() { "Unknown" } else { reason }.to_owned();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = Time(now);
            }
            existing.status = status;
            existing.reason = reason;
            existing.message = message.to_owned();
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason,
            message: message.to_owned(),
            last_transition_time: Time(now),
            observed_generation: generation,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Healthy",
            false,
            "Progressing",
            "",
            t0,
            Some(1),
        );
        set_condition(
            &mut conditions,
            "Healthy",
            false,
            "Progressing",
            "step 2",
            t1,
            Some(2),
        );
        assert_eq!(conditions[0].last_transition_time, Time(t0));
        assert_eq!(conditions[0].message, "step 2");
        set_condition(&mut conditions, "Healthy", true, "Healthy", "", t1, Some(2));
        assert_eq!(conditions[0].last_transition_time, Time(t1));
        assert_eq!(conditions.len(), 1);
    }
}
