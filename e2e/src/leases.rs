//! Leases the tests write themselves: a stand-in for the many apps a test cannot run as
//! processes (200 policies going stale at once, 50 renewing through a pause) and for the
//! hostile records an app could write. Each write is one server-side apply, as an app's
//! update is one write.

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

/// Writes Leases in one namespace, as the field manager `e2e-leases`.
#[derive(Clone)]
pub struct LeaseWriter {
    api: Api<Lease>,
}

impl LeaseWriter {
    pub fn new(client: &Client, namespace: &str) -> Self {
        LeaseWriter { api: Api::namespaced(client.clone(), namespace) }
    }

    /// `name` held by `holder`, renewed now; `lease_seconds` as the record's
    /// leaseDurationSeconds (`None`: the field absent, as some apps leave it).
    pub async fn renew(&self, name: &str, holder: &str, lease_seconds: Option<i64>) -> kube::Result<()> {
        let now = micro_time(Timestamp::now());
        let mut spec =
            json!({"holderIdentity": holder, "renewTime": now, "acquireTime": "2026-01-01T00:00:00.000000Z"});
        if let Some(seconds) = lease_seconds {
            spec["leaseDurationSeconds"] = json!(seconds);
        }
        self.apply(name, spec).await
    }

    /// `name` released (no holder), with `lease_seconds` as its leaseDurationSeconds.
    pub async fn release(&self, name: &str, lease_seconds: i64) -> kube::Result<()> {
        let now = micro_time(Timestamp::now());
        let spec = json!({"holderIdentity": "", "renewTime": now, "leaseDurationSeconds": lease_seconds});
        self.apply(name, spec).await
    }

    async fn apply(&self, name: &str, spec: Value) -> kube::Result<()> {
        let lease =
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec});
        let params = PatchParams::apply("e2e-leases").force();
        self.api.patch(name, &params, &Patch::Apply(&lease)).await.map(drop)
    }
}

fn micro_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}
