//! Observing one lock over time: who leads, when that changed, and whether the holder keeps
//! renewing. Pure logic; the caller passes the time in.
//!
//! Renewals are judged the way client-go's `LeaderElector` judges them: a renewal is a
//! change of the record, observed at local time t, and the lease is stale when no change was
//! observed for the lease duration. The holder's own `renewTime` is never compared with the
//! local clock, so clock skew between the holder and the operator can neither raise a false
//! alarm nor hide a real one.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use jiff::Timestamp;

use crate::{
    api::PolicyState,
    domain::{
        lock_record::{LeaderElectionRecord, LockContent},
        validation::Detection,
    },
    limits::MAX_RECORD_LEASE_SECONDS,
};

/// A reading of both clocks at once: the monotonic one for deadlines, the wall one for what
/// users see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moment {
    pub monotonic: Instant,
    pub wall: Timestamp,
}

impl Moment {
    pub fn now() -> Self {
        Moment { monotonic: Instant::now(), wall: Timestamp::now() }
    }

    /// This moment shifted by `by`, on both clocks.
    pub fn after(self, by: Duration) -> Self {
        Moment { monotonic: self.monotonic + by, wall: self.wall.checked_add(by).unwrap_or(self.wall) }
    }
}

/// The lock's health as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// No lock record yet.
    Pending,
    /// The holder's renewals are being observed.
    Healthy,
    /// No renewal observed within the lease duration.
    Stale,
    /// The lock exists but nobody holds it.
    NoLeader,
    /// The record cannot be read; the reason says why.
    Malformed(String),
}

/// See [`LockObservation::status_view`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    health: Health,
    leader: String,
    record: Option<(String, Option<String>, i64)>,
    lease_duration: Duration,
    detection: Detection,
    slow: bool,
    flapping: bool,
    unobservable: bool,
    stale_since: Option<Timestamp>,
    last_change: Option<Timestamp>,
}

/// Something that happened to the lock, worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Occurrence {
    /// The first holder observed (or a holder after the lock was released). `leaderless`:
    /// see [`Occurrence::LeaderChanged`].
    LeaderElected { holder: String, acquire_time: Option<String>, leaderless: Option<Duration> },
    /// The holder changed. `leaderless`: the time from the last change of the record the
    /// operator observed before (the previous holder's last renewal, or its release) to
    /// this first sight of the new holder, on the operator's clock; `None` when the operator
    /// did not see a previous holder (its first look, or the lock's first holder).
    LeaderChanged { from: String, to: String, acquire_time: Option<String>, leaderless: Option<Duration> },
    /// No renewal observed for the lease duration since `last_renewal`.
    LeaseStale { holder: String, last_renewal: Timestamp, lease_duration: Duration },
    /// The same holder renewed again after LeaseStale.
    LeaseRecovered { holder: String, stale_since: Timestamp },
    /// The record became unreadable.
    MalformedRecord { reason: String },
    /// No renewal observed for `silent_for` (the slow-renewal threshold), before staleness.
    RenewalsSlow { holder: String, silent_for: Duration, lease_duration: Duration },
    /// More than the allowed number of leader changes within the window.
    LeaderFlapping { changes: usize, window: Duration },
}

/// What the operator knew of the lock before it (re)started, read back from the policy's
/// status, so that a restart neither repeats nor misses what it had already reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    pub leader: String,
    pub state: Option<PolicyState>,
}

/// Renewal statistics kept for the early-warning and flapping detectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenewalStats {
    /// Interval between the last two observed changes by the same holder.
    pub last_interval: Option<Duration>,
    /// Local times of recent leader transitions, oldest first.
    pub transitions: VecDeque<Instant>,
}

