//! The ElectionPolicy controller: validates each policy, resolves conflicts, injects its
//! configuration into the Deployments it selects, and hands the outcome to the observer.
//!
//! It watches policies and Deployments (so a new or edited Deployment is configured at
//! once), and a finalizer makes deletion take the configuration back out first.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    core::SelectorExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Action},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::{
    Error, Result,
    api::{ElectionPolicy, ElectionPolicyStatus, InjectionMode},
    domain::{
        claims::{Claimant, find_conflict},
        injection::{FIELD_MANAGER, injected_by},
        injection_plan::{self, ApplyFailure, Injection, RemovalFailure, Step, Write},
        notices::{Notice, Regarding, Severity},
        pending_writes::PendingWrites,
        policy_index::PolicyIndex,
        policy_key::PolicyKey,
        reasons::event,
        starting_statuses::StartingStatuses,
        status::{ConfigOutcome, ConfigReport},
        tracking::{Registration, WatchSettings},
        validation::{InvalidPolicy, PolicyOptions, ValidPolicy, validate},
    },
    k8s::{api_call, cache_sync::CacheSync, events::Events, inbox::ObserverHandle, scoped_watch, status_code},
    metrics::Metrics,
    supervisor::Supervisor,
};

/// Held on each policy until its configuration has been taken back out.
pub const FINALIZER: &str = "election.dev/cleanup";

/// Everything a reconcile needs.
pub struct Context {
    /// What the operator handed over.
    pub parts: Parts,
    pub deployments: Store<Deployment>,
    pub policies: Store<ElectionPolicy>,
    /// The policies by lock name, namespace and conflict, so a reconcile finds the few that
    /// concern it without going through all of them.
    index: SharedPolicyIndex,
    /// The statuses found at start, until each policy's first registration.
    starting_statuses: SharedStartingStatuses,
    /// Open once both stores have listed: no decision is taken from them before.
    caches: CacheSync,
    /// Deployment writes the cache may not show yet, so they are not made twice.
    pending_writes: std::sync::Mutex<PendingWrites>,
    /// Policies to reconcile again because one they conflicted with changed.
    retry: mpsc::UnboundedSender<ObjectRef<ElectionPolicy>>,
}

impl Context {
    /// Whether `config` was already written in a write this cached copy of `deployment`
    /// does not show yet.
    fn already_written(&self, deployment: &Deployment, config: &serde_json::Value) -> bool {
        let (uid, generation) = (deployment.uid().unwrap_or_default(), deployment.metadata.generation.unwrap_or(0));
        self.pending_writes.lock().unwrap_or_else(|e| e.into_inner()).already_written(&uid, generation, config)
    }

    /// Remembers a write of `config`, as the API server answered it (`written`).
    fn record_write(&self, written: &Deployment, config: &serde_json::Value) {
        let (uid, generation) = (written.uid().unwrap_or_default(), written.metadata.generation.unwrap_or(0));
        let mut writes = self.pending_writes.lock().unwrap_or_else(|e| e.into_inner());
        writes.record(&uid, generation, config);
        if writes.len() > 2 * self.deployments.len() + 64 {
            // Forget Deployments deleted before the cache caught up with a write to them.
            let live: std::collections::HashSet<String> =
                self.deployments.state().iter().filter_map(|d| d.uid()).collect();
            writes.retain(|uid| live.contains(uid));
        }
    }

    /// The policy's validation result. Not cached: only the policy reconciled and the few
    /// the index names as possible conflicts are validated, and a cache would hold a result
    /// for every policy (about 0.5 KiB each).
    fn validate(&self, policy: &ElectionPolicy) -> Result<ValidPolicy, InvalidPolicy> {
        validate(&policy.namespace().unwrap_or_default(), &policy.spec, &self.parts.options)
    }
}

/// What the controller works with, built by the operator.
pub struct Parts {
    pub client: Client,
    pub options: PolicyOptions,
    pub observer: ObserverHandle,
    pub events: Events,
    pub supervisor: Supervisor,
    pub metrics: Metrics,
    /// Policies reconciled at once.
    pub concurrency: u16,
}

