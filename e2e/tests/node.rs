//! The product on the real node, as users run it: the operator installed by its chart (Pods
//! with in-cluster config), apps as Pods of real client-go programs, and what users do to
//! them on day one: roll out a new version, delete the leader Pod, lose the node's kubelet,
//! and run the seed's own example (kube-scheduler replicas completed by a policy in Args
//! mode).

use std::time::{Duration, Instant};

use election_e2e::{
    Stopped, TestNamespace, admin_client, apply_object, count_policy_events, get_policy, kubectl, kubectl_ok,
    policy_object, wait_control_plane_healthy, wait_for, wait_policy_event,
    workloads::{ChartOperator, ELECTOR_IMAGE, PodApp, SCHEDULER_IMAGE, pod_phase},
};
use election_operator::api::PolicyState;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{Api, Client};
use serde_json::json;

/// A liveness deadline for everything that eventually happens here. The slowest would be a
/// handover without a release, at client-go's default timings: leaseDuration 15 s + 2 x 2.2
/// x retryPeriod 2 s (client-go's retry jitter) + API_LATENCY = 25 s; rollouts of a few
/// Pods of local images take seconds.
const SETTLE: Duration = Duration::from_secs(60);
/// What the requests of a handover add to client-go's timers (an Update landing, the
/// standby's reads and write, the operator's watch and its Event): each takes milliseconds
/// on this local control plane, and a second is several times the whole chain.
const API_LATENCY: Duration = Duration::from_secs(1);

/// Waits until the policy reports a leader in `state` that is a Running Pod for which
/// `matches(leader, pod)` holds, and returns (leader, pod).
async fn running_leader(
    client: &Client,
    app: &PodApp,
    state: PolicyState,
    matches: impl Fn(&str, &str) -> bool,
) -> (String, String) {
    wait_for(&format!("{}: a leader that is a Running Pod, {state:?}", app.name), SETTLE, || async {
        let policy = get_policy(client, &app.namespace, &app.name).await?;
        let status = policy.status?;
        if status.state != Some(state) || status.leader.is_empty() {
            return None;
        }
        let pod = app.running_pods(client).await.into_iter().find(|pod| matches(&status.leader, pod))?;
        Some((status.leader, pod))
    })
    .await
}

fn same(leader: &str, pod: &str) -> bool {
    leader == pod
}

/// A holder identity as kube-scheduler writes it: the hostname (the Pod's name), "_", a UUID.
fn hostname_uuid(leader: &str, pod: &str) -> bool {
    leader
        .strip_prefix(pod)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|uuid| uuid.len() == 36 && uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
}

async fn lease(client: &Client, namespace: &str, name: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), namespace).get_opt(name).await.ok().flatten()
}

/// An app of `replicas` elector Pods configured by its policy "app" with `timings`
/// (leaseDuration, renewDeadline, retryPeriod): waits until the injection's rollout is
/// complete and a Running Pod leads, and returns the app and that leader.
async fn elected_app(client: &Client, namespace: &str, replicas: usize, timings: [&str; 3]) -> (PodApp, String) {
    let app = PodApp::create(namespace, "app", replicas, ELECTOR_IMAGE, json!({}));
    let [lease, renew, retry] = timings;
    apply_object(
        namespace,
        &policy_object("app", json!({"leaseDuration": lease, "renewDeadline": renew, "retryPeriod": retry})),
    );
    // The injection rolls the Deployment once; its new Pods elect.
    wait_for("the injected configuration", SETTLE, || async {
        let d = election_e2e::get_deployment(client, namespace, "app").await;
        (!election_e2e::injected_env(&d, 0).is_empty()).then_some(())
    })
    .await;
    app.wait_rolled_out(SETTLE);
    let (leader, _) = running_leader(client, &app, PolicyState::Healthy, same).await;
    (app, leader)
}

#[tokio::test]
async fn a_rolling_update_hands_leadership_over_without_false_alarms() {
    let ns = TestNamespace::new("rollout");
    let client = admin_client().await;
    let _operator = ChartOperator::install(&client, &[]).await;
    let (app, first) = elected_app(&client, &ns.name, 3, ["6s", "4s", "1s"]).await;

    // A new version of the app: every Pod is replaced, one at a time, the leader among them.
    // It releases its Lease on SIGTERM and a Pod of either version takes over.
    let started = Instant::now();
    kubectl_ok(&["set", "env", "-n", &ns.name, "deployment/app", "-c", "manager", "APP_VERSION=2"], None);
    // A liveness deadline: three Pods replaced one at a time (maxSurge 1, maxUnavailable 0),
    // each running seconds after it is created.
    app.wait_rolled_out(Duration::from_secs(120));
    let (leader, pod) = running_leader(&client, &app, PolicyState::Healthy, same).await;
    println!(
        "rolling update of 3 Pods: new leader {pod} reported Healthy {:.1}s after the change",
        started.elapsed().as_secs_f64()
    );
    assert_ne!(leader, first, "every old Pod is gone, so the leader changed");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let env = serde_json::to_string(&pods.get(&pod).await.unwrap().spec).unwrap();
    assert!(env.contains("APP_VERSION"), "the leader runs the new version");

    // Transitions were reported; nothing was reported that did not happen.
    assert!(count_policy_events(&client, &ns.name, "app", "LeaderChanged").await >= 1);
    for false_alarm in ["LeaseStale", "HolderNotFound"] {
        let events = election_e2e::policy_events(&client, &ns.name, "app").await;
        let wrong: Vec<_> =
            events.iter().filter(|e| e.reason.as_deref() == Some(false_alarm)).map(|e| e.note.clone()).collect();
        assert!(wrong.is_empty(), "{false_alarm} during a rolling update: {wrong:?}");
    }
}

