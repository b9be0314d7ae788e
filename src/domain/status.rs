//! The status users see, rendered from what the policy controller did (configuration) and
//! what the lock observer saw (leadership). One pure function, so that both halves land in
//! one write and the same inputs always give the same status.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::{
    api::{ElectionPolicyStatus, LeaderChange, PolicyState},
    domain::{
        holder::{HolderCheck, holder_not_found_message},
        lock_record::{LeaderElectionRecord, LockKey},
        notices::{ConcurrentLeaders, fit},
        observation::{Health, LockObservation},
        reasons::{condition, condition_reason as reason, event},
    },
    limits::CONDITION_MESSAGE_BYTES,
};

/// What reconciling the policy's configuration came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOutcome {
    /// Not reconciled yet.
    Pending,
    /// The spec breaks a rule.
    Invalid(String),
    /// An older policy claims the same lock or Deployment.
    Conflict(String),
    /// The configuration is in these Deployments (none: the selector matches nothing).
    Injected(Vec<String>),
    /// injection.mode is None; these Deployments are selected.
    Observing(Vec<String>),
    /// Some Deployments could not be configured.
    Failed { message: String, injected: Vec<String> },
}

impl ConfigOutcome {
    /// True when the lock should be watched.
    pub fn observes_lock(&self) -> bool {
        !matches!(self, ConfigOutcome::Invalid(_) | ConfigOutcome::Conflict(_))
    }

    /// The reason of the Warning Event for an outcome that needs the user's attention.
    pub fn problem(&self) -> Option<&'static str> {
        match self {
            ConfigOutcome::Invalid(_) => Some(event::INVALID_POLICY),
            ConfigOutcome::Conflict(_) => Some(event::LOCK_CONFLICT),
            ConfigOutcome::Injected(d) if d.is_empty() => Some(event::TARGET_NOT_FOUND),
            ConfigOutcome::Failed { .. } => Some(event::INJECTION_FAILED),
            ConfigOutcome::Pending | ConfigOutcome::Injected(_) | ConfigOutcome::Observing(_) => None,
        }
    }
}

/// The configuration half of the status, from the policy controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigReport {
    pub generation: Option<i64>,
    pub outcome: ConfigOutcome,
    pub lock: Option<LockKey>,
    /// Human description of the selector, for messages.
    pub selector: String,
}

/// What the observer knows of a policy beyond its configuration.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    /// The current lock, once watched.
    pub observation: Option<&'a LockObservation>,
    pub holder: &'a HolderCheck,
    /// The previous lock still has a live holder beside the current one.
    pub concurrent: Option<&'a ConcurrentLeaders>,
    /// Leader changes, newest first.
    pub history: &'a [LeaderChange],
}

impl<'a> Seen<'a> {
    pub fn of(observation: Option<&'a LockObservation>, holder: &'a HolderCheck) -> Self {
        Seen { observation, holder, concurrent: None, history: &[] }
    }
}

