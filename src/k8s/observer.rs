//! The observer: one task that owns every policy's lock observation and status.
//!
//! It is fed by the policy controller (what each policy's configuration came to), by the
//! lock watches (what each lock says, and whether the watch can be trusted) and by the Pod
//! watch, and it alone decides when to write a status and which Events to publish. Keeping
//! all of that in one task means no locks, a single writer per status, and a deadline timer
//! per lock instead of periodic polling: staleness fires at the deadline, to the millisecond.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use futures::future::poll_fn;
use kube::{Client, core::Selector};
use tokio::sync::mpsc;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::{debug, info};

use crate::{
    api::{ElectionPolicyStatus, LockType},
    domain::{
        lock_record::{LockContent, LockKey},
        observation::{Health, LockObservation, Moment, Occurrence, Resumed},
        policy_key::PolicyKey,
        reasons::{condition, condition_reason, event},
        status::{ConfigReport, HolderCheck, differs_for_users, render},
        tracking::PolicySnapshot,
        validation::Detection,
    },
    k8s::{
        events::{EventPublisher, Notice, Regarding, Severity},
        locks::LockLabeler,
        pods::{HolderPod, PodIndex},
        status_writer::StatusWriter,
    },
    metrics::Metrics,
};

/// How often a registered lock that the watch has not seen is looked for (and labelled so
/// the watch sees it from then on). A lock is absent only between a policy's creation and
/// its app's first start, and each probe is one small PATCH answered 404, so probing often
/// is cheap; it bounds how late the first leader of a new lock is reported.
const ABSENT_LOCK_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// What the policy controller tells the observer after each reconcile.
#[derive(Clone, Debug)]
pub struct Registration {
    pub regarding: Regarding,
    pub report: ConfigReport,
    /// The policy's leaseDuration, used when a record does not carry its own.
    pub fallback_lease_duration: Duration,
    pub detection: Detection,
    /// Selectors of the selected Deployments' Pods: the holder should be one of them.
    pub pod_selectors: Vec<Selector>,
    /// Names of the selected Deployments, for messages.
    pub deployments: Vec<String>,
    /// Keep the leader label on the holder's Pod.
    pub leader_pod_label: bool,
    /// The status as found on the object, so a restarted operator resumes where it was.
    pub current_status: Option<ElectionPolicyStatus>,
}

/// What the lock watches tell the observer.
#[derive(Clone, Debug)]
pub enum LockEvent {
    /// A lock object as the watch delivered it, and when it did: an observation dates from
    /// its delivery, not from when the observer got to it.
    Applied(LockKey, LockContent, Moment),
    Deleted(LockKey, Moment),
    /// The watch for this kind broke; it will list again.
    Blind(LockType),
    /// A complete list of the labelled locks of this kind.
    Listed(LockType, Vec<(LockKey, LockContent)>, Moment),
}

#[derive(Debug)]
enum Command {
    Register(Box<Registration>),
    Unregister(PolicyKey),
    /// Forget every policy not in this list that registered before the list was begun:
    /// one registered since may have been created after the list was taken.
    Retain(Vec<PolicyKey>, Instant),
    Lock(LockEvent),
    /// A Pod in this namespace appeared, changed or went; `None`: the Pods were (re)listed,
    /// any namespace may have changed.
    PodsChanged(Option<String>),
}

/// Cheap to clone; sends to the observer task.
#[derive(Clone)]
pub struct ObserverHandle {
    commands: mpsc::Sender<Command>,
}

impl ObserverHandle {
    pub async fn register(&self, registration: Registration) {
        let _ = self.commands.send(Command::Register(Box::new(registration))).await;
    }

    pub async fn unregister(&self, policy: PolicyKey) {
        let _ = self.commands.send(Command::Unregister(policy)).await;
    }

    pub async fn retain(&self, policies: Vec<PolicyKey>, listed_at: Instant) {
        let _ = self.commands.send(Command::Retain(policies, listed_at)).await;
    }

    pub async fn lock_event(&self, event: LockEvent) {
        let _ = self.commands.send(Command::Lock(event)).await;
    }

