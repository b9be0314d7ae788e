//! Config injection on the real cluster, with the operator installed by its chart (Pods
//! under the chart's RBAC): what lands in the Deployments and their running Pods, what
//! deleting a policy leaves behind (nothing), conflicts, and isolation of locks.
//!
//! The apps whose templates are checked run the pause image (their Pods run and ignore
//! their args); the sample runs real client-go electors.

use std::time::Duration;

use election_e2e::{
    TestNamespace, admin_client, condition, count_policy_events, get_deployment, get_policy, kubectl_ok, repo_root,
    sample, wait_for, wait_policy, wait_policy_event,
    workloads::{ChartOperator, PodApp},
};
use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
use kube::{Api, api::ListParams};
use serde_json::{Value, json};

/// A liveness deadline for everything that eventually happens here: the operator acts on a
/// watch event at once (a failed reconcile comes back after 5 s, a failed status write or
/// Event within seconds), the deployment controller rolls a template change out at its next
/// sync, and a Pod of a local image runs seconds after it is bound. 30 s is several times
/// the slowest of these.
const SETTLE: Duration = Duration::from_secs(30);

fn apply(namespace: &str, manifest: &str) {
    kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(manifest));
}

fn apply_file(namespace: &str, path: &str) {
    kubectl_ok(&["apply", "-n", namespace, "-f", repo_root().join(path).to_str().unwrap()], None);
}

fn deployment(name: &str, app: &str, args: &[&str]) -> String {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {"containers": [{
                    "name": "manager", "image": "localhost/pause:e2e", "imagePullPolicy": "Never", "args": args,
                    "env": [{"name": "LOG_LEVEL", "value": "info"}],
                }]},
            },
        },
    })
    .to_string()
}

