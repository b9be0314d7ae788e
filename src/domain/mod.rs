//! Pure domain logic: no I/O, no clock reads of its own. Time comes in as arguments, which is
//! what lets the tests below each module replay any sequence of observations exactly.

pub mod claims;
pub mod event_budget;
pub mod fair_queue;
pub mod go_duration;
pub mod holder;
pub mod injection;
pub mod injection_plan;
pub mod leadership;
pub mod lock_record;
pub mod names;
pub mod namespaces;
pub mod notices;
pub mod observation;
pub mod pending_writes;
pub mod policy_index;
pub mod policy_key;
pub mod reasons;
pub mod starting_statuses;
pub mod status;
pub mod tracking;
pub mod validation;

/// FNV-1a, 64 bits: a stable hash (std's is not stable across Rust versions) for values
/// stored in the cluster and compared by later operator versions.
pub fn fnv1a(text: &str) -> u64 {
    fnv1a_bytes(text.bytes())
}

/// FNV-1a of bytes as they come, for hashing parts of a key without joining them first.
fn fnv1a_bytes(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// FNV-1a of `namespace/name`, without building that string.
pub fn fnv1a_namespaced(namespace: &str, name: &str) -> u64 {
    fnv1a_bytes(namespace.bytes().chain([b'/']).chain(name.bytes()))
}