    pub async fn pods_changed(&self, namespace: Option<String>) {
        let _ = self.commands.send(Command::PodsChanged(namespace)).await;
    }
}

struct Entry {
    regarding: Regarding,
    report: ConfigReport,
    observation: Option<LockObservation>,
    pod_selectors: Vec<Selector>,
    deployments: Vec<String>,
    leader_pod_label: bool,
    holder: HolderCheck,
    /// The status last handed to the writer (or found on the object at start).
    written: Option<ElectionPolicyStatus>,
    timer: Option<delay_queue::Key>,
    observed_changes: u64,
    /// When the controller last registered the policy.
    registered: Instant,
}

pub struct Observer {
    entries: HashMap<PolicyKey, Entry>,
    by_lock: HashMap<LockKey, PolicyKey>,
    locks: HashMap<LockKey, LockContent>,
    /// Lock kinds whose watch has listed at least once: before that, a missing lock only
    /// means "not seen yet".
    listed: HashSet<LockType>,
    timers: DelayQueue<PolicyKey>,
    status: StatusWriter,
    events: mpsc::Sender<(Regarding, Notice)>,
    labeler: LockLabeler,
    pods: PodIndex,
    metrics: Metrics,
}

impl Observer {
    /// Starts the observer task, its Pod watch and its Event publisher; returns the handle
    /// to feed it.
    pub fn spawn(client: Client, publisher: EventPublisher, labeler: LockLabeler, metrics: Metrics) -> ObserverHandle {
        let (commands, receiver) = mpsc::channel(4096);
        let handle = ObserverHandle { commands };
        let (events, event_receiver) = mpsc::channel(4096);
        tokio::spawn(publish_events(publisher, event_receiver));
        let observer = Observer {
            entries: HashMap::new(),
            by_lock: HashMap::new(),
            locks: HashMap::new(),
            listed: HashSet::new(),
            timers: DelayQueue::new(),
            status: StatusWriter::spawn(client.clone(), metrics.clone(), 4),
            events,
            labeler,
            pods: PodIndex::spawn(client, handle.clone(), metrics.clone()),
            metrics,
        };
        tokio::spawn(observer.run(receiver));
        handle
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut probe = tokio::time::interval(ABSENT_LOCK_PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Let other tasks run between steps, however much work is queued here.
            tokio::task::consume_budget().await;
            // Queued commands first: a deadline must not be judged while the renewal that
            // beats it waits in the queue.
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::Register(registration)) => self.register(*registration).await,
                    Some(Command::Unregister(policy)) => self.unregister(&policy),
                    Some(Command::Retain(policies, listed_at)) => {
                        let keep: HashSet<PolicyKey> = policies.into_iter().collect();
                        let gone: Vec<PolicyKey> = self
                            .entries
                            .iter()
                            .filter(|(k, e)| !keep.contains(*k) && e.registered < listed_at)
                            .map(|(k, _)| k.clone())
                            .collect();
                        gone.iter().for_each(|policy| self.unregister(policy));
                    }
                    Some(Command::Lock(event)) => self.lock_event(event).await,
                    Some(Command::PodsChanged(namespace)) => {
                        let affected: Vec<PolicyKey> = self
                            .entries
                            .keys()
                            .filter(|policy| namespace.as_ref().is_none_or(|changed| *changed == policy.namespace))
                            .cloned()
                            .collect();
                        for policy in affected {
                            self.check_holder(&policy).await;
                            self.refresh(&policy);
                        }
                    }
                },
                Some(expired) = poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    let policy = expired.into_inner();
                    self.deadline(policy).await;
                }
                _ = probe.tick() => self.probe_absent_locks(),
            }
        }
    }

    async fn register(&mut self, registration: Registration) {
        let key = PolicyKey::new(registration.regarding.namespace.clone(), registration.regarding.name.clone());
        let watched_lock = registration.report.lock.clone().filter(|_| registration.report.outcome.observes_lock());
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            regarding: registration.regarding.clone(),
            report: registration.report.clone(),
            observation: None,
            pod_selectors: Vec::new(),
            deployments: Vec::new(),
            leader_pod_label: false,
            holder: HolderCheck::default(),
            written: registration.current_status.clone(),
            timer: None,
            observed_changes: 0,
            registered: Instant::now(),
        });
        entry.registered = Instant::now();
        let previous_config = config_condition(entry.written.as_ref());
        let previous_lock =
            entry.observation.as_ref().and(entry.report.lock.clone().filter(|_| entry.report.outcome.observes_lock()));
        entry.regarding = registration.regarding.clone();
        entry.report = registration.report.clone();
        entry.pod_selectors = registration.pod_selectors;
        entry.deployments = registration.deployments;
        entry.leader_pod_label = registration.leader_pod_label;

        if previous_lock != watched_lock {
            if let Some(old) = previous_lock.as_ref().filter(|old| self.by_lock.get(*old) == Some(&key)) {
                self.by_lock.remove(old);
            }
            entry.observation = None;
            if let Some(lock) = &watched_lock {
                self.by_lock.insert(lock.clone(), key.clone());
                // Resume from the status only if it describes this same lock.
                let status =
                    registration.current_status.as_ref().filter(|s| s.lock.as_deref() == Some(&lock.to_string()));
                let resumed =
                    status.map_or_else(Resumed::default, |s| Resumed { leader: s.leader.clone(), state: s.state });
                entry.observation =
                    Some(LockObservation::new(registration.fallback_lease_duration, registration.detection, resumed));
            }
        }
        if let Some(observation) = entry.observation.as_mut() {
            observation.configure(registration.fallback_lease_duration, registration.detection);
        }

        if let Some(lock) = watched_lock.as_ref().filter(|lock| self.listed.contains(&lock.type_)) {
            let content = self.locks.get(lock).cloned().unwrap_or(LockContent::Absent);
            if content == LockContent::Absent {
                // Not seen by the label-selected watch: label it now rather than at the next probe.
                self.labeler.label_in_background(lock.clone());
            }
            self.observe(&key, content, Moment::now()).await;
        }
        self.check_holder(&key).await;
        let notice = self.refresh(&key);
        if let Some(notice) = config_notice(previous_config, notice) {
            self.emit(&key, notice).await;
        }
    }

    fn unregister(&mut self, policy: &PolicyKey) {
        if let Some(entry) = self.entries.remove(policy) {
            if let Some(timer) = entry.timer {
                self.timers.remove(&timer);
            }
            // Only the policy watching the lock labelled it (a conflicting one never did), and
            // only that one takes the label off again, restoring the lock as it was.
            if let Some(lock) = entry.report.lock.filter(|lock| self.by_lock.get(lock) == Some(policy)) {
                self.by_lock.remove(&lock);
                self.labeler.unlabel_in_background(lock);
            }
        }
        self.metrics.remove_policy(policy);
    }

    async fn lock_event(&mut self, event: LockEvent) {
        match event {
            LockEvent::Applied(lock, content, at) => {
                self.locks.insert(lock.clone(), content.clone());
                self.observe_lock(&lock, content, at).await;
            }
            LockEvent::Deleted(lock, at) => {
                self.locks.remove(&lock);
                self.observe_lock(&lock, LockContent::Absent, at).await;
            }
            LockEvent::Blind(kind) => {
                info!(kind = ?kind, "lock watch interrupted; staleness is not judged until it lists again");
                let affected: Vec<PolicyKey> = self
                    .by_lock
                    .iter()
                    .filter(|(lock, _)| lock.type_ == kind)
                    .map(|(_, policy)| policy.clone())
                    .collect();
                for policy in affected {
                    if let Some(observation) = self.entries.get_mut(&policy).and_then(|e| e.observation.as_mut()) {
                        observation.set_blind();
                    }
                    self.refresh(&policy);
                }
            }
            LockEvent::Listed(kind, listed, at) => {
                self.locks.retain(|lock, _| lock.type_ != kind);
                self.locks.extend(listed);
                self.listed.insert(kind);
                let watched: Vec<LockKey> = self.by_lock.keys().filter(|lock| lock.type_ == kind).cloned().collect();
                for lock in watched {
                    let content = self.locks.get(&lock).cloned().unwrap_or(LockContent::Absent);
                    self.observe_lock(&lock, content, at).await;
                }
            }
        }
    }

    async fn observe_lock(&mut self, lock: &LockKey, content: LockContent, at: Moment) {
        let Some(policy) = self.by_lock.get(lock).cloned() else { return };
        let view = |entries: &HashMap<PolicyKey, Entry>| {
            entries.get(&policy).and_then(|e| e.observation.as_ref()).map(LockObservation::status_view)
        };
        let before = view(&self.entries);
        let noteworthy = self.observe(&policy, content, at).await;
        if noteworthy || before.is_none() || view(&self.entries) != before {
            self.refresh(&policy);
        } else {
            self.renewed(&policy);
        }
    }

    /// A plain renewal: the status users see is unchanged, so only the deadline timer and
    /// the renewal metrics move. This is the operator's hot path, once per renewal per lock.
    fn renewed(&mut self, policy: &PolicyKey) {
        let Some(entry) = self.entries.get_mut(policy) else { return };
        let Some(observation) = entry.observation.as_ref() else { return };
        arm(&mut self.timers, &mut entry.timer, policy, observation.deadline());
        self.metrics.renewed(
            policy,
            observation.last_change().map(|m| m.monotonic),
            observation.stale_deadline(),
            observation.stats().last_interval,
        );
    }

    /// Applies what was observed and reports it; true when that was more than a renewal
    /// (an Event, or a holder to check).
    async fn observe(&mut self, policy: &PolicyKey, content: LockContent, at: Moment) -> bool {
        let Some(observation) = self.entries.get_mut(policy).and_then(|e| e.observation.as_mut()) else {
            return false;
        };
        let occurrences = observation.observe(at, content);
        let new_holder = occurrences
            .iter()
            .any(|o| matches!(o, Occurrence::LeaderElected { .. } | Occurrence::LeaderChanged { .. }));
        let noteworthy = !occurrences.is_empty();
        self.report(policy, occurrences).await;
        if new_holder {
            self.check_holder(policy).await;
        }
        noteworthy
    }

    async fn deadline(&mut self, policy: PolicyKey) {
        let Some(entry) = self.entries.get_mut(&policy) else { return };
        entry.timer = None;
        let Some(observation) = entry.observation.as_mut() else { return };
        let occurrences = observation.check_deadline(Moment::now());
        self.report(&policy, occurrences).await;
        self.refresh(&policy);
    }

    /// Publishes the Events for what was observed, and counts leader changes.
    async fn report(&mut self, policy: &PolicyKey, occurrences: Vec<Occurrence>) {
        let Some(entry) = self.entries.get_mut(policy) else { return };
        entry.observed_changes +=
            occurrences.iter().filter(|o| matches!(o, Occurrence::LeaderChanged { .. })).count() as u64;
        let renew_time =
            entry.observation.as_ref().and_then(|o| o.record()).and_then(|r| r.renew_time.clone()).unwrap_or_default();
        let lock = entry.report.lock.as_ref().map(ToString::to_string).unwrap_or_default();
        for occurrence in occurrences {
            let notice = occurrence_notice(&occurrence, &lock, &renew_time);
            self.emit(policy, notice).await;
        }
    }

    /// Whether the holder is one of the selected Deployments' Pods; reports it when it stops
    /// being one, and moves the leader label along when the policy asks for it.
    async fn check_holder(&mut self, policy: &PolicyKey) {
        let Some(entry) = self.entries.get_mut(policy) else { return };
        let leader = entry.observation.as_ref().map(|o| o.leader().to_string()).unwrap_or_default();
        if entry.pod_selectors.is_empty() {
            entry.holder.not_found_among = None;
            return;
        }
        let holder_pod = if leader.is_empty() {
            None
        } else {
            match self.pods.holder_pod(&policy.namespace, &leader, &entry.pod_selectors) {
                Some(found) => Some(found),
                // The Pods are not listed yet: nothing can be said of the holder. The
                // listing's completion brings every policy back here.
                None => return,
            }
        };
        let not_found = holder_pod == Some(HolderPod::NotFound);
        let was_not_found = entry.holder.not_found_among.is_some();
        entry.holder.not_found_among = not_found.then(|| entry.deployments.clone());
        if entry.leader_pod_label {
            let leader_pod = match &holder_pod {
                Some(HolderPod::Found(pod)) => Some(pod.as_str()),
                _ => None,
            };
            self.pods.label_leader(&policy.namespace, leader_pod, &entry.pod_selectors);
        }
        if not_found && !was_not_found {
            let lock = entry.report.lock.as_ref().map(ToString::to_string).unwrap_or_default();
            let note = format!(
                "{leader} holds {lock} but is not a Pod of Deployment(s) {}: a deleted Pod still holding it, or a \
                 process outside them",
                entry.deployments.join(", ")
            );
            let notice = Notice {
                severity: Severity::Warning,
                reason: event::HOLDER_NOT_FOUND,
                action: "Observe",
                note,
                occurrence_id: None,
                observed_at: jiff::Timestamp::now(),
            };
            self.emit(policy, notice).await;
        }
    }

    /// Re-renders the policy's status, hands it to the writer if users would see a
    /// difference, re-arms its deadline timer and updates its metrics. Returns the
    /// ConfigInjected condition (reason, message) now in force.
    fn refresh(&mut self, policy: &PolicyKey) -> Option<(String, String)> {
        let entry = self.entries.get_mut(policy)?;
        // What a status says of the holder's Pod needs the Pods listed, too.
        let waiting_for_first_look = entry
            .observation
            .as_ref()
            .zip(entry.report.lock.as_ref())
            .is_some_and(|(_, lock)| !self.listed.contains(&lock.type_))
            || (!entry.pod_selectors.is_empty() && !self.pods.is_synced());
        let now = Moment::now();
        let status = render(&entry.report, entry.observation.as_ref(), &entry.holder, entry.written.as_ref(), now.wall);
        let config = config_condition(Some(&status));

        // Until the lock has been looked at, a status would only say "unknown" over what the
        // previous operator instance wrote; keep that instead.
        if !waiting_for_first_look && entry.written.as_ref().is_none_or(|w| differs_for_users(w, &status)) {
            self.status.write(policy.clone(), status.clone());
            entry.written = Some(status.clone());
        }

        let deadline = entry.observation.as_ref().and_then(LockObservation::deadline);
        arm(&mut self.timers, &mut entry.timer, policy, deadline);

        let observation = entry.observation.as_ref();
        self.metrics.set_policy(
            policy.clone(),
            PolicySnapshot {
                leader: status.leader.clone(),
                lock: status.lock.clone().unwrap_or_default(),
                state: status.state,
                last_change: observation.and_then(LockObservation::last_change).map(|m| m.monotonic),
                deadline: observation.and_then(LockObservation::stale_deadline),
                recorded_transitions: observation.and_then(LockObservation::record).map(|r| r.leader_transitions),
                observed_changes: entry.observed_changes,
                renewal_interval: observation.and_then(|o| o.stats().last_interval),
                holder_not_found: entry.holder.not_found_among.is_some(),
                flapping: observation.is_some_and(LockObservation::is_flapping),
                renewals_slow: observation.is_some_and(LockObservation::is_slow),
                unobservable: observation.is_some_and(LockObservation::is_unobservable),
            },
        );
        config
    }

    /// Labels registered locks the watch has not seen, so it sees them from now on.
    fn probe_absent_locks(&self) {
        for (lock, policy) in &self.by_lock {
            let seen = self.locks.contains_key(lock);
            let health = self.entries.get(policy).and_then(|e| e.observation.as_ref()).map(LockObservation::health);
            if !seen && self.listed.contains(&lock.type_) && !matches!(health, Some(Health::Malformed(_))) {
                self.labeler.label_in_background(lock.clone());
            }
        }
    }

    async fn emit(&self, policy: &PolicyKey, notice: Notice) {
        if let Some(entry) = self.entries.get(policy) {
            debug!(namespace = %policy.namespace, policy = %policy.name, reason = notice.reason, note = %notice.note, "event");
            let _ = self.events.send((entry.regarding.clone(), notice)).await;
        }
    }
}