fn policy(name: &str, app: &str, lock: &str, extra: Value) -> String {
    let mut spec = json!({"selector": {"matchLabels": {"app": app}}, "lock": {"name": lock}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn template(deployment: &Value) -> Value {
    deployment["spec"]["template"].clone()
}

fn env_of(pod_spec: &Value) -> Vec<(String, Value)> {
    pod_spec["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

#[tokio::test]
async fn the_sample_policy_configures_the_deployment_and_its_new_pods() {
    let ns = TestNamespace::new("sample");
    let client = admin_client().await;
    let _operator = ChartOperator::install(&client, &[]).await;
    // The demo's app: the sample Deployment's shape, running real client-go electors.
    apply_file(&ns.name, "e2e/manifests/payments-controller.yaml");
    apply_file(&ns.name, "config/samples/election_v1alpha1_electionpolicy.yaml");

    let policy = wait_policy(&client, &ns.name, "payments", "ConfigInjected", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(policy.status.as_ref().unwrap().injected_deployments, ["payments-controller"]);
    assert_eq!(policy.status.as_ref().unwrap().observed_generation, policy.metadata.generation);
    wait_policy_event(&client, &ns.name, "payments", "ConfigInjected", "payments-controller", SETTLE).await;

    // The new ReplicaSet's Pods carry the contract's variables, next to the app's own.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let env = wait_for("a Pod of the new ReplicaSet with the injected variables", SETTLE, || async {
        let list = pods.list(&ListParams::default().labels("app=payments-controller")).await.ok()?;
        list.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| env_of(&serde_json::to_value(p.spec.as_ref().unwrap()).unwrap()))
            .find(|env| env.iter().any(|(n, _)| n == "LEADER_ELECTION_LOCK_NAME"))
    })
    .await;
    let value =
        |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v["value"].clone()).unwrap_or(Value::Null);
    assert_eq!(value("LOG_LEVEL"), "info", "the app's own variable stays");
    assert_eq!(value("LEADER_ELECTION_LOCK_TYPE"), "leases");
    assert_eq!(value("LEADER_ELECTION_LOCK_NAME"), "payments-controller");
    assert_eq!(value("LEADER_ELECTION_LOCK_NAMESPACE"), ns.name.as_str());
    assert_eq!(value("LEADER_ELECTION_LEASE_DURATION"), "15s");
    assert_eq!(value("LEADER_ELECTION_RENEW_DEADLINE"), "10s");
    assert_eq!(value("LEADER_ELECTION_RETRY_PERIOD"), "2s");
    let identity = env.iter().find(|(n, _)| n == "LEADER_ELECTION_IDENTITY").unwrap().1.clone();
    assert_eq!(identity["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");

    // The injection rolled the Deployment. In the running Pods the kubelet resolved the
    // downward API: each elector runs with its own Pod's name and the policy's lock.
    let app = PodApp { namespace: ns.name.clone(), name: "payments-controller".into() };
    // A liveness deadline: three Pods replaced one at a time (maxSurge 1, maxUnavailable 0),
    // each running seconds after it is created, maybe behind the Deployment's own first
    // rollout, which the injection overtook.
    app.wait_rolled_out(Duration::from_secs(120));
    let running = app.running_pods(&client).await;
    assert_eq!(running.len(), 3, "{running:?}");
    for pod in &running {
        let config = wait_for(&format!("{pod}'s elector to start"), SETTLE, || async {
            app.events(pod).into_iter().find(|e| e["event"] == "config")
        })
        .await;
        assert_eq!(config["identity"], pod.as_str(), "{config}");
        assert_eq!(config["lockName"], "payments-controller");
        assert_eq!(config["lockNamespace"], ns.name.as_str());
        assert_eq!(config["leaseDuration"], "15s");
    }
    // And the policy reports one of them, a Running Pod, as the leader.
    let leader = wait_for("a leader that is a running Pod", SETTLE, || async {
        let status = get_policy(&client, &ns.name, "payments").await?.status?;
        (status.state == Some(election_operator::api::PolicyState::Healthy) && running.contains(&status.leader))
            .then_some(status.leader)
    })
    .await;
    assert!(app.events(&leader).iter().any(|e| e["event"] == "started_leading"), "{leader} says it leads");
}

#[tokio::test]
async fn deleting_the_policy_restores_the_deployment_exactly_in_both_modes() {
    let ns = TestNamespace::new("restore");
    let client = admin_client().await;
    let _operator = ChartOperator::install(&client, &[]).await;
    for mode in ["Env", "Args"] {
        let name = format!("app-{}", mode.to_lowercase());
        apply(&ns.name, &deployment(&name, &name, &["serve", "--v=2"]));
        let original = template(&get_deployment(&client, &ns.name, &name).await);
        apply(&ns.name, &policy(&name, &name, &name, json!({"injection": {"mode": mode}})));
        wait_policy(&client, &ns.name, &name, "injected", SETTLE, |p| {
            condition(p, "ConfigInjected").is_some_and(|c| c.0 == "True")
        })
        .await;
        let injected = template(&get_deployment(&client, &ns.name, &name).await);
        match mode {
            "Env" => assert_eq!(env_of(&injected["spec"]).len(), 8, "LOG_LEVEL and seven LEADER_ELECTION_*"),
            _ => {
                let args = injected["spec"]["containers"][0]["args"].as_array().unwrap();
                assert_eq!(args[..2], [json!("serve"), json!("--v=2")], "the user's args come first");
                assert!(args.contains(&json!(format!("--leader-elect-resource-name={name}"))), "{args:?}");
                assert!(args.contains(&json!("--leader-elect-retry-period=2s")), "{args:?}");
            }
        }

        // The user changes the Deployment meanwhile, with their own field manager.
        kubectl_ok(&["-n", &ns.name, "set", "env", &format!("deployment/{name}"), "ADDED_LATER=1"], None);
        kubectl_ok(&["-n", &ns.name, "delete", "electionpolicy", &name, "--wait=true", "--timeout=60s"], None);

        let mut expected = original.clone();
        expected["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "ADDED_LATER", "value": "1"}));
        let restored = template(&get_deployment(&client, &ns.name, &name).await);
        assert_eq!(restored, expected, "{mode}: the template is the original plus the user's own change");
        let annotations = get_deployment(&client, &ns.name, &name).await["metadata"]["annotations"].clone();
        assert!(annotations.get("election.dev/policy").is_none(), "{annotations}");
    }
}

#[tokio::test]
async fn timings_edits_new_matches_and_lost_matches_are_followed_without_needless_rollouts() {
    let ns = TestNamespace::new("follow");
    let client = admin_client().await;
    let operator = ChartOperator::install(&client, &[]).await;
    let leader = operator.leader(&client).await;
    apply(&ns.name, &policy("web", "web", "web", json!({})));
    let not_found = wait_policy(&client, &ns.name, "web", "TargetNotFound", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.1 == "TargetNotFound")
    })
    .await;
    assert!(condition(&not_found, "ConfigInjected").unwrap().2.contains("app=web"));
    wait_policy_event(&client, &ns.name, "web", "TargetNotFound", "app=web", SETTLE).await;

    // A Deployment that appears later is configured.
    apply(&ns.name, &deployment("web", "web", &[]));
    let lease_env = |d: &Value| {
        env_of(&d["spec"]["template"]["spec"])
            .into_iter()
            .find(|(n, _)| n == "LEADER_ELECTION_LEASE_DURATION")
            .map(|(_, v)| v["value"].clone())
    };
    wait_for("web to be configured", SETTLE, || async {
        lease_env(&get_deployment(&client, &ns.name, "web").await).filter(|v| v == "15s")
    })
    .await;

    // New timings reach it.
    kubectl_ok(
        &[
            "-n",
            &ns.name,
            "patch",
            "electionpolicy",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"leaseDuration":"30s","renewDeadline":"20s"}}"#,
        ],
        None,
    );
    wait_for("the new leaseDuration", SETTLE, || async {
        lease_env(&get_deployment(&client, &ns.name, "web").await).filter(|v| v == "30s")
    })
    .await;

    // Nothing changes, so nothing is written: poke the operator into reconciling and check
    // that it sends no apply and no new ReplicaSet (rollout) appears. (Not the Deployment's
    // generation: for Deployments, annotation changes bump it too.)
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let rollouts = || async { replica_sets.list(&ListParams::default()).await.unwrap().items.len() };
    // The previous change's rollout must be complete before counting.
    wait_for("the deployment controller to catch up", SETTLE, || async {
        let d = get_deployment(&client, &ns.name, "web").await;
        (d["status"]["observedGeneration"] == d["metadata"]["generation"]).then_some(())
    })
    .await;
    let rollouts_before = rollouts().await;
    let template_before = template(&get_deployment(&client, &ns.name, "web").await);
    let counter = |text: &str, series: &str| sample(text, series).unwrap_or(0.0);
    let applies_before =
        counter(&operator.metrics(&leader).await, r#"election_api_requests_total{operation="apply_deployment"}"#);
    for round in 0..3 {
        let before = counter(&operator.metrics(&leader).await, r#"election_reconciles_total{result="ok"}"#);
        kubectl_ok(&["-n", &ns.name, "annotate", "deployment", "web", &format!("poke={round}"), "--overwrite"], None);
        wait_for("a reconcile", SETTLE, || async {
            (counter(&operator.metrics(&leader).await, r#"election_reconciles_total{result="ok"}"#) > before)
                .then_some(())
        })
        .await;
    }
    let applies_after =
        counter(&operator.metrics(&leader).await, r#"election_api_requests_total{operation="apply_deployment"}"#);
    assert_eq!(applies_after, applies_before, "an unchanged configuration was applied again");
    assert_eq!(rollouts().await, rollouts_before, "a rollout happened although nothing changed");
    assert_eq!(template(&get_deployment(&client, &ns.name, "web").await), template_before);

    // A Deployment that stops matching is cleaned.
    kubectl_ok(&["-n", &ns.name, "label", "deployment", "web", "app=elsewhere", "--overwrite"], None);
    wait_for("web to be cleaned", SETTLE, || async {
        let d = get_deployment(&client, &ns.name, "web").await;
        (lease_env(&d).is_none() && d["metadata"]["annotations"].get("election.dev/policy").is_none()).then_some(())
    })
    .await;
    let policy = wait_policy(&client, &ns.name, "web", "no Deployment", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.injected_deployments.is_empty())
    })
    .await;
    assert_eq!(condition(&policy, "ConfigInjected").unwrap().1, "TargetNotFound");
}

#[tokio::test]
async fn a_conflicting_policy_is_refused_and_the_earlier_one_keeps_working() {
    let ns = TestNamespace::new("conflict");
    let client = admin_client().await;
    let _operator = ChartOperator::install(&client, &[]).await;
    apply(&ns.name, &deployment("shared", "shared", &[]));
    apply(&ns.name, &policy("first", "shared", "lock-a", json!({})));
    wait_policy(&client, &ns.name, "first", "injected", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.0 == "True")
    })
    .await;

    // Same lock, other Deployments.
    apply(&ns.name, &policy("same-lock", "nothing", "lock-a", json!({})));
    // Other lock, same Deployment.
    apply(&ns.name, &policy("same-deployment", "shared", "lock-b", json!({})));
    for (name, what) in [("same-lock", "lock leases/"), ("same-deployment", "Deployment shared")] {
        let refused = wait_policy(&client, &ns.name, name, "Invalid", SETTLE, |p| {
            p.status.as_ref().and_then(|s| s.state) == Some(election_operator::api::PolicyState::Invalid)
        })
        .await;
        let (status, reason, message) = condition(&refused, "ConfigInjected").unwrap();
        assert_eq!((status.as_str(), reason.as_str()), ("False", "LockConflict"));
        assert!(message.contains(what) && message.contains(&format!("{}/first", ns.name)), "{message}");
        wait_policy_event(&client, &ns.name, name, "LockConflict", &format!("{}/first", ns.name), SETTLE).await;
    }
    // The first policy's configuration is untouched: its lock, not lock-b, is injected.
    let d = get_deployment(&client, &ns.name, "shared").await;
    let lock =
        env_of(&d["spec"]["template"]["spec"]).into_iter().find(|(n, _)| n == "LEADER_ELECTION_LOCK_NAME").unwrap().1;
    assert_eq!(lock["value"], "lock-a");
    let first = get_policy(&client, &ns.name, "first").await.unwrap();
    assert_eq!(condition(&first, "ConfigInjected").unwrap().0, "True");

    // Once the first goes, the Deployment's next claimant takes over.
    kubectl_ok(&["-n", &ns.name, "delete", "electionpolicy", "first", "--wait=true", "--timeout=60s"], None);
    wait_policy(&client, &ns.name, "same-deployment", "injected after the conflict cleared", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.0 == "True")
    })
    .await;
}

