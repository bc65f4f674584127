//! A full spool pauses the inputs instead of dropping anything: with the aggregator away, the
//! collector reads only up to its spool limit (plus one read chunk), keeps its file offset, and
//! finishes the file exactly once the aggregator is back.

use clicktally_aggregator::ManualClock;
use clicktally_collector::input::InputSpec;
use clicktally_collector::sources::SourceKind;
use clicktally_collector::{CollectorConfig, CollectorError};
use clicktally_tests::{all_rows, as_expected, free_port, generate_defender, TestAggregator};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_full_spool_pauses_reading_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let now = 1_796_126_400_000;
    let expected = generate_defender(&input, 1, 3_000, 200, now, 5);
    let config = |endpoint: String| {
        let mut c = CollectorConfig::new(tmp.path().join("spool"));
        c.inputs = vec![InputSpec {
            kind: SourceKind::Defender,
            pattern: input.display().to_string(),
        }];
        c.once = true;
        c.once_deadline = Duration::from_millis(1500);
        c.chunk_records = 100;
        c.max_spool_events = 300;
        c.shipper.endpoint = endpoint;
        c
    };
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let err = clicktally_collector::run(config(nobody), CancellationToken::new())
        .await
        .unwrap_err();
    let spooled = match err {
        CollectorError::Deadline { unacked, .. } => unacked,
        other => panic!("expected a deadline error, got {other}"),
    };
    assert!(
        (300..=400).contains(&spooled),
        "spooled {spooled} events past a limit of 300"
    );

    let agg = TestAggregator::start(&tmp.path().join("agg"), Arc::new(ManualClock::new(now))).await;
    let mut c = config(agg.endpoint());
    c.once_deadline = Duration::from_secs(30);
    let report = clicktally_collector::run(c, CancellationToken::new())
        .await
        .unwrap();
    // The second run reads only what the first left (its offset was checkpointed) and ships
    // the spooled events as well: every line once.
    assert_eq!(report.records, 3_000 - spooled);
    assert_eq!(report.shipped, 3_000);
    assert_eq!(as_expected(&all_rows(&agg.endpoint()).await), expected);
    agg.shutdown().await;
}
