//! Which namespaces the operator works in (--watch-namespaces): every one, or a list. A
//! namespaced install is granted Roles in those namespaces only, so every watch, read and
//! write of the operator must stay inside them.

use std::{collections::BTreeSet, fmt};

use super::names::{DNS1123_LABEL, is_dns1123_label};

/// A --watch-namespaces entry that cannot be a namespace.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--watch-namespaces: {0:?}: {DNS1123_LABEL}")]
pub struct NotANamespace(pub String);

/// The namespaces the operator watches, reads and writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum WatchedNamespaces {
    /// Cluster-wide: the operator's role is a ClusterRole.
    #[default]
    All,
    /// Only these; never empty.
    Only(BTreeSet<String>),
}

impl WatchedNamespaces {
    /// Parses the flag's comma-separated list; an empty list means every namespace.
    pub fn parse(list: &str) -> Result<Self, NotANamespace> {
        let mut namespaces = BTreeSet::new();
        for namespace in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !is_dns1123_label(namespace) {
                return Err(NotANamespace(namespace.to_string()));
            }
            namespaces.insert(namespace.to_string());
        }
        Ok(if namespaces.is_empty() { WatchedNamespaces::All } else { WatchedNamespaces::Only(namespaces) })
    }

    /// Whether the operator may look at `namespace`.
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            WatchedNamespaces::All => true,
            WatchedNamespaces::Only(namespaces) => namespaces.contains(namespace),
        }
    }

    /// Adds `namespace` to a list (the operator's own, for its self policy); `All` stays all.
    pub fn with(mut self, namespace: &str) -> Self {
        if let WatchedNamespaces::Only(namespaces) = &mut self {
            namespaces.insert(namespace.to_string());
        }
        self
    }
}

impl fmt::Display for WatchedNamespaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchedNamespaces::All => f.write_str("all namespaces"),
            WatchedNamespaces::Only(namespaces) => {
                f.write_str(&namespaces.iter().map(String::as_str).collect::<Vec<_>>().join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_is_every_namespace() {
        assert_eq!(WatchedNamespaces::parse("").unwrap(), WatchedNamespaces::All);
        assert_eq!(WatchedNamespaces::parse(" , ").unwrap(), WatchedNamespaces::All);
        assert!(WatchedNamespaces::All.contains("anything"));
        assert_eq!(WatchedNamespaces::All.with("ops"), WatchedNamespaces::All);
    }

    #[test]
    fn a_list_is_trimmed_deduplicated_and_checked() {
        let only = WatchedNamespaces::parse("team-b, team-a,team-b").unwrap();
        assert_eq!(only.to_string(), "team-a,team-b");
        assert!(only.contains("team-a") && !only.contains("team-c"));
        assert_eq!(only.with("ops").to_string(), "ops,team-a,team-b");
        let error = WatchedNamespaces::parse("team-a,Team_B").unwrap_err().to_string();
        assert!(error.starts_with("--watch-namespaces: \"Team_B\": must be a DNS-1123 label"), "{error}");
    }
}
