//! Prometheus metrics of the collector on `GET /metrics` of the `--metrics` address: events
//! in, skipped and dead-lettered per source, shipped and acknowledged, spool depth and the age of
//! the oldest click waiting in it.

use crate::spool::Spool;
use crate::stats::Stats;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The text exposition.
pub fn render(stats: &Stats, spool: &Spool, now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP clicktally_collector_events_total Records read, by source and outcome.\n# TYPE clicktally_collector_events_total counter");
    for (source, c) in stats
        .by_source
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        for (outcome, n) in ["click", "skipped", "dead_lettered"].iter().zip(c) {
            let _ = writeln!(out, "clicktally_collector_events_total{{source=\"{source}\",outcome=\"{outcome}\"}} {n}");
        }
    }
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        "clicktally_collector_shipped_total",
        "Events acknowledged by the aggregator.",
        stats.shipped.load(Relaxed),
    );
    counter(
        "clicktally_collector_acked_counted_total",
        "Acknowledged events the aggregator counted.",
        stats.applied.load(Relaxed),
    );
    counter(
        "clicktally_collector_acked_duplicate_total",
        "Acknowledged events the aggregator had already counted.",
        stats.duplicates.load(Relaxed),
    );
    counter(
        "clicktally_collector_acked_rejected_total",
        "Acknowledged events the aggregator refused.",
        stats.rejected.load(Relaxed),
    );
    let age = spool
        .oldest_click_ms()
        .map(|t| (now_ms - t).max(0) / 1000)
        .unwrap_or(0);
    let mut gauge = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "clicktally_collector_spool_depth",
        "Events waiting in the spool for acknowledgement.",
        spool.depth(),
    );
    gauge(
        "clicktally_collector_spool_oldest_seconds",
        "Age of the oldest click waiting in the spool.",
        age as u64,
    );
    out
}

/// Serves `GET /metrics` until `shutdown`.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    stats: Arc<Stats>,
    spool: Arc<Spool>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (stats, spool) = (stats.clone(), spool.clone());
            async move {
                let body = render(&stats, &spool, crate::time::now_ms());
                ([("content-type", "text/plain; version=0.0.4")], body)
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