/// The observed state of one lock.
#[derive(Clone, Debug)]
pub struct LockObservation {
    /// The content last observed; `None` before the first observation (or after a restart).
    content: Option<LockContent>,
    /// When `content` was last seen to change, on the operator's clock.
    last_change: Option<Moment>,
    health: Health,
    leader: String,
    /// The last non-empty holder, so that a handover through a released lock still reads
    /// "A -> B".
    previous_leader: String,
    stale_since: Option<Timestamp>,
    /// The lock watch is down: nothing can be concluded from the absence of changes.
    blind: bool,
    /// The deadline passed while blind: health is unknown rather than stale.
    unobservable: bool,
    /// The lease duration to use when the record does not carry one.
    fallback_lease_duration: Duration,
    detection: Detection,
    /// The gap since the last renewal has passed the slow-renewal threshold.
    late: bool,
    /// RenewalsSlow as reported: set when a gap runs late, cleared only once renewals have
    /// come on time for a whole lease duration, so that renewals hovering around the
    /// threshold do not flip the status with every renewal.
    slow: bool,
    /// When a gap last ran late (or a late gap ended).
    last_late: Option<Instant>,
    /// When RenewalsSlow was last reported; it is not repeated within a quiet period.
    slow_reported: Option<Instant>,
    /// More leader changes than allowed within the window.
    flapping: bool,
    stats: RenewalStats,
}

