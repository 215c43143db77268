//! Small value types of the spec: humantime durations, percentages and RFC 3339 timestamps.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::SpecError;

/// A duration written the humantime way (`30s`, `2m`, `1h30m`), kept as the user wrote it so that
/// the spec round-trips; [`HumanDuration::parse`] turns it into a [`Duration`] and names the field
/// when it cannot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HumanDuration(pub String);

impl HumanDuration {
    /// Wraps a string such as `"30s"`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// Parses the duration; `field` is the spec path used in the error (`metrics[web].interval`).
    pub fn parse(&self, field: &str) -> Result<Duration, SpecError> {
        humantime::parse_duration(self.0.trim()).map_err(|error| SpecError::InvalidDuration {
            field: field.to_owned(),
            value: self.0.clone(),
            reason: error.to_string(),
        })
    }
}

impl From<Duration> for HumanDuration {
    fn from(duration: Duration) -> Self {
        Self(humantime::format_duration(duration).to_string())
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "HumanDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as 30s, 2m or 1h30m.",
            "pattern": "^\\s*([0-9]+\\s*[a-zA-Zµ]+\\s*)+$"
        })
    }
}

/// A percentage written as `10%` (may have a fraction: `2.5%`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(pub String);

impl Percent {
    /// Wraps a string such as `"10%"`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The percentage as a fraction (`10%` → 0.1); negative or non-finite values are rejected.
    pub fn fraction(&self, field: &str) -> Result<f64, SpecError> {
        let invalid = |reason: &str| SpecError::InvalidPercent {
            field: field.to_owned(),
            value: self.0.clone(),
            reason: reason.to_owned(),
        };
        let number = self
            .0
            .trim()
            .strip_suffix('%')
            .ok_or_else(|| invalid("must end with %, as in 10%"))?;
        let percent: f64 = number
            .trim()
            .parse()
            .map_err(|_| invalid("not a number before the %"))?;
        if !percent.is_finite() || percent < 0.0 {
            return Err(invalid("must be a finite, non-negative percentage"));
        }
        Ok(percent / 100.0)
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A percentage such as 10% or 2.5%.",
            "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*%\\s*$"
        })
    }
}

/// A point in time, serialized as RFC 3339 (`2026-11-27T15:49:49Z`) as Kubernetes status does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// This instant plus `duration`, saturating at the far future instead of overflowing.
    pub fn plus(self, duration: Duration) -> Self {
        Self(self.0.checked_add(duration).unwrap_or(self.0))
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        self.0.duration_since(earlier.0).unwrap_or(Duration::ZERO)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        Self(time)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_seconds(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Sub-second precision matters for ordering measurements taken in quick succession.
        serializer.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text)
            .map(Timestamp)
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_name_the_field_when_invalid() {
        assert_eq!(
            HumanDuration::new("1h30m").parse("x").unwrap(),
            Duration::from_secs(5400)
        );
        let error = HumanDuration::new("soon")
            .parse("metrics[error-rate].interval")
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("metrics[error-rate].interval"),
            "{message}"
        );
        assert!(message.contains("soon"), "{message}");
    }

    #[test]
    fn percentages_become_fractions() {
        assert_eq!(Percent::new("10%").fraction("t").unwrap(), 0.1);
        assert_eq!(Percent::new(" 2.5 %").fraction("t").unwrap(), 0.025);
        assert!(Percent::new("10").fraction("t").is_err());
        assert!(Percent::new("-1%").fraction("t").is_err());
        assert!(Percent::new("abc%").fraction("t").is_err());
    }

    #[test]
    fn timestamps_round_trip_as_rfc3339() {
        let time = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let json = serde_json::to_string(&time).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), time);
    }
}
