//! The operator's own leader election, with client-go's semantics, as pure decisions.
//!
//! Each attempt reads the Lease and asks [`Elector::attempt`] what to do. As in client-go's
//! `tryAcquireOrRenew`, another holder's lease is considered expired only when the record
//! has not been seen to change for its lease duration on this process's own clock, so a
//! holder with a skewed clock is neither cut short nor waited for forever.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::domain::{lock_record::LeaderElectionRecord, observation::Moment, validation::Timings};

/// What to do with the Lease after reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The Lease does not exist: create it with this record.
    Create(LeaderElectionRecord),
    /// Write this record (acquiring or renewing), conditional on the version read.
    Update(LeaderElectionRecord),
    /// Someone else holds a lease that has not expired; try again later.
    HeldByOther { holder: String },
}

/// One contender's view of the election.
#[derive(Clone, Debug)]
pub struct Elector {
    identity: String,
    timings: Timings,
    /// The record last read or written, and when it was first seen in that form.
    observed: Option<(LeaderElectionRecord, Instant)>,
}

impl Elector {
    pub fn new(identity: String, timings: Timings) -> Self {
        Elector { identity, timings, observed: None }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Decides the next write given the Lease's current record (`None`: no Lease).
    pub fn attempt(&mut self, now: Moment, current: Option<&LeaderElectionRecord>) -> Attempt {
        let Some(current) = current else {
            return Attempt::Create(self.record(now, None));
        };
        if self.observed.as_ref().map(|(r, _)| r) != Some(current) {
            self.observed = Some((current.clone(), now.monotonic));
        }
        let holder = &current.holder_identity;
        let held_by_other = !holder.is_empty() && holder != &self.identity;
        if held_by_other && !self.expired(now.monotonic, current) {
            return Attempt::HeldByOther { holder: holder.clone() };
        }
        Attempt::Update(self.record(now, Some(current)))
    }

    /// Records that `record` was written successfully at `now`.
    pub fn written(&mut self, now: Moment, record: LeaderElectionRecord) {
        self.observed = Some((record, now.monotonic));
    }

    /// The record that gives the lock up, as client-go writes it on release: no holder, a
    /// one-second lease, the transition count kept.
    pub fn release_record(&self, now: Moment) -> LeaderElectionRecord {
        let time = micro_time(now.wall);
        LeaderElectionRecord {
            holder_identity: String::new(),
            lease_duration_seconds: 1,
            acquire_time: Some(time.clone()),
            renew_time: Some(time),
            leader_transitions: self.observed.as_ref().map_or(0, |(r, _)| r.leader_transitions),
        }
    }

    fn expired(&self, now: Instant, current: &LeaderElectionRecord) -> bool {
        let seen_since = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let duration = u64::try_from(current.lease_duration_seconds).ok().filter(|s| *s > 0).map(Duration::from_secs);
        now >= seen_since + duration.unwrap_or(self.timings.lease_duration)
    }

    fn record(&self, now: Moment, current: Option<&LeaderElectionRecord>) -> LeaderElectionRecord {
        let time = micro_time(now.wall);
        let (acquire_time, transitions) = match current {
            Some(c) if c.holder_identity == self.identity => (c.acquire_time.clone(), c.leader_transitions),
            Some(c) => (Some(time.clone()), c.leader_transitions + 1),
            None => (Some(time.clone()), 0),
        };
        LeaderElectionRecord {
            holder_identity: self.identity.clone(),
            lease_duration_seconds: i64::try_from(self.timings.lease_duration.as_secs()).unwrap_or(i64::MAX),
            acquire_time,
            renew_time: Some(time),
            leader_transitions: transitions,
        }
    }
}

/// A metav1.MicroTime, as the API server stores it.
pub fn micro_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings() -> Timings {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    #[test]
    fn creates_a_missing_lease_and_holds_it() {
        let mut me = Elector::new("me".into(), timings());
        let now = Moment::now();
        let Attempt::Create(record) = me.attempt(now, None) else { panic!() };
        assert_eq!(record.holder_identity, "me");
        assert_eq!(record.lease_duration_seconds, 15);
        assert_eq!(record.leader_transitions, 0);
        me.written(now, record.clone());
        let Attempt::Update(renewal) = me.attempt(now.after(Duration::from_secs(2)), Some(&record)) else { panic!() };
        assert_eq!(renewal.acquire_time, record.acquire_time, "a renewal keeps the acquire time");
        assert_eq!(renewal.leader_transitions, 0);
    }

    #[test]
    fn waits_for_another_holder_until_its_lease_expires_on_the_local_clock() {
        let mut me = Elector::new("me".into(), timings());
        let t0 = Moment::now();
        let theirs = LeaderElectionRecord {
            holder_identity: "them".into(),
            lease_duration_seconds: 15,
            acquire_time: None,
            // Their clock is an hour ahead: irrelevant, only change matters.
            renew_time: Some("2099-01-01T00:00:00.000000Z".into()),
            leader_transitions: 4,
        };
        assert!(matches!(me.attempt(t0, Some(&theirs)), Attempt::HeldByOther { .. }));
        assert!(matches!(me.attempt(t0.after(Duration::from_secs(14)), Some(&theirs)), Attempt::HeldByOther { .. }));
        let Attempt::Update(mine) = me.attempt(t0.after(Duration::from_secs(15)), Some(&theirs)) else { panic!() };
        assert_eq!(mine.holder_identity, "me");
        assert_eq!(mine.leader_transitions, 5);
    }

    #[test]
    fn a_renewing_holder_is_never_expired() {
        let mut me = Elector::new("me".into(), timings());
        let t0 = Moment::now();
        for i in 0..20u64 {
            let theirs = LeaderElectionRecord {
                holder_identity: "them".into(),
                lease_duration_seconds: 15,
                acquire_time: None,
                renew_time: Some(format!("renewal-{i}")),
                leader_transitions: 0,
            };
            assert!(matches!(
                me.attempt(t0.after(Duration::from_secs(10 * i)), Some(&theirs)),
                Attempt::HeldByOther { .. }
            ));
        }
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let mut me = Elector::new("me".into(), timings());
        let released = Elector::new("them".into(), timings()).release_record(Moment::now());
        assert!(matches!(me.attempt(Moment::now(), Some(&released)), Attempt::Update(_)));
    }

    #[test]
    fn micro_times_look_like_the_api_servers() {
        let t: Timestamp = "2026-11-23T19:38:05.697534123Z".parse().unwrap();
        assert_eq!(micro_time(t), "2026-11-23T19:38:05.697534Z");
    }
}
