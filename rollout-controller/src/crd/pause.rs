//! A canary's pause step: how long it waits. Argo Rollouts' users write integer seconds
//! (`pause: {duration: 10}`, its getting-started canary does), so an integer, or a string of
//! digits, is seconds; anything else is a humantime duration with its units.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PauseStep {
    /// Seconds as an integer (`10`, as Argo Rollouts writes it, or `"10"`), or a humantime
    /// duration (`30s`, `2m`, `1h30m`). None: wait for a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pause_duration_schema")]
    pub duration: Option<IntOrString>,
}

/// A pause's length: seconds as an integer or as digits, else a humantime duration with units.
const PAUSE_DURATION_PATTERN: &str = r"^([0-9]+|([0-9]+(ns|us|ms|s|m|h|d))+)$";

/// Integer or string, each bounded by the apiserver: `pattern` applies to a string only and
/// `minimum`/`maximum` to an integer only, so one schema holds both forms.
fn pause_duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Seconds as an integer (`10`, as Argo Rollouts writes it, or `\"10\"`), or a humantime duration (`30s`, `2m`, `1h30m`). None: wait for a decision.",
        "nullable": true,
        "x-kubernetes-int-or-string": true,
        "pattern": PAUSE_DURATION_PATTERN,
        "minimum": 0,
        "maximum": i32::MAX,
    })
}

/// Why a pause's duration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseDurationError {
    #[error("{0} seconds is below 0")]
    Negative(i32),
    #[error("{text:?} is not a duration: {reason}")]
    Unreadable { text: String, reason: String },
}

impl PauseStep {
    /// How long the pause lasts; `None`: until a decision promotes it. An integer (or a string of
    /// digits) is seconds, as in Argo Rollouts; any other string is a humantime duration.
    pub fn length(&self) -> Option<Result<std::time::Duration, PauseDurationError>> {
        let parsed = match self.duration.as_ref()? {
            IntOrString::Int(seconds) => u64::try_from(*seconds)
                .map(std::time::Duration::from_secs)
                .map_err(|_| PauseDurationError::Negative(*seconds)),
            IntOrString::String(text) => match text.parse::<u64>() {
                Ok(seconds) => Ok(std::time::Duration::from_secs(seconds)),
                Err(_) => {
                    humantime::parse_duration(text).map_err(|e| PauseDurationError::Unreadable {
                        text: text.clone(),
                        reason: e.to_string(),
                    })
                }
            },
        };
        Some(parsed)
    }

    /// The duration as a person reads it in a step's description: `10s` for the integer 10,
    /// otherwise as written; `None` without one.
    pub fn shown(&self) -> Option<String> {
        Some(match self.duration.as_ref()? {
            IntOrString::Int(seconds) => format!("{seconds}s"),
            IntOrString::String(text) if text.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{text}s")
            }
            IntOrString::String(text) => text.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn pause(duration: serde_json::Value) -> PauseStep {
        serde_json::from_value(json!({"duration": duration})).unwrap()
    }

    #[test]
    fn integer_seconds_are_a_duration_as_in_argo_rollouts() {
        for (written, seconds, shown) in [
            (json!(10), 10, "10s"),
            (json!("10"), 10, "10s"),
            (json!(0), 0, "0s"),
            (json!("2m"), 120, "2m"),
            (json!("1h30m"), 5400, "1h30m"),
        ] {
            let step = pause(written.clone());
            assert_eq!(
                step.length(),
                Some(Ok(Duration::from_secs(seconds))),
                "{written}"
            );
            assert_eq!(step.shown().as_deref(), Some(shown), "{written}");
        }
        let indefinite = PauseStep::default();
        assert_eq!((indefinite.length(), indefinite.shown()), (None, None));
    }

    #[test]
    fn a_duration_the_controller_cannot_use_says_why() {
        assert_eq!(
            pause(json!(-5)).length(),
            Some(Err(PauseDurationError::Negative(-5)))
        );
        let Some(Err(error)) = pause(json!("five")).length() else {
            panic!("five is no duration");
        };
        assert!(
            error.to_string().starts_with("\"five\" is not a duration"),
            "{error}"
        );
    }

    #[test]
    fn the_schema_takes_both_forms_and_bounds_each() {
        let schema = serde_json::to_value(schemars::schema_for!(PauseStep)).unwrap();
        let duration = &schema["properties"]["duration"];
        assert_eq!(duration["x-kubernetes-int-or-string"], true);
        assert_eq!(duration["minimum"], 0);
        assert_eq!(duration["maximum"], i32::MAX);
        let pattern = regex::Regex::new(duration["pattern"].as_str().unwrap()).unwrap();
        for ok in ["10", "10s", "1h30m", "250ms"] {
            assert!(pattern.is_match(ok), "{ok}");
        }
        for bad in ["", "five", "1.5h", "10 s", "-1"] {
            assert!(!pattern.is_match(bad), "{bad}");
        }
    }
}
