//! Reading the operator's Prometheus metrics.

/// The value of one sample in Prometheus text, by its exact series (`name{labels}`).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}
