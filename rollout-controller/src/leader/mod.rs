//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does it: of the replicas,
//! only the one holding the Lease reconciles and writes; the others keep their caches warm and
//! take over when the holder stops renewing.
//!
//! Safety rests on two clocks never being compared. A candidate judges someone else's lease by
//! its own monotonic clock: expired when the Lease record has not changed for
//! `leaseDurationSeconds` since this candidate first saw it as it is (so a skewed `renewTime`
//! neither shortens nor stretches the wait). A leader judges itself from the moment it *sent* its
//! last successful write: it may write until that moment plus the renew deadline, which is shorter
//! than the lease. Anyone else first sees that write after it was sent, and waits a whole lease
//! from then; so the old leader's permission lapses at least `lease - renewDeadline` before a new
//! one can acquire. Every Lease write is a create (fails if the Lease exists) or a replace carrying
//! the resourceVersion it was based on, so of two candidates racing for a free lease one gets a
//! conflict.
//!
//! What to do with the Lease is decided by pure functions (`observe`, `decide`); `Elector` is
//! the thin loop that reads and writes the Lease; `Leadership` is the guard every controller
//! write checks (`leader_only_client`). With `--shards N` (N > 1) there is one such Lease per
//! shard, held by [`shards::ShardElector`] with the same decisions and the same guard per shard,
//! and a fair share of them per replica ([`balance`]).

mod balance;
pub(crate) mod shards;
mod write_log;

pub use write_log::WriteLog;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::metrics::Metrics;

/// client-go's defaults (kube-controller-manager's too).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Default name of the Lease.
pub const DEFAULT_LEASE_NAME: &str = "sluice-controller";

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election timing: {0}")]
    Timing(String),
    #[error("lost the leadership of Lease {namespace}/{name} as {identity}: {why}")]
    Lost {
        namespace: String,
        name: String,
        identity: String,
        why: StepDown,
    },
    #[error("{method} {path}: refused, this replica does not hold the lease {lease}")]
    NotLeading {
        method: String,
        path: String,
        lease: String,
    },
}

/// How long a lease lasts, how long its holder keeps trying to renew it, and how often
/// candidates look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }
}

impl Timing {
    /// The renew deadline must be shorter than the lease (that difference is the margin by which
    /// an old leader stops before a new one starts) and longer than the retry period (or a
    /// leader could never retry a failed renew).
    pub fn new(
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Result<Self, LeaderError> {
        if lease_duration < Duration::from_secs(1) {
            return Err(LeaderError::Timing(format!(
                "the lease duration ({lease_duration:?}) must be at least 1s: a Lease counts whole seconds"
            )));
        }
        if renew_deadline >= lease_duration {
            return Err(LeaderError::Timing(format!(
                "the renew deadline ({renew_deadline:?}) must be shorter than the lease duration ({lease_duration:?})"
            )));
        }
        if retry_period.is_zero() || retry_period >= renew_deadline {
            return Err(LeaderError::Timing(format!(
                "the retry period ({retry_period:?}) must be above zero and shorter than the renew deadline ({renew_deadline:?})"
            )));
        }
        Ok(Self {
            lease_duration,
            renew_deadline,
            retry_period,
        })
    }

    pub(crate) fn retry_period(&self) -> Duration {
        self.retry_period
    }

    /// `leaseDurationSeconds` as written: rounded up, so that others wait at least as long as
    /// we mean.
    fn lease_seconds(&self) -> i32 {
        let millis = self.lease_duration.as_millis().div_ceil(1000);
        i32::try_from(millis).unwrap_or(i32::MAX)
    }
}

/// Which Lease, and who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub timing: Timing,
}

/// `$POD_NAME` (unique among the pods of a namespace, and kept across container restarts),
/// else `<hostname>_<pid>`.
pub fn default_identity() -> String {
    if let Ok(name) = std::env::var("POD_NAME")
        && !name.is_empty()
    {
        return name;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "sluice".into());
    format!("{host}_{}", std::process::id())
}

