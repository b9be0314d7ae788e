//! A real Prometheus (e2e/bin/prometheus, built from its Go module) that scrapes the
//! operator the way the chart's ServiceMonitor tells prometheus-operator to, and evaluates
//! the chart's alert rules: both rendered from the chart with the test's values.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::{
    cluster::{helm_ok, kubeconfig, repo_root},
    process::{dies_with_parent, free_port, http_get},
    waits::{wait_for, wait_until},
};

/// A Prometheus process with its own data folder; killed (and the folder removed) when
/// dropped.
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on the chart's ServiceMonitor and PrometheusRule, rendered with
    /// `sets` (`--set` values, e.g. a short scrape interval), evaluating every
    /// `evaluation_interval`; returns once it answers queries. `token` stands for
    /// Prometheus's own ServiceAccount token, which a ServiceMonitor's `bearerTokenFile`
    /// names in-cluster.
    pub async fn for_chart(
        release: &str,
        namespace: &str,
        sets: &[&str],
        evaluation_interval: &str,
        token: &str,
    ) -> Prometheus {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("e2e-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let rules = dir.join("election-operator.rules.yaml");
        let mut render = Command::new(repo_root().join("e2e/bin/render-rules"));
        render.arg(&rules).args(["--namespace", namespace]);
        for set in sets {
            render.args(["--set", set]);
        }
        let rendered = render.output().expect("e2e/bin/render-rules runs");
        assert!(rendered.status.success(), "render-rules: {}", String::from_utf8_lossy(&rendered.stderr));

        let monitor = service_monitor(release, namespace, sets);
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).expect("token written");
        let config = serde_json::json!({
            "global": {"evaluation_interval": evaluation_interval},
            "rule_files": [rules],
            "scrape_configs": [scrape_config(&monitor, &kubeconfig(), &token_file)],
        });
        // JSON is YAML: Prometheus reads this file as its configuration.
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config.to_string()).expect("config written");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = dies_with_parent(&mut Command::new(repo_root().join("e2e/bin/prometheus")))
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("e2e/bin/prometheus starts");
        let prometheus = Prometheus { child, port, dir };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || http_get(port, "/-/ready")).await;
        prometheus
    }

    /// The result vector of an instant query (empty when the query fails).
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let body = http_get(self.port, &format!("/api/v1/query?query={}", percent_encode(expr))).await;
        body.and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The value of a query that returns one sample, None otherwise.
    pub async fn scalar(&self, expr: &str) -> Option<f64> {
        match self.query(expr).await.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// The alerts named `name` in state `state` ("pending", "firing") whose labels include
    /// `labels`.
    pub async fn alerts(&self, name: &str, state: &str, labels: &[(&str, &str)]) -> Vec<Value> {
        let body = http_get(self.port, "/api/v1/alerts").await;
        let all = body
            .and_then(|b| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default();
        all.into_iter()
            .filter(|a| a["labels"]["alertname"] == name && a["state"] == state)
            .filter(|a| labels.iter().all(|(k, v)| a["labels"][k] == *v))
            .collect()
    }

    /// Waits until alert `name` fires with `labels`, checks that it fires exactly once
    /// (one alert, whatever number of operator replicas is scraped), and returns it.
    pub async fn wait_firing(&self, name: &str, labels: &[(&str, &str)], timeout: Duration) -> Value {
        let firing = wait_until(
            &format!("{name} {labels:?} to fire"),
            timeout,
            || self.alerts(name, "firing", labels),
            |alerts| !alerts.is_empty(),
            |alerts| format!("{alerts:?}; {}", self.log_tail()),
        )
        .await;
        assert_eq!(firing.len(), 1, "exactly one {name} alert for {labels:?}: {firing:?}");
        firing.into_iter().next().unwrap()
    }

    /// Waits until no alert `name` with `labels` is pending or firing.
    pub async fn wait_resolved(&self, name: &str, labels: &[(&str, &str)], timeout: Duration) {
        wait_until(
            &format!("{name} {labels:?} to resolve"),
            timeout,
            || async {
                [self.alerts(name, "firing", labels).await, self.alerts(name, "pending", labels).await].concat()
            },
            |alerts| alerts.is_empty(),
            |alerts| format!("{alerts:?}"),
        )
        .await;
    }

    /// The last lines of Prometheus's own log (scrape and rule errors).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!("prometheus log:\n{}", lines[lines.len().saturating_sub(20)..].join("\n"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The chart's ServiceMonitor, rendered with `sets`.
fn service_monitor(release: &str, namespace: &str, sets: &[&str]) -> Value {
    let mut args = vec![
        "template",
        release,
        "charts/election-operator",
        "--namespace",
        namespace,
        "--show-only",
        "templates/servicemonitor.yaml",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let yaml = helm_ok(&args);
    serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("the rendered ServiceMonitor parses: {e}\n{yaml}"))
}

/// The scrape configuration prometheus-operator generates for the ServiceMonitor's first
/// endpoint (the fields the chart uses): endpoints discovery in the monitor's namespace,
/// kept by the Service's labels and the port's name, with the target labels it adds
/// (namespace, service, pod, container, endpoint; job = the Service's name) and the
/// endpoint's honorLabels, which decides whether a scraped `namespace` label survives.
fn scrape_config(monitor: &Value, kubeconfig: &std::path::Path, token_file: &std::path::Path) -> Value {
    let namespace = monitor["metadata"]["namespace"].as_str().expect("the ServiceMonitor has a namespace");
    let name = monitor["metadata"]["name"].as_str().expect("the ServiceMonitor has a name");
    let endpoint = &monitor["spec"]["endpoints"][0];
    let port = endpoint["port"].as_str().expect("endpoints[0].port");
    let mut relabel: Vec<Value> = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector.matchLabels")
        .iter()
        .map(|(label, value)| {
            let meta = sanitize(label);
            serde_json::json!({
                "action": "keep",
                "source_labels": [format!("__meta_kubernetes_service_label_{meta}"), format!("__meta_kubernetes_service_labelpresent_{meta}")],
                "regex": format!("({});true", value.as_str().unwrap_or_default()),
            })
        })
        .collect();
    relabel.push(
        serde_json::json!({"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": port}),
    );
    for (target, source) in [
        ("namespace", "__meta_kubernetes_namespace"),
        ("service", "__meta_kubernetes_service_name"),
        ("pod", "__meta_kubernetes_pod_name"),
        ("container", "__meta_kubernetes_pod_container_name"),
        ("job", "__meta_kubernetes_service_name"),
    ] {
        relabel.push(serde_json::json!({"source_labels": [source], "target_label": target}));
    }
    relabel.push(serde_json::json!({"target_label": "endpoint", "replacement": port}));
    let mut config = serde_json::json!({
        "job_name": format!("serviceMonitor/{namespace}/{name}/0"),
        "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
        "scrape_interval": endpoint["interval"].as_str().unwrap_or("30s"),
        "metrics_path": endpoint["path"].as_str().unwrap_or("/metrics"),
        "scheme": endpoint["scheme"].as_str().unwrap_or("http"),
        "kubernetes_sd_configs": [{"role": "endpoints", "kubeconfig_file": kubeconfig, "namespaces": {"names": [namespace]}}],
        "relabel_configs": relabel,
    });
    if let Some(skip) = endpoint["tlsConfig"]["insecureSkipVerify"].as_bool() {
        config["tls_config"] = serde_json::json!({"insecure_skip_verify": skip});
    }
    if endpoint["bearerTokenFile"].is_string() {
        config["authorization"] = serde_json::json!({"type": "Bearer", "credentials_file": token_file});
    }
    config
}

/// A Kubernetes label name as Prometheus's service discovery spells it in meta labels.
fn sanitize(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
