//! `SummaryQuery`: the seed's table over a window, computed from the in-memory counters.

use crate::actions::classify;
use crate::clock::HOUR_MS;
use crate::codec::Counts;
use crate::hosts::{domain_of, host_matches, host_of, normalise_rule};
use crate::store::CounterState;
use clicktally_proto::v1::{
    ActionCount, GroupBy, HourCount, SourceCount, SummaryRequest, SummaryResponse, SummaryRow,
    UrlDetailRequest, UrlDetailResponse,
};
use std::cmp::Ordering;
use std::collections::HashMap;
use thiserror::Error;

/// The default window: the last 7 days.
pub const DEFAULT_WINDOW_MS: i64 = 7 * 24 * HOUR_MS;

/// A request that cannot be answered as asked.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum QueryError {
    /// `since` is not before `until`.
    #[error("the window is empty: since ({since} ms) is not before until ({until} ms)")]
    EmptyWindow {
        /// Window start.
        since: i64,
        /// Window end.
        until: i64,
    },
    /// An unknown `order_by` column.
    #[error("unknown order_by column {0:?}; use one of Url, Blocked, Allowed, PendingVerdict, Error, ClickedThrough, Total, BlockedByPolicy, FirstSeen, LastSeen")]
    UnknownColumn(String),
    /// A page token this server did not issue.
    #[error("invalid page token {0:?}")]
    BadPageToken(String),
}

/// A column rows can be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// The row's key (URL, host or domain).
    Key,
    /// Seed column Blocked.
    Blocked,
    /// Seed column Allowed.
    Allowed,
    /// Seed column PendingVerdict.
    PendingVerdict,
    /// Seed column Error.
    Error,
    /// Seed column ClickedThrough.
    ClickedThrough,
    /// Every click.
    Total,
    /// ClickBlockedByTenantPolicy.
    BlockedByPolicy,
    /// First click time.
    FirstSeen,
    /// Last click time.
    LastSeen,
}

impl Column {
    /// Parses a column name as users write it (`PendingVerdict`, `pending_verdict`, `pending`).
    ///
    /// # Errors
    /// When the name is no column.
    pub fn parse(name: &str) -> Result<Self, QueryError> {
        let n: String = name
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match n.as_str() {
            "" | "total" => Self::Total,
            "url" | "key" | "host" | "domain" => Self::Key,
            "blocked" => Self::Blocked,
            "allowed" => Self::Allowed,
            "pendingverdict" | "pending" => Self::PendingVerdict,
            "error" => Self::Error,
            "clickedthrough" => Self::ClickedThrough,
            "blockedbypolicy" => Self::BlockedByPolicy,
            "firstseen" => Self::FirstSeen,
            "lastseen" => Self::LastSeen,
            _ => return Err(QueryError::UnknownColumn(name.to_owned())),
        })
    }

    fn compare(self, a: &SummaryRow, b: &SummaryRow) -> Ordering {
        match self {
            Self::Key => a.key.cmp(&b.key),
            Self::Blocked => a.blocked.cmp(&b.blocked),
            Self::Allowed => a.allowed.cmp(&b.allowed),
            Self::PendingVerdict => a.pending_verdict.cmp(&b.pending_verdict),
            Self::Error => a.error.cmp(&b.error),
            Self::ClickedThrough => a.clicked_through.cmp(&b.clicked_through),
            Self::Total => a.total.cmp(&b.total),
            Self::BlockedByPolicy => a.blocked_by_policy.cmp(&b.blocked_by_policy),
            Self::FirstSeen => a.first_seen_unix_ms.cmp(&b.first_seen_unix_ms),
            Self::LastSeen => a.last_seen_unix_ms.cmp(&b.last_seen_unix_ms),
        }
    }
}

/// The hours `[from, to)` (since the epoch) that a window `[since, until)` covers: those that
/// start inside it.
pub fn hours_of_window(since_ms: i64, until_ms: i64) -> (i64, i64) {
    let first = since_ms.div_euclid(HOUR_MS) + i64::from(since_ms.rem_euclid(HOUR_MS) != 0);
    let end = until_ms.div_euclid(HOUR_MS) + i64::from(until_ms.rem_euclid(HOUR_MS) != 0);
    (first, end.max(first))
}

/// Resolves the request's window against `now_ms`.
///
/// # Errors
/// When the window is empty.
pub fn window(req: &SummaryRequest, now_ms: i64) -> Result<(i64, i64), QueryError> {
    let until = req.until_unix_ms.unwrap_or(now_ms);
    let since = req
        .since_unix_ms
        .unwrap_or(until.saturating_sub(DEFAULT_WINDOW_MS));
    if since >= until {
        return Err(QueryError::EmptyWindow { since, until });
    }
    Ok((since, until))
}

/// Per-row accumulator.
#[derive(Default)]
struct Acc {
    actions: Vec<(String, u64)>,
    sources: Vec<(String, u64)>,
    clicked_through: u64,
    first_ms: i64,
    last_ms: i64,
    total: u64,
}

