//! Summary rows as a table readable in an 80-column terminal, as JSON with the seed's column
//! names, or as CSV.

use crate::timearg::{format_minute, format_rfc3339};
#[cfg(test)]
use clicktally_proto::v1::SourceCount;
use clicktally_proto::v1::{GroupBy, SummaryResponse, SummaryRow};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Output formats of `summary` and `watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns, long URLs shortened.
    Table,
    /// JSON: an array of objects keyed by the seed's column names.
    Json,
    /// CSV with a header row.
    Csv,
}

/// The name of the key column for a grouping.
pub fn key_name(group_by: GroupBy) -> &'static str {
    match group_by {
        GroupBy::Url => "Url",
        GroupBy::Host => "Host",
        GroupBy::Domain => "Domain",
    }
}

/// One row in JSON, with the seed's column names first.
#[derive(Debug, Serialize)]
pub struct JsonRow {
    /// The URL (when grouped by URL).
    #[serde(rename = "Url", skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The host (when grouped by host).
    #[serde(rename = "Host", skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The registrable domain (when grouped by domain).
    #[serde(rename = "Domain", skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(rename = "Blocked")]
    blocked: u64,
    #[serde(rename = "Allowed")]
    allowed: u64,
    #[serde(rename = "PendingVerdict")]
    pending_verdict: u64,
    #[serde(rename = "Error")]
    error: u64,
    #[serde(rename = "ClickedThrough")]
    clicked_through: u64,
    #[serde(rename = "Total")]
    total: u64,
    #[serde(rename = "BlockedByPolicy")]
    blocked_by_policy: u64,
    #[serde(rename = "FirstSeen")]
    first_seen: String,
    #[serde(rename = "LastSeen")]
    last_seen: String,
    #[serde(rename = "Actions")]
    actions: BTreeMap<String, u64>,
    #[serde(rename = "Sources")]
    sources: BTreeMap<String, u64>,
}

impl JsonRow {
    /// The JSON form of a row.
    pub fn new(row: &SummaryRow, group_by: GroupBy) -> Self {
        let key = Some(row.key.clone());
        Self {
            url: key.clone().filter(|_| group_by == GroupBy::Url),
            host: key.clone().filter(|_| group_by == GroupBy::Host),
            domain: key.filter(|_| group_by == GroupBy::Domain),
            blocked: row.blocked,
            allowed: row.allowed,
            pending_verdict: row.pending_verdict,
            error: row.error,
            clicked_through: row.clicked_through,
            total: row.total,
            blocked_by_policy: row.blocked_by_policy,
            first_seen: format_rfc3339(row.first_seen_unix_ms),
            last_seen: format_rfc3339(row.last_seen_unix_ms),
            actions: row
                .actions
                .iter()
                .map(|a| (a.action_type.clone(), a.count))
                .collect(),
            sources: row
                .sources
                .iter()
                .map(|s| (s.source.clone(), s.count))
                .collect(),
        }
    }
}

/// Rows as a JSON array.
pub fn json(rows: &[SummaryRow], group_by: GroupBy) -> String {
    let rows: Vec<JsonRow> = rows.iter().map(|r| JsonRow::new(r, group_by)).collect();
    serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Rows as CSV with a header.
pub fn csv(rows: &[SummaryRow], group_by: GroupBy) -> String {
    let mut out = format!(
        "{},Blocked,Allowed,PendingVerdict,Error,ClickedThrough,Total,BlockedByPolicy,FirstSeen,LastSeen\n",
        key_name(group_by)
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.key),
            r.blocked,
            r.allowed,
            r.pending_verdict,
            r.error,
            r.clicked_through,
            r.total,
            r.blocked_by_policy,
            format_rfc3339(r.first_seen_unix_ms),
            format_rfc3339(r.last_seen_unix_ms)
        );
    }
    out
}

/// Shortens `s` to at most `width` characters, keeping its start and its end around an ellipsis;
/// a URL's scheme is dropped first.
pub fn shorten(s: &str, width: usize) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= width {
        return s.to_owned();
    }
    if width < 5 {
        return chars[..width].iter().collect();
    }
    let tail = (width - 1) / 3;
    let head = width - 1 - tail;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

const NUMBER_COLUMNS: [&str; 6] = ["Blocked", "Allowed", "Pending", "Error", "Through", "Total"];

/// Width of the optional per-source column.
const SOURCES_WIDTH: usize = 15;

/// Clicks per source, compactly: `de19 mi3 pr3` (first two letters of each source).
pub fn sources_cell(row: &SummaryRow) -> String {
    row.sources
        .iter()
        .map(|s| {
            format!(
                "{}{}",
                s.source.chars().take(2).collect::<String>(),
                s.count
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Rows as an aligned table `width` characters wide, with a footer naming the window;
/// `per_source` adds a column of clicks per source.
pub fn table(resp: &SummaryResponse, group_by: GroupBy, width: usize, per_source: bool) -> String {
    let numbers_width: usize = NUMBER_COLUMNS.iter().map(|h| h.len() + 1).sum();
    let extra = if per_source { SOURCES_WIDTH + 1 } else { 0 };
    let key_width = width.saturating_sub(numbers_width + extra).max(20);
    let mut out = String::new();
    let _ = write!(out, "{:<key_width$}", key_name(group_by));
    for h in NUMBER_COLUMNS {
        let _ = write!(out, " {h:>w$}", w = h.len());
    }
    if per_source {
        let _ = write!(out, " {:<SOURCES_WIDTH$}", "Sources");
    }
    out.push('\n');
    for r in &resp.rows {
        let key = shorten(&r.key, key_width);
        let pad = key_width.saturating_sub(key.chars().count());
        let _ = write!(out, "{key}{}", " ".repeat(pad));
        let values = [
            r.blocked,
            r.allowed,
            r.pending_verdict,
            r.error,
            r.clicked_through,
            r.total,
        ];
        for (h, v) in NUMBER_COLUMNS.iter().zip(values) {
            let _ = write!(out, " {v:>w$}", w = h.len());
        }
        if per_source {
            let cell = shorten(&sources_cell(r), SOURCES_WIDTH);
            let _ = write!(out, " {cell:<SOURCES_WIDTH$}");
        }
        out.push('\n');
    }
    let _ = write!(
        out,
        "{} of {} rows · {} → {} UTC",
        resp.rows.len(),
        resp.total_rows,
        format_minute(resp.since_unix_ms),
        format_minute(resp.until_unix_ms)
    );
    if resp.excluded_rows > 0 {
        let _ = write!(
            out,
            " · exclusions hid {} rows ({} clicks)",
            resp.excluded_rows, resp.excluded_clicks
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, blocked: u64, total: u64) -> SummaryRow {
        SummaryRow {
            key: key.into(),
            blocked,
            total,
            ..Default::default()
        }
    }

    #[test]
    fn long_urls_keep_their_host_and_their_end() {
        let s = shorten(
            "https://login-microsoftonline.com-secure.example/owa/auth/logon.aspx",
            30,
        );
        assert_eq!(s, "login-microsoftonlin…ogon.aspx");
        assert_eq!(s.chars().count(), 30);
        assert_eq!(shorten("http://a.example/x", 30), "a.example/x");
    }

    #[test]
    fn table_lines_fit_in_80_columns() {
        let resp = SummaryResponse {
            rows: vec![row(
                &format!("https://x.example/{}", "a".repeat(200)),
                12345,
                99999,
            )],
            total_rows: 1,
            ..Default::default()
        };
        let t = table(&resp, GroupBy::Url, 80, false);
        for line in t.lines().take(2) {
            assert_eq!(line.chars().count(), 80, "{line}");
        }
        assert!(t.lines().nth(1).unwrap().ends_with("99999"));
        let mut resp = resp;
        resp.rows[0].sources = vec![
            SourceCount {
                source: "defender".into(),
                count: 19,
            },
            SourceCount {
                source: "proofpoint".into(),
                count: 3,
            },
        ];
        let t = table(&resp, GroupBy::Url, 80, true);
        let line = t.lines().nth(1).unwrap();
        assert_eq!(line.chars().count(), 80, "{line}");
        assert!(line.ends_with("99999 de19 pr3       "), "{line}");
    }

    #[test]
    fn json_uses_the_seed_column_names_and_csv_quotes() {
        let rows = vec![row("https://a.example/x,y", 2, 3)];
        let v: serde_json::Value = serde_json::from_str(&json(&rows, GroupBy::Url)).unwrap();
        assert_eq!(v[0]["Url"], "https://a.example/x,y");
        assert_eq!(v[0]["Blocked"], 2);
        for k in [
            "Allowed",
            "PendingVerdict",
            "Error",
            "ClickedThrough",
            "Total",
        ] {
            assert!(v[0].get(k).is_some(), "{k}");
        }
        let c = csv(&rows, GroupBy::Url);
        assert_eq!(
            c.lines().nth(1).unwrap().split(',').next(),
            Some("\"https://a.example/x")
        );
    }
}
