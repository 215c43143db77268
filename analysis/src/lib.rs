//! Sluice's analysis: metric providers (Prometheus, direct scrape), statistical judges
//! (threshold with CEL, compare, sequential) and the pure metric lifecycle. No Kubernetes here:
//! the controller resolves secrets and arguments and keeps the results in AnalysisRun status.

pub mod args;
pub mod compare;
pub mod counters;
mod error;
mod http;
pub mod lifecycle;
pub mod measure;
pub mod prometheus;
pub mod scrape;
pub mod sequential;
pub mod spec;
pub mod stats;
pub mod threshold;
pub mod units;
pub mod verdict;

pub use error::{ProviderError, SpecError};
pub use http::Credentials;
pub use lifecycle::{Phase, Tally};
pub use spec::{MetricPlan, MetricSpec};
pub use units::{HumanDuration, Percent, Timestamp};
pub use verdict::{Evidence, Judgement, Measurement, Verdict};

#[cfg(test)]
mod provider_tests;
