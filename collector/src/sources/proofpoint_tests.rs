use super::*;

const NOW: i64 = 1_764_806_400_000; // 2025-12-04T00:00:00Z

fn limits() -> FieldLimits {
    FieldLimits {
        max_url_bytes: 8192,
        now_ms: NOW,
    }
}

fn parse_all(text: &str) -> Vec<Record> {
    let mut out = Vec::new();
    parse(text.as_bytes(), &limits(), &mut out);
    out
}

fn click(r: &Record) -> &ClickEvent {
    match r {
        Record::Click(c) => c,
        other => panic!("expected a click, got {other:?}"),
    }
}

fn invalid(r: &Record) -> (&str, Option<&str>) {
    match r {
        Record::Invalid { reason, raw } => (reason.as_str(), raw.as_deref()),
        other => panic!("expected an invalid record, got {other:?}"),
    }
}

const BLOCKED: &str = r#"{"campaignId":"46e01b8a-c899-404d-bcac-2b17fbd5d289","classification":"MALWARE","clickIP":"192.0.2.1","clickTime":"2025-12-01T10:15:30.000Z","GUID":"b27dbea0-87d5-463b-b93c-4e8b708289ce","id":"8c8b4895-a277-449f-r797-547e3c89b25a","messageID":"8c8b4895-a277-449f-r797-547e3c89b25a@example.com","recipient":"bruce.wayne@pharmtech.zz","sender":"9facbf452def2d7efc5b5c48cdb837fa@badguy.zz","senderIP":"192.0.2.255","threatID":"61f7622167144dba5e3ae4480eeee78b23d66f7dfed970cfc3d086cc0dabdf50","threatTime":"2025-12-01T10:10:00.000Z","threatURL":"https://threatinsight.proofpoint.com/a/f1","threatStatus":"active","url":"http://badguy.zz/","userAgent":"Mozilla/5.0"}"#;

const PERMITTED: &str = r#"{"classification":"phish","clickIP":"192.0.2.2","clickTime":"2025-12-01T11:00:00Z","GUID":"g-2","id":"click-2","messageID":"m-2@example.com","recipient":"ann@contoso.com","threatStatus":"active","url":"https://login.example/owa"}"#;

#[test]
fn clicks_blocked_and_permitted_map_to_the_defender_vocabulary() {
    let doc = format!(
        r#"{{"queryEndTime":"2025-12-01T12:00:00Z","clicksPermitted":[{PERMITTED}],"clicksBlocked":[{BLOCKED}],"messagesDelivered":[],"messagesBlocked":[]}}"#
    );
    let out = parse_all(&doc);
    assert_eq!(out.len(), 2);

    let p = click(&out[0]);
    assert_eq!(
        p,
        &ClickEvent {
            event_id: "click-2".into(),
            time_unix_ms: 1_764_586_800_000,
            url: "https://login.example/owa".into(),
            action_type: "ClickAllowed".into(),
            source_action: "clickPermitted".into(),
            clicked_through: false,
            source: "proofpoint".into(),
            tenant: String::new(),
            account: "ann@contoso.com".into(),
            network_message_id: "m-2@example.com".into(),
            ip: "192.0.2.2".into(),
            threat_types: vec!["phish".into()],
            workload: String::new(),
        }
    );

    let b = click(&out[1]);
    assert_eq!(b.event_id, "8c8b4895-a277-449f-r797-547e3c89b25a");
    assert_eq!(b.time_unix_ms, 1_764_584_130_000);
    assert_eq!(b.url, "http://badguy.zz/");
    assert_eq!(b.action_type, "ClickBlocked");
    assert_eq!(b.source_action, "clickBlocked");
    assert!(!b.clicked_through);
    assert_eq!(b.source, "proofpoint");
    assert_eq!(b.tenant, "");
    assert_eq!(b.account, "bruce.wayne@pharmtech.zz");
    assert_eq!(
        b.network_message_id,
        "8c8b4895-a277-449f-r797-547e3c89b25a@example.com"
    );
    assert_eq!(b.ip, "192.0.2.1");
    assert_eq!(b.threat_types, vec!["malware"]);
    assert_eq!(b.workload, "");
}

