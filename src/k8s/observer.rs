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
use tokio::sync::Semaphore;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::{debug, info, warn};

use crate::{
    api::LockType,
    domain::{
        holder::HolderPod,
        lock_record::{LockContent, LockKey, LockScope},
        observation::Moment,
        policy_key::PolicyKey,
        tracking::{Action, ClusterView, PolicyTracker, Registration},
    },
    failpoints,
    k8s::{
        events::Events,
        inbox::{Inbox, LockEvent, Message, ObserverHandle},
        locks::{LockWatches, read_lock},
        pods::PodIndex,
        status_writer::StatusWriter,
    },
    limits::clamp_timer,
    metrics::Metrics,
    supervisor::Supervisor,
};

struct Entry {
    /// Boxed: a tracker is about 1.5 KiB, and a map holds its values inline in a table
    /// kept up to twice as large as the entries, so inline trackers cost up to twice their
    /// size (about 10 MiB more at 10000 policies).
    tracker: Box<PolicyTracker>,
    timer: Option<delay_queue::Key>,
    /// When the controller last registered the policy.
    registered: Instant,
    /// A fresh look at its locks is under way (its timer went off late).
    looking: bool,
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
    /// The policies of each namespace, so that a change there reaches them without a look
    /// at every other policy.
    by_namespace: HashMap<Arc<str>, HashSet<PolicyKey>>,
    locks: LockTable,
    timers: DelayQueue<PolicyKey>,
    status: StatusWriter,
    events: Events,
    pods: PodIndex,
    fresh_looks: FreshLooks,
    metrics: Metrics,
}

/// Reads of locks for deadlines whose timers went off late, a few at a time.
struct FreshLooks {
    client: Client,
    handle: ObserverHandle,
    metrics: Metrics,
    supervisor: Supervisor,
    permits: Arc<Semaphore>,
}

/// A timer that goes off this much after its deadline means the process, or its one worker
/// thread, did not run for that long (SIGSTOP, CPU starvation): a renewal may have arrived
/// meanwhile and wait unread in the watch, and must not lose to the timer. The observer's own
/// delay from a watch event to its action is under 50 ms at 10000 policies on this project's
/// 2-core machine (BENCHMARKS.md, Event p99 against the bare watch), so a timer twice that
/// late did not just queue behind other work.
const LATE_TIMER: std::time::Duration = std::time::Duration::from_millis(100);

/// Fresh looks in flight at once: after a long pause every policy's timer is late at once.
const FRESH_LOOKS_IN_FLIGHT: usize = 8;

