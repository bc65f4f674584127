//! Mimecast API 2.0 URL Protect poller: OAuth2 client credentials (`POST {base}/oauth/token`,
//! the token cached and refreshed before it expires, or at once on a 401), then
//! `POST {base}/api/ttp/url/get-logs` over `from`/`to` windows, following
//! `meta.pagination.next` page tokens. The checkpoint (window and page token) moves with every
//! page, so a restart resumes at the page it stopped on.

use super::{fetched, pause, retry, send, Backoff, Fetched};
use crate::error::CollectorError;
use crate::record::FieldLimits;
use crate::secret::Secret;
use crate::sink::{Committed, Parsed, Sink};
use crate::sources::{mimecast, SourceKind};
use crate::time::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// The poller kind, in messages.
const KIND: &str = "mimecast-api";

/// How one Mimecast poller runs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Names the poller's checkpoint and log lines.
    pub name: String,
    /// `https://api.services.mimecast.com`.
    pub base_url: String,
    /// OAuth2 client id.
    pub client_id: Secret,
    /// OAuth2 client secret.
    pub client_secret: Secret,
    /// Time between polls once caught up.
    pub interval: Duration,
    /// Longest window per request.
    pub window: Duration,
    /// How far behind now windows end (logs settle).
    pub lag: Duration,
    /// Where the first poll starts, back from now.
    pub start_from: Duration,
    /// Rows per page.
    pub page_size: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
}

