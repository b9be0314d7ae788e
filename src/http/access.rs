//! Who may read `/metrics` with `--metrics-secure`: a caller whose bearer token passes a
//! TokenReview and who may `get` the non-resource URL `/metrics` (a SubjectAccessReview),
//! the decision controller-runtime's `WithAuthenticationAndAuthorization` filter makes.
//! Users grant it with the chart's `metrics-reader` ClusterRole. Decisions are kept for a
//! minute (that filter keeps token reviews a minute, allowed decisions five and denied ones
//! thirty seconds), so a Prometheus scraping every few seconds costs two API requests a
//! minute per token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};

use crate::{k8s::api_call, metrics::Metrics};

/// The URL and verb a caller must be allowed, as RBAC's `nonResourceURLs` names them.
const PATH: &str = "/metrics";
const VERB: &str = "get";
/// How long a decision is kept.
const DECISION_TTL: Duration = Duration::from_secs(60);
/// Decisions kept at most; beyond that the oldest are dropped (the callers of a metrics
/// endpoint are a few Prometheus replicas).
const MAX_DECISIONS: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No bearer token, or one the API server does not accept: 401.
    Unauthenticated,
    /// A valid token whose user may not `get` `/metrics`: 403.
    Forbidden,
    Allowed,
}

/// Decides, through the API server, who may read the metrics.
#[derive(Clone)]
pub struct MetricsAccess {
    client: Client,
    metrics: Metrics,
    decisions: Arc<Mutex<HashMap<String, (Instant, Decision)>>>,
}

impl MetricsAccess {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        MetricsAccess { client, metrics, decisions: Arc::default() }
    }

    /// The decision for a request with this `Authorization` header.
    pub async fn decide(&self, authorization: Option<&str>) -> kube::Result<Decision> {
        let Some(token) = authorization.and_then(bearer_token) else {
            return Ok(Decision::Unauthenticated);
        };
        if let Some(decision) = self.remembered(token) {
            return Ok(decision);
        }
        let decision = self.review(token).await?;
        let mut decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        decisions.retain(|_, (at, _)| now.duration_since(*at) < DECISION_TTL);
        let oldest = decisions.iter().min_by_key(|(_, (at, _))| *at).map(|(token, _)| token.clone());
        if let Some(oldest) = oldest.filter(|_| decisions.len() >= MAX_DECISIONS) {
            decisions.remove(&oldest);
        }
        decisions.insert(token.to_string(), (now, decision));
        Ok(decision)
    }

    fn remembered(&self, token: &str) -> Option<Decision> {
        let decisions = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        decisions.get(token).filter(|(at, _)| at.elapsed() < DECISION_TTL).map(|(_, decision)| *decision)
    }

    async fn review(&self, token: &str) -> kube::Result<Decision> {
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_string(), audiences: None },
            ..TokenReview::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let reviewed = api_call(&self.metrics, "token_review", reviews.create(&PostParams::default(), &review)).await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Decision::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(PATH.to_string()),
                    verb: Some(VERB.to_string()),
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let reviewed =
            api_call(&self.metrics, "subject_access_review", reviews.create(&PostParams::default(), &access)).await?;
        let allowed = reviewed.status.is_some_and(|status| status.allowed);
        Ok(if allowed { Decision::Allowed } else { Decision::Forbidden })
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive,
/// RFC 7235); `None` for any other header.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_as_rfc_7235_writes_them() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token(""), None);
    }
}
