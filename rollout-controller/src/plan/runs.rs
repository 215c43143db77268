//! Analysis in the plan: which AnalysisRuns a rollout needs now, built from templates and
//! resolved arguments, and what their phases mean for the rollout (go on, wait, pause, abort).

use std::collections::BTreeMap;

use analysis::lifecycle::Phase as RunPhase;
use k8s_openapi::jiff::Timestamp;

use super::EventReason;
use super::pause::PauseReason;
use super::{EventType, InvalidSpec, Planner};
pub use crate::crd::analysis::RunKind;
use crate::crd::analysis::{
    AnalysisRunSpec, AnalysisTemplateSpec, Argument, DryRunMetric, HashValue, RolloutAnalysis,
};
use crate::crd::{AnalysisRunRef, RolloutSpec};

/// AnalysisRuns of a rollout kept after they stop gating it, newest first.
pub const ANALYSIS_RUN_HISTORY: usize = 10;

/// An AnalysisRun the stores hold for a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRun {
    pub phase: RunPhase,
    pub message: String,
    /// `spec.terminate` is set: it is ending.
    pub terminating: bool,
    pub created_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
}

/// A template as the stores hold it: namespaced (`AnalysisTemplate`) or cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateKey {
    pub cluster_scope: bool,
    pub name: String,
}

impl TemplateKey {
    pub(crate) fn kind(&self) -> &'static str {
        if self.cluster_scope {
            "ClusterAnalysisTemplate"
        } else {
            "AnalysisTemplate"
        }
    }
}

/// An AnalysisRun to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAnalysisRun {
    pub name: String,
    pub kind: RunKind,
    /// The revision it analyses.
    pub hash: String,
    pub spec: AnalysisRunSpec,
}

/// What an AnalysisRun's phase means for the rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Measuring (or just created): wait.
    Running,
    Passed,
    /// Failed or Error: abort. The message names the run and its metric.
    Failed(String),
    /// Pause for a person.
    Inconclusive(String),
}

/// What a strategy does after an analysis gate, the gate having been acted on the same way
/// everywhere (`Planner::analysis_gate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Passed, or inconclusive and promoted past: go on.
    Pass,
    /// Measuring (or just created): wait.
    Wait,
    /// Inconclusive: the rollout is paused for a person; why.
    Hold(String),
    /// Failed: the rollout aborted in this reconcile (`abort_now`); plan nothing more.
    Aborted,
}

/// `<rollout>-<hash>-<kind>-<attempt>`, cut from the front of the rollout's name to fit the
/// 253 characters of an object name.
pub fn run_name(rollout: &str, hash: &str, kind: RunKind, attempt: i32) -> String {
    let suffix = format!("-{hash}-{}-{attempt}", kind.name_part());
    let room = 253usize.saturating_sub(suffix.len());
    let prefix: String = rollout.chars().take(room).collect();
    format!("{}{suffix}", prefix.trim_end_matches(['-', '.']))
}

/// Every analysis block of a spec, with its field path.
pub fn analyses(spec: &RolloutSpec) -> Vec<(String, &RolloutAnalysis)> {
    let mut out = Vec::new();
    let strategy = &spec.strategy;
    if let Some(rolling) = &strategy.rolling_update
        && let Some(a) = &rolling.analysis
    {
        out.push(("spec.strategy.rollingUpdate.analysis".to_owned(), a));
    }
    if let Some(bg) = &strategy.blue_green {
        if let Some(a) = &bg.pre_promotion_analysis {
            out.push(("spec.strategy.blueGreen.prePromotionAnalysis".to_owned(), a));
        }
        if let Some(a) = &bg.post_promotion_analysis {
            out.push((
                "spec.strategy.blueGreen.postPromotionAnalysis".to_owned(),
                a,
            ));
        }
    }
    if let Some(ab) = &strategy.ab_test
        && let Some(a) = &ab.analysis
    {
        out.push(("spec.strategy.abTest.analysis".to_owned(), a));
    }
    if let Some(canary) = &strategy.canary {
        if let Some(a) = &canary.analysis {
            out.push(("spec.strategy.canary.analysis".to_owned(), a));
        }
        for (i, step) in canary.steps.iter().enumerate() {
            if let Some(a) = &step.analysis {
                out.push((format!("spec.strategy.canary.steps[{i}].analysis"), a));
            }
        }
    }
    out
}

