//! The operator's own check of a policy, client-go style: everything is validated up front,
//! one specific message per broken rule, before anything is injected or watched.
//!
//! The API server runs the same rules as CEL at `kubectl apply` (see [`crate::api`]); they
//! run again here because a policy can reach the operator without them (a CRD installed
//! before a rule existed, a restore from backup), and acting on it then would be worse than
//! reporting it.

use std::{borrow::Cow, fmt, time::Duration};

use kube::core::{Selector, labels::ParseExpressionError};
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::{
    api::{ElectionPolicySpec, InjectionSpec, LockType},
    domain::{
        go_duration,
        lock_record::LockKey,
        names::{DNS1123_LABEL, DNS1123_SUBDOMAIN, is_dns1123_label, is_dns1123_subdomain},
        namespaces::WatchedNamespaces,
    },
    limits::{DurationLimit, MAX_FLAPPING_WINDOW, MAX_TIMING},
};

/// client-go's `JitterFactor`: renewDeadline must exceed it times retryPeriod.
pub const JITTER_FACTOR_NUMERATOR: u128 = 6;
pub const JITTER_FACTOR_DENOMINATOR: u128 = 5;

/// The three timings of client-go's `LeaderElectionConfig`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// Switches that widen what a policy may do; all are operator flags, off by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyOptions {
    /// Let a policy watch a lock in another namespace than its own.
    pub allow_cross_namespace_locks: bool,
    /// Let policies use Endpoints and ConfigMap locks (the operator then reads those kinds).
    pub legacy_locks: bool,
    /// Let policies keep a leader label on the holder's Pod (the operator may patch Pods).
    pub leader_pod_label: bool,
    /// The namespaces the operator may read (--watch-namespaces); a lock outside them
    /// cannot be watched.
    pub watched_namespaces: WatchedNamespaces,
}

/// The detection thresholds, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detection {
    pub flapping_transitions: usize,
    pub flapping_window: Duration,
    pub slow_renewal_after: Duration,
}

impl Default for Detection {
    /// The API's defaults, with client-go's renewDeadline (10s) halved for slow renewals.
    fn default() -> Self {
        Detection {
            flapping_transitions: 3,
            flapping_window: Duration::from_secs(600),
            slow_renewal_after: Duration::from_secs(5),
        }
    }
}

/// A policy the operator can act on: every rule holds and every value is parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidPolicy {
    pub lock: LockKey,
    pub timings: Timings,
    pub detection: Detection,
    pub leader_pod_label: bool,
    pub selector: Selector,
    pub injection: InjectionSpec,
    /// The durations as the user wrote them, which is how they are injected.
    pub lease_duration: String,
    pub renew_deadline: String,
    pub retry_period: String,
}

