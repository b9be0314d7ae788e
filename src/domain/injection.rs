//! What injection writes into a Deployment, as a server-side apply configuration.
//!
//! Every write to a Deployment is one apply under [`FIELD_MANAGER`] of the configuration
//! built here. Server-side apply then gives the two guarantees users rely on: fields the
//! configuration does not name are never touched, and fields the operator stops naming
//! are removed, so applying [`removal_config`] restores the Deployment exactly.
//!
//! Environment variables merge per name (`env` is a map-list), which suits apply. A
//! container's `args` is an atomic list: applying it replaces the whole list. So in Args mode
//! the configuration carries the container's own args with the flags appended, and an
//! annotation records exactly which flags were appended, so that they, and only they, can be
//! taken out again later, even after the user edited the list.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Container, EnvVar, EnvVarSource, ObjectFieldSelector},
};
use serde_json::{Value, json};

use crate::{
    api::InjectionMode,
    domain::{lock_record::resource_name, validation::ValidPolicy},
};

/// The one field manager under which the operator writes Deployments.
pub const FIELD_MANAGER: &str = "election-operator";
/// Names the policy whose configuration a Deployment carries.
pub const POLICY_ANNOTATION: &str = "election.dev/policy";
/// A fingerprint of the applied configuration, so an unchanged one is not applied again.
pub const FINGERPRINT_ANNOTATION: &str = "election.dev/injection";
/// JSON map from container name to the flags appended to its args (Args mode).
pub const INJECTED_ARGS_ANNOTATION: &str = "election.dev/injected-args";

pub const ENV_LOCK_TYPE: &str = "LEADER_ELECTION_LOCK_TYPE";
pub const ENV_LOCK_NAME: &str = "LEADER_ELECTION_LOCK_NAME";
pub const ENV_LOCK_NAMESPACE: &str = "LEADER_ELECTION_LOCK_NAMESPACE";
pub const ENV_LEASE_DURATION: &str = "LEADER_ELECTION_LEASE_DURATION";
pub const ENV_RENEW_DEADLINE: &str = "LEADER_ELECTION_RENEW_DEADLINE";
pub const ENV_RETRY_PERIOD: &str = "LEADER_ELECTION_RETRY_PERIOD";
pub const ENV_IDENTITY: &str = "LEADER_ELECTION_IDENTITY";

/// Why a Deployment cannot receive the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectionError {
    #[error("Deployment {deployment} has no container named {missing:?} (it has {available:?})")]
    ContainerNotFound { deployment: String, missing: Vec<String>, available: Vec<String> },
    #[error("Deployment {deployment} has no containers")]
    NoContainers { deployment: String },
    #[error("Deployment {deployment}: annotation {INJECTED_ARGS_ANNOTATION} is not valid JSON: {reason}")]
    CorruptRecord { deployment: String, reason: String },
}

/// The LEADER_ELECTION_* variables of the contract, in a fixed order.
pub fn render_env(policy: &ValidPolicy) -> Vec<EnvVar> {
    let plain = |name: &str, value: &str| EnvVar { name: name.into(), value: Some(value.into()), value_from: None };
    vec![
        plain(ENV_LOCK_TYPE, resource_name(policy.lock.type_)),
        plain(ENV_LOCK_NAME, &policy.lock.name),
        plain(ENV_LOCK_NAMESPACE, &policy.lock.namespace),
        plain(ENV_LEASE_DURATION, policy.lease_duration.trim()),
        plain(ENV_RENEW_DEADLINE, policy.renew_deadline.trim()),
        plain(ENV_RETRY_PERIOD, policy.retry_period.trim()),
        EnvVar {
            name: ENV_IDENTITY.into(),
            value: None,
            value_from: Some(EnvVarSource {
                // apiVersion is what the API server defaults it to; naming it keeps the
                // applied and the stored value identical.
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: "metadata.name".into(),
                }),
                ..Default::default()
            }),
        },
    ]
}

