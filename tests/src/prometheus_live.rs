//! Prometheus (built by tests/cluster/build.sh) scraping the pods the pod runner runs, found as a
//! real install finds them: Kubernetes service discovery (role `pod`) against the local
//! apiserver, under a user of its own that RBAC lets read pods and nothing else. Each target's
//! series carry the pod's namespace, name and labels, so `rollouts_pod_template_hash` tells a
//! canary's series from its stable's exactly as it would on a real cluster.
//!
//! Only pods whose image the runner plays are kept: any other pod's IP is data that no process
//! answers on, and nothing may connect to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::binaries::prometheus_tool;
use crate::cluster::ControlPlane;
use crate::pki::CertFiles;
use crate::pods::programs::image_regex;
use crate::ports::free_ports;
use crate::process::ManagedProcess;
use crate::{HarnessError, Result};

/// The scrape job's name: the `job` label of every scraped series.
pub const JOB: &str = "kubernetes-pods";
/// The user Prometheus reads the apiserver as, and the name of its ClusterRole and binding.
const USER: &str = "sluice-prometheus";
const FIELD_MANAGER: &str = "sluice-tests";
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which pods to scrape, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodScrape {
    /// Namespaces to discover pods in; empty for all.
    pub namespaces: Vec<String>,
    /// The container port (by name) that serves `/metrics`.
    pub port_name: String,
    /// At least 1 s: Prometheus' timeout may not exceed its interval, and a shorter one buys
    /// nothing for counters read by queries seconds apart.
    pub interval: Duration,
}

impl PodScrape {
    /// The `http` port of every runner pod in `namespace`, every `interval`.
    pub fn namespace(namespace: &str, interval: Duration) -> Self {
        Self {
            namespaces: vec![namespace.to_owned()],
            port_name: "http".into(),
            interval,
        }
    }
}

/// Where the apiserver is and how Prometheus proves who it is.
struct ApiAccess<'a> {
    url: &'a str,
    ca: &'a Path,
    client: &'a CertFiles,
}

/// One series of an instant query's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

pub struct LivePrometheus {
    url: String,
    http: reqwest::Client,
    process: ManagedProcess,
    _dir: tempfile::TempDir,
}

impl LivePrometheus {
    /// Grants Prometheus' user read access to pods, then starts Prometheus on a free 127.0.0.1
    /// port with one scrape job, [`JOB`], discovering pods as `scrape` says.
    pub async fn discovering_pods(cluster: &ControlPlane, scrape: &PodScrape) -> Result<Self> {
        crate::install_crypto_provider();
        let prometheus = prometheus_tool("prometheus")?;
        grant_pod_reads(&cluster.admin_client().await?).await?;
        let client = cluster.user_cert(USER, &[])?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-prometheus-live-")
            .tempdir()
            .map_err(HarnessError::io("creating a temporary directory"))?;
        let access = ApiAccess {
            url: cluster.api_server_url(),
            ca: cluster.ca_cert(),
            client: &client,
        };
        // JSON is YAML, and serde_json quotes the paths safely.
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config(&access, scrape).to_string())
            .map_err(HarnessError::io("writing prometheus.yml"))?;

        let [port] = free_ports::<1>()?;
        let process = ManagedProcess::spawn(
            "prometheus",
            &prometheus,
            &[
                format!("--config.file={}", config_file.display()),
                format!("--storage.tsdb.path={}", dir.path().join("data").display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--log.level=warn".into(),
            ],
            dir.path(),
        )?;
        let url = format!("http://127.0.0.1:{port}");
        crate::prometheus::wait_ready(&process, &url).await?;
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self {
            url,
            http,
            process,
            _dir: dir,
        })
    }

    /// The answer to an instant query now: one [`Sample`] per series.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let body: Value = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        samples(&body).ok_or_else(|| HarnessError::Invalid {
            what: format!("Prometheus' answer to {promql}"),
            detail: body.to_string(),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn log(&self) -> PathBuf {
        self.process.log().to_path_buf()
    }

    /// Fails with the log tail if Prometheus has exited.
    pub fn ensure_running(&self) -> Result<()> {
        self.process.ensure_running()
    }

    pub async fn stop(mut self) {
        self.process.stop().await;
    }
}

/// What a Prometheus service discovery needs, and no more: get, list and watch pods. Applied
/// server-side, so that several Prometheus started at once agree.
async fn grant_pod_reads(admin: &kube::Client) -> Result<()> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": USER},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    });
    Api::<ClusterRole>::all(admin.clone())
        .patch(USER, &params, &Patch::Apply(role))
        .await?;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": USER},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": USER},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}],
    });
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(USER, &params, &Patch::Apply(binding))
        .await?;
    Ok(())
}

