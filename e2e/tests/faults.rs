//! Reliability on the real control plane: the API server and etcd going away, the operator
//! killed mid-work, watch history compacted away, concurrent edits and throttling, hostile
//! lock objects, and isolation between namespaces.
//!
//! These tests stop and start control-plane components (e2e/cluster stop|start), so they
//! take the cluster away from everything else while they run; the runner runs tests one at
//! a time.

use std::time::{Duration, Instant};

use election_e2e::{
    App, Elector, ElectorBuild, Operator, Stopped, TestNamespace, admin_client, audited_requests, compact_etcd,
    condition, count_policy_events, create_app_objects, get_deployment, get_policy, injected_env, kubectl, kubectl_ok,
    policy_events, sample, service_account_kubeconfig, started_operator, wait_control_plane_healthy, wait_for,
    wait_policy, wait_policy_event, wait_until,
};
use election_operator::api::PolicyState;
use futures::FutureExt;
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::{Api, Client, api::ListParams};
use serde_json::{Value, json};

/// A liveness deadline for everything that eventually happens after a fault. The slowest:
/// after a restart of kube-apiserver (about 6 s idle: 3 s to stop, 3 s to be ready), the
/// operator's watches list again within their back-off's 2 s cap (WatchBackoff), failed
/// reconciles come back after 5 s and failed status writes within 5 s; a released lock is
/// taken within 2.2 x retryPeriod. 60 s leaves room for several such rounds.
const SETTLE: Duration = Duration::from_secs(60);

/// The app `name` with the given (leaseDuration, renewDeadline, retryPeriod).
async fn app(client: &Client, namespace: &str, name: &str, replicas: usize, timings: (&str, &str, &str)) -> App {
    let spec = json!({"leaseDuration": timings.0, "renewDeadline": timings.1, "retryPeriod": timings.2});
    App::create(client, namespace, name, replicas, spec).await
}

