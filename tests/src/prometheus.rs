//! Prometheus (built by tests/cluster/build.sh) over a TSDB backfilled from OpenMetrics text with
//! `promtool tsdb create-blocks-from openmetrics`, listening on a free 127.0.0.1 port.

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::binaries::prometheus_tool;
use crate::ports::free_ports;
use crate::process::ManagedProcess;
use crate::{HarnessError, Result, wait};

const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct BackfilledPrometheus {
    url: String,
    process: ManagedProcess,
    _dir: tempfile::TempDir,
}

impl BackfilledPrometheus {
    /// Backfills a fresh TSDB from `openmetrics` (which must end with `# EOF`; timestamps in
    /// seconds) and starts Prometheus over it with an empty configuration, so it scrapes nothing
    /// and serves exactly the given samples.
    pub async fn start(openmetrics: &str) -> Result<Self> {
        crate::install_crypto_provider();
        let prometheus = prometheus_tool("prometheus")?;
        let promtool = prometheus_tool("promtool")?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-prometheus-")
            .tempdir()
            .map_err(HarnessError::io("creating a temporary directory"))?;
        let input = dir.path().join("input.om");
        let data = dir.path().join("data");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&input, openmetrics)
            .map_err(HarnessError::io("writing OpenMetrics input"))?;
        std::fs::write(&config, "").map_err(HarnessError::io("writing prometheus.yml"))?;

        let output = Command::new(&promtool)
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&data)
            .output()
            .await
            .map_err(HarnessError::io("running promtool"))?;
        if !output.status.success() {
            return Err(HarnessError::Command {
                command: "promtool tsdb create-blocks-from openmetrics".into(),
                detail: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }

        let [port] = free_ports::<1>()?;
        let logs = dir.path().to_path_buf();
        let process = ManagedProcess::spawn(
            "prometheus",
            &prometheus,
            &[
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
                // Backfilled samples may be old; keep them all.
                "--storage.tsdb.retention.time=100y".into(),
                "--log.level=warn".into(),
            ],
            &logs,
        )?;
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&process, &url).await?;
        Ok(Self {
            url,
            process,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn log(&self) -> PathBuf {
        self.process.log().to_path_buf()
    }

    pub async fn stop(mut self) {
        self.process.stop().await;
    }
}

/// Waits until the Prometheus `process` serving at `url` says it is ready; fails at once if it
/// exits.
pub(crate) async fn wait_ready(process: &ManagedProcess, url: &str) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let ready = format!("{url}/-/ready");
    wait::until::<_, HarnessError, _, _>("Prometheus to be ready", START_TIMEOUT, || async {
        process.ensure_running()?;
        let up = http
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        Ok(up.then_some(()))
    })
    .await
}