#[test]
fn classification_is_compared_case_insensitively() {
    let cases = [
        ("MALWARE", vec!["malware"]),
        ("malware", vec!["malware"]),
        ("Malware", vec!["malware"]),
        ("PHISH", vec!["phish"]),
        ("phish", vec!["phish"]),
        ("SPAM", vec!["spam"]),
        ("impostor", vec!["impostor"]),
        (" Phish ", vec!["phish"]),
        ("", vec![]),
    ];
    for (spelling, expected) in cases {
        let doc = format!(
            r#"{{"clicksBlocked":[{{"id":"x","clickTime":"2025-12-01T00:00:00Z","url":"u","classification":"{spelling}"}}]}}"#
        );
        let out = parse_all(&doc);
        assert_eq!(click(&out[0]).threat_types, expected, "{spelling:?}");
    }
    for missing in [
        r#"{"clicksBlocked":[{"id":"x","clickTime":"2025-12-01T00:00:00Z","url":"u"}]}"#,
        r#"{"clicksBlocked":[{"id":"x","clickTime":"2025-12-01T00:00:00Z","url":"u","classification":null}]}"#,
    ] {
        assert!(click(&parse_all(missing)[0]).threat_types.is_empty());
    }
}

#[test]
fn event_id_is_id_else_a_content_hash_never_the_message_guid() {
    let with_id = r#"{"clicksPermitted":[{"id":"abc","GUID":"g","clickTime":"2025-12-01T00:00:00Z","url":"u"}]}"#;
    assert_eq!(click(&parse_all(with_id)[0]).event_id, "abc");

    // Two clicks on one message share its GUID: they must stay two events.
    let a = r#"{"GUID":"g-1","clickTime":"2025-12-01T00:00:00Z","url":"u","recipient":"a@x"}"#;
    let b =
        r#"{"id":"","GUID":"g-1","clickTime":"2025-12-01T00:05:00Z","url":"u","recipient":"a@x"}"#;
    let c = r#"{"id":null,"clickTime":"2025-12-01T00:06:00Z","url":"u"}"#;
    let out = parse_all(&format!(r#"{{"clicksPermitted":[{a},{b},{c}]}}"#));
    assert_eq!(click(&out[0]).event_id, content_id(a.as_bytes()));
    assert_eq!(click(&out[1]).event_id, content_id(b.as_bytes()));
    assert_eq!(click(&out[2]).event_id, content_id(c.as_bytes()));
    assert_ne!(click(&out[0]).event_id, click(&out[1]).event_id);
    assert_eq!(click(&out[0]).event_id.len(), 32);
}

#[test]
fn messages_are_skipped_not_errors() {
    let doc = r#"{
        "queryEndTime": "2025-12-01T12:00:00Z",
        "messagesDelivered": [{"GUID":"m1","subject":"hi","recipient":["a@x"]}, {"GUID":"m2"}],
        "messagesBlocked": [{"GUID":"m3","threatsInfoMap":[]}]
    }"#;
    assert_eq!(
        parse_all(doc),
        vec![Record::Skipped("a message, not a click"); 3]
    );
}

#[test]
fn an_all_response_keeps_the_order_permitted_blocked_then_messages() {
    let doc = format!(
        r#"{{
  "messagesBlocked": [{{"GUID":"m3"}}],
  "clicksBlocked": [{BLOCKED}],
  "messagesDelivered": [{{"GUID":"m1"}}],
  "clicksPermitted": [{PERMITTED}],
  "queryEndTime": "2025-12-01T12:00:00Z"
}}"#
    );
    let out = parse_all(&doc);
    assert_eq!(out.len(), 4);
    assert_eq!(click(&out[0]).action_type, "ClickAllowed");
    assert_eq!(click(&out[1]).action_type, "ClickBlocked");
    assert_eq!(out[2], Record::Skipped("a message, not a click"));
    assert_eq!(out[3], Record::Skipped("a message, not a click"));
}