#[tokio::test]
async fn deleting_the_leader_pod_hands_over_at_once() {
    let ns = TestNamespace::new("graceful");
    let client = admin_client().await;
    let _operator = ChartOperator::install(&client, &[]).await;
    // client-go's default timings: without a release, a standby waits out 15 s.
    const LEASE: Duration = Duration::from_secs(15);
    const RETRY: Duration = Duration::from_secs(2);
    let (app, leader) = elected_app(&client, &ns.name, 2, ["15s", "10s", "2s"]).await;

    // A normal delete: SIGTERM, the elector releases the Lease, the standby acquires it on
    // its next retry.
    let started = Instant::now();
    kubectl_ok(&["delete", "pod", "-n", &ns.name, &leader, "--wait=false"], None);
    let event = wait_policy_event(&client, &ns.name, "app", "LeaderChanged", &format!("{leader} -> "), SETTLE).await;
    let handover = started.elapsed();
    println!(
        "graceful delete of the leader Pod: LeaderChanged after {:.1}s ({:?})",
        handover.as_secs_f64(),
        event.note
    );
    let (new_leader, _) = running_leader(&client, &app, PolicyState::Healthy, |l, p| l == p && l != leader).await;
    // What tells a release from an expiry. Without a release the elector renews until its
    // process ends, after the delete, each renewal a retryPeriod after the last returned
    // (client-go's renew(): wait.Until, no jitter): its last renewal was stored at most
    // RETRY and an Update's latency before `started`, and client-go's standby takes the lock
    // only once it has seen it unchanged for LEASE from then (observedTime): not before
    // LEASE - RETRY - API_LATENCY = 12 s, and the Event comes later still. A released lock
    // is taken at the standby's next attempt, within 2.2 x RETRY (4.4 s, client-go's
    // jitter) and API_LATENCY, after the kubelet's SIGTERM: a few seconds, well within
    // that. (The lease duration itself, 15 s, would let an expiry pass for a release.)
    let expiry_at_the_earliest = LEASE - RETRY - API_LATENCY;
    assert!(
        handover < expiry_at_the_earliest,
        "the handover took {handover:?}, not under {expiry_at_the_earliest:?}: the lock ran out rather than being released"
    );
    assert_ne!(new_leader, leader);
    assert_eq!(count_policy_events(&client, &ns.name, "app", "LeaseStale").await, 0);
    assert_eq!(count_policy_events(&client, &ns.name, "app", "HolderNotFound").await, 0);
}

#[tokio::test]
async fn a_node_whose_kubelet_and_containerd_stop_keeps_its_healthy_leader() {
    let ns = TestNamespace::new("kubelet");
    let client = admin_client().await;
    let _operator = ChartOperator::install(&client, &[]).await;
    let (app, leader) = elected_app(&client, &ns.name, 2, ["4s", "3s", "1s"]).await;
    // The holder's identity is its Pod's name (downward API).
    let pod = leader.clone();
    let restarts = app.restarts(&client, &pod).await;

    // The node agent and the runtime stop. The containers do not: runc's shims keep them,
    // so the leader goes on renewing, and the operator (itself in such containers) goes on
    // watching. Nothing is wrong with the election, and nothing must be reported as wrong.
    let stopped_at = jiff::Timestamp::now();
    let kubelet = Stopped::new("kubelet");
    let containerd = Stopped::new("containerd");
    // How long after `since` the leader last renewed, in milliseconds.
    let renewals_after = |since: jiff::Timestamp| {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            let renew = lease(&client, &ns, "app").await?.spec?.renew_time?.0;
            Some(renew.as_millisecond() - since.as_millisecond())
        }
    };
    // Three lease durations of renewals with the node agent gone. The leader renews every
    // retryPeriod (1 s) and an Update's latency, so a renewTime 12 s after the stop is
    // there 13 s after it at the latest; 40 s is a liveness deadline.
    wait_for(
        "the leader to renew for 12s with the kubelet and containerd stopped",
        Duration::from_secs(40),
        || async { renewals_after(stopped_at).await.filter(|ms| *ms >= 12_000) },
    )
    .await;
    let status = get_policy(&client, &ns.name, "app").await.unwrap().status.unwrap();
    assert_eq!((status.leader.as_str(), status.state), (leader.as_str(), Some(PolicyState::Healthy)));

    containerd.start();
    kubelet.start();
    wait_control_plane_healthy();
    kubectl_ok(&["wait", "--for=condition=Ready", "node", "--all", "--timeout=60s"], None);
    // The kubelet finds its Pods running and leaves them be.
    let restarted_at = jiff::Timestamp::now();
    // As above: a renewTime 2 s on comes within 3 s; 20 s is a liveness deadline.
    wait_for("renewals after the kubelet is back", Duration::from_secs(20), || async {
        renewals_after(restarted_at).await.filter(|ms| *ms >= 2_000)
    })
    .await;
    assert_eq!(app.restarts(&client, &pod).await, restarts, "the leader's container was not restarted");
    assert_eq!(pod_phase(&client, &ns.name, &pod).await.as_deref(), Some("Running"));
    let status = get_policy(&client, &ns.name, "app").await.unwrap().status.unwrap();
    assert_eq!((status.leader.as_str(), status.state), (leader.as_str(), Some(PolicyState::Healthy)));
    for reason in ["LeaseStale", "HolderNotFound", "LeaderChanged"] {
        assert_eq!(
            count_policy_events(&client, &ns.name, "app", reason).await,
            0,
            "{reason} with a leader that never stopped"
        );
    }
}

