//! An operator restart at each point of a policy's life. The operator is SIGKILLed while a
//! policy injects into a Deployment, the user changes something while it is down, and the
//! restarted operator must leave the Deployment exactly as the user wrote it plus what the
//! policy now says: compared byte for byte, not by spot checks.
//!
//! What a restarted operator sees first is its caches filling: a decision taken before they
//! have listed (no Deployment carries this policy's configuration, so release the
//! finalizer) is how an injection gets orphaned. These tests are the guard against that.

use std::time::Duration;

use election_e2e::{
    Operator, TestNamespace, admin_client, condition, get_deployment, get_policy, kubectl_ok, operator_log_tails,
    started_operator, wait_for, wait_policy, wait_until,
};
use kube::Client;
use serde_json::{Value, json};

/// A liveness deadline for a restarted operator's work: it lists its caches and reconciles
/// each policy at once (a failed reconcile comes back after 5 s, a failed status write
/// within 5 s), and the finalizer's release lets the API server delete the policy at once.
/// Seconds at worst; 60 s is many times that.
const SETTLE: Duration = Duration::from_secs(60);
const APP: &str = "web";

/// The user's Deployment: their own env, args and annotation, which must all survive.
fn user_deployment() -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP, "labels": {"app": APP}, "annotations": {"team": "payments"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {"containers": [{
                    "name": "manager", "image": "localhost/pause:e2e", "imagePullPolicy": "Never", "args": ["serve", "--v=2"],
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                }]},
            },
        },
    })
    .to_string()
}

fn user_policy(spec: Value) -> String {
    let mut full = json!({"selector": {"matchLabels": {"app": APP}}, "lock": {"name": APP}});
    for (k, v) in spec.as_object().into_iter().flatten() {
        full[k] = v.clone();
    }
    json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": APP}, "spec": full})
        .to_string()
}

fn apply(namespace: &str, manifest: &str) {
    kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(manifest));
}

/// What a Deployment looks like to the user: its pod template and its annotations, less the
/// revision kube-controller-manager counts up on every rollout.
fn user_view(deployment: &Value) -> (String, Value) {
    let mut annotations = deployment["metadata"]["annotations"].clone();
    if let Some(map) = annotations.as_object_mut() {
        map.remove("deployment.kubernetes.io/revision");
    }
    (serde_json::to_string(&deployment["spec"]["template"]).unwrap(), annotations)
}

/// The contract's Env-mode variables for lock `lock` in `namespace`, default timings.
fn injected_env(namespace: &str, lock: &str) -> Vec<Value> {
    let plain = |name: &str, value: &str| json!({"name": name, "value": value});
    vec![
        plain("LEADER_ELECTION_LOCK_TYPE", "leases"),
        plain("LEADER_ELECTION_LOCK_NAME", lock),
        plain("LEADER_ELECTION_LOCK_NAMESPACE", namespace),
        plain("LEADER_ELECTION_LEASE_DURATION", "15s"),
        plain("LEADER_ELECTION_RENEW_DEADLINE", "10s"),
        plain("LEADER_ELECTION_RETRY_PERIOD", "2s"),
        json!({"name": "LEADER_ELECTION_IDENTITY", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}),
    ]
}

/// The user's template as the API server stored it, with `change` made to its container.
fn expected_template(original: &Value, change: impl FnOnce(&mut Value)) -> String {
    let mut template = original["spec"]["template"].clone();
    change(&mut template["spec"]["containers"][0]);
    serde_json::to_string(&template).unwrap()
}

/// The operator's own annotations on a Deployment that carries `policy`'s configuration.
fn with_operator_annotations(user: &Value, deployment: &Value, policy: &str) -> Value {
    let mut expected = user.clone();
    let live = &deployment["metadata"]["annotations"];
    expected["election.dev/policy"] = json!(policy);
    // A fingerprint of the configuration: its value is the operator's business, its presence
    // is asserted.
    assert!(live["election.dev/injection"].is_string(), "no fingerprint annotation: {live}");
    expected["election.dev/injection"] = live["election.dev/injection"].clone();
    expected
}

