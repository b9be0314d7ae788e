//! The Events the operator publishes, as data: what each observation, holder finding and
//! configuration outcome says to users. Publishing them is the I/O layer's business
//! (`k8s::events`); every reason and message is decided here, once.

use std::time::Duration;

use jiff::Timestamp;

use crate::domain::{observation::Occurrence, reasons::event};

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Regarding {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The Event for something observed on a lock. Transitions and staleness carry an
/// occurrence id, which makes their publication idempotent across restarts.
pub fn occurrence_notice(occurrence: &Occurrence, lock: &str, renew_time: &str, at: Timestamp) -> Notice {
    let notice = |severity, reason, note: String, id: Option<String>| Notice {
        severity,
        reason,
        action: "Observe",
        note,
        occurrence_id: id,
        observed_at: at,
    };
    let millis = |t: Timestamp| t.round(jiff::Unit::Millisecond).unwrap_or(t);
    match occurrence {
        Occurrence::LeaderElected { holder, acquire_time, leaderless } => notice(
            Severity::Normal,
            event::LEADER_ELECTED,
            format!("{holder} acquired {lock}{}", after_without_a_leader(*leaderless)),
            Some(format!("elected\n{holder}\n{}", acquire_time.as_deref().unwrap_or_default())),
        ),
        Occurrence::LeaderChanged { from, to, acquire_time, leaderless } => notice(
            Severity::Normal,
            event::LEADER_CHANGED,
            format!("{from} -> {to}{} ({lock})", after_without_a_leader(*leaderless)),
            Some(format!("changed\n{from}\n{to}\n{}", acquire_time.as_deref().unwrap_or_default())),
        ),
        Occurrence::LeaseStale { holder, last_renewal, lease_duration } => notice(
            Severity::Warning,
            event::LEASE_STALE,
            format!(
                "{holder} has not renewed {lock} since {} (no change observed for leaseDuration {})",
                millis(*last_renewal),
                humantime(*lease_duration)
            ),
            Some(format!("stale\n{holder}\n{renew_time}")),
        ),
        Occurrence::LeaseRecovered { holder, stale_since } => notice(
            Severity::Normal,
            event::LEASE_RECOVERED,
            format!("{holder} renews {lock} again (stale since {})", millis(*stale_since)),
            Some(format!("recovered\n{holder}\n{renew_time}")),
        ),
        Occurrence::MalformedRecord { reason } => {
            notice(Severity::Warning, event::MALFORMED_LOCK_RECORD, format!("{lock}: {reason}"), None)
        }
        Occurrence::RenewalsSlow { holder, silent_for, lease_duration } => notice(
            Severity::Warning,
            event::RENEWALS_SLOW,
            format!(
                "{holder} has not renewed {lock} for {}; it goes stale at leaseDuration {}",
                humantime(*silent_for),
                humantime(*lease_duration)
            ),
            // A spell of silence belongs to the last record seen: once per record.
            Some(format!("slow\n{holder}\n{renew_time}")),
        ),
        Occurrence::LeaderFlapping { changes, window } => notice(
            Severity::Warning,
            event::LEADER_FLAPPING,
            format!("{changes} leader changes of {lock} within {}", humantime(*window)),
            Some(format!("flapping\n{renew_time}")),
        ),
    }
}

/// The Warning for a configuration outcome that needs the user (see
/// [`crate::domain::status::ConfigOutcome::problem`]), with the condition's message.
pub fn config_notice(reason: &'static str, message: String, at: Timestamp) -> Notice {
    Notice {
        severity: Severity::Warning,
        reason,
        action: "Reconcile",
        note: message,
        occurrence_id: None,
        observed_at: at,
    }
}

/// The Warning when the holder stops being one of the selected Pods.
pub fn holder_not_found_notice(message: String, at: Timestamp) -> Notice {
    Notice {
        severity: Severity::Warning,
        reason: event::HOLDER_NOT_FOUND,
        action: "Observe",
        note: message,
        occurrence_id: None,
        observed_at: at,
    }
}

/// " after 4.2s without a leader", when the operator saw the gap.
fn after_without_a_leader(leaderless: Option<Duration>) -> String {
    leaderless.map(|d| format!(" after {:.1}s without a leader", d.as_secs_f64())).unwrap_or_default()
}

/// The Warning while a policy's previous lock and its current one both have a live holder.
pub fn concurrent_leaders_notice(concurrent: &ConcurrentLeaders, at: Timestamp) -> Notice {
    let ConcurrentLeaders { previous_holder, previous_lock, holder, lock } = concurrent;
    Notice {
        severity: Severity::Warning,
        reason: event::CONCURRENT_LEADERS,
        action: "Observe",
        note: concurrent.message(),
        occurrence_id: Some(format!("concurrent\n{previous_holder}\n{previous_lock}\n{holder}\n{lock}")),
        observed_at: at,
    }
}

/// Two live holders for one workload: the previous lock's, which Pods of the old template
/// still renew, and the current lock's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcurrentLeaders {
    pub previous_holder: String,
    pub previous_lock: String,
    pub holder: String,
    pub lock: String,
}

