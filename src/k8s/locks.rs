//! Watching the locks that policies name, and nothing else.
//!
//! A cluster holds many Leases the operator has no business with (every node renews one
//! every 10 s), so watching all of them would make its cost grow with the cluster instead of
//! with its policies. Instead each named lock gets the label [`OBSERVED_LABEL`] and the
//! watches select on it. client-go keeps labels when it updates a lock, so the label stays;
//! a lock that does not exist yet is looked for every half second and labelled once it does
//! (the observer's probe, `ABSENT_LOCK_PROBE_INTERVAL`).
//!
//! Leases are read as untyped JSON: the typed Lease rejects times that Go accepts (the last
//! day of year 9999), and one such object must not stop the watch of every other lock.
//! Endpoints and ConfigMaps are read metadata-only: the record is an annotation, and a
//! ConfigMap's data can be large.
//!
//! After any watch error the watch lists again from scratch, and until that list completes
//! the observer is told it is blind. kube-runtime's watcher would otherwise resume from the
//! last resourceVersion and, for a lock that does not change, never say it is seeing again.

use std::{collections::HashSet, sync::Arc};

use futures::{Stream, StreamExt};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{ConfigMap, Endpoints},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        utils::Backoff,
        watcher::{self, Event, watcher},
    },
};
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::{
    api::LockType,
    domain::{
        lock_record::{LockContent, LockKey, from_annotations, from_lease_spec},
        observation::Moment,
    },
    k8s::{
        WatchBackoff, api_call,
        inbox::{LockEvent, ObserverHandle},
        status_code,
    },
    metrics::Metrics,
};

/// Marks a lock object as watched by election-operator.
pub const OBSERVED_LABEL: &str = "election.dev/observed";

/// Watches one kind of lock forever, feeding the observer.
pub async fn watch_locks(client: Client, kind: LockType, observer: ObserverHandle, metrics: Metrics) {
    let config = watcher::Config::default().labels(&format!("{OBSERVED_LABEL}=true"));
    let mut backoff = WatchBackoff::new();
    loop {
        let outcome = match kind {
            LockType::Lease => {
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<Lease>(&()));
                follow(watcher(api, config.clone()), kind, &observer, &metrics, &mut backoff, |o: &DynamicObject| {
                    from_lease_spec(o.data.get("spec"))
                })
                .await
            }
            LockType::Endpoints => {
                let api: Api<PartialObjectMeta<Endpoints>> = Api::all(client.clone());
                follow(watcher(api, config.clone()), kind, &observer, &metrics, &mut backoff, annotations_content).await
            }
            LockType::ConfigMap => {
                let api: Api<PartialObjectMeta<ConfigMap>> = Api::all(client.clone());
                follow(watcher(api, config.clone()), kind, &observer, &metrics, &mut backoff, annotations_content).await
            }
        };
        metrics.watch_restarted(resource(kind));
        observer.lock_event(LockEvent::Blind(kind)).await;
        let delay = backoff.next().unwrap_or_default();
        warn!(kind = ?kind, error = %outcome, retry_in = ?delay, "lock watch failed; listing again");
        tokio::time::sleep(delay).await;
    }
}

fn annotations_content<K>(object: &PartialObjectMeta<K>) -> LockContent {
    from_annotations(object.metadata.annotations.as_ref())
}

/// Follows one watch stream until it fails; returns the failure.
async fn follow<K, S>(
    stream: S,
    kind: LockType,
    observer: &ObserverHandle,
    metrics: &Metrics,
    backoff: &mut WatchBackoff,
    content: impl Fn(&K) -> LockContent,
) -> watcher::Error
where
    K: Resource,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut listing = Vec::new();
    let key = |object: &K| LockKey {
        type_: kind,
        namespace: object.meta().namespace.clone().unwrap_or_default(),
        name: object.meta().name.clone().unwrap_or_default(),
    };
    while let Some(item) = stream.next().await {
        if matches!(item, Ok(Event::InitApply(_) | Event::Apply(_) | Event::Delete(_))) {
            metrics.lock_event_received(resource(kind));
        }
        match item {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(object)) => listing.push((key(&object), content(&object))),
            Ok(Event::InitDone) => {
                debug!(kind = ?kind, locks = listing.len(), "locks listed");
                backoff.reset();
                observer.lock_event(LockEvent::Listed(kind, std::mem::take(&mut listing), Moment::now())).await;
            }
            Ok(Event::Apply(object)) => {
                observer.lock_event(LockEvent::Applied(key(&object), content(&object), Moment::now())).await
            }
            Ok(Event::Delete(object)) => observer.lock_event(LockEvent::Deleted(key(&object), Moment::now())).await,
            Err(error) => return error,
        }
    }
    // The watcher's stream never ends; treat it like an error if it ever does.
    watcher::Error::NoResourceVersion
}

