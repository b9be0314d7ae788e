//! The Pods of the selected Deployments: whether the lock's holder is one of them
//! (HolderNotFound otherwise), and which one carries the leader label.
//!
//! Pods are watched only in the namespaces where a policy selects Deployments, one watch
//! per namespace, started with the first such policy there and stopped with the last: a
//! cluster's Pods are mostly other programs', and the operator's memory and CPU must not
//! grow with them. They are watched metadata-only and stripped to name and labels, all the
//! operator needs of them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    core::{Selector, SelectorExt},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, Event, watcher},
    },
};
use serde_json::json;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{
    domain::holder::{HolderPod, holder_is_pod},
    k8s::{WatchBackoff, api_call, inbox::ObserverHandle},
    metrics::Metrics,
};

/// The label the operator keeps on the lock holder's Pod (spec.leaderPodLabel).
pub const LEADER_LABEL: &str = "election.dev/leader";

/// Pod names and labels, per watched namespace. The observer owns it and says which
/// namespaces need their Pods ([`PodIndex::watch`], [`PodIndex::unwatch`]).
pub struct PodIndex {
    client: Client,
    observer: ObserverHandle,
    metrics: Metrics,
    namespaces: HashMap<String, NamespacePods>,
}

/// One namespace's Pod watch, and how many policies there need it.
struct NamespacePods {
    store: Store<PartialObjectMeta<Pod>>,
    /// Set once the namespace's Pods have been listed: before that, no Pod found means
    /// nothing. A relist keeps serving the previous list until the new one is complete, so
    /// it stays set.
    listed: Arc<AtomicBool>,
    users: usize,
    task: JoinHandle<()>,
}

impl Drop for NamespacePods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodIndex {
    pub fn new(client: Client, observer: ObserverHandle, metrics: Metrics) -> Self {
        PodIndex { client, observer, metrics, namespaces: HashMap::new() }
    }

    /// One more policy needs the Pods of `namespace`; the first starts the namespace's
    /// watch. Once its Pods are listed the observer is told to look at the namespace, and
    /// from then on at each change there. Changes during a (re)list are not passed on one by
    /// one: the store shows them all at once when the list completes, and that is passed on
    /// as one look.
    pub fn watch(&mut self, namespace: &str) {
        if let Some(pods) = self.namespaces.get_mut(namespace) {
            pods.users += 1;
            return;
        }
        debug!(%namespace, "starting pod watch");
        let (store, writer) = reflector::store::<PartialObjectMeta<Pod>>();
        let listed = Arc::new(AtomicBool::new(false));
        let api: Api<PartialObjectMeta<Pod>> = Api::namespaced(self.client.clone(), namespace);
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default())
                .modify(|pod| {
                    // Keep name, namespace and labels: the rest is of no use here.
                    pod.metadata.annotations = None;
                    pod.metadata.managed_fields = None;
                    pod.metadata.owner_references = None;
                })
                .backoff(WatchBackoff::new()),
        );
        let (observer, metrics, flag) = (self.observer.clone(), self.metrics.clone(), listed.clone());
        let name = namespace.to_string();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(Event::InitDone)) => {
                        flag.store(true, Ordering::Release);
                        observer.pods_changed(name.clone()).await;
                    }
                    Ok(Some(Event::Apply(_) | Event::Delete(_))) => observer.pods_changed(name.clone()).await,
                    Ok(Some(Event::Init | Event::InitApply(_))) => {}
                    Ok(None) => return,
                    Err(error) => {
                        metrics.watch_restarted("pods");
                        warn!(namespace = %name, %error, "pod watch failed; retrying");
                    }
                }
            }
        });
        self.namespaces.insert(namespace.to_string(), NamespacePods { store, listed, users: 1, task });
    }

    /// One policy less needs the Pods of `namespace`; the last stops the watch and drops
    /// its Pods.
    pub fn unwatch(&mut self, namespace: &str) {
        let Some(pods) = self.namespaces.get_mut(namespace) else { return };
        pods.users = pods.users.saturating_sub(1);
        if pods.users == 0 {
            debug!(%namespace, "stopping pod watch");
            self.namespaces.remove(namespace);
        }
    }

    /// Whether the Pods of `namespace` have been listed, so that the answers below mean
    /// something.
    pub fn is_listed(&self, namespace: &str) -> bool {
        self.namespaces.get(namespace).is_some_and(|pods| pods.listed.load(Ordering::Acquire))
    }

    /// The Pod, among those `selectors` select in `namespace`, that `holder` names; `None`
    /// until the namespace's Pods have been listed.
    pub fn holder_pod(&self, namespace: &str, holder: &str, selectors: &[Selector]) -> Option<HolderPod> {
        if !self.is_listed(namespace) {
            return None;
        }
        let pod = self
            .target_pods(namespace, selectors)
            .into_iter()
            .map(|(name, _)| name)
            .find(|pod| holder_is_pod(holder, pod));
        Some(pod.map_or(HolderPod::NotFound, HolderPod::Found))
    }

    /// The selected Pods in `namespace`, with their labels.
    fn target_pods(&self, namespace: &str, selectors: &[Selector]) -> Vec<(String, BTreeMap<String, String>)> {
        let Some(pods) = self.namespaces.get(namespace) else { return Vec::new() };
        pods.store
            .state()
            .iter()
            .filter(|p| selectors.iter().any(|s| s.matches(p.labels())))
            .map(|p| (p.name_any(), p.labels().clone()))
            .collect()
    }

    /// Brings the leader label to the holder's Pod and off the other selected Pods. Does
    /// nothing until the namespace's Pods have been listed.
    pub fn label_leader(&self, namespace: &str, leader_pod: Option<&str>, selectors: &[Selector]) {
        if !self.is_listed(namespace) {
            return;
        }
        for (pod, labels) in self.target_pods(namespace, selectors) {
            let labelled = labels.get(LEADER_LABEL).map(String::as_str) == Some("true");
            let wanted = leader_pod == Some(pod.as_str());
            if labelled != wanted {
                let (client, metrics) = (self.client.clone(), self.metrics.clone());
                let namespace = namespace.to_string();
                tokio::spawn(async move { set_label(client, metrics, &namespace, &pod, wanted).await });
            }
        }
    }
}

async fn set_label(client: Client, metrics: Metrics, namespace: &str, pod: &str, leader: bool) {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let value = if leader { json!("true") } else { serde_json::Value::Null };
    let patch = Patch::Merge(json!({ "metadata": { "labels": { LEADER_LABEL: value } } }));
    match api_call(&metrics, "patch_pod_label", api.patch_metadata(pod, &PatchParams::default(), &patch)).await {
        Ok(_) => info!(%namespace, %pod, leader, "leader label updated"),
        Err(error) => warn!(%namespace, %pod, %error, "could not update the leader label"),
    }
}
