//! The `prometheus` provider: instant and range queries over the Prometheus HTTP API.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;

use crate::ProviderError;
use crate::counters::{CounterSnapshot, series_key};
use crate::http::{Credentials, build_client, request_error, snippet};
use crate::spec::PrometheusProviderSpec;
use crate::units::Timestamp;

/// Everything needed to talk to one Prometheus, with secrets already resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://127.0.0.1:9090`.
    pub address: String,
    /// Per-query timeout (also sent to Prometheus as its own query timeout).
    pub timeout: Duration,
    /// Authentication.
    pub credentials: Credentials,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// PEM CA bundle to trust instead of the system's.
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl PrometheusConfig {
    /// The config for a spec; `credentials` and `ca_cert_pem` are what its Secret references
    /// resolved to.
    pub fn from_spec(
        spec: &PrometheusProviderSpec,
        timeout: Duration,
        credentials: Credentials,
        ca_cert_pem: Option<Vec<u8>>,
    ) -> Self {
        Self {
            address: spec.address.clone(),
            timeout,
            credentials,
            headers: spec
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect(),
            ca_cert_pem,
        }
    }
}

/// One series of an instant query: labels and value (NaN and ±Inf are kept: they are data).
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// One series of a range query.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// (time, value) points, oldest first.
    pub points: Vec<(Timestamp, f64)>,
}

/// A client for one Prometheus server.
#[derive(Clone, Debug)]
pub struct PrometheusClient {
    client: reqwest::Client,
    base: String,
    timeout: Duration,
    credentials: Credentials,
}

#[derive(Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum ApiData {
    Vector(Vec<VectorItem>),
    Matrix(Vec<MatrixItem>),
    Scalar(ApiPoint),
    String(serde::de::IgnoredAny),
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: ApiPoint,
}

#[derive(Deserialize)]
struct MatrixItem {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    values: Vec<ApiPoint>,
}

/// `[<unix seconds>, "<value>"]`.
#[derive(Deserialize)]
struct ApiPoint(f64, String);

/// Prometheus writes values as Go formats them: `NaN`, `+Inf`, `-Inf`, or a decimal.
pub(crate) fn parse_go_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

fn unix_seconds(time: Timestamp) -> String {
    let since_epoch = time.0.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    format!(
        "{}.{:03}",
        since_epoch.as_secs(),
        since_epoch.subsec_millis()
    )
}

fn to_timestamp(seconds: f64) -> Timestamp {
    Timestamp(UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0)))
}