#[tokio::test]
async fn the_seeds_example_kube_scheduler_replicas_elect_through_an_args_policy() {
    let ns = TestNamespace::new("seed");
    let client = admin_client().await;
    let _operator = ChartOperator::install(&client, &[]).await;
    // kube-scheduler as users deploy a second scheduler: its own profile name (so it never
    // competes with the cluster's scheduler for Pods), in-cluster config, the system roles.
    apply_object(
        &ns.name,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "scheduler-config"},
        "data": {"config.yaml": "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: seed-scheduler\n"}}),
    );
    for role in ["system:kube-scheduler", "system:volume-scheduler"] {
        let binding = format!("{}-{}", ns.name, role.replace(':', "-"));
        apply_object(
            &ns.name,
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": binding},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": "scheduler", "namespace": ns.name}]}),
        );
    }
    let app = PodApp::create_with(
        &ns.name,
        "scheduler",
        2,
        SCHEDULER_IMAGE,
        json!({
            "args": ["--config=/etc/scheduler/config.yaml", "--secure-port=0", "--v=1"],
            "volumeMounts": [{"name": "config", "mountPath": "/etc/scheduler"}],
        }),
        json!({"volumes": [{"name": "config", "configMap": {"name": "scheduler-config"}}]}),
    );
    apply_object(
        &ns.name,
        &policy_object(
            "scheduler",
            json!({
                "lock": {"name": "seed-scheduler"},
                "leaseDuration": "8s", "renewDeadline": "6s", "retryPeriod": "2s",
                "injection": {"mode": "Args"},
            }),
        ),
    );
    let args = wait_for("the leader-election flags completed in the template", SETTLE, || async {
        let d = election_e2e::get_deployment(&client, &ns.name, "scheduler").await;
        let args = d["spec"]["template"]["spec"]["containers"][0]["args"].as_array()?.clone();
        args.iter().any(|a| a == "--leader-elect-resource-name=seed-scheduler").then_some(args)
    })
    .await;
    assert_eq!(args[0], "--config=/etc/scheduler/config.yaml", "the user's args stay first: {args:?}");
    // A liveness deadline: two kube-scheduler Pods of a local image replaced one at a time,
    // each running seconds after it is created.
    app.wait_rolled_out(Duration::from_secs(90));

    // The holder is "<pod>_<uuid>", matched to its Pod: Healthy, no HolderNotFound.
    let (leader, pod) = running_leader(&client, &app, PolicyState::Healthy, hostname_uuid).await;
    println!("kube-scheduler leader: {leader} (Pod {pod})");
    let table = kubectl_ok(&["get", "elp", "-n", &ns.name], None);
    assert!(table.contains(&leader) && table.contains("Healthy"), "{table}");
    assert_eq!(count_policy_events(&client, &ns.name, "scheduler", "HolderNotFound").await, 0);

    // Deleting the leader's Pod hands over to the other replica.
    let started = Instant::now();
    kubectl_ok(&["delete", "pod", "-n", &ns.name, &pod, "--wait=false"], None);
    let (new_leader, new_pod) =
        running_leader(&client, &app, PolicyState::Healthy, |l, p| p != pod && hostname_uuid(l, p)).await;
    println!("kube-scheduler handover: {new_leader} after {:.1}s", started.elapsed().as_secs_f64());
    assert_ne!(new_pod, pod);
    wait_policy_event(&client, &ns.name, "scheduler", "LeaderChanged", &format!("{leader} -> {new_leader}"), SETTLE)
        .await;
    for role in ["system:kube-scheduler", "system:volume-scheduler"] {
        let _ = kubectl(&["delete", "clusterrolebinding", &format!("{}-{}", ns.name, role.replace(':', "-"))], None);
    }
}
