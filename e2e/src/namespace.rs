//! A namespace of its own for each test.

use crate::cluster::{kubectl, kubectl_ok, wait_control_plane_healthy};

/// A namespace for one test, deleted when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    /// Checks that the control plane is healthy (see [`wait_control_plane_healthy`]), then
    /// creates the namespace.
    pub fn new(prefix: &str) -> Self {
        wait_control_plane_healthy();
        let suffix =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000;
        let name = format!("{prefix}-{suffix:x}");
        kubectl_ok(&["create", "namespace", &name], None);
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    /// Deletes the test's ElectionPolicies by name first, then the namespace. The namespace
    /// controller deletes only the kinds discovery shows it, and a kube-apiserver restarted
    /// moments before (the next fault test restarts it while this namespace is still
    /// terminating) serves discovery without the CRD for a while: the namespace was then
    /// finalized with its policies left behind, unmarked, in a namespace that no longer
    /// exists, and later tests waiting for no policies failed. Marked for deletion here,
    /// they go through the operator's cleanup whatever the namespace controller sees.
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "electionpolicies", "--all", "-n", &self.name, "--wait=false"], None);
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}
