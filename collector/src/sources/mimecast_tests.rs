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

/// One row, as a bare line, with `extra` fields spliced in (e.g. `"action":"warn",`).
fn row(extra: &str) -> String {
    format!(
        r#"{{{extra}"userEmailAddress":"ann@contoso.com","url":"https://evil.example/login","date":"2025-12-01T10:15:30+0000","messageId":"<m-1@example.com>","sendingIp":"203.0.113.7"}}"#
    )
}

fn one_click(extra: &str) -> ClickEvent {
    let out = parse_all(&row(extra));
    assert_eq!(out.len(), 1, "{extra}");
    click(&out[0]).clone()
}

const FULL_ROW: &str = r#"{"userEmailAddress":"ann@contoso.com","fromUserEmailAddress":"billing@contoso-invoices.example","url":"https://evil.example/login","ttpDefinition":"Default URL Protection Definition","subject":"Invoice overdue","action":"block","adminOverride":"N/A","userOverride":"None","scanResult":"malicious","category":"Phishing & Fraud","sendingIp":"203.0.113.7","userAwarenessAction":"n/a","date":"2025-12-01T10:15:30+0000","actions":"Block","route":"inbound","creationMethod":"User Click","emailPartsDescription":["Body"],"messageId":"<m-1@example.com>"}"#;

#[test]
fn a_full_row_maps_every_field() {
    let out = parse_all(FULL_ROW);
    assert_eq!(
        out,
        vec![Record::Click(ClickEvent {
            event_id: content_id(FULL_ROW.as_bytes()),
            time_unix_ms: 1_764_584_130_000,
            url: "https://evil.example/login".into(),
            action_type: "ClickBlocked".into(),
            source_action: "block".into(),
            clicked_through: false,
            source: "mimecast".into(),
            tenant: String::new(),
            account: "ann@contoso.com".into(),
            network_message_id: "<m-1@example.com>".into(),
            ip: "203.0.113.7".into(),
            threat_types: vec!["malicious".into(), "Phishing & Fraud".into()],
            workload: String::new(),
        })]
    );
}

#[test]
fn a_pretty_printed_response_is_read_row_by_row() {
    let doc = format!(
        r#"{{
  "meta": {{"pagination": {{"pageSize": 100, "next": "eNo1jrEOgjAYhF"}}, "status": 200}},
  "data": [
    {{
      "clickLogs": [
        {FULL_ROW},
        {{
          "userEmailAddress": "bob@contoso.com",
          "url": "https://ok.example/",
          "action": "allow",
          "userOverride": "None",
          "userAwarenessAction": "n/a",
          "scanResult": "clean",
          "category": "",
          "date": "2025-12-01T11:00:00+0000",
          "creationMethod": "User Click"
        }},
        {{"url": "https://evil.example/login", "action": "block", "date": "2025-12-01T09:00:00+0000", "creationMethod": "Entry Scan"}}
      ]
    }}
  ],
  "fail": []
}}"#
    );
    let out = parse_all(&doc);
    assert_eq!(out.len(), 3);
    let a = click(&out[0]);
    // The same row in a response or on its own line: the same event_id.
    assert_eq!(a.event_id, content_id(FULL_ROW.as_bytes()));
    assert_eq!(a.action_type, "ClickBlocked");
    let b = click(&out[1]);
    assert_eq!(b.url, "https://ok.example/");
    assert_eq!(b.action_type, "ClickAllowed");
    assert_eq!(b.source_action, "allow");
    assert_eq!(b.account, "bob@contoso.com");
    assert_eq!(b.threat_types, vec!["clean"]);
    assert_eq!(b.time_unix_ms, 1_764_586_800_000);
    assert_eq!(b.event_id.len(), 32);
    assert_eq!(out[2], Record::Skipped("a delivery-time scan, not a click"));
    assert_eq!(
        next_page_token(doc.as_bytes()),
        Some("eNo1jrEOgjAYhF".into())
    );
}

