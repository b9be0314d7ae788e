//! The Pods of the selected Deployments: whether the lock's holder is one of them
//! (HolderNotFound otherwise), and which one carries the leader label.
//!
//! Pods are watched only in the namespaces where a policy selects Deployments, one watch
//! per namespace, started with the first such policy there and stopped with the last: a
//! cluster's Pods are mostly other programs', and the operator's memory and CPU must not
//! grow with them. They are watched metadata-only and stripped to name and labels, all the
//! operator needs of them.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
};

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{PartialObjectMeta, Patch, PatchParams},
    core::{Selector, SelectorExt},
    runtime::{
        WatchStreamExt,
        watcher::{self, Event, watcher},
    },
};
use serde_json::json;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::{
    domain::holder::HolderPod,
    k8s::{WatchBackoff, api_call, inbox::ObserverHandle},
    metrics::Metrics,
    supervisor::Supervisor,
};

/// The label the operator keeps on the lock holder's Pod (spec.leaderPodLabel).
pub const LEADER_LABEL: &str = "election.dev/leader";

type Labels = BTreeMap<String, String>;

/// Pod names and labels, per watched namespace. The observer owns it and says which
/// namespaces need their Pods ([`PodIndex::watch`], [`PodIndex::unwatch`]).
pub struct PodIndex {
    client: Client,
    observer: ObserverHandle,
    metrics: Metrics,
    supervisor: Supervisor,
    namespaces: HashMap<String, NamespacePods>,
    /// Label patches in flight, by namespace, Pod and the value being set: the same patch is
    /// never sent twice at once, however often the holder is checked meanwhile.
    labelling: Arc<Mutex<HashSet<(String, String, bool)>>>,
}

/// What a namespace's Pod watch has seen: each Pod's labels, by name. Only names and labels
/// are kept, and only a change of those (or a Pod coming or going) is passed on: a Pod's
/// status changes many times in its life (a Job-heavy namespace makes thousands a minute),
/// and none of them can change which Pod holds a lock.
#[derive(Default)]
struct Listed {
    pods: HashMap<String, Labels>,
    /// Set once the namespace's Pods have been listed: before that, no Pod found means
    /// nothing. A relist keeps serving the previous list until the new one is complete.
    complete: bool,
}

/// One namespace's Pod watch, and how many policies there need it.
struct NamespacePods {
    listed: Arc<RwLock<Listed>>,
    users: usize,
    task: JoinHandle<()>,
}

impl Drop for NamespacePods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodIndex {
    pub fn new(client: Client, observer: ObserverHandle, metrics: Metrics, supervisor: Supervisor) -> Self {
        PodIndex { client, observer, metrics, supervisor, namespaces: HashMap::new(), labelling: Arc::default() }
    }