/// The templates a spec refers to.
pub fn referenced_templates(spec: &RolloutSpec) -> Vec<TemplateKey> {
    let mut keys: Vec<TemplateKey> = analyses(spec)
        .into_iter()
        .flat_map(|(_, a)| a.templates.iter())
        .map(|t| TemplateKey {
            cluster_scope: t.cluster_scope == Some(true),
            name: t.template_name.clone(),
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Merges the templates of `analysis` into one run spec, with arguments resolved: values and
/// pod-template hashes are written in; Secret references stay references, read only when a
/// metric is measured. Every metric is checked as the runner will check it, so a run that is
/// created can run.
pub fn build_run_spec(
    analysis: &RolloutAnalysis,
    field: &str,
    templates: &BTreeMap<TemplateKey, AnalysisTemplateSpec>,
    stable: &str,
    latest: &str,
) -> Result<AnalysisRunSpec, InvalidSpec> {
    let invalid = |field: String, message: String| InvalidSpec { field, message };
    let mut metrics = Vec::new();
    let mut declared: Vec<Argument> = Vec::new();
    let mut dry_run: Vec<DryRunMetric> = Vec::new();
    for (i, reference) in analysis.templates.iter().enumerate() {
        let key = TemplateKey {
            cluster_scope: reference.cluster_scope == Some(true),
            name: reference.template_name.clone(),
        };
        let template_field = format!("{field}.templates[{i}].templateName");
        let Some(template) = templates.get(&key) else {
            return Err(invalid(
                template_field,
                format!("{} {} not found", key.kind(), key.name),
            ));
        };
        for metric in &template.metrics {
            if metrics
                .iter()
                .any(|m: &analysis::MetricSpec| m.name == metric.name)
            {
                return Err(invalid(
                    template_field,
                    format!(
                        "metric {:?} of {} {} is also in another template",
                        metric.name,
                        key.kind(),
                        key.name
                    ),
                ));
            }
            metrics.push(metric.clone());
        }
        for arg in &template.args {
            if !declared.iter().any(|a| a.name == arg.name) {
                declared.push(arg.clone());
            }
        }
        dry_run.extend(template.dry_run.iter().cloned());
    }
    for (i, arg) in analysis.args.iter().enumerate() {
        if !declared.iter().any(|a| a.name == arg.name) {
            return Err(invalid(
                format!("{field}.args[{i}]"),
                format!("no template declares an argument {:?}", arg.name),
            ));
        }
    }
    let mut args = Vec::new();
    for arg in declared {
        let given = analysis
            .args
            .iter()
            .find(|a| a.name == arg.name)
            .unwrap_or(&arg);
        let resolved = match (&given.value, &given.value_from) {
            (Some(value), _) => Argument {
                name: arg.name.clone(),
                value: Some(value.clone()),
                value_from: None,
            },
            (None, Some(from)) => match (from.pod_template_hash_value, &from.secret_key_ref) {
                (Some(which), _) => Argument {
                    name: arg.name.clone(),
                    value: Some(match which {
                        HashValue::Stable => stable.to_owned(),
                        HashValue::Latest => latest.to_owned(),
                    }),
                    value_from: None,
                },
                (None, Some(_)) => given.clone(),
                (None, None) => {
                    return Err(invalid(
                        format!("{field}.args"),
                        format!("argument {:?} has an empty valueFrom", arg.name),
                    ));
                }
            },
            (None, None) => {
                return Err(invalid(
                    format!("{field}.args"),
                    format!("argument {:?} has no value", arg.name),
                ));
            }
        };
        args.push(resolved);
    }
    // Check each metric as the runner will run it; Secret values are not read here, so a
    // stand-in takes their place.
    let values: BTreeMap<String, String> = args
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                a.value.clone().unwrap_or_else(|| "secret".to_owned()),
            )
        })
        .collect();
    for metric in &metrics {
        let checked = metric.with_args(&values).and_then(|m| m.plan().map(|_| ()));
        if let Err(error) = checked {
            return Err(invalid(format!("{field}.templates"), error.to_string()));
        }
    }
    for (i, dry) in dry_run.iter().enumerate() {
        if !metrics.iter().any(|m| m.name == dry.metric_name) {
            return Err(invalid(
                format!("{field}.templates"),
                format!(
                    "dryRun[{i}] names metric {:?}, which no template has",
                    dry.metric_name
                ),
            ));
        }
    }
    Ok(AnalysisRunSpec {
        metrics,
        args,
        dry_run,
        terminate: None,
    })
}

/// Checks every analysis block of `spec` against the templates that exist: what is wrong with
/// each block (the first thing wrong in it), in the order of [`analyses`].
pub(crate) fn validate_analyses(
    spec: &RolloutSpec,
    templates: &BTreeMap<TemplateKey, AnalysisTemplateSpec>,
) -> Vec<InvalidSpec> {
    analyses(spec)
        .into_iter()
        .filter_map(|(field, analysis)| {
            build_run_spec(analysis, &field, templates, "stable", "latest").err()
        })
        .collect()
}

