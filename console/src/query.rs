//! `clicktally summary`: the filters people type, turned into a `SummaryRequest`, and the call.

use crate::render::{self, Format};
use crate::timearg::parse_time;
use clicktally_proto::client::{BearerToken, ClientTls};
use clicktally_proto::v1::click_query_client::ClickQueryClient;
use clicktally_proto::v1::{GroupBy, SummaryRequest, SummaryResponse, WatchRequest};
use thiserror::Error;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// What the console can fail at.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// A flag's value is wrong.
    #[error("{0}")]
    Usage(String),
    /// The aggregator cannot be reached.
    #[error("cannot reach the aggregator at {endpoint}: {detail}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        detail: String,
    },
    /// The aggregator answered with an error.
    #[error("the aggregator refused the query ({code:?}): {}", .0.message(), code = .0.code())]
    Status(#[from] tonic::Status),
    /// The demo failed.
    #[error("demo: {0}")]
    Demo(String),
}

/// How rows are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Grouping {
    /// By URL, as the seed does.
    Url,
    /// By host.
    Host,
    /// By registrable domain.
    Domain,
}

impl From<Grouping> for GroupBy {
    fn from(g: Grouping) -> Self {
        match g {
            Grouping::Url => GroupBy::Url,
            Grouping::Host => GroupBy::Host,
            Grouping::Domain => GroupBy::Domain,
        }
    }
}

/// The filters shared by `summary` and `watch`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// Window start: a duration ago (7d, 12h) or a time (2026-11-28, RFC 3339).
    #[arg(long, default_value = "7d")]
    pub since: String,
    /// Window end (exclusive): a duration ago or a time; default now.
    #[arg(long)]
    pub until: Option<String>,
    /// Group rows by url, host or domain.
    #[arg(long, value_enum, default_value = "url")]
    pub group_by: Grouping,
    /// Only URLs containing this text (case-insensitive).
    #[arg(long)]
    pub url_contains: Option<String>,
    /// Only URLs on this host or its subdomains.
    #[arg(long)]
    pub host: Option<String>,
    /// Only clicks from this source (repeatable): defender, proofpoint, mimecast.
    #[arg(long = "source")]
    pub sources: Vec<String>,
    /// Hide this host and its subdomains (repeatable), beside the configured exclusions.
    #[arg(long = "exclude")]
    pub exclude: Vec<String>,
    /// Ignore the aggregator's configured exclusion lists.
    #[arg(long)]
    pub no_exclusions: bool,
    /// Column to order by: Url, Blocked, Allowed, PendingVerdict, Error, ClickedThrough, Total,
    /// BlockedByPolicy, FirstSeen, LastSeen.
    #[arg(long, default_value = "Total")]
    pub order_by: String,
    /// Ascending order (default: descending for counts).
    #[arg(long)]
    pub asc: bool,
}

impl QueryArgs {
    /// The request these flags mean at `now_ms`.
    ///
    /// # Errors
    /// When a time is unreadable.
    pub fn request(&self, now_ms: i64, limit: u32) -> Result<SummaryRequest, ConsoleError> {
        let until = match &self.until {
            Some(u) => parse_time(u, now_ms).map_err(ConsoleError::Usage)?,
            None => now_ms,
        };
        let since = parse_time(&self.since, now_ms).map_err(ConsoleError::Usage)?;
        Ok(SummaryRequest {
            since_unix_ms: Some(since),
            until_unix_ms: Some(until),
            group_by: GroupBy::from(self.group_by) as i32,
            url_contains: self.url_contains.clone().unwrap_or_default(),
            host: self.host.clone().unwrap_or_default(),
            sources: self.sources.clone(),
            exclude_hosts: self.exclude.clone(),
            no_exclusions: self.no_exclusions,
            order_by: self.order_by.clone(),
            ascending: self.asc.then_some(true),
            limit,
            page_token: String::new(),
        })
    }
}

impl QueryArgs {
    /// The Watch request these flags mean: `--since` as a duration (and no `--until`) is a
    /// rolling window that keeps moving; times make a fixed window.
    ///
    /// # Errors
    /// When a time is unreadable.
    pub fn watch_request(
        &self,
        now_ms: i64,
        limit: u32,
        interval: std::time::Duration,
    ) -> Result<WatchRequest, ConsoleError> {
        let mut filter = self.request(now_ms, limit)?;
        let rolling = match (&self.until, humantime::parse_duration(self.since.trim())) {
            (None, Ok(d)) => Some(d.as_millis() as u64),
            _ => None,
        };
        if rolling.is_some() {
            filter.since_unix_ms = None;
            filter.until_unix_ms = None;
        }
        Ok(WatchRequest {
            filter: Some(filter),
            interval_ms: interval.as_millis().clamp(1, u32::MAX as u128) as u32,
            rolling_window_ms: rolling,
        })
    }
}

/// Where and how to reach the aggregator.
#[derive(Debug, Clone)]
pub struct Conn {
    /// `http://host:port`, or `https://` with TLS.
    pub endpoint: String,
    /// TLS settings, when the aggregator serves TLS.
    pub tls: Option<ClientTls>,
    /// The bearer token, if the aggregator requires one.
    pub token: BearerToken,
}

impl Conn {
    /// A plaintext connection without a token (loopback, the demo, tests).
    pub fn plain(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            tls: None,
            token: BearerToken::default(),
        }
    }
}

/// A query client that presents the connection's token.
pub type QueryClient = ClickQueryClient<InterceptedService<Channel, BearerToken>>;

/// Connects a query client.
///
/// # Errors
/// When the endpoint is malformed or unreachable.
pub async fn connect(conn: &Conn) -> Result<QueryClient, ConsoleError> {
    let err = |detail: String| ConsoleError::Connect {
        endpoint: conn.endpoint.clone(),
        detail,
    };
    let channel = clicktally_proto::client::endpoint(&conn.endpoint, conn.tls.as_ref())
        .map_err(err)?
        .connect_timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| err(error_chain(&e)))?;
    Ok(
        ClickQueryClient::with_interceptor(channel, conn.token.clone())
            .max_decoding_message_size(256 * 1024 * 1024),
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Runs one Summary and renders it.
///
/// # Errors
/// When the aggregator is unreachable or refuses the request.
pub async fn summary(
    conn: &Conn,
    req: SummaryRequest,
    format: Format,
    width: usize,
    per_source: bool,
) -> Result<String, ConsoleError> {
    let group_by = GroupBy::try_from(req.group_by).unwrap_or(GroupBy::Url);
    let mut client = connect(conn).await?;
    let resp: SummaryResponse = client.summary(req).await?.into_inner();
    Ok(match format {
        Format::Table => render::table(&resp, group_by, width, per_source),
        Format::Json => render::json(&resp.rows, group_by) + "\n",
        Format::Csv => render::csv(&resp.rows, group_by),
    })
}
