//! The reasons of the Events the planner plans. Their strings are what `kubectl get events`,
//! alerts and the `sluice_transitions_total` labels show, so they never change.

/// Why the planner planned an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReason {
    NewRevision,
    StepCompleted,
    Promoted,
    Healthy,
    Paused,
    Resumed,
    Retried,
    AnalysisStarted,
    AnalysisInconclusive,
    AnalysisFailed,
    AbortedByUser,
    ProgressDeadlineExceeded,
    ProgressStalled,
    AbTestStarted,
    AbTestPassed,
    InvalidSpec,
    ReplicaSetCreateError,
    StableReplicaSetMissing,
    PodRestarted,
    Restarted,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::NewRevision => "NewRevision",
            EventReason::StepCompleted => "StepCompleted",
            EventReason::Promoted => "Promoted",
            EventReason::Healthy => "Healthy",
            EventReason::Paused => "Paused",
            EventReason::Resumed => "Resumed",
            EventReason::Retried => "Retried",
            EventReason::AnalysisStarted => "AnalysisStarted",
            EventReason::AnalysisInconclusive => "AnalysisInconclusive",
            EventReason::AnalysisFailed => "AnalysisFailed",
            EventReason::AbortedByUser => "AbortedByUser",
            EventReason::ProgressDeadlineExceeded => "ProgressDeadlineExceeded",
            EventReason::ProgressStalled => "ProgressStalled",
            EventReason::AbTestStarted => "AbTestStarted",
            EventReason::AbTestPassed => "AbTestPassed",
            EventReason::InvalidSpec => "InvalidSpec",
            EventReason::ReplicaSetCreateError => "ReplicaSetCreateError",
            EventReason::StableReplicaSetMissing => "StableReplicaSetMissing",
            EventReason::PodRestarted => "PodRestarted",
            EventReason::Restarted => "Restarted",
        }
    }

    /// The Event tells of an abort (counted in `sluice_aborts_total`). Every reason is named
    /// here, so that a new one cannot be left out of the count unnoticed.
    pub fn is_abort(self) -> bool {
        match self {
            EventReason::AbortedByUser
            | EventReason::ProgressDeadlineExceeded
            | EventReason::AnalysisFailed => true,
            EventReason::NewRevision
            | EventReason::StepCompleted
            | EventReason::Promoted
            | EventReason::Healthy
            | EventReason::Paused
            | EventReason::Resumed
            | EventReason::Retried
            | EventReason::AnalysisStarted
            | EventReason::AnalysisInconclusive
            | EventReason::ProgressStalled
            | EventReason::AbTestStarted
            | EventReason::AbTestPassed
            | EventReason::InvalidSpec
            | EventReason::ReplicaSetCreateError
            | EventReason::StableReplicaSetMissing
            | EventReason::PodRestarted
            | EventReason::Restarted => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EventReason;

    #[test]
    fn only_the_three_abort_reasons_count_as_aborts() {
        let aborts = [
            EventReason::AbortedByUser,
            EventReason::ProgressDeadlineExceeded,
            EventReason::AnalysisFailed,
        ];
        for reason in aborts {
            assert!(reason.is_abort(), "{}", reason.as_str());
        }
        assert!(!EventReason::ProgressStalled.is_abort());
        assert!(!EventReason::Promoted.is_abort());
        assert_eq!(EventReason::AbortedByUser.as_str(), "AbortedByUser");
    }
}
