//! The logs of the operators the tests run, shown when a wait fails.

use std::{path::PathBuf, sync::Mutex};

/// Logs of the operators the tests have running, so a failure can show what they did.
pub(crate) static RUNNING_OPERATOR_LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// While a chart release runs: how to fetch its Pods' logs (the last `tail` lines of each).
/// Set by `workloads`, which knows the release, so that this module need not know it.
pub(crate) static CHART_POD_LOGS: Mutex<Option<PodLogs>> = Mutex::new(None);

/// Fetches the last lines (all with `None`) of each Pod of a release.
pub(crate) type PodLogs = fn(Option<usize>) -> String;

/// The last lines of each running operator's log.
pub fn operator_log_tails() -> String {
    const LINES: usize = 40;
    let logs = RUNNING_OPERATOR_LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut tails: Vec<String> = logs
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LINES)..].join("\n");
            format!("--- last {LINES} lines of {} ---\n{tail}", path.display())
        })
        .collect();
    if let Some(pod_logs) = *CHART_POD_LOGS.lock().unwrap_or_else(|e| e.into_inner()) {
        tails.push(format!("--- last {LINES} lines of each operator Pod ---\n{}", pod_logs(Some(LINES))));
    }
    tails.join("\n")
}
