//! The chart's alerts and dashboard on a real Prometheus (built from its Go module): it
//! scrapes both replicas of the operator installed by the chart, as the chart's
//! ServiceMonitor tells prometheus-operator to, and evaluates the chart's rules, rendered
//! with short windows. Real client-go electors freeze, hand over, release; each alert must
//! fire exactly once (two replicas are scraped, only the leading one exports per-policy
//! series), and every panel of the shipped Grafana dashboard must find data.

use std::time::{Duration, Instant};

use election_e2e::{
    App, ElectorBuild, TestNamespace, admin_client, kubectl_ok,
    prometheus::Prometheus,
    repo_root, wait_for,
    workloads::{ChartOperator, OPERATOR_NAMESPACE, RELEASE},
};
use election_operator::api::PolicyState;
use kube::Client;
use serde_json::{Value, json};

const LEASE_SECONDS: f64 = 6.0;
/// Windows short enough for a test; the rules' text is otherwise what users install.
const CHART_VALUES: &[&str] = &[
    "metrics.serviceMonitor.interval=500ms",
    "prometheusRule.noLeaderFor=5s",
    "prometheusRule.flappingWindow=2m",
    "prometheusRule.operatorDownFor=10s",
];
/// The `job` the ServiceMonitor gives the operator's targets (the metrics Service's name),
/// which ElectionOperatorDown names.
const JOB: &str = "election-operator-metrics";
/// A liveness deadline for everything that eventually happens here. The slowest is
/// ElectionOperatorDown: the operator's Pods stop (the process exits within 20 s of SIGTERM
/// by its own guard, and the kubelet kills it at the 30 s grace period at the latest), then
/// operatorDownFor (10 s), a scrape and an evaluation (0.5 s each): 41 s at worst. The
/// others take seconds: a released lock is taken within 2.2 x retryPeriod, noLeaderFor is
/// 5 s.
const SETTLE: Duration = Duration::from_secs(60);

async fn app(client: &Client, namespace: &str, name: &str, replicas: usize) -> App {
    let spec = json!({"leaseDuration": "6s", "renewDeadline": "4s", "retryPeriod": "1s"});
    App::create(client, namespace, name, replicas, spec).await
}

