//! Prometheus metrics: counters kept as atomics where the work happens, rendered in the text
//! exposition format on `GET /metrics` of the `--metrics` address.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A histogram with fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths.
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (upper bounds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if v <= *b {
                c.fetch_add(1, Relaxed);
            }
        }
        self.sum_micros.fetch_add((v * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", c.load(Relaxed));
        }
        let n = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {n}");
    }
}

/// What the aggregator counts.
#[derive(Debug)]
pub struct Metrics {
    /// Batches acknowledged.
    pub batches: AtomicU64,
    /// Events counted, by source.
    pub applied: Mutex<BTreeMap<String, u64>>,
    /// Events dropped as already counted.
    pub duplicates: AtomicU64,
    /// Events recognised as replays.
    pub replayed: AtomicU64,
    /// Events older than retention.
    pub expired: AtomicU64,
    /// Events refused (empty or oversize URL, time out of range).
    pub rejected: AtomicU64,
    /// Requests refused by a limit (batch size, message size, watchers per token).
    pub limit_hits: AtomicU64,
    /// Watchers dropped for lagging.
    pub watch_dropped: AtomicU64,
    /// Events per group commit.
    pub group_events: Histogram,
    /// Seconds to stage, write and flush a group.
    pub apply_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            batches: AtomicU64::new(0),
            applied: Mutex::default(),
            duplicates: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            limit_hits: AtomicU64::new(0),
            watch_dropped: AtomicU64::new(0),
            group_events: Histogram::new(&[1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]),
            apply_seconds: Histogram::new(&[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
        }
    }
}

/// Gauges read at render time.
#[derive(Debug, Default, Clone, Copy)]
pub struct Gauges {
    /// Watch streams open.
    pub watchers: u64,
    /// Requests refused for their token.
    pub auth_failures: u64,
    /// sled bytes on disk.
    pub disk_bytes: u64,
    /// Distinct event ids held for deduplication.
    pub event_ids: u64,
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self, g: Gauges) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "clicktally_batches_total",
            "Batches acknowledged.",
            self.batches.load(Relaxed),
        );
        counter(
            "clicktally_events_duplicate_total",
            "Events dropped as already counted.",
            self.duplicates.load(Relaxed),
        );
        counter(
            "clicktally_events_replayed_total",
            "Events recognised as replayed batches.",
            self.replayed.load(Relaxed),
        );
        counter(
            "clicktally_events_expired_total",
            "Events older than retention.",
            self.expired.load(Relaxed),
        );
        counter(
            "clicktally_events_rejected_total",
            "Events refused as invalid.",
            self.rejected.load(Relaxed),
        );
        counter(
            "clicktally_limit_hits_total",
            "Requests refused by a size or count limit.",
            self.limit_hits.load(Relaxed),
        );
        counter(
            "clicktally_watch_dropped_total",
            "Watch clients dropped for lagging.",
            self.watch_dropped.load(Relaxed),
        );
        counter(
            "clicktally_auth_failures_total",
            "Requests refused for their token.",
            g.auth_failures,
        );
        let _ = writeln!(out, "# HELP clicktally_events_applied_total Events counted, by source.\n# TYPE clicktally_events_applied_total counter");
        for (source, n) in self
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "clicktally_events_applied_total{{source=\"{source}\"}} {n}"
            );
        }
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge("clicktally_watchers", "Watch streams open.", g.watchers);
        gauge("clicktally_disk_bytes", "sled bytes on disk.", g.disk_bytes);
        gauge(
            "clicktally_event_ids",
            "Event ids held for deduplication.",
            g.event_ids,
        );
        self.group_events.render(
            &mut out,
            "clicktally_group_commit_events",
            "Events per group commit.",
        );
        self.apply_seconds.render(
            &mut out,
            "clicktally_apply_seconds",
            "Time to stage, write and flush a group commit.",
        );
        out
    }
}

/// Serves `GET /metrics` with what `render` returns until `shutdown`.
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], render()) }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_counters_render_in_the_exposition_format() {
        let m = Metrics::default();
        m.apply_seconds.observe(0.004);
        m.apply_seconds.observe(0.2);
        m.applied.lock().unwrap().insert("defender".into(), 7);
        let text = m.render(Gauges {
            watchers: 2,
            ..Default::default()
        });
        assert!(
            text.contains("clicktally_apply_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("clicktally_apply_seconds_bucket{le=\"0.25\"} 2\n"));
        assert!(text.contains("clicktally_apply_seconds_count 2\n"));
        assert!(text.contains("clicktally_events_applied_total{source=\"defender\"} 7\n"));
        assert!(text.contains("clicktally_watchers 2\n"));
    }
}
