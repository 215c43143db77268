//! A steady client, as the users of a service are: requests at a fixed rate to one address on
//! loopback (a proxy's entrypoint), each recorded with when it was sent, how long it took, how
//! it ended and which version answered. What the tests conclude about a release — the share a
//! version got, whether anyone saw a failure, when the last bad answer came — is read from
//! these records, never from the objects the controller wrote.
//!
//! Bounded: it stops at its time limit or its request cap, whichever comes first, and never
//! queues; a request it could not send because too many were in flight is counted as dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::{HarnessError, Result};

/// Requests in flight at once, beyond which a tick is dropped (and counted).
const MAX_IN_FLIGHT: usize = 512;

/// What to send, how often, for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Must be a loopback address: nothing else may be sent to.
    pub target: SocketAddr,
    /// The `Host` header (what the routes match).
    pub host: String,
    pub path: String,
    /// Sent with every request (a header route's match, a cookie).
    pub headers: Vec<(String, String)>,
    /// Requests a second.
    pub rate: f64,
    /// The load stops by itself after this long.
    pub limit: Duration,
    /// Per request.
    pub timeout: Duration,
    /// The response header that names the version that answered.
    pub version_header: String,
}

impl LoadSpec {
    /// `rate` requests a second to `target` for `host`, for at most `limit`.
    pub fn new(target: SocketAddr, host: &str, rate: f64, limit: Duration) -> Self {
        Self {
            target,
            host: host.to_owned(),
            path: "/".into(),
            headers: Vec::new(),
            rate,
            limit,
            timeout: Duration::from_secs(5),
            version_header: demo_app::VERSION_HEADER.into(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answered {
        status: u16,
        /// From the version header; `None` when the answer did not come from a version (the
        /// proxy's own 404 or 503, say).
        version: Option<String>,
    },
    /// No answer: refused, reset, timed out.
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was sent, from the load's start.
    pub sent: Duration,
    pub took: Duration,
    pub outcome: Outcome,
}

impl Record {
    /// What a user counts as a failed request: no answer, or the proxy saying it had no
    /// backend that worked (502, 503, 504).
    pub fn failed(&self) -> bool {
        match &self.outcome {
            Outcome::Failed { .. } => true,
            Outcome::Answered { status, .. } => matches!(status, 502..=504),
        }
    }

    pub fn version(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Answered { version, .. } => version.as_deref(),
            Outcome::Failed { .. } => None,
        }
    }

    /// When the answer (or the failure) came, from the load's start.
    pub fn ended(&self) -> Duration {
        self.sent + self.took
    }
}

/// Counts over a set of records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: usize,
    /// Answers by the version that gave them.
    pub by_version: BTreeMap<String, usize>,
    /// [`Record::failed`].
    pub failed: usize,
    /// Answers with any 5xx status, failed or not (a version's own 500s are here too).
    pub server_errors: usize,
    /// The 5xx answers that named a version: that version's own errors, by version.
    pub server_errors_by_version: BTreeMap<String, usize>,
}

impl Tally {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut tally = Tally::default();
        for record in records {
            tally.total += 1;
            if record.failed() {
                tally.failed += 1;
            }
            if let Outcome::Answered { status, version } = &record.outcome {
                if *status >= 500 {
                    tally.server_errors += 1;
                }
                if let Some(version) = version {
                    *tally.by_version.entry(version.clone()).or_insert(0) += 1;
                    if *status >= 500 {
                        *tally
                            .server_errors_by_version
                            .entry(version.clone())
                            .or_insert(0) += 1;
                    }
                }
            }
        }
        tally
    }

    /// Answers by `version`.
    pub fn count(&self, version: &str) -> usize {
        self.by_version.get(version).copied().unwrap_or(0)
    }

    /// 5xx answers by `version`.
    pub fn server_errors_of(&self, version: &str) -> usize {
        self.server_errors_by_version
            .get(version)
            .copied()
            .unwrap_or(0)
    }
}

/// The load that runs; [`Load::stop`] ends it and hands over everything it recorded.
pub struct Load {
    started: Instant,
    /// The wall clock at `started`, to place events others stamped (a verdict) on the load's.
    started_wall: SystemTime,
    records: Arc<Mutex<Vec<Record>>>,
    dropped: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    driver: tokio::task::JoinHandle<()>,
}