/// One broken rule, naming its field. Its text is what users read in the policy's status and
/// Events (and what the e2e suite matches), so each variant keeps its message word for word.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// `value` is not a Go duration.
    #[error("{field}: {value:?} is not a Go duration such as 15s, 1m30s or 500ms")]
    NotADuration { field: String, value: String },
    /// A negative duration.
    #[error("{field} must be greater than 0, got {value:?}")]
    NegativeDuration { field: String, value: String },
    /// A zero duration.
    #[error("{field} must be greater than 0")]
    ZeroDuration { field: String },
    /// A duration beyond its bound (see [`MAX_TIMING`], [`MAX_FLAPPING_WINDOW`]).
    #[error("{field} must be at most {max}")]
    DurationTooLong { field: String, max: &'static str },
    /// client-go: the lease must outlive the leader's renewal attempts.
    #[error("leaseDuration must be greater than renewDeadline")]
    LeaseNotLongerThanRenewDeadline,
    /// client-go: a renewal must fit at least one jittered retry.
    #[error("renewDeadline must be greater than 1.2 x retryPeriod (client-go JitterFactor)")]
    RenewDeadlineWithinJitteredRetry,
    /// RenewalsSlow would never fire before the lease goes stale.
    #[error("detection.slowRenewalAfter must be shorter than leaseDuration, or LeaseStale would always come first")]
    SlowRenewalNotBeforeStale,
    /// An empty selector, which would select every Deployment.
    #[error("selector must not be empty: an empty selector would select every Deployment in the namespace")]
    EmptySelector,
    /// The selector does not convert to a label selector; `reason` says why.
    #[error("selector: {reason}")]
    InvalidSelector { reason: String },
    /// The lock is outside the policy's namespace and --allow-cross-namespace-locks is off.
    #[error(
        "lock.namespace: {lock_namespace:?} is not the policy's namespace {policy_namespace:?}; \
         a policy may only watch locks in its own namespace unless the operator runs with \
         --allow-cross-namespace-locks"
    )]
    CrossNamespaceLock { lock_namespace: String, policy_namespace: String },
    /// The lock's namespace is not one the operator watches (--watch-namespaces).
    #[error(
        "lock.namespace: {lock_namespace:?} is not among the namespaces the operator watches \
         ({watched}); add it to --watch-namespaces (Helm value watchNamespaces)"
    )]
    LockNamespaceNotWatched { lock_namespace: String, watched: String },
    /// An Endpoints or ConfigMap lock, with --legacy-locks off.
    #[error(
        "lock.type: {lock_type:?} locks are disabled; the operator must run with --legacy-locks \
         (Helm value legacyLocks.enabled) to read Endpoints and ConfigMap locks"
    )]
    LegacyLocksDisabled { lock_type: LockType },
    /// leaderPodLabel, with --leader-pod-label off.
    #[error(
        "leaderPodLabel: the operator must run with --leader-pod-label (Helm value \
         leaderPodLabel.enabled) to label Pods"
    )]
    LeaderPodLabelDisabled,
    /// A lock name Kubernetes would refuse.
    #[error("{field}: {DNS1123_SUBDOMAIN}")]
    NotDns1123Subdomain { field: String },
    /// A namespace name Kubernetes would refuse.
    #[error("{field}: {DNS1123_LABEL}")]
    NotDns1123Label { field: String },
    /// validator's `length` rule; the bounds are the rule's, not the value's.
    #[error("{field}: {}", length_message(*.min, *.max))]
    Length { field: String, min: Option<u64>, max: Option<u64> },
    /// Any other validator rule (such as `range`), by its message or else its code.
    #[error("{}", rule_message(field, code, message.as_deref()))]
    Rule { field: String, code: String, message: Option<String> },
}

fn length_message(min: Option<u64>, max: Option<u64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("length must be between {min} and {max}"),
        (Some(min), None) => format!("length must be at least {min}"),
        (None, Some(max)) => format!("length must be at most {max}"),
        (None, None) => "invalid length".into(),
    }
}

/// The rule's own message, else its code; prefixed by the field unless on the whole spec.
fn rule_message(field: &str, code: &str, message: Option<&str>) -> String {
    let message = message.map_or_else(|| format!("failed rule {code}"), str::to_string);
    if field.is_empty() { message } else { format!("{field}: {message}") }
}

/// Why a policy was rejected: every broken rule, in a stable order; shown joined by "; ".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidPolicy(pub Vec<Violation>);

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, violation) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{violation}")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidPolicy {}

