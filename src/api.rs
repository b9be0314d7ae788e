//! The `ElectionPolicy` API (`election.dev/v1alpha1`): the types users write and read.
//!
//! Everything `kubectl explain` shows comes from the doc comments here, and every rule the
//! API server enforces at `kubectl apply` is declared here as CEL (`x-kubernetes-validations`).
//! The operator checks the same rules again in [`crate::domain::validation`], because a policy can
//! reach it from an API server that never ran them (an older CRD, a direct etcd write).

// kube's `printcolumn(...)` arguments repeat keys such as `type_`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::limits::{DurationLimit, MAX_FLAPPING_WINDOW, MAX_TIMING};

/// client-go's `DefaultLeaseDuration`, as kube-controller-manager uses it.
pub const DEFAULT_LEASE_DURATION: &str = "15s";
/// client-go's `DefaultRenewDeadline`.
pub const DEFAULT_RENEW_DEADLINE: &str = "10s";
/// client-go's `DefaultRetryPeriod`.
pub const DEFAULT_RETRY_PERIOD: &str = "2s";

/// Go's `time.ParseDuration` grammar (which CEL's `duration()` uses), as an RE2 pattern for
/// CEL `matches()`. A sign is accepted here so that "-5s" is reported by the "> 0" rule,
/// which says what is wrong, rather than by the format rule.
const GO_DURATION_CEL_PATTERN: &str = r"'^[-+]?(0|((\\d+(\\.\\d*)?|\\.\\d+)(ns|us|µs|μs|ms|s|m|h))+)$'";
/// DNS-1123 subdomain, as Kubernetes validates object names.
const DNS1123_SUBDOMAIN_CEL_PATTERN: &str = r"'^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'";
/// DNS-1123 label, as Kubernetes validates namespace names.
const DNS1123_LABEL_CEL_PATTERN: &str = r"'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'";

