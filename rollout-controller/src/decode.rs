//! Watching without trusting every object to decode.
//!
//! A reflector decodes the whole list of a kind at once, and a single object it cannot decode
//! (one stored under an older, looser schema; one written around the schema) fails the whole
//! list: that kind's store never fills, `/readyz` stays 503 and no rollout anywhere is
//! reconciled. So every watched kind is decoded one object at a time through [`Tolerant`]: the
//! objects that decode go into the usual reflector [`Store`], the rest into a [`Registry`] with
//! their metadata and the decode error, where reconciles find them (a rollout that uses one is
//! Degraded with the error; see `crate::undecodable`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::metrics::gauge::Gauge;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use tokio::sync::Notify;

use crate::crd::Rollout;
use crate::crd::analysis::{AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate};
use crate::owner::OwnedIndex;

/// A watched object: decoded as `K`, or not, with why.
#[derive(Debug, Clone)]
pub enum Tolerant<K> {
    Decoded(K),
    /// Boxed: rare, and larger than most objects' handles.
    Undecodable(Box<Undecodable>),
}

/// An object that does not decode as its kind: what identifies it, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Undecodable {
    pub metadata: ObjectMeta,
    /// The field and the reason: `spec.metrics[0].count: invalid value: integer ...`.
    pub error: String,
    /// The object as the apiserver sent it, for writes that need no typed object (a status
    /// merge patch that keeps its other conditions).
    pub raw: serde_json::Value,
}

/// A kind the controller caches, and what of it the cache need not hold.
pub trait Cached: Resource {
    /// Drops from an object on its way into the cache what no reconcile nor view reads of its
    /// kind. Every kind drops its managedFields (`Tolerant::strip_for_cache`).
    fn trim(&mut self) {}
}

impl Cached for Rollout {}
impl Cached for Service {}
impl Cached for AnalysisRun {}
impl Cached for AnalysisTemplate {}
impl Cached for ClusterAnalysisTemplate {}

impl Cached for ReplicaSet {
    /// Of its pod template, a reconcile reads the metadata (`reconcile::observe`) and a view the
    /// containers' names and images; nothing reads the rest of the pod spec, which is most of
    /// a cached ReplicaSet's size (k8s-openapi's `PodSpec` and `Container` are wide structs).
    /// An undo reads the template the ReplicaSet keeps whole in its `sluice.dev/pod-template`
    /// annotation.
    fn trim(&mut self) {
        let pod_spec = self.spec.template.as_mut().and_then(|t| t.spec.as_mut());
        if let Some(pod_spec) = pod_spec {
            let containers = std::mem::take(&mut pod_spec.containers)
                .into_iter()
                .map(|c| Container {
                    name: c.name,
                    image: c.image,
                    ..Container::default()
                })
                .collect();
            *pod_spec = PodSpec {
                containers,
                ..PodSpec::default()
            };
        }
    }
}

impl<K: Cached> Tolerant<K> {
    /// Drops what no reconcile reads and a cache would hold for every object: managedFields,
    /// often larger than the rest of the object, and written anew with each update; and what
    /// the kind's [`Cached::trim`] drops.
    pub(crate) fn strip_for_cache(&mut self) {
        match self {
            Tolerant::Decoded(object) => {
                object.meta_mut().managed_fields = None;
                object.trim();
            }
            Tolerant::Undecodable(u) => {
                u.metadata.managed_fields = None;
                if let Some(metadata) = u.raw.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                    metadata.remove("managedFields");
                }
            }
        }
    }
}

impl<K> Tolerant<K> {
    pub(crate) fn decoded(self) -> Option<K> {
        match self {
            Tolerant::Decoded(object) => Some(object),
            Tolerant::Undecodable(_) => None,
        }
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Tolerant<K> {
    /// Never fails for an object with readable metadata: the list or watch event it is part of
    /// goes on to the next object.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = serde_json::Value::deserialize(deserializer)?;
        match serde_path_to_error::deserialize::<_, K>(&raw) {
            Ok(object) => Ok(Tolerant::Decoded(object)),
            Err(e) => {
                let path = e.path().to_string();
                let error = if path == "." {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                };
                // Without a name there is nothing to key it by: that one error stays the list's.
                let metadata = raw
                    .get("metadata")
                    .map(ObjectMeta::deserialize)
                    .transpose()
                    .map_err(D::Error::custom)?
                    .filter(|m| m.name.is_some())
                    .ok_or_else(|| {
                        D::Error::custom(format!("an object without a name: {error}"))
                    })?;
                Ok(Tolerant::Undecodable(Box::new(Undecodable {
                    metadata,
                    error,
                    raw,
                })))
            }
        }
    }
}

impl<K> Resource for Tolerant<K>
where
    K: Resource<DynamicType = ()>,
{
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Tolerant::Decoded(object) => object.meta(),
            Tolerant::Undecodable(u) => &u.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Tolerant::Decoded(object) => object.meta_mut(),
            Tolerant::Undecodable(u) => &mut u.metadata,
        }
    }
}