impl Acc {
    fn add(&mut self, source: &str, c: &Counts) {
        let n = c.total();
        if n == 0 {
            return;
        }
        for a in &c.actions {
            match self.actions.iter_mut().find(|(t, _)| *t == a.action_type) {
                Some((_, count)) => *count += a.count,
                None => self.actions.push((a.action_type.clone(), a.count)),
            }
        }
        match self.sources.iter_mut().find(|(s, _)| s == source) {
            Some((_, count)) => *count += n,
            None => self.sources.push((source.to_owned(), n)),
        }
        self.clicked_through += c.clicked_through;
        if self.total == 0 || c.first_ms < self.first_ms {
            self.first_ms = c.first_ms;
        }
        if self.total == 0 || c.last_ms > self.last_ms {
            self.last_ms = c.last_ms;
        }
        self.total += n;
    }

    fn into_row(mut self, key: String) -> SummaryRow {
        let mut row = SummaryRow {
            key,
            clicked_through: self.clicked_through,
            total: self.total,
            first_seen_unix_ms: self.first_ms,
            last_seen_unix_ms: self.last_ms,
            ..Default::default()
        };
        self.actions.sort();
        self.sources.sort();
        for (action_type, count) in self.actions {
            let cols = classify(&action_type);
            row.blocked += count * u64::from(cols.blocked);
            row.allowed += count * u64::from(cols.allowed);
            row.pending_verdict += count * u64::from(cols.pending_verdict);
            row.error += count * u64::from(cols.error);
            row.blocked_by_policy += count * u64::from(cols.blocked_by_policy);
            row.actions.push(ActionCount { action_type, count });
        }
        row.sources = self
            .sources
            .into_iter()
            .map(|(source, count)| SourceCount { source, count })
            .collect();
        row
    }
}

/// What a query filters and hides, resolved once per request.
#[derive(Debug, Clone)]
pub struct Filter {
    group_by: GroupBy,
    url_contains: String,
    host: Option<String>,
    sources: Vec<String>,
    exclusions: Vec<String>,
    tenant: Option<String>,
}

impl Filter {
    /// Resolves a request against the configured exclusion rules; `tenant` limits the result to
    /// one tenant's clicks.
    pub fn new(req: &SummaryRequest, configured: &[String], tenant: Option<String>) -> Self {
        let mut exclusions: Vec<String> = if req.no_exclusions {
            Vec::new()
        } else {
            configured.to_vec()
        };
        exclusions.extend(req.exclude_hosts.iter().map(|h| normalise_rule(h)));
        exclusions.retain(|r| !r.is_empty());
        Self {
            group_by: GroupBy::try_from(req.group_by).unwrap_or(GroupBy::Url),
            url_contains: req.url_contains.to_lowercase(),
            host: (!req.host.is_empty()).then(|| normalise_rule(&req.host)),
            sources: req.sources.iter().map(|s| s.to_ascii_lowercase()).collect(),
            exclusions,
            tenant,
        }
    }
}

/// Per-URL facts computed once per query: its group key and whether it is shown.
struct UrlFacts {
    key: String,
    matches: bool,
    excluded: bool,
}

/// Computes the summary rows for `[since, until)`, before ordering and paging; also returns
/// the rows and clicks that exclusions hid.
pub fn aggregate(
    state: &CounterState,
    filter: &Filter,
    since_ms: i64,
    until_ms: i64,
) -> (Vec<SummaryRow>, u64, u64) {
    let (from, to) = hours_of_window(since_ms, until_ms);
    let from = from.clamp(0, u32::MAX as i64) as u32;
    let to = to.clamp(0, u32::MAX as i64) as u32;
    let mut facts: HashMap<&str, UrlFacts> = HashMap::new();
    let mut rows: HashMap<String, Acc> = HashMap::new();
    let mut hidden: HashMap<String, u64> = HashMap::new();
    for (_, bucket) in state.buckets.range(from..to) {
        for (k, counts) in bucket {
            if filter.tenant.as_ref().is_some_and(|t| *t != k.tenant) {
                continue;
            }
            if !filter.sources.is_empty() && !filter.sources.contains(&k.source) {
                continue;
            }
            let f = facts
                .entry(k.url.as_str())
                .or_insert_with(|| url_facts(&k.url, filter));
            if !f.matches {
                continue;
            }
            if f.excluded {
                *hidden.entry(f.key.clone()).or_default() += counts.total();
                continue;
            }
            rows.entry(f.key.clone())
                .or_default()
                .add(&k.source, counts);
        }
    }
    let rows = rows.into_iter().map(|(k, acc)| acc.into_row(k)).collect();
    let hidden_clicks = hidden.values().sum();
    (rows, hidden.len() as u64, hidden_clicks)
}

