use crate::lint::tests::{VALID, edit, rollout_report, without_template};
use crate::lint::{Finding, Level, Severity, has_errors, lint};

#[test]
fn a_template_not_in_the_file_is_a_warning_only() {
    let reports = lint(&without_template()).unwrap();
    assert!(!has_errors(&reports));
    let report = rollout_report(&without_template());
    let field = "spec.strategy.canary.steps[2].analysis.templates[0].templateName";
    let message = "not checked: AnalysisTemplate error-rate is not in this file";
    assert_eq!(report.findings, [Finding::warning(field, message)]);
    assert_eq!(
        report.to_string(),
        format!("Rollout web: warning: {field}: {message}")
    );
    // The controller's checks after the analyses still run.
    let yaml = without_template().replacen(
        "        nginx: {stableIngress: web}\n",
        "        nginx: {stableIngress: web}\n        maxTrafficWeight: 40\n",
        1,
    );
    let report = rollout_report(&yaml);
    assert_eq!(
        report.findings,
        [
            Finding::warning(field, message),
            Finding::invalid_spec(
                "spec.strategy.canary.steps[3].setWeight",
                "50 is above trafficRouting.maxTrafficWeight 40"
            )
        ]
    );
}

#[test]
fn a_template_in_another_namespace_is_not_the_one_used() {
    let yaml = edit(
        "metadata: {name: error-rate, namespace: shop}",
        "metadata: {name: error-rate, namespace: other}",
    );
    let report = rollout_report(&yaml);
    assert_eq!(report.findings.len(), 1, "{report}");
    assert_eq!(report.findings[0].severity, Severity::Warning);
}

#[test]
fn an_invalid_template_is_reported_and_not_used() {
    let yaml = edit("    count: 10\n", "    count: ten\n");
    let reports = lint(&yaml).unwrap();
    let template = reports
        .iter()
        .find(|r| r.kind == "AnalysisTemplate")
        .unwrap();
    assert_eq!(
        template.findings[0].field, "spec.metrics[0].count",
        "{template}"
    );
    let report = rollout_report(&yaml);
    assert_eq!(report.findings.len(), 1, "{report}");
    assert!(
        report.findings[0]
            .message
            .contains("invalid in this file (document 4)"),
        "{report}"
    );
}

#[test]
fn a_router_object_not_in_the_file_is_a_warning_only() {
    let cut = VALID.find("---\napiVersion: networking.k8s.io/v1").unwrap();
    let end = VALID
        .find("---\napiVersion: sluice.dev/v1alpha1\nkind: AnalysisTemplate")
        .unwrap();
    let yaml = format!("{}{}", &VALID[..cut], &VALID[end..]);
    let report = rollout_report(&yaml);
    assert_eq!(
        report.findings,
        [Finding::warning(
            "spec.strategy.canary.trafficRouting.nginx.stableIngress",
            "not checked: Ingress web is not in this file"
        )]
    );
    // An Ingress that does not send traffic to the stable Service is the reconcile's error.
    let yaml = edit(
        "backend: {service: {name: web-stable",
        "backend: {service: {name: api",
    );
    let report = rollout_report(&yaml);
    assert_eq!(
        report.findings,
        [Finding::invalid_spec(
            "spec.strategy.canary.trafficRouting.nginx.stableIngress",
            "Ingress web does not send traffic to Service web-stable"
        )]
    );
}

#[test]
fn every_problem_the_controller_would_find_is_reported_not_only_the_first() {
    // Two independent problems: a weight above the cap, and a canary Service that is also the
    // stable one. The controller's condition names the first; lint lists both, in its order.
    let yaml = without_template()
        .replacen(
            "        nginx: {stableIngress: web}\n",
            "        nginx: {stableIngress: web}\n        maxTrafficWeight: 40\n",
            1,
        )
        .replacen("canaryService: web-canary", "canaryService: web-stable", 1);
    let report = rollout_report(&yaml);
    let controller: Vec<&str> = report
        .findings
        .iter()
        .filter(|f| f.level == Level::Controller && f.severity == Severity::Error)
        .map(|f| f.field.as_str())
        .collect();
    assert_eq!(
        controller,
        [
            "spec.strategy.canary.steps[3].setWeight",
            "spec.strategy.canary.canaryService"
        ],
        "{report}"
    );
}
