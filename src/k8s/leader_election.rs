//! The operator's own leader election over a coordination.k8s.io/v1 Lease: the I/O around
//! [`crate::domain::leadership::Elector`].
//!
//! Only the leader runs the controller and the observer and so only it writes Deployments,
//! statuses and Events. A leader that cannot renew within renewDeadline stops leading (the
//! process exits and is restarted, as client-go programs do), and a leader that shuts down
//! releases the Lease so a standby takes over at once instead of after leaseDuration.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    domain::{
        leadership::{Attempt, Elector},
        lock_record::{LeaderElectionRecord, LockContent, from_lease_spec},
        observation::Moment,
    },
    k8s::{api_call, status_code},
    metrics::Metrics,
};

/// Where the operator's own Lease lives.
#[derive(Clone, Debug)]
pub struct LeaseLocation {
    pub namespace: String,
    pub name: String,
}

/// Runs the election until `release` becomes true (then a held Lease is released). `leading`
/// is set to true once this process leads; if it is ever set back to false, leadership was
/// lost and the caller must stop at once.
///
/// As client-go bounds a renewal by renewDeadline, a leader whose last successful renewal is
/// renewDeadline old stops leading at that moment, even with a request still hanging on an
/// unresponsive API server: a standby can take over only after leaseDuration (longer) from
/// the same renewal, so two replicas never act at once.
pub async fn run(
    client: Client,
    location: LeaseLocation,
    mut elector: Elector,
    leading: watch::Sender<bool>,
    metrics: Metrics,
    mut release: watch::Receiver<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &location.namespace);
    let timings = elector.timings();
    let mut last_renewal: Option<Instant> = None;
    info!(identity = elector.identity(), lease = %format!("{}/{}", location.namespace, location.name), "joining leader election");
    loop {
        // Read first: a borrow() guard living through the match would deadlock the
        // send_replace() inside it.
        let was_leading = *leading.borrow();
        let give_up_at = last_renewal.filter(|_| was_leading).map(|renewed| renewed + timings.renew_deadline);
        let attempt = async {
            let attempt = try_acquire_or_renew(&api, &location.name, &mut elector, &metrics);
            match give_up_at {
                Some(at) => tokio::time::timeout_at(at.into(), attempt).await.unwrap_or(false),
                None => attempt.await,
            }
        };
        let succeeded = tokio::select! {
            succeeded = attempt => succeeded,
            _ = released(&mut release) => {
                stop(&api, &location.name, &elector, &leading, &metrics).await;
                return;
            }
        };
        let now = Instant::now();
        match (succeeded, was_leading) {
            (true, false) => {
                info!(identity = elector.identity(), "became leader");
                leading.send_replace(true);
                metrics.set_leading(true);
                last_renewal = Some(now);
            }
            (true, true) => last_renewal = Some(now),
            (false, true) if give_up_at.is_some_and(|at| now >= at) => {
                warn!(identity = elector.identity(), "could not renew the lease within renewDeadline; leadership lost");
                leading.send_replace(false);
                metrics.set_leading(false);
                return;
            }
            _ => {}
        }
        // A leader waits retryPeriod between renewals, and never sleeps past its renew
        // deadline. Contenders wait retryPeriod times a random factor in [1, 1.2), so that
        // they do not all hit the API server at once (client-go stretches theirs by [1, 2.2),
        // JitterFactor 1.2; a few operator replicas need less spread).
        let mut wake = now + if *leading.borrow() { timings.retry_period } else { jittered(timings.retry_period) };
        if let Some(renewed) = last_renewal.filter(|_| *leading.borrow()) {
            wake = wake.min(renewed + timings.renew_deadline);
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = released(&mut release) => {
                stop(&api, &location.name, &elector, &leading, &metrics).await;
                return;
            }
        }
    }
}

/// Until release is asked for. (The guard `wait_for` returns is not `Send`; it goes here.)
async fn released(release: &mut watch::Receiver<bool>) {
    let _ = release.wait_for(|release| *release).await;
}

