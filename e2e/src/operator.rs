//! election-operator run locally from target/debug, as a child process of the test.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use crate::{
    cluster::{install_crd, kubeconfig, repo_root},
    operator_logs::RUNNING_OPERATOR_LOGS,
    process::{dies_with_parent, free_port, http_get},
    waits::wait_for,
};

/// A running election-operator process, killed when dropped.
pub struct Operator {
    child: Child,
    pub metrics_port: u16,
    pub probe_port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Starts target/debug/election-operator (built by `make test`) with `args`, talking to
    /// the cluster through `kubeconfig`.
    pub fn start_with(kubeconfig: &Path, args: &[&str]) -> Self {
        Self::start_with_env(kubeconfig, args, &[])
    }

    /// As [`Operator::start_with`], with environment variables `env` set (failpoints, say).
    pub fn start_with_env(kubeconfig: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        install_crd();
        let binary = repo_root().join("target/debug/election-operator");
        assert!(binary.exists(), "{} is missing: run `cargo build` first (make test does)", binary.display());
        let metrics_port = free_port();
        let probe_port = free_port();
        let logs = repo_root().join("e2e/.cluster/logs");
        std::fs::create_dir_all(&logs).unwrap();
        let log = logs.join(format!("operator-{}-{metrics_port}.log", std::process::id()));
        let file = std::fs::File::create(&log).unwrap();
        let child = dies_with_parent(&mut Command::new(binary))
            .args(["--metrics-bind-address", &format!("127.0.0.1:{metrics_port}")])
            .args(["--health-probe-bind-address", &format!("127.0.0.1:{probe_port}")])
            // Plain HTTP on loopback, for the tests' own reads; tests/metrics_access.rs runs the
            // secure endpoint as the chart does.
            .args(["--metrics-secure=false"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,election_operator=debug")
            .envs(env.iter().copied())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("election-operator starts");
        RUNNING_OPERATOR_LOGS.lock().unwrap_or_else(|e| e.into_inner()).push(log.clone());
        Operator { child, metrics_port, probe_port, log }
    }

    pub fn start(args: &[&str]) -> Self {
        Self::start_with(&kubeconfig(), args)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Waits until /readyz answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        wait_for("the operator to be ready", timeout, || async {
            http_get(self.probe_port, "/readyz").await.filter(|b| b == "ok")
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").await.unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status();
    }

    /// Waits for the process to exit, up to `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for("the operator to exit", timeout, || {
            let status = self.child.try_wait().ok().flatten();
            async move { status }
        })
        .await
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        RUNNING_OPERATOR_LOGS.lock().unwrap_or_else(|e| e.into_inner()).retain(|log| *log != self.log);
    }
}

/// Starts an operator with the admin kubeconfig and waits until it is ready.
pub async fn started_operator(args: &[&str]) -> Operator {
    let operator = Operator::start(args);
    operator.wait_ready(Duration::from_secs(60)).await;
    operator
}
