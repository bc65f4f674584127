//! Property tests: random bytes never panic a parser and always come back as a precise error;
//! random structurally valid records always come back as exactly the click they describe.

use clicktally_collector::record::{FieldLimits, Record};
use clicktally_collector::sources::SourceKind;
use proptest::prelude::*;
use serde_json::json;

const NOW: i64 = 1_796_126_400_000; // 2026-12-01T12:00:00Z
const KINDS: [SourceKind; 3] = [
    SourceKind::Defender,
    SourceKind::Proofpoint,
    SourceKind::Mimecast,
];

fn limits() -> FieldLimits {
    FieldLimits {
        max_url_bytes: 8192,
        now_ms: NOW,
    }
}

fn parse(kind: SourceKind, bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    kind.parse(bytes, &limits(), &mut out);
    out
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn only_click(records: Vec<Record>) -> clicktally_proto::v1::ClickEvent {
    assert_eq!(records.len(), 1, "{records:?}");
    match records.into_iter().next().unwrap() {
        Record::Click(c) => c,
        other => panic!("expected a click, got {other:?}"),
    }
}

/// URLs with characters that need escaping in JSON.
fn url() -> impl Strategy<Value = String> {
    "[a-z]{1,12}\\.example/[ -~äöü€\"\\\\\t]{0,40}".prop_map(|s| format!("https://{s}"))
}

/// Click times within the last 30 days.
fn time() -> impl Strategy<Value = i64> {
    (NOW - 30 * 86_400_000)..NOW
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_one_precise_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let is_json = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
        for kind in KINDS {
            let out = parse(kind, &bytes);
            if !is_json {
                prop_assert_eq!(out.len(), 1);
                match &out[0] {
                    Record::Invalid { reason, .. } => prop_assert!(reason.starts_with("malformed JSON"), "{}", reason),
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }

    #[test]
    fn mutated_valid_records_never_panic(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
        let samples = [
            (SourceKind::Defender, include_str!("../../examples/defender/sentinel-urlclickevents.jsonl").lines().next().unwrap().as_bytes()),
            (SourceKind::Proofpoint, include_str!("../../examples/proofpoint/siem-all-2026-11-29.json").as_bytes()),
            (SourceKind::Mimecast, include_str!("../../examples/mimecast/url-logs-2026-11-29.json").as_bytes()),
        ];
        for (kind, sample) in samples {
            let mut b = sample[..cut.min(sample.len())].to_vec();
            if !b.is_empty() {
                let i = flip % b.len();
                b[i] = byte;
            }
            let _ = parse(kind, &b);
        }
    }

    #[test]
    fn defender_rows_round_trip(url in url(), t in time(), action in "[A-Za-z]{1,20}([;, ][A-Za-z]{1,10})?", through in 0usize..8) {
        let spellings = [json!(true), json!(false), json!(1), json!(0), json!("true"), json!("0"), json!(null), json!("FALSE")];
        let expected_through = [true, false, true, false, true, false, false, false][through];
        let row = json!({"Timestamp": rfc3339(t), "Url": url, "ActionType": action, "IsClickedThrough": spellings[through]});
        let c = only_click(parse(SourceKind::Defender, row.to_string().as_bytes()));
        prop_assert_eq!(&c.url, &url);
        prop_assert_eq!(&c.action_type, &action);
        prop_assert_eq!(c.time_unix_ms, t);
        prop_assert_eq!(c.clicked_through, expected_through);
        // Wrapped in an Event Hub message, the same row gives the same click and event id.
        let hub = json!({"records": [{"time": rfc3339(t), "category": "AdvancedHunting-UrlClickEvents", "properties": row}]});
        let h = only_click(parse(SourceKind::Defender, hub.to_string().as_bytes()));
        prop_assert_eq!(h.event_id, c.event_id);
    }

    #[test]
    fn proofpoint_responses_round_trip(
        permitted in proptest::collection::vec((url(), time()), 0..5),
        blocked in proptest::collection::vec((url(), time()), 0..5),
        messages in 0usize..4,
    ) {
        let clicks = |v: &Vec<(String, i64)>, tag: &str| v.iter().enumerate().map(|(i, (u, t))| json!({
            "id": format!("{tag}-{i}"), "url": u, "clickTime": rfc3339(*t), "classification": "PHISH", "recipient": "a@b.example"
        })).collect::<Vec<_>>();
        let resp = json!({
            "queryEndTime": rfc3339(NOW),
            "clicksPermitted": clicks(&permitted, "p"),
            "clicksBlocked": clicks(&blocked, "b"),
            "messagesDelivered": vec![json!({"GUID": "g"}); messages],
        });
        let out = parse(SourceKind::Proofpoint, resp.to_string().as_bytes());
        prop_assert_eq!(out.len(), permitted.len() + blocked.len() + messages);
        let expected = permitted.iter().map(|(u, t)| (u, t, "ClickAllowed"))
            .chain(blocked.iter().map(|(u, t)| (u, t, "ClickBlocked")));
        for (rec, (u, t, action)) in out.iter().zip(expected) {
            match rec {
                Record::Click(c) => {
                    prop_assert_eq!(&c.url, u);
                    prop_assert_eq!(c.time_unix_ms, *t);
                    prop_assert_eq!(c.action_type.as_str(), action);
                    prop_assert_eq!(c.threat_types.clone(), vec!["phish".to_string()]);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        let skipped = out.iter().filter(|r| matches!(r, Record::Skipped(_))).count();
        prop_assert_eq!(skipped, messages);
    }

    #[test]
    fn mimecast_rows_follow_the_mapping(
        url in url(),
        t in time(),
        action in prop::sample::select(vec!["allow", "block", "warn", "Allow", "WARN"]),
        awareness in prop::sample::select(vec!["", "Continue", "continue", "Cancel"]),
        user_override in prop::sample::select(vec!["", "None", "N/A", "Continue", "Yes"]),
    ) {
        let date = chrono::DateTime::from_timestamp_millis(t / 1000 * 1000).unwrap().format("%Y-%m-%dT%H:%M:%S+0000").to_string();
        let row = json!({"url": url, "date": date, "action": action, "userAwarenessAction": awareness,
                         "userOverride": user_override, "creationMethod": "User Click", "userEmailAddress": "a@b.example"});
        let c = only_click(parse(SourceKind::Mimecast, row.to_string().as_bytes()));
        let through = awareness.eq_ignore_ascii_case("continue") || !["", "none", "n/a"].contains(&user_override.to_ascii_lowercase().as_str());
        let expected = match action.to_ascii_lowercase().as_str() {
            "allow" => "ClickAllowed",
            "block" => "ClickBlocked",
            _ if through => "ClickAllowed",
            _ => "ClickBlocked",
        };
        prop_assert_eq!(c.clicked_through, through);
        prop_assert_eq!(c.action_type.as_str(), expected);
        prop_assert_eq!(c.source_action.as_str(), action);
        prop_assert_eq!(c.time_unix_ms, t / 1000 * 1000);
        prop_assert_eq!(&c.url, &url);
        prop_assert_eq!(c.account.as_str(), "a@b.example");
    }
}