#[tokio::test]
async fn each_alert_fires_once_on_a_real_prometheus_scraping_two_operator_replicas() {
    let ns = TestNamespace::new("alerts");
    let client = admin_client().await;
    let operator = ChartOperator::install(&client, &["replicaCount=2"]).await;
    let prometheus =
        Prometheus::for_chart(RELEASE, OPERATOR_NAMESPACE, CHART_VALUES, "500ms", operator.scraper_token()).await;
    let both_up = format!(r#"sum(up{{job="{JOB}"}})"#);
    wait_for("both operator replicas scraped", SETTLE, || async {
        (prometheus.scalar(&both_up).await == Some(2.0)).then_some(())
    })
    .await;
    // One of them leads, the other stands by (and says so).
    let leading = format!(r#"sum(election_operator_leading{{job="{JOB}"}})"#);
    assert_eq!(prometheus.scalar(&leading).await, Some(1.0), "one leading replica");

    // --- ElectionLeaseStale: a leader frozen between two renewals, no standby. ---
    let frozen = app(&client, &ns.name, "frozen", 1).await;
    let frozen_labels = [("namespace", ns.name.as_str()), ("policy", "frozen")];
    let elector = frozen.elector(ElectorBuild::Current, 0, &[]);
    frozen.leader(&client, PolicyState::Healthy).await;
    // The per-policy series come from the leading replica alone, with the policy's
    // namespace (the ServiceMonitor's honorLabels keeps it from becoming exported_namespace).
    let leading = operator.leader(&client).await;
    let info = format!(r#"election_leader_info{{namespace="{}",policy="frozen"}}"#, ns.name);
    let series = wait_for("the policy's series in Prometheus", SETTLE, || async {
        let series = prometheus.query(&info).await;
        (!series.is_empty()).then_some(series)
    })
    .await;
    assert_eq!(series.len(), 1, "one replica exports the policy's series: {series:?}");
    assert_eq!(series[0]["metric"]["pod"], leading.as_str(), "the leading replica exports it: {series:?}");

    elector.stop_between_renewals().await;
    let frozen_at = Instant::now();
    // The last renewal's Update returned before the freeze, and the operator saw it within
    // its watch's latency; it judges the lease stale a leaseDuration after that sight (6 s)
    // and sets election_lease_stale at once. Prometheus scrapes that within a scrape
    // interval (0.5 s) and the next evaluation (every 0.5 s) fires the alert, the rule
    // having no `for` (staleFor 0m): 7 s, and 7.1 s with the test's 100 ms poll. The
    // remaining 1.9 s are for the watch's latency, the scrape's own time and the alerts
    // query, each milliseconds here.
    let stale = prometheus
        .wait_firing("ElectionLeaseStale", &frozen_labels, Duration::from_secs_f64(LEASE_SECONDS + 3.0))
        .await;
    println!(
        "ElectionLeaseStale fired {:.1}s after the leader froze (leaseDuration {LEASE_SECONDS}s, scrape and evaluation every 0.5s)",
        frozen_at.elapsed().as_secs_f64()
    );
    assert_eq!(stale["labels"]["severity"], "critical", "{stale}");
    assert_eq!(
        stale["annotations"]["summary"],
        format!("Leader of {}/frozen stopped renewing its lease", ns.name),
        "{stale}"
    );
    assert_eq!(
        stale["annotations"]["runbook_url"], "https://github.com/election-dev/election-operator#electionleasestale",
        "{stale}"
    );
    elector.signal("CONT");
    frozen.leader(&client, PolicyState::Healthy).await;
    prometheus.wait_resolved("ElectionLeaseStale", &frozen_labels, SETTLE).await;
    drop(elector);

    // --- ElectionLeaderFlapping: three takeovers in a row. ---
    let flappy = app(&client, &ns.name, "flappy", 2).await;
    let flappy_labels = [("namespace", ns.name.as_str()), ("policy", "flappy")];
    let mut electors: Vec<_> =
        (0..2).map(|pod| flappy.elector(ElectorBuild::Current, pod, &["--release-on-cancel"])).collect();
    let mut leader = flappy.leader(&client, PolicyState::Healthy).await;
    for _ in 0..3 {
        // The leader releases on SIGTERM; the standby takes the lock at its next attempt;
        // a new process plays the released Pod again, as a restarted container would.
        let at = electors.iter().position(|e| e.identity == leader).expect("an elector leads");
        electors[at].signal("TERM");
        let next = wait_for("the standby to take over", SETTLE, || async {
            let now = flappy.leader(&client, PolicyState::Healthy).await;
            (now != leader).then_some(now)
        })
        .await;
        let pod = flappy.pods.iter().position(|p| *p == leader).expect("the leader is a Pod of the app");
        electors[at] = flappy.elector(ElectorBuild::Current, pod, &["--release-on-cancel"]);
        leader = next;
    }
    let flapping = prometheus.wait_firing("ElectionLeaderFlapping", &flappy_labels, SETTLE).await;
    assert_eq!(flapping["labels"]["severity"], "warning", "{flapping}");
    println!("ElectionLeaderFlapping fired with value {}", flapping["value"]);

    // --- ElectionNoLeader: every replica released the lock. ---
    for elector in &electors {
        elector.signal("TERM");
    }
    wait_no_leader(&client, &flappy).await;
    let no_leader = prometheus.wait_firing("ElectionNoLeader", &flappy_labels, SETTLE).await;
    assert_eq!(no_leader["annotations"]["summary"], format!("{}/flappy has had no leader for 5s", ns.name));
    drop(electors);

    // --- The dashboard: every panel's queries find data. ---
    for (panel, expr) in dashboard_queries() {
        let result = wait_for(&format!("data for panel {panel:?}: {expr}"), SETTLE, || async {
            let result = prometheus.query(&expr).await;
            (!result.is_empty()).then_some(result)
        })
        .await;
        println!("dashboard panel {panel:?}: {} series", result.len());
    }

    // --- ElectionOperatorDown: no replica left to scrape. ---
    kubectl_ok(&["scale", "deployment", RELEASE, "-n", OPERATOR_NAMESPACE, "--replicas=0"], None);
    let down = prometheus.wait_firing("ElectionOperatorDown", &[], SETTLE).await;
    assert_eq!(
        down["annotations"]["runbook_url"], "https://github.com/election-dev/election-operator#electionoperatordown",
        "{down}"
    );
    operator.uninstall();
}

/// Waits until the app's policy reports no leader (every replica released the lock).
async fn wait_no_leader(client: &Client, app: &App) {
    election_e2e::wait_policy(client, &app.namespace, &app.name, "NoLeader", SETTLE, |p| {
        p.status.as_ref().is_some_and(|s| s.state == Some(PolicyState::NoLeader))
    })
    .await;
}

/// Every query of the chart's Grafana dashboard, with its variables set the way Grafana
/// sets them for "All" and a 10-minute range: (panel title, PromQL).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo_root().join("charts/election-operator/dashboards/election-operator.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard is readable"))
        .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    panels
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_string();
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "panel {title:?} has no query");
            targets.into_iter().map(move |target| {
                let expr = target["expr"].as_str().expect("a PromQL target").to_string();
                let expr = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$__range", "10m")
                    .replace("$namespace", ".*")
                    .replace("$job", ".*");
                assert!(!expr.contains('$'), "a variable the test does not set: {expr}");
                (title.clone(), expr)
            })
        })
        .collect()
}
