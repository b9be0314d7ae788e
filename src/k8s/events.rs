//! Publishing Events on ElectionPolicies.
//!
//! Not kube-runtime's `Recorder`: it folds Events with the same reason into one series and
//! keeps the first message, so "LeaderChanged a -> b" followed by "b -> c" would read as the
//! first twice. Here each occurrence is its own Event. Occurrences that must be reported
//! exactly once across operator restarts (leader transitions, staleness) get a name derived
//! from what happened; publishing the same one twice then meets AlreadyExists and is a no-op.
//!
//! Whoever reports something ([`Events::offer`]) never waits: Events are queued, a queue
//! per namespace served in turn ([`FairQueue`]) by a few workers, and an Event that cannot
//! be queued or published is dropped and counted. Detection must never wait on the API
//! server's answer to the last Event, least of all in a brownout, when a burst of
//! LeaseStale is what there is to report; and one namespace's burst must not hold up
//! another's. Each policy has a budget ([`EventBudget`], client-go's spam filter).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::{
    domain::{
        event_budget::EventBudget,
        fair_queue::{FairQueue, Full},
        notices::{Notice, Regarding, Severity, fit_note},
        policy_key::PolicyKey,
    },
    k8s::api_call,
    limits::{EVENT_ATTEMPTS, EVENTS_QUEUED, EVENTS_QUEUED_PER_NAMESPACE},
    metrics::Metrics,
    supervisor::Supervisor,
};

/// Identifies the operator in every Event it writes.
pub const REPORTING_CONTROLLER: &str = "election.dev/election-operator";

/// The policy an Event is about, as the Event refers to it.
fn object_reference(regarding: &Regarding) -> ObjectReference {
    ObjectReference {
        api_version: Some("election.dev/v1alpha1".into()),
        kind: Some("ElectionPolicy".into()),
        namespace: Some(regarding.namespace.clone()),
        name: Some(regarding.name.clone()),
        uid: Some(regarding.uid.clone()),
        ..Default::default()
    }
}

/// How often dropped Events are reported in the log, at most.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// One Event to publish, and how many times it was tried.
struct Pending {
    regarding: Regarding,
    notice: Notice,
    attempts: u32,
}

/// Queues Events and publishes them in the background. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<FairQueue<Pending>>,
    /// Drops since the last warning about them, and when that was: one line every few
    /// seconds says how many, not one line per Event.
    drops: Mutex<(Option<Instant>, u64)>,
    budget: Mutex<EventBudget<PolicyKey>>,
    work: Notify,
    client: Client,
    instance: String,
    metrics: Metrics,
    supervisor: Supervisor,
}

/// What publishing one Event came to.
enum Outcome {
    Published,
    /// Worth another attempt (the API server away, throttling, a timeout).
    Retry(kube::Error),
    /// Will not succeed (the namespace is going away, RBAC forbids it).
    GiveUp(String),
}

impl Events {
    /// Starts `workers` publishers, each with one Event in flight at most; `instance`
    /// names this process in the Events.
    pub fn start(client: Client, instance: String, metrics: Metrics, supervisor: &Supervisor, workers: usize) -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(FairQueue::new(EVENTS_QUEUED_PER_NAMESPACE, EVENTS_QUEUED)),
            drops: Mutex::new((None, 0)),
            budget: Mutex::default(),
            work: Notify::new(),
            client,
            instance,
            metrics,
            supervisor: supervisor.clone(),
        });
        for worker in 0..workers.max(1) {
            supervisor.spawn_forever(format!("event publisher {worker}"), publish_queued(shared.clone()));
        }
        Events { shared }
    }

    /// Queues an Event on the policy `regarding`; never waits. Dropped (and counted) when the
    /// policy has spent its budget or its namespace's queue is full.
    pub fn offer(&self, regarding: &Regarding, notice: Notice) {
        let key = PolicyKey::new(regarding.namespace.as_str(), regarding.name.as_str());
        if !self.shared.budget.lock().unwrap_or_else(|e| e.into_inner()).take(&key, Instant::now()) {
            debug!(policy = %key, reason = notice.reason, "event dropped: the policy's event budget is spent");
            self.shared.metrics.event_dropped("spam");
            return;
        }
        self.shared.push(&key.namespace, Pending { regarding: regarding.clone(), notice, attempts: 0 });
    }
}

impl Shared {
    fn push(&self, namespace: &Arc<str>, pending: Pending) {
        let pushed = self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(namespace, pending);
        match pushed {
            Ok(()) => self.work.notify_one(),
            Err((full, pending)) => {
                self.metrics.event_dropped("queue_full");
                let why = match full {
                    Full::Tenant => "its namespace's queue is full",
                    Full::Queue => "the queue is full",
                };
                debug!(namespace = %namespace, policy = %pending.regarding.name, reason = pending.notice.reason, "event dropped: {why}");
                let mut drops = self.drops.lock().unwrap_or_else(|e| e.into_inner());
                drops.1 += 1;
                if drops.0.is_none_or(|warned| warned.elapsed() >= DROP_WARNING_EVERY) {
                    warn!(dropped = drops.1, last_namespace = %namespace, "events dropped: {why} (election_events_dropped_total counts them)");
                    *drops = (Some(Instant::now()), 0);
                }
            }
        }
    }