/// Runs the controller until `shutdown` is cancelled; calls `ready` once its caches are
/// synced.
pub async fn run(parts: Parts, ready: impl FnOnce() + Send + 'static, shutdown: CancellationToken) {
    // Reconciles, and readiness, wait until both caches have listed.
    let caches = CacheSync::new();
    let policies_listed = caches.expect("policies");
    let deployments_listed = caches.expect("deployments");
    {
        let caches = caches.clone();
        parts.supervisor.spawn("cache sync", async move {
            caches.wait().await;
            ready();
        });
    }
    let namespaces = &parts.options.watched_namespaces;
    let (policies, policy_writer) = reflector::store::<ElectionPolicy>();
    let (gone, gone_policies) = mpsc::unbounded_channel();
    let mut listing = (Vec::new(), std::time::Instant::now());
    let index = SharedPolicyIndex::default();
    let mut index_writer = PolicyIndexWriter { index: index.clone(), relisting: None };
    let starting_statuses = SharedStartingStatuses::default();
    let statuses_writer = starting_statuses.clone();
    let policy_stream = reflector::reflector(
        policy_writer,
        scoped_watch::watch(&parts.client, namespaces, watcher::Config::default(), policies.clone())
            .inspect_ok(move |event| {
                policies_listed.observe(event);
                index_writer.apply(event);
                statuses_writer.apply(event);
                track_deletions(event, &mut listing, &gone);
            })
            // Managed fields and annotations (kubectl's last-applied-configuration, a copy of
            // the whole spec) are of no use here, and would take most of the cache; so would
            // the status, which the observer keeps as written (and `starting_statuses` as
            // found at start): of it the cache keeps observedGeneration alone. Nothing
            // writes a cached policy back, so dropping them loses nothing.
            .modify(|p| {
                p.managed_fields_mut().clear();
                p.annotations_mut().clear();
                p.status = p
                    .status
                    .take()
                    .map(|s| ElectionPolicyStatus { observed_generation: s.observed_generation, ..Default::default() });
            }),
    )
    .applied_objects()
    // The operator's own status writes change a policy too; they need no reconcile.
    .predicate_filter(reconcile_relevant, Default::default());
    parts
        .supervisor
        .spawn_forever("forget deleted policies", forget_deleted_policies(gone_policies, parts.observer.clone()));

    let (deployments, deployment_writer) = reflector::store::<Deployment>();
    let deployment_stream = reflector::reflector(
        deployment_writer,
        scoped_watch::watch(&parts.client, namespaces, watcher::Config::default(), deployments.clone())
            // Managed fields are most of a Deployment's size and of no use here.
            .modify(|d| d.managed_fields_mut().clear())
            .inspect_ok(move |event| deployments_listed.observe(event)),
    )
    .touched_objects();

    let (retry, retries) = mpsc::unbounded_channel();
    let safety_net = parts.supervisor.spawn_forever("safety net", safety_net(policies.clone(), retry.clone()));
    let concurrency = parts.concurrency;
    let context = Arc::new(Context {
        parts,
        deployments: deployments.clone(),
        policies: policies.clone(),
        index: index.clone(),
        starting_statuses,
        caches,
        pending_writes: std::sync::Mutex::default(),
        retry,
    });

    let mapper_policies = policies.clone();
    Controller::for_stream(policy_stream, policies)
        .watches_stream(deployment_stream, move |deployment| {
            policies_for_deployment(&mapper_policies, &index, &deployment)
        })
        .reconcile_on(tokio_stream_from(retries))
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| futures::future::ready(()))
        .await;
    safety_net.abort();
}

/// What of a policy calls for a reconcile: its spec (generation), its deletion and its
/// finalizers; not its status.
fn reconcile_relevant(policy: &ElectionPolicy) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    policy.metadata.generation.hash(&mut hasher);
    policy.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    policy.finalizers().hash(&mut hasher);
    Some(hasher.finish())
}

/// The [`PolicyIndex`] the controller reads, as the policy watch keeps it.
#[derive(Clone, Default)]
struct SharedPolicyIndex(Arc<std::sync::RwLock<PolicyIndex>>);

