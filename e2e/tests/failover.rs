//! How long a workload goes without a leader at each leader change, on the real control
//! plane with real client-go electors: the time in the LeaderChanged Event, the policy's
//! `status.history` (kept across operator restarts) and the `election_failover_seconds`
//! histogram, after a crash and after a graceful release; and a lock change, which rolls
//! the Deployment and leaves two leaders until the rollout ends (ConcurrentLeaders), with
//! the apply-time guard that makes users opt in to it.

use std::time::Duration;

use election_e2e::{
    App, Elector, ElectorBuild, Operator, TestNamespace, admin_client, apply_object, condition, count_policy_events,
    get_deployment, get_policy, injected_env, install_crd, kubectl, kubectl_ok, policy_object, sample,
    started_operator, wait_control_plane_healthy, wait_for, wait_policy, wait_policy_event,
    workloads::{ELECTOR_IMAGE, PodApp},
};
use election_operator::api::{LeaderChange, PolicyState};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use serde_json::{Value, json};

/// Short timings, so that a crashed leader's lease runs out in seconds.
const LEASE_SECONDS: f64 = 6.0;
const RETRY_SECONDS: f64 = 1.0;
const TIMINGS: (&str, &str, &str) = ("6s", "4s", "1s");
/// The longest a client-go replica waits between two attempts to acquire the lock: it
/// retries every retryPeriod stretched by a random factor of up to 1 + JitterFactor (1.2).
const MAX_ACQUIRE_WAIT: f64 = RETRY_SECONDS * 2.2;
/// What the requests of a leader change add to client-go's timers, as the operator measures
/// it: the rest of the standby's attempt under way when the record changes, the GET that
/// observes the change, the GET and Update that take the lock, and the lock watch delivering
/// the changes to the operator. Each takes milliseconds on this local control plane (the
/// tests run one at a time), and even the saturated API server of BENCHMARKS.md's N = 1000
/// run delivered watch events within 177 ms at p99: one second for the chain is several
/// times what it takes.
const API_LATENCY_SECONDS: f64 = 1.0;
/// A liveness deadline for everything that eventually happens here: the slowest is the
/// operator's report of a SIGKILLed leader's successor, at most leaseDuration + 2 x 2.2 x
/// retryPeriod + API_LATENCY_SECONDS (11.4 s) after the kill (see the first test), and the
/// rollouts of PodApps of one elector Pod; 60 s is five times that.
const SETTLE: Duration = Duration::from_secs(60);

/// The app `name` of `replicas` local electors, with the short timings.
async fn app(client: &Client, namespace: &str, name: &str, replicas: usize) -> App {
    let spec = json!({"leaseDuration": TIMINGS.0, "renewDeadline": TIMINGS.1, "retryPeriod": TIMINGS.2});
    App::create(client, namespace, name, replicas, spec).await
}

fn lock_of(namespace: &str, name: &str) -> String {
    format!("leases/{namespace}/{name}")
}

/// The seconds without a leader that a LeaderChanged note gives, checking the note's whole
/// shape: "FROM -> TO after X.Ys without a leader (LOCK)".
fn leaderless_in_note(note: &str, from: &str, to: &str, lock: &str) -> f64 {
    let seconds = note
        .strip_prefix(&format!("{from} -> {to} after "))
        .and_then(|rest| rest.strip_suffix(&format!("s without a leader ({lock})")))
        .unwrap_or_else(|| panic!("not \"{from} -> {to} after Xs without a leader ({lock})\": {note:?}"));
    assert_eq!(seconds.split_once('.').map(|(_, tenths)| tenths.len()), Some(1), "one decimal: {note:?}");
    seconds.parse().unwrap_or_else(|_| panic!("no number of seconds in {note:?}"))
}

/// Waits for the LeaderChanged Event from `from` to `to` and returns the seconds without a
/// leader it reports.
async fn changed_after(client: &Client, app: &App, from: &str, to: &str) -> f64 {
    let event =
        wait_policy_event(client, &app.namespace, &app.name, "LeaderChanged", &format!("{from} -> {to} "), SETTLE)
            .await;
    leaderless_in_note(event.note.as_deref().unwrap_or_default(), from, to, &lock_of(&app.namespace, &app.name))
}

/// Waits until the policy's history starts with a change to `holder`, and returns it all.
async fn history_topped_by(client: &Client, namespace: &str, name: &str, holder: &str) -> Vec<LeaderChange> {
    let policy = wait_policy(client, namespace, name, &format!("history[0] = {holder}"), SETTLE, |p| {
        p.status.as_ref().and_then(|s| s.history.first()).is_some_and(|c| c.holder == holder)
    })
    .await;
    policy.status.unwrap().history
}

