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

/// The path of one of the workspace's binaries (`clicktally`, `clicktally-aggregator`,
/// `clicktally-collector`), built with `cargo build --bins` the first time it is asked for when
/// the test run has not built it yet.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe.parent().unwrap().parent().unwrap().to_owned();
    let path = dir.join(name);
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--bins", "--workspace", "--quiet"]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build --bins");
        assert!(status.success(), "cargo build --bins failed");
    });
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs a binary to completion and returns (exit success, stdout, stderr).
pub fn run_binary(name: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary(name))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `clicktally-aggregator --listen 127.0.0.1:PORT --data DIR` plus `extra` flags and
/// waits until it accepts connections.
pub fn spawn_aggregator(port: u16, data: &Path, extra: &[&str]) -> ChildGuard {
    let child = std::process::Command::new(binary("clicktally-aggregator"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data")
        .arg(data)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "aggregator did not start on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    guard
}
