//! Shared helpers for the end-to-end tests in `tests/`: start an aggregator on loopback with a
//! temporary sled directory, write fixtures, and query.
#![forbid(unsafe_code)]

use clicktally_aggregator::{AggregatorConfig, AggregatorError, ManualClock};
use clicktally_proto::v1::click_query_client::ClickQueryClient;
use clicktally_proto::v1::{SummaryRequest, SummaryRow};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An aggregator running in this process.
pub struct TestAggregator {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops it.
    pub stop: CancellationToken,
    /// Its task.
    pub task: JoinHandle<Result<(), AggregatorError>>,
}

impl TestAggregator {
    /// Starts an aggregator over `data` with the clock `clock`.
    pub async fn start(data: &Path, clock: Arc<ManualClock>) -> Self {
        let mut config = AggregatorConfig::new(data);
        config.clock = clock;
        config.cache_capacity = 8 * 1024 * 1024;
        Self::start_with(config).await
    }

    /// Starts an aggregator with a full config.
    pub async fn start_with(config: AggregatorConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(clicktally_aggregator::run(listener, config, async move {
            s.cancelled().await
        }));
        Self { addr, stop, task }
    }

    /// The endpoint URI.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs a Summary.
    pub async fn summary(&self, req: SummaryRequest) -> Vec<SummaryRow> {
        let mut client = ClickQueryClient::connect(self.endpoint()).await.unwrap();
        client.summary(req).await.unwrap().into_inner().rows
    }

    /// Stops it and waits until its sled files are closed.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Writes `content` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

/// A row reduced to the seed's columns plus Total: (Url, Blocked, Allowed, PendingVerdict,
/// Error, ClickedThrough, Total).
pub type SeedRow = (String, u64, u64, u64, u64, u64, u64);

/// Reduces rows to [`SeedRow`]s, sorted by URL.
pub fn seed_rows(rows: &[SummaryRow]) -> Vec<SeedRow> {
    let mut out: Vec<SeedRow> = rows
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                r.blocked,
                r.allowed,
                r.pending_verdict,
                r.error,
                r.clicked_through,
                r.total,
            )
        })
        .collect();
    out.sort();
    out
}