/// Keeps a component down for `outage`, checking the whole time that the operator still
/// runs and never calls the long-lease app stale; then starts it again (which waits for
/// /readyz) and returns the instant it was ready.
async fn outage(
    component: &str,
    outage: Duration,
    operator: &mut Operator,
    long: &App,
    short: &App,
) -> (Instant, bool) {
    let stopped = Stopped::new(component);
    let until = Instant::now() + outage;
    let mut short_unobservable = false;
    while Instant::now() < until {
        let text = operator.metrics().await;
        let stale = sample(&text, &long.series("election_lease_stale"));
        assert_eq!(
            stale,
            Some(0.0),
            "stale while the API was away:\n{}",
            text.lines().filter(|l| l.contains("stale")).collect::<Vec<_>>().join("\n")
        );
        short_unobservable |= sample(&text, &short.series("election_lease_unobservable")) == Some(1.0);
        assert!(operator.is_running(), "the operator exited while {component} was down");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stopped.start();
    (Instant::now(), short_unobservable)
}

#[tokio::test]
async fn api_server_and_etcd_outages_are_blindness_not_staleness_and_recovery_is_quick() {
    let ns = TestNamespace::new("outage");
    let mut operator = started_operator(&[]).await;
    let client = admin_client().await;
    // A leader whose lease outlives the outage, and one whose lease cannot (its replicas give
    // up after 4s and exit, as client-go programs do).
    //
    // The long leader keeps its lease if a renewal succeeds within renewDeadline +
    // retryPeriod of its last one (client-go's renew(): wait.Until waits a retryPeriod, then
    // PollUntilContextTimeout retries every retryPeriod for renewDeadline). Its last renewal
    // was stored at most a retryPeriod and an Update's latency before the stop, so it holds
    // on for renewDeadline, less that latency, after the stop began. The API server is away
    // for the stop (up to 3 s: e2e/cluster kills it after a 3 s grace), the outage (30 s)
    // and its restart until /readyz (3 s idle, longer under load), and the leader's next try
    // comes within a retryPeriod (1 s): 37 s idle. renewDeadline 38s left under a second for
    // a slow restart; 50s leaves 13 s. (etcd's outage is half as long.) The standby takes
    // the lock only once the record has not changed for leaseDuration (60s) since it last
    // saw it change, which is later still.
    let long = app(&client, &ns.name, "long", 2, ("60s", "50s", "1s")).await;
    let short = app(&client, &ns.name, "short", 1, ("6s", "4s", "1s")).await;
    let _long_electors: Vec<Elector> =
        long.pods.iter().map(|p| Elector::spawn(ElectorBuild::Current, p, &long.env, &[])).collect();
    let _short_elector = Elector::spawn(ElectorBuild::Current, &short.pods[0], &short.env, &[]);
    let long_leader = long.leader(&client, PolicyState::Healthy).await;
    short.leader(&client, PolicyState::Healthy).await;
    // A lock the test writes itself, to time how soon the operator sees changes again.
    let probe_policy = json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": "probe"},
        "spec": {"selector": {"matchLabels": {"app": "probe"}}, "lock": {"name": "probe"}, "leaseDuration": "600s", "renewDeadline": "500s", "injection": {"mode": "None"}}});
    kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], Some(&probe_policy.to_string()));
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &ns.name);
    let hold = |holder: String| {
        let leases = leases.clone();
        async move {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "probe"},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 600}});
            let params = kube::api::PatchParams::apply("e2e-probe").force();
            leases.patch("probe", &params, &kube::api::Patch::Apply(&lease)).await.is_ok()
        }
    };
    wait_for("the probe lease written", SETTLE, || hold("before".into()).then(|ok| async move { ok.then_some(()) }))
        .await;
    wait_policy(&client, &ns.name, "probe", "the probe lease seen", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.leader == "before")
    })
    .await;

    for (component, down_for) in [("kube-apiserver", Duration::from_secs(30)), ("etcd", Duration::from_secs(15))] {
        let (ready_at, short_unobservable) = outage(component, down_for, &mut operator, &long, &short).await;
        if component == "kube-apiserver" {
            // Its deadline passed while the operator was blind: Unknown, not Stale.
            assert!(short_unobservable, "the short lease was never reported unobservable");
        }
        // Seeing again: a change the test makes to a lock after /readyz reaches the operator
        // within 5 s. Timed from the moment the change exists: right after etcd returns, the
        // API server itself may need longer than that before it accepts a write.
        let holder = format!("after-{component}");
        wait_for("the probe lease rewritten", SETTLE, || {
            hold(holder.clone()).then(|ok| async move { ok.then_some(()) })
        })
        .await;
        let written_at = Instant::now();
        let info = format!(
            r#"election_leader_info{{namespace="{}",policy="probe",leader="{holder}",lock="leases/{}/probe"}}"#,
            ns.name, ns.name
        );
        // The operator's lock watch either outlived the outage (etcd's: the API server
        // stayed up) and delivers the change within a watch's latency, or broke and retries
        // with WatchBackoff, capped at 2 s: it lists again at most 2 s after the write, and
        // the observer sets the metric on that list, read here within the 100 ms poll. The
        // remaining ~3 s are for that list, which a just-restarted API server may answer
        // slowly.
        wait_for(
            &format!("the operator to see a change after {component} came back"),
            Duration::from_secs(5),
            || async { (sample(&operator.metrics().await, &info) == Some(1.0)).then_some(()) },
        )
        .await;
        println!(
            "{component} down {down_for:?}: a write was accepted {:?} after /readyz and seen by the operator {:?} later",
            written_at.duration_since(ready_at),
            written_at.elapsed()
        );
        let policy = get_policy(&client, &ns.name, "long").await.unwrap();
        assert_eq!(policy.status.unwrap().leader, long_leader, "the leader kept its lease");
        assert_eq!(count_policy_events(&client, &ns.name, "long", "LeaseStale").await, 0, "a false LeaseStale");
    }
    assert!(operator.is_running());
    // kube-controller-manager's informers back off while the API server is away (client-go:
    // up to 30 s, jittered up to twice that) and resume only then; the next test needs them.
    wait_control_plane_healthy();
}

