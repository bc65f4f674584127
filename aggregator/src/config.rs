//! `AggregatorConfig`: everything the aggregator needs to run, with defaults that work on a laptop.

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
    /// Host rules hidden from queries unless a request says `no_exclusions`.
    pub exclusions: Vec<String>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
}

impl AggregatorConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            cache_capacity: 64 * 1024 * 1024,
            retention: Duration::from_secs(30 * 24 * 3600),
            retention_interval: Duration::from_secs(600),
            max_url_bytes: 8 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
            max_batch_events: 10_000,
            group_commit_events: 20_000,
            exclusions: Vec::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Retention in whole hours (at least one).
    pub fn retention_hours(&self) -> i64 {
        ((self.retention.as_secs() / 3600) as i64).max(1)
    }
}