/// Whether this process may write under one Lease, shared by the elector (which sets it) and
/// every write fenced on it (which checks it).
#[derive(Debug)]
pub(crate) struct Leadership {
    state: watch::Sender<Lead>,
    /// The Lease's name, for refusals and the write log.
    lease: String,
    log: Option<Arc<WriteLog>>,
    /// Writes let through and not answered yet: a lease is handed back only once none is left.
    in_flight: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lead {
    /// No election: this process is the only one.
    Always,
    /// Leading, until this instant unless a renew moves it on.
    Until(Instant),
    Not,
}

impl Leadership {
    /// Always leading: for a single replica without election.
    pub(crate) fn always() -> Self {
        Self::new(Lead::Always, String::new(), None)
    }

    /// Not leading until an elector acquires the lease `lease`.
    pub(crate) fn elected(lease: &str, log: Option<Arc<WriteLog>>) -> Self {
        Self::new(Lead::Not, lease.to_owned(), log)
    }

    fn new(lead: Lead, lease: String, log: Option<Arc<WriteLog>>) -> Self {
        Self {
            state: watch::Sender::new(lead),
            lease,
            log,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// True while a write sent now cannot overlap another leader's.
    pub(crate) fn may_write(&self, now: Instant) -> bool {
        match *self.state.borrow() {
            Lead::Always => true,
            Lead::Until(until) => now < until,
            Lead::Not => false,
        }
    }

    /// Until when an elected leader may write; `None` when not elected (or always leading).
    pub(crate) fn until(&self) -> Option<Instant> {
        match *self.state.borrow() {
            Lead::Until(until) => Some(until),
            Lead::Always | Lead::Not => None,
        }
    }

    fn lead_until(&self, until: Instant) {
        self.state.send_replace(Lead::Until(until));
        if let Some(log) = &self.log {
            log.hold(&self.lease, Instant::now(), until);
        }
    }

    fn stop(&self) {
        let was = self.state.send_replace(Lead::Not);
        if let (Some(log), Lead::Until(_)) = (&self.log, was) {
            log.stop(&self.lease, Instant::now());
        }
    }

    /// Returns true once every write let through has been answered, false if that has not
    /// happened by `until`.
    async fn drained(&self, until: Instant) -> bool {
        loop {
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Counts a write in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The parts of a Lease record that say who holds it and for how long. A change in any of them
/// is a sign of life of the holder.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Record {
    /// `None` for a free lease (no holder, or an empty one, as a released lease has).
    pub(crate) holder: Option<String>,
    pub(crate) lease_duration_seconds: Option<i32>,
    pub(crate) acquire_time: Option<Timestamp>,
    pub(crate) renew_time: Option<Timestamp>,
    pub(crate) transitions: Option<i32>,
}

impl Record {
    pub(crate) fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration_seconds: spec.lease_duration_seconds,
            acquire_time: spec.acquire_time.map(|t| t.0),
            renew_time: spec.renew_time.map(|t| t.0),
            transitions: spec.lease_transitions,
        }
    }
}

/// A Lease record and when we first saw it so, on our own monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) record: Record,
    pub(crate) observed_at: Instant,
}

/// The record as read at `now`, keeping the time it was first seen unless it changed: client-go's
/// "observed time", which makes expiry independent of the holder's clock.
pub(crate) fn observe(previous: Option<&Seen>, record: Record, now: Instant) -> Seen {
    match previous {
        Some(seen) if seen.record == record => seen.clone(),
        _ => Seen {
            record,
            observed_at: now,
        },
    }
}

/// What this replica does with the Lease next, as [`decide`] judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseAction {
    /// There is no Lease: create it, naming us.
    Create,
    /// The lease is free, expired, or ours from before a restart: take it (replace, guarded by
    /// the resourceVersion read).
    Acquire,
    /// We lead: renew (replace, guarded by the resourceVersion of our last write).
    Renew,
    /// Someone else holds a live lease.
    StandBy,
    /// We led but may not any more: stop writing, for good.
    StepDown(StepDown),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDown {
    /// No renew succeeded within the renew deadline.
    RenewDeadlinePassed,
    /// The Lease names someone else, or is gone.
    TakenOver,
}

impl fmt::Display for StepDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepDown::RenewDeadlinePassed => "no renew succeeded within the renew deadline",
            StepDown::TakenOver => "the Lease names another holder or was deleted",
        })
    }
}

