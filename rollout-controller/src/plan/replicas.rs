//! How many pods each ReplicaSet gets on the way to its target, within maxSurge and
//! maxUnavailable: the arithmetic a Deployment does, shared by the rolling update and by the
//! canary without a traffic router (where the weight is made of replica counts).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{InvalidSpec, ObservedReplicaSet};
use crate::crd::RolloutSpec;

/// A maxSurge or maxUnavailable value, read: a number of pods, or a share of the desired count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    Count(i32),
    /// From 0 to 100.
    Percent(i32),
}

impl Bound {
    /// Reads `value` as the CRD's rule does: a non-negative integer, or a string `N%` with N
    /// from 0 to 100 written without leading zeros. Anything else is an error saying why, never
    /// a number: a string without `%` is not a count (a Deployment refuses `"3"` too), and `-1`
    /// or `"101%"` would let more pods go than exist.
    pub(crate) fn parse(value: &IntOrString) -> Result<Self, String> {
        match value {
            IntOrString::Int(n) if *n >= 0 => Ok(Bound::Count(*n)),
            IntOrString::Int(n) => Err(format!("{n} is negative")),
            IntOrString::String(s) => {
                let percent = s
                    .strip_suffix('%')
                    .filter(|digits| {
                        !digits.is_empty()
                            && digits.len() <= 3
                            && digits.bytes().all(|b| b.is_ascii_digit())
                            && (digits.len() == 1 || !digits.starts_with('0'))
                    })
                    .and_then(|digits| digits.parse::<i32>().ok())
                    .filter(|p| *p <= 100);
                percent.map(Bound::Percent).ok_or_else(|| {
                    format!("{s:?} is neither a count of pods nor a percentage from 0% to 100%")
                })
            }
        }
    }

    fn resolve(self, replicas: i32, round_up: bool) -> i32 {
        match self {
            Bound::Count(n) => n,
            Bound::Percent(percent) => {
                let scaled = i64::from(replicas.max(0)) * i64::from(percent);
                let count = if round_up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                };
                i32::try_from(count).unwrap_or(i32::MAX)
            }
        }
    }
}

/// maxSurge and maxUnavailable resolved against the desired replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub surge: i32,
    pub unavailable: i32,
}

impl Bounds {
    /// Percentages round up for surge and down for unavailable, as for Deployments; when both
    /// come to 0, one pod may be unavailable so that the rollout can move at all.
    pub(crate) fn resolve(max_surge: Bound, max_unavailable: Bound, replicas: i32) -> Self {
        let surge = max_surge.resolve(replicas, true);
        let mut unavailable = max_unavailable.resolve(replicas, false);
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        Self { surge, unavailable }
    }
}

/// Pods for a weight: any weight above 0 gets at least one pod; 100 gets them all.
/// With 5 replicas, 20/40/60/80 give 1/2/3/4.
pub(crate) fn replicas_for_weight(weight: i32, replicas: i32) -> i32 {
    if weight <= 0 || replicas <= 0 {
        return 0;
    }
    let scaled = i64::from(weight.min(100)) * i64::from(replicas);
    i32::try_from((scaled + 99) / 100).unwrap_or(replicas)
}