/// prometheus.yml: one job over the pods that `scrape` names, relabelled as a real install
/// relabels them (every pod label becomes a target label; `namespace` and `pod` name it).
fn config(access: &ApiAccess<'_>, scrape: &PodScrape) -> Value {
    let interval = format!(
        "{}ms",
        scrape.interval.max(Duration::from_secs(1)).as_millis()
    );
    let mut discovery = json!({
        "role": "pod",
        "api_server": access.url,
        "tls_config": {
            "ca_file": access.ca,
            "cert_file": access.client.cert,
            "key_file": access.client.key,
        },
    });
    if !scrape.namespaces.is_empty() {
        discovery["namespaces"] = json!({"names": scrape.namespaces});
    }
    json!({
        "global": {"scrape_interval": interval, "scrape_timeout": interval},
        "scrape_configs": [{
            "job_name": JOB,
            "kubernetes_sd_configs": [discovery],
            "relabel_configs": [
                {
                    "source_labels": ["__meta_kubernetes_pod_container_image"],
                    "regex": image_regex(),
                    "action": "keep",
                },
                {
                    "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                    "regex": scrape.port_name,
                    "action": "keep",
                },
                // A pod not yet given an IP has no address to scrape.
                {"source_labels": ["__meta_kubernetes_pod_ip"], "regex": ".+", "action": "keep"},
                {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
                {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            ],
        }],
    })
}

/// The series of an instant query's answer (`{"data": {"result": [{"metric", "value"}]}}`).
fn samples(body: &Value) -> Option<Vec<Sample>> {
    body["data"]["result"]
        .as_array()?
        .iter()
        .map(|series| {
            let labels = series["metric"]
                .as_object()?
                .iter()
                .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect::<Option<_>>()?;
            let value = series["value"][1].as_str()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_files() -> CertFiles {
        CertFiles {
            cert: "c.crt".into(),
            key: "c.key".into(),
        }
    }

    fn access(client: &CertFiles) -> ApiAccess<'_> {
        ApiAccess {
            url: "https://127.0.0.1:6443",
            ca: Path::new("ca.crt"),
            client,
        }
    }

    #[test]
    fn the_job_discovers_runner_pods_in_the_namespace_with_their_labels() {
        let client = cert_files();
        let access = access(&client);
        let config = config(
            &access,
            &PodScrape::namespace("team-a", Duration::from_millis(200)),
        );
        assert_eq!(config["global"]["scrape_interval"], "1000ms");
        let job = &config["scrape_configs"][0];
        assert_eq!(job["job_name"], JOB);
        let discovery = &job["kubernetes_sd_configs"][0];
        assert_eq!(discovery["role"], "pod");
        assert_eq!(discovery["namespaces"]["names"], json!(["team-a"]));
        assert_eq!(discovery["tls_config"]["key_file"], "c.key");
        let relabel = job["relabel_configs"].as_array().unwrap();
        assert_eq!(relabel[0]["regex"], "^.*/demo-app:.*$");
        assert_eq!(relabel[0]["action"], "keep");
        assert_eq!(relabel[1]["regex"], "http");
        assert!(relabel.iter().any(|r| r["action"] == "labelmap"));
        assert!(relabel.iter().any(|r| r["target_label"] == "pod"));
    }

    #[test]
    fn all_namespaces_when_none_is_named() {
        let client = cert_files();
        let access = access(&client);
        let scrape = PodScrape {
            namespaces: vec![],
            port_name: "metrics".into(),
            interval: Duration::from_secs(5),
        };
        let config = config(&access, &scrape);
        let job = &config["scrape_configs"][0];
        assert!(job["kubernetes_sd_configs"][0].get("namespaces").is_none());
        assert_eq!(job["relabel_configs"][1]["regex"], "metrics");
        assert_eq!(config["global"]["scrape_timeout"], "5000ms");
    }

    #[test]
    fn samples_are_read_with_their_labels_and_a_bad_answer_is_none() {
        let body = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"pod": "a", "job": JOB}, "value": [1.5, "3"]},
            {"metric": {}, "value": [1.5, "0.25"]},
        ]}});
        let read = samples(&body).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].labels["pod"], "a");
        assert_eq!(read[0].value, 3.0);
        assert_eq!(read[1].value, 0.25);
        assert!(samples(&json!({"data": {"result": [{"metric": {}, "value": [1, 2]}]}})).is_none());
        assert!(samples(&json!({"status": "error"})).is_none());
    }
}