fn url_facts(url: &str, filter: &Filter) -> UrlFacts {
    // Parsing the URL is the costly part: only when a host rule or grouping needs it.
    let needs_host =
        filter.host.is_some() || !filter.exclusions.is_empty() || filter.group_by != GroupBy::Url;
    let host = if needs_host { host_of(url) } else { None };
    let matches = (filter.url_contains.is_empty()
        || url.to_lowercase().contains(&filter.url_contains))
        && filter
            .host
            .as_ref()
            .is_none_or(|rule| host.as_deref().is_some_and(|h| host_matches(h, rule)));
    let excluded = host
        .as_deref()
        .is_some_and(|h| filter.exclusions.iter().any(|r| host_matches(h, r)));
    let key = match filter.group_by {
        GroupBy::Url => url.to_owned(),
        GroupBy::Host => host.unwrap_or_else(|| url.to_owned()),
        GroupBy::Domain => host
            .map(|h| domain_of(&h))
            .unwrap_or_else(|| url.to_owned()),
    };
    UrlFacts {
        key,
        matches,
        excluded,
    }
}

/// Orders rows by `order_by` (descending for counts, ascending for keys, unless told), ties
/// broken by key.
///
/// # Errors
/// When the column is unknown.
pub fn order(
    rows: &mut [SummaryRow],
    order_by: &str,
    ascending: Option<bool>,
) -> Result<(), QueryError> {
    let column = Column::parse(order_by)?;
    let ascending = ascending.unwrap_or(column == Column::Key);
    rows.sort_by(|a, b| {
        let o = column.compare(a, b);
        let o = if ascending { o } else { o.reverse() };
        o.then_with(|| a.key.cmp(&b.key))
    });
    Ok(())
}

/// Answers a Summary request against the state.
///
/// # Errors
/// When the window is empty, the column unknown or the page token invalid.
pub fn summarize(
    state: &CounterState,
    req: &SummaryRequest,
    filter: &Filter,
    now_ms: i64,
) -> Result<SummaryResponse, QueryError> {
    let (since, until) = window(req, now_ms)?;
    let offset: usize = if req.page_token.is_empty() {
        0
    } else {
        req.page_token
            .parse()
            .map_err(|_| QueryError::BadPageToken(req.page_token.clone()))?
    };
    let (mut rows, excluded_rows, excluded_clicks) = aggregate(state, filter, since, until);
    order(&mut rows, &req.order_by, req.ascending)?;
    let total_rows = rows.len() as u64;
    let limit = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit as usize
    };
    let end = offset.saturating_add(limit).min(rows.len());
    let page: Vec<SummaryRow> = rows.drain(offset.min(end)..end).collect();
    Ok(SummaryResponse {
        rows: page,
        next_page_token: if end < total_rows as usize {
            end.to_string()
        } else {
            String::new()
        },
        total_rows,
        since_unix_ms: since,
        until_unix_ms: until,
        excluded_rows,
        excluded_clicks,
    })
}

/// One URL (or host) for triage: totals, hour by hour, over `[since, until)` (default the last
/// 7 days). `tenant` limits it to one tenant's clicks.
///
/// # Errors
/// When the window is empty.
pub fn url_detail(
    state: &CounterState,
    req: &UrlDetailRequest,
    tenant: Option<&str>,
    now_ms: i64,
) -> Result<UrlDetailResponse, QueryError> {
    let window_req = SummaryRequest {
        since_unix_ms: req.since_unix_ms,
        until_unix_ms: req.until_unix_ms,
        ..Default::default()
    };
    let (since, until) = window(&window_req, now_ms)?;
    let (from, to) = hours_of_window(since, until);
    let from = from.clamp(0, u32::MAX as i64) as u32;
    let to = to.clamp(0, u32::MAX as i64) as u32;
    let rule = req.by_host.then(|| normalise_rule(&req.url));
    let mut total = Acc::default();
    let mut hours = Vec::new();
    let mut hosts: HashMap<&str, bool> = HashMap::new();
    for (hour, bucket) in state.buckets.range(from..to) {
        let mut acc = Acc::default();
        for (k, counts) in bucket {
            if tenant.is_some_and(|t| t != k.tenant) {
                continue;
            }
            let hit = match &rule {
                Some(rule) => *hosts
                    .entry(k.url.as_str())
                    .or_insert_with(|| host_of(&k.url).is_some_and(|h| host_matches(&h, rule))),
                None => k.url == req.url,
            };
            if hit {
                acc.add(&k.source, counts);
                total.add(&k.source, counts);
            }
        }
        if acc.total > 0 {
            let row = acc.into_row(String::new());
            hours.push(HourCount {
                hour_start_unix_ms: i64::from(*hour) * HOUR_MS,
                blocked: row.blocked,
                allowed: row.allowed,
                pending_verdict: row.pending_verdict,
                error: row.error,
                clicked_through: row.clicked_through,
                total: row.total,
            });
        }
    }
    Ok(UrlDetailResponse {
        total: Some(total.into_row(req.url.clone())),
        hours,
        since_unix_ms: since,
        until_unix_ms: until,
    })
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
