//! An aborted canary emptied at the client: from the Fail verdict, how long until the client's
//! last answer from the canary, and what the canary still answered to requests sent after the
//! verdict. Read from a steady client's records, never from the objects the controller wrote.

use std::time::Duration;

use crate::load::{Outcome, Record, Tally};

/// What the client saw of the canary after its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// From the verdict to the end of the client's last answer from the canary; zero when its
    /// last answer ended before the verdict.
    pub last_answer: Duration,
    /// Canary answers to requests sent at or after the verdict.
    pub answers_after: usize,
    /// Of those, the ones with a 5xx status: the bad version's own errors a user still saw.
    pub bad_after: usize,
    /// Canary answers to requests sent before the verdict, and all requests sent before it.
    pub answers_before: usize,
    pub requests_before: usize,
}

impl Drain {
    /// The drain of the canary that names itself `canary`, whose verdict came at `verdict` on
    /// the load's clock; `None` when the canary never answered.
    pub fn of(records: &[Record], verdict: Duration, canary: &str) -> Option<Self> {
        let from_canary = || records.iter().filter(|r| r.version() == Some(canary));
        let last = from_canary().map(Record::ended).max()?;
        let after: Vec<&Record> = from_canary().filter(|r| r.sent >= verdict).collect();
        let before = Tally::of(records.iter().filter(|r| r.sent < verdict));
        Some(Self {
            last_answer: last.saturating_sub(verdict),
            answers_after: after.len(),
            bad_after: Tally::of(after).server_errors,
            answers_before: before.count(canary),
            requests_before: before.total,
        })
    }
}

/// Canary answers to requests sent at or after `from`.
pub fn answers_since(records: &[Record], from: Duration, canary: &str) -> usize {
    records
        .iter()
        .filter(|r| r.version() == Some(canary) && r.sent >= from)
        .count()
}

/// 5xx answers that did not come from `canary`: none, when only the bad canary erred.
pub fn server_errors_not_from(records: &[Record], canary: &str) -> usize {
    records
        .iter()
        .filter(|r| r.version() != Some(canary))
        .filter(|r| matches!(r.outcome, Outcome::Answered { status, .. } if status >= 500))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(sent_ms: u64, took_ms: u64, status: u16, version: &str) -> Record {
        Record {
            sent: Duration::from_millis(sent_ms),
            took: Duration::from_millis(took_ms),
            outcome: Outcome::Answered {
                status,
                version: Some(version.into()),
            },
        }
    }

    #[test]
    fn the_drain_runs_from_the_verdict_to_the_canarys_last_answer() {
        let records = [
            answer(0, 5, 200, "v1"),
            answer(10, 5, 500, "v2"),
            answer(20, 5, 200, "v1"),
            answer(30, 50, 200, "v2"),
            answer(40, 5, 500, "v2"),
            answer(50, 5, 200, "v1"),
        ];
        let drain = Drain::of(&records, Duration::from_millis(25), "v2").unwrap();
        // The request sent at 30 ms ended at 80: 55 ms after the verdict.
        assert_eq!(drain.last_answer, Duration::from_millis(55));
        assert_eq!(drain.answers_after, 2);
        assert_eq!(drain.bad_after, 1);
        assert_eq!((drain.answers_before, drain.requests_before), (1, 3));
        assert_eq!(answers_since(&records, Duration::from_millis(35), "v2"), 1);
        assert_eq!(server_errors_not_from(&records, "v2"), 0);
        assert_eq!(server_errors_not_from(&records, "v1"), 2);
    }

    #[test]
    fn a_canary_gone_before_the_verdict_drained_in_no_time_and_one_never_heard_has_no_drain() {
        let records = [answer(0, 5, 200, "v2"), answer(10, 5, 200, "v1")];
        let drain = Drain::of(&records, Duration::from_millis(100), "v2").unwrap();
        assert_eq!(drain.last_answer, Duration::ZERO);
        assert_eq!(drain.answers_after, 0);
        assert_eq!(Drain::of(&records, Duration::ZERO, "v3"), None);
    }
}
