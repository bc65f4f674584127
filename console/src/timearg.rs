//! Times and durations as people write them on the command line: `7d`, `15m`, `500ms`,
//! `2026-11-28`, `2026-11-28T10:00:00Z`, `now`.

use chrono::{DateTime, NaiveDate, Utc};
use std::time::Duration;

/// Parses a duration (`500ms`, `1s`, `15m`, `7d`).
///
/// # Errors
/// A message naming the value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration (like 500ms, 15m, 7d): {e}"))
}

/// Parses a point in time relative to `now_ms`: a duration means that long ago; otherwise an
/// RFC 3339 time, a date (midnight UTC), or `now`.
///
/// # Errors
/// A message naming the value.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(now_ms);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis());
    }
    match humantime::parse_duration(t) {
        Ok(d) => Ok(now_ms - d.as_millis() as i64),
        Err(_) => Err(format!(
            "{s:?} is neither a duration (7d, 12h) nor a time (2026-11-28, 2026-11-28T10:00:00Z, now)"
        )),
    }
}

/// Formats ms since the epoch as `2026-11-28 10:00` UTC.
pub fn format_minute(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// Formats ms since the epoch as RFC 3339 (seconds).
pub fn format_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_people_write_them() {
        let now = 1_795_824_000_000; // 2026-11-28T00:00:00Z
        assert_eq!(parse_time("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_time("90m", now), Ok(now - 5_400_000));
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("2026-11-28", now), Ok(now));
        assert_eq!(parse_time("2026-11-28T01:00:00Z", now), Ok(now + 3_600_000));
        assert!(parse_time("last week", now)
            .unwrap_err()
            .contains("neither a duration"));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(format_minute(now), "2026-11-28 00:00");
    }
}
