//! The providers against a tiny HTTP server on 127.0.0.1 that answers each request with a canned
//! response, one server per case. Real Prometheus comes in the end-to-end tests.

// Helpers outside `#[test]` functions are test code too: a failed setup should panic loudly.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::prometheus::{PrometheusClient, PrometheusConfig};
use crate::scrape::{ScrapeClient, SeriesSelector};
use crate::threshold::ThresholdJudge;
use crate::{Credentials, ProviderError, Timestamp, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

struct Canned {
    status: u16,
    content_type: &'static str,
    body: String,
    delay: Duration,
}

fn json(status: u16, body: &str) -> Canned {
    Canned {
        status,
        content_type: "application/json",
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

/// Serves `canned` to every request; returns the base URL and the raw requests received.
async fn serve(canned: Canned) -> (String, Arc<Mutex<Vec<String>>>) {
    serve_in_order(vec![canned]).await
}

/// Serves the responses in order, one per request, repeating the last; returns the base URL and
/// the raw requests received.
async fn serve_in_order(responses: Vec<Canned>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    let responses = Arc::new(responses);
    tokio::spawn(async move {
        let mut served = 0usize;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let responses = Arc::clone(&responses);
            let index = served.min(responses.len() - 1);
            served += 1;
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let canned = &responses[index];
                let request = read_request(&mut socket).await;
                seen.lock().unwrap().push(request);
                tokio::time::sleep(canned.delay).await;
                let response = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    canned.status,
                    canned.content_type,
                    canned.body.len(),
                    canned.body
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{address}"), requests)
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(read) = socket.read(&mut chunk).await {
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&buffer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

fn client(address: &str, credentials: Credentials, timeout: Duration) -> PrometheusClient {
    PrometheusClient::new(&PrometheusConfig {
        address: address.to_owned(),
        timeout,
        credentials,
        headers: vec![("X-Scope-OrgID".to_owned(), "team-a".to_owned())],
        ca_cert_pem: None,
    })
    .unwrap()
}

async fn instant_error(canned: Canned, timeout: Duration) -> ProviderError {
    let (address, _) = serve(canned).await;
    client(&address, Credentials::None, timeout)
        .instant("up", None)
        .await
        .unwrap_err()
}

const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[
  {"metric":{"pod":"web-1"},"value":[1700000000.5,"0.004"]},
  {"metric":{"pod":"web-2"},"value":[1700000000.5,"NaN"]}]}}"#;

#[tokio::test]
async fn instant_queries_return_values_and_send_credentials_and_headers() {
    let (address, requests) = serve(json(200, VECTOR)).await;
    let token = Credentials::Bearer("s3cret".to_owned());
    let samples = client(&address, token, Duration::from_secs(5))
        .instant("sum(rate(x[1m]))", None)
        .await
        .unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].value, 0.004);
    assert_eq!(samples[0].labels["pod"], "web-1");
    assert!(samples[1].value.is_nan());
    let request = requests.lock().unwrap()[0].clone();
    assert!(request.starts_with("POST /api/v1/query "), "{request}");
    assert!(
        request.contains("authorization: Bearer s3cret"),
        "{request}"
    );
    assert!(
        request.to_lowercase().contains("x-scope-orgid: team-a"),
        "{request}"
    );
    assert!(
        request.contains("query=sum%28rate%28x%5B1m%5D%29%29"),
        "{request}"
    );

    let (address, requests) = serve(json(200, VECTOR)).await;
    let basic = Credentials::Basic {
        username: "prom".to_owned(),
        password: "pw".to_owned(),
    };
    client(&address, basic, Duration::from_secs(5))
        .instant("up", None)
        .await
        .unwrap();
    // base64("prom:pw")
    assert!(requests.lock().unwrap()[0].contains("authorization: Basic cHJvbTpwdw=="));
}

#[tokio::test]
async fn empty_results_and_nan_are_data_judged_inconclusive() {
    let judge = ThresholdJudge::new(Some("result[0] < 0.01"), None, "metrics[m]").unwrap();
    let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    let (address, _) = serve(json(200, empty)).await;
    let values: Vec<f64> = client(&address, Credentials::None, Duration::from_secs(5))
        .instant("up", None)
        .await
        .unwrap()
        .iter()
        .map(|s| s.value)
        .collect();
    assert!(values.is_empty());
    assert_eq!(judge.judge(&values).verdict, Verdict::Inconclusive);

    let scalar =
        r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"NaN"]}}"#;
    let (address, _) = serve(json(200, scalar)).await;
    let values: Vec<f64> = client(&address, Credentials::None, Duration::from_secs(5))
        .instant("up", None)
        .await
        .unwrap()
        .iter()
        .map(|s| s.value)
        .collect();
    assert_eq!(values.len(), 1);
    assert_eq!(judge.judge(&values).verdict, Verdict::Inconclusive);
}

