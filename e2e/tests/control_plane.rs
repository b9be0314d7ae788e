//! The ground every other test stands on: a real v1.37 control plane and real client-go
//! electors, behaving as client-go says they do.

use std::time::{Duration, Instant};

use election_e2e::{
    Elector, ElectorBuild, TestNamespace, admin_client, kubectl_ok, wait_control_plane_healthy, wait_for,
};
use k8s_openapi::api::{
    apps::v1::ReplicaSet,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Endpoints, Pod},
};
use kube::{Api, api::ListParams};
use serde_json::Value;

const LEASE: Duration = Duration::from_secs(4);
const RETRY: Duration = Duration::from_secs(1);
/// The longest a client-go replica that does not lead waits between two attempts, as a
/// multiple of retryPeriod: acquire() (tools/leaderelection/leaderelection.go) retries with
/// wait.JitterUntil(..., RetryPeriod, JitterFactor = 1.2, sliding), and wait.Jitter stretches
/// each wait by a random factor in [1, 1 + 1.2).
const MAX_RETRY_STRETCH: f64 = 2.2;
/// What the requests of a handover add to client-go's timers: the rest of an attempt under
/// way when the record changes, the GET that observes the change, the GET and Update that
/// take the lock, and a renewal already sent when the leader died landing after it. Each
/// takes milliseconds on this local control plane (the tests run one at a time), and even
/// the saturated API server of BENCHMARKS.md's N = 1000 run delivered watch events within
/// 177 ms at p99: one second for the whole chain, with the elector's stdout line and the
/// tests' 100 ms poll, is several times what it takes.
const API_LATENCY: Duration = Duration::from_secs(1);

fn flags(lock_type: &str, name: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("--leader-elect-resource-lock={lock_type}"),
        format!("--leader-elect-resource-name={name}"),
        format!("--leader-elect-resource-namespace={namespace}"),
        "--leader-elect-lease-duration=4s".into(),
        "--leader-elect-renew-deadline=3s".into(),
        "--leader-elect-retry-period=1s".into(),
    ]
}

#[tokio::test]
async fn the_server_is_a_real_kubernetes_1_37() {
    // Every test starts on a working control plane (the others do it in TestNamespace::new).
    wait_control_plane_healthy();
    let version: Value = serde_json::from_str(&kubectl_ok(&["version", "-o", "json"], None)).unwrap();
    let server = version["serverVersion"]["gitVersion"].as_str().unwrap();
    assert!(server.starts_with("v1.37."), "server version {server}");
    assert_eq!(version["serverVersion"]["minor"], "37");

    let resources = kubectl_ok(&["api-resources", "-o", "name"], None);
    for needed in ["leases.coordination.k8s.io", "deployments.apps", "events.events.k8s.io"] {
        assert!(resources.lines().any(|r| r == needed), "{needed} not served:\n{resources}");
    }
}

#[tokio::test]
async fn deployments_roll_out_into_replica_sets_and_pods() {
    let ns = TestNamespace::new("rollout");
    kubectl_ok(&["-n", &ns.name, "create", "deployment", "web", "--image=localhost/pause:e2e", "--replicas=2"], None);
    let client = admin_client().await;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client, &ns.name);
    // Liveness deadlines. The deployment controller makes the ReplicaSet at its first sync
    // of the new Deployment (its workqueue's per-item backoff, 5 ms doubling, grows only on
    // errors), and a bound pause Pod runs within seconds (a local image, nothing to pull).
    wait_for("a ReplicaSet", Duration::from_secs(30), || async {
        replica_sets.list(&ListParams::default()).await.ok().filter(|l| !l.items.is_empty())
    })
    .await;
    // The scheduler binds them to the node, whose kubelet runs them (the locally built
    // pause image: no registry here).
    let listed = wait_for("two Running Pods", Duration::from_secs(60), || async {
        pods.list(&ListParams::default()).await.ok().filter(|l| {
            l.items.len() == 2
                && l.items.iter().all(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        })
    })
    .await;
    assert!(listed.items.iter().all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("e2e-node")));
}

