//! Every bound the operator puts on what tenants write, in one place: the durations a policy
//! may set, how far ahead a timer may be set whatever a lock record says, how long a message
//! may grow, and how much work one namespace may queue. README: "Limits and isolation"
//! says what each protects.

use std::time::Duration;

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
