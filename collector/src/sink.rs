//! `Sink`: where every input and poller hands what it parsed. It dead-letters what could not be
//! read, waits while the spool is full, and writes the events together with the input's new
//! checkpoint in one durable spool write: only then has the source been "acknowledged".

use crate::config::CollectorConfig;
use crate::deadletter::{DeadLetter, DeadLetterFile};
use crate::error::CollectorError;
use crate::record::{FieldLimits, Record};
use crate::sources::SourceKind;
use crate::spool::Spool;
use crate::stats::Stats;
use clicktally_proto::v1::ClickEvent;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What a group of records became.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Clicks, normalised.
    pub events: Vec<ClickEvent>,
    /// Records that could not be read.
    pub dead: Vec<DeadLetter>,
    /// Records read.
    pub records: u64,
    /// Records that are not clicks.
    pub skipped: u64,
    /// (events, skipped, dead-lettered) by source, for metrics.
    pub by_source: std::collections::BTreeMap<&'static str, [u64; 3]>,
}

impl Parsed {
    /// Parses one chunk (a line, a document, a response) of `kind` from `input` at `line`.
    pub fn add_chunk(
        &mut self,
        kind: SourceKind,
        chunk: &[u8],
        input: &str,
        line: u64,
        limits: &FieldLimits,
    ) {
        let mut records = Vec::new();
        kind.parse(chunk, limits, &mut records);
        for rec in records {
            self.records += 1;
            let counts = self.by_source.entry(kind.name()).or_default();
            match rec {
                Record::Click(ev) => {
                    counts[0] += 1;
                    self.events.push(ev);
                }
                Record::Skipped(_) => {
                    counts[1] += 1;
                    self.skipped += 1;
                }
                Record::Invalid { reason, raw } => {
                    counts[2] += 1;
                    let raw = raw.as_deref().map(str::as_bytes).unwrap_or(chunk);
                    self.dead
                        .push(DeadLetter::new(kind.name(), input, line, reason, raw));
                }
            }
        }
    }

    /// Records one chunk that was too large to read.
    pub fn add_oversize(&mut self, kind: SourceKind, input: &str, line: u64, len: u64, limit: u64) {
        self.records += 1;
        self.by_source.entry(kind.name()).or_default()[2] += 1;
        self.dead.push(DeadLetter::new(
            kind.name(),
            input,
            line,
            format!("record of {len} bytes exceeds the {limit}-byte limit"),
            b"",
        ));
    }
}

/// Durable hand-off from inputs to the spool.
#[derive(Clone)]
pub struct Sink {
    /// The spool; `None` in a dry run.
    pub spool: Option<Arc<Spool>>,
    /// Where unreadable records go; `None` in a dry run without `--dead-letter` (then logged).
    pub dead: Option<Arc<DeadLetterFile>>,
    /// What was done.
    pub stats: Arc<Stats>,
    /// Stops waiting for spool space.
    pub shutdown: CancellationToken,
    /// Spool size above which inputs pause.
    pub max_spool_events: u64,
    /// With `once`: longest wait for spool space before giving up.
    pub once_deadline: Option<Duration>,
    /// The aggregator, for error messages.
    pub endpoint: String,
    /// Shift applied to every click time (demos).
    pub time_shift_ms: i64,
}

/// What became of a commit.
#[derive(Debug, PartialEq, Eq)]
pub enum Committed {
    /// Durable (or counted, in a dry run).
    Done,
    /// Shutdown came first; nothing was written and the checkpoint did not move.
    Stopped,
}

impl Sink {
    /// A sink for `config`.
    pub fn new(
        config: &CollectorConfig,
        spool: Option<Arc<Spool>>,
        dead: Option<Arc<DeadLetterFile>>,
        stats: Arc<Stats>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            spool,
            dead,
            stats,
            shutdown,
            max_spool_events: config.max_spool_events,
            once_deadline: config.once.then_some(config.once_deadline),
            endpoint: config.shipper.endpoint.clone(),
            time_shift_ms: config.time_shift_ms,
        }
    }

    /// Dead-letters, spools and checkpoints `parsed` in that order.
    ///
    /// # Errors
    /// When the dead-letter file or the spool cannot be written, or (`once`) the spool stayed
    /// full past the deadline.
    pub async fn commit(
        &self,
        mut parsed: Parsed,
        checkpoint: Option<(&str, &[u8])>,
    ) -> Result<Committed, CollectorError> {
        if self.time_shift_ms != 0 {
            for ev in &mut parsed.events {
                ev.time_unix_ms += self.time_shift_ms;
            }
        }
        if let Some(spool) = &self.spool {
            let mut depth = spool.watch_depth();
            let deadline = self.once_deadline;
            tokio::select! {
                // Room in the spool wins over a stop: what was fetched is kept, not refetched.
                biased;
                _ = depth.wait_for(|d| *d < self.max_spool_events) => {}
                _ = self.shutdown.cancelled() => return Ok(Committed::Stopped),
                _ = tokio::time::sleep(deadline.unwrap_or_default()), if deadline.is_some() => {
                    return Err(CollectorError::Deadline {
                        unacked: spool.depth(),
                        waited: deadline.unwrap_or_default(),
                        endpoint: self.endpoint.clone(),
                    });
                }
            }
        }
        match &self.dead {
            Some(dead) => {
                dead.append(&parsed.dead)
                    .map_err(|source| CollectorError::DeadLetter {
                        path: dead.path().to_owned(),
                        source,
                    })?
            }
            None => {
                for d in &parsed.dead {
                    warn!(input = %d.input, line = d.line, reason = %d.reason, "dead letter");
                }
            }
        }
        if let Some(spool) = &self.spool {
            spool.append(&parsed.events, checkpoint).await?;
        }
        let s = &self.stats;
        s.records.fetch_add(parsed.records, Relaxed);
        s.events.fetch_add(parsed.events.len() as u64, Relaxed);
        s.skipped.fetch_add(parsed.skipped, Relaxed);
        s.dead_lettered.fetch_add(parsed.dead.len() as u64, Relaxed);
        {
            let mut by = s.by_source.lock().unwrap_or_else(|p| p.into_inner());
            for (source, c) in &parsed.by_source {
                let e = by.entry(source).or_default();
                for i in 0..3 {
                    e[i] += c[i];
                }
            }
        }
        Ok(Committed::Done)
    }

    /// A saved checkpoint of `input`.
    ///
    /// # Errors
    /// When the spool cannot be read.
    pub fn checkpoint(&self, input: &str) -> Result<Option<Vec<u8>>, CollectorError> {
        match &self.spool {
            Some(spool) => Ok(spool.checkpoint(input)?),
            None => Ok(None),
        }
    }
}
