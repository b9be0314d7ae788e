//! The observer: one task that owns every policy's lock observation and status.
//!
//! It is fed through its inbox by the policy controller (what each policy's configuration
//! came to), by the lock watches (what each lock says, and whether the watch can be
//! trusted) and by the Pod watch. Each policy's bookkeeping is a
//! [`PolicyTracker`](crate::domain::tracking::PolicyTracker), which decides; this task
//! routes the inputs to the trackers and carries out the actions they return. Keeping all
//! of it in one task means no locks, a single writer per status, and a deadline timer per
//! lock instead of periodic polling: staleness fires at the deadline, to the millisecond.

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
    api::LockType,
    domain::{
        holder::HolderPod,
        lock_record::{LockContent, LockKey},
        notices::{Notice, Regarding},
        observation::{Health, Moment},
        policy_key::PolicyKey,
        tracking::{Action, ClusterView, PolicyTracker, Registration},
    },
    k8s::{
        events::EventPublisher,
        inbox::{Inbox, LockEvent, Message},
        locks::LockLabeler,
        pods::PodIndex,
        status_writer::StatusWriter,
    },
    metrics::Metrics,
};

/// How often a registered lock that the watch has not seen is looked for (and labelled so
/// the watch sees it from then on). A lock is absent only between a policy's creation and
/// its app's first start, and each probe is one small PATCH answered 404, so probing often
/// is cheap; it bounds how late the first leader of a new lock is reported.
const ABSENT_LOCK_PROBE_INTERVAL: Duration = Duration::from_millis(500);

struct Entry {
    tracker: PolicyTracker,
    timer: Option<delay_queue::Key>,
    /// When the controller last registered the policy.
    registered: Instant,
}

/// The caches a tracker reads, as the observer holds them.
struct Caches<'a> {
    locks: &'a HashMap<LockKey, LockContent>,
    listed: &'a HashSet<LockType>,
    pods: &'a PodIndex,
}