/// Validates a policy living in `policy_namespace`.
pub fn validate(
    policy_namespace: &str,
    spec: &ElectionPolicySpec,
    options: &PolicyOptions,
) -> Result<ValidPolicy, InvalidPolicy> {
    let mut problems = Vec::new();
    let timings = spec_timings(spec);
    if let Err(errors) = spec.validate() {
        // validator runs the spec-wide timing rule ([`timings`]) only once every field rule
        // passed, and reports it under "__all__", which sorts first. It is reported typed
        // here, and `flatten_errors` skips its message.
        if errors.errors().contains_key("__all__") {
            problems.extend(timings.as_ref().err().cloned());
        }
        flatten_errors("", &errors, &mut problems);
    }

    let selector = parse_selector(spec).map_err(|v| problems.push(v)).ok();

    let lock_namespace = spec.lock.namespace.clone().unwrap_or_else(|| policy_namespace.to_string());
    if lock_namespace != policy_namespace && !options.allow_cross_namespace_locks {
        problems.push(Violation::CrossNamespaceLock {
            lock_namespace: lock_namespace.clone(),
            policy_namespace: policy_namespace.to_string(),
        });
    }
    if !options.watched_namespaces.contains(&lock_namespace) {
        problems.push(Violation::LockNamespaceNotWatched {
            lock_namespace: lock_namespace.clone(),
            watched: options.watched_namespaces.to_string(),
        });
    }
    if spec.lock.type_ != LockType::Lease && !options.legacy_locks {
        problems.push(Violation::LegacyLocksDisabled { lock_type: spec.lock.type_ });
    }

    if spec.leader_pod_label && !options.leader_pod_label {
        problems.push(Violation::LeaderPodLabelDisabled);
    }
    let detection = parse_detection(spec).map_err(|v| problems.push(v)).ok();

    match (timings.ok(), selector, detection, problems.is_empty()) {
        (Some(timings), Some(selector), Some(detection), true) => Ok(ValidPolicy {
            lock: LockKey {
                type_: spec.lock.type_,
                namespace: lock_namespace.into(),
                name: spec.lock.name.as_str().into(),
            },
            timings,
            detection,
            leader_pod_label: spec.leader_pod_label,
            selector,
            injection: spec.injection.clone(),
            lease_duration: spec.lease_duration.clone(),
            renew_deadline: spec.renew_deadline.clone(),
            retry_period: spec.retry_period.clone(),
        }),
        _ => Err(InvalidPolicy(problems)),
    }
}

/// client-go's `NewLeaderElector` checks on parsed durations.
pub fn check_timings(t: &Timings) -> Result<(), Violation> {
    // client-go checks the relations first; checking positivity first gives "0s" a message
    // that names the actual mistake.
    for (field, value) in
        [("leaseDuration", t.lease_duration), ("renewDeadline", t.renew_deadline), ("retryPeriod", t.retry_period)]
    {
        if value.is_zero() {
            return Err(Violation::ZeroDuration { field: field.into() });
        }
        bounded(field, value, MAX_TIMING)?;
    }
    if t.lease_duration <= t.renew_deadline {
        return Err(Violation::LeaseNotLongerThanRenewDeadline);
    }
    // renewDeadline > 1.2 * retryPeriod, in exact integer arithmetic.
    if t.renew_deadline.as_nanos() * JITTER_FACTOR_DENOMINATOR <= t.retry_period.as_nanos() * JITTER_FACTOR_NUMERATOR {
        return Err(Violation::RenewDeadlineWithinJitteredRetry);
    }
    Ok(())
}

/// Parses a duration the way Go's `time.ParseDuration` does (which is what CEL's
/// `duration()` runs at `kubectl apply`; see [`go_duration`]), so that the operator and the
/// API server agree on every string. Negative values are errors here.
pub fn parse_go_duration(field: &str, text: &str) -> Result<Duration, Violation> {
    let nanos =
        go_duration::parse(text).ok_or_else(|| Violation::NotADuration { field: field.into(), value: text.into() })?;
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| Violation::NegativeDuration { field: field.into(), value: text.into() })
}

/// A parsed duration within `max`.
fn bounded(field: &str, value: Duration, max: DurationLimit) -> Result<Duration, Violation> {
    if value > max.value {
        return Err(Violation::DurationTooLong { field: field.into(), max: max.text });
    }
    Ok(value)
}

