//! Reflectors over the demo namespace's objects: the story, its footer and the narrator read
//! these in-memory copies instead of listing on every tick.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// The objects of one kind, kept current by a watch, and a counter that moves on every change.
pub(crate) struct Watched<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    changes: watch::Receiver<u64>,
}

impl<K> Watched<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    /// Starts the watch; it runs until the returned task is dropped or aborted.
    pub(crate) fn start(
        api: Api<K>,
        config: watcher::Config,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (store, writer) = reflector::store();
        let (sender, changes) = watch::channel(0u64);
        let stream = watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .touched_objects();
        let drive = async move {
            let mut stream = std::pin::pin!(stream);
            // Errors are retried by the backoff; only their passing matters here.
            while let Some(item) = stream.next().await {
                if item.is_ok() {
                    sender.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
        };
        (Self { store, changes }, drive)
    }

    pub(crate) fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<K>> {
        self.store
            .state()
            .into_iter()
            .find(|o| o.name_any() == name)
    }

    /// A receiver that sees every change from now on.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        let mut changes = self.changes.clone();
        changes.mark_unchanged();
        changes
    }

    /// Waits for the first list to arrive.
    pub(crate) async fn ready(&self) -> anyhow::Result<()> {
        self.store
            .wait_until_ready()
            .await
            .map_err(|e| anyhow::anyhow!("watch ended before its first list: {e}"))
    }
}
