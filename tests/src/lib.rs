//! Real parts for Sluice's end-to-end tests: a Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, and kwok simulating nodes) and Prometheus over a
//! backfilled TSDB, all started as local processes listening on 127.0.0.1.
//!
//! Pod and Service IPs of this cluster come from documentation ranges (192.0.2.0/24 for pods,
//! 198.51.100.0/24 for Services, 203.0.113.0/24 for nodes). They exist only as data: nothing
//! here, and nothing a test does, may connect to them — except the pod IPs of the network
//! namespaces the pod runner ([`pods`]) made itself.

pub mod binaries;
pub mod cluster;
pub mod crds;
mod error;
pub mod fuzz;
pub mod mutate;
pub mod pki;
pub mod pods;
mod ports;
pub mod process;
pub mod prometheus;
pub mod prometheus_live;
pub mod tokens;
pub mod wait;

pub use cluster::{AUDITED_NAMESPACE, ClusterOptions, ControlPlane};
pub use error::HarnessError;
pub use prometheus::BackfilledPrometheus;

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Pods get addresses from here (kwok's `--cidr`).
pub const POD_CIDR: &str = "192.0.2.0/24";
/// The part of [`POD_CIDR`] kwok's nodes hand out (their `spec.podCIDR`): the low half holds
/// these machines' own address and gateway.
pub const NODE_POD_CIDR: &str = "192.0.2.128/25";
/// Services get cluster IPs from here (kube-apiserver's `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "198.51.100.0/24";
/// Nodes report this InternalIP (kwok's `--node-ip`).
pub const NODE_IP: &str = "203.0.113.1";

/// Makes ring the process's TLS provider, once. reqwest is built without a provider of its own
/// (so that one provider, ring, serves kube and reqwest alike), and rustls then needs one
/// installed before the first HTTP client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
