//! Acting as a ServiceAccount, and what the API server's audit log says it did: the
//! requests it made and the ones RBAC refused.

use std::path::PathBuf;

use serde_json::Value;

use crate::cluster::{kubeconfig, kubectl_ok, repo_root};

/// A kubeconfig that authenticates with a fresh token of `service_account` (as
/// `kubectl create token` makes it), so that what runs with it has exactly that account's
/// RBAC.
pub fn service_account_kubeconfig(namespace: &str, service_account: &str) -> PathBuf {
    let token = kubectl_ok(&["create", "token", service_account, "-n", namespace, "--duration=2h"], None);
    let admin: Value = serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig()).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": service_account, "user": {"token": token.trim()}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": service_account}}],
        "current-context": "local",
    });
    let path = repo_root().join(format!("e2e/.cluster/{namespace}-{service_account}.kubeconfig"));
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// Every (apiGroup, resource[/subresource], verb) the user did, and the status codes it
/// got, from the local API server's audit log.
pub fn audited_requests(username: &str) -> Vec<(String, String, String, u16)> {
    audit_entries(username)
        .into_iter()
        .filter_map(|entry| {
            let object = &entry["objectRef"];
            let mut resource = object["resource"].as_str()?.to_string();
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            let group = object["apiGroup"].as_str().unwrap_or_default().to_string();
            let code = entry["responseStatus"]["code"].as_u64().unwrap_or(0) as u16;
            Some((group, resource, entry["verb"].as_str()?.to_string(), code))
        })
        .collect()
}

/// The requests of `username` that wrote (any verb but get, list and watch) to one of
/// `resources`, as "verb resource namespace/name".
pub fn audited_writes(username: &str, resources: &[&str]) -> Vec<String> {
    audit_entries(username)
        .into_iter()
        .filter(|entry| !["get", "list", "watch"].contains(&entry["verb"].as_str().unwrap_or_default()))
        .filter(|entry| resources.contains(&entry["objectRef"]["resource"].as_str().unwrap_or_default()))
        .map(|entry| {
            let object = &entry["objectRef"];
            let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
            let (verb, resource) = (text(&entry["verb"]), text(&object["resource"]));
            format!("{verb} {resource} {}/{}", text(&object["namespace"]), text(&object["name"]))
        })
        .collect()
}

/// The namespaces `username`'s requests received since `since` went to, as "resource
/// namespace" ("resource" alone for cluster-scoped resources and cluster-wide lists and
/// watches).
pub fn audited_namespaces(username: &str, since: jiff::Timestamp) -> std::collections::BTreeSet<String> {
    audit_entries(username)
        .into_iter()
        .filter(|entry| {
            entry["requestReceivedTimestamp"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) >= Some(since)
        })
        .filter_map(|entry| {
            let object = &entry["objectRef"];
            let resource = object["resource"].as_str()?;
            Some(match object["namespace"].as_str() {
                Some(namespace) => format!("{resource} {namespace}"),
                None => resource.to_string(),
            })
        })
        .collect()
}

/// The requests of `username` received since `since` that RBAC refused (the audit log's
/// authorization decision "forbid"), as "verb resource"; other 403s, such as writes into a
/// namespace being deleted, are admission's and not counted.
pub fn rbac_denials(username: &str, since: jiff::Timestamp) -> Vec<String> {
    audit_entries(username)
        .into_iter()
        .filter(|entry| {
            entry["requestReceivedTimestamp"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) >= Some(since)
        })
        .filter(|entry| entry["annotations"]["authorization.k8s.io/decision"] == "forbid")
        .map(|entry| format!("{} {} {}", entry["verb"], entry["objectRef"]["resource"], entry["requestURI"]))
        .collect()
}

/// The API server's audit log entries for `username`, oldest first.
pub fn audit_entries(username: &str) -> Vec<Value> {
    let log = std::fs::read_to_string(repo_root().join("e2e/.cluster/logs/audit.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["user"]["username"] == username)
        .collect()
}
