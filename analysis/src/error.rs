//! Errors of this crate.

use std::time::Duration;

/// A spec that cannot run; `field` is the spec path, e.g. `metrics[error-rate].interval`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// A duration that humantime cannot read.
    #[error("{field}: invalid duration {value:?}: {reason}")]
    InvalidDuration {
        /// Spec path.
        field: String,
        /// What was written.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A percentage that is not `N%`.
    #[error("{field}: invalid percentage {value:?}: {reason}")]
    InvalidPercent {
        /// Spec path.
        field: String,
        /// What was written.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A CEL condition that does not compile.
    #[error("{field}: invalid CEL condition {condition:?}: {reason}")]
    InvalidCondition {
        /// Spec path.
        field: String,
        /// The condition.
        condition: String,
        /// The parser's message.
        reason: String,
    },
    /// Any other invalid or contradictory setting.
    #[error("{field}: {reason}")]
    Invalid {
        /// Spec path.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// A measurement that failed to produce data. Each becomes an `Error` verdict; empty results and
/// NaN are data, not errors.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// The provider's settings cannot make a request (bad URL, header, CA certificate).
    #[error("invalid provider configuration: {0}")]
    Config(String),
    /// No connection could be made.
    #[error("{url} unreachable: {reason}")]
    Unreachable {
        /// Where we tried.
        url: String,
        /// The transport's message.
        reason: String,
    },
    /// No full answer within the timeout.
    #[error("{url} did not answer within {}", humantime::format_duration(*.after))]
    Timeout {
        /// Where we tried.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The server answered with an HTTP error that is not a query error.
    #[error("{url} answered HTTP {status}: {body}")]
    HttpStatus {
        /// Where we tried.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer is not what the protocol says (bad JSON, unexpected shape, bad exposition).
    #[error("malformed answer from {url}: {reason}")]
    Malformed {
        /// Where we tried.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Prometheus rejected or failed the query (`status: error`).
    #[error("query failed ({error_type}): {message}")]
    Query {
        /// Prometheus' `errorType` (`bad_data`, `execution`, `timeout`, ...).
        error_type: String,
        /// Prometheus' `error`.
        message: String,
    },
}

impl ProviderError {
    /// A stable short name for the kind of error, for metrics and events.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::Config(_) => "config",
            ProviderError::Unreachable { .. } => "unreachable",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::HttpStatus { .. } => "httpStatus",
            ProviderError::Malformed { .. } => "malformed",
            ProviderError::Query { .. } => "query",
        }
    }
}
