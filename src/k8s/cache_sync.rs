//! Knowing when reflector caches can be trusted.
//!
//! A reflector's store is empty until its watch completes its first list, and an empty store
//! looks exactly like a cluster with nothing in it: "no Deployment carries this policy's
//! configuration" (so the finalizer goes and the injection is orphaned), "no Pod is the
//! holder" (a false HolderNotFound). So every decision taken from a store waits for its
//! gate here first.
//!
//! kube-runtime's `Store::wait_until_ready` would do for a single waiter, but it sits on a
//! oneshot channel that keeps only the last waker, so of several concurrent reconciles
//! waiting on it only one would ever wake. A watch channel wakes them all.
//!
//! After a relist (a watch that broke, a 410 Gone) kube-runtime keeps serving the previous
//! state until the new list is complete and then swaps it in whole, so a cache, once synced,
//! stays trustworthy; the gate never closes again.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use kube::runtime::watcher;
use tokio::sync::watch;

/// Opens once every cache registered with [`CacheSync::expect`] has listed. Cheap to clone.
#[derive(Clone)]
pub struct CacheSync {
    inner: Arc<Inner>,
}

struct Inner {
    /// Caches still waiting for their first complete list.
    pending: Mutex<HashSet<&'static str>>,
    synced: watch::Sender<bool>,
}

impl CacheSync {
    pub fn new() -> Self {
        CacheSync { inner: Arc::new(Inner { pending: Mutex::default(), synced: watch::Sender::new(false) }) }
    }

    /// Registers a cache the gate waits for; its watch events go to the returned mark. Call
    /// before the watch starts.
    pub fn expect(&self, cache: &'static str) -> ListedMark {
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(cache);
        self.inner.synced.send_replace(false);
        ListedMark { cache, sync: self.clone() }
    }

    /// Whether every registered cache has listed.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Waits until every registered cache has listed.
    pub async fn wait(&self) {
        let mut synced = self.inner.synced.subscribe();
        // Err only if the sender is gone, and the sender lives as long as self.
        let _ = synced.wait_for(|synced| *synced).await;
    }

    fn listed(&self, cache: &'static str) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.remove(cache) && pending.is_empty() {
            self.inner.synced.send_replace(true);
        }
    }
}

impl Default for CacheSync {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks one cache as listed when its watch says so. A relist of the same cache counts
/// once: the gate waits for each cache, not for a number of lists.
pub struct ListedMark {
    cache: &'static str,
    sync: CacheSync,
}

impl ListedMark {
    /// Feed every event of the cache's watch, after the reflector has applied it.
    pub fn observe<K>(&self, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::InitDone) {
            self.sync.listed(self.cache);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done() -> watcher::Event<()> {
        watcher::Event::InitDone
    }

    #[test]
    fn opens_only_when_every_cache_has_listed_once() {
        let sync = CacheSync::new();
        let policies = sync.expect("policies");
        let deployments = sync.expect("deployments");
        assert!(!sync.is_synced());
        policies.observe(&watcher::Event::<()>::Init);
        policies.observe(&done());
        // A second list of the same cache is not the other cache's list.
        policies.observe(&done());
        assert!(!sync.is_synced());
        deployments.observe(&watcher::Event::Apply(()));
        assert!(!sync.is_synced());
        deployments.observe(&done());
        assert!(sync.is_synced());
        // A relist afterwards does not close it.
        deployments.observe(&watcher::Event::<()>::Init);
        assert!(sync.is_synced());
    }

    #[tokio::test]
    async fn wakes_every_waiter() {
        let sync = CacheSync::new();
        let pods = sync.expect("pods");
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let sync = sync.clone();
                tokio::spawn(async move { sync.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        pods.observe(&done());
        for waiter in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                .await
                .expect("every waiter wakes")
                .expect("no panic");
        }
    }
}
