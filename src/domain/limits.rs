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