/// The detection thresholds, with renewDeadline / 2 as the default slow-renewal threshold.
fn parse_detection(spec: &ElectionPolicySpec) -> Result<Detection, Violation> {
    let window = parse_go_duration("detection.flappingWindow", &spec.detection.flapping_window)?;
    if window.is_zero() {
        return Err(Violation::ZeroDuration { field: "detection.flappingWindow".into() });
    }
    let window = bounded("detection.flappingWindow", window, MAX_FLAPPING_WINDOW)?;
    let timings = parse_timings(spec).ok();
    let slow = match &spec.detection.slow_renewal_after {
        Some(text) => parse_go_duration("detection.slowRenewalAfter", text)?,
        None => timings.map_or(Duration::from_secs(5), |t| t.renew_deadline / 2),
    };
    if slow.is_zero() {
        return Err(Violation::ZeroDuration { field: "detection.slowRenewalAfter".into() });
    }
    let slow = bounded("detection.slowRenewalAfter", slow, MAX_TIMING)?;
    if timings.is_some_and(|t| slow >= t.lease_duration) {
        return Err(Violation::SlowRenewalNotBeforeStale);
    }
    Ok(Detection {
        flapping_transitions: usize::try_from(spec.detection.flapping_transitions).unwrap_or(1),
        flapping_window: window,
        slow_renewal_after: slow,
    })
}

fn parse_timings(spec: &ElectionPolicySpec) -> Result<Timings, Violation> {
    Ok(Timings {
        lease_duration: parse_go_duration("leaseDuration", &spec.lease_duration)?,
        renew_deadline: parse_go_duration("renewDeadline", &spec.renew_deadline)?,
        retry_period: parse_go_duration("retryPeriod", &spec.retry_period)?,
    })
}

/// The spec's timings, parsed and satisfying client-go.
fn spec_timings(spec: &ElectionPolicySpec) -> Result<Timings, Violation> {
    let timings = parse_timings(spec)?;
    check_timings(&timings)?;
    Ok(timings)
}

/// The validator code of [`timings`], whose errors [`validate`] reports typed instead.
const TIMINGS_CODE: &str = "timings";

/// validator schema rule on [`ElectionPolicySpec`]: the timings parse and satisfy client-go.
pub fn timings(spec: &ElectionPolicySpec) -> Result<(), ValidationError> {
    spec_timings(spec).map(drop).map_err(|violation| message_error(TIMINGS_CODE, violation.to_string()))
}

fn parse_selector(spec: &ElectionPolicySpec) -> Result<Selector, Violation> {
    let selector = &spec.selector;
    let labels = selector.match_labels.as_ref().map_or(0, |l| l.len());
    let expressions = selector.match_expressions.as_ref().map_or(0, |e| e.len());
    if labels + expressions == 0 {
        return Err(Violation::EmptySelector);
    }
    Selector::try_from(selector.clone())
        .map_err(|e: ParseExpressionError| Violation::InvalidSelector { reason: e.to_string() })
}

const DNS1123_SUBDOMAIN_CODE: &str = "dns1123_subdomain";
const CONTAINER_NAME_CODE: &str = "container_name";
const DNS1123_LABEL_CODE: &str = "dns1123_label";

/// validator rule: a DNS-1123 subdomain, as Kubernetes validates object names.
pub fn dns1123_subdomain(value: &str) -> Result<(), ValidationError> {
    is_dns1123_subdomain(value).then_some(()).ok_or_else(|| message_error(DNS1123_SUBDOMAIN_CODE, DNS1123_SUBDOMAIN))
}

/// validator rule: a DNS-1123 label, as Kubernetes validates namespace and container names.
pub fn dns1123_label(value: &str) -> Result<(), ValidationError> {
    is_dns1123_label(value).then_some(()).ok_or_else(|| message_error(DNS1123_LABEL_CODE, DNS1123_LABEL))
}

/// validator rule on `injection.containers`: each name is a container name (a DNS-1123
/// label), so none can carry a megabyte into a status message.
pub fn container_names(names: &[String]) -> Result<(), ValidationError> {
    match names.iter().find(|name| !is_dns1123_label(name)) {
        None => Ok(()),
        Some(name) => {
            let shown: String = name.chars().take(64).collect();
            Err(message_error(CONTAINER_NAME_CODE, format!("{shown:?} is not a container name: {DNS1123_LABEL}")))
        }
    }
}

fn message_error(code: &'static str, message: impl Into<Cow<'static, str>>) -> ValidationError {
    let mut error = ValidationError::new(code);
    error.message = Some(message.into());
    error
}