async fn wait_metric(operator: &Operator, series: &str, value: f64) -> String {
    wait_for(&format!("{series} = {value}"), SETTLE, || async {
        let text = operator.metrics().await;
        (sample(&text, series) == Some(value)).then_some(text)
    })
    .await
}

/// A bucket of the failover histogram of the app's policy (`le` comes first).
fn failover_bucket(app: &App, le: &str) -> String {
    format!(r#"election_failover_seconds_bucket{{le="{le}",namespace="{}",policy="{}"}}"#, app.namespace, app.name)
}

fn electors_of(app: &App, args: &[&str]) -> Vec<Elector> {
    (0..app.pods.len()).map(|i| app.elector(ElectorBuild::Current, i, args)).collect()
}

fn elector<'a>(electors: &'a mut [Elector], identity: &str) -> &'a mut Elector {
    electors.iter_mut().find(|e| e.identity == identity).unwrap_or_else(|| panic!("no elector plays {identity}"))
}

#[tokio::test]
async fn a_killed_leader_is_replaced_after_about_a_lease_duration_without_a_leader() {
    let ns = TestNamespace::new("failover");
    let operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "crashy", 2).await;
    let mut electors = electors_of(&app, &[]);
    let leader = app.leader(&client, PolicyState::Healthy).await;
    let standby = app.pods.iter().find(|p| **p != leader).unwrap().clone();
    wait_policy_event(&client, &ns.name, &app.name, "LeaderElected", &leader, SETTLE).await;

    let killed_at = Timestamp::now();
    elector(&mut electors, &leader).kill();
    let leaderless = changed_after(&client, &app, &leader, &standby).await;
    println!("SIGKILL of the leader: {leaderless:.1}s without a leader (leaseDuration {LEASE_SECONDS}s)");
    // Measured on the operator's clock, from its sight of the last renewal to its sight of
    // the new holder. client-go's standby starts its expiry clock when it reads the changed
    // record (observedTime), never before the change is stored, and takes the lock only once
    // observedTime + the record's leaseDurationSeconds has passed; the operator sees the
    // last renewal at most the watch's latency after it is stored. So at least leaseDuration
    // less API_LATENCY_SECONDS. At most: the standby reads the last renewal at its next attempt,
    // up to MAX_ACQUIRE_WAIT later, and takes the lock at its first attempt after the lease
    // ran out, up to another MAX_ACQUIRE_WAIT later, plus the latency of those requests:
    // leaseDuration + 2 x 2.2 x retryPeriod + API_LATENCY_SECONDS = 6 + 4.4 + 1 = 11.4 s.
    let (low, high) =
        (LEASE_SECONDS - API_LATENCY_SECONDS, LEASE_SECONDS + 2.0 * MAX_ACQUIRE_WAIT + API_LATENCY_SECONDS);
    assert!((low..=high).contains(&leaderless), "{leaderless}s without a leader, expected {low}..={high}");

    // The status keeps the change, with the same time (to the millisecond; the note gives
    // tenths, so they differ by at most 0.05 s), above the first leader's election.
    let history = history_topped_by(&client, &ns.name, &app.name, &standby).await;
    assert_eq!(history.len(), 2, "{history:?}");
    let recorded = history[0].leaderless_seconds.expect("a change the operator saw has a known gap");
    assert!((recorded - leaderless).abs() <= 0.06, "status {recorded}s, Event {leaderless}s");
    // Seen at least `low` after the last renewal. A leader renews a retryPeriod after its
    // last renewal returned (client-go's renew() runs wait.Until, without jitter), so that
    // renewal was stored at most a retryPeriod and an Update's latency before the kill; and
    // `since` is truncated to the second. So `since` is no earlier than killed_at + low less
    // retryPeriod, API_LATENCY_SECONDS and a second.
    let since = history[0].since.0;
    let earliest = killed_at + jiff::SignedDuration::from_secs_f64(low - RETRY_SECONDS - API_LATENCY_SECONDS - 1.0);
    assert!(since >= earliest && since <= Timestamp::now(), "since {since}: killed at {killed_at}");
    assert_eq!(history[1].holder, leader);
    assert_eq!(history[1].leaderless_seconds, None, "the first holder ends no gap the operator saw");

    let text = wait_metric(&operator, &app.series("election_failover_seconds_count"), 1.0).await;
    let sum = sample(&text, &app.series("election_failover_seconds_sum")).unwrap();
    assert!((sum - leaderless).abs() <= 0.06, "histogram sum {sum}s, Event {leaderless}s");
    assert_eq!(sample(&text, &failover_bucket(&app, "2.0")), Some(0.0), "{text}");
    assert_eq!(sample(&text, &failover_bucket(&app, "+Inf")), Some(1.0), "{text}");
}

