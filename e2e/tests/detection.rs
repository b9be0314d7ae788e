//! Alerting signals on the real control plane: metrics through a stale episode, and the
//! problems beyond staleness (a holder that is no Pod of the app, flapping, slow renewals),
//! the leader Pod label, and structured logs.

use std::time::Duration;

use election_e2e::{
    App, Elector, ElectorBuild, Operator, TestNamespace, admin_client, condition, kubectl_ok, sample, started_operator,
    wait_for, wait_policy, wait_policy_event,
};
use election_operator::api::PolicyState;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use serde_json::{Value, json};

/// A liveness deadline for everything that eventually happens here. The slowest is a
/// killed leader's successor: leaseDuration + 2 x 2.2 x retryPeriod (client-go's retry
/// jitter) + a second of API latency = 4 + 2.2 + 1 = 7.2 s after the kill, then a status
/// write or an Event (retried within seconds when they fail); 30 s is four times that.
const SETTLE: Duration = Duration::from_secs(30);

/// The app `name` with short timings (4s/3s/500ms) and `extra` spec fields.
async fn app(client: &Client, namespace: &str, name: &str, replicas: usize, extra: Value) -> App {
    let mut spec = json!({"leaseDuration": "4s", "renewDeadline": "3s", "retryPeriod": "500ms"});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    App::create(client, namespace, name, replicas, spec).await
}