/// Renders the status. `previous` keeps each condition's lastTransitionTime when its status
/// did not change.
pub fn render(
    report: &ConfigReport,
    seen: &Seen<'_>,
    previous: Option<&ElectionPolicyStatus>,
    now: Timestamp,
) -> ElectionPolicyStatus {
    let Seen { observation, history, .. } = *seen;
    let lock = report.lock.as_ref().map(ToString::to_string).unwrap_or_default();
    let config = config_condition(report);
    let leader = leader_condition(report, seen, &lock);
    let ready = ready_condition(&config, &leader);

    let state = match (&report.outcome, observation.map(LockObservation::health)) {
        (ConfigOutcome::Invalid(_) | ConfigOutcome::Conflict(_), _) => PolicyState::Invalid,
        (_, Some(Health::Malformed(_))) => PolicyState::Invalid,
        (_, Some(Health::Healthy)) => PolicyState::Healthy,
        (_, Some(Health::Stale)) => PolicyState::Stale,
        (_, Some(Health::NoLeader)) => PolicyState::NoLeader,
        (_, Some(Health::Pending) | None) => PolicyState::Pending,
    };
    let watched = report.outcome.observes_lock().then_some(observation).flatten();
    let record = watched.and_then(LockObservation::record);
    let injected = match &report.outcome {
        ConfigOutcome::Injected(d) | ConfigOutcome::Failed { injected: d, .. } => d.clone(),
        _ => Vec::new(),
    };

    let conditions = [config, leader, ready]
        .into_iter()
        .map(|Rendered { type_, status, reason, message }| {
            let since = previous
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time.clone());
            Condition {
                type_: type_.into(),
                status: status.into(),
                reason: reason.into(),
                // Messages quote what tenants wrote; however long that was, the status
                // stays writable.
                message: fit(&message, CONDITION_MESSAGE_BYTES),
                observed_generation: report.generation,
                last_transition_time: since.unwrap_or_else(|| stored_time(now)),
            }
        })
        .collect();

    ElectionPolicyStatus {
        leader: watched.map(|o| o.leader().to_string()).unwrap_or_default(),
        leader_transitions: record.map(|r| i32::try_from(r.leader_transitions).unwrap_or(i32::MAX)),
        acquire_time: record
            .and_then(LeaderElectionRecord::acquire_timestamp)
            .filter(|_| watched.is_some_and(|o| !o.leader().is_empty()))
            .map(stored_time),
        last_observed_renewal: watched.and_then(LockObservation::last_change).map(|m| stored_time(m.wall)),
        state: Some(state),
        lock: report.lock.as_ref().map(ToString::to_string),
        injected_deployments: injected,
        observed_generation: report.generation,
        conditions,
        history: history.to_vec(),
    }
}

/// `at` as the API server stores a `metav1.Time`: in whole seconds. A status holds only
/// such times, so the status the operator last wrote equals the one it reads back after a
/// restart; a lock's `acquireTime` in microseconds would otherwise make every status look
/// changed, and a restart rewrite them all.
pub fn stored_time(at: Timestamp) -> Time {
    Time(Timestamp::from_second(at.as_second()).unwrap_or(at))
}

/// Whether two statuses differ in anything worth a write. The time of the last observed
/// renewal changes with every renewal and is refreshed only along with other changes;
/// otherwise every renewal of every lock would cost a status write.
///
/// Compared field by field rather than on stripped copies: it runs on every renewal of every
/// lock. The exhaustive pattern makes a new status field a compile error here until it is
/// decided.
pub fn differs_for_users(a: &ElectionPolicyStatus, b: &ElectionPolicyStatus) -> bool {
    let ElectionPolicyStatus {
        leader,
        leader_transitions,
        acquire_time,
        last_observed_renewal: _,
        state,
        lock,
        injected_deployments,
        observed_generation,
        conditions,
        history,
    } = a;
    *leader != b.leader
        || *leader_transitions != b.leader_transitions
        || *acquire_time != b.acquire_time
        || *state != b.state
        || *lock != b.lock
        || *injected_deployments != b.injected_deployments
        || *observed_generation != b.observed_generation
        || *conditions != b.conditions
        || *history != b.history
}

/// One condition as rendered, before its transition time is settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

const fn rendered(type_: &'static str, status: &'static str, reason: &'static str, message: String) -> Rendered {
    Rendered { type_, status, reason, message }
}

fn config_condition(report: &ConfigReport) -> Rendered {
    let list = |d: &[String]| d.join(", ");
    match &report.outcome {
        ConfigOutcome::Pending => {
            rendered(condition::CONFIG_INJECTED, "Unknown", reason::RECONCILING, "not reconciled yet".into())
        }
        ConfigOutcome::Invalid(why) => {
            rendered(condition::CONFIG_INJECTED, "False", reason::INVALID_POLICY, why.clone())
        }
        ConfigOutcome::Conflict(why) => {
            rendered(condition::CONFIG_INJECTED, "False", reason::LOCK_CONFLICT, why.clone())
        }
        ConfigOutcome::Injected(d) if d.is_empty() => rendered(
            condition::CONFIG_INJECTED,
            "False",
            reason::TARGET_NOT_FOUND,
            format!("selector {} matches no Deployment in the policy's namespace", report.selector),
        ),
        ConfigOutcome::Injected(d) => rendered(
            condition::CONFIG_INJECTED,
            "True",
            reason::INJECTED,
            format!("configuration injected into {} Deployment(s): {}", d.len(), list(d)),
        ),
        ConfigOutcome::Observing(d) => rendered(
            condition::CONFIG_INJECTED,
            "True",
            reason::INJECTION_DISABLED,
            format!("injection.mode is None: {} Deployment(s) selected and left untouched", d.len()),
        ),
        ConfigOutcome::Failed { message, .. } => {
            rendered(condition::CONFIG_INJECTED, "False", reason::INJECTION_FAILED, message.clone())
        }
    }
}

