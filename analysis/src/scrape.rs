//! The `scrape` provider: GET a `/metrics` endpoint, parse the text exposition format with
//! prometheus-parse, select series by name and label matchers.

use std::collections::BTreeMap;
use std::time::Duration;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ProviderError;
use crate::counters::{CounterSnapshot, counter_increase, series_key};
use crate::http::{build_client, request_error, snippet};
use crate::units::Timestamp;

/// How one label is matched, as in PromQL.
#[derive(Clone, Debug)]
pub enum LabelMatch {
    /// `label="value"`.
    Equal(String),
    /// `label!="value"`.
    NotEqual(String),
    /// `label=~"regex"` (anchored).
    Matches(Regex),
    /// `label!~"regex"` (anchored).
    NotMatches(Regex),
}

impl PartialEq for LabelMatch {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (LabelMatch::Equal(a), LabelMatch::Equal(b))
            | (LabelMatch::NotEqual(a), LabelMatch::NotEqual(b)) => a == b,
            (LabelMatch::Matches(a), LabelMatch::Matches(b))
            | (LabelMatch::NotMatches(a), LabelMatch::NotMatches(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl LabelMatch {
    fn accepts(&self, value: Option<&str>) -> bool {
        // A missing label matches as the empty string, as in PromQL.
        let value = value.unwrap_or("");
        match self {
            LabelMatch::Equal(expected) => value == expected,
            LabelMatch::NotEqual(expected) => value != expected,
            LabelMatch::Matches(regex) => regex.is_match(value),
            LabelMatch::NotMatches(regex) => !regex.is_match(value),
        }
    }
}

/// `name{label="v",other!="x",code=~"5.."}`.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesSelector {
    /// Metric name; for a histogram bucket, `<name>_bucket` (match its `le` label).
    pub name: String,
    /// Label matchers, all of which must hold.
    pub matchers: Vec<(String, LabelMatch)>,
}

impl SeriesSelector {
    /// Parses a selector; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (name, rest) = match text.find('{') {
            Some(open) => (&text[..open], Some(&text[open + 1..])),
            None => (text, None),
        };
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            });
        if !valid_name {
            return Err(format!("{name:?} is not a metric name"));
        }
        let mut matchers = Vec::new();
        if let Some(rest) = rest {
            let inner = rest
                .trim_end()
                .strip_suffix('}')
                .ok_or_else(|| "missing closing }".to_owned())?;
            let mut remaining = inner.trim();
            while !remaining.is_empty() {
                let (label, after) = split_label(remaining)?;
                let (operator, after) = ["=~", "!~", "!=", "="]
                    .iter()
                    .find_map(|op| after.strip_prefix(op).map(|a| (*op, a.trim_start())))
                    .ok_or_else(|| format!("expected =, !=, =~ or !~ after {label}"))?;
                let (value, after) = split_quoted(after)?;
                let anchored = || {
                    Regex::new(&format!("^(?:{value})$"))
                        .map_err(|error| format!("label {label}: {error}"))
                };
                let matcher = match operator {
                    "=" => LabelMatch::Equal(value),
                    "!=" => LabelMatch::NotEqual(value),
                    "=~" => LabelMatch::Matches(anchored()?),
                    _ => LabelMatch::NotMatches(anchored()?),
                };
                matchers.push((label.to_owned(), matcher));
                remaining = after.trim_start();
                remaining = match remaining.strip_prefix(',') {
                    Some(next) => next.trim_start(),
                    None if remaining.is_empty() => remaining,
                    None => return Err(format!("expected , or }} before {remaining:?}")),
                };
            }
        }
        Ok(Self {
            name: name.to_owned(),
            matchers,
        })
    }

    fn accepts(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        name == self.name
            && self
                .matchers
                .iter()
                .all(|(label, matcher)| matcher.accepts(labels.get(label).map(String::as_str)))
    }
}

fn split_label(text: &str) -> Result<(&str, &str), String> {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    if end == 0 {
        return Err(format!("expected a label name at {text:?}"));
    }
    Ok((&text[..end], text[end..].trim_start()))
}

fn split_quoted(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or_else(|| format!("expected a quoted value at {text:?}"))?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            '"' => return Ok((value, &body[index + 1..])),
            other => value.push(other),
        }
    }
    Err("unterminated quoted value".to_owned())
}

