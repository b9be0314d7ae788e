//! Writes ElectionPolicy statuses: server-side apply of the whole status under the
//! operator's field manager, latest version wins.
//!
//! A status handed in while an older one for the same policy is still queued replaces it,
//! so a burst of changes costs one write. Policies wait in a queue per namespace, served in
//! turn ([`FairQueue`]), so one namespace's burst delays another's status by one write at
//! most. A write that fails is retried with a capped back-off ([`limits`]), off the
//! workers' path: a policy whose status the API server refuses for good (a webhook's 403, a
//! 422) is retried every few minutes, reported in a metric by reason and in the log with the
//! API server's answer, and never occupies a worker meanwhile.
//!
//! [`limits`]: crate::limits

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
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::{
    api::ElectionPolicyStatus,
    domain::{fair_queue::FairQueue, injection::FIELD_MANAGER, policy_key::PolicyKey},
    k8s::{api_call, status_code},
    limits::{STATUS_RETRY_FIRST, STATUS_RETRY_PERMANENT_MAX, STATUS_RETRY_TRANSIENT_MAX},
    metrics::Metrics,
    supervisor::Supervisor,
};

#[derive(Clone)]
pub struct StatusWriter {
    shared: Arc<Shared>,
}

struct Shared {
    queue_state: Mutex<QueueState>,
    work: Notify,
    client: Client,
    metrics: Metrics,
    supervisor: Supervisor,
}

/// The newest unwritten status per policy, the policies waiting for a worker (by
/// namespace), and the policies a worker or a retry holds. A policy has at most one write in
/// flight: two concurrent writes could land in either order and leave the older status in
/// place.
struct QueueState {
    pending: HashMap<PolicyKey, Arc<ElectionPolicyStatus>>,
    /// Queued, being written, or waiting to be retried.
    held: HashSet<PolicyKey>,
    ready: FairQueue<PolicyKey>,
    /// Failures in a row, per policy, for its back-off.
    failures: HashMap<PolicyKey, u32>,
}

impl Default for QueueState {
    fn default() -> Self {
        QueueState {
            pending: HashMap::new(),
            held: HashSet::new(),
            // One entry per policy at most (`held`): bounded by the policies, not by the
            // writes, so no bound of its own.
            ready: FairQueue::new(usize::MAX, usize::MAX),
            failures: HashMap::new(),
        }
    }
}

/// How a failed write is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// The API server away, throttling or failing: retried within seconds.
    Transient(&'static str),
    /// Refused for what it is (403, 422, 413, 400): retried every few minutes.
    Permanent(&'static str),
}

impl Failure {
    fn of(error: &kube::Error) -> Self {
        match status_code(error) {
            Some(403) => Failure::Permanent("forbidden"),
            Some(422) => Failure::Permanent("invalid"),
            Some(413) => Failure::Permanent("too_large"),
            Some(400) => Failure::Permanent("bad_request"),
            Some(429) => Failure::Transient("throttled"),
            Some(_) => Failure::Transient("server_error"),
            None => Failure::Transient("unreachable"),
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Failure::Transient(reason) | Failure::Permanent(reason) => reason,
        }
    }

    /// The wait before attempt `failures + 1`, doubling from the first to the cap.
    fn back_off(self, failures: u32) -> Duration {
        let cap = match self {
            Failure::Transient(_) => STATUS_RETRY_TRANSIENT_MAX,
            Failure::Permanent(_) => STATUS_RETRY_PERMANENT_MAX,
        };
        STATUS_RETRY_FIRST.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20))).min(cap)
    }
}

impl QueueState {
    /// Records the newest status; true when the policy was queued for a worker (nothing
    /// held it).
    fn offer(&mut self, policy: &PolicyKey, status: Arc<ElectionPolicyStatus>) -> bool {
        self.pending.insert(policy.clone(), status);
        let queue = self.held.insert(policy.clone());
        if queue {
            let _ = self.ready.push(&policy.namespace, policy.clone());
        }
        queue
    }

    /// The next policy to write and its newest status; a policy with nothing newer is let
    /// go.
    fn next(&mut self) -> Option<(PolicyKey, Arc<ElectionPolicyStatus>)> {
        while let Some(policy) = self.ready.pop() {
            match self.pending.remove(&policy) {
                Some(status) => return Some((policy, status)),
                None => self.release(&policy),
            }
        }
        None
    }

    /// A write of `policy` ended: queue it again (behind its namespace's others) if a newer
    /// status came meanwhile, else let it go.
    fn written(&mut self, policy: &PolicyKey) {
        self.failures.remove(policy);
        if self.pending.contains_key(policy) {
            let _ = self.ready.push(&policy.namespace, policy.clone());
        } else {
            self.release(policy);
        }
    }

    /// A write of `policy` failed: keep the newest status and count the failure in a row.
    fn failed(&mut self, policy: &PolicyKey, status: Arc<ElectionPolicyStatus>) -> u32 {
        self.pending.entry(policy.clone()).or_insert(status);
        let failures = self.failures.entry(policy.clone()).or_default();
        *failures += 1;
        *failures
    }

