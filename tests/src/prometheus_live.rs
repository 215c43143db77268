//! Prometheus (built by tests/cluster/build.sh) scraping live processes on 127.0.0.1. The targets are listed in a file_sd
//! targets file that Prometheus watches (inotify) and re-reads as it changes, so processes that
//! come and go — the demo's stand-ins for pods — are scraped within a scrape interval of being
//! listed, each with the labels the caller gives it (a pod-template hash, a version).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::binaries::prometheus_tool;
use crate::ports::free_ports;
use crate::process::ManagedProcess;
use crate::{HarnessError, Result};

const TARGETS_FILE: &str = "targets.json";

/// One process to scrape: `http://127.0.0.1:<port>/metrics`, its series carrying `labels`.
/// Only a port is taken, so that nothing but loopback can ever be scraped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub port: u16,
    pub labels: BTreeMap<String, String>,
}

/// One entry of a file_sd targets file, as Prometheus reads it.
#[derive(Serialize)]
struct TargetGroup<'a> {
    targets: [String; 1],
    labels: &'a BTreeMap<String, String>,
}

pub struct LivePrometheus {
    url: String,
    targets_file: PathBuf,
    process: ManagedProcess,
    _dir: tempfile::TempDir,
}

impl LivePrometheus {
    /// Starts Prometheus on a free 127.0.0.1 port with one scrape job, `job`, whose targets come
    /// from the file [`LivePrometheus::set_targets`] writes (empty at first), scraped every
    /// `scrape_interval` (at least 1 s: Prometheus' timeout may not exceed its interval, and a
    /// shorter one buys nothing for counters read by queries seconds apart).
    pub async fn start(job: &str, scrape_interval: Duration) -> Result<Self> {
        crate::install_crypto_provider();
        let prometheus = prometheus_tool("prometheus")?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-prometheus-live-")
            .tempdir()
            .map_err(HarnessError::io("creating a temporary directory"))?;
        let targets_file = dir.path().join(TARGETS_FILE);
        write_atomically(&targets_file, b"[]")?;
        let interval = format!(
            "{}ms",
            scrape_interval.max(Duration::from_secs(1)).as_millis()
        );
        // JSON is YAML, and serde_json quotes the paths safely.
        let config = json!({
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [{
                "job_name": job,
                "file_sd_configs": [{
                    "files": [targets_file],
                    // The file is watched; this re-read only backs up a missed notification.
                    "refresh_interval": "5s",
                }],
            }],
        });
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config.to_string())
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
        Ok(Self {
            url,
            targets_file,
            process,
            _dir: dir,
        })
    }

    /// Replaces the scraped targets. The file is written beside and renamed over the old one, so
    /// Prometheus never reads half of it.
    pub fn set_targets(&self, targets: &[ScrapeTarget]) -> Result<()> {
        let groups: Vec<TargetGroup<'_>> = targets
            .iter()
            .map(|t| TargetGroup {
                targets: [format!("127.0.0.1:{}", t.port)],
                labels: &t.labels,
            })
            .collect();
        let text = serde_json::to_vec_pretty(&groups).map_err(|e| HarnessError::Invalid {
            what: "file_sd targets".into(),
            detail: e.to_string(),
        })?;
        write_atomically(&self.targets_file, &text)
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

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let temporary = path.with_extension("json.tmp");
    std::fs::write(&temporary, bytes)
        .map_err(HarnessError::io(format!("writing {}", temporary.display())))?;
    std::fs::rename(&temporary, path)
        .map_err(HarnessError::io(format!("renaming to {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_loopback_groups_with_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(TARGETS_FILE);
        let labels = BTreeMap::from([("version".to_owned(), "v2".to_owned())]);
        let groups = [TargetGroup {
            targets: ["127.0.0.1:4000".into()],
            labels: &labels,
        }];
        write_atomically(&file, &serde_json::to_vec(&groups).unwrap()).unwrap();
        let read: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            read,
            json!([{"targets": ["127.0.0.1:4000"], "labels": {"version": "v2"}}])
        );
        assert!(!file.with_extension("json.tmp").exists());
    }
}
