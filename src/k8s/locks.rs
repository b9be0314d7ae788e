//! Watching the locks that policies name, read-only.
//!
//! The locks belong to other programs, so the operator only reads them: it needs `list`
//! and `watch`, never a write (a tool that watches leader election must not be able to take
//! it over). A cluster holds many Leases the operator has no business with (every node
//! renews one every 10 s, in `kube-node-lease`), so the watches are per namespace that a
//! watched lock is in ([`LockScope`]): the cost follows the policies, not the cluster. Each
//! watch sees the other locks of its namespace too; the observer routes only the ones
//! policies name. A lock that does not exist yet is seen the moment it is created.
//!
//! Leases are read as untyped JSON: the typed Lease rejects times that Go accepts (the last
//! day of year 9999), and one such object must not stop the watch of every other lock.
//! Endpoints and ConfigMaps are read metadata-only: the record is an annotation, and a
//! ConfigMap's data can be large.
//!
//! After any watch error the watch lists again from scratch, and until that list completes
//! the observer is told it is blind. kube-runtime's watcher would otherwise resume from the
//! last resourceVersion and, for a lock that does not change, never say it is seeing again.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use futures::{Stream, StreamExt};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{ConfigMap, Endpoints},
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, ListParams, PartialObjectMeta, Patch, PatchParams},
    runtime::{
        utils::Backoff,
        watcher::{self, Event, watcher},
    },
};
use serde_json::json;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{
    api::LockType,
    domain::{
        lock_record::{LockContent, LockKey, LockScope, from_annotations, from_lease_spec},
        namespaces::WatchedNamespaces,
        observation::Moment,
    },
    k8s::{
        WatchBackoff, api_call,
        inbox::{LockEvent, ObserverHandle, WatchRun},
    },
    metrics::Metrics,
    supervisor::Supervisor,
};

/// The label that operator versions before 0.3 put on each lock they watched, so their
/// watches could select on it. This version only reads locks; [`remove_observed_labels`]
/// takes the label off again when the chart is upgraded.
pub const OBSERVED_LABEL: &str = "election.dev/observed";

/// The running lock watches, one per scope that holds a watched lock. The observer owns it
/// and tells it which locks it routes; a scope's watch starts with its first lock and stops
/// with its last.
pub struct LockWatches {
    client: Client,
    observer: ObserverHandle,
    metrics: Metrics,
    supervisor: Supervisor,
    next_run: u64,
    running: HashMap<LockScope, Running>,
}

struct Running {
    run: WatchRun,
    /// Names of the watched locks in the scope.
    locks: HashSet<Arc<str>>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LockWatches {
    pub fn new(client: Client, observer: ObserverHandle, metrics: Metrics, supervisor: Supervisor) -> Self {
        LockWatches { client, observer, metrics, supervisor, next_run: 0, running: HashMap::new() }
    }

    /// Watches `lock`, starting its scope's watch if it is the first lock there.
    pub fn add(&mut self, lock: &LockKey) {
        let scope = lock.scope();
        let running = self.running.entry(scope.clone()).or_insert_with(|| {
            self.next_run += 1;
            let run = WatchRun(self.next_run);
            debug!(%scope, "starting lock watch");
            let task = self.supervisor.spawn_forever(
                format!("lock watch {scope}"),
                watch_scope(self.client.clone(), scope, run, self.observer.clone(), self.metrics.clone()),
            );
            Running { run, locks: HashSet::new(), task }
        });
        running.locks.insert(lock.name.clone());
    }

    /// Stops watching `lock`; returns its scope when that was the scope's last lock and its
    /// watch stopped.
    pub fn remove(&mut self, lock: &LockKey) -> Option<LockScope> {
        let scope = lock.scope();
        let running = self.running.get_mut(&scope)?;
        running.locks.remove(&lock.name);
        if !running.locks.is_empty() {
            return None;
        }
        debug!(%scope, "stopping lock watch");
        self.running.remove(&scope);
        Some(scope)
    }

    /// Whether `run` is the current watch of `scope` (its events count).
    pub fn is_current(&self, scope: &LockScope, run: WatchRun) -> bool {
        self.running.get(scope).is_some_and(|running| running.run == run)
    }
}

/// Watches one scope until aborted, feeding the observer.
async fn watch_scope(client: Client, scope: LockScope, run: WatchRun, observer: ObserverHandle, metrics: Metrics) {
    let config = watcher::Config::default();
    let namespace = &*scope.namespace;
    let mut backoff = WatchBackoff::new();
    loop {
        let outcome = match scope.type_ {
            LockType::Lease => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<Lease>(&()));
                let content = |o: &DynamicObject| from_lease_spec(o.data.get("spec"));
                follow(watcher(api, config.clone()), &scope, run, &observer, &metrics, &mut backoff, content).await
            }
            LockType::Endpoints => {
                let api: Api<PartialObjectMeta<Endpoints>> = Api::namespaced(client.clone(), namespace);
                let stream = watcher(api, config.clone());
                follow(stream, &scope, run, &observer, &metrics, &mut backoff, annotations_content).await
            }
            LockType::ConfigMap => {
                let api: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(client.clone(), namespace);
                let stream = watcher(api, config.clone());
                follow(stream, &scope, run, &observer, &metrics, &mut backoff, annotations_content).await
            }
        };
        metrics.watch_restarted(resource(scope.type_));
        observer.lock_event(run, LockEvent::Blind(scope.clone())).await;
        let delay = backoff.next().unwrap_or_default();
        warn!(%scope, error = %outcome, retry_in = ?delay, "lock watch failed; listing again");
        tokio::time::sleep(delay).await;
    }
}