impl LockObservation {
    pub fn new(fallback_lease_duration: Duration, detection: Detection, resumed: Resumed) -> Self {
        let health = match resumed.state {
            Some(PolicyState::Stale) if !resumed.leader.is_empty() => Health::Stale,
            Some(PolicyState::Healthy) if !resumed.leader.is_empty() => Health::Healthy,
            Some(PolicyState::NoLeader) => Health::NoLeader,
            _ => Health::Pending,
        };
        LockObservation {
            content: None,
            last_change: None,
            health,
            previous_leader: resumed.leader.clone(),
            leader: resumed.leader,
            stale_since: None,
            blind: false,
            unobservable: false,
            fallback_lease_duration,
            detection,
            late: false,
            slow: false,
            last_late: None,
            slow_reported: None,
            flapping: false,
            stats: RenewalStats::default(),
        }
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Identity of the current holder; empty when there is none.
    pub fn leader(&self) -> &str {
        &self.leader
    }

    pub fn record(&self) -> Option<&LeaderElectionRecord> {
        match &self.content {
            Some(LockContent::Record(record)) => Some(record),
            _ => None,
        }
    }

    /// When the record was last seen to change (a renewal, if held).
    pub fn last_change(&self) -> Option<Moment> {
        self.last_change
    }

    pub fn stale_since(&self) -> Option<Timestamp> {
        self.stale_since
    }

    /// Everything a rendered status takes from this observation except the time of the
    /// last renewal: when a change of the record leaves this equal, the status users see
    /// is the same and need not be rendered again (a plain renewal, hundreds per second
    /// at scale).
    pub fn status_view(&self) -> StatusView {
        let record = self.record().map(|r| (r.holder_identity.clone(), r.acquire_time.clone(), r.leader_transitions));
        // Messages name the last renewal's time only when it is news: stale or unwatchable.
        let quiet = self.health == Health::Healthy && !self.unobservable;
        StatusView {
            health: self.health.clone(),
            leader: self.leader.clone(),
            record,
            lease_duration: self.lease_duration(),
            detection: self.detection,
            slow: self.slow,
            flapping: self.flapping,
            unobservable: self.unobservable,
            stale_since: self.stale_since,
            last_change: if quiet { None } else { self.last_change.map(|m| m.wall) },
        }
    }

    /// The deadline passed while the lock could not be watched.
    pub fn is_unobservable(&self) -> bool {
        self.unobservable
    }

    pub fn stats(&self) -> &RenewalStats {
        &self.stats
    }

    /// Applies a policy's (possibly edited) lease duration and thresholds.
    pub fn configure(&mut self, fallback_lease_duration: Duration, detection: Detection) {
        self.fallback_lease_duration = fallback_lease_duration;
        self.detection = detection;
    }

    /// Renewals run late (see the `slow` field for how it clears).
    pub fn is_slow(&self) -> bool {
        self.slow
    }

    /// More leader changes than allowed happened within the window.
    pub fn is_flapping(&self) -> bool {
        self.flapping
    }

    pub fn detection(&self) -> Detection {
        self.detection
    }

    /// The lease duration in force: the holder's own, as its record says, else the policy's.
    /// A released record's duration is nobody's lease (any program can write one), so it
    /// never counts; a held one is within a day (see `lock_record::checked`), and bounded
    /// here again so that no record can make a deadline the timers cannot take.
    pub fn lease_duration(&self) -> Duration {
        match self.record() {
            Some(r) if r.has_holder() && (1..=MAX_RECORD_LEASE_SECONDS).contains(&r.lease_duration_seconds) => {
                Duration::from_secs(r.lease_duration_seconds as u64)
            }
            _ => self.fallback_lease_duration,
        }
    }

    /// When the lease goes stale unless a renewal is observed first; `None` when there is
    /// nothing to time (no holder, already stale, or not yet observed).
    pub fn stale_deadline(&self) -> Option<Instant> {
        match (&self.health, self.last_change) {
            (Health::Healthy, Some(changed)) if !self.unobservable => Some(changed.monotonic + self.lease_duration()),
            _ => None,
        }
    }

    /// The next moment [`Self::check_deadline`] has something to decide: staleness, slow
    /// renewals, or the end of a flapping spell.
    pub fn deadline(&self) -> Option<Instant> {
        let stale = self.stale_deadline();
        // Blind, lateness means nothing: only the stale deadline matters (to go Unknown).
        let slow = stale
            .filter(|_| !self.late && !self.blind)
            .and(self.last_change)
            .map(|c| c.monotonic + self.detection.slow_renewal_after);
        let on_time_again = self.slow_ends();
        let calm = self.flapping_ends();
        [stale, slow, on_time_again, calm].into_iter().flatten().min()
    }

    /// When RenewalsSlow clears, if renewals stay on time until then.
    fn slow_ends(&self) -> Option<Instant> {
        (self.slow && !self.late).then_some(self.last_late?).map(|at| at + self.lease_duration())
    }

    /// A renewal by the current holder: it closes a late gap, and clears RenewalsSlow once
    /// renewals have been on time for a lease duration.
    fn renewed(&mut self, now: Instant) {
        if std::mem::take(&mut self.late) {
            self.last_late = Some(now);
        }
        if self.slow_ends().is_some_and(|ends| now >= ends) {
            self.slow = false;
        }
    }

    fn forget_lateness(&mut self) {
        self.late = false;
        self.slow = false;
        self.last_late = None;
    }

    /// When the oldest of the transitions that make this a flapping spell leaves the window.
    fn flapping_ends(&self) -> Option<Instant> {
        if !self.flapping {
            return None;
        }
        let transitions = &self.stats.transitions;
        let allowed = self.detection.flapping_transitions;
        transitions.len().checked_sub(allowed + 1).map(|i| transitions[i] + self.detection.flapping_window)
    }

    /// Feeds the lock's current content, as just read from a watch or a list.
    pub fn observe(&mut self, now: Moment, content: LockContent) -> Vec<Occurrence> {
        let first = self.content.is_none();
        let was_blind = std::mem::replace(&mut self.blind, false);
        if self.content.as_ref() == Some(&content) {
            // Unchanged: not a renewal. After a blind spot, give the holder a full lease
            // from now, as client-go does when it starts watching: it may not have been able
            // to reach the API server either.
            if was_blind || self.unobservable {
                self.unobservable = false;
                if self.health == Health::Healthy {
                    self.last_change = Some(now);
                }
            }
            return Vec::new();
        }
        let previous_change = self.last_change.replace(now);
        self.unobservable = false;
        self.content = Some(content.clone());

        match content {
            LockContent::Absent => {
                self.retire_leader();
                self.health = Health::Pending;
                Vec::new()
            }
            LockContent::Malformed(reason) => {
                self.retire_leader();
                let already = self.health == Health::Malformed(reason.clone());
                self.health = Health::Malformed(reason.clone());
                if already { Vec::new() } else { vec![Occurrence::MalformedRecord { reason }] }
            }
            LockContent::Record(record) if !record.has_holder() => {
                self.retire_leader();
                self.health = Health::NoLeader;
                Vec::new()
            }
            LockContent::Record(record) => self.observe_holder(now, first, previous_change, record),
        }
    }

    fn observe_holder(
        &mut self,
        now: Moment,
        first: bool,
        previous_change: Option<Moment>,
        record: LeaderElectionRecord,
    ) -> Vec<Occurrence> {
        let holder = record.holder_identity.clone();
        if holder == self.leader && !self.leader.is_empty() {
            self.renewed(now.monotonic);
            if let Some(previous) = previous_change.filter(|_| !first) {
                self.stats.last_interval = Some(now.monotonic.saturating_duration_since(previous.monotonic));
            }
            return match self.health {
                // A restart's first look proves nothing: the record may not have changed
                // since the operator last called it stale.
                Health::Stale if first => Vec::new(),
                Health::Stale => {
                    self.health = Health::Healthy;
                    let stale_since = self.stale_since.take().unwrap_or(now.wall);
                    vec![Occurrence::LeaseRecovered { holder, stale_since }]
                }
                _ => {
                    self.health = Health::Healthy;
                    Vec::new()
                }
            };
        }

        let from = if self.leader.is_empty() { self.previous_leader.clone() } else { self.leader.clone() };
        self.leader = holder.clone();
        self.previous_leader = holder.clone();
        self.health = Health::Healthy;
        self.stale_since = None;
        self.stats.last_interval = None;
        self.forget_lateness();
        self.stats.transitions.push_back(now.monotonic);
        let acquire_time = record.acquire_time;
        // A released lock's record is the previous holder's last act, so the time since the
        // last change counts from the release when there was one.
        let leaderless = previous_change
            .filter(|_| !first && !from.is_empty())
            .map(|previous| now.monotonic.saturating_duration_since(previous.monotonic));
        let mut occurrences = if from.is_empty() || from == holder {
            vec![Occurrence::LeaderElected { holder, acquire_time, leaderless }]
        } else {
            vec![Occurrence::LeaderChanged { from, to: holder, acquire_time, leaderless }]
        };
        let window = self.detection.flapping_window;
        let changes = self.transitions_within(now.monotonic, window);
        if changes > self.detection.flapping_transitions && !self.flapping {
            self.flapping = true;
            occurrences.push(Occurrence::LeaderFlapping { changes, window });
        }
        occurrences
    }

    fn retire_leader(&mut self) {
        if !self.leader.is_empty() {
            self.previous_leader = std::mem::take(&mut self.leader);
        }
        self.stale_since = None;
    }

    /// Called when the deadline timer fires (or at any later time).
    pub fn check_deadline(&mut self, now: Moment) -> Vec<Occurrence> {
        if self.slow_ends().is_some_and(|ends| now.monotonic >= ends) {
            self.slow = false;
        }
        if self.flapping && self.flapping_ends().is_none_or(|ends| now.monotonic >= ends) {
            let window = self.detection.flapping_window;
            self.flapping = self.transitions_within(now.monotonic, window) > self.detection.flapping_transitions;
        }
        let (Some(stale_at), Some(changed)) = (self.stale_deadline(), self.last_change) else {
            return Vec::new();
        };
        let slow_at = changed.monotonic + self.detection.slow_renewal_after;
        if now.monotonic < slow_at.min(stale_at) {
            return Vec::new();
        }
        if self.blind {
            // Not seeing renewals is not the same as there being none.
            self.unobservable = now.monotonic >= stale_at;
            return Vec::new();
        }
        if now.monotonic < stale_at {
            if self.late {
                return Vec::new();
            }
            self.late = true;
            self.last_late = Some(now.monotonic);
            if std::mem::replace(&mut self.slow, true) {
                return Vec::new();
            }
            // One warning per spell: not again within a few lease durations.
            let quiet = self.lease_duration() * 4;
            if self.slow_reported.is_some_and(|at| now.monotonic.saturating_duration_since(at) < quiet) {
                return Vec::new();
            }
            self.slow_reported = Some(now.monotonic);
            return vec![Occurrence::RenewalsSlow {
                holder: self.leader.clone(),
                silent_for: now.monotonic.saturating_duration_since(changed.monotonic),
                lease_duration: self.lease_duration(),
            }];
        }
        let last_renewal = changed.wall;
        self.health = Health::Stale;
        self.forget_lateness();
        self.stale_since = Some(last_renewal);
        vec![Occurrence::LeaseStale {
            holder: self.leader.clone(),
            last_renewal,
            lease_duration: self.lease_duration(),
        }]
    }

    /// A fresh read of the lock, made because a deadline's timer went off late (the process
    /// was paused or starved, and a renewal may wait unread in the watch): if the record
    /// differs from the one last observed, someone wrote it meanwhile, so the holder counts
    /// as renewing from `at`. The record itself is left to the watch, which delivers it (and
    /// any change before it) in order.
    pub fn vouch(&mut self, content: &LockContent, at: Moment) {
        let changed = self.content.as_ref() != Some(content);
        if changed && self.health == Health::Healthy && self.last_change.is_some_and(|c| c.monotonic < at.monotonic) {
            self.last_change = Some(at);
            self.renewed(at.monotonic);
        }
    }

    /// The lock watch broke: until it lists again, the absence of changes means nothing.
    pub fn set_blind(&mut self) {
        self.blind = true;
    }

    pub fn is_blind(&self) -> bool {
        self.blind
    }

    /// Forgets transitions older than `window` before `now`; returns how many remain.
    pub fn transitions_within(&mut self, now: Instant, window: Duration) -> usize {
        while let Some(&oldest) = self.stats.transitions.front() {
            if now.saturating_duration_since(oldest) > window {
                self.stats.transitions.pop_front();
            } else {
                break;
            }
        }
        self.stats.transitions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(15);

    fn record(holder: &str, renew_second: i64) -> LockContent {
        LockContent::Record(LeaderElectionRecord {
            holder_identity: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(Timestamp::from_second(1_000).unwrap().to_string()),
            renew_time: Some(Timestamp::from_second(renew_second).unwrap().to_string()),
            leader_transitions: 0,
        })
    }

    fn stale(events: &[Occurrence]) -> bool {
        events.iter().any(|e| matches!(e, Occurrence::LeaseStale { .. }))
    }

    fn fresh() -> (LockObservation, Moment) {
        (LockObservation::new(LEASE, Detection::default(), Resumed::default()), Moment::now())
    }

    #[test]
    fn the_first_holder_is_elected_once() {
        let (mut o, t0) = fresh();
        assert!(
            matches!(o.observe(t0, record("a", 1)).as_slice(), [Occurrence::LeaderElected { holder, .. }] if holder == "a")
        );
        assert!(o.observe(t0.after(Duration::from_secs(2)), record("a", 3)).is_empty());
        assert_eq!(o.health(), &Health::Healthy);
        assert_eq!(o.leader(), "a");
    }

    #[test]
    fn a_new_holder_is_a_change_from_the_old() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        let events = o.observe(t0.after(Duration::from_secs(20)), record("b", 21));
        assert!(matches!(events.as_slice(), [Occurrence::LeaderChanged { from, to, .. }] if from == "a" && to == "b"));
    }

    #[test]
    fn the_time_without_a_leader_runs_from_the_last_change_seen_to_the_new_holder() {
        let leaderless = |events: Vec<Occurrence>| match events.as_slice() {
            [Occurrence::LeaderChanged { leaderless, .. } | Occurrence::LeaderElected { leaderless, .. }] => {
                *leaderless
            }
            other => panic!("not one leader change: {other:?}"),
        };
        // Killed: the last renewal seen, then the lease runs out before another takes it.
        let (mut o, t0) = fresh();
        assert_eq!(leaderless(o.observe(t0, record("a", 1))), None, "the first holder ends no gap");
        o.observe(t0.after(Duration::from_secs(2)), record("a", 3));
        let taken = o.observe(t0.after(Duration::from_millis(19_300)), record("b", 20));
        assert_eq!(leaderless(taken), Some(Duration::from_millis(17_300)));
        // Released: the release is the previous holder's last act.
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        o.observe(t0.after(Duration::from_secs(1)), record("", 2));
        let taken = o.observe(t0.after(Duration::from_millis(1_040)), record("b", 2));
        assert_eq!(leaderless(taken), Some(Duration::from_millis(40)));
        // The same holder taking its released lock back is a gap too.
        o.observe(t0.after(Duration::from_secs(2)), record("", 3));
        assert_eq!(
            leaderless(o.observe(t0.after(Duration::from_secs(5)), record("b", 5))),
            Some(Duration::from_secs(3))
        );
        // A restart's first look did not see the previous holder go.
        let mut o = LockObservation::new(
            LEASE,
            Detection::default(),
            Resumed { leader: "a".into(), state: Some(PolicyState::Healthy) },
        );
        assert_eq!(leaderless(o.observe(t0, record("b", 1))), None);
    }

    #[test]
    fn a_handover_through_a_released_lock_still_names_both() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        o.observe(t0.after(Duration::from_secs(1)), record("", 2));
        assert_eq!(o.health(), &Health::NoLeader);
        let events = o.observe(t0.after(Duration::from_secs(3)), record("b", 3));
        assert!(matches!(events.as_slice(), [Occurrence::LeaderChanged { from, to, .. }] if from == "a" && to == "b"));
    }