/// Turns validator's nested error tree into violations naming their "field.path", in a
/// stable order.
fn flatten_errors(prefix: &str, errors: &ValidationErrors, out: &mut Vec<Violation>) {
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by_key(|(name, _)| name.to_string());
    for (field, kind) in fields {
        let path = match (prefix.is_empty(), field.as_ref()) {
            (_, "__all__") => prefix.to_string(),
            (true, name) => camel_case(name),
            (false, name) => format!("{prefix}.{}", camel_case(name)),
        };
        match kind {
            ValidationErrorsKind::Field(list) => {
                out.extend(list.iter().filter(|e| e.code != TIMINGS_CODE).map(|e| violation(&path, e)));
            }
            ValidationErrorsKind::Struct(inner) => flatten_errors(&path, inner, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten_errors(&format!("{path}[{index}]"), inner, out);
                }
            }
        }
    }
}

/// The typed violation of one validator error at `field`.
fn violation(field: &str, error: &ValidationError) -> Violation {
    let field = field.to_string();
    match (error.code.as_ref(), &error.message) {
        (DNS1123_SUBDOMAIN_CODE, _) => Violation::NotDns1123Subdomain { field },
        (DNS1123_LABEL_CODE, _) => Violation::NotDns1123Label { field },
        ("length", None) => {
            let bound = |name: &str| error.params.get(name).and_then(|v| v.as_u64());
            Violation::Length { field, min: bound("min"), max: bound("max") }
        }
        (code, message) => {
            Violation::Rule { field, code: code.to_string(), message: message.as_ref().map(|m| m.to_string()) }
        }
    }
}

