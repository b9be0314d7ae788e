//! The product as users run it, on the local node: the operator installed by its Helm chart
//! from the locally built image (Pods, in-cluster config, the chart's RBAC and probes), and
//! apps as Deployments of real client-go electors (Pods that read the injected settings and
//! their identity from the downward API).
//!
//! Images are built and imported by `e2e/cluster up` (see e2e/images/build).

use std::time::Duration;

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{Api, Client, api::ListParams};
use serde_json::{Value, json};

use crate::{
    cluster::{helm, helm_ok, install_crd, kubectl, kubectl_ok},
    operator_logs::CHART_POD_LOGS,
    waits::wait_for,
};

/// The operator's image, as the chart's image values (repository, tag).
const OPERATOR_IMAGE_VALUES: &str = "image.repository=localhost/election-operator,image.tag=e2e,image.pullPolicy=Never";
pub const ELECTOR_IMAGE: &str = "localhost/elector:e2e";
pub const SCHEDULER_IMAGE: &str = "localhost/kube-scheduler:e2e";

/// Where the chart is installed: the namespace the audit policy of `e2e/cluster` records.
pub const OPERATOR_NAMESPACE: &str = "election-system";
pub const RELEASE: &str = "election-operator";
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/instance=election-operator";

/// The namespace the chart goes into, with the restricted Pod Security profile enforced.
pub fn ensure_restricted_namespace() {
    kubectl_ok(&["apply", "-f", "-"], Some(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": OPERATOR_NAMESPACE,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"},
    }}).to_string()));
}

/// The operator as users install it: `helm install` of charts/election-operator with the
/// local image. Uninstalled (and its Pods gone) when dropped.
pub struct ChartOperator {
    installed: bool,
    /// A token allowed to read /metrics (see [`METRICS_SCRAPER`]).
    scraper_token: String,
}

/// The ServiceAccount the tests read the operator's metrics as, as a Prometheus would: bound
/// to the chart's metrics-reader ClusterRole.
pub const METRICS_SCRAPER: &str = "metrics-scraper";

impl ChartOperator {
    /// Installs the chart (after removing any earlier release) with `sets` as `--set`
    /// values, waits until its Deployment is rolled out and one replica leads.
    pub async fn install(client: &Client, sets: &[&str]) -> ChartOperator {
        install_crd();
        ensure_restricted_namespace();
        uninstall();
        let mut args = vec![
            "install",
            RELEASE,
            "charts/election-operator",
            "-n",
            OPERATOR_NAMESPACE,
            "--set",
            OPERATOR_IMAGE_VALUES,
            "--set",
            "logLevel=info\\,election_operator=debug",
            "--wait",
            "--timeout",
            "120s",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        helm_ok(&args);
        // A failing wait shows the release's Pods' logs from now on.
        *CHART_POD_LOGS.lock().unwrap_or_else(|e| e.into_inner()) = Some(operator_pod_logs);
        let scraper = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": METRICS_SCRAPER, "namespace": OPERATOR_NAMESPACE}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": METRICS_SCRAPER},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{RELEASE}-metrics-reader")},
             "subjects": [{"kind": "ServiceAccount", "name": METRICS_SCRAPER, "namespace": OPERATOR_NAMESPACE}]},
        ]});
        kubectl_ok(&["apply", "-f", "-"], Some(&scraper.to_string()));
        let scraper_token =
            kubectl_ok(&["create", "token", METRICS_SCRAPER, "-n", OPERATOR_NAMESPACE, "--duration=2h"], None)
                .trim()
                .to_string();
        let operator = ChartOperator { installed: true, scraper_token };
        operator.leader(client).await;
        operator
    }

    /// `helm upgrade --reuse-values --wait` of the release, with `sets` on top: returns once
    /// the upgrade is rolled out and its hooks have run.
    pub fn upgrade(&self, sets: &[&str]) {
        let mut args =
            vec!["upgrade", RELEASE, "charts/election-operator", "-n", OPERATOR_NAMESPACE, "--reuse-values", "--wait"];
        args.extend(["--timeout", "120s"]);
        for set in sets {
            args.extend(["--set", set]);
        }
        helm_ok(&args);
    }

    /// The names of the operator's Pods that run and are not being deleted.
    pub async fn pods(&self, client: &Client) -> Vec<String> {
        running_pods(client, OPERATOR_NAMESPACE, OPERATOR_SELECTOR).await
    }

    /// Waits until a running operator Pod holds the operator's own Lease, and returns it.
    pub async fn leader(&self, client: &Client) -> String {
        let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
        wait_for("an operator Pod to lead", Duration::from_secs(90), || async {
            let holder = leases.get_opt(RELEASE).await.ok()??.spec?.holder_identity?;
            self.pods(client).await.contains(&holder).then_some(holder)
        })
        .await
    }

    /// The /metrics text of operator Pod `pod`, read as Prometheus reads it: HTTPS to the
    /// Pod's IP with the token of [`METRICS_SCRAPER`]. Empty when it does not answer 200.
    pub async fn metrics(&self, pod: &str) -> String {
        match self.get_metrics(pod, Some(&self.scraper_token)).await {
            Some((200, body)) => body,
            _ => String::new(),
        }
    }

    /// `GET /metrics` of operator Pod `pod` with `token`: the status and body.
    pub async fn get_metrics(&self, pod: &str, token: Option<&str>) -> Option<(u16, String)> {
        let ip = kubectl_ok(&["get", "pod", "-n", OPERATOR_NAMESPACE, pod, "-o", "jsonpath={.status.podIP}"], None);
        crate::https::https_get(&format!("{}:8080", ip.trim()), "/metrics", token).await
    }

    /// A token that may read the metrics (as Prometheus's own would).
    pub fn scraper_token(&self) -> &str {
        &self.scraper_token
    }

    /// Everything the operator's Pods logged (current containers and, where one
    /// restarted, the previous ones).
    pub fn logs(&self) -> String {
        operator_pod_logs(None)
    }

    /// `helm uninstall --wait`: the release's objects and Pods are gone on return.
    pub fn uninstall(mut self) {
        uninstall();
        self.installed = false;
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        if self.installed {
            uninstall();
        }
    }
}

