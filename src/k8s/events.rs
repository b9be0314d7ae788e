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

use crate::{k8s::api_call, metrics::Metrics};

/// Identifies the operator in every Event it writes.
pub const REPORTING_CONTROLLER: &str = "election.dev/election-operator";

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// One Event to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub severity: Severity,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
    /// When set, the Event's name is derived from it, making the publication idempotent.
    pub occurrence_id: Option<String>,
    /// When it happened (the Event's eventTime), which may be earlier than its publication.
    pub observed_at: Timestamp,
}

/// The policy an Event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Regarding {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Regarding {
    fn reference(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some("election.dev/v1alpha1".into()),
            kind: Some("ElectionPolicy".into()),
            namespace: Some(self.namespace.clone()),
            name: Some(self.name.clone()),
            uid: Some(self.uid.clone()),
            ..Default::default()
        }
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
        let event = self.event(regarding, &notice);
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

    fn event(&self, regarding: &Regarding, notice: &Notice) -> Event {
        let now = Timestamp::now();
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
            note: Some(truncate_note(&notice.note)),
            regarding: Some(regarding.reference()),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(match notice.severity {
                Severity::Normal => "Normal".into(),
                Severity::Warning => "Warning".into(),
            }),
            ..Default::default()
        }
    }
}

/// Event notes are limited to 1 kB.
fn truncate_note(note: &str) -> String {
    crate::domain::lock_record::truncate(note, 900)
}