impl ClusterView for Caches<'_> {
    fn lock(&self, lock: &LockKey) -> Option<LockContent> {
        self.listed.contains(&lock.type_).then(|| self.locks.get(lock).cloned().unwrap_or(LockContent::Absent))
    }

    fn lock_kind_listed(&self, kind: LockType) -> bool {
        self.listed.contains(&kind)
    }

    fn pods_listed(&self) -> bool {
        self.pods.is_synced()
    }

    fn holder_pod(&self, namespace: &str, holder: &str, selectors: &[Selector]) -> Option<HolderPod> {
        self.pods.holder_pod(namespace, holder, selectors)
    }
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
    /// Starts the observer task on `inbox`, with its status writer and Event publisher.
    pub fn spawn(
        inbox: Inbox,
        client: Client,
        publisher: EventPublisher,
        labeler: LockLabeler,
        pods: PodIndex,
        metrics: Metrics,
    ) {
        let (events, event_receiver) = mpsc::channel(4096);
        tokio::spawn(publish_events(publisher, event_receiver));
        let observer = Observer {
            entries: HashMap::new(),
            by_lock: HashMap::new(),
            locks: HashMap::new(),
            listed: HashSet::new(),
            timers: DelayQueue::new(),
            status: StatusWriter::spawn(client, metrics.clone(), 4),
            events,
            labeler,
            pods,
            metrics,
        };
        tokio::spawn(observer.run(inbox));
    }

    async fn run(mut self, mut inbox: Inbox) {
        let mut probe = tokio::time::interval(ABSENT_LOCK_PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Let other tasks run between steps, however much work is queued here.
            tokio::task::consume_budget().await;
            // Queued messages first: a deadline must not be judged while the renewal that
            // beats it waits in the queue.
            tokio::select! {
                biased;
                message = inbox.recv() => match message {
                    None => return,
                    Some(Message::Register(registration)) => self.register(*registration).await,
                    Some(Message::Unregister(policy)) => self.unregister(&policy),
                    Some(Message::Retain(policies, listed_at)) => {
                        let keep: HashSet<PolicyKey> = policies.into_iter().collect();
                        let gone: Vec<PolicyKey> = self
                            .entries
                            .iter()
                            .filter(|(k, e)| !keep.contains(*k) && e.registered < listed_at)
                            .map(|(k, _)| k.clone())
                            .collect();
                        gone.iter().for_each(|policy| self.unregister(policy));
                    }
                    Some(Message::Lock(event)) => self.lock_event(event).await,
                    Some(Message::PodsChanged(namespace)) => {
                        let affected: Vec<PolicyKey> = self
                            .entries
                            .keys()
                            .filter(|policy| namespace.as_ref().is_none_or(|changed| *changed == policy.namespace))
                            .cloned()
                            .collect();
                        for policy in affected {
                            self.step(&policy, |tracker, caches, now| tracker.pods_changed(caches, now)).await;
                        }
                    }
                },
                Some(expired) = poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    let policy = expired.into_inner();
                    if let Some(entry) = self.entries.get_mut(&policy) {
                        entry.timer = None;
                    }
                    self.step(&policy, |tracker, caches, now| tracker.deadline(caches, now)).await;
                }
                _ = probe.tick() => self.probe_absent_locks(),
            }
        }
    }

    async fn register(&mut self, registration: Registration) {
        let key = registration.key();
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            tracker: PolicyTracker::new(&registration),
            timer: None,
            registered: Instant::now(),
        });
        entry.registered = Instant::now();
        self.step(&key, |tracker, caches, now| tracker.register(registration, caches, now)).await;
    }

    fn unregister(&mut self, policy: &PolicyKey) {
        if let Some(entry) = self.entries.remove(policy) {
            if let Some(timer) = entry.timer {
                self.timers.remove(&timer);
            }
            for lock in entry.tracker.watched_locks() {
                unwatch(&mut self.by_lock, &self.labeler, policy, lock);
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
                    self.step(&policy, |tracker, caches, now| tracker.blind(caches, now)).await;
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
        self.step(&policy, |tracker, caches, now| tracker.lock_observed(lock, content, at, caches, now)).await;
    }

    /// Hands one input to the policy's tracker and carries out the actions it returns.
    async fn step(
        &mut self,
        policy: &PolicyKey,
        input: impl FnOnce(&mut PolicyTracker, &Caches<'_>, Moment) -> Vec<Action>,
    ) {
        let Some(entry) = self.entries.get_mut(policy) else { return };
        let caches = Caches { locks: &self.locks, listed: &self.listed, pods: &self.pods };
        for action in input(&mut entry.tracker, &caches, Moment::now()) {
            match action {
                Action::Watch(lock) => {
                    if self.listed.contains(&lock.type_) && !self.locks.contains_key(&lock) {
                        // Not seen by the label-selected watch: label it now, not at the next probe.
                        self.labeler.label_in_background(lock.clone());
                    }
                    self.by_lock.insert(lock, policy.clone());
                }
                Action::Unwatch(lock) => unwatch(&mut self.by_lock, &self.labeler, policy, &lock),
                Action::Failover(leaderless) => self.metrics.failover(policy, leaderless),
                Action::WriteStatus(status) => self.status.write(policy.clone(), status),
                Action::Publish(notice) => {
                    debug!(%policy, reason = notice.reason, note = %notice.note, "event");
                    let _ = self.events.send((entry.tracker.regarding().clone(), notice)).await;
                }
                Action::LabelLeaderPod(pod) => {
                    self.pods.label_leader(&policy.namespace, pod.as_deref(), entry.tracker.pod_selectors())
                }
                Action::SetTimer(deadline) => arm(&mut self.timers, &mut entry.timer, policy, deadline),
                Action::SetMetrics(snapshot) => self.metrics.set_policy(policy.clone(), snapshot),
                Action::Renewed { last_change, stale_deadline, interval } => {
                    self.metrics.renewed(policy, last_change, stale_deadline, interval)
                }
            }
        }
    }

    /// Labels registered locks the watch has not seen, so it sees them from now on.
    fn probe_absent_locks(&self) {
        for (lock, policy) in &self.by_lock {
            let seen = self.locks.contains_key(lock);
            let health = self.entries.get(policy).and_then(|e| e.tracker.health());
            if !seen && self.listed.contains(&lock.type_) && !matches!(health, Some(Health::Malformed(_))) {
                self.labeler.label_in_background(lock.clone());
            }
        }
    }
}

/// Stops routing `lock` to `policy`. Only the policy watching the lock labelled it (a
/// conflicting one never did), and only that one takes the label off again, restoring the
/// lock as it was.
fn unwatch(by_lock: &mut HashMap<LockKey, PolicyKey>, labeler: &LockLabeler, policy: &PolicyKey, lock: &LockKey) {
    if by_lock.get(lock) == Some(policy) {
        by_lock.remove(lock);
        labeler.unlabel_in_background(lock.clone());
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