impl ApiConfig {
    /// Defaults for an API at `base_url` with these credentials.
    pub fn new(name: &str, base_url: &str, client_id: Secret, client_secret: Secret) -> Self {
        Self {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            client_id,
            client_secret,
            interval: Duration::from_secs(60),
            window: Duration::from_secs(3600),
            lag: Duration::from_secs(60),
            start_from: Duration::from_secs(3600),
            page_size: 100,
            timeout: Duration::from_secs(60),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// The poller's cursor, stored as JSON in the spool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cursor {
    /// Window start, ms.
    from: i64,
    /// Window end, ms, once a window is open.
    to: Option<i64>,
    /// Next page of the open window.
    page: Option<String>,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A cached bearer token.
struct Bearer {
    value: Secret,
    refresh_at: Instant,
}

fn mimecast_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S+0000").to_string())
        .unwrap_or_default()
}

async fn token(
    client: &reqwest::Client,
    config: &ApiConfig,
    sink: &Sink,
) -> Result<Bearer, Fetched> {
    let req = client
        .post(format!("{}/oauth/token", config.base_url))
        .form(&[
            ("client_id", config.client_id.expose()),
            ("client_secret", config.client_secret.expose()),
            ("grant_type", "client_credentials"),
        ]);
    let Some(resp) = send(sink, req).await else {
        return Err(Fetched::Retry(None, "shutting down".into()));
    };
    match fetched(resp).await {
        Fetched::Body(body) => {
            let t: Token = serde_json::from_slice(&body)
                .map_err(|e| Fetched::Retry(None, format!("unreadable token response: {e}")))?;
            let life = Duration::from_secs(t.expires_in.unwrap_or(1800));
            // Refresh a minute early, or a tenth of the lifetime for short-lived tokens.
            let margin = (life / 10).min(Duration::from_secs(60));
            Ok(Bearer {
                value: Secret::new(t.access_token),
                refresh_at: Instant::now() + life - margin,
            })
        }
        Fetched::Empty => Err(Fetched::Retry(None, "empty token response".into())),
        other => Err(other),
    }
}

/// Polls until shutdown, or (`once`) until the windows reach the present.
///
/// # Errors
/// When the spool fails, or (`once`) the API refuses the credentials.
pub async fn run(
    config: ApiConfig,
    sink: Sink,
    once: bool,
    max_url_bytes: usize,
) -> Result<(), CollectorError> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| CollectorError::Input(format!("mimecast-api {}: {e}", config.name)))?;
    let input = format!("poller:mimecast-api:{}", config.name);
    let mut cursor = match sink.checkpoint(&input)? {
        Some(cp) => serde_json::from_slice(&cp)
            .map_err(|e| CollectorError::Input(format!("{input}: corrupt checkpoint: {e}")))?,
        None => Cursor {
            from: now_ms() - config.start_from.as_millis() as i64,
            to: None,
            page: None,
        },
    };
    let mut bearer: Option<Bearer> = None;
    let mut backoff = Backoff::new(Duration::from_secs(1), config.backoff_max);
    info!(poller = %config.name, from = %mimecast_time(cursor.from), "mimecast-api polling");
    loop {
        let now = now_ms();
        let to = match cursor.to {
            Some(to) => to,
            None => {
                let to = (cursor.from + config.window.as_millis() as i64)
                    .min(now - config.lag.as_millis() as i64);
                if to - cursor.from < 1_000 {
                    if once || !pause(&sink, config.interval).await {
                        return Ok(());
                    }
                    continue;
                }
                to
            }
        };
        if bearer
            .as_ref()
            .is_none_or(|b| Instant::now() >= b.refresh_at)
        {
            match token(&client, &config, &sink).await {
                Ok(b) => bearer = Some(b),
                Err(failure) => {
                    if !retry(KIND, &config.name, &sink, &mut backoff, failure, once).await? {
                        return Ok(());
                    }
                    continue;
                }
            }
        }
        let auth = bearer
            .as_ref()
            .map(|b| b.value.expose().to_owned())
            .unwrap_or_default();
        let mut pagination = json!({ "pageSize": config.page_size });
        if let Some(page) = &cursor.page {
            pagination["pageToken"] = json!(page);
        }
        let body = json!({
            "meta": { "pagination": pagination },
            "data": [{ "from": mimecast_time(cursor.from), "to": mimecast_time(to), "route": "all", "scanResult": "all" }]
        });
        let req = client
            .post(format!("{}/api/ttp/url/get-logs", config.base_url))
            .bearer_auth(&auth)
            .json(&body);
        let Some(resp) = send(&sink, req).await else {
            return Ok(());
        };
        let limits = FieldLimits {
            max_url_bytes,
            now_ms: now,
        };
        let mut parsed = Parsed::default();
        let next_page = match fetched(resp).await {
            Fetched::Body(body) => {
                parsed.add_chunk(SourceKind::Mimecast, &body, &input, 0, &limits);
                if parsed.events.is_empty()
                    && parsed.records > 0
                    && parsed.dead.len() as u64 == parsed.records
                {
                    // Only failures (`fail`, an unreadable body): retry rather than skip the window.
                    let why = parsed.dead[0].reason.clone();
                    if !retry(
                        KIND,
                        &config.name,
                        &sink,
                        &mut backoff,
                        Fetched::Retry(None, why),
                        once,
                    )
                    .await?
                    {
                        return Ok(());
                    }
                    continue;
                }
                mimecast::next_page_token(&body)
            }
            Fetched::Empty => None,
            Fetched::Refused(why) if bearer.is_some() => {
                // The token may have been revoked or expired early: get a new one once.
                bearer = None;
                warn!(poller = %config.name, cause = %why, "mimecast-api token refused; getting a new one");
                if !pause(&sink, backoff.next(None)).await {
                    return Ok(());
                }
                continue;
            }
            failure => {
                if !retry(KIND, &config.name, &sink, &mut backoff, failure, once).await? {
                    return Ok(());
                }
                continue;
            }
        };
        backoff.reset();
        cursor = match next_page {
            Some(page) => Cursor {
                from: cursor.from,
                to: Some(to),
                page: Some(page),
            },
            None => Cursor {
                from: to,
                to: None,
                page: None,
            },
        };
        let cp = serde_json::to_vec(&cursor).expect("a cursor serialises");
        if sink.commit(parsed, Some((&input, &cp))).await? == Committed::Stopped {
            return Ok(());
        }
    }
}