/// The component-base --leader-elect-* flags, in a fixed order.
pub fn render_args(policy: &ValidPolicy) -> Vec<String> {
    vec![
        "--leader-elect=true".into(),
        format!("--leader-elect-resource-lock={}", resource_name(policy.lock.type_)),
        format!("--leader-elect-resource-name={}", policy.lock.name),
        format!("--leader-elect-resource-namespace={}", policy.lock.namespace),
        format!("--leader-elect-lease-duration={}", policy.lease_duration.trim()),
        format!("--leader-elect-renew-deadline={}", policy.renew_deadline.trim()),
        format!("--leader-elect-retry-period={}", policy.retry_period.trim()),
    ]
}

/// The apply configuration that gives `deployment` the policy's configuration.
pub fn apply_config(deployment: &Deployment, policy_name: &str, policy: &ValidPolicy) -> Result<Value, InjectionError> {
    let name = deployment_name(deployment);
    let containers = template_containers(deployment);
    if containers.is_empty() {
        return Err(InjectionError::NoContainers { deployment: name });
    }
    let targets: Vec<&str> = match &policy.injection.containers {
        None => containers.iter().map(|c| c.name.as_str()).collect(),
        Some(wanted) => {
            let missing: Vec<String> =
                wanted.iter().filter(|w| !containers.iter().any(|c| &c.name == *w)).cloned().collect();
            if !missing.is_empty() {
                return Err(InjectionError::ContainerNotFound {
                    deployment: name,
                    missing,
                    available: containers.iter().map(|c| c.name.clone()).collect(),
                });
            }
            wanted.iter().map(String::as_str).collect()
        }
    };

    let previous_flags = injected_args(deployment)?;
    let mut new_flags = BTreeMap::new();
    let mut applied = Vec::new();
    for container in containers {
        let targeted = targets.contains(&container.name.as_str());
        let mut entry = serde_json::Map::new();
        entry.insert("name".into(), json!(container.name));
        if targeted && policy.injection.mode == InjectionMode::Env {
            entry.insert("env".into(), json!(render_env(policy)));
        }
        // args is atomic: once the operator has applied it, it must keep applying it, or
        // apply would delete the user's own args along with the flags.
        let had_flags = previous_flags.get(&container.name);
        if (targeted && policy.injection.mode == InjectionMode::Args) || had_flags.is_some() {
            let mut args = without_flags(container.args.as_deref().unwrap_or_default(), had_flags);
            if targeted && policy.injection.mode == InjectionMode::Args {
                let flags = render_args(policy);
                args.extend(flags.iter().cloned());
                new_flags.insert(container.name.clone(), flags);
            }
            entry.insert("args".into(), json!(args));
        }
        if entry.len() > 1 {
            applied.push(Value::Object(entry));
        }
    }

    let mut annotations = serde_json::Map::new();
    annotations.insert(POLICY_ANNOTATION.into(), json!(policy_name));
    if !new_flags.is_empty() {
        annotations
            .insert(INJECTED_ARGS_ANNOTATION.into(), json!(serde_json::to_string(&new_flags).unwrap_or_default()));
    }
    let mut config = skeleton(deployment);
    config["spec"] = json!({ "template": { "spec": { "containers": applied } } });
    annotations.insert(FINGERPRINT_ANNOTATION.into(), json!(fingerprint(&config["spec"], policy_name)));
    config["metadata"]["annotations"] = Value::Object(annotations);
    Ok(config)
}

/// The apply configuration that takes the policy's configuration out of `deployment`:
/// everything the operator owned is dropped, and args get the appended flags removed.
pub fn removal_config(deployment: &Deployment) -> Result<Value, InjectionError> {
    let previous_flags = injected_args(deployment)?;
    let containers: Vec<Value> = template_containers(deployment)
        .iter()
        .filter_map(|c| {
            let flags = previous_flags.get(&c.name)?;
            let args = without_flags(c.args.as_deref().unwrap_or_default(), Some(flags));
            Some(json!({ "name": c.name, "args": args }))
        })
        .collect();
    let mut config = skeleton(deployment);
    if !containers.is_empty() {
        config["spec"] = json!({ "template": { "spec": { "containers": containers } } });
    }
    Ok(config)
}

