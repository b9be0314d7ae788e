//! What bringing a policy's Deployments to its configuration takes, decided without I/O.
//!
//! The controller reads the policy, the Deployments it selects and those that carry its
//! configuration from its caches; [`plan`] turns them into the writes to make, in order, and
//! the controller makes them. What the API server answers to a write is classified by
//! [`ApplyFailure::of`] and [`RemovalFailure::of`], and [`outcome`] sums up the result.
//!
//! Whether a configuration "was already written" (a write the cache does not show yet) is
//! asked of a closure, in the order and in the cases the controller always asked it, since
//! asking may settle what it remembers.

use std::{borrow::Borrow, fmt::Display};

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use serde_json::Value;

use crate::{
    api::InjectionMode,
    domain::{
        injection::{InjectionError, apply_config, is_applied, removal_config},
        status::ConfigOutcome,
        validation::ValidPolicy,
    },
};

/// One server-side apply of a Deployment of the policy's namespace, under the operator's
/// field manager.
#[derive(Clone, Debug, PartialEq)]
pub struct Write {
    pub deployment: String,
    pub config: Value,
    /// Whether the apply takes fields over from other field managers.
    pub force: bool,
}

/// What becomes of one selected Deployment.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Apply the configuration; injected once the write is made.
    Apply(Write),
    /// It carries the configuration already, or it was already written: injected, with no
    /// write.
    Configured(String),
    /// The configuration cannot be rendered for it: why.
    Failed(String),
}

/// What follows the removals.
#[derive(Clone, Debug, PartialEq)]
pub enum Injection {
    /// injection.mode is None: nothing is injected, and this is the outcome.
    Observe(ConfigOutcome),
    /// The selected Deployments, in their order.
    Configure(Vec<Step>),
}

/// The writes that bring a policy's Deployments to its configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectionPlan {
    /// The carriers to take the configuration out of, in order, before anything else.
    pub removals: Vec<Write>,
    /// What to do next. An error is a carrier whose removal cannot be rendered: once the
    /// removals before it are made, the reconcile fails with it, and nothing else is decided.
    pub then: Result<Injection, InjectionError>,
}

/// The plan for the policy `policy_name`: its configuration is taken out of the `carriers`
/// (the Deployments that carry it) it no longer wants, and brought to each `selected`
/// Deployment that lacks it. `already_written` says whether a configuration was already
/// written to a Deployment in a write the caller's copy does not show yet.
pub fn plan(
    policy_name: &str,
    policy: &ValidPolicy,
    selected: &[impl Borrow<Deployment>],
    carriers: &[impl Borrow<Deployment>],
    mut already_written: impl FnMut(&Deployment, &Value) -> bool,
) -> InjectionPlan {
    let observing = policy.injection.mode == InjectionMode::None;
    let names: Vec<String> = selected.iter().map(|d| d.borrow().name_any()).collect();
    let unwanted = carriers.iter().map(Borrow::borrow).filter(|c| observing || !names.contains(&c.name_any()));
    let (removals, rendered) = plan_removals(unwanted, &mut already_written);
    let then = rendered.map(|()| {
        if observing {
            return Injection::Observe(ConfigOutcome::Observing(names));
        }
        let steps = selected.iter().map(|d| step(policy_name, policy, d.borrow(), &mut already_written));
        Injection::Configure(steps.collect())
    });
    InjectionPlan { removals, then }
}

/// The writes that take the configuration out of `carriers`, in order, leaving out those
/// already written. They stop at the first carrier whose removal cannot be rendered; the
/// error comes second.
pub fn plan_removals<'a>(
    carriers: impl IntoIterator<Item = &'a Deployment>,
    mut already_written: impl FnMut(&Deployment, &Value) -> bool,
) -> (Vec<Write>, Result<(), InjectionError>) {
    let mut removals = Vec::new();
    for carrier in carriers {
        let config = match removal_config(carrier) {
            Ok(config) => config,
            Err(error) => return (removals, Err(error)),
        };
        if !already_written(carrier, &config) {
            removals.push(Write { deployment: carrier.name_any(), force: forced(&config), config });
        }
    }
    (removals, Ok(()))
}

fn step(
    policy_name: &str,
    policy: &ValidPolicy,
    deployment: &Deployment,
    already_written: &mut impl FnMut(&Deployment, &Value) -> bool,
) -> Step {
    match apply_config(deployment, policy_name, policy) {
        Err(error) => Step::Failed(error.to_string()),
        Ok(config) if is_applied(deployment, &config) || already_written(deployment, &config) => {
            Step::Configured(deployment.name_any())
        }
        Ok(config) => Step::Apply(Write { deployment: deployment.name_any(), force: forced(&config), config }),
    }
}

