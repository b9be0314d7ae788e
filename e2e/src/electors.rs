//! Local elector processes (real client-go leader-election programs), and apps under test
//! whose replicas they play.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use kube::Client;
use serde_json::Value;

use crate::{
    cluster::{kubeconfig, kubectl_ok, repo_root},
    policy::{get_deployment, injected_env, wait_policy},
    process::dies_with_parent,
    waits::wait_for,
};

/// Which build of the elector to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectorBuild {
    /// client-go v0.37: Lease locks.
    Current,
    /// client-go v0.23: Endpoints and ConfigMap annotation locks too.
    Legacy,
}

/// A running elector process (e2e/bin/elector): a real client-go leader-election program.
pub struct Elector {
    pub identity: String,
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Elector {
    /// Starts an elector with `env` (LEADER_ELECTION_* variables) and `args` (flags).
    pub fn spawn(build: ElectorBuild, identity: &str, env: &[(String, String)], args: &[String]) -> Self {
        let program = match build {
            ElectorBuild::Current => "e2e/bin/elector",
            ElectorBuild::Legacy => "e2e/bin/elector-legacy",
        };
        let mut child = dies_with_parent(&mut Command::new(repo_root().join(program)))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("LEADER_ELECTION_IDENTITY", identity)
            .env("KUBECONFIG", kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("e2e/bin/elector starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(value);
                }
            }
        });
        Elector { identity: identity.to_string(), child, lines }
    }

    /// The transition lines printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    pub fn has_event(&self, event: &str) -> bool {
        self.events().iter().any(|e| e["event"] == event)
    }

    /// Waits for a line with `"event": event` and returns it.
    pub async fn wait_event(&self, event: &str, timeout: Duration) -> Value {
        wait_for(&format!("{} to print {event}", self.identity), timeout, || async {
            self.events().into_iter().find(|e| e["event"] == event)
        })
        .await
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: &str) {
        let status =
            Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// SIGSTOP, sent just after the elector has renewed its lock, so that the freeze falls
    /// in its sleep between renewals (retryPeriod) and not inside a renewal.
    ///
    /// A test about the same holder recovering after a freeze needs that: client-go bounds a
    /// renewal by renewDeadline, so a renewal that was in flight when the process froze has
    /// run out of time when it resumes; the elector then gives up leadership and releases
    /// the lock instead of renewing it. (Seen once in three runs with a plain SIGSTOP sent
    /// right after the leader was reported: the stop met the first renewal, slowed by a
    /// conflict with the operator's label write.)
    pub async fn stop_between_renewals(&self) {
        // The elector prints "renewed" once client-go's Update has returned: the Lease's
        // renewTime changes when the API server stores it, while the elector may still be
        // inside the renewal (seen once in a few runs: frozen there, it released the lock).
        let renewals = || self.events().iter().filter(|e| e["event"] == "renewed").count();
        let before = renewals();
        wait_for(&format!("{} to renew", self.identity), Duration::from_secs(30), || async {
            (renewals() > before).then_some(())
        })
        .await;
        self.signal("STOP");
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        // A stopped process does not die of SIGKILL until continued on some kernels' views
        // of it; continue first so the wait below cannot hang.
        let _ = Command::new("kill").args(["-CONT", &self.pid().to_string()]).stderr(Stdio::null()).status();
        self.kill();
    }
}

/// An app under test whose replicas are local elector processes: a Deployment (Recreate, of
/// the pause image) and the ElectionPolicy that configures it, with the configuration its
/// Pods received and their names, which the electors play. For tests that need precise
/// control of each replica (SIGSTOP, clock skew, legacy locks); apps as users run them are
/// [`workloads::PodApp`](crate::workloads::PodApp).
pub struct App {
    pub namespace: String,
    pub name: String,
    /// Injected LEADER_ELECTION_* values (the identity aside).
    pub env: Vec<(String, String)>,
    pub pods: Vec<String>,
}

/// Creates the Deployment `name` (label app=NAME) and its policy; `spec` fields are added
/// to the policy's spec (timings, lock type, injection, detection...).
pub fn create_app_objects(namespace: &str, name: &str, replicas: usize, spec: Value) {
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas, "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "localhost/pause:e2e", "imagePullPolicy": "Never"}]}},
        },
    });
    let mut policy_spec = serde_json::json!({"selector": {"matchLabels": {"app": name}}, "lock": {"name": name}});
    for (k, v) in spec.as_object().into_iter().flatten() {
        policy_spec[k] = v.clone();
    }
    let policy = serde_json::json!({"apiVersion": "election.dev/v1alpha1", "kind": "ElectionPolicy", "metadata": {"name": name}, "spec": policy_spec});
    kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(&deployment.to_string()));
    kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(&policy.to_string()));
}

impl App {
    /// Creates the app and waits until its Pods carry the injected configuration.
    pub async fn create(client: &Client, namespace: &str, name: &str, replicas: usize, spec: Value) -> App {
        create_app_objects(namespace, name, replicas, spec);
        let env = wait_for("the injected configuration", Duration::from_secs(60), || async {
            let env = injected_env(&get_deployment(client, namespace, name).await, 0);
            (!env.is_empty()).then_some(env)
        })
        .await;
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), namespace);
        let pods = wait_for("the Pods of the configured template", Duration::from_secs(60), || async {
            let list = api.list(&kube::api::ListParams::default().labels(&format!("app={name}"))).await.ok()?;
            let configured: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| serde_json::to_string(&p.spec).unwrap_or_default().contains("LEADER_ELECTION_LOCK_NAME"))
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            (configured.len() == replicas).then_some(configured)
        })
        .await;
        App { namespace: namespace.into(), name: name.into(), env, pods }
    }

    /// An elector playing Pod `pod`, with the injected configuration.
    pub fn elector(&self, build: ElectorBuild, pod: usize, args: &[&str]) -> Elector {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Elector::spawn(build, &self.pods[pod], &self.env, &args)
    }

    /// Waits until the policy reports a leader in `state`, and returns it.
    pub async fn leader(&self, client: &Client, state: election_operator::api::PolicyState) -> String {
        let policy = wait_policy(
            client,
            &self.namespace,
            &self.name,
            &format!("a leader, {state:?}"),
            Duration::from_secs(60),
            |p| p.status.as_ref().is_some_and(|s| !s.leader.is_empty() && s.state == Some(state)),
        )
        .await;
        policy.status.map(|s| s.leader).unwrap_or_default()
    }

    /// Waits until the policy's status shows `leader` in `state`. Status and Events are
    /// separate writes, so a test that saw an Event must still wait for the status.
    pub async fn wait_leader(&self, client: &Client, leader: &str, state: election_operator::api::PolicyState) {
        wait_policy(
            client,
            &self.namespace,
            &self.name,
            &format!("leader {leader}, {state:?}"),
            Duration::from_secs(60),
            |p| p.status.as_ref().is_some_and(|s| s.leader == leader && s.state == Some(state)),
        )
        .await;
    }

    /// The exact series of a per-policy metric for this app's policy.
    pub fn series(&self, metric: &str) -> String {
        format!(r#"{metric}{{namespace="{}",policy="{}"}}"#, self.namespace, self.name)
    }
}