#[tokio::test]
async fn a_lock_in_another_namespace_is_refused_unless_the_operator_allows_it() {
    let ns = TestNamespace::new("isolation");
    let client = admin_client().await;
    let operator = ChartOperator::install(&client, &[]).await;
    apply(
        &ns.name,
        &policy("reach", "reach", "their-lock", json!({"lock": {"name": "their-lock", "namespace": "kube-system"}})),
    );
    let refused = wait_policy(&client, &ns.name, "reach", "Invalid", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.1 == "InvalidPolicy")
    })
    .await;
    let message = condition(&refused, "Ready").unwrap().2;
    assert!(message.contains("--allow-cross-namespace-locks"), "{message}");
    wait_policy_event(&client, &ns.name, "reach", "InvalidPolicy", "kube-system", SETTLE).await;
    assert_eq!(count_policy_events(&client, &ns.name, "reach", "InvalidPolicy").await, 1);

    // Legacy lock kinds need their own switch.
    apply(&ns.name, &policy("legacy", "legacy", "legacy", json!({"lock": {"name": "legacy", "type": "ConfigMap"}})));
    let legacy = wait_policy(&client, &ns.name, "legacy", "Invalid", SETTLE, |p| {
        condition(p, "ConfigInjected").is_some_and(|c| c.1 == "InvalidPolicy")
    })
    .await;
    assert!(condition(&legacy, "ConfigInjected").unwrap().2.contains("--legacy-locks"));

    operator.uninstall();
    let _allowed =
        ChartOperator::install(&client, &["crossNamespaceLocks.enabled=true,legacyLocks.enabled=true"]).await;
    for name in ["reach", "legacy"] {
        wait_policy(&client, &ns.name, name, "accepted", SETTLE, |p| {
            condition(p, "ConfigInjected").is_some_and(|c| c.1 != "InvalidPolicy")
        })
        .await;
    }
    // The restart repeated no InvalidPolicy Event.
    assert_eq!(count_policy_events(&client, &ns.name, "reach", "InvalidPolicy").await, 1);
}