/// Whether applying `config` takes fields over. args is an atomic list: taking it over from
/// whoever wrote it last is the only way to append to it (or, in a removal, to take the
/// appended flags back out). Environment variables merge per name and are never forced, so
/// a user's own variable of the same name is reported as a conflict instead of overwritten.
fn forced(config: &Value) -> bool {
    config["spec"]["template"]["spec"]["containers"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c.get("args").is_some()))
}

/// Why an apply of the configuration failed, by the API server's status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyFailure {
    /// 409: another field manager owns a field the configuration sets (an unforced
    /// environment variable). Reported in the outcome.
    FieldConflict,
    /// 400, 403, 422: the API server refused the write. Reported in the outcome.
    Rejected,
    /// Anything else may pass: the reconcile fails with it, and is retried.
    Retry,
}

impl ApplyFailure {
    pub fn of(status: Option<u16>) -> Self {
        match status {
            Some(409) => ApplyFailure::FieldConflict,
            Some(400 | 403 | 422) => ApplyFailure::Rejected,
            _ => ApplyFailure::Retry,
        }
    }

    /// What the outcome says about `deployment`; None for a failure that is retried instead.
    pub fn message(self, deployment: &str, error: &impl Display) -> Option<String> {
        match self {
            ApplyFailure::FieldConflict => Some(format!(
                "Deployment {deployment}: another field manager owns a field the configuration sets: {error}"
            )),
            ApplyFailure::Rejected => Some(format!("Deployment {deployment}: {error}")),
            ApplyFailure::Retry => None,
        }
    }
}

/// Why a removal failed, by the API server's status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemovalFailure {
    /// 404: the Deployment is gone, and its configuration with it: nothing left to do.
    AlreadyGone,
    /// The reconcile fails with it, and is retried.
    Retry,
}

impl RemovalFailure {
    pub fn of(status: Option<u16>) -> Self {
        match status {
            Some(404) => RemovalFailure::AlreadyGone,
            _ => RemovalFailure::Retry,
        }
    }
}

