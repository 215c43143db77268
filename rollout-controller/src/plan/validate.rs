//! What the controller checks of a spec before it plans anything.

use super::ab_test::ab_routes;
use super::replicas::strategy_bounds;
use super::{InvalidSpec, Observed, analysis, selector, undecodable};
use crate::crd::RolloutSpec;

/// The Service at `field` is not the one at `other` (`name`): the controller pins each to a
/// version of its own, and one Service pinned to two would have its selector moved back and
/// forth on every reconcile.
pub(super) fn apart(
    field: &str,
    other: &str,
    name: &str,
    service: Option<&str>,
) -> Result<(), InvalidSpec> {
    if service == Some(name) {
        return Err(InvalidSpec {
            field: field.into(),
            message: format!(
                "Service {name} is the {other} too; one Service cannot select both versions"
            ),
        });
    }
    Ok(())
}

/// What the schema cannot check: Services that must exist, a selector that selects the
/// template (its matchExpressions too), maxSurge and maxUnavailable that read as counts or
/// percentages (checked by the CRD as well, but a Rollout stored before that rule, or written
/// past it, must not move pods by a guessed number), durations that parse, a
/// Service for each version.
pub(crate) fn validate(spec: &RolloutSpec, observed: &Observed) -> Result<(), InvalidSpec> {
    // First: an object that cannot be read would otherwise be reported as missing.
    if let Some(invalid) = undecodable::invalid_spec(spec, &observed.undecodable) {
        return Err(invalid);
    }
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    selector::check(&spec.selector, &labels)?;
    strategy_bounds(spec)?;
    let require = |field: &str, name: &Option<String>| -> Result<(), InvalidSpec> {
        match name {
            Some(name) if !observed.services.contains_key(name) => Err(InvalidSpec {
                field: field.into(),
                message: format!("Service {name} not found"),
            }),
            _ => Ok(()),
        }
    };
    if let Some(bg) = &spec.strategy.blue_green {
        require(
            "spec.strategy.blueGreen.activeService",
            &Some(bg.active_service.clone()),
        )?;
        require(
            "spec.strategy.blueGreen.previewService",
            &bg.preview_service,
        )?;
        apart(
            "spec.strategy.blueGreen.previewService",
            "activeService",
            &bg.active_service,
            bg.preview_service.as_deref(),
        )?;
    }
    analysis::validate_analyses(spec, &observed.templates)?;
    if let Some(problem) = &observed.router_problem {
        return Err(problem.clone());
    }
    if let Some(c) = &spec.strategy.canary
        && let Some(routing) = &c.traffic_routing
    {
        let max = routing.max_traffic_weight.unwrap_or(100);
        for (i, step) in c.steps.iter().enumerate() {
            if let Some(w) = step.set_weight
                && w > max
            {
                return Err(InvalidSpec {
                    field: format!("spec.strategy.canary.steps[{i}].setWeight"),
                    message: format!("{w} is above trafficRouting.maxTrafficWeight {max}"),
                });
            }
            let Some(route) = &step.set_header_route else {
                continue;
            };
            let field = format!("spec.strategy.canary.steps[{i}].setHeaderRoute");
            let mut conditions = Vec::new();
            for (j, m) in route.matches.iter().enumerate() {
                let resolved =
                    m.resolve(&format!("{field}.match[{j}]"))
                        .map_err(|e| InvalidSpec {
                            field: format!("{field}.match[{j}]"),
                            message: e.to_string(),
                        })?;
                conditions.push(resolved);
            }
            if routing.nginx.is_some() {
                traffic::nginx::lint(&[conditions], &field).map_err(|e| InvalidSpec {
                    field: field.clone(),
                    message: e.to_string(),
                })?;
            }
        }
    }
    if let Some(ab) = &spec.strategy.ab_test {
        require(
            "spec.strategy.abTest.stableService",
            &Some(ab.stable_service.clone()),
        )?;
        require(
            "spec.strategy.abTest.canaryService",
            &Some(ab.canary_service.clone()),
        )?;
        apart(
            "spec.strategy.abTest.canaryService",
            "stableService",
            &ab.stable_service,
            Some(&ab.canary_service),
        )?;
        humantime::parse_duration(&ab.duration).map_err(|e| InvalidSpec {
            field: "spec.strategy.abTest.duration".into(),
            message: format!("{:?} is not a duration: {e}", ab.duration),
        })?;
        let routes = ab_routes(ab)?;
        if ab.traffic_routing.nginx.is_some() {
            traffic::nginx::lint(&routes, "spec.strategy.abTest.match").map_err(|e| {
                InvalidSpec {
                    field: "spec.strategy.abTest.match".into(),
                    message: e.to_string(),
                }
            })?;
        }
    }
    if let Some(c) = &spec.strategy.canary {
        require("spec.strategy.canary.stableService", &c.stable_service)?;
        require("spec.strategy.canary.canaryService", &c.canary_service)?;
        if let Some(stable) = &c.stable_service {
            apart(
                "spec.strategy.canary.canaryService",
                "stableService",
                stable,
                c.canary_service.as_deref(),
            )?;
        }
        for (i, step) in c.steps.iter().enumerate() {
            if let Some(Err(e)) = step.pause.as_ref().and_then(|p| p.length()) {
                return Err(InvalidSpec {
                    field: format!("spec.strategy.canary.steps[{i}].pause.duration"),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(())
}