/// Reads one lock as it is now, as its watch would show it (`Absent` when it does not
/// exist): the fresh look the observer takes when a deadline's timer went off late. A list
/// by name rather than a get: the operator reads locks with the `list` and `watch` it
/// already has, and a list by name is served from the API server's watch cache.
pub async fn read_lock(client: &Client, lock: &LockKey, metrics: &Metrics) -> kube::Result<LockContent> {
    let namespace = &*lock.namespace;
    let by_name = ListParams::default().fields(&format!("metadata.name={}", lock.name));
    let found = match lock.type_ {
        LockType::Lease => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<Lease>(&()));
            let list = api_call(metrics, "read_lock", api.list(&by_name)).await?;
            list.items.first().map(|o| from_lease_spec(o.data.get("spec")))
        }
        LockType::Endpoints => {
            let api: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
            api_call(metrics, "read_lock", api.list_metadata(&by_name)).await?.items.first().map(annotations_content)
        }
        LockType::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            api_call(metrics, "read_lock", api.list_metadata(&by_name)).await?.items.first().map(annotations_content)
        }
    };
    Ok(found.unwrap_or(LockContent::Absent))
}

fn annotations_content<K>(object: &PartialObjectMeta<K>) -> LockContent {
    from_annotations(object.metadata.annotations.as_ref())
}

/// Follows one watch stream until it fails; returns the failure.
async fn follow<K, S>(
    stream: S,
    scope: &LockScope,
    run: WatchRun,
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
        type_: scope.type_,
        namespace: scope.namespace.clone(),
        name: object.meta().name.as_deref().unwrap_or_default().into(),
    };
    while let Some(item) = stream.next().await {
        if matches!(item, Ok(Event::InitApply(_) | Event::Apply(_) | Event::Delete(_))) {
            metrics.lock_event_received(resource(scope.type_));
        }
        match item {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(object)) => listing.push((key(&object), content(&object))),
            Ok(Event::InitDone) => {
                debug!(%scope, locks = listing.len(), "locks listed");
                backoff.reset();
                let listed = LockEvent::Listed(scope.clone(), std::mem::take(&mut listing), Moment::now());
                observer.lock_event(run, listed).await;
            }
            Ok(Event::Apply(object)) => {
                observer.lock_event(run, LockEvent::Applied(key(&object), content(&object), Moment::now())).await
            }
            Ok(Event::Delete(object)) => {
                observer.lock_event(run, LockEvent::Deleted(key(&object), Moment::now())).await
            }
            Err(error) => return error,
        }
    }
    // The watcher's stream never ends; treat it like an error if it ever does.
    watcher::Error::NoResourceVersion
}

fn resource(kind: LockType) -> &'static str {
    crate::domain::lock_record::resource_name(kind)
}

/// Takes [`OBSERVED_LABEL`] off every lock in `namespaces` that carries it, restoring the objects of other
/// programs as they were before an older operator labelled them. Run once on upgrade by the
/// chart's hook Job, under a short-lived role of its own: the operator's role has no write
/// on locks. Returns how many objects it changed.
pub async fn remove_observed_labels(
    client: &Client,
    kinds: &[LockType],
    namespaces: &WatchedNamespaces,
    metrics: &Metrics,
) -> crate::Result<usize> {
    let scopes: Vec<Option<&str>> = match namespaces {
        WatchedNamespaces::All => vec![None],
        WatchedNamespaces::Only(list) => list.iter().map(|n| Some(n.as_str())).collect(),
    };
    let mut removed = 0;
    for kind in kinds {
        for namespace in &scopes {
            removed += match kind {
                LockType::Lease => unlabel_all::<Lease>(client, *namespace, metrics).await?,
                LockType::Endpoints => unlabel_all::<Endpoints>(client, *namespace, metrics).await?,
                LockType::ConfigMap => unlabel_all::<ConfigMap>(client, *namespace, metrics).await?,
            };
        }
    }
    Ok(removed)
}

/// Takes the label off the locks of one kind, in `namespace` or (`None`) everywhere.
async fn unlabel_all<K>(client: &Client, namespace: Option<&str>, metrics: &Metrics) -> crate::Result<usize>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let all: Api<K> = match namespace {
        None => Api::all(client.clone()),
        Some(namespace) => Api::namespaced(client.clone(), namespace),
    };
    let selector = ListParams::default().labels(OBSERVED_LABEL);
    let labelled = api_call(metrics, "list_labelled_locks", all.list_metadata(&selector)).await?;
    // A merge patch that deletes the one key: it cannot create the object, and touches
    // nothing else of it.
    let patch = Patch::Merge(json!({ "metadata": { "labels": { OBSERVED_LABEL: null } } }));
    let mut removed = 0;
    for object in labelled.items {
        let (Some(namespace), Some(name)) = (object.metadata.namespace.as_deref(), object.metadata.name.as_deref())
        else {
            continue;
        };
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        match api_call(metrics, "remove_lock_label", api.patch_metadata(name, &PatchParams::default(), &patch)).await {
            Ok(_) => {
                info!(resource = %K::plural(&()), %namespace, %name, "removed the label {OBSERVED_LABEL}");
                removed += 1;
            }
            // Deleted since the list: nothing left to restore.
            Err(error) if super::status_code(&error) == Some(404) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(removed)
}
