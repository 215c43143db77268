//! Shards across replicas: three controller processes share six shard Leases while 300
//! one-replica canaries are in flight. One is killed with SIGKILL: its shards are held by the
//! others within the lease duration and a margin. It comes back, and a fourth replica joins: the
//! shards spread out again (each of the four holds one or two) with no shard unheld for longer
//! than a bound. The witness is each process's own write log (`--write-log`): every write it sent
//! with the shard lease it was fenced on, and every interval its leases let it write. No two
//! processes' intervals on one shard overlap, no write was sent outside its process's interval or
//! answered inside another's, every rollout was written through its own shard, and each
//! rollout's status went through every step once, in order.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use libtest_mimic::Trial;
use rollout_controller::crd::{Phase, Rollout};
use rollout_controller::shard::{ShardCount, hashed};
use serde::Deserialize;
use serde_json::json;

use crate::leader::{Replica, Timing};
use crate::rollouts::{create_rollout, rollout_manifest, set_image};
use crate::support::{Env, TestNamespace};

pub(crate) fn trials() -> Vec<Trial> {
    vec![trial!(
        shards::replicas_share_hand_over_and_rebalance_shards_without_overlap
    )]
}

const SHARDS: u16 = 6;
const ROLLOUTS: usize = 300;
const LEASE: &str = "sluice-controller";
/// `setWeight 50`, then pauses: long enough that the rollouts are still in flight while a
/// replica dies and two join. Each step ends in a status write of its own (a second setWeight
/// would be met at once by the one canary pod, and passed in the same write as the pause before
/// it), so the watched step index must rise by one at a time.
const PAUSES: usize = 3;
const PAUSE: &str = "10s";
/// Creates and updates in flight at once.
const PARALLEL: usize = 16;
/// Short, but with room for an apiserver that 300 rollouts and three controllers keep busy on
/// two cores: a renew deadline of 3 s (the leader test's) was missed there.
const LEASE_DURATION: Duration = Duration::from_secs(8);
const RETRY_PERIOD: Duration = Duration::from_secs(1);
const TIMING: Timing = Timing {
    lease: LEASE_DURATION,
    renew_deadline: Duration::from_secs(6),
    retry_period: RETRY_PERIOD,
};
/// A dead replica's shards are taken once its lease has gone unrenewed for the lease duration
/// as each survivor sees it: up to one retry period after its last renew for the survivor to see
/// it, one more for the survivor's next look, and a second for the API calls.
const TAKEOVER_BOUND: Duration = LEASE_DURATION
    .saturating_add(RETRY_PERIOD)
    .saturating_add(RETRY_PERIOD)
    .saturating_add(Duration::from_secs(1));
/// A shard handed back is free at once and taken at the taker's next look: one retry period,
/// and four API calls of up to a second each on a busy apiserver (the release, the taker's
/// renews and list before it decides, its acquire).
const HANDBACK_GAP_BOUND: Duration = RETRY_PERIOD.saturating_add(Duration::from_secs(4));
/// How long the whole update may take.
const ALL_DONE: Duration = Duration::from_secs(300);

fn shard_lease(shard: usize) -> String {
    format!("{LEASE}-shard-{shard}")
}

fn unix_micros(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_micros()).ok())
        .unwrap_or_default()
}