#[tokio::test]
async fn a_sigkilled_operator_loses_and_doubles_nothing() {
    let ns = TestNamespace::new("sigkill");
    let client = admin_client().await;
    let names: Vec<String> = (0..8).map(|i| format!("app-{i}")).collect();
    for name in &names {
        create_app_objects(&ns.name, name, 1, json!({}));
    }
    // Killed in the middle of its first round of injections...
    let mut first = started_operator(&[]).await;
    wait_for("some injection under way", SETTLE, || async {
        let applied = sample(&first.metrics().await, r#"election_api_requests_total{operation="apply_deployment"}"#)?;
        (applied >= 1.0).then_some(())
    })
    .await;
    first.signal("KILL");
    // SIGKILL ends the process at once; the deadline only bounds reaping it.
    first.wait_exit(Duration::from_secs(10)).await;
    // ... then restarted.
    let _second = started_operator(&[]).await;
    for name in &names {
        wait_policy(&client, &ns.name, name, "injected", SETTLE, |p| {
            condition(p, "ConfigInjected").is_some_and(|c| c.0 == "True")
        })
        .await;
        let deployment = get_deployment(&client, &ns.name, name).await;
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
        let injected: Vec<_> =
            env.iter().filter(|e| e["name"].as_str().unwrap().starts_with("LEADER_ELECTION_")).collect();
        assert_eq!(injected.len(), 7, "{name}: {env:?}");
        let finalizers = get_policy(&client, &ns.name, name).await.unwrap().metadata.finalizers.unwrap_or_default();
        assert_eq!(finalizers, ["election.dev/cleanup"], "{name}");
    }
    // One rollout per Deployment: the original template and the configured one.
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let per_deployment = || async {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for rs in replica_sets.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default() {
            let owner = rs.metadata.owner_references.unwrap_or_default().first().map(|o| o.name.clone());
            *counts.entry(owner.unwrap_or_default()).or_default() += 1;
        }
        counts
    };
    let counts = wait_until(
        "two ReplicaSets for each Deployment",
        SETTLE,
        per_deployment,
        |counts| counts.len() == names.len() && counts.values().all(|n| *n >= 2),
        |counts| format!("ReplicaSets by Deployment: {counts:?}"),
    )
    .await;
    assert!(counts.values().all(|n| *n == 2), "a needless rollout: ReplicaSets by Deployment: {counts:?}");
}

#[tokio::test]
async fn compacted_watch_history_makes_the_operator_list_again_and_get_it_right() {
    let ns = TestNamespace::new("compact");
    let operator = started_operator(&[]).await;
    let client = admin_client().await;
    // The new leader must keep its lease across the API server's restart below, which takes
    // 6 s idle here (3 s to stop, 3 s to be ready) and longer under load: with renewDeadline
    // 4 s it gave up, exited as client-go programs do, and left the app without a leader.
    // Leadership moves by a graceful release, so the long lease costs no waiting.
    let app = app(&client, &ns.name, "compacted", 2, ("40s", "30s", "2s")).await;
    let electors: Vec<Elector> = app
        .pods
        .iter()
        .map(|p| Elector::spawn(ElectorBuild::Current, p, &app.env, &["--release-on-cancel".into()]))
        .collect();
    let first = app.leader(&client, PolicyState::Healthy).await;

    let restarts_before =
        sample(&operator.metrics().await, r#"election_watch_restarts_total{resource="leases"}"#).unwrap_or(0.0);
    // Freeze the operator; meanwhile leadership moves and etcd compacts that history away.
    operator.signal("STOP");
    let index = electors.iter().position(|e| e.identity == first).unwrap();
    electors[index].signal("TERM");
    let second = app.pods.iter().find(|p| **p != first).unwrap().clone();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the other replica to take the lease", SETTLE, || async {
        (leases.get("compacted").await.ok()?.spec?.holder_identity? == second).then_some(())
    })
    .await;
    let revision = compact_etcd().await;
    // A fresh API server has an empty watch cache: resuming from the old resourceVersion
    // can only be answered with 410 Gone.
    Stopped::new("kube-apiserver").start();
    operator.signal("CONT");

    wait_policy_event(&client, &ns.name, "compacted", "LeaderChanged", &format!("{first} -> {second}"), SETTLE).await;
    app.wait_leader(&client, &second, PolicyState::Healthy).await;
    assert_eq!(count_policy_events(&client, &ns.name, "compacted", "LeaderChanged").await, 1);
    let restarts =
        sample(&operator.metrics().await, r#"election_watch_restarts_total{resource="leases"}"#).unwrap_or(0.0);
    println!("etcd compacted at revision {revision}; lock watch restarts {restarts_before} -> {restarts}");
    assert!(restarts > restarts_before, "the lock watch never listed again");
    wait_control_plane_healthy();
}

#[tokio::test]
async fn concurrent_edits_and_api_throttling_converge() {
    let ns = TestNamespace::new("contention");
    let client = admin_client().await;

    // The operator runs as an account whose requests a tight APF priority level rejects with
    // 429 as soon as more than a few are in flight.
    let _ = kubectl(&["create", "namespace", "election-system"], None);
    let _ = kubectl(&["-n", "election-system", "create", "serviceaccount", "throttled-operator"], None);
    // The throttling goes with the test, passed or failed: no later test may inherit it.
    struct Unthrottle;
    impl Drop for Unthrottle {
        fn drop(&mut self) {
            let _ = kubectl(&["delete", "flowschema,prioritylevelconfiguration", "election-throttled"], None);
        }
    }
    let _unthrottle = Unthrottle;
    let _ = kubectl(
        &[
            "create",
            "clusterrolebinding",
            "throttled-operator",
            "--clusterrole=cluster-admin",
            "--serviceaccount=election-system:throttled-operator",
        ],
        None,
    );
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: PriorityLevelConfiguration
metadata: {name: election-throttled}
spec:
  type: Limited
  limited:
    nominalConcurrencyShares: 1
    lendablePercent: 0
    limitResponse: {type: Reject}
---
apiVersion: flowcontrol.apiserver.k8s.io/v1
kind: FlowSchema
metadata: {name: election-throttled}
spec:
  priorityLevelConfiguration: {name: election-throttled}
  matchingPrecedence: 100
  distinguisherMethod: {type: ByUser}
  rules:
    - subjects: [{kind: ServiceAccount, serviceAccount: {name: throttled-operator, namespace: election-system}}]
      resourceRules: [{verbs: ["*"], apiGroups: ["*"], resources: ["*"], clusterScope: true, namespaces: ["*"]}]
      nonResourceRules: [{verbs: ["*"], nonResourceURLs: ["*"]}]
"#,
        ),
    );
    let names: Vec<String> = (0..12).map(|i| format!("busy-{i}")).collect();
    for name in &names {
        create_app_objects(&ns.name, name, 1, json!({}));
    }
    let kubeconfig = service_account_kubeconfig("election-system", "throttled-operator");
    let operator = Operator::start_with(&kubeconfig, &[]);

    // Someone else edits the same Deployments and policies meanwhile, with their own field
    // manager: every edit moves the resourceVersion under the operator's feet.
    let editing = {
        let (ns, names) = (ns.name.clone(), names.clone());
        std::thread::spawn(move || {
            for round in 0..15 {
                for name in &names {
                    let _ = kubectl(
                        &["-n", &ns, "annotate", "deployment", name, &format!("edit={round}"), "--overwrite"],
                        None,
                    );
                    let _ = kubectl(
                        &["-n", &ns, "label", "electionpolicy", name, &format!("edit={round}"), "--overwrite"],
                        None,
                    );
                }
            }
        })
    };
    operator.wait_ready(SETTLE).await;
    editing.join().unwrap();

    // A liveness deadline, longer than SETTLE: the priority level rejects most requests, a
    // failed reconcile comes back after 5 s and a failed status write within 5 s, so each
    // policy converges only after a number of tries that throttling makes random. 120 s is
    // two dozen such rounds.
    for name in &names {
        wait_policy(&client, &ns.name, name, "injected despite throttling and edits", Duration::from_secs(120), |p| {
            condition(p, "ConfigInjected").is_some_and(|c| c.0 == "True")
        })
        .await;
        let deployment = get_deployment(&client, &ns.name, name).await;
        assert_eq!(deployment["metadata"]["annotations"]["edit"], "14", "the other manager's edit survived");
        assert_eq!(injected_env(&deployment, 0).len(), 6, "{name}");
    }
    let throttled = audited_requests("system:serviceaccount:election-system:throttled-operator")
        .iter()
        .filter(|r| r.3 == 429)
        .count();
    println!("requests rejected with 429: {throttled}");
    assert!(throttled > 0, "the priority level never throttled the operator; the test proved nothing");
}

