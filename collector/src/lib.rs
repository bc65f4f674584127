//! The clicktally collector: reads click events from vendor sources, normalises them into the
//! canonical [`clicktally_proto::v1::ClickEvent`], makes them durable in an on-disk spool, and
//! ships them in batches to the aggregator, deleting them only once acknowledged.
//!
//! # Layout
//! - [`collector::run`]: the whole collector as one future.
//! - [`sources`]: one module per vendor, a parser from bytes to [`record::Record`]s.
//! - [`input`]: files, directories and globs, split into lines or documents; [`files`] reads
//!   and follows them from their checkpoints.
//! - [`poll`]: live API pollers (Proofpoint TAP SIEM, Mimecast API 2.0); [`secret`] their
//!   credentials.
//! - [`sink`]: the durable hand-off of parsed records and checkpoints to the spool.
//! - [`spool`]: the sled queue; [`shipper`]: batches over `ClickIngest.Push` with backoff.
//! - [`deadletter`]: unreadable records and why; [`stats`]: what was done.
//! - [`config`], [`error`], [`time`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod collector;
pub mod config;
pub mod config_file;
pub mod deadletter;
pub mod error;
pub mod files;
pub mod input;
pub mod metrics;
pub mod poll;
pub mod record;
pub mod secret;
pub mod shipper;
pub mod sink;
pub mod sources;
pub mod spool;
pub mod stats;
pub mod time;

pub use collector::run;
pub use config::CollectorConfig;
pub use error::CollectorError;
pub use stats::Report;
