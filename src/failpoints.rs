//! Fault injection for the e2e suite, as etcd's gofail does it: named points in the code
//! that, when the environment asks for it, fail on purpose, so that a test can prove what
//! happens when they fail for real (a supervised task dying, say).
//!
//! Compiled into debug builds only (the e2e suite runs target/debug for its local
//! operators); a release build, which the image holds, has none. Set
//! `ELECTION_OPERATOR_FAILPOINTS=point=subject[,point=subject...]`.

/// Panics when `point` is armed for `subject` (debug builds only).
#[inline]
pub fn panic_if_armed(point: &str, subject: &dyn std::fmt::Display) {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static ARMED: OnceLock<Vec<(String, String)>> = OnceLock::new();
        let armed = ARMED.get_or_init(|| {
            std::env::var("ELECTION_OPERATOR_FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .filter_map(|entry| entry.split_once('='))
                .map(|(point, subject)| (point.trim().to_string(), subject.trim().to_string()))
                .collect()
        });
        if armed.is_empty() {
            return;
        }
        let subject = subject.to_string();
        if armed.iter().any(|(p, s)| p == point && *s == subject) {
            panic!("failpoint {point} armed for {subject}");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (point, subject);
}
