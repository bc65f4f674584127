use super::*;
use clicktally_proto::v1::ClickEvent;

const H: i64 = 490_000; // an hour number
const NOW: i64 = (H + 10) * HOUR_MS + 1_000;

fn state(entries: &[(i64, &str, &str, &str, u64, u64)]) -> CounterState {
    let mut s = CounterState::default();
    for &(hour, source, url, action, n, through) in entries {
        for i in 0..n {
            s.add_click(&ClickEvent {
                source: source.into(),
                url: url.into(),
                action_type: action.into(),
                clicked_through: i < through,
                time_unix_ms: hour * HOUR_MS + i as i64,
                ..Default::default()
            });
        }
    }
    s.advance_window(NOW);
    s
}

fn run(s: &CounterState, req: SummaryRequest) -> SummaryResponse {
    let f = Filter::new(&req, &["jenkins.enterprise.com".to_string()], None);
    summarize(s, &req, &f, NOW).unwrap()
}

#[test]
fn a_window_covers_the_hours_that_start_inside_it() {
    assert_eq!(hours_of_window(H * HOUR_MS, (H + 2) * HOUR_MS), (H, H + 2));
    assert_eq!(
        hours_of_window(H * HOUR_MS + 1, (H + 2) * HOUR_MS + 1),
        (H + 1, H + 3)
    );
    let s = state(&[
        (H, "defender", "u", "ClickAllowed", 1, 0),
        (H + 1, "defender", "u", "ClickAllowed", 2, 0),
    ]);
    let r = run(
        &s,
        SummaryRequest {
            since_unix_ms: Some(H * HOUR_MS + 1),
            until_unix_ms: Some((H + 5) * HOUR_MS),
            ..Default::default()
        },
    );
    assert_eq!(r.rows[0].total, 2);
    // The default window is the last 7 days before now.
    assert_eq!(
        (r.since_unix_ms, r.until_unix_ms),
        (H * HOUR_MS + 1, (H + 5) * HOUR_MS)
    );
    let d = run(&s, SummaryRequest::default());
    assert_eq!(
        (d.since_unix_ms, d.until_unix_ms),
        (NOW - DEFAULT_WINDOW_MS, NOW)
    );
    assert_eq!(d.rows[0].total, 3);
}

#[test]
fn rows_order_by_any_column_and_page() {
    let s = state(&[
        (H, "defender", "https://a.example/", "ClickBlocked", 1, 0),
        (H, "defender", "https://b.example/", "ClickAllowed", 3, 2),
        (
            H,
            "defender",
            "https://c.example/",
            "UrlScanInProgress",
            2,
            0,
        ),
    ]);
    let keys = |r: &SummaryResponse| r.rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>();
    let r = run(
        &s,
        SummaryRequest {
            order_by: "ClickedThrough".into(),
            ..Default::default()
        },
    );
    assert_eq!(keys(&r)[0], "https://b.example/");
    let r = run(
        &s,
        SummaryRequest {
            order_by: "pending_verdict".into(),
            ..Default::default()
        },
    );
    assert_eq!(keys(&r)[0], "https://c.example/");
    let r = run(
        &s,
        SummaryRequest {
            order_by: "Url".into(),
            limit: 2,
            ..Default::default()
        },
    );
    assert_eq!(keys(&r), ["https://a.example/", "https://b.example/"]);
    assert_eq!((r.next_page_token.as_str(), r.total_rows), ("2", 3));
    let r = run(
        &s,
        SummaryRequest {
            order_by: "Url".into(),
            limit: 2,
            page_token: "2".into(),
            ..Default::default()
        },
    );
    assert_eq!(keys(&r), ["https://c.example/"]);
    assert_eq!(r.next_page_token, "");
    let f = Filter::new(&SummaryRequest::default(), &[], None);
    let bad = SummaryRequest {
        order_by: "Colour".into(),
        ..Default::default()
    };
    assert_eq!(
        summarize(&s, &bad, &f, NOW).unwrap_err(),
        QueryError::UnknownColumn("Colour".into())
    );
}

