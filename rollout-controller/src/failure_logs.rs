//! The log lines of failed reconciles name the namespace: the error policies write them outside
//! the span that carries it, and a rollout's name alone is ambiguous across namespaces.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::crd::Rollout;
use crate::crd::analysis::AnalysisRun;
use crate::reconcile::{ReconcileError, log_reconcile_failure};
use crate::runner::{RunnerError, log_run_failure};

/// What was logged while `f` ran, as the text format writes it to a file.
fn logged(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn a_failed_reconcile_is_logged_with_its_namespace() {
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {}, "template": {}, "strategy": {"canary": {}}},
    }))
    .unwrap();
    let error = ReconcileError::Manifest {
        name: "web-abc".into(),
        detail: "no pod spec".into(),
    };
    let line = logged(|| log_reconcile_failure(&rollout, &error));
    assert!(
        line.contains("namespace=shop") && line.contains("rollout=web"),
        "{line}"
    );
    assert!(
        line.contains("building ReplicaSet web-abc: no pod spec"),
        "{line}"
    );
}

#[test]
fn a_failed_analysis_run_is_logged_with_its_namespace() {
    let run: AnalysisRun = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "AnalysisRun",
        "metadata": {"name": "web-abc-1-1", "namespace": "shop"},
        "spec": {"metrics": [{"name": "errors", "provider": {"prometheus": {"address": "http://127.0.0.1:9", "query": "q"}}}]},
    }))
    .unwrap();
    let line = logged(|| log_run_failure(&run, &RunnerError::NoNamespace));
    assert!(
        line.contains("namespace=shop") && line.contains("analysis_run=web-abc-1-1"),
        "{line}"
    );
}
