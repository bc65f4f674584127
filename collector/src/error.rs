//! The collector's errors.

use crate::shipper::ShipError;
use crate::spool::SpoolError;
use std::path::PathBuf;
use thiserror::Error;

/// Everything that stops the collector.
#[derive(Debug, Error)]
pub enum CollectorError {
    /// An input is misconfigured (a missing file, a bad glob).
    #[error("{0}")]
    Input(String),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The dead-letter file could not be written.
    #[error("cannot write dead letters to {path}: {source}")]
    DeadLetter {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// Shipping failed for good.
    #[error(transparent)]
    Ship(#[from] ShipError),
    /// `--once` could not get everything acknowledged in time.
    #[error("{unacked} events still unacknowledged after {waited:?}: is the aggregator at {endpoint} up? They stay in the spool and are shipped on the next run")]
    Deadline {
        /// Events still in the spool.
        unacked: u64,
        /// How long it waited.
        waited: std::time::Duration,
        /// The aggregator.
        endpoint: String,
    },
    /// Stopped by a signal before the work was done.
    #[error("interrupted; {unacked} events stay in the spool")]
    Interrupted {
        /// Events still in the spool.
        unacked: u64,
    },
}
