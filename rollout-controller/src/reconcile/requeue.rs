//! When a rollout is looked at again. A mass update starts thousands of rollouts in the same
//! second, and their timers (a pause, a scale-down delay, the resync) would end in the same
//! second too, every time: so each wait is made longer by up to a tenth, by an amount fixed per
//! rollout (from its uid), which spreads them without making any one of them unpredictable.

use std::time::Duration;

use crate::hash::fnv1a;

/// How often a quiet rollout is looked at again, in case a watch event was missed.
pub(super) const RESYNC: Duration = Duration::from_secs(300);
/// How often a rollout whose router carries canary traffic is looked at again.
pub(super) const ROUTER_RESYNC: Duration = Duration::from_secs(10);
/// The soonest a rollout is looked at again after a reconcile that succeeded.
const SOONEST: Duration = Duration::from_millis(100);

/// The wait after a successful reconcile: the soonest of what the plan waits for and of
/// `held` (a status write held back), at most `resync`, spread for `uid`.
pub(super) fn after_success(
    waits: impl IntoIterator<Item = Option<Duration>>,
    resync: Duration,
    uid: &str,
) -> Duration {
    let wait = waits.into_iter().flatten().min().unwrap_or(resync);
    spread(wait.clamp(SOONEST, resync), uid)
}

/// How long after its `failures`-th failure in a row (from 1) a reconcile is tried again: 0.5 s,
/// doubling, at most a minute, spread for `uid`. A ReplicaSet the apiserver refuses fails every
/// time, and must not be asked for again and again.
pub(super) fn after_failure(failures: u32, uid: &str) -> Duration {
    let doublings = failures.clamp(1, 8) - 1;
    let wait = Duration::from_millis(500 * (1 << doublings)).min(Duration::from_secs(60));
    spread(wait, uid)
}

/// `wait`, longer by up to a tenth: by the same fraction for the same `uid` each time.
fn spread(wait: Duration, uid: &str) -> Duration {
    let thousandths = u32::try_from(fnv1a(uid.as_bytes()) % 100).unwrap_or(0);
    wait + wait * thousandths / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_reconciles_back_off_doubling_to_a_minute() {
        let waits: Vec<u64> = (1..=9)
            .map(|n| after_failure(n, "").as_millis() as u64)
            .collect();
        let base = [
            500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000,
        ];
        for (wait, base) in waits.iter().zip(base) {
            assert!((base..=base + base / 10).contains(wait), "{waits:?}");
        }
    }

    #[test]
    fn waits_are_spread_by_up_to_a_tenth_and_the_same_for_a_rollout_each_time() {
        let uids: Vec<String> = (0..200).map(|i| format!("uid-{i}")).collect();
        let waits: Vec<Duration> = uids
            .iter()
            .map(|uid| spread(Duration::from_secs(5), uid))
            .collect();
        assert!(
            waits
                .iter()
                .all(|w| { (Duration::from_secs(5)..Duration::from_millis(5_500)).contains(w) })
        );
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 50, "{} distinct waits", distinct.len());
        assert_eq!(waits[7], spread(Duration::from_secs(5), &uids[7]));
    }

    #[test]
    fn the_soonest_wait_wins_within_the_resync() {
        let uid = "u";
        let resync = Duration::from_secs(300);
        let held = Some(Duration::from_secs(4));
        let pause = Some(Duration::from_secs(9));
        assert_eq!(
            after_success([pause, held], resync, uid),
            spread(Duration::from_secs(4), uid)
        );
        assert_eq!(
            after_success([None, None], resync, uid),
            spread(resync, uid)
        );
        assert_eq!(
            after_success([Some(Duration::from_secs(900))], resync, uid),
            spread(resync, uid)
        );
        assert_eq!(
            after_success([Some(Duration::ZERO)], resync, uid),
            spread(SOONEST, uid)
        );
    }
}