/// Sets, moves or removes a policy's deadline timer.
fn arm(
    timers: &mut DelayQueue<PolicyKey>,
    timer: &mut Option<delay_queue::Key>,
    policy: &PolicyKey,
    deadline: Option<std::time::Instant>,
) {
    match (deadline, timer.as_ref()) {
        (Some(at), Some(key)) => timers.reset_at(key, at.into()),
        (Some(at), None) => *timer = Some(timers.insert_at(policy.clone(), at.into())),
        (None, Some(key)) => {
            timers.remove(key);
            *timer = None;
        }
        (None, None) => {}
    }
}

/// Publishes Events off the observer's path: in parallel across policies, in order within
/// one (each policy always goes to the same worker).
async fn publish_events(publisher: EventPublisher, mut events: mpsc::Receiver<(Regarding, Notice)>) {
    const WORKERS: usize = 8;
    let workers: Vec<mpsc::Sender<(Regarding, Notice)>> = (0..WORKERS)
        .map(|_| {
            let (sender, mut receiver) = mpsc::channel::<(Regarding, Notice)>(1024);
            let publisher = publisher.clone();
            tokio::spawn(async move {
                while let Some((regarding, notice)) = receiver.recv().await {
                    publisher.publish(&regarding, notice).await;
                }
            });
            sender
        })
        .collect();
    while let Some((regarding, notice)) = events.recv().await {
        let shard = crate::domain::fnv1a(&format!("{}/{}", regarding.namespace, regarding.name)) as usize % WORKERS;
        let _ = workers[shard].send((regarding, notice)).await;
    }
}