async fn wait_metric(operator: &Operator, series: &str, value: f64) {
    wait_for(&format!("{series} = {value}"), SETTLE, || async {
        (sample(&operator.metrics().await, series) == Some(value)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn metrics_follow_a_stale_episode_and_renewals_slow_warns_first() {
    let ns = TestNamespace::new("metrics");
    let operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "metered", 1, json!({})).await;
    let elector = Elector::spawn(ElectorBuild::Current, &app.pods[0], &app.env, &[]);
    let holder = app.leader(&client, PolicyState::Healthy).await;

    let text = operator.metrics().await;
    assert_eq!(sample(&text, &app.series("election_lease_stale")), Some(0.0));
    let info = format!(
        r#"election_leader_info{{namespace="{}",policy="{}",leader="{holder}",lock="leases/{}/{}"}}"#,
        app.namespace, app.name, app.namespace, app.name
    );
    assert_eq!(sample(&text, &info), Some(1.0), "{text}");
    let age = sample(&text, &app.series("election_last_renewal_age_seconds")).unwrap();
    // A leader renews a retryPeriod (0.5 s, no jitter: client-go's renew() runs wait.Until)
    // after its last renewal returned, and the operator sees each within its watch's
    // latency: 0.5 s and the latency of an Update and a watch event, which the remaining
    // 1.5 s cover many times.
    assert!(age < 2.0, "last renewal {age}s ago");

    elector.stop_between_renewals().await;
    // The early warning (default: half of renewDeadline) comes before staleness.
    wait_policy_event(&client, &ns.name, &app.name, "RenewalsSlow", &holder, SETTLE).await;
    wait_metric(&operator, &app.series("election_lease_stale"), 1.0).await;
    let text = operator.metrics().await;
    let margin = sample(&text, &app.series("election_lease_expiry_margin_seconds"));
    assert!(margin.is_none(), "no expiry margin once stale: {margin:?}");
    let events = election_e2e::policy_events(&client, &ns.name, &app.name).await;
    let order = client_events_order(&client, &ns.name, &app.name).await;
    let detail: Vec<_> = events
        .iter()
        .map(|e| (e.event_time.as_ref().map(|t| t.0.to_string()), e.reason.clone(), e.note.clone()))
        .collect();
    assert_eq!(order, ["LeaderElected", "RenewalsSlow", "LeaseStale"], "{detail:#?}");

    elector.signal("CONT");
    wait_metric(&operator, &app.series("election_lease_stale"), 0.0).await;
    wait_policy_event(&client, &ns.name, &app.name, "LeaseRecovered", &holder, SETTLE).await;
}

async fn client_events_order(client: &Client, namespace: &str, policy: &str) -> Vec<String> {
    election_e2e::policy_events(client, namespace, policy)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .filter(|r| !r.starts_with("Config"))
        .collect()
}

#[tokio::test]
async fn a_holder_whose_pod_was_deleted_is_reported() {
    let ns = TestNamespace::new("holder");
    let operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "orphan", 1, json!({})).await;
    let _elector = Elector::spawn(ElectorBuild::Current, &app.pods[0], &app.env, &[]);
    let holder = app.leader(&client, PolicyState::Healthy).await;
    assert_eq!(sample(&operator.metrics().await, &app.series("election_holder_not_found")), Some(0.0));

    // The Pod goes (its replacement has another name) but the process keeps the lock.
    kubectl_ok(&["-n", &ns.name, "delete", "pod", &holder, "--grace-period=0", "--force"], None);
    wait_policy_event(&client, &ns.name, &app.name, "HolderNotFound", &holder, SETTLE).await;
    let policy = wait_policy(&client, &ns.name, &app.name, "HolderNotFound", SETTLE, |p| {
        condition(p, "LeaderHealthy").is_some_and(|c| c.1 == "HolderNotFound")
    })
    .await;
    let (status, _, message) = condition(&policy, "LeaderHealthy").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("orphan"), "{message}");
    wait_metric(&operator, &app.series("election_holder_not_found"), 1.0).await;
}

#[tokio::test]
async fn leaders_killed_in_a_loop_are_reported_as_flapping() {
    let ns = TestNamespace::new("flap");
    let operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app =
        app(&client, &ns.name, "flappy", 3, json!({"detection": {"flappingTransitions": 2, "flappingWindow": "5m"}}))
            .await;
    let mut electors: Vec<Elector> =
        app.pods.iter().map(|pod| Elector::spawn(ElectorBuild::Current, pod, &app.env, &[])).collect();
    let mut killed = 0;
    while killed < 3 {
        let holder = app.leader(&client, PolicyState::Healthy).await;
        let index = electors.iter().position(|e| e.identity == holder).unwrap();
        let mut dead = electors.remove(index);
        dead.kill();
        killed += 1;
        // The replica comes back as a restarted container would: same Pod, new process. Its
        // identity is hostname_suffix, as kube-controller-manager's, since reusing the old
        // one would let client-go resume the dead process's lease at once.
        let pod = holder.split('_').next().unwrap().to_string();
        electors.push(Elector::spawn(ElectorBuild::Current, &format!("{pod}_{killed}"), &app.env, &[]));
        wait_policy(&client, &ns.name, &app.name, "another leader", SETTLE, |p| {
            p.status.as_ref().is_some_and(|s| !s.leader.is_empty() && s.leader != holder)
        })
        .await;
    }
    wait_policy_event(&client, &ns.name, &app.name, "LeaderFlapping", "leader changes", SETTLE).await;
    let policy = wait_policy(&client, &ns.name, &app.name, "LeaderFlapping", SETTLE, |p| {
        condition(p, "LeaderHealthy").is_some_and(|c| c.1 == "LeaderFlapping")
    })
    .await;
    assert_eq!(condition(&policy, "LeaderHealthy").unwrap().0, "False");
    wait_metric(&operator, &app.series("election_leader_flapping"), 1.0).await;
    let transitions = sample(&operator.metrics().await, &app.series("election_leader_transitions_total")).unwrap();
    assert!(transitions >= 3.0, "{transitions}");
}

#[tokio::test]
async fn the_leader_label_moves_with_the_leader() {
    let ns = TestNamespace::new("label");
    let _operator = started_operator(&["--leader-pod-label"]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "labelled", 2, json!({"leaderPodLabel": true})).await;
    let mut electors: Vec<Elector> =
        app.pods.iter().map(|pod| Elector::spawn(ElectorBuild::Current, pod, &app.env, &[])).collect();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let labelled = || async {
        let list = pods.list(&ListParams::default().labels("election.dev/leader=true")).await.unwrap();
        list.items.into_iter().filter_map(|p| p.metadata.name).collect::<Vec<_>>()
    };
    let first = app.leader(&client, PolicyState::Healthy).await;
    wait_for("the leader's Pod to be labelled", SETTLE, || async {
        (labelled().await == [first.clone()]).then_some(())
    })
    .await;

    let index = electors.iter().position(|e| e.identity == first).unwrap();
    electors[index].kill();
    let second = wait_policy(&client, &ns.name, &app.name, "a new leader", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| !s.leader.is_empty() && s.leader != first)
    })
    .await
    .status
    .unwrap()
    .leader;
    wait_for("the label to move to the new leader's Pod", SETTLE, || async {
        (labelled().await == [second.clone()]).then_some(())
    })
    .await;
}

#[tokio::test]
async fn logs_are_json_with_the_policy_on_each_reconcile() {
    let ns = TestNamespace::new("logs");
    let operator = started_operator(&["--log-format", "json"]).await;
    let client = admin_client().await;
    let _app = app(&client, &ns.name, "logged", 1, json!({})).await;
    let line = wait_for("a JSON log line from a reconcile of the policy", SETTLE, || async {
        operator.log_text().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|l| {
            l["span"]["name"] == "reconcile"
                && l["span"]["policy"] == "logged"
                && l["span"]["namespace"] == ns.name.as_str()
        })
    })
    .await;
    assert!(line["timestamp"].is_string() && line["level"].is_string(), "{line}");
}