#[test]
fn exclusions_hide_hosts_and_say_what_they_hid() {
    let s = state(&[
        (
            H,
            "defender",
            "https://jenkins.enterprise.com/job/1",
            "ClickAllowed",
            2,
            0,
        ),
        (
            H,
            "defender",
            "https://ci.jenkins.enterprise.com/x",
            "ClickAllowed",
            1,
            0,
        ),
        (H, "defender", "https://evil.example/", "ClickBlocked", 1, 0),
    ]);
    let r = run(&s, SummaryRequest::default());
    assert_eq!(r.rows.len(), 1);
    assert_eq!((r.excluded_rows, r.excluded_clicks), (2, 3));
    let r = run(
        &s,
        SummaryRequest {
            no_exclusions: true,
            ..Default::default()
        },
    );
    assert_eq!((r.rows.len(), r.excluded_rows), (3, 0));
    let r = run(
        &s,
        SummaryRequest {
            no_exclusions: true,
            exclude_hosts: vec!["Evil.Example".into()],
            ..Default::default()
        },
    );
    assert_eq!((r.rows.len(), r.excluded_clicks), (2, 1));
}

#[test]
fn grouping_by_host_and_domain_merges_counts_and_sources() {
    let s = state(&[
        (
            H,
            "defender",
            "https://a.evil.co.uk/1",
            "ClickBlocked",
            2,
            1,
        ),
        (
            H,
            "proofpoint",
            "https://b.evil.co.uk/2",
            "ClickAllowed",
            1,
            0,
        ),
        (
            H + 1,
            "defender",
            "https://a.evil.co.uk/3",
            "UrlErrorPage",
            1,
            0,
        ),
    ]);
    let r = run(
        &s,
        SummaryRequest {
            group_by: GroupBy::Domain as i32,
            ..Default::default()
        },
    );
    assert_eq!(r.rows.len(), 1);
    let row = &r.rows[0];
    assert_eq!(
        (
            row.key.as_str(),
            row.blocked,
            row.allowed,
            row.error,
            row.clicked_through,
            row.total
        ),
        ("evil.co.uk", 2, 1, 1, 1, 4)
    );
    let sources: Vec<_> = row
        .sources
        .iter()
        .map(|s| (s.source.as_str(), s.count))
        .collect();
    assert_eq!(sources, [("defender", 3), ("proofpoint", 1)]);
    let r = run(
        &s,
        SummaryRequest {
            group_by: GroupBy::Host as i32,
            order_by: "Url".into(),
            ..Default::default()
        },
    );
    let hosts: Vec<_> = r.rows.iter().map(|r| (r.key.as_str(), r.total)).collect();
    assert_eq!(hosts, [("a.evil.co.uk", 3), ("b.evil.co.uk", 1)]);
    let r = run(
        &s,
        SummaryRequest {
            sources: vec!["Proofpoint".into()],
            ..Default::default()
        },
    );
    assert_eq!(r.rows[0].key, "https://b.evil.co.uk/2");
    let r = run(
        &s,
        SummaryRequest {
            host: "a.evil.co.uk".into(),
            url_contains: "/3".into(),
            ..Default::default()
        },
    );
    assert_eq!((r.rows.len(), r.rows[0].total), (1, 1));
}

#[test]
fn an_empty_window_is_an_error() {
    let s = CounterState::default();
    let req = SummaryRequest {
        since_unix_ms: Some(NOW),
        until_unix_ms: Some(NOW),
        ..Default::default()
    };
    let f = Filter::new(&req, &[], None);
    assert!(matches!(
        summarize(&s, &req, &f, NOW),
        Err(QueryError::EmptyWindow { .. })
    ));
}

#[test]
fn url_detail_gives_hours_actions_and_sources() {
    let s = state(&[
        (
            H,
            "defender",
            "https://a.evil.example/x",
            "ClickBlocked",
            2,
            1,
        ),
        (
            H + 2,
            "proofpoint",
            "https://a.evil.example/x",
            "ClickAllowed",
            1,
            0,
        ),
        (
            H + 2,
            "defender",
            "https://b.evil.example/y",
            "UrlErrorPage",
            1,
            0,
        ),
    ]);
    let d = url_detail(
        &s,
        &UrlDetailRequest {
            url: "https://a.evil.example/x".into(),
            ..Default::default()
        },
        None,
        NOW,
    )
    .unwrap();
    let t = d.total.unwrap();
    assert_eq!(
        (t.blocked, t.allowed, t.clicked_through, t.total),
        (2, 1, 1, 3)
    );
    assert_eq!(
        (t.first_seen_unix_ms, t.last_seen_unix_ms),
        (H * HOUR_MS, (H + 2) * HOUR_MS)
    );
    let hours: Vec<(i64, u64, u64)> = d
        .hours
        .iter()
        .map(|h| (h.hour_start_unix_ms / HOUR_MS, h.blocked, h.allowed))
        .collect();
    assert_eq!(hours, [(H, 2, 0), (H + 2, 0, 1)]);
    let sources: Vec<(&str, u64)> = t
        .sources
        .iter()
        .map(|s| (s.source.as_str(), s.count))
        .collect();
    assert_eq!(sources, [("defender", 2), ("proofpoint", 1)]);
    let by_host = url_detail(
        &s,
        &UrlDetailRequest {
            url: "evil.example".into(),
            by_host: true,
            ..Default::default()
        },
        None,
        NOW,
    )
    .unwrap();
    assert_eq!((by_host.total.unwrap().total, by_host.hours.len()), (4, 2));
}

