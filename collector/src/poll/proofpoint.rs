//! Proofpoint TAP SIEM API poller: `GET {base}/v2/siem/{endpoint}?format=json&interval=START/END`
//! with HTTP Basic auth (service principal and secret), windows of at most one hour that
//! overlap the previous one by a margin (events appear by the later of click time and threat
//! time, so a late one turns up in a later window), HTTP 204 as empty, and the last
//! `queryEndTime` kept as the checkpoint. Repeats from the overlap carry the same `id` and are
//! counted once by the aggregator.

use super::{fetched, pause, retry, rfc3339, send, Backoff, Fetched};
use crate::error::CollectorError;
use crate::record::FieldLimits;
use crate::secret::Secret;
use crate::sink::{Committed, Parsed, Sink};
use crate::sources::{proofpoint, SourceKind};
use crate::time::{now_ms, parse_time_ms};
use std::time::Duration;
use tracing::info;

/// The poller kind, in messages.
const KIND: &str = "proofpoint-tap";

/// The API serves the last 7 days only.
const MAX_AGE_MS: i64 = 7 * 24 * 3_600_000 - 60_000;

/// How one TAP poller runs.
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// Names the poller's checkpoint and log lines.
    pub name: String,
    /// `https://tap-api-v2.proofpoint.com`.
    pub base_url: String,
    /// `all`, `clicks/blocked` or `clicks/permitted`.
    pub endpoint: String,
    /// Service principal (Basic auth user).
    pub principal: Secret,
    /// Service secret (Basic auth password).
    pub secret: Secret,
    /// Time between polls once caught up.
    pub interval: Duration,
    /// Longest window per request (the API allows one hour).
    pub window: Duration,
    /// How far each window reaches back into the previous one.
    pub overlap: Duration,
    /// Where the first poll starts, back from now.
    pub start_from: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Longest wait between retries.
    pub backoff_max: Duration,
}

impl TapConfig {
    /// Defaults for an API at `base_url` with these credentials.
    pub fn new(name: &str, base_url: &str, principal: Secret, secret: Secret) -> Self {
        Self {
            name: name.to_owned(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            endpoint: "all".into(),
            principal,
            secret,
            interval: Duration::from_secs(60),
            window: Duration::from_secs(3600),
            overlap: Duration::from_secs(15 * 60),
            start_from: Duration::from_secs(3600),
            timeout: Duration::from_secs(60),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// Polls until shutdown, or (`once`) until the windows reach the present.
///
/// # Errors
/// When the spool fails, or (`once`) the API refuses the credentials.
pub async fn run(
    config: TapConfig,
    sink: Sink,
    once: bool,
    max_url_bytes: usize,
) -> Result<(), CollectorError> {
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .build()
        .map_err(|e| CollectorError::Input(format!("proofpoint-tap {}: {e}", config.name)))?;
    let input = format!("poller:proofpoint-tap:{}", config.name);
    let window = (config.window.as_millis() as i64).clamp(1_000, 3_600_000);
    let overlap = config.overlap.as_millis() as i64;
    let mut since = match sink.checkpoint(&input)? {
        Some(cp) => String::from_utf8_lossy(&cp).parse::<i64>().unwrap_or(0),
        None => now_ms() - config.start_from.as_millis() as i64,
    };
    let mut backoff = Backoff::new(Duration::from_secs(1), config.backoff_max);
    info!(poller = %config.name, since = %rfc3339(since), "proofpoint-tap polling");
    loop {
        let now = now_ms();
        let start = (since - overlap).max(now - MAX_AGE_MS);
        let end = (start + window).min(now);
        if end - start < 1_000 {
            if once || !pause(&sink, config.interval).await {
                return Ok(());
            }
            continue;
        }
        let url = format!("{}/v2/siem/{}", config.base_url, config.endpoint);
        let interval = format!("{}/{}", rfc3339(start), rfc3339(end));
        let req = client
            .get(&url)
            .basic_auth(config.principal.expose(), Some(config.secret.expose()))
            .query(&[("format", "json"), ("interval", interval.as_str())]);
        let Some(resp) = send(&sink, req).await else {
            return Ok(());
        };
        let limits = FieldLimits {
            max_url_bytes,
            now_ms: now,
        };
        let mut parsed = Parsed::default();
        let next_since = match fetched(resp).await {
            Fetched::Body(body) => {
                parsed.add_chunk(SourceKind::Proofpoint, &body, &input, 0, &limits);
                proofpoint::query_end_time(&body)
                    .and_then(|t| parse_time_ms(&t).ok())
                    .unwrap_or(end)
            }
            Fetched::Empty => end,
            failure => {
                if !retry(KIND, &config.name, &sink, &mut backoff, failure, once).await? {
                    return Ok(());
                }
                continue;
            }
        };
        backoff.reset();
        let cp = next_since.to_string();
        if sink.commit(parsed, Some((&input, cp.as_bytes()))).await? == Committed::Stopped {
            return Ok(());
        }
        since = next_since;
        if end >= now && (once || !pause(&sink, config.interval).await) {
            return Ok(());
        }
    }
}