/// The key a store uses for an object of kind `K`, from its metadata alone.
pub(crate) fn object_ref<K: Resource<DynamicType = ()>>(metadata: &ObjectMeta) -> ObjectRef<K> {
    let key = ObjectRef::new(metadata.name.as_deref().unwrap_or_default());
    match &metadata.namespace {
        Some(namespace) => key.within(namespace),
        None => key,
    }
}

/// The objects of kind `K` that do not decode, by the key the store would hold them under.
/// Readers clone it; one [`TolerantWriter`] writes it.
pub(crate) struct Registry<K: Resource<DynamicType = ()>> {
    objects: Arc<RwLock<HashMap<ObjectRef<K>, Arc<Undecodable>>>>,
    changed: Arc<Notify>,
}

impl<K: Resource<DynamicType = ()>> Clone for Registry<K> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            changed: self.changed.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Registry<K> {
    /// An empty registry that wakes `changed` whenever it changes.
    pub(crate) fn new(changed: Arc<Notify>) -> Self {
        Self {
            objects: Default::default(),
            changed,
        }
    }

    pub(crate) fn get(&self, key: &ObjectRef<K>) -> Option<Arc<Undecodable>> {
        self.read().get(key).cloned()
    }

    pub(crate) fn state(&self) -> Vec<Arc<Undecodable>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectRef<K>, Arc<Undecodable>>> {
        // A poisoned lock only means a writer panicked between two complete updates.
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectRef<K>, Arc<Undecodable>>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Applies watch events of [`Tolerant`] objects: decoded ones to a reflector store, the others
/// to a [`Registry`]. An object lives in exactly one of the two: when one stops decoding it
/// leaves the store (a reconcile must not act on its last good version), and when it decodes
/// again it leaves the registry.
pub(crate) struct TolerantWriter<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: reflector::store::Writer<K>,
    reader: Store<K>,
    /// The store's objects by the uid of their controller.
    owned: OwnedIndex<K>,
    registry: Registry<K>,
    /// The registry's contents while a relist is in progress.
    buffer: Option<HashMap<ObjectRef<K>, Arc<Undecodable>>>,
    /// Set to the number of undecodable objects after each change.
    gauge: Option<Gauge>,
}

impl<K> TolerantWriter<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub(crate) fn new(registry: Registry<K>, gauge: Option<Gauge>) -> Self {
        let store = reflector::store::Writer::default();
        let reader = store.as_reader();
        Self {
            store,
            owned: OwnedIndex::new(reader.clone()),
            reader,
            registry,
            buffer: None,
            gauge,
        }
    }

    pub(crate) fn as_reader(&self) -> Store<K> {
        self.reader.clone()
    }

    pub(crate) fn owned(&self) -> OwnedIndex<K> {
        self.owned.clone()
    }

