//! Prometheus metrics, prefixed `election_`.
//!
//! Per-policy values (leader, staleness, time since the last observed renewal) are read at
//! scrape time from snapshots the observer keeps current, so "seconds since the last
//! renewal" is exact at every scrape without a timer ticking per policy, and a deleted
//! policy's series simply disappear.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, text::encode},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::{
    api::PolicyState,
    domain::{policy_key::PolicyKey, tracking::PolicySnapshot},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InputLabels {
    input: &'static str,
}

/// All of the operator's metrics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    api_requests: Family<OperationLabels, Counter>,
    api_errors: Family<OperationLabels, Counter>,
    watch_restarts: Family<ResourceLabels, Counter>,
    events: Family<ReasonLabels, Counter>,
    events_dropped: Family<ReasonLabels, Counter>,
    status_write_failures: Family<ReasonLabels, Counter>,
    observer_steps: Family<InputLabels, Counter>,
    late_timers: Counter,
    metrics_reviews: Family<ResultLabels, Counter>,
    lock_events: Family<ResourceLabels, Counter>,
    status_writes: Counter,
    leading: Gauge,
    failovers: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    policies: Arc<PolicyCollector>,
}

/// Buckets of `election_failover_seconds`: a failover lasts about a lease duration after a
/// crash (client-go's 15 s by default; 1 s to 2 min in practice) and near 0 after a release.
const FAILOVER_BUCKETS: [f64; 14] = [0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0];

fn failover_histogram() -> Histogram {
    Histogram::new(FAILOVER_BUCKETS)
}