#[tokio::test]
async fn range_queries_return_series() {
    let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[
      {"metric":{},"values":[[1700000000,"1"],[1700000060,"+Inf"],[1700000120,"3"]]}]}}"#;
    let (address, requests) = serve(json(200, matrix)).await;
    let start = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let series = client(&address, Credentials::None, Duration::from_secs(5))
        .range(
            "q",
            start,
            start.plus(Duration::from_secs(120)),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    let values: Vec<f64> = series[0].points.iter().map(|p| p.1).collect();
    assert_eq!(values, vec![1.0, f64::INFINITY, 3.0]);
    assert_eq!(series[0].points[1].0, start.plus(Duration::from_secs(60)));
    let request = requests.lock().unwrap()[0].clone();
    assert!(
        request.starts_with("POST /api/v1/query_range "),
        "{request}"
    );
    assert!(request.contains("step=60"), "{request}");
}

#[tokio::test]
async fn counters_are_keyed_by_series() {
    let (address, _) = serve(json(200, VECTOR)).await;
    let counters = client(&address, Credentials::None, Duration::from_secs(5))
        .counters("sum by (pod)(x)", None)
        .await
        .unwrap();
    assert_eq!(counters["{pod=\"web-1\"}"], 0.004);
}

#[tokio::test]
async fn each_error_class_is_typed() {
    let promql = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#;
    match instant_error(json(400, promql), Duration::from_secs(5)).await {
        ProviderError::Query {
            error_type,
            message,
        } => {
            assert_eq!(error_type, "bad_data");
            assert!(message.contains("parse error"));
        }
        other => panic!("{other:?}"),
    }
    match instant_error(json(503, "service unavailable"), Duration::from_secs(5)).await {
        ProviderError::HttpStatus { status, .. } => assert_eq!(status, 503),
        other => panic!("{other:?}"),
    }
    let malformed = instant_error(
        json(200, "{\"status\":\"success\",\"data\":"),
        Duration::from_secs(5),
    );
    assert_eq!(malformed.await.kind(), "malformed");
    let wrong_shape = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}}"#;
    assert_eq!(
        instant_error(json(200, wrong_shape), Duration::from_secs(5))
            .await
            .kind(),
        "malformed"
    );
    let slow = Canned {
        delay: Duration::from_secs(3),
        ..json(200, VECTOR)
    };
    match instant_error(slow, Duration::from_millis(300)).await {
        ProviderError::Timeout { after, .. } => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
    // A port nothing listens on: bind one, then close it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let error = client(&closed, Credentials::None, Duration::from_secs(5))
        .instant("up", None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "unreachable", "{error}");
}

const EXPOSITION: &str = "# TYPE http_requests_total counter\n\
http_requests_total{code=\"200\"} 990\n\
http_requests_total{code=\"500\"} 10\n\
# TYPE inflight gauge\n\
inflight 3\n";

fn text(status: u16, body: &str) -> Canned {
    Canned {
        status,
        content_type: "text/plain; version=0.0.4",
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

#[tokio::test]
async fn scrape_selects_series_and_turns_counters_into_rates() {
    let at = |secs| Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    let selector = SeriesSelector::parse(r#"http_requests_total{code=~"5.."}"#).unwrap();
    let (address, requests) = serve(text(200, EXPOSITION)).await;
    let scraper =
        ScrapeClient::new(&format!("{address}/metrics"), Duration::from_secs(5), &[]).unwrap();
    let first = scraper.sample(&selector, at(0)).await.unwrap();
    assert!(requests.lock().unwrap()[0].starts_with("GET /metrics "));

    let (address, _) = serve(text(200, &EXPOSITION.replace("} 10", "} 70"))).await;
    let scraper =
        ScrapeClient::new(&format!("{address}/metrics"), Duration::from_secs(5), &[]).unwrap();
    let second = scraper.sample(&selector, at(30)).await.unwrap();
    assert_eq!(second.result(Some(&first)), vec![2.0]);

    let gauge = SeriesSelector::parse("inflight").unwrap();
    assert_eq!(
        scraper.sample(&gauge, at(30)).await.unwrap().result(None),
        vec![3.0]
    );
}

#[tokio::test]
async fn scrape_errors_are_typed() {
    let selector = SeriesSelector::parse("up").unwrap();
    let now = Timestamp(SystemTime::UNIX_EPOCH);
    let (address, _) = serve(text(500, "boom")).await;
    let error = ScrapeClient::new(&address, Duration::from_secs(5), &[])
        .unwrap()
        .sample(&selector, now)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::HttpStatus { status: 500, .. }),
        "{error}"
    );
    let slow = Canned {
        delay: Duration::from_secs(3),
        ..text(200, EXPOSITION)
    };
    let (address, _) = serve(slow).await;
    let error = ScrapeClient::new(&address, Duration::from_millis(300), &[])
        .unwrap()
        .sample(&selector, now)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "timeout", "{error}");
}

fn counter(value: f64) -> Canned {
    json(
        200,
        &format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1700000000,"{value}"]}}]}}}}"#
        ),
    )
}

