//! The per-policy bookkeeping of the observer, decided without I/O.
//!
//! A [`PolicyTracker`] takes every input about one policy (the controller's registration,
//! what the lock watch delivered, a deadline, a change among the Pods, a watch going blind)
//! and answers with [`Action`]s: the status to write, the Events to publish, the Pod to
//! label, when to wake it next, what the metrics show. The observer task
//! (`k8s::observer`) routes inputs to trackers and carries out their actions; it decides
//! nothing itself. What a tracker reads of the operator's caches comes through
//! [`ClusterView`], and the time through a [`Moment`] argument, so tests drive it with
//! plain data and assert the exact actions.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use kube::core::Selector;

use crate::{
    api::{ElectionPolicyStatus, LeaderChange, PolicyState},
    domain::{
        holder::{HolderCheck, HolderPod, holder_is_pod, holder_not_found_message},
        lock_record::{LockContent, LockKey},
        notices::{
            ConcurrentLeaders, Notice, Regarding, concurrent_leaders_notice, config_notice, holder_not_found_notice,
            occurrence_notice,
        },
        observation::{Health, LockObservation, Moment, Occurrence, Resumed},
        policy_key::PolicyKey,
        reasons::condition,
        status::{ConfigOutcome, ConfigReport, Seen, differs_for_users, render, stored_time},
        validation::Detection,
    },
};

/// How a valid policy's lock is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchSettings {
    /// The policy's leaseDuration, used when a record does not carry its own.
    pub fallback_lease_duration: Duration,
    pub detection: Detection,
    /// Keep the leader label on the holder's Pod.
    pub leader_pod_label: bool,
}

/// What the policy controller tells the observer after each reconcile.
#[derive(Clone, Debug)]
pub struct Registration {
    pub regarding: Regarding,
    pub report: ConfigReport,
    /// How to watch the lock; `None` for an invalid policy, whose lock is not watched.
    pub watch: Option<WatchSettings>,
    /// Selectors of the selected Deployments' Pods: the holder should be one of them.
    pub pod_selectors: Vec<Selector>,
    /// Names of the selected Deployments, for messages.
    pub deployments: Vec<String>,
    /// The status as found on the object at start, with the policy's first registration
    /// only (the tracker keeps it from then on), so a restarted operator resumes where it was.
    pub current_status: Option<ElectionPolicyStatus>,
}

impl Registration {
    pub fn key(&self) -> PolicyKey {
        PolicyKey::new(self.regarding.namespace.as_str(), self.regarding.name.as_str())
    }

    /// The lock to watch: the one a valid policy names, unless it conflicts with another.
    pub fn watched_lock(&self) -> Option<&LockKey> {
        self.report.lock.as_ref().filter(|_| self.watch.is_some() && self.report.outcome.observes_lock())
    }
}

/// What a tracker reads of the operator's caches; it never changes them.
pub trait ClusterView {
    /// The lock as its watch shows it (`Absent` when it is not there); `None` until the
    /// watch of its kind has listed, when a missing lock only means "not seen yet".
    fn lock(&self, lock: &LockKey) -> Option<LockContent>;
    /// Whether the watch that sees this lock has listed.
    fn lock_listed(&self, lock: &LockKey) -> bool;
    /// Whether the Pods of `namespace` have been listed.
    fn pods_listed(&self, namespace: &str) -> bool;
    /// The Pod, among those `selectors` select in `namespace`, that `holder` names; `None`
    /// until the Pods there have been listed.
    fn holder_pod(&self, namespace: &str, holder: &str, selectors: &[Selector]) -> Option<HolderPod>;
}

/// How many leader changes `status.history` keeps.
pub const HISTORY_LENGTH: usize = 10;

/// What the observer is to do for a policy, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Route this lock's events to the policy (its lock, or the previous one kept).
    Watch(LockKey),
    /// Stop routing this lock's events to the policy.
    Unwatch(LockKey),
    /// Hand this status to the status writer. Shared with the tracker's record of what it
    /// wrote: at a start every policy's status waits in the writer's queue, and a second
    /// copy of each would raise the peak, and leave holes in the heap once written.
    WriteStatus(Arc<ElectionPolicyStatus>),
    /// Publish this Event on the policy.
    Publish(Notice),
    /// Put the leader label on this one of the selected Pods and take it off the others
    /// (`None`: off all of them).
    LabelLeaderPod(Option<String>),
    /// Wake the tracker at this instant (`None`: there is nothing to time).
    SetTimer(Option<Instant>),
    /// What the metrics show of the policy, all of it.
    SetMetrics(PolicySnapshot),
    /// A plain renewal: only the renewal times of the metrics move.
    Renewed { last_change: Option<Instant>, stale_deadline: Option<Instant>, interval: Option<Duration> },
    /// A leader change ended this long without a leader.
    Failover(Duration),
}

/// After a lock change, the lock the policy named before: Pods of the old template elect on
/// it until the rollout ends, so it is watched while its holder may still lead.
#[derive(Clone, Debug)]
struct PreviousLock {
    lock: LockKey,
    observation: LockObservation,
}

/// The holder of an observed lock while it renews (not stale, released or unwatchable).
fn live_holder(observation: &LockObservation) -> Option<String> {
    let live = observation.health() == &Health::Healthy && !observation.is_unobservable();
    (live && !observation.leader().is_empty()).then(|| observation.leader().to_string())
}

/// One policy's lock observation, holder check and status.
#[derive(Clone, Debug)]
pub struct PolicyTracker {
    regarding: Regarding,
    report: ConfigReport,
    watch: Option<WatchSettings>,
    observation: Option<LockObservation>,
    pod_selectors: Vec<Selector>,
    deployments: Vec<String>,
    holder: HolderCheck,
    /// The status last handed to the writer (or found on the object at start).
    written: Option<Arc<ElectionPolicyStatus>>,
    /// Leader changes observed since the operator started.
    observed_changes: u64,
    /// Leader changes, newest first, resumed from the status.
    history: Vec<LeaderChange>,
    /// Boxed, as is `concurrent`: both are rare, and inline they would make every tracker
    /// half as large again.
    previous: Option<Box<PreviousLock>>,
    /// The previous lock and the current one both had a live holder at the last look.
    concurrent: Option<Box<ConcurrentLeaders>>,
}

