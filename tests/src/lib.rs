//! Real parts for Sluice's end-to-end tests: a Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, and kwok simulating nodes), Prometheus over a
//! backfilled TSDB, Traefik as the proxy in front of the pods ([`traefik`]), and headless Chromium
//! for the dashboard ([`browser`]), all started as local processes listening on 127.0.0.1.
//!
//! Pod IPs come from the benchmarking range 198.18.0.0/16, Service and node IPs from
//! documentation ranges (198.51.100.0/24 for Services, 203.0.113.0/24 for nodes). They exist
//! only as data: nothing here, and nothing a test does, may connect to them — except the pod IPs
//! of the network namespaces the pod runner ([`pods`]) made itself.

pub mod binaries;
pub mod browser;
pub mod cluster;
pub mod controller;
pub mod crds;
pub mod demo_pods;
pub mod drain;
mod error;
pub mod fuzz;
pub mod load;
pub mod mutate;
pub mod pki;
pub mod pods;
mod ports;
pub mod process;
pub mod process_record;
pub mod procfs;
pub mod prometheus;
pub mod prometheus_live;
pub mod quantile;
pub mod rollouts;
pub mod routes;
pub mod shares;
pub mod tokens;
pub mod traefik;
pub mod wait;

pub use cluster::{AUDITED_NAMESPACE, ClusterOptions, ControlPlane};
pub use error::HarnessError;
pub use prometheus::BackfilledPrometheus;

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Pods get addresses from here (kwok's `--cidr`): the benchmarking range (RFC 2544), which no
/// machine we test on has an address or a route in, so that a pod IP routed into a namespace
/// never shadows one of the host's. The runner still refuses a host address, should one be.
pub const POD_CIDR: &str = "198.18.0.0/15";
/// How many /24 blocks [`POD_CIDR`] holds: each kwok node hands out one, claimed for its
/// cluster alone ([`pods::range`]), so that no two pods on the machine share an address.
pub const POD_BLOCKS: usize = 512;

/// The `index`th /24 of [`POD_CIDR`]; `None` beyond [`POD_BLOCKS`].
pub fn pod_block_cidr(index: usize) -> Option<String> {
    (index < POD_BLOCKS).then(|| format!("198.{}.{}.0/24", 18 + index / 256, index % 256))
}

/// Whether `ip` lies in [`POD_CIDR`].
pub fn is_pod_ip(ip: std::net::Ipv4Addr) -> bool {
    matches!(ip.octets(), [198, 18 | 19, _, _])
}
/// Services get cluster IPs from here (kube-apiserver's `--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "198.51.100.0/24";
/// Nodes report this InternalIP (kwok's `--node-ip`).
pub const NODE_IP: &str = "203.0.113.1";

/// `value` as the Kubernetes object (or any type) `T`; the error names `what` it was to be.
pub(crate) fn object<T: serde::de::DeserializeOwned>(
    what: &str,
    value: serde_json::Value,
) -> Result<T> {
    serde_json::from_value(value).map_err(|e| HarnessError::Invalid {
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Makes ring the process's TLS provider, once. reqwest is built without a provider of its own
/// (so that one provider, ring, serves kube and reqwest alike), and rustls then needs one
/// installed before the first HTTP client is built.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn the_pod_range_is_512_blocks_of_a_slash_24() {
        assert_eq!(pod_block_cidr(0).as_deref(), Some("198.18.0.0/24"));
        assert_eq!(pod_block_cidr(256).as_deref(), Some("198.19.0.0/24"));
        assert_eq!(
            pod_block_cidr(POD_BLOCKS - 1).as_deref(),
            Some("198.19.255.0/24")
        );
        assert_eq!(pod_block_cidr(POD_BLOCKS), None);
    }

    #[test]
    fn pod_ips_are_those_of_the_pod_range() {
        assert!(is_pod_ip(Ipv4Addr::new(198, 18, 3, 7)));
        assert!(is_pod_ip(Ipv4Addr::new(198, 19, 0, 1)));
        assert!(!is_pod_ip(Ipv4Addr::new(198, 20, 0, 1)));
        assert!(!is_pod_ip(Ipv4Addr::new(192, 0, 2, 2)));
    }
}
