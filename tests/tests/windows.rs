//! Exclusions, grouping, windows and retention with exact counts and controllable time.

use clicktally_aggregator::{AggregatorConfig, ManualClock};
use clicktally_proto::v1::{GroupBy, SummaryRequest};
use clicktally_tests::{click, push, TestAggregator};
use std::sync::Arc;
use std::time::Duration;

const NOW: i64 = 1_796_126_400_000; // 2026-12-01T12:00:00Z
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn totals(rows: &[clicktally_proto::v1::SummaryRow]) -> Vec<(String, u64)> {
    let mut v: Vec<_> = rows.iter().map(|r| (r.key.clone(), r.total)).collect();
    v.sort();
    v
}

#[tokio::test]
async fn retention_deletes_old_buckets_in_the_background_and_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(NOW));
    let config = |clock: Arc<ManualClock>| {
        let mut c = AggregatorConfig::new(tmp.path().join("agg"));
        c.clock = clock;
        c.retention = Duration::from_secs(2 * 86_400);
        c.retention_interval = Duration::from_millis(50);
        c
    };
    let agg = TestAggregator::start_with(config(clock.clone())).await;
    let e = agg.endpoint();
    let ack = push(
        &e,
        "c",
        1,
        vec![
            click("a", "https://old.example/", "ClickBlocked", NOW - 36 * HOUR),
            click("b", "https://new.example/", "ClickAllowed", NOW - HOUR),
            click(
                "c",
                "https://ancient.example/",
                "ClickAllowed",
                NOW - 3 * DAY,
            ),
        ],
    )
    .await;
    assert_eq!(
        (ack.applied, ack.expired),
        (2, 1),
        "older than retention is not counted"
    );
    let all = SummaryRequest {
        since_unix_ms: Some(NOW - 30 * DAY),
        until_unix_ms: Some(NOW + DAY),
        ..Default::default()
    };
    assert_eq!(
        totals(&agg.summary(all.clone()).await),
        [
            ("https://new.example/".into(), 1),
            ("https://old.example/".into(), 1)
        ]
    );
    // A day later the 36-hour-old click is 60 hours old: past the 2-day retention.
    clock.advance(DAY);
    let mut rows = agg.summary(all.clone()).await;
    for _ in 0..200 {
        if rows.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        rows = agg.summary(all.clone()).await;
    }
    assert_eq!(totals(&rows), [("https://new.example/".into(), 1)]);
    // Ingestion went on meanwhile, and the deletion is on disk: a restart does not bring it back.
    push(
        &e,
        "c",
        4,
        vec![click("d", "https://new.example/", "ClickAllowed", NOW)],
    )
    .await;
    agg.shutdown().await;
    let agg = TestAggregator::start_with(config(clock)).await;
    assert_eq!(
        totals(&agg.summary(all).await),
        [("https://new.example/".into(), 2)]
    );
    agg.shutdown().await;
}

#[tokio::test]
async fn configured_exclusions_grouping_and_windows_give_exact_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = AggregatorConfig::new(tmp.path().join("agg"));
    c.clock = Arc::new(ManualClock::new(NOW));
    c.exclusions = vec![
        "jenkins.enterprise.com".into(),
        "training.microsoft.com".into(),
    ];
    let agg = TestAggregator::start_with(c).await;
    let e = agg.endpoint();
    push(
        &e,
        "c",
        1,
        vec![
            click(
                "1",
                "https://jenkins.enterprise.com/job/1",
                "ClickAllowed",
                NOW - HOUR,
            ),
            click(
                "2",
                "https://ci.jenkins.enterprise.com/x",
                "ClickAllowed",
                NOW - HOUR,
            ),
            click(
                "3",
                "https://training.microsoft.com/sim",
                "ClickBlocked",
                NOW - 2 * DAY,
            ),
            click("4", "https://a.evil.co.uk/1", "ClickBlocked", NOW - HOUR),
            click("5", "https://b.evil.co.uk/2", "ClickBlocked", NOW - 3 * DAY),
            click("6", "https://a.evil.co.uk/1", "ClickAllowed", NOW - 8 * DAY),
        ],
    )
    .await;
    // Default: the last 7 days, configured exclusions on.
    let r = {
        let mut client =
            clicktally_proto::v1::click_query_client::ClickQueryClient::connect(e.clone())
                .await
                .unwrap();
        client
            .summary(SummaryRequest::default())
            .await
            .unwrap()
            .into_inner()
    };
    assert_eq!(
        totals(&r.rows),
        [
            ("https://a.evil.co.uk/1".into(), 1),
            ("https://b.evil.co.uk/2".into(), 1)
        ]
    );
    assert_eq!((r.excluded_rows, r.excluded_clicks), (3, 3));
    // Exclusions off, grouped by registrable domain.
    let by_domain = agg
        .summary(SummaryRequest {
            no_exclusions: true,
            group_by: GroupBy::Domain as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(
        totals(&by_domain),
        [
            ("enterprise.com".into(), 2),
            ("evil.co.uk".into(), 2),
            ("microsoft.com".into(), 1)
        ]
    );
    // A fixed window of the last 2.5 days, by host, with a per-request exclusion.
    let recent = agg
        .summary(SummaryRequest {
            since_unix_ms: Some(NOW - 2 * DAY - 12 * HOUR),
            group_by: GroupBy::Host as i32,
            exclude_hosts: vec!["evil.co.uk".into()],
            no_exclusions: true,
            ..Default::default()
        })
        .await;
    assert_eq!(
        totals(&recent),
        [
            ("ci.jenkins.enterprise.com".into(), 1),
            ("jenkins.enterprise.com".into(), 1),
            ("training.microsoft.com".into(), 1)
        ]
    );
    agg.shutdown().await;
}
