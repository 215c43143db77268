//! Sluice's controller run inside the test's own process, watching one namespace: what the e2e
//! tests and the benchmarks release through, with its `/metrics` (and, if asked, its REST API)
//! on a loopback port.

use std::net::SocketAddr;

use kube::Client;
use rollout_controller::controller::{ApiAuth, DEFAULT_ANALYSIS_CONCURRENCY, Options, run};

use crate::{HarnessError, Result};

/// The controller, running in this process and watching one namespace, until dropped.
pub struct RunningController {
    task: tokio::task::JoinHandle<()>,
    health_addr: SocketAddr,
    api_addr: Option<SocketAddr>,
}

/// A loopback port the kernel just handed out and we let go of: free for the controller to bind.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl RunningController {
    pub fn start(client: Client, namespace: &str) -> Self {
        Self::spawn(client, namespace, None)
    }

    /// With the REST API served on loopback, callers checked with TokenReview and
    /// SubjectAccessReview.
    pub fn with_api(client: Client, namespace: &str) -> Self {
        Self::spawn(client, namespace, Some(free_port()))
    }

    fn spawn(client: Client, namespace: &str, api_addr: Option<SocketAddr>) -> Self {
        let health_addr = free_port();
        let options = Options {
            namespace: Some(namespace.to_owned()),
            health_addr,
            analysis_concurrency: DEFAULT_ANALYSIS_CONCURRENCY,
            api_addr,
            api_auth: ApiAuth::Kubernetes,
            leader_election: None,
            ..Options::default()
        };
        let namespace = namespace.to_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = run(client, options).await {
                eprintln!("controller for {namespace} stopped: {e}");
            }
        });
        Self {
            task,
            health_addr,
            api_addr,
        }
    }

    /// `http://127.0.0.1:<port>` of the REST API.
    pub fn api_url(&self) -> Result<String> {
        let addr = self.api_addr.ok_or_else(|| HarnessError::Invalid {
            what: "the controller's REST API".into(),
            detail: "started without it".into(),
        })?;
        Ok(format!("http://{addr}"))
    }

    /// The controller's `/metrics` text.
    pub async fn metrics(&self) -> Result<String> {
        let url = format!("http://{}/metrics", self.health_addr);
        Ok(reqwest::get(&url).await?.error_for_status()?.text().await?)
    }
}

impl Drop for RunningController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of the sample `name` (with its labels, if any, as the exposition writes them) in
/// Prometheus text `metrics`.
pub fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_whole_series_name() {
        let text = "# HELP x\nsluice_abort_latency_seconds_sum 1.5\n\
                    sluice_abort_latency_seconds_count 2\nsluice_aborts_total{reason=\"a\"} 3\n";
        assert_eq!(sample(text, "sluice_abort_latency_seconds_sum"), Some(1.5));
        assert_eq!(
            sample(text, "sluice_abort_latency_seconds_count"),
            Some(2.0)
        );
        assert_eq!(sample(text, "sluice_aborts_total{reason=\"a\"}"), Some(3.0));
        assert_eq!(sample(text, "sluice_abort_latency_seconds"), None);
    }
}
