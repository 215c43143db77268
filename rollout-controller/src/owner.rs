//! What a rollout owns: the objects whose controller owner reference names it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::Rollout;

/// Whether the object of `metadata` is controlled by `rollout` (its owner reference with
/// `controller: true`). Metadata rather than the object, so that an object that did not decode
/// is judged alike.
pub fn owned_by(rollout: &Rollout, metadata: &ObjectMeta) -> bool {
    let uid = rollout.metadata.uid.as_ref();
    metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid)
}

/// The objects of one watched kind by the uid of their controller: a reconcile, or a view, finds
/// what a rollout owns without copying the whole store (`Store::state` is one `Arc` clone per
/// cached object), which would make each reconcile cost as much as all ReplicaSets together and
/// a mass update of N rollouts cost N².
///
/// Kept by the watch that fills the store (`decode::TolerantWriter`), from the same events and
/// in the same order: during a relist the old index serves, as the store's old state does,
/// until the list is complete. Entries name objects; the store holds them.
pub(crate) struct OwnedIndex<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    index: Arc<RwLock<Index<K>>>,
}

impl<K> Clone for OwnedIndex<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            index: self.index.clone(),
        }
    }
}

struct Index<K: Resource<DynamicType = ()>> {
    live: Owners<K>,
    /// The index being listed anew, from `Init` to `InitDone`.
    relisting: Option<Owners<K>>,
}

struct Owners<K: Resource<DynamicType = ()>> {
    by_owner: HashMap<String, HashSet<ObjectRef<K>>>,
    owner_of: HashMap<ObjectRef<K>, String>,
}

