//! The local control plane started by `e2e/cluster up`: where it is (kubeconfig, ports),
//! clients and the command-line tools against it (kubectl, helm, `e2e/cluster`), the check
//! that it works, and the faults the tests put into it (stopped components, etcd compaction).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use kube::{Client, Config, config::KubeConfigOptions};
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("e2e/ has a parent").to_path_buf()
}

/// The admin kubeconfig written by `e2e/cluster up`.
pub fn kubeconfig() -> PathBuf {
    let path = repo_root().join("e2e/.cluster/kubeconfig");
    assert!(
        path.exists(),
        "{} is missing: start the control plane with `e2e/cluster up` (make test does)",
        path.display()
    );
    path
}

/// A client for the local control plane, as its administrator.
pub async fn admin_client() -> Client {
    client_for(&kubeconfig()).await
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let config = kube::config::Kubeconfig::read_from(kubeconfig).expect("readable kubeconfig");
    let config =
        Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await.expect("usable kubeconfig");
    Client::try_from(config).expect("client")
}

/// Waits until the cluster is fully working: the API server ready, and a canary Deployment
/// of one pause Pod rolled out again, which takes every component's watch: the deployment
/// and ReplicaSet controllers, the scheduler and the kubelet (Recreate: the old Pod must be
/// seen gone before the new one is made). After an API server or etcd outage each of them
/// relists on its own backoff; a check of the deployment controller alone once let a test
/// start while the kubelet had not yet seen a deletion, and its rollout never came.
/// Every test starts with this (TestNamespace::new calls it), and every fault test ends with
/// it, so no test inherits a half-recovered cluster from the one before. About 1.5 s.
pub fn wait_control_plane_healthy() {
    const NAMESPACE: &str = "e2e-health";
    const TIMEOUT: Duration = Duration::from_secs(120);
    let started = Instant::now();
    let poll = |what: &str, check: &dyn Fn() -> Result<(), String>| loop {
        match check() {
            Ok(()) => return,
            Err(last) if started.elapsed() >= TIMEOUT => {
                panic!("the control plane is not healthy after {TIMEOUT:?}: waiting for {what}; last observed: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let text = |output: Output| {
        format!("{} {}", String::from_utf8_lossy(&output.stdout).trim(), String::from_utf8_lossy(&output.stderr).trim())
    };
    poll("kube-apiserver /readyz", &|| {
        let output = kubectl(&["get", "--raw", "/readyz"], None);
        if output.status.success() { Ok(()) } else { Err(text(output)) }
    });
    poll("kube-controller-manager /healthz", &|| {
        let url = format!("https://127.0.0.1:{}/healthz", cluster_port("CONTROLLER_MANAGER_PORT"));
        let output = Command::new("curl").args(["-sk", "-m", "2", &url]).output().expect("curl runs");
        if output.stdout == b"ok" {
            Ok(())
        } else {
            Err(format!("{} (is it running? e2e/cluster status)", text(output)))
        }
    });
    // The canary: one pause Pod whose template the check changes each time.
    poll("the canary Deployment", &|| {
        let _ = kubectl(&["create", "namespace", NAMESPACE], None);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let canary = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "canary", "namespace": NAMESPACE},
            "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": "canary"}},
                "template": {"metadata": {"labels": {"app": "canary"},
                        "annotations": {"e2e.election.dev/health-check": nanos.to_string()}},
                    "spec": {"terminationGracePeriodSeconds": 5,
                        "containers": [{"name": "c", "image": "localhost/pause:e2e", "imagePullPolicy": "Never"}]}}},
        });
        let output = kubectl(&["apply", "-f", "-"], Some(&canary.to_string()));
        if output.status.success() { Ok(()) } else { Err(text(output)) }
    });
    poll("the canary's new Pod available and the old one gone (controllers, scheduler, kubelet)", &|| {
        let output = kubectl(
            &[
                "-n",
                NAMESPACE,
                "get",
                "deployment",
                "canary",
                "-o",
                "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.replicas} \
                 {.status.updatedReplicas} {.status.availableReplicas}",
            ],
            None,
        );
        let seen = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let fields: Vec<&str> = seen.split_whitespace().collect();
        match fields[..] {
            [generation, observed, "1", "1", "1"] if generation == observed => Ok(()),
            _ => Err(format!(
                "generation, observedGeneration, replicas, updated, available: {seen:?} {}",
                String::from_utf8_lossy(&output.stderr)
            )),
        }
    });
    let waited = started.elapsed();
    if waited > Duration::from_secs(5) {
        println!("slow wait: {:.1}s for a healthy control plane", waited.as_secs_f64());
    }
}

