//! Lock observation with real client-go electors: who leads, transitions, stale leases,
//! skewed holder clocks, legacy annotation locks, and operator restarts.

use std::time::{Duration, Instant};

use election_e2e::{
    App, Elector, ElectorBuild, TestNamespace, admin_client, condition, count_policy_events, kubectl, kubectl_ok,
    policy_events, sample, started_operator, wait_for, wait_no_policies_left, wait_policy, wait_policy_event,
};
use election_operator::api::PolicyState;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use serde_json::json;

/// Short timings, so that a lease goes stale in seconds.
const LEASE: Duration = Duration::from_secs(6);
const TIMINGS: (&str, &str, &str) = ("6s", "4s", "1s");
/// A liveness deadline for everything that eventually happens here (waits that include a
/// lease running out add LEASE to it). The slowest is a killed leader's successor:
/// leaseDuration + 2 x 2.2 x retryPeriod (client-go's retry jitter) + a second of API
/// latency = 11.4 s after the kill, then the operator's Event or status write (retried
/// within seconds when they fail); 30 s is over twice that.
const SETTLE: Duration = Duration::from_secs(30);

/// The app `name`, with the short timings and a lock of `lock_type`.
async fn app(client: &Client, namespace: &str, name: &str, lock_type: &str, replicas: usize) -> App {
    let spec = json!({
        "lock": {"name": name, "type": lock_type},
        "leaseDuration": TIMINGS.0, "renewDeadline": TIMINGS.1, "retryPeriod": TIMINGS.2,
    });
    App::create(client, namespace, name, replicas, spec).await
}

async fn lease_renew_time(client: &Client, namespace: &str, name: &str) -> Option<Timestamp> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace).get(name).await.ok()?;
    lease.spec?.renew_time.map(|t| t.0)
}

#[tokio::test]
async fn the_leader_is_shown_and_a_killed_leader_is_replaced() {
    let ns = TestNamespace::new("leader");
    let operator = started_operator(&[]).await;
    // It counts the operator's status writes: no other policy may add to them.
    wait_no_policies_left().await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "payments", "Lease", 3).await;
    let mut electors: Vec<Elector> = (0..3).map(|i| app.elector(ElectorBuild::Current, i, &[])).collect();

    let leader = app.leader(&client, PolicyState::Healthy).await;
    assert!(app.pods.contains(&leader));
    let table = kubectl_ok(&["get", "electionpolicies", "-n", &ns.name], None);
    let row = table.lines().nth(1).unwrap();
    assert!(row.contains(&leader) && row.contains("Healthy"), "{table}");
    println!("{table}");
    wait_policy_event(&client, &ns.name, "payments", "LeaderElected", &leader, SETTLE).await;

    // Steady renewals cost no status writes.
    let writes = |text: &str| sample(text, "election_status_writes_total").unwrap_or(0.0);
    let before = writes(&operator.metrics().await);
    // The leader renews a retryPeriod (1 s) after its last renewal returned (client-go's
    // renew(): wait.Until, no jitter): five or six renewals in LEASE (6 s), still four at
    // half a second of Update latency; the 200 ms polls see each one.
    let renewal = lease_renew_time(&client, &ns.name, "payments").await;
    let mut renewals = 0;
    let mut last = renewal;
    let until = Instant::now() + LEASE;
    while Instant::now() < until {
        let now = lease_renew_time(&client, &ns.name, "payments").await;
        if now != last {
            renewals += 1;
            last = now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = writes(&operator.metrics().await);
    println!("status writes during {renewals} plain renewals: {}", after - before);
    assert!(renewals >= 3, "the leader kept renewing");
    assert_eq!(after, before, "a plain renewal wrote the status");

    let index = electors.iter().position(|e| e.identity == leader).unwrap();
    electors[index].kill();
    let changed =
        wait_policy_event(&client, &ns.name, "payments", "LeaderChanged", &format!("{leader} -> "), SETTLE).await;
    let policy = wait_policy(&client, &ns.name, "payments", "a new leader, Healthy", SETTLE, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| !s.leader.is_empty() && s.leader != leader && s.state == Some(PolicyState::Healthy))
    })
    .await;
    let successor = policy.status.unwrap().leader;
    assert!(changed.note.unwrap().contains(&format!("{leader} -> {successor}")));
    let policy = election_e2e::get_policy(&client, &ns.name, "payments").await.unwrap();
    assert_eq!(policy.status.unwrap().leader_transitions, Some(1));
    assert_eq!(count_policy_events(&client, &ns.name, "payments", "LeaderElected").await, 1);
    assert_eq!(count_policy_events(&client, &ns.name, "payments", "LeaderChanged").await, 1);
}

