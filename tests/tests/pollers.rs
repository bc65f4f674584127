//! The live pollers against local HTTP servers that speak each vendor's documented protocol:
//! Proofpoint TAP (Basic auth, `interval` windows of at most an hour, 204, 429 with
//! `Retry-After`, a late event that only appears in a later, overlapping window) and Mimecast
//! API 2.0 (OAuth2 client credentials with expiring tokens, page tokens, an empty first page,
//! Entry Scan rows); each also stopped in the middle and restarted from its checkpoint.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use clicktally_aggregator::ManualClock;
use clicktally_collector::poll::mimecast::ApiConfig;
use clicktally_collector::poll::proofpoint::TapConfig;
use clicktally_collector::poll::PollerConfig;
use clicktally_collector::secret::Secret;
use clicktally_collector::CollectorConfig;
use clicktally_proto::v1::SummaryRequest;
use clicktally_tests::{seed_rows, SeedRow, TestAggregator};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MIN: i64 = 60_000;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

fn r(url: &str, c: [u64; 6]) -> SeedRow {
    (url.to_string(), c[0], c[1], c[2], c[3], c[4], c[5])
}

fn collector(dir: &Path, endpoint: String, poller: PollerConfig) -> CollectorConfig {
    let mut c = CollectorConfig::new(dir.join("spool"));
    c.pollers = vec![poller];
    c.once = true;
    c.once_deadline = Duration::from_secs(30);
    c.shipper.endpoint = endpoint;
    c
}

// ---------------------------------------------------------------- Proofpoint TAP

struct Tap {
    /// (id, click time, url, blocked, visible from request number)
    clicks: Vec<(&'static str, i64, &'static str, bool, usize)>,
    requests: Vec<(i64, i64)>,
    /// Requests with this number or more fail with 500 (a broken API), until cleared.
    fail_from: Option<usize>,
    served: usize,
}

async fn tap_siem(
    State(tap): State<Arc<Mutex<Tap>>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("svc-principal:svc-secret")
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    assert_eq!(q.get("format").map(String::as_str), Some("json"));
    let mut tap = tap.lock().unwrap();
    tap.served += 1;
    let n = tap.served;
    if n == 1 {
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
    }
    if tap.fail_from.is_some_and(|f| n >= f) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let (start, end) = q["interval"].split_once('/').unwrap();
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    };
    let (start, end) = (parse(start), parse(end));
    assert!(
        end - start <= 60 * MIN,
        "a window longer than an hour: {start}..{end}"
    );
    tap.requests.push((start, end));
    let (mut permitted, mut blocked) = (Vec::new(), Vec::new());
    for &(id, t, url, is_blocked, from) in &tap.clicks {
        if t >= start && t < end && n >= from {
            let click = json!({"id": id, "clickTime": rfc3339(t), "url": url, "classification": "PHISH",
                               "recipient": "ann@contoso.example", "clickIP": "192.0.2.1", "GUID": "message-guid"});
            if is_blocked {
                blocked.push(click)
            } else {
                permitted.push(click)
            }
        }
    }
    if permitted.is_empty() && blocked.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    Json(
        json!({"queryEndTime": rfc3339(end), "clicksPermitted": permitted, "clicksBlocked": blocked,
                "messagesDelivered": [{"GUID": "message-guid", "subject": "hello"}]}),
    )
    .into_response()
}

fn tap_server(now: i64) -> Arc<Mutex<Tap>> {
    // Windows with start_from 3h and overlap 10m: [-190,-130] [-140,-80] [-90,-30] [-40,0] min.
    Arc::new(Mutex::new(Tap {
        clicks: vec![
            ("a1", now - 170 * MIN, "https://pp.example/a", false, 0),
            ("b1", now - 135 * MIN, "https://pp.example/b", true, 0), // in two windows
            ("late", now - 85 * MIN, "https://pp.example/late", true, 4), // appears after its first window
            ("a2", now - 60 * MIN, "https://pp.example/a", false, 0),
            ("d1", now - 10 * MIN, "https://pp.example/d", false, 0),
        ],
        requests: Vec::new(),
        fail_from: None,
        served: 0,
    }))
}

