//! Writes the operator has made that its own watch cache may not show yet.
//!
//! A reconcile reads Deployments from the watch cache, which lags the API server by the time
//! the watch takes to deliver the change. A reconcile that runs in that window (triggered by
//! an earlier event of the same Deployment, or by a retry) would find the template without
//! the configuration it has just applied and apply it again: a needless write, and a second
//! ConfigInjected (or ConfigRemoved) Event.
//!
//! So each write is remembered with the generation the API server gave the object for it.
//! `metadata.generation` only grows, and every change to a Deployment's spec or annotations
//! bumps it, so a cached copy of a lower generation is known to predate the write, and one
//! of the same or a higher generation shows it (or something newer) and is trusted again.

use std::collections::HashMap;

use serde_json::Value;

use crate::domain::fnv1a;

/// Applied configurations by object uid, until the cache catches up with them.
#[derive(Debug, Default)]
pub struct PendingWrites {
    by_uid: HashMap<String, Pending>,
}

#[derive(Debug, PartialEq, Eq)]
struct Pending {
    /// The object's generation once the write was made.
    generation: i64,
    config: u64,
}

impl PendingWrites {
    /// Whether `config` was written in a write the cached copy, at `cached_generation`,
    /// does not show yet. A copy that shows the write settles the entry.
    pub fn already_written(&mut self, uid: &str, cached_generation: i64, config: &Value) -> bool {
        let Some(pending) = self.by_uid.get(uid) else { return false };
        if cached_generation >= pending.generation {
            self.by_uid.remove(uid);
            return false;
        }
        pending.config == fingerprint(config)
    }

    /// Remembers that `config` was written, which gave the object `generation`.
    pub fn record(&mut self, uid: &str, generation: i64, config: &Value) {
        self.by_uid.insert(uid.to_string(), Pending { generation, config: fingerprint(config) });
    }

    /// Forgets objects that no longer exist. Entries are otherwise settled one by one as
    /// the cache catches up; this bounds what deleted objects leave behind.
    pub fn retain(&mut self, exists: impl Fn(&str) -> bool) {
        self.by_uid.retain(|uid, _| exists(uid));
    }

    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

fn fingerprint(config: &Value) -> u64 {
    // serde_json's maps are ordered by key, so equal values serialize identically.
    fnv1a(&config.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_write_is_known_while_the_cache_holds_an_older_generation() {
        let mut writes = PendingWrites::default();
        let config = json!({"spec": {"env": "15s"}});
        assert!(!writes.already_written("uid-1", 3, &config), "nothing written yet");
        writes.record("uid-1", 4, &config);
        assert!(writes.already_written("uid-1", 3, &config));
        assert!(writes.already_written("uid-1", 2, &config), "an even older copy predates it too");
        assert!(writes.already_written("uid-1", 3, &config), "asking does not settle it");
        // Another object, or another configuration, is not covered.
        assert!(!writes.already_written("uid-2", 3, &config));
        assert!(!writes.already_written("uid-1", 3, &json!({"spec": {"env": "30s"}})));
        assert_eq!(writes.len(), 1);
    }

    #[test]
    fn a_cache_that_shows_the_write_is_trusted_again() {
        let mut writes = PendingWrites::default();
        let config = json!({"spec": {"env": "15s"}});
        writes.record("uid-1", 4, &config);
        assert!(!writes.already_written("uid-1", 4, &config), "the cache shows the write: it decides");
        assert!(writes.is_empty(), "settled");
        assert!(!writes.already_written("uid-1", 3, &config), "and stays settled");

        // A write that changed nothing left the generation as it was: nothing to wait for.
        writes.record("uid-1", 4, &config);
        assert!(!writes.already_written("uid-1", 4, &config));
    }

    #[test]
    fn deleted_objects_are_forgotten() {
        let mut writes = PendingWrites::default();
        writes.record("gone", 2, &json!({}));
        writes.record("here", 2, &json!({}));
        writes.retain(|uid| uid == "here");
        assert_eq!(writes.len(), 1);
        assert!(writes.already_written("here", 1, &json!({})));
    }
}
