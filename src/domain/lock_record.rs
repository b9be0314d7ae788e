//! The leader-election record, read from whichever lock kind carries it.
//!
//! client-go hides its lock kinds behind one interface and one record type; this module does
//! the same for reading: a Lease's spec and the legacy annotation on an Endpoints or
//! ConfigMap both become a [`LeaderElectionRecord`], and anything that does not parse
//! becomes a [`LockContent::Malformed`] with the reason, never a panic. The input is written
//! by other programs, so every field is treated as untrusted.

use std::{collections::BTreeMap, fmt, sync::Arc};

use jiff::Timestamp;
use serde::Deserialize;

use crate::{api::LockType, limits::MAX_RECORD_LEASE_SECONDS};

/// The annotation in which client-go before v0.24 kept the record on Endpoints and
/// ConfigMap locks.
pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

/// Records larger than this are rejected unparsed; a real one is about 200 bytes.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;
/// Longest holder identity accepted. Pod names are at most 253 characters; client-go
/// identities are a hostname plus a suffix.
pub const MAX_HOLDER_IDENTITY_CHARS: usize = 1024;

/// Identifies a lock object. Shared strings, as in `PolicyKey`: the key of every watched lock
/// sits in the lock table twice (what the watch shows, and which policy it is routed to) and
/// in its policy's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockKey {
    pub type_: LockType,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl LockKey {
    /// client-go's resourcelock name for the kind, which is also the API resource name.
    pub fn resource(&self) -> &'static str {
        resource_name(self.type_)
    }

    /// The watch that sees this lock.
    pub fn scope(&self) -> LockScope {
        LockScope { type_: self.type_, namespace: self.namespace.clone() }
    }
}

/// What one lock watch covers: one kind of lock in one namespace. Locks are watched per
/// namespace that policies point at, so the operator's cost follows its policies rather
/// than the number of Leases in the cluster, without writing to anyone's lock.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockScope {
    pub type_: LockType,
    pub namespace: Arc<str>,
}

impl fmt::Display for LockScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", resource_name(self.type_), self.namespace)
    }
}

/// client-go's resourcelock name for a lock type (`leases`, `endpoints`, `configmaps`).
pub fn resource_name(type_: LockType) -> &'static str {
    match type_ {
        LockType::Lease => "leases",
        LockType::Endpoints => "endpoints",
        LockType::ConfigMap => "configmaps",
    }
}

impl fmt::Display for LockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.resource(), self.namespace, self.name)
    }
}

/// client-go's `LeaderElectionRecord`.
///
/// Times are kept as the text the holder wrote: they are compared (a change is a renewal)
/// and shown, never used for arithmetic, and Go accepts times (up to year 9999's last
/// second) that a Rust timestamp type may not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionRecord {
    /// Empty when the lock was released.
    pub holder_identity: String,
    /// 0 when the record does not say.
    pub lease_duration_seconds: i64,
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub leader_transitions: i64,
}

impl LeaderElectionRecord {
    pub fn has_holder(&self) -> bool {
        !self.holder_identity.is_empty()
    }

    /// acquireTime as a timestamp, when it is one this program can represent.
    pub fn acquire_timestamp(&self) -> Option<Timestamp> {
        self.acquire_time.as_deref().and_then(|t| t.parse().ok())
    }
}

/// What a lock object says about leadership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockContent {
    /// The object does not exist, or carries no record yet.
    Absent,
    Record(LeaderElectionRecord),
    /// The record is there but cannot be trusted; the reason says why.
    Malformed(String),
}

/// Reads a Lease's `spec`, as JSON (see the module docs of `k8s::locks` for why not typed).
pub fn from_lease_spec(spec: Option<&serde_json::Value>) -> LockContent {
    let Some(spec) = spec.filter(|s| !s.is_null()) else {
        return LockContent::Record(LeaderElectionRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 0,
            acquire_time: None,
            renew_time: None,
            leader_transitions: 0,
        });
    };
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RawLeaseSpec {
        holder_identity: Option<String>,
        lease_duration_seconds: Option<i64>,
        acquire_time: Option<String>,
        renew_time: Option<String>,
        lease_transitions: Option<i64>,
    }
    match RawLeaseSpec::deserialize(spec) {
        Err(e) => LockContent::Malformed(format!("Lease spec is not a leader-election record: {e}")),
        Ok(raw) => checked(LeaderElectionRecord {
            holder_identity: raw.holder_identity.unwrap_or_default(),
            lease_duration_seconds: raw.lease_duration_seconds.unwrap_or(0),
            acquire_time: raw.acquire_time,
            renew_time: raw.renew_time,
            leader_transitions: raw.lease_transitions.unwrap_or(0),
        }),
    }
}

