//! Click times as vendors write them, to milliseconds since the Unix epoch (UTC).

use chrono::{DateTime, NaiveDateTime, Utc};

/// Earliest click time accepted: 2000-01-01T00:00:00Z.
pub const MIN_TIME_MS: i64 = 946_684_800_000;
/// How far in the future a click time may be (clock skew between vendor and us).
pub const MAX_FUTURE_MS: i64 = 24 * 3_600_000;

/// Parses RFC 3339 (`2024-05-01T10:00:00.1234567Z`), ISO 8601 with a compact offset
/// (`2021-10-16T14:45:34+0000`, Mimecast), and zone-less `2024-05-01 10:00:00` (read as UTC).
///
/// # Errors
/// A message naming the value when it is none of these.
pub fn parse_time_ms(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.timestamp_millis());
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t.trim_end_matches('Z'), fmt) {
            return Ok(dt.and_utc().timestamp_millis());
        }
    }
    Err(format!("unreadable time {s:?}"))
}

/// Checks that a click time is plausible: not before 2000 and not more than a day ahead of `now_ms`.
///
/// # Errors
/// A message naming the time when it is out of range.
pub fn check_range(time_ms: i64, now_ms: i64) -> Result<i64, String> {
    if time_ms < MIN_TIME_MS || time_ms > now_ms + MAX_FUTURE_MS {
        let shown = DateTime::<Utc>::from_timestamp_millis(time_ms)
            .map(|d| d.to_rfc3339())
            .unwrap_or_else(|| format!("{time_ms} ms"));
        return Err(format!(
            "time {shown} is out of range (before 2000 or more than a day ahead)"
        ));
    }
    Ok(time_ms)
}

/// The current time in ms since the epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_time_spellings() {
        let base = 1_714_557_600_000; // 2024-05-01T10:00:00Z
        assert_eq!(parse_time_ms("2024-05-01T10:00:00Z"), Ok(base));
        assert_eq!(
            parse_time_ms("2024-05-01T10:00:00.1234567Z"),
            Ok(base + 123)
        );
        assert_eq!(parse_time_ms("2024-05-01T12:00:00+02:00"), Ok(base));
        assert_eq!(parse_time_ms("2024-05-01T10:00:00+0000"), Ok(base));
        assert_eq!(parse_time_ms("2024-05-01 10:00:00"), Ok(base));
        assert_eq!(parse_time_ms("2024-05-01T10:00:00.500"), Ok(base + 500));
        assert!(parse_time_ms("yesterday")
            .unwrap_err()
            .contains("yesterday"));
    }

    #[test]
    fn implausible_times_are_refused() {
        let now = 1_714_557_600_000;
        assert_eq!(check_range(now, now), Ok(now));
        assert!(check_range(0, now).is_err());
        assert!(check_range(now + 2 * MAX_FUTURE_MS, now).is_err());
    }
}
