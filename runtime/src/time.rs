//! Wall-clock time for records people read (when a checkpoint was
//! triggered, a module pushed, a job deployed). Durations and deadlines
//! inside a running job use `exec::Clock`, which tests can drive. This
//! module sits below every other layer.

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
