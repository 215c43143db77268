//! demo-app: answers `GET /` after a set latency, failing a set share of requests with 500,
//! naming its version in the [`VERSION_HEADER`] of every answer, and exposes `/metrics`
//! (requests by status code, a latency histogram), `/healthz` and `/ready`.
//! `POST /fail-readiness` makes `/ready` answer 503 from then on, so a test can tell a running
//! process to fail its readiness probe.
//!
//! Failures are spread evenly and deterministically: with an error rate of 0.25, exactly one
//! request in four fails, so tests can assert exact counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The response header of `GET /` that names the version that answered, so that a client
/// behind a proxy can count the share each version served.
pub const VERSION_HEADER: &str = "demo-version";

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Share of requests answered with 500, in 0..=1.
    pub error_rate: f64,
    /// Time taken by every request.
    pub latency: Duration,
    /// Put on every series as `version`, and in the [`VERSION_HEADER`] of every answer, to tell
    /// stable from canary.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("error rate {0} is outside 0..=1")]
    ErrorRate(f64),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    code: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

struct App {
    behaviour: Behaviour,
    served: AtomicU64,
    /// Set by `POST /fail-readiness`; `/ready` fails while it is.
    unready: AtomicBool,
    requests: Family<RequestLabels, Counter>,
    latency: Family<VersionLabel, Histogram>,
    registry: Registry,
}

/// The service's routes.
pub fn router(behaviour: Behaviour) -> Result<Router, DemoError> {
    if !(0.0..=1.0).contains(&behaviour.error_rate) {
        return Err(DemoError::ErrorRate(behaviour.error_rate));
    }
    let mut registry = Registry::default();
    let requests = Family::<RequestLabels, Counter>::default();
    let latency = Family::<VersionLabel, Histogram>::new_with_constructor(|| {
        Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
    });
    registry.register(
        "http_requests",
        "Requests served, by status code",
        requests.clone(),
    );
    registry.register(
        "http_request_duration_seconds",
        "Time taken to answer a request",
        latency.clone(),
    );
    let app = Arc::new(App {
        behaviour,
        served: AtomicU64::new(0),
        unready: AtomicBool::new(false),
        requests,
        latency,
        registry,
    });
    Ok(Router::new()
        .route("/", get(answer))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/fail-readiness", post(fail_readiness))
        .with_state(app))
}

/// Serves on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, behaviour: Behaviour) -> Result<(), DemoError> {
    let app = router(behaviour)?;
    axum::serve(listener, app).await.map_err(DemoError::Serve)
}

/// Serves on `listener` until `shutdown` completes, then stops accepting connections and
/// returns once the requests already in flight have been answered (a drain, as on SIGTERM).
pub async fn serve_until(
    listener: TcpListener,
    behaviour: Behaviour,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DemoError> {
    let app = router(behaviour)?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(DemoError::Serve)
}

async fn ready(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.unready.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "told to fail readiness\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn fail_readiness(State(app): State<Arc<App>>) -> &'static str {
    app.unready.store(true, Ordering::Relaxed);
    "readiness fails from now on\n"
}

/// Binds `addr` (port 0 picks a free one) and returns the listener with its address.
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), DemoError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| DemoError::Bind(addr, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| DemoError::Bind(addr, e))?;
    Ok((listener, local))
}

/// Whether request number `n` (from 0) fails: the n-th request fails when the running count
/// of failures owed, floor((n + 1) × rate), goes up.
pub fn fails(n: u64, error_rate: f64) -> bool {
    let owed = |k: u64| (k as f64 * error_rate + 1e-9).floor() as u64;
    owed(n + 1) > owed(n)
}

async fn answer(
    State(app): State<Arc<App>>,
) -> (StatusCode, [(&'static str, String); 1], &'static str) {
    tokio::time::sleep(app.behaviour.latency).await;
    let n = app.served.fetch_add(1, Ordering::Relaxed);
    let (status, body) = if fails(n, app.behaviour.error_rate) {
        (StatusCode::INTERNAL_SERVER_ERROR, "failed on purpose\n")
    } else {
        (StatusCode::OK, "ok\n")
    };
    let version = app.behaviour.version.clone();
    app.requests
        .get_or_create(&RequestLabels {
            code: status.as_u16().to_string(),
            version: version.clone(),
        })
        .inc();
    app.latency
        .get_or_create(&VersionLabel { version })
        .observe(app.behaviour.latency.as_secs_f64());
    (
        status,
        [(VERSION_HEADER, app.behaviour.version.clone())],
        body,
    )
}

async fn metrics(
    State(app): State<Arc<App>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &app.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            "encoding failed\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_spread_evenly_and_exactly() {
        let count = |rate: f64, n: u64| (0..n).filter(|i| fails(*i, rate)).count();
        assert_eq!(count(0.25, 100), 25);
        assert_eq!(count(0.05, 1000), 50);
        assert_eq!(count(0.0, 1000), 0);
        assert_eq!(count(1.0, 10), 10);
        // One in four: the 4th, 8th, ... request.
        let first: Vec<bool> = (0..8).map(|i| fails(i, 0.25)).collect();
        assert_eq!(
            first,
            [false, false, false, true, false, false, false, true]
        );
    }

    #[test]
    fn an_error_rate_outside_0_to_1_is_refused() {
        let behaviour = Behaviour {
            error_rate: 1.5,
            latency: Duration::ZERO,
            version: "v1".into(),
        };
        assert!(matches!(router(behaviour), Err(DemoError::ErrorRate(_))));
    }
}