/// An `ElectionPolicy` declares the leader-election lock and timings that a set of
/// Deployments share. The operator injects that configuration into the Deployments' pod
/// templates, watches the lock, and reports who leads and whether the leader keeps renewing.
#[derive(CustomResource, KubeSchema, Validate, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "election.dev",
    version = "v1alpha1",
    kind = "ElectionPolicy",
    plural = "electionpolicies",
    shortname = "elp",
    namespaced,
    status = "ElectionPolicyStatus",
    derive = "PartialEq",
    doc = "ElectionPolicy declares the leader-election lock and timings shared by a set of Deployments; the operator injects that configuration, watches the lock and reports the leader and its health in status.",
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "Identity holding the lock"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Pending, Healthy, Stale, NoLeader or Invalid"
    ),
    printcolumn(
        name = "Transitions",
        type_ = "integer",
        json_path = ".status.leaderTransitions",
        description = "Leader transitions recorded in the lock"
    ),
    printcolumn(
        name = "Lock",
        type_ = "string",
        json_path = ".spec.lock.name",
        description = "Name of the lock object"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Failover",
        type_ = "number",
        json_path = ".status.history[0].leaderlessSeconds",
        description = "Seconds without a leader at the last leader change",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[validate(schema(function = "crate::domain::validation::timings"))]
#[x_kube(
    validation = timing_rule(
        "duration(self.leaseDuration) > duration(self.renewDeadline)",
        "leaseDuration must be greater than renewDeadline (client-go: the lease must outlive the leader's renewal attempts)",
        ".leaseDuration",
    ),
    validation = timing_rule(
        // Exact integer form of client-go's `renewDeadline > JitterFactor(1.2) * retryPeriod`.
        "duration(self.renewDeadline) + duration(self.renewDeadline) + duration(self.renewDeadline) + duration(self.renewDeadline) + duration(self.renewDeadline) > duration(self.retryPeriod) + duration(self.retryPeriod) + duration(self.retryPeriod) + duration(self.retryPeriod) + duration(self.retryPeriod) + duration(self.retryPeriod)",
        "renewDeadline must be greater than 1.2 x retryPeriod (client-go JitterFactor: a renewal must fit at least one jittered retry)",
        ".renewDeadline",
    ),
    validation = slow_renewal_rule(),
    validation = lock_change_rule(),
)]
pub struct ElectionPolicySpec {
    /// Selects the Deployments, in this policy's namespace, whose replicas compete for the
    /// lock. The configuration is injected into their pod templates, and the lock's holder is
    /// expected to be one of their Pods. It must not be empty.
    #[x_kube(
        validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)")
            .message("selector must not be empty: an empty selector would select every Deployment in the namespace"),
        validation = Rule::new("!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])")
            .message("selector.matchExpressions operator must be one of In, NotIn, Exists, DoesNotExist"),
        validation = Rule::new("!has(self.matchExpressions) || self.matchExpressions.all(e, e.operator in ['In', 'NotIn'] ? (has(e.values) && size(e.values) > 0) : (!has(e.values) || size(e.values) == 0))")
            .message("selector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"),
    )]
    pub selector: LabelSelector,

    /// The lock object the replicas compete for.
    #[validate(nested)]
    pub lock: LockSpec,

    /// How long non-leaders wait after the last observed renewal before they may take the
    /// lock; also how long the operator waits, on its own clock, before it calls the lease
    /// stale. A Go duration such as "15s" or "1m". Default 15s (client-go's default).
    /// Must be greater than renewDeadline.
    #[serde(default = "default_lease_duration")]
    #[validate(length(min = 1, max = 32))]
    #[x_kube(
        validation = duration_format_rule("leaseDuration"),
        validation = duration_positive_rule("leaseDuration"),
        validation = duration_bound_rule("leaseDuration", MAX_TIMING)
    )]
    pub lease_duration: String,

    /// How long the leader keeps retrying to renew before it gives up leadership. A Go
    /// duration. Default 10s (client-go's default). Must be greater than 1.2 x retryPeriod.
    #[serde(default = "default_renew_deadline")]
    #[validate(length(min = 1, max = 32))]
    #[x_kube(
        validation = duration_format_rule("renewDeadline"),
        validation = duration_positive_rule("renewDeadline"),
        validation = duration_bound_rule("renewDeadline", MAX_TIMING)
    )]
    pub renew_deadline: String,

    /// How long replicas wait between attempts to acquire or renew the lock. A Go duration.
    /// Default 2s (client-go's default).
    #[serde(default = "default_retry_period")]
    #[validate(length(min = 1, max = 32))]
    #[x_kube(
        validation = duration_format_rule("retryPeriod"),
        validation = duration_positive_rule("retryPeriod"),
        validation = duration_bound_rule("retryPeriod", MAX_TIMING)
    )]
    pub retry_period: String,

    /// How the configuration reaches the selected Deployments. Default: environment
    /// variables in every container.
    #[serde(default)]
    #[validate(nested)]
    pub injection: InjectionSpec,

    /// Problems to report beyond staleness, with their thresholds.
    #[serde(default)]
    #[validate(nested)]
    pub detection: DetectionSpec,

    /// Keep the label election.dev/leader=true on the lock holder's Pod (and off the other
    /// Pods of the selected Deployments), so that a Service can select the leader. Needs the
    /// operator's --leader-pod-label (Helm value leaderPodLabel.enabled). Default false.
    #[serde(default)]
    pub leader_pod_label: bool,

    /// Accept that a change of spec.lock opens a window with two leaders. Changing the lock
    /// of a policy that injects rolls its Deployments, and until the rollout ends the Pods of
    /// the old template elect on the old lock while the new Pods elect on the new one: each
    /// lock can have a leader at once. Without this, such a change is refused at `kubectl
    /// apply`. The operator watches the old lock until it runs out and reports
    /// ConcurrentLeaders meanwhile. The safe way is to scale the Deployments to one replica
    /// first (see the README). Default false.
    #[serde(default)]
    pub allow_lock_change: bool,
}

/// Thresholds of the early warnings; each has a default that suits client-go's timings.
#[derive(KubeSchema, Validate, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DetectionSpec {
    /// LeaderFlapping is reported when more than this many leader changes happen within
    /// flappingWindow. Default 3.
    #[serde(default = "default_flapping_transitions")]
    #[validate(range(min = 1, max = 1000))]
    pub flapping_transitions: i32,

    /// The window for flappingTransitions. A Go duration; default 10m.
    #[serde(default = "default_flapping_window")]
    #[validate(length(min = 1, max = 32))]
    #[x_kube(
        validation = duration_format_rule("detection.flappingWindow"),
        validation = duration_positive_rule("detection.flappingWindow"),
        validation = duration_bound_rule("detection.flappingWindow", MAX_FLAPPING_WINDOW)
    )]
    pub flapping_window: String,

    /// RenewalsSlow is reported when no renewal has been observed for this long: an early
    /// warning, before the lease goes stale at leaseDuration. A Go duration; default: half
    /// of renewDeadline (a leader renews every retryPeriod, so this means several failed
    /// attempts in a row). Must be shorter than leaseDuration to fire first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 32))]
    #[x_kube(
        validation = duration_format_rule("detection.slowRenewalAfter"),
        validation = duration_positive_rule("detection.slowRenewalAfter"),
        validation = duration_bound_rule("detection.slowRenewalAfter", MAX_TIMING)
    )]
    pub slow_renewal_after: Option<String>,
}