#[test]
fn empty_and_absent_arrays_yield_nothing() {
    for doc in [
        r#"{"queryEndTime":"2025-12-01T12:00:00Z","clicksPermitted":[],"clicksBlocked":[],"messagesDelivered":[],"messagesBlocked":[]}"#,
        r#"{"queryEndTime":"2025-12-01T12:00:00Z"}"#,
        r#"{"clicksBlocked":[]}"#,
        r#"{"queryEndTime":"2025-12-01T12:00:00Z","clicksBlocked":null,"messagesDelivered":null}"#,
    ] {
        assert_eq!(parse_all(doc), Vec::<Record>::new(), "{doc}");
    }
}

#[test]
fn bad_clicks_are_dead_lettered_without_stopping_the_others() {
    let bad = [
        (
            r#"{"id":"b1","clickTime":"2025-12-01T00:00:00Z"}"#,
            "missing url",
        ),
        (r#"{"id":"b2","url":"u"}"#, "missing clickTime"),
        (
            r#"{"id":"b3","clickTime":"soon","url":"u"}"#,
            "unreadable time \"soon\"",
        ),
        (
            r#"{"id":"b6","clickTime":"2025-12-01T00:00:00Z","url":""}"#,
            "empty url",
        ),
    ];
    let body: Vec<&str> = bad.iter().map(|(raw, _)| *raw).collect();
    let doc = format!(
        r#"{{"clicksBlocked":[{},
            {{"id":"b4","clickTime":"2025-12-01T00:00:00Z","url":7}},
            {{"id":"b5","clickTime":"1999-01-01T00:00:00Z","url":"u"}},
            "just a string",
            {{"id":"ok","clickTime":"2025-12-01T00:00:00Z","url":"https://fine.example/"}}]}}"#,
        body.join(",")
    );
    let out = parse_all(&doc);
    assert_eq!(out.len(), 8);
    for (i, (raw, reason)) in bad.iter().enumerate() {
        assert_eq!(invalid(&out[i]), (*reason, Some(*raw)));
    }
    let (reason, raw) = invalid(&out[4]);
    assert!(
        reason.starts_with("malformed click: invalid type"),
        "{reason}"
    );
    assert_eq!(
        raw,
        Some(r#"{"id":"b4","clickTime":"2025-12-01T00:00:00Z","url":7}"#)
    );
    let (reason, _) = invalid(&out[5]);
    assert!(reason.contains("out of range"), "{reason}");
    assert_eq!(
        invalid(&out[6]),
        (
            "malformed click: not a JSON object",
            Some("\"just a string\"")
        )
    );
    assert_eq!(click(&out[7]).event_id, "ok");
}

#[test]
fn long_urls_are_refused() {
    let doc = format!(
        r#"{{"clicksPermitted":[{{"id":"x","clickTime":"2025-12-01T00:00:00Z","url":"{}"}}]}}"#,
        "a".repeat(9000)
    );
    let out = parse_all(&doc);
    let (reason, _) = invalid(&out[0]);
    assert!(reason.contains("exceeds the 8192-byte limit"), "{reason}");
}