/// One step towards `targets` (pod-template hash → desired replicas; hashes absent from it go to
/// 0). ReplicaSets below target grow first, as far as `replicas + surge` total pods allow
/// (without limit when `urgent`, for an abort); those above target shrink, dropping pods that are
/// not available for free (the ReplicaSet controller deletes unready pods first) and available
/// ones only while `replicas - unavailable` pods stay available. `order` lists the hashes to grow
/// first and shrink last.
pub(crate) fn step_towards(
    observed: &[ObservedReplicaSet],
    targets: &BTreeMap<String, i32>,
    order: &[&str],
    replicas: i32,
    bounds: Bounds,
    urgent: bool,
) -> BTreeMap<String, i32> {
    let mut next: BTreeMap<String, i32> = observed
        .iter()
        .map(|rs| (rs.hash.clone(), rs.replicas))
        .collect();
    for hash in targets.keys() {
        next.entry(hash.clone()).or_insert(0);
    }
    let target_of = |hash: &str| targets.get(hash).copied().unwrap_or(0);
    let rank = |hash: &str| order.iter().position(|h| *h == hash).unwrap_or(order.len());
    let mut hashes: Vec<String> = next.keys().cloned().collect();
    hashes.sort_by_key(|h| (rank(h), h.clone()));

    let mut total: i32 = next.values().sum();
    let max_total = replicas.saturating_add(bounds.surge);
    for hash in &hashes {
        let current = next[hash];
        let want = target_of(hash);
        if want > current {
            let room = if urgent {
                want - current
            } else {
                (max_total - total).max(0)
            };
            let add = (want - current).min(room);
            next.insert(hash.clone(), current + add);
            total += add;
        }
    }

    let available_of = |hash: &str| {
        observed
            .iter()
            .find(|rs| rs.hash == hash)
            .map(|rs| rs.available.min(rs.replicas))
            .unwrap_or(0)
    };
    let available: i32 = observed
        .iter()
        .map(|rs| rs.available.min(rs.replicas))
        .sum();
    let mut budget = (available - (replicas - bounds.unavailable)).max(0);
    for hash in hashes.iter().rev() {
        let current = next[hash];
        let want = target_of(hash);
        if want < current {
            let excess = current - want;
            let unavailable = (current - available_of(hash)).max(0);
            let free = excess.min(unavailable);
            let paid = (excess - free).min(budget);
            budget -= paid;
            next.insert(hash.clone(), current - free - paid);
        }
    }
    next
}

/// maxSurge and maxUnavailable of the strategy, resolved against `spec.replicas`; a value that is
/// not a count or a percentage is an [`InvalidSpec`] at its field, never a number.
pub(crate) fn bounds(spec: &RolloutSpec) -> Result<Bounds, InvalidSpec> {
    let replicas = spec.replicas.max(0);
    let strategy = &spec.strategy;
    let declared = strategy_bounds(spec)?;
    Ok(match declared {
        Some((surge, unavailable))
            if strategy
                .canary
                .as_ref()
                .is_none_or(|c| c.traffic_routing.is_none()) =>
        {
            Bounds::resolve(surge, unavailable, replicas)
        }
        // Blue-green, and a canary with a router, keep the stable version whole: its pods go only
        // after traffic has left it.
        _ => Bounds {
            surge: replicas,
            unavailable: 0,
        },
    })
}

/// The strategy's maxSurge and maxUnavailable, read (for a canary also when a router makes them
/// unused: a value that cannot be read is wrong wherever it stands).
fn strategy_bounds(spec: &RolloutSpec) -> Result<Option<(Bound, Bound)>, InvalidSpec> {
    read_bounds(spec)
        .map(|(surge, unavailable)| Ok((surge?, unavailable?)))
        .transpose()
}

