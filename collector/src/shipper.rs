//! `Shipper`: streams spooled events to the aggregator in batches over `ClickIngest.Push`,
//! keeps several batches in flight, deletes a batch from the spool only when it is acknowledged,
//! and reconnects with capped backoff (500 ms to 5 s) when the aggregator is away.

use crate::secret::Secret;
use crate::spool::{Spool, SpoolError};
use crate::stats::Stats;
use clicktally_proto::client::{self, BearerToken, ClientTls};
use clicktally_proto::v1::click_ingest_client::ClickIngestClient;
use clicktally_proto::v1::EventBatch;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

/// How batches are formed and sent.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// The aggregator, `http://host:port`.
    pub endpoint: String,
    /// Most events per batch.
    pub batch_events: usize,
    /// How long a partial batch waits for more events while others are in flight.
    pub linger: Duration,
    /// Batches sent and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// On shutdown, how long to wait for acknowledgements of batches in flight.
    pub drain_timeout: Duration,
    /// TLS towards the aggregator (CA, and a client certificate for mutual TLS).
    pub tls: Option<ClientTls>,
    /// Bearer token presented to the aggregator (role `ingest`).
    pub token: Option<Secret>,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:7401".into(),
            batch_events: 1000,
            linger: Duration::from_millis(20),
            max_in_flight: 8,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
            tls: None,
            token: None,
        }
    }
}

/// Why a shipping session ended.
#[derive(Debug, Error)]
pub enum ShipError {
    /// The spool failed; shipping cannot go on.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The endpoint is not a valid URI.
    #[error("aggregator endpoint {0:?} is not a valid URI: {1}")]
    Endpoint(String, String),
    /// The aggregator refused the credentials; retrying will not help until they are fixed.
    #[error("the aggregator refused this collector: {0}")]
    Refused(String),
    /// Connecting or streaming failed; the shipper reconnects.
    #[error("aggregator {endpoint}: {detail}")]
    Connection {
        /// The aggregator.
        endpoint: String,
        /// What went wrong.
        detail: String,
    },
}

