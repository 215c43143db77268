//! Client-side rate limiting of the controller's requests, as client-go's QPS and burst: a token
//! bucket (governor's) shared by every request the controllers make, their watches included, so
//! that a mass update of thousands of rollouts reaches the apiserver at a steady rate instead of
//! all at once. The leader election's Lease requests do not wait in it (a renewal held up behind
//! a thousand reconciles would lose the lease), nor do the REST API's (they come from callers,
//! not from the controller's own loops).

use std::num::NonZeroU32;
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota};
use kube::Client;

/// Requests per second on average, and how many may go at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRate {
    pub qps: NonZeroU32,
    pub burst: NonZeroU32,
}

/// Defaults a shared apiserver tolerates (client-go's are 5 and 10, controller-runtime's 20 and
/// 30; the apiserver's priority and fairness still guards itself). An update of a one-replica
/// canary takes about eight requests, so a mass update of a thousand is paced over about three
/// minutes; a dedicated apiserver can take more (`--kube-api-qps`, `--kube-api-burst`).
pub const DEFAULT_API_QPS: u32 = 50;
pub const DEFAULT_API_BURST: u32 = 100;

impl Default for ApiRate {
    fn default() -> Self {
        Self {
            qps: NonZeroU32::new(DEFAULT_API_QPS).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(DEFAULT_API_BURST).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// One bucket, for any number of clients.
#[derive(Clone)]
pub(crate) struct RateLimit {
    bucket: Arc<DefaultDirectRateLimiter>,
}

impl RateLimit {
    pub(crate) fn new(rate: ApiRate) -> Self {
        let quota = Quota::per_second(rate.qps).allow_burst(rate.burst);
        Self {
            bucket: Arc::new(DefaultDirectRateLimiter::direct(quota)),
        }
    }

    /// `client`, each of whose requests first waits for a token of this bucket. What `client`
    /// checks when a request leaves (the leader's fence) it checks after the wait.
    pub(crate) fn client(&self, client: &Client) -> Client {
        let namespace = client.default_namespace().to_owned();
        let (client, bucket) = (client.clone(), self.bucket.clone());
        let service = tower::service_fn(move |request| {
            let (client, bucket) = (client.clone(), bucket.clone());
            async move {
                bucket.until_ready().await;
                client.send(request).await
            }
        });
        Client::new(service, namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_and_the_rest_waits_for_the_rate() {
        let rate = ApiRate {
            qps: NonZeroU32::new(2).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
        };
        let limit = RateLimit::new(rate);
        let granted = (0..10).filter(|_| limit.bucket.check().is_ok()).count();
        assert_eq!(granted, 3);
    }
}