fn camel_case(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        match (c, upper) {
            ('_', _) => upper = true,
            (c, true) => {
                out.extend(c.to_uppercase());
                upper = false
            }
            (c, false) => out.push(c),
        }
    }
    // serde renames `type_` to `type`.
    out.trim_end_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(overrides: serde_json::Value) -> ElectionPolicySpec {
        let mut value = json!({
            "selector": {"matchLabels": {"app": "demo"}},
            "lock": {"name": "demo-lock"},
        });
        for (k, v) in overrides.as_object().unwrap() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    fn problems(overrides: serde_json::Value, options: &PolicyOptions) -> String {
        validate("apps", &spec(overrides), options).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_client_gos() {
        let valid = validate("apps", &spec(json!({})), &PolicyOptions::default()).unwrap();
        assert_eq!(
            valid.timings,
            Timings {
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
            }
        );
        assert_eq!(valid.lock.to_string(), "leases/apps/demo-lock");
        assert_eq!(
            valid.detection,
            Detection {
                flapping_transitions: 3,
                flapping_window: Duration::from_secs(600),
                slow_renewal_after: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn each_rule_has_its_own_message() {
        let none = PolicyOptions::default();
        let table = [
            (json!({"leaseDuration": "10s"}), "leaseDuration must be greater than renewDeadline"),
            (json!({"renewDeadline": "2400ms"}), "renewDeadline must be greater than 1.2 x retryPeriod"),
            (json!({"retryPeriod": "0s"}), "retryPeriod must be greater than 0"),
            (json!({"leaseDuration": "-15s"}), "leaseDuration must be greater than 0"),
            (json!({"renewDeadline": "soon"}), "renewDeadline: \"soon\" is not a Go duration"),
            (json!({"lock": {"name": "Bad_Name"}}), "lock.name: must be a DNS-1123 subdomain"),
            (json!({"lock": {"name": "x", "namespace": "UPPER"}}), "lock.namespace: must be a DNS-1123 label"),
            (json!({"selector": {}}), "selector must not be empty"),
            (
                json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]}}),
                "selector:",
            ),
            (json!({"injection": {"containers": []}}), "injection.containers: length must be between 1 and 64"),
            (json!({"lock": {"name": "x", "namespace": "other"}}), "--allow-cross-namespace-locks"),
            (json!({"lock": {"name": "x", "type": "ConfigMap"}}), "--legacy-locks"),
        ];
        for (overrides, expected) in table {
            let message = problems(overrides.clone(), &none);
            assert!(message.contains(expected), "{overrides}: got {message:?}, expected {expected:?}");
        }
    }

    #[test]
    fn the_jitter_rule_is_exact_at_the_boundary() {
        let t = |renew_ms: u64| Timings {
            lease_duration: Duration::from_secs(60),
            renew_deadline: Duration::from_millis(renew_ms),
            retry_period: Duration::from_secs(2),
        };
        assert_eq!(check_timings(&t(2400)), Err(Violation::RenewDeadlineWithinJitteredRetry), "2.4s is not > 1.2 x 2s");
        assert!(check_timings(&t(2401)).is_ok());
    }

    #[test]
    fn violations_are_typed() {
        let violations = |overrides| validate("apps", &spec(overrides), &PolicyOptions::default()).unwrap_err().0;
        let field = |name: &str| name.to_string();
        assert_eq!(violations(json!({"leaseDuration": "10s"})), [Violation::LeaseNotLongerThanRenewDeadline]);
        assert_eq!(
            violations(json!({"lock": {"name": "", "namespace": "other", "type": "Endpoints"}, "selector": {}})),
            [
                Violation::Length { field: field("lock.name"), min: Some(1), max: Some(253) },
                Violation::NotDns1123Subdomain { field: field("lock.name") },
                Violation::EmptySelector,
                Violation::CrossNamespaceLock { lock_namespace: field("other"), policy_namespace: field("apps") },
                Violation::LegacyLocksDisabled { lock_type: LockType::Endpoints },
            ]
        );
        assert_eq!(
            violations(json!({"detection": {"flappingTransitions": 0, "flappingWindow": "-1m"}})),
            [
                Violation::Rule { field: field("detection.flappingTransitions"), code: field("range"), message: None },
                Violation::NegativeDuration { field: field("detection.flappingWindow"), value: field("-1m") },
            ]
        );
        assert_eq!(
            violations(json!({"leaderPodLabel": true, "detection": {"slowRenewalAfter": "1h"}})),
            [Violation::LeaderPodLabelDisabled, Violation::SlowRenewalNotBeforeStale]
        );
        assert_eq!(
            parse_go_duration("retryPeriod", "soon"),
            Err(Violation::NotADuration { field: field("retryPeriod"), value: field("soon") })
        );
        let zero_retry = Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::ZERO,
        };
        assert_eq!(check_timings(&zero_retry), Err(Violation::ZeroDuration { field: field("retryPeriod") }));
    }

    #[test]
    fn validator_rules_keep_their_codes_and_messages() {
        let error = timings(&spec(json!({"retryPeriod": "9s"}))).unwrap_err();
        assert_eq!(error.code, "timings");
        assert_eq!(
            error.message.unwrap(),
            "renewDeadline must be greater than 1.2 x retryPeriod (client-go JitterFactor)"
        );
        assert!(timings(&spec(json!({}))).is_ok());
        let error = dns1123_subdomain("a..b").unwrap_err();
        assert_eq!(error.code, "dns1123_subdomain");
        assert_eq!(error.message.unwrap(), DNS1123_SUBDOMAIN);
        let error = dns1123_label("a.b").unwrap_err();
        assert_eq!(error.code, "dns1123_label");
        assert_eq!(error.message.unwrap(), DNS1123_LABEL);
        assert!(dns1123_subdomain("a.b-c").is_ok() && dns1123_label("b-c").is_ok());
    }

    #[test]
    fn options_widen_what_is_allowed() {
        let options = PolicyOptions {
            allow_cross_namespace_locks: true,
            legacy_locks: true,
            leader_pod_label: true,
            watched_namespaces: WatchedNamespaces::All,
        };
        let overrides = json!({"lock": {"name": "x", "namespace": "other", "type": "Endpoints"}});
        let valid = validate("apps", &spec(overrides.clone()), &options).unwrap();
        assert_eq!(valid.lock.to_string(), "endpoints/other/x");

        // A namespaced operator cannot watch a lock outside its namespaces.
        let namespaced =
            PolicyOptions { watched_namespaces: WatchedNamespaces::parse("apps,ops").unwrap(), ..options.clone() };
        assert!(validate("apps", &spec(overrides.clone()), &namespaced).is_err_and(|invalid| invalid.to_string()
            == "lock.namespace: \"other\" is not among the namespaces the operator watches (apps,ops); add it to \
                --watch-namespaces (Helm value watchNamespaces)"));
        let inside = json!({"lock": {"name": "x", "namespace": "ops"}});
        assert_eq!(validate("apps", &spec(inside), &namespaced).unwrap().lock.to_string(), "leases/ops/x");
    }

    #[test]
    fn durations_are_bounded_the_same_as_the_crd_says() {
        let ok = |overrides| validate("apps", &spec(overrides), &PolicyOptions::default());
        // Go (and so CEL) reads this as exactly an hour: within the bound, so valid.
        let hour = ok(json!({"leaseDuration": ".99999999999999999999999999h"})).unwrap();
        assert_eq!(hour.timings.lease_duration, MAX_TIMING.value);
        assert!(ok(json!({"leaseDuration": "1h0m0.000000001s"})).is_err(), "a nanosecond over");
        assert!(ok(json!({"detection": {"flappingWindow": "24h"}})).is_ok());
        let crd = crate::crd::crd_yaml();
        for (field, limit) in [("leaseDuration", MAX_TIMING), ("detection.flappingWindow", MAX_FLAPPING_WINDOW)] {
            let rule = format!("{field} must be at most {}", limit.text);
            assert!(crd.contains(&rule), "the CRD lacks {rule:?}");
            assert!(crd.contains(&format!("duration(self) <= duration('{}')", limit.text)));
        }
    }

    #[test]
    fn durations_parse_like_go() {
        for (text, millis) in [("1h", 3_600_000), ("1m30s", 90_000), ("1.5s", 1_500), ("500ms", 500), ("2s", 2_000)] {
            assert_eq!(parse_go_duration("x", text).unwrap(), Duration::from_millis(millis), "{text}");
        }
        assert_eq!(parse_go_duration("x", "0").unwrap(), Duration::ZERO);
        assert_eq!(parse_go_duration("x", "1.000000001s").unwrap(), Duration::from_nanos(1_000_000_001));
        assert_eq!(parse_go_duration("x", ".5m").unwrap(), Duration::from_secs(30));
        assert!(parse_go_duration("x", "2562047h").is_ok());
        assert!(parse_go_duration("x", "2562048h").is_err(), "beyond Go's int64 nanoseconds");
        for text in ["", "15", "s", "1d", "--1s", "1e3s", ".s", "+", "1.s.s"] {
            assert!(parse_go_duration("x", text).is_err(), "{text:?} should not parse");
        }
    }

    /// Every message, whole: the e2e suite and users' alerts match on these texts.
    #[test]
    fn messages_are_unchanged() {
        let none = PolicyOptions::default();
        let cases = [
            json!({"leaseDuration": "10s"}),
            json!({"renewDeadline": "2400ms"}),
            json!({"retryPeriod": "0s"}),
            json!({"leaseDuration": "-15s"}),
            json!({"renewDeadline": "soon"}),
            json!({"lock": {"name": "Bad_Name"}}),
            json!({"lock": {"name": ""}}),
            json!({"lock": {"name": "x", "namespace": "UPPER"}}),
            json!({"selector": {}}),
            json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Near", "values": ["b"]}]}}),
            json!({"injection": {"containers": []}}),
            json!({"lock": {"name": "x", "namespace": "other"}}),
            json!({"lock": {"name": "x", "type": "ConfigMap"}}),
            json!({"leaderPodLabel": true}),
            json!({"detection": {"flappingWindow": "0s"}}),
            json!({"detection": {"flappingWindow": "-1m"}}),
            json!({"detection": {"flappingWindow": "later"}}),
            json!({"detection": {"slowRenewalAfter": "0s"}}),
            json!({"detection": {"slowRenewalAfter": "15s"}}),
            json!({"detection": {"flappingTransitions": 0}}),
            json!({"leaseDuration": "20000h"}),
            json!({"retryPeriod": "61m"}),
            json!({"detection": {"flappingWindow": "20000h"}}),
            json!({"injection": {"containers": ["manager", "Not_A_Container"]}}),
            json!({
                "leaseDuration": "1s",
                "lock": {"name": "Bad", "namespace": "elsewhere", "type": "Endpoints"},
                "selector": {},
                "leaderPodLabel": true,
                "detection": {"slowRenewalAfter": "nope"},
            }),
        ];
        let mut got: Vec<String> = cases.into_iter().map(|overrides| problems(overrides, &none)).collect();
        got.push(parse_go_duration("--leader-election-lease-duration", "1x").unwrap_err().to_string());
        got.push(parse_go_duration("--leader-election-retry-period", "-2s").unwrap_err().to_string());
        let zero =
            Timings { lease_duration: Duration::ZERO, renew_deadline: Duration::ZERO, retry_period: Duration::ZERO };
        got.push(check_timings(&zero).unwrap_err().to_string());
        let got = got.join("\n");
        assert_eq!(got, EXPECTED_MESSAGES, "got:\n{got}");
    }

    const EXPECTED_MESSAGES: &str = r#"leaseDuration must be greater than renewDeadline
