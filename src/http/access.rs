//! Who may read `/metrics` with `--metrics-secure`: a caller whose bearer token passes a
//! TokenReview and who may `get` the non-resource URL `/metrics` (a SubjectAccessReview),
//! the decision controller-runtime's `WithAuthenticationAndAuthorization` filter makes.
//! Users grant it with the chart's `metrics-reader` ClusterRole.
//!
//! Every review is two requests the API server serves on the operator's own identity, whose
//! share of API Priority and Fairness also carries its watches and its Lease renewals. So
//! anyone who can reach the port must not be able to spend it:
//! - decisions for tokens the API server authenticated are kept (a minute, as that filter
//!   keeps token reviews), by the token's SHA-256, never the token itself, and at most
//!   [`MAX_KNOWN_TOKENS`] of them; unauthenticated tokens are not kept, so random tokens
//!   cannot push Prometheus's decision out;
//! - tokens not known are reviewed at most [`NEW_TOKEN_REVIEWS_PER_SECOND`] a second (a
//!   burst of [`NEW_TOKEN_REVIEW_BURST`]), [`NEW_TOKEN_REVIEWS_IN_FLIGHT`] at a time; the
//!   rest get 429 unreviewed;
//! - a known token whose decision has expired is reviewed again outside that budget, so a
//!   flood of new tokens never locks Prometheus out.
//!
//! A Prometheus scraping every few seconds costs two API requests a minute per token.

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
use tokio::sync::Semaphore;

use crate::{k8s::api_call, metrics::Metrics};

/// The URL and verb a caller must be allowed, as RBAC's `nonResourceURLs` names them.
const PATH: &str = "/metrics";
const VERB: &str = "get";
/// How long a decision is used before the token is reviewed again.
const DECISION_TTL: Duration = Duration::from_secs(60);
/// How long a token stays known after its decision expired, so that its next review is not
/// counted as a new token's: a Prometheus scraping at least every ten minutes stays known.
const KNOWN_FOR: Duration = Duration::from_secs(600);
/// Authenticated tokens remembered at most (the callers of a metrics endpoint are a few
/// Prometheus replicas and the odd curl); the one seen longest ago makes room.
pub const MAX_KNOWN_TOKENS: usize = 64;
/// Reviews of tokens not known, a second and at once.
pub const NEW_TOKEN_REVIEWS_PER_SECOND: f64 = 5.0;
pub const NEW_TOKEN_REVIEW_BURST: f64 = 10.0;
pub const NEW_TOKEN_REVIEWS_IN_FLIGHT: usize = 2;
/// Reviews of known tokens at once.
const KNOWN_TOKEN_REVIEWS_IN_FLIGHT: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No bearer token, or one the API server does not accept: 401.
    Unauthenticated,
    /// A valid token whose user may not `get` `/metrics`: 403.
    Forbidden,
    Allowed,
    /// A token not known, beyond the budget for reviewing new tokens: 429, unreviewed.
    Throttled,
}

type TokenHash = [u8; 32];

/// An authenticated token's decision, and when it was made.
#[derive(Clone, Copy, Debug)]
struct Known {
    decided: Instant,
    decision: Decision,
}

/// What is kept between requests; pure bookkeeping, time passed in.
#[derive(Debug)]
struct Memory {
    known: HashMap<TokenHash, Known>,
    /// Token bucket for reviews of tokens not known.
    tokens: f64,
    refilled: Instant,
}

/// What to do with a request's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Decided(Decision),
    /// Review it, on the budget of known tokens (`true`) or of new ones.
    Review {
        known: bool,
    },
}

impl Memory {
    fn new(now: Instant) -> Self {
        Memory { known: HashMap::new(), tokens: NEW_TOKEN_REVIEW_BURST, refilled: now }
    }

    fn next(&mut self, token: &TokenHash, now: Instant) -> Next {
        if let Some(known) = self.known.get(token) {
            let age = now.saturating_duration_since(known.decided);
            if age < DECISION_TTL {
                return Next::Decided(known.decision);
            }
            if age < KNOWN_FOR {
                return Next::Review { known: true };
            }
        }
        let earned = now.saturating_duration_since(self.refilled).as_secs_f64() * NEW_TOKEN_REVIEWS_PER_SECOND;
        self.tokens = (self.tokens + earned).min(NEW_TOKEN_REVIEW_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Next::Decided(Decision::Throttled);
        }
        self.tokens -= 1.0;
        Next::Review { known: false }
    }

    /// Keeps what the API server decided for an authenticated token.
    fn remember(&mut self, token: TokenHash, decision: Decision, now: Instant) {
        if decision == Decision::Unauthenticated {
            // Not an identity the cluster knows: nothing worth a place.
            self.known.remove(&token);
            return;
        }
        if !self.known.contains_key(&token) && self.known.len() >= MAX_KNOWN_TOKENS {
            self.known.retain(|_, known| now.saturating_duration_since(known.decided) < KNOWN_FOR);
            if self.known.len() >= MAX_KNOWN_TOKENS {
                let oldest = self.known.iter().min_by_key(|(_, known)| known.decided).map(|(token, _)| *token);
                oldest.map(|token| self.known.remove(&token));
            }
        }
        self.known.insert(token, Known { decided: now, decision });
    }
}