fn config_condition(status: Option<&ElectionPolicyStatus>) -> Option<(String, String)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::CONFIG_INJECTED)
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// The Event for a change of the ConfigInjected condition, when the new one is a problem.
/// Compared with what the status already said, so an operator restart does not repeat it.
fn config_notice(previous: Option<(String, String)>, current: Option<(String, String)>) -> Option<Notice> {
    let (reason, message) = current?;
    if previous.as_ref() == Some(&(reason.clone(), message.clone())) {
        return None;
    }
    let event_reason = match reason.as_str() {
        condition_reason::INVALID_POLICY => event::INVALID_POLICY,
        condition_reason::LOCK_CONFLICT => event::LOCK_CONFLICT,
        condition_reason::TARGET_NOT_FOUND => event::TARGET_NOT_FOUND,
        condition_reason::INJECTION_FAILED => event::INJECTION_FAILED,
        _ => return None,
    };
    Some(Notice {
        severity: Severity::Warning,
        reason: event_reason,
        action: "Reconcile",
        note: message,
        occurrence_id: None,
        observed_at: jiff::Timestamp::now(),
    })
}

/// The Event for something observed on a lock. Transitions and staleness carry an
/// occurrence id, which makes their publication idempotent across restarts.
fn occurrence_notice(occurrence: &Occurrence, lock: &str, renew_time: &str) -> Notice {
    let notice = |severity, reason, note: String, id: Option<String>| Notice {
        severity,
        reason,
        action: "Observe",
        note,
        occurrence_id: id,
        observed_at: jiff::Timestamp::now(),
    };
    let millis = |t: jiff::Timestamp| t.round(jiff::Unit::Millisecond).unwrap_or(t);
    match occurrence {
        Occurrence::LeaderElected { holder, acquire_time } => notice(
            Severity::Normal,
            event::LEADER_ELECTED,
            format!("{holder} acquired {lock}"),
            Some(format!("elected\n{holder}\n{}", acquire_time.as_deref().unwrap_or_default())),
        ),
        Occurrence::LeaderChanged { from, to, acquire_time } => notice(
            Severity::Normal,
            event::LEADER_CHANGED,
            format!("{from} -> {to} ({lock})"),
            Some(format!("changed\n{from}\n{to}\n{}", acquire_time.as_deref().unwrap_or_default())),
        ),
        Occurrence::LeaseStale { holder, last_renewal, lease_duration } => notice(
            Severity::Warning,
            event::LEASE_STALE,
            format!(
                "{holder} has not renewed {lock} since {} (no change observed for leaseDuration {})",
                millis(*last_renewal),
                humantime(*lease_duration)
            ),
            Some(format!("stale\n{holder}\n{renew_time}")),
        ),
        Occurrence::LeaseRecovered { holder, stale_since } => notice(
            Severity::Normal,
            event::LEASE_RECOVERED,
            format!("{holder} renews {lock} again (stale since {})", millis(*stale_since)),
            Some(format!("recovered\n{holder}\n{renew_time}")),
        ),
        Occurrence::MalformedRecord { reason } => {
            notice(Severity::Warning, event::MALFORMED_LOCK_RECORD, format!("{lock}: {reason}"), None)
        }
        Occurrence::RenewalsSlow { holder, silent_for, lease_duration } => notice(
            Severity::Warning,
            event::RENEWALS_SLOW,
            format!(
                "{holder} has not renewed {lock} for {}; it goes stale at leaseDuration {}",
                humantime(*silent_for),
                humantime(*lease_duration)
            ),
            // A spell of silence belongs to the last record seen: once per record.
            Some(format!("slow\n{holder}\n{renew_time}")),
        ),
        Occurrence::LeaderFlapping { changes, window } => notice(
            Severity::Warning,
            event::LEADER_FLAPPING,
            format!("{changes} leader changes of {lock} within {}", humantime(*window)),
            Some(format!("flapping\n{renew_time}")),
        ),
    }
}

