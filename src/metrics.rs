//! Prometheus metrics, prefixed `election_`.
//!
//! Per-policy values (leader, staleness, time since the last observed renewal) are read at
//! scrape time from snapshots the observer keeps current, so "seconds since the last
//! renewal" is exact at every scrape without a timer ticking per policy, and a deleted
//! policy's series simply disappear.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text::encode},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
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
    lock_events: Family<ResourceLabels, Counter>,
    status_writes: Counter,
    policies: Arc<PolicyCollector>,
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
        let lock_events = Family::<ResourceLabels, Counter>::default();
        registry.register(
            "lock_watch_events",
            "Lock objects received from the lock watches (only labelled locks are watched)",
            lock_events.clone(),
        );
        let status_writes = Counter::default();
        registry.register("status_writes", "ElectionPolicy status writes", status_writes.clone());
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
                lock_events,
                status_writes,
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

    pub fn lock_event_received(&self, resource: &'static str) {
        self.inner.lock_events.get_or_create(&ResourceLabels { resource }).inc();
    }

    pub fn status_written(&self) {
        self.inner.status_writes.inc();
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

    pub fn remove_policy(&self, key: &PolicyKey) {
        let mut snapshots = self.inner.policies.snapshots.write().unwrap_or_else(|e| e.into_inner());
        snapshots.remove(key);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    namespace: String,
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaderLabels {
    namespace: String,
    policy: String,
    leader: String,
    lock: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    namespace: String,
    policy: String,
    state: &'static str,
}

const STATES: [PolicyState; 5] =
    [PolicyState::Pending, PolicyState::Healthy, PolicyState::Stale, PolicyState::NoLeader, PolicyState::Invalid];

impl Collector for PolicyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots = self.snapshots.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let labels = |key: &PolicyKey| PolicyLabels { namespace: key.namespace.clone(), policy: key.name.clone() };

        let mut family =
            |name: &str,
             help: &str,
             kind: prometheus_client::metrics::MetricType,
             emit: &mut dyn FnMut(&mut prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error>|
             -> Result<(), std::fmt::Error> {
                let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
                emit(&mut metric)
            };
        use prometheus_client::metrics::MetricType::{Counter as CounterType, Gauge as GaugeType};

        family(
            "leader_info",
            "The lock's current holder (1 per policy; empty leader label when none)",
            GaugeType,
            &mut |m| {
                for (key, s) in snapshots.iter() {
                    let l = LeaderLabels {
                        namespace: key.namespace.clone(),
                        policy: key.name.clone(),
                        leader: s.leader.clone(),
                        lock: s.lock.clone(),
                    };
                    ConstGauge::new(1i64).encode(m.encode_family(&l)?)?;
                }
                Ok(())
            },
        )?;
        family("policy_state", "1 for the policy's current state, 0 for the others", GaugeType, &mut |m| {
            for (key, s) in snapshots.iter() {
                for state in STATES {
                    let l = StateLabels {
                        namespace: key.namespace.clone(),
                        policy: key.name.clone(),
                        state: state.as_str(),
                    };
                    ConstGauge::new(i64::from(s.state == Some(state))).encode(m.encode_family(&l)?)?;
                }
            }
            Ok(())
        })?;
        family("lease_stale", "1 while no renewal was observed within the lease duration", GaugeType, &mut |m| {
            for (key, s) in snapshots.iter() {
                ConstGauge::new(i64::from(s.state == Some(PolicyState::Stale)))
                    .encode(m.encode_family(&labels(key))?)?;
            }
            Ok(())
        })?;
        for (name, help, flag) in [
            (
                "holder_not_found",
                "1 while the holder is not a Pod of the selected Deployments",
                (|s: &PolicySnapshot| s.holder_not_found) as fn(&PolicySnapshot) -> bool,
            ),
            ("leader_flapping", "1 while leadership changes more often than the policy allows", |s| s.flapping),
            ("renewals_slow", "1 while no renewal was observed for the slow-renewal threshold", |s| s.renewals_slow),
            (
                "lease_unobservable",
                "1 while the lease's deadline passed with the lock unwatchable (LeaderHealthy Unknown, not Stale)",
                |s| s.unobservable,
            ),
        ] {
            family(name, help, GaugeType, &mut |m| {
                for (key, s) in snapshots.iter() {
                    ConstGauge::new(i64::from(flag(s))).encode(m.encode_family(&labels(key))?)?;
                }
                Ok(())
            })?;
        }
        family(
            "last_renewal_age_seconds",
            "Seconds since the operator last observed the lock record change",
            GaugeType,
            &mut |m| {
                for (key, s) in snapshots.iter() {
                    if let Some(changed) = s.last_change {
                        ConstGauge::new(now.saturating_duration_since(changed).as_secs_f64())
                            .encode(m.encode_family(&labels(key))?)?;
                    }
                }
                Ok(())
            },
        )?;
        family(
            "lease_expiry_margin_seconds",
            "Seconds left before the lease goes stale unless renewed (negative once past)",
            GaugeType,
            &mut |m| {
                for (key, s) in snapshots.iter() {
                    if let Some(deadline) = s.deadline {
                        let margin = if deadline >= now {
                            deadline.duration_since(now).as_secs_f64()
                        } else {
                            -now.duration_since(deadline).as_secs_f64()
                        };
                        ConstGauge::new(margin).encode(m.encode_family(&labels(key))?)?;
                    }
                }
                Ok(())
            },
        )?;
        family("renewal_interval_seconds", "Interval between the last two renewals observed", GaugeType, &mut |m| {
            for (key, s) in snapshots.iter() {
                if let Some(interval) = s.renewal_interval {
                    ConstGauge::new(interval.as_secs_f64()).encode(m.encode_family(&labels(key))?)?;
                }
            }
            Ok(())
        })?;
        family(
            "leader_transitions",
            "Leader transitions recorded in the lock (leaderTransitions)",
            CounterType,
            &mut |m| {
                for (key, s) in snapshots.iter() {
                    if let Some(transitions) = s.recorded_transitions {
                        ConstCounter::new(u64::try_from(transitions).unwrap_or(0))
                            .encode(m.encode_family(&labels(key))?)?;
                    }
                }
                Ok(())
            },
        )?;
        family("observed_leader_changes", "Leader changes observed by this operator process", CounterType, &mut |m| {
            for (key, s) in snapshots.iter() {
                ConstCounter::new(s.observed_changes).encode(m.encode_family(&labels(key))?)?;
            }
            Ok(())
        })?;
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
        let text = metrics.render();
        assert!(text.contains(r#"election_reconciles_total{result="error"} 1"#), "{text}");
        assert!(text.contains(r#"election_reconcile_errors_total{error="kube"} 1"#), "{text}");
        assert!(text.contains(r#"election_api_errors_total{operation="patch_deployment"} 1"#), "{text}");
        assert!(text.contains("election_reconcile_duration_seconds_count 1"), "{text}");
    }
}