/// True when `deployment` already carries exactly `config`, so applying it would change
/// nothing (and would cost an API call).
pub fn is_applied(deployment: &Deployment, config: &Value) -> bool {
    let annotations = deployment.metadata.annotations.as_ref();
    let wanted = config["metadata"]["annotations"].as_object();
    let annotations_match = match (annotations, wanted) {
        (Some(live), Some(wanted)) => wanted.iter().all(|(k, v)| live.get(k).map(String::as_str) == v.as_str()),
        (_, None) => annotations.is_none_or(|a| {
            ![POLICY_ANNOTATION, FINGERPRINT_ANNOTATION, INJECTED_ARGS_ANNOTATION].iter().any(|k| a.contains_key(*k))
        }),
        (None, Some(_)) => false,
    };
    if !annotations_match {
        return false;
    }
    // The fingerprint says what was applied; the containers say whether it is still there
    // (someone may have edited the variables away).
    let live = template_containers(deployment);
    let wanted = config["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
    wanted.iter().all(|want| {
        let Some(container) = live.iter().find(|c| Some(c.name.as_str()) == want["name"].as_str()) else {
            return false;
        };
        let env_ok = want["env"].as_array().is_none_or(|vars| {
            vars.iter().all(|var| {
                container.env.iter().flatten().any(|live| serde_json::to_value(live).ok().as_ref() == Some(var))
            })
        });
        let args_ok = want["args"].as_array().is_none_or(|args| {
            let live_args = container.args.clone().unwrap_or_default();
            serde_json::to_value(live_args).ok() == Some(Value::Array(args.clone()))
        });
        env_ok && args_ok
    })
}

/// The policy whose configuration a Deployment carries, if any.
pub fn injected_by(deployment: &Deployment) -> Option<&str> {
    deployment.metadata.annotations.as_ref()?.get(POLICY_ANNOTATION).map(String::as_str)
}

fn injected_args(deployment: &Deployment) -> Result<BTreeMap<String, Vec<String>>, InjectionError> {
    match deployment.metadata.annotations.as_ref().and_then(|a| a.get(INJECTED_ARGS_ANNOTATION)) {
        None => Ok(BTreeMap::new()),
        Some(json) => serde_json::from_str(json).map_err(|e| InjectionError::CorruptRecord {
            deployment: deployment_name(deployment),
            reason: e.to_string(),
        }),
    }
}

/// `args` with each recorded flag taken out once, searching from the end, where they were
/// appended; whatever the user put around them stays, in order.
fn without_flags(args: &[String], flags: Option<&Vec<String>>) -> Vec<String> {
    let mut args = args.to_vec();
    for flag in flags.into_iter().flatten() {
        if let Some(at) = args.iter().rposition(|a| a == flag) {
            args.remove(at);
        }
    }
    args
}

fn skeleton(deployment: &Deployment) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment.metadata.name,
            "namespace": deployment.metadata.namespace,
        },
    })
}

fn template_containers(deployment: &Deployment) -> &[Container] {
    deployment.spec.template.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default()
}

fn deployment_name(deployment: &Deployment) -> String {
    deployment.metadata.name.clone().unwrap_or_default()
}

