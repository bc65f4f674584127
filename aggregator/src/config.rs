//! `AggregatorConfig`: everything the aggregator needs to run, with defaults that work on a laptop.

use crate::auth::TokenEntry;
use crate::clock::{Clock, SystemClock};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the aggregator runs.
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// The sled data directory.
    pub data_dir: PathBuf,
    /// sled's page cache, in bytes (sled's own default is 1 GiB, far too much for a sidecar).
    pub cache_capacity: u64,
    /// How long counters and event ids are kept.
    pub retention: Duration,
    /// How often expired buckets are deleted.
    pub retention_interval: Duration,
    /// Longest URL counted, in bytes; longer ones are rejected in the ack.
    pub max_url_bytes: usize,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Most events in one pushed batch.
    pub max_batch_events: usize,
    /// A group commit stops taking batches once it holds this many events.
    pub group_commit_events: usize,
    /// A snapshot of the counters is written once the journal since the last one is larger
    /// than the last snapshot and than this many bytes.
    pub snapshot_min_bytes: u64,
    /// Host rules hidden from queries unless a request says `no_exclusions`.
    pub exclusions: Vec<String>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// TLS for the gRPC server; `None` serves plaintext (loopback only, unless `insecure`).
    pub tls: Option<TlsConfig>,
    /// Allow plaintext on a non-loopback address.
    pub insecure: bool,
    /// Bearer tokens; empty turns authentication off.
    pub tokens: Vec<TokenEntry>,
    /// Watch streams one token may hold open.
    pub max_watchers_per_token: usize,
    /// Deadline for unary requests (Summary, UrlDetail).
    pub request_timeout: Duration,
    /// Requests served at once per connection; more wait.
    pub concurrency_per_connection: usize,
}

/// PEM-encoded TLS material for the server.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    /// Its private key.
    pub key_pem: Vec<u8>,
    /// With this CA, clients must present a certificate it signed (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl AggregatorConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            cache_capacity: 16 * 1024 * 1024,
            retention: Duration::from_secs(30 * 24 * 3600),
            retention_interval: Duration::from_secs(600),
            max_url_bytes: 8 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
            max_batch_events: 10_000,
            group_commit_events: 20_000,
            snapshot_min_bytes: 64 * 1024 * 1024,
            exclusions: Vec::new(),
            clock: Arc::new(SystemClock),
            tls: None,
            insecure: false,
            tokens: Vec::new(),
            max_watchers_per_token: 16,
            request_timeout: Duration::from_secs(30),
            concurrency_per_connection: 64,
        }
    }

    /// Retention in whole hours (at least one).
    pub fn retention_hours(&self) -> i64 {
        ((self.retention.as_secs() / 3600) as i64).max(1)
    }
}
