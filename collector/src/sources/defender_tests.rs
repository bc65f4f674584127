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

const PROPS_A: &str = r#"{"Timestamp":"2025-12-01T10:15:30.1234567Z","Url":"https://evil.example/login","ActionType":"ClickBlocked","AccountUpn":"ann@contoso.com","Workload":"Email","NetworkMessageId":"nm-1","ThreatTypes":"Phish, Malware","DetectionMethods":"[\"URL detonation\"]","IPAddress":"203.0.113.7","IsClickedThrough":false,"UrlChain":"[\"https://evil.example/login\"]","ReportId":"r-1"}"#;

#[test]
fn event_hub_message_keeps_clicks_and_skips_other_categories() {
    let msg = format!(
        r#"{{"records":[
            {{"time":"2025-12-01T11:00:00Z","tenantId":"t-1","operationName":"Publish","category":"AdvancedHunting-UrlClickEvents","properties":{PROPS_A}}},
            {{"time":"2025-12-01T11:00:00Z","tenantId":"t-1","category":"AdvancedHunting-EmailEvents","properties":{{"Timestamp":"2025-12-01T10:00:00Z"}}}},
            {{"time":"2025-12-01T11:00:01Z","tenantId":"t-1","category":"AdvancedHunting-UrlClickEvents","properties":{{"Timestamp":"2025-12-01T10:20:00Z","Url":"https://ok.example/","ActionType":"ClickAllowed","IsClickedThrough":"1"}}}}
        ]}}"#
    );
    let out = parse_all(&msg);
    assert_eq!(out.len(), 3);
    let a = click(&out[0]);
    assert_eq!(a.url, "https://evil.example/login");
    assert_eq!(a.action_type, "ClickBlocked");
    assert_eq!(a.source_action, "ClickBlocked");
    assert_eq!(a.source, "defender");
    assert_eq!(a.tenant, "t-1");
    assert_eq!(a.account, "ann@contoso.com");
    assert_eq!(a.network_message_id, "nm-1");
    assert_eq!(a.ip, "203.0.113.7");
    assert_eq!(a.workload, "Email");
    assert_eq!(a.threat_types, vec!["Phish", "Malware"]);
    assert!(!a.clicked_through);
    // properties.Timestamp, not the envelope's time
    assert_eq!(a.time_unix_ms, 1_764_584_130_123);
    assert_eq!(out[1], Record::Skipped("another Advanced Hunting category"));
    let c = click(&out[2]);
    assert!(c.clicked_through);
    assert_eq!(c.action_type, "ClickAllowed");
}

#[test]
fn blob_line_with_crlf_and_envelope_give_the_same_event_id() {
    let line = format!(
        "{{\"time\":\"2025-12-01T11:00:00Z\",\"tenantId\":\"t-1\",\"category\":\"AdvancedHunting-UrlClickEvents\",\"properties\":{PROPS_A}}}\r\n"
    );
    let from_line = parse_all(&line);
    let from_hub = parse_all(&format!(
        r#"{{"records":[{{"time":"2025-12-01T11:05:00Z","tenantId":"t-1","category":"AdvancedHunting-UrlClickEvents","properties":{PROPS_A}}}]}}"#
    ));
    assert_eq!(click(&from_line[0]).event_id, click(&from_hub[0]).event_id);
    assert_eq!(click(&from_line[0]).event_id.len(), 32);
}

#[test]
fn bare_advanced_hunting_and_sentinel_rows() {
    let ah = parse_all(PROPS_A);
    assert_eq!(click(&ah[0]).url, "https://evil.example/login");
    assert_eq!(click(&ah[0]).tenant, "");
    let sentinel = parse_all(
        r#"{"TenantId":"t-9","TimeGenerated":"2025-12-02T08:00:00Z","Url":"http://x.test/a","ActionType":"UrlScanInProgress","IsClickedThrough":null,"Type":"UrlClickEvents","SourceSystem":"Azure"}"#,
    );
    let s = click(&sentinel[0]);
    assert_eq!(s.tenant, "t-9");
    assert_eq!(s.time_unix_ms, 1_764_662_400_000);
    assert_eq!(s.action_type, "UrlScanInProgress");
    assert!(!s.clicked_through);
    let other_table = parse_all(
        r#"{"TimeGenerated":"2025-12-02T08:00:00Z","Url":"http://x.test/a","ActionType":"x","Type":"EmailEvents"}"#,
    );
    assert_eq!(other_table, vec![Record::Skipped("a row of another table")]);
}