impl SharedPolicyIndex {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, PolicyIndex> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// Applies the policy watch's events to the index. It sees each event before the reflector
/// does, so the index never lags the store: a policy in the store is in the index. A relist
/// builds a fresh index and swaps it in once complete, as the reflector does its store.
struct PolicyIndexWriter {
    index: SharedPolicyIndex,
    relisting: Option<PolicyIndex>,
}

impl PolicyIndexWriter {
    fn apply(&mut self, event: &watcher::Event<ElectionPolicy>) {
        let live = || self.index.0.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(policy) => live().insert(policy),
            watcher::Event::Delete(policy) => live().remove(&PolicyKey::of(policy)),
            watcher::Event::Init => self.relisting = Some(PolicyIndex::default()),
            watcher::Event::InitApply(policy) => self.relisting.get_or_insert_default().insert(policy),
            watcher::Event::InitDone => *live() = self.relisting.take().unwrap_or_default(),
        }
    }
}

/// The [`StartingStatuses`], as the policy watch keeps them (before the reflector, which
/// then caches the policies without their status) and reconciles hand them over.
#[derive(Clone, Default)]
struct SharedStartingStatuses(Arc<std::sync::Mutex<StartingStatuses>>);

impl SharedStartingStatuses {
    fn lock(&self) -> std::sync::MutexGuard<'_, StartingStatuses> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, event: &watcher::Event<ElectionPolicy>) {
        let mut statuses = self.lock();
        match event {
            watcher::Event::Init => statuses.list_started(),
            watcher::Event::InitApply(policy) => statuses.listed(PolicyKey::of(policy), policy.status.clone()),
            watcher::Event::InitDone => statuses.list_done(),
            watcher::Event::Apply(policy) => statuses.changed(&PolicyKey::of(policy), policy.status.as_ref()),
            watcher::Event::Delete(policy) => statuses.deleted(&PolicyKey::of(policy)),
        }
    }

    fn take(&self, policy: &PolicyKey) -> Option<ElectionPolicyStatus> {
        self.lock().take(policy)
    }
}

/// The policy a [`PolicyIndex`] key names, as the cache holds it.
fn cached_policy(policies: &Store<ElectionPolicy>, key: &PolicyKey) -> Option<Arc<ElectionPolicy>> {
    policies.get(&ObjectRef::new(&key.name).within(&key.namespace))
}

/// What the watch says about policies that no longer exist.
enum Gone {
    Deleted(PolicyKey),
    /// After a (re)list begun at that instant: only these exist; any other registered
    /// before then is gone.
    OnlyThese(Vec<PolicyKey>, std::time::Instant),
}

fn track_deletions(
    event: &watcher::Event<ElectionPolicy>,
    listing: &mut (Vec<PolicyKey>, std::time::Instant),
    gone: &mpsc::UnboundedSender<Gone>,
) {
    let key = PolicyKey::of;
    match event {
        watcher::Event::Delete(policy) => drop(gone.send(Gone::Deleted(key(policy)))),
        watcher::Event::Init => *listing = (Vec::new(), std::time::Instant::now()),
        watcher::Event::InitApply(policy) => listing.0.push(key(policy)),
        watcher::Event::InitDone => drop(gone.send(Gone::OnlyThese(std::mem::take(&mut listing.0), listing.1))),
        watcher::Event::Apply(_) => {}
    }
}

