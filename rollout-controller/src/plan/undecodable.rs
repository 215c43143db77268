//! Objects a rollout needs that the controller cannot decode (see `crate::decode`). It cannot
//! plan around them: a template it cannot read is not "not found", a ReplicaSet it owns but
//! cannot read is not missing (creating it again would fail, or duplicate it). So the rollout
//! is InvalidSpec, naming the object and the decode error, until the object is fixed.

use super::InvalidSpec;
use super::runs::{TemplateKey, analyses};
use crate::crd::RolloutSpec;

/// One object of the rollout's that does not decode, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecodable {
    /// An AnalysisTemplate or ClusterAnalysisTemplate the spec names.
    Template { key: TemplateKey, error: String },
    /// A Service the spec names.
    Service { name: String, error: String },
    /// A ReplicaSet the rollout owns.
    ReplicaSet { name: String, error: String },
    /// An AnalysisRun the rollout owns.
    AnalysisRun { name: String, error: String },
}

/// The InvalidSpec of the first undecodable object, at the field that refers to it.
pub(crate) fn invalid_spec(spec: &RolloutSpec, undecodable: &[Undecodable]) -> Option<InvalidSpec> {
    let first = undecodable.first()?;
    let cannot = |what: String, error: &str| format!("{what} cannot be decoded: {error}");
    Some(match first {
        Undecodable::Template { key, error } => InvalidSpec {
            field: template_field(spec, key).unwrap_or_else(|| "spec.strategy".into()),
            message: cannot(format!("{} {}", key.kind(), key.name), error),
        },
        Undecodable::Service { name, error } => InvalidSpec {
            field: service_field(spec, name).unwrap_or_else(|| "spec.strategy".into()),
            message: cannot(format!("Service {name}"), error),
        },
        Undecodable::ReplicaSet { name, error } => InvalidSpec {
            field: "spec.template".into(),
            message: cannot(
                format!("ReplicaSet {name}, which this rollout owns,"),
                error,
            ),
        },
        Undecodable::AnalysisRun { name, error } => InvalidSpec {
            field: "status.analysisRuns".into(),
            message: cannot(
                format!("AnalysisRun {name}, which this rollout owns,"),
                error,
            ),
        },
    })
}

/// The first field that names template `key`.
fn template_field(spec: &RolloutSpec, key: &TemplateKey) -> Option<String> {
    analyses(spec).into_iter().find_map(|(field, analysis)| {
        analysis
            .templates
            .iter()
            .position(|t| {
                t.template_name == key.name && (t.cluster_scope == Some(true)) == key.cluster_scope
            })
            .map(|i| format!("{field}.templates[{i}].templateName"))
    })
}

/// The first field that names Service `name`.
fn service_field(spec: &RolloutSpec, name: &str) -> Option<String> {
    let strategy = &spec.strategy;
    let mut fields: Vec<(&str, Option<&str>)> = Vec::new();
    if let Some(bg) = &strategy.blue_green {
        fields.push((
            "spec.strategy.blueGreen.activeService",
            Some(&bg.active_service),
        ));
        fields.push((
            "spec.strategy.blueGreen.previewService",
            bg.preview_service.as_deref(),
        ));
    }
    if let Some(c) = &strategy.canary {
        fields.push((
            "spec.strategy.canary.stableService",
            c.stable_service.as_deref(),
        ));
        fields.push((
            "spec.strategy.canary.canaryService",
            c.canary_service.as_deref(),
        ));
    }
    if let Some(ab) = &strategy.ab_test {
        fields.push((
            "spec.strategy.abTest.stableService",
            Some(&ab.stable_service),
        ));
        fields.push((
            "spec.strategy.abTest.canaryService",
            Some(&ab.canary_service),
        ));
    }
    fields
        .into_iter()
        .find(|(_, named)| *named == Some(name))
        .map(|(field, _)| field.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::analysis::{AnalysisTemplateRef, RolloutAnalysis};
    use crate::crd::{Canary, CanaryStep, Strategy};

    fn canary_with_analysis_step() -> RolloutSpec {
        RolloutSpec {
            strategy: Strategy {
                canary: Some(Canary {
                    stable_service: Some("web-stable".into()),
                    steps: vec![
                        CanaryStep {
                            set_weight: Some(20),
                            ..CanaryStep::default()
                        },
                        CanaryStep {
                            analysis: Some(RolloutAnalysis {
                                templates: vec![
                                    AnalysisTemplateRef {
                                        template_name: "latency".into(),
                                        cluster_scope: None,
                                    },
                                    AnalysisTemplateRef {
                                        template_name: "errors".into(),
                                        cluster_scope: Some(true),
                                    },
                                ],
                                ..RolloutAnalysis::default()
                            }),
                            ..CanaryStep::default()
                        },
                    ],
                    ..Canary::default()
                }),
                ..Strategy::default()
            },
            ..RolloutSpec::default()
        }
    }

    #[test]
    fn an_undecodable_template_is_named_where_the_spec_refers_to_it() {
        let invalid = invalid_spec(
            &canary_with_analysis_step(),
            &[Undecodable::Template {
                key: TemplateKey {
                    cluster_scope: true,
                    name: "errors".into(),
                },
                error: "spec.metrics[0].count: invalid value".into(),
            }],
        )
        .unwrap();
        assert_eq!(
            invalid.field,
            "spec.strategy.canary.steps[1].analysis.templates[1].templateName"
        );
        assert_eq!(
            invalid.message,
            "ClusterAnalysisTemplate errors cannot be decoded: spec.metrics[0].count: invalid value"
        );
    }

    #[test]
    fn an_undecodable_service_or_owned_object_is_named_too() {
        let spec = canary_with_analysis_step();
        let service = invalid_spec(
            &spec,
            &[Undecodable::Service {
                name: "web-stable".into(),
                error: "bad".into(),
            }],
        )
        .unwrap();
        assert_eq!(service.field, "spec.strategy.canary.stableService");
        let run = invalid_spec(
            &spec,
            &[Undecodable::AnalysisRun {
                name: "web-abc-1-1".into(),
                error: "bad".into(),
            }],
        )
        .unwrap();
        assert!(
            run.message.starts_with("AnalysisRun web-abc-1-1"),
            "{run:?}"
        );
        assert_eq!(invalid_spec(&spec, &[]), None);
    }
}