fn tap_config(base: &str) -> PollerConfig {
    let mut c = TapConfig::new(
        "test",
        base,
        Secret::new("svc-principal"),
        Secret::new("svc-secret"),
    );
    c.start_from = Duration::from_secs(3 * 3600);
    c.overlap = Duration::from_secs(600);
    c.interval = Duration::from_millis(200);
    PollerConfig::ProofpointTap(c)
}

fn tap_expected() -> Vec<SeedRow> {
    vec![
        r("https://pp.example/a", [0, 2, 0, 0, 0, 2]),
        r("https://pp.example/b", [1, 0, 0, 0, 0, 1]),
        r("https://pp.example/d", [0, 1, 0, 0, 0, 1]),
        r("https://pp.example/late", [1, 0, 0, 0, 0, 1]),
    ]
}

#[tokio::test]
async fn proofpoint_tap_windows_overlap_retry_and_count_each_click_once() {
    let tmp = tempfile::tempdir().unwrap();
    let now = now_ms();
    let tap = tap_server(now);
    let base = serve(
        Router::new()
            .route("/v2/siem/all", get(tap_siem))
            .with_state(tap.clone()),
    )
    .await;
    let agg = TestAggregator::start(
        &tmp.path().join("agg"),
        Arc::new(ManualClock::new(now + MIN)),
    )
    .await;
    let report = clicktally_collector::run(
        collector(tmp.path(), agg.endpoint(), tap_config(&base)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let requests = tap.lock().unwrap().requests.clone();
    assert_eq!(requests.len(), 4, "{requests:?}");
    for w in requests.windows(2) {
        assert_eq!(
            w[1].0,
            w[0].1 - 10 * MIN,
            "each window starts an overlap before the last queryEndTime"
        );
    }
    // b1 is fetched twice (overlap), late once (only from the third window on): 6 clicks read,
    // 5 counted; one message per non-empty response skipped.
    assert_eq!(
        (report.events, report.applied, report.duplicates),
        (6, 5, 1)
    );
    assert_eq!(report.skipped, 4);
    assert_eq!(
        seed_rows(&agg.summary(SummaryRequest::default()).await),
        tap_expected()
    );
    agg.shutdown().await;
}

#[tokio::test]
async fn proofpoint_tap_resumes_from_its_checkpoint_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let now = now_ms();
    let tap = tap_server(now);
    tap.lock().unwrap().fail_from = Some(4); // the API breaks after two good windows
    let base = serve(
        Router::new()
            .route("/v2/siem/all", get(tap_siem))
            .with_state(tap.clone()),
    )
    .await;
    let agg = TestAggregator::start(
        &tmp.path().join("agg"),
        Arc::new(ManualClock::new(now + MIN)),
    )
    .await;
    let stop = CancellationToken::new();
    let first = tokio::spawn(clicktally_collector::run(
        collector(tmp.path(), agg.endpoint(), tap_config(&base)),
        stop.clone(),
    ));
    while tap.lock().unwrap().served < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel(); // stopped in the middle, with two windows done
    assert!(
        first.await.unwrap().is_err(),
        "--once stopped early reports it"
    );
    let done = tap.lock().unwrap().requests.clone();
    assert_eq!(done.len(), 2);
    {
        let mut t = tap.lock().unwrap();
        t.fail_from = None;
        t.served = 10; // past the 429 and the late event's first window
    }
    clicktally_collector::run(
        collector(tmp.path(), agg.endpoint(), tap_config(&base)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let requests = tap.lock().unwrap().requests.clone();
    assert_eq!(
        requests[2].0,
        done[1].1 - 10 * MIN,
        "the restart resumes at the checkpoint, not at start_from"
    );
    assert_eq!(
        seed_rows(&agg.summary(SummaryRequest::default()).await),
        tap_expected()
    );
    agg.shutdown().await;
}

// ---------------------------------------------------------------- Mimecast API 2.0

struct Mimecast {
    /// Token value -> issued at.
    tokens: HashMap<String, std::time::Instant>,
    issued: usize,
    /// (page token asked for, from, to) per get-logs call.
    calls: Vec<(Option<String>, String, String)>,
    /// The `from` of the first window: only it has rows.
    first_from: Option<String>,
    /// Pause before answering page p2, to outlive the token.
    slow_p2: Duration,
}

async fn mc_token(
    State(mc): State<Arc<Mutex<Mimecast>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_id").map(String::as_str) != Some("mc-id")
        || form.get("client_secret").map(String::as_str) != Some("mc-secret")
    {
        return (StatusCode::BAD_REQUEST, "invalid_client").into_response();
    }
    let mut mc = mc.lock().unwrap();
    mc.issued += 1;
    let token = format!("tok-{}", mc.issued);
    mc.tokens.insert(token.clone(), std::time::Instant::now());
    Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 2})).into_response()
}

