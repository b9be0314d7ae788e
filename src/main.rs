//! election-operator: parses flags, starts telemetry and the HTTP endpoints, and runs the
//! operator (see `election_operator::operator`).

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use election_operator::{
    api::LockType,
    domain::{
        namespaces::WatchedNamespaces,
        validation::{PolicyOptions, Timings, check_timings, parse_go_duration},
    },
    http::{MetricsServing, Readiness, access::MetricsAccess, parse_bind_address, serve_metrics, serve_probes, tls},
    k8s::{leader_election::LeaseLocation, locks},
    metrics::Metrics,
    operator::{self, Settings},
    supervisor::Supervisor,
};
use tokio::sync::watch;
use tracing::{error, info};
use tracing_subscriber::{EnvFilter, fmt};

/// Configures, observes and alerts on client-go leader election (ElectionPolicy, election.dev/v1alpha1).
///
/// Finds the cluster the usual way: $KUBECONFIG, ~/.kube/config, or in-cluster. Every flag has
/// an ELECTION_OPERATOR_* environment twin.
#[derive(Parser, Debug)]
#[command(name = "election-operator", version)]
struct Args {
    /// Address of the Prometheus /metrics endpoint (":8080" for all interfaces, "0" to disable).
    #[arg(long, env = "ELECTION_OPERATOR_METRICS_BIND_ADDRESS", default_value = ":8080")]
    metrics_bind_address: String,

    /// Serve /metrics over HTTPS, only to callers whose bearer token passes a TokenReview and
    /// a SubjectAccessReview for `get` on the non-resource URL /metrics (the chart's
    /// metrics-reader ClusterRole grants it). false: plain HTTP to anyone, for local use.
    #[arg(long, env = "ELECTION_OPERATOR_METRICS_SECURE", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    metrics_secure: bool,

    /// Directory with tls.crt and tls.key for the secure metrics endpoint (default: a
    /// self-signed certificate made at start).
    #[arg(long, env = "ELECTION_OPERATOR_METRICS_CERT_DIR")]
    metrics_cert_dir: Option<std::path::PathBuf>,

    /// Address of the /healthz and /readyz endpoints ("0" to disable).
    #[arg(long, env = "ELECTION_OPERATOR_HEALTH_PROBE_BIND_ADDRESS", default_value = ":8081")]
    health_probe_bind_address: String,

    /// Elect a leader among operator replicas through a Lease; only the leader acts.
    #[arg(long, env = "ELECTION_OPERATOR_LEADER_ELECT", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,

    /// Name of the operator's own leader-election Lease.
    #[arg(long, env = "ELECTION_OPERATOR_LEADER_ELECTION_ID", default_value = "election-operator")]
    leader_election_id: String,

    /// Namespace of that Lease (default: the pod's namespace, else election-system).
    #[arg(long, env = "ELECTION_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// Lease duration of the operator's own election.
    #[arg(long, env = "ELECTION_OPERATOR_LEADER_ELECTION_LEASE_DURATION", default_value = "15s")]
    leader_election_lease_duration: String,

    /// Renew deadline of the operator's own election.
    #[arg(long, env = "ELECTION_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s")]
    leader_election_renew_deadline: String,

    /// Retry period of the operator's own election.
    #[arg(long, env = "ELECTION_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s")]
    leader_election_retry_period: String,

    /// Work only in these namespaces (comma-separated): watch policies, Deployments, Pods
    /// and locks there and nowhere else, as a namespaced install's Roles allow. Empty: every
    /// namespace.
    #[arg(long, env = "ELECTION_OPERATOR_WATCH_NAMESPACES", default_value = "")]
    watch_namespaces: String,

    /// Let policies watch locks in namespaces other than their own.
    #[arg(long, env = "ELECTION_OPERATOR_ALLOW_CROSS_NAMESPACE_LOCKS", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    allow_cross_namespace_locks: bool,

    /// Read legacy Endpoints and ConfigMap locks (needs RBAC on those kinds).
    #[arg(long, env = "ELECTION_OPERATOR_LEGACY_LOCKS", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    legacy_locks: bool,

