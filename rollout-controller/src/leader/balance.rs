//! The fair share of shards, decided alike by every replica from the same view of the Leases:
//! the live members (sorted by identity) each get `shards / members`, the first
//! `shards % members` one more, so the quotas sum to the shard count. A replica under its quota
//! takes free shards; one over it hands the excess back, but only as much as others are short
//! of, so that nothing is released that nobody wants. As the quotas sum to the shard count,
//! there are never more free shards than the members together are short of, so every free
//! shard has a taker.

/// One shard's lease as this replica sees it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holding<'a> {
    /// This replica holds it and may write.
    Mine,
    /// Another replica holds a live lease.
    Theirs(&'a str),
    /// Nobody holds a live lease: missing, released, expired, or ours from before a restart.
    Free,
}

/// Which shards to take and which to hand back, by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rebalance {
    pub(crate) take: Vec<usize>,
    pub(crate) release: Vec<usize>,
}

/// The quota of the member ranked `rank` (from 0) of `members`.
pub(crate) fn quota(shards: usize, members: usize, rank: usize) -> usize {
    if members == 0 {
        return shards;
    }
    shards / members + usize::from(rank < shards % members)
}

/// What `me` does, given the live members (any order, with or without `me`) and each shard's
/// holding.
pub(crate) fn rebalance(me: &str, members: &[&str], shards: &[Holding<'_>]) -> Rebalance {
    let mut members: Vec<&str> = members.to_vec();
    members.push(me);
    members.sort_unstable();
    members.dedup();
    let count = shards.len();
    let rank = members.iter().position(|m| *m == me).unwrap_or_default();
    let mine: Vec<usize> = (0..count).filter(|i| shards[*i] == Holding::Mine).collect();
    let my_quota = quota(count, members.len(), rank);
    // What the others are short of, from the shards each holds.
    let others_short: usize = members
        .iter()
        .enumerate()
        .filter(|(_, m)| **m != me)
        .map(|(r, m)| {
            let held = shards
                .iter()
                .filter(|h| matches!(h, Holding::Theirs(holder) if holder == m))
                .count();
            quota(count, members.len(), r).saturating_sub(held)
        })
        .sum();

    let mut plan = Rebalance::default();
    if mine.len() > my_quota {
        let excess = (mine.len() - my_quota).min(others_short);
        plan.release = mine[mine.len() - excess..].to_vec();
        return plan;
    }
    // Free shards from an offset that depends on the rank, so that two replicas short at once
    // (after a third died) try different ones first instead of racing for the same.
    let offset = rank * count / members.len();
    let mut free: Vec<usize> = (0..count)
        .map(|i| (i + offset) % count.max(1))
        .filter(|i| shards[*i] == Holding::Free)
        .collect();
    free.truncate(my_quota - mine.len());
    plan.take = free;
    plan
}

#[cfg(test)]
mod tests {
    use super::Holding::{Free, Mine, Theirs};
    use super::*;

    #[test]
    fn quotas_sum_to_the_shard_count() {
        for shards in 1..20 {
            for members in 1..8 {
                let total: usize = (0..members).map(|r| quota(shards, members, r)).sum();
                assert_eq!(total, shards, "{shards} shards, {members} members");
                for r in 0..members {
                    let q = quota(shards, members, r);
                    assert!(q == shards / members || q == shards.div_ceil(members));
                }
            }
        }
        assert_eq!(quota(6, 0, 0), 6);
    }

    #[test]
    fn a_first_start_takes_a_fair_share_and_leaves_the_rest() {
        let free = [Free; 6];
        // Three members, none holding anything: each takes two, from its own offset.
        assert_eq!(rebalance("a", &["a", "b", "c"], &free).take, vec![0, 1]);
        assert_eq!(rebalance("b", &["a", "b", "c"], &free).take, vec![2, 3]);
        assert_eq!(rebalance("c", &["a", "b", "c"], &free).take, vec![4, 5]);
        // Alone: everything.
        assert_eq!(rebalance("a", &[], &free).take, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_shards_of_a_dead_replica_are_split_by_the_survivors() {
        // b died; its membership lapsed with its leases.
        let shards = [Mine, Mine, Free, Free, Theirs("c"), Theirs("c")];
        let a = rebalance("a", &["a", "c"], &shards);
        assert_eq!(a.take, vec![2]);
        let seen_by_c = [Theirs("a"), Theirs("a"), Free, Free, Mine, Mine];
        let c = rebalance("c", &["a", "c"], &seen_by_c);
        assert_eq!(c.take, vec![3], "not the one a goes for");
        assert!(a.release.is_empty() && c.release.is_empty());
    }

    #[test]
    fn free_shards_are_left_to_those_short_of_them() {
        // a still counts b as a member, so a is at its quota and b is short of two: a leaves b's
        // free shards to b. (A dead replica's membership lapses with its shard leases, both
        // renewed in the same round, so the survivors see both go at once.)
        let shards = [Mine, Mine, Free, Free, Theirs("c"), Theirs("c")];
        assert!(rebalance("a", &["b", "c"], &shards).take.is_empty());
        // Once b has lapsed, a's quota is three.
        assert_eq!(rebalance("a", &["c"], &shards).take, vec![2]);
        // Short of two with only one free: that one.
        let shards = [
            Mine,
            Free,
            Theirs("c"),
            Theirs("c"),
            Theirs("c"),
            Theirs("c"),
        ];
        assert_eq!(rebalance("a", &["c"], &shards).take, vec![1]);
    }

    #[test]
    fn a_newcomer_gets_its_share_from_those_over_theirs() {
        // a, b, c hold two each; d joins. Quotas: a 2, b 2, c 1, d 1.
        let view_of = |me: &str| -> Vec<Holding<'static>> {
            ["a", "a", "b", "b", "c", "c"]
                .iter()
                .map(|h| if *h == me { Mine } else { Theirs(h) })
                .collect()
        };
        let members = ["a", "b", "c", "d"];
        assert_eq!(
            rebalance("a", &members, &view_of("a")),
            Rebalance::default()
        );
        assert_eq!(
            rebalance("b", &members, &view_of("b")),
            Rebalance::default()
        );
        assert_eq!(
            rebalance("c", &members, &view_of("c")),
            Rebalance {
                take: vec![],
                release: vec![5]
            }
        );
        assert_eq!(
            rebalance("d", &members, &view_of("d")),
            Rebalance::default()
        );
        // Next round c's last shard is free, and d takes it.
        let after = [
            Theirs("a"),
            Theirs("a"),
            Theirs("b"),
            Theirs("b"),
            Theirs("c"),
            Free,
        ];
        assert_eq!(rebalance("d", &members, &after).take, vec![5]);
        let seen_by_c = after.map(|h| if h == Theirs("c") { Mine } else { h });
        assert!(rebalance("c", &members, &seen_by_c).take.is_empty());
        // A newcomer that sorts first shifts every quota: b and c each give one back.
        let members = ["0", "a", "b", "c"];
        assert_eq!(
            rebalance("a", &members, &view_of("a")),
            Rebalance::default()
        );
        assert_eq!(rebalance("b", &members, &view_of("b")).release, vec![3]);
        assert_eq!(rebalance("c", &members, &view_of("c")).release, vec![5]);
    }

    #[test]
    fn only_what_others_are_short_of_is_released() {
        // a holds four of six with b and c members: quotas two each. b holds two, c none: a
        // gives back two.
        let shards = [Mine, Mine, Mine, Mine, Theirs("b"), Theirs("b")];
        assert_eq!(rebalance("a", &["b", "c"], &shards).release, vec![2, 3]);
        // A member the others do not see yet (its lease not read yet): a holds three, b three,
        // quotas three each: nobody is short, nothing is released.
        let shards = [Mine, Mine, Mine, Theirs("b"), Theirs("b"), Theirs("b")];
        assert_eq!(rebalance("a", &["b"], &shards), Rebalance::default());
        // Once c is seen, a and b each give one back, and c takes both.
        assert_eq!(rebalance("a", &["b", "c"], &shards).release, vec![2]);
        // An expired member's live lease (`x`) does not count as anyone's shortfall.
        let shards = [Mine, Mine, Mine, Mine, Theirs("x"), Theirs("b")];
        assert_eq!(rebalance("a", &["b"], &shards).release, vec![3]);
    }
}
