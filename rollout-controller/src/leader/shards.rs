//! Shards as Leases (`--shards N`, N > 1): one Lease per shard, `<lease>-shard-<i>`, each held
//! and fenced exactly as the single leader lease is ([`decide`], [`Leadership`]), and one Lease
//! per replica, `<lease>-member-<hash of its identity>`, renewed in the same round, which tells
//! the others it is alive. Each round the elector lists the Leases of its namespace once, renews
//! its membership and the shards it holds, and takes or hands back shards towards its fair
//! share ([`rebalance`]). A shard handed back is closed first and released only once every
//! write that passed its gate has been answered, so that its next holder, which takes a
//! released lease at its next look, never overlaps it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use tracing::{error, info, warn};

use super::balance::{Holding, rebalance};
use super::{
    LeaderElection, LeaderError, Leadership, LeaseAction, Record, Seen, WriteLog, claim, decide,
    expired, observe, released,
};
use crate::hash::fnv1a;
use crate::metrics::{Metrics, handover};
use crate::shard::ShardCount;

/// The write permission of every shard, by index: what the gate of each shard's client checks.
#[derive(Debug)]
pub(crate) struct ShardLeases {
    leases: Vec<Arc<Leadership>>,
}

impl ShardLeases {
    /// One shard without election: always held.
    pub(crate) fn always() -> Self {
        Self {
            leases: vec![Arc::new(Leadership::always())],
        }
    }

    /// Not held until an elector acquires them. One shard is the leader lease itself, under its
    /// own name, as without shards.
    pub(crate) fn elected(count: ShardCount, lease: &str, log: Option<Arc<WriteLog>>) -> Self {
        let leases = count
            .all()
            .map(|shard| {
                let name = lease_name(lease, count, shard.index());
                Arc::new(Leadership::elected(&name, log.clone()))
            })
            .collect();
        Self { leases }
    }

    pub(crate) fn count(&self) -> usize {
        self.leases.len()
    }

    /// `shard` is below [`ShardLeases::count`]: every shard index comes from the same count.
    pub(crate) fn get(&self, shard: usize) -> Arc<Leadership> {
        self.leases[shard].clone()
    }

    fn earliest_until(&self) -> Option<Instant> {
        self.leases.iter().filter_map(|l| l.until()).min()
    }

    fn held(&self) -> usize {
        self.leases.iter().filter(|l| l.until().is_some()).count()
    }
}

/// The Lease of `shard`: the leader lease itself when there is one shard.
pub(crate) fn lease_name(lease: &str, count: ShardCount, shard: usize) -> String {
    if count == ShardCount::ONE {
        lease.to_owned()
    } else {
        format!("{lease}-shard-{shard}")
    }
}

/// A replica's membership Lease: named by a hash, as an identity (`<host>_<pid>`) need not be a
/// valid object name; the identity itself is its holder.
fn member_lease_name(lease: &str, identity: &str) -> String {
    format!("{lease}-member-{:016x}", fnv1a(identity.as_bytes()))
}

/// A Lease as last read or written, and as first seen so.
#[derive(Debug, Default)]
struct Tracked {
    current: Option<Lease>,
    seen: Option<Seen>,
}

impl Tracked {
    fn saw(&mut self, lease: Option<Lease>, now: Instant) {
        match lease {
            Some(lease) => {
                self.seen = Some(observe(self.seen.as_ref(), Record::of(&lease), now));
                self.current = Some(lease);
            }
            None => *self = Self::default(),
        }
    }
}

type Written = Result<Result<Lease, kube::Error>, tokio::time::error::Elapsed>;

/// Holds this replica's share of the shard Leases.
pub(crate) struct ShardElector {
    api: Api<Lease>,
    election: LeaderElection,
    count: ShardCount,
    leases: Arc<ShardLeases>,
    metrics: Arc<Metrics>,
    shards: Vec<Tracked>,
    /// The other replicas' membership Leases, by name.
    members: BTreeMap<String, Tracked>,
    membership: Tracked,
    /// Whether a round has listed the Leases since this replica's membership was written: until
    /// then it cannot tell its share, and takes nothing (replicas started together would
    /// otherwise each take every shard first).
    registered: bool,
}

