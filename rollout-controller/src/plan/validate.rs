//! What the controller checks of a spec before it plans anything: every finding, in a fixed
//! order, each at its field. The planner stops at the first; lint reports them all.

use super::ab_test::ab_routes;
use super::replicas::read_bounds;
use super::{InvalidSpec, Observed, router, runs, selector, undecodable};
use crate::crd::RolloutSpec;

/// The first of [`findings`]: what the planner reports, as InvalidSpec, before it plans nothing.
pub(crate) fn validate(spec: &RolloutSpec, observed: &Observed) -> Result<(), InvalidSpec> {
    match findings(spec, observed).into_iter().next() {
        Some(invalid) => Err(invalid),
        None => Ok(()),
    }
}

/// A Rollout's name is a label value on its AnalysisRuns and canary Ingress.
pub(super) fn check_name(name: &str) -> Result<(), InvalidSpec> {
    if name.len() > crate::crd::MAX_ROLLOUT_NAME {
        return Err(InvalidSpec {
            field: "metadata.name".into(),
            message: format!(
                "{} characters: a Rollout's name is at most {} (it is a label value on its \
                 AnalysisRuns and canary Ingress)",
                name.len(),
                crate::crd::MAX_ROLLOUT_NAME
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
///
/// Every finding, in order; the order is part of the contract, as the first is the one the
/// rollout's status names.
pub(crate) fn findings(spec: &RolloutSpec, observed: &Observed) -> Vec<InvalidSpec> {
    // An object that cannot be read would otherwise be reported as missing: while one does not
    // decode, it is the only finding.
    if let Some(invalid) = undecodable::invalid_spec(spec, &observed.undecodable) {
        return vec![invalid];
    }
    let mut found = Vec::new();
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    found.extend(selector::check(&spec.selector, &labels).err());
    if let Some((surge, unavailable)) = read_bounds(spec) {
        found.extend(surge.err());
        found.extend(unavailable.err());
    }
    let require = |field: &str, name: Option<&str>| match name {
        Some(name) if !observed.services.contains_key(name) => Some(InvalidSpec {
            field: field.into(),
            message: format!("Service {name} not found"),
        }),
        _ => None,
    };
    if let Some(bg) = &spec.strategy.blue_green {
        found.extend(require(
            "spec.strategy.blueGreen.activeService",
            Some(&bg.active_service),
        ));
        found.extend(require(
            "spec.strategy.blueGreen.previewService",
            bg.preview_service.as_deref(),
        ));
        found.extend(apart(
            "spec.strategy.blueGreen.previewService",
            "activeService",
            &bg.active_service,
            bg.preview_service.as_deref(),
        ));
    }
    found.extend(runs::validate_analyses(spec, &observed.templates));
    found.extend(
        observed
            .router
            .as_ref()
            .and_then(|router| router::problem(spec, router)),
    );
    if let Some(c) = &spec.strategy.canary
        && let Some(routing) = &c.traffic_routing
    {
        let max = routing.max_traffic_weight.unwrap_or(100);
        for (i, step) in c.steps.iter().enumerate() {
            if let Some(w) = step.set_weight
                && w > max
            {
                found.push(InvalidSpec {
                    field: format!("spec.strategy.canary.steps[{i}].setWeight"),
                    message: format!("{w} is above trafficRouting.maxTrafficWeight {max}"),
                });
            }
            let Some(route) = &step.set_header_route else {
                continue;
            };
            let field = format!("spec.strategy.canary.steps[{i}].setHeaderRoute");
            let mut conditions = Vec::new();
            let mut resolved = true;
            for (j, m) in route.matches.iter().enumerate() {
                match m.resolve(&format!("{field}.match[{j}]")) {
                    Ok(condition) => conditions.push(condition),
                    Err(e) => {
                        resolved = false;
                        found.push(InvalidSpec {
                            field: format!("{field}.match[{j}]"),
                            message: e.to_string(),
                        });
                    }
                }
            }
            // Whether nginx can express a route is asked only of one that reads.
            if resolved
                && routing.nginx.is_some()
                && let Err(e) = traffic::nginx::lint(&[conditions], &field)
            {
                found.push(InvalidSpec {
                    field: field.clone(),
                    message: e.to_string(),
                });
            }
        }
    }
    if let Some(ab) = &spec.strategy.ab_test {
        found.extend(require(
            "spec.strategy.abTest.stableService",
            Some(&ab.stable_service),
        ));
        found.extend(require(
            "spec.strategy.abTest.canaryService",
            Some(&ab.canary_service),
        ));
        found.extend(apart(
            "spec.strategy.abTest.canaryService",
            "stableService",
            &ab.stable_service,
            Some(&ab.canary_service),
        ));
        if let Err(e) = humantime::parse_duration(&ab.duration) {
            found.push(InvalidSpec {
                field: "spec.strategy.abTest.duration".into(),
                message: format!("{:?} is not a duration: {e}", ab.duration),
            });
        }
        match ab_routes(ab) {
            Ok(routes) if ab.traffic_routing.nginx.is_some() => {
                if let Err(e) = traffic::nginx::lint(&routes, "spec.strategy.abTest.match") {
                    found.push(InvalidSpec {
                        field: "spec.strategy.abTest.match".into(),
                        message: e.to_string(),
                    });
                }
            }
            Ok(_) => {}
            Err(invalid) => found.push(invalid),
        }
    }
    if let Some(c) = &spec.strategy.canary {
        found.extend(require(
            "spec.strategy.canary.stableService",
            c.stable_service.as_deref(),
        ));
        found.extend(require(
            "spec.strategy.canary.canaryService",
            c.canary_service.as_deref(),
        ));
        if let Some(stable) = &c.stable_service {
            found.extend(apart(
                "spec.strategy.canary.canaryService",
                "stableService",
                stable,
                c.canary_service.as_deref(),
            ));
        }
        for (i, step) in c.steps.iter().enumerate() {
            if let Some(Err(e)) = step.pause.as_ref().and_then(|p| p.length()) {
                found.push(InvalidSpec {
                    field: format!("spec.strategy.canary.steps[{i}].pause.duration"),
                    message: e.to_string(),
                });
            }
        }
    }
    found
}

/// The Service at `field` is not the one at `other` (`name`): the controller pins each to a
/// version of its own, and one Service pinned to two would have its selector moved back and
/// forth on every reconcile.
fn apart(field: &str, other: &str, name: &str, service: Option<&str>) -> Option<InvalidSpec> {
    (service == Some(name)).then(|| InvalidSpec {
        field: field.into(),
        message: format!(
            "Service {name} is the {other} too; one Service cannot select both versions"
        ),
    })
}
