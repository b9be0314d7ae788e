//! The chart and the kustomize config on the real control plane: rendering, installing
//! under the restricted Pod Security profile, running with exactly the chart's RBAC (as the
//! installed ServiceAccount), the operator's own HA, and a clean uninstall.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use election_e2e::{
    TestNamespace, admin_client, audited_namespaces, audited_requests, audited_writes, count_policy_events,
    get_deployment, get_policy, helm_ok, injected_env, install_crd, kubectl, kubectl_ok, rbac_denials,
    wait_control_plane_healthy, wait_for, wait_policy, wait_policy_event,
    workloads::{ChartOperator, ELECTOR_IMAGE, OPERATOR_NAMESPACE, PodApp, RELEASE, ensure_restricted_namespace},
};
use election_operator::api::PolicyState;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, api::ListParams};
use serde_json::{Value, json};

const NAMESPACE: &str = OPERATOR_NAMESPACE;
/// The chart's default timings of the operator's own election (values.yaml:
/// leaderElection.leaseDuration and retryPeriod).
const OWN_LEASE: Duration = Duration::from_secs(15);
const OWN_RETRY: Duration = Duration::from_secs(2);
/// What the requests of a handover add to the election's timers (an Update landing, the
/// reads and the write of the next holder): each takes milliseconds on this local control
/// plane, and a second is several times the whole chain.
const API_LATENCY: Duration = Duration::from_secs(1);
/// A liveness deadline for everything that eventually happens here. The slowest would be
/// the operator's own handover if its leader did not release the Lease: OWN_LEASE, then up
/// to 2 x 1.2 x OWN_RETRY (its standbys' jittered retries, src/k8s/leader_election.rs) and
/// API_LATENCY: 21 s; rollouts of two elector Pods take seconds. So the wait for the
/// handover ends in time for the assertion on it to say how long it took.
const SETTLE: Duration = Duration::from_secs(30);

fn server_version() -> String {
    let version: Value = serde_json::from_str(&kubectl_ok(&["version", "-o", "json"], None)).unwrap();
    version["serverVersion"]["gitVersion"].as_str().unwrap().to_string()
}

fn documents(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object() && v.get("kind").is_some())
        .collect()
}

fn by_kind_and_name(docs: Vec<Value>) -> BTreeMap<(String, String), Value> {
    docs.into_iter()
        .map(|d| ((d["kind"].as_str().unwrap().to_string(), d["metadata"]["name"].as_str().unwrap().to_string()), d))
        .collect()
}