    /// One more policy needs the Pods of `namespace`; the first starts the namespace's
    /// watch. Once its Pods are listed the observer is told to look at the namespace, and
    /// from then on at each Pod that comes, goes or changes its labels there. Changes during
    /// a (re)list are not passed on one by one: the list shows them all at once when it
    /// completes, and that is passed on as one look.
    pub fn watch(&mut self, namespace: &str) {
        if let Some(pods) = self.namespaces.get_mut(namespace) {
            pods.users += 1;
            return;
        }
        debug!(%namespace, "starting pod watch");
        let listed = Arc::new(RwLock::new(Listed::default()));
        let api: Api<PartialObjectMeta<Pod>> = Api::namespaced(self.client.clone(), namespace);
        let stream = watcher(api, watcher::Config::default()).backoff(WatchBackoff::new());
        let (observer, metrics, shared) = (self.observer.clone(), self.metrics.clone(), listed.clone());
        let name = namespace.to_string();
        let task = self.supervisor.spawn_forever(format!("pod watch {namespace}"), async move {
            let mut stream = std::pin::pin!(stream);
            let mut relisting: Option<HashMap<String, Labels>> = None;
            loop {
                let event = match stream.try_next().await {
                    Ok(Some(event)) => event,
                    Ok(None) => return,
                    Err(error) => {
                        metrics.watch_restarted("pods");
                        warn!(namespace = %name, %error, "pod watch failed; retrying");
                        continue;
                    }
                };
                let changed = match event {
                    Event::Init => {
                        relisting = Some(HashMap::new());
                        None
                    }
                    Event::InitApply(pod) => {
                        relisting.get_or_insert_default().insert(pod.name_any(), pod.labels().clone());
                        None
                    }
                    Event::InitDone => {
                        {
                            let mut listed = shared.write().unwrap_or_else(|e| e.into_inner());
                            listed.pods = relisting.take().unwrap_or_default();
                            listed.complete = true;
                        }
                        observer.pods_changed(name.clone(), None).await;
                        None
                    }
                    Event::Apply(pod) => {
                        let pod_name = pod.name_any();
                        let labels = pod.labels();
                        let mut listed = shared.write().unwrap_or_else(|e| e.into_inner());
                        let same = listed.pods.get(&pod_name) == Some(labels);
                        if !same {
                            listed.pods.insert(pod_name.clone(), labels.clone());
                        }
                        (!same).then_some(pod_name)
                    }
                    Event::Delete(pod) => {
                        let pod_name = pod.name_any();
                        shared.write().unwrap_or_else(|e| e.into_inner()).pods.remove(&pod_name);
                        Some(pod_name)
                    }
                };
                if let Some(pod) = changed {
                    observer.pods_changed(name.clone(), Some(pod)).await;
                }
            }
        });
        self.namespaces.insert(namespace.to_string(), NamespacePods { listed, users: 1, task });
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

    fn listed(&self, namespace: &str) -> Option<std::sync::RwLockReadGuard<'_, Listed>> {
        let listed = self.namespaces.get(namespace)?.listed.read().unwrap_or_else(|e| e.into_inner());
        listed.complete.then_some(listed)
    }

    /// Whether the Pods of `namespace` have been listed, so that the answers below mean
    /// something.
    pub fn is_listed(&self, namespace: &str) -> bool {
        self.listed(namespace).is_some()
    }

    /// The Pod, among those `selectors` select in `namespace`, that `holder` names; `None`
    /// until the namespace's Pods have been listed. Looked up by name, not searched for: a
    /// holder names its Pod (see `holder_is_pod`), and Pod names cannot contain '_'.
    pub fn holder_pod(&self, namespace: &str, holder: &str, selectors: &[Selector]) -> Option<HolderPod> {
        let listed = self.listed(namespace)?;
        let pod = holder.split('_').next().unwrap_or_default();
        let selected = listed.pods.get(pod).is_some_and(|labels| selectors.iter().any(|s| s.matches(labels)));
        Some(if selected { HolderPod::Found(pod.to_string()) } else { HolderPod::NotFound })
    }

    /// Brings the leader label to the holder's Pod and off the other selected Pods. Does
    /// nothing until the namespace's Pods have been listed.
    pub fn label_leader(&self, namespace: &str, leader_pod: Option<&str>, selectors: &[Selector]) {
        let Some(listed) = self.listed(namespace) else { return };
        let changes: Vec<(String, bool)> = listed
            .pods
            .iter()
            .filter(|(_, labels)| selectors.iter().any(|s| s.matches(labels)))
            .filter_map(|(pod, labels)| {
                let labelled = labels.get(LEADER_LABEL).map(String::as_str) == Some("true");
                let wanted = leader_pod == Some(pod.as_str());
                (labelled != wanted).then(|| (pod.clone(), wanted))
            })
            .collect();
        drop(listed);
        for (pod, wanted) in changes {
            let patch = (namespace.to_string(), pod, wanted);
            if !self.labelling.lock().unwrap_or_else(|e| e.into_inner()).insert(patch.clone()) {
                continue;
            }
            let (client, metrics, labelling) = (self.client.clone(), self.metrics.clone(), self.labelling.clone());
            self.supervisor.spawn("leader label", async move {
                set_label(client, metrics, &patch.0, &patch.1, patch.2).await;
                labelling.lock().unwrap_or_else(|e| e.into_inner()).remove(&patch);
            });
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