impl PolicyTracker {
    /// A tracker for a policy seen for the first time; [`Self::register`] follows.
    pub fn new(registration: &Registration) -> Self {
        PolicyTracker {
            regarding: registration.regarding.clone(),
            report: registration.report.clone(),
            watch: None,
            observation: None,
            pod_selectors: Vec::new(),
            deployments: Vec::new(),
            holder: HolderCheck::default(),
            written: registration.current_status.clone().map(Arc::new),
            observed_changes: 0,
            history: registration.current_status.as_ref().map(|s| s.history.clone()).unwrap_or_default(),
            previous: None,
            concurrent: None,
        }
    }

    pub fn regarding(&self) -> &Regarding {
        &self.regarding
    }

    /// The lock being observed.
    pub fn watched_lock(&self) -> Option<&LockKey> {
        self.observation.as_ref().and(self.report.lock.as_ref()).filter(|_| self.report.outcome.observes_lock())
    }

    /// Every lock whose events go to this policy: its own, and the previous one while kept.
    pub fn watched_locks(&self) -> impl Iterator<Item = &LockKey> {
        self.watched_lock().into_iter().chain(self.previous.as_ref().map(|p| &p.lock))
    }

    pub fn pod_selectors(&self) -> &[Selector] {
        &self.pod_selectors
    }

    /// The lock's health, once observed.
    pub fn health(&self) -> Option<&Health> {
        self.observation.as_ref().map(LockObservation::health)
    }

    /// The controller's latest word on the policy. A changed lock starts a new observation,
    /// resumed from the status only if that describes the same lock. A configuration
    /// problem is reported once, when the ConfigInjected condition changes (compared with
    /// the status, so an operator restart does not repeat it).
    pub fn register(&mut self, registration: Registration, view: &impl ClusterView, now: Moment) -> Vec<Action> {
        let previous_config = config_condition(self.written.as_deref());
        let previous_lock = self.watched_lock().cloned();
        let watched_lock = registration.watched_lock().cloned();
        let Registration { regarding, report, watch, pod_selectors, deployments, current_status } = registration;
        self.regarding = regarding;
        self.report = report;
        self.watch = watch;
        self.pod_selectors = pod_selectors;
        self.deployments = deployments;
        let mut actions = Vec::new();
        if previous_lock != watched_lock {
            self.keep_previous_lock(previous_lock, watched_lock.as_ref(), &mut actions);
            actions.extend(watched_lock.iter().cloned().map(Action::Watch));
            self.observation = watched_lock.as_ref().zip(watch).map(|(lock, watch)| {
                // Only a first registration brings the status found on the policy; later,
                // the status as last written says the same, sooner.
                let status = current_status
                    .as_ref()
                    .or(self.written.as_deref())
                    .filter(|s| s.lock.as_deref() == Some(&lock.to_string()));
                let resumed =
                    status.map_or_else(Resumed::default, |s| Resumed { leader: s.leader.clone(), state: s.state });
                LockObservation::new(watch.fallback_lease_duration, watch.detection, resumed)
            });
        }
        if let (Some(observation), Some(watch)) = (self.observation.as_mut(), watch) {
            observation.configure(watch.fallback_lease_duration, watch.detection);
        }

        if let Some(content) = watched_lock.as_ref().and_then(|lock| view.lock(lock)) {
            self.observe(content, now, view, &mut actions);
        }
        self.check_holder(view, now, &mut actions);
        let config = self.refresh(view, now, &mut actions);
        if config != previous_config
            && let (Some(reason), Some((_, message))) = (self.report.outcome.problem(), config)
        {
            actions.push(Action::Publish(config_notice(reason, message, now.wall)));
        }
        actions
    }

    /// The content of `lock` as the watch delivered it at `at` (a change, a deletion or a
    /// relist). A plain renewal, the hot path, only moves the timer and the metrics.
    pub fn lock_observed(
        &mut self,
        lock: &LockKey,
        content: LockContent,
        at: Moment,
        view: &impl ClusterView,
        now: Moment,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(previous) = self.previous.as_mut().filter(|p| &p.lock == lock) {
            // Only whether it still has a live holder matters: its own changes are not news.
            previous.observation.observe(at, content);
            self.refresh(view, now, &mut actions);
            return actions;
        }
        let before = self.observation.as_ref().map(LockObservation::status_view);
        let noteworthy = self.observe(content, at, view, &mut actions);
        if noteworthy || before.is_none() || self.observation.as_ref().map(LockObservation::status_view) != before {
            self.refresh(view, now, &mut actions);
        } else {
            self.renewed(&mut actions);
        }
        actions
    }

    /// The timer set by [`Action::SetTimer`] went off.
    pub fn deadline(&mut self, view: &impl ClusterView, now: Moment) -> Vec<Action> {
        if let Some(previous) = self.previous.as_mut() {
            previous.observation.check_deadline(now);
        }
        let Some(observation) = self.observation.as_mut() else { return Vec::new() };
        let occurrences = observation.check_deadline(now);
        let mut actions = Vec::new();
        self.report(occurrences, now, &mut actions);
        self.refresh(view, now, &mut actions);
        actions
    }

    /// A deadline's timer went off late, and the watched locks were read again (`None`: the
    /// read failed): a record that changed meanwhile vouches for its holder (see
    /// [`LockObservation::vouch`]); then the deadline is judged as usual.
    pub fn fresh_look(
        &mut self,
        reads: &[(LockKey, Option<LockContent>)],
        at: Moment,
        view: &impl ClusterView,
        now: Moment,
    ) -> Vec<Action> {
        let current = self.watched_lock().cloned();
        for (lock, content) in reads {
            let Some(content) = content else { continue };
            if Some(lock) == current.as_ref() {
                if let Some(observation) = self.observation.as_mut() {
                    observation.vouch(content, at);
                }
            } else if let Some(previous) = self.previous.as_mut().filter(|p| &p.lock == lock) {
                previous.observation.vouch(content, at);
            }
        }
        self.deadline(view, now)
    }