/// maxSurge and maxUnavailable, each read on its own, so that both can be reported; `None` for a
/// strategy that has neither.
pub(super) fn read_bounds(
    spec: &RolloutSpec,
) -> Option<(Result<Bound, InvalidSpec>, Result<Bound, InvalidSpec>)> {
    let strategy = &spec.strategy;
    let (field, surge, unavailable) = if let Some(c) = &strategy.canary {
        ("spec.strategy.canary", &c.max_surge, &c.max_unavailable)
    } else if let Some(r) = &strategy.rolling_update {
        (
            "spec.strategy.rollingUpdate",
            &r.max_surge,
            &r.max_unavailable,
        )
    } else {
        return None;
    };
    let read = |name: &str, value| {
        Bound::parse(value).map_err(|message| InvalidSpec {
            field: format!("{field}.{name}"),
            message,
        })
    };
    Some((read("maxSurge", surge), read("maxUnavailable", unavailable)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(hash: &str, replicas: i32, available: i32) -> ObservedReplicaSet {
        ObservedReplicaSet {
            name: format!("web-{hash}"),
            hash: hash.into(),
            revision: 1,
            replicas,
            ready: available,
            available,
            pod_metadata: Default::default(),
        }
    }

    fn targets(pairs: &[(&str, i32)]) -> BTreeMap<String, i32> {
        pairs.iter().map(|(h, n)| (h.to_string(), *n)).collect()
    }

    #[test]
    fn weights_round_up_to_whole_pods() {
        let counts: Vec<i32> = [0, 1, 20, 40, 60, 80, 100]
            .iter()
            .map(|w| replicas_for_weight(*w, 5))
            .collect();
        assert_eq!(counts, vec![0, 1, 1, 2, 3, 4, 5]);
        assert_eq!(replicas_for_weight(10, 10), 1);
        assert_eq!(replicas_for_weight(11, 10), 2);
        assert_eq!(replicas_for_weight(50, 0), 0);
    }

    #[test]
    fn bounds_resolve_like_a_deployment() {
        let pct = |p| Bound::Percent(p);
        assert_eq!(
            Bounds::resolve(pct(25), Bound::Count(0), 10),
            Bounds {
                surge: 3,
                unavailable: 0
            }
        );
        assert_eq!(
            Bounds::resolve(pct(0), pct(0), 10),
            Bounds {
                surge: 0,
                unavailable: 1
            }
        );
        assert_eq!(
            Bounds::resolve(Bound::Count(2), pct(15), 10),
            Bounds {
                surge: 2,
                unavailable: 1
            }
        );
        assert_eq!(
            Bounds::resolve(pct(100), pct(100), 3),
            Bounds {
                surge: 3,
                unavailable: 3
            }
        );
    }

    #[test]
    fn only_counts_and_percentages_up_to_100_are_bounds() {
        let string = |s: &str| IntOrString::String(s.into());
        assert_eq!(Bound::parse(&IntOrString::Int(0)), Ok(Bound::Count(0)));
        assert_eq!(Bound::parse(&IntOrString::Int(7)), Ok(Bound::Count(7)));
        for (text, percent) in [("0%", 0), ("5%", 5), ("25%", 25), ("100%", 100)] {
            assert_eq!(
                Bound::parse(&string(text)),
                Ok(Bound::Percent(percent)),
                "{text}"
            );
        }
        assert!(Bound::parse(&IntOrString::Int(-1)).is_err());
        for bad in [
            "abc", "-1", "1.5", "1", "", "%", "101%", "-1%", "05%", "1000%", " 5%", "5 %", "5%%",
            "1.5%", "+5%",
        ] {
            let parsed = Bound::parse(&string(bad));
            assert!(parsed.is_err(), "{bad:?} read as {parsed:?}");
        }
    }

    #[test]
    fn a_rolling_update_surges_then_trades_pods() {
        let bounds = Bounds {
            surge: 2,
            unavailable: 1,
        };
        let want = targets(&[("new", 10)]);
        // Start: 10 old available.
        let next = step_towards(&[rs("old", 10, 10)], &want, &["new"], 10, bounds, false);
        assert_eq!(next, targets(&[("new", 2), ("old", 9)]));
        // The two new pods are not ready yet: one more fits the surge, but no old pod may go.
        let next = step_towards(
            &[rs("old", 9, 9), rs("new", 2, 0)],
            &want,
            &["new"],
            10,
            bounds,
            false,
        );
        assert_eq!(next, targets(&[("new", 3), ("old", 9)]));
        // Ready: 12 available, so three old pods may go while 9 stay available.
        let next = step_towards(
            &[rs("old", 9, 9), rs("new", 3, 3)],
            &want,
            &["new"],
            10,
            bounds,
            false,
        );
        assert_eq!(next, targets(&[("new", 3), ("old", 6)]));
    }

    #[test]
    fn an_abort_restores_stable_before_the_canary_shrinks() {
        let bounds = Bounds {
            surge: 1,
            unavailable: 0,
        };
        let want = targets(&[("stable", 5)]);
        let observed = [rs("stable", 2, 2), rs("canary", 3, 3)];
        let next = step_towards(&observed, &want, &["stable"], 5, bounds, true);
        // Stable back to full at once; the canary keeps its pods until stable's are available.
        assert_eq!(next, targets(&[("stable", 5), ("canary", 3)]));
        let observed = [rs("stable", 5, 5), rs("canary", 3, 3)];
        let next = step_towards(&observed, &want, &["stable"], 5, bounds, true);
        assert_eq!(next, targets(&[("stable", 5), ("canary", 0)]));
    }
}