/// Policies with a finalizer are cleaned up by reconcile before they go; the others (which
/// injected nothing) just vanish from the watch. The observer forgets them (and takes the
/// label off a lock nobody watches any more).
async fn forget_deleted_policies(mut gone: mpsc::UnboundedReceiver<Gone>, observer: ObserverHandle) {
    while let Some(event) = gone.recv().await {
        match event {
            Gone::Deleted(policy) => observer.unregister(policy).await,
            Gone::OnlyThese(existing, listed_at) => observer.retain(existing, listed_at).await,
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut receiver: mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// The policies a Deployment event concerns: those in its namespace that select it, and the
/// one whose configuration it carries (which may no longer select it).
fn policies_for_deployment(
    policies: &Store<ElectionPolicy>,
    index: &SharedPolicyIndex,
    deployment: &Deployment,
) -> Vec<ObjectRef<ElectionPolicy>> {
    let namespace = deployment.namespace().unwrap_or_default();
    let labels = deployment.labels();
    let carrier = injected_by(deployment);
    let in_namespace = index.read().in_namespace(&namespace);
    in_namespace
        .iter()
        .filter_map(|key| cached_policy(policies, key))
        .filter(|p| {
            carrier == Some(p.name_any().as_str())
                || kube::core::Selector::try_from(p.spec.selector.clone()).is_ok_and(|s| s.matches(labels))
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

async fn reconcile(policy: Arc<ElectionPolicy>, context: Arc<Context>) -> Result<Action> {
    let namespace = policy.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let span = info_span!("reconcile", namespace = %namespace, policy = %policy.name_any());
    // kube-runtime holds reconciles until the policy cache has listed; the Deployment cache
    // must have too, or a missing carrier would look like a Deployment without the
    // configuration (and a deleted policy would release its finalizer over an orphan).
    context.caches.wait().await;
    let started = std::time::Instant::now();
    let result = reconcile_policy(&policy, &context, &namespace).instrument(span).await;
    context.parts.metrics.reconciled(started.elapsed(), result.as_ref().err().map(Error::metric_label));
    result
}

/// The finalizer is held exactly while the policy may have configuration in Deployments:
/// it is added before anything is injected and removed once everything is taken out. An
/// observe-only policy (injection.mode None) holds none, so deleting it never waits for the
/// operator (the chart's own policy goes with `helm uninstall`, operator and all).
async fn reconcile_policy(policy: &ElectionPolicy, context: &Context, namespace: &str) -> Result<Action> {
    let api: Api<ElectionPolicy> = Api::namespaced(context.parts.client.clone(), namespace);
    let held = policy.finalizers().iter().any(|f| f == FINALIZER);
    if policy.metadata.deletion_timestamp.is_some() {
        if held {
            cleanup(policy, context).await?;
            set_finalizer(&api, policy, false, &context.parts.metrics).await?;
        }
        return Ok(Action::await_change());
    }
    let injects = policy.spec.injection.mode != InjectionMode::None;
    if injects && !held {
        set_finalizer(&api, policy, true, &context.parts.metrics).await?;
    }
    let action = configure(policy, context).await?;
    if !injects && held {
        // configure() has just taken the configuration out of every Deployment.
        set_finalizer(&api, policy, false, &context.parts.metrics).await?;
    }
    Ok(action)
}

/// Adds or removes [`FINALIZER`], conditional on the resourceVersion read: a concurrent
/// change makes this fail with 409 and the reconcile retry, rather than lose it.
async fn set_finalizer(
    api: &Api<ElectionPolicy>,
    policy: &ElectionPolicy,
    present: bool,
    metrics: &Metrics,
) -> Result<()> {
    let mut finalizers: Vec<String> = policy.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.into());
    }
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": policy.resource_version(), "finalizers": finalizers }
    });
    api_call(
        metrics,
        "patch_policy_finalizer",
        api.patch(&policy.name_any(), &PatchParams::default(), &Patch::Merge(&patch)),
    )
    .await?;
    Ok(())
}

fn error_policy(policy: Arc<ElectionPolicy>, error: &Error, _context: Arc<Context>) -> Action {
    warn!(namespace = ?policy.namespace(), policy = %policy.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Validates the policy, checks its claims against the other policies', brings the
/// Deployments it selects to its configuration (and takes it out of those it no longer
/// selects), and registers the outcome with the observer.
async fn configure(policy: &ElectionPolicy, context: &Context) -> Result<Action> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let regarding = regarding(policy);
    let selector_text = selector_text(policy);

    let valid = context.validate(policy);
    let selected = match &valid {
        Ok(valid) => selected_deployments(context, &namespace, valid),
        Err(_) => Vec::new(),
    };
    let outcome = match &valid {
        Err(invalid) => {
            info!(reason = %invalid, "policy is invalid");
            ConfigOutcome::Invalid(invalid.to_string())
        }
        Ok(valid) => match conflict(policy, valid, context) {
            Some(message) => ConfigOutcome::Conflict(message),
            // The observer labels the lock for the watch, if the watch has not seen it yet.
            None => inject(policy, valid, &selected, &regarding, context).await?,
        },
    };

    if spec_changed(policy) {
        retry_conflicting(context, &regarding);
    }
    let valid = valid.ok();
    context
        .parts
        .observer
        .register(Registration {
            regarding,
            report: ConfigReport {
                generation: policy.metadata.generation,
                outcome,
                lock: valid.as_ref().map(|v| v.lock.clone()),
                selector: selector_text,
            },
            // An invalid policy's lock is not watched.
            watch: valid.as_ref().map(|v| WatchSettings {
                fallback_lease_duration: v.timings.lease_duration,
                detection: v.detection,
                leader_pod_label: v.leader_pod_label,
            }),
            // The Deployments' own Pod selectors say which Pods are theirs.
            pod_selectors: selected
                .iter()
                .filter_map(|d| kube::core::Selector::try_from(d.spec.selector.clone()).ok())
                .collect(),
            deployments: selected.iter().map(|d| d.name_any()).collect(),
            current_status: context.starting_statuses.take(&PolicyKey::of(policy)),
        })
        .await;
    tracing::debug!(%name, "reconciled");
    // Everything that matters triggers a reconcile; `safety_net` covers missed watch events.
    Ok(Action::await_change())
}

/// How often the safety net reconciles each policy again.
const SAFETY_NET_PERIOD: Duration = Duration::from_secs(300);
/// The safety net's slices: one goes every `SAFETY_NET_PERIOD / SAFETY_NET_SLICES`.
const SAFETY_NET_SLICES: u64 = 30;

/// The safety net against missed watch events: every policy is reconciled again every
/// five minutes, a thirtieth of them every ten seconds. One sweep rather than a requeue per
/// policy: kube-runtime's scheduler keeps about 0.7 KiB for each scheduled policy (7 MiB at
/// 10000 policies), and policies listed together were due together, every time (at N =
/// 10000 the minute of such a round took 17.6 CPU-seconds, ten times a quiet minute's).
/// The sweep reads the cache, which is empty until it has listed.
async fn safety_net(policies: Store<ElectionPolicy>, retry: mpsc::UnboundedSender<ObjectRef<ElectionPolicy>>) {
    let mut ticks = tokio::time::interval(SAFETY_NET_PERIOD / SAFETY_NET_SLICES as u32);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for slice in (0..SAFETY_NET_SLICES).cycle() {
        ticks.tick().await;
        for policy in policies.state() {
            let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
            let name = policy.metadata.name.as_deref().unwrap_or_default();
            if safety_net_slice(namespace, name) == slice && retry.send(ObjectRef::from_obj(&*policy)).is_err() {
                return; // the controller has stopped
            }
        }
    }
}

/// The slice a policy's safety-net reconcile falls in: fixed, so each comes back every
/// period, and spread by a hash of its name. Hashed from the borrowed parts: the sweep
/// looks at every cached policy each tick.
fn safety_net_slice(namespace: &str, name: &str) -> u64 {
    crate::domain::fnv1a_namespaced(namespace, name) % SAFETY_NET_SLICES
}

/// The Deployments in `namespace` the policy selects, by name.
fn selected_deployments(context: &Context, namespace: &str, valid: &ValidPolicy) -> Vec<Arc<Deployment>> {
    let mut selected = context.deployments.state_filter(|d| {
        d.namespace().as_deref() == Some(namespace)
            && d.metadata.deletion_timestamp.is_none()
            && valid.selector.matches(d.labels())
    });
    selected.sort_by_key(|d| d.name_any());
    selected
}

async fn cleanup(policy: &ElectionPolicy, context: &Context) -> Result<Action> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let regarding = regarding(policy);
    // Releasing the finalizer is the one decision nothing corrects afterwards: an injection
    // missed here stays in the Deployment for good. So the carriers come from a fresh list,
    // not from the cache, which may not show a configuration applied moments ago.
    let api: Api<Deployment> = Api::namespaced(context.parts.client.clone(), &namespace);
    let listed = api_call(&context.parts.metrics, "list_deployments", api.list(&ListParams::default())).await?;
    let carriers = listed.items.iter().filter(|d| injected_by(d) == Some(name.as_str()));
    let (removals, rendered) = injection_plan::plan_removals(carriers, |d, c| context.already_written(d, c));
    remove(&removals, &regarding, context).await?;
    rendered?;
    context.parts.observer.unregister(PolicyKey::new(namespace, name.clone())).await;
    retry_conflicting(context, &regarding);
    info!(%name, "configuration removed; policy released");
    Ok(Action::await_change())
}

/// A LockConflict with an older policy, as a message, if there is one.
fn conflict(policy: &ElectionPolicy, valid: &ValidPolicy, context: &Context) -> Option<String> {
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let me = Claimant {
        namespace: &namespace,
        name: &name,
        created: policy.metadata.creation_timestamp.as_ref().map(|t| t.0),
        lock: &valid.lock,
        selector: &valid.selector,
        mode: valid.injection.mode,
    };
    // Only a policy naming a lock of the same name, or (when this one injects) one in the
    // same namespace, can conflict: the index names those, so a reconcile's cost does not
    // grow with every policy in the cluster. The cache may hold an older copy of one than
    // the index, so the test is made again on what the cache holds.
    let injects = valid.injection.mode != InjectionMode::None;
    let candidates = {
        let index = context.index.read();
        let mut candidates = index.naming_lock(&valid.lock.name);
        if injects {
            candidates.extend(index.in_namespace(&namespace));
            candidates.sort();
            candidates.dedup();
        }
        candidates
    };
    let others: Vec<(Arc<ElectionPolicy>, ValidPolicy)> = candidates
        .iter()
        .filter_map(|key| cached_policy(&context.policies, key))
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            *p.spec.lock.name == *valid.lock.name || (injects && p.namespace().as_deref() == Some(namespace.as_str()))
        })
        .filter_map(|p| {
            let valid = context.validate(&p).ok()?;
            Some((p, valid))
        })
        .collect();
    let names: Vec<(String, String)> =
        others.iter().map(|(p, _)| (p.namespace().unwrap_or_default(), p.name_any())).collect();
    let claimants = others.iter().zip(&names).map(|((p, v), (ns, n))| Claimant {
        namespace: ns,
        name: n,
        created: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
        lock: &v.lock,
        selector: &v.selector,
        mode: v.injection.mode,
    });
    let deployments = context.deployments.state_filter(|d| d.namespace().as_deref() == Some(namespace.as_str()));
    let labels: Vec<(String, BTreeMap<String, String>)> =
        deployments.iter().map(|d| (d.name_any(), d.labels().clone())).collect();
    find_conflict(&me, claimants, labels.iter().map(|(n, l)| (n.as_str(), l))).map(|c| c.message)
}