/// What to do next, from the lease as last seen (`None`: it does not exist), our identity, until
/// when we may write (`None`: we do not lead), and the monotonic clock.
pub(crate) fn decide(
    lease: Option<&Seen>,
    identity: &str,
    leading_until: Option<Instant>,
    now: Instant,
    timing: &Timing,
) -> LeaseAction {
    let holder = lease.and_then(|seen| seen.record.holder.as_deref());
    if let Some(until) = leading_until {
        return if now >= until {
            LeaseAction::StepDown(StepDown::RenewDeadlinePassed)
        } else if holder == Some(identity) {
            LeaseAction::Renew
        } else {
            LeaseAction::StepDown(StepDown::TakenOver)
        };
    }
    let Some(seen) = lease else {
        return LeaseAction::Create;
    };
    match holder {
        None => LeaseAction::Acquire,
        // Our identity is our pod's name: the process that held the lease under it before a
        // restart is gone (client-go takes such a lease back at once too).
        Some(holder) if holder == identity => LeaseAction::Acquire,
        Some(_) if expired(seen, now, timing) => LeaseAction::Acquire,
        Some(_) => LeaseAction::StandBy,
    }
}

/// Whether a lease has gone unchanged for its duration (the record's own, else ours) since we
/// first saw it so.
pub(crate) fn expired(seen: &Seen, now: Instant, timing: &Timing) -> bool {
    let duration = seen
        .record
        .lease_duration_seconds
        .filter(|s| *s > 0)
        .map_or(timing.lease_duration, |s| {
            Duration::from_secs(u64::from(s.unsigned_abs()))
        });
    now >= seen.observed_at + duration
}

/// Holds the Lease for this process: acquires it, renews it, and says when it was lost.
pub(crate) struct Elector {
    api: Api<Lease>,
    election: LeaderElection,
    leadership: Arc<Leadership>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    /// The Lease as last read or written (with its resourceVersion), `None` when absent or
    /// unknown.
    current: Option<Lease>,
    seen: Option<Seen>,
    /// The holder last logged, so that a change of leader is logged once.
    logged_holder: Option<String>,
}

