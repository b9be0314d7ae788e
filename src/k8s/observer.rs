//! The observer: one task that owns every policy's lock observation and status.
//!
//! It is fed through its inbox by the policy controller (what each policy's configuration
//! came to), by the lock watches (what each lock says, and whether the watch can be
//! trusted) and by the Pod watches of the namespaces where policies select Deployments.
//! Each policy's bookkeeping is a
//! [`PolicyTracker`](crate::domain::tracking::PolicyTracker), which decides; this task
//! routes the inputs to the trackers and carries out the actions they return. Keeping all
//! of it in one task means no locks, a single writer per status, and a deadline timer per
//! lock instead of periodic polling: staleness fires at the deadline, to the millisecond.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
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
        limits::clamp_timer,
        lock_record::{LockContent, LockKey, LockScope},
        notices::{Notice, Regarding},
        observation::Moment,
        policy_key::PolicyKey,
        tracking::{Action, ClusterView, PolicyTracker, Registration},
    },
    k8s::{
        events::EventPublisher,
        inbox::{Inbox, LockEvent, Message, ObserverHandle},
        locks::LockWatches,
        pods::PodIndex,
        status_writer::StatusWriter,
    },
    metrics::Metrics,
};

struct Entry {
    /// Boxed: a tracker is about 1.5 KiB, and a map holds its values inline in a table
    /// kept up to twice as large as the entries, so inline trackers cost up to twice their
    /// size (about 10 MiB more at 10000 policies).
    tracker: Box<PolicyTracker>,
    timer: Option<delay_queue::Key>,
    /// When the controller last registered the policy.
    registered: Instant,
}

/// The locks as their watches show them, and which policy each watched lock is routed to.
struct LockTable {
    routes: HashMap<LockKey, PolicyKey>,
    /// Every lock the watches see (the other locks of a watched namespace too, so that a
    /// policy naming one of them later knows it at once).
    seen: HashMap<LockKey, LockContent>,
    /// Namespaces, by lock kind, whose current watch has listed: before that, a missing
    /// lock only means "not seen yet". Keyed so that the check on every renewal needs no
    /// LockScope built.
    listed: HashMap<LockType, HashSet<Arc<str>>>,
    watches: LockWatches,
}

impl LockTable {
    /// Routes `lock` to `policy`, watching its scope.
    fn watch(&mut self, lock: LockKey, policy: &PolicyKey) {
        self.watches.add(&lock);
        self.routes.insert(lock, policy.clone());
    }

    /// Stops routing `lock` to `policy`, and stops its scope's watch when no other lock
    /// there is routed. A conflicting policy never had the lock routed to it, so it cannot
    /// take it from the policy that has.
    fn unwatch(&mut self, policy: &PolicyKey, lock: &LockKey) {
        if self.routes.get(lock) != Some(policy) {
            return;
        }
        self.routes.remove(lock);
        if let Some(scope) = self.watches.remove(lock) {
            self.forget(&scope);
        }
    }

    /// Drops what the scope's watch showed.
    fn forget(&mut self, scope: &LockScope) {
        self.seen.retain(|lock, _| !in_scope(lock, scope));
        if let Some(namespaces) = self.listed.get_mut(&scope.type_) {
            namespaces.remove(&scope.namespace);
        }
    }

    fn is_listed(&self, lock: &LockKey) -> bool {
        self.listed.get(&lock.type_).is_some_and(|namespaces| namespaces.contains(&lock.namespace))
    }

    /// The routed locks in `scope`, with their policies.
    fn routed_in(&self, scope: &LockScope) -> Vec<(LockKey, PolicyKey)> {
        self.routes.iter().filter(|(lock, _)| in_scope(lock, scope)).map(|(l, p)| (l.clone(), p.clone())).collect()
    }
}

fn in_scope(lock: &LockKey, scope: &LockScope) -> bool {
    lock.type_ == scope.type_ && lock.namespace == scope.namespace
}

/// The caches a tracker reads, as the observer holds them.
struct Caches<'a> {
    locks: &'a LockTable,
    pods: &'a PodIndex,
}

impl ClusterView for Caches<'_> {
    fn lock(&self, lock: &LockKey) -> Option<LockContent> {
        self.lock_listed(lock).then(|| self.locks.seen.get(lock).cloned().unwrap_or(LockContent::Absent))
    }

    fn lock_listed(&self, lock: &LockKey) -> bool {
        self.locks.is_listed(lock)
    }

    fn pods_listed(&self, namespace: &str) -> bool {
        self.pods.is_listed(namespace)
    }

    fn holder_pod(&self, namespace: &str, holder: &str, selectors: &[Selector]) -> Option<HolderPod> {
        self.pods.holder_pod(namespace, holder, selectors)
    }
}

pub struct Observer {
    entries: HashMap<PolicyKey, Entry>,
    locks: LockTable,
    timers: DelayQueue<PolicyKey>,
    status: StatusWriter,
    events: mpsc::Sender<(Regarding, Notice)>,
    pods: PodIndex,
    metrics: Metrics,
}

