//! Kubernetes I/O: watches, patches, status writes and Events. The decisions are made in
//! [`crate::domain`]; this layer feeds it what the cluster says and carries out what it
//! decides.

pub mod cache_sync;
pub mod controller;
pub mod events;
pub mod inbox;
pub mod leader_election;
pub mod locks;
pub mod observer;
pub mod pods;
pub mod scoped_watch;
pub mod status_writer;

use std::{future::Future, time::Duration};

use kube::runtime::utils::Backoff;

use crate::metrics::Metrics;

/// No single API call may hang the operator: a request that has not answered in this time
/// is abandoned and retried by its caller.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one API call with [`API_CALL_TIMEOUT`], counting it (and its failure) in metrics.
pub async fn api_call<T>(
    metrics: &Metrics,
    operation: &'static str,
    call: impl Future<Output = kube::Result<T>>,
) -> kube::Result<T> {
    let result = match tokio::time::timeout(API_CALL_TIMEOUT, call).await {
        Ok(result) => result,
        Err(elapsed) => Err(kube::Error::Service(Box::new(elapsed))),
    };
    metrics.api_request(operation, result.is_ok());
    result
}

/// The HTTP status of a failed call, when the API server answered.
pub fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Back-off for watches that broke: quick at first and capped at 2 s, so that the operator
/// is watching again within seconds of the API server's return rather than after the
/// default's 30 s cap. The watches are few and cheap, so the extra retries cost little.
#[derive(Clone, Debug)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        WatchBackoff { next: Self::FIRST }
    }
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let current = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(current)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_backoff_is_capped_and_resets() {
        let mut backoff = WatchBackoff::new();
        let delays: Vec<_> = backoff.by_ref().take(7).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[6], Duration::from_secs(2));
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(100)));
    }
}