/// Ships the spool until `shutdown`; returns only on shutdown or a spool failure.
///
/// # Errors
/// When the spool fails or the endpoint is malformed.
pub async fn run(
    spool: Arc<Spool>,
    config: ShipperConfig,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) -> Result<(), ShipError> {
    let bearer = BearerToken::new(config.token.as_ref().map(Secret::expose))
        .map_err(|e| ShipError::Endpoint(config.endpoint.clone(), e))?;
    let endpoint = client::endpoint(&config.endpoint, config.tls.as_ref())
        .map_err(|e| ShipError::Endpoint(config.endpoint.clone(), e))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30));
    let mut backoff = config.backoff_min;
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        let outcome = match endpoint.connect().await {
            Ok(channel) => {
                session(channel, bearer.clone(), &spool, &config, &stats, &shutdown).await
            }
            Err(e) => Err(ShipError::Connection {
                endpoint: config.endpoint.clone(),
                detail: format!("cannot connect: {}", source_chain(&e)),
            }),
        };
        match outcome {
            Ok(Progress::Stopped) => return Ok(()),
            Ok(Progress::Lost { acked }) => {
                if acked > 0 {
                    backoff = config.backoff_min;
                }
            }
            Err(ShipError::Connection { endpoint, detail }) => {
                warn!(%endpoint, cause = %detail, retry_in = ?backoff, "aggregator unreachable");
            }
            Err(other) => return Err(other),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

enum Progress {
    /// Shut down in order.
    Stopped,
    /// The stream broke after `acked` acknowledgements.
    Lost { acked: u64 },
}

async fn session(
    channel: Channel,
    bearer: BearerToken,
    spool: &Spool,
    config: &ShipperConfig,
    stats: &Stats,
    shutdown: &CancellationToken,
) -> Result<Progress, ShipError> {
    let conn_err = |detail: String| ShipError::Connection {
        endpoint: config.endpoint.clone(),
        detail,
    };
    let mut client = ClickIngestClient::with_interceptor(channel, bearer)
        .max_encoding_message_size(64 * 1024 * 1024);
    let (tx, rx) = mpsc::channel::<EventBatch>(config.max_in_flight.max(1));
    let mut acks = client
        .push(ReceiverStream::new(rx))
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                ShipError::Refused(format!("{} ({:?})", s.message(), s.code()))
            }
            _ => conn_err(format!("push refused: {}", s.message())),
        })?
        .into_inner();
    info!(endpoint = %config.endpoint, collector = spool.collector_id(), "shipping");
    let mut last_seq = spool.watch_last_seq();
    let mut next = spool.first_seq()?.unwrap_or(*last_seq.borrow() + 1);
    let mut in_flight: VecDeque<(u64, u64)> = VecDeque::new();
    let mut linger_until: Option<Instant> = None;
    let mut acked = 0u64;
    let mut draining: Option<Instant> = None;
    loop {
        // Fill the pipeline.
        while draining.is_none() && in_flight.len() < config.max_in_flight {
            let available = (*last_seq.borrow() + 1).saturating_sub(next);
            if available == 0 {
                linger_until = None;
                break;
            }
            if (available as usize) < config.batch_events && !in_flight.is_empty() {
                let deadline = *linger_until.get_or_insert_with(|| Instant::now() + config.linger);
                if Instant::now() < deadline {
                    break;
                }
            }
            linger_until = None;
            let events = spool.read_from(next, config.batch_events)?;
            if events.is_empty() {
                break;
            }
            let n = events.len() as u64;
            let batch = EventBatch {
                collector_id: spool.collector_id().to_owned(),
                first_sequence: next,
                events,
            };
            if tx.send(batch).await.is_err() {
                return Ok(Progress::Lost { acked });
            }
            in_flight.push_back((next, next + n - 1));
            next += n;
        }
        if draining.is_some() && in_flight.is_empty() {
            return Ok(Progress::Stopped);
        }
        let linger = linger_until;
        tokio::select! {
            msg = acks.message() => match msg {
                Ok(Some(ack)) => {
                    let Some(&(first, last)) = in_flight.front() else {
                        return Err(conn_err(format!("unexpected acknowledgement of {}..={}", ack.first_sequence, ack.last_sequence)));
                    };
                    if ack.first_sequence != first || ack.last_sequence != last {
                        return Err(conn_err(format!(
                            "acknowledgement {}..={} does not match batch {first}..={last}",
                            ack.first_sequence, ack.last_sequence
                        )));
                    }
                    in_flight.pop_front();
                    spool.remove(first, last)?;
                    stats.acked(&ack);
                    acked += 1;
                    if ack.rejected > 0 {
                        warn!(rejected = ack.rejected, reasons = ?ack.rejections, "aggregator refused events");
                    }
                    debug!(first, last, applied = ack.applied, duplicates = ack.duplicates, "acknowledged");
                }
                Ok(None) => return Ok(Progress::Lost { acked }),
                Err(status) => {
                    warn!(code = ?status.code(), cause = %status.message(), "push stream failed");
                    return Ok(Progress::Lost { acked });
                }
            },
            changed = last_seq.changed(), if draining.is_none() => {
                if changed.is_err() {
                    draining = Some(Instant::now() + config.drain_timeout);
                }
            }
            _ = sleep_until_opt(linger), if linger.is_some() && draining.is_none() => {}
            _ = shutdown.cancelled(), if draining.is_none() => {
                draining = Some(Instant::now() + config.drain_timeout);
            }
            _ = sleep_until_opt(draining), if draining.is_some() => {
                warn!(in_flight = in_flight.len(), "stopping with batches unacknowledged; they stay in the spool");
                return Ok(Progress::Stopped);
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