async fn replicas_share_hand_over_and_rebalance_shards_without_overlap(
    env: &'static Env,
) -> anyhow::Result<()> {
    env.install_crds().await?;
    let kubeconfig = env.cluster().await?.admin_kubeconfig().to_path_buf();
    env.in_namespace("shards", |ns: TestNamespace| async move {
        let TestNamespace { name: ns, client } = ns;
        let mut fleet = Fleet {
            kubeconfig,
            ns: ns.clone(),
            replicas: Vec::new(),
            write_logs: Vec::new(),
        };
        for identity in ["sluice-a", "sluice-b", "sluice-c"] {
            fleet.start(identity)?;
        }
        let outcome = scenario(&client, &ns, &mut fleet).await;
        for replica in &mut fleet.replicas {
            let _ = replica.child.kill().await;
        }
        let logs = fleet
            .replicas
            .iter()
            .map(|r| r.log.display().to_string())
            .chain(fleet.write_logs.iter().map(|p| p.display().to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        outcome.with_context(|| format!("controller and write logs: {logs}"))
    })
    .await
}

/// The replicas started so far, each with a write log of its own (a restarted identity gets a
/// new one: a log is one process's).
struct Fleet {
    kubeconfig: PathBuf,
    ns: String,
    replicas: Vec<Replica>,
    write_logs: Vec<PathBuf>,
}

impl Fleet {
    fn start(&mut self, identity: &str) -> anyhow::Result<()> {
        let log = std::env::temp_dir().join(format!(
            "sluice-shards-{}-{identity}-{}.writes",
            self.ns,
            self.write_logs.len()
        ));
        let flags = [
            "--shards".to_owned(),
            SHARDS.to_string(),
            "--write-log".to_owned(),
            log.display().to_string(),
        ];
        let replica = Replica::start_with(identity, &self.kubeconfig, &self.ns, TIMING, &flags)?;
        self.replicas.push(replica);
        self.write_logs.push(log);
        Ok(())
    }

    fn position(&self, identity: &str) -> Option<usize> {
        self.replicas
            .iter()
            .position(|r| r.identity == identity && r.child.id().is_some())
    }
}

/// The holder of each shard's Lease (`None`: free or missing).
async fn holders(client: &Client, ns: &str) -> anyhow::Result<Vec<Option<String>>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let by_name: HashMap<String, Option<String>> = leases
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|l| {
            let holder = l
                .spec
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty());
            (l.metadata.name.unwrap_or_default(), holder)
        })
        .collect();
    Ok((0..usize::from(SHARDS))
        .map(|i| by_name.get(&shard_lease(i)).cloned().flatten())
        .collect())
}

/// Waits until every shard is held by one of `identities`, each holding `min..=max`.
async fn balanced(
    client: &Client,
    ns: &str,
    identities: &[&str],
    (min, max): (usize, usize),
) -> anyhow::Result<Vec<Option<String>>> {
    let what = format!("the shards held by {identities:?}, {min} to {max} each");
    sluice_tests::wait::until(&what, Duration::from_secs(60), || async {
        let holders = holders(client, ns).await?;
        let all_held = holders
            .iter()
            .all(|h| h.as_deref().is_some_and(|h| identities.contains(&h)));
        let even = identities.iter().all(|id| {
            let n = holders.iter().filter(|h| h.as_deref() == Some(id)).count();
            (min..=max).contains(&n)
        });
        Ok::<_, anyhow::Error>((all_held && even).then_some(holders))
    })
    .await
}

fn name(i: usize) -> String {
    format!("r-{i:03}")
}

fn steps() -> Vec<serde_json::Value> {
    std::iter::once(json!({"setWeight": 50}))
        .chain((0..PAUSES).map(|_| json!({"pause": {"duration": PAUSE}})))
        .collect()
}

/// Each rollout's (updatedRevision, currentStepIndex) while in flight, each change once.
type Histories = Arc<Mutex<BTreeMap<String, Vec<(String, i32)>>>>;

fn watch_histories(client: &Client, ns: &str) -> (Histories, tokio::task::JoinHandle<()>) {
    let histories: Histories = Arc::default();
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let mut stream = watcher(rollouts, watcher::Config::default()).boxed();
    let task = {
        let histories = histories.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) = event else {
                    continue;
                };
                let status = r.status.clone().unwrap_or_default();
                let Some(revision) = status.updated_revision.clone() else {
                    continue;
                };
                if status.stable_revision.as_ref() == Some(&revision) {
                    continue;
                }
                let entry = (revision, status.current_step_index.unwrap_or(0));
                let mut histories = histories.lock().unwrap_or_else(|p| p.into_inner());
                let history = histories
                    .entry(r.metadata.name.clone().unwrap_or_default())
                    .or_default();
                if history.last() != Some(&entry) {
                    history.push(entry);
                }
            }
        })
    };
    (histories, task)
}