/// What a stopped load recorded, in order of sending.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub records: Vec<Record>,
    /// Ticks skipped because [`MAX_IN_FLIGHT`] requests were already in flight.
    pub dropped: u64,
}

impl Load {
    /// Starts sending. Refuses a target that is not on loopback.
    pub fn start(spec: LoadSpec) -> Result<Self> {
        if !spec.target.ip().is_loopback() {
            return Err(HarnessError::Invalid {
                what: "the load's target".into(),
                detail: format!("{} is not a loopback address", spec.target),
            });
        }
        if !(spec.rate > 0.0 && spec.rate <= 10_000.0) {
            return Err(HarnessError::Invalid {
                what: "the load's rate".into(),
                detail: format!("{} is not within (0, 10000] requests a second", spec.rate),
            });
        }
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(spec.timeout)
            .build()?;
        let started = Instant::now();
        let started_wall = SystemTime::now();
        let records = Arc::new(Mutex::new(Vec::new()));
        let dropped = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        let driver = tokio::spawn(drive(
            spec,
            client,
            started,
            records.clone(),
            dropped.clone(),
            stopped,
        ));
        Ok(Self {
            started,
            started_wall,
            records,
            dropped,
            stop,
            driver,
        })
    }

    /// The wall clock when the load began: its clock's zero.
    pub fn started_at(&self) -> SystemTime {
        self.started_wall
    }

    /// Ticks skipped so far because too many requests were in flight.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Now, on the load's clock.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// `at` (a wall-clock time, as the apiserver and the controller stamp them) on the load's
    /// clock; zero for a time before the load began.
    pub fn offset_of(&self, at: SystemTime) -> Duration {
        at.duration_since(self.started_wall).unwrap_or_default()
    }

    /// The records of requests sent at or after `from` that have ended, so far.
    pub fn since(&self, from: Duration) -> Vec<Record> {
        lock(&self.records)
            .iter()
            .filter(|r| r.sent >= from)
            .cloned()
            .collect()
    }