/// LeaderHealthy, from the most serious finding down: staleness, no leader, two leaders
/// after a lock change, a holder that is not one of the Pods, flapping, slow renewals.
fn leader_condition(report: &ConfigReport, seen: &Seen<'_>, lock: &str) -> Rendered {
    let Seen { observation, holder, concurrent, .. } = *seen;
    let unknown =
        |reason: &'static str, message: String| rendered(condition::LEADER_HEALTHY, "Unknown", reason, message);
    match &report.outcome {
        ConfigOutcome::Invalid(_) => {
            return unknown(reason::INVALID_POLICY, "the lock is not watched while the policy is invalid".into());
        }
        ConfigOutcome::Conflict(_) => {
            return unknown(
                reason::LOCK_CONFLICT,
                "the lock is not watched while the policy conflicts with another".into(),
            );
        }
        _ => {}
    }
    let Some(observation) = observation else {
        return unknown(reason::RECONCILING, format!("waiting for the first look at {lock}"));
    };
    let leader = observation.leader();
    let since = |o: &LockObservation| o.last_change().map_or_else(|| "unknown".into(), |m| m.wall.to_string());
    match observation.health() {
        Health::Healthy if observation.is_unobservable() => unknown(
            reason::LOCK_UNOBSERVABLE,
            format!("{lock} cannot be watched right now; last renewal by {leader} observed at {}", since(observation)),
        ),
        Health::Healthy if let Some(concurrent) = concurrent => {
            rendered(condition::LEADER_HEALTHY, "False", reason::CONCURRENT_LEADERS, concurrent.message())
        }
        Health::Healthy if holder.not_found_among.is_some() => rendered(
            condition::LEADER_HEALTHY,
            "False",
            reason::HOLDER_NOT_FOUND,
            holder_not_found_message(leader, lock, holder.not_found_among.as_deref().unwrap_or_default()),
        ),
        Health::Healthy if observation.is_flapping() => {
            let d = observation.detection();
            rendered(
                condition::LEADER_HEALTHY,
                "False",
                reason::LEADER_FLAPPING,
                format!(
                    "more than {} leader changes within {}s; {leader} holds {lock} now",
                    d.flapping_transitions,
                    d.flapping_window.as_secs()
                ),
            )
        }
        Health::Healthy if observation.is_slow() => rendered(
            condition::LEADER_HEALTHY,
            "True",
            reason::RENEWALS_SLOW,
            format!(
                "{leader} holds {lock} but no renewal was observed for {}ms; the lease goes stale at {}s",
                observation.detection().slow_renewal_after.as_millis(),
                observation.lease_duration().as_secs()
            ),
        ),
        Health::Healthy => rendered(
            condition::LEADER_HEALTHY,
            "True",
            reason::LEADER_RENEWING,
            format!("{leader} holds {lock} and renews it"),
        ),
        Health::Stale => rendered(
            condition::LEADER_HEALTHY,
            "False",
            reason::LEASE_STALE,
            format!(
                "{leader} has not renewed {lock} since {} (leaseDuration {}s)",
                observation.stale_since().map_or_else(|| since(observation), |t| t.to_string()),
                observation.lease_duration().as_secs()
            ),
        ),
        Health::NoLeader => rendered(
            condition::LEADER_HEALTHY,
            "False",
            reason::NO_LEADER,
            format!("{lock} exists but nobody holds it"),
        ),
        Health::Pending => unknown(reason::LOCK_NOT_FOUND, format!("no leader-election record in {lock} yet")),
        Health::Malformed(why) => unknown(reason::MALFORMED_LOCK_RECORD, format!("{lock}: {why}")),
    }
}