impl ConcurrentLeaders {
    /// What the Event and the LeaderHealthy condition say.
    pub fn message(&self) -> String {
        let ConcurrentLeaders { previous_holder, previous_lock, holder, lock } = self;
        format!(
            "{previous_holder} still holds the previous lock {previous_lock} while {holder} holds {lock}: Pods of \
             the old template elect on the old lock until the rollout ends, so two replicas lead at once"
        )
    }
}

/// The API server refuses an Event whose note is longer than this many bytes.
pub const NOTE_LIMIT_BYTES: usize = 1024;

/// The note cut to [`NOTE_LIMIT_BYTES`] on a character boundary, "…" marking the cut.
pub fn fit_note(note: &str) -> String {
    fit(note, NOTE_LIMIT_BYTES)
}

/// `text` cut to `limit` bytes on a character boundary, "…" marking the cut.
pub fn fit(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn humantime(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) { format!("{}s", millis / 1000) } else { format!("{millis}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Timestamp {
        "2026-11-23T10:00:05Z".parse().unwrap()
    }

    #[test]
    fn transitions_name_both_holders_and_have_stable_ids() {
        let changed = Occurrence::LeaderChanged {
            from: "a".into(),
            to: "b".into(),
            acquire_time: Some("t1".into()),
            leaderless: Some(Duration::from_millis(4_230)),
        };
        let first = occurrence_notice(&changed, "leases/ns/l", "r1", at());
        let again = occurrence_notice(&changed, "leases/ns/l", "r2", at());
        assert_eq!(
            first,
            Notice {
                severity: Severity::Normal,
                reason: "LeaderChanged",
                action: "Observe",
                note: "a -> b after 4.2s without a leader (leases/ns/l)".into(),
                occurrence_id: Some("changed\na\nb\nt1".into()),
                observed_at: at(),
            }
        );
        assert_eq!(first.occurrence_id, again.occurrence_id, "the same transition is the same Event");
    }

    #[test]
    fn stale_events_say_since_when() {
        let stale = Occurrence::LeaseStale {
            holder: "a".into(),
            last_renewal: "2026-11-23T10:00:00.0004Z".parse().unwrap(),
            lease_duration: Duration::from_secs(15),
        };
        let notice = occurrence_notice(&stale, "leases/ns/l", "r1", at());
        assert_eq!(notice.severity, Severity::Warning);
        assert_eq!(
            notice.note,
            "a has not renewed leases/ns/l since 2026-11-23T10:00:00Z (no change observed for leaseDuration 15s)"
        );
        assert_eq!(notice.occurrence_id.as_deref(), Some("stale\na\nr1"));
    }

    #[test]
    fn notes_are_cut_by_bytes_on_a_character_boundary() {
        assert_eq!(fit_note("short"), "short");
        let exact = "a".repeat(NOTE_LIMIT_BYTES);
        assert_eq!(fit_note(&exact), exact);
        // 600 two-byte characters: 1200 bytes, though only 600 characters.
        let cut = fit_note(&"é".repeat(600));
        assert!(cut.len() <= NOTE_LIMIT_BYTES, "{}", cut.len());
        assert_eq!(cut, format!("{}…", "é".repeat(510)));
    }

    #[test]
    fn early_warnings_are_warnings_with_their_reasons() {
        let slow = Occurrence::RenewalsSlow {
            holder: "a".into(),
            silent_for: Duration::from_millis(5500),
            lease_duration: Duration::from_secs(15),
        };
        let notice = occurrence_notice(&slow, "leases/ns/l", "r", at());
        assert_eq!((notice.severity, notice.reason), (Severity::Warning, "RenewalsSlow"));
        assert_eq!(notice.note, "a has not renewed leases/ns/l for 5500ms; it goes stale at leaseDuration 15s");
        let flapping = Occurrence::LeaderFlapping { changes: 4, window: Duration::from_secs(600) };
        let notice = occurrence_notice(&flapping, "leases/ns/l", "r", at());
        assert_eq!(
            (notice.reason, notice.note.as_str()),
            ("LeaderFlapping", "4 leader changes of leases/ns/l within 600s")
        );
    }
}