impl Default for DetectionSpec {
    fn default() -> Self {
        DetectionSpec {
            flapping_transitions: default_flapping_transitions(),
            flapping_window: default_flapping_window(),
            slow_renewal_after: None,
        }
    }
}

/// The object whose record says who leads.
#[derive(KubeSchema, Validate, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LockSpec {
    /// Name of the lock object (a Lease, or for the legacy types an Endpoints or ConfigMap).
    /// Must be a DNS-1123 subdomain.
    #[validate(length(min = 1, max = 253), custom(function = "crate::domain::validation::dns1123_subdomain"))]
    #[x_kube(validation = Rule::new(format!("self.matches({DNS1123_SUBDOMAIN_CEL_PATTERN})"))
        .message("lock.name must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,

    /// Namespace of the lock object. Defaults to the policy's namespace. A lock in another
    /// namespace is refused unless the operator runs with --allow-cross-namespace-locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 63), custom(function = "crate::domain::validation::dns1123_label"))]
    #[x_kube(validation = Rule::new(format!("self.matches({DNS1123_LABEL_CEL_PATTERN})"))
        .message("lock.namespace must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    pub namespace: Option<String>,

    /// Kind of lock: Lease (coordination.k8s.io/v1, the default), or the legacy Endpoints or
    /// ConfigMap, whose record is the annotation control-plane.alpha.kubernetes.io/leader
    /// written by client-go before v0.24.
    #[serde(default, rename = "type")]
    pub type_: LockType,
}

/// Kind of lock object, by client-go resourcelock name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockType {
    /// A coordination.k8s.io/v1 Lease (client-go resourcelock "leases").
    #[default]
    Lease,
    /// The leader annotation on a core/v1 Endpoints (client-go < v0.24 "endpoints").
    Endpoints,
    /// The leader annotation on a core/v1 ConfigMap (client-go < v0.24 "configmaps").
    ConfigMap,
}

/// Where and how the lock configuration is written into the selected Deployments.
#[derive(KubeSchema, Validate, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InjectionSpec {
    /// Env (default) sets LEADER_ELECTION_* environment variables; Args appends the
    /// component-base --leader-elect-* flags; None leaves the Deployments untouched and
    /// only observes the lock.
    #[serde(default)]
    pub mode: InjectionMode,

    /// Names of the containers to configure. Default: every container of the pod template
    /// (init containers excepted).
    /// Each a container name (a DNS-1123 label, at most 63 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 64), custom(function = "crate::domain::validation::container_names"))]
    #[schemars(extend("x-kubernetes-list-type" = "set"), inner(length(min = 1, max = 63)))]
    #[x_kube(validation = Rule::new(format!("self.all(c, c.matches({DNS1123_LABEL_CEL_PATTERN}))"))
        .message("each container name must be a DNS-1123 label of at most 63 characters"))]
    pub containers: Option<Vec<String>>,
}

/// How configuration reaches the apps.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InjectionMode {
    /// LEADER_ELECTION_* environment variables.
    #[default]
    Env,
    /// --leader-elect-* command-line flags, appended to the container's args.
    Args,
    /// No injection: observe the lock only.
    None,
}

/// What the operator observes of the policy and its lock.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ElectionPolicyStatus {
    /// Identity of the current lock holder; empty when there is none.
    #[serde(default)]
    pub leader: String,

    /// Leader transitions counted in the lock record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_transitions: Option<i32>,

    /// When the current holder acquired the lock, as recorded in the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<Time>,

    /// When the operator last observed the lock record change (a renewal), on the operator's
    /// own clock. Written with every status update, not on every renewal: the live value is
    /// the election_last_renewal_age_seconds metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_observed_renewal: Option<Time>,

    /// Pending (no lock record yet), Healthy, Stale (no renewal observed within
    /// leaseDuration), NoLeader (lock released) or Invalid (spec, conflict or lock record
    /// error: the Ready condition says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PolicyState>,

    /// The lock being watched, as resource/namespace/name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,

    /// Deployments the configuration is injected into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub injected_deployments: Vec<String>,

    /// The metadata.generation of the spec this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// ConfigInjected, LeaderHealthy and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The last leader changes the operator observed, newest first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub history: Vec<LeaderChange>,
}