    /// Let policies keep election.dev/leader=true on the lock holder's Pod (spec.leaderPodLabel;
    /// needs RBAC to patch Pods).
    #[arg(long, env = "ELECTION_OPERATOR_LEADER_POD_LABEL", default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    leader_pod_label: bool,

    /// ElectionPolicies reconciled at once.
    #[arg(long, env = "ELECTION_OPERATOR_MAX_CONCURRENT_RECONCILES", default_value_t = 4)]
    max_concurrent_reconciles: u16,

    /// Status writes, and Events, in flight at once. Each status write costs the API server
    /// far more than a lock renewal; more at once starts faster only while the API server has
    /// CPU to spare, and past that slows everyone's writes, the renewals it watches included.
    #[arg(long, env = "ELECTION_OPERATOR_MAX_CONCURRENT_WRITES", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_concurrent_writes: u16,

    /// Threads running the operator's tasks. Its work is watch events handed from task to
    /// task; with one thread those hand-offs need no cross-thread wake-ups, which cost a
    /// fifth of its CPU with two (BENCHMARKS.md). Raise it for very large clusters.
    #[arg(long, env = "ELECTION_OPERATOR_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    worker_threads: u16,

    /// Log format.
    #[arg(long, env = "ELECTION_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// This replica's identity in Events and the Lease (default: $POD_NAME, else the
    /// hostname with a random suffix).
    #[arg(long, env = "ELECTION_OPERATOR_IDENTITY")]
    identity: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Take the label election.dev/observed off every Lease (with --legacy-locks, also every
    /// Endpoints and ConfigMap) that carries it, in --watch-namespaces, then exit. Earlier builds of the operator
    /// labelled the locks they watched; this one only reads them. The Helm chart runs this
    /// once on upgrade, under a role of its own.
    RemoveObservedLabels,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One arena per worker thread, two at most; the runtime starts after this.
    tune_malloc(if args.worker_threads == 1 { 1 } else { 2 });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.into())
        .enable_all()
        .build()?
        .block_on(operator_main(args))
}

/// Two settings of glibc's malloc, which must be made before the first thread starts:
/// - Arenas: glibc gives threads that contend for the heap arenas of their own, up to
///   eight per core, and memory freed into one arena is not reused by another. With tokio's
///   worker threads trading allocations, that fragmentation was a sixth of the operator's
///   RSS at 1000 policies (37 MiB against 32 MiB with two arenas, BENCHMARKS.md), for no
///   measurable CPU. With one worker thread (the default) one arena is enough: the other
///   threads (the blocking pool) rarely allocate, and at 3000 policies it took RSS from
///   45.4 to 42.6 MiB and its peak from 53.3 to 48.0 MiB against two.
/// - Large blocks: a list page or a metrics scrape is a buffer of megabytes, held for a
///   moment. By default glibc raises its mmap threshold to the size of each such block
///   freed, so later ones come from the heap, whose free space is rarely returned to the
///   system. A fixed threshold keeps them mapped, so they are returned as soon as freed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc(arenas: i32) {
    // SAFETY: mallopt only adjusts allocator parameters; called before any other thread
    // exists, so nothing allocates concurrently.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc(_arenas: i32) {}

