//! The per-policy bookkeeping of the observer: what one policy's lock observation, holder
//! check and status come to, decided without I/O.

use std::time::{Duration, Instant};

use crate::api::PolicyState;

/// What the metrics show of one policy, kept current by the observer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySnapshot {
    pub leader: String,
    pub lock: String,
    pub state: Option<PolicyState>,
    /// Local time of the last observed change of the lock record.
    pub last_change: Option<Instant>,
    /// When the lease goes stale unless renewed (only while healthy).
    pub deadline: Option<Instant>,
    /// leaderTransitions as recorded in the lock.
    pub recorded_transitions: Option<i64>,
    /// Leader changes the operator itself observed since it started.
    pub observed_changes: u64,
    /// Interval between the last two renewals observed.
    pub renewal_interval: Option<Duration>,
    /// The holder is not a Pod of the selected Deployments.
    pub holder_not_found: bool,
    /// More leader changes than allowed within the policy's window.
    pub flapping: bool,
    /// No renewal for the slow-renewal threshold.
    pub renewals_slow: bool,
    /// The lease would have expired while the lock could not be watched: unknown, not stale.
    pub unobservable: bool,
}