fn humantime(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) { format!("{}s", millis / 1000) } else { format!("{millis}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_name_both_holders_and_have_stable_ids() {
        let changed = Occurrence::LeaderChanged { from: "a".into(), to: "b".into(), acquire_time: Some("t1".into()) };
        let first = occurrence_notice(&changed, "leases/ns/l", "r1");
        let again = occurrence_notice(&changed, "leases/ns/l", "r2");
        assert_eq!(first.reason, "LeaderChanged");
        assert_eq!(first.note, "a -> b (leases/ns/l)");
        assert_eq!(first.occurrence_id, again.occurrence_id, "the same transition is the same Event");
    }

    #[test]
    fn stale_events_say_since_when() {
        let stale = Occurrence::LeaseStale {
            holder: "a".into(),
            last_renewal: "2026-11-23T10:00:00Z".parse().unwrap(),
            lease_duration: Duration::from_secs(15),
        };
        let notice = occurrence_notice(&stale, "leases/ns/l", "r1");
        assert_eq!(notice.severity, Severity::Warning);
        assert!(notice.note.contains("since 2026-11-23T10:00:00Z"), "{}", notice.note);
        assert!(notice.note.contains("leaseDuration 15s"), "{}", notice.note);
    }

    #[test]
    fn early_warnings_are_warnings_with_their_reasons() {
        let slow = Occurrence::RenewalsSlow {
            holder: "a".into(),
            silent_for: Duration::from_millis(5500),
            lease_duration: Duration::from_secs(15),
        };
        let notice = occurrence_notice(&slow, "leases/ns/l", "r");
        assert_eq!((notice.severity, notice.reason), (Severity::Warning, "RenewalsSlow"));
        assert!(notice.note.contains("5500ms"), "{}", notice.note);
        let flapping = Occurrence::LeaderFlapping { changes: 4, window: Duration::from_secs(600) };
        assert_eq!(occurrence_notice(&flapping, "leases/ns/l", "r").reason, "LeaderFlapping");
    }

    #[test]
    fn config_events_fire_on_change_only() {
        let invalid = Some(("InvalidPolicy".to_string(), "bad".to_string()));
        assert_eq!(config_notice(None, invalid.clone()).unwrap().reason, "InvalidPolicy");
        assert!(config_notice(invalid.clone(), invalid).is_none());
        assert!(config_notice(None, Some(("Injected".into(), "ok".into()))).is_none());
    }
}
