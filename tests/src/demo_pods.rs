//! The pods the tests and benchmarks release: demo-app containers (the pod runner runs them as
//! real processes on their pod IPs) that name their version in every answer.

use std::time::Duration;

use serde_json::{Value, json};

/// The port demo-app pods listen on.
pub const DEMO_APP_PORT: u16 = 8080;
/// The readiness probe of every demo-app pod: every second, unready after 2 failures.
pub const DEMO_APP_PROBE_PERIOD_S: u64 = 1;
pub const DEMO_APP_FAILURE_THRESHOLD: u64 = 2;
/// How long a [`draining_container`] keeps answering after SIGTERM, as an app with a preStop
/// sleep does: the proxy learns of a terminating endpoint a moment after the pod does.
pub const SHUTDOWN_DELAY: Duration = Duration::from_millis(2000);

/// A demo-app container named `app` of `version` (`v1`, `v2` …): the image tag and
/// DEMO_VERSION say which, and its `http` port and readiness probe make a pod that runs.
pub fn demo_app_container(version: &str) -> Value {
    json!({
        "name": "app",
        "image": format!("registry.example.com/demo-app:{}", version.trim_start_matches('v')),
        "ports": [{"name": "http", "containerPort": DEMO_APP_PORT}],
        "env": [{"name": "DEMO_VERSION", "value": version}],
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": DEMO_APP_PROBE_PERIOD_S,
            "failureThreshold": DEMO_APP_FAILURE_THRESHOLD,
        },
    })
}

/// A [`demo_app_container`] of `version` that drains as a real app would
/// ([`SHUTDOWN_DELAY`]), with `env` added.
pub fn draining_container(version: &str, env: &[(&str, &str)]) -> Value {
    let mut container = demo_app_container(version);
    if let Some(all) = container["env"].as_array_mut() {
        let delay = SHUTDOWN_DELAY.as_millis().to_string();
        all.push(json!({"name": "DEMO_SHUTDOWN_DELAY_MS", "value": delay}));
        all.extend(
            env.iter()
                .map(|(name, value)| json!({"name": name, "value": value})),
        );
    }
    container
}

/// A [`draining_container`] of `version` that fails `rate` (0..=1) of its requests with a 500.
pub fn erring_container(version: &str, rate: f64) -> Value {
    draining_container(version, &[("DEMO_ERROR_RATE", &rate.to_string())])
}