impl PrometheusClient {
    /// Builds the client; fails only on settings that can never work (bad header, bad CA).
    pub fn new(config: &PrometheusConfig) -> Result<Self, ProviderError> {
        let base = config.address.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ProviderError::Config(format!(
                "address {:?} must start with http:// or https://",
                config.address
            )));
        }
        Ok(Self {
            client: build_client(
                config.timeout,
                &config.headers,
                config.ca_cert_pem.as_deref(),
            )?,
            base,
            timeout: config.timeout,
            credentials: config.credentials.clone(),
        })
    }

    /// An instant query at `time` (Prometheus' now when `None`). A scalar result becomes one
    /// sample without labels.
    pub async fn instant(
        &self,
        query: &str,
        time: Option<Timestamp>,
    ) -> Result<Vec<InstantSample>, ProviderError> {
        let mut form = vec![
            ("query", query.to_owned()),
            ("timeout", self.server_timeout()),
        ];
        if let Some(time) = time {
            form.push(("time", unix_seconds(time)));
        }
        let (url, data) = self.post("/api/v1/query", &form).await?;
        let malformed = |reason: String| ProviderError::Malformed {
            url: url.clone(),
            reason,
        };
        let value = |point: &ApiPoint| {
            parse_go_float(&point.1).ok_or_else(|| malformed(format!("value {:?}", point.1)))
        };
        match data {
            ApiData::Vector(items) => items
                .iter()
                .map(|item| {
                    Ok(InstantSample {
                        labels: item.metric.clone(),
                        value: value(&item.value)?,
                    })
                })
                .collect(),
            ApiData::Scalar(point) => Ok(vec![InstantSample {
                labels: BTreeMap::new(),
                value: value(&point)?,
            }]),
            ApiData::Matrix(_) => Err(malformed(
                "an instant query returned a range vector (a query like x[5m]?)".to_owned(),
            )),
            ApiData::String(_) => Err(malformed("the query returned a string".to_owned())),
        }
    }

    /// A range query from `start` to `end` every `step`.
    pub async fn range(
        &self,
        query: &str,
        start: Timestamp,
        end: Timestamp,
        step: Duration,
    ) -> Result<Vec<RangeSeries>, ProviderError> {
        let form = vec![
            ("query", query.to_owned()),
            ("start", unix_seconds(start)),
            ("end", unix_seconds(end)),
            ("step", format!("{}", step.as_secs_f64().max(0.001))),
            ("timeout", self.server_timeout()),
        ];
        let (url, data) = self.post("/api/v1/query_range", &form).await?;
        let malformed = |reason: String| ProviderError::Malformed {
            url: url.clone(),
            reason,
        };
        match data {
            ApiData::Matrix(items) => items
                .iter()
                .map(|item| {
                    let points = item
                        .values
                        .iter()
                        .map(|point| {
                            parse_go_float(&point.1)
                                .map(|value| (to_timestamp(point.0), value))
                                .ok_or_else(|| malformed(format!("value {:?}", point.1)))
                        })
                        .collect::<Result<_, _>>()?;
                    Ok(RangeSeries {
                        labels: item.metric.clone(),
                        points,
                    })
                })
                .collect(),
            _ => Err(malformed("a range query must return a matrix".to_owned())),
        }
    }

    /// An instant query read as raw counter values, one per series (see
    /// [`crate::counters::counter_increase`]).
    pub async fn counters(
        &self,
        query: &str,
        time: Option<Timestamp>,
    ) -> Result<CounterSnapshot, ProviderError> {
        Ok(self
            .instant(query, time)
            .await?
            .into_iter()
            .map(|sample| {
                let key = series_key(sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                (key, sample.value)
            })
            .collect())
    }

    fn server_timeout(&self) -> String {
        // Prometheus takes Go durations; milliseconds are exact and always accepted.
        format!("{}ms", self.timeout.as_millis().max(1))
    }

    async fn post(
        &self,
        path: &str,
        form: &[(&str, String)],
    ) -> Result<(String, ApiData), ProviderError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.client.post(&url).form(form);
        request = match &self.credentials {
            Credentials::None => request,
            Credentials::Bearer(token) => request.bearer_auth(token),
            Credentials::Basic { username, password } => {
                request.basic_auth(username, Some(password))
            }
        };
        let response = request
            .send()
            .await
            .map_err(|error| request_error(&url, self.timeout, &error))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|error| request_error(&url, self.timeout, &error))?;
        // Prometheus reports query errors as JSON with a 4xx/5xx status: prefer its words.
        let parsed = serde_json::from_str::<ApiResponse>(&body);
        if let Ok(answer) = &parsed
            && answer.status == "error"
        {
            return Err(ProviderError::Query {
                error_type: answer.error_type.clone().unwrap_or_default(),
                message: answer.error.clone().unwrap_or_default(),
            });
        }
        if !status.is_success() {
            return Err(ProviderError::HttpStatus {
                url,
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        match parsed {
            Ok(ApiResponse {
                status,
                data: Some(data),
                ..
            }) if status == "success" => Ok((url, data)),
            Ok(answer) => Err(ProviderError::Malformed {
                url,
                reason: format!("status {:?} without data", answer.status),
            }),
            Err(error) => Err(ProviderError::Malformed {
                url,
                reason: format!("{error}; body: {}", snippet(&body)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_floats_parse() {
        assert!(parse_go_float("NaN").unwrap().is_nan());
        assert_eq!(parse_go_float("+Inf"), Some(f64::INFINITY));
        assert_eq!(parse_go_float("-Inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_go_float("1e-3"), Some(0.001));
        assert_eq!(parse_go_float("x"), None);
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let config =
            |address: &str, headers: Vec<(String, String)>, ca: Option<Vec<u8>>| PrometheusConfig {
                address: address.to_owned(),
                timeout: Duration::from_secs(1),
                credentials: Credentials::None,
                headers,
                ca_cert_pem: ca,
            };
        let kind = |c: PrometheusConfig| PrometheusClient::new(&c).unwrap_err().kind();
        assert_eq!(kind(config("prometheus:9090", vec![], None)), "config");
        assert_eq!(
            kind(config(
                "http://x",
                vec![("bad header".into(), "v".into())],
                None
            )),
            "config"
        );
        assert_eq!(
            kind(config("https://x", vec![], Some(b"not a pem".to_vec()))),
            "config"
        );
        assert!(PrometheusClient::new(&config("https://x", vec![], None)).is_ok());
    }
}