/// Brings every selected Deployment to the policy's configuration and takes it out of those
/// no longer selected, making the writes [`injection_plan::plan`] decides on.
async fn inject(
    policy: &ElectionPolicy,
    valid: &ValidPolicy,
    selected: &[Arc<Deployment>],
    regarding: &Regarding,
    context: &Context,
) -> Result<ConfigOutcome> {
    let name = policy.name_any();
    let carriers = carriers(context, &regarding.namespace, &name);
    let plan = injection_plan::plan(&name, valid, selected, &carriers, |d, c| context.already_written(d, c));
    remove(&plan.removals, regarding, context).await?;
    let steps = match plan.then? {
        Injection::Observe(outcome) => return Ok(outcome),
        Injection::Configure(steps) => steps,
    };
    let (mut injected, mut failures) = (Vec::new(), Vec::new());
    for step in steps {
        let write = match step {
            Step::Configured(deployment) => {
                injected.push(deployment);
                continue;
            }
            Step::Failed(message) => {
                failures.push(message);
                continue;
            }
            Step::Apply(write) => write,
        };
        let deployment = write.deployment.as_str();
        match write_deployment(&write, regarding, context).await {
            Ok(()) => {
                info!(%deployment, mode = ?valid.injection.mode, "configuration injected");
                let (mode, lock) = (valid.injection.mode, &valid.lock);
                let note = format!("updated the pod template of Deployment {deployment} ({mode:?} mode, lock {lock})");
                publish(context, regarding, Severity::Normal, event::CONFIG_INJECTED, note);
                injected.push(write.deployment);
            }
            Err(error) => match ApplyFailure::of(status_code(&error)).message(deployment, &error) {
                Some(message) => failures.push(message),
                None => return Err(error.into()),
            },
        }
    }
    Ok(injection_plan::outcome(injected, failures))
}