#[tokio::test]
async fn the_chart_renders_what_the_api_server_accepts() {
    // Every test starts on a working control plane (the others do it in TestNamespace::new).
    wait_control_plane_healthy();
    install_crd();
    ensure_restricted_namespace();
    let version = server_version();
    for values in [
        "",
        "legacyLocks.enabled=true,leaderPodLabel.enabled=true,crossNamespaceLocks.enabled=true,replicaCount=3",
        "watchNamespaces={default,kube-public},legacyLocks.enabled=true,leaderPodLabel.enabled=true",
    ] {
        let mut args =
            vec!["template", RELEASE, "charts/election-operator", "-n", NAMESPACE, "--kube-version", &version];
        if !values.is_empty() {
            args.extend(["--set", values]);
        }
        let rendered = helm_ok(&args);
        let output = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
        assert!(output.status.success(), "values {values:?}: {}", String::from_utf8_lossy(&output.stderr));
        // Each object once (the API server's dry run takes every document on its own).
        let rendered_documents = documents(&rendered);
        let unique: BTreeSet<String> = rendered_documents
            .iter()
            .map(|d| format!("{} {}/{}", d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]))
            .collect();
        assert_eq!(unique.len(), rendered_documents.len(), "values {values:?}: an object rendered twice");
        // The operator reads other programs' locks and never writes them; its one write on
        // Leases is its own election Lease, by name, in its own namespace.
        let writes = write_grants_on_locks(&rendered_documents);
        assert_eq!(writes, [format!("Role {RELEASE}-leader-election: leases [create]")], "values {values:?}");

        // A namespaced install grants nothing cluster-wide on namespaced resources: its one
        // ClusterRole of its own is for the reviews of secure metrics.
        if values.starts_with("watchNamespaces") {
            assert_eq!(cluster_wide_resources(&rendered_documents), ["subjectaccessreviews", "tokenreviews"]);
        }

        // An upgrade adds the hook that takes earlier builds' label off locks; it too must
        // be what the API server accepts.
        args.push("--is-upgrade");
        let upgrade = helm_ok(&args);
        assert!(upgrade.contains("remove-observed-labels"), "values {values:?}: no upgrade hook");
        let output = kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&upgrade));
        assert!(output.status.success(), "values {values:?}, upgrade: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// The rules of Roles and ClusterRoles that let their holder write Leases, Endpoints or
/// ConfigMaps, as "Kind name: resource [verbs]"; rules limited by resourceNames are not
/// counted (they cannot reach another program's lock).
fn write_grants_on_locks(documents: &[Value]) -> Vec<String> {
    const WRITES: [&str; 7] = ["create", "update", "patch", "delete", "deletecollection", "*", "escalate"];
    let mut found = Vec::new();
    for role in documents.iter().filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role") {
        for rule in role["rules"].as_array().into_iter().flatten() {
            if rule.get("resourceNames").is_some_and(|names| names.as_array().is_some_and(|n| !n.is_empty())) {
                continue;
            }
            let strings = |field: &str| -> Vec<String> {
                rule[field].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
            };
            let writes: Vec<String> = strings("verbs").into_iter().filter(|v| WRITES.contains(&v.as_str())).collect();
            for resource in strings("resources") {
                if ["leases", "endpoints", "configmaps", "*"].contains(&resource.as_str()) && !writes.is_empty() {
                    found.push(format!(
                        "{} {}: {resource} [{}]",
                        role["kind"].as_str().unwrap_or_default(),
                        role["metadata"]["name"].as_str().unwrap_or_default(),
                        writes.join(", ")
                    ));
                }
            }
        }
    }
    found
}

/// The resources the operator's ClusterRoles grant (those for users and their Prometheus
/// aside), sorted.
fn cluster_wide_resources(documents: &[Value]) -> Vec<String> {
    let mut resources = BTreeSet::new();
    for role in documents.iter().filter(|d| d["kind"] == "ClusterRole") {
        let labels = &role["metadata"]["labels"];
        if labels.get("rbac.authorization.k8s.io/aggregate-to-view").is_some()
            || labels.get("rbac.authorization.k8s.io/aggregate-to-edit").is_some()
            || role["metadata"]["name"] == format!("{RELEASE}-metrics-reader")
        {
            continue;
        }
        for rule in role["rules"].as_array().into_iter().flatten() {
            resources.extend(rule["resources"].as_array().into_iter().flatten().filter_map(|r| r.as_str()));
        }
    }
    resources.into_iter().map(String::from).collect()
}

#[tokio::test]
async fn kustomize_renders_the_charts_default_install() {
    wait_control_plane_healthy();
    let chart = by_kind_and_name(documents(&helm_ok(&[
        "template",
        RELEASE,
        "charts/election-operator",
        "-n",
        NAMESPACE,
        // No --kube-version: e2e/bin/helm is stamped with the Kubernetes version it is for.
        "--include-crds",
    ])));
    let config = election_e2e::repo_root().join("config/default");
    let kustomize = by_kind_and_name(documents(&kubectl_ok(&["kustomize", config.to_str().unwrap()], None)));
    let chart_keys: BTreeSet<_> = chart.keys().cloned().collect();
    let mut kustomize_keys: BTreeSet<_> = kustomize.keys().cloned().collect();
    // kustomize creates the namespace (with the restricted profile); Helm installs into one.
    assert!(kustomize_keys.remove(&("Namespace".into(), NAMESPACE.into())));
    assert_eq!(chart_keys, kustomize_keys);

    for (key, rendered) in &chart {
        let other = &kustomize[key];
        let same = |path: &str| {
            let pointer = |v: &Value| v.pointer(path).cloned().unwrap_or(Value::Null);
            assert!(
                pointer(rendered) == pointer(other),
                "{key:?} differs at {path}: {} vs {}",
                pointer(rendered),
                pointer(other)
            );
        };
        match key.0.as_str() {
            "ClusterRole" | "Role" => same("/rules"),
            "ClusterRoleBinding" | "RoleBinding" => {
                same("/roleRef");
                same("/subjects");
            }
            "Deployment" => {
                same("/spec/replicas");
                same("/spec/selector");
                same("/spec/template/spec/securityContext");
                same("/spec/template/spec/serviceAccountName");
                same("/spec/template/spec/containers/0/args");
                same("/spec/template/spec/containers/0/env");
                same("/spec/template/spec/containers/0/securityContext");
                same("/spec/template/spec/containers/0/ports");
                same("/spec/template/spec/containers/0/resources");
            }
            "ElectionPolicy" | "Service" | "PodDisruptionBudget" => same("/spec"),
            // Both are byte-for-byte copies of crds/, which a unit test holds to the types.
            "CustomResourceDefinition" => {}
            _ => {}
        }
    }
}