/// A stable hash of the canonical JSON: it is stored in the cluster and compared by the
/// next operator version.
fn fingerprint(spec: &Value, policy_name: &str) -> String {
    format!("{:016x}", crate::domain::fnv1a(&format!("{policy_name}\n{spec}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        api::{ElectionPolicySpec, InjectionSpec},
        domain::validation::{PolicyOptions, validate},
    };

    /// A valid policy of lock `apps/demo-lock`, with the default timings.
    pub(crate) fn policy(mode: InjectionMode, containers: Option<Vec<&str>>) -> ValidPolicy {
        let spec: ElectionPolicySpec = serde_json::from_value(json!({
            "selector": {"matchLabels": {"app": "demo"}},
            "lock": {"name": "demo-lock"},
        }))
        .unwrap();
        let spec = ElectionPolicySpec {
            injection: InjectionSpec {
                mode,
                containers: containers.map(|c| c.iter().map(|s| s.to_string()).collect()),
            },
            ..spec
        };
        validate("apps", &spec, &PolicyOptions::default()).unwrap()
    }

    fn deployment(containers: Value) -> Deployment {
        named("demo", containers)
    }

    /// A Deployment in namespace `apps` with these pod template containers.
    pub(crate) fn named(name: &str, containers: Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "apps"},
            "spec": {
                "selector": {"matchLabels": {"app": "demo"}},
                "template": {"spec": {"containers": containers}},
            },
        }))
        .unwrap()
    }

    /// What the API server does with an apply under our manager, for the fields this module
    /// writes: merge env by name, replace args, set annotations; and on a later apply drop
    /// what the previous one set and this one does not.
    pub(crate) fn server_side_apply(live: &Deployment, previous: Option<&Value>, config: &Value) -> Deployment {
        let mut value = serde_json::to_value(live).unwrap();
        let ours = |c: &Value| -> Vec<String> {
            c["env"].as_array().into_iter().flatten().filter_map(|e| e["name"].as_str().map(String::from)).collect()
        };
        let containers = value["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap();
        for container in containers.iter_mut() {
            let name = container["name"].clone();
            let find = |cfg: Option<&Value>| -> Option<Value> {
                cfg?["spec"]["template"]["spec"]["containers"].as_array()?.iter().find(|c| c["name"] == name).cloned()
            };
            let before = find(previous);
            let now = find(Some(config));
            let drop: Vec<String> = before.as_ref().map(ours).unwrap_or_default();
            let env = container["env"].as_array().cloned().unwrap_or_default();
            let mut env: Vec<Value> =
                env.into_iter().filter(|e| !drop.iter().any(|d| e["name"] == d.as_str())).collect();
            if let Some(now) = &now {
                for var in now["env"].as_array().into_iter().flatten() {
                    env.retain(|e| e["name"] != var["name"]);
                    env.push(var.clone());
                }
                if let Some(args) = now.get("args") {
                    container["args"] = args.clone();
                }
            }
            if env.is_empty() {
                container.as_object_mut().unwrap().remove("env");
            } else {
                container["env"] = Value::Array(env);
            }
            if container["args"].as_array().is_some_and(|a| a.is_empty()) {
                container.as_object_mut().unwrap().remove("args");
            }
        }
        let annotations = value["metadata"]["annotations"].as_object().cloned().unwrap_or_default();
        let mut annotations: serde_json::Map<String, Value> = annotations
            .into_iter()
            .filter(|(k, _)| previous.is_none_or(|p| p["metadata"]["annotations"].get(k).is_none()))
            .collect();
        for (k, v) in config["metadata"]["annotations"].as_object().into_iter().flatten() {
            annotations.insert(k.clone(), v.clone());
        }
        value["metadata"]["annotations"] = Value::Object(annotations);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn env_mode_sets_the_contract_variables_in_every_container() {
        let d = deployment(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "x"}]));
        let config = apply_config(&d, "pol", &policy(InjectionMode::Env, None)).unwrap();
        let containers = config["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        let env = &containers[0]["env"];
        assert_eq!(env[0], json!({"name": "LEADER_ELECTION_LOCK_TYPE", "value": "leases"}));
        assert_eq!(env[1], json!({"name": "LEADER_ELECTION_LOCK_NAME", "value": "demo-lock"}));
        assert_eq!(env[2], json!({"name": "LEADER_ELECTION_LOCK_NAMESPACE", "value": "apps"}));
        assert_eq!(env[3], json!({"name": "LEADER_ELECTION_LEASE_DURATION", "value": "15s"}));
        assert_eq!(env[4], json!({"name": "LEADER_ELECTION_RENEW_DEADLINE", "value": "10s"}));
        assert_eq!(env[5], json!({"name": "LEADER_ELECTION_RETRY_PERIOD", "value": "2s"}));
        assert_eq!(
            env[6],
            json!({"name": "LEADER_ELECTION_IDENTITY", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}})
        );
        assert_eq!(config["metadata"]["annotations"][POLICY_ANNOTATION], "pol");
        assert!(containers[0].get("args").is_none(), "env mode must not take over args");
    }

    #[test]
    fn only_the_chosen_containers_are_configured() {
        let d = deployment(json!([{"name": "manager", "image": "x"}, {"name": "sidecar", "image": "x"}]));
        let config = apply_config(&d, "pol", &policy(InjectionMode::Env, Some(vec!["manager"]))).unwrap();
        let containers = config["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        assert_eq!(containers[0]["name"], "manager");
    }

    #[test]
    fn a_missing_container_is_an_error_naming_what_exists() {
        let d = deployment(json!([{"name": "app", "image": "x"}]));
        let err = apply_config(&d, "pol", &policy(InjectionMode::Env, Some(vec!["manager"]))).unwrap_err();
        assert_eq!(err.to_string(), r#"Deployment demo has no container named ["manager"] (it has ["app"])"#);
    }

    #[test]
    fn args_mode_appends_flags_after_the_users_args() {
        let d = deployment(json!([{"name": "a", "image": "x", "args": ["--v=2", "serve"]}]));
        let config = apply_config(&d, "pol", &policy(InjectionMode::Args, None)).unwrap();
        let args = config["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
        assert_eq!(args[0], "--v=2");
        assert_eq!(args[1], "serve");
        assert_eq!(args[2], "--leader-elect=true");
        assert_eq!(args[3], "--leader-elect-resource-lock=leases");
        assert_eq!(args[4], "--leader-elect-resource-name=demo-lock");
        assert_eq!(args[5], "--leader-elect-resource-namespace=apps");
        assert_eq!(args[6], "--leader-elect-lease-duration=15s");
        assert_eq!(args[7], "--leader-elect-renew-deadline=10s");
        assert_eq!(args[8], "--leader-elect-retry-period=2s");
        let recorded = config["metadata"]["annotations"][INJECTED_ARGS_ANNOTATION].as_str().unwrap();
        assert!(!recorded.contains("serve"), "only our flags are recorded: {recorded}");
    }

    #[test]
    fn an_applied_config_is_recognised_and_not_applied_again() {
        let original = deployment(json!([{"name": "a", "image": "x", "env": [{"name": "USER_VAR", "value": "1"}]}]));
        let p = policy(InjectionMode::Env, None);
        let config = apply_config(&original, "pol", &p).unwrap();
        assert!(!is_applied(&original, &config));
        let injected = server_side_apply(&original, None, &config);
        assert!(is_applied(&injected, &apply_config(&injected, "pol", &p).unwrap()));
    }

    #[test]
    fn removal_restores_env_and_args_exactly_even_after_user_edits() {
        for mode in [InjectionMode::Env, InjectionMode::Args] {
            let original = deployment(json!([{
                "name": "a", "image": "x",
                "args": ["--v=2"],
                "env": [{"name": "USER_VAR", "value": "1"}],
            }]));
            let p = policy(mode, None);
            let config = apply_config(&original, "pol", &p).unwrap();
            let mut injected = server_side_apply(&original, None, &config);
            // The user adds an arg of their own in front of ours meanwhile.
            let c = &mut injected.spec.template.spec.as_mut().unwrap().containers[0];
            c.args.as_mut().unwrap().insert(0, "--user-flag".into());
            let removal = removal_config(&injected).unwrap();
            let restored = server_side_apply(&injected, Some(&config), &removal);
            let c = &restored.spec.template.spec.as_ref().unwrap().containers[0];
            assert_eq!(c.args, Some(vec!["--user-flag".to_string(), "--v=2".to_string()]), "{mode:?}");
            assert_eq!(c.env.as_ref().unwrap().len(), 1, "{mode:?}");
            assert_eq!(c.env.as_ref().unwrap()[0].name, "USER_VAR");
            assert!(injected_by(&restored).is_none());
        }
    }

    #[test]
    fn switching_from_args_to_env_takes_the_flags_out_and_keeps_the_users_args() {
        let original = deployment(json!([{"name": "a", "image": "x", "args": ["serve"]}]));
        let args_config = apply_config(&original, "pol", &policy(InjectionMode::Args, None)).unwrap();
        let injected = server_side_apply(&original, None, &args_config);
        let env_config = apply_config(&injected, "pol", &policy(InjectionMode::Env, None)).unwrap();
        let container = &env_config["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"], json!(["serve"]));
        assert!(container["env"].is_array());
    }

    #[test]
    fn changed_timings_change_the_fingerprint() {
        let d = deployment(json!([{"name": "a", "image": "x"}]));
        let mut p = policy(InjectionMode::Env, None);
        let before = apply_config(&d, "pol", &p).unwrap();
        p.lease_duration = "30s".into();
        let after = apply_config(&d, "pol", &p).unwrap();
        assert_ne!(
            before["metadata"]["annotations"][FINGERPRINT_ANNOTATION],
            after["metadata"]["annotations"][FINGERPRINT_ANNOTATION]
        );
    }
}