impl ShardElector {
    /// `client` must be able to write while we hold nothing: not a fenced client.
    pub(crate) fn new(
        client: Client,
        election: LeaderElection,
        count: ShardCount,
        leases: Arc<ShardLeases>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, &election.namespace),
            election,
            count,
            leases,
            metrics,
            shards: (0..count.get()).map(|_| Tracked::default()).collect(),
            members: BTreeMap::new(),
            membership: Tracked::default(),
            registered: false,
        }
    }

    fn shard_name(&self, shard: usize) -> String {
        lease_name(&self.election.lease_name, self.count, shard)
    }

    fn member_name(&self) -> String {
        member_lease_name(&self.election.lease_name, &self.election.identity)
    }

    /// Runs rounds until a held shard is lost, after its guard has been closed.
    pub(crate) async fn run(&mut self) -> LeaderError {
        info!(
            identity = %self.election.identity,
            shards = self.count.get(),
            namespace = %self.election.namespace,
            "shards: campaigning"
        );
        loop {
            let started = Instant::now();
            if let Err(lost) = self.round().await {
                return lost;
            }
            let next = started + self.election.timing.retry_period();
            // A holder wakes at its earliest deadline at the latest, to step down at once.
            let wake = self.leases.earliest_until().map_or(next, |u| next.min(u));
            tokio::time::sleep_until(wake.into()).await;
        }
    }

    /// How long one API call may take: no longer than the earliest deadline of a held shard.
    fn call_deadline(&self) -> tokio::time::Instant {
        let bound = Instant::now() + self.election.timing.renew_deadline;
        self.leases
            .earliest_until()
            .map_or(bound, |until| until.min(bound))
            .into()
    }

    async fn round(&mut self) -> Result<(), LeaderError> {
        self.renew().await?;
        let listed = self.read().await;
        if listed && self.membership.current.is_some() {
            self.registered = true;
        }
        let now = Instant::now();
        let timing = self.election.timing;
        let me = self.election.identity.as_str();
        let members: Vec<&str> = self
            .members
            .values()
            .filter_map(|t| t.seen.as_ref())
            .filter(|seen| !expired(seen, now, &timing))
            .filter_map(|seen| seen.record.holder.as_deref())
            .collect();
        let mut actions = Vec::with_capacity(self.shards.len());
        let mut holdings = Vec::with_capacity(self.shards.len());
        for (i, tracked) in self.shards.iter().enumerate() {
            let until = self.leases.get(i).until();
            let action = decide(tracked.seen.as_ref(), me, until, now, &timing);
            holdings.push(match action {
                LeaseAction::Renew => Holding::Mine,
                LeaseAction::StandBy => tracked
                    .seen
                    .as_ref()
                    .and_then(|s| s.record.holder.as_deref())
                    .map_or(Holding::Free, Holding::Theirs),
                LeaseAction::Create | LeaseAction::Acquire => Holding::Free,
                LeaseAction::StepDown(why) => return Err(self.lost(i, why)),
            });
            actions.push(action);
        }
        let plan = if self.registered {
            rebalance(me, &members, &holdings)
        } else {
            Default::default()
        };
        for shard in &plan.release {
            self.hand_back(*shard).await;
        }
        let sent = futures::future::join_all(
            plan.take
                .iter()
                .map(|shard| self.send(*shard, actions[*shard])),
        )
        .await;
        for (shard, action, at, written) in sent {
            self.wrote(shard, action, at, written);
        }
        let held = self.leases.held();
        self.metrics
            .shards_held
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        self.metrics.leader.set(i64::from(held > 0));
        self.forget_lapsed_members(now).await;
        Ok(())
    }

    /// Renews the membership and every held shard at once, first thing in a round and from our
    /// own last writes: a slow list must not eat the time a renew has before its deadline. A
    /// replica that dies stops renewing both in the same round, so the others see its
    /// membership lapse with its shards.
    async fn renew(&mut self) -> Result<(), LeaderError> {
        let now = Instant::now();
        let timing = self.election.timing;
        let mut held = Vec::new();
        for (i, tracked) in self.shards.iter().enumerate() {
            let Some(until) = self.leases.get(i).until() else {
                continue;
            };
            let me = self.election.identity.as_str();
            match decide(tracked.seen.as_ref(), me, Some(until), now, &timing) {
                LeaseAction::StepDown(why) => return Err(self.lost(i, why)),
                action => held.push((i, action)),
            }
        }
        let (membership, renewed) = futures::join!(
            self.send_membership(),
            futures::future::join_all(held.iter().map(|(i, action)| self.send(*i, *action)))
        );
        match membership {
            Some(Ok(Ok(lease))) => self.membership.saw(Some(lease), Instant::now()),
            // Conflict, or deleted by a replica that judged it lapsed: read it again next round.
            Some(Ok(Err(kube::Error::Api(status)))) if matches!(status.code, 404 | 409) => {
                self.membership = Tracked::default();
            }
            Some(Ok(Err(e))) => warn!(error = %e, "shards: renewing the membership Lease"),
            Some(Err(_)) => warn!("shards: renewing the membership Lease timed out"),
            None => {}
        }
        for (shard, action, at, written) in renewed {
            self.wrote(shard, action, at, written);
        }
        Ok(())
    }

    /// Lists the Leases of the namespace: every shard's and every member's in one call.
    async fn read(&mut self) -> bool {
        let listed =
            tokio::time::timeout_at(self.call_deadline(), self.api.list(&ListParams::default()))
                .await;
        let list = match listed {
            Ok(Ok(list)) => list,
            // A stale view is safe: any write based on it carries its resourceVersion.
            Ok(Err(e)) => {
                warn!(error = %e, "shards: listing the Leases");
                return false;
            }
            Err(_) => {
                warn!("shards: listing the Leases timed out");
                return false;
            }
        };
        let now = Instant::now();
        let mut by_name: BTreeMap<String, Lease> =
            list.items.into_iter().map(|l| (l.name_any(), l)).collect();
        for shard in 0..self.shards.len() {
            let lease = by_name.remove(&self.shard_name(shard));
            self.shards[shard].saw(lease, now);
        }
        let own = by_name.remove(&self.member_name());
        self.membership.saw(own, now);
        let prefix = format!("{}-member-", self.election.lease_name);
        let mut members = BTreeMap::new();
        for (name, lease) in by_name.into_iter().filter(|(n, _)| n.starts_with(&prefix)) {
            let mut tracked = self.members.remove(&name).unwrap_or_default();
            tracked.saw(Some(lease), now);
            members.insert(name, tracked);
        }
        self.members = members;
        true
    }

    async fn send_membership(&self) -> Option<Written> {
        let action = if self.membership.current.is_some() {
            LeaseAction::Acquire
        } else {
            LeaseAction::Create
        };
        let name = self.member_name();
        let lease = claim(
            action,
            self.membership.current.as_ref(),
            &self.election.namespace,
            &name,
            &self.election.identity,
            &self.election.timing,
        )?;
        let params = PostParams::default();
        let deadline = self.call_deadline();
        Some(match action {
            LeaseAction::Create => {
                tokio::time::timeout_at(deadline, self.api.create(&params, &lease)).await
            }
            _ => tokio::time::timeout_at(deadline, self.api.replace(&name, &params, &lease)).await,
        })
    }

    async fn send(
        &self,
        shard: usize,
        action: LeaseAction,
    ) -> (usize, LeaseAction, Instant, Option<Written>) {
        let name = self.shard_name(shard);
        let lease = claim(
            action,
            self.shards[shard].current.as_ref(),
            &self.election.namespace,
            &name,
            &self.election.identity,
            &self.election.timing,
        );
        let deadline = self.call_deadline();
        // Taken before the request leaves: everyone else sees the write later than this.
        let sent = Instant::now();
        let Some(lease) = lease else {
            return (shard, action, sent, None);
        };
        let params = PostParams::default();
        let written = if action == LeaseAction::Create {
            tokio::time::timeout_at(deadline, self.api.create(&params, &lease)).await
        } else {
            tokio::time::timeout_at(deadline, self.api.replace(&name, &params, &lease)).await
        };
        (shard, action, sent, Some(written))
    }

    fn wrote(
        &mut self,
        shard: usize,
        action: LeaseAction,
        sent: Instant,
        written: Option<Written>,
    ) {
        let leadership = self.leases.get(shard);
        match written {
            Some(Ok(Ok(lease))) => {
                let was_holding = leadership.until().is_some();
                leadership.lead_until(sent + self.election.timing.renew_deadline);
                self.shards[shard].saw(Some(lease), Instant::now());
                if !was_holding {
                    self.metrics
                        .shard_handovers
                        .get_or_create(&handover("acquired"))
                        .inc();
                    info!(
                        identity = %self.election.identity,
                        shard,
                        lease = %self.shard_name(shard),
                        "shards: acquired"
                    );
                }
            }
            // Someone else wrote the Lease first: the next round lists it again.
            Some(Ok(Err(kube::Error::Api(status)))) if status.code == 409 => {}
            Some(Ok(Err(e))) => {
                warn!(error = %e, shard, decision = ?action, "shards: writing the Lease")
            }
            Some(Err(_)) => warn!(shard, decision = ?action, "shards: writing the Lease timed out"),
            None => {}
        }
    }

    /// Closes the shard's gate, then releases its lease once every write that passed the gate
    /// has been answered; if that takes until its deadline, the lease is left to expire.
    async fn hand_back(&mut self, shard: usize) {
        let leadership = self.leases.get(shard);
        let until = leadership.until();
        leadership.stop();
        let Some(until) = until else { return };
        let name = self.shard_name(shard);
        info!(identity = %self.election.identity, shard, lease = %name, "shards: handing back");
        if !leadership.drained(until).await {
            warn!(
                shard,
                "shards: writes still unanswered at the deadline; the lease will expire"
            );
            return;
        }
        let Some(lease) = self.shards[shard]
            .current
            .as_ref()
            .and_then(|l| released(l, &self.election.identity))
        else {
            return;
        };
        let handed = tokio::time::timeout(
            self.election.timing.retry_period(),
            self.api.replace(&name, &PostParams::default(), &lease),
        )
        .await;
        match handed {
            Ok(Ok(lease)) => {
                self.shards[shard].saw(Some(lease), Instant::now());
                self.metrics
                    .shard_handovers
                    .get_or_create(&handover("released"))
                    .inc();
            }
            Ok(Err(e)) => warn!(error = %e, shard, "shards: releasing the lease"),
            Err(_) => warn!(shard, "shards: releasing the lease timed out"),
        }
    }

    /// A held shard may not be written any more: every gate closes (the process exits, as a
    /// leader that lost its lease does, and comes back with fresh caches).
    fn lost(&self, shard: usize, why: super::StepDown) -> LeaderError {
        for i in 0..self.leases.count() {
            self.leases.get(i).stop();
        }
        self.metrics.shards_held.set(0);
        self.metrics.leader.set(0);
        let name = self.shard_name(shard);
        error!(
            identity = %self.election.identity,
            lease = %format!("{}/{name}", self.election.namespace),
            reason = %why,
            "shards: lost a shard; writes stopped, exiting"
        );
        LeaderError::Lost {
            namespace: self.election.namespace.clone(),
            name,
            identity: self.election.identity.clone(),
            why,
        }
    }

    /// Deletes the membership Leases that lapsed (replicas gone for good), so that they do not
    /// pile up; one that was only slow writes its own again.
    async fn forget_lapsed_members(&mut self, now: Instant) {
        let timing = self.election.timing;
        let lapsed: Vec<(String, Option<String>)> = self
            .members
            .iter()
            .filter(|(_, t)| t.seen.as_ref().is_some_and(|s| expired(s, now, &timing)))
            .map(|(name, t)| {
                let version = t.current.as_ref().and_then(|l| l.resource_version());
                (name.clone(), version)
            })
            .collect();
        for (name, version) in lapsed {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: version,
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match tokio::time::timeout_at(self.call_deadline(), self.api.delete(&name, &params))
                .await
            {
                Ok(Ok(_)) => {
                    self.members.remove(&name);
                }
                Ok(Err(e)) => warn!(error = %e, lease = %name, "shards: deleting a lapsed member"),
                Err(_) => warn!(lease = %name, "shards: deleting a lapsed member timed out"),
            }
        }
    }

    /// On a graceful stop, after the last write: hands every held shard back and deletes the
    /// membership, so that the others take over at their next look.
    pub(crate) async fn release(&mut self) {
        for shard in 0..self.shards.len() {
            self.hand_back(shard).await;
        }
        self.metrics.shards_held.set(0);
        self.metrics.leader.set(0);
        let deleted = tokio::time::timeout(
            self.election.timing.retry_period(),
            self.api
                .delete(&self.member_name(), &DeleteParams::default()),
        )
        .await;
        match deleted {
            Ok(Ok(_)) => info!(identity = %self.election.identity, "shards: released"),
            Ok(Err(e)) => warn!(error = %e, "shards: deleting the membership Lease"),
            Err(_) => warn!("shards: deleting the membership Lease timed out"),
        }
    }
}