#[tokio::test]
async fn a_released_lock_is_taken_at_the_standbys_next_attempt_not_after_the_lease() {
    let ns = TestNamespace::new("release");
    let operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "graceful", 2).await;
    let electors = electors_of(&app, &["--release-on-cancel"]);
    let leader = app.leader(&client, PolicyState::Healthy).await;
    let standby = app.pods.iter().find(|p| **p != leader).unwrap().clone();

    // SIGTERM: the leader releases the lock, and the standby takes it at its next attempt
    // instead of waiting out the lease.
    electors.iter().find(|e| e.identity == leader).unwrap().signal("TERM");
    let leaderless = changed_after(&client, &app, &leader, &standby).await;
    println!("graceful release of the leader: {leaderless:.1}s without a leader (leaseDuration {LEASE_SECONDS}s)");
    // A record without a holder is free to take: the standby takes it at its next attempt,
    // up to MAX_ACQUIRE_WAIT after the release, plus the latency of its requests and of the
    // operator's watch: 2.2 x retryPeriod + API_LATENCY_SECONDS = 3.2 s.
    let high = MAX_ACQUIRE_WAIT + API_LATENCY_SECONDS;
    assert!(leaderless <= high, "{leaderless}s without a leader after a release, expected at most {high}s");

    let history = history_topped_by(&client, &ns.name, &app.name, &standby).await;
    let recorded = history[0].leaderless_seconds.expect("a change the operator saw has a known gap");
    assert!((recorded - leaderless).abs() <= 0.06, "status {recorded}s, Event {leaderless}s");
    assert_eq!(history.iter().map(|c| c.holder.as_str()).collect::<Vec<_>>(), [standby.as_str(), leader.as_str()]);
    let text = wait_metric(&operator, &app.series("election_failover_seconds_count"), 1.0).await;
    let sum = sample(&text, &app.series("election_failover_seconds_sum")).unwrap();
    assert!((sum - leaderless).abs() <= 0.06, "histogram sum {sum}s, Event {leaderless}s");
}

#[tokio::test]
async fn the_history_survives_an_operator_restart_and_grows_on_top() {
    let ns = TestNamespace::new("history");
    let mut operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = app(&client, &ns.name, "remembered", 3).await;
    let electors = electors_of(&app, &["--release-on-cancel"]);
    let first = app.leader(&client, PolicyState::Healthy).await;

    // A change the operator sees (a release, for speed).
    electors.iter().find(|e| e.identity == first).unwrap().signal("TERM");
    let second = wait_policy(&client, &ns.name, &app.name, "another leader, Healthy", SETTLE, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| !s.leader.is_empty() && s.leader != first && s.state == Some(PolicyState::Healthy))
    })
    .await
    .status
    .unwrap()
    .leader;
    let before = history_topped_by(&client, &ns.name, &app.name, &second).await;
    assert_eq!(before.iter().map(|c| c.holder.as_str()).collect::<Vec<_>>(), [second.as_str(), first.as_str()]);
    assert!(before[0].leaderless_seconds.is_some(), "{before:?}");
    // Events are published apart from the status: the change's must be out before the kill.
    wait_policy_event(&client, &ns.name, &app.name, "LeaderChanged", &format!("{first} -> {second} "), SETTLE).await;

    operator.kill();
    operator = started_operator(&[]).await;
    // The restarted operator has looked at the lock once it reports its leader.
    let info = format!(
        r#"election_leader_info{{namespace="{}",policy="{}",leader="{second}",lock="{}"}}"#,
        ns.name,
        app.name,
        lock_of(&ns.name, &app.name)
    );
    wait_metric(&operator, &info, 1.0).await;
    let after_restart = get_policy(&client, &ns.name, &app.name).await.unwrap().status.unwrap().history;
    assert_eq!(after_restart, before, "the restart kept the history as it was");
    assert_eq!(count_policy_events(&client, &ns.name, &app.name, "LeaderChanged").await, 1);

    // A change after the restart goes on top of the history read back from the status.
    electors.iter().find(|e| e.identity == second).unwrap().signal("TERM");
    let third = wait_policy(&client, &ns.name, &app.name, "a third leader, Healthy", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| {
            !s.leader.is_empty() && s.leader != first && s.leader != second && s.state == Some(PolicyState::Healthy)
        })
    })
    .await
    .status
    .unwrap()
    .leader;
    let history = history_topped_by(&client, &ns.name, &app.name, &third).await;
    assert_eq!(history[1..], before[..], "one new entry on top, the rest unchanged: {history:?}");
    let leaderless = history[0].leaderless_seconds.expect("the restarted operator saw the previous holder go");
    // A release, as in the previous test: 2.2 x retryPeriod + API_LATENCY_SECONDS.
    let high = MAX_ACQUIRE_WAIT + API_LATENCY_SECONDS;
    assert!(leaderless <= high, "{leaderless}s without a leader after a release, expected at most {high}s");
    // The histogram is the restarted process's: the one change it saw.
    wait_metric(&operator, &app.series("election_failover_seconds_count"), 1.0).await;
    wait_policy_event(&client, &ns.name, &app.name, "LeaderChanged", &format!("{second} -> {third} "), SETTLE).await;
    assert_eq!(count_policy_events(&client, &ns.name, &app.name, "LeaderChanged").await, 2);
}