#[tokio::test]
async fn a_sequential_metric_takes_a_baseline_then_judges_each_look() {
    use crate::measure::{Carry, MeasureContext, measure};
    // Each measurement reads canary events, stable events, canary requests, stable requests.
    let (address, requests) = serve_in_order(vec![
        counter(0.0),
        counter(0.0),
        counter(0.0),
        counter(0.0),
        counter(60.0),
        counter(20.0),
        counter(2000.0),
        counter(2000.0),
    ])
    .await;
    let plan = sequential_metric(
        &address,
        [r#"sum(errors{v="canary"})"#, r#"sum(errors{v="stable"})"#],
        [r#"sum(req{v="canary"})"#, r#"sum(req{v="stable"})"#],
    );
    let start = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let context = |carry, now| MeasureContext {
        now,
        run_started_at: start,
        credentials: Credentials::None,
        ca_cert_pem: None,
        carry,
        sequential_metrics: 1,
        expected_canary_share: Some(0.5),
    };
    let baseline = measure(&plan, context(None, start)).await;
    assert!(
        baseline.judgement.is_none(),
        "the first reading is a baseline"
    );
    let carry = baseline.carry.unwrap();
    assert!(matches!(carry, Carry::Sequential(_)));
    let later = start.plus(Duration::from_secs(60));
    let look = measure(&plan, context(Some(carry), later)).await;
    let judgement = look.judgement.unwrap();
    // 60 errors in 2000 canary requests against 20 in 2000 on stable: 3×, a clear failure.
    assert_eq!(judgement.verdict, Verdict::Fail, "{}", judgement.message);
    assert!(judgement.evidence.e_value.unwrap() >= 20.0);
    assert_eq!(requests.lock().unwrap().len(), 8);
    let Some(Carry::Sequential(state)) = look.carry else {
        panic!("the test state is carried on");
    };
    assert_eq!(state.test.looks, 1);
}

#[tokio::test]
async fn a_scrape_counter_metric_takes_a_baseline_then_judges_rates() {
    use crate::measure::{MeasureContext, measure};
    let (address, _) = serve_in_order(vec![
        text(200, EXPOSITION),
        text(200, &EXPOSITION.replace("} 10", "} 13")),
    ])
    .await;
    let spec: crate::MetricSpec = serde_json::from_value(serde_json::json!({
        "name": "errors-per-second",
        "interval": "10s",
        "provider": {"scrape": {"url": format!("{address}/metrics"),
                                "metric": "http_requests_total{code=\"500\"}"}},
        "successCondition": "result[0] < 1.0"
    }))
    .unwrap();
    let plan = spec.plan().unwrap();
    let start = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let context = |carry, now| MeasureContext {
        now,
        run_started_at: start,
        credentials: Credentials::None,
        ca_cert_pem: None,
        carry,
        sequential_metrics: 0,
        expected_canary_share: None,
    };
    let first = measure(&plan, context(None, start)).await;
    assert!(first.judgement.is_none());
    let second = measure(
        &plan,
        context(first.carry, start.plus(Duration::from_secs(10))),
    )
    .await;
    let judgement = second.judgement.unwrap();
    assert_eq!(judgement.verdict, Verdict::Pass, "{}", judgement.message);
    assert_eq!(judgement.evidence.values.as_deref(), Some("[0.3]"));
}

/// A sequential metric on `address`: events and exposure as [canary, stable] queries.
fn sequential_metric(address: &str, events: [&str; 2], exposure: [&str; 2]) -> crate::MetricPlan {
    let spec: crate::MetricSpec = serde_json::from_value(serde_json::json!({
        "name": "errors-vs-stable",
        "interval": "1m",
        "provider": {"prometheus": {"address": address, "query": "unused"}},
        "sequential": {
            "events": {"canary": events[0], "stable": events[1]},
            "exposure": {"canary": exposure[0], "stable": exposure[1]}
        }
    }))
    .unwrap();
    spec.plan().unwrap()
}

#[tokio::test]
async fn a_provider_error_is_an_error_verdict_and_keeps_the_test_state() {
    use crate::measure::{MeasureContext, measure};
    let (address, _) = serve(json(503, "overloaded")).await;
    let plan = sequential_metric(&address, ["a", "b"], ["c", "d"]);
    let crate::spec::JudgePlan::Sequential(sequential_plan) = &plan.judge else {
        panic!("a sequential plan");
    };
    let state = crate::sequential::start(sequential_plan, Default::default(), 0.05);
    let carry = crate::measure::Carry::Sequential(Box::new(state));
    let now = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let outcome = measure(
        &plan,
        MeasureContext {
            now,
            run_started_at: now,
            credentials: Credentials::None,
            ca_cert_pem: None,
            carry: Some(carry.clone()),
            sequential_metrics: 1,
            expected_canary_share: None,
        },
    )
    .await;
    let judgement = outcome.judgement.unwrap();
    assert_eq!(judgement.verdict, Verdict::Error);
    assert!(judgement.message.contains("503"), "{}", judgement.message);
    assert_eq!(outcome.carry, Some(carry));
}