#[tokio::test]
async fn a_stopped_leader_is_stale_within_a_second_of_its_deadline_and_a_new_one_takes_over() {
    let ns = TestNamespace::new("stale");
    let _operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "scheduler", "Lease", 2).await;
    let frozen = app.elector(ElectorBuild::Current, 0, &[]);
    let leader = app.leader(&client, PolicyState::Healthy).await;
    assert_eq!(leader, frozen.identity);
    // Stop it in steady state: after a renewal made once the operator was watching the
    // lock (a new lock is found by a probe, up to 500 ms after its creation).
    let seen = lease_renew_time(&client, &ns.name, "scheduler").await;
    wait_for("a renewal", SETTLE, || async {
        lease_renew_time(&client, &ns.name, "scheduler").await.filter(|t| Some(*t) != seen)
    })
    .await;

    frozen.signal("STOP");
    let stale = wait_policy_event(&client, &ns.name, "scheduler", "LeaseStale", &leader, LEASE + SETTLE).await;
    // The holder runs on this machine, so its renewTime is on the same clock as the Event's.
    let last_renewal = lease_renew_time(&client, &ns.name, "scheduler").await.unwrap();
    let deadline = last_renewal + LEASE;
    let fired = stale.event_time.as_ref().unwrap().0;
    let delay = fired.duration_since(deadline);
    println!(
        "SIGSTOP -> LeaseStale: {:.0} ms after the deadline (last renewal {last_renewal}, leaseDuration {LEASE:?})",
        delay.as_secs_f64() * 1000.0
    );
    // The operator judges the lease stale LEASE after it saw the last renewal change the
    // record, on its own clock (the Event's time is when it judged). The holder stamps
    // renewTime just before its request, so the operator's sight comes after it by the
    // Update's latency and the watch's (and a timer that went off late adds a fresh read of
    // the lock): never before the deadline (0.05 s for the clocks' readings), and after it
    // by API latency alone, which a second covers several times on this local control plane.
    assert!(delay.as_secs_f64() >= -0.05, "LeaseStale before the deadline: {delay:?}");
    assert!(delay.as_secs_f64() <= 1.0, "LeaseStale {delay:?} after the deadline");
    assert!(stale.note.as_deref().unwrap().contains("since"), "{stale:?}");

    let policy = wait_policy(&client, &ns.name, "scheduler", "Stale", SETTLE, |p| {
        p.status.as_ref().and_then(|s| s.state) == Some(PolicyState::Stale)
    })
    .await;
    assert_eq!(condition(&policy, "LeaderHealthy").unwrap().1, "LeaseStale");
    // Scripts can wait for it.
    let waited = kubectl(
        &["wait", "-n", &ns.name, "--for=condition=LeaderHealthy=false", "elp/scheduler", "--timeout=10s"],
        None,
    );
    assert!(waited.status.success(), "{}", String::from_utf8_lossy(&waited.stderr));

    // A new replica takes the expired lease: a transition, and healthy again.
    let _successor = app.elector(ElectorBuild::Current, 1, &[]);
    wait_policy_event(&client, &ns.name, "scheduler", "LeaderChanged", &format!("{leader} -> {}", app.pods[1]), SETTLE)
        .await;
    app.wait_leader(&client, &app.pods[1], PolicyState::Healthy).await;
    assert_eq!(count_policy_events(&client, &ns.name, "scheduler", "LeaseRecovered").await, 0);
    frozen.signal("CONT");
}

