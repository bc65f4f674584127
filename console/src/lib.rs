//! The clicktally console: the `clicktally` command. Summary tables (table, JSON with the seed's
//! column names, CSV) from an aggregator, and the one-process demo.
//!
//! # Layout
//! - [`query`]: flags to `SummaryRequest`, the gRPC call.
//! - [`render`]: table, JSON and CSV.
//! - [`demo`]: both services in one process on loopback with the sample files.
//! - [`timearg`]: times and durations as people write them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod demo;
pub mod query;
pub mod render;
pub mod timearg;

/// Terminal width: `COLUMNS` when set, else 80.
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w: &usize| *w >= 40)
        .unwrap_or(80)
}
