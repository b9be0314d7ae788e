//! The name of a policy: what every per-policy table (observations, status writes,
//! metrics) is keyed by.

use std::fmt;

use kube::ResourceExt;

use crate::api::ElectionPolicy;

/// A policy's namespace and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
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
