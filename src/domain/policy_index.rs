//! Which policies name which lock, live in which namespace, and are refused for a lock
//! conflict. The controller keeps it from the policy watch and looks up here the few
//! policies a reconcile or a Deployment event concerns, instead of going through every
//! policy in the cache: with a scan, each reconcile costs more with every policy, and a
//! round of N reconciles (a start, the periodic safety net) costs N².

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::{
    api::ElectionPolicy,
    domain::{
        policy_key::PolicyKey,
        reasons::{condition, condition_reason},
    },
};

/// What a policy is looked up by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Tag {
    Namespace(Arc<str>),
    /// `spec.lock.name`, as written (the conflict check compares the specs' names).
    LockName(Arc<str>),
    /// Its status says ConfigInjected=False for a LockConflict.
    RefusedForConflict,
}

/// The policies by what they are looked up by.
#[derive(Debug, Default)]
pub struct PolicyIndex {
    tags_of: HashMap<Arc<PolicyKey>, Vec<Tag>>,
    with_tag: HashMap<Tag, HashSet<Arc<PolicyKey>>>,
}

impl PolicyIndex {
    /// Adds the policy, or updates it to what this copy says.
    pub fn insert(&mut self, policy: &ElectionPolicy) {
        let key = PolicyKey::of(policy);
        self.remove(&key);
        let mut tags =
            vec![Tag::Namespace(key.namespace.clone()), Tag::LockName(policy.spec.lock.name.as_str().into())];
        if refused_for_conflict(policy) {
            tags.push(Tag::RefusedForConflict);
        }
        let key = Arc::new(key);
        for tag in &tags {
            self.with_tag.entry(tag.clone()).or_default().insert(key.clone());
        }
        self.tags_of.insert(key, tags);
    }

    pub fn remove(&mut self, key: &PolicyKey) {
        let Some(tags) = self.tags_of.remove(key) else { return };
        for tag in tags {
            if let Some(keys) = self.with_tag.get_mut(&tag) {
                keys.remove(key);
                if keys.is_empty() {
                    self.with_tag.remove(&tag);
                }
            }
        }
    }

    /// Policies whose `spec.lock.name` is `name`, in any namespace.
    pub fn naming_lock(&self, name: &str) -> Vec<PolicyKey> {
        self.with(&Tag::LockName(name.into()))
    }

    pub fn in_namespace(&self, namespace: &str) -> Vec<PolicyKey> {
        self.with(&Tag::Namespace(namespace.into()))
    }

    /// Policies refused for a lock conflict: one that held the claim may have let go.
    pub fn refused_for_conflict(&self) -> Vec<PolicyKey> {
        self.with(&Tag::RefusedForConflict)
    }

    /// Sorted, so what callers do with them does not depend on hashing.
    fn with(&self, tag: &Tag) -> Vec<PolicyKey> {
        let mut keys: Vec<PolicyKey> =
            self.with_tag.get(tag).into_iter().flatten().map(|key| PolicyKey::clone(key)).collect();
        keys.sort();
        keys
    }
}

fn refused_for_conflict(policy: &ElectionPolicy) -> bool {
    policy.status.as_ref().is_some_and(|status| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == condition::CONFIG_INJECTED && c.reason == condition_reason::LOCK_CONFLICT)
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::api::{ElectionPolicySpec, ElectionPolicyStatus};

    fn policy(namespace: &str, name: &str, lock: &str) -> ElectionPolicy {
        let spec: ElectionPolicySpec =
            serde_json::from_value(serde_json::json!({"lock": {"name": lock}, "selector": {}})).unwrap();
        let mut policy = ElectionPolicy::new(name, spec);
        policy.metadata.namespace = Some(namespace.into());
        policy
    }

    fn refused(mut policy: ElectionPolicy) -> ElectionPolicy {
        policy.status = Some(ElectionPolicyStatus {
            conditions: vec![Condition {
                type_: condition::CONFIG_INJECTED.into(),
                status: "False".into(),
                reason: condition_reason::LOCK_CONFLICT.into(),
                message: "lock taken".into(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        });
        policy
    }

    fn key(namespace: &str, name: &str) -> PolicyKey {
        PolicyKey::new(namespace, name)
    }

    #[test]
    fn policies_are_found_by_lock_name_and_namespace() {
        let mut index = PolicyIndex::default();
        index.insert(&policy("a", "one", "lock"));
        index.insert(&policy("b", "two", "lock"));
        index.insert(&policy("a", "three", "other"));
        assert_eq!(index.naming_lock("lock"), [key("a", "one"), key("b", "two")]);
        assert_eq!(index.in_namespace("a"), [key("a", "one"), key("a", "three")]);
        assert_eq!(index.naming_lock("missing"), []);
        assert_eq!(index.tags_of.len(), 3);
    }

    #[test]
    fn an_update_moves_a_policy_to_its_new_lock_and_a_removal_forgets_it() {
        let mut index = PolicyIndex::default();
        index.insert(&policy("a", "one", "lock"));
        index.insert(&policy("a", "one", "renamed"));
        assert_eq!(index.naming_lock("lock"), []);
        assert_eq!(index.naming_lock("renamed"), [key("a", "one")]);
        index.remove(&key("a", "one"));
        assert_eq!(index.in_namespace("a"), []);
        assert!(index.tags_of.is_empty());
        assert!(index.with_tag.is_empty(), "no empty entries are left behind");
    }

    #[test]
    fn a_policy_is_refused_for_conflict_while_its_status_says_so() {
        let mut index = PolicyIndex::default();
        index.insert(&refused(policy("a", "one", "lock")));
        index.insert(&policy("a", "two", "lock"));
        assert_eq!(index.refused_for_conflict(), [key("a", "one")]);
        index.insert(&policy("a", "one", "lock"));
        assert_eq!(index.refused_for_conflict(), []);
    }
}
