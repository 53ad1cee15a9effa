//! Wall-clock time, read in this one place. Everything that waits or measures uses
//! tokio's clock instead (so tests can pause it); only timestamps shown to people
//! and clients (`created`, `expires_at`, the date line) come from here.

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    now().as_second()
}

/// The current instant.
#[expect(clippy::disallowed_methods, reason = "the one place that reads the wall clock")]
pub fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// The current instant, for APIs that speak `SystemTime` (HTTP dates).
pub fn system_now() -> std::time::SystemTime {
    now().into()
}

/// The current time in the system's time zone.
#[expect(clippy::disallowed_methods, reason = "the one place that reads the wall clock")]
pub fn local_now() -> jiff::Zoned {
    jiff::Zoned::now()
}