#[derive(Debug, Default)]
struct PolicyCollector {
    snapshots: RwLock<BTreeMap<PolicyKey, PolicySnapshot>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("election");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register("reconciles", "ElectionPolicy reconciliations, by result", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_errors", "Failed reconciliations, by kind of error", reconcile_errors.clone());
        let reconcile_duration = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Time spent reconciling one ElectionPolicy",
            reconcile_duration.clone(),
        );
        let api_requests = Family::<OperationLabels, Counter>::default();
        registry.register("api_requests", "Kubernetes API requests made, by operation", api_requests.clone());
        let api_errors = Family::<OperationLabels, Counter>::default();
        registry.register("api_errors", "Kubernetes API requests that failed, by operation", api_errors.clone());
        let watch_restarts = Family::<ResourceLabels, Counter>::default();
        registry.register("watch_restarts", "Watches restarted after an error, by resource", watch_restarts.clone());
        let events = Family::<ReasonLabels, Counter>::default();
        registry.register("events", "Events published, by reason", events.clone());
        let events_dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "events_dropped",
            "Events not published, by why: spam (the policy's budget of 25, then one every 5 minutes, is spent), \
             queue_full (its namespace's queue is full) or failed (the API server refused every attempt)",
            events_dropped.clone(),
        );
        let status_write_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "status_write_failures",
            "Status writes that failed, by the API server's answer (forbidden, invalid, too_large, bad_request, \
             throttled, server_error) or unreachable; each is retried with back-off",
            status_write_failures.clone(),
        );
        let observer_steps = Family::<InputLabels, Counter>::default();
        registry.register(
            "observer_steps",
            "Inputs the observer handed to a policy's tracker, by kind (register, lock, deadline, pods, blind)",
            observer_steps.clone(),
        );
        let late_timers = Counter::default();
        registry.register(
            "late_timers",
            "Deadlines whose timer went off late (the process was paused or starved): the lock was read again \
             before judging",
            late_timers.clone(),
        );
        let metrics_reviews = Family::<ResultLabels, Counter>::default();
        registry.register(
            "metrics_access_reviews",
            "Callers of /metrics reviewed through the API server (result allowed, forbidden, unauthenticated, \
             error), and those turned away unreviewed (result throttled)",
            metrics_reviews.clone(),
        );
        let lock_events = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "lock_watch_events",
            "Lock objects received from the lock watches (only namespaces that hold a watched lock are watched)",
            lock_events.clone(),
        );
        let status_writes = Counter::default();
        registry.register("status_writes", "ElectionPolicy status writes", status_writes.clone());
        let leading = Gauge::default();
        registry.register(
            "operator_leading",
            "1 on the operator replica that leads (and exports the per-policy series), 0 on a standby",
            leading.clone(),
        );
        let failovers: Family<PolicyLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(failover_histogram);
        registry.register(
            "failover_seconds",
            "Seconds without a leader at each leader change the operator observed (from the previous holder's last \
             renewal or release to the new holder)",
            failovers.clone(),
        );
        let policies = Arc::new(PolicyCollector::default());
        registry.register_collector(Box::new(policies.clone()));
        Metrics {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                reconcile_errors,
                reconcile_duration,
                api_requests,
                api_errors,
                watch_restarts,
                events,
                events_dropped,
                status_write_failures,
                observer_steps,
                late_timers,
                metrics_reviews,
                lock_events,
                status_writes,
                leading,
                failovers,
                policies,
            }),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.inner.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        self.inner.reconcile_duration.observe(took.as_secs_f64());
        let result = if error.is_some() { "error" } else { "ok" };
        self.inner.reconciles.get_or_create(&ResultLabels { result }).inc();
        if let Some(error) = error {
            self.inner.reconcile_errors.get_or_create(&ErrorLabels { error }).inc();
        }
    }

    pub fn api_request(&self, operation: &'static str, ok: bool) {
        self.inner.api_requests.get_or_create(&OperationLabels { operation }).inc();
        if !ok {
            self.inner.api_errors.get_or_create(&OperationLabels { operation }).inc();
        }
    }

    pub fn watch_restarted(&self, resource: &'static str) {
        self.inner.watch_restarts.get_or_create(&ResourceLabels { resource }).inc();
    }

    pub fn event_published(&self, reason: &'static str) {
        self.inner.events.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn event_dropped(&self, reason: &'static str) {
        self.inner.events_dropped.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn status_write_failed(&self, reason: &'static str) {
        self.inner.status_write_failures.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn observer_step(&self, input: &'static str) {
        self.inner.observer_steps.get_or_create(&InputLabels { input }).inc();
    }

    pub fn late_timer(&self) {
        self.inner.late_timers.inc();
    }

    pub fn metrics_access_reviewed(&self, result: &'static str) {
        self.inner.metrics_reviews.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn lock_event_received(&self, resource: &'static str) {
        self.inner.lock_events.get_or_create(&ResourceLabels { resource }).inc();
    }

    pub fn status_written(&self) {
        self.inner.status_writes.inc();
    }

    /// Whether this replica leads: set by the operator's own leader election (always 1
    /// without it).
    pub fn set_leading(&self, leading: bool) {
        self.inner.leading.set(i64::from(leading));
    }

    pub fn status_writes(&self) -> u64 {
        self.inner.status_writes.get()
    }

    pub fn set_policy(&self, key: PolicyKey, snapshot: PolicySnapshot) {
        let mut snapshots = self.inner.policies.snapshots.write().unwrap_or_else(|e| e.into_inner());
        snapshots.insert(key, snapshot);
    }

    /// A plain renewal: only the renewal times of the policy's snapshot move.
    pub fn renewed(
        &self,
        key: &PolicyKey,
        last_change: Option<Instant>,
        deadline: Option<Instant>,
        renewal_interval: Option<Duration>,
    ) {
        let mut snapshots = self.inner.policies.snapshots.write().unwrap_or_else(|e| e.into_inner());
        if let Some(snapshot) = snapshots.get_mut(key) {
            snapshot.last_change = last_change;
            snapshot.deadline = deadline;
            snapshot.renewal_interval = renewal_interval;
        }
    }

    /// A leader change of the policy came after this long without a leader.
    pub fn failover(&self, key: &PolicyKey, leaderless: Duration) {
        self.inner.failovers.get_or_create(&PolicyLabels::of(key)).observe(leaderless.as_secs_f64());
    }

    pub fn remove_policy(&self, key: &PolicyKey) {
        let mut snapshots = self.inner.policies.snapshots.write().unwrap_or_else(|e| e.into_inner());
        snapshots.remove(key);
        self.inner.failovers.remove(&PolicyLabels::of(key));
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    namespace: Arc<str>,
    policy: Arc<str>,
}

impl PolicyLabels {
    fn of(key: &PolicyKey) -> Self {
        PolicyLabels { namespace: key.namespace.clone(), policy: key.name.clone() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaderLabels {
    namespace: Arc<str>,
    policy: Arc<str>,
    leader: Arc<str>,
    lock: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    namespace: Arc<str>,
    policy: Arc<str>,
    state: &'static str,
}

const STATES: [PolicyState; 5] =
    [PolicyState::Pending, PolicyState::Healthy, PolicyState::Stale, PolicyState::NoLeader, PolicyState::Invalid];

/// How a per-policy family reads a policy's value from its snapshot, at scrape time `now`.
/// A reading of `None` leaves the policy out of the family.
enum Reading {
    /// A gauge, 1 or 0.
    Flag(fn(&PolicySnapshot) -> bool),
    /// A gauge in seconds.
    Seconds(fn(&PolicySnapshot, Instant) -> Option<f64>),
    /// A counter (its name gets `_total`).
    Count(fn(&PolicySnapshot) -> Option<u64>),
}

/// The per-policy families labelled by namespace and policy alone, in exposition order:
/// (name, help, reading). `leader_info` and `policy_state`, with labels of their own, come
/// before them.
static POLICY_FAMILIES: &[(&str, &str, Reading)] = &[
    (
        "lease_stale",
        "1 while no renewal was observed within the lease duration",
        Reading::Flag(|s| s.state == Some(PolicyState::Stale)),
    ),
    (
        "holder_not_found",
        "1 while the holder is not a Pod of the selected Deployments",
        Reading::Flag(|s| s.holder_not_found),
    ),
    ("leader_flapping", "1 while leadership changes more often than the policy allows", Reading::Flag(|s| s.flapping)),
    (
        "renewals_slow",
        "1 while no renewal was observed for the slow-renewal threshold",
        Reading::Flag(|s| s.renewals_slow),
    ),
    (
        "lease_unobservable",
        "1 while the lease's deadline passed with the lock unwatchable (LeaderHealthy Unknown, not Stale)",
        Reading::Flag(|s| s.unobservable),
    ),
    (
        "concurrent_leaders",
        "1 while, after a lock change, the previous lock and the current one both have a live holder",
        Reading::Flag(|s| s.concurrent_leaders),
    ),
    (
        "last_renewal_age_seconds",
        "Seconds since the operator last observed the lock record change",
        Reading::Seconds(|s, now| s.last_change.map(|changed| now.saturating_duration_since(changed).as_secs_f64())),
    ),
    (
        "lease_expiry_margin_seconds",
        "Seconds left before the lease goes stale unless renewed (negative once past)",
        Reading::Seconds(|s, now| {
            s.deadline.map(|deadline| match deadline.checked_duration_since(now) {
                Some(left) => left.as_secs_f64(),
                None => -now.duration_since(deadline).as_secs_f64(),
            })
        }),
    ),
    (
        "renewal_interval_seconds",
        "Interval between the last two renewals observed",
        Reading::Seconds(|s, _| s.renewal_interval.map(|interval| interval.as_secs_f64())),
    ),
    (
        "leader_transitions",
        "Leader transitions recorded in the lock (leaderTransitions)",
        Reading::Count(|s| s.recorded_transitions.map(|transitions| u64::try_from(transitions).unwrap_or(0))),
    ),
    (
        "observed_leader_changes",
        "Leader changes observed by this operator process",
        Reading::Count(|s| Some(s.observed_changes)),
    ),
];

impl Reading {
    fn metric_type(&self) -> MetricType {
        match self {
            Reading::Flag(_) | Reading::Seconds(_) => MetricType::Gauge,
            Reading::Count(_) => MetricType::Counter,
        }
    }

    /// Writes the policy's sample, if it has one.
    fn encode(
        &self,
        snapshot: &PolicySnapshot,
        now: Instant,
        labels: &PolicyLabels,
        family: &mut MetricEncoder,
    ) -> fmt::Result {
        match *self {
            Reading::Flag(read) => ConstGauge::new(i64::from(read(snapshot))).encode(family.encode_family(labels)?),
            Reading::Seconds(read) => match read(snapshot, now) {
                Some(seconds) => ConstGauge::new(seconds).encode(family.encode_family(labels)?),
                None => Ok(()),
            },
            Reading::Count(read) => match read(snapshot) {
                Some(count) => ConstCounter::new(count).encode(family.encode_family(labels)?),
                None => Ok(()),
            },
        }
    }
}

impl Collector for PolicyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let snapshots = self.snapshots.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();

        let mut family = encoder.encode_descriptor(
            "leader_info",
            "The lock's current holder (1 per policy; empty leader label when none)",
            None,
            MetricType::Gauge,
        )?;
        for (key, s) in snapshots.iter() {
            let labels = LeaderLabels {
                namespace: key.namespace.clone(),
                policy: key.name.clone(),
                leader: s.leader.clone(),
                lock: s.lock.clone(),
            };
            ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "policy_state",
            "1 for the policy's current state, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for (key, s) in snapshots.iter() {
            for state in STATES {
                let labels =
                    StateLabels { namespace: key.namespace.clone(), policy: key.name.clone(), state: state.as_str() };
                ConstGauge::new(i64::from(s.state == Some(state))).encode(family.encode_family(&labels)?)?;
            }
        }

        for (name, help, reading) in POLICY_FAMILIES {
            let mut family = encoder.encode_descriptor(name, help, None, reading.metric_type())?;
            for (key, s) in snapshots.iter() {
                let labels = PolicyLabels::of(key);
                reading.encode(s, now, &labels, &mut family)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_policy_series_appear_and_disappear_with_the_policy() {
        let metrics = Metrics::new();
        let key = PolicyKey::new("apps", "web");
        metrics.set_policy(
            key.clone(),
            PolicySnapshot {
                leader: "web-1".into(),
                lock: "leases/apps/web".into(),
                state: Some(PolicyState::Stale),
                last_change: Some(Instant::now() - Duration::from_secs(20)),
                recorded_transitions: Some(3),
                ..Default::default()
            },
        );
        let text = metrics.render();
        assert!(
            text.contains(
                r#"election_leader_info{namespace="apps",policy="web",leader="web-1",lock="leases/apps/web"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"election_lease_stale{namespace="apps",policy="web"} 1"#), "{text}");
        assert!(text.contains(r#"election_policy_state{namespace="apps",policy="web",state="Stale"} 1"#), "{text}");
        assert!(text.contains(r#"election_leader_transitions_total{namespace="apps",policy="web"} 3"#), "{text}");
        let age_line = text.lines().find(|l| l.starts_with("election_last_renewal_age_seconds{")).unwrap();
        let age: f64 = age_line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((20.0..25.0).contains(&age), "{age_line}");
        metrics.remove_policy(&key);
        assert!(!metrics.render().contains("policy=\"web\""));
    }

    #[test]
    fn operator_counters_are_exposed() {
        let metrics = Metrics::new();
        metrics.reconciled(Duration::from_millis(3), Some("kube"));
        metrics.api_request("patch_deployment", false);
        metrics.event_dropped("spam");
        metrics.status_write_failed("forbidden");
        metrics.observer_step("pods");
        metrics.metrics_access_reviewed("throttled");
        let text = metrics.render();
        for line in [
            r#"election_events_dropped_total{reason="spam"} 1"#,
            r#"election_status_write_failures_total{reason="forbidden"} 1"#,
            r#"election_observer_steps_total{input="pods"} 1"#,
            r#"election_metrics_access_reviews_total{result="throttled"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(text.contains(r#"election_reconciles_total{result="error"} 1"#), "{text}");
        assert!(text.contains(r#"election_reconcile_errors_total{error="kube"} 1"#), "{text}");
        assert!(text.contains(r#"election_api_errors_total{operation="patch_deployment"} 1"#), "{text}");
        assert!(text.contains("election_reconcile_duration_seconds_count 1"), "{text}");
    }

    /// Renders policies covering every snapshot field, with the two clock-dependent values
    /// (age, margin) rounded to whole seconds and marked `~`.
    fn render_policies() -> String {
        let metrics = Metrics::new();
        let now = Instant::now();
        let snapshot = |state| PolicySnapshot { state: Some(state), ..Default::default() };
        metrics.set_policy(
            PolicyKey::new("apps", "web"),
            PolicySnapshot {
                leader: "web-1".into(),
                lock: "leases/apps/web".into(),
                state: Some(PolicyState::Stale),
                last_change: Some(now - Duration::from_secs(20)),
                deadline: Some(now - Duration::from_secs(5)),
                recorded_transitions: Some(3),
                observed_changes: 2,
                renewal_interval: Some(Duration::from_millis(2500)),
                holder_not_found: true,
                flapping: true,
                renewals_slow: true,
                unobservable: true,
                concurrent_leaders: true,
            },
        );
        metrics.failover(&PolicyKey::new("apps", "web"), Duration::from_millis(4_200));
        metrics.set_policy(
            PolicyKey::new("apps", "worker"),
            PolicySnapshot { lock: "configmaps/apps/worker".into(), ..Default::default() },
        );
        metrics.set_policy(
            PolicyKey::new("ops", "db"),
            PolicySnapshot {
                leader: "db-0".into(),
                lock: "endpoints/ops/db".into(),
                state: Some(PolicyState::Healthy),
                last_change: Some(now - Duration::from_secs(1)),
                deadline: Some(now + Duration::from_secs(30)),
                recorded_transitions: Some(-1),
                observed_changes: 7,
                renewal_interval: Some(Duration::from_secs(2)),
                ..Default::default()
            },
        );
        metrics.set_policy(PolicyKey::new("ops", "a-pending"), snapshot(PolicyState::Pending));
        metrics.set_policy(PolicyKey::new("ops", "b-no-leader"), snapshot(PolicyState::NoLeader));
        metrics.set_policy(PolicyKey::new("ops", "c-invalid"), snapshot(PolicyState::Invalid));
        let clocked = ["election_last_renewal_age_seconds{", "election_lease_expiry_margin_seconds{"];
        metrics
            .render()
            .lines()
            .map(|line| match line.rsplit_once(' ') {
                Some((series, value)) if clocked.iter().any(|c| series.starts_with(c)) => {
                    format!("{series} ~{}\n", value.parse::<f64>().unwrap().round())
                }
                _ => format!("{line}\n"),
            })
            .collect()
    }

    #[test]
    fn the_exposition_is_exactly_this() {
        let text = render_policies();
        assert_eq!(text, EXPECTED_EXPOSITION, "got:\n{text}");
    }

    const EXPECTED_EXPOSITION: &str = r##"# HELP election_reconcile_duration_seconds Time spent reconciling one ElectionPolicy.
# TYPE election_reconcile_duration_seconds histogram
election_reconcile_duration_seconds_sum 0.0
election_reconcile_duration_seconds_count 0
election_reconcile_duration_seconds_bucket{le="0.001"} 0
election_reconcile_duration_seconds_bucket{le="0.005"} 0
election_reconcile_duration_seconds_bucket{le="0.01"} 0
election_reconcile_duration_seconds_bucket{le="0.05"} 0
election_reconcile_duration_seconds_bucket{le="0.1"} 0
election_reconcile_duration_seconds_bucket{le="0.25"} 0
election_reconcile_duration_seconds_bucket{le="0.5"} 0
election_reconcile_duration_seconds_bucket{le="1.0"} 0
election_reconcile_duration_seconds_bucket{le="2.5"} 0
election_reconcile_duration_seconds_bucket{le="5.0"} 0
election_reconcile_duration_seconds_bucket{le="10.0"} 0
election_reconcile_duration_seconds_bucket{le="+Inf"} 0
# HELP election_late_timers Deadlines whose timer went off late (the process was paused or starved): the lock was read again before judging.
# TYPE election_late_timers counter
election_late_timers_total 0
# HELP election_status_writes ElectionPolicy status writes.
# TYPE election_status_writes counter
election_status_writes_total 0
# HELP election_operator_leading 1 on the operator replica that leads (and exports the per-policy series), 0 on a standby.
# TYPE election_operator_leading gauge
election_operator_leading 0
# HELP election_failover_seconds Seconds without a leader at each leader change the operator observed (from the previous holder's last renewal or release to the new holder).
# TYPE election_failover_seconds histogram
election_failover_seconds_sum{namespace="apps",policy="web"} 4.2
election_failover_seconds_count{namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="0.1",namespace="apps",policy="web"} 0
election_failover_seconds_bucket{le="0.5",namespace="apps",policy="web"} 0
election_failover_seconds_bucket{le="1.0",namespace="apps",policy="web"} 0
election_failover_seconds_bucket{le="2.0",namespace="apps",policy="web"} 0
election_failover_seconds_bucket{le="5.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="10.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="15.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="20.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="30.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="45.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="60.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="90.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="120.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="180.0",namespace="apps",policy="web"} 1
election_failover_seconds_bucket{le="+Inf",namespace="apps",policy="web"} 1
# HELP election_leader_info The lock's current holder (1 per policy; empty leader label when none)
# TYPE election_leader_info gauge
election_leader_info{namespace="apps",policy="web",leader="web-1",lock="leases/apps/web"} 1
election_leader_info{namespace="apps",policy="worker",leader="",lock="configmaps/apps/worker"} 1
election_leader_info{namespace="ops",policy="a-pending",leader="",lock=""} 1
election_leader_info{namespace="ops",policy="b-no-leader",leader="",lock=""} 1
election_leader_info{namespace="ops",policy="c-invalid",leader="",lock=""} 1
election_leader_info{namespace="ops",policy="db",leader="db-0",lock="endpoints/ops/db"} 1
# HELP election_policy_state 1 for the policy's current state, 0 for the others
# TYPE election_policy_state gauge
election_policy_state{namespace="apps",policy="web",state="Pending"} 0
election_policy_state{namespace="apps",policy="web",state="Healthy"} 0
election_policy_state{namespace="apps",policy="web",state="Stale"} 1
election_policy_state{namespace="apps",policy="web",state="NoLeader"} 0
election_policy_state{namespace="apps",policy="web",state="Invalid"} 0
election_policy_state{namespace="apps",policy="worker",state="Pending"} 0
election_policy_state{namespace="apps",policy="worker",state="Healthy"} 0
election_policy_state{namespace="apps",policy="worker",state="Stale"} 0
election_policy_state{namespace="apps",policy="worker",state="NoLeader"} 0
election_policy_state{namespace="apps",policy="worker",state="Invalid"} 0
election_policy_state{namespace="ops",policy="a-pending",state="Pending"} 1
election_policy_state{namespace="ops",policy="a-pending",state="Healthy"} 0
election_policy_state{namespace="ops",policy="a-pending",state="Stale"} 0
election_policy_state{namespace="ops",policy="a-pending",state="NoLeader"} 0
election_policy_state{namespace="ops",policy="a-pending",state="Invalid"} 0
election_policy_state{namespace="ops",policy="b-no-leader",state="Pending"} 0
election_policy_state{namespace="ops",policy="b-no-leader",state="Healthy"} 0
election_policy_state{namespace="ops",policy="b-no-leader",state="Stale"} 0
election_policy_state{namespace="ops",policy="b-no-leader",state="NoLeader"} 1
election_policy_state{namespace="ops",policy="b-no-leader",state="Invalid"} 0
election_policy_state{namespace="ops",policy="c-invalid",state="Pending"} 0
election_policy_state{namespace="ops",policy="c-invalid",state="Healthy"} 0
election_policy_state{namespace="ops",policy="c-invalid",state="Stale"} 0
election_policy_state{namespace="ops",policy="c-invalid",state="NoLeader"} 0
election_policy_state{namespace="ops",policy="c-invalid",state="Invalid"} 1
election_policy_state{namespace="ops",policy="db",state="Pending"} 0
election_policy_state{namespace="ops",policy="db",state="Healthy"} 1
election_policy_state{namespace="ops",policy="db",state="Stale"} 0
election_policy_state{namespace="ops",policy="db",state="NoLeader"} 0
election_policy_state{namespace="ops",policy="db",state="Invalid"} 0
# HELP election_lease_stale 1 while no renewal was observed within the lease duration
# TYPE election_lease_stale gauge
election_lease_stale{namespace="apps",policy="web"} 1
election_lease_stale{namespace="apps",policy="worker"} 0
election_lease_stale{namespace="ops",policy="a-pending"} 0
election_lease_stale{namespace="ops",policy="b-no-leader"} 0
election_lease_stale{namespace="ops",policy="c-invalid"} 0
election_lease_stale{namespace="ops",policy="db"} 0
# HELP election_holder_not_found 1 while the holder is not a Pod of the selected Deployments
# TYPE election_holder_not_found gauge
election_holder_not_found{namespace="apps",policy="web"} 1
election_holder_not_found{namespace="apps",policy="worker"} 0
election_holder_not_found{namespace="ops",policy="a-pending"} 0
election_holder_not_found{namespace="ops",policy="b-no-leader"} 0
election_holder_not_found{namespace="ops",policy="c-invalid"} 0
election_holder_not_found{namespace="ops",policy="db"} 0
# HELP election_leader_flapping 1 while leadership changes more often than the policy allows
# TYPE election_leader_flapping gauge
election_leader_flapping{namespace="apps",policy="web"} 1
election_leader_flapping{namespace="apps",policy="worker"} 0
election_leader_flapping{namespace="ops",policy="a-pending"} 0
election_leader_flapping{namespace="ops",policy="b-no-leader"} 0
election_leader_flapping{namespace="ops",policy="c-invalid"} 0
election_leader_flapping{namespace="ops",policy="db"} 0
# HELP election_renewals_slow 1 while no renewal was observed for the slow-renewal threshold
# TYPE election_renewals_slow gauge
election_renewals_slow{namespace="apps",policy="web"} 1
election_renewals_slow{namespace="apps",policy="worker"} 0
election_renewals_slow{namespace="ops",policy="a-pending"} 0
election_renewals_slow{namespace="ops",policy="b-no-leader"} 0
election_renewals_slow{namespace="ops",policy="c-invalid"} 0
election_renewals_slow{namespace="ops",policy="db"} 0
# HELP election_lease_unobservable 1 while the lease's deadline passed with the lock unwatchable (LeaderHealthy Unknown, not Stale)
# TYPE election_lease_unobservable gauge
election_lease_unobservable{namespace="apps",policy="web"} 1
election_lease_unobservable{namespace="apps",policy="worker"} 0
election_lease_unobservable{namespace="ops",policy="a-pending"} 0
election_lease_unobservable{namespace="ops",policy="b-no-leader"} 0
election_lease_unobservable{namespace="ops",policy="c-invalid"} 0
election_lease_unobservable{namespace="ops",policy="db"} 0
# HELP election_concurrent_leaders 1 while, after a lock change, the previous lock and the current one both have a live holder
# TYPE election_concurrent_leaders gauge
election_concurrent_leaders{namespace="apps",policy="web"} 1
election_concurrent_leaders{namespace="apps",policy="worker"} 0
election_concurrent_leaders{namespace="ops",policy="a-pending"} 0
election_concurrent_leaders{namespace="ops",policy="b-no-leader"} 0
election_concurrent_leaders{namespace="ops",policy="c-invalid"} 0
election_concurrent_leaders{namespace="ops",policy="db"} 0
# HELP election_last_renewal_age_seconds Seconds since the operator last observed the lock record change
# TYPE election_last_renewal_age_seconds gauge
election_last_renewal_age_seconds{namespace="apps",policy="web"} ~20
election_last_renewal_age_seconds{namespace="ops",policy="db"} ~1
# HELP election_lease_expiry_margin_seconds Seconds left before the lease goes stale unless renewed (negative once past)
# TYPE election_lease_expiry_margin_seconds gauge
election_lease_expiry_margin_seconds{namespace="apps",policy="web"} ~-5
election_lease_expiry_margin_seconds{namespace="ops",policy="db"} ~30
# HELP election_renewal_interval_seconds Interval between the last two renewals observed
# TYPE election_renewal_interval_seconds gauge
election_renewal_interval_seconds{namespace="apps",policy="web"} 2.5
election_renewal_interval_seconds{namespace="ops",policy="db"} 2.0
# HELP election_leader_transitions Leader transitions recorded in the lock (leaderTransitions)
# TYPE election_leader_transitions counter
election_leader_transitions_total{namespace="apps",policy="web"} 3
election_leader_transitions_total{namespace="ops",policy="db"} 0
# HELP election_observed_leader_changes Leader changes observed by this operator process
# TYPE election_observed_leader_changes counter
election_observed_leader_changes_total{namespace="apps",policy="web"} 2
election_observed_leader_changes_total{namespace="apps",policy="worker"} 0
election_observed_leader_changes_total{namespace="ops",policy="a-pending"} 0
election_observed_leader_changes_total{namespace="ops",policy="b-no-leader"} 0
election_observed_leader_changes_total{namespace="ops",policy="c-invalid"} 0
election_observed_leader_changes_total{namespace="ops",policy="db"} 7
# EOF
"##;
}