    fn next(&self) -> Option<Pending> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    async fn publish(&self, pending: &Pending) -> Outcome {
        let Pending { regarding, notice, .. } = pending;
        let api: Api<Event> = Api::namespaced(self.client.clone(), &regarding.namespace);
        let event = event(&self.instance, regarding, notice, Timestamp::now());
        match api_call(&self.metrics, "create_event", api.create(&PostParams::default(), &event)).await {
            Ok(_) => {
                self.metrics.event_published(notice.reason);
                debug!(policy = %regarding.name, reason = notice.reason, note = %notice.note, "event published");
                Outcome::Published
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(policy = %regarding.name, reason = notice.reason, "event already published");
                Outcome::Published
            }
            // The namespace is going away, RBAC or a policy webhook forbids it, or the API
            // server will never take it: retrying cannot help.
            Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 404 | 413 | 422) => {
                Outcome::GiveUp(status.message)
            }
            Err(error) => Outcome::Retry(error),
        }
    }
}

/// One worker: publishes queued Events until the process stops. A failed attempt is retried
/// later, queued again behind its namespace's others, so the worker goes on with the next
/// namespace's Event meanwhile.
async fn publish_queued(shared: Arc<Shared>) {
    loop {
        let Some(mut pending) = shared.next() else {
            shared.work.notified().await;
            continue;
        };
        pending.attempts += 1;
        match shared.publish(&pending).await {
            Outcome::Published => {}
            Outcome::GiveUp(message) => {
                warn!(policy = %pending.regarding.name, reason = pending.notice.reason, error = %message, "event not published");
                shared.metrics.event_dropped("failed");
            }
            Outcome::Retry(error) if pending.attempts >= EVENT_ATTEMPTS => {
                warn!(policy = %pending.regarding.name, reason = pending.notice.reason, %error, attempts = pending.attempts, "event not published");
                shared.metrics.event_dropped("failed");
            }
            Outcome::Retry(error) => {
                let delay = Duration::from_millis(200) * 2u32.pow(pending.attempts - 1);
                debug!(policy = %pending.regarding.name, %error, attempt = pending.attempts, retry_in = ?delay, "event not published yet");
                let again = shared.clone();
                shared.supervisor.spawn("event retry", async move {
                    tokio::time::sleep(delay).await;
                    let namespace: Arc<str> = pending.regarding.namespace.as_str().into();
                    again.push(&namespace, pending);
                });
            }
        }
    }
}

/// The Event for `notice`, published by operator instance `instance` at `now`.
fn event(instance: &str, regarding: &Regarding, notice: &Notice, now: Timestamp) -> Event {
    let suffix = match &notice.occurrence_id {
        Some(id) => {
            format!("{:016x}", crate::domain::fnv1a(&format!("{}\n{}\n{id}", regarding.uid, notice.reason)))
        }
        None => format!("{:x}", now.as_nanosecond()),
    };
    // Event names are DNS subdomains of at most 253 characters; policy names may use most
    // of that.
    let prefix: String = regarding.name.chars().take(253 - 1 - suffix.len()).collect();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}.{suffix}")),
            namespace: Some(regarding.namespace.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(notice.observed_at)),
        action: Some(notice.action.into()),
        reason: Some(notice.reason.into()),
        note: Some(fit_note(&notice.note)),
        regarding: Some(object_reference(regarding)),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.into()),
        type_: Some(match notice.severity {
            Severity::Normal => "Normal".into(),
            Severity::Warning => "Warning".into(),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notices::NOTE_LIMIT_BYTES;

    fn notice(occurrence_id: Option<&str>, note: &str) -> Notice {
        Notice {
            severity: Severity::Warning,
            reason: "LeaseStale",
            action: "Observe",
            note: note.into(),
            occurrence_id: occurrence_id.map(Into::into),
            observed_at: "2026-12-01T10:00:00Z".parse().unwrap(),
        }
    }

    fn regarding(name: &str) -> Regarding {
        Regarding { namespace: "ns".into(), name: name.into(), uid: "u1".into() }
    }

    #[test]
    fn an_occurrence_has_one_name_whoever_publishes_it_and_when() {
        let first = event("op-a", &regarding("web"), &notice(Some("stale\nweb-1\nt"), "n"), Timestamp::now());
        let again = event("op-b", &regarding("web"), &notice(Some("stale\nweb-1\nt"), "n"), Timestamp::UNIX_EPOCH);
        assert_eq!(first.metadata.name, again.metadata.name);
        assert!(first.metadata.name.as_deref().unwrap().starts_with("web."));
        let other = event("op-a", &regarding("web"), &notice(Some("stale\nweb-2\nt"), "n"), Timestamp::now());
        assert_ne!(first.metadata.name, other.metadata.name);
        let unnamed = |at| event("op-a", &regarding("web"), &notice(None, "n"), at).metadata.name;
        assert_ne!(unnamed(Timestamp::UNIX_EPOCH), unnamed(Timestamp::now()), "plain notices are each their own Event");
    }

    #[test]
    fn names_and_notes_fit_the_api_servers_limits() {
        let long_name = "p".repeat(253);
        let event = event("op-a", &regarding(&long_name), &notice(Some("id"), &"é".repeat(600)), Timestamp::now());
        assert!(event.metadata.name.unwrap().len() <= 253);
        assert!(event.note.unwrap().len() <= NOTE_LIMIT_BYTES);
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.reporting_instance.as_deref(), Some("op-a"));
        assert_eq!(event.event_time, Some(MicroTime("2026-12-01T10:00:00Z".parse().unwrap())));
    }
}