    /// The retry is due: the policy waits for a worker again.
    fn retry(&mut self, policy: &PolicyKey) {
        let _ = self.ready.push(&policy.namespace, policy.clone());
    }

    fn release(&mut self, policy: &PolicyKey) {
        self.held.remove(policy);
        if self.held.is_empty() {
            // A start queues a status per policy; maps keep their largest size, and this
            // queue is empty most of the time after it.
            self.pending.shrink_to_fit();
            self.held.shrink_to_fit();
            self.failures.shrink_to_fit();
        }
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.queue_state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StatusWriter {
    /// Starts `workers` writers; more write concurrently, bounding the API load.
    pub fn spawn(client: Client, metrics: Metrics, supervisor: &Supervisor, workers: usize) -> Self {
        let shared = Arc::new(Shared {
            queue_state: Mutex::default(),
            work: Notify::new(),
            client,
            metrics,
            supervisor: supervisor.clone(),
        });
        for worker in 0..workers.max(1) {
            supervisor.spawn_forever(format!("status writer {worker}"), work(shared.clone()));
        }
        StatusWriter { shared }
    }

    /// Queues `status` for `policy`, replacing any version not yet written. Shared with the
    /// tracker that rendered it, so a queued status costs no copy.
    pub fn write(&self, policy: PolicyKey, status: Arc<ElectionPolicyStatus>) {
        if self.shared.state().offer(&policy, status) {
            self.shared.work.notify_one();
        }
    }
}

async fn work(shared: Arc<Shared>) {
    loop {
        let Some((policy, status)) = shared.state().next() else {
            shared.work.notified().await;
            continue;
        };
        match write_status(&shared, &policy, &status).await {
            Ok(()) => shared.state().written(&policy),
            Err(error) if status_code(&error) == Some(404) => {
                debug!(namespace = %policy.namespace, policy = %policy.name, "policy gone; status dropped");
                shared.state().written(&policy);
            }
            Err(error) => {
                let failure = Failure::of(&error);
                shared.metrics.status_write_failed(failure.reason());
                let failures = shared.state().failed(&policy, status);
                let delay = failure.back_off(failures);
                warn!(
                    namespace = %policy.namespace, policy = %policy.name, reason = failure.reason(), failures,
                    retry_in = ?delay, %error, "status write failed"
                );
                let again = shared.clone();
                shared.supervisor.spawn("status retry", async move {
                    tokio::time::sleep(delay).await;
                    again.state().retry(&policy);
                    again.work.notify_one();
                });
            }
        }
        // Other tasks run between writes, however many are queued.
        tokio::task::consume_budget().await;
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
        assert!(queue.offer(&key, status("a")), "the first status queues the policy");
        let (_, first) = queue.next().unwrap();
        assert_eq!(first.leader, "a");
        // Written meanwhile: not queued twice; the newest only.
        assert!(!queue.offer(&key, status("b")));
        assert!(!queue.offer(&key, status("c")));
        assert!(queue.next().is_none(), "one write in flight per policy");
        queue.written(&key);
        assert_eq!(queue.next().unwrap().1.leader, "c");
        queue.written(&key);
        assert!(queue.next().is_none(), "nothing newer: released");
        assert!(queue.offer(&key, status("d")), "released, so the next status queues it again");
    }

    #[test]
    fn a_failing_policy_waits_for_its_retry_while_others_are_written() {
        let mut queue = QueueState::default();
        let stuck: Vec<PolicyKey> = (0..8).map(|i| PolicyKey::new("hostile", format!("p{i}").as_str())).collect();
        for policy in &stuck {
            queue.offer(policy, status("x"));
        }
        for _ in &stuck {
            let (policy, status) = queue.next().unwrap();
            assert_eq!(queue.failed(&policy, status), 1);
        }
        let other = PolicyKey::new("quiet", "web");
        assert!(queue.offer(&other, status("web-1")));
        assert_eq!(queue.next().unwrap().0, other, "the failing policies wait for their retries, not in line");
        assert!(!queue.offer(&stuck[0], status("y")), "a new status of a failing policy waits for its retry");
        assert!(queue.next().is_none());
        queue.retry(&stuck[0]);
        assert_eq!(queue.next().unwrap().1.leader, "y", "the retry writes the newest");
    }

    #[test]
    fn back_off_doubles_to_a_cap_by_kind_of_failure() {
        let forbidden = Failure::Permanent("forbidden");
        let throttled = Failure::Transient("throttled");
        assert_eq!(throttled.back_off(1), STATUS_RETRY_FIRST);
        assert_eq!(throttled.back_off(2), STATUS_RETRY_FIRST * 2);
        assert_eq!(throttled.back_off(100), STATUS_RETRY_TRANSIENT_MAX);
        assert_eq!(forbidden.back_off(100), STATUS_RETRY_PERMANENT_MAX);
        assert!(forbidden.back_off(10) > STATUS_RETRY_TRANSIENT_MAX);
    }
}