#[test]
fn ndjson_rows_one_per_line_with_crlf() {
    let with_crlf = format!("{FULL_ROW}\r\n");
    let a = parse_all(&with_crlf);
    assert_eq!(click(&a[0]).event_id, content_id(FULL_ROW.as_bytes()));
    assert_eq!(click(&a[0]).url, "https://evil.example/login");
}

#[test]
fn only_user_clicks_are_clicks() {
    let skipped = Record::Skipped("a delivery-time scan, not a click");
    for method in ["Entry Scan", "entry scan", "Release", "Something New"] {
        let out = parse_all(&row(&format!(
            r#""creationMethod":"{method}","action":"block","#
        )));
        assert_eq!(out, vec![skipped.clone()], "{method}");
    }
    // An Entry Scan row need not be a valid click to be skipped.
    assert_eq!(
        parse_all(r#"{"creationMethod":"Entry Scan"}"#),
        vec![skipped.clone()]
    );
    for method in ["User Click", "user click", " USER CLICK ", ""] {
        let c = one_click(&format!(r#""creationMethod":"{method}","action":"block","#));
        assert_eq!(c.action_type, "ClickBlocked", "{method:?}");
    }
    // No creationMethod at all (or null): a click.
    assert_eq!(
        one_click(r#""action":"allow","#).action_type,
        "ClickAllowed"
    );
    assert_eq!(
        one_click(r#""creationMethod":null,"action":"allow","#).action_type,
        "ClickAllowed"
    );
}

#[test]
fn clicked_through_by_user_override_in_every_spelling() {
    let cases = [
        ("None", false),
        ("none", false),
        ("NONE", false),
        ("N/A", false),
        ("n/a", false),
        ("", false),
        ("  ", false),
        (" None ", false),
        ("Continue", true),
        ("Yes", true),
        ("Permitted", true),
    ];
    for (spelling, expected) in cases {
        let c = one_click(&format!(
            r#""action":"warn","userOverride":"{spelling}","userAwarenessAction":"n/a","#
        ));
        assert_eq!(c.clicked_through, expected, "{spelling:?}");
    }
    assert!(!one_click(r#""action":"warn","userOverride":null,"#).clicked_through);
    assert!(!one_click(r#""action":"warn","#).clicked_through);
}

#[test]
fn clicked_through_by_user_awareness_continue() {
    for spelling in ["Continue", "continue", " CONTINUE "] {
        let c = one_click(&format!(
            r#""action":"warn","userOverride":"None","userAwarenessAction":"{spelling}","#
        ));
        assert!(c.clicked_through, "{spelling:?}");
    }
    for spelling in ["n/a", "Return", "", "Continued"] {
        let c = one_click(&format!(
            r#""action":"warn","userOverride":"None","userAwarenessAction":"{spelling}","#
        ));
        assert!(!c.clicked_through, "{spelling:?}");
    }
}

#[test]
fn warn_is_allowed_when_clicked_through_else_blocked() {
    let through = one_click(r#""action":"warn","userAwarenessAction":"Continue","#);
    assert_eq!(through.action_type, "ClickAllowed");
    assert_eq!(through.source_action, "warn");
    assert!(through.clicked_through);

    let overridden = one_click(r#""action":"Warn","userOverride":"Continue","#);
    assert_eq!(overridden.action_type, "ClickAllowed");
    assert_eq!(overridden.source_action, "Warn");
    assert!(overridden.clicked_through);

    let stopped =
        one_click(r#""action":"warn","userOverride":"None","userAwarenessAction":"n/a","#);
    assert_eq!(stopped.action_type, "ClickBlocked");
    assert_eq!(stopped.source_action, "warn");
    assert!(!stopped.clicked_through);
}

#[test]
fn allow_and_block_do_not_depend_on_clicking_through() {
    let a = one_click(r#""action":"ALLOW","userOverride":"None","#);
    assert_eq!(
        (a.action_type.as_str(), a.source_action.as_str()),
        ("ClickAllowed", "ALLOW")
    );
    let b = one_click(r#""action":"block","userAwarenessAction":"Continue","#);
    assert_eq!(b.action_type, "ClickBlocked");
    assert!(b.clicked_through);
}

#[test]
fn actions_is_the_fallback_when_action_is_absent_or_empty() {
    let cases = [
        (r#""actions":"Allow","#, "ClickAllowed", "Allow"),
        (r#""actions":"Block","#, "ClickBlocked", "Block"),
        (r#""actions":"block","#, "ClickBlocked", "block"),
        (r#""action":"","actions":"Allow","#, "ClickAllowed", "Allow"),
        (
            r#""action":null,"actions":"Block","#,
            "ClickBlocked",
            "Block",
        ),
        (
            r#""action":" ","actions":"Allow","#,
            "ClickAllowed",
            "Allow",
        ),
        (r#""actions":"Block, Log","#, "ClickBlocked", "Block, Log"),
        (
            r#""actions":"Allow,Rewrite","#,
            "ClickAllowed",
            "Allow,Rewrite",
        ),
        (r#""actions":"Warn","#, "ClickBlocked", "Warn"),
        (
            r#""actions":"Quarantine, Log","#,
            "Quarantine, Log",
            "Quarantine, Log",
        ),
        // `action` wins over `actions`.
        (
            r#""action":"allow","actions":"Block","#,
            "ClickAllowed",
            "allow",
        ),
    ];
    for (extra, action_type, source_action) in cases {
        let c = one_click(extra);
        assert_eq!(c.action_type, action_type, "{extra}");
        assert_eq!(c.source_action, source_action, "{extra}");
    }
}

#[test]
fn unknown_actions_are_kept_verbatim() {
    let c = one_click(r#""action":"Rewrite Only","#);
    assert_eq!(c.action_type, "Rewrite Only");
    assert_eq!(c.source_action, "Rewrite Only");
}

#[test]
fn threat_types_are_the_non_empty_of_scan_result_and_category() {
    let both =
        one_click(r#""action":"block","scanResult":"malicious","category":"Phishing & Fraud","#);
    assert_eq!(both.threat_types, vec!["malicious", "Phishing & Fraud"]);
    let one = one_click(r#""action":"block","scanResult":"","category":"Malware","#);
    assert_eq!(one.threat_types, vec!["Malware"]);
    let none = one_click(r#""action":"block","scanResult":null,"category":" ","#);
    assert!(none.threat_types.is_empty());
}

#[test]
fn bad_rows_are_dead_lettered_without_stopping_the_others() {
    let bad = [
        (
            r#"{"action":"block","date":"2025-12-01T00:00:00+0000"}"#,
            "missing url",
        ),
        (r#"{"action":"block","url":"u"}"#, "missing date"),
        (
            r#"{"action":"block","url":"u","date":"Tuesday"}"#,
            "unreadable time \"Tuesday\"",
        ),
        (
            r#"{"url":"u","date":"2025-12-01T00:00:00+0000"}"#,
            "missing action (and actions)",
        ),
        (
            r#"{"action":"","actions":"","url":"u","date":"2025-12-01T00:00:00+0000"}"#,
            "missing action (and actions)",
        ),
        (
            r#"{"action":"block","url":"","date":"2025-12-01T00:00:00+0000"}"#,
            "empty url",
        ),
        ("42", "malformed click log: not a JSON object"),
    ];
    let body: Vec<&str> = bad.iter().map(|(raw, _)| *raw).collect();
    let doc = format!(
        r#"{{"meta":{{"status":200}},"data":[{{"clickLogs":[{},
            {{"action":"block","url":["u"],"date":"2025-12-01T00:00:00+0000"}},
            {{"action":"block","url":"u","date":"1999-01-01T00:00:00+0000"}},
            {{"action":"allow","url":"https://fine.example/","date":"2025-12-01T00:00:00+0000"}}]}},
            "not an object",
            {{"clickLogs":[{{"action":"block","url":"https://second.example/","date":"2025-12-01T00:00:00+0000"}}]}},
            {{}}],"fail":[]}}"#,
        body.join(",")
    );
    let out = parse_all(&doc);
    assert_eq!(out.len(), bad.len() + 5);
    for (i, (raw, reason)) in bad.iter().enumerate() {
        assert_eq!(invalid(&out[i]), (*reason, Some(*raw)));
    }
    let n = bad.len();
    let (reason, raw) = invalid(&out[n]);
    assert!(
        reason.starts_with("malformed click log: invalid type"),
        "{reason}"
    );
    assert!(raw.unwrap().contains(r#"["u"]"#));
    assert!(invalid(&out[n + 1]).0.contains("out of range"));
    assert_eq!(click(&out[n + 2]).url, "https://fine.example/");
    assert_eq!(
        invalid(&out[n + 3]),
        (
            "malformed Mimecast data entry: not a JSON object",
            Some("\"not an object\"")
        )
    );
    assert_eq!(click(&out[n + 4]).url, "https://second.example/");
}

#[test]
fn a_bad_bare_line_is_one_invalid_record() {
    let reason = |text: &str| {
        let out = parse_all(text);
        assert_eq!(out.len(), 1, "{text}");
        match &out[0] {
            Record::Invalid { reason, raw: None } => reason.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert!(reason(r#"{"url": "#).starts_with("malformed JSON"));
    assert!(reason("<html>").starts_with("malformed JSON"));
    assert!(reason(r#"{"url":"u"} {"url":"v"}"#).starts_with("malformed JSON"));
    assert_eq!(
        reason(r#"[{"url":"u"}]"#),
        "not a Mimecast click log or get-logs response: not a JSON object"
    );
    assert!(
        reason(r#"{"url":7,"action":"block","date":"2025-12-01T00:00:00+0000"}"#)
            .starts_with("malformed click log: invalid type")
    );
    assert_eq!(reason(r#"{"action":"block","url":"u"}"#), "missing date");
    let long = format!(
        r#"{{"action":"block","date":"2025-12-01T00:00:00+0000","url":"{}"}}"#,
        "a".repeat(9000)
    );
    assert!(reason(&long).contains("exceeds the 8192-byte limit"));
}

#[test]
fn failures_reported_by_mimecast_are_invalid_records() {
    let doc = r#"{
  "meta": {"status": 200},
  "data": [],
  "fail": [
    {"key": {"from": "2025-12-01"}, "errors": [{"code": "err_validation_invalid_date", "message": "from must be before to", "retryable": false}]},
    {},
    null,
    "",
    "quota exceeded",
    {"errors": [{"code": "err_a"}, {"message": "second"}]},
    {"something": "else"}
  ]
}"#;
    let out = parse_all(doc);
    let reasons: Vec<(&str, Option<&str>)> = out.iter().map(invalid).collect();
    assert_eq!(
        reasons,
        vec![
            (
                "mimecast reported a failure: err_validation_invalid_date: from must be before to",
                Some(
                    r#"{"key": {"from": "2025-12-01"}, "errors": [{"code": "err_validation_invalid_date", "message": "from must be before to", "retryable": false}]}"#
                )
            ),
            (
                "mimecast reported a failure: quota exceeded",
                Some(r#""quota exceeded""#)
            ),
            (
                "mimecast reported a failure: err_a; second",
                Some(r#"{"errors": [{"code": "err_a"}, {"message": "second"}]}"#)
            ),
            (
                r#"mimecast reported a failure: {"something":"else"}"#,
                Some(r#"{"something": "else"}"#)
            ),
        ]
    );
}

#[test]
fn empty_responses_yield_nothing() {
    for doc in [
        r#"{"meta":{"pagination":{"pageSize":100},"status":200},"data":[],"fail":[]}"#,
        r#"{"meta":{"status":200},"data":[{"clickLogs":[]}],"fail":[]}"#,
        r#"{"data":[{}]}"#,
        r#"{"data":null,"fail":null}"#,
        r#"{"meta":{}}"#,
    ] {
        assert_eq!(parse_all(doc), Vec::<Record>::new(), "{doc}");
    }
}

#[test]
fn malformed_response_parts_are_reported() {
    let out = parse_all(r#"{"data":{"clickLogs":[]},"fail":"x"}"#);
    assert_eq!(out.len(), 2);
    assert!(invalid(&out[0])
        .0
        .starts_with("malformed Mimecast response: data: invalid type"));
    assert!(invalid(&out[1])
        .0
        .starts_with("malformed Mimecast response: fail: invalid type"));
    let out = parse_all(r#"{"data":[{"clickLogs":5}]}"#);
    assert!(invalid(&out[0])
        .0
        .starts_with("malformed Mimecast data entry: invalid type"));
}

#[test]
fn next_page_token_for_the_poller() {
    assert_eq!(
        next_page_token(br#"{"meta":{"pagination":{"pageSize":25,"next":"tok=="}},"data":[]}"#),
        Some("tok==".into())
    );
    assert_eq!(
        next_page_token(br#"{"meta":{"pagination":{"pageSize":25}},"data":[]}"#),
        None
    );
    assert_eq!(
        next_page_token(br#"{"meta":{"pagination":{"next":""}}}"#),
        None
    );
    assert_eq!(next_page_token(br#"{"meta":{"status":200}}"#), None);
    assert_eq!(next_page_token(br#"{"data":[]}"#), None);
    assert_eq!(next_page_token(b"{"), None);
    assert_eq!(next_page_token(b"[]"), None);
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
    let sample = include_str!("../../../examples/mimecast/url-logs-2026-11-29.json");
    let mut out = Vec::new();
    let limits = FieldLimits {
        max_url_bytes: 8192,
        now_ms: 1_796_342_400_000, // 2026-12-04T00:00:00Z
    };
    parse(sample.as_bytes(), &limits, &mut out);
    assert_eq!(out.len(), 13);
    let skipped = out
        .iter()
        .filter(|r| **r == Record::Skipped("a delivery-time scan, not a click"))
        .count();
    assert_eq!(skipped, 2);
    let expected: std::collections::BTreeMap<String, (u32, u32, u32, u32)> = [
        (
            "https://login-microsoftonline.com-secure.example/owa/auth",
            (2, 1, 1, 3),
        ),
        (
            "http://paypal.account-verify.example/signin?session=a81f",
            (1, 1, 1, 2),
        ),
        (
            "https://cdn.malware-drop.example/payload/update.exe",
            (1, 0, 0, 1),
        ),
        (
            "https://sharepoint.fabrikam.example/sites/finance/Shared%20Documents/Q4.xlsx",
            (0, 2, 0, 2),
        ),
        (
            "https://invoice-portal.billing-update.example/pay/2026-11",
            (0, 1, 1, 1),
        ),
        (
            "https://docu-sign.envelope-review.example/e/7Qm2",
            (1, 0, 0, 1),
        ),
        ("https://www.contoso.com/benefits/2026", (0, 1, 0, 1)),
    ]
    .into_iter()
    .map(|(u, c)| (u.to_owned(), c))
    .collect();
    assert_eq!(per_url(&out), expected);
    assert_eq!(
        next_page_token(sample.as_bytes()).as_deref(),
        Some("eNo1jrEKwjAYhF8l_HMHbdHSbhUd6mDFOomLpH9toE1KkiKl9N1NlG53x8fdzbCrBRIQkBZuxkCh3")
    );
}