/// The pre-aggregated 7-day totals and the hour-by-hour sum give the same answers, for every
/// column, direction, grouping and filter; also as the window slides hour by hour.
#[test]
fn pre_aggregated_window_answers_like_the_hourly_sum() {
    let mut entries = Vec::new();
    let urls = [
        "https://a.example.com/x",
        "https://b.example.com/y",
        "https://jenkins.enterprise.com/job",
        "http://c.example.org/",
        "https://a.example.com/z",
    ];
    let actions = [
        "ClickAllowed",
        "ClickBlocked",
        "UrlScanInProgress",
        "ClickBlockedByTenantPolicy",
    ];
    for i in 0..60i64 {
        let hour = H + 10 - 7 * 24 + (i * 37) % (7 * 24 + 3);
        let source = if i % 3 == 0 { "proofpoint" } else { "defender" };
        let url = urls[(i as usize * 7) % urls.len()];
        let action = actions[(i as usize) % actions.len()];
        entries.push((
            hour,
            source,
            url,
            action,
            1 + (i as u64 % 4),
            (i as u64) % 2,
        ));
    }
    let dense = state(&entries);
    let mut sparse = state(&entries);
    sparse.window = crate::totals::WindowTotals::default();
    let mut reqs = Vec::new();
    for order_by in [
        "",
        "Url",
        "Blocked",
        "FirstSeen",
        "LastSeen",
        "ClickedThrough",
    ] {
        for ascending in [None, Some(true), Some(false)] {
            for group_by in [GroupBy::Url, GroupBy::Host, GroupBy::Domain] {
                reqs.push(SummaryRequest {
                    order_by: order_by.into(),
                    ascending,
                    group_by: group_by as i32,
                    limit: 3,
                    ..Default::default()
                });
            }
        }
    }
    reqs.push(SummaryRequest {
        sources: vec!["proofpoint".into()],
        ..Default::default()
    });
    reqs.push(SummaryRequest {
        url_contains: "EXAMPLE.com".into(),
        page_token: "1".into(),
        limit: 2,
        ..Default::default()
    });
    reqs.push(SummaryRequest {
        no_exclusions: true,
        ..Default::default()
    });
    assert!(dense
        .window
        .answers(&dense.buckets, dense.window.from, dense.window.to));
    let mut compared = 0;
    for req in &reqs {
        let a = run(&dense, req.clone());
        let b = run(&sparse, req.clone());
        assert_eq!(a, b, "{req:?}");
        compared += a.rows.len();
    }
    assert!(compared > 100, "{compared} rows compared");
    let d = run(&dense, SummaryRequest::default());
    assert_eq!(d.total_rows, 4);
    assert_eq!(d.excluded_rows, 1);
    let all: u64 = entries
        .iter()
        .filter(|e| e.0 > H + 10 - 7 * 24 && e.0 <= H + 10)
        .map(|e| e.4)
        .sum();
    assert_eq!(
        d.rows.iter().map(|r| r.total).sum::<u64>() + d.excluded_clicks,
        all
    );
    // Slide the window forward three hours, one at a time, and compare again.
    let mut slid = state(&entries);
    for h in 1..=3 {
        slid.advance_window(NOW + h * HOUR_MS);
        let mut fresh = state(&entries);
        fresh.window = crate::totals::WindowTotals::default();
        let f = Filter::new(&SummaryRequest::default(), &[], None);
        let a = summarize(&slid, &SummaryRequest::default(), &f, NOW + h * HOUR_MS).unwrap();
        let b = summarize(&fresh, &SummaryRequest::default(), &f, NOW + h * HOUR_MS).unwrap();
        assert_eq!(a, b, "after {h} hours");
    }
}
