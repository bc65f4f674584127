//! Without `--once`, file inputs are followed: lines appended later and files created later are
//! read, a half-written last line waits for its newline, and a restart resumes at the
//! checkpointed offsets, neither re-reading nor skipping.

use clicktally_aggregator::ManualClock;
use clicktally_collector::input::InputSpec;
use clicktally_collector::sources::SourceKind;
use clicktally_collector::{CollectorConfig, Report};
use clicktally_proto::v1::SummaryRequest;
use clicktally_tests::TestAggregator;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// 2026-12-01T12:00:00Z
const NOW: i64 = 1_796_126_400_000;

fn line(n: u32) -> String {
    format!("{{\"Timestamp\":\"2026-12-01T10:00:{:02}Z\",\"Url\":\"https://f.example/{}\",\"ActionType\":\"ClickAllowed\",\"ReportId\":\"{n}\"}}\n", n % 60, n % 3)
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn start(dir: &Path, endpoint: String, stop: CancellationToken) -> JoinHandle<Report> {
    let mut c = CollectorConfig::new(dir.join("spool"));
    c.inputs = vec![InputSpec {
        kind: SourceKind::Defender,
        pattern: format!("{}/*.jsonl", dir.join("in").display()),
    }];
    c.follow_interval = Duration::from_millis(50);
    c.shipper.endpoint = endpoint;
    tokio::spawn(async move { clicktally_collector::run(c, stop).await.unwrap() })
}

async fn total(agg: &TestAggregator) -> u64 {
    agg.summary(SummaryRequest::default())
        .await
        .iter()
        .map(|r| r.total)
        .sum()
}

/// Waits (bounded) until the aggregator counts `n` clicks.
async fn until_total(agg: &TestAggregator, n: u64) {
    for _ in 0..400 {
        if total(agg).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {n} clicks, have {}", total(agg).await);
}

#[tokio::test]
async fn growing_and_new_files_are_followed_and_resumed_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("in")).unwrap();
    let a = dir.join("in/a.jsonl");
    append(&a, &(1..=3).map(line).collect::<String>());
    let agg = TestAggregator::start(&dir.join("agg"), Arc::new(ManualClock::new(NOW))).await;

    let stop = CancellationToken::new();
    let run = start(dir, agg.endpoint(), stop.clone());
    until_total(&agg, 3).await;
    // Two more lines and the first half of a third.
    let sixth = line(6);
    let (head, tail) = sixth.split_at(30);
    append(&a, &format!("{}{}{head}", line(4), line(5)));
    until_total(&agg, 5).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(total(&agg).await, 5, "a half-written line is not read");
    append(&a, tail);
    append(
        &dir.join("in/b.jsonl"),
        &(7..=8).map(line).collect::<String>(),
    );
    until_total(&agg, 8).await;
    stop.cancel();
    let first = run.await.unwrap();
    assert_eq!(
        (first.records, first.dead_lettered, first.duplicates),
        (8, 0, 0)
    );

    // While it is down: one more line in each file. The restart reads only those.
    append(&a, &line(9));
    append(&dir.join("in/b.jsonl"), &line(10));
    let stop = CancellationToken::new();
    let run = start(dir, agg.endpoint(), stop.clone());
    until_total(&agg, 10).await;
    stop.cancel();
    let second = run.await.unwrap();
    assert_eq!(
        (second.records, second.shipped, second.duplicates),
        (2, 2, 0)
    );
    let per_url: Vec<(String, u64)> = agg
        .summary(SummaryRequest {
            order_by: "Url".into(),
            ..Default::default()
        })
        .await
        .into_iter()
        .map(|r| (r.key, r.allowed))
        .collect();
    assert_eq!(
        per_url,
        [
            ("https://f.example/0".to_string(), 3),
            ("https://f.example/1".to_string(), 4),
            ("https://f.example/2".to_string(), 3)
        ]
    );
    agg.shutdown().await;
}
