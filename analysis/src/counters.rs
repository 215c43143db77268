//! Raw counter values and their increases, with counter resets handled per series.

use std::collections::BTreeMap;

/// Counter values at one instant, one entry per series (its label set written as
/// `{pod="web-1"}`; `{}` for a series without labels, such as a plain `sum(...)`).
pub type CounterSnapshot = BTreeMap<String, f64>;

/// Writes a label set the way PromQL does, sorted by name, as a stable series key.
pub fn series_key<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = labels
        .into_iter()
        .filter(|(n, _)| *n != "__name__")
        .collect();
    pairs.sort_unstable();
    let inner: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// How much the counters grew from `previous` to `current`.
///
/// A series whose value went down was reset (its process restarted): it grew by its whole
/// current value, as Prometheus' `increase` assumes. A series that is new since `previous` (a new
/// pod) grew by its whole value; a series that vanished (a pod gone) adds nothing. Unlike
/// `increase()`, nothing is extrapolated. Query per-pod series (`sum by (pod)(...)`) rather than a
/// bare `sum(...)`: a pod leaving a sum looks like a reset of the whole sum.
pub fn counter_increase(previous: &CounterSnapshot, current: &CounterSnapshot) -> f64 {
    current
        .iter()
        .filter(|(_, value)| value.is_finite())
        .map(|(key, value)| match previous.get(key) {
            Some(before) if before.is_finite() && *value >= *before => value - before,
            _ => *value,
        })
        .map(|increase| increase.max(0.0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(pairs: &[(&str, f64)]) -> CounterSnapshot {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn increases_handle_resets_new_and_vanished_series() {
        let before = snapshot(&[
            ("{pod=\"a\"}", 100.0),
            ("{pod=\"b\"}", 50.0),
            ("{pod=\"c\"}", 7.0),
        ]);
        let after = snapshot(&[
            ("{pod=\"a\"}", 130.0),
            ("{pod=\"b\"}", 5.0),
            ("{pod=\"d\"}", 3.0),
        ]);
        // a: +30; b: reset, +5; c: vanished, +0; d: new, +3.
        assert_eq!(counter_increase(&before, &after), 38.0);
        assert_eq!(counter_increase(&after, &after), 0.0);
    }

    #[test]
    fn series_keys_are_sorted_and_skip_the_name() {
        assert_eq!(
            series_key([("pod", "b"), ("__name__", "x"), ("code", "500")]),
            "{code=\"500\",pod=\"b\"}"
        );
        assert_eq!(series_key(std::iter::empty()), "{}");
    }
}