#[tokio::test]
async fn three_electors_elect_one_leader_and_a_killed_leader_is_replaced_in_time() {
    let ns = TestNamespace::new("elect");
    let electors: Vec<Elector> = (0..3)
        .map(|i| {
            Elector::spawn(ElectorBuild::Current, &format!("elector-{i}"), &[], &flags("leases", "lock", &ns.name))
        })
        .collect();
    let leases: Api<Lease> = Api::namespaced(admin_client().await, &ns.name);
    // Liveness deadlines: each elector's first attempt is immediate (JitterUntil waits after
    // it), so the first to create the Lease leads within a request of starting, and the
    // others report it at their next attempt, within 2.2 x retryPeriod (2.2 s).
    let holder = wait_for("a Lease holder", Duration::from_secs(20), || async {
        leases.get_opt("lock").await.ok().flatten()?.spec?.holder_identity
    })
    .await;
    let mut leaders: Vec<Elector> = Vec::new();
    let mut others = Vec::new();
    for elector in electors {
        if elector.identity == holder { leaders.push(elector) } else { others.push(elector) }
    }
    let mut leader = leaders.pop().expect("the holder is one of ours");
    leader.wait_event("started_leading", Duration::from_secs(10)).await;
    for other in &others {
        other.wait_event("new_leader", Duration::from_secs(10)).await;
        assert!(!other.has_event("started_leading"), "{} leads too", other.identity);
    }

    // The worst case of a handover after SIGKILL, from client-go's leaderelection.go:
    // - the leader's last renewal is stored at the kill at the latest;
    // - a follower sees that change at its next attempt, up to 2.2 x retryPeriod later
    //   (MAX_RETRY_STRETCH), and tryAcquireOrRenew starts its expiry clock then: it sets
    //   observedTime when it reads a changed record, whatever the record's renewTime says;
    // - isLeaseValid holds the lease valid until observedTime + the record's
    //   leaseDurationSeconds, and the follower takes it at its first attempt after that, up
    //   to another 2.2 x retryPeriod later;
    // - plus the API latency of those attempts (API_LATENCY).
    // leaseDuration + 2 x 2.2 x retryPeriod + API_LATENCY = 4 + 4.4 + 1 = 9.4 s. (The bound
    // leaseDuration + 2 x retryPeriod, which left the jitter out, failed a correct handover
    // that took 6.29 s.)
    let bound = LEASE + RETRY.mul_f64(2.0 * MAX_RETRY_STRETCH) + API_LATENCY;
    let killed_at = Instant::now();
    leader.kill();
    // Two seconds past the bound, so that a late handover fails the assertion below with the
    // time it took rather than as a timeout.
    let successor = wait_for("another elector to take over", bound + Duration::from_secs(2), || async {
        others.iter().find(|o| o.has_event("started_leading")).map(|o| o.identity.clone())
    })
    .await;
    let took = killed_at.elapsed();
    println!("handover after SIGKILL took {took:?} (leaseDuration {LEASE:?}, retryPeriod {RETRY:?})");
    assert!(took <= bound, "handover took {took:?}, more than {bound:?}");
    let new_holder = leases.get("lock").await.unwrap().spec.unwrap().holder_identity.unwrap();
    assert_eq!(new_holder, successor);
    assert_eq!(others.iter().filter(|o| o.has_event("started_leading")).count(), 1, "exactly one successor");
}

#[tokio::test]
async fn a_stopped_leader_leaves_its_lease_unrenewed() {
    let ns = TestNamespace::new("stop");
    let leader = Elector::spawn(ElectorBuild::Current, "frozen", &[], &flags("leases", "lock", &ns.name));
    leader.wait_event("started_leading", Duration::from_secs(20)).await;
    let leases: Api<Lease> = Api::namespaced(admin_client().await, &ns.name);
    let renew_time = || async { leases.get("lock").await.ok()?.spec?.renew_time.map(|t| t.0) };
    let first = renew_time().await.unwrap();
    // A leader renews a retryPeriod after its last renewal returned (renew() runs wait.Until,
    // without jitter): within 1 s and an Update's latency. 5 s is a liveness deadline.
    wait_for("a renewal", Duration::from_secs(5), || async { renew_time().await.filter(|t| *t != first) }).await;

    leader.signal("STOP");
    // A renewal already sent when the process stopped may still land, within the Update's
    // latency (API_LATENCY), which two retry periods cover; after that the record must stay
    // still for a whole lease duration and more.
    let settle_deadline = Instant::now() + RETRY * 2;
    let mut frozen = renew_time().await.unwrap();
    while Instant::now() < settle_deadline {
        frozen = renew_time().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watch_until = Instant::now() + LEASE + RETRY * 2;
    while Instant::now() < watch_until {
        assert_eq!(renew_time().await.unwrap(), frozen, "a stopped process renewed its lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    leader.signal("CONT");
}

#[tokio::test]
async fn the_legacy_elector_writes_the_annotation_record_on_endpoints_and_configmaps() {
    let ns = TestNamespace::new("legacy");
    let client = admin_client().await;
    for lock_type in ["endpoints", "configmaps"] {
        let elector = Elector::spawn(
            ElectorBuild::Legacy,
            &format!("legacy-{lock_type}"),
            &[],
            &flags(lock_type, lock_type, &ns.name),
        );
        // A liveness deadline: alone on a new lock, the elector takes it at its first,
        // immediate attempt.
        elector.wait_event("started_leading", Duration::from_secs(60)).await;
        let annotations = match lock_type {
            "endpoints" => {
                Api::<Endpoints>::namespaced(client.clone(), &ns.name)
                    .get(lock_type)
                    .await
                    .unwrap()
                    .metadata
                    .annotations
            }
            _ => {
                Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
                    .get(lock_type)
                    .await
                    .unwrap()
                    .metadata
                    .annotations
            }
        };
        let record: Value =
            serde_json::from_str(&annotations.unwrap()["control-plane.alpha.kubernetes.io/leader"]).unwrap();
        assert_eq!(record["holderIdentity"], format!("legacy-{lock_type}"));
        assert_eq!(record["leaseDurationSeconds"], 4);
        assert_eq!(record["leaderTransitions"], 0);
        assert!(record["renewTime"].as_str().is_some_and(|t| t.ends_with('Z')), "{record}");
    }
}
