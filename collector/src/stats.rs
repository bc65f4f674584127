//! What the collector has done, counted as it happens and reported at the end of `--once`.

use clicktally_proto::v1::PushAck;
use serde::Serialize;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters, shared by inputs and the shipper.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read from inputs (clicks, skipped and dead-lettered).
    pub records: AtomicU64,
    /// Click events normalised and spooled.
    pub events: AtomicU64,
    /// Valid records that are not clicks.
    pub skipped: AtomicU64,
    /// Records written to the dead-letter file.
    pub dead_lettered: AtomicU64,
    /// Events the aggregator acknowledged.
    pub shipped: AtomicU64,
    /// Of those, counted.
    pub applied: AtomicU64,
    /// Of those, dropped as already counted (same event id).
    pub duplicates: AtomicU64,
    /// Of those, recognised as a replayed batch.
    pub replayed: AtomicU64,
    /// Of those, older than the aggregator's retention.
    pub expired: AtomicU64,
    /// Of those, refused by the aggregator.
    pub rejected: AtomicU64,
    /// (events, skipped, dead-lettered) by source.
    pub by_source: std::sync::Mutex<std::collections::BTreeMap<&'static str, [u64; 3]>>,
}

impl Stats {
    /// Counts an acknowledgement.
    pub fn acked(&self, ack: &PushAck) {
        let n = ack.last_sequence - ack.first_sequence + 1;
        self.shipped.fetch_add(n, Relaxed);
        self.applied.fetch_add(ack.applied.into(), Relaxed);
        self.duplicates.fetch_add(ack.duplicates.into(), Relaxed);
        self.replayed.fetch_add(ack.replayed.into(), Relaxed);
        self.expired.fetch_add(ack.expired.into(), Relaxed);
        self.rejected.fetch_add(ack.rejected.into(), Relaxed);
    }

    /// A consistent-enough copy for reporting.
    pub fn report(&self) -> Report {
        Report {
            records: self.records.load(Relaxed),
            events: self.events.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            shipped: self.shipped.load(Relaxed),
            applied: self.applied.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            replayed: self.replayed.load(Relaxed),
            expired: self.expired.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
        }
    }
}

/// The figures printed at the end of `--once` and `--dry-run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Records read.
    pub records: u64,
    /// Click events normalised.
    pub events: u64,
    /// Records that are not clicks.
    pub skipped: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Events acknowledged by the aggregator.
    pub shipped: u64,
    /// Events counted.
    pub applied: u64,
    /// Events dropped as already counted.
    pub duplicates: u64,
    /// Events recognised as replays.
    pub replayed: u64,
    /// Events older than retention.
    pub expired: u64,
    /// Events refused by the aggregator.
    pub rejected: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "read           {:>10} records", self.records)?;
        writeln!(f, "events         {:>10}", self.events)?;
        writeln!(f, "skipped        {:>10} (not clicks)", self.skipped)?;
        writeln!(f, "dead-lettered  {:>10}", self.dead_lettered)?;
        write!(
            f,
            "shipped        {:>10} (counted {}, duplicate {}, replayed {}, expired {}, rejected {})",
            self.shipped, self.applied, self.duplicates, self.replayed, self.expired, self.rejected
        )
    }
}
