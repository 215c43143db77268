//! Readiness and liveness probes as kubelet runs them: httpGet (a status in 200..400) and
//! tcpSocket (a connection), against the pod IP, with kubelet's defaults for the timing fields.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe as ProbeSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an HTTP answer read, to find its status line.
const STATUS_LINE_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Http {
        port: u16,
        path: String,
    },
    Tcp {
        port: u16,
    },
    /// exec and grpc probes: not run, they count as passing (see the module's caller).
    Unsupported(&'static str),
}

/// One probe of a container, with kubelet's defaults filled in.
#[derive(Debug, Clone)]
pub struct Probe {
    action: Action,
    pub initial_delay: Duration,
    pub period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

/// Consecutive results, and the verdict they add up to.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    successes: u32,
    failures: u32,
}

impl Probe {
    /// The probe `spec` of `container`; a named port is looked up among its ports.
    pub fn from_spec(spec: &ProbeSpec, container: &Container) -> Self {
        let seconds = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let action = if let Some(http) = &spec.http_get {
            match resolve_port(&http.port, container) {
                Some(port) => Action::Http {
                    port,
                    path: http.path.clone().unwrap_or_else(|| "/".into()),
                },
                None => Action::Unsupported("an httpGet port that names no container port"),
            }
        } else if let Some(tcp) = &spec.tcp_socket {
            match resolve_port(&tcp.port, container) {
                Some(port) => Action::Tcp { port },
                None => Action::Unsupported("a tcpSocket port that names no container port"),
            }
        } else if spec.exec.is_some() {
            Action::Unsupported("exec probes")
        } else {
            Action::Unsupported("grpc probes")
        };
        Self {
            action,
            initial_delay: seconds(spec.initial_delay_seconds, 0),
            period: seconds(spec.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: seconds(spec.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(spec.success_threshold, 1),
            failure_threshold: count(spec.failure_threshold, 3),
        }
    }

    /// What the runner does not run, for its log.
    pub fn unsupported(&self) -> Option<&'static str> {
        match self.action {
            Action::Unsupported(what) => Some(what),
            _ => None,
        }
    }

    /// Runs the probe once against `ip`: whether it passed.
    pub async fn run(&self, ip: Ipv4Addr) -> bool {
        let attempt = async {
            match &self.action {
                Action::Http { port, path } => http_ok(SocketAddr::from((ip, *port)), path).await,
                Action::Tcp { port } => TcpStream::connect(SocketAddr::from((ip, *port)))
                    .await
                    .is_ok(),
                Action::Unsupported(_) => true,
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or(false)
    }

    /// Folds one result into `state`; returns the new verdict when it changes (kubelet:
    /// `successThreshold` passes in a row to pass, `failureThreshold` failures to fail).
    pub fn record(&self, state: &mut ProbeState, passed: bool, current: bool) -> Option<bool> {
        if passed {
            state.successes = state.successes.saturating_add(1);
            state.failures = 0;
            (!current && state.successes >= self.success_threshold).then_some(true)
        } else {
            state.failures = state.failures.saturating_add(1);
            state.successes = 0;
            (current && state.failures >= self.failure_threshold).then_some(false)
        }
    }
}

fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// An HTTP/1.0 GET: the status line of the answer decides, as kubelet's 200 ≤ code < 400.
async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: sluice-pod-runner\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = vec![0u8; STATUS_LINE_MAX];
    let mut filled = 0;
    // Bounded by the buffer: each read adds at least one byte or ends the loop.
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
        if buf[..filled].contains(&b'\n') {
            break;
        }
    }
    status_ok(&buf[..filled])
}

fn status_ok(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let code = text
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    code.is_some_and(|c| (200..400).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(success: u32, failure: u32) -> Probe {
        Probe {
            action: Action::Tcp { port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let p = probe(2, 3);
        let mut s = ProbeState::default();
        assert_eq!(p.record(&mut s, true, false), None);
        assert_eq!(p.record(&mut s, true, false), Some(true));
        assert_eq!(p.record(&mut s, false, true), None);
        assert_eq!(p.record(&mut s, false, true), None);
        assert_eq!(p.record(&mut s, true, true), None);
        assert_eq!(p.record(&mut s, false, true), None);
        assert_eq!(p.record(&mut s, false, true), None);
        assert_eq!(p.record(&mut s, false, true), Some(false));
    }

    #[test]
    fn status_lines() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_ok(b"HTTP/1.0 302 Found\r\n"));
        assert!(!status_ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!status_ok(b""));
    }

    #[test]
    fn kubelet_defaults() {
        let spec = ProbeSpec {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = Container {
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        let p = Probe::from_spec(&spec, &container);
        assert_eq!(p.action, Action::Tcp { port: 8080 });
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.failure_threshold, 3);
    }
}