    /// Whether a change of the Pod `pod` can change what this policy reports: it is (or was)
    /// the holder's, or the policy keeps the leader label on its Pods.
    pub fn concerns_pod(&self, pod: &str) -> bool {
        if self.pod_selectors.is_empty() {
            return false;
        }
        let leader = self.observation.as_ref().map(LockObservation::leader).unwrap_or_default();
        self.watch.is_some_and(|w| w.leader_pod_label) || (!leader.is_empty() && holder_is_pod(leader, pod))
    }

    /// The watch of the lock broke: until it lists again, silence proves nothing.
    pub fn blind(&mut self, view: &impl ClusterView, now: Moment) -> Vec<Action> {
        let previous = self.previous.as_mut().map(|p| &mut p.observation);
        for observation in self.observation.as_mut().into_iter().chain(previous) {
            observation.set_blind();
        }
        let mut actions = Vec::new();
        self.refresh(view, now, &mut actions);
        actions
    }

    /// A Pod in the policy's namespace appeared, changed or went (or the Pods were listed).
    pub fn pods_changed(&mut self, view: &impl ClusterView, now: Moment) -> Vec<Action> {
        let mut actions = Vec::new();
        self.check_holder(view, now, &mut actions);
        self.refresh(view, now, &mut actions);
        actions
    }

    /// Applies what was observed and reports it; true when that was more than a renewal
    /// (an Event, or a holder to check).
    fn observe(
        &mut self,
        content: LockContent,
        at: Moment,
        view: &impl ClusterView,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some(observation) = self.observation.as_mut() else { return false };
        let occurrences = observation.observe(at, content);
        let new_holder = occurrences
            .iter()
            .any(|o| matches!(o, Occurrence::LeaderElected { .. } | Occurrence::LeaderChanged { .. }));
        let noteworthy = !occurrences.is_empty();
        self.report(occurrences, at, actions);
        if new_holder {
            self.check_holder(view, at, actions);
        }
        noteworthy
    }

    /// The Events for what was observed; counts leader changes and keeps their history.
    fn report(&mut self, occurrences: Vec<Occurrence>, now: Moment, actions: &mut Vec<Action>) {
        for occurrence in &occurrences {
            let (holder, leaderless) = match occurrence {
                Occurrence::LeaderChanged { to, leaderless, .. } => {
                    self.observed_changes += 1;
                    (to, leaderless)
                }
                Occurrence::LeaderElected { holder, leaderless, .. } => (holder, leaderless),
                _ => continue,
            };
            let seconds = leaderless.map(|d| d.as_millis() as f64 / 1000.0);
            // Grown one entry at a time: a Vec doubling from 4 to 8 to 16 would keep room
            // for up to 16 entries of which 10 are ever used, and most policies have one.
            self.history.truncate(HISTORY_LENGTH - 1);
            self.history.reserve_exact(1);
            self.history.insert(
                0,
                LeaderChange { holder: holder.clone(), since: stored_time(now.wall), leaderless_seconds: seconds },
            );
            actions.extend(leaderless.map(Action::Failover));
        }
        let renew_time = self
            .observation
            .as_ref()
            .and_then(|o| o.record())
            .and_then(|r| r.renew_time.as_deref())
            .unwrap_or_default();
        let lock = self.lock_text();
        actions.extend(occurrences.iter().map(|o| Action::Publish(occurrence_notice(o, &lock, renew_time, now.wall))));
    }

    /// Whether the holder is one of the selected Deployments' Pods; reports it when it stops
    /// being one, and moves the leader label along when the policy asks for it.
    fn check_holder(&mut self, view: &impl ClusterView, now: Moment, actions: &mut Vec<Action>) {
        let leader = self.observation.as_ref().map(|o| o.leader().to_string()).unwrap_or_default();
        if self.pod_selectors.is_empty() {
            self.holder.not_found_among = None;
            return;
        }
        let holder_pod = if leader.is_empty() {
            None
        } else {
            match view.holder_pod(&self.regarding.namespace, &leader, &self.pod_selectors) {
                Some(found) => Some(found),
                // The Pods are not listed yet: nothing can be said of the holder. The
                // listing's completion brings every policy back here.
                None => return,
            }
        };
        let not_found = holder_pod == Some(HolderPod::NotFound);
        let was_not_found = self.holder.not_found_among.is_some();
        self.holder.not_found_among = not_found.then(|| self.deployments.clone());
        if self.watch.is_some_and(|w| w.leader_pod_label) && view.pods_listed(&self.regarding.namespace) {
            let leader_pod = match holder_pod {
                Some(HolderPod::Found(pod)) => Some(pod),
                _ => None,
            };
            actions.push(Action::LabelLeaderPod(leader_pod));
        }
        if not_found && !was_not_found {
            let message = holder_not_found_message(&leader, &self.lock_text(), &self.deployments);
            actions.push(Action::Publish(holder_not_found_notice(message, now.wall)));
        }
    }