async fn operator_main(args: Args) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn,tower=warn,hyper=warn"));
    match args.log_format {
        LogFormat::Text => fmt().with_env_filter(filter).init(),
        LogFormat::Json => fmt().json().flatten_event(true).with_current_span(true).with_env_filter(filter).init(),
    }
    if let Err(error) = run(args).await {
        error!("{error:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let watched_namespaces = WatchedNamespaces::parse(&args.watch_namespaces)?;
    if let Some(Command::RemoveObservedLabels) = args.command {
        return remove_observed_labels(args.legacy_locks, &watched_namespaces).await;
    }
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let election = if args.leader_elect {
        let timings = Timings {
            lease_duration: parse_go_duration(
                "--leader-election-lease-duration",
                &args.leader_election_lease_duration,
            )?,
            renew_deadline: parse_go_duration(
                "--leader-election-renew-deadline",
                &args.leader_election_renew_deadline,
            )?,
            retry_period: parse_go_duration("--leader-election-retry-period", &args.leader_election_retry_period)?,
        };
        check_timings(&timings)?;
        let namespace =
            args.leader_election_namespace.clone().or_else(pod_namespace).unwrap_or_else(|| "election-system".into());
        Some((LeaseLocation { namespace, name: args.leader_election_id.clone() }, timings))
    } else {
        None
    };
    let metrics_address = parse_bind_address(&args.metrics_bind_address).context("--metrics-bind-address")?;
    let probe_address = parse_bind_address(&args.health_probe_bind_address).context("--health-probe-bind-address")?;

    let client =
        kube::Client::try_default().await.context("finding the cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let (supervisor, failures) = Supervisor::new();
    if let Some(address) = metrics_address {
        let serving = if args.metrics_secure {
            let tls = tls::server_config(args.metrics_cert_dir.as_deref()).context("--metrics-cert-dir")?;
            MetricsServing::Secure { tls, access: MetricsAccess::new(client.clone(), metrics.clone()) }
        } else {
            MetricsServing::Open
        };
        let server = serve_metrics(address, metrics.clone(), serving, supervisor.clone());
        let reporter = supervisor.clone();
        supervisor.spawn_forever("metrics endpoint", async move {
            if let Err(error) = server.await {
                reporter.report("metrics endpoint", format!("failed: {error}"));
            }
        });
    }
    if let Some(address) = probe_address {
        let server = serve_probes(address, readiness.clone(), supervisor.liveness());
        let reporter = supervisor.clone();
        supervisor.spawn_forever("probe endpoint", async move {
            if let Err(error) = server.await {
                reporter.report("probe endpoint", format!("failed: {error}"));
            }
        });
    }

    operator::check_crd(&client, &watched_namespaces).await?;
    info!(%identity, leader_elect = args.leader_elect, namespaces = %watched_namespaces, "election-operator starting");

    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        stop.send_replace(true);
        // A second signal, or a hung shutdown, ends the process anyway.
        tokio::select! {
            _ = shutdown_signal() => {}
            _ = tokio::time::sleep(Duration::from_secs(20)) => {}
        }
        std::process::exit(1);
    });

    let settings = Settings {
        options: PolicyOptions {
            allow_cross_namespace_locks: args.allow_cross_namespace_locks,
            legacy_locks: args.legacy_locks,
            leader_pod_label: args.leader_pod_label,
            watched_namespaces,
        },
        concurrency: args.max_concurrent_reconciles,
        write_concurrency: args.max_concurrent_writes,
        identity,
        election,
    };
    // Lost leadership, or a task that failed, is an error: the process exits non-zero, and
    // Kubernetes restarts it (as a standby, if another replica took over).
    let runtime = operator::Runtime { client, metrics, readiness, supervisor, failures };
    Ok(operator::run(runtime, settings, shutdown).await?)
}

async fn remove_observed_labels(legacy_locks: bool, namespaces: &WatchedNamespaces) -> anyhow::Result<()> {
    let client =
        kube::Client::try_default().await.context("finding the cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let mut kinds = vec![LockType::Lease];
    if legacy_locks {
        kinds.extend([LockType::Endpoints, LockType::ConfigMap]);
    }
    let removed = locks::remove_observed_labels(&client, &kinds, namespaces, &Metrics::new()).await?;
    info!(removed, "the label {} is off every lock", locks::OBSERVED_LABEL);
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

fn default_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|p| !p.is_empty()) {
        return pod;
    }
    use std::hash::{BuildHasher, Hasher};
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "election-operator".into());
    // A uniquifier, as client-go programs add, so two processes on one host never share an identity.
    let suffix = std::collections::hash_map::RandomState::new().build_hasher().finish() as u32;
    format!("{host}_{suffix:08x}")
}

fn pod_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|n| n.trim().to_string())
}