    #[test]
    fn stale_exactly_at_the_deadline_and_not_before() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        let renewed = t0.after(Duration::from_secs(2));
        o.observe(renewed, record("a", 3));
        assert_eq!(o.stale_deadline(), Some(renewed.monotonic + LEASE));
        let early = o.check_deadline(renewed.after(Detection::default().slow_renewal_after));
        assert!(matches!(early.as_slice(), [Occurrence::RenewalsSlow { .. }]), "the early warning comes first");
        assert_eq!(o.deadline(), Some(renewed.monotonic + LEASE));
        assert!(o.check_deadline(renewed.after(LEASE - Duration::from_millis(1))).is_empty());
        let events = o.check_deadline(renewed.after(LEASE));
        assert!(
            matches!(events.as_slice(), [Occurrence::LeaseStale { last_renewal, .. }] if *last_renewal == renewed.wall)
        );
        assert_eq!(o.health(), &Health::Stale);
        assert_eq!(o.deadline(), None, "one LeaseStale per episode");
        assert!(o.check_deadline(renewed.after(LEASE * 3)).is_empty());
    }

    #[test]
    fn the_same_holder_renewing_again_recovers() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        o.check_deadline(t0.after(LEASE));
        let events = o.observe(t0.after(LEASE * 2), record("a", 40));
        assert!(
            matches!(events.as_slice(), [Occurrence::LeaseRecovered { holder, stale_since }] if holder == "a" && *stale_since == t0.wall)
        );
        assert_eq!(o.health(), &Health::Healthy);
    }

    #[test]
    fn holder_clock_skew_changes_nothing() {
        // Records whose renewTime is ten minutes ahead or behind, but which keep changing,
        // are renewals like any other.
        for skew in [-600, 600] {
            let (mut o, t0) = fresh();
            for i in 0..30 {
                let now = t0.after(Duration::from_secs(2 * i));
                o.observe(now, record("a", 1_000_000 + skew + 2 * i as i64));
                assert!(o.check_deadline(now).is_empty());
            }
            assert_eq!(o.health(), &Health::Healthy);
        }
    }

    #[test]
    fn the_record_lease_duration_wins_over_the_policy() {
        let (mut o, t0) = fresh();
        let mut content = record("a", 1);
        if let LockContent::Record(r) = &mut content {
            r.lease_duration_seconds = 40;
        }
        o.observe(t0, content);
        assert_eq!(o.lease_duration(), Duration::from_secs(40));
        assert!(!stale(&o.check_deadline(t0.after(LEASE))));
        assert!(stale(&o.check_deadline(t0.after(Duration::from_secs(40)))));
    }

    #[test]
    fn a_restart_reports_neither_old_news_nor_false_staleness() {
        let t0 = Moment::now();
        let resumed = Resumed { leader: "a".into(), state: Some(PolicyState::Healthy) };
        let mut o = LockObservation::new(LEASE, Detection::default(), resumed);
        assert!(o.observe(t0, record("a", 1)).is_empty(), "no second LeaderElected");
        assert!(!stale(&o.check_deadline(t0.after(LEASE - Duration::from_millis(1)))), "no false staleness at start");
    }

    #[test]
    fn a_restart_reports_a_transition_that_happened_while_down() {
        let resumed = Resumed { leader: "a".into(), state: Some(PolicyState::Healthy) };
        let mut o = LockObservation::new(LEASE, Detection::default(), resumed);
        let events = o.observe(Moment::now(), record("b", 1));
        assert!(matches!(events.as_slice(), [Occurrence::LeaderChanged { from, to, .. }] if from == "a" && to == "b"));
    }

    #[test]
    fn a_restart_keeps_a_stale_lease_stale_until_it_changes() {
        let t0 = Moment::now();
        let resumed = Resumed { leader: "a".into(), state: Some(PolicyState::Stale) };
        let mut o = LockObservation::new(LEASE, Detection::default(), resumed);
        assert!(o.observe(t0, record("a", 1)).is_empty());
        assert_eq!(o.health(), &Health::Stale);
        let events = o.observe(t0.after(Duration::from_secs(2)), record("a", 3));
        assert!(matches!(events.as_slice(), [Occurrence::LeaseRecovered { .. }]));
    }

    #[test]
    fn blindness_is_unknown_not_stale_and_recovery_restarts_the_clock() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        o.set_blind();
        assert!(
            o.check_deadline(t0.after(Detection::default().slow_renewal_after)).is_empty(),
            "no warning while blind"
        );
        assert!(o.check_deadline(t0.after(LEASE * 2)).is_empty());
        assert!(o.is_unobservable());
        assert_eq!(o.health(), &Health::Healthy);
        // The watch lists again and the record did not change meanwhile (nobody could write).
        let back = t0.after(LEASE * 2);
        assert!(o.observe(back, record("a", 1)).is_empty());
        assert!(!o.is_unobservable());
        assert_eq!(o.stale_deadline(), Some(back.monotonic + LEASE));
        // A holder that stays silent after the recovery is stale a full lease later.
        assert!(stale(&o.check_deadline(back.after(LEASE))));
    }

    #[test]
    fn slow_renewals_warn_once_and_clear_after_a_lease_duration_on_time() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        assert_eq!(o.deadline(), Some(t0.monotonic + Detection::default().slow_renewal_after));
        let warned = o.check_deadline(t0.after(Duration::from_secs(6)));
        assert!(
            matches!(warned.as_slice(), [Occurrence::RenewalsSlow { silent_for, .. }] if *silent_for == Duration::from_secs(6))
        );
        assert!(o.is_slow());
        assert!(o.check_deadline(t0.after(Duration::from_secs(7))).is_empty());
        // The late renewal arrives; renewals are on time from then on (every 2 s).
        for second in (8..23).step_by(2) {
            o.observe(t0.after(Duration::from_secs(second)), record("a", second as i64));
            o.check_deadline(t0.after(Duration::from_secs(second)));
            assert!(o.is_slow(), "still slow at {second}s: less than a lease duration on time");
        }
        o.check_deadline(t0.after(Duration::from_secs(23)));
        assert!(!o.is_slow(), "a lease duration (15 s) on time since the late renewal at 8 s");
        // Late again soon after: the state shows it, the Event is not repeated.
        o.observe(t0.after(Duration::from_secs(24)), record("a", 24));
        assert!(o.check_deadline(t0.after(Duration::from_secs(30))).is_empty());
        assert!(o.is_slow());
    }

    #[test]
    fn renewals_hovering_around_the_threshold_keep_the_state_steady() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 0));
        let mut changes = 0;
        let mut was_slow = o.is_slow();
        // Renewals alternate between 4 s and 6 s apart, around the 5 s threshold.
        let mut at = 0;
        for i in 1..40 {
            let gap = if i % 2 == 0 { 4 } else { 6 };
            for tick in at + 1..=at + gap {
                o.check_deadline(t0.after(Duration::from_secs(tick)));
            }
            at += gap;
            o.observe(t0.after(Duration::from_secs(at)), record("a", at as i64));
            if o.is_slow() != was_slow {
                changes += 1;
                was_slow = o.is_slow();
            }
        }
        assert_eq!(changes, 1, "slow once, and it stays so while renewals keep running late");
    }

    #[test]
    fn more_changes_than_allowed_in_the_window_is_flapping_until_they_age_out() {
        let (mut o, t0) = fresh();
        let mut seen = Vec::new();
        for (i, holder) in ["a", "b", "c", "d"].iter().enumerate() {
            seen.extend(o.observe(t0.after(Duration::from_secs(i as u64)), record(holder, i as i64)));
        }
        assert!(seen.iter().any(|e| matches!(e, Occurrence::LeaderFlapping { changes: 4, .. })), "{seen:?}");
        assert_eq!(seen.iter().filter(|e| matches!(e, Occurrence::LeaderFlapping { .. })).count(), 1);
        assert!(o.is_flapping());
        // The first change leaves the 10-minute window: calm again.
        let later = t0.after(Duration::from_secs(601));
        o.observe(later, record("d", 601));
        o.check_deadline(later);
        assert!(!o.is_flapping());
    }

    /// Whatever happened, once check_deadline(now) has run, the next deadline lies in the
    /// future: a past one would make the observer's timer fire in a loop.
    #[test]
    fn after_a_check_the_next_deadline_is_always_in_the_future() {
        let scenarios: [fn(&mut LockObservation, Moment); 4] = [
            |_, _| {},
            |o, _| o.set_blind(),
            |o, t0| {
                o.set_blind();
                o.check_deadline(t0.after(Duration::from_secs(7)));
            },
            |o, t0| {
                o.check_deadline(t0.after(Duration::from_secs(7)));
                o.set_blind();
            },
        ];
        for (i, scenario) in scenarios.iter().enumerate() {
            let (mut o, t0) = fresh();
            o.observe(t0, record("a", 1));
            scenario(&mut o, t0);
            for step in 0..40 {
                let now = t0.after(Duration::from_millis(500 * step));
                o.check_deadline(now);
                if let Some(next) = o.deadline() {
                    assert!(next > now.monotonic, "scenario {i}, {step}: the next deadline is not in the future");
                }
            }
        }
    }

    #[test]
    fn a_late_deadline_is_vouched_for_by_a_changed_record_only() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        // Paused past the deadline; a fresh read shows a renewal the watch has not delivered.
        let resumed = t0.after(LEASE * 2);
        o.vouch(&record("a", 3), resumed);
        assert!(!stale(&o.check_deadline(resumed)), "a renewal was made: not stale");
        assert_eq!(o.stale_deadline(), Some(resumed.monotonic + LEASE));
        // The watch then delivers it: a renewal, nothing to report.
        assert!(o.observe(resumed.after(Duration::from_millis(5)), record("a", 3)).is_empty());
        // A fresh read showing what was observed proves the holder stopped.
        let later = resumed.after(LEASE * 2);
        o.vouch(&record("a", 3), later);
        assert!(stale(&o.check_deadline(later)));
    }

    /// A released record may carry any leaseDurationSeconds (any program can write one): it
    /// is nobody's lease, and must not push a deadline (the slow-renewal recovery counts a
    /// lease duration) past what the timers take.
    #[test]
    fn a_released_record_s_lease_duration_is_never_timed() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        o.check_deadline(t0.after(Duration::from_secs(6)));
        assert!(o.is_slow(), "renewals ran late");
        o.observe(t0.after(Duration::from_secs(7)), record("a", 2));
        let released = LockContent::Record(LeaderElectionRecord {
            holder_identity: String::new(),
            lease_duration_seconds: i64::from(i32::MAX),
            acquire_time: None,
            renew_time: Some("2026-01-01T00:00:09Z".into()),
            leader_transitions: 0,
        });
        o.observe(t0.after(Duration::from_secs(9)), released);
        assert_eq!(o.lease_duration(), LEASE, "the policy's, not the released record's");
        let ahead = o.deadline().map(|d| d.saturating_duration_since(t0.monotonic));
        assert!(ahead.is_none_or(|d| d <= Duration::from_secs(60)), "{ahead:?}");
    }

    #[test]
    fn malformed_records_are_reported_once() {
        let (mut o, t0) = fresh();
        let bad = LockContent::Malformed("bad".into());
        assert_eq!(o.observe(t0, bad.clone()).len(), 1);
        assert!(o.observe(t0, bad).is_empty());
        assert_eq!(o.health(), &Health::Malformed("bad".into()));
    }

    #[test]
    fn renewal_intervals_and_transitions_are_counted() {
        let (mut o, t0) = fresh();
        o.observe(t0, record("a", 1));
        o.observe(t0.after(Duration::from_secs(3)), record("a", 4));
        assert_eq!(o.stats().last_interval, Some(Duration::from_secs(3)));
        o.observe(t0.after(Duration::from_secs(4)), record("b", 5));
        o.observe(t0.after(Duration::from_secs(5)), record("c", 6));
        assert_eq!(o.transitions_within(t0.monotonic + Duration::from_secs(5), Duration::from_secs(60)), 3);
        assert_eq!(o.transitions_within(t0.monotonic + Duration::from_secs(65), Duration::from_secs(60)), 1);
    }
}
