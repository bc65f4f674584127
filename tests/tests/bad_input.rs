//! Bad input everywhere: every malformed record is dead-lettered with its reason, the rest of
//! the file is still counted exactly, and nothing panics or stops.

use clicktally_aggregator::ManualClock;
use clicktally_collector::input::InputSpec;
use clicktally_collector::sources::SourceKind;
use clicktally_collector::CollectorConfig;
use clicktally_proto::v1::SummaryRequest;
use clicktally_tests::{seed_rows, TestAggregator};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// 2026-12-01T12:00:00Z
const NOW: i64 = 1_796_126_400_000;

fn row(url: &str, action: &str) -> String {
    format!(
        r#"{{"Timestamp":"2026-12-01T10:00:00Z","Url":"{url}","ActionType":"{action}","IsClickedThrough":false}}"#
    )
}

#[tokio::test]
async fn every_bad_record_is_dead_lettered_with_its_reason_and_the_rest_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines: Vec<Vec<u8>> = vec![
        row("https://good.example/a", "ClickBlocked").into_bytes(),
        b"{not json".to_vec(),
        br#"{"Timestamp": 5, "Url": "https://x.example/", "ActionType": "ClickAllowed"}"#.to_vec(),
        format!(r#"{{"Timestamp":"2026-12-01T10:00:00Z","Url":"https://x.example/{}","ActionType":"ClickAllowed"}}"#, "y".repeat(2 * 1024 * 1024)).into_bytes(),
    ];
    let mut invalid_utf8 =
        br#"{"Timestamp":"2026-12-01T10:00:00Z","Url":"https://x.example/"#.to_vec();
    invalid_utf8.extend_from_slice(b"\xff\xfe");
    invalid_utf8.extend_from_slice(br#"","ActionType":"ClickAllowed"}"#);
    lines.push(invalid_utf8);
    lines.push(br#"{"Timestamp":"1970-01-01T00:00:00Z","Url":"https://x.example/","ActionType":"ClickAllowed"}"#.to_vec());
    lines.push(br#"{"Timestamp":"9999-12-31T23:59:59Z","Url":"https://x.example/","ActionType":"ClickAllowed"}"#.to_vec());
    lines.push(
        row(
            &format!("https://x.example/{}", "z".repeat(100 * 1024)),
            "ClickAllowed",
        )
        .into_bytes(),
    );
    lines.push(b"\x00\x01\x02 binary \x7f".to_vec());
    lines.push(row("https://good.example/a", "ClickAllowed").into_bytes());
    let mut file = lines.join(&b"\n"[..]);
    // The last line is cut off mid-write (no newline, truncated JSON).
    file.extend_from_slice(b"\n{\"Timestamp\":\"2026-12-01T10:00:00Z\",\"Url\":\"https://");
    std::fs::write(dir.join("a-lines.jsonl"), file).unwrap();
    // A pretty-printed Event Hub message cut off in the middle.
    std::fs::write(
        dir.join("b-truncated.json"),
        "{\n  \"records\": [\n    {\"time\": \"2026-12-01T10:00:00Z\",\n",
    )
    .unwrap();
    std::fs::write(dir.join("c-empty.json"), "").unwrap();

    let agg = TestAggregator::start(&tmp.path().join("agg"), Arc::new(ManualClock::new(NOW))).await;
    let spool = tmp.path().join("spool");
    let mut config = CollectorConfig::new(&spool);
    config.inputs = vec![InputSpec {
        kind: SourceKind::Defender,
        pattern: dir.display().to_string(),
    }];
    config.once = true;
    config.max_record_bytes = 1024 * 1024;
    config.shipper.endpoint = agg.endpoint();
    let report = clicktally_collector::run(config, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        (report.events, report.dead_lettered, report.applied),
        (2, 10, 2)
    );

    let dead: Vec<serde_json::Value> = std::fs::read_to_string(spool.join("dead-letter.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<(u64, String)> = dead
        .iter()
        .map(|d| {
            (
                d["line"].as_u64().unwrap(),
                d["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expect_prefix = [
        (2, "malformed JSON: key must be a string"),
        (
            3,
            "malformed record: invalid type: integer `5`, expected a string",
        ),
        // 2 MiB of URL plus 91 bytes of JSON around it.
        (4, "record of 2097243 bytes exceeds the 1048576-byte limit"),
        (5, "malformed JSON: invalid unicode code point"),
        (6, "time 1970-01-01T00:00:00+00:00 is out of range"),
        (7, "time 9999-12-31T23:59:59+00:00 is out of range"),
        (8, "url of 102418 bytes exceeds the 8192-byte limit"),
        (9, "malformed JSON: expected value"),
        (11, "malformed JSON: EOF while parsing a string"),
        (1, "malformed JSON: EOF while parsing an object at line 4"),
    ];
    assert_eq!(reasons.len(), expect_prefix.len(), "{reasons:#?}");
    for ((line, reason), (want_line, want)) in reasons.iter().zip(expect_prefix) {
        assert_eq!(*line, want_line, "{reason}");
        assert!(
            reason.starts_with(want),
            "line {line}: {reason:?} should start with {want:?}"
        );
    }
    assert!(dead[9]["input"]
        .as_str()
        .unwrap()
        .ends_with("b-truncated.json"));
    // Records are kept (cut at 64 KiB) so they can be fixed and replayed.
    assert_eq!(dead[0]["record"], "{not json");
    assert_eq!(dead[6]["record"].as_str().unwrap().len(), 64 * 1024);

    let rows = agg.summary(SummaryRequest::default()).await;
    assert_eq!(
        seed_rows(&rows),
        vec![("https://good.example/a".to_string(), 1, 1, 0, 0, 0, 2)]
    );
    agg.shutdown().await;
}
