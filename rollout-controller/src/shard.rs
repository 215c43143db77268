//! Which shard a rollout belongs to: `fnv1a("<namespace>/<name>") mod N`, or the shard its
//! `sluice.dev/shard` label names. Every replica must compute the same answer from the same
//! object, so the hash is a fixed one, never std's randomly seeded hasher. An AnalysisRun belongs
//! to its rollout's shard, so that one replica writes both.

use std::fmt;
use std::num::NonZeroU16;

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::Rollout;
use crate::crd::analysis::{AnalysisRun, ROLLOUT_LABEL};
use crate::hash::fnv1a;

/// Pins a rollout to a shard, overriding its hash: the value is the shard's index, from 0.
pub const SHARD_LABEL: &str = "sluice.dev/shard";

/// A shard's index, below its [`ShardCount`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(u16);

impl Shard {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How many shards the rollouts are spread over (`--shards`); 1 is one controller for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardCount(NonZeroU16);

impl ShardCount {
    pub const ONE: Self = Self(NonZeroU16::MIN);

    pub fn new(count: NonZeroU16) -> Self {
        Self(count)
    }

    pub fn get(self) -> usize {
        usize::from(self.0.get())
    }

    pub fn all(self) -> impl Iterator<Item = Shard> {
        (0..self.0.get()).map(Shard)
    }
}

/// Where a rollout goes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Hashed(Shard),
    Labelled(Shard),
    /// The label names no shard of this controller's count: the rollout stays on its hashed
    /// shard, whose holder reports the label on it.
    Invalid {
        label: String,
        hashed: Shard,
    },
}

impl Assignment {
    pub fn shard(&self) -> Shard {
        match self {
            Assignment::Hashed(shard) | Assignment::Labelled(shard) => *shard,
            Assignment::Invalid { hashed, .. } => *hashed,
        }
    }
}

pub fn hashed(namespace: &str, name: &str, count: ShardCount) -> Shard {
    let hash = fnv1a(format!("{namespace}/{name}").as_bytes());
    let index = hash % u64::from(count.0.get());
    // Below a u16 count, so it fits.
    Shard(u16::try_from(index).unwrap_or_default())
}

pub fn assign(namespace: &str, name: &str, label: Option<&str>, count: ShardCount) -> Assignment {
    let hashed = hashed(namespace, name, count);
    match label {
        None => Assignment::Hashed(hashed),
        Some(label) => match label.trim().parse::<u16>() {
            Ok(index) if index < count.0.get() => Assignment::Labelled(Shard(index)),
            _ => Assignment::Invalid {
                label: label.to_owned(),
                hashed,
            },
        },
    }
}

pub fn of_rollout(rollout: &Rollout, count: ShardCount) -> Assignment {
    assign(
        &rollout.namespace().unwrap_or_default(),
        &rollout.name_any(),
        rollout.labels().get(SHARD_LABEL).map(String::as_str),
        count,
    )
}

/// The shard of the run's rollout as `rollouts` holds it; a rollout not (or no longer) there is
/// placed by its name, and a run without a rollout by its own.
pub(crate) fn of_run(run: &AnalysisRun, rollouts: &Store<Rollout>, count: ShardCount) -> Shard {
    let namespace = run.namespace().unwrap_or_default();
    let Some(rollout) = run.labels().get(ROLLOUT_LABEL) else {
        return hashed(&namespace, &run.name_any(), count);
    };
    match rollouts.get(&ObjectRef::new(rollout).within(&namespace)) {
        Some(rollout) => of_rollout(&rollout, count).shard(),
        None => hashed(&namespace, rollout, count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: u16) -> ShardCount {
        ShardCount::new(NonZeroU16::new(n).unwrap())
    }

    #[test]
    fn the_hash_is_fixed_and_spreads() {
        // Pinned: a change would move every rollout of every sharded installation at once.
        assert_eq!(
            hashed("default", "web", count(6)),
            hashed("default", "web", count(6))
        );
        let pinned: Vec<usize> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| hashed("ns", n, count(1000)).index())
            .collect();
        let fnv = |s: &str| (fnv1a(s.as_bytes()) % 1000) as usize;
        assert_eq!(
            pinned,
            vec![fnv("ns/a"), fnv("ns/b"), fnv("ns/c"), fnv("ns/d")]
        );
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a 64 of \"a\"");
        // The namespace is part of the key.
        let spread: std::collections::HashSet<Shard> = (0..60)
            .map(|i| hashed(&format!("ns-{i}"), "web", count(6)))
            .collect();
        assert_eq!(spread.len(), 6);

        let mut per_shard = [0usize; 6];
        for i in 0..600 {
            per_shard[hashed("load", &format!("r-{i}"), count(6)).index()] += 1;
        }
        assert!(
            per_shard.iter().all(|n| (60..=140).contains(n)),
            "600 rollouts over 6 shards: {per_shard:?}"
        );
    }

    #[test]
    fn one_shard_holds_everything() {
        for name in ["a", "b", "web", "x-y-z"] {
            assert_eq!(
                assign("ns", name, None, ShardCount::ONE),
                Assignment::Hashed(Shard(0))
            );
        }
    }

    #[test]
    fn a_label_overrides_the_hash_when_in_range() {
        let six = count(6);
        let hashed = hashed("ns", "web", six);
        assert_eq!(
            assign("ns", "web", Some("3"), six),
            Assignment::Labelled(Shard(3))
        );
        assert_eq!(
            assign("ns", "web", Some("0"), six),
            Assignment::Labelled(Shard(0))
        );
        for bad in ["6", "60000", "-1", "three", ""] {
            let assignment = assign("ns", "web", Some(bad), six);
            assert_eq!(
                assignment,
                Assignment::Invalid {
                    label: bad.into(),
                    hashed
                },
                "label {bad:?}"
            );
            assert_eq!(assignment.shard(), hashed, "stays on its hashed shard");
        }
    }

    #[test]
    fn all_shards_are_listed() {
        let all: Vec<usize> = count(3).all().map(Shard::index).collect();
        assert_eq!(all, vec![0, 1, 2]);
    }
}
