//! The clicktally console: the `clicktally` command. Summary tables (table, JSON with the seed's
//! column names, CSV), live views (`watch`, `top`), one URL's detail, and the one-process demo.
//!
//! # Layout
//! - [`query`]: flags to `SummaryRequest`, the gRPC call.
//! - [`render`]: table, JSON and CSV.
//! - [`live`]: following a Watch stream with reconnects; [`top`] the full-screen live table.
//! - [`demo`]: both services in one process on loopback with the sample files, fed live.
//! - [`timearg`]: times and durations as people write them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod demo;
pub mod live;
pub mod query;
pub mod render;
pub mod timearg;
pub mod top;

/// Terminal width: `COLUMNS` when set, else 80.
pub fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|w: &usize| *w >= 40)
        .unwrap_or(80)
}

/// The default window, the last 7 days, in ms.
pub fn query_window_ms() -> u64 {
    7 * 24 * 3_600_000
}
