//! What the operator made of a policy, as the API server has it: the ElectionPolicy's
//! status and conditions, its Events, and the configuration injected into Deployments.

use std::time::Duration;

use kube::Client;
use serde_json::{Value, json};

use crate::{
    cluster::kubectl_ok,
    waits::{wait_for, wait_until},
};

/// Waits until no ElectionPolicy is left anywhere, such as those of earlier tests in
/// namespaces still being deleted (a running operator removes their finalizers). A test
/// that reads the operator's process-wide counters calls it first: another policy's status
/// write or lock events would count too.
pub async fn wait_no_policies_left() {
    wait_for("no ElectionPolicy left from earlier tests", Duration::from_secs(60), || async {
        kubectl_ok(&["get", "electionpolicies", "-A", "-o", "name"], None).trim().is_empty().then_some(())
    })
    .await;
}

/// An ElectionPolicy as the API server has it.
pub async fn get_policy(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Option<election_operator::api::ElectionPolicy> {
    kube::Api::<election_operator::api::ElectionPolicy>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// The Events recorded on a policy, oldest first.
pub async fn policy_events(client: &Client, namespace: &str, policy: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(client.clone(), namespace);
    let mut events: Vec<_> = api
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .is_some_and(|r| r.kind.as_deref() == Some("ElectionPolicy") && r.name.as_deref() == Some(policy))
        })
        .collect();
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events
}

/// Waits for an Event with `reason` on the policy whose note contains `note`.
pub async fn wait_policy_event(
    client: &Client,
    namespace: &str,
    policy: &str,
    reason: &str,
    note: &str,
    timeout: Duration,
) -> k8s_openapi::api::events::v1::Event {
    wait_for(&format!("a {reason} Event on {namespace}/{policy} saying {note:?}"), timeout, || async {
        policy_events(client, namespace, policy)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason) && e.note.as_deref().unwrap_or_default().contains(note))
    })
    .await
}

/// How many Events with `reason` the policy has.
pub async fn count_policy_events(client: &Client, namespace: &str, policy: &str, reason: &str) -> usize {
    policy_events(client, namespace, policy).await.iter().filter(|e| e.reason.as_deref() == Some(reason)).count()
}

/// A condition of a policy's status, as (status, reason, message).
pub fn condition(policy: &election_operator::api::ElectionPolicy, type_: &str) -> Option<(String, String, String)> {
    policy
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the policy's status satisfies `check`, returning the policy.
pub async fn wait_policy<F>(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    check: F,
) -> election_operator::api::ElectionPolicy
where
    F: Fn(&election_operator::api::ElectionPolicy) -> bool,
{
    wait_until(
        &format!("{namespace}/{name}: {what}"),
        timeout,
        || get_policy(client, namespace, name),
        |policy| policy.as_ref().is_some_and(&check),
        |policy| match policy {
            None => "no such policy".into(),
            Some(policy) => format!(
                "generation {:?}, finalizers {:?}, deleting {}, status {}",
                policy.metadata.generation,
                policy.metadata.finalizers,
                policy.metadata.deletion_timestamp.is_some(),
                serde_json::to_string(&policy.status).unwrap_or_default()
            ),
        },
    )
    .await
    .expect("accepted policies exist")
}

/// A Deployment as JSON.
pub async fn get_deployment(client: &Client, namespace: &str, name: &str) -> Value {
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(client.clone(), namespace);
    serde_json::to_value(api.get(name).await.expect("deployment exists")).unwrap()
}

/// The injected environment of a Deployment's first container, as `(name, value)` pairs,
/// ready to hand to an elector. Variables from the downward API are left out: the
/// identity is given explicitly.
pub fn injected_env(deployment: &Value, container: usize) -> Vec<(String, String)> {
    deployment["spec"]["template"]["spec"]["containers"][container]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
        .collect()
}

/// An ElectionPolicy `name` that selects the Deployments labelled app=NAME and names the
/// lock NAME, with the fields of `spec` added or replaced.
pub fn policy_object(name: &str, spec: Value) -> Value {
    let mut full = json!({"selector": {"matchLabels": {"app": name}}, "lock": {"name": name}});
    for (k, v) in spec.as_object().into_iter().flatten() {
        full[k] = v.clone();
    }
    json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": name}, "spec": full})
}

/// `kubectl apply` of one object into `namespace`, which must succeed.
pub fn apply_object(namespace: &str, object: &Value) {
    kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(&object.to_string()));
}