/// Reads the legacy annotation of an Endpoints or ConfigMap.
pub fn from_annotations(annotations: Option<&BTreeMap<String, String>>) -> LockContent {
    match annotations.and_then(|a| a.get(LEADER_ANNOTATION)) {
        None => LockContent::Absent,
        Some(json) => from_annotation_json(json),
    }
}

/// The annotation's JSON, as client-go marshals `LeaderElectionRecord`. Times are
/// metav1.Time (RFC 3339, null when zero).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnnotationRecord {
    #[serde(default)]
    holder_identity: Option<String>,
    #[serde(default)]
    lease_duration_seconds: Option<i64>,
    #[serde(default)]
    acquire_time: Option<String>,
    #[serde(default)]
    renew_time: Option<String>,
    #[serde(default)]
    leader_transitions: Option<i64>,
}

pub fn from_annotation_json(json: &str) -> LockContent {
    if json.len() > MAX_RECORD_BYTES {
        return LockContent::Malformed(format!(
            "{LEADER_ANNOTATION} is {} bytes, more than the {MAX_RECORD_BYTES} a record can need",
            json.len()
        ));
    }
    let raw: AnnotationRecord = match serde_json::from_str(json) {
        Ok(raw) => raw,
        Err(e) => {
            return LockContent::Malformed(format!("{LEADER_ANNOTATION} is not a leader-election record: {e}"));
        }
    };
    checked(LeaderElectionRecord {
        holder_identity: raw.holder_identity.unwrap_or_default(),
        lease_duration_seconds: raw.lease_duration_seconds.unwrap_or(0),
        acquire_time: raw.acquire_time,
        renew_time: raw.renew_time,
        leader_transitions: raw.leader_transitions.unwrap_or(0),
    })
}

/// Rejects records that no client-go program writes.
fn checked(record: LeaderElectionRecord) -> LockContent {
    let holder = &record.holder_identity;
    if holder.chars().count() > MAX_HOLDER_IDENTITY_CHARS {
        return LockContent::Malformed(format!(
            "holderIdentity is {} characters long, more than {MAX_HOLDER_IDENTITY_CHARS}",
            holder.chars().count()
        ));
    }
    if holder.chars().any(char::is_control) || holder.trim() != holder {
        return LockContent::Malformed(format!(
            "holderIdentity {:?} contains control characters or surrounding whitespace",
            truncate(holder, 64)
        ));
    }
    // A released lock (empty holder) keeps whatever duration it had; only a held one needs
    // a usable duration.
    if record.has_holder() && !(0..=MAX_RECORD_LEASE_SECONDS).contains(&record.lease_duration_seconds) {
        return LockContent::Malformed(format!(
            "leaseDurationSeconds {} is outside 0..={MAX_RECORD_LEASE_SECONDS}",
            record.lease_duration_seconds
        ));
    }
    for (field, time) in [("acquireTime", &record.acquire_time), ("renewTime", &record.renew_time)] {
        if let Some(text) = time.as_deref().filter(|t| !looks_like_rfc3339(t)) {
            return LockContent::Malformed(format!("{field} {:?} is not an RFC 3339 time", truncate(text, 64)));
        }
    }
    if record.leader_transitions < 0 {
        return LockContent::Malformed(format!("leaderTransitions {} is negative", record.leader_transitions));
    }
    LockContent::Record(record)
}

/// The shape of a metav1.Time or MicroTime (`2006-01-02T15:04:05[.frac](Z|±hh:mm)`), checked
/// without a calendar so that any time Go can write is accepted.
fn looks_like_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b.get(range).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let fixed = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !fixed {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction.find(|c: char| !c.is_ascii_digit()).unwrap_or(fraction.len());
        if end == 0 {
            return false;
        }
        rest = &fraction[end..];
    }
    rest == "Z" || rest == "z" || {
        let z = rest.as_bytes();
        z.len() == 6
            && (z[0] == b'+' || z[0] == b'-')
            && z[1..3].iter().all(u8::is_ascii_digit)
            && z[3] == b':'
            && z[4..6].iter().all(u8::is_ascii_digit)
    }
}

