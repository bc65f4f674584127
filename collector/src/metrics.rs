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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FieldLimits;
    use crate::sink::Parsed;
    use crate::sources::SourceKind;

    #[tokio::test]
    async fn counters_follow_what_was_read_and_spooled() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let stats = Stats::default();
        let mut p = Parsed::default();
        let limits = FieldLimits {
            max_url_bytes: 100,
            now_ms: 1_796_126_400_000,
        };
        let line = br#"{"Timestamp":"2026-12-01T10:00:00Z","Url":"https://x.example/","ActionType":"ClickAllowed"}"#;
        p.add_chunk(SourceKind::Defender, line, "f", 1, &limits);
        p.add_chunk(SourceKind::Defender, b"{oops", "f", 2, &limits);
        spool.append(&p.events, None).await.unwrap();
        {
            let mut by = stats.by_source.lock().unwrap();
            for (s, c) in &p.by_source {
                by.insert(s, *c);
            }
        }
        let text = render(&stats, &spool, 1_796_126_400_000);
        assert!(
            text.contains(
                "clicktally_collector_events_total{source=\"defender\",outcome=\"click\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains(
            "clicktally_collector_events_total{source=\"defender\",outcome=\"dead_lettered\"} 1\n"
        ));
        assert!(text.contains("clicktally_collector_spool_depth 1\n"));
        // The waiting click happened at 10:00, two hours before "now".
        assert!(
            text.contains("clicktally_collector_spool_oldest_seconds 7200\n"),
            "{text}"
        );
    }
}