#[test]
fn a_json_array_of_rows_is_read_row_by_row() {
    let out = parse_all(
        r#"[{"Timestamp":"2025-12-01T00:00:00Z","Url":"u1","ActionType":"ClickAllowed"},
            {"Timestamp":"2025-12-01T00:00:00Z","ActionType":"ClickAllowed"}]"#,
    );
    assert_eq!(click(&out[0]).url, "u1");
    match &out[1] {
        Record::Invalid { reason, raw } => {
            assert_eq!(reason, "missing Url");
            assert!(raw.as_deref().unwrap().contains("ClickAllowed"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn is_clicked_through_in_every_spelling() {
    let cases = [
        ("true", Some(true)),
        ("false", Some(false)),
        ("1", Some(true)),
        ("0", Some(false)),
        ("\"true\"", Some(true)),
        ("\"False\"", Some(false)),
        ("\"1\"", Some(true)),
        ("\"0\"", Some(false)),
        ("null", Some(false)),
        ("\"yes\"", None),
        ("2", None),
    ];
    for (spelling, expected) in cases {
        let row = format!(
            r#"{{"Timestamp":"2025-12-01T00:00:00Z","Url":"u","ActionType":"ClickAllowed","IsClickedThrough":{spelling}}}"#
        );
        let out = parse_all(&row);
        match (expected, &out[0]) {
            (Some(b), Record::Click(c)) => assert_eq!(c.clicked_through, b, "{spelling}"),
            (None, Record::Invalid { reason, .. }) => {
                assert!(
                    reason.starts_with("IsClickedThrough"),
                    "{spelling}: {reason}"
                )
            }
            (e, got) => panic!("{spelling}: expected {e:?}, got {got:?}"),
        }
    }
    let missing =
        parse_all(r#"{"Timestamp":"2025-12-01T00:00:00Z","Url":"u","ActionType":"ClickAllowed"}"#);
    assert!(!click(&missing[0]).clicked_through);
}

#[test]
fn bad_records_carry_precise_reasons() {
    let reason = |text: &str| match &parse_all(text)[0] {
        Record::Invalid { reason, .. } => reason.clone(),
        other => panic!("{other:?}"),
    };
    assert!(reason("{\"Url\": ").starts_with("malformed JSON"));
    assert_eq!(
        reason(r#"{"Url":"u","ActionType":"ClickAllowed"}"#),
        "missing Timestamp (or TimeGenerated)"
    );
    assert_eq!(
        reason(r#"{"Timestamp":"2025-12-01T00:00:00Z","Url":"u"}"#),
        "missing ActionType"
    );
    assert!(
        reason(r#"{"Timestamp":"soon","Url":"u","ActionType":"x"}"#).contains("unreadable time")
    );
    assert!(
        reason(r#"{"Timestamp":"1999-01-01T00:00:00Z","Url":"u","ActionType":"x"}"#)
            .contains("out of range")
    );
    assert!(
        reason(r#"{"Timestamp":"2025-12-01T00:00:00Z","Url":"","ActionType":"x"}"#)
            .contains("empty url")
    );
    assert!(
        reason(r#"{"Timestamp":"2025-12-01T00:00:00Z","Url":7,"ActionType":"x"}"#)
            .starts_with("malformed record")
    );
    let long = format!(
        r#"{{"Timestamp":"2025-12-01T00:00:00Z","Url":"{}","ActionType":"x"}}"#,
        "a".repeat(9000)
    );
    assert!(reason(&long).contains("exceeds the 8192-byte limit"));
}

#[test]
fn unusual_action_types_are_kept_verbatim() {
    let out = parse_all(
        r#"{"Timestamp":"2025-12-01T00:00:00Z","Url":"u","ActionType":"ClickBlocked;Foo"}"#,
    );
    assert_eq!(click(&out[0]).action_type, "ClickBlocked;Foo");
}
