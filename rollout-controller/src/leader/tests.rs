use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

fn timing() -> Timing {
    Timing::default()
}

fn seen(holder: Option<&str>, observed_at: Instant) -> Seen {
    Seen {
        record: Record {
            holder: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            ..Record::default()
        },
        observed_at,
    }
}

#[test]
fn lease_actions() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    // What, the lease as seen, until when we lead, now, the action.
    type Case = (
        &'static str,
        Option<Seen>,
        Option<Instant>,
        Instant,
        LeaseAction,
    );
    let cases: Vec<Case> = vec![
        ("no lease: create it", None, None, t0, LeaseAction::Create),
        (
            "free lease (released): acquire",
            Some(seen(None, t0)),
            None,
            t0,
            LeaseAction::Acquire,
        ),
        (
            "ours and fresh: renew",
            Some(seen(Some("me"), t0)),
            Some(t0 + s(10)),
            t0 + s(2),
            LeaseAction::Renew,
        ),
        (
            "ours, renews failing but within the deadline: keep renewing",
            Some(seen(Some("me"), t0)),
            Some(t0 + s(10)),
            t0 + s(9),
            LeaseAction::Renew,
        ),
        (
            "ours, renews failing up to the deadline: step down",
            Some(seen(Some("me"), t0)),
            Some(t0 + s(10)),
            t0 + s(10),
            LeaseAction::StepDown(StepDown::RenewDeadlinePassed),
        ),
        (
            "ours, past the deadline though the lease still looks ours: step down",
            Some(seen(Some("me"), t0 + s(11))),
            Some(t0 + s(10)),
            t0 + s(11),
            LeaseAction::StepDown(StepDown::RenewDeadlinePassed),
        ),
        (
            "we lead but the lease names another: step down",
            Some(seen(Some("other"), t0)),
            Some(t0 + s(10)),
            t0 + s(1),
            LeaseAction::StepDown(StepDown::TakenOver),
        ),
        (
            "we lead but the lease was deleted: step down",
            None,
            Some(t0 + s(10)),
            t0 + s(1),
            LeaseAction::StepDown(StepDown::TakenOver),
        ),
        (
            "someone else's and fresh: stand by",
            Some(seen(Some("other"), t0)),
            None,
            t0 + s(14),
            LeaseAction::StandBy,
        ),
        (
            "someone else's and expired: acquire",
            Some(seen(Some("other"), t0)),
            None,
            t0 + s(15),
            LeaseAction::Acquire,
        ),
        (
            "ours from before a restart (same pod name): take it back",
            Some(seen(Some("me"), t0)),
            None,
            t0,
            LeaseAction::Acquire,
        ),
    ];
    for (what, lease, leading_until, now, want) in cases {
        assert_eq!(
            decide(lease.as_ref(), "me", leading_until, now, &timing()),
            want,
            "{what}"
        );
    }
}

#[test]
fn the_lease_duration_is_the_records_own() {
    let t0 = Instant::now();
    let mut lease = seen(Some("other"), t0);
    lease.record.lease_duration_seconds = Some(60);
    let at = |secs| t0 + Duration::from_secs(secs);
    assert_eq!(
        decide(Some(&lease), "me", None, at(30), &timing()),
        LeaseAction::StandBy
    );
    assert_eq!(
        decide(Some(&lease), "me", None, at(60), &timing()),
        LeaseAction::Acquire
    );
    // Without one, ours.
    lease.record.lease_duration_seconds = None;
    assert_eq!(
        decide(Some(&lease), "me", None, at(15), &timing()),
        LeaseAction::Acquire
    );
}

fn record(holder: &str, renew: Timestamp) -> Record {
    Record {
        holder: Some(holder.into()),
        lease_duration_seconds: Some(15),
        renew_time: Some(renew),
        ..Record::default()
    }
}