#[tokio::test]
async fn the_same_holder_renewing_after_a_stale_spell_is_a_recovery() {
    let ns = TestNamespace::new("recover");
    let _operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "batch", "Lease", 1).await;
    let elector = app.elector(ElectorBuild::Current, 0, &[]);
    let leader = app.leader(&client, PolicyState::Healthy).await;
    elector.stop_between_renewals().await;
    wait_policy_event(&client, &ns.name, "batch", "LeaseStale", &leader, LEASE + SETTLE).await;
    elector.signal("CONT");
    let recovered = wait_policy_event(&client, &ns.name, "batch", "LeaseRecovered", &leader, SETTLE).await;
    assert!(recovered.note.unwrap().contains("stale since"));
    app.wait_leader(&client, &leader, PolicyState::Healthy).await;
    let waited =
        kubectl(&["wait", "-n", &ns.name, "--for=condition=LeaderHealthy=true", "elp/batch", "--timeout=10s"], None);
    assert!(waited.status.success());
}

#[tokio::test]
async fn legacy_endpoints_and_configmap_locks_are_observed() {
    let ns = TestNamespace::new("legacy");
    let _operator = started_operator(&["--legacy-locks"]).await;
    let client = admin_client().await;
    for (lock_type, name) in [("Endpoints", "old-endpoints"), ("ConfigMap", "old-configmap")] {
        let app = app(&client, &ns.name, name, lock_type, 2).await;
        let expected_type = if lock_type == "Endpoints" { "endpoints" } else { "configmaps" };
        assert!(app.env.contains(&("LEADER_ELECTION_LOCK_TYPE".into(), expected_type.into())), "{:?}", app.env);
        let mut first = app.elector(ElectorBuild::Legacy, 0, &[]);
        let _second = app.elector(ElectorBuild::Legacy, 1, &[]);
        let leader = app.leader(&client, PolicyState::Healthy).await;
        let policy = election_e2e::get_policy(&client, &ns.name, name).await.unwrap();
        assert_eq!(policy.status.unwrap().lock.unwrap(), format!("{expected_type}/{}/{name}", ns.name));
        if leader == first.identity {
            first.kill();
            wait_policy_event(
                &client,
                &ns.name,
                name,
                "LeaderChanged",
                &format!("{leader} -> {}", app.pods[1]),
                SETTLE,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn holders_with_skewed_clocks_raise_no_false_alarm() {
    let ns = TestNamespace::new("skew");
    let _operator = started_operator(&[]).await;
    let client = admin_client().await;
    let ahead = app(&client, &ns.name, "ahead", "Lease", 1).await;
    let behind = app(&client, &ns.name, "behind", "Lease", 1).await;
    let _a = ahead.elector(ElectorBuild::Current, 0, &["--clock-skew=10m"]);
    let _b = behind.elector(ElectorBuild::Current, 0, &["--clock-skew=-10m"]);
    ahead.leader(&client, PolicyState::Healthy).await;
    behind.leader(&client, PolicyState::Healthy).await;
    let renew = lease_renew_time(&client, &ns.name, "ahead").await.unwrap();
    let skew = renew.duration_since(Timestamp::now()).as_secs_f64();
    assert!((590.0..610.0).contains(&skew), "the holder writes times 10 minutes ahead ({skew:.0} s)");

    // Three lease durations of renewals: healthy throughout, no LeaseStale.
    let until = Instant::now() + LEASE * 3;
    while Instant::now() < until {
        for app in [&ahead, &behind] {
            let policy = election_e2e::get_policy(&client, &ns.name, &app.name).await.unwrap();
            assert_eq!(policy.status.unwrap().state, Some(PolicyState::Healthy), "{} went unhealthy", app.name);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for app in [&ahead, &behind] {
        assert_eq!(count_policy_events(&client, &ns.name, &app.name, "LeaseStale").await, 0);
    }
}

#[tokio::test]
async fn a_restarted_operator_reports_what_happened_while_it_was_down_once() {
    let ns = TestNamespace::new("restart");
    let mut operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "worker", "Lease", 2).await;
    let mut first = app.elector(ElectorBuild::Current, 0, &[]);
    app.leader(&client, PolicyState::Healthy).await;
    let _second = app.elector(ElectorBuild::Current, 1, &[]);
    wait_policy_event(&client, &ns.name, "worker", "LeaderElected", &app.pods[0], SETTLE).await;

    // A restart with nothing changed repeats nothing and raises no false staleness.
    operator.kill();
    operator = started_operator(&[]).await;
    let restarted = Instant::now();
    // Wait through more than a lease duration after the restart: the restarted operator
    // looks at the lock as it starts, so a false LeaseStale would come LEASE after that
    // look; a second more for the look itself and the Event's publication.
    wait_for("a lease duration after the restart", LEASE * 2, || async {
        (restarted.elapsed() > LEASE + Duration::from_secs(1)).then_some(())
    })
    .await;
    assert_eq!(count_policy_events(&client, &ns.name, "worker", "LeaderElected").await, 1);
    assert_eq!(count_policy_events(&client, &ns.name, "worker", "LeaseStale").await, 0);

    // A transition while the operator is down is reported once it is back.
    operator.kill();
    first.kill();
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the second replica to take the lease", LEASE + SETTLE, || async {
        let holder = leases.get("worker").await.ok()?.spec?.holder_identity?;
        (holder == app.pods[1]).then_some(())
    })
    .await;
    let _operator = started_operator(&[]).await;
    wait_policy_event(
        &client,
        &ns.name,
        "worker",
        "LeaderChanged",
        &format!("{} -> {}", app.pods[0], app.pods[1]),
        SETTLE,
    )
    .await;
    app.wait_leader(&client, &app.pods[1], PolicyState::Healthy).await;
    let events = policy_events(&client, &ns.name, "worker").await;
    let reasons: Vec<_> = events.iter().filter_map(|e| e.reason.clone()).filter(|r| r.starts_with("Leader")).collect();
    assert_eq!(reasons, ["LeaderElected", "LeaderChanged"], "{events:?}");
}

#[tokio::test]
async fn locks_are_watched_only_where_policies_point_and_a_new_lock_is_seen_at_once() {
    let watched = TestNamespace::new("watched");
    let elsewhere = TestNamespace::new("elsewhere");
    let operator = started_operator(&[]).await;
    let client = admin_client().await;
    // The lock event counter is the operator's, across namespaces: first let the earlier
    // tests' policies go, and their watches with them.
    wait_no_policies_left().await;
    let policy = json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": "late"},
        "spec": {"selector": {"matchLabels": {"app": "late"}}, "lock": {"name": "late"}}});
    kubectl_ok(&["apply", "-n", &watched.name, "-f", "-"], Some(&policy.to_string()));
    wait_policy(&client, &watched.name, "late", "Pending: no lock yet", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.state == Some(PolicyState::Pending))
    })
    .await;

    // Leases change in a namespace no policy points at, then beside the watched lock. A watch
    // wider than the watched namespace would deliver the first ones too (a single stream
    // would deliver them first).
    let events = |text: &str| sample(text, r#"election_lock_watch_events_total{resource="leases"}"#).unwrap_or(0.0);
    let before = events(&operator.metrics().await);
    let touch = |namespace: &str, name: &str, times: usize| {
        for i in 0..times {
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
                "spec": {"holderIdentity": format!("other-{i}"), "leaseDurationSeconds": 15}});
            kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(&lease.to_string()));
        }
    };
    touch(&elsewhere.name, "unrelated", 10);
    touch(&watched.name, "neighbour", 3);
    wait_for("the neighbour's three changes to reach the operator", SETTLE, || async {
        (events(&operator.metrics().await) >= before + 3.0).then_some(())
    })
    .await;
    assert_eq!(events(&operator.metrics().await), before + 3.0, "the operator saw Leases no policy points at");

    // The policy's lock appears after the policy: seen as soon as it is written.
    let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let lock = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "late"},
        "spec": {"holderIdentity": "late-1", "leaseDurationSeconds": 60, "acquireTime": now, "renewTime": now}});
    let created = Instant::now();
    kubectl_ok(&["apply", "-n", &watched.name, "-f", "-"], Some(&lock.to_string()));
    wait_policy(&client, &watched.name, "late", "the new lock's holder, Healthy", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.leader == "late-1" && s.state == Some(PolicyState::Healthy))
    })
    .await;
    println!("a lock created after its policy reported in {:.2}s", created.elapsed().as_secs_f64());
    // Gone before the next test: its lock, renewed by nobody, would go stale under that
    // test's operator.
    kubectl_ok(&["delete", "electionpolicy", "late", "-n", &watched.name, "--wait=true", "--timeout=60s"], None);
}