/// A namespace with the user's Deployment and a policy (Env mode) whose configuration has
/// landed; returns the Deployment as the user had it before the policy, and the operator,
/// SIGKILLed.
async fn injected_then_killed(client: &Client, namespace: &str) -> (Value, Operator) {
    let mut operator = started_operator(&[]).await;
    apply(namespace, &user_deployment());
    let original = get_deployment(client, namespace, APP).await;
    apply(namespace, &user_policy(json!({})));
    wait_policy(client, namespace, APP, "injected", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.0 == "True")
    })
    .await;
    let injected = get_deployment(client, namespace, APP).await;
    assert_eq!(
        user_view(&injected).0,
        expected_template(&original, |c| c["env"].as_array_mut().unwrap().extend(injected_env(namespace, APP))),
        "the injection itself"
    );
    operator.signal("KILL");
    // SIGKILL ends the process at once; the deadline only bounds reaping it.
    operator.wait_exit(Duration::from_secs(10)).await;
    (original, operator)
}

/// Waits until the restarted operator has reconciled the policy's current generation.
async fn reconciled(client: &Client, namespace: &str, condition_reason: &str) {
    let generation = get_policy(client, namespace, APP).await.and_then(|p| p.metadata.generation);
    wait_policy(
        client,
        namespace,
        APP,
        &format!("generation {generation:?} reconciled: {condition_reason}"),
        SETTLE,
        |p| {
            p.status.as_ref().is_some_and(|s| s.observed_generation == generation)
                && condition(p, "ConfigInjected").is_some_and(|c| c.1 == condition_reason)
        },
    )
    .await;
}

#[tokio::test]
async fn a_policy_deleted_while_the_operator_is_down_leaves_the_deployment_as_the_user_wrote_it() {
    let ns = TestNamespace::new("down-delete");
    let client = admin_client().await;
    let (original, _killed) = injected_then_killed(&client, &ns.name).await;

    kubectl_ok(&["-n", &ns.name, "delete", "electionpolicy", APP, "--wait=false"], None);
    let held = get_policy(&client, &ns.name, APP).await.expect("the finalizer holds the policy");
    assert!(held.metadata.deletion_timestamp.is_some());

    let _restarted = started_operator(&[]).await;
    wait_for("the policy to be released and gone", SETTLE, || async {
        get_policy(&client, &ns.name, APP).await.is_none().then_some(())
    })
    .await;
    let now = get_deployment(&client, &ns.name, APP).await;
    assert_eq!(
        user_view(&now),
        user_view(&original),
        "the Deployment is exactly the user's again\n{}",
        operator_log_tails()
    );
}

#[tokio::test]
async fn a_deployment_unselected_while_the_operator_is_down_is_restored_exactly() {
    let ns = TestNamespace::new("down-unselect");
    let client = admin_client().await;
    let (original, _killed) = injected_then_killed(&client, &ns.name).await;

    apply(&ns.name, &user_policy(json!({"selector": {"matchLabels": {"app": "something-else"}}})));

    let _restarted = started_operator(&[]).await;
    reconciled(&client, &ns.name, "TargetNotFound").await;
    // The configuration comes out in the reconcile that reports the new generation. One
    // run in five full suites saw the status before the template was restored, which
    // 23 targeted runs did not reproduce; so the template is awaited (what it is, and how
    // long after the status, is printed) rather than read once.
    let reported = std::time::Instant::now();
    let restored = wait_until(
        "the Deployment restored to exactly the user's",
        SETTLE,
        || get_deployment(&client, &ns.name, APP),
        |now| user_view(now) == user_view(&original),
        |now| format!("{:?}", user_view(now)),
    )
    .await;
    let lag = reported.elapsed();
    if lag > Duration::from_millis(200) {
        println!("the template was restored {lag:?} after the status reported the generation");
    }
    assert_eq!(user_view(&restored), user_view(&original));
}

