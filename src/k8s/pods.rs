//! The Pods of the selected Deployments: whether the lock's holder is one of them
//! (HolderNotFound otherwise), and which one carries the leader label.
//!
//! Pods are watched metadata-only and stripped to name and labels: the operator never needs
//! more of them, and a cluster can hold many.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    core::{Selector, SelectorExt},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher::{self, Event},
    },
};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    domain::holder::{HolderPod, holder_is_pod},
    domain::namespaces::WatchedNamespaces,
    k8s::{api_call, cache_sync::CacheSync, inbox::ObserverHandle, scoped_watch},
    metrics::Metrics,
};

/// The label the operator keeps on the lock holder's Pod (spec.leaderPodLabel).
pub const LEADER_LABEL: &str = "election.dev/leader";

/// A cache of Pod names and labels, in the watched namespaces.
#[derive(Clone)]
pub struct PodIndex {
    store: Store<PartialObjectMeta<Pod>>,
    /// Open once the Pods have been listed: before that, no Pod found means nothing.
    synced: CacheSync,
    client: Client,
    metrics: Metrics,
}

impl PodIndex {
    /// Starts the Pod watch. Once the Pods are listed the observer is told to look at every
    /// namespace, and from then on at each namespace where a Pod changes. Changes during a
    /// (re)list are not passed on one by one: the store shows them all at once when the list
    /// completes, and that is passed on as one look at everything.
    pub fn spawn(client: Client, namespaces: &WatchedNamespaces, observer: ObserverHandle, metrics: Metrics) -> Self {
        let (store, writer) = reflector::store::<PartialObjectMeta<Pod>>();
        let synced = CacheSync::new();
        let listed = synced.expect("pods");
        let stream = reflector::reflector(
            writer,
            scoped_watch::watch(&client, namespaces, watcher::Config::default(), store.clone()).modify(|pod| {
                // Keep name, namespace and labels: the rest is of no use here.
                pod.metadata.annotations = None;
                pod.metadata.managed_fields = None;
                pod.metadata.owner_references = None;
            }),
        );
        let watch_metrics = metrics.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                match stream.try_next().await {
                    Ok(Some(Event::InitDone)) => {
                        listed.observe(&Event::<()>::InitDone);
                        observer.pods_changed(None).await;
                    }
                    Ok(Some(Event::Apply(pod) | Event::Delete(pod))) => {
                        observer.pods_changed(Some(pod.namespace().unwrap_or_default())).await
                    }
                    Ok(Some(Event::Init | Event::InitApply(_))) => {}
                    Ok(None) => return,
                    Err(error) => {
                        watch_metrics.watch_restarted("pods");
                        warn!(%error, "pod watch failed; retrying");
                    }
                }
            }
        });
        PodIndex { store, synced, client, metrics }
    }

    /// Whether the Pods have been listed, so that the answers below mean something.
    pub fn is_synced(&self) -> bool {
        self.synced.is_synced()
    }

    /// The Pod, among those `selectors` select in `namespace`, that `holder` names; `None`
    /// until the Pods have been listed.
    pub fn holder_pod(&self, namespace: &str, holder: &str, selectors: &[Selector]) -> Option<HolderPod> {
        if !self.is_synced() {
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
        self.store
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter(|p| selectors.iter().any(|s| s.matches(p.labels())))
            .map(|p| (p.name_any(), p.labels().clone()))
            .collect()
    }

    /// Brings the leader label to the holder's Pod and off the other selected Pods. Does
    /// nothing until the Pods have been listed.
    pub fn label_leader(&self, namespace: &str, leader_pod: Option<&str>, selectors: &[Selector]) {
        if !self.is_synced() {
            return;
        }
        for (pod, labels) in self.target_pods(namespace, selectors) {
            let labelled = labels.get(LEADER_LABEL).map(String::as_str) == Some("true");
            let wanted = leader_pod == Some(pod.as_str());
            if labelled != wanted {
                let index = self.clone();
                let namespace = namespace.to_string();
                tokio::spawn(async move { index.set_label(&namespace, &pod, wanted).await });
            }
        }
    }

    async fn set_label(&self, namespace: &str, pod: &str, leader: bool) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let value = if leader { json!("true") } else { serde_json::Value::Null };
        let patch = Patch::Merge(json!({ "metadata": { "labels": { LEADER_LABEL: value } } }));
        match api_call(&self.metrics, "patch_pod_label", api.patch_metadata(pod, &PatchParams::default(), &patch)).await
        {
            Ok(_) => info!(%namespace, %pod, leader, "leader label updated"),
            Err(error) => warn!(%namespace, %pod, %error, "could not update the leader label"),
        }
    }
}