impl Elector {
    /// `client` must be able to write while we do not lead: not a [`leader_only_client`].
    pub(crate) fn new(
        client: Client,
        election: LeaderElection,
        leadership: Arc<Leadership>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "sluice".into(),
                instance: Some(election.identity.clone()),
            },
        );
        Self {
            api: Api::namespaced(client, &election.namespace),
            election,
            leadership,
            metrics,
            recorder,
            current: None,
            seen: None,
            logged_holder: None,
        }
    }

    /// Campaigns, then leads; returns only when the leadership is lost, after the guard has
    /// been closed.
    pub(crate) async fn run(&mut self) -> LeaderError {
        info!(
            identity = %self.election.identity,
            lease = %format!("{}/{}", self.election.namespace, self.election.lease_name),
            "leader election: campaigning"
        );
        loop {
            let started = Instant::now();
            if let Err(lost) = self.round().await {
                return lost;
            }
            let next = started + self.election.timing.retry_period;
            // A leader wakes at its deadline at the latest, to step down at once.
            let wake = self
                .leadership
                .until()
                .map_or(next, |until| next.min(until));
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    async fn round(&mut self) -> Result<(), LeaderError> {
        let leading_until = self.leadership.until();
        // A leader renews from its own last write; it reads only when that is unknown (after a
        // conflict).
        if leading_until.is_none() || self.current.is_none() {
            self.read().await;
        }
        let action = decide(
            self.seen.as_ref(),
            &self.election.identity,
            leading_until,
            Instant::now(),
            &self.election.timing,
        );
        match action {
            LeaseAction::StandBy => self.log_holder(),
            LeaseAction::StepDown(why) => {
                self.leadership.stop();
                self.metrics.leader.set(0);
                self.metrics.shards_held.set(0);
                error!(
                    identity = %self.election.identity,
                    lease = %format!("{}/{}", self.election.namespace, self.election.lease_name),
                    reason = %why,
                    "leader election: lost the leadership; writes stopped, exiting"
                );
                return Err(LeaderError::Lost {
                    namespace: self.election.namespace.clone(),
                    name: self.election.lease_name.clone(),
                    identity: self.election.identity.clone(),
                    why,
                });
            }
            LeaseAction::Create | LeaseAction::Acquire | LeaseAction::Renew => {
                self.write(action).await
            }
        }
        Ok(())
    }

    /// How long one API call may take: for a leader, no longer than its deadline.
    fn call_deadline(&self) -> tokio::time::Instant {
        let bound = Instant::now() + self.election.timing.renew_deadline;
        self.leadership
            .until()
            .map_or(bound, |until| until.min(bound))
            .into()
    }

    async fn read(&mut self) {
        let name = &self.election.lease_name;
        match tokio::time::timeout_at(self.call_deadline(), self.api.get_opt(name)).await {
            Ok(Ok(Some(lease))) => {
                self.seen = Some(observe(
                    self.seen.as_ref(),
                    Record::of(&lease),
                    Instant::now(),
                ));
                self.current = Some(lease);
            }
            Ok(Ok(None)) => {
                self.seen = None;
                self.current = None;
            }
            // A stale view is safe: any write based on it carries its resourceVersion.
            Ok(Err(e)) => warn!(error = %e, lease = %name, "leader election: reading the Lease"),
            Err(_) => warn!(lease = %name, "leader election: reading the Lease timed out"),
        }
    }

    async fn write(&mut self, action: LeaseAction) {
        let Some(lease) = claim(
            action,
            self.current.as_ref(),
            &self.election.namespace,
            &self.election.lease_name,
            &self.election.identity,
            &self.election.timing,
        ) else {
            return;
        };
        let deadline = self.call_deadline();
        // Taken before the request leaves: everyone else sees the write later than this.
        let sent = Instant::now();
        let params = PostParams::default();
        let written = if action == LeaseAction::Create {
            tokio::time::timeout_at(deadline, self.api.create(&params, &lease)).await
        } else {
            tokio::time::timeout_at(
                deadline,
                self.api.replace(&self.election.lease_name, &params, &lease),
            )
            .await
        };
        match written {
            Ok(Ok(lease)) => {
                let was_leading = self.leadership.until().is_some();
                self.leadership
                    .lead_until(sent + self.election.timing.renew_deadline);
                self.seen = Some(observe(
                    self.seen.as_ref(),
                    Record::of(&lease),
                    Instant::now(),
                ));
                if !was_leading {
                    self.became_leader(&lease);
                }
                self.current = Some(lease);
            }
            // Someone else wrote the Lease first: read it again next round.
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                self.current = None;
            }
            Ok(Err(e)) => {
                warn!(error = %e, decision = ?action, "leader election: writing the Lease")
            }
            Err(_) => warn!(decision = ?action, "leader election: writing the Lease timed out"),
        }
    }

    fn became_leader(&mut self, lease: &Lease) {
        self.metrics.leader.set(1);
        self.metrics.shards_held.set(1);
        self.logged_holder = Some(self.election.identity.clone());
        info!(
            identity = %self.election.identity,
            lease = %format!("{}/{}", self.election.namespace, self.election.lease_name),
            "leader election: became the leader"
        );
        let event = Event {
            type_: EventType::Normal,
            reason: "LeaderElection".into(),
            note: Some(format!("{} became leader", self.election.identity)),
            action: "Acquire".into(),
            secondary: None,
        };
        let (recorder, reference) = (self.recorder.clone(), lease.object_ref(&()));
        // On its own task: a slow Event write must not hold up the next renew.
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, "leader election: could not publish the Event");
            }
        });
    }

    fn log_holder(&mut self) {
        let holder = self.seen.as_ref().and_then(|s| s.record.holder.clone());
        if holder != self.logged_holder {
            info!(
                identity = %self.election.identity,
                leader = holder.as_deref().unwrap_or("none"),
                "leader election: standing by"
            );
            self.logged_holder = holder;
        }
    }

    /// On a graceful stop, after the last write: hands the lease back, so that a standby takes
    /// over at its next look instead of after a whole lease.
    pub(crate) async fn release(&mut self) {
        let was_leading = self.leadership.until().is_some();
        self.leadership.stop();
        self.metrics.leader.set(0);
        self.metrics.shards_held.set(0);
        let Some(lease) = self
            .current
            .as_ref()
            .filter(|_| was_leading)
            .and_then(|l| released(l, &self.election.identity))
        else {
            return;
        };
        let released = tokio::time::timeout(
            self.election.timing.retry_period,
            self.api
                .replace(&self.election.lease_name, &PostParams::default(), &lease),
        )
        .await;
        match released {
            Ok(Ok(_)) => {
                info!(identity = %self.election.identity, "leader election: released the lease")
            }
            Ok(Err(e)) => warn!(error = %e, "leader election: releasing the lease"),
            Err(_) => warn!("leader election: releasing the lease timed out"),
        }
    }
}