fn uninstall() {
    let _ = helm(&["uninstall", RELEASE, "-n", OPERATOR_NAMESPACE, "--wait", "--timeout", "120s"]);
    let _ = kubectl(&["delete", "clusterrolebinding", METRICS_SCRAPER, "--ignore-not-found"], None);
    let _ =
        kubectl(&["delete", "serviceaccount", METRICS_SCRAPER, "-n", OPERATOR_NAMESPACE, "--ignore-not-found"], None);
    *CHART_POD_LOGS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The operator Pods' logs, the last `tail` lines of each (all of them when None).
fn operator_pod_logs(tail: Option<usize>) -> String {
    let tail = tail.map_or("-1".to_string(), |t| t.to_string());
    let output = kubectl(
        &[
            "logs",
            "-n",
            OPERATOR_NAMESPACE,
            "-l",
            OPERATOR_SELECTOR,
            "--prefix",
            "--all-containers",
            "--tail",
            &tail,
            "--max-log-requests",
            "10",
        ],
        None,
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Names of the Pods matching `selector` in `namespace` that are Running and not being
/// deleted, sorted.
pub async fn running_pods(client: &Client, namespace: &str, selector: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
        return Vec::new();
    };
    let mut names: Vec<String> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

/// A Pod's phase, None when it does not exist.
pub async fn pod_phase(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.get_opt(name).await.ok()??.status?.phase
}

/// An app of real client-go electors running as Pods: a ServiceAccount that may hold locks
/// in its namespace, and a Deployment `name` (label app=NAME, container "manager") of
/// `image`.
pub struct PodApp {
    pub namespace: String,
    pub name: String,
}

impl PodApp {
    /// Creates the ServiceAccount, its Role and the Deployment. `container` fields are
    /// merged into the manager container (args, env...).
    pub fn create(namespace: &str, name: &str, replicas: usize, image: &str, container: Value) -> PodApp {
        Self::create_with(namespace, name, replicas, image, container, json!({}))
    }

    /// [`PodApp::create`], with `pod` fields merged into the Pod spec (volumes...).
    pub fn create_with(
        namespace: &str,
        name: &str,
        replicas: usize,
        image: &str,
        container: Value,
        pod: Value,
    ) -> PodApp {
        let mut manager = json!({
            "name": "manager", "image": image, "imagePullPolicy": "Never",
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
        });
        for (k, v) in container.as_object().into_iter().flatten() {
            manager[k] = v.clone();
        }
        let mut pod_spec = json!({
            "serviceAccountName": name,
            "terminationGracePeriodSeconds": 10,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [manager],
        });
        for (k, v) in pod.as_object().into_iter().flatten() {
            pod_spec[k] = v.clone();
        }
        let objects = [
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
            "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
                // The legacy elector's annotation locks.
                {"apiGroups": [""], "resources": ["endpoints", "configmaps"], "verbs": ["get", "create", "update"]},
            ]}),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name}]}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            }}),
        ];
        for object in objects {
            kubectl_ok(&["apply", "-n", namespace, "-f", "-"], Some(&object.to_string()));
        }
        PodApp { namespace: namespace.into(), name: name.into() }
    }

    /// Waits until the Deployment's rollout is complete (`kubectl rollout status`).
    pub fn wait_rolled_out(&self, timeout: Duration) {
        kubectl_ok(
            &[
                "rollout",
                "status",
                "-n",
                &self.namespace,
                &format!("deployment/{}", self.name),
                &format!("--timeout={}s", timeout.as_secs()),
            ],
            None,
        );
    }

    /// The app's Running Pods, not being deleted.
    pub async fn running_pods(&self, client: &Client) -> Vec<String> {
        running_pods(client, &self.namespace, &format!("app={}", self.name)).await
    }

    /// The elector's output in Pod `pod`: one JSON object per line (config, new_leader,
    /// started_leading, stopped_leading).
    pub fn events(&self, pod: &str) -> Vec<Value> {
        let output = kubectl(&["logs", "-n", &self.namespace, pod, "-c", "manager"], None);
        String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// How many times the containers of Pod `pod` restarted.
    pub async fn restarts(&self, client: &Client, pod: &str) -> i32 {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let Ok(pod) = pods.get(pod).await else { return -1 };
        pod.status.and_then(|s| s.container_statuses).into_iter().flatten().map(|c| c.restart_count).sum()
    }
}