#[tokio::test]
async fn hostile_lock_objects_are_reported_without_a_crash() {
    let ns = TestNamespace::new("hostile");
    let mut operator = started_operator(&["--legacy-locks"]).await;
    let client = admin_client().await;
    let record = |holder: &str, duration: i64| {
        json!({"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": "2026-01-01T00:00:00Z", "leaderTransitions": 0}).to_string()
    };
    let configmap = |name: &str, annotation: String| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "annotations": {"control-plane.alpha.kubernetes.io/leader": annotation}}});
    // The API server itself refuses a 1 MiB annotation (the limit is 256 KiB for all of them).
    let refused =
        kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&configmap("huge", "x".repeat(1 << 20)).to_string()));
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("Too long"));

    let cases: Vec<(&str, Value, &str)> = vec![
        ("big", configmap("big", format!(r#"{{"holderIdentity":"{}"}}"#, "x".repeat(200 * 1024))), "bytes, more than"),
        ("wrong-shape", configmap("wrong-shape", "[1,2,3]".into()), "not a leader-election record"),
        ("negative", configmap("negative", record("pod-a", -5)), "leaseDurationSeconds -5"),
        ("control-chars", configmap("control-chars", record("pod\u{7}a", 15)), "control characters"),
        ("not-json", configmap("not-json", "{{{".into()), "not a leader-election record"),
    ];
    for (name, object, _) in &cases {
        // Server-side: client-side apply would copy the object into an annotation of its own.
        kubectl_ok(&["apply", "--server-side", "-n", &ns.name, "-f", "-"], Some(&object.to_string()));
        let policy = json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "lock": {"name": name, "type": "ConfigMap"}, "injection": {"mode": "None"}}});
        kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], Some(&policy.to_string()));
    }
    // A Lease far in the future: valid, and judged by observed change like any other.
    kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], Some(&json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "year-9999"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 4, "renewTime": "9999-12-31T23:59:59.999999Z", "acquireTime": "9999-12-31T23:59:59.999999Z"},
    }).to_string()));
    kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], Some(&json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": "year-9999"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "lock": {"name": "year-9999"}, "leaseDuration": "4s", "renewDeadline": "3s", "retryPeriod": "1s", "injection": {"mode": "None"}}}).to_string()));

    let mut table = Vec::new();
    for (name, _, expected) in &cases {
        let policy = wait_policy(&client, &ns.name, name, "the malformed record reported", SETTLE, |p| {
            condition(p, "LeaderHealthy").is_some_and(|c| c.1 == "MalformedLockRecord")
        })
        .await;
        let status = policy.status.unwrap();
        assert_eq!(status.state, Some(PolicyState::Invalid), "{name}");
        let message =
            condition(&election_e2e::get_policy(&client, &ns.name, name).await.unwrap(), "LeaderHealthy").unwrap().2;
        assert!(message.contains(expected), "{name}: {message}");
        wait_policy_event(&client, &ns.name, name, "MalformedLockRecord", expected, SETTLE).await;
        table.push(format!("| {name} | {message} |"));
    }
    // The far-future record is a record: it leads, then goes stale for want of changes.
    let policy = wait_policy(&client, &ns.name, "year-9999", "stale (it never changes)", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.state == Some(PolicyState::Stale))
    })
    .await;
    assert_eq!(policy.status.unwrap().leader, "pod-a");
    println!("| lock | status message |\n|---|---|\n{}", table.join("\n"));
    assert!(operator.is_running(), "the operator died on hostile input");
    let log = operator.log_text();
    assert!(!log.contains("panicked"), "{log}");
    operator.kill();
}