impl Observer {
    /// Starts the observer task on `inbox`, with its status writer, Event publisher (each
    /// with `writers` requests in flight at most), lock watches and Pod watches (which feed
    /// `inbox` through `handle`).
    pub fn spawn(
        (handle, inbox): (ObserverHandle, Inbox),
        client: Client,
        publisher: EventPublisher,
        metrics: Metrics,
        writers: usize,
    ) {
        let (events, event_receiver) = mpsc::channel(4096);
        tokio::spawn(publish_events(publisher, event_receiver, writers));
        let observer = Observer {
            entries: HashMap::new(),
            locks: LockTable {
                routes: HashMap::new(),
                seen: HashMap::new(),
                listed: HashMap::new(),
                watches: LockWatches::new(client.clone(), handle.clone(), metrics.clone()),
            },
            pods: PodIndex::new(client.clone(), handle, metrics.clone()),
            timers: DelayQueue::new(),
            status: StatusWriter::spawn(client, metrics.clone(), writers),
            events,
            metrics,
        };
        tokio::spawn(observer.run(inbox));
    }

    async fn run(mut self, mut inbox: Inbox) {
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
                    Some(Message::Lock(run, event)) => {
                        if self.locks.watches.is_current(&event.scope(), run) {
                            self.lock_event(event).await;
                        }
                    }
                    Some(Message::PodsChanged(namespace)) => {
                        let affected: Vec<PolicyKey> = self
                            .entries
                            .keys()
                            .filter(|policy| *policy.namespace == *namespace)
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
            }
        }
    }

    async fn register(&mut self, registration: Registration) {
        let key = registration.key();
        // The Pods of a namespace are watched while a policy there selects Deployments;
        // started before the tracker looks, which then waits for their list.
        let needs_pods = !registration.pod_selectors.is_empty();
        let needed_pods = self.entries.get(&key).is_some_and(|e| !e.tracker.pod_selectors().is_empty());
        match (needed_pods, needs_pods) {
            (false, true) => self.pods.watch(&key.namespace),
            (true, false) => self.pods.unwatch(&key.namespace),
            _ => {}
        }
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            tracker: Box::new(PolicyTracker::new(&registration)),
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
                self.locks.unwatch(policy, lock);
            }
            if !entry.tracker.pod_selectors().is_empty() {
                self.pods.unwatch(&policy.namespace);
            }
        }
        self.metrics.remove_policy(policy);
    }

    async fn lock_event(&mut self, event: LockEvent) {
        match event {
            LockEvent::Applied(lock, content, at) => {
                self.locks.seen.insert(lock.clone(), content.clone());
                self.observe_lock(&lock, content, at).await;
            }
            LockEvent::Deleted(lock, at) => {
                self.locks.seen.remove(&lock);
                self.observe_lock(&lock, LockContent::Absent, at).await;
            }
            LockEvent::Blind(scope) => {
                info!(%scope, "lock watch interrupted; staleness is not judged until it lists again");
                for (_, policy) in self.locks.routed_in(&scope) {
                    self.step(&policy, |tracker, caches, now| tracker.blind(caches, now)).await;
                }
            }
            LockEvent::Listed(scope, listed, at) => {
                self.locks.forget(&scope);
                self.locks.seen.extend(listed);
                self.locks.listed.entry(scope.type_).or_default().insert(scope.namespace.clone());
                for (lock, _) in self.locks.routed_in(&scope) {
                    let content = self.locks.seen.get(&lock).cloned().unwrap_or(LockContent::Absent);
                    self.observe_lock(&lock, content, at).await;
                }
            }
        }
    }

    async fn observe_lock(&mut self, lock: &LockKey, content: LockContent, at: Moment) {
        let Some(policy) = self.locks.routes.get(lock).cloned() else { return };
        self.step(&policy, |tracker, caches, now| tracker.lock_observed(lock, content, at, caches, now)).await;
    }

    /// Hands one input to the policy's tracker and carries out the actions it returns.
    async fn step(
        &mut self,
        policy: &PolicyKey,
        input: impl FnOnce(&mut PolicyTracker, &Caches<'_>, Moment) -> Vec<Action>,
    ) {
        let Some(entry) = self.entries.get_mut(policy) else { return };
        let caches = Caches { locks: &self.locks, pods: &self.pods };
        for action in input(&mut entry.tracker, &caches, Moment::now()) {
            match action {
                Action::Watch(lock) => self.locks.watch(lock, policy),
                Action::Unwatch(lock) => self.locks.unwatch(policy, &lock),
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
}

/// Sets, moves or removes a policy's deadline timer.
fn arm(
    timers: &mut DelayQueue<PolicyKey>,
    timer: &mut Option<delay_queue::Key>,
    policy: &PolicyKey,
    deadline: Option<std::time::Instant>,
) {
    // Whatever a record or a policy says, no timer goes further than the clamp: beyond
    // 2^36 ms DelayQueue panics, and with it the observation of every policy.
    let deadline = deadline.map(|at| clamp_timer(at, Instant::now()));
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
async fn publish_events(publisher: EventPublisher, mut events: mpsc::Receiver<(Regarding, Notice)>, workers: usize) {
    let workers: Vec<mpsc::Sender<(Regarding, Notice)>> = (0..workers.max(1))
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
        let shard = crate::domain::fnv1a_namespaced(&regarding.namespace, &regarding.name) as usize % workers.len();
        let _ = workers[shard].send((regarding, notice)).await;
    }
}
