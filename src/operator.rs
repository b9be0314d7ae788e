//! Assembles the running operator from its parts: the observer (with its lock watches), the
//! policy controller, the Event publisher and, with --leader-elect, the election that
//! decides which replica runs them. Every task runs under the [`Supervisor`]; the first to
//! fail stops the operator.
//!
//! Stopping happens in one order, whatever the cause (SIGTERM, a failed task, lost
//! leadership): the workers stop first (the controller, the observer, the status writers and
//! Event publishers, the watches), and only then is the Lease released, so that no write of
//! this replica can land after a standby has taken over.

use std::time::Duration;

use kube::{Api, Client, api::ListParams};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    Error, Result,
    api::ElectionPolicy,
    domain::{
        leadership::Elector,
        namespaces::WatchedNamespaces,
        validation::{PolicyOptions, Timings},
    },
    http::Readiness,
    k8s::{
        controller,
        events::Events,
        inbox::inbox,
        leader_election::{self, LeaseLocation},
        observer::Observer,
        status_code,
    },
    metrics::Metrics,
    supervisor::{Failures, Supervisor},
};

/// How the operator runs, from flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub options: PolicyOptions,
    pub concurrency: u16,
    /// Status writes, and Event writes, in flight at once.
    pub write_concurrency: u16,
    /// This process's name in Events and in the leader-election Lease.
    pub identity: String,
    /// `Some` with --leader-elect.
    pub election: Option<(LeaseLocation, Timings)>,
}

/// Waits until the API server answers and the CRD is installed. A missing CRD is an error
/// worth stopping for, with instructions; an unreachable API server is waited for.
pub async fn check_crd(client: &Client, namespaces: &WatchedNamespaces) -> Result<()> {
    // A namespaced install may list only in its namespaces.
    let api: Api<ElectionPolicy> = match namespaces {
        WatchedNamespaces::All => Api::all(client.clone()),
        WatchedNamespaces::Only(list) => {
            Api::namespaced(client.clone(), list.first().map_or("default", String::as_str))
        }
    };
    let mut delay = Duration::from_millis(500);
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(()),
            Err(error) if status_code(&error) == Some(404) => {
                return Err(Error::CrdNotInstalled(error));
            }
            Err(error) => {
                warn!(%error, retry_in = ?delay, "cannot list ElectionPolicies yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The running parts the operator needs to stop in order.
pub struct Runtime {
    pub client: Client,
    pub metrics: Metrics,
    pub readiness: Readiness,
    pub supervisor: Supervisor,
    pub failures: Failures,
}

/// Runs until `shutdown` becomes true (returns Ok), leadership is lost, or a task fails
/// (returns Err).
pub async fn run(runtime: Runtime, settings: Settings, shutdown: watch::Receiver<bool>) -> Result<()> {
    let Runtime { client, metrics, readiness, supervisor, mut failures } = runtime;
    // Told to release the Lease once the workers have stopped.
    let (release, release_requested) = watch::channel(false);
    let mut lost_leadership = None;
    let mut election = None;
    if let Some((location, timings)) = settings.election.clone() {
        let (leading, mut leading_changes) = watch::channel(false);
        readiness.set(true);
        // Awaited before returning: it releases the Lease, so a standby takes over at once;
        // returning first would end the process before the release is written.
        let task = election.insert(tokio::spawn(leader_election::run(
            client.clone(),
            location,
            Elector::new(settings.identity.clone(), timings),
            leading,
            metrics.clone(),
            release_requested,
        )));
        let mut waiting = shutdown.clone();
        tokio::select! {
            _ = leading_changes.wait_for(|leading| *leading) => {}
            _ = waiting.wait_for(|stop| *stop) => {
                release.send_replace(true);
                let _ = task.await;
                return Ok(());
            }
            Some(failure) = failures.recv() => {
                release.send_replace(true);
                let _ = task.await;
                return Err(Error::TaskFailed(failure));
            }
        }
        readiness.set(false);
        lost_leadership = Some(async move {
            let _ = leading_changes.wait_for(|leading| !*leading).await;
        });
    }

    if settings.election.is_none() {
        // The only replica acts, as a leader would.
        metrics.set_leading(true);
    }
    let events = Events::start(
        client.clone(),
        settings.identity.clone(),
        metrics.clone(),
        &supervisor,
        settings.write_concurrency.into(),
    );
    let (observer, observer_inbox) = inbox();
    Observer::spawn(
        (observer.clone(), observer_inbox),
        client.clone(),
        events.clone(),
        metrics.clone(),
        &supervisor,
        usize::from(settings.write_concurrency),
    );

    let stopping = tokio_util::sync::CancellationToken::new();
    {
        let (stopping, mut stop) = (stopping.clone(), shutdown.clone());
        supervisor.spawn("shutdown watch", async move {
            let _ = stop.wait_for(|stop| *stop).await;
            stopping.cancel();
        });
    }
    let ready = readiness.clone();
    let parts = controller::Parts {
        client,
        options: settings.options,
        observer,
        events,
        metrics,
        supervisor: supervisor.clone(),
        concurrency: settings.concurrency,
    };
    let controller = controller::run(
        parts,
        move || {
            info!("caches synced; reconciling");
            ready.set(true);
        },
        stopping.clone(),
    );
    let lost = async move {
        match lost_leadership {
            Some(lost) => lost.await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        // Ends once `shutdown` cancelled it, its reconciles finished.
        _ = controller => Ok(()),
        _ = lost => {
            error!("leadership lost; stopping so that only the new leader writes");
            Err(Error::LeadershipLost)
        }
        Some(failure) = failures.recv() => Err(Error::TaskFailed(failure)),
    };
    // Workers first (the controller's future is dropped above), then the Lease.
    stopping.cancel();
    supervisor.abort_all();
    info!("workers stopped");
    release.send_replace(true);
    if let Some(election) = election {
        let _ = election.await;
    }
    result
}
