//! The rollout's progress as it happens: each change of phase, step, weight or revision is
//! told once and kept, with its time, for the summary.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rollout_controller::crd::Rollout;
use rollout_controller::view::view;

use crate::console::Console;
use crate::observe::Watched;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transition {
    pub at: SystemTime,
    pub phase: String,
    pub step: Option<i32>,
    /// "setWeight 20", "pause 10s", ... of the current step.
    pub step_description: Option<String>,
    pub steps: usize,
    pub weight: Option<i32>,
    pub stable: Option<String>,
    pub updated: Option<String>,
    pub aborted: bool,
    pub message: String,
}

impl Transition {
    fn of(rollout: &Rollout) -> Self {
        let v = view(rollout, &[], &[]);
        let step_description = v.current_step.and_then(|i| {
            v.steps
                .iter()
                .find(|s| s.index == i)
                .map(|s| s.description.clone())
        });
        Self {
            at: SystemTime::now(),
            phase: v.phase,
            step: v.current_step,
            step_description,
            steps: v.steps.len(),
            weight: v.weight,
            stable: v.stable_revision,
            updated: v.updated_revision,
            aborted: v.aborted,
            message: v.message,
        }
    }

    /// The same state, whatever the time or wording.
    fn same_state(&self, other: &Self) -> bool {
        (
            &self.phase,
            self.step,
            self.weight,
            &self.stable,
            &self.updated,
            self.aborted,
        ) == (
            &other.phase,
            other.step,
            other.weight,
            &other.stable,
            &other.updated,
            other.aborted,
        )
    }

    /// `Paused, canary weight 20%: step 2/6: pause 10s` (the controller's message names the
    /// step).
    pub(crate) fn describe(&self) -> String {
        let mut text = self.phase.clone();
        let rolling_out = self.stable != self.updated;
        if let (Some(weight), true) = (self.weight, rolling_out) {
            text.push_str(&format!(", canary weight {weight}%"));
        }
        if !self.message.is_empty() {
            text.push_str(&format!(": {}", self.message));
        } else if let (Some(step), Some(description), true) =
            (self.step, &self.step_description, rolling_out)
        {
            text.push_str(&format!(
                ": step {}/{}: {description}",
                step + 1,
                self.steps
            ));
        }
        text
    }
}

#[derive(Clone, Default)]
pub(crate) struct History(Arc<Mutex<Vec<Transition>>>);

impl History {
    pub(crate) fn all(&self) -> Vec<Transition> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn push_if_new(&self, transition: Transition) -> bool {
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if all.last().is_some_and(|last| last.same_state(&transition)) {
            return false;
        }
        all.push(transition);
        true
    }
}

/// Tells every change of `name` until the watch ends.
pub(crate) async fn narrate(
    rollouts: &Watched<Rollout>,
    name: &str,
    history: &History,
    console: &Console,
) -> anyhow::Error {
    let mut changes = rollouts.changes();
    loop {
        if let Some(rollout) = rollouts.get(name) {
            let transition = Transition::of(&rollout);
            let text = format!("rollout {name}: {}", transition.describe());
            if history.push_if_new(transition) {
                console.say(text);
            }
        }
        if changes.changed().await.is_err() {
            return anyhow::anyhow!("the watch of rollout {name} ended");
        }
    }
}
