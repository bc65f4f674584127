//! Defender files in, through the collector, over gRPC on loopback, into the aggregator's sled
//! store, and back out as exactly the seed query's answer.

use clicktally_aggregator::ManualClock;
use clicktally_collector::input::InputSpec;
use clicktally_collector::sources::SourceKind;
use clicktally_collector::CollectorConfig;
use clicktally_proto::v1::SummaryRequest;
use clicktally_tests::{seed_rows, write_file, TestAggregator};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// 2026-12-01T12:00:00Z
const NOW: i64 = 1_796_126_400_000;

/// Blob JSON Lines (CRLF): the tricky ActionType cases, a byte-identical duplicate, a malformed
/// line between good ones, and a click 8 days old.
const BLOB: &str = concat!(
    r#"{"time":"2026-11-30T10:00:01Z","tenantId":"t1","category":"AdvancedHunting-UrlClickEvents","properties":{"Timestamp":"2026-11-30T10:00:00.1000000Z","Url":"https://a.example/login","ActionType":"ClickBlocked","IsClickedThrough":true,"ReportId":"1"}}"#,
    "\r\n",
    r#"{"time":"2026-11-30T10:05:01Z","tenantId":"t1","category":"AdvancedHunting-UrlClickEvents","properties":{"Timestamp":"2026-11-30T10:05:00.1000000Z","Url":"https://a.example/login","ActionType":"clickblocked","IsClickedThrough":0,"ReportId":"2"}}"#,
    "\r\n",
    r#"{"time":"2026-11-30T10:05:01Z","tenantId":"t1","category":"AdvancedHunting-UrlClickEvents","properties":{"Timestamp":"2026-11-30T10:05:00.1000000Z","Url":"https://a.example/login","ActionType":"clickblocked","IsClickedThrough":0,"ReportId":"2"}}"#,
    "\r\n",
    r#"{"time":"2026-11-30T11:00:01Z","tenantId":"t1","category":"AdvancedHunting-UrlClickEvents","properties":{"Timestamp":"2026-11-30T11:00:00Z","Url":"https://a.example/login","ActionType":"ClickBlocked;Foo","IsClickedThrough":"false","ReportId":"3"}}"#,
    "\r\n",
    r#"{"time":"2026-11-30T11:00:01Z","tenantId":"t1","category":"AdvancedHunting-UrlClickEvents","properties":{"Timestamp":"2026-11-30T11:00:0"#,
    "\r\n",
    r#"{"time":"2026-11-30T12:00:01Z","tenantId":"t1","category":"AdvancedHunting-UrlClickEvents","properties":{"Timestamp":"2026-11-30T12:00:00Z","Url":"https://b.example/policy","ActionType":"ClickBlockedByTenantPolicy","IsClickedThrough":null,"ReportId":"4"}}"#,
    "\r\n",
    r#"{"time":"2026-11-30T12:01:01Z","tenantId":"t1","category":"AdvancedHunting-UrlClickEvents","properties":{"Timestamp":"2026-11-30T12:01:00Z","Url":"https://b.example/policy","ActionType":"ClickBlockedByTenantPolicy","ReportId":"5"}}"#,
    "\r\n",
    r#"{"time":"2026-11-23T09:00:01Z","tenantId":"t1","category":"AdvancedHunting-UrlClickEvents","properties":{"Timestamp":"2026-11-23T09:00:00Z","Url":"https://old.example/","ActionType":"ClickAllowed","ReportId":"6"}}"#,
    "\r\n",
);

/// An Event Hub message (pretty-printed) with a click-through on an allowed URL, a pending
/// verdict, an error page, and a record of another category.
const EVENT_HUB: &str = r#"{
  "records": [
    {"time": "2026-12-01T08:00:00Z", "tenantId": "t1", "category": "AdvancedHunting-UrlClickEvents",
     "properties": {"Timestamp": "2026-12-01T07:59:58Z", "Url": "https://c.example/doc", "ActionType": "ClickAllowed", "IsClickedThrough": "1", "ReportId": "7"}},
    {"time": "2026-12-01T08:00:00Z", "tenantId": "t1", "category": "AdvancedHunting-EmailEvents",
     "properties": {"Timestamp": "2026-12-01T07:59:00Z", "Subject": "hello"}},
    {"time": "2026-12-01T08:10:00Z", "tenantId": "t1", "category": "AdvancedHunting-UrlClickEvents",
     "properties": {"Timestamp": "2026-12-01T08:09:58Z", "Url": "https://c.example/doc", "ActionType": "UrlScanInProgress", "IsClickedThrough": false, "ReportId": "8"}}
  ]
}
"#;

/// Sentinel rows (TimeGenerated, Type).
const SENTINEL: &str = concat!(
    r#"{"TenantId":"t1","TimeGenerated":"2026-12-01T09:00:00Z","Url":"https://c.example/doc","ActionType":"UrlErrorPage","IsClickedThrough":1,"Type":"UrlClickEvents"}"#,
    "\n",
    r#"{"TenantId":"t1","TimeGenerated":"2026-12-01T09:30:00Z","Url":"https://d.example/","ActionType":"SomethingNew","Type":"UrlClickEvents"}"#,
    "\n",
);

fn collector_config(
    spool: &std::path::Path,
    dir: &std::path::Path,
    endpoint: String,
) -> CollectorConfig {
    let mut c = CollectorConfig::new(spool);
    c.inputs = vec![InputSpec {
        kind: SourceKind::Defender,
        pattern: dir.display().to_string(),
    }];
    c.once = true;
    c.once_deadline = std::time::Duration::from_secs(30);
    c.shipper.endpoint = endpoint;
    c
}