/// Shortens untrusted text for messages, on a character boundary.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_string(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_annotation_client_go_writes() {
        let json = r#"{"holderIdentity":"kcm-1_a1b2","leaseDurationSeconds":15,"acquireTime":"2020-08-04T10:00:00Z","renewTime":"2020-08-04T10:05:02Z","leaderTransitions":3}"#;
        let LockContent::Record(record) = from_annotation_json(json) else { panic!("not parsed") };
        assert_eq!(record.holder_identity, "kcm-1_a1b2");
        assert_eq!(record.lease_duration_seconds, 15);
        assert_eq!(record.leader_transitions, 3);
        assert_eq!(record.renew_time.as_deref(), Some("2020-08-04T10:05:02Z"));
        assert_eq!(record.acquire_timestamp(), Some("2020-08-04T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn a_released_record_has_no_holder() {
        let json = r#"{"holderIdentity":"","leaseDurationSeconds":1,"acquireTime":null,"renewTime":"2020-08-04T10:05:02Z","leaderTransitions":3}"#;
        let LockContent::Record(record) = from_annotation_json(json) else { panic!("not parsed") };
        assert!(!record.has_holder());
    }

    #[test]
    fn hostile_records_are_malformed_not_panics() {
        let cases = [
            ("not json", "not a leader-election record"),
            (r#"[1,2,3]"#, "not a leader-election record"),
            (r#"{"holderIdentity":5}"#, "not a leader-election record"),
            (r#"{"holderIdentity":"a","leaseDurationSeconds":-5}"#, "leaseDurationSeconds -5"),
            (r#"{"holderIdentity":"a","leaseDurationSeconds":99999999999}"#, "outside"),
            (r#"{"holderIdentity":"a\u0000b","leaseDurationSeconds":15}"#, "control characters"),
            (r#"{"holderIdentity":"a","renewTime":"yesterday"}"#, "renewTime"),
            (r#"{"holderIdentity":"a","leaderTransitions":-1}"#, "negative"),
        ];
        for (json, expected) in cases {
            match from_annotation_json(json) {
                LockContent::Malformed(why) => assert!(why.contains(expected), "{json}: {why}"),
                other => panic!("{json} was accepted: {other:?}"),
            }
        }
        let huge = format!(r#"{{"holderIdentity":"{}"}}"#, "x".repeat(MAX_RECORD_BYTES));
        assert!(matches!(from_annotation_json(&huge), LockContent::Malformed(why) if why.contains("bytes")));
    }

    #[test]
    fn a_far_future_renew_time_is_still_a_record() {
        // Renewals are judged on the operator's clock, so a skewed holder clock is not an error.
        let json = r#"{"holderIdentity":"a","leaseDurationSeconds":15,"renewTime":"9999-12-31T23:59:59Z"}"#;
        assert!(matches!(from_annotation_json(json), LockContent::Record(_)));
    }

    #[test]
    fn lease_spec_without_fields_is_an_unheld_record() {
        let LockContent::Record(record) = from_lease_spec(Some(&serde_json::json!({}))) else { panic!() };
        assert!(!record.has_holder());
    }

    #[test]
    fn reads_a_lease_spec_as_client_go_writes_it() {
        let spec = serde_json::json!({
            "holderIdentity": "pod-1", "leaseDurationSeconds": 15, "leaseTransitions": 4,
            "acquireTime": "2026-11-23T19:38:05.697534Z", "renewTime": "2026-11-23T19:38:09.739692Z",
        });
        let LockContent::Record(record) = from_lease_spec(Some(&spec)) else { panic!() };
        assert_eq!(record.holder_identity, "pod-1");
        assert_eq!(record.leader_transitions, 4);
        assert!(record.acquire_timestamp().is_some());
        let wrong = serde_json::json!({"holderIdentity": ["a"]});
        assert!(matches!(from_lease_spec(Some(&wrong)), LockContent::Malformed(_)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// No input panics the annotation parser: arbitrary text, and JSON objects with
        /// the record's field names carrying values of any shape.
        #[test]
        fn the_annotation_parser_never_panics(text in ".{0,2000}") {
            let _ = from_annotation_json(&text);
        }

        #[test]
        fn records_with_hostile_fields_never_panic(
            holder in proptest::option::of(".{0,300}"),
            duration in proptest::option::of(proptest::num::i64::ANY),
            transitions in proptest::option::of(proptest::num::i64::ANY),
            renew in proptest::option::of("[0-9TZ:.+-]{0,40}"),
            acquire in proptest::option::of(".{0,40}"),
            extra in proptest::option::of(".{0,40}"),
        ) {
            let json = serde_json::json!({
                "holderIdentity": holder, "leaseDurationSeconds": duration, "leaderTransitions": transitions,
                "renewTime": renew, "acquireTime": acquire, "unknownField": extra,
            });
            let content = from_annotation_json(&json.to_string());
            // Whatever it decides, a record it accepts is one client-go could have written.
            if let LockContent::Record(record) = content {
                proptest::prop_assert!(record.leader_transitions >= 0);
                proptest::prop_assert!(!record.has_holder() || (0..=MAX_RECORD_LEASE_SECONDS).contains(&record.lease_duration_seconds));
            }
            let _ = from_lease_spec(Some(&serde_json::json!({
                "holderIdentity": json["holderIdentity"], "leaseDurationSeconds": json["leaseDurationSeconds"],
                "leaseTransitions": json["leaderTransitions"], "renewTime": json["renewTime"],
            })));
        }
    }

    #[test]
    fn lock_keys_print_as_resource_namespace_name() {
        let key = LockKey { type_: LockType::ConfigMap, namespace: "ns".into(), name: "lock".into() };
        assert_eq!(key.to_string(), "configmaps/ns/lock");
    }
}
