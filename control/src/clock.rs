//! Wall-clock times as the cluster records them: milliseconds since the
//! epoch, shown as RFC 3339 (Docker's `CreatedAt`, log timestamps).

/// Milliseconds since the epoch (record timestamps).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-12-05T07:31:21.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}