renewDeadline must be greater than 1.2 x retryPeriod (client-go JitterFactor)
retryPeriod must be greater than 0
leaseDuration must be greater than 0, got "-15s"
renewDeadline: "soon" is not a Go duration such as 15s, 1m30s or 500ms
lock.name: must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit
lock.name: length must be between 1 and 253; lock.name: must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit
lock.namespace: must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit; lock.namespace: "UPPER" is not the policy's namespace "apps"; a policy may only watch locks in its own namespace unless the operator runs with --allow-cross-namespace-locks
selector must not be empty: an empty selector would select every Deployment in the namespace
selector: failed to parse value as expression: Invalid expression operator
injection.containers: length must be between 1 and 64
lock.namespace: "other" is not the policy's namespace "apps"; a policy may only watch locks in its own namespace unless the operator runs with --allow-cross-namespace-locks
lock.type: ConfigMap locks are disabled; the operator must run with --legacy-locks (Helm value legacyLocks.enabled) to read Endpoints and ConfigMap locks
leaderPodLabel: the operator must run with --leader-pod-label (Helm value leaderPodLabel.enabled) to label Pods
detection.flappingWindow must be greater than 0
detection.flappingWindow must be greater than 0, got "-1m"
detection.flappingWindow: "later" is not a Go duration such as 15s, 1m30s or 500ms
detection.slowRenewalAfter must be greater than 0
detection.slowRenewalAfter must be shorter than leaseDuration, or LeaseStale would always come first
detection.flappingTransitions: failed rule range
leaseDuration must be at most 1h
retryPeriod must be at most 1h
detection.flappingWindow must be at most 24h
injection.containers: "Not_A_Container" is not a container name: must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit
lock.name: must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit; selector must not be empty: an empty selector would select every Deployment in the namespace; lock.namespace: "elsewhere" is not the policy's namespace "apps"; a policy may only watch locks in its own namespace unless the operator runs with --allow-cross-namespace-locks; lock.type: Endpoints locks are disabled; the operator must run with --legacy-locks (Helm value legacyLocks.enabled) to read Endpoints and ConfigMap locks; leaderPodLabel: the operator must run with --leader-pod-label (Helm value leaderPodLabel.enabled) to label Pods; detection.slowRenewalAfter: "nope" is not a Go duration such as 15s, 1m30s or 500ms
--leader-election-lease-duration: "1x" is not a Go duration such as 15s, 1m30s or 500ms
--leader-election-retry-period must be greater than 0, got "-2s"
leaseDuration must be greater than 0"#;
}