/// Leaves the election, releasing the Lease if this process holds it.
async fn stop(api: &Api<Lease>, name: &str, elector: &Elector, leading: &watch::Sender<bool>, metrics: &Metrics) {
    if *leading.borrow() {
        release_lease(api, name, elector, metrics).await;
        metrics.set_leading(false);
    }
}

async fn try_acquire_or_renew(api: &Api<Lease>, name: &str, elector: &mut Elector, metrics: &Metrics) -> bool {
    let current = match api_call(metrics, "get_own_lease", api.get_opt(name)).await {
        Ok(lease) => lease,
        Err(error) => {
            warn!(%error, "could not read the leader-election Lease");
            return false;
        }
    };
    let record =
        current.as_ref().and_then(|lease| match from_lease_spec(serde_json::to_value(&lease.spec).ok().as_ref()) {
            LockContent::Record(record) => Some(record),
            _ => None,
        });
    let now = Moment::now();
    let attempt = match (&current, &record) {
        (None, _) => elector.attempt(now, None),
        // An unreadable record in our own Lease: overwrite it as if it had expired.
        (Some(_), None) => elector.attempt(
            now,
            Some(&LeaderElectionRecord {
                holder_identity: String::new(),
                lease_duration_seconds: 0,
                acquire_time: None,
                renew_time: None,
                leader_transitions: 0,
            }),
        ),
        (Some(_), Some(record)) => elector.attempt(now, Some(record)),
    };
    let result = match &attempt {
        Attempt::HeldByOther { .. } => return false,
        Attempt::Create(new) => {
            let lease =
                Lease { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, spec: Some(spec(new)) };
            api_call(metrics, "create_own_lease", api.create(&PostParams::default(), &lease)).await.map(|_| new.clone())
        }
        Attempt::Update(new) => {
            let mut lease = current.clone().unwrap_or_default();
            lease.spec = Some(spec(new));
            // replace carries the resourceVersion read above: if anyone wrote in between, the
            // API server refuses with 409 and nothing is overwritten.
            api_call(metrics, "update_own_lease", api.replace(name, &PostParams::default(), &lease))
                .await
                .map(|_| new.clone())
        }
    };
    match result {
        Ok(written) => {
            elector.written(now, written);
            true
        }
        Err(error) if status_code(&error) == Some(409) => false,
        Err(error) => {
            warn!(%error, "could not write the leader-election Lease");
            false
        }
    }
}

async fn release_lease(api: &Api<Lease>, name: &str, elector: &Elector, metrics: &Metrics) {
    let Ok(Some(mut lease)) = api_call(metrics, "get_own_lease", api.get_opt(name)).await else {
        return;
    };
    let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
    if holder != Some(elector.identity()) {
        return;
    }
    lease.spec = Some(spec(&elector.release_record(Moment::now())));
    match api_call(metrics, "update_own_lease", api.replace(name, &PostParams::default(), &lease)).await {
        Ok(_) => info!(identity = elector.identity(), "released the leader-election Lease"),
        Err(error) => warn!(%error, "could not release the leader-election Lease"),
    }
}

fn spec(record: &LeaderElectionRecord) -> LeaseSpec {
    let time = |t: &Option<String>| t.as_deref().and_then(|t| t.parse().ok()).map(MicroTime);
    LeaseSpec {
        holder_identity: Some(record.holder_identity.clone()),
        lease_duration_seconds: i32::try_from(record.lease_duration_seconds).ok(),
        acquire_time: time(&record.acquire_time),
        renew_time: time(&record.renew_time),
        lease_transitions: i32::try_from(record.leader_transitions).ok(),
        ..Default::default()
    }
}

fn jittered(period: Duration) -> Duration {
    // Sub-second clock noise is jitter enough for a handful of replicas.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let noise = u64::from(nanos) ^ u64::from(std::process::id());
    let fraction = (noise % 200) as f64 / 1000.0;
    period.mul_f64(1.0 + fraction)
}
