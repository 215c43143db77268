//! The linter on whole files: reading them, what the apiserver refuses of Sluice's CRDs, and the
//! reports. The fixtures here are shared with the controller's and the schema checker's tests.

use super::*;

/// A canary with nginx routing, its Services, its Ingress and the template its analysis
/// step uses: everything the controller needs, all valid.
pub(super) const VALID: &str = r#"
apiVersion: sluice.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop}
spec:
  replicas: 5
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {team: shop}}
    spec:
      containers:
      - name: web
        image: "web:1.2"
        ports: [{name: http, containerPort: 8080}]
        env: [{name: LOG, value: info}, {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 1, memory: 128Mi}}
        readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 5}
        livenessProbe: {tcpSocket: {port: 8080}}
        volumeMounts: [{name: cache, mountPath: /cache}]
        securityContext: {runAsNonRoot: true, capabilities: {drop: [ALL]}}
      volumes: [{name: cache, emptyDir: {}}]
  strategy:
    canary:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting:
        nginx: {stableIngress: web}
      steps:
      - setWeight: 10
      - pause: {duration: 2m}
      - analysis:
          templates: [{templateName: error-rate}]
          args: [{name: service, value: web}]
      - setWeight: 50
      - pause: {}
---
apiVersion: v1
kind: Service
metadata: {name: web-stable, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-canary, namespace: shop}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web-stable, port: {number: 80}}}
---
apiVersion: sluice.dev/v1alpha1
kind: AnalysisTemplate
metadata: {name: error-rate, namespace: shop}
spec:
  args: [{name: service}]
  metrics:
  - name: error-rate
    interval: 30s
    count: 10
    provider:
      prometheus:
        address: http://prometheus.monitoring:9090
        query: 'sum(rate(http_requests_total{service="{{args.service}}",code=~"5.."}[1m]))'
    successCondition: result[0] < 0.01
"#;

const AB_TEST: &str = r#"
    abTest:
      stableService: web-stable
      canaryService: web-canary
      trafficRouting:
        nginx: {stableIngress: web}
      match:
      - cookie: canary
      - cookie: beta
      duration: 30m
"#;

const GATEWAY_ROUTE: &str = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: gateway}]
  rules:
  - backendRefs: [{name: other, port: 80}]
"#;

/// `VALID` with `from` replaced by `to`; `from` must be in it.
pub(super) fn edit(from: &str, to: &str) -> String {
    assert!(VALID.contains(from), "{from:?} is not in the valid file");
    VALID.replacen(from, to, 1)
}

/// The VALID file without its AnalysisTemplate.
pub(super) fn without_template() -> String {
    let cut = VALID.find("---\napiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate");
    VALID[..cut.unwrap()].to_owned()
}

pub(super) fn rollout_report(yaml: &str) -> Report {
    let reports = lint(yaml).unwrap();
    reports
        .into_iter()
        .find(|r| r.kind == "Rollout")
        .expect("a report on the Rollout")
}

#[test]
fn a_valid_canary_with_its_objects_has_no_findings() {
    let reports = lint(VALID).unwrap();
    for report in &reports {
        assert!(report.findings.is_empty(), "{report}");
    }
    let subjects: Vec<String> = reports
        .iter()
        .map(|r| format!("{} {} {:?}", r.kind, r.name, r.document))
        .collect();
    assert_eq!(
        subjects,
        ["Rollout web Some(0)", "AnalysisTemplate error-rate Some(4)"]
    );
    assert!(!has_errors(&reports));
}