#[tokio::test]
async fn installed_with_helm_it_works_under_the_charts_rbac_and_survives_losing_its_leader() {
    wait_control_plane_healthy();
    let client = admin_client().await;
    // The chart as users install it: two Pods of the local image, in-cluster config, the
    // chart's RBAC and probes, the default timings of its own election (15s lease).
    let installed = jiff::Timestamp::now();
    let operator = ChartOperator::install(&client, &[]).await;
    let operator_pods = operator.pods(&client).await;
    assert_eq!(operator_pods.len(), 2, "two operator Pods run under the restricted profile: {operator_pods:?}");

    // The chart's own policy shows which replica leads.
    let self_policy = wait_policy(&client, NAMESPACE, RELEASE, "the operator's own leader", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.state == Some(PolicyState::Healthy) && operator_pods.contains(&s.leader))
    })
    .await;
    let operator_leader = self_policy.status.unwrap().leader;
    let table = kubectl_ok(&["get", "electionpolicies", "-n", NAMESPACE], None);
    assert!(table.contains(&operator_leader) && table.contains("Healthy"), "{table}");

    // /metrics is HTTPS, for callers that may get it only: no token or a bad one is 401, a
    // valid token without the metrics-reader role 403, a token with it 200.
    let ns = TestNamespace::new("helm-app");
    kubectl_ok(&["create", "serviceaccount", "not-a-reader", "-n", &ns.name], None);
    let unprivileged = kubectl_ok(&["create", "token", "not-a-reader", "-n", &ns.name], None);
    let status = |response: Option<(u16, String)>| response.map(|(status, _)| status);
    assert_eq!(status(operator.get_metrics(&operator_leader, None).await), Some(401));
    assert_eq!(status(operator.get_metrics(&operator_leader, Some("not-a-token")).await), Some(401));
    assert_eq!(status(operator.get_metrics(&operator_leader, Some(unprivileged.trim())).await), Some(403));
    let (code, body) = operator.get_metrics(&operator_leader, Some(operator.scraper_token())).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("election_operator_leading 1"), "{body}");

    // An app, as Pods, works end to end under that RBAC.
    let app = PodApp::create(&ns.name, "app", 2, ELECTOR_IMAGE, json!({}));
    kubectl_ok(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(
            &json!({
                "apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": "app"},
                "spec": {"selector": {"matchLabels": {"app": "app"}}, "lock": {"name": "app"},
                    "leaseDuration": "4s", "renewDeadline": "3s", "retryPeriod": "1s"},
            })
            .to_string(),
        ),
    );
    wait_for("the injected configuration", SETTLE, || async {
        let env = injected_env(&get_deployment(&client, &ns.name, "app").await, 0);
        (!env.is_empty()).then_some(env)
    })
    .await;
    app.wait_rolled_out(SETTLE);
    let app_leader = wait_for("the app's leader, a Running Pod", SETTLE, || async {
        let status = get_policy(&client, &ns.name, "app").await?.status?;
        let running = app.running_pods(&client).await;
        (status.state == Some(PolicyState::Healthy) && running.contains(&status.leader)).then_some(status.leader)
    })
    .await;

    // The leading operator's Pod is deleted, as a node drain or a rollout does: it releases
    // its Lease on SIGTERM and another replica takes over at once, not after the 15s lease.
    // (Either the standby or the Deployment's replacement Pod, whichever tries first.)
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    kubectl_ok(&["delete", "pod", "-n", NAMESPACE, &operator_leader, "--wait=false"], None);
    let new_leader = wait_for("another operator Pod to hold the Lease", SETTLE, || async {
        let holder = leases.get(RELEASE).await.ok()?.spec?.holder_identity?;
        (holder != operator_leader && operator.pods(&client).await.contains(&holder)).then_some(holder)
    })
    .await;
    let handover = started.elapsed();
    println!(
        "operator handover after a graceful delete of its leader Pod: {:.1}s (to {})",
        handover.as_secs_f64(),
        if operator_pods.contains(&new_leader) { "the standby" } else { "the replacement Pod" }
    );
    // What tells a release from an expiry. Without a release the leader renews until its
    // process ends, after the delete, each renewal a retryPeriod after the last returned:
    // its last renewal was stored at most OWN_RETRY and an Update's latency before
    // `started`, and no standby takes the Lease before seeing it unchanged for OWN_LEASE
    // from then: not before OWN_LEASE - OWN_RETRY - API_LATENCY = 12 s. A released Lease is
    // taken at a standby's next attempt, within 1.2 x OWN_RETRY (2.4 s) and API_LATENCY,
    // after the kubelet's SIGTERM and the workers' stop: a few seconds, well within that.
    // (The lease duration itself, 15 s, would let an expiry pass for a release.)
    let expiry_at_the_earliest = OWN_LEASE - OWN_RETRY - API_LATENCY;
    assert!(
        handover < expiry_at_the_earliest,
        "took {handover:?}, not under {expiry_at_the_earliest:?}: the leader did not release its Lease"
    );
    wait_policy(&client, NAMESPACE, RELEASE, "the new operator leader reported", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.leader == new_leader)
    })
    .await;

    // And the app's status stays right under the new leader: a transition is reported once.
    kubectl_ok(&["delete", "pod", "-n", &ns.name, &app_leader, "--wait=false"], None);
    wait_policy_event(&client, &ns.name, "app", "LeaderChanged", &format!("{app_leader} -> "), SETTLE).await;
    wait_policy(&client, &ns.name, "app", "the app's new leader", SETTLE, |p| {
        p.status
            .as_ref()
            .is_some_and(|s| s.state == Some(PolicyState::Healthy) && !s.leader.is_empty() && s.leader != app_leader)
    })
    .await;
    assert_eq!(count_policy_events(&client, &ns.name, "app", "LeaderElected").await, 1);
    assert_eq!(count_policy_events(&client, &ns.name, "app", "LeaderChanged").await, 1);

    // Deleting the policy takes the configuration back out (the finalizer works under the
    // chart's RBAC).
    kubectl_ok(&["-n", &ns.name, "delete", "electionpolicy", "app", "--wait=true", "--timeout=60s"], None);
    assert!(injected_env(&get_deployment(&client, &ns.name, "app").await, 0).is_empty());
    // RBAC's refusals read `... is forbidden: User "system:serviceaccount:..." cannot ...`;
    // other 403s (an Event for a policy in a namespace being deleted) are not RBAC's.
    let log = operator.logs();
    let refusals: Vec<_> = log.lines().filter(|l| l.contains("forbidden: User")).collect();
    assert!(refusals.is_empty(), "the chart's RBAC refused something:\n{}", refusals.join("\n"));

    // RBAC against actual use: nothing was refused while installed (an uninstall removes
    // the Roles while the Pods still stop), and every verb granted was used.
    let username = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}");
    let refused = rbac_denials(&username, installed);
    assert!(refused.is_empty(), "refused by RBAC: {refused:?}");
    let requests = audited_requests(&username);
    let used: BTreeSet<(String, String, String)> =
        requests.iter().map(|(g, r, v, _)| (g.clone(), r.clone(), v.clone())).collect();
    let rendered = documents(&helm_ok(&["get", "manifest", RELEASE, "-n", NAMESPACE]));
    let mut granted = BTreeSet::new();
    for role in rendered.iter().filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role") {
        if role["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-view").is_some()
            || role["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-edit").is_some()
            || role["metadata"]["name"] == format!("{RELEASE}-metrics-reader")
        {
            continue; // For users and their Prometheus, not the operator.
        }
        for rule in role["rules"].as_array().unwrap() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        granted.insert((
                            group.as_str().unwrap().to_string(),
                            resource.as_str().unwrap().to_string(),
                            verb.as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
        }
    }
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}\nused: {used:?}");
    // Pods are watched only where a policy selects Deployments (the app's namespace, and the
    // operator's own for its self policy), never cluster-wide: other programs' Pods cost
    // nothing.
    let pod_scopes: BTreeSet<String> = audited_namespaces(&username, installed)
        .into_iter()
        .filter(|r| r == "pods" || r.starts_with("pods "))
        .collect();
    assert_eq!(pod_scopes, BTreeSet::from([format!("pods {}", ns.name), format!("pods {NAMESPACE}")]));
    // Other programs' locks were only read: the one lock written is the operator's own.
    let own_lease = format!("{NAMESPACE}/{RELEASE}");
    let lock_writes: Vec<String> = audited_writes(&username, &["leases", "endpoints", "configmaps"])
        .into_iter()
        .filter(|write| !write.ends_with(&format!(" leases {own_lease}")))
        .collect();
    assert!(lock_writes.is_empty(), "the operator wrote to locks: {lock_writes:?}");

    // helm uninstall leaves no operator objects behind.
    operator.uninstall();
    wait_for("every object of the release to be gone", SETTLE, || async {
        let selector = format!("app.kubernetes.io/instance={RELEASE}");
        let left = kubectl_ok(
            &[
                "get",
                "deployments,pods,serviceaccounts,roles,rolebindings,services,poddisruptionbudgets,electionpolicies",
                "-n",
                NAMESPACE,
                "-l",
                &selector,
                "-o",
                "name",
            ],
            None,
        ) + &kubectl_ok(&["get", "clusterroles,clusterrolebindings", "-l", &selector, "-o", "name"], None);
        left.trim().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn uninstalling_keeps_apps_configured_and_reinstalling_adopts_them_without_a_rollout() {
    wait_control_plane_healthy();
    let client = admin_client().await;
    let operator = ChartOperator::install(&client, &[]).await;
    let ns = TestNamespace::new("adopt");
    let app = PodApp::create(&ns.name, "kept", 1, ELECTOR_IMAGE, json!({}));
    kubectl_ok(
        &["apply", "-n", &ns.name, "-f", "-"],
        Some(
            &json!({
                "apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": "kept"},
                "spec": {"selector": {"matchLabels": {"app": "kept"}}, "lock": {"name": "kept"}},
            })
            .to_string(),
        ),
    );
    wait_policy(&client, &ns.name, "kept", "injected", SETTLE, |p| condition_true(p, "ConfigInjected")).await;
    app.wait_rolled_out(SETTLE);
    let replica_sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let template = get_deployment(&client, &ns.name, "kept").await["spec"]["template"].clone();
    let rollouts = replica_sets.list(&ListParams::default()).await.unwrap().items.len();

    // Uninstalled: the operator is gone, the app keeps its configuration.
    operator.uninstall();
    assert_eq!(get_deployment(&client, &ns.name, "kept").await["spec"]["template"], template);

    // Reinstalled: the policy is adopted as it is, with no write to the Deployment.
    let operator = ChartOperator::install(&client, &[]).await;
    let leader = operator.leader(&client).await;
    wait_for("the policy reconciled by the new operator", SETTLE, || async {
        let metrics = operator.metrics(&leader).await;
        let ok = election_e2e::sample(&metrics, r#"election_reconciles_total{result="ok"}"#).unwrap_or(0.0);
        (ok >= 1.0).then_some(())
    })
    .await;
    let policy =
        wait_policy(&client, &ns.name, "kept", "still injected", SETTLE, |p| condition_true(p, "ConfigInjected")).await;
    assert_eq!(policy.status.unwrap().injected_deployments, ["kept"]);
    let applies = election_e2e::sample(
        &operator.metrics(&leader).await,
        r#"election_api_requests_total{operation="apply_deployment"}"#,
    );
    assert_eq!(applies, None, "the adopted Deployment was written again");
    assert_eq!(get_deployment(&client, &ns.name, "kept").await["spec"]["template"], template);
    assert_eq!(replica_sets.list(&ListParams::default()).await.unwrap().items.len(), rollouts, "a rollout on adoption");

    kubectl_ok(&["-n", &ns.name, "delete", "electionpolicy", "kept", "--wait=true", "--timeout=60s"], None);
    operator.uninstall();
}

fn condition_true(policy: &election_operator::api::ElectionPolicy, type_: &str) -> bool {
    election_e2e::condition(policy, type_).is_some_and(|c| c.0 == "True")
}

#[tokio::test]
async fn upgrading_takes_the_label_of_earlier_builds_off_locks_and_keeps_no_write_access() {
    wait_control_plane_healthy();
    let client = admin_client().await;
    let operator = ChartOperator::install(&client, &[]).await;
    let ns = TestNamespace::new("upgrade");
    // Locks as an earlier build left them (its label next to their owners' labels), and one
    // it never labelled.
    let owners = json!({"app": "owner"});
    let mut labelled = owners.clone();
    labelled["election.dev/observed"] = json!("true");
    let lease = |name: &str, labels: &Value| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": name, "labels": labels},
               "spec": {"holderIdentity": "someone", "leaseDurationSeconds": 15}})
    };
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        lease("labelled-lease", &labelled),
        lease("never-labelled", &owners),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "labelled-configmap", "labels": labelled},
         "data": {"kept": "as is"}},
    ]});
    kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], Some(&objects.to_string()));
    let version_of = |name: &str| {
        kubectl_ok(&["get", "-n", &ns.name, "lease", name, "-o", "jsonpath={.metadata.resourceVersion}"], None)
    };
    let untouched_version = version_of("never-labelled");

    operator.upgrade(&[]);

    for (kind, name) in [("lease", "labelled-lease"), ("configmap", "labelled-configmap"), ("lease", "never-labelled")]
    {
        let labels: Value = serde_json::from_str(&kubectl_ok(
            &["get", "-n", &ns.name, kind, name, "-o", "jsonpath={.metadata.labels}"],
            None,
        ))
        .unwrap();
        assert_eq!(labels, owners, "{kind} {name}");
    }
    assert_eq!(version_of("never-labelled"), untouched_version, "a lock without the label was written");
    let configmap_data =
        kubectl_ok(&["get", "-n", &ns.name, "configmap", "labelled-configmap", "-o", "jsonpath={.data}"], None);
    assert_eq!(configmap_data, r#"{"kept":"as is"}"#);

    // The writes came from the hook's own account, and only to the labelled objects.
    let hook = format!("{RELEASE}-remove-observed-labels");
    let mut writes: Vec<String> =
        audited_writes(&format!("system:serviceaccount:{NAMESPACE}:{hook}"), &["leases", "configmaps"])
            .into_iter()
            .filter(|write| write.contains(&format!(" {}/", ns.name)))
            .collect();
    writes.sort();
    let expected = [
        format!("patch configmaps {}/labelled-configmap", ns.name),
        format!("patch leases {}/labelled-lease", ns.name),
    ];
    assert_eq!(writes, expected);

    // And that account, its role and the Job are gone: nothing holds a write on locks.
    wait_for("the upgrade hook's objects to be deleted", SETTLE, || async {
        let left = kubectl_ok(&["get", "serviceaccounts,jobs", "-n", NAMESPACE, "-o", "name"], None)
            + &kubectl_ok(&["get", "clusterroles,clusterrolebindings", "-o", "name"], None);
        let left: Vec<&str> = left.lines().filter(|l| l.ends_with(&format!("/{hook}"))).collect();
        left.is_empty().then_some(())
    })
    .await;
    operator.uninstall();
}

