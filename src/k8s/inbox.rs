//! The observer's inbox: what its feeders (the policy controller, the lock watches, the Pod
//! watch) tell it, and the handle they tell it with. It has a module of its own so that the
//! feeders and the observer each depend on it, not on one another; `operator.rs` wires them.

use std::time::Instant;

use tokio::sync::mpsc;

use crate::domain::{
    lock_record::{LockContent, LockKey, LockScope},
    observation::Moment,
    policy_key::PolicyKey,
    tracking::Registration,
};

/// How many messages may wait; the feeders wait when it is full.
const CAPACITY: usize = 4096;

/// What the lock watches tell the observer.
#[derive(Clone, Debug)]
pub enum LockEvent {
    /// A lock object as the watch delivered it, and when it did: an observation dates from
    /// its delivery, not from when the observer got to it.
    Applied(LockKey, LockContent, Moment),
    Deleted(LockKey, Moment),
    /// The watch of this scope broke; it will list again.
    Blind(LockScope),
    /// A complete list of the locks in this scope.
    Listed(LockScope, Vec<(LockKey, LockContent)>, Moment),
}

impl LockEvent {
    /// The scope whose watch sent the event.
    pub fn scope(&self) -> LockScope {
        match self {
            LockEvent::Applied(lock, ..) | LockEvent::Deleted(lock, _) => lock.scope(),
            LockEvent::Blind(scope) | LockEvent::Listed(scope, ..) => scope.clone(),
        }
    }
}

/// Which run of a scope's watch sent an event. A scope watched again after its watch
/// stopped gets a new run, so events still queued from the stopped one are told apart
/// and ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchRun(pub u64);

/// One message to the observer.
#[derive(Debug)]
pub enum Message {
    Register(Box<Registration>),
    Unregister(PolicyKey),
    /// Forget every policy not in this list that registered before the list was begun:
    /// one registered since may have been created after the list was taken.
    Retain(Vec<PolicyKey>, Instant),
    Lock(WatchRun, LockEvent),
    /// A Pod in this namespace appeared, went or changed its labels (`Some(name)`), or its
    /// Pods were (re)listed (`None`).
    PodsChanged(String, Option<String>),
    /// The policy's watched locks as read again after its timer went off late (`None`
    /// where the read failed), and when the reads returned.
    FreshLook(PolicyKey, Vec<(LockKey, Option<LockContent>)>, Moment),
}

/// The receiving end, which the observer task owns.
pub type Inbox = mpsc::Receiver<Message>;

/// Cheap to clone; sends to the observer task. A send after the observer has stopped (the
/// operator is shutting down) is dropped.
#[derive(Clone)]
pub struct ObserverHandle {
    messages: mpsc::Sender<Message>,
}

/// A new inbox and the handle that sends to it.
pub fn inbox() -> (ObserverHandle, Inbox) {
    let (messages, inbox) = mpsc::channel(CAPACITY);
    (ObserverHandle { messages }, inbox)
}

impl ObserverHandle {
    pub async fn register(&self, registration: Registration) {
        self.send(Message::Register(Box::new(registration))).await;
    }

    pub async fn unregister(&self, policy: PolicyKey) {
        self.send(Message::Unregister(policy)).await;
    }

    pub async fn retain(&self, policies: Vec<PolicyKey>, listed_at: Instant) {
        self.send(Message::Retain(policies, listed_at)).await;
    }

    pub async fn lock_event(&self, run: WatchRun, event: LockEvent) {
        self.send(Message::Lock(run, event)).await;
    }

    pub async fn pods_changed(&self, namespace: String, pod: Option<String>) {
        self.send(Message::PodsChanged(namespace, pod)).await;
    }

    pub async fn fresh_look(&self, policy: PolicyKey, reads: Vec<(LockKey, Option<LockContent>)>, at: Moment) {
        self.send(Message::FreshLook(policy, reads, at)).await;
    }

    async fn send(&self, message: Message) {
        let _ = self.messages.send(message).await;
    }
}