impl Observer {
    /// Starts the observer task on `inbox`, with its status writer (`writers` writes in
    /// flight at most), lock watches and Pod watches (which feed `inbox` through `handle`),
    /// all under `supervisor`.
    pub fn spawn(
        (handle, inbox): (ObserverHandle, Inbox),
        client: Client,
        events: Events,
        metrics: Metrics,
        supervisor: &Supervisor,
        writers: usize,
    ) {
        let observer = Observer {
            entries: HashMap::new(),
            by_namespace: HashMap::new(),
            locks: LockTable {
                routes: HashMap::new(),
                seen: HashMap::new(),
                listed: HashMap::new(),
                watches: LockWatches::new(client.clone(), handle.clone(), metrics.clone(), supervisor.clone()),
            },
            pods: PodIndex::new(client.clone(), handle.clone(), metrics.clone(), supervisor.clone()),
            timers: DelayQueue::new(),
            status: StatusWriter::spawn(client.clone(), metrics.clone(), supervisor, writers),
            events,
            fresh_looks: FreshLooks {
                client,
                handle,
                metrics: metrics.clone(),
                supervisor: supervisor.clone(),
                permits: Arc::new(Semaphore::new(FRESH_LOOKS_IN_FLIGHT)),
            },
            metrics,
        };
        supervisor.spawn_forever("observer", observer.run(inbox));
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
                    Some(message) => self.handle(message),
                },
                Some(expired) = poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    let late = Instant::now().saturating_duration_since(expired.deadline().into_std());
                    let policy = expired.into_inner();
                    let Some(entry) = self.entries.get_mut(&policy) else { continue };
                    entry.timer = None;
                    let locks: Vec<LockKey> = entry.tracker.watched_locks().cloned().collect();
                    if late > LATE_TIMER && !locks.is_empty() {
                        if !entry.looking {
                            entry.looking = true;
                            self.metrics.late_timer();
                            debug!(%policy, ?late, "deadline timer went off late; reading the lock again before judging");
                            self.fresh_looks.take(policy, locks);
                        }
                    } else {
                        self.step(&policy, "deadline", |tracker, caches, now| tracker.deadline(caches, now));
                    }
                }
            }
        }
    }

    fn handle(&mut self, message: Message) {
        match message {
            Message::Register(registration) => self.register(*registration),
            Message::Unregister(policy) => self.unregister(&policy),
            Message::Retain(policies, listed_at) => {
                let keep: HashSet<PolicyKey> = policies.into_iter().collect();
                let gone: Vec<PolicyKey> = self
                    .entries
                    .iter()
                    .filter(|(k, e)| !keep.contains(*k) && e.registered < listed_at)
                    .map(|(k, _)| k.clone())
                    .collect();
                gone.iter().for_each(|policy| self.unregister(policy));
            }
            Message::Lock(run, event) => {
                if self.locks.watches.is_current(&event.scope(), run) {
                    self.lock_event(event);
                }
            }
            Message::PodsChanged(namespace, pod) => {
                let Some(policies) = self.by_namespace.get(namespace.as_str()) else { return };
                // A relist concerns every policy there; one Pod only those whose holder it
                // may be (or that label the leader's Pod).
                let affected: Vec<PolicyKey> = policies
                    .iter()
                    .filter(|policy| {
                        pod.as_deref().is_none_or(|pod| {
                            self.entries.get(*policy).is_some_and(|entry| entry.tracker.concerns_pod(pod))
                        })
                    })
                    .cloned()
                    .collect();
                for policy in affected {
                    self.step(&policy, "pods", |tracker, caches, now| tracker.pods_changed(caches, now));
                }
            }
            Message::FreshLook(policy, reads, at) => {
                let Some(entry) = self.entries.get_mut(&policy) else { return };
                entry.looking = false;
                self.step(&policy, "deadline", |tracker, caches, now| tracker.fresh_look(&reads, at, caches, now));
            }
        }
    }

    fn register(&mut self, registration: Registration) {
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
        self.by_namespace.entry(key.namespace.clone()).or_default().insert(key.clone());
        let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
            tracker: Box::new(PolicyTracker::new(&registration)),
            timer: None,
            registered: Instant::now(),
            looking: false,
        });
        entry.registered = Instant::now();
        self.step(&key, "register", |tracker, caches, now| tracker.register(registration, caches, now));
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
        if let Some(policies) = self.by_namespace.get_mut(&policy.namespace) {
            policies.remove(policy);
            if policies.is_empty() {
                self.by_namespace.remove(&policy.namespace);
            }
        }
        self.metrics.remove_policy(policy);
    }

    fn lock_event(&mut self, event: LockEvent) {
        match event {
            LockEvent::Applied(lock, content, at) => {
                self.locks.seen.insert(lock.clone(), content.clone());
                self.observe_lock(&lock, content, at);
            }
            LockEvent::Deleted(lock, at) => {
                self.locks.seen.remove(&lock);
                self.observe_lock(&lock, LockContent::Absent, at);
            }
            LockEvent::Blind(scope) => {
                info!(%scope, "lock watch interrupted; staleness is not judged until it lists again");
                for (_, policy) in self.locks.routed_in(&scope) {
                    self.step(&policy, "blind", |tracker, caches, now| tracker.blind(caches, now));
                }
            }
            LockEvent::Listed(scope, listed, at) => {
                self.locks.forget(&scope);
                self.locks.seen.extend(listed);
                self.locks.listed.entry(scope.type_).or_default().insert(scope.namespace.clone());
                for (lock, _) in self.locks.routed_in(&scope) {
                    let content = self.locks.seen.get(&lock).cloned().unwrap_or(LockContent::Absent);
                    self.observe_lock(&lock, content, at);
                }
            }
        }
    }

    fn observe_lock(&mut self, lock: &LockKey, content: LockContent, at: Moment) {
        let Some(policy) = self.locks.routes.get(lock).cloned() else { return };
        self.step(&policy, "lock", |tracker, caches, now| tracker.lock_observed(lock, content, at, caches, now));
    }

    /// Hands one input to the policy's tracker and carries out the actions it returns.
    /// Never waits: statuses and Events are queued for their writers.
    fn step(
        &mut self,
        policy: &PolicyKey,
        input_kind: &'static str,
        input: impl FnOnce(&mut PolicyTracker, &Caches<'_>, Moment) -> Vec<Action>,
    ) {
        let Some(entry) = self.entries.get_mut(policy) else { return };
        failpoints::panic_if_armed("observer-step", policy);
        self.metrics.observer_step(input_kind);
        let caches = Caches { locks: &self.locks, pods: &self.pods };
        for action in input(&mut entry.tracker, &caches, Moment::now()) {
            match action {
                Action::Watch(lock) => self.locks.watch(lock, policy),
                Action::Unwatch(lock) => self.locks.unwatch(policy, &lock),
                Action::Failover(leaderless) => self.metrics.failover(policy, leaderless),
                Action::WriteStatus(status) => self.status.write(policy.clone(), status),
                Action::Publish(notice) => {
                    debug!(%policy, reason = notice.reason, note = %notice.note, "event");
                    self.events.offer(entry.tracker.regarding(), notice);
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

impl FreshLooks {
    /// Reads `locks` again in the background and hands what they say to the observer.
    fn take(&self, policy: PolicyKey, locks: Vec<LockKey>) {
        let (client, handle, metrics, permits) =
            (self.client.clone(), self.handle.clone(), self.metrics.clone(), self.permits.clone());
        self.supervisor.spawn("fresh look", async move {
            let _permit = permits.acquire_owned().await;
            let mut reads = Vec::with_capacity(locks.len());
            for lock in locks {
                let content = match read_lock(&client, &lock, &metrics).await {
                    Ok(content) => Some(content),
                    Err(error) => {
                        warn!(%policy, %lock, %error, "could not read the lock again; judging the deadline as it is");
                        None
                    }
                };
                reads.push((lock, content));
            }
            handle.fresh_look(policy, reads, Moment::now()).await;
        });
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
