//! Publishing Events on ElectionPolicies.
//!
//! Not kube-runtime's `Recorder`: it folds Events with the same reason into one series and
//! keeps the first message, so "LeaderChanged a -> b" followed by "b -> c" would read as the
//! first twice. Here each occurrence is its own Event. Occurrences that must be reported
//! exactly once across operator restarts (leader transitions, staleness) get a name derived
//! from what happened; publishing the same one twice then meets AlreadyExists and is a no-op.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tracing::{debug, warn};

use crate::{
    domain::notices::{Notice, Regarding, Severity, fit_note},
    k8s::api_call,
    metrics::Metrics,
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

#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    instance: String,
    metrics: Metrics,
}

impl EventPublisher {
    pub fn new(client: Client, instance: String, metrics: Metrics) -> Self {
        EventPublisher { client, instance, metrics }
    }

    /// Publishes, retrying a few times on transient errors. Never fails: an Event that cannot
    /// be written is logged and counted, not allowed to stop the operator.
    pub async fn publish(&self, regarding: &Regarding, notice: Notice) {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &regarding.namespace);
        let event = event(&self.instance, regarding, &notice, Timestamp::now());
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=5 {
            match api_call(&self.metrics, "create_event", api.create(&PostParams::default(), &event)).await {
                Ok(_) => {
                    self.metrics.event_published(notice.reason);
                    debug!(policy = %regarding.name, reason = notice.reason, note = %notice.note, "event published");
                    return;
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    debug!(policy = %regarding.name, reason = notice.reason, "event already published");
                    return;
                }
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 403 => {
                    // The namespace is going away, or RBAC forbids it: retrying cannot help.
                    warn!(policy = %regarding.name, reason = notice.reason, error = %status.message, "event not published");
                    return;
                }
                Err(error) if attempt < 5 => {
                    debug!(%error, attempt, "event not published yet, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => {
                    warn!(policy = %regarding.name, reason = notice.reason, %error, "event not published");
                }
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
