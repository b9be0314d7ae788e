//! Helpers for the end-to-end tests, which run against the real local control plane
//! started by `e2e/cluster up` (see e2e/run-tests).
//!
//! Everything waits on a condition with a deadline ([`wait_for`]); nothing sleeps for a
//! fixed time hoping something happened meanwhile.
//!
//! The helpers live in modules by concern; everything is re-exported here, so that tests
//! name it `election_e2e::…`.

pub mod cluster;
pub mod electors;
pub mod https;
pub mod leases;
pub mod metrics;
pub mod namespace;
pub mod operator;
pub mod operator_logs;
pub mod policy;
pub mod process;
pub mod prometheus;
pub mod rbac;
pub mod waits;
pub mod workloads;

pub use cluster::{
    Stopped, admin_client, client_for, cluster, cluster_port, compact_etcd, helm, helm_ok, install_crd, kubeconfig,
    kubectl, kubectl_as, kubectl_ok, repo_root, wait_control_plane_healthy,
};
pub use electors::{App, Elector, ElectorBuild, create_app_objects};
pub use https::KeptAlive;
pub use leases::LeaseWriter;
pub use metrics::sample;
pub use namespace::TestNamespace;
pub use operator::{Operator, started_operator};
pub use operator_logs::operator_log_tails;
pub use policy::{
    apply_object, condition, count_policy_events, get_deployment, get_policy, injected_env, policy_events,
    policy_object, wait_no_policies_left, wait_policy, wait_policy_event,
};
pub use process::{free_port, http_get};
pub use rbac::{
    audit_entries, audited_namespaces, audited_requests, audited_writes, rbac_denials, service_account_kubeconfig,
};
pub use waits::{wait_for, wait_until};