/// Decides, through the API server, who may read the metrics.
#[derive(Clone)]
pub struct MetricsAccess {
    client: Client,
    metrics: Metrics,
    memory: Arc<Mutex<Memory>>,
    new_reviews: Arc<Semaphore>,
    known_reviews: Arc<Semaphore>,
}

impl MetricsAccess {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        MetricsAccess {
            client,
            metrics,
            memory: Arc::new(Mutex::new(Memory::new(Instant::now()))),
            new_reviews: Arc::new(Semaphore::new(NEW_TOKEN_REVIEWS_IN_FLIGHT)),
            known_reviews: Arc::new(Semaphore::new(KNOWN_TOKEN_REVIEWS_IN_FLIGHT)),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The decision for a request with this `Authorization` header.
    pub async fn decide(&self, authorization: Option<&str>) -> kube::Result<Decision> {
        let Some(token) = authorization.and_then(bearer_token) else {
            return Ok(Decision::Unauthenticated);
        };
        let hash = token_hash(token);
        let known = match self.memory().next(&hash, Instant::now()) {
            Next::Decided(Decision::Throttled) => {
                self.metrics.metrics_access_reviewed("throttled");
                return Ok(Decision::Throttled);
            }
            Next::Decided(decision) => return Ok(decision),
            Next::Review { known } => known,
        };
        // New tokens never wait for a review slot: beyond the slots they are turned away.
        let _permit = if known {
            self.known_reviews.clone().acquire_owned().await.ok()
        } else {
            match self.new_reviews.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    self.metrics.metrics_access_reviewed("throttled");
                    return Ok(Decision::Throttled);
                }
            }
        };
        let decision = match self.review(token).await {
            Ok(decision) => decision,
            Err(error) => {
                self.metrics.metrics_access_reviewed("error");
                return Err(error);
            }
        };
        self.metrics.metrics_access_reviewed(match decision {
            Decision::Allowed => "allowed",
            Decision::Forbidden => "forbidden",
            Decision::Unauthenticated | Decision::Throttled => "unauthenticated",
        });
        self.memory().remember(hash, decision, Instant::now());
        Ok(decision)
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

/// The SHA-256 of a token: what is kept of it.
fn token_hash(token: &str) -> TokenHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hash = [0u8; 32];
    hash.copy_from_slice(digest.as_ref());
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_tokens_are_reviewed_within_the_budget_and_never_push_out_a_known_one() {
        let t0 = Instant::now();
        let mut memory = Memory::new(t0);
        let prometheus = token_hash("prometheus");
        assert_eq!(memory.next(&prometheus, t0), Next::Review { known: false });
        memory.remember(prometheus, Decision::Allowed, t0);
        // A flood of random tokens over 30 s: one a millisecond.
        let mut reviewed = 0;
        for i in 0..30_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            let random = token_hash(&format!("random-{i}"));
            match memory.next(&random, now) {
                Next::Review { known: false } => {
                    reviewed += 1;
                    memory.remember(random, Decision::Unauthenticated, now);
                }
                Next::Decided(Decision::Throttled) => {}
                other => panic!("{other:?}"),
            }
            if i % 5_000 == 0 {
                // Prometheus scrapes meanwhile: cached, or reviewed again on its own budget.
                let next = memory.next(&prometheus, now);
                assert!(matches!(next, Next::Decided(Decision::Allowed) | Next::Review { known: true }), "{next:?}");
                if next == (Next::Review { known: true }) {
                    memory.remember(prometheus, Decision::Allowed, now);
                }
            }
        }
        // The burst, then the rate, over 30 s.
        let bound = NEW_TOKEN_REVIEW_BURST + 30.0 * NEW_TOKEN_REVIEWS_PER_SECOND;
        assert!(f64::from(reviewed) <= bound, "{reviewed} reviews, more than {bound}");
        assert!(f64::from(reviewed) >= bound - 2.0, "{reviewed}: the budget was not used");
        assert!(memory.known.len() == 1, "unauthenticated tokens are not kept");
    }

    #[test]
    fn known_tokens_are_bounded() {
        let t0 = Instant::now();
        let mut memory = Memory::new(t0);
        for i in 0..1000 {
            memory.remember(token_hash(&format!("user-{i}")), Decision::Forbidden, t0 + Duration::from_millis(i));
        }
        assert_eq!(memory.known.len(), MAX_KNOWN_TOKENS);
        assert!(memory.known.contains_key(&token_hash("user-999")), "the newest stays");
    }

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