fn ready_condition(config: &Rendered, leader: &Rendered) -> Rendered {
    match (config.status, leader.status) {
        ("True", "True") => rendered(condition::READY, "True", reason::READY, leader.message.clone()),
        ("True", _) => rendered(condition::READY, "False", leader.reason, leader.message.clone()),
        _ => rendered(condition::READY, "False", config.reason, config.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        api::LockType,
        domain::{
            lock_record::LockContent,
            observation::{Moment, Resumed},
        },
    };

    fn report(outcome: ConfigOutcome) -> ConfigReport {
        ConfigReport {
            generation: Some(3),
            outcome,
            lock: Some(LockKey { type_: LockType::Lease, namespace: "ns".into(), name: "l".into() }),
            selector: "app=demo".into(),
        }
    }

    fn observed(holder: &str, renew_second: i64, at: Moment) -> LockObservation {
        let mut o = LockObservation::new(
            Duration::from_secs(15),
            crate::domain::validation::Detection::default(),
            Resumed::default(),
        );
        o.observe(
            at,
            LockContent::Record(LeaderElectionRecord {
                holder_identity: holder.into(),
                lease_duration_seconds: 15,
                acquire_time: Some(Timestamp::from_second(100).unwrap().to_string()),
                renew_time: Some(Timestamp::from_second(renew_second).unwrap().to_string()),
                leader_transitions: 2,
            }),
        );
        o
    }

    fn condition<'a>(s: &'a ElectionPolicyStatus, type_: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_healthy_injected_policy_is_ready() {
        let now = Moment::now();
        let o = observed("pod-a", 1, now);
        let s = render(
            &report(ConfigOutcome::Injected(vec!["web".into()])),
            &Seen::of(Some(&o), &HolderCheck::default()),
            None,
            now.wall,
        );
        assert_eq!(s.leader, "pod-a");
        assert_eq!(s.state, Some(PolicyState::Healthy));
        assert_eq!(s.leader_transitions, Some(2));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.lock.as_deref(), Some("leases/ns/l"));
        assert_eq!(condition(&s, "ConfigInjected").status, "True");
        assert_eq!(condition(&s, "LeaderHealthy").status, "True");
        assert_eq!(condition(&s, "Ready").status, "True");
    }

    #[test]
    fn a_stale_lease_makes_leader_healthy_false_with_its_reason() {
        let now = Moment::now();
        let mut o = observed("pod-a", 1, now);
        o.check_deadline(now.after(Duration::from_secs(15)));
        let s = render(
            &report(ConfigOutcome::Injected(vec!["web".into()])),
            &Seen::of(Some(&o), &HolderCheck::default()),
            None,
            now.wall,
        );
        assert_eq!(s.state, Some(PolicyState::Stale));
        let leader = condition(&s, "LeaderHealthy");
        assert_eq!((leader.status.as_str(), leader.reason.as_str()), ("False", "LeaseStale"));
        assert_eq!(condition(&s, "Ready").reason, "LeaseStale");
    }

    #[test]
    fn an_invalid_policy_says_why_and_watches_nothing() {
        let now = Moment::now();
        let o = observed("pod-a", 1, now);
        let s = render(
            &report(ConfigOutcome::Invalid("leaseDuration must be greater than renewDeadline".into())),
            &Seen::of(Some(&o), &HolderCheck::default()),
            None,
            now.wall,
        );
        assert_eq!(s.state, Some(PolicyState::Invalid));
        assert_eq!(s.leader, "");
        assert_eq!(condition(&s, "Ready").message, "leaseDuration must be greater than renewDeadline");
        assert_eq!(condition(&s, "LeaderHealthy").status, "Unknown");
    }

    #[test]
    fn condition_messages_are_bounded_whatever_they_quote() {
        let huge = format!("container {} not found", "x".repeat(1 << 20));
        let s = render(
            &report(ConfigOutcome::Failed { message: huge, injected: Vec::new() }),
            &Seen::of(None, &HolderCheck::default()),
            None,
            Timestamp::now(),
        );
        for c in &s.conditions {
            assert!(c.message.len() <= CONDITION_MESSAGE_BYTES, "{}: {} bytes", c.type_, c.message.len());
        }
        assert!(condition(&s, "ConfigInjected").message.ends_with('…'));
    }

    #[test]
    fn no_matching_deployment_is_target_not_found() {
        let s = render(
            &report(ConfigOutcome::Injected(vec![])),
            &Seen::of(None, &HolderCheck::default()),
            None,
            Timestamp::now(),
        );
        let c = condition(&s, "ConfigInjected");
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "TargetNotFound"));
        assert!(c.message.contains("app=demo"));
        assert_eq!(s.state, Some(PolicyState::Pending));
    }

    #[test]
    fn transition_times_move_only_when_a_condition_changes() {
        let t0 = Moment::now();
        let o = observed("pod-a", 1, t0);
        let r = report(ConfigOutcome::Injected(vec!["web".into()]));
        let first = render(&r, &Seen::of(Some(&o), &HolderCheck::default()), None, t0.wall);
        let later = t0.after(Duration::from_secs(60));
        let second = render(&r, &Seen::of(Some(&o), &HolderCheck::default()), Some(&first), later.wall);
        assert_eq!(condition(&second, "Ready").last_transition_time, stored_time(t0.wall));
    }

    #[test]
    fn a_plain_renewal_is_not_worth_a_write() {
        let t0 = Moment::now();
        let mut o = observed("pod-a", 1, t0);
        let r = report(ConfigOutcome::Injected(vec!["web".into()]));
        let before = render(&r, &Seen::of(Some(&o), &HolderCheck::default()), None, t0.wall);
        let t1 = t0.after(Duration::from_secs(2));
        o.observe(
            t1,
            LockContent::Record(LeaderElectionRecord {
                holder_identity: "pod-a".into(),
                lease_duration_seconds: 15,
                acquire_time: Some(Timestamp::from_second(100).unwrap().to_string()),
                renew_time: Some(Timestamp::from_second(3).unwrap().to_string()),
                leader_transitions: 2,
            }),
        );
        let after = render(&r, &Seen::of(Some(&o), &HolderCheck::default()), Some(&before), t1.wall);
        assert_ne!(before.last_observed_renewal, after.last_observed_renewal);
        assert!(!differs_for_users(&before, &after));
    }

    /// One step of a lock's life for the property below.
    #[derive(Clone, Debug)]
    enum Step {
        /// After this many ms, the holder (0: none, else pod-N) renews.
        Renew(u64, u8),
        /// After this many ms, the deadline timer fires.
        Deadline(u64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (0u64..8_000, prop_oneof![8 => Just(1u8), 1 => Just(2u8), 1 => Just(0u8)])
                .prop_map(|(ms, holder)| Step::Renew(ms, holder)),
            (0u64..20_000).prop_map(Step::Deadline),
        ]
    }

    proptest::proptest! {
        /// The observer skips rendering when the status view is unchanged (the hot path of
        /// a plain renewal); that is only sound if an unchanged view never renders a status
        /// users would see differ.
        #[test]
        fn an_unchanged_status_view_renders_no_change_users_see(steps in proptest::collection::vec(step(), 1..40)) {
            let r = report(ConfigOutcome::Injected(vec!["web".into()]));
            let holder = HolderCheck::default();
            let mut now = Moment::now();
            let mut o = observed("pod-1", 1, now);
            let mut written = render(&r, &Seen::of(Some(&o), &holder), None, now.wall);
            let mut second = 1;
            for step in steps {
                let view = o.status_view();
                let occurrences = match step {
                    Step::Renew(ms, who) => {
                        now = now.after(Duration::from_millis(ms));
                        second += 1;
                        let holder = if who == 0 { String::new() } else { format!("pod-{who}") };
                        o.observe(now, LockContent::Record(LeaderElectionRecord {
                            holder_identity: holder,
                            lease_duration_seconds: 15,
                            acquire_time: Some(Timestamp::from_second(100).unwrap().to_string()),
                            renew_time: Some(Timestamp::from_second(second).unwrap().to_string()),
                            leader_transitions: 2,
                        }))
                    }
                    Step::Deadline(ms) => {
                        now = now.after(Duration::from_millis(ms));
                        o.check_deadline(now)
                    }
                };
                let rendered = render(&r, &Seen::of(Some(&o), &holder), Some(&written), now.wall);
                if occurrences.is_empty() && o.status_view() == view {
                    proptest::prop_assert!(!differs_for_users(&written, &rendered), "{written:?}\n{rendered:?}");
                }
                if differs_for_users(&written, &rendered) {
                    written = rendered;
                }
            }
        }
    }
}