    /// Waits until `n` requests sent at or after `from` have ended (or the load has stopped by
    /// itself), and returns them.
    pub async fn collect(&self, from: Duration, n: usize) -> Vec<Record> {
        loop {
            let records = self.since(from);
            if records.len() >= n || self.driver.is_finished() {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first `n` requests sent from now on, once they have ended (fewer if the load stops
    /// by itself first).
    pub async fn next(&self, n: usize) -> Vec<Record> {
        let mut records = self.collect(self.now(), n).await;
        records.truncate(n);
        records
    }

    /// Waits, up to `timeout`, until an answer has come from `version`: the proxy routes the
    /// host to it.
    pub async fn first_answer_from(&self, version: &str, timeout: Duration) -> Result<()> {
        let what = format!("an answer from {version}");
        crate::wait::until(&what, timeout, || async {
            let answered = lock(&self.records)
                .iter()
                .any(|r| r.version() == Some(version));
            Ok::<_, HarnessError>(answered.then_some(()))
        })
        .await
    }

    /// Stops sending, waits for the requests in flight, and returns everything recorded.
    pub async fn stop(self) -> Recorded {
        let _ = self.stop.send(true);
        let _ = self.driver.await;
        let mut records = std::mem::take(&mut *lock(&self.records));
        records.sort_by_key(|r| r.sent);
        Recorded {
            records,
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

async fn drive(
    spec: LoadSpec,
    client: reqwest::Client,
    started: Instant,
    records: Arc<Mutex<Vec<Record>>>,
    dropped: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) {
    let url = format!("http://{}{}", spec.target, spec.path);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / spec.rate));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut requests = JoinSet::new();
    while started.elapsed() < spec.limit {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => break,
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut request = client.get(&url).header(reqwest::header::HOST, &spec.host);
        for (name, value) in &spec.headers {
            request = request.header(name, value);
        }
        let records = records.clone();
        let version_header = spec.version_header.clone();
        requests.spawn(async move {
            let _permit = permit;
            let sent = started.elapsed();
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let version = response
                        .headers()
                        .get(&version_header)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    // The body is read so that the connection goes back to the pool whole.
                    match response.bytes().await {
                        Ok(_) => Outcome::Answered { status, version },
                        Err(e) => Outcome::Failed {
                            error: format!("reading the body: {e}"),
                        },
                    }
                }
                Err(e) => Outcome::Failed {
                    error: describe(&e),
                },
            };
            let took = started.elapsed().saturating_sub(sent);
            lock(&records).push(Record {
                sent,
                took,
                outcome,
            });
        });
        // Reap what has finished, so the set stays small over a long load.
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

/// A failed request in a few words: what a person would call it.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut innermost = None;
    while let Some(cause) = source {
        innermost = Some(cause.to_string());
        source = cause.source();
    }
    match innermost {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic in a request task; the records stay usable.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sent_ms: u64, outcome: Outcome) -> Record {
        Record {
            sent: Duration::from_millis(sent_ms),
            took: Duration::from_millis(3),
            outcome,
        }
    }

    fn answered(status: u16, version: Option<&str>) -> Outcome {
        Outcome::Answered {
            status,
            version: version.map(str::to_owned),
        }
    }

    #[test]
    fn a_tally_counts_versions_failures_and_server_errors() {
        let records = [
            record(0, answered(200, Some("v1"))),
            record(10, answered(200, Some("v2"))),
            record(20, answered(500, Some("v2"))),
            record(30, answered(502, None)),
            record(
                40,
                Outcome::Failed {
                    error: "could not connect".into(),
                },
            ),
            record(50, answered(404, None)),
        ];
        let tally = Tally::of(&records);
        assert_eq!(tally.total, 6);
        assert_eq!(tally.count("v1"), 1);
        assert_eq!(tally.count("v2"), 2);
        assert_eq!(tally.count("v3"), 0);
        // A version's own 500 is an answer, not a failure of the data plane.
        assert_eq!(tally.failed, 2);
        assert_eq!(tally.server_errors, 2);
        assert_eq!(tally.server_errors_of("v2"), 1);
        assert_eq!(tally.server_errors_of("v1"), 0);
        assert_eq!(records[1].ended(), Duration::from_millis(13));
    }

    #[tokio::test]
    async fn only_loopback_is_a_target_and_the_rate_is_bounded() {
        let spec = LoadSpec::new(
            "192.0.2.10:80".parse().unwrap(),
            "web.example",
            10.0,
            Duration::from_secs(1),
        );
        assert!(Load::start(spec).is_err());
        let mut spec = LoadSpec::new(
            "127.0.0.1:9".parse().unwrap(),
            "web.example",
            0.0,
            Duration::from_secs(1),
        );
        assert!(Load::start(spec.clone()).is_err());
        spec.rate = f64::NAN;
        assert!(Load::start(spec).is_err());
    }

    #[tokio::test]
    async fn a_load_records_answers_with_their_version_and_stops_at_its_limit() {
        let behaviour = demo_app::Behaviour {
            error_rate: 0.0,
            latency: Duration::ZERO,
            version: "v7".into(),
        };
        let (listener, address) = demo_app::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let server = tokio::spawn(demo_app::serve(listener, behaviour));
        let load = Load::start(LoadSpec::new(
            address,
            "web.example",
            200.0,
            Duration::from_millis(500),
        ))
        .unwrap();
        let first = load.collect(Duration::ZERO, 20).await;
        assert!(first.len() >= 20);
        // More than it can send: returns once the load has stopped at its limit by itself.
        load.collect(Duration::ZERO, usize::MAX).await;
        let recorded = load.stop().await;
        server.abort();
        let tally = Tally::of(&recorded.records);
        // 200 a second for half a second: about 100, never more than the ticks allow.
        assert!(
            (50..=102).contains(&tally.total),
            "{} requests",
            tally.total
        );
        assert_eq!(tally.count("v7"), tally.total, "{tally:?}");
        assert_eq!(tally.failed, 0);
        assert!(recorded.records.windows(2).all(|w| w[0].sent <= w[1].sent));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failed_request() {
        // A port just let go of: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let load = Load::start(LoadSpec::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            "web.example",
            50.0,
            Duration::from_millis(200),
        ))
        .unwrap();
        let first = load.collect(Duration::ZERO, 3).await;
        assert!(first.len() >= 3, "{first:?}");
        let records = load.stop().await.records;
        let tally = Tally::of(&records);
        assert_eq!(tally.failed, tally.total, "{records:?}");
    }
}
