//! What the lab's benchmarks share: this process's memory, percentiles and
//! medians.

/// Peak and current resident memory of this process, in bytes (Linux;
/// zeros elsewhere).
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Current resident memory, in MiB.
pub fn rss_mib() -> f64 {
    rss().1 as f64 / (1024.0 * 1024.0)
}

/// Peak resident memory, in bytes (None where the system does not say).
pub fn peak_rss_bytes() -> Option<u64> {
    Some(rss().0).filter(|&b| b > 0)
}

/// Resets the peak resident memory to the current one (Linux).
pub fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The `q` quantile of `sorted` (nearest rank); NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The median of `v` (the upper one of an even count); NaN when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}
