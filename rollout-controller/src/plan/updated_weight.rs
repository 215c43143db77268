//! The share of traffic on the updated revision, as people read it. The canary's own weight
//! (`status.canary.weight`) is what the router is set to and goes back to 0 once the new version
//! is the stable one, which reads as "nothing shipped"; this is 100 then.

use crate::crd::RolloutStatus;

/// Percentage of traffic on the updated revision of a canary (`None` for other strategies): the
/// canary's weight while it rolls out, 100 once it is the stable one, 0 while aborted.
pub(crate) fn updated_weight(status: &RolloutStatus) -> Option<i32> {
    let canary = status.canary.as_ref()?;
    let finished = !status.abort
        && status.stable_revision.is_some()
        && status.stable_revision == status.updated_revision;
    Some(if finished { 100 } else { canary.weight })
}
