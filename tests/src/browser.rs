//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`), for the
//! dashboard's e2e tests. chromedriver listens on loopback; the browser may reach nothing but
//! loopback: every other host name fails to resolve and every other connection goes to a proxy
//! that is not there.

use std::path::Path;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Map, Value, json};

use crate::binaries::on_path;
use crate::ports::free_ports;
use crate::process::ManagedProcess;
use crate::{HarnessError, Result};

/// How long chromedriver gets to answer its status endpoint.
const DRIVER_START: Duration = Duration::from_secs(20);

/// The window the pages are drawn in, and so the size of every screenshot.
pub const WINDOW: (u32, u32) = (1280, 1000);

/// Switches that keep the browser quiet and local: no first-run pages, no background requests to
/// Google's services, and no network but loopback (`--proxy-server` to a closed port catches
/// what the resolver rule lets through; loopback bypasses a proxy by default).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--metrics-recording-only",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--proxy-server=127.0.0.1:9",
    "--hide-scrollbars",
];

fn webdriver(what: &str) -> impl FnOnce(String) -> HarnessError + '_ {
    move |detail| HarnessError::Invalid {
        what: format!("WebDriver: {what}"),
        detail,
    }
}

/// chromedriver with one browser session, stopped (browser and all) when dropped.
pub struct Browser {
    client: Client,
    driver: ManagedProcess,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port, with its log in `log_dir`, and opens a
    /// session of headless Chromium with a fresh profile.
    pub async fn start(log_dir: &Path) -> Result<Self> {
        let chromedriver = on_path("chromedriver", "apt-get install chromium-driver")?;
        let chromium = on_path("chromium", "apt-get install chromium")?;
        let [port] = free_ports::<1>()?;
        let driver = ManagedProcess::spawn(
            "chromedriver",
            &chromedriver,
            &[format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
            log_dir,
        )?;
        let url = format!("http://127.0.0.1:{port}");
        wait_until_ready(&driver, &url).await?;
        let profile = tempfile::tempdir()
            .map_err(HarnessError::io("creating a browser profile directory"))?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={},{}", WINDOW.0, WINDOW.1));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        });
        let capabilities: Map<String, Value> = match capabilities {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .map_err(|e| webdriver("opening a session")(e.to_string()))?;
        Ok(Self {
            client,
            driver,
            _profile: profile,
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ends the session, which closes the browser, then stops chromedriver.
    pub async fn stop(mut self) {
        let _ = self.client.clone().close().await;
        self.driver.stop().await;
        self.kill_group();
    }

    /// chromedriver leads its own process group, and the browser it started is in it: a test
    /// that fails before `stop` must not leave a browser behind.
    fn kill_group(&self) {
        if let Ok(pid) = i32::try_from(self.driver.pid()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}

async fn wait_until_ready(driver: &ManagedProcess, url: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + DRIVER_START;
    loop {
        driver.ensure_running()?;
        let answer = http.get(format!("{url}/status")).send().await;
        if let Ok(answer) = answer
            && let Ok(status) = answer.json::<Value>().await
            && status["value"]["ready"] == Value::Bool(true)
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: format!("chromedriver at {url}"),
                after: DRIVER_START,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
