//! election-operator: configures, observes and alerts on client-go leader election.
//!
//! Layers, top-down: [`api`] (the ElectionPolicy types), [`domain`] (pure logic: validation,
//! lock records, observation, injection, status), [`k8s`] (watches, patches, events), and
//! the binaries (`election-operator`, `crdgen`).

pub mod api;
pub mod crd;
pub mod domain;
pub mod failpoints;
pub mod http;
pub mod k8s;
pub mod limits;
pub mod metrics;
pub mod operator;
pub mod supervisor;

/// Every failure the operator handles.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[source] kube::Error),

    #[error(
        "the ElectionPolicy CRD is not installed: {0}; apply crds/electionpolicies.election.dev.yaml (or install the Helm chart) first"
    )]
    CrdNotInstalled(#[source] kube::Error),

    #[error(transparent)]
    Injection(#[from] domain::injection::InjectionError),

    #[error("object has no {0}")]
    MissingField(&'static str),

    /// With --leader-elect: another replica took over, so this one must stop writing.
    #[error("leadership lost")]
    LeadershipLost,

    /// A task of the operator panicked, or ended while it should run (see [`supervisor`]).
    #[error("{0}")]
    TaskFailed(supervisor::TaskFailure),

    /// A --metrics-bind-address or --health-probe-bind-address that is not an address.
    #[error("{address:?}: {reason}")]
    InvalidBindAddress { address: String, reason: std::net::AddrParseError },
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::CrdNotInstalled(_) => "crd_not_installed",
            Error::Injection(_) => "injection",
            Error::MissingField(_) => "missing_field",
            Error::LeadershipLost => "leadership_lost",
            Error::TaskFailed(_) => "task_failed",
            Error::InvalidBindAddress { .. } => "invalid_bind_address",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