/// Runs kubectl against the local control plane; `stdin` is piped in when given.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    kubectl_as(&kubeconfig(), args, stdin)
}

pub fn kubectl_as(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().expect("piped").write_all(input.as_bytes()).expect("write to kubectl");
    }
    child.wait_with_output().expect("kubectl runs")
}

/// kubectl that must succeed; returns stdout.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let output = kubectl(args, stdin);
    assert!(output.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Installs (or updates) the committed CRD and waits until it is served.
pub fn install_crd() {
    let crd = repo_root().join("crds/electionpolicies.election.dev.yaml");
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crd.to_str().unwrap()], None);
    kubectl_ok(&["wait", "--for=condition=Established", "crd/electionpolicies.election.dev", "--timeout=30s"], None);
}

/// Runs e2e/bin/helm against the local control plane.
pub fn helm(args: &[&str]) -> Output {
    Command::new(repo_root().join("e2e/bin/helm"))
        .args(args)
        .env("KUBECONFIG", kubeconfig())
        .current_dir(repo_root())
        .output()
        .expect("e2e/bin/helm runs")
}

pub fn helm_ok(args: &[&str]) -> String {
    let output = helm(args);
    assert!(output.status.success(), "helm {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `e2e/cluster ARGS` (stop/start a component for fault tests).
pub fn cluster(args: &[&str]) {
    let output = Command::new(repo_root().join("e2e/cluster")).args(args).output().expect("e2e/cluster runs");
    assert!(output.status.success(), "e2e/cluster {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A control-plane component stopped for a fault test; started again when dropped, so a
/// failing test does not leave the cluster broken for the next one.
pub struct Stopped {
    component: String,
    running: bool,
}

impl Stopped {
    pub fn new(component: &str) -> Self {
        cluster(&["stop", component]);
        Stopped { component: component.into(), running: false }
    }

    /// Starts it again (returns once it is ready). The rest of the control plane may need
    /// longer: a fault test ends with [`wait_control_plane_healthy`].
    pub fn start(mut self) {
        cluster(&["start", &self.component]);
        self.running = true;
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.running {
            let _ = Command::new(repo_root().join("e2e/cluster")).args(["start", &self.component]).output();
        }
    }
}

/// A port of the running local control plane, from e2e/.cluster/ports.env.
pub fn cluster_port(name: &str) -> u16 {
    let ports = std::fs::read_to_string(repo_root().join("e2e/.cluster/ports.env")).expect("the cluster is up");
    ports
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}="))?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in ports.env"))
}

/// Compacts etcd's history up to its current revision, as the API server does every five
/// minutes: a watch resuming from an older resourceVersion then gets 410 Gone.
pub async fn compact_etcd() -> u64 {
    let port = cluster_port("ETCD_CLIENT_PORT");
    let post = |path: &str, body: &str| {
        let output = Command::new("curl")
            .args(["-sf", "-m", "5", "-X", "POST", &format!("http://127.0.0.1:{port}{path}"), "-d", body])
            .output()
            .expect("curl runs");
        serde_json::from_slice::<Value>(&output.stdout).unwrap_or(Value::Null)
    };
    let revision: u64 = post("/v3/kv/range", r#"{"key":"AA=="}"#)["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("etcd answers with its revision");
    post("/v3/kv/compaction", &format!(r#"{{"revision":"{revision}","physical":true}}"#));
    revision
}