#[tokio::test]
async fn a_deployment_recreated_while_the_operator_is_down_is_configured_exactly_once() {
    let ns = TestNamespace::new("down-recreate");
    let client = admin_client().await;
    let (original, _killed) = injected_then_killed(&client, &ns.name).await;

    kubectl_ok(&["-n", &ns.name, "delete", "deployment", APP, "--wait=true"], None);
    apply(&ns.name, &user_deployment());
    let recreated = get_deployment(&client, &ns.name, APP).await;
    assert_ne!(recreated["metadata"]["uid"], original["metadata"]["uid"]);
    assert_eq!(user_view(&recreated), user_view(&original), "recreated as the user wrote it");

    let _restarted = started_operator(&[]).await;
    let configured = wait_for("the recreated Deployment to be configured", SETTLE, || async {
        let d = get_deployment(&client, &ns.name, APP).await;
        d["metadata"]["annotations"]["election.dev/policy"].is_string().then_some(d)
    })
    .await;
    let expected =
        expected_template(&original, |c| c["env"].as_array_mut().unwrap().extend(injected_env(&ns.name, APP)));
    let (template, annotations) = user_view(&configured);
    assert_eq!(template, expected, "{}", operator_log_tails());
    assert_eq!(annotations, with_operator_annotations(&user_view(&original).1, &configured, APP));
}

#[tokio::test]
async fn an_injection_mode_changed_while_the_operator_is_down_swaps_env_for_args_exactly() {
    let ns = TestNamespace::new("down-mode");
    let client = admin_client().await;
    let (original, _killed) = injected_then_killed(&client, &ns.name).await;

    apply(&ns.name, &user_policy(json!({"injection": {"mode": "Args"}})));

    let _restarted = started_operator(&[]).await;
    reconciled(&client, &ns.name, "Injected").await;
    let now = get_deployment(&client, &ns.name, APP).await;
    let flags = [
        "--leader-elect=true".to_string(),
        "--leader-elect-resource-lock=leases".into(),
        format!("--leader-elect-resource-name={APP}"),
        format!("--leader-elect-resource-namespace={}", ns.name),
        "--leader-elect-lease-duration=15s".into(),
        "--leader-elect-renew-deadline=10s".into(),
        "--leader-elect-retry-period=2s".into(),
    ];
    let expected = expected_template(&original, |c| {
        c["args"].as_array_mut().unwrap().extend(flags.iter().map(|f| json!(f)));
    });
    let (template, annotations) = user_view(&now);
    assert_eq!(template, expected, "the user's env alone, the user's args plus the flags\n{}", operator_log_tails());
    let mut expected_annotations = with_operator_annotations(&user_view(&original).1, &now, APP);
    expected_annotations["election.dev/injected-args"] =
        json!(serde_json::to_string(&json!({"manager": flags})).unwrap());
    assert_eq!(annotations, expected_annotations);
}

#[tokio::test]
async fn a_lock_changed_while_the_operator_is_down_is_injected_exactly() {
    let ns = TestNamespace::new("down-lock");
    let client = admin_client().await;
    let (original, _killed) = injected_then_killed(&client, &ns.name).await;

    // The lock change is intended (allowLockChange): the apply-time guard lets it through.
    apply(&ns.name, &user_policy(json!({"lock": {"name": "web-v2"}, "allowLockChange": true})));

    let _restarted = started_operator(&[]).await;
    reconciled(&client, &ns.name, "Injected").await;
    let now = get_deployment(&client, &ns.name, APP).await;
    let expected =
        expected_template(&original, |c| c["env"].as_array_mut().unwrap().extend(injected_env(&ns.name, "web-v2")));
    let (template, annotations) = user_view(&now);
    assert_eq!(template, expected, "{}", operator_log_tails());
    assert_eq!(annotations, with_operator_annotations(&user_view(&original).1, &now, APP));
}