/// One leader change, as the operator observed it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderChange {
    /// The new holder's identity.
    pub holder: String,
    /// When the operator first saw this holder.
    pub since: Time,
    /// Seconds without a leader before it: from the last renewal (or release) of the
    /// previous holder that the operator observed to the moment it first saw this one, on
    /// the operator's clock. Absent when the operator did not see the previous holder (the
    /// first leader, or a change while the operator was not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaderless_seconds: Option<f64>,
}

/// The policy's overall state, shown in `kubectl get electionpolicies`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyState {
    /// No lock record exists yet.
    Pending,
    /// The holder renews the lock.
    Healthy,
    /// No renewal observed within leaseDuration.
    Stale,
    /// The lock exists but nobody holds it (released).
    NoLeader,
    /// The operator cannot act on the policy or its lock record.
    Invalid,
}

impl PolicyState {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyState::Pending => "Pending",
            PolicyState::Healthy => "Healthy",
            PolicyState::Stale => "Stale",
            PolicyState::NoLeader => "NoLeader",
            PolicyState::Invalid => "Invalid",
        }
    }
}

fn default_flapping_transitions() -> i32 {
    3
}
fn default_flapping_window() -> String {
    "10m".into()
}

fn default_lease_duration() -> String {
    DEFAULT_LEASE_DURATION.into()
}
fn default_renew_deadline() -> String {
    DEFAULT_RENEW_DEADLINE.into()
}
fn default_retry_period() -> String {
    DEFAULT_RETRY_PERIOD.into()
}

fn duration_format_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.matches({GO_DURATION_CEL_PATTERN})"))
        .message(kube::core::Message::Message(format!("{field} must be a Go duration such as 15s, 1m30s or 500ms")))
}

/// A duration within its bound, the same as the operator's (see `domain::validation`).
fn duration_bound_rule(field: &str, max: DurationLimit) -> kube::core::Rule {
    kube::core::Rule::new(format!(
        "!self.matches({GO_DURATION_CEL_PATTERN}) || duration(self) <= duration('{}')",
        max.text
    ))
    .message(kube::core::Message::Message(format!("{field} must be at most {}", max.text)))
}

fn duration_positive_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("!self.matches({GO_DURATION_CEL_PATTERN}) || duration(self) > duration('0s')"))
        .message(kube::core::Message::Message(format!("{field} must be greater than 0")))
}

/// detection.slowRenewalAfter, when set, must fire before the lease goes stale.
fn slow_renewal_rule() -> kube::core::Rule {
    let parses = |f: &str| format!("self.{f}.matches({GO_DURATION_CEL_PATTERN})");
    kube::core::Rule::new(format!(
        "!has(self.detection) || !has(self.detection.slowRenewalAfter) || !{} || !{} || duration(self.detection.slowRenewalAfter) < duration(self.leaseDuration)",
        parses("detection.slowRenewalAfter"),
        parses("leaseDuration")
    ))
    .message("detection.slowRenewalAfter must be shorter than leaseDuration, or LeaseStale would always come first")
    .field_path(".detection.slowRenewalAfter")
}

/// A lock change on a policy that injects must be intended (see `allowLockChange`). A
/// transition rule: it runs on updates only, comparing with the stored object.
fn lock_change_rule() -> kube::core::Rule {
    kube::core::Rule::new(
        "self.lock == oldSelf.lock || (has(oldSelf.injection) && has(oldSelf.injection.mode) && oldSelf.injection.mode == 'None') || (has(self.allowLockChange) && self.allowLockChange)",
    )
    .message(
        "spec.lock changed on a policy that injects its configuration: the rollout that follows runs old Pods electing on the old lock beside new Pods electing on the new one, so two replicas can lead at once. Scale the Deployments to one replica before changing the lock (README: moving to a new lock), or set spec.allowLockChange: true to accept that window",
    )
    .field_path(".lock")
}

/// A cross-field timing rule, evaluated only once every duration parses and is positive, so
/// that a malformed or non-positive value is reported once, by its own field's rule.
fn timing_rule(condition: &str, message: &str, field_path: &str) -> kube::core::Rule {
    let all_usable = ["leaseDuration", "renewDeadline", "retryPeriod"]
        .map(|f| format!("self.{f}.matches({GO_DURATION_CEL_PATTERN}) && duration(self.{f}) > duration('0s')"))
        .join(" && ");
    kube::core::Rule::new(format!("!({all_usable}) || ({condition})")).message(message).field_path(field_path)
}