    /// Re-renders the status, writes it if users would see a difference, re-arms the timer
    /// and updates the metrics. Returns the ConfigInjected condition (reason, message) now
    /// in force.
    fn refresh(&mut self, view: &impl ClusterView, now: Moment, actions: &mut Vec<Action>) -> Option<(String, String)> {
        // What a status says of the holder's Pod needs the Pods listed, too.
        let waiting_for_first_look =
            self.observation.as_ref().and(self.report.lock.as_ref()).is_some_and(|lock| !view.lock_listed(lock))
                || (!self.pod_selectors.is_empty() && !view.pods_listed(&self.regarding.namespace));
        self.retire_previous_lock(view, actions);
        let concurrent = self.concurrent_leaders();
        if let Some(news) = concurrent.as_ref().filter(|c| self.concurrent.as_deref() != Some(*c)) {
            actions.push(Action::Publish(concurrent_leaders_notice(news, now.wall)));
        }
        self.concurrent = concurrent.map(Box::new);
        let seen = Seen {
            observation: self.observation.as_ref(),
            holder: &self.holder,
            concurrent: self.concurrent.as_deref(),
            history: &self.history,
        };
        let status = render(&self.report, &seen, self.written.as_deref(), now.wall);
        let config = config_condition(Some(&status));
        let (leader, lock, state) =
            (Arc::from(status.leader.as_str()), Arc::from(status.lock.as_deref().unwrap_or_default()), status.state);

        // Until the lock has been looked at, a status would only say "unknown" over what the
        // previous operator instance wrote; keep that instead.
        if !waiting_for_first_look && self.written.as_deref().is_none_or(|w| differs_for_users(w, &status)) {
            let status = Arc::new(status);
            actions.push(Action::WriteStatus(Arc::clone(&status)));
            self.written = Some(status);
        }
        let observation = self.observation.as_ref();
        let previous_expires = self.previous.as_ref().and_then(|p| p.observation.stale_deadline());
        let wake = observation.and_then(LockObservation::deadline).into_iter().chain(previous_expires).min();
        actions.push(Action::SetTimer(wake));
        actions.push(Action::SetMetrics(PolicySnapshot {
            leader,
            lock,
            state,
            last_change: observation.and_then(LockObservation::last_change).map(|m| m.monotonic),
            deadline: observation.and_then(LockObservation::stale_deadline),
            recorded_transitions: observation.and_then(LockObservation::record).map(|r| r.leader_transitions),
            observed_changes: self.observed_changes,
            renewal_interval: observation.and_then(|o| o.stats().last_interval),
            holder_not_found: self.holder.not_found_among.is_some(),
            flapping: observation.is_some_and(LockObservation::is_flapping),
            renewals_slow: observation.is_some_and(LockObservation::is_slow),
            unobservable: observation.is_some_and(LockObservation::is_unobservable),
            concurrent_leaders: self.concurrent.is_some(),
        }));
        config
    }

    /// On a lock change: keeps watching the old lock when its holder still leads and the
    /// change rolls the Deployments (the policy injects), for Pods of the old template keep
    /// electing on it until the rollout ends. Otherwise the old lock is let go.
    fn keep_previous_lock(&mut self, old: Option<LockKey>, new: Option<&LockKey>, actions: &mut Vec<Action>) {
        let rolls = match &self.report.outcome {
            ConfigOutcome::Injected(d) | ConfigOutcome::Failed { injected: d, .. } => !d.is_empty(),
            _ => false,
        };
        let kept = old
            .clone()
            .zip(self.observation.take())
            .filter(|(_, observation)| rolls && new.is_some() && live_holder(observation).is_some())
            .map(|(lock, observation)| Box::new(PreviousLock { lock, observation }));
        // No longer watched: the old lock unless kept, and a previous one kept from an
        // earlier change, unless the policy has just gone back to it.
        let let_go = [old.filter(|_| kept.is_none()), std::mem::replace(&mut self.previous, kept).map(|p| p.lock)];
        for lock in let_go.into_iter().flatten() {
            if Some(&lock) != new && self.previous.as_ref().is_none_or(|p| p.lock != lock) {
                actions.push(Action::Unwatch(lock));
            }
        }
    }

    /// Lets the previous lock go once no Pod of the old template can lead on it: released,
    /// stale, gone, or held by a Pod that no longer exists.
    fn retire_previous_lock(&mut self, view: &impl ClusterView, actions: &mut Vec<Action>) {
        let Some(previous) = &self.previous else { return };
        let still_held = live_holder(&previous.observation).is_some_and(|holder| {
            self.pod_selectors.is_empty()
                || view.holder_pod(&self.regarding.namespace, &holder, &self.pod_selectors) != Some(HolderPod::NotFound)
        });
        if !still_held {
            actions.push(Action::Unwatch(previous.lock.clone()));
            self.previous = None;
        }
    }

    /// Both locks' holders, while each has one that renews.
    fn concurrent_leaders(&self) -> Option<ConcurrentLeaders> {
        let previous = self.previous.as_ref()?;
        Some(ConcurrentLeaders {
            previous_holder: live_holder(&previous.observation)?,
            previous_lock: previous.lock.to_string(),
            holder: live_holder(self.observation.as_ref()?)?,
            lock: self.lock_text(),
        })
    }

    /// A plain renewal: the status users see is unchanged.
    fn renewed(&self, actions: &mut Vec<Action>) {
        let Some(observation) = self.observation.as_ref() else { return };
        actions.push(Action::SetTimer(observation.deadline()));
        actions.push(Action::Renewed {
            last_change: observation.last_change().map(|m| m.monotonic),
            stale_deadline: observation.stale_deadline(),
            interval: observation.stats().last_interval,
        });
    }

    fn lock_text(&self) -> String {
        self.report.lock.as_ref().map(ToString::to_string).unwrap_or_default()
    }
}

