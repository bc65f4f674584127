//! `SummaryQuery`: the seed's table over a window, computed from the in-memory counters.

use crate::clock::HOUR_MS;
use crate::hosts::{domain_of, host_matches, host_of, normalise_rule};
use crate::store::CounterState;
use crate::table::{IdHasher, IdMap, KeyParts, Table};
use crate::totals::Nums;
use clicktally_proto::v1::{
    ActionCount, GroupBy, HourCount, SourceCount, SummaryRequest, SummaryResponse, SummaryRow,
    UrlDetailRequest, UrlDetailResponse,
};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasherDefault;
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

    /// The value rows are ordered by, as an unsigned number that sorts the same way (all zero
    /// for the key column, which orders by name).
    fn value(self, n: &Nums) -> u64 {
        let time = |t: i64| (t as u64) ^ (1 << 63);
        match self {
            Self::Key => 0,
            Self::Blocked => n.blocked,
            Self::Allowed => n.allowed,
            Self::PendingVerdict => n.pending_verdict,
            Self::Error => n.error,
            Self::ClickedThrough => n.clicked_through,
            Self::Total => n.total,
            Self::BlockedByPolicy => n.blocked_by_policy,
            Self::FirstSeen => time(n.first_ms),
            Self::LastSeen => time(n.last_ms),
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

/// [`hours_of_window`] as the stored hour numbers (u32), clamped.
pub fn stored_hours(since_ms: i64, until_ms: i64) -> (u32, u32) {
    let (from, to) = hours_of_window(since_ms, until_ms);
    let clamp = |h: i64| h.clamp(0, u32::MAX as i64) as u32;
    (clamp(from), clamp(to))
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

/// What a query decided about one URL: not asked for, hidden by an exclusion, or shown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Unknown,
    Skip,
    Excluded,
    Shown,
}

/// Decides a URL's verdict and, when grouping by host or domain, its group key.
fn url_facts(url: &str, filter: &Filter) -> (Verdict, Option<String>) {
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
    let verdict = match (matches, excluded) {
        (false, _) => Verdict::Skip,
        (true, true) => Verdict::Excluded,
        (true, false) => Verdict::Shown,
    };
    let group = match filter.group_by {
        GroupBy::Url => None,
        GroupBy::Host => Some(host.unwrap_or_else(|| url.to_owned())),
        GroupBy::Domain => Some(
            host.map(|h| domain_of(&h))
                .unwrap_or_else(|| url.to_owned()),
        ),
    };
    (verdict, group)
}

/// Counter keys' figures over a window: the pre-aggregated totals, or a sum over its hours.
enum PerKey<'a> {
    Dense(&'a [Nums]),
    Sparse(IdMap<Nums>),
}

impl PerKey<'_> {
    fn for_each(&self, mut f: impl FnMut(u32, &Nums)) {
        match self {
            Self::Dense(v) => v
                .iter()
                .enumerate()
                .filter(|(_, n)| n.total > 0)
                .for_each(|(k, n)| f(k as u32, n)),
            Self::Sparse(m) => m.iter().for_each(|(k, n)| f(*k, n)),
        }
    }
}

/// The rows of a Summary before they are ordered. A row of one counter key (most URLs: one
/// source, one tenant) is named by its key id and its figures stay where they are; rows of
/// several keys (a URL reported by two sources, a host) are merged here.
struct Rows {
    /// Rows of several keys: (name, keys, figures).
    multi: Vec<(RowName, Vec<u32>, Nums)>,
    /// Candidates for ordering: (order value, row); a row is a key id, or (high bit set) an
    /// index into `multi`.
    cands: Vec<Cand>,
}

enum RowName {
    Url(u32),
    Owned(String),
}

/// A candidate row while ordering: its order value and where it lives (high bit: `multi`).
type Cand = (u64, u32);
const MULTI: u32 = 1 << 31;

/// Computes every row of the hours `[from, to)` with its order value, before ordering and
/// paging; also returns the rows and clicks that exclusions hid.
fn collect_rows(
    state: &CounterState,
    filter: &Filter,
    (from, to): (u32, u32),
    value: impl Fn(&Nums) -> u64,
) -> (Rows, u64, u64) {
    let nothing = || Rows {
        multi: Vec::new(),
        cands: Vec::new(),
    };
    let tenant = match &filter.tenant {
        Some(t) => match state.tenants.find(t.as_str()) {
            Some(id) => Some(id),
            None => return (nothing(), 0, 0),
        },
        None => None,
    };
    let sources: Option<Vec<u32>> = (!filter.sources.is_empty()).then(|| {
        filter
            .sources
            .iter()
            .filter_map(|s| state.sources.find(s.as_str()))
            .collect()
    });
    let wanted = |parts: &KeyParts| {
        tenant.is_none_or(|t| t == parts[0])
            && sources.as_ref().is_none_or(|s| s.contains(&parts[1]))
    };
    let per_key = if state.window.answers(&state.buckets, from, to) {
        PerKey::Dense(&state.window.totals)
    } else {
        let mut m: IdMap<Nums> = IdMap::default();
        for (hour, bucket) in state.buckets.range(from..to.max(from)) {
            for (k, t) in bucket {
                if state.keys.get(*k).is_some_and(wanted) {
                    m.entry(*k)
                        .or_default()
                        .merge(&Nums::of(t, *hour, &state.action_cols));
                }
            }
        }
        PerKey::Sparse(m)
    };
    let mut verdicts = vec![Verdict::Unknown; state.urls.id_bound()];
    let mut cands: Vec<Cand> = Vec::new();
    let mut merged: IdMap<(Vec<u32>, Nums)> = IdMap::default();
    let mut groups: HashMap<String, (Vec<u32>, Nums)> = HashMap::new();
    let mut hidden_urls: HashSet<u32, BuildHasherDefault<IdHasher>> = HashSet::default();
    let mut hidden_groups: HashSet<String> = HashSet::new();
    let mut hidden_clicks = 0;
    let simple = filter.group_by == GroupBy::Url
        && filter.url_contains.is_empty()
        && filter.host.is_none()
        && filter.exclusions.is_empty();
    per_key.for_each(|k, n| {
        let Some(parts) = state.keys.get(k) else {
            return;
        };
        if !wanted(parts) {
            return;
        }
        let u = parts[2];
        let mut group = None;
        if simple {
            verdicts[u as usize] = Verdict::Shown;
        } else if verdicts[u as usize] == Verdict::Unknown || filter.group_by != GroupBy::Url {
            let (v, g) = url_facts(state.urls.get(u).map_or("", |s| s), filter);
            verdicts[u as usize] = v;
            group = g;
        }
        match verdicts[u as usize] {
            Verdict::Skip | Verdict::Unknown => {}
            Verdict::Excluded => {
                hidden_clicks += n.total;
                match group {
                    Some(g) => hidden_groups.insert(g),
                    None => hidden_urls.insert(u),
                };
            }
            Verdict::Shown => match group {
                Some(g) => {
                    let e = groups.entry(g).or_default();
                    e.0.push(k);
                    e.1.merge(n);
                }
                None if state.urls.refs(u) <= 1 => cands.push((value(n), k)),
                None => {
                    let e = merged.entry(u).or_default();
                    e.0.push(k);
                    e.1.merge(n);
                }
            },
        }
    });
    let mut multi: Vec<(RowName, Vec<u32>, Nums)> = merged
        .into_iter()
        .map(|(u, (keys, n))| (RowName::Url(u), keys, n))
        .collect();
    multi.extend(
        groups
            .into_iter()
            .map(|(g, (keys, n))| (RowName::Owned(g), keys, n)),
    );
    cands.extend(
        multi
            .iter()
            .enumerate()
            .map(|(i, (_, _, n))| (value(n), i as u32 | MULTI)),
    );
    let hidden_rows = (hidden_urls.len() + hidden_groups.len()) as u64;
    (Rows { multi, cands }, hidden_rows, hidden_clicks)
}

impl Rows {
    fn name<'a>(&'a self, state: &'a CounterState, c: u32) -> &'a str {
        let url = |u: u32| state.urls.get(u).map_or("", |s| &**s);
        if c & MULTI == 0 {
            url(state.keys.get(c).map_or(u32::MAX, |p| p[2]))
        } else {
            match &self.multi[(c & !MULTI) as usize].0 {
                RowName::Url(u) => url(*u),
                RowName::Owned(s) => s,
            }
        }
    }

    fn keys(&self, c: u32) -> Vec<u32> {
        if c & MULTI == 0 {
            vec![c]
        } else {
            self.multi[(c & !MULTI) as usize].1.clone()
        }
    }
}

/// Builds the full row of `keys` over the hours `[from, to)`: figures, actions and sources.
fn build_row(state: &CounterState, key: String, keys: &[u32], from: u32, to: u32) -> SummaryRow {
    let mut nums = Nums::default();
    let mut actions: Vec<(u32, u64)> = Vec::new();
    let mut sources: Vec<(u32, u64)> = Vec::new();
    for (hour, bucket) in state.buckets.range(from..to.max(from)) {
        for k in keys {
            let Some(t) = bucket.get(k) else { continue };
            nums.merge(&Nums::of(t, *hour, &state.action_cols));
            for &(a, n) in &t.actions {
                bump(&mut actions, u32::from(a), u64::from(n));
            }
            if let Some(parts) = state.keys.get(*k) {
                bump(&mut sources, parts[1], t.total());
            }
        }
    }
    let named = |t: &Table<Box<str>>, v: Vec<(u32, u64)>| {
        let mut v: Vec<(String, u64)> = v
            .into_iter()
            .map(|(id, n)| (t.get(id).map_or_else(String::new, |s| s.to_string()), n))
            .collect();
        v.sort();
        v
    };
    SummaryRow {
        key,
        blocked: nums.blocked,
        allowed: nums.allowed,
        pending_verdict: nums.pending_verdict,
        error: nums.error,
        clicked_through: nums.clicked_through,
        total: nums.total,
        blocked_by_policy: nums.blocked_by_policy,
        first_seen_unix_ms: nums.first_ms,
        last_seen_unix_ms: nums.last_ms,
        actions: named(&state.actions, actions)
            .into_iter()
            .map(|(action_type, count)| ActionCount { action_type, count })
            .collect(),
        sources: named(&state.sources, sources)
            .into_iter()
            .map(|(source, count)| SourceCount { source, count })
            .collect(),
    }
}

fn bump(v: &mut Vec<(u32, u64)>, id: u32, n: u64) {
    match v.iter_mut().find(|(i, _)| *i == id) {
        Some((_, c)) => *c += n,
        None => v.push((id, n)),
    }
}

/// Answers a Summary request against the state: only the rows of the requested page are built
/// in full; the others are ordered by one number each.
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
    let column = Column::parse(&req.order_by)?;
    let ascending = req.ascending.unwrap_or(column == Column::Key);
    let offset: usize = if req.page_token.is_empty() {
        0
    } else {
        req.page_token
            .parse()
            .map_err(|_| QueryError::BadPageToken(req.page_token.clone()))?
    };
    let value = |n: &Nums| {
        let v = column.value(n);
        if ascending {
            v
        } else {
            !v
        }
    };
    let hours = stored_hours(since, until);
    let (mut rows, excluded_rows, excluded_clicks) = collect_rows(state, filter, hours, value);
    let mut cands = std::mem::take(&mut rows.cands);
    let names_descending = column == Column::Key && !ascending;
    let cmp = |a: &Cand, b: &Cand| {
        a.0.cmp(&b.0).then_with(|| {
            let o = rows.name(state, a.1).cmp(rows.name(state, b.1));
            if names_descending {
                o.reverse()
            } else {
                o
            }
        })
    };
    let total_rows = cands.len();
    let limit = if req.limit == 0 {
        usize::MAX
    } else {
        req.limit as usize
    };
    let end = offset.saturating_add(limit).min(total_rows);
    if end > 0 && end < cands.len() {
        cands.select_nth_unstable_by(end - 1, cmp);
        cands.truncate(end);
    }
    cands.sort_unstable_by(cmp);
    let (from, to) = hours;
    let page: Vec<SummaryRow> = cands[offset.min(end)..end]
        .iter()
        .map(|(_, c)| {
            build_row(
                state,
                rows.name(state, *c).to_owned(),
                &rows.keys(*c),
                from,
                to,
            )
        })
        .collect();
    Ok(SummaryResponse {
        rows: page,
        next_page_token: if end < total_rows {
            end.to_string()
        } else {
            String::new()
        },
        total_rows: total_rows as u64,
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
    let (from, to) = stored_hours(since, until);
    let tenant = tenant.map(|t| state.tenants.find(t).unwrap_or(u32::MAX));
    let keys: Vec<u32> = if req.by_host {
        let rule = normalise_rule(&req.url);
        let mut hosts: IdMap<bool> = IdMap::default();
        state
            .keys
            .iter()
            .filter(|(_, p)| tenant.is_none_or(|t| t == p[0]))
            .filter(|(_, p)| {
                *hosts.entry(p[2]).or_insert_with(|| {
                    state
                        .urls
                        .get(p[2])
                        .and_then(|u| host_of(u))
                        .is_some_and(|h| host_matches(&h, &rule))
                })
            })
            .map(|(k, _)| k)
            .collect()
    } else {
        match state.urls.find(req.url.as_str()) {
            Some(u) => state
                .keys
                .iter()
                .filter(|(_, p)| p[2] == u && tenant.is_none_or(|t| t == p[0]))
                .map(|(k, _)| k)
                .collect(),
            None => Vec::new(),
        }
    };
    let mut hours = Vec::new();
    for (hour, bucket) in state.buckets.range(from..to.max(from)) {
        let mut n = Nums::default();
        for k in &keys {
            if let Some(t) = bucket.get(k) {
                n.merge(&Nums::of(t, *hour, &state.action_cols));
            }
        }
        if n.total > 0 {
            hours.push(HourCount {
                hour_start_unix_ms: i64::from(*hour) * HOUR_MS,
                blocked: n.blocked,
                allowed: n.allowed,
                pending_verdict: n.pending_verdict,
                error: n.error,
                clicked_through: n.clicked_through,
                total: n.total,
            });
        }
    }
    Ok(UrlDetailResponse {
        total: Some(build_row(state, req.url.clone(), &keys, from, to)),
        hours,
        since_unix_ms: since,
        until_unix_ms: until,
    })
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