/// The outcome of configuring the selected Deployments: those `injected`, and why the
/// others could not be.
pub fn outcome(injected: Vec<String>, failures: Vec<String>) -> ConfigOutcome {
    if failures.is_empty() {
        ConfigOutcome::Injected(injected)
    } else {
        ConfigOutcome::Failed { message: failures.join("; "), injected }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::domain::injection::{
        INJECTED_ARGS_ANNOTATION,
        tests::{named, policy, server_side_apply},
    };

    const NONE: &[Deployment] = &[];

    fn deployment(name: &str) -> Deployment {
        named(name, json!([{"name": "app", "image": "x"}]))
    }

    /// `name`, as it is once `pol`'s configuration in `mode` has been applied to it.
    fn carrier(name: &str, mode: InjectionMode) -> Deployment {
        let d = deployment(name);
        server_side_apply(&d, None, &apply_config(&d, "pol", &policy(mode, None)).unwrap())
    }

    fn nothing_written(_: &Deployment, _: &Value) -> bool {
        false
    }

    fn apply(name: &str, mode: InjectionMode, force: bool) -> Step {
        let config = apply_config(&deployment(name), "pol", &policy(mode, None)).unwrap();
        Step::Apply(Write { deployment: name.into(), config, force })
    }

    /// The apply configuration of `name` that sets these annotations and containers (none:
    /// only names the Deployment).
    fn configuration(name: &str, annotations: Option<Value>, containers: Option<Value>) -> Value {
        let mut config = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": "apps"},
        });
        if let Some(annotations) = annotations {
            config["metadata"]["annotations"] = annotations;
        }
        if let Some(containers) = containers {
            config["spec"] = json!({"template": {"spec": {"containers": containers}}});
        }
        config
    }

    /// The removal of an Env mode configuration: apply nothing, so that what was applied goes.
    fn env_removal(name: &str) -> Write {
        Write { deployment: name.into(), config: configuration(name, None, None), force: false }
    }

    /// The removal of an Args mode configuration from a container that had no args of its own.
    fn args_removal(name: &str) -> Write {
        let containers = json!([{"name": "app", "args": []}]);
        Write { deployment: name.into(), config: configuration(name, None, Some(containers)), force: true }
    }

    /// A plan that applies `config` to `web`, and does nothing else.
    fn only_apply_to_web(config: Value, force: bool) -> InjectionPlan {
        let write = Write { deployment: "web".into(), config, force };
        InjectionPlan { removals: vec![], then: Ok(Injection::Configure(vec![Step::Apply(write)])) }
    }

    #[test]
    fn env_mode_applies_the_variables_to_a_deployment_without_them_unforced() {
        let planned = plan("pol", &policy(InjectionMode::Env, None), &[deployment("web")], NONE, nothing_written);
        let plain = |name: &str, value: &str| json!({"name": name, "value": value});
        let annotations = json!({
            "election.dev/policy": "pol",
            "election.dev/injection": "f0b8e87e8e2bb5ea",
        });
        let containers = json!([{
            "name": "app",
            "env": [
                plain("LEADER_ELECTION_LOCK_TYPE", "leases"),
                plain("LEADER_ELECTION_LOCK_NAME", "demo-lock"),
                plain("LEADER_ELECTION_LOCK_NAMESPACE", "apps"),
                plain("LEADER_ELECTION_LEASE_DURATION", "15s"),
                plain("LEADER_ELECTION_RENEW_DEADLINE", "10s"),
                plain("LEADER_ELECTION_RETRY_PERIOD", "2s"),
                {
                    "name": "LEADER_ELECTION_IDENTITY",
                    "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
                },
            ],
        }]);
        let config = configuration("web", Some(annotations), Some(containers));
        assert_eq!(planned, only_apply_to_web(config, false));
    }

    #[test]
    fn args_mode_appends_the_flags_and_forces_the_apply() {
        let web = named("web", json!([{"name": "app", "image": "x", "args": ["serve"]}]));
        let planned = plan("pol", &policy(InjectionMode::Args, None), &[web], NONE, nothing_written);
        let flags = [
            "--leader-elect=true",
            "--leader-elect-resource-lock=leases",
            "--leader-elect-resource-name=demo-lock",
            "--leader-elect-resource-namespace=apps",
            "--leader-elect-lease-duration=15s",
            "--leader-elect-renew-deadline=10s",
            "--leader-elect-retry-period=2s",
        ];
        let recorded = serde_json::to_string(&BTreeMap::from([("app", flags)])).unwrap();
        let mut args = vec!["serve"];
        args.extend(flags);
        let annotations = json!({
            "election.dev/policy": "pol",
            "election.dev/injection": "0183dfaa82a83428",
            "election.dev/injected-args": recorded,
        });
        let containers = json!([{"name": "app", "args": args}]);
        let config = configuration("web", Some(annotations), Some(containers));
        assert_eq!(planned, only_apply_to_web(config, true));
    }

    #[test]
    fn a_carrier_no_longer_selected_has_the_configuration_removed() {
        let carriers = [carrier("old", InjectionMode::Env), carrier("kept", InjectionMode::Env)];
        let selected = [carriers[1].clone(), deployment("new")];
        let planned = plan("pol", &policy(InjectionMode::Env, None), &selected, &carriers, nothing_written);
        assert_eq!(
            planned,
            InjectionPlan {
                removals: vec![env_removal("old")],
                then: Ok(Injection::Configure(vec![
                    Step::Configured("kept".into()),
                    apply("new", InjectionMode::Env, false),
                ])),
            }
        );
    }

    #[test]
    fn removing_appended_flags_forces_the_write_that_takes_them_out() {
        let carriers = [carrier("old", InjectionMode::Args)];
        let planned = plan("pol", &policy(InjectionMode::Args, None), NONE, &carriers, nothing_written);
        assert_eq!(
            planned,
            InjectionPlan { removals: vec![args_removal("old")], then: Ok(Injection::Configure(vec![])) }
        );
    }

    #[test]
    fn observe_only_removes_every_carrier_and_reports_the_selected() {
        let carriers = [carrier("a", InjectionMode::Env), carrier("b", InjectionMode::Env)];
        let selected = [carriers[0].clone(), deployment("c")];
        let planned = plan("pol", &policy(InjectionMode::None, None), &selected, &carriers, nothing_written);
        assert_eq!(
            planned,
            InjectionPlan {
                removals: vec![env_removal("a"), env_removal("b")],
                then: Ok(Injection::Observe(ConfigOutcome::Observing(vec!["a".into(), "c".into()]))),
            }
        );
    }

    #[test]
    fn a_configuration_applied_or_already_written_is_injected_without_a_write() {
        let selected = [carrier("applied", InjectionMode::Env), deployment("written"), deployment("fresh")];
        let mut asked = Vec::new();
        let planned = plan("pol", &policy(InjectionMode::Env, None), &selected, NONE, |d: &Deployment, _: &Value| {
            asked.push(d.name_any());
            d.name_any() == "written"
        });
        assert_eq!(
            planned,
            InjectionPlan {
                removals: vec![],
                then: Ok(Injection::Configure(vec![
                    Step::Configured("applied".into()),
                    Step::Configured("written".into()),
                    apply("fresh", InjectionMode::Env, false),
                ])),
            }
        );
        assert_eq!(asked, ["written", "fresh"], "a Deployment that shows the configuration needs no asking");
    }

    #[test]
    fn a_removal_already_written_is_not_made_again() {
        let carriers = [carrier("a", InjectionMode::Env), carrier("b", InjectionMode::Env)];
        let planned = plan("pol", &policy(InjectionMode::None, None), NONE, &carriers, |d: &Deployment, _: &Value| {
            d.name_any() == "a"
        });
        assert_eq!(
            planned,
            InjectionPlan {
                removals: vec![env_removal("b")],
                then: Ok(Injection::Observe(ConfigOutcome::Observing(vec![]))),
            }
        );
    }

    #[test]
    fn a_configuration_that_cannot_be_rendered_is_a_failure_and_the_rest_go_on() {
        let selected = [deployment("a"), named("b", json!([]))];
        let planned = plan("pol", &policy(InjectionMode::Env, None), &selected, NONE, nothing_written);
        assert_eq!(
            planned,
            InjectionPlan {
                removals: vec![],
                then: Ok(Injection::Configure(vec![
                    apply("a", InjectionMode::Env, false),
                    Step::Failed("Deployment b has no containers".into()),
                ])),
            }
        );
        let missing =
            plan("pol", &policy(InjectionMode::Env, Some(vec!["manager"])), &selected[..1], NONE, nothing_written);
        assert_eq!(
            missing.then,
            Ok(Injection::Configure(vec![Step::Failed(
                r#"Deployment a has no container named ["manager"] (it has ["app"])"#.into()
            )]))
        );
    }

    #[test]
    fn a_carrier_whose_removal_cannot_be_rendered_stops_the_plan_there() {
        let mut corrupt = carrier("corrupt", InjectionMode::Args);
        corrupt.metadata.annotations.as_mut().unwrap().insert(INJECTED_ARGS_ANNOTATION.into(), "{".into());
        let carriers = [carrier("a", InjectionMode::Env), corrupt, carrier("c", InjectionMode::Env)];
        let mut asked = Vec::new();
        let planned = plan(
            "pol",
            &policy(InjectionMode::Env, None),
            &[deployment("d")],
            &carriers,
            |d: &Deployment, _: &Value| {
                asked.push(d.name_any());
                false
            },
        );
        assert_eq!(
            planned,
            InjectionPlan {
                removals: vec![env_removal("a")],
                then: Err(InjectionError::CorruptRecord {
                    deployment: "corrupt".into(),
                    reason: "EOF while parsing an object at line 1 column 1".into(),
                }),
            }
        );
        assert_eq!(asked, ["a"], "nothing after the corrupt carrier is looked at");
    }

    #[test]
    fn removals_alone_take_every_carrier_given() {
        let carriers = [carrier("a", InjectionMode::Args), carrier("b", InjectionMode::Env)];
        let (removals, rendered) = plan_removals(&carriers, nothing_written);
        assert_eq!(removals, [args_removal("a"), env_removal("b")]);
        assert_eq!(rendered, Ok(()));
    }

    #[test]
    fn apply_failures_are_reported_or_retried_by_status_code() {
        let classified = [Some(409), Some(400), Some(403), Some(422), Some(500), Some(404), None].map(ApplyFailure::of);
        use ApplyFailure::{FieldConflict, Rejected, Retry};
        assert_eq!(classified, [FieldConflict, Rejected, Rejected, Rejected, Retry, Retry, Retry]);
        assert_eq!(
            FieldConflict.message("web", &"conflict with kubectl"),
            Some(
                "Deployment web: another field manager owns a field the configuration sets: conflict with kubectl"
                    .into()
            )
        );
        assert_eq!(Rejected.message("web", &"forbidden"), Some("Deployment web: forbidden".into()));
        assert_eq!(Retry.message("web", &"timed out"), None);
    }

    #[test]
    fn a_removal_from_a_deployment_gone_needs_nothing_more() {
        let classified = [Some(404), Some(409), Some(500), None].map(RemovalFailure::of);
        use RemovalFailure::{AlreadyGone, Retry};
        assert_eq!(classified, [AlreadyGone, Retry, Retry, Retry]);
    }

    #[test]
    fn the_outcome_lists_the_injected_and_joins_the_failures() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(outcome(names(&["a", "b"]), vec![]), ConfigOutcome::Injected(names(&["a", "b"])));
        assert_eq!(outcome(vec![], vec![]), ConfigOutcome::Injected(vec![]));
        assert_eq!(
            outcome(names(&["a"]), names(&["Deployment b: x", "Deployment c: y"])),
            ConfigOutcome::Failed { message: "Deployment b: x; Deployment c: y".into(), injected: names(&["a"]) }
        );
    }
}
