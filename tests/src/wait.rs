//! Polling with a deadline: the e2e tests and the harness wait for the cluster to reach a state,
//! and say what they waited for when it never comes.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{HarnessError, Result};

/// How often [`until`] looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Calls `check` until it returns `Ok(Some(value))`, and returns that value. `Ok(None)` means
/// "not yet"; an `Err` ends the wait at once. After `timeout` the error names `what`.
pub async fn until<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
    E: From<HarnessError>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if started.elapsed() >= timeout {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                after: timeout,
            }
            .into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
