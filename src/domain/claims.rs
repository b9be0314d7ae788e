//! Which policy may use a lock or a Deployment when several want it.
//!
//! Two policies injecting different configurations into one Deployment, or watching one lock
//! under two names, would make each report contradict the other. The rule is simple and the
//! same whichever policy is reconciled: the older policy (by creation time, then namespace
//! and name) keeps the claim and the younger is refused with a LockConflict naming it. Only
//! valid policies claim anything, so an invalid one never blocks a good one.

use std::cmp::Ordering;

use jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

use crate::{api::InjectionMode, domain::lock_record::LockKey};

/// A valid policy, as far as claims are concerned.
#[derive(Clone, Debug)]
pub struct Claimant<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub created: Option<Timestamp>,
    pub lock: &'a LockKey,
    pub selector: &'a Selector,
    pub mode: InjectionMode,
}

impl Claimant<'_> {
    fn precedes(&self, other: &Claimant<'_>) -> bool {
        // A missing creation time sorts last: the API server always sets it.
        let time = match (self.created, other.created) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        time.then_with(|| (self.namespace, self.name).cmp(&(other.namespace, other.name))) == Ordering::Less
    }

    fn is(&self, other: &Claimant<'_>) -> bool {
        self.namespace == other.namespace && self.name == other.name
    }

    fn injects(&self) -> bool {
        self.mode != InjectionMode::None
    }
}

/// Why a policy may not proceed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// `namespace/name` of the policy that keeps the claim.
    pub winner: String,
    pub message: String,
}

/// The first conflict of `me` with an older policy among `others` (which may include `me`),
/// given the labels of the Deployments in `me`'s namespace.
pub fn find_conflict<'a, L>(
    me: &Claimant<'_>,
    others: impl IntoIterator<Item = Claimant<'a>>,
    deployments: L,
) -> Option<Conflict>
where
    L: IntoIterator<Item = (&'a str, &'a std::collections::BTreeMap<String, String>)> + Clone,
{
    let mut older: Vec<Claimant<'a>> = others.into_iter().filter(|o| !o.is(me) && o.precedes(me)).collect();
    older.sort_by(|a, b| if a.precedes(b) { Ordering::Less } else { Ordering::Greater });

    for other in &older {
        if other.lock == me.lock {
            return Some(Conflict {
                winner: format!("{}/{}", other.namespace, other.name),
                message: format!(
                    "lock {} is already claimed by ElectionPolicy {}/{}, which is older",
                    me.lock, other.namespace, other.name
                ),
            });
        }
    }
    if !me.injects() {
        return None;
    }
    for other in older.iter().filter(|o| o.namespace == me.namespace && o.injects()) {
        let shared = deployments
            .clone()
            .into_iter()
            .find(|(_, labels)| me.selector.matches(labels) && other.selector.matches(labels));
        if let Some((deployment, _)) = shared {
            return Some(Conflict {
                winner: format!("{}/{}", other.namespace, other.name),
                message: format!(
                    "Deployment {deployment} is already configured by ElectionPolicy {}/{}, which is older",
                    other.namespace, other.name
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::LockType;

    fn lock(name: &str) -> LockKey {
        LockKey { type_: LockType::Lease, namespace: "ns".into(), name: name.into() }
    }

    fn selector(app: &str) -> Selector {
        [("app".to_string(), app.to_string())].into_iter().collect()
    }

    fn claimant<'a>(name: &'a str, second: i64, lock: &'a LockKey, selector: &'a Selector) -> Claimant<'a> {
        Claimant {
            namespace: "ns",
            name,
            created: Some(Timestamp::from_second(second).unwrap()),
            lock,
            selector,
            mode: InjectionMode::Env,
        }
    }

    #[test]
    fn the_younger_policy_loses_a_shared_lock() {
        let (l, s1, s2) = (lock("l"), selector("a"), selector("b"));
        let old = claimant("old", 1, &l, &s1);
        let young = claimant("young", 2, &l, &s2);
        let none: Vec<(&str, &BTreeMap<String, String>)> = vec![];
        let conflict = find_conflict(&young, [old.clone(), young.clone()], none.clone()).unwrap();
        assert_eq!(conflict.winner, "ns/old");
        assert!(conflict.message.contains("leases/ns/l"));
        assert_eq!(find_conflict(&old, [old.clone(), young.clone()], none), None);
    }

    #[test]
    fn the_younger_policy_loses_a_shared_deployment() {
        let (l1, l2, s) = (lock("l1"), lock("l2"), selector("a"));
        let old = claimant("old", 1, &l1, &s);
        let young = claimant("young", 2, &l2, &s);
        let labels: BTreeMap<String, String> = [("app".to_string(), "a".to_string())].into();
        let deployments = vec![("web", &labels)];
        let conflict = find_conflict(&young, [old.clone()], deployments.clone()).unwrap();
        assert_eq!(conflict.winner, "ns/old");
        assert!(conflict.message.contains("Deployment web"));
        assert_eq!(find_conflict(&old, [young], deployments), None);
    }

    #[test]
    fn an_observe_only_policy_claims_no_deployment() {
        let (l1, l2, s) = (lock("l1"), lock("l2"), selector("a"));
        let mut old = claimant("old", 1, &l1, &s);
        old.mode = InjectionMode::None;
        let young = claimant("young", 2, &l2, &s);
        let labels: BTreeMap<String, String> = [("app".to_string(), "a".to_string())].into();
        assert_eq!(find_conflict(&young, [old], vec![("web", &labels)]), None);
    }

    #[test]
    fn equal_creation_times_are_ordered_by_name() {
        let (l, s) = (lock("l"), selector("a"));
        let a = claimant("a", 1, &l, &s);
        let b = claimant("b", 1, &l, &s);
        let none: Vec<(&str, &BTreeMap<String, String>)> = vec![];
        assert!(find_conflict(&b, [a.clone()], none.clone()).is_some());
        assert!(find_conflict(&a, [b], none).is_none());
    }
}