/// The Lease to write for `action` (create, acquire or renew, by `identity`), from the Lease as
/// last read or written; `None` when there is nothing to base a replace on.
pub(crate) fn claim(
    action: LeaseAction,
    current: Option<&Lease>,
    namespace: &str,
    name: &str,
    identity: &str,
    timing: &Timing,
) -> Option<Lease> {
    let now = MicroTime(Timestamp::now());
    match (action, current) {
        (LeaseAction::Create, _) => Some(Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: Some(timing.lease_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        }),
        (_, None) => None,
        (_, Some(current)) => {
            let mut lease = current.clone();
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if action == LeaseAction::Acquire {
                let previous = spec.holder_identity.clone().filter(|h| !h.is_empty());
                if previous.is_some() && previous.as_deref() != Some(identity) {
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.holder_identity = Some(identity.to_owned());
                spec.acquire_time = Some(now.clone());
            }
            spec.lease_duration_seconds = Some(timing.lease_seconds());
            spec.renew_time = Some(now);
            Some(lease)
        }
    }
}

/// `lease` handed back (no holder, a one-second duration), if `identity` holds it.
pub(crate) fn released(lease: &Lease, identity: &str) -> Option<Lease> {
    let mut lease = lease.clone();
    let now = MicroTime(Timestamp::now());
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    Some(lease)
}

/// A client whose writes (anything but GET, HEAD and OPTIONS) are refused unless `leadership`
/// allows them at the moment they are sent: the one gate in front of every write the Rollout
/// controller and the AnalysisRun runner make (objects, status, Events alike). Reads pass.
pub(crate) fn leader_only_client(client: &Client, leadership: Arc<Leadership>) -> Client {
    let namespace = client.default_namespace().to_owned();
    Client::new(
        LeaderOnly {
            client: client.clone(),
            leadership,
        },
        namespace,
    )
}

#[derive(Clone)]
struct LeaderOnly {
    client: Client,
    leadership: Arc<Leadership>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Request<kube::client::Body>> for LeaderOnly {
    type Response = http::Response<kube::client::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let client = self.client.clone();
        let leadership = self.leadership.clone();
        Box::pin(async move {
            let read = matches!(
                *request.method(),
                http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
            );
            if read {
                return client
                    .send(request)
                    .await
                    .map_err(|e| Box::new(e) as BoxError);
            }
            let (method, path) = (
                request.method().to_string(),
                request.uri().path().to_owned(),
            );
            // Counted before the check, so that a lease handed back after the gate closed sees
            // every write that passed it.
            let _in_flight = InFlight::start(&leadership.in_flight);
            // Checked when the request is about to leave, not when it was built.
            let sent = Instant::now();
            if !leadership.may_write(sent) {
                return Err(Box::new(LeaderError::NotLeading {
                    method,
                    path,
                    lease: leadership.lease.clone(),
                }) as BoxError);
            }
            let answer = client.send(request).await;
            if let Some(log) = &leadership.log {
                let code = answer.as_ref().map_or(0, |r| r.status().as_u16());
                log.write(
                    &leadership.lease,
                    &method,
                    &path,
                    sent,
                    Instant::now(),
                    code,
                );
            }
            answer.map_err(|e| Box::new(e) as BoxError)
        })
    }
}

#[cfg(test)]
mod tests;
