//! A typed value in a Rollout's status that another writer may have left as a string this
//! controller does not know (an older or newer controller, a person with `kubectl edit`).
//!
//! A Rollout that does not decode is not reconciled (`crate::decode`): it goes Degraded until
//! someone repairs it. A status value the controller rewrites anyway must not be able to do that,
//! so it decodes to [`Recorded::Unknown`] with the string kept as written, and is written back
//! unchanged until the controller replaces it.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{DeserializeOwned, IntoDeserializer, value::Error as ValueError};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value this controller knows, or the string it found instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded<T> {
    Known(T),
    Unknown(String),
}

impl<T> From<T> for Recorded<T> {
    fn from(value: T) -> Self {
        Recorded::Known(value)
    }
}

impl<T: PartialEq> PartialEq<T> for Recorded<T> {
    fn eq(&self, other: &T) -> bool {
        matches!(self, Recorded::Known(value) if value == other)
    }
}

impl<T: fmt::Display> Recorded<T> {
    /// Whether it is written as `written`, known or not.
    // Only tests and people's tools compare with the written string: the allocation is no cost.
    #[allow(clippy::cmp_owned)]
    pub(crate) fn is_written_as(&self, written: &str) -> bool {
        self.to_string() == written
    }
}

/// As written, whether known or not.
impl<T: fmt::Display> fmt::Display for Recorded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recorded::Known(value) => value.fmt(f),
            Recorded::Unknown(written) => f.write_str(written),
        }
    }
}

impl<T: Serialize> Serialize for Recorded<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Recorded::Known(value) => value.serialize(serializer),
            Recorded::Unknown(written) => serializer.serialize_str(written),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Recorded<T> {
    /// Fails only on a value that is not a string.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = String::deserialize(deserializer)?;
        let known = T::deserialize(IntoDeserializer::<ValueError>::into_deserializer(
            written.as_str(),
        ));
        Ok(match known {
            Ok(value) => Recorded::Known(value),
            Err(_) => Recorded::Unknown(written),
        })
    }
}

/// A string: the schema accepts what decoding accepts.
impl<T> JsonSchema for Recorded<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "String".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        String::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use analysis::Phase;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_known_value_round_trips_as_its_string() {
        let phase: Recorded<Phase> = serde_json::from_value(json!("Inconclusive")).unwrap();
        assert_eq!(phase, Recorded::Known(Phase::Inconclusive));
        assert_eq!(phase, Phase::Inconclusive);
        assert_eq!(serde_json::to_value(&phase).unwrap(), json!("Inconclusive"));
        assert_eq!(phase.to_string(), "Inconclusive");
    }

    #[test]
    fn an_unknown_string_decodes_and_is_written_back_as_it_was() {
        let phase: Recorded<Phase> = serde_json::from_value(json!("Terminated")).unwrap();
        assert_eq!(phase, Recorded::Unknown("Terminated".into()));
        assert_ne!(phase, Phase::Failed);
        assert_eq!(serde_json::to_value(&phase).unwrap(), json!("Terminated"));
        assert_eq!(phase.to_string(), "Terminated");
        assert!(serde_json::from_value::<Recorded<Phase>>(json!(3)).is_err());
    }

    /// An unknown run kind or phase in a Rollout's status leaves the Rollout decodable.
    #[test]
    fn a_status_with_values_this_controller_does_not_know_decodes_and_round_trips() {
        let written = json!({"analysisRuns": [
            {"name": "web-abc-2-1", "kind": "step-2", "phase": "Running"},
            {"name": "web-abc-x-1", "kind": "canary-judge", "phase": "Terminated"},
        ]});
        let status: crate::crd::RolloutStatus = serde_json::from_value(written.clone()).unwrap();
        let runs = &status.analysis_runs;
        assert_eq!(runs[0].kind, crate::crd::analysis::RunKind::Step(2));
        assert_eq!(runs[0].phase, Phase::Running);
        assert_eq!(runs[1].kind, Recorded::Unknown("canary-judge".into()));
        assert_eq!(runs[1].phase, Recorded::Unknown("Terminated".into()));
        let again = serde_json::to_value(&status).unwrap();
        assert_eq!(again["analysisRuns"], written["analysisRuns"]);
    }
}
