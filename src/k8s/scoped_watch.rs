//! One watch over the namespaces the operator may read (--watch-namespaces), with the
//! events of a single cluster-wide watcher, so that a reflector store, the cache-sync gates
//! and the controller's mappers work the same in a namespaced install as cluster-wide.
//!
//! A namespaced install has Roles, not a ClusterRole, so it needs one watch per namespace.
//! Their raw events cannot feed one reflector store: each namespace's (re)list ends with an
//! `InitDone`, on which a reflector replaces its whole store by that namespace's list,
//! dropping every other namespace's objects (kube-state-metrics#942 is the same problem in
//! client-go). [`NamespaceMerge`] turns them into what one watch over the union would say:
//!
//! - First list: one `Init`, every namespace's objects, and one `InitDone` once each
//!   namespace has listed. Until then each namespace's objects are held here, so a
//!   namespace that lists again (its watch broke) or changes meanwhile is held as it is now.
//! - Later, a namespace that lists again (a broken watch, a 410 Gone): its objects as
//!   `Apply`, then a `Delete` for each object of that namespace the store holds and the new
//!   list lacks. Deletes carry the object as the store has it, so mappers still see its
//!   labels.
//!
//! Cluster-wide, the plain watcher is used as it is.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fmt::Debug,
    sync::Arc,
};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::Store,
        watcher::{self, Event, watcher},
    },
};
use serde::de::DeserializeOwned;

use crate::{domain::namespaces::WatchedNamespaces, k8s::WatchBackoff};

/// The events of one watch per watched namespace (or of one cluster-wide watch), each
/// retried with [`WatchBackoff`]. `store` is the reader of the reflector these events feed:
/// a namespace's relist deletes what it no longer lists from what that store holds.
pub fn watch<K>(
    client: &Client,
    namespaces: &WatchedNamespaces,
    config: watcher::Config,
    store: Store<K>,
) -> BoxStream<'static, watcher::Result<Event<K>>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug + Send + Sync,
    K: 'static,
{
    let list = match namespaces {
        WatchedNamespaces::All => {
            return watcher(Api::<K>::all(client.clone()), config).backoff(WatchBackoff::new()).boxed();
        }
        WatchedNamespaces::Only(list) => list,
    };
    let inputs = futures::stream::select_all(list.iter().map(|namespace| {
        let api = Api::<K>::namespaced(client.clone(), namespace);
        let namespace = namespace.clone();
        watcher(api, config.clone()).backoff(WatchBackoff::new()).map(move |event| (namespace.clone(), event)).boxed()
    }));
    let merge = NamespaceMerge::new(list.iter().cloned());
    futures::stream::unfold((inputs, merge, VecDeque::new()), move |(mut inputs, mut merge, mut output)| {
        let store = store.clone();
        async move {
            loop {
                // An input is taken only once everything before it has passed the reflector,
                // so the store shows it when a relist's deletes are worked out.
                if let Some(next) = output.pop_front() {
                    return Some((next, (inputs, merge, output)));
                }
                let (namespace, event) = inputs.next().await?;
                match event {
                    Ok(event) => {
                        let held = |namespace: &str| -> Vec<Arc<K>> {
                            store.state().into_iter().filter(|o| o.namespace().as_deref() == Some(namespace)).collect()
                        };
                        output.extend(merge.handle(&namespace, event, held).into_iter().map(Ok));
                    }
                    Err(error) => output.push_back(Err(error)),
                }
            }
        }
    })
    .boxed()
}

/// Merges per-namespace watch events into those of one watch over their union (see the
/// module's documentation).
pub struct NamespaceMerge<K> {
    namespaces: HashSet<String>,
    /// Until every namespace has listed once: what each namespace has said so far.
    first_list: Option<BTreeMap<String, FirstList<K>>>,
    /// After that: the names each relisting namespace has listed so far.
    relisting: HashMap<String, HashSet<String>>,
}

/// A namespace's objects by name, and whether its list is complete.
struct FirstList<K> {
    objects: BTreeMap<String, K>,
    listed: bool,
}

