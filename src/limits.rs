//! Every bound the operator puts on what tenants write, in one place: the durations a policy
//! may set, how far ahead a timer may be set whatever a lock record says, how long a message
//! may grow, and how much work one namespace may queue. README: "Limits and isolation"
//! says what each protects.

use std::time::{Duration, Instant};

/// An upper bound on a duration, with the text messages (and the CRD's CEL rules) use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationLimit {
    pub value: Duration,
    pub text: &'static str,
}

/// The longest leaseDuration, renewDeadline and retryPeriod: an hour. client-go's default
/// lease is 15 s, and the longest in wide use we know of is OpenShift's: 137 s, and 270 s on
/// single-node clusters (library-go's `LeaderElectionSNOConfig`). With a lease of more than
/// an hour the standbys of a dead leader wait over an hour, which defeats the election. The bound keeps every deadline the
/// operator times within what its timers take (README: Limits and isolation).
pub const MAX_TIMING: DurationLimit = DurationLimit { value: Duration::from_secs(3600), text: "1h" };
/// The longest detection.flappingWindow: a day. Leader changes spread over more than a day
/// are history (status.history and the LeaderChanged Events keep it), not flapping.
pub const MAX_FLAPPING_WINDOW: DurationLimit = DurationLimit { value: Duration::from_secs(24 * 3600), text: "24h" };

/// Longest lease duration a lock record may carry and still be trusted: a day. client-go has
/// no limit, but a longer lease is certainly a corrupted (or hostile) record rather than a
/// configuration; such a record is reported as malformed.
pub const MAX_RECORD_LEASE_SECONDS: i64 = 24 * 60 * 60;

/// How far ahead the observer sets a timer, whatever the inputs say. The longest deadline
/// valid inputs give is a day ([`MAX_RECORD_LEASE_SECONDS`], [`MAX_FLAPPING_WINDOW`]); the
/// timer wheel panics for deadlines more than 2^36 ms (about 795 days) ahead, and one panic
/// would stop the observation of every policy. A timer that goes off at the clamp finds
/// nothing due and is set again.
pub const MAX_TIMER_AHEAD: Duration = Duration::from_secs(24 * 60 * 60);

/// `deadline`, or [`MAX_TIMER_AHEAD`] from `now` if that is sooner.
pub fn clamp_timer(deadline: Instant, now: Instant) -> Instant {
    match now.checked_add(MAX_TIMER_AHEAD) {
        Some(latest) => deadline.min(latest),
        None => deadline.min(now),
    }
}

/// Events one policy may publish at once, then one every [`EVENT_REFILL_EVERY`]: client-go's
/// EventCorrelator spam filter (`defaultSpamBurst` 25, `defaultSpamQPS` 1/300).
pub const EVENT_BURST: u32 = 25;
pub const EVENT_REFILL_EVERY: Duration = Duration::from_secs(300);

/// Events waiting to be published, per namespace and in all (a few hundred bytes each: 6 MiB
/// at most): a namespace's burst (all its policies' first LeaderElected at a start, 200 going
/// stale at once) fits; beyond, its Events are dropped and counted, never waited for, and
/// the other namespaces keep their room.
pub const EVENTS_QUEUED_PER_NAMESPACE: usize = 4096;
pub const EVENTS_QUEUED: usize = 16384;

/// Attempts to publish one Event before it is dropped (and counted), retried with back-off
/// off the workers' path.
pub const EVENT_ATTEMPTS: u32 = 4;

/// The longest condition message written to a status: messages quote what tenants wrote
/// (names, durations, selectors), and a status too large to write would be retried forever.
pub const CONDITION_MESSAGE_BYTES: usize = 4096;

/// Back-off of a status write that failed: transient failures (the API server away, 429,
/// 5xx) are retried within seconds; failures that will not heal by themselves (403 from a
/// policy webhook or RBAC, 422, 413) every few minutes, each retry off the workers' path, so
/// they never hold up another policy's status.
pub const STATUS_RETRY_FIRST: Duration = Duration::from_millis(200);
pub const STATUS_RETRY_TRANSIENT_MAX: Duration = Duration::from_secs(5);
pub const STATUS_RETRY_PERMANENT_MAX: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_are_never_set_beyond_the_clamp() {
        let now = Instant::now();
        let soon = now + Duration::from_secs(15);
        assert_eq!(clamp_timer(soon, now), soon, "a normal deadline is kept");
        let absurd = now + Duration::from_secs(i32::MAX as u64);
        assert_eq!(clamp_timer(absurd, now), now + MAX_TIMER_AHEAD);
        assert!(MAX_TIMER_AHEAD.as_millis() < 1 << 36, "within what DelayQueue takes");
        assert!(MAX_TIMER_AHEAD >= MAX_FLAPPING_WINDOW.value && MAX_TIMER_AHEAD >= MAX_TIMING.value);
    }
}