/// Whether a selected series is a counter (its rate is the useful number) or a gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SeriesKind {
    /// Only goes up, except on resets.
    Counter,
    /// Any value.
    Gauge,
}

/// The selected series of one scrape; kept in status between measurements for counter rates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScrapeSample {
    /// When the scrape was taken (passed in by the caller).
    pub at: Timestamp,
    /// Counter or gauge (histogram buckets and `_total`, `_count`, `_sum` are counters).
    pub kind: SeriesKind,
    /// Values per series key (labels as `{a="b"}`).
    pub values: CounterSnapshot,
}

impl ScrapeSample {
    /// The values as a result vector, in series order: gauges as they are, counters as their
    /// per-second rate since `previous` (with resets handled). A counter without a previous
    /// scrape has no rate yet: the result is empty, which the judges take as no data.
    pub fn result(&self, previous: Option<&ScrapeSample>) -> Vec<f64> {
        match (self.kind, previous) {
            (SeriesKind::Gauge, _) => self.values.values().copied().collect(),
            (SeriesKind::Counter, None) => Vec::new(),
            (SeriesKind::Counter, Some(previous)) => {
                let seconds = self.at.since(previous.at).as_secs_f64();
                if seconds <= 0.0 {
                    return Vec::new();
                }
                self.values
                    .iter()
                    .map(|(key, value)| {
                        let before: CounterSnapshot = previous
                            .values
                            .get(key)
                            .map(|v| CounterSnapshot::from([(key.clone(), *v)]))
                            .unwrap_or_default();
                        let now = CounterSnapshot::from([(key.clone(), *value)]);
                        counter_increase(&before, &now) / seconds
                    })
                    .collect()
            }
        }
    }
}

