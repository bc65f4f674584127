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

/// What the generator wrote, counted independently of clicktally: URL -> (Blocked, Allowed,
/// PendingVerdict, Error, ClickedThrough, Total), by construction of each row.
pub type Expected = std::collections::BTreeMap<String, [u64; 6]>;

/// A small deterministic generator (xorshift64*), so a failing run can be replayed by its seed.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Action types with the seed columns each adds to: (ActionType, [Blocked, Allowed, Pending, Error]).
pub const ACTIONS: &[(&str, [u64; 4])] = &[
    ("ClickBlocked", [1, 0, 0, 0]),
    ("clickblocked;Warn", [1, 0, 0, 0]),
    ("ClickBlockedByTenantPolicy", [0, 0, 0, 0]),
    ("ClickAllowed", [0, 1, 0, 0]),
    ("CLICKALLOWED", [0, 1, 0, 0]),
    ("UrlScanInProgress", [0, 0, 1, 0]),
    ("UrlErrorPage", [0, 0, 0, 1]),
    ("SomethingElse", [0, 0, 0, 0]),
];

/// Writes `files` Defender blob files of `lines` lines each under `dir` (clicks within the last
/// three days before `now_ms`, over `urls` distinct URLs, about 1% of lines repeated
/// byte-for-byte), and returns what the seed query must answer.
pub fn generate_defender(
    dir: &Path,
    files: usize,
    lines: usize,
    urls: u64,
    now_ms: i64,
    seed: u64,
) -> Expected {
    let mut rng = Rng(seed | 1);
    let mut expected = Expected::new();
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0u64;
    for f in 0..files {
        let mut out = String::with_capacity(lines * 400);
        let mut last = String::new();
        for _ in 0..lines {
            if !last.is_empty() && rng.below(100) == 0 {
                out.push_str(&last);
                continue;
            }
            n += 1;
            // Skewed: low indexes are clicked far more often, as hot links are.
            let spread = rng.below(urls) + 1;
            let i = rng.below(spread);
            let url = format!("https://host{}.example/path/{i}", i % 50);
            let (action, cols) = ACTIONS[rng.below(ACTIONS.len() as u64) as usize];
            let through = rng.below(10) == 0;
            let t = now_ms - 60_000 - rng.below(72 * 3_600_000) as i64;
            let ts = chrono_like(t);
            last = format!(
                "{{\"time\":\"{ts}\",\"tenantId\":\"t1\",\"category\":\"AdvancedHunting-UrlClickEvents\",\"properties\":{{\"Timestamp\":\"{ts}\",\"Url\":\"{url}\",\"ActionType\":\"{action}\",\"AccountUpn\":\"user{}@contoso.com\",\"IsClickedThrough\":{through},\"ReportId\":\"{n}\",\"NetworkMessageId\":\"m{n}\"}}}}\r\n",
                rng.below(500)
            );
            out.push_str(&last);
            let e = expected.entry(url).or_default();
            for i in 0..4 {
                e[i] += cols[i];
            }
            e[4] += u64::from(through);
            e[5] += 1;
        }
        std::fs::write(dir.join(format!("blob-{f:03}.jsonl")), out).unwrap();
    }
    expected
}

/// RFC 3339 with 7 fractional digits, as Defender writes it, computed without a date library.
fn chrono_like(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:03}0000Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Reduces Summary rows to the [`Expected`] shape.
pub fn as_expected(rows: &[SummaryRow]) -> Expected {
    rows.iter()
        .map(|r| {
            (
                r.key.clone(),
                [
                    r.blocked,
                    r.allowed,
                    r.pending_verdict,
                    r.error,
                    r.clicked_through,
                    r.total,
                ],
            )
        })
        .collect()
}

/// Every row of a 7-day Summary from the aggregator at `endpoint`.
pub async fn all_rows(endpoint: &str) -> Vec<SummaryRow> {
    let mut client = ClickQueryClient::connect(endpoint.to_owned())
        .await
        .unwrap()
        .max_decoding_message_size(512 * 1024 * 1024);
    let mut rows = client
        .summary(SummaryRequest {
            order_by: "Url".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    rows
}

/// The first few differences between two answers, for readable failures on large data.
pub fn differences(got: &Expected, want: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    for (url, w) in want {
        match got.get(url) {
            Some(g) if g == w => {}
            Some(g) => out.push(format!("{url}: got {g:?}, want {w:?}")),
            None => out.push(format!("{url}: missing, want {w:?}")),
        }
    }
    for (url, g) in got {
        if !want.contains_key(url) {
            out.push(format!("{url}: unexpected {g:?}"));
        }
    }
    out.truncate(10);
    out
}

/// A click on `url` at `time_ms` with `action`, identified by `id`.
pub fn click(id: &str, url: &str, action: &str, time_ms: i64) -> clicktally_proto::v1::ClickEvent {
    clicktally_proto::v1::ClickEvent {
        event_id: id.into(),
        time_unix_ms: time_ms,
        url: url.into(),
        action_type: action.into(),
        source_action: action.into(),
        source: "defender".into(),
        ..Default::default()
    }
}

/// Pushes one batch over a fresh `ClickIngest.Push` stream and returns its acknowledgement.
pub async fn push(
    endpoint: &str,
    collector_id: &str,
    first_sequence: u64,
    events: Vec<clicktally_proto::v1::ClickEvent>,
) -> clicktally_proto::v1::PushAck {
    let mut client =
        clicktally_proto::v1::click_ingest_client::ClickIngestClient::connect(endpoint.to_owned())
            .await
            .unwrap();
    let batch = clicktally_proto::v1::EventBatch {
        collector_id: collector_id.into(),
        first_sequence,
        events,
    };
    let mut acks = client
        .push(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner();
    acks.message().await.unwrap().unwrap()
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_times_are_rfc3339() {
        assert_eq!(
            super::chrono_like(1_796_126_400_123),
            "2026-12-01T12:00:00.1230000Z"
        );
        assert_eq!(
            super::chrono_like(951_782_400_000),
            "2000-02-29T00:00:00.0000000Z"
        );
    }
}