fn resource(kind: LockType) -> &'static str {
    crate::domain::lock_record::resource_name(kind)
}

/// Adds and removes [`OBSERVED_LABEL`] on lock objects.
#[derive(Clone)]
pub struct LockLabeler {
    client: Client,
    metrics: Metrics,
    /// Bounds the background labelling, so a thousand new locks cannot flood the API.
    probes: Arc<Semaphore>,
    /// Locks being labelled (or waiting for a permit), so repeated probes queue none twice.
    queued: Arc<std::sync::Mutex<HashSet<LockKey>>>,
}

impl LockLabeler {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        LockLabeler { client, metrics, probes: Arc::new(Semaphore::new(16)), queued: Arc::default() }
    }

    /// Labels the lock if it exists; `Ok(false)` when it does not (yet).
    pub async fn label(&self, lock: &LockKey) -> kube::Result<bool> {
        self.patch_label(lock, json!("true")).await
    }

    /// Removes the label, restoring the lock as it was; a missing lock is fine.
    pub async fn unlabel(&self, lock: &LockKey) -> kube::Result<()> {
        self.patch_label(lock, serde_json::Value::Null).await.map(|_| ())
    }

    /// Removes the label without waiting (a lock left labelled costs watch traffic, nothing
    /// more, so a failure is only logged).
    pub fn unlabel_in_background(&self, lock: LockKey) {
        let labeler = self.clone();
        tokio::spawn(async move {
            if let Err(error) = labeler.unlabel(&lock).await {
                warn!(%lock, %error, "could not remove the label from a lock no policy watches");
            }
        });
    }

    /// Labels the lock in the background, a bounded number at a time; a lock already
    /// queued is not queued again.
    pub fn label_in_background(&self, lock: LockKey) {
        if !self.queued.lock().unwrap_or_else(|e| e.into_inner()).insert(lock.clone()) {
            return;
        }
        let labeler = self.clone();
        tokio::spawn(async move {
            let permit = labeler.probes.clone().acquire_owned().await;
            match labeler.label(&lock).await {
                Ok(true) => info!(%lock, "lock found and labelled for watching"),
                Ok(false) => {}
                Err(error) => debug!(%lock, %error, "could not label lock"),
            }
            labeler.queued.lock().unwrap_or_else(|e| e.into_inner()).remove(&lock);
            drop(permit);
        });
    }

    async fn patch_label(&self, lock: &LockKey, value: serde_json::Value) -> kube::Result<bool> {
        // A merge patch, not apply: apply would create a missing lock, and an empty Lease
        // is a lock record nobody wrote.
        let patch = Patch::Merge(json!({ "metadata": { "labels": { OBSERVED_LABEL: value } } }));
        let params = PatchParams::default();
        let result = match lock.type_ {
            LockType::Lease => {
                let api: Api<Lease> = Api::namespaced(self.client.clone(), &lock.namespace);
                api_call(&self.metrics, "patch_lock_label", api.patch_metadata(&lock.name, &params, &patch))
                    .await
                    .map(|_| ())
            }
            LockType::Endpoints => {
                let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &lock.namespace);
                api_call(&self.metrics, "patch_lock_label", api.patch_metadata(&lock.name, &params, &patch))
                    .await
                    .map(|_| ())
            }
            LockType::ConfigMap => {
                let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &lock.namespace);
                api_call(&self.metrics, "patch_lock_label", api.patch_metadata(&lock.name, &params, &patch))
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(error) if status_code(&error) == Some(404) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// Whether an object carries the label (for tests and diagnostics).
pub fn is_labelled<K: ResourceExt>(object: &K) -> bool {
    object.labels().get(OBSERVED_LABEL).map(String::as_str) == Some("true")
}