#[tokio::test]
async fn defender_files_give_exactly_the_seed_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    write_file(&inputs, "1-blob.jsonl", BLOB);
    write_file(&inputs, "2-eventhub.json", EVENT_HUB);
    write_file(&inputs, "3-sentinel.jsonl", SENTINEL);
    let clock = Arc::new(ManualClock::new(NOW));
    let agg = TestAggregator::start(&tmp.path().join("agg"), clock.clone()).await;

    let spool = tmp.path().join("spool");
    let report = clicktally_collector::run(
        collector_config(&spool, &inputs, agg.endpoint()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    // 8 blob lines (one malformed), 3 Event Hub records (one EmailEvents), 2 Sentinel rows.
    assert_eq!(report.records, 13);
    assert_eq!(report.events, 11);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.dead_lettered, 1);
    assert_eq!(report.shipped, 11);
    assert_eq!(report.applied, 10);
    assert_eq!(report.duplicates, 1);

    let dead = std::fs::read_to_string(spool.join("dead-letter.jsonl")).unwrap();
    let dead: serde_json::Value = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!(dead["line"], 5);
    assert_eq!(dead["source"], "defender");
    assert!(
        dead["reason"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{dead}"
    );
    assert!(dead["input"].as_str().unwrap().ends_with("1-blob.jsonl"));

    let expected_7d = vec![
        ("https://a.example/login".to_string(), 3, 0, 0, 0, 1, 3),
        ("https://b.example/policy".to_string(), 0, 0, 0, 0, 0, 2),
        ("https://c.example/doc".to_string(), 0, 1, 1, 1, 2, 3),
        ("https://d.example/".to_string(), 0, 0, 0, 0, 0, 1),
    ];
    let rows = agg.summary(SummaryRequest::default()).await;
    assert_eq!(seed_rows(&rows), expected_7d);
    let b = rows
        .iter()
        .find(|r| r.key == "https://b.example/policy")
        .unwrap();
    assert_eq!(b.blocked_by_policy, 2);
    // Default order: Total descending, ties by URL.
    let order: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(
        order,
        [
            "https://a.example/login",
            "https://c.example/doc",
            "https://b.example/policy",
            "https://d.example/"
        ]
    );

    // A wider window includes the 8-day-old click.
    let wide = agg
        .summary(SummaryRequest {
            since_unix_ms: Some(NOW - 10 * 86_400_000),
            ..Default::default()
        })
        .await;
    assert_eq!(wide.len(), 5);
    assert_eq!(
        seed_rows(&wide)[4],
        ("https://old.example/".to_string(), 0, 1, 0, 0, 0, 1)
    );

    // The same files through a second collector (a new spool): every click is a duplicate.
    let again = clicktally_collector::run(
        collector_config(&tmp.path().join("spool2"), &inputs, agg.endpoint()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        (again.shipped, again.applied, again.duplicates),
        (11, 0, 11)
    );
    // The first collector again, on its own spool: its checkpoints say everything was read.
    let resumed = clicktally_collector::run(
        collector_config(&spool, &inputs, agg.endpoint()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!((resumed.records, resumed.shipped), (0, 0));

    // Restarted on the same data directory, the aggregator answers the same.
    agg.shutdown().await;
    let agg = TestAggregator::start(&tmp.path().join("agg"), clock).await;
    assert_eq!(
        seed_rows(&agg.summary(SummaryRequest::default()).await),
        expected_7d
    );
    agg.shutdown().await;
}

#[tokio::test]
async fn summary_json_uses_the_seed_column_names_and_health_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    write_file(&inputs, "3-sentinel.jsonl", SENTINEL);
    let agg = TestAggregator::start(&tmp.path().join("agg"), Arc::new(ManualClock::new(NOW))).await;
    clicktally_collector::run(
        collector_config(&tmp.path().join("spool"), &inputs, agg.endpoint()),
        CancellationToken::new(),
    )
    .await
    .unwrap();

    let out = clicktally_console::query::summary(
        &clicktally_console::query::Conn::plain(agg.endpoint()),
        SummaryRequest {
            order_by: "Url".into(),
            ..Default::default()
        },
        clicktally_console::render::Format::Json,
        80,
        false,
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!([
            {"Url": "https://c.example/doc", "Blocked": 0, "Allowed": 0, "PendingVerdict": 0, "Error": 1,
             "ClickedThrough": 1, "Total": 1, "BlockedByPolicy": 0,
             "FirstSeen": "2026-12-01T09:00:00Z", "LastSeen": "2026-12-01T09:00:00Z",
             "Actions": {"UrlErrorPage": 1}, "Sources": {"defender": 1}},
            {"Url": "https://d.example/", "Blocked": 0, "Allowed": 0, "PendingVerdict": 0, "Error": 0,
             "ClickedThrough": 0, "Total": 1, "BlockedByPolicy": 0,
             "FirstSeen": "2026-12-01T09:30:00Z", "LastSeen": "2026-12-01T09:30:00Z",
             "Actions": {"SomethingNew": 1}, "Sources": {"defender": 1}}
        ])
    );

    let channel = tonic::transport::Endpoint::from_shared(agg.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["clicktally.v1.ClickIngest", "clicktally.v1.ClickQuery"] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service}"
        );
    }
    agg.shutdown().await;
}
