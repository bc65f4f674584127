//! Live API pollers. Each keeps its cursor as a checkpoint in the spool, written in the same
//! atomic write as the events it fetched, so a restart resumes exactly where it stopped.
//! HTTP 429 and 5xx back off exponentially (capped), honouring `Retry-After`.

use crate::error::CollectorError;
use crate::sink::Sink;
use std::time::Duration;
use tracing::warn;

pub mod mimecast;
pub mod proofpoint;

/// One configured poller.
#[derive(Debug, Clone)]
pub enum PollerConfig {
    /// Proofpoint TAP SIEM API.
    ProofpointTap(proofpoint::TapConfig),
    /// Mimecast API 2.0 URL Protect logs.
    MimecastApi(mimecast::ApiConfig),
}

impl PollerConfig {
    /// The poller's name, as in its checkpoint and logs.
    pub fn name(&self) -> &str {
        match self {
            Self::ProofpointTap(c) => &c.name,
            Self::MimecastApi(c) => &c.name,
        }
    }
}

/// Polls until shutdown, or (`once`) until caught up with the present.
///
/// # Errors
/// When the spool fails, or (`once`) the API refuses the credentials.
pub async fn run(
    config: PollerConfig,
    sink: Sink,
    once: bool,
    max_url_bytes: usize,
) -> Result<(), CollectorError> {
    match config {
        PollerConfig::ProofpointTap(c) => proofpoint::run(c, sink, once, max_url_bytes).await,
        PollerConfig::MimecastApi(c) => mimecast::run(c, sink, once, max_url_bytes).await,
    }
}

/// Capped exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// From `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The next delay; `retry_after` (from the server) wins when given, within the cap.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let d = retry_after.unwrap_or(self.next).min(self.max);
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// `Retry-After` in seconds, when the response has it.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Sleeps unless shutdown comes first; false on shutdown.
pub async fn pause(sink: &Sink, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = sink.shutdown.cancelled() => false,
    }
}

/// Waits after a failed request of poller `name` (of kind `kind`, for messages); false on
/// shutdown.
///
/// # Errors
/// With `once`, refused credentials.
pub async fn retry(
    kind: &str,
    name: &str,
    sink: &Sink,
    backoff: &mut Backoff,
    failure: Fetched,
    once: bool,
) -> Result<bool, CollectorError> {
    let (wait, why) = match failure {
        Fetched::Retry(wait, why) => (wait, why),
        Fetched::Refused(why) if once => {
            return Err(CollectorError::Input(format!(
                "{kind} {name}: credentials refused ({why})"
            )));
        }
        Fetched::Refused(why) => (None, format!("credentials refused ({why})")),
        Fetched::Body(_) | Fetched::Empty => (None, "unexpected response".into()),
    };
    let d = backoff.next(wait);
    warn!(poller = %name, kind, cause = %why, retry_in = ?d, "poll failed");
    Ok(pause(sink, d).await)
}

/// Sends a request unless shutdown comes first (`None`): a slow or hanging API never holds
/// up a stop.
pub async fn send(
    sink: &Sink,
    req: reqwest::RequestBuilder,
) -> Option<Result<reqwest::Response, reqwest::Error>> {
    tokio::select! {
        r = req.send() => Some(r),
        _ = sink.shutdown.cancelled() => None,
    }
}

/// What a poll attempt came to, before parsing.
#[derive(Debug)]
pub enum Fetched {
    /// 200 with a body.
    Body(Vec<u8>),
    /// 204, or 200 with an empty body.
    Empty,
    /// Try again after this long (429, 5xx, network).
    Retry(Option<Duration>, String),
    /// The credentials were refused (401, 403).
    Refused(String),
}

/// Classifies a response by status.
pub async fn fetched(resp: Result<reqwest::Response, reqwest::Error>) -> Fetched {
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Fetched::Retry(None, format!("request failed: {e}")),
    };
    let status = resp.status();
    let wait = retry_after(resp.headers());
    match status.as_u16() {
        204 => Fetched::Empty,
        200..=299 => match resp.bytes().await {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Fetched::Empty,
            Ok(b) => Fetched::Body(b.to_vec()),
            Err(e) => Fetched::Retry(None, format!("reading the response failed: {e}")),
        },
        401 | 403 => Fetched::Refused(format!("HTTP {status}")),
        429 => Fetched::Retry(wait, "HTTP 429 Too Many Requests".into()),
        _ => {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            Fetched::Retry(wait, format!("HTTP {status}: {body}"))
        }
    }
}

/// RFC 3339 with seconds, UTC (`2026-11-30T10:00:00Z`).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let seq: Vec<u64> = (0..5).map(|_| b.next(None).as_secs()).collect();
        assert_eq!(seq, [1, 2, 4, 5, 5]);
        assert_eq!(b.next(Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(
            b.next(Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
        b.reset();
        assert_eq!(b.next(None), Duration::from_secs(1));
    }
}