/// Makes the planned removals, in order.
async fn remove(removals: &[Write], regarding: &Regarding, context: &Context) -> Result<()> {
    for removal in removals {
        let deployment = removal.deployment.as_str();
        match write_deployment(removal, regarding, context).await {
            Ok(()) => {
                info!(%deployment, "configuration removed");
                let note = format!("restored the pod template of Deployment {deployment}");
                publish(context, regarding, Severity::Normal, event::CONFIG_REMOVED, note);
            }
            Err(error) if RemovalFailure::of(status_code(&error)) == RemovalFailure::AlreadyGone => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Applies `write` to a Deployment of the policy's namespace, and remembers the write, as
/// the API server answered it, until the cache shows it.
async fn write_deployment(write: &Write, regarding: &Regarding, context: &Context) -> kube::Result<()> {
    let api: Api<Deployment> = Api::namespaced(context.parts.client.clone(), &regarding.namespace);
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.force = write.force;
    let patch = Patch::Apply(&write.config);
    let written =
        api_call(&context.parts.metrics, "apply_deployment", api.patch(&write.deployment, &params, &patch)).await?;
    context.record_write(&written, &write.config);
    Ok(())
}

/// Deployments in `namespace` that carry `policy`'s configuration.
fn carriers(context: &Context, namespace: &str, policy: &str) -> Vec<Arc<Deployment>> {
    context.deployments.state_filter(|d| d.namespace().as_deref() == Some(namespace) && injected_by(d) == Some(policy))
}

/// Re-reconciles policies refused because of a conflict, since the policy that held the
/// claim may just have changed or gone.
fn retry_conflicting(context: &Context, changed: &Regarding) {
    let refused = context.index.read().refused_for_conflict();
    for key in refused {
        if *key.namespace != *changed.namespace || *key.name != *changed.name {
            let _ = context.retry.send(ObjectRef::new(&key.name).within(&key.namespace));
        }
    }
}

fn spec_changed(policy: &ElectionPolicy) -> bool {
    policy.status.as_ref().and_then(|s| s.observed_generation) != policy.metadata.generation
}

fn regarding(policy: &ElectionPolicy) -> Regarding {
    Regarding {
        namespace: policy.namespace().unwrap_or_default(),
        name: policy.name_any(),
        uid: policy.uid().unwrap_or_default(),
    }
}

fn selector_text(policy: &ElectionPolicy) -> String {
    kube::core::Selector::try_from(policy.spec.selector.clone()).map_or_else(|_| "(invalid)".into(), |s| s.to_string())
}

fn publish(context: &Context, regarding: &Regarding, severity: Severity, reason: &'static str, note: String) {
    let notice =
        Notice { severity, reason, action: "Inject", note, occurrence_id: None, observed_at: jiff::Timestamp::now() };
    context.parts.events.offer(regarding, notice);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safety_net_spreads_policies_over_its_slices() {
        let mut per_slice = [0u32; SAFETY_NET_SLICES as usize];
        for i in 0..3000 {
            per_slice[safety_net_slice("bench", &format!("app-{i}")) as usize] += 1;
        }
        // 100 a slice if even; a hash spreads them within a few tens of that.
        assert!(per_slice.iter().all(|n| (50..150).contains(n)), "{per_slice:?}");
        assert_eq!(safety_net_slice("ns", "policy"), safety_net_slice("ns", "policy"), "the same slice every period");
        assert_eq!(
            safety_net_slice("ns", "policy"),
            crate::domain::fnv1a("ns/policy") % SAFETY_NET_SLICES,
            "the slice of namespace/name"
        );
    }
}
