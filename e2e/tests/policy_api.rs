//! The ElectionPolicy API as users meet it through kubectl: validation at apply time with
//! messages that name the rule, `kubectl explain`, and the printed columns.

use election_e2e::{TestNamespace, install_crd, kubectl, kubectl_ok, wait_control_plane_healthy};

fn policy(name: &str, spec_tail: &str) -> String {
    format!(
        "apiVersion: election.dev/v1alpha1\nkind: ElectionPolicy\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: demo}}\n  lock:\n    name: demo-lock\n{spec_tail}"
    )
}

/// The table users see: each invalid spec, and the message kubectl prints for it.
const INVALID_SPECS: &[(&str, &str, &str)] = &[
    (
        "lease-not-longer",
        "  leaseDuration: 10s\n  renewDeadline: 10s\n",
        "spec.leaseDuration: Invalid value: leaseDuration must be greater than renewDeadline",
    ),
    (
        "jitter",
        "  renewDeadline: 2400ms\n  retryPeriod: 2s\n",
        "spec.renewDeadline: Invalid value: renewDeadline must be greater than 1.2 x retryPeriod",
    ),
    (
        "zero-retry",
        "  retryPeriod: 0s\n",
        "spec.retryPeriod: Invalid value: \"0s\": retryPeriod must be greater than 0",
    ),
    (
        "negative-lease",
        "  leaseDuration: -15s\n",
        "spec.leaseDuration: Invalid value: \"-15s\": leaseDuration must be greater than 0",
    ),
    (
        "unparsable",
        "  renewDeadline: ten seconds\n",
        "spec.renewDeadline: Invalid value: \"ten seconds\": renewDeadline must be a Go duration such as 15s, 1m30s or 500ms",
    ),
    (
        "no-unit",
        "  leaseDuration: \"15\"\n",
        "spec.leaseDuration: Invalid value: \"15\": leaseDuration must be a Go duration",
    ),
    (
        "bad-mode",
        "  injection:\n    mode: Sidecar\n",
        "spec.injection.mode: Unsupported value: \"Sidecar\": supported values: \"Env\", \"Args\", \"None\"",
    ),
    (
        "empty-containers",
        "  injection:\n    containers: []\n",
        "spec.injection.containers: Invalid value: 0: spec.injection.containers in body should have at least 1 items",
    ),
    (
        "duplicate-containers",
        "  injection:\n    containers: [a, a]\n",
        "spec.injection.containers[1]: Duplicate value: \"a\"",
    ),
];

#[tokio::test]
async fn invalid_specs_are_rejected_at_apply_with_a_message_naming_the_rule() {
    // Every test starts on a working control plane (the others do it in TestNamespace::new).
    wait_control_plane_healthy();
    install_crd();
    let ns = TestNamespace::new("invalid");
    let mut table = vec![];
    let mut cases: Vec<(String, String, &str)> =
        INVALID_SPECS.iter().map(|(n, s, m)| (n.to_string(), policy(n, s), *m)).collect();
    // Specs whose lock or selector, not timings, is wrong.
    let whole = |name: &str, lock: &str, selector: &str| {
        format!(
            "apiVersion: election.dev/v1alpha1\nkind: ElectionPolicy\nmetadata:\n  name: {name}\nspec:\n  selector: {selector}\n  lock: {lock}\n"
        )
    };
    cases.push((
        "bad-lock-name".into(),
        whole("bad-lock-name", "{name: Payments_Lock}", "{matchLabels: {app: demo}}"),
        "spec.lock.name: Invalid value: \"Payments_Lock\": lock.name must be a DNS-1123 subdomain",
    ));
    cases.push((
        "bad-lock-namespace".into(),
        whole("bad-lock-namespace", "{name: l, namespace: Team_A}", "{matchLabels: {app: demo}}"),
        "spec.lock.namespace: Invalid value: \"Team_A\": lock.namespace must be a DNS-1123 label",
    ));
    cases.push((
        "bad-lock-kind".into(),
        whole("bad-lock-kind", "{name: l, type: Secret}", "{matchLabels: {app: demo}}"),
        "spec.lock.type: Unsupported value: \"Secret\": supported values: \"Lease\", \"Endpoints\", \"ConfigMap\"",
    ));
    cases.push((
        "missing-lock-name".into(),
        whole("missing-lock-name", "{type: Lease}", "{matchLabels: {app: demo}}"),
        "spec.lock.name: Required value",
    ));
    cases.push((
        "empty-selector".into(),
        whole("empty-selector", "{name: l}", "{}"),
        "spec.selector: Invalid value: selector must not be empty",
    ));
    cases.push((
        "bad-operator".into(),
        whole("bad-operator", "{name: l}", "{matchExpressions: [{key: app, operator: Near, values: [x]}]}"),
        "selector.matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist",
    ));
    cases.push((
        "in-without-values".into(),
        whole("in-without-values", "{name: l}", "{matchExpressions: [{key: app, operator: In}]}"),
        "In and NotIn need values, Exists and DoesNotExist take none",
    ));
    assert!(cases.len() >= 10);

    for (name, manifest, expected) in &cases {
        let output = kubectl(&["apply", "-n", &ns.name, "-f", "-"], Some(manifest));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} was accepted:\n{manifest}");
        assert!(stderr.contains(expected), "{name}: expected {expected:?} in:\n{stderr}");
        table.push(format!("| {name} | {} |", expected.replace('|', "\\|")));
    }
    println!("| spec | kubectl apply says |\n|---|---|\n{}", table.join("\n"));

    // And a valid one is accepted, with client-go's defaults filled in.
    kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], Some(&policy("valid", "")));
    let durations = kubectl_ok(
        &[
            "get",
            "-n",
            &ns.name,
            "electionpolicy",
            "valid",
            "-o",
            "jsonpath={.spec.leaseDuration} {.spec.renewDeadline} {.spec.retryPeriod} {.spec.lock.type} {.spec.injection.mode}",
        ],
        None,
    );
    assert_eq!(durations, "15s 10s 2s Lease Env");
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    wait_control_plane_healthy();
    install_crd();
    // A liveness deadline: the API server publishes an Established CRD's schema in its
    // OpenAPI document asynchronously, within seconds.
    let explained =
        election_e2e::wait_for("kubectl explain to know the CRD", std::time::Duration::from_secs(30), || async {
            let output = kubectl(&["explain", "electionpolicy.spec.leaseDuration"], None);
            output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        })
        .await;
    assert!(explained.contains("How long non-leaders wait after the last observed renewal"), "{explained}");
    assert!(explained.contains("Default 15s"), "{explained}");
    let lock = kubectl_ok(&["explain", "elp.spec.lock.type"], None);
    assert!(lock.contains("control-plane.alpha.kubernetes.io/leader"), "{lock}");
}

#[tokio::test]
async fn kubectl_get_prints_the_contract_columns() {
    wait_control_plane_healthy();
    install_crd();
    let ns = TestNamespace::new("columns");
    kubectl_ok(&["apply", "-n", &ns.name, "-f", "-"], Some(&policy("columns", "")));
    let table = kubectl_ok(&["get", "elp", "-n", &ns.name], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "LEADER", "STATE", "TRANSITIONS", "LOCK", "AGE"]);
    assert!(table.contains("demo-lock"), "{table}");
}
