//! Writes ElectionPolicy statuses: server-side apply of the whole status under the
//! operator's field manager, latest version wins.
//!
//! A status handed in while an older one for the same policy is still queued replaces it,
//! so a burst of changes costs one write. A write that fails is retried (with a capped
//! back-off) until it succeeds, is superseded, or the policy is gone; meanwhile the
//! operator keeps working on everything else.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{
    api::ElectionPolicyStatus,
    domain::{injection::FIELD_MANAGER, policy_key::PolicyKey},
    k8s::{api_call, status_code},
    metrics::Metrics,
};

#[derive(Clone)]
pub struct StatusWriter {
    shared: Arc<Shared>,
}

struct Shared {
    queue_state: Mutex<QueueState>,
    queue: mpsc::UnboundedSender<PolicyKey>,
    client: Client,
    metrics: Metrics,
}

/// The newest unwritten status per policy, and the policies a worker is writing now. A
/// policy has at most one write in flight: two concurrent writes could land in either
/// order and leave the older status in place.
#[derive(Default)]
struct QueueState {
    pending: HashMap<PolicyKey, Arc<ElectionPolicyStatus>>,
    in_flight: HashSet<PolicyKey>,
}

impl QueueState {
    /// Records the newest status; true when the policy needs a worker (none holds it).
    fn offer(&mut self, policy: &PolicyKey, status: Arc<ElectionPolicyStatus>) -> bool {
        self.pending.insert(policy.clone(), status);
        self.in_flight.insert(policy.clone())
    }

    /// The next status for a policy the caller holds, or `None` (releasing it) when there is
    /// nothing newer.
    fn next(&mut self, policy: &PolicyKey) -> Option<Arc<ElectionPolicyStatus>> {
        let next = self.pending.remove(policy);
        if next.is_none() {
            self.in_flight.remove(policy);
            if self.in_flight.is_empty() {
                // A start queues a status per policy; maps keep their largest size, and
                // this queue is empty most of the time after it.
                self.pending.shrink_to_fit();
                self.in_flight.shrink_to_fit();
            }
        }
        next
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.queue_state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next(&self, policy: &PolicyKey) -> Option<Arc<ElectionPolicyStatus>> {
        self.state().next(policy)
    }
}

impl StatusWriter {
    /// Starts `workers` writers; more write concurrently, bounding the API load.
    pub fn spawn(client: Client, metrics: Metrics, workers: usize) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { queue_state: Mutex::default(), queue, client, metrics });
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(shared.clone(), receiver.clone()));
        }
        StatusWriter { shared }
    }

    /// Queues `status` for `policy`, replacing any version not yet written. Shared with the
    /// tracker that rendered it, so a queued status costs no copy.
    pub fn write(&self, policy: PolicyKey, status: Arc<ElectionPolicyStatus>) {
        // The first of a burst takes a queue slot; the rest ride on it, and a policy being
        // written is picked up again by its worker when that write is done.
        if self.shared.state().offer(&policy, status) {
            let _ = self.shared.queue.send(policy);
        }
    }
}

async fn work(shared: Arc<Shared>, receiver: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<PolicyKey>>>) {
    loop {
        let Some(policy) = receiver.lock().await.recv().await else {
            return;
        };
        let mut delay = Duration::from_millis(200);
        while let Some(status) = shared.next(&policy) {
            match write_status(&shared, &policy, &status).await {
                Ok(()) => delay = Duration::from_millis(200),
                Err(error) if status_code(&error) == Some(404) => {
                    debug!(namespace = %policy.namespace, policy = %policy.name, "policy gone; status dropped");
                }
                Err(error) => {
                    warn!(namespace = %policy.namespace, policy = %policy.name, %error, retry_in = ?delay, "status write failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    // Retry with whatever is newest: this version, or one queued meanwhile.
                    shared.state().pending.entry(policy.clone()).or_insert(status);
                }
            }
        }
    }
}

async fn write_status(
    shared: &Shared,
    PolicyKey { namespace, name }: &PolicyKey,
    status: &ElectionPolicyStatus,
) -> kube::Result<()> {
    let api: Api<crate::api::ElectionPolicy> = Api::namespaced(shared.client.clone(), namespace);
    let patch = json!({
        "apiVersion": "election.dev/v1alpha1",
        "kind": "ElectionPolicy",
        "status": status,
    });
    // The operator is the status's only writer, so forcing never takes a field from anyone.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api_call(&shared.metrics, "patch_policy_status", api.patch_status(name, &params, &Patch::Apply(&patch))).await?;
    shared.metrics.status_written();
    debug!(%namespace, policy = %name, state = ?status.state, leader = %status.leader, "status written");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: &str) -> Arc<ElectionPolicyStatus> {
        Arc::new(ElectionPolicyStatus { leader: leader.into(), ..Default::default() })
    }

    #[test]
    fn a_policy_has_one_write_in_flight_and_its_newest_status_written_last() {
        let mut queue = QueueState::default();
        let key = PolicyKey::new("ns", "p");
        assert!(queue.offer(&key, status("a")), "the first status needs a worker");
        let first = queue.next(&key).unwrap();
        assert_eq!(first.leader, "a");
        // Written meanwhile: no second worker, the holder takes them, newest only.
        assert!(!queue.offer(&key, status("b")));
        assert!(!queue.offer(&key, status("c")));
        assert_eq!(queue.next(&key).unwrap().leader, "c");
        assert!(queue.next(&key).is_none(), "nothing newer: released");
        assert!(queue.offer(&key, status("d")), "released, so the next status needs a worker again");
    }
}