impl<K: Resource<DynamicType = ()>> Default for Owners<K> {
    fn default() -> Self {
        Self {
            by_owner: HashMap::new(),
            owner_of: HashMap::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Owners<K> {
    fn insert(&mut self, object: &K) {
        let key = crate::decode::object_ref(object.meta());
        self.remove(&key);
        if let Some(owner) = controller_uid(object.meta()) {
            self.by_owner
                .entry(owner.clone())
                .or_default()
                .insert(key.clone());
            self.owner_of.insert(key, owner);
        }
    }

    fn remove(&mut self, key: &ObjectRef<K>) {
        if let Some(owner) = self.owner_of.remove(key)
            && let Some(owned) = self.by_owner.get_mut(&owner)
        {
            owned.remove(key);
            if owned.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }
}

/// The uid of the object's controller owner reference.
fn controller_uid(metadata: &ObjectMeta) -> Option<String> {
    metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone())
}

impl<K> OwnedIndex<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub(crate) fn new(store: Store<K>) -> Self {
        Self {
            store,
            index: Arc::new(RwLock::new(Index {
                live: Owners::default(),
                relisting: None,
            })),
        }
    }

    /// The cached objects `rollout` controls, in its namespace, in no particular order.
    pub(crate) fn owned(&self, rollout: &Rollout) -> Vec<Arc<K>> {
        let Some(uid) = rollout.metadata.uid.as_deref() else {
            return Vec::new();
        };
        let namespace = rollout.metadata.namespace.as_deref();
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        index
            .live
            .by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|key| key.namespace.as_deref() == namespace)
            .filter_map(|key| self.store.get(key))
            // The store may be a step ahead of the index: it is written first.
            .filter(|object| owned_by(rollout, object.meta()))
            .collect()
    }

    pub(crate) fn relist(&self) {
        self.write().relisting = Some(Owners::default());
    }

    pub(crate) fn listed(&self, object: &K) {
        let mut index = self.write();
        index
            .relisting
            .get_or_insert_with(Owners::default)
            .insert(object);
    }

    pub(crate) fn relisted(&self) {
        let mut index = self.write();
        index.live = index.relisting.take().unwrap_or_default();
    }

    pub(crate) fn applied(&self, object: &K) {
        self.write().live.insert(object);
    }

    pub(crate) fn deleted(&self, key: &ObjectRef<K>) {
        self.write().live.remove(key);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index<K>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn rollout(namespace: &str, uid: &str) -> Rollout {
        serde_json::from_value(json!({
            "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": namespace, "uid": uid},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}},
                     "strategy": {"rollingUpdate": {}}},
        }))
        .unwrap()
    }

    fn replica_set(namespace: &str, name: &str, owner: Option<&str>) -> ReplicaSet {
        let owners = owner.map(|uid| {
            json!([{"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web",
                    "uid": uid, "controller": true}])
        });
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "ownerReferences": owners},
            "spec": {"selector": {}},
        }))
        .unwrap()
    }

    fn names(index: &OwnedIndex<ReplicaSet>, rollout: &Rollout) -> Vec<String> {
        let mut names: Vec<String> = index
            .owned(rollout)
            .iter()
            .map(|rs| rs.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        names
    }

    /// The store and the index as `decode::TolerantWriter` keeps them: the store first.
    fn apply(store: &mut Writer<ReplicaSet>, index: &OwnedIndex<ReplicaSet>, rs: ReplicaSet) {
        store.apply_watcher_event(&Event::Apply(rs.clone()));
        index.applied(&rs);
    }

    #[test]
    fn finds_what_a_rollout_controls_and_nothing_else() {
        let mut store = Writer::default();
        let index = OwnedIndex::new(store.as_reader());
        let web = rollout("shop", "u1");
        apply(&mut store, &index, replica_set("shop", "web-1", Some("u1")));
        apply(&mut store, &index, replica_set("shop", "web-2", Some("u1")));
        apply(&mut store, &index, replica_set("shop", "api-1", Some("u2")));
        apply(&mut store, &index, replica_set("shop", "orphan", None));
        assert_eq!(names(&index, &web), ["web-1", "web-2"]);
        assert_eq!(names(&index, &rollout("shop", "u2")), ["api-1"]);
        assert!(names(&index, &rollout("shop", "u3")).is_empty());
        // A uid in another namespace is not this rollout's, whatever the reference says.
        assert!(names(&index, &rollout("other", "u1")).is_empty());

        // Adopted by another owner, then deleted: gone from the first owner's list at once.
        apply(&mut store, &index, replica_set("shop", "web-2", Some("u2")));
        assert_eq!(names(&index, &web), ["web-1"]);
        assert_eq!(names(&index, &rollout("shop", "u2")), ["api-1", "web-2"]);
        let gone = replica_set("shop", "web-1", Some("u1"));
        store.apply_watcher_event(&Event::Delete(gone.clone()));
        index.deleted(&crate::decode::object_ref(&gone.metadata));
        assert!(names(&index, &web).is_empty());
        assert!(!index.index.read().unwrap().live.by_owner.contains_key("u1"));
    }

    #[test]
    fn a_relist_serves_the_old_index_until_it_is_complete_and_then_only_the_new() {
        let mut store = Writer::default();
        let index = OwnedIndex::new(store.as_reader());
        let web = rollout("shop", "u1");
        apply(&mut store, &index, replica_set("shop", "web-1", Some("u1")));
        apply(&mut store, &index, replica_set("shop", "web-2", Some("u1")));

        store.apply_watcher_event(&Event::Init);
        index.relist();
        let kept = replica_set("shop", "web-2", Some("u1"));
        store.apply_watcher_event(&Event::InitApply(kept.clone()));
        index.listed(&kept);
        assert_eq!(names(&index, &web), ["web-1", "web-2"], "mid-relist");
        store.apply_watcher_event(&Event::InitDone);
        index.relisted();
        // web-1 was deleted while the watch was down: the new list does not hold it.
        assert_eq!(names(&index, &web), ["web-2"]);
    }

    #[test]
    fn an_object_the_store_does_not_hold_is_not_returned() {
        let store = Writer::default();
        let index = OwnedIndex::new(store.as_reader());
        index.applied(&replica_set("shop", "web-1", Some("u1")));
        assert!(names(&index, &rollout("shop", "u1")).is_empty());
    }
}
