//! The name of a policy: what every per-policy table (observations, status writes,
//! metrics) is keyed by.

use std::{fmt, sync::Arc};

use kube::ResourceExt;

use crate::api::ElectionPolicy;

/// A policy's namespace and name. Shared strings: the key sits in half a dozen per-policy
/// tables (observer, timers, routes, metrics, index), and a clone is then two reference
/// counts, not two allocations; at 10000 policies owned copies cost some 4 MiB.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl PolicyKey {
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        PolicyKey { namespace: namespace.into(), name: name.into() }
    }

    pub fn of(policy: &ElectionPolicy) -> Self {
        PolicyKey::new(policy.namespace().unwrap_or_default(), policy.name_any())
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
