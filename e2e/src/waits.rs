//! Waiting on a condition with a deadline, the only way the tests wait.

use std::time::{Duration, Instant};

use crate::operator_logs::operator_log_tails;

/// Polls `check` every 100 ms until it returns `Some`, or panics naming `what` once
/// `timeout` has passed.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(what, timeout, check, |value| value.is_some(), |_| "nothing matching".to_string())
        .await
        .expect("accepted values are Some")
}

/// Polls `observe` every 100 ms until `accept` takes what it saw, and returns that; or
/// panics once `timeout` has passed, with what was awaited, the last observation (as
/// `describe` tells it) and the tail of every running operator's log.
///
/// A wait that used more than a quarter of its deadline says so on stdout: the runs' logs
/// are where deadlines get sized from.
pub async fn wait_until<V, F, Fut>(
    what: &str,
    timeout: Duration,
    mut observe: F,
    accept: impl Fn(&V) -> bool,
    describe: impl Fn(&V) -> String,
) -> V
where
    F: FnMut() -> Fut,
    Fut: Future<Output = V>,
{
    let started = Instant::now();
    loop {
        let value = observe().await;
        if accept(&value) {
            let waited = started.elapsed();
            if waited > timeout / 4 {
                println!("slow wait: {:.1}s of {:?} for {what}", waited.as_secs_f64(), timeout);
            }
            return value;
        }
        if started.elapsed() >= timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}\nlast observed: {}\n{}",
                describe(&value),
                operator_log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