#[test]
fn each_problem_is_found_at_its_field() {
    let two_strategies = edit(
        "  strategy:\n",
        "  strategy:\n    rollingUpdate: {maxSurge: 1}\n",
    );
    let setweight_150 = edit("- setWeight: 50", "- setWeight: 150");
    let no_surge = edit(
        "      stableService: web-stable\n",
        "      stableService: web-stable\n      maxSurge: 0\n      maxUnavailable: 0%\n",
    );
    let bad_duration = edit("duration: 2m", "duration: five minutes");
    let two_actions = edit("- setWeight: 10\n", "- setWeight: 10\n        pause: {}\n");
    let selector = edit(
        "selector: {matchLabels: {app: web}}",
        "selector: {matchLabels: {app: api}}",
    );
    let two_headers = edit(
        "      - pause: {}\n",
        "      - pause: {}\n      - setHeaderRoute:\n          match:\n          - {headerName: X-A, headerValue: {exact: '1'}}\n          - {headerName: X-B, headerValue: {exact: '1'}}\n",
    );
    let canary_start = VALID.find("    canary:\n").unwrap();
    let canary_end = VALID.find("      - pause: {}\n").unwrap() + "      - pause: {}\n".len();
    let two_cookies = format!(
        "{}{}{}",
        &VALID[..canary_start],
        AB_TEST.trim_start_matches('\n'),
        &VALID[canary_end..]
    );
    let over_max = edit(
        "        nginx: {stableIngress: web}\n",
        "        nginx: {stableIngress: web}\n        maxTrafficWeight: 40\n",
    );
    let bad_metric = edit(
        "successCondition: result[0] < 0.01",
        "successCondition: 'result[0] <'",
    );
    let route_elsewhere = format!(
        "{}{GATEWAY_ROUTE}",
        edit(
            "nginx: {stableIngress: web}",
            "gatewayAPI: {httpRoute: web}"
        )
    );
    let malformed = edit(
        "metadata: {name: web, namespace: shop}",
        "metadata: {name: web, namespace: [shop]}",
    );
    let unknown_field = edit("- setWeight: 10\n", "- setWeight: 10\n        weight: 3\n");

    let cases: Vec<(&str, String, &str)> = vec![
        ("two strategies", two_strategies, "spec.strategy"),
        (
            "setWeight 150",
            setweight_150,
            "spec.strategy.canary.steps[3].setWeight",
        ),
        (
            "maxSurge and maxUnavailable 0",
            no_surge,
            "spec.strategy.canary",
        ),
        (
            "pause of five minutes",
            bad_duration,
            "spec.strategy.canary.steps[1].pause.duration",
        ),
        (
            "a step with two actions",
            two_actions,
            "spec.strategy.canary.steps[0]",
        ),
        (
            "selector not matching the labels",
            selector,
            "spec.selector",
        ),
        (
            "nginx header route on two headers",
            two_headers,
            "spec.strategy.canary.steps[5].setHeaderRoute",
        ),
        (
            "nginx A/B test on two cookies",
            two_cookies,
            "spec.strategy.abTest.match",
        ),
        (
            "setWeight above maxTrafficWeight",
            over_max,
            "spec.strategy.canary.steps[3].setWeight",
        ),
        (
            "a template's invalid metric",
            bad_metric,
            "spec.strategy.canary.steps[2].analysis.templates",
        ),
        (
            "an HTTPRoute without the stable Service",
            route_elsewhere,
            "spec.strategy.canary.trafficRouting.gatewayAPI.httpRoute",
        ),
        ("a malformed document", malformed, "metadata.namespace"),
        (
            "an unknown field",
            unknown_field,
            "spec.strategy.canary.steps[0].weight",
        ),
    ];
    for (name, yaml, field) in cases {
        let report = rollout_report(&yaml);
        let fields: Vec<(&str, Severity)> = report
            .findings
            .iter()
            .map(|f| (f.field.as_str(), f.severity))
            .collect();
        assert_eq!(fields, [(field, Severity::Error)], "{name}:\n{report}");
    }
}

#[test]
fn the_messages_say_what_is_wrong() {
    let report = rollout_report(&edit("- setWeight: 50", "- setWeight: 150"));
    assert_eq!(
        report.to_string(),
        "Rollout web: spec.strategy.canary.steps[3].setWeight: 150 is above 100"
    );
    let report = rollout_report(&edit(
        "  strategy:\n",
        "  strategy:\n    rollingUpdate: {}\n",
    ));
    assert_eq!(
        report.findings[0].message,
        "exactly one of strategy.rollingUpdate, strategy.blueGreen, strategy.canary or strategy.abTest must be set"
    );
    let report = rollout_report(&edit("duration: 2m", "duration: five minutes"));
    assert!(
        report.findings[0]
            .message
            .starts_with("\"five minutes\" does not match"),
        "{report}"
    );
    let report = rollout_report(&edit(
        "metadata: {name: web, namespace: shop}",
        "metadata: {name: web, namespace: [shop]}",
    ));
    assert_eq!(
        report.findings,
        [Finding::error(
            "metadata.namespace",
            "must be of type string, not array"
        )]
    );
}

fn errors(report: &Report) -> Vec<(&str, Level)> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| (f.field.as_str(), f.level))
        .collect()
}