/// Reads of the Lease every 2 s from `t0` on, each with the renewTime the holder wrote, and
/// the action after each.
fn actions_over(reads: &[Timestamp], t0: Instant) -> Vec<LeaseAction> {
    let mut last: Option<Seen> = None;
    reads
        .iter()
        .enumerate()
        .map(|(i, renew)| {
            let now = t0 + Duration::from_secs(2 * i as u64);
            let seen = observe(last.as_ref(), record("other", *renew), now);
            let action = decide(Some(&seen), "me", None, now, &timing());
            last = Some(seen);
            action
        })
        .collect()
}

#[test]
fn clock_skew_neither_shortens_nor_stretches_the_wait() {
    let t0 = Instant::now();
    let wall = Timestamp::now();
    let hour = k8s_openapi::jiff::SignedDuration::from_hours(1);
    let (ahead, behind) = (wall + hour, wall - hour);

    // The holder's clock is an hour ahead and it died after its first renew: the record
    // never changes again, so it expires 15 s after we first saw it, not in an hour.
    let actions = actions_over(&[ahead; 9], t0);
    assert_eq!(actions[..8], [LeaseAction::StandBy; 8]);
    assert_eq!(actions[8], LeaseAction::Acquire, "at 16 s");

    // Its clock is an hour behind, so every renewTime looks long expired, but it renews
    // every 2 s: it is alive, and we stand by however long we look.
    let renews: Vec<Timestamp> = (0..20)
        .map(|i| behind + k8s_openapi::jiff::SignedDuration::from_secs(2 * i))
        .collect();
    assert!(
        actions_over(&renews, t0)
            .iter()
            .all(|d| *d == LeaseAction::StandBy)
    );
}

#[test]
fn observing_keeps_the_first_sight_of_an_unchanged_record() {
    let t0 = Instant::now();
    let later = t0 + Duration::from_secs(5);
    let first = observe(None, record("other", Timestamp::UNIX_EPOCH), t0);
    let same = observe(Some(&first), record("other", Timestamp::UNIX_EPOCH), later);
    assert_eq!(same.observed_at, t0);
    let renewed = observe(Some(&same), record("other", Timestamp::now()), later);
    assert_eq!(renewed.observed_at, later);
    let released = Record::of(&Lease {
        spec: Some(LeaseSpec {
            holder_identity: Some(String::new()),
            ..LeaseSpec::default()
        }),
        ..Lease::default()
    });
    assert_eq!(released.holder, None, "an empty holder is no holder");
}

#[test]
fn timing_is_checked() {
    let s = Duration::from_secs;
    assert!(Timing::new(s(15), s(10), s(2)).is_ok());
    assert!(Timing::new(s(4), s(3), s(1)).is_ok());
    assert!(Timing::new(s(10), s(10), s(2)).is_err(), "deadline = lease");
    assert!(Timing::new(s(10), s(12), s(2)).is_err(), "deadline > lease");
    assert!(Timing::new(s(15), s(2), s(2)).is_err(), "retry = deadline");
    assert!(Timing::new(s(15), s(10), s(0)).is_err(), "no retry period");
    assert!(
        Timing::new(
            Duration::from_millis(800),
            Duration::from_millis(500),
            Duration::from_millis(100)
        )
        .is_err(),
        "under a second"
    );
    let odd = Timing::new(Duration::from_millis(4500), s(3), s(1));
    assert_eq!(odd.map(|t| t.lease_seconds()).ok(), Some(5), "rounded up");
}

#[test]
fn the_guard_follows_the_deadline() {
    let t0 = Instant::now();
    let leadership = Leadership::elected("sluice-controller", None);
    assert!(!leadership.may_write(t0));
    leadership.lead_until(t0 + Duration::from_secs(10));
    assert!(leadership.may_write(t0 + Duration::from_secs(9)));
    assert!(
        !leadership.may_write(t0 + Duration::from_secs(10)),
        "not at the deadline, even before the elector steps down"
    );
    leadership.stop();
    assert!(!leadership.may_write(t0));
    assert!(Leadership::always().may_write(t0 + Duration::from_secs(3600)));
}

