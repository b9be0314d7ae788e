//! Writes ElectionPolicy statuses: server-side apply of the whole status under the
//! operator's field manager, latest version wins.
//!
//! A status handed in while an older one for the same policy is still queued replaces it,
//! so a burst of changes costs one write. A write that fails is retried (with a capped
//! back-off) until it succeeds, is superseded, or the policy is gone; meanwhile the
//! operator keeps working on everything else.

use std::{
    collections::HashMap,
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
    domain::injection::FIELD_MANAGER,
    k8s::{api_call, status_code},
    metrics::{Metrics, PolicyKey},
};

#[derive(Clone)]
pub struct StatusWriter {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<HashMap<PolicyKey, ElectionPolicyStatus>>,
    queue: mpsc::UnboundedSender<PolicyKey>,
    client: Client,
    metrics: Metrics,
}

impl StatusWriter {
    /// Starts `workers` writers; more write concurrently, bounding the API load.
    pub fn spawn(client: Client, metrics: Metrics, workers: usize) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { pending: Mutex::default(), queue, client, metrics });
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..workers.max(1) {
            tokio::spawn(work(shared.clone(), receiver.clone()));
        }
        StatusWriter { shared }
    }

    /// Queues `status` for `policy`, replacing any version not yet written.
    pub fn write(&self, policy: PolicyKey, status: ElectionPolicyStatus) {
        let queued = self.shared.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(policy.clone(), status);
        if queued.is_none() {
            // Only the first of a burst needs a queue slot; the rest ride on it.
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
        loop {
            let Some(status) = shared.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&policy) else {
                break;
            };
            match write_status(&shared, &policy, &status).await {
                Ok(()) => break,
                Err(error) if status_code(&error) == Some(404) => {
                    debug!(namespace = %policy.0, policy = %policy.1, "policy gone; status dropped");
                    break;
                }
                Err(error) => {
                    warn!(namespace = %policy.0, policy = %policy.1, %error, retry_in = ?delay, "status write failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    // Retry with whatever is newest: this version, or one queued meanwhile.
                    shared.pending.lock().unwrap_or_else(|e| e.into_inner()).entry(policy.clone()).or_insert(status);
                }
            }
        }
    }
}

async fn write_status(
    shared: &Shared,
    (namespace, name): &PolicyKey,
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