#[test]
fn object_metadata_is_checked_as_the_apiserver_checks_it() {
    // Names the apiserver refuses and lint once passed: too long, not ASCII, empty.
    for name in [
        "a".repeat(254),
        "wéb".to_owned(),
        "''".to_owned(),
        "Web".to_owned(),
    ] {
        let yaml = edit(
            "metadata: {name: web, namespace: shop}",
            &format!("metadata: {{name: {name}, namespace: shop}}"),
        );
        let report = rollout_report(&yaml);
        // Past 63 characters the CRD's own rule on the whole object refuses it too.
        let mut expected = vec![("metadata.name", Level::Admission)];
        if name.len() > crate::crd::MAX_ROLLOUT_NAME {
            expected.push(("", Level::Admission));
        }
        assert_eq!(errors(&report), expected, "{name}: {report}");
    }
    assert!(
        rollout_report(&edit(
            "{name: web, namespace: shop}",
            "{name: web, namespace: Shop}"
        ))
        .to_string()
        .contains("metadata.namespace: \"Shop\": a lowercase RFC 1123 label")
    );
    let labelled = edit(
        "metadata: {name: web, namespace: shop}",
        "metadata: {name: web, namespace: shop, labels: {'not a key': x}}",
    );
    assert_eq!(
        errors(&rollout_report(&labelled)),
        [("metadata.labels[not a key]", Level::Admission)]
    );
    // An AnalysisTemplate with an empty name is refused, and not used.
    let yaml = edit(
        "metadata: {name: error-rate, namespace: shop}",
        "metadata: {name: '', namespace: shop}",
    );
    let reports = lint(&yaml).unwrap();
    let template = reports
        .iter()
        .find(|r| r.kind == "AnalysisTemplate")
        .unwrap();
    assert_eq!(
        errors(template),
        [("metadata.name", Level::Admission)],
        "{template}"
    );
    let unknown = edit(
        "metadata: {name: web, namespace: shop}",
        "metadata: {name: web, namespace: shop, nmae: web}",
    );
    assert_eq!(
        errors(&rollout_report(&unknown)),
        [("metadata.nmae", Level::Admission)]
    );
}

#[test]
fn a_step_of_pause_null_is_refused_as_the_apiserver_refuses_it() {
    // A null field is absent to the apiserver's CEL: the step sets nothing.
    let report = rollout_report(&edit("      - pause: {}\n", "      - pause: null\n"));
    assert_eq!(
        errors(&report),
        [("spec.strategy.canary.steps[4]", Level::Admission)],
        "{report}"
    );
}

#[test]
fn a_null_a_rule_reads_is_refused_not_defaulted() {
    // The apiserver keeps a nullable null and does not default it; the rule reading it
    // then finds no such key.
    let yaml = edit(
        "      stableService: web-stable\n",
        "      stableService: web-stable\n      maxSurge: null\n",
    );
    let report = rollout_report(&yaml);
    assert_eq!(
        errors(&report),
        [("spec.strategy.canary", Level::Admission)],
        "{report}"
    );
    assert!(
        report.findings[0]
            .message
            .ends_with("evaluating rule: maxSurge and maxUnavailable must not both be 0"),
        "{report}"
    );
}

#[test]
fn an_integer_beyond_64_bits_is_a_finding_at_its_field_not_an_unreadable_file() {
    for huge in [
        "18446744073709551616",
        "9223372036854775808",
        "-99999999999999999999999",
    ] {
        let yaml = edit("  replicas: 5\n", &format!("  replicas: {huge}\n"));
        let report = rollout_report(&yaml);
        assert_eq!(
            errors(&report),
            [("spec.replicas", Level::Admission)],
            "{huge}: {report}"
        );
    }
    // Beyond the field's int32, as the apiserver checks the format.
    let report = rollout_report(&edit("  replicas: 5\n", "  replicas: 4294967296\n"));
    assert!(
        errors(&report).contains(&("spec.replicas", Level::Admission)),
        "{report}"
    );
    // kubectl sends 5.0 and 1e1 as the integers 5 and 10.
    for integral in ["5.0", "1e1"] {
        let yaml = edit("  replicas: 5\n", &format!("  replicas: {integral}\n"));
        assert!(errors(&rollout_report(&yaml)).is_empty(), "{integral}");
    }
}

#[test]
fn a_pause_in_integer_seconds_is_accepted_as_argo_rollouts_writes_it() {
    for ok in ["10", "'10'", "0", "10s", "1h30m"] {
        let yaml = edit("duration: 2m", &format!("duration: {ok}"));
        assert!(errors(&rollout_report(&yaml)).is_empty(), "{ok}");
    }
    for bad in ["-5", "2147483648", "five", "'1.5h'", "1.5", "'10 s'"] {
        let yaml = edit("duration: 2m", &format!("duration: {bad}"));
        assert_eq!(
            errors(&rollout_report(&yaml)),
            [(
                "spec.strategy.canary.steps[1].pause.duration",
                Level::Admission
            )],
            "{bad}"
        );
    }
}

#[test]
fn a_status_in_the_file_is_dropped_but_an_unknown_field_in_it_is_refused() {
    let with_status = |status: &str| {
        edit(
            "metadata: {name: web, namespace: shop}\n",
            &format!("metadata: {{name: web, namespace: shop}}\nstatus: {status}\n"),
        )
    };
    let report = rollout_report(&with_status("{phase: Bogus, replicas: many}"));
    assert!(report.findings.is_empty(), "{report}");
    let report = rollout_report(&with_status("{bogus: 1}"));
    assert_eq!(errors(&report), [("status.bogus", Level::Admission)]);
}