/// Answers every request 200, counting them; a write is held until `release` is notified, so
/// that a test can see it in flight.
#[derive(Clone, Default)]
struct Cluster {
    answered: Arc<AtomicUsize>,
    release: Arc<tokio::sync::Notify>,
    hold_writes: bool,
}

impl tower_service::Service<http::Request<kube::client::Body>> for Cluster {
    type Response = http::Response<kube::client::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let cluster = self.clone();
        Box::pin(async move {
            if cluster.hold_writes && request.method() != http::Method::GET {
                cluster.release.notified().await;
            }
            cluster.answered.fetch_add(1, Ordering::SeqCst);
            Ok(http::Response::new(kube::client::Body::from(Vec::new())))
        })
    }
}

fn request(method: http::Method) -> http::Request<kube::client::Body> {
    let mut request = http::Request::new(kube::client::Body::from(Vec::new()));
    *request.method_mut() = method;
    *request.uri_mut() = http::Uri::from_static("/api/v1/namespaces/ns/configmaps");
    request
}

#[tokio::test]
async fn the_gate_lets_writes_through_only_while_the_lease_does() {
    let path = std::env::temp_dir().join(format!("sluice-gate-test-{}.log", std::process::id()));
    let log = Arc::new(WriteLog::create(&path, "me").unwrap());
    let cluster = Cluster::default();
    let leadership = Arc::new(Leadership::elected("lease-a", Some(log)));
    let gated = leader_only_client(&Client::new(cluster.clone(), "ns"), leadership.clone());
    let refused = gated.send(request(http::Method::POST)).await.unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("does not hold the lease lease-a"),
        "{refused}"
    );
    assert!(
        gated.send(request(http::Method::GET)).await.is_ok(),
        "reads pass"
    );
    leadership.lead_until(Instant::now() + Duration::from_secs(10));
    assert!(gated.send(request(http::Method::PATCH)).await.is_ok());
    leadership.stop();
    assert!(gated.send(request(http::Method::DELETE)).await.is_err());
    assert_eq!(
        cluster.answered.load(Ordering::SeqCst),
        2,
        "one read, one write"
    );

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let _ = std::fs::remove_file(&path);
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["hold", "write", "stop"],
        "refused writes are not logged"
    );
    let (hold, write, stop) = (&lines[0], &lines[1], &lines[2]);
    assert_eq!(write["method"], "PATCH");
    assert_eq!(write["lease"], "lease-a");
    assert_eq!(write["replica"], "me");
    let at = |v: &serde_json::Value, k: &str| v[k].as_i64().unwrap();
    assert!(at(hold, "from_us") <= at(write, "sent_us"));
    assert!(at(write, "sent_us") < at(hold, "until_us"));
    assert!(at(write, "answered_us") <= at(stop, "at_us"));
}

#[tokio::test]
async fn a_lease_is_drained_before_it_is_handed_back() {
    let cluster = Cluster {
        hold_writes: true,
        ..Cluster::default()
    };
    let leadership = Arc::new(Leadership::elected("lease-a", None));
    let gated = leader_only_client(&Client::new(cluster.clone(), "ns"), leadership.clone());
    let until = Instant::now() + Duration::from_secs(10);
    leadership.lead_until(until);
    let write = tokio::spawn({
        let gated = gated.clone();
        async move { gated.send(request(http::Method::POST)).await.is_ok() }
    });
    while leadership.in_flight.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    leadership.stop();
    // Still unanswered: not drained by a deadline already passed.
    assert!(!leadership.drained(Instant::now()).await);
    cluster.release.notify_one();
    assert!(leadership.drained(until).await);
    assert!(
        write.await.unwrap(),
        "a write that passed the gate completes"
    );
    assert!(gated.send(request(http::Method::POST)).await.is_err());
}