impl<K: Resource + Clone> NamespaceMerge<K> {
    pub fn new(namespaces: impl IntoIterator<Item = String>) -> Self {
        let namespaces: HashSet<String> = namespaces.into_iter().collect();
        let first_list =
            namespaces.iter().map(|n| (n.clone(), FirstList { objects: BTreeMap::new(), listed: false })).collect();
        NamespaceMerge { namespaces, first_list: Some(first_list), relisting: HashMap::new() }
    }

    /// The events to pass on for `event` of `namespace`'s watch. `held` gives the objects
    /// the store holds in a namespace, as it is once every earlier event has been applied.
    pub fn handle(&mut self, namespace: &str, event: Event<K>, held: impl Fn(&str) -> Vec<Arc<K>>) -> Vec<Event<K>> {
        if !self.namespaces.contains(namespace) {
            return Vec::new();
        }
        if let Some(first_list) = &mut self.first_list {
            let Some(FirstList { objects, listed }) = first_list.get_mut(namespace) else {
                return Vec::new();
            };
            match event {
                Event::Init => {
                    objects.clear();
                    *listed = false;
                }
                Event::InitApply(object) | Event::Apply(object) => {
                    objects.insert(object.name_any(), object);
                }
                Event::Delete(object) => {
                    objects.remove(&object.name_any());
                }
                Event::InitDone => *listed = true,
            }
            if !first_list.values().all(|namespace| namespace.listed) {
                return Vec::new();
            }
            let everything = self.first_list.take().into_iter().flat_map(|n| n.into_values()).flat_map(|n| n.objects);
            return std::iter::once(Event::Init)
                .chain(everything.map(|(_, object)| Event::InitApply(object)))
                .chain(std::iter::once(Event::InitDone))
                .collect();
        }
        match event {
            Event::Init => {
                self.relisting.insert(namespace.to_string(), HashSet::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                if let Some(names) = self.relisting.get_mut(namespace) {
                    names.insert(object.name_any());
                }
                vec![Event::Apply(object)]
            }
            Event::InitDone => {
                let listed = self.relisting.remove(namespace).unwrap_or_default();
                held(namespace)
                    .into_iter()
                    .filter(|object| !listed.contains(&object.name_any()))
                    .map(|object| Event::Delete(object.as_ref().clone()))
                    .collect()
            }
            event @ (Event::Apply(_) | Event::Delete(_)) => vec![event],
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{api::ObjectMeta, runtime::reflector};

    use super::*;

    fn object(namespace: &str, name: &str, version: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                name: Some(name.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// Feeds `events` through the merge into a reflector store, as `watch` does.
    struct Harness {
        merge: NamespaceMerge<ConfigMap>,
        store: Store<ConfigMap>,
        writer: reflector::store::Writer<ConfigMap>,
    }

    impl Harness {
        fn new(namespaces: &[&str]) -> Self {
            let (store, writer) = reflector::store();
            Harness { merge: NamespaceMerge::new(namespaces.iter().map(|n| n.to_string())), store, writer }
        }

        /// The events passed on, as "Kind ns/name@version".
        fn feed(&mut self, namespace: &str, event: Event<ConfigMap>) -> Vec<String> {
            let store = self.store.clone();
            let held = move |namespace: &str| -> Vec<Arc<ConfigMap>> {
                store.state().into_iter().filter(|o| o.namespace().as_deref() == Some(namespace)).collect()
            };
            let out = self.merge.handle(namespace, event, held);
            out.iter().for_each(|event| self.writer.apply_watcher_event(event));
            out.iter().map(describe).collect()
        }

        fn held(&self) -> Vec<String> {
            let mut held: Vec<String> = self.store.state().iter().map(|o| name(o)).collect();
            held.sort();
            held
        }
    }

    fn name(object: &ConfigMap) -> String {
        let version = object.resource_version().unwrap_or_default();
        format!("{}/{}@{version}", object.namespace().unwrap_or_default(), object.name_any())
    }

    fn describe(event: &Event<ConfigMap>) -> String {
        match event {
            Event::Init => "Init".into(),
            Event::InitApply(o) => format!("InitApply {}", name(o)),
            Event::InitDone => "InitDone".into(),
            Event::Apply(o) => format!("Apply {}", name(o)),
            Event::Delete(o) => format!("Delete {}", name(o)),
        }
    }

    #[test]
    fn the_first_list_ends_once_every_namespace_has_listed() {
        let mut h = Harness::new(&["a", "b"]);
        assert!(h.feed("a", Event::Init).is_empty());
        assert!(h.feed("a", Event::InitApply(object("a", "x", "1"))).is_empty());
        assert!(h.feed("a", Event::InitDone).is_empty());
        // Namespace a changes while b still lists: held, not passed on.
        assert!(h.feed("a", Event::Apply(object("a", "y", "2"))).is_empty());
        assert!(h.feed("b", Event::Init).is_empty());
        assert!(h.feed("b", Event::InitApply(object("b", "z", "3"))).is_empty());
        assert_eq!(h.held(), Vec::<String>::new(), "nothing is in the store before every namespace listed");
        assert_eq!(
            h.feed("b", Event::InitDone),
            ["Init", "InitApply a/x@1", "InitApply a/y@2", "InitApply b/z@3", "InitDone"]
        );
        assert_eq!(h.held(), ["a/x@1", "a/y@2", "b/z@3"]);
        // Events of namespaces not asked for (none arrive, but nothing trusts that) are dropped.
        assert!(h.feed("c", Event::Apply(object("c", "w", "4"))).is_empty());
    }

    #[test]
    fn a_namespace_that_lists_again_during_the_first_list_is_held_as_it_is_now() {
        let mut h = Harness::new(&["a", "b"]);
        h.feed("a", Event::Init);
        h.feed("a", Event::InitApply(object("a", "gone", "1")));
        h.feed("a", Event::InitDone);
        h.feed("a", Event::Delete(object("a", "gone", "2")));
        h.feed("a", Event::Apply(object("a", "also-gone", "3")));
        // Its watch broke: the new list is all that counts.
        h.feed("a", Event::Init);
        h.feed("a", Event::InitApply(object("a", "kept", "4")));
        assert!(h.feed("b", Event::InitDone).is_empty(), "a is listing again");
        assert_eq!(h.feed("a", Event::InitDone), ["Init", "InitApply a/kept@4", "InitDone"]);
        assert_eq!(h.held(), ["a/kept@4"]);
    }

    #[test]
    fn a_later_relist_of_one_namespace_updates_and_deletes_only_there() {
        let mut h = Harness::new(&["a", "b"]);
        h.feed("a", Event::InitApply(object("a", "x", "1")));
        h.feed("a", Event::InitApply(object("a", "y", "1")));
        h.feed("a", Event::InitDone);
        h.feed("b", Event::InitApply(object("b", "z", "1")));
        h.feed("b", Event::InitDone);
        assert_eq!(h.feed("a", Event::Apply(object("a", "x", "2"))), ["Apply a/x@2"]);

        // a's watch expired: its new list lacks y, which was deleted meanwhile.
        assert!(h.feed("a", Event::Init).is_empty());
        assert_eq!(h.feed("a", Event::InitApply(object("a", "x", "3"))), ["Apply a/x@3"]);
        assert_eq!(h.held(), ["a/x@3", "a/y@1", "b/z@1"], "nothing is dropped before the list is complete");
        // The delete carries the object as the store had it (labels and all, for mappers).
        assert_eq!(h.feed("a", Event::InitDone), ["Delete a/y@1"]);
        assert_eq!(h.held(), ["a/x@3", "b/z@1"], "b is untouched");
        assert_eq!(h.feed("b", Event::Delete(object("b", "z", "2"))), ["Delete b/z@2"]);
        assert_eq!(h.held(), ["a/x@3"]);
    }
}