#[test]
fn a_date_time_is_checked_as_the_apiserver_checks_its_format() {
    for ok in ["'2026-12-01T07:00:00Z'", "2026-12-01t07:00:00.5+01:00"] {
        let yaml = edit(
            "  replicas: 5\n",
            &format!("  replicas: 5\n  restartAt: {ok}\n"),
        );
        assert!(errors(&rollout_report(&yaml)).is_empty(), "{ok}");
    }
    for bad in [
        "'2026-12-01T07:00:00'",
        "yesterday",
        "'2026-02-30T07:00:00Z'",
        "5",
    ] {
        let yaml = edit(
            "  replicas: 5\n",
            &format!("  replicas: 5\n  restartAt: {bad}\n"),
        );
        assert_eq!(
            errors(&rollout_report(&yaml)),
            [("spec.restartAt", Level::Admission)],
            "{bad}"
        );
    }
}

#[test]
fn findings_say_whether_the_apiserver_or_the_controller_refuses() {
    let yaml = without_template().replacen(
        "        nginx: {stableIngress: web}\n",
        "        nginx: {stableIngress: web}\n        maxTrafficWeight: 40\n",
        1,
    );
    let report = rollout_report(&yaml);
    assert_eq!(
        errors(&report),
        [("spec.strategy.canary.steps[3].setWeight", Level::Controller)]
    );
    assert!(
        report
            .to_string()
            .ends_with("(the controller would mark the rollout InvalidSpec)"),
        "{report}"
    );
    let report = rollout_report(&edit("- setWeight: 50", "- setWeight: 150"));
    assert_eq!(
        errors(&report),
        [("spec.strategy.canary.steps[3].setWeight", Level::Admission)]
    );
    // What the schema lets through but the controller cannot read is the controller's.
    let finding = decode::<Rollout>(
        "Rollout",
        &serde_json::json!({"metadata": {"name": "web"}, "spec": {"replicas": "five"}}),
    )
    .unwrap_err();
    assert_eq!(
        (finding.field.as_str(), finding.level),
        ("spec.replicas", Level::Controller)
    );
    assert!(
        finding.message.starts_with("cannot be read as a Rollout: "),
        "{finding}"
    );
}

#[test]
fn a_file_without_a_rollout_fails() {
    let reports = lint("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n").unwrap();
    assert!(has_errors(&reports));
    assert_eq!(
        reports[0].to_string(),
        "file: no Rollout (sluice.dev/v1alpha1) in this file: nothing was checked"
    );
    assert!(has_errors(&lint("").unwrap()));
    // An Argo Rollout is not ours: a warning on it, and still no Rollout.
    let reports =
        lint("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: web}\n").unwrap();
    assert_eq!(reports[0].findings[0].severity, Severity::Warning);
    assert!(has_errors(&reports));
}

#[test]
fn unreadable_yaml_is_an_error_and_a_document_without_kind_a_finding() {
    let broken = format!("{VALID}---\nkind: [unclosed\n");
    assert!(matches!(
        lint(&broken),
        Err(LintError::Yaml { document: 5, .. })
    ));
    let reports = lint(&format!("{VALID}---\n- a list\n---\nname: no kind\n")).unwrap();
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| r.has_errors())
        .map(|r| r.to_string())
        .collect();
    assert_eq!(
        bad,
        [
            "document 5: not a Kubernetes object: the document is not a mapping",
            "document 6: kind: not a Kubernetes object: it has no kind"
        ]
    );
}

#[test]
fn reports_serialize_for_the_cli() {
    let report = rollout_report(&edit("- setWeight: 50", "- setWeight: 150"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "document": 0,
            "kind": "Rollout",
            "name": "web",
            "findings": [{
                "severity": "error",
                "level": "admission",
                "field": "spec.strategy.canary.steps[3].setWeight",
                "message": "150 is above 100",
            }],
        })
    );
    let back: Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    assert!(
        serde_norway::to_string(&report)
            .unwrap()
            .contains("severity: error")
    );
}

#[test]
fn the_cel_rules_are_skipped_after_a_blocking_error() {
    // `replicas: many` is a type error: the apiserver then leaves the CEL rules unevaluated.
    let yaml = edit("  replicas: 5\n", "  replicas: many\n  strategy2: {}\n").replacen(
        "  strategy:\n",
        "  strategy:\n    rollingUpdate: {}\n",
        1,
    );
    let report = rollout_report(&yaml);
    let fields: Vec<(&str, Severity)> = report
        .findings
        .iter()
        .map(|f| (f.field.as_str(), f.severity))
        .collect();
    assert_eq!(
        fields,
        [
            ("spec.strategy2", Severity::Error),
            ("spec.replicas", Severity::Error),
            ("", Severity::Warning)
        ],
        "{report}"
    );
}