    pub(crate) fn apply(&mut self, event: &watcher::Event<Tolerant<K>>) {
        use watcher::Event;
        match event {
            Event::Init => {
                self.store.apply_watcher_event(&Event::Init);
                self.owned.relist();
                self.buffer = Some(HashMap::new());
            }
            Event::InitApply(Tolerant::Decoded(object)) => {
                self.store
                    .apply_watcher_event(&Event::InitApply(object.clone()));
                self.owned.listed(object);
            }
            Event::InitApply(Tolerant::Undecodable(bad)) => {
                let key = object_ref(&bad.metadata);
                self.buffer
                    .get_or_insert_with(HashMap::new)
                    .insert(key, Arc::new((**bad).clone()));
            }
            Event::InitDone => {
                self.store.apply_watcher_event(&Event::InitDone);
                self.owned.relisted();
                let listed = self.buffer.take().unwrap_or_default();
                *self.registry.write() = listed;
                self.changed();
            }
            Event::Apply(Tolerant::Decoded(object)) => {
                self.store
                    .apply_watcher_event(&Event::Apply(object.clone()));
                self.owned.applied(object);
                let key = object_ref(object.meta());
                if self.registry.write().remove(&key).is_some() {
                    self.changed();
                }
            }
            Event::Apply(Tolerant::Undecodable(bad)) => {
                let key = object_ref(&bad.metadata);
                self.forget_decoded(&key);
                self.registry.write().insert(key, Arc::new((**bad).clone()));
                self.changed();
            }
            Event::Delete(Tolerant::Decoded(object)) => {
                self.store
                    .apply_watcher_event(&Event::Delete(object.clone()));
                let key = object_ref(object.meta());
                self.owned.deleted(&key);
                if self.registry.write().remove(&key).is_some() {
                    self.changed();
                }
            }
            Event::Delete(Tolerant::Undecodable(bad)) => {
                let key = object_ref(&bad.metadata);
                self.forget_decoded(&key);
                if self.registry.write().remove(&key).is_some() {
                    self.changed();
                }
            }
        }
    }

    /// Removes the last version of `key` that decoded from the store: the store's writer deletes
    /// by object, so the stored object itself is handed back to it.
    fn forget_decoded(&mut self, key: &ObjectRef<K>) {
        self.owned.deleted(key);
        if let Some(stale) = self.reader.get(key) {
            self.store
                .apply_watcher_event(&watcher::Event::Delete((*stale).clone()));
        }
    }

    fn changed(&self) {
        if let Some(gauge) = &self.gauge {
            gauge.set(i64::try_from(self.registry.read().len()).unwrap_or(i64::MAX));
        }
        self.registry.changed.notify_one();
    }
}

/// Watches `api` one object at a time: the store of the objects that decode, and the stream
/// of every object touched (decoded or not, so that what maps an object to the rollouts it
/// concerns sees undecodable ones too), without their managedFields. The stream must be polled
/// for the store to fill. Beside the store, its objects by the uid of their controller.
pub(crate) fn tolerant_watcher<K>(
    api: Api<Tolerant<K>>,
    config: watcher::Config,
    registry: Registry<K>,
    gauge: Option<Gauge>,
) -> (
    Store<K>,
    OwnedIndex<K>,
    impl Stream<Item = Result<Tolerant<K>, watcher::Error>> + Send + 'static,
)
where
    K: Cached<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
{
    let mut writer = TolerantWriter::new(registry, gauge);
    let store = writer.as_reader();
    let owned = writer.owned();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(Tolerant::strip_for_cache)
        .map_ok(move |event| {
            writer.apply(&event);
            event
        })
        .touched_objects();
    (store, owned, stream)
}

