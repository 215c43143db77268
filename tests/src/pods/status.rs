//! The pod status the runner reports, as strategic-merge patches: conditions merge by `type`,
//! container statuses by `name`; explicit nulls clear the container state kinds not in force.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// What the runner knows about its container.
#[derive(Debug, Clone)]
pub(super) struct ContainerReport {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) restart_count: i32,
    pub(super) ready: bool,
    pub(super) state: State,
    /// The previous run's end, as kubelet reports it in `lastState`.
    pub(super) last_terminated: Option<Terminated>,
}

#[derive(Debug, Clone)]
pub(super) enum State {
    Running { started_at: Timestamp },
    Waiting { reason: String, message: String },
}

#[derive(Debug, Clone)]
pub(super) struct Terminated {
    pub(super) exit_code: i32,
    pub(super) reason: String,
    pub(super) started_at: Timestamp,
    pub(super) finished_at: Timestamp,
}

impl ContainerReport {
    pub(super) fn patch(&self) -> Value {
        let now = Timestamp::now().to_string();
        let ready = if self.ready { "True" } else { "False" };
        let state = match &self.state {
            State::Running { started_at } => json!({
                "running": {"startedAt": started_at.to_string()},
                "waiting": null, "terminated": null,
            }),
            State::Waiting { reason, message } => json!({
                "waiting": {"reason": reason, "message": message},
                "running": null, "terminated": null,
            }),
        };
        let last_state = match &self.last_terminated {
            Some(t) => json!({"terminated": {
                "exitCode": t.exit_code,
                "reason": t.reason,
                "startedAt": t.started_at.to_string(),
                "finishedAt": t.finished_at.to_string(),
            }}),
            None => json!({}),
        };
        json!({"status": {
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": [{
                "name": self.name,
                "image": self.image,
                "imageID": "",
                "ready": self.ready,
                "started": matches!(self.state, State::Running { .. }),
                "restartCount": self.restart_count,
                "state": state,
                "lastState": last_state,
            }],
        }})
    }
}