impl Planner<'_> {
    pub(super) fn run_name(&self, kind: RunKind) -> String {
        run_name(&self.name, &self.new, kind, self.status.attempt)
    }

    /// Looks at (or starts) the run that gates `kind` now; the run is kept alive this reconcile.
    fn gate(&mut self, kind: RunKind, analysis: &RolloutAnalysis, field: &str) -> Gate {
        let name = self.run_name(kind);
        let (gate, phase) = match self.observed.analysis_runs.get(&name) {
            None => {
                if !self.create_runs.iter().any(|r| r.name == name) {
                    let stable = self.status.stable_revision.clone().unwrap_or_default();
                    match build_run_spec(
                        analysis,
                        field,
                        &self.observed.templates,
                        &stable,
                        &self.new,
                    ) {
                        Ok(spec) => {
                            self.create_runs.push(NewAnalysisRun {
                                name: name.clone(),
                                kind,
                                hash: self.new.clone(),
                                spec,
                            });
                            let message = format!("analysis run {name} started ({kind})");
                            self.event(EventType::Normal, EventReason::AnalysisStarted, message);
                        }
                        // validate() checked it; a template changed since would land here.
                        Err(invalid) => {
                            let why = format!("{}: {}", invalid.field, invalid.message);
                            return Gate::Failed(why);
                        }
                    }
                }
                (Gate::Running, RunPhase::Pending)
            }
            Some(run) => {
                let gate = match run.phase {
                    RunPhase::Successful => Gate::Passed,
                    RunPhase::Failed | RunPhase::Error => {
                        if self.abort_latency_since.is_none() {
                            self.abort_latency_since = run.completed_at;
                        }
                        Gate::Failed(format!(
                            "analysis run {name} ended {:?}: {}",
                            run.phase, run.message
                        ))
                    }
                    RunPhase::Inconclusive => Gate::Inconclusive(format!(
                        "analysis run {name} is inconclusive: {}",
                        run.message
                    )),
                    RunPhase::Pending | RunPhase::Running => Gate::Running,
                };
                (gate, run.phase)
            }
        };
        self.wanted_runs.push(name.clone());
        let dismissed = self.is_dismissed(&name);
        self.status.analysis_runs.retain(|r| r.name != name);
        self.status.analysis_runs.push(AnalysisRunRef {
            name,
            kind: kind.into(),
            phase: phase.into(),
            dismissed,
        });
        if dismissed && matches!(gate, Gate::Inconclusive(_)) {
            return Gate::Passed;
        }
        gate
    }

    /// The run that gates `kind`, acted on: a failed one aborts now; an inconclusive one is
    /// dismissed when `approved` (a person promoted past it), else pauses the rollout for one.
    pub(super) fn analysis_gate(
        &mut self,
        kind: RunKind,
        analysis: &RolloutAnalysis,
        field: &str,
        approved: bool,
    ) -> Verdict {
        match self.gate(kind, analysis, field) {
            Gate::Failed(why) => {
                self.abort_now(EventReason::AnalysisFailed, why);
                Verdict::Aborted
            }
            Gate::Inconclusive(_) if approved => {
                self.dismiss(kind);
                Verdict::Pass
            }
            Gate::Inconclusive(why) => {
                self.pause_inconclusive(&why);
                Verdict::Hold(why)
            }
            Gate::Passed => Verdict::Pass,
            Gate::Running => Verdict::Wait,
        }
    }

    fn is_dismissed(&self, name: &str) -> bool {
        self.status
            .analysis_runs
            .iter()
            .any(|r| r.name == name && r.dismissed)
    }

    /// A person promoted past an inconclusive run: it pauses nothing more this attempt.
    fn dismiss(&mut self, kind: RunKind) {
        let name = self.run_name(kind);
        for reference in &mut self.status.analysis_runs {
            if reference.name == name {
                reference.dismissed = true;
            }
        }
        self.clear_inconclusive();
    }

    /// Holds the rollout for a person after an inconclusive analysis; Warns once.
    fn pause_inconclusive(&mut self, why: &str) {
        if self.set_pause(PauseReason::AnalysisInconclusive, true) {
            self.event(
                EventType::Warning,
                EventReason::AnalysisInconclusive,
                why.to_owned(),
            );
        }
    }

    pub(super) fn clear_inconclusive(&mut self) {
        self.set_pause(PauseReason::AnalysisInconclusive, false);
    }

    /// While the user pauses a rollout, its runs go on: measuring costs nothing, and a failing
    /// background analysis still aborts.
    pub(super) fn keep_runs(&mut self) {
        let refs = std::mem::take(&mut self.status.analysis_runs);
        for mut reference in refs {
            if let Some(run) = self.observed.analysis_runs.get(&reference.name) {
                reference.phase = run.phase.into();
            }
            self.wanted_runs.push(reference.name.clone());
            self.status.analysis_runs.push(reference);
        }
    }

    /// Runs of this rollout that nothing gates any more and still measure: terminate them.
    /// Finished runs beyond the history: delete them.
    pub(super) fn run_housekeeping(&self) -> (Vec<String>, Vec<String>) {
        let terminate = self
            .observed
            .analysis_runs
            .iter()
            .filter(|(name, run)| {
                !run.phase.is_terminal() && !run.terminating && !self.wanted_runs.contains(name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let mut finished: Vec<(&String, &ObservedRun)> = self
            .observed
            .analysis_runs
            .iter()
            .filter(|(name, run)| run.phase.is_terminal() && !self.wanted_runs.contains(name))
            .filter(|(name, _)| !self.status.analysis_runs.iter().any(|r| &r.name == *name))
            .collect();
        finished.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at).then(b.0.cmp(a.0)));
        let delete = finished
            .into_iter()
            .skip(ANALYSIS_RUN_HISTORY)
            .map(|(name, _)| name.clone())
            .collect();
        (terminate, delete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(value: serde_json::Value) -> AnalysisTemplateSpec {
        serde_json::from_value(value).unwrap()
    }

    fn templates() -> BTreeMap<TemplateKey, AnalysisTemplateSpec> {
        BTreeMap::from([(
            TemplateKey {
                cluster_scope: false,
                name: "error-rate".into(),
            },
            template(json!({
                "args": [{"name": "service"},
                         {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
                         {"name": "token", "valueFrom": {"secretKeyRef": {"name": "prom", "key": "t"}}}],
                "metrics": [{"name": "errors", "interval": "30s", "count": 3,
                             "provider": {"prometheus": {"address": "http://127.0.0.1:9090",
                                 "query": "rate(e{s=\"{{args.service}}\",h=\"{{args.canary-hash}}\",t=\"{{args.token}}\"}[1m])"}},
                             "successCondition": "result[0] < 0.01"}],
            })),
        )])
    }

    fn analysis(value: serde_json::Value) -> RolloutAnalysis {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn arguments_resolve_from_values_hashes_and_secrets() {
        let a = analysis(json!({"templates": [{"templateName": "error-rate"}],
                                "args": [{"name": "service", "value": "web"}]}));
        let spec = build_run_spec(&a, "f", &templates(), "s1", "l2").unwrap();
        let by_name = |n: &str| spec.args.iter().find(|a| a.name == n).unwrap().clone();
        assert_eq!(by_name("service").value.as_deref(), Some("web"));
        assert_eq!(by_name("canary-hash").value.as_deref(), Some("l2"));
        assert!(by_name("token").value.is_none());
        assert!(
            by_name("token")
                .value_from
                .unwrap()
                .secret_key_ref
                .is_some()
        );
    }

    #[test]
    fn bad_references_name_the_field() {
        let cases = [
            (
                json!({"templates": [{"templateName": "nope"}]}),
                "f.templates[0].templateName",
                "AnalysisTemplate nope not found",
            ),
            (
                json!({"templates": [{"templateName": "error-rate", "clusterScope": true}]}),
                "f.templates[0].templateName",
                "ClusterAnalysisTemplate error-rate not found",
            ),
            (
                json!({"templates": [{"templateName": "error-rate"}]}),
                "f.args",
                "argument \"service\" has no value",
            ),
            (
                json!({"templates": [{"templateName": "error-rate"}],
                       "args": [{"name": "service", "value": "web"}, {"name": "typo", "value": "x"}]}),
                "f.args[1]",
                "no template declares an argument \"typo\"",
            ),
        ];
        for (value, field, message) in cases {
            let error = build_run_spec(&analysis(value), "f", &templates(), "s", "l").unwrap_err();
            assert_eq!(error.field, field);
            assert!(error.message.contains(message), "{}", error.message);
        }
    }

    #[test]
    fn an_invalid_metric_in_a_template_is_an_invalid_spec() {
        let mut templates = templates();
        templates.insert(
            TemplateKey {
                cluster_scope: true,
                name: "broken".into(),
            },
            template(json!({"metrics": [{"name": "m", "interval": "soon",
                "provider": {"prometheus": {"address": "http://127.0.0.1:9090", "query": "up"}}}]})),
        );
        let a = analysis(json!({"templates": [{"templateName": "broken", "clusterScope": true}]}));
        let error = build_run_spec(&a, "f", &templates, "s", "l").unwrap_err();
        assert_eq!(error.field, "f.templates");
        assert!(
            error.message.contains("metrics[m].interval"),
            "{}",
            error.message
        );
    }

    #[test]
    fn run_names_fit_an_object_name() {
        assert_eq!(run_name("web", "abc", RunKind::Step(2), 1), "web-abc-2-1");
        assert_eq!(
            run_name("web", "abc", RunKind::Background, 3),
            "web-abc-bg-3"
        );
        let long = "w".repeat(300);
        let name = run_name(&long, "abc", RunKind::PostPromotion, 12);
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-abc-post-12"));
    }
}
