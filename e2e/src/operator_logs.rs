//! The logs of the operators the tests run, shown when a wait fails.

use std::{path::PathBuf, sync::Mutex};

use crate::workloads;

/// Logs of the operators the tests have running, so a failure can show what they did.
pub(crate) static RUNNING_OPERATOR_LOGS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

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
    if workloads::CHART_INSTALLED.load(std::sync::atomic::Ordering::SeqCst) {
        tails.push(format!(
            "--- last {LINES} lines of each operator Pod ---\n{}",
            workloads::operator_pod_logs(Some(LINES))
        ));
    }
    tails.join("\n")
}
