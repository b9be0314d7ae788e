//! The statuses the policies had when the operator started, kept until each policy's first
//! registration hands its status to the observer.
//!
//! The observer keeps every policy's status as it last wrote it; what a restart needs is
//! the status found on each policy, once, to resume from it without writing anything
//! users would see as new. Keeping every status in the policy cache as well would be a
//! second copy of all of them for the operator's whole life (at 10000 policies, some 7 MiB),
//! so the cache keeps none and this table holds the statuses of the first list, each only
//! until its policy is first registered. A policy created later has no status of its own
//! yet (the API server ignores a status sent with a create), so only the first list counts.

use std::collections::HashMap;

use crate::{api::ElectionPolicyStatus, domain::policy_key::PolicyKey};

#[derive(Debug, Default)]
pub struct StartingStatuses {
    statuses: HashMap<PolicyKey, ElectionPolicyStatus>,
    /// The first list has completed: later lists find policies the observer already has.
    first_list_done: bool,
}

impl StartingStatuses {
    /// A list begins. A first list that began again starts over.
    pub fn list_started(&mut self) {
        if !self.first_list_done {
            self.statuses.clear();
        }
    }

    /// The list shows `policy` with `status`.
    pub fn listed(&mut self, policy: PolicyKey, status: Option<ElectionPolicyStatus>) {
        if !self.first_list_done
            && let Some(status) = status
        {
            self.statuses.insert(policy, status);
        }
    }

    pub fn list_done(&mut self) {
        self.first_list_done = true;
    }

    /// `policy` changed before its first registration: the newer status is kept.
    pub fn changed(&mut self, policy: &PolicyKey, status: Option<&ElectionPolicyStatus>) {
        if let (Some(kept), Some(status)) = (self.statuses.get_mut(policy), status) {
            kept.clone_from(status);
        }
    }

    pub fn deleted(&mut self, policy: &PolicyKey) {
        self.statuses.remove(policy);
    }

    /// The status to resume `policy` from, handed over once.
    pub fn take(&mut self, policy: &PolicyKey) -> Option<ElectionPolicyStatus> {
        self.statuses.remove(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: &str) -> Option<ElectionPolicyStatus> {
        Some(ElectionPolicyStatus { leader: leader.into(), ..Default::default() })
    }

    fn key(name: &str) -> PolicyKey {
        PolicyKey::new("ns", name)
    }

    #[test]
    fn each_status_of_the_first_list_is_handed_over_once() {
        let mut statuses = StartingStatuses::default();
        statuses.list_started();
        statuses.listed(key("a"), status("pod-1"));
        statuses.listed(key("b"), None);
        statuses.list_done();
        assert_eq!(statuses.take(&key("a")).map(|s| s.leader), Some("pod-1".into()));
        assert_eq!(statuses.take(&key("a")), None, "the observer keeps it from then on");
        assert_eq!(statuses.take(&key("b")), None);
        assert!(statuses.statuses.is_empty());
    }

    #[test]
    fn a_change_before_the_first_registration_is_kept_and_later_lists_add_nothing() {
        let mut statuses = StartingStatuses::default();
        statuses.list_started();
        statuses.listed(key("a"), status("pod-1"));
        statuses.listed(key("gone"), status("pod-9"));
        statuses.list_done();
        statuses.changed(&key("a"), status("pod-2").as_ref());
        statuses.changed(&key("new"), status("pod-3").as_ref());
        statuses.deleted(&key("gone"));
        assert_eq!(statuses.statuses.len(), 1, "only a's status is left");
        assert_eq!(statuses.take(&key("a")).map(|s| s.leader), Some("pod-2".into()));

        // A relist after a watch error finds policies the observer already holds.
        statuses.list_started();
        statuses.listed(key("a"), status("pod-2"));
        statuses.list_done();
        assert!(statuses.statuses.is_empty());
    }

    #[test]
    fn a_first_list_that_began_again_keeps_only_what_the_new_one_shows() {
        let mut statuses = StartingStatuses::default();
        statuses.list_started();
        statuses.listed(key("deleted-meanwhile"), status("pod-1"));
        statuses.list_started();
        statuses.listed(key("a"), status("pod-2"));
        statuses.list_done();
        assert_eq!(statuses.take(&key("deleted-meanwhile")), None);
        assert_eq!(statuses.statuses.len(), 1);
    }
}