#[tokio::test]
async fn a_namespace_neither_reaches_nor_learns_about_another() {
    let a = TestNamespace::new("team-a");
    let b = TestNamespace::new("team-b");
    let _operator = started_operator(&[]).await;
    let client = admin_client().await;
    // Same labels in both namespaces; the policy lives in A.
    create_app_objects(&b.name, "secret-app", 1, json!({"injection": {"mode": "None"}}));
    kubectl_ok(&["-n", &b.name, "delete", "electionpolicy", "secret-app"], None);
    let policy = json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": "greedy"},
        "spec": {"selector": {"matchLabels": {"app": "secret-app"}}, "lock": {"name": "secret-lock", "namespace": b.name}}});
    kubectl_ok(&["apply", "-n", &a.name, "-f", "-"], Some(&policy.to_string()));
    wait_policy(&client, &a.name, "greedy", "refused", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.1 == "InvalidPolicy")
    })
    .await;
    // Pointed at its own namespace, it still finds nothing of B's. A lock change on a policy
    // that would inject is refused at apply unless intended (allowLockChange).
    kubectl_ok(
        &[
            "-n",
            &a.name,
            "patch",
            "electionpolicy",
            "greedy",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/lock/namespace"},{"op":"add","path":"/spec/allowLockChange","value":true}]"#,
        ],
        None,
    );
    wait_policy(&client, &a.name, "greedy", "TargetNotFound", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.1 == "TargetNotFound")
    })
    .await;
    assert!(
        injected_env(&get_deployment(&client, &b.name, "secret-app").await, 0).is_empty(),
        "B's Deployment was configured"
    );

    // A user with rights in A only.
    kubectl_ok(
        &[
            "-n",
            &a.name,
            "create",
            "role",
            "policy-reader",
            "--verb=get,list,watch",
            "--resource=electionpolicies.election.dev,events.events.k8s.io,events",
        ],
        None,
    );
    kubectl_ok(&["-n", &a.name, "create", "rolebinding", "alice", "--role=policy-reader", "--user=alice"], None);
    let denied = kubectl(&["--as=alice", "-n", &b.name, "get", "electionpolicies"], None);
    assert!(!denied.status.success() && String::from_utf8_lossy(&denied.stderr).contains("forbidden"));
    let seen = kubectl_ok(&["--as=alice", "-n", &a.name, "get", "electionpolicies,events", "-o", "yaml"], None);
    assert!(!seen.contains("secret-app-"), "A's status or Events name B's Pods:\n{seen}");
    for event in policy_events(&client, &a.name, "greedy").await {
        let note = event.note.unwrap_or_default();
        assert!(!note.contains("secret-app-"), "{note}");
    }
    let _ = Api::<Pod>::namespaced(client, &b.name);
}