fn mc_row(url: &str, date: i64, action: &str, method: &str, awareness: &str) -> Value {
    json!({"url": url, "date": chrono::DateTime::from_timestamp_millis(date).unwrap().format("%Y-%m-%dT%H:%M:%S+0000").to_string(),
           "action": action, "creationMethod": method, "userAwarenessAction": awareness, "userOverride": "None",
           "userEmailAddress": "bob@contoso.example", "scanResult": "malicious", "category": "Phishing"})
}

async fn mc_logs(
    State(mc): State<Arc<Mutex<Mimecast>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let page = body["meta"]["pagination"]["pageToken"]
        .as_str()
        .map(str::to_owned);
    let (from, to) = (
        body["data"][0]["from"].as_str().unwrap().to_owned(),
        body["data"][0]["to"].as_str().unwrap().to_owned(),
    );
    let slow = {
        let mut mc = mc.lock().unwrap();
        let valid = auth
            .strip_prefix("Bearer ")
            .and_then(|t| mc.tokens.get(t))
            .is_some_and(|at| at.elapsed() < Duration::from_secs(2));
        if !valid {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        mc.calls.push((page.clone(), from.clone(), to.clone()));
        mc.first_from.get_or_insert(from.clone());
        (page.as_deref() == Some("p2")).then_some(mc.slow_p2)
    };
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    let first = mc.lock().unwrap().first_from.as_deref() == Some(from.as_str());
    let t = chrono::DateTime::parse_from_str(&from, "%Y-%m-%dT%H:%M:%S%z")
        .unwrap()
        .timestamp_millis()
        + 5 * MIN;
    let (logs, next): (Vec<Value>, Option<&str>) = match (first, page.as_deref()) {
        (true, None) => (vec![], Some("p2")), // an empty first page that still has a next
        (true, Some("p2")) => (
            vec![
                mc_row("https://mc.example/x", t, "allow", "User Click", ""),
                mc_row(
                    "https://mc.example/x",
                    t + 1000,
                    "warn",
                    "User Click",
                    "Continue",
                ),
            ],
            Some("p3"),
        ),
        (true, Some("p3")) => (
            vec![
                mc_row("https://mc.example/y", t, "block", "User Click", ""),
                mc_row("https://mc.example/y", t, "block", "Entry Scan", ""),
            ],
            None,
        ),
        _ => (vec![], None),
    };
    let mut pagination = json!({"pageSize": 100});
    if let Some(n) = next {
        pagination["next"] = json!(n);
    }
    Json(json!({"meta": {"status": 200, "pagination": pagination}, "data": [{"clickLogs": logs}], "fail": []})).into_response()
}

/// A copy of what the Mimecast server saw, so no lock is held across an await.
struct Snapshot {
    calls: Vec<(Option<String>, String, String)>,
    issued: usize,
}

impl Snapshot {
    fn of(mc: &Arc<Mutex<Mimecast>>) -> Self {
        let m = mc.lock().unwrap();
        Self {
            calls: m.calls.clone(),
            issued: m.issued,
        }
    }
}

fn mc_server(slow_p2: Duration) -> Arc<Mutex<Mimecast>> {
    Arc::new(Mutex::new(Mimecast {
        tokens: HashMap::new(),
        issued: 0,
        calls: Vec::new(),
        first_from: None,
        slow_p2,
    }))
}

fn mc_router(mc: Arc<Mutex<Mimecast>>) -> Router {
    Router::new()
        .route("/oauth/token", post(mc_token))
        .route("/api/ttp/url/get-logs", post(mc_logs))
        .with_state(mc)
}

fn mc_config(base: &str) -> PollerConfig {
    let mut c = ApiConfig::new("test", base, Secret::new("mc-id"), Secret::new("mc-secret"));
    c.start_from = Duration::from_secs(3 * 3600);
    c.interval = Duration::from_millis(200);
    PollerConfig::MimecastApi(c)
}

fn mc_expected() -> Vec<SeedRow> {
    vec![
        r("https://mc.example/x", [0, 2, 0, 0, 1, 2]),
        r("https://mc.example/y", [1, 0, 0, 0, 0, 1]),
    ]
}

#[tokio::test]
async fn mimecast_pages_through_tokens_and_refreshes_its_bearer() {
    let tmp = tempfile::tempdir().unwrap();
    let mc = mc_server(Duration::from_millis(2100));
    let base = serve(mc_router(mc.clone())).await;
    let agg = TestAggregator::start(
        &tmp.path().join("agg"),
        Arc::new(ManualClock::new(now_ms() + MIN)),
    )
    .await;
    let report = clicktally_collector::run(
        collector(tmp.path(), agg.endpoint(), mc_config(&base)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let m = Snapshot::of(&mc);
    let pages: Vec<Option<&str>> = m.calls.iter().take(3).map(|c| c.0.as_deref()).collect();
    assert_eq!(pages, [None, Some("p2"), Some("p3")]);
    // Three one-hour windows up to a minute ago: the first paged, the next two empty.
    assert_eq!(m.calls.len(), 5, "{:?}", m.calls);
    assert_eq!(
        m.calls[3].1, m.calls[0].2,
        "the next window starts where the last ended"
    );
    assert!(
        m.issued >= 2,
        "the token expired during the slow page and was refreshed ({} issued)",
        m.issued
    );
    assert_eq!((report.events, report.skipped), (3, 1));
    assert_eq!(
        seed_rows(&agg.summary(SummaryRequest::default()).await),
        mc_expected()
    );
    agg.shutdown().await;
}

#[tokio::test]
async fn mimecast_resumes_at_the_page_it_stopped_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mc = mc_server(Duration::from_secs(30)); // page p2 hangs: stop the collector there
    let base = serve(mc_router(mc.clone())).await;
    let agg = TestAggregator::start(
        &tmp.path().join("agg"),
        Arc::new(ManualClock::new(now_ms() + MIN)),
    )
    .await;
    let stop = CancellationToken::new();
    let first = tokio::spawn(clicktally_collector::run(
        collector(tmp.path(), agg.endpoint(), mc_config(&base)),
        stop.clone(),
    ));
    while mc.lock().unwrap().calls.len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let _ = first.await.unwrap();
    mc.lock().unwrap().slow_p2 = Duration::ZERO;
    clicktally_collector::run(
        collector(tmp.path(), agg.endpoint(), mc_config(&base)),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let m = Snapshot::of(&mc);
    assert_eq!(
        m.calls[2].0.as_deref(),
        Some("p2"),
        "the restart asks again for the page it had not finished"
    );
    assert_eq!(m.calls[2].1, m.calls[0].1, "in the same window");
    assert_eq!(
        seed_rows(&agg.summary(SummaryRequest::default()).await),
        mc_expected()
    );
    agg.shutdown().await;
}