/// The objects of a touched stream that decode, for what only takes `K` (a Controller's main
/// stream).
pub(crate) fn decoded<K>(
    stream: impl Stream<Item = Result<Tolerant<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
{
    stream
        .try_filter_map(|object| futures::future::ready(Ok(object.decoded())))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::analysis::AnalysisTemplate;
    use kube::ResourceExt;
    use serde_json::json;
    use watcher::Event;

    fn template(name: &str, count: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "1"},
            "spec": {"metrics": [{
                "name": "errors",
                "interval": "1m",
                "count": count,
                "successCondition": "result < 1",
                "provider": {"prometheus": {"address": "http://127.0.0.1:9090", "query": "up"}},
            }]},
        })
    }

    fn event(object: serde_json::Value) -> Tolerant<AnalysisTemplate> {
        serde_json::from_value(object).unwrap()
    }

    fn writer() -> (TolerantWriter<AnalysisTemplate>, Registry<AnalysisTemplate>) {
        let registry = Registry::new(Arc::new(Notify::new()));
        (TolerantWriter::new(registry.clone(), None), registry)
    }

    fn key(name: &str) -> ObjectRef<AnalysisTemplate> {
        ObjectRef::new(name).within("team-a")
    }

    #[test]
    fn cached_objects_keep_no_managed_fields_decoded_or_not() {
        let managed = json!([{"manager": "kubectl", "operation": "Apply",
                              "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]);
        for count in [json!(3), json!(4_294_967_296_u64)] {
            let mut object = template("t", count);
            object["metadata"]["managedFields"] = managed.clone();
            let mut cached = event(object);
            assert!(cached.meta().managed_fields.is_some());
            cached.strip_for_cache();
            assert_eq!(cached.meta().managed_fields, None);
            if let Tolerant::Undecodable(u) = &cached {
                assert_eq!(u.raw["metadata"].get("managedFields"), None);
                assert_eq!(u.raw["metadata"]["name"], "t");
            }
        }
    }

    #[test]
    fn a_cached_replica_set_keeps_what_is_read_of_its_template_and_no_more() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {}});
        let mut cached: Tolerant<ReplicaSet> = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop",
                         "annotations": {"sluice.dev/pod-template": template.to_string()}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {
                         "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                         "spec": {"containers": [{
                             "name": "web", "image": "web:1",
                             "env": [{"name": "A", "value": "1"}],
                             "ports": [{"containerPort": 8080}],
                         }], "volumes": [{"name": "v", "emptyDir": {}}]}}},
            "status": {"replicas": 3, "readyReplicas": 2, "availableReplicas": 1},
        }))
        .unwrap();
        cached.strip_for_cache();
        let Tolerant::Decoded(rs) = cached else {
            panic!("decodes")
        };
        let spec = &rs.spec;
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.as_ref().unwrap();
        let meta = pod.metadata.as_ref().unwrap();
        assert_eq!(meta.labels.as_ref().unwrap()["app"], "web");
        assert_eq!(meta.annotations.as_ref().unwrap()["a"], "b");
        let pod_spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            serde_json::to_value(pod_spec).unwrap(),
            json!({"containers": [{"name": "web", "image": "web:1"}]})
        );
        assert_eq!(rs.status.as_ref().unwrap().ready_replicas, Some(2));
        // What an undo writes back is the template the annotation keeps, whole.
        assert_eq!(
            rs.metadata.annotations.as_ref().unwrap()["sluice.dev/pod-template"],
            template.to_string()
        );
    }

    #[test]
    fn the_owner_index_follows_the_store_through_relists_and_undecodable_versions() {
        let registry = Registry::new(Arc::new(Notify::new()));
        let mut writer = TolerantWriter::<ReplicaSet>::new(registry, None);
        let owned = writer.owned();
        let rollout: Rollout = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"selector": {}, "template": {}, "strategy": {"rollingUpdate": {}}},
        }))
        .unwrap();
        let rs = |name: &str, replicas: serde_json::Value| -> Tolerant<ReplicaSet> {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "shop", "ownerReferences": [{
                    "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout", "name": "web",
                    "uid": "u1", "controller": true}]},
                "spec": {"replicas": replicas, "selector": {}},
            }))
            .unwrap()
        };
        let names = || {
            let mut names: Vec<String> =
                owned.owned(&rollout).iter().map(|r| r.name_any()).collect();
            names.sort();
            names
        };
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(rs("web-1", json!(1))));
        writer.apply(&Event::InitApply(rs("web-2", json!(1))));
        writer.apply(&Event::InitDone);
        assert_eq!(names(), ["web-1", "web-2"]);
        // A version that does not decode leaves the store, and so the index.
        writer.apply(&Event::Apply(rs("web-2", json!("three"))));
        assert_eq!(names(), ["web-1"]);
        writer.apply(&Event::Apply(rs("web-2", json!(3))));
        assert_eq!(names(), ["web-1", "web-2"]);
        writer.apply(&Event::Delete(rs("web-1", json!(1))));
        assert_eq!(names(), ["web-2"]);
    }

    #[test]
    fn a_list_with_one_undecodable_item_decodes_the_others() {
        let json = json!({
            "apiVersion": "sluice.dev/v1alpha1",
            "kind": "AnalysisTemplateList",
            "metadata": {"resourceVersion": "7"},
            "items": [
                template("good", json!(3)),
                template("bad", json!(4_294_967_296_u64)),
                template("also-good", json!(5)),
            ],
        });
        // What a reflector of the typed kind met: the whole list fails.
        let typed: Result<kube::core::ObjectList<AnalysisTemplate>, _> =
            serde_json::from_value(json.clone());
        assert!(typed.is_err());
        let list: kube::core::ObjectList<Tolerant<AnalysisTemplate>> =
            serde_json::from_value(json).unwrap();
        let decoded: Vec<String> = list
            .items
            .iter()
            .filter_map(|t| match t {
                Tolerant::Decoded(t) => Some(t.name_any()),
                Tolerant::Undecodable(_) => None,
            })
            .collect();
        assert_eq!(decoded, ["good", "also-good"]);
        let Tolerant::Undecodable(bad) = &list.items[1] else {
            panic!("the bad item decoded");
        };
        assert_eq!(bad.metadata.name.as_deref(), Some("bad"));
        assert!(
            bad.error.starts_with("spec.metrics[0].count: ") && bad.error.contains("4294967296"),
            "{}",
            bad.error
        );
    }

    #[test]
    fn an_object_without_metadata_is_an_error() {
        let result: Result<Tolerant<AnalysisTemplate>, _> =
            serde_json::from_value(json!({"spec": {}}));
        assert!(result.is_err());
    }

    #[test]
    fn the_initial_list_splits_into_store_and_registry() {
        let (mut writer, registry) = writer();
        let store = writer.as_reader();
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(event(template("good", json!(3)))));
        writer.apply(&Event::InitApply(event(template("bad", json!(-1)))));
        assert!(registry.get(&key("bad")).is_none(), "not before InitDone");
        writer.apply(&Event::InitDone);
        assert!(store.get(&key("good")).is_some());
        assert!(store.get(&key("bad")).is_none());
        assert!(registry.get(&key("bad")).is_some());
        assert!(registry.get(&key("good")).is_none());
    }

    #[test]
    fn good_then_bad_then_good_moves_between_store_and_registry() {
        let (mut writer, registry) = writer();
        let store = writer.as_reader();
        writer.apply(&Event::Init);
        writer.apply(&Event::InitDone);
        writer.apply(&Event::Apply(event(template("t", json!(3)))));
        assert!(store.get(&key("t")).is_some());

        writer.apply(&Event::Apply(event(template(
            "t",
            json!(4_294_967_296_u64),
        ))));
        assert!(
            store.get(&key("t")).is_none(),
            "its last good version must not be acted on"
        );
        assert!(registry.get(&key("t")).unwrap().error.contains("count"));

        writer.apply(&Event::Apply(event(template("t", json!(4)))));
        assert!(registry.get(&key("t")).is_none());
        let back = store.get(&key("t")).unwrap();
        assert_eq!(back.spec.metrics[0].count, Some(4));
    }

    #[test]
    fn deleting_an_undecodable_object_forgets_it() {
        let (mut writer, registry) = writer();
        writer.apply(&Event::Init);
        writer.apply(&Event::InitDone);
        writer.apply(&Event::Apply(event(template("t", json!(-1)))));
        assert_eq!(registry.state().len(), 1);
        writer.apply(&Event::Delete(event(template("t", json!(-1)))));
        assert!(registry.state().is_empty());
    }

    #[test]
    fn a_relist_drops_what_is_gone_and_what_stopped_decoding() {
        let (mut writer, registry) = writer();
        let store = writer.as_reader();
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(event(template("a", json!(-1)))));
        writer.apply(&Event::InitApply(event(template("b", json!(1)))));
        writer.apply(&Event::InitDone);
        // Relisted: `a` was deleted meanwhile, `b` no longer decodes.
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(event(template("b", json!(-1)))));
        writer.apply(&Event::InitDone);
        assert!(registry.get(&key("a")).is_none());
        assert!(registry.get(&key("b")).is_some());
        assert!(store.get(&key("b")).is_none());
    }

    #[test]
    fn the_gauge_counts_undecodable_objects() {
        let registry = Registry::new(Arc::new(Notify::new()));
        let gauge = Gauge::default();
        let mut writer = TolerantWriter::new(registry, Some(gauge.clone()));
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(event(template("a", json!(-1)))));
        writer.apply(&Event::InitDone);
        writer.apply(&Event::Apply(event(template("b", json!(-2)))));
        assert_eq!(gauge.get(), 2);
        writer.apply(&Event::Apply(event(template("a", json!(1)))));
        assert_eq!(gauge.get(), 1);
    }
}