#[test]
fn malformed_and_foreign_documents_are_one_invalid_record() {
    let reason = |text: &str| {
        let out = parse_all(text);
        assert_eq!(out.len(), 1, "{text}");
        match &out[0] {
            Record::Invalid { reason, raw: None } => reason.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert!(reason(r#"{"clicksBlocked": [ "#).starts_with("malformed JSON"));
    assert!(reason("not json").starts_with("malformed JSON"));
    assert!(reason(r#"{"clicksBlocked":[]} trailing"#).starts_with("malformed JSON"));
    assert_eq!(
        reason("{}"),
        "not a Proofpoint SIEM response: none of queryEndTime, clicksPermitted, clicksBlocked, \
         messagesDelivered, messagesBlocked"
    );
    // A bare click object is not a response.
    assert!(reason(PERMITTED).starts_with("not a Proofpoint SIEM response"));
    assert_eq!(
        reason(&format!("[{PERMITTED}]")),
        "not a Proofpoint SIEM response: not a JSON object"
    );
    assert!(reason(r#"{"clicksBlocked": 5}"#)
        .starts_with("malformed Proofpoint SIEM response: invalid type"));
}

#[test]
fn one_response_per_line_with_crlf() {
    let line = format!("{{\"clicksBlocked\":[{BLOCKED}]}}\r\n");
    let out = parse_all(&line);
    assert_eq!(out.len(), 1);
    assert_eq!(click(&out[0]).action_type, "ClickBlocked");
}

#[test]
fn escaped_strings_are_unescaped() {
    let doc = r#"{"clicksPermitted":[{"id":"e","clickTime":"2025-12-01T00:00:00Z","url":"https://x.example/a\u0026b=\"c\""}]}"#;
    assert_eq!(click(&parse_all(doc)[0]).url, "https://x.example/a&b=\"c\"");
}

#[test]
fn query_end_time_for_the_poller() {
    assert_eq!(
        query_end_time(br#"{"queryEndTime":"2025-12-01T12:00:00Z","clicksBlocked":[]}"#),
        Some("2025-12-01T12:00:00Z".to_owned())
    );
    assert_eq!(query_end_time(br#"{"clicksBlocked":[]}"#), None);
    assert_eq!(query_end_time(br#"{"queryEndTime":""}"#), None);
    assert_eq!(query_end_time(br#"{"queryEndTime":null}"#), None);
    assert_eq!(query_end_time(b"{"), None);
    assert_eq!(query_end_time(b"[\"2025-12-01T12:00:00Z\"]"), None);
    assert_eq!(query_end_time(b""), None);
}

/// Per URL: (Blocked, Allowed, ClickedThrough, Total), as the aggregator will count them.
fn per_url(out: &[Record]) -> std::collections::BTreeMap<String, (u32, u32, u32, u32)> {
    let mut counts = std::collections::BTreeMap::new();
    for r in out {
        if let Record::Click(c) = r {
            let e = counts.entry(c.url.clone()).or_insert((0, 0, 0, 0));
            match c.action_type.as_str() {
                "ClickBlocked" => e.0 += 1,
                "ClickAllowed" => e.1 += 1,
                other => panic!("unexpected action type {other}"),
            }
            e.2 += u32::from(c.clicked_through);
            e.3 += 1;
        }
    }
    counts
}

#[test]
fn the_demo_sample_file_counts_exactly() {
    let sample = include_str!("../../../examples/proofpoint/siem-all-2026-11-29.json");
    let mut out = Vec::new();
    let limits = FieldLimits {
        max_url_bytes: 8192,
        now_ms: 1_796_342_400_000, // 2026-12-04T00:00:00Z
    };
    parse(sample.as_bytes(), &limits, &mut out);
    assert_eq!(out.len(), 14);
    let skipped = out
        .iter()
        .filter(|r| **r == Record::Skipped("a message, not a click"))
        .count();
    assert_eq!(skipped, 2);
    let expected: std::collections::BTreeMap<String, (u32, u32, u32, u32)> = [
        (
            "https://login-microsoftonline.com-secure.example/owa/auth",
            (2, 1, 0, 3),
        ),
        (
            "http://paypal.account-verify.example/signin?session=a81f",
            (1, 1, 0, 2),
        ),
        (
            "https://cdn.malware-drop.example/payload/update.exe",
            (2, 0, 0, 2),
        ),
        (
            "https://docu-sign.envelope-review.example/e/7Qm2",
            (1, 1, 0, 2),
        ),
        (
            "https://dropbox-share.files-secure.example/s/q4-bonus.zip",
            (1, 1, 0, 2),
        ),
        ("https://bit.example/3xK9q", (0, 1, 0, 1)),
    ]
    .into_iter()
    .map(|(u, c)| (u.to_owned(), c))
    .collect();
    assert_eq!(per_url(&out), expected);
    let mut threats: Vec<String> = out
        .iter()
        .filter_map(|r| match r {
            Record::Click(c) => Some(c.threat_types.join(",")),
            _ => None,
        })
        .collect();
    threats.sort();
    threats.dedup();
    assert_eq!(threats, vec!["malware", "phish", "spam"]);
    assert_eq!(
        query_end_time(sample.as_bytes()),
        Some("2026-11-30T14:00:00Z".into())
    );
}
