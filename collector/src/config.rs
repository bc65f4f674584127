//! `CollectorConfig`: what the collector reads, where it spools, and where it ships.

use crate::input::InputSpec;
use crate::poll::PollerConfig;
use crate::shipper::ShipperConfig;
use std::path::PathBuf;
use std::time::Duration;

/// How the collector runs.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// The inputs to read.
    pub inputs: Vec<InputSpec>,
    /// The sled spool directory.
    pub spool_dir: PathBuf,
    /// sled page cache for the spool, in bytes.
    pub spool_cache_capacity: u64,
    /// Where unreadable records go (default: `dead-letter.jsonl` in the spool directory).
    pub dead_letter: Option<PathBuf>,
    /// Shipping to the aggregator.
    pub shipper: ShipperConfig,
    /// Read every input to its end, wait for every event to be acknowledged, then stop.
    pub once: bool,
    /// With `once`: how long to keep trying to get everything acknowledged.
    pub once_deadline: Duration,
    /// Parse and count only: no spool, nothing shipped.
    pub dry_run: bool,
    /// Longest line or document read from a file, in bytes.
    pub max_record_bytes: u64,
    /// Longest URL accepted, in bytes.
    pub max_url_bytes: usize,
    /// Records per spool write (one flush each).
    pub chunk_records: usize,
    /// Most events held in the spool; inputs pause above it.
    pub max_spool_events: u64,
    /// For demos: shift every click time by this many ms (0: as read).
    pub time_shift_ms: i64,
    /// API pollers (Proofpoint TAP, Mimecast).
    pub pollers: Vec<PollerConfig>,
    /// Without `once`: how often inputs are scanned for new lines and new files.
    pub follow_interval: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
}

impl CollectorConfig {
    /// Defaults for a spool directory.
    pub fn new(spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            inputs: Vec::new(),
            spool_dir: spool_dir.into(),
            spool_cache_capacity: 32 * 1024 * 1024,
            dead_letter: None,
            shipper: ShipperConfig::default(),
            once: false,
            once_deadline: Duration::from_secs(300),
            dry_run: false,
            max_record_bytes: 16 * 1024 * 1024,
            max_url_bytes: 8 * 1024,
            chunk_records: 2000,
            max_spool_events: 5_000_000,
            time_shift_ms: 0,
            pollers: Vec::new(),
            follow_interval: Duration::from_secs(1),
            metrics: None,
        }
    }

    /// The dead-letter file in use.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.dead_letter
            .clone()
            .unwrap_or_else(|| self.spool_dir.join("dead-letter.jsonl"))
    }
}
