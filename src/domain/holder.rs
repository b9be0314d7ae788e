//! Whether the lock's holder is one of the Pods of the selected Deployments.

/// Whether `holder` names `pod`. client-go programs use the Pod name as identity (the
/// downward API, as injected), or the hostname (which is the Pod name) plus a "_" suffix,
/// as kube-controller-manager does.
pub fn holder_is_pod(holder: &str, pod: &str) -> bool {
    holder == pod || holder.strip_prefix(pod).is_some_and(|rest| rest.starts_with('_'))
}

/// What the Pod cache says of a lock holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HolderPod {
    /// The selected Pod that holds the lock.
    Found(String),
    /// No selected Pod holds it.
    NotFound,
}

/// Findings about the holder that take more than the lock to make.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HolderCheck {
    /// The holder is not a Pod of the selected Deployments, which are named here.
    pub not_found_among: Option<Vec<String>>,
}

/// What HolderNotFound says, in the condition and in the Event alike.
pub fn holder_not_found_message(leader: &str, lock: &str, deployments: &[String]) -> String {
    format!(
        "{leader} holds {lock} but is not a Pod of the selected Deployments ({}): a deleted Pod still holding it, or \
         a process outside them",
        deployments.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_matched_to_pods_by_name_or_hostname_prefix() {
        assert!(holder_is_pod("web-7d9f-abcde", "web-7d9f-abcde"));
        assert!(holder_is_pod("web-7d9f-abcde_2b6c0a1e-3f4d", "web-7d9f-abcde"));
        assert!(!holder_is_pod("web-7d9f-abcdef", "web-7d9f-abcde"));
        assert!(!holder_is_pod("web", "web-7d9f-abcde"));
    }
}