/// Waits until the policy reports a leader in `state` that is a Running Pod of `app`, and
/// returns it (holders are Pod names: the downward API).
async fn running_leader(client: &Client, app: &PodApp, state: PolicyState) -> String {
    wait_for(&format!("{}: a leader that is a Running Pod, {state:?}", app.name), SETTLE, || async {
        let status = get_policy(client, &app.namespace, &app.name).await?.status?;
        let running = app.running_pods(client).await;
        (status.state == Some(state) && running.contains(&status.leader)).then_some(status.leader)
    })
    .await
}

#[tokio::test]
async fn a_lock_change_with_the_old_leader_renewing_reports_two_leaders_until_the_rollout_ends() {
    // The old lock's holder must stay a live Pod of the Deployment while a new Pod already
    // leads on the new lock. App (local electors playing pause Pods) cannot give that: its
    // Deployment is Recreate, so the lock change deletes the old Pods first and the operator
    // lets the old lock go at once (its holder's Pod is gone). So the app is real elector
    // Pods (PodApp), which read the lock from the injected environment, with a RollingUpdate
    // (maxSurge 1, maxUnavailable 0) and a large minReadySeconds: the new Pod starts and
    // leads on the new lock, but is not available for an hour, so the old Pod is kept and
    // goes on renewing the old lock. Ending the rollout (minReadySeconds 0) is what stops
    // the old leader: its Pod is deleted and releases the old lock, as in a real rollout.
    let ns = TestNamespace::new("concurrent");
    let operator = started_operator(&[]).await;
    let client = admin_client().await;
    let app = PodApp::create(&ns.name, "app", 1, ELECTOR_IMAGE, json!({}));
    let timings = json!({"leaseDuration": TIMINGS.0, "renewDeadline": TIMINGS.1, "retryPeriod": TIMINGS.2});
    apply_object(&ns.name, &policy_object("app", timings.clone()));
    // The injection rolls the Deployment once; its new Pod elects.
    wait_for("the injected configuration", SETTLE, || async {
        (!injected_env(&get_deployment(&client, &ns.name, "app").await, 0).is_empty()).then_some(())
    })
    .await;
    app.wait_rolled_out(SETTLE);
    let old_leader = running_leader(&client, &app, PolicyState::Healthy).await;
    // Set after the injection's rollout, which would otherwise wait the hour too. None of
    // these fields is in the template: this rolls nothing. (The API server wants the
    // progress deadline beyond minReadySeconds.)
    kubectl_ok(
        &[
            "patch",
            "-n",
            &ns.name,
            "deployment/app",
            "--type=merge",
            "-p",
            r#"{"spec":{"minReadySeconds":3600,"progressDeadlineSeconds":7200,"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
        ],
        None,
    );
    let gauge = format!(r#"election_concurrent_leaders{{namespace="{}",policy="app"}}"#, ns.name);
    wait_metric(&operator, &gauge, 0.0).await;

    let mut moved = timings.clone();
    moved["lock"] = json!({"name": "app-v2"});
    moved["allowLockChange"] = json!(true);
    apply_object(&ns.name, &policy_object("app", moved));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let new_leader = wait_for("a Pod of the new template to hold app-v2", SETTLE, || async {
        let holder = leases.get_opt("app-v2").await.ok()??.spec?.holder_identity?;
        (holder != old_leader && app.running_pods(&client).await.contains(&holder)).then_some(holder)
    })
    .await;
    let (old_lock, new_lock) = (lock_of(&ns.name, "app"), lock_of(&ns.name, "app-v2"));
    let expected = format!(
        "{old_leader} still holds the previous lock {old_lock} while {new_leader} holds {new_lock}: Pods of the old \
         template elect on the old lock until the rollout ends, so two replicas lead at once"
    );
    let event = wait_policy_event(&client, &ns.name, "app", "ConcurrentLeaders", &old_leader, SETTLE).await;
    assert_eq!(event.note.as_deref(), Some(expected.as_str()));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let policy = wait_policy(&client, &ns.name, "app", "LeaderHealthy ConcurrentLeaders", SETTLE, |p| {
        condition(p, "LeaderHealthy").is_some_and(|c| c.1 == "ConcurrentLeaders")
    })
    .await;
    assert_eq!(condition(&policy, "LeaderHealthy"), Some(("False".into(), "ConcurrentLeaders".into(), expected)));
    let status = policy.status.unwrap();
    assert_eq!((status.leader.as_str(), status.lock.as_deref()), (new_leader.as_str(), Some(new_lock.as_str())));
    wait_metric(&operator, &gauge, 1.0).await;
    // The premise: the old leader is still a Running Pod and still holds the old lock.
    assert!(app.running_pods(&client).await.contains(&old_leader), "the old leader's Pod is gone already");
    let old_holder = leases.get("app").await.unwrap().spec.and_then(|s| s.holder_identity);
    assert_eq!(old_holder.as_deref(), Some(old_leader.as_str()));

    // The rollout ends: the old Pod is deleted, its elector releases the old lock.
    kubectl_ok(
        &["patch", "-n", &ns.name, "deployment/app", "--type=merge", "-p", r#"{"spec":{"minReadySeconds":0}}"#],
        None,
    );
    let policy = wait_policy(&client, &ns.name, "app", "LeaderHealthy True again", SETTLE, |p| {
        condition(p, "LeaderHealthy").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(policy.status.unwrap().leader, new_leader);
    wait_metric(&operator, &gauge, 0.0).await;
    app.wait_rolled_out(SETTLE);
    assert!(!app.running_pods(&client).await.contains(&old_leader), "the rollout ended with the old leader's Pod");
    assert_eq!(count_policy_events(&client, &ns.name, "app", "ConcurrentLeaders").await, 1);
}

#[tokio::test]
async fn a_lock_change_is_refused_at_apply_unless_allowed_or_the_policy_does_not_inject() {
    // Validation only: the API server's CEL transition rule, no operator needed.
    wait_control_plane_healthy();
    install_crd();
    let ns = TestNamespace::new("lock-guard");
    let client = admin_client().await;
    let stored_lock = |name: &'static str| {
        let client = client.clone();
        let namespace = ns.name.clone();
        async move { get_policy(&client, &namespace, name).await.expect("the policy exists").spec.lock.name }
    };
    let try_apply = |object: Value| kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(&object.to_string()));

    // Injecting (Env, the default): refused, with a message that says why and names the
    // opt-in; the stored lock is unchanged.
    apply_object(&ns.name, &policy_object("guarded", json!({})));
    let refused = try_apply(policy_object("guarded", json!({"lock": {"name": "guarded-v2"}})));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a lock change was accepted without allowLockChange");
    assert!(stderr.contains("spec.lock changed on a policy that injects"), "{stderr}");
    assert!(stderr.contains("allowLockChange"), "{stderr}");
    println!("refused lock change: {}", stderr.trim());
    assert_eq!(stored_lock("guarded").await, "guarded");

    // Args injects too.
    apply_object(&ns.name, &policy_object("flagged", json!({"injection": {"mode": "Args"}})));
    let refused =
        try_apply(policy_object("flagged", json!({"injection": {"mode": "Args"}, "lock": {"name": "flagged-v2"}})));
    assert!(!refused.status.success(), "a lock change of an Args policy was accepted");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("spec.lock changed on a policy that injects"));

    // With the opt-in: accepted.
    apply_object(&ns.name, &policy_object("guarded", json!({"lock": {"name": "guarded-v2"}, "allowLockChange": true})));
    assert_eq!(stored_lock("guarded").await, "guarded-v2");

    // Observe-only (mode None): nothing rolls, so the lock may change freely.
    apply_object(&ns.name, &policy_object("watched", json!({"injection": {"mode": "None"}})));
    apply_object(
        &ns.name,
        &policy_object("watched", json!({"injection": {"mode": "None"}, "lock": {"name": "watched-v2"}})),
    );
    assert_eq!(stored_lock("watched").await, "watched-v2");
}