/// The rollouts' statuses, by name.
async fn statuses(
    client: &Client,
    ns: &str,
) -> anyhow::Result<BTreeMap<String, rollout_controller::crd::RolloutStatus>> {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), ns);
    Ok(rollouts
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|r| {
            (
                r.metadata.name.unwrap_or_default(),
                r.status.unwrap_or_default(),
            )
        })
        .collect())
}

async fn scenario(client: &Client, ns: &str, fleet: &mut Fleet) -> anyhow::Result<()> {
    let started = SystemTime::now();
    let first = balanced(client, ns, &["sluice-a", "sluice-b", "sluice-c"], (2, 2)).await?;
    eprintln!("shards: three replicas, two shards each: {first:?}");

    let strategy = json!({"canary": {"maxSurge": 0, "maxUnavailable": 1, "steps": steps()}});
    futures::stream::iter(0..ROLLOUTS)
        .map(|i| {
            let manifest = rollout_manifest(&name(i), 1, "app:1", strategy.clone());
            async move { create_rollout(client, ns, manifest).await }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    let v1 = sluice_tests::wait::until("300 rollouts Healthy", ALL_DONE, || async {
        let statuses = statuses(client, ns).await?;
        let healthy = statuses
            .values()
            .filter(|s| s.phase == Phase::Healthy && s.stable_revision.is_some())
            .count();
        Ok::<_, anyhow::Error>((healthy == ROLLOUTS).then_some(statuses))
    })
    .await?;
    let stable: BTreeMap<String, Option<String>> = v1
        .into_iter()
        .map(|(name, s)| (name, s.stable_revision))
        .collect();

    let (histories, watch) = watch_histories(client, ns);
    let updated_at = Instant::now();
    futures::stream::iter(0..ROLLOUTS)
        .map(|i| async move { set_image(client, ns, &name(i), "app:2").await })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await?;
    sluice_tests::wait::until(
        "half the rollouts past their first step",
        ALL_DONE,
        || async {
            let moving = statuses(client, ns)
                .await?
                .values()
                .filter(|s| s.current_step_index >= Some(1) && s.phase != Phase::Healthy)
                .count();
            Ok::<_, anyhow::Error>((moving >= ROLLOUTS / 2).then_some(()))
        },
    )
    .await?;

    // Kill b mid-flight.
    let victim = fleet
        .position("sluice-b")
        .context("sluice-b is not running")?;
    let before = holders(client, ns).await?;
    let orphaned: Vec<usize> = (0..before.len())
        .filter(|i| before[*i].as_deref() == Some("sluice-b"))
        .collect();
    let killed_at = Instant::now();
    let killed_wall = SystemTime::now();
    fleet.replicas[victim].kill_9().await?;
    let mut taken: BTreeMap<usize, Duration> = BTreeMap::new();
    while taken.len() < orphaned.len() && killed_at.elapsed() < TAKEOVER_BOUND * 3 {
        let now = holders(client, ns).await?;
        for shard in &orphaned {
            if now[*shard].as_deref().is_some_and(|h| h != "sluice-b") {
                taken.entry(*shard).or_insert_with(|| killed_at.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "shards: killed sluice-b {:.1}s into the update, holding shards {orphaned:?}; taken \
         after (s): {:?} (lease {}s, bound {:.1}s)",
        (killed_at - updated_at).as_secs_f64(),
        taken
            .iter()
            .map(|(s, d)| (*s, (d.as_secs_f64() * 10.0).round() / 10.0))
            .collect::<Vec<_>>(),
        LEASE_DURATION.as_secs(),
        TAKEOVER_BOUND.as_secs_f64()
    );
    ensure!(
        taken.len() == orphaned.len(),
        "shards of the killed replica never taken: {taken:?} of {orphaned:?}"
    );
    let slowest = taken.values().max().copied().unwrap_or_default();
    ensure!(
        slowest <= TAKEOVER_BOUND,
        "a shard of the killed replica was taken after {slowest:?}, more than {TAKEOVER_BOUND:?}"
    );
    balanced(client, ns, &["sluice-a", "sluice-c"], (3, 3)).await?;

    // b comes back (a restarted pod keeps its name) and d joins: four replicas.
    let join_wall = SystemTime::now();
    let joined_at = Instant::now();
    fleet.start("sluice-b")?;
    fleet.start("sluice-d")?;
    let four = ["sluice-a", "sluice-b", "sluice-c", "sluice-d"];
    let mut unheld_samples = 0usize;
    let mut samples = 0usize;
    let spread = loop {
        let now = holders(client, ns).await?;
        samples += 1;
        unheld_samples += now.iter().filter(|h| h.is_none()).count();
        let all_held = now
            .iter()
            .all(|h| h.as_deref().is_some_and(|h| four.contains(&h)));
        let even = four.iter().all(|id| {
            let n = now.iter().filter(|h| h.as_deref() == Some(*id)).count();
            (1..=2).contains(&n)
        });
        if all_held && even {
            break now;
        }
        ensure!(
            joined_at.elapsed() < Duration::from_secs(60),
            "the shards did not spread over four replicas: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rebalanced = joined_at.elapsed();
    eprintln!(
        "shards: sluice-b back and sluice-d joined; spread over four in {:.1}s: {spread:?}; \
         {unheld_samples} unheld shard(s) in {samples} samples of all six",
        rebalanced.as_secs_f64()
    );

    let done = sluice_tests::wait::until("every rollout Healthy on app:2", ALL_DONE, || async {
        let statuses = statuses(client, ns).await?;
        let done = statuses
            .iter()
            .filter(|(name, s)| {
                s.phase == Phase::Healthy
                    && s.stable_revision.is_some()
                    && stable
                        .get(*name)
                        .is_some_and(|old| *old != s.stable_revision)
            })
            .count();
        Ok::<_, anyhow::Error>((done == ROLLOUTS).then_some(()))
    })
    .await;
    let all_done = updated_at.elapsed();
    watch.abort();
    done?;
    eprintln!(
        "shards: all {ROLLOUTS} rollouts Healthy on app:2 {:.1}s after the update",
        all_done.as_secs_f64()
    );
    // Still rebalanced, and each replica's gauge says what the Leases say.
    let end = holders(client, ns).await?;
    for identity in four {
        let replica = fleet.position(identity).context("a replica exited")?;
        let held = end
            .iter()
            .filter(|h| h.as_deref() == Some(identity))
            .count();
        let gauge = fleet.replicas[replica].metric("sluice_shards_held").await?;
        ensure!(
            gauge == held as f64,
            "{identity} holds {held} shard Leases, its sluice_shards_held says {gauge}"
        );
    }

    check_steps(&histories, 1 + PAUSES)?;
    let witness = WriteLogs::read(&fleet.write_logs)?;
    witness.check(ns)?;
    let gaps = witness.gaps(unix_micros(started));
    let (join_us, killed_us) = (unix_micros(join_wall), unix_micros(killed_wall));
    let (mut kill_gaps, mut join_gaps) = (Vec::new(), Vec::new());
    for (shard, from, to) in &gaps {
        let gap = Duration::from_micros(u64::try_from(to - from).unwrap_or_default());
        if *from >= join_us {
            join_gaps.push((shard.clone(), gap));
        } else if *from >= killed_us {
            kill_gaps.push((shard.clone(), gap));
        } else {
            ensure!(
                gap <= HANDBACK_GAP_BOUND,
                "shard {shard} unheld for {gap:?} before the kill"
            );
        }
    }
    let secs = |g: &[(String, Duration)]| -> Vec<(String, f64)> {
        g.iter()
            .map(|(s, d)| (s.clone(), (d.as_secs_f64() * 100.0).round() / 100.0))
            .collect()
    };
    eprintln!(
        "shards: write log: {} writes by {} processes, none outside its lease or overlapping \
         another's; unheld after the kill (s): {:?}; unheld while rebalancing (s): {:?} (bound \
         {:.1}s)",
        witness.writes.len(),
        fleet.write_logs.len(),
        secs(&kill_gaps),
        secs(&join_gaps),
        HANDBACK_GAP_BOUND.as_secs_f64()
    );
    for (shard, gap) in &kill_gaps {
        ensure!(
            *gap <= TAKEOVER_BOUND,
            "shard {shard} unheld for {gap:?} after the kill"
        );
    }
    for (shard, gap) in &join_gaps {
        ensure!(
            *gap <= HANDBACK_GAP_BOUND,
            "shard {shard} unheld for {gap:?} while rebalancing, more than {HANDBACK_GAP_BOUND:?}"
        );
    }
    ensure!(
        !join_gaps.is_empty(),
        "no shard changed hands when two replicas joined"
    );
    Ok(())
}

/// Every rollout's in-flight history: one revision, the step index never going back or jumping,
/// and every step from 1 to the last seen.
fn check_steps(histories: &Histories, step_count: usize) -> anyhow::Result<()> {
    let histories = histories.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ensure!(
        histories.len() == ROLLOUTS,
        "watched {} rollouts in flight, want {ROLLOUTS}",
        histories.len()
    );
    for (name, history) in &histories {
        let revisions: std::collections::BTreeSet<&String> =
            history.iter().map(|(r, _)| r).collect();
        ensure!(
            revisions.len() == 1,
            "{name}: several revisions in flight: {history:?}"
        );
        let backwards = history.windows(2).any(|w| w[1].1 < w[0].1);
        ensure!(!backwards, "{name}: a step repeated: {history:?}");
        let skipped = history.windows(2).any(|w| w[1].1 > w[0].1 + 1);
        ensure!(!skipped, "{name}: a step skipped: {history:?}");
        for index in 1..i32::try_from(step_count)? {
            ensure!(
                history.iter().any(|(_, step)| *step == index),
                "{name}: step index {index} never seen: {history:?}"
            );
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Line {
    Write {
        lease: String,
        method: String,
        path: String,
        sent_us: i64,
        answered_us: i64,
    },
    Hold {
        lease: String,
        from_us: i64,
        until_us: i64,
    },
    Stop {
        lease: String,
        at_us: i64,
    },
}

struct Write {
    process: usize,
    lease: String,
    method: String,
    path: String,
    sent: i64,
    answered: i64,
}

/// The write logs of every process: when each could write each shard, and what it wrote.
struct WriteLogs {
    /// (process, lease) → the intervals `[from, until)` its lease let it write, in order.
    intervals: BTreeMap<(usize, String), Vec<(i64, i64)>>,
    writes: Vec<Write>,
}

impl WriteLogs {
    fn read(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let mut intervals: BTreeMap<(usize, String), Vec<(i64, i64)>> = BTreeMap::new();
        let mut writes = Vec::new();
        for (process, path) in paths.iter().enumerate() {
            let mut open: HashMap<String, (i64, i64)> = HashMap::new();
            for (n, line) in read_lines(path)?.iter().enumerate() {
                let line: Line = serde_json::from_str(line)
                    .with_context(|| format!("{}:{}", path.display(), n + 1))?;
                match line {
                    Line::Hold {
                        lease,
                        from_us,
                        until_us,
                    } => match open.get_mut(&lease) {
                        // A renew before the deadline extends the interval.
                        Some(interval) if from_us <= interval.1 => {
                            interval.1 = interval.1.max(until_us);
                        }
                        _ => {
                            if let Some(closed) = open.insert(lease.clone(), (from_us, until_us)) {
                                intervals.entry((process, lease)).or_default().push(closed);
                            }
                        }
                    },
                    Line::Stop { lease, at_us } => {
                        if let Some((from, until)) = open.remove(&lease) {
                            let closed = (from, until.min(at_us));
                            intervals.entry((process, lease)).or_default().push(closed);
                        }
                    }
                    Line::Write {
                        lease,
                        method,
                        path,
                        sent_us,
                        answered_us,
                    } => writes.push(Write {
                        process,
                        lease,
                        method,
                        path,
                        sent: sent_us,
                        answered: answered_us,
                    }),
                }
            }
            for (lease, interval) in open {
                intervals
                    .entry((process, lease))
                    .or_default()
                    .push(interval);
            }
        }
        Ok(Self { intervals, writes })
    }

    /// No two processes could write a shard at once; every write was sent inside its own
    /// process's interval, answered before any other's began, and fenced on its rollout's
    /// shard.
    fn check(&self, ns: &str) -> anyhow::Result<()> {
        let overlap = |a: (i64, i64), b: (i64, i64)| a.0 < b.1 && b.0 < a.1;
        for ((p, lease), mine) in &self.intervals {
            for ((q, other_lease), theirs) in &self.intervals {
                if p >= q || lease != other_lease {
                    continue;
                }
                for a in mine {
                    for b in theirs {
                        ensure!(
                            !overlap(*a, *b),
                            "processes {p} and {q} could both write {lease}: {a:?} and {b:?}"
                        );
                    }
                }
            }
        }
        let count = ShardCount::new(std::num::NonZeroU16::new(SHARDS).context("no shards")?);
        let mut wrong_shard = Vec::new();
        for w in &self.writes {
            let own = self
                .intervals
                .get(&(w.process, w.lease.clone()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            ensure!(
                own.iter()
                    .any(|(from, until)| *from <= w.sent && w.sent < *until),
                "process {} sent {} {} outside its hold of {}",
                w.process,
                w.method,
                w.path,
                w.lease
            );
            for ((q, lease), theirs) in &self.intervals {
                if *q == w.process || *lease != w.lease {
                    continue;
                }
                for b in theirs {
                    ensure!(
                        !overlap((w.sent, w.answered.max(w.sent + 1)), *b),
                        "process {}'s {} {} (sent {}, answered {}) overlaps process {q}'s hold \
                         of {lease}: {b:?}",
                        w.process,
                        w.method,
                        w.path,
                        w.sent,
                        w.answered
                    );
                }
            }
            if let Some(rollout) = rollout_written(&w.path) {
                let want = shard_lease(hashed(ns, &rollout, count).index());
                if want != w.lease {
                    wrong_shard.push(format!("{} {} through {}", w.method, w.path, w.lease));
                }
            }
        }
        ensure!(
            wrong_shard.is_empty(),
            "writes fenced on another shard than their rollout's: {wrong_shard:?}"
        );
        Ok(())
    }

    /// (lease, from, to) of every interval in which no process could write a shard, from the
    /// first hold of that shard on, after `since`.
    fn gaps(&self, since: i64) -> Vec<(String, i64, i64)> {
        let mut by_lease: BTreeMap<&String, Vec<(i64, i64)>> = BTreeMap::new();
        for ((_, lease), intervals) in &self.intervals {
            by_lease.entry(lease).or_default().extend(intervals);
        }
        let mut gaps = Vec::new();
        for (lease, mut intervals) in by_lease {
            intervals.sort_unstable();
            let mut covered = None::<i64>;
            for (from, until) in intervals {
                match covered {
                    Some(end) if from > end && end >= since => {
                        gaps.push((lease.clone(), end, from));
                        covered = Some(until);
                    }
                    Some(end) => covered = Some(end.max(until)),
                    None => covered = Some(until),
                }
            }
        }
        gaps
    }
}

/// The rollout a write is to: the Rollout itself, or one of its ReplicaSets
/// (`<rollout>-<pod-template-hash>`).
fn rollout_written(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let after = |kind: &str| {
        segments
            .iter()
            .position(|s| *s == kind)
            .and_then(|i| segments.get(i + 1))
    };
    if let Some(name) = after("rollouts") {
        return Some((*name).to_owned());
    }
    after("replicasets").and_then(|rs| rs.rsplit_once('-').map(|(r, _)| r.to_owned()))
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}
