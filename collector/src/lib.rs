//! The clicktally collector: reads click events from vendor sources, normalises them into the
//! canonical [`clicktally_proto::v1::ClickEvent`], makes them durable in an on-disk spool, and
//! ships them in batches to the aggregator, deleting them only once acknowledged.
//!
//! # Layout
//! - [`collector::run`]: the whole collector as one future.
//! - [`sources`]: one module per vendor, a parser from bytes to [`record::Record`]s.
//! - [`input`]: files, directories and globs, split into lines or documents.
//! - [`spool`]: the sled queue; [`shipper`]: batches over `ClickIngest.Push` with backoff.
//! - [`deadletter`]: unreadable records and why; [`stats`]: what was done.
//! - [`config`], [`error`], [`time`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod collector;
pub mod config;
pub mod deadletter;
pub mod error;
pub mod input;
pub mod record;
pub mod shipper;
pub mod sources;
pub mod spool;
pub mod stats;
pub mod time;

pub use collector::run;
pub use config::CollectorConfig;
pub use error::CollectorError;
pub use stats::Report;