/// The ConfigInjected condition of a status, as (reason, message).
fn config_condition(status: Option<&ElectionPolicyStatus>) -> Option<(String, String)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::CONFIG_INJECTED)
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// What the metrics show of one policy, kept current by the observer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicySnapshot {
    /// Shared, as the scrape's labels take them, so a scrape allocates no label strings.
    pub leader: Arc<str>,
    pub lock: Arc<str>,
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
    /// After a lock change, the previous lock and the current one both have a live holder.
    pub concurrent_leaders: bool,
    /// More leader changes than allowed within the policy's window.
    pub flapping: bool,
    /// No renewal for the slow-renewal threshold.
    pub renewals_slow: bool,
    /// The lease would have expired while the lock could not be watched: unknown, not stale.
    pub unobservable: bool,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::core::SelectorExt;

    use super::*;
    use crate::{
        api::{LockType, PolicyState},
        domain::{holder::holder_is_pod, lock_record::LeaderElectionRecord, notices::Severity, status::ConfigOutcome},
    };

    /// The caches as a test wants them.
    #[derive(Default)]
    struct View {
        /// `None`: the lock watch has not listed.
        locks: Option<HashMap<LockKey, LockContent>>,
        /// `None`: the Pods are not listed; else (name, labels) in namespace "ns".
        pods: Option<Vec<(String, BTreeMap<String, String>)>>,
    }

    impl ClusterView for View {
        fn lock(&self, lock: &LockKey) -> Option<LockContent> {
            Some(self.locks.as_ref()?.get(lock).cloned().unwrap_or(LockContent::Absent))
        }
        fn lock_listed(&self, _: &LockKey) -> bool {
            self.locks.is_some()
        }
        fn pods_listed(&self, namespace: &str) -> bool {
            assert_eq!(namespace, "ns");
            self.pods.is_some()
        }
        fn holder_pod(&self, namespace: &str, holder: &str, selectors: &[Selector]) -> Option<HolderPod> {
            assert_eq!(namespace, "ns");
            let found = self
                .pods
                .as_ref()?
                .iter()
                .find(|(name, labels)| holder_is_pod(holder, name) && selectors.iter().any(|s| s.matches(labels)));
            Some(found.map_or(HolderPod::NotFound, |(name, _)| HolderPod::Found(name.clone())))
        }
    }

    fn lock() -> LockKey {
        LockKey { type_: LockType::Lease, namespace: "ns".into(), name: "web".into() }
    }

    fn record(holder: &str, renew_second: i64) -> LockContent {
        LockContent::Record(LeaderElectionRecord {
            holder_identity: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some("2026-12-01T10:00:00Z".into()),
            renew_time: Some(Timestamp::from_second(renew_second).unwrap().to_string()),
            leader_transitions: 1,
        })
    }

    fn web_pods(names: &[&str]) -> Option<Vec<(String, BTreeMap<String, String>)>> {
        Some(names.iter().map(|n| (n.to_string(), BTreeMap::from([("app".into(), "web".into())]))).collect())
    }

    fn listed(content: LockContent, pods: &[&str]) -> View {
        View { locks: Some(HashMap::from([(lock(), content)])), pods: web_pods(pods) }
    }

    fn registration(outcome: ConfigOutcome, leader_pod_label: bool) -> Registration {
        let valid = !matches!(outcome, ConfigOutcome::Invalid(_));
        Registration {
            regarding: Regarding { namespace: "ns".into(), name: "web".into(), uid: "u1".into() },
            report: ConfigReport { generation: Some(1), outcome, lock: valid.then(lock), selector: "app=web".into() },
            watch: valid.then_some(WatchSettings {
                fallback_lease_duration: Duration::from_secs(15),
                detection: Detection::default(),
                leader_pod_label,
            }),
            pod_selectors: vec![Selector::from_iter([("app", "web")])],
            deployments: vec!["web".into()],
            current_status: None,
        }
    }

    fn injected() -> Registration {
        registration(ConfigOutcome::Injected(vec!["web".into()]), false)
    }

    fn at_second(second: u64) -> Moment {
        T0.with(|t0| t0.after(Duration::from_secs(second)))
    }

    thread_local! {
        static T0: Moment = Moment { monotonic: Instant::now(), wall: Timestamp::from_second(1_800_000_000).unwrap() };
    }

    fn publishes(actions: &[Action]) -> Vec<Notice> {
        actions.iter().filter_map(|a| if let Action::Publish(n) = a { Some(n.clone()) } else { None }).collect()
    }

    fn written(actions: &[Action]) -> Vec<ElectionPolicyStatus> {
        actions
            .iter()
            .filter_map(|a| if let Action::WriteStatus(s) = a { Some(ElectionPolicyStatus::clone(s)) } else { None })
            .collect()
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::WriteStatus(_) => "WriteStatus",
                Action::Publish(_) => "Publish",
                Action::LabelLeaderPod(_) => "LabelLeaderPod",
                Action::SetTimer(_) => "SetTimer",
                Action::SetMetrics(_) => "SetMetrics",
                Action::Renewed { .. } => "Renewed",
                Action::Watch(_) => "Watch",
                Action::Unwatch(_) => "Unwatch",
                Action::Failover(_) => "Failover",
            })
            .collect()
    }

    /// A tracker registered and shown its first record by `web-1` at `at_second(0)`.
    fn electing(registration: Registration, view: &View) -> (PolicyTracker, Vec<Action>) {
        let mut tracker = PolicyTracker::new(&registration);
        let actions = tracker.register(registration, view, at_second(0));
        (tracker, actions)
    }

    #[test]
    fn before_the_lock_is_listed_nothing_is_written_over_the_previous_status() {
        let view = View::default();
        let (_, actions) = electing(injected(), &view);
        assert_eq!(kinds(&actions), ["Watch", "SetTimer", "SetMetrics"]);
        assert_eq!(actions[0], Action::Watch(lock()));
        assert_eq!(actions[1], Action::SetTimer(None));
        let Action::SetMetrics(snapshot) = &actions[2] else { unreachable!() };
        assert_eq!(
            *snapshot,
            PolicySnapshot { lock: "leases/ns/web".into(), state: Some(PolicyState::Pending), ..Default::default() }
        );
    }

    #[test]
    fn the_first_holder_is_announced_written_and_timed() {
        let view = listed(record("web-1", 100), &["web-1", "web-2"]);
        let (_, actions) = electing(injected(), &view);
        assert_eq!(kinds(&actions), ["Watch", "Publish", "WriteStatus", "SetTimer", "SetMetrics"]);
        assert_eq!(
            publishes(&actions),
            [Notice {
                severity: Severity::Normal,
                reason: "LeaderElected",
                action: "Observe",
                note: "web-1 acquired leases/ns/web".into(),
                occurrence_id: Some("elected\nweb-1\n2026-12-01T10:00:00Z".into()),
                observed_at: at_second(0).wall,
            }]
        );
        let status = &written(&actions)[0];
        assert_eq!((status.leader.as_str(), status.state), ("web-1", Some(PolicyState::Healthy)));
        assert_eq!(
            status.history,
            [LeaderChange { holder: "web-1".into(), since: Time(at_second(0).wall), leaderless_seconds: None }]
        );
        // The next thing to decide is slow renewals, 5 s after the renewal was seen.
        assert_eq!(actions[3], Action::SetTimer(Some(at_second(5).monotonic)));
    }

    #[test]
    fn a_plain_renewal_moves_only_the_timer_and_the_metrics() {
        let view = listed(record("web-1", 100), &["web-1"]);
        let (mut tracker, _) = electing(injected(), &view);
        let actions = tracker.lock_observed(&lock(), record("web-1", 102), at_second(2), &view, at_second(2));
        assert_eq!(
            actions,
            [
                Action::SetTimer(Some(at_second(7).monotonic)),
                Action::Renewed {
                    last_change: Some(at_second(2).monotonic),
                    stale_deadline: Some(at_second(17).monotonic),
                    interval: Some(Duration::from_secs(2)),
                },
            ]
        );
    }

    #[test]
    fn a_silent_holder_goes_slow_then_stale_with_one_event_each() {
        let view = listed(record("web-1", 100), &["web-1"]);
        let (mut tracker, _) = electing(injected(), &view);
        let slow = tracker.deadline(&view, at_second(5));
        assert_eq!(
            publishes(&slow).iter().map(|n| (n.reason, n.note.as_str())).collect::<Vec<_>>(),
            [("RenewalsSlow", "web-1 has not renewed leases/ns/web for 5s; it goes stale at leaseDuration 15s")]
        );
        assert_eq!(written(&slow)[0].state, Some(PolicyState::Healthy));
        let stale = tracker.deadline(&view, at_second(15));
        let notices = publishes(&stale);
        assert_eq!(notices.iter().map(|n| n.reason).collect::<Vec<_>>(), ["LeaseStale"]);
        assert_eq!(notices[0].occurrence_id.as_deref(), Some("stale\nweb-1\n1970-01-01T00:01:40Z"));
        assert_eq!(written(&stale)[0].state, Some(PolicyState::Stale));
        assert!(stale.contains(&Action::SetTimer(None)), "nothing to time once stale: {stale:?}");
    }

    #[test]
    fn a_holder_outside_the_selected_pods_is_reported_once() {
        let view = listed(record("intruder", 100), &["web-1"]);
        let (mut tracker, actions) = electing(injected(), &view);
        let not_found: Vec<Notice> = publishes(&actions).into_iter().filter(|n| n.reason == "HolderNotFound").collect();
        assert_eq!(
            not_found,
            [Notice {
                severity: Severity::Warning,
                reason: "HolderNotFound",
                action: "Observe",
                note: "intruder holds leases/ns/web but is not a Pod of the selected Deployments (web): a deleted Pod \
                       still holding it, or a process outside them"
                    .into(),
                occurrence_id: None,
                observed_at: at_second(0).wall,
            }]
        );
        let condition = written(&actions)[0].conditions.iter().find(|c| c.type_ == "LeaderHealthy").cloned().unwrap();
        assert_eq!(
            (condition.reason.as_str(), condition.message.as_str()),
            ("HolderNotFound", not_found[0].note.as_str())
        );
        let again = tracker.pods_changed(&view, at_second(1));
        assert_eq!(publishes(&again), []);
        assert_eq!(kinds(&again), ["SetTimer", "SetMetrics"]);
    }

    #[test]
    fn the_leader_label_follows_the_holder_once_the_pods_are_listed() {
        let unlisted = View { pods: None, ..listed(record("web-1", 100), &[]) };
        let (mut tracker, actions) =
            electing(registration(ConfigOutcome::Injected(vec!["web".into()]), true), &unlisted);
        assert!(!kinds(&actions).contains(&"LabelLeaderPod"), "{actions:?}");
        let view = listed(record("web-1", 100), &["web-1", "web-2"]);
        let actions = tracker.pods_changed(&view, at_second(1));
        assert_eq!(actions[0], Action::LabelLeaderPod(Some("web-1".into())));
        let changed = tracker.lock_observed(&lock(), record("web-2", 103), at_second(3), &view, at_second(3));
        assert!(changed.contains(&Action::LabelLeaderPod(Some("web-2".into()))), "{changed:?}");
        assert_eq!(
            publishes(&changed).iter().map(|n| n.note.as_str()).collect::<Vec<_>>(),
            ["web-1 -> web-2 after 3.0s without a leader (leases/ns/web)"]
        );
    }

    #[test]
    fn a_configuration_problem_is_reported_once_and_not_again_after_a_restart() {
        let invalid = || registration(ConfigOutcome::Invalid("leaseDuration must be greater than 0".into()), false);
        let view = listed(LockContent::Absent, &["web-1"]);
        let (mut tracker, actions) = electing(invalid(), &view);
        assert_eq!(
            publishes(&actions),
            [Notice {
                severity: Severity::Warning,
                reason: "InvalidPolicy",
                action: "Reconcile",
                note: "leaseDuration must be greater than 0".into(),
                occurrence_id: None,
                observed_at: at_second(0).wall,
            }]
        );
        let status = written(&actions).remove(0);
        assert_eq!((status.state, status.lock.as_deref()), (Some(PolicyState::Invalid), None));
        assert_eq!(tracker.watched_lock(), None);
        assert_eq!(publishes(&tracker.register(invalid(), &view, at_second(1))), []);

        let restarted = Registration { current_status: Some(status), ..invalid() };
        let (_, actions) = electing(restarted, &view);
        assert_eq!(publishes(&actions), [], "the status already says it");
    }

    #[test]
    fn a_matching_selector_without_deployments_is_target_not_found() {
        let view = listed(LockContent::Absent, &[]);
        let (_, actions) = electing(registration(ConfigOutcome::Injected(vec![]), false), &view);
        let notices = publishes(&actions);
        assert_eq!(
            notices.iter().map(|n| (n.reason, n.note.as_str())).collect::<Vec<_>>(),
            [("TargetNotFound", "selector app=web matches no Deployment in the policy's namespace")]
        );
    }

    #[test]
    fn a_restarted_operator_resumes_the_same_lock_without_announcing_its_leader_again() {
        let view = listed(record("web-1", 100), &["web-1"]);
        let (_, actions) = electing(injected(), &view);
        let status = written(&actions).remove(0);
        let (_, resumed) = electing(Registration { current_status: Some(status.clone()), ..injected() }, &view);
        assert_eq!(publishes(&resumed), []);
        assert_eq!(written(&resumed), [], "nothing users see has changed");

        // A status about another lock is not resumed from.
        let other = ElectionPolicyStatus { lock: Some("leases/ns/other".into()), ..status };
        let (_, fresh) = electing(Registration { current_status: Some(other), ..injected() }, &view);
        assert_eq!(publishes(&fresh).iter().map(|n| n.reason).collect::<Vec<_>>(), ["LeaderElected"]);
    }

    #[test]
    fn a_restart_writes_nothing_when_the_stored_status_is_current() {
        // client-go writes acquireTime in microseconds; the API server keeps a status's times
        // in whole seconds. What comes back after a restart must compare equal.
        let precise = LockContent::Record(LeaderElectionRecord {
            holder_identity: "web-1".into(),
            lease_duration_seconds: 15,
            acquire_time: Some("2026-12-01T10:00:00.123456Z".into()),
            renew_time: Some("2026-12-01T10:00:05.654321Z".into()),
            leader_transitions: 1,
        });
        let view = listed(precise, &["web-1"]);
        let later = Moment { wall: at_second(7).wall.checked_add(Duration::from_millis(250)).unwrap(), ..at_second(7) };
        let mut tracker = PolicyTracker::new(&injected());
        let actions = tracker.register(injected(), &view, later);
        let status = written(&actions).remove(0);
        let stored: ElectionPolicyStatus = serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();

        let registration = Registration { current_status: Some(stored), ..injected() };
        let resumed = PolicyTracker::new(&registration).register(registration, &view, at_second(9));
        assert_eq!(written(&resumed), [], "nothing users see has changed");
    }

    #[test]
    fn a_changed_lock_is_observed_afresh() {
        let view = listed(record("web-1", 100), &["web-1"]);
        let (mut tracker, _) = electing(injected(), &view);
        let mut moved = injected();
        let new_lock = LockKey { name: "web-v2".into(), ..lock() };
        moved.report.lock = Some(new_lock.clone());
        let actions = tracker.register(moved, &view, at_second(1));
        assert_eq!(tracker.watched_lock(), Some(&new_lock));
        let status = written(&actions).remove(0);
        assert_eq!((status.leader.as_str(), status.state), ("", Some(PolicyState::Pending)));
        assert_eq!(status.lock.as_deref(), Some("leases/ns/web-v2"));
    }

    #[test]
    fn a_deadline_while_blind_is_unknown_not_stale() {
        let view = listed(record("web-1", 100), &["web-1"]);
        let (mut tracker, _) = electing(injected(), &view);
        tracker.blind(&view, at_second(1));
        let actions = tracker.deadline(&view, at_second(15));
        assert_eq!(publishes(&actions), []);
        let status = written(&actions).remove(0);
        let condition = status.conditions.iter().find(|c| c.type_ == "LeaderHealthy").unwrap();
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("Unknown", "LockUnobservable"));
    }

    #[test]
    fn a_failover_is_timed_kept_in_history_and_measured() {
        let view = listed(record("web-1", 100), &["web-1", "web-2"]);
        let (mut tracker, _) = electing(injected(), &view);
        tracker.lock_observed(&lock(), record("web-1", 102), at_second(2), &view, at_second(2));
        // web-1 is killed; web-2 takes the lock once the lease has run out on its clock.
        tracker.deadline(&view, at_second(17));
        let actions = tracker.lock_observed(&lock(), record("web-2", 119), at_second(19), &view, at_second(19));
        assert!(actions.contains(&Action::Failover(Duration::from_secs(17))), "{actions:?}");
        let notices = publishes(&actions);
        assert_eq!(notices[0].note, "web-1 -> web-2 after 17.0s without a leader (leases/ns/web)");
        let status = written(&actions).remove(0);
        assert_eq!(
            status.history,
            [
                LeaderChange {
                    holder: "web-2".into(),
                    since: Time(at_second(19).wall),
                    leaderless_seconds: Some(17.0)
                },
                LeaderChange { holder: "web-1".into(), since: Time(at_second(0).wall), leaderless_seconds: None },
            ]
        );
        // A plain renewal writes nothing, history included.
        let renewal = tracker.lock_observed(&lock(), record("web-2", 121), at_second(21), &view, at_second(21));
        assert_eq!(kinds(&renewal), ["SetTimer", "Renewed"]);
    }

    #[test]
    fn history_survives_a_restart_and_keeps_the_last_ten() {
        let pods: Vec<String> = (0..12).map(|i| format!("web-{i}")).collect();
        let names: Vec<&str> = pods.iter().map(String::as_str).collect();
        let view = listed(record("web-0", 100), &names);
        let (mut tracker, mut actions) = electing(injected(), &view);
        for i in 1..12u64 {
            let holder = format!("web-{i}");
            actions =
                tracker.lock_observed(&lock(), record(&holder, 100 + i as i64), at_second(i), &view, at_second(i));
        }
        let status = written(&actions).remove(0);
        let holders: Vec<&str> = status.history.iter().map(|c| c.holder.as_str()).collect();
        assert_eq!(
            holders,
            ["web-11", "web-10", "web-9", "web-8", "web-7", "web-6", "web-5", "web-4", "web-3", "web-2"]
        );

        let restarted = listed(record("web-11", 112), &names);
        let (_, resumed) = electing(Registration { current_status: Some(status.clone()), ..injected() }, &restarted);
        // (Eleven changes in a minute made the policy flap; the restart forgets that, so a
        // status is written, with the same history.)
        assert!(written(&resumed).iter().all(|s| s.history == status.history), "{resumed:?}");
        let changed = listed(record("web-0", 113), &names);
        let (_, after) = electing(Registration { current_status: Some(status.clone()), ..injected() }, &changed);
        let history = &written(&after)[0].history;
        assert_eq!(history.len(), 10);
        assert_eq!(
            history[0],
            LeaderChange { holder: "web-0".into(), since: Time(at_second(0).wall), leaderless_seconds: None },
            "a change while the operator was away has no known gap"
        );
        assert_eq!(history[1..], status.history[..9]);
    }

    #[test]
    fn a_lock_change_with_the_old_leader_renewing_is_two_leaders_until_the_old_lock_runs_out() {
        let new_lock = LockKey { name: "web-v2".into(), ..lock() };
        let mut view = listed(record("web-1", 100), &["web-1", "web-2"]);
        let (mut tracker, _) = electing(injected(), &view);
        let mut moved = injected();
        moved.report.lock = Some(new_lock.clone());
        let actions = tracker.register(moved, &view, at_second(1));
        assert_eq!(actions[0], Action::Watch(new_lock.clone()), "the old lock stays watched: {actions:?}");
        assert!(!actions.iter().any(|a| matches!(a, Action::Unwatch(_))), "{actions:?}");
        assert_eq!(tracker.watched_locks().cloned().collect::<Vec<_>>(), [new_lock.clone(), lock()]);

        // A new Pod takes the new lock while web-1 still renews the old one.
        view.locks.as_mut().unwrap().insert(new_lock.clone(), record("web-2", 102));
        let actions = tracker.lock_observed(&new_lock, record("web-2", 102), at_second(2), &view, at_second(2));
        let concurrent: Vec<Notice> =
            publishes(&actions).into_iter().filter(|n| n.reason == "ConcurrentLeaders").collect();
        assert_eq!(
            concurrent,
            [Notice {
                severity: Severity::Warning,
                reason: "ConcurrentLeaders",
                action: "Observe",
                note:
                    "web-1 still holds the previous lock leases/ns/web while web-2 holds leases/ns/web-v2: Pods of the \
                       old template elect on the old lock until the rollout ends, so two replicas lead at once"
                        .into(),
                occurrence_id: Some("concurrent\nweb-1\nleases/ns/web\nweb-2\nleases/ns/web-v2".into()),
                observed_at: at_second(2).wall,
            }]
        );
        let status = written(&actions).remove(0);
        let healthy = status.conditions.iter().find(|c| c.type_ == "LeaderHealthy").unwrap();
        assert_eq!((healthy.status.as_str(), healthy.reason.as_str()), ("False", "ConcurrentLeaders"));
        assert_eq!(healthy.message, concurrent[0].note);
        assert!(actions.iter().any(|a| matches!(a, Action::SetMetrics(s) if s.concurrent_leaders)), "{actions:?}");

        // The old leader renews: still two leaders, and no second Event.
        let renewed = tracker.lock_observed(&lock(), record("web-1", 103), at_second(3), &view, at_second(3));
        assert_eq!(publishes(&renewed), []);
        assert_eq!(
            renewed.iter().find(|a| matches!(a, Action::SetTimer(_))),
            Some(&Action::SetTimer(Some(at_second(7).monotonic)))
        );

        // It stops; once its lease runs out, the old lock is let go and the policy is healthy.
        let expired = tracker.deadline(&view, at_second(18));
        assert!(expired.contains(&Action::Unwatch(lock())), "{expired:?}");
        assert_eq!(tracker.watched_locks().cloned().collect::<Vec<_>>(), [new_lock]);
        let status = written(&expired).remove(0);
        let healthy = status.conditions.iter().find(|c| c.type_ == "LeaderHealthy").unwrap();
        assert_ne!(healthy.reason, "ConcurrentLeaders");
        assert!(expired.iter().any(|a| matches!(a, Action::SetMetrics(s) if !s.concurrent_leaders)), "{expired:?}");
    }

    #[test]
    fn a_lock_change_without_a_live_old_leader_or_injection_lets_the_old_lock_go() {
        let new_lock = LockKey { name: "web-v2".into(), ..lock() };
        let moved = |outcome| {
            let mut r = registration(outcome, false);
            r.report.lock = Some(new_lock.clone());
            r
        };
        // Released: nobody leads on the old lock.
        let view = listed(record("", 100), &["web-1"]);
        let (mut tracker, _) = electing(injected(), &view);
        let actions = tracker.register(moved(ConfigOutcome::Injected(vec!["web".into()])), &view, at_second(1));
        assert_eq!(actions[..2], [Action::Unwatch(lock()), Action::Watch(new_lock.clone())]);
        // Observe-only: nothing rolls, the app elects wherever it is configured to.
        let view = listed(record("web-1", 100), &["web-1"]);
        let (mut tracker, _) = electing(registration(ConfigOutcome::Observing(vec!["web".into()]), false), &view);
        let actions = tracker.register(moved(ConfigOutcome::Observing(vec!["web".into()])), &view, at_second(1));
        assert_eq!(actions[..2], [Action::Unwatch(lock()), Action::Watch(new_lock.clone())]);
        // The old leader's Pod is gone: it cannot lead any more.
        let (mut tracker, _) = electing(injected(), &view);
        let actions = tracker.register(moved(ConfigOutcome::Injected(vec!["web".into()])), &view, at_second(1));
        assert_eq!(actions[0], Action::Watch(new_lock.clone()));
        let gone = listed(record("web-1", 100), &["web-2"]);
        let actions = tracker.pods_changed(&gone, at_second(2));
        assert_eq!(actions[0], Action::Unwatch(lock()));
    }
}