#[tokio::test]
async fn a_namespaced_install_works_in_its_namespaces_and_never_reads_or_writes_others() {
    wait_control_plane_healthy();
    let client = admin_client().await;
    install_crd();
    // The same app and policy in a watched namespace and in one the operator is not given.
    let inside = TestNamespace::new("watched");
    let outside = TestNamespace::new("unwatched");
    let policy = |name: &str, lock: Value| {
        json!({
            "apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}}, "lock": lock,
                "leaseDuration": "4s", "renewDeadline": "3s", "retryPeriod": "1s"},
        })
        .to_string()
    };
    let outside_app = PodApp::create(&outside.name, "app", 1, ELECTOR_IMAGE, json!({}));
    kubectl_ok(&["apply", "-n", &outside.name, "-f", "-"], Some(&policy("app", json!({"name": "app"}))));

    let installed = jiff::Timestamp::now();
    let watch = format!("watchNamespaces={{{}}}", inside.name);
    let operator = ChartOperator::install(&client, &[&watch, "crossNamespaceLocks.enabled=true"]).await;
    let operator_leader = operator.leader(&client).await;
    let rendered = documents(&helm_ok(&["get", "manifest", RELEASE, "-n", NAMESPACE]));
    assert_eq!(cluster_wide_resources(&rendered), ["subjectaccessreviews", "tokenreviews"]);
    let role_namespaces: BTreeSet<&str> = rendered
        .iter()
        .filter(|d| d["kind"] == "Role" && d["metadata"]["name"] == RELEASE)
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(role_namespaces, BTreeSet::from([inside.name.as_str(), NAMESPACE]));

    // Inside, it works end to end: injected, rolled out, a leader reported.
    let inside_app = PodApp::create(&inside.name, "app", 2, ELECTOR_IMAGE, json!({}));
    kubectl_ok(&["apply", "-n", &inside.name, "-f", "-"], Some(&policy("app", json!({"name": "app"}))));
    wait_for("the injected configuration", SETTLE, || async {
        let env = injected_env(&get_deployment(&client, &inside.name, "app").await, 0);
        (!env.is_empty()).then_some(env)
    })
    .await;
    inside_app.wait_rolled_out(SETTLE);
    wait_for("the app's leader, a Running Pod", SETTLE, || async {
        let status = get_policy(&client, &inside.name, "app").await?.status?;
        let running = inside_app.running_pods(&client).await;
        (status.state == Some(PolicyState::Healthy) && running.contains(&status.leader)).then_some(())
    })
    .await;
    // A lock in a namespace it does not watch is reported, not watched.
    let elsewhere = policy("elsewhere", json!({"name": "app", "namespace": outside.name}));
    kubectl_ok(&["apply", "-n", &inside.name, "-f", "-"], Some(&elsewhere));
    let invalid = wait_policy(&client, &inside.name, "elsewhere", "reported Invalid", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.state == Some(PolicyState::Invalid))
    })
    .await;
    let message = election_e2e::condition(&invalid, "ConfigInjected").map(|c| c.2).unwrap_or_default();
    assert!(message.contains("is not among the namespaces the operator watches"), "{message}");

    // Outside, nothing: the policy there was never seen (it was there before the operator
    // started, so a cluster-wide operator would have reconciled it before the one inside).
    let untouched = get_policy(&client, &outside.name, "app").await.expect("the policy outside");
    assert!(untouched.status.is_none(), "a policy outside was reconciled: {:?}", untouched.status);
    assert!(untouched.metadata.finalizers.is_none(), "a policy outside got a finalizer");
    assert!(injected_env(&get_deployment(&client, &outside.name, "app").await, 0).is_empty());
    drop(outside_app);

    // The secure metrics work under its one ClusterRole (the reviews).
    let (code, body) = operator.get_metrics(&operator_leader, Some(operator.scraper_token())).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("election_operator_leading 1"), "{body}");

    // The API server's audit log: every request went to a watched namespace or was a review;
    // none was refused (so none was even tried elsewhere).
    let username = format!("system:serviceaccount:{NAMESPACE}:{RELEASE}");
    let reached = audited_namespaces(&username, installed);
    let stray: Vec<&String> = reached
        .iter()
        .filter(|r| !r.ends_with(&format!(" {}", inside.name)) && !r.ends_with(&format!(" {NAMESPACE}")))
        .filter(|r| !["tokenreviews", "subjectaccessreviews"].contains(&r.as_str()))
        .collect();
    assert!(stray.is_empty(), "requests outside the watched namespaces: {stray:?}\nall: {reached:?}");
    assert!(reached.contains(&format!("deployments {}", inside.name)), "{reached:?}");
    let refused = rbac_denials(&username, installed);
    assert!(refused.is_empty(), "refused by RBAC: {refused:?}");

    kubectl_ok(&["-n", &inside.name, "delete", "electionpolicy", "--all", "--wait=true", "--timeout=60s"], None);
    operator.uninstall();
}
