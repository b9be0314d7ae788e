//! The operator's HTTP endpoints: `/metrics` on the metrics address, `/healthz` and
//! `/readyz` on the health-probe address (kubebuilder's split, so that metrics can be
//! exposed without exposing probes and vice versa). With `--metrics-secure`, `/metrics` is
//! served over TLS ([`tls`]) to authorized callers only ([`access`]).

pub mod access;
pub mod tls;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tracing::{info, warn};

use self::access::{Decision, MetricsAccess};
use crate::{
    Error, Result,
    metrics::Metrics,
    supervisor::{Liveness, Supervisor},
};

/// Whether the operator is doing its job: a standby waiting for leadership is ready; a
/// leader is ready once its caches are synced.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Parses kubebuilder-style bind addresses: ":8080" means every interface, "0" disables.
pub fn parse_bind_address(text: &str) -> Result<Option<SocketAddr>> {
    let parsed = match text {
        "0" | "" => return Ok(None),
        _ if text.starts_with(':') => format!("0.0.0.0{text}").parse(),
        _ => text.parse(),
    };
    parsed.map(Some).map_err(|reason| Error::InvalidBindAddress { address: text.to_string(), reason })
}

/// How `/metrics` is served.
pub enum MetricsServing {
    /// Plain HTTP to anyone who can reach it (`--metrics-secure=false`, for local use).
    Open,
    /// HTTPS, to callers that `access` lets in.
    Secure { tls: Arc<rustls::ServerConfig>, access: MetricsAccess },
}

#[derive(Clone)]
struct MetricsState {
    metrics: Metrics,
    access: Option<MetricsAccess>,
}

pub async fn serve_metrics(
    address: SocketAddr,
    metrics: Metrics,
    serving: MetricsServing,
    supervisor: Supervisor,
) -> std::io::Result<()> {
    match serving {
        MetricsServing::Open => {
            let router =
                Router::new().route("/metrics", get(render_metrics)).with_state(MetricsState { metrics, access: None });
            serve(address, router, "metrics").await
        }
        MetricsServing::Secure { tls, access } => {
            let state = MetricsState { metrics, access: Some(access) };
            let router = Router::new().route("/metrics", get(render_metrics)).with_state(state);
            let listener = tls::TlsListener::bind(address, tls, &supervisor).await?;
            info!(address = %listener.local_addr, "serving metrics over HTTPS to authorized callers");
            axum::serve(listener, router).await
        }
    }
}

/// `/healthz` fails once a task of the operator failed (the process is stopping then, and
/// a kubelet that probes before it has exited restarts it all the same); `/readyz` follows
/// [`Readiness`].
pub async fn serve_probes(address: SocketAddr, readiness: Readiness, liveness: Liveness) -> std::io::Result<()> {
    let router = Router::new()
        .route("/healthz", get(healthy).with_state(liveness))
        .route("/readyz", get(ready).with_state(readiness));
    serve(address, router, "health probes").await
}

async fn serve(address: SocketAddr, router: Router, what: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    info!(address = %listener.local_addr()?, "serving {what}");
    axum::serve(listener, router).await
}

async fn render_metrics(State(state): State<MetricsState>, headers: HeaderMap) -> Response {
    if let Some(access) = &state.access {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
        match access.decide(authorization).await {
            Ok(Decision::Allowed) => {}
            Ok(Decision::Unauthenticated) => return (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response(),
            Ok(Decision::Forbidden) => return (StatusCode::FORBIDDEN, "Forbidden\n").into_response(),
            Ok(Decision::Throttled) => {
                let retry = [(header::RETRY_AFTER, "1")];
                return (StatusCode::TOO_MANY_REQUESTS, retry, "Too many new tokens to review\n").into_response();
            }
            Err(error) => {
                warn!(%error, "could not review a metrics caller's token");
                return (StatusCode::INTERNAL_SERVER_ERROR, "could not review the token\n").into_response();
            }
        }
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics.render()).into_response()
}

async fn healthy(State(liveness): State<Liveness>) -> Response {
    match liveness.failure() {
        None => (StatusCode::OK, "ok").into_response(),
        Some(failure) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{failure}\n")).into_response(),
    }
}

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    if readiness.get() { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addresses_follow_kubebuilder() {
        assert_eq!(parse_bind_address(":8080").unwrap(), Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(parse_bind_address("127.0.0.1:9").unwrap(), Some("127.0.0.1:9".parse().unwrap()));
        assert_eq!(parse_bind_address("0").unwrap(), None);
        let error = parse_bind_address("nonsense").unwrap_err();
        assert!(matches!(&error, Error::InvalidBindAddress { address, .. } if address == "nonsense"), "{error:?}");
        assert_eq!(error.to_string(), r#""nonsense": invalid socket address syntax"#);
        assert_eq!(parse_bind_address(":x").unwrap_err().to_string(), r#"":x": invalid socket address syntax"#);
    }
}