/// Parses exposition text and keeps the series the selector picks.
pub fn select(
    exposition: &str,
    selector: &SeriesSelector,
    at: Timestamp,
) -> Result<ScrapeSample, String> {
    let lines = exposition.lines().map(|line| Ok(line.to_owned()));
    let scrape =
        prometheus_parse::Scrape::parse(lines).map_err(|error| format!("exposition: {error}"))?;
    let mut values = CounterSnapshot::new();
    let mut kind = if ["_total", "_count", "_sum", "_bucket"]
        .iter()
        .any(|suffix| selector.name.ends_with(suffix))
    {
        SeriesKind::Counter
    } else {
        SeriesKind::Gauge
    };
    for sample in &scrape.samples {
        let labels: BTreeMap<String, String> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut add = |name: &str, labels: &BTreeMap<String, String>, value: f64| {
            if selector.accepts(name, labels) {
                let key = series_key(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                values.insert(key, value);
            }
        };
        match &sample.value {
            prometheus_parse::Value::Counter(value) => {
                if selector.accepts(&sample.metric, &labels) {
                    kind = SeriesKind::Counter;
                }
                add(&sample.metric, &labels, *value);
            }
            prometheus_parse::Value::Gauge(value) | prometheus_parse::Value::Untyped(value) => {
                add(&sample.metric, &labels, *value);
            }
            prometheus_parse::Value::Histogram(buckets) => {
                let bucket_name = format!("{}_bucket", sample.metric);
                for bucket in buckets {
                    let mut with_le = labels.clone();
                    with_le.insert("le".to_owned(), format_le(bucket.less_than));
                    add(&bucket_name, &with_le, bucket.count);
                }
            }
            prometheus_parse::Value::Summary(quantiles) => {
                for quantile in quantiles {
                    let mut with_quantile = labels.clone();
                    with_quantile.insert("quantile".to_owned(), format!("{}", quantile.quantile));
                    add(&sample.metric, &with_quantile, quantile.count);
                }
            }
        }
    }
    Ok(ScrapeSample { at, kind, values })
}

/// `le` as exporters write it: `+Inf`, `0.5`, `1`.
fn format_le(bound: f64) -> String {
    if bound == f64::INFINITY {
        "+Inf".to_owned()
    } else {
        format!("{bound}")
    }
}

/// A scraper of one `/metrics` URL.
#[derive(Clone, Debug)]
pub struct ScrapeClient {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl ScrapeClient {
    /// Builds the client.
    pub fn new(
        url: &str,
        timeout: Duration,
        headers: &[(String, String)],
    ) -> Result<Self, ProviderError> {
        Ok(Self {
            client: build_client(timeout, headers, None)?,
            url: url.to_owned(),
            timeout,
        })
    }

    /// Scrapes once and selects the series; `at` is the caller's clock (no clock reads here).
    pub async fn sample(
        &self,
        selector: &SeriesSelector,
        at: Timestamp,
    ) -> Result<ScrapeSample, ProviderError> {
        let response = self
            .client
            .get(&self.url)
            .header("Accept", "text/plain;version=0.0.4")
            .send()
            .await
            .map_err(|error| request_error(&self.url, self.timeout, &error))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|error| request_error(&self.url, self.timeout, &error))?;
        if !status.is_success() {
            return Err(ProviderError::HttpStatus {
                url: self.url.clone(),
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        select(&body, selector, at).map_err(|reason| ProviderError::Malformed {
            url: self.url.clone(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const EXPOSITION: &str = r#"# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",path="/"} 1000
http_requests_total{code="500",path="/"} 10
http_requests_total{code="503",path="/x"} 5
# TYPE queue_depth gauge
queue_depth 7
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 50
latency_seconds_bucket{le="0.5"} 90
latency_seconds_bucket{le="+Inf"} 100
latency_seconds_sum 20
latency_seconds_count 100
"#;

    fn at(secs: u64) -> Timestamp {
        Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn selectors_parse_and_reject_nonsense() {
        let selector =
            SeriesSelector::parse(r#"http_requests_total{code=~"5..", path!="/x"}"#).unwrap();
        assert_eq!(selector.name, "http_requests_total");
        assert_eq!(selector.matchers.len(), 2);
        assert!(SeriesSelector::parse("up").unwrap().matchers.is_empty());
        for bad in [
            "",
            "9up",
            "up{code}",
            r#"up{code="1""#,
            r#"up{code=~"("}"#,
            r#"up{a="1" b="2"}"#,
        ] {
            assert!(SeriesSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selection_by_name_and_labels() {
        let errors = SeriesSelector::parse(r#"http_requests_total{code=~"5.."}"#).unwrap();
        let sample = select(EXPOSITION, &errors, at(0)).unwrap();
        assert_eq!(sample.kind, SeriesKind::Counter);
        assert_eq!(sample.values.values().sum::<f64>(), 15.0);
        let not_x = SeriesSelector::parse(r#"http_requests_total{path!="/x"}"#).unwrap();
        assert_eq!(select(EXPOSITION, &not_x, at(0)).unwrap().values.len(), 2);
        let gauge = select(
            EXPOSITION,
            &SeriesSelector::parse("queue_depth").unwrap(),
            at(0),
        )
        .unwrap();
        assert_eq!(gauge.kind, SeriesKind::Gauge);
        assert_eq!(gauge.result(None), vec![7.0]);
        let bucket = SeriesSelector::parse(r#"latency_seconds_bucket{le="0.5"}"#).unwrap();
        let bucket = select(EXPOSITION, &bucket, at(0)).unwrap();
        assert_eq!(
            bucket.values.values().copied().collect::<Vec<_>>(),
            vec![90.0]
        );
        assert_eq!(bucket.kind, SeriesKind::Counter);
        let missing = SeriesSelector::parse("nothing_here").unwrap();
        assert!(
            select(EXPOSITION, &missing, at(0))
                .unwrap()
                .result(None)
                .is_empty()
        );
    }

    #[test]
    fn counters_become_rates_with_resets_handled() {
        let selector = SeriesSelector::parse(r#"http_requests_total{code="500"}"#).unwrap();
        let first = select(EXPOSITION, &selector, at(100)).unwrap();
        assert!(first.result(None).is_empty(), "a rate needs two scrapes");
        let later = EXPOSITION.replace(r#"code="500",path="/"} 10"#, r#"code="500",path="/"} 40"#);
        let second = select(&later, &selector, at(110)).unwrap();
        assert_eq!(second.result(Some(&first)), vec![3.0]);
        // The process restarted: the counter starts again from zero.
        let reset = EXPOSITION.replace(r#"code="500",path="/"} 10"#, r#"code="500",path="/"} 4"#);
        let third = select(&reset, &selector, at(120)).unwrap();
        assert_eq!(third.result(Some(&second)), vec![0.4]);
    }
}
