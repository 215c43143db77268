//! The pod-template hash: deterministic from the template alone, so the same template gets the
//! same hash across restarts and Sluice versions, and a template changed back finds its old
//! ReplicaSet again.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// Letters that never spell words (no vowels), as Kubernetes uses for generated names.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const LENGTH: usize = 10;

/// FNV-1a (64 bit) over the template's canonical JSON (object keys sorted, as serde_json's map
/// keeps them), written in [`ALPHABET`]. Fields a user never wrote are absent, not null, so
/// adding an optional field to a later k8s-openapi does not change existing hashes.
pub fn pod_template_hash(template: &PodTemplateSpec) -> String {
    let canonical = serde_json::to_value(template)
        .map(|value| value.to_string())
        .unwrap_or_default();
    let mut hash = fnv1a(canonical.as_bytes());
    let base = ALPHABET.len() as u64;
    let mut out = String::with_capacity(LENGTH);
    for _ in 0..LENGTH {
        out.push(char::from(ALPHABET[(hash % base) as usize]));
        hash /= base;
    }
    out
}

/// FNV-1a, 64 bit: stable across processes, platforms and Rust versions (unlike std's
/// randomly seeded hasher), which is what a value every replica must agree on needs.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> PodTemplateSpec {
        serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "web", "image": image}]},
        }))
        .unwrap()
    }

    #[test]
    fn the_hash_is_pinned() {
        // A change here re-creates every user's ReplicaSets: never change it on purpose.
        assert_eq!(pod_template_hash(&template("web:1.2")), "hm95b4jfhr");
    }

    #[test]
    fn label_order_does_not_matter_and_images_do() {
        let reordered: PodTemplateSpec = serde_json::from_value(json!({
            "spec": {"containers": [{"image": "web:1.2", "name": "web"}]},
            "metadata": {"labels": {"tier": "front", "app": "web"}},
        }))
        .unwrap();
        assert_eq!(
            pod_template_hash(&reordered),
            pod_template_hash(&template("web:1.2"))
        );
        assert_ne!(
            pod_template_hash(&template("web:1.3")),
            pod_template_hash(&template("web:1.2"))
        );
    }

    #[test]
    fn hashes_are_label_values() {
        let hash = pod_template_hash(&template("web:1.2"));
        assert_eq!(hash.len(), LENGTH);
        assert!(hash.bytes().all(|b| ALPHABET.contains(&b)));
    }
}
