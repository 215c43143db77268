//! Service selector pinning: each Service the strategy names selects one version's pods, and
//! only a version with pods ready to take its traffic.

use super::{Planner, SelectorChange};
use crate::crd::Rollout;

/// The Services a rollout's spec names.
pub(crate) fn referenced_services(rollout: &Rollout) -> Vec<String> {
    let strategy = &rollout.spec.strategy;
    let mut names = Vec::new();
    if let Some(bg) = &strategy.blue_green {
        names.push(bg.active_service.clone());
        names.extend(bg.preview_service.clone());
    }
    if let Some(c) = &strategy.canary {
        names.extend(c.stable_service.clone());
        names.extend(c.canary_service.clone());
    }
    if let Some(ab) = &strategy.ab_test {
        names.push(ab.stable_service.clone());
        names.push(ab.canary_service.clone());
    }
    names
}

impl Planner<'_> {
    /// Pins the stable/active Service to `stable` (to `new` once a blue-green has switched) and
    /// the canary/preview Service to `new`, each only to a version with pods ready to take its
    /// traffic.
    pub(super) fn pin_services(&mut self, stable: &str, new: &str) {
        let replicas = self.replicas();
        if let Some(bg) = &self.spec.strategy.blue_green {
            let active = bg.active_service.clone();
            let active_target = if self.active_on_new { new } else { stable };
            if self.observed.available(active_target) >= replicas.max(1) {
                self.select(&active, active_target);
                self.blue_green_status().active_selector = Some(active_target.to_owned());
            }
            if let Some(preview) = bg.preview_service.clone() {
                let preview_count = bg.preview_replica_count.unwrap_or(replicas).min(replicas);
                let target = if self.observed.available(new) >= preview_count.max(1) {
                    new
                } else {
                    stable
                };
                if self.observed.available(target) > 0 {
                    self.select(&preview, target);
                    self.blue_green_status().preview_selector = Some(target.to_owned());
                }
            }
        }
        let services = match (&self.spec.strategy.canary, &self.spec.strategy.ab_test) {
            (Some(c), _) => Some((c.stable_service.clone(), c.canary_service.clone())),
            (None, Some(ab)) => Some((
                Some(ab.stable_service.clone()),
                Some(ab.canary_service.clone()),
            )),
            _ => None,
        };
        if let Some((stable_service, canary_service)) = services {
            if let Some(service) = stable_service
                && self.observed.available(stable) > 0
            {
                self.select(&service, stable);
            }
            if let Some(service) = canary_service {
                // Only a version that keeps pods after this plan takes the canary Service.
                let keeps_pods = self.targets.get(new).is_none_or(|&n| n > 0);
                let target = if self.observed.available(new) > 0 && keeps_pods {
                    new
                } else {
                    stable
                };
                if self.observed.available(target) > 0 {
                    self.select(&service, target);
                }
            }
        }
    }

    pub(super) fn select(&mut self, service: &str, hash: &str) {
        let current = self
            .observed
            .services
            .get(service)
            .and_then(|selector| selector.get(crate::crd::POD_TEMPLATE_HASH_LABEL));
        if current.map(String::as_str) != Some(hash) {
            self.selectors.push(SelectorChange {
                service: service.to_owned(),
                hash: hash.to_owned(),
            });
        }
    }
}
