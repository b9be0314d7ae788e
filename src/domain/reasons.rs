//! Event reasons, condition types and condition reasons: the names users' scripts, alerts
//! and dashboards match on. Fixed by the contract; never renamed.

/// Reasons of the Events recorded on an ElectionPolicy.
pub mod event {
    pub const LEADER_ELECTED: &str = "LeaderElected";
    pub const LEADER_CHANGED: &str = "LeaderChanged";
    pub const LEASE_STALE: &str = "LeaseStale";
    pub const LEASE_RECOVERED: &str = "LeaseRecovered";
    pub const CONFIG_INJECTED: &str = "ConfigInjected";
    pub const CONFIG_REMOVED: &str = "ConfigRemoved";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const INVALID_POLICY: &str = "InvalidPolicy";
    pub const LOCK_CONFLICT: &str = "LockConflict";
    pub const INJECTION_FAILED: &str = "InjectionFailed";
    pub const MALFORMED_LOCK_RECORD: &str = "MalformedLockRecord";
    pub const HOLDER_NOT_FOUND: &str = "HolderNotFound";
    pub const LEADER_FLAPPING: &str = "LeaderFlapping";
    pub const RENEWALS_SLOW: &str = "RenewalsSlow";
    pub const CONCURRENT_LEADERS: &str = "ConcurrentLeaders";
}

/// Condition types of an ElectionPolicy's status.
pub mod condition {
    pub const CONFIG_INJECTED: &str = "ConfigInjected";
    pub const LEADER_HEALTHY: &str = "LeaderHealthy";
    pub const READY: &str = "Ready";
}

/// Reasons carried by those conditions.
pub mod condition_reason {
    pub const RECONCILING: &str = "Reconciling";
    pub const INJECTED: &str = "Injected";
    pub const INJECTION_DISABLED: &str = "InjectionDisabled";
    pub const INJECTION_FAILED: &str = "InjectionFailed";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub const INVALID_POLICY: &str = "InvalidPolicy";
    pub const LOCK_CONFLICT: &str = "LockConflict";
    pub const LEADER_RENEWING: &str = "LeaderRenewing";
    pub const LEASE_STALE: &str = "LeaseStale";
    pub const NO_LEADER: &str = "NoLeader";
    pub const LOCK_NOT_FOUND: &str = "LockNotFound";
    pub const LOCK_UNOBSERVABLE: &str = "LockUnobservable";
    pub const MALFORMED_LOCK_RECORD: &str = "MalformedLockRecord";
    pub const HOLDER_NOT_FOUND: &str = "HolderNotFound";
    pub const LEADER_FLAPPING: &str = "LeaderFlapping";
    pub const RENEWALS_SLOW: &str = "RenewalsSlow";
    pub const CONCURRENT_LEADERS: &str = "ConcurrentLeaders";
    pub const READY: &str = "Ready";
}
