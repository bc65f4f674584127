//! The clicktally aggregator: takes normalised click events from collectors over gRPC, keeps
//! per-URL, per-hour counters in sled, and answers the seed query's table (Summary).
//!
//! # Layout
//! - [`server::run`]: the whole service as one future over a listener the caller bound.
//! - [`ingest`]: the `ClickIngest.Push` stream and the single writer that commits in groups.
//! - [`store`]: [`store::CounterStore`], sled plus its in-memory mirror; [`codec`] is its byte
//!   layout, [`seen`] the event-id index that drops duplicate deliveries, [`table`] the interned
//!   ids and tallies held in memory, [`totals`] the pre-aggregated default window.
//! - [`query`]: the Summary computation; [`actions`] the seed's exact column semantics;
//!   [`hosts`] hosts, registrable domains and exclusion rules.
//! - [`query_service`]: the `ClickQuery` gRPC face; [`watch`] the hub that feeds Watch streams.
//! - [`auth`]: bearer tokens, roles and tenants; [`metrics`]: the Prometheus endpoint.
//! - [`config`], [`config_file`], [`clock`], [`error`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod actions;
pub mod auth;
pub mod clock;
pub mod codec;
pub mod config;
pub mod config_file;
pub mod error;
pub mod hosts;
pub mod ingest;
pub mod journal;
pub mod metrics;
pub mod query;
pub mod query_service;
pub mod seen;
pub mod server;
pub mod store;
pub mod table;
pub mod totals;
pub mod watch;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::AggregatorConfig;
pub use error::AggregatorError;
pub use server::{run, run_with_metrics};
