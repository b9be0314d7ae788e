//! Every task of the operator runs under a [`Supervisor`]: a task that panics, or that was
//! meant to run for the process's life and ends, is reported, `/healthz` fails from then on,
//! and the operator stops (releasing its Lease so that a standby takes over at once) and
//! exits non-zero, so the kubelet restarts it. Without this a dead observer left the process
//! alive, Ready and holding its Lease while no policy's status, Event or metric moved again.
//!
//! Tasks stopped on purpose (a namespace's watch when its last policy goes, everything at
//! shutdown) are not failures: an aborted task is dropped before it can report, and once
//! [`Supervisor::stop`] is called an ending task is expected.

use std::{
    any::Any,
    future::Future,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::FutureExt;
use tokio::{
    sync::mpsc,
    task::{AbortHandle, JoinHandle},
};
use tracing::error;

/// A task that ended when it should not have, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    pub task: String,
    /// "panicked: <message>" or "ended".
    pub how: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} {}", self.task, self.how)
    }
}

/// Spawns and watches the operator's tasks. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

struct Shared {
    failures: mpsc::UnboundedSender<TaskFailure>,
    /// Every task spawned and not known to be finished, for [`Supervisor::abort_all`].
    tasks: Mutex<Vec<AbortHandle>>,
    /// The first failure, which `/healthz` reports.
    first_failure: Mutex<Option<TaskFailure>>,
    stopping: AtomicBool,
}

/// Where failures arrive; the operator's main loop owns it.
pub type Failures = mpsc::UnboundedReceiver<TaskFailure>;

/// Whether any task failed, for `/healthz`. Cheap to clone.
#[derive(Clone)]
pub struct Liveness {
    shared: Arc<Shared>,
}

impl Liveness {
    /// `None` while every task runs; the first failure once one did not.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.shared.first_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Supervisor {
    pub fn new() -> (Self, Failures) {
        let (failures, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            failures,
            tasks: Mutex::default(),
            first_failure: Mutex::default(),
            stopping: AtomicBool::new(false),
        });
        (Supervisor { shared }, receiver)
    }

    pub fn liveness(&self) -> Liveness {
        Liveness { shared: self.shared.clone() }
    }

    /// Spawns a task meant to run until the process stops: its end, like a panic, is a
    /// failure.
    pub fn spawn_forever<F>(&self, task: impl Into<String>, future: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_inner(task.into(), future, true)
    }

    /// Spawns a task that ends when its work is done (a write, a retry, a one-off wait): only
    /// a panic is a failure.
    pub fn spawn<F>(&self, task: impl Into<String>, future: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn_inner(task.into(), future, false)
    }

    /// The operator is stopping: tasks that end from now on do so on purpose.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
    }

    /// Stops every task spawned here, at once: a replica that no longer leads (or is
    /// shutting down) must not write another status or Event, and the operator's Lease is
    /// released only after this.
    pub fn abort_all(&self) {
        self.stop();
        let tasks = std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            task.abort();
        }
    }

    /// Reports a failure of something that is not a spawned task (a server that returned an
    /// error, say).
    pub fn report(&self, task: impl Into<String>, how: impl Into<String>) {
        self.shared.fail(TaskFailure { task: task.into(), how: how.into() });
    }

    fn spawn_inner<F>(&self, task: String, future: F, forever: bool) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shared = self.shared.clone();
        let handle = tokio::spawn(async move {
            let outcome = AssertUnwindSafe(future).catch_unwind().await;
            let how = match outcome {
                Err(panic) => format!("panicked: {}", panic_message(panic.as_ref())),
                Ok(()) if forever && !shared.stopping.load(Ordering::Acquire) => "ended".to_string(),
                Ok(()) => return,
            };
            shared.fail(TaskFailure { task, how });
        });
        let mut tasks = self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() >= tasks.capacity() {
            // Short-lived tasks (writes, retries) come and go: drop the finished before the
            // list grows, so it stays as long as the tasks that run.
            tasks.retain(|task| !task.is_finished());
        }
        tasks.push(handle.abort_handle());
        drop(tasks);
        handle
    }
}

impl Shared {
    fn fail(&self, failure: TaskFailure) {
        error!(task = %failure.task, how = %failure.how, "a task of the operator failed; stopping");
        self.first_failure.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(|| failure.clone());
        let _ = self.failures.send(failure);
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_reported_with_its_task_and_message() {
        let (supervisor, mut failures) = Supervisor::new();
        supervisor.spawn("status writer", async { panic!("invalid deadline") });
        let failure = failures.recv().await.unwrap();
        assert_eq!(failure, TaskFailure { task: "status writer".into(), how: "panicked: invalid deadline".into() });
        assert_eq!(supervisor.liveness().failure(), Some(failure));
    }

    #[tokio::test]
    async fn a_forever_task_that_ends_is_a_failure_unless_stopping() {
        let (supervisor, mut failures) = Supervisor::new();
        assert!(supervisor.liveness().failure().is_none());
        supervisor.spawn_forever("observer", async {});
        assert_eq!(failures.recv().await.unwrap().how, "ended");
        supervisor.stop();
        supervisor.spawn_forever("observer", async {}).await.unwrap();
        supervisor.spawn("a write", async {}).await.unwrap();
        assert!(failures.try_recv().is_err(), "an end on purpose, or a finite task's, is no failure");
    }

    #[tokio::test]
    async fn abort_all_stops_every_task_without_a_failure() {
        let (supervisor, mut failures) = Supervisor::new();
        let tasks: Vec<_> =
            (0..100).map(|i| supervisor.spawn_forever(format!("worker {i}"), std::future::pending())).collect();
        supervisor.abort_all();
        for task in tasks {
            assert!(task.await.unwrap_err().is_cancelled());
        }
        assert!(failures.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_aborted_task_is_no_failure() {
        let (supervisor, mut failures) = Supervisor::new();
        let watch = supervisor.spawn_forever("pod watch", std::future::pending());
        watch.abort();
        // Once the handle says cancelled, the task (and its report) is gone.
        assert!(watch.await.unwrap_err().is_cancelled());
        assert!(failures.try_recv().is_err());
    }
}
