//! `clicktally demo`: an aggregator and a collector in one process on loopback, with temporary
//! sled directories, fed the sample vendor files from `examples/` (embedded in the binary)
//! replayed as if they had just happened; then the seed's table.

use crate::query::{summary, Conn, ConsoleError};
use crate::render::Format;
use clicktally_aggregator::AggregatorConfig;
use clicktally_collector::collector::newest_click_ms;
use clicktally_collector::input::InputSpec;
use clicktally_collector::sources::SourceKind;
use clicktally_collector::CollectorConfig;
use clicktally_proto::v1::{SummaryRequest, WatchRequest};
use tokio_util::sync::CancellationToken;

/// The sample files, by name, as shipped in `examples/`.
pub const EXAMPLES: &[(&str, SourceKind, &str)] = &[
    (
        "defender/eventhub-message.json",
        SourceKind::Defender,
        include_str!("../../examples/defender/eventhub-message.json"),
    ),
    (
        "defender/blob-urlclickevents.jsonl",
        SourceKind::Defender,
        include_str!("../../examples/defender/blob-urlclickevents.jsonl"),
    ),
    (
        "defender/sentinel-urlclickevents.jsonl",
        SourceKind::Defender,
        include_str!("../../examples/defender/sentinel-urlclickevents.jsonl"),
    ),
    (
        "proofpoint/siem-all-2026-11-29.json",
        SourceKind::Proofpoint,
        include_str!("../../examples/proofpoint/siem-all-2026-11-29.json"),
    ),
    (
        "mimecast/url-logs-2026-11-29.json",
        SourceKind::Mimecast,
        include_str!("../../examples/mimecast/url-logs-2026-11-29.json"),
    ),
];

/// Writes the embedded examples under `dir` and returns them as inputs.
///
/// # Errors
/// When the files cannot be written.
pub fn write_examples(dir: &std::path::Path) -> std::io::Result<Vec<InputSpec>> {
    let mut inputs = Vec::new();
    for (name, kind, content) in EXAMPLES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
        inputs.push(InputSpec {
            kind: *kind,
            pattern: path.display().to_string(),
        });
    }
    Ok(inputs)
}

/// URLs the live feed clicks on, with the actions it draws for them.
const LIVE: &[(&str, &[&str])] = &[
    (
        "https://login-microsoftonline.com-secure.example/owa/auth",
        &[
            "ClickBlocked",
            "ClickBlocked",
            "UrlScanInProgress",
            "ClickAllowed",
        ],
    ),
    (
        "http://paypal.account-verify.example/signin?session=a81f",
        &["ClickBlocked", "ClickBlockedByTenantPolicy"],
    ),
    (
        "https://docs.contoso-invoices.example/inv/88213.pdf",
        &["ClickAllowed", "ClickAllowed", "UrlErrorPage"],
    ),
    (
        "https://sharepoint.fabrikam.example/sites/finance/Shared%20Documents/Q4.xlsx",
        &["ClickAllowed"],
    ),
    (
        "https://bit.example/3xK9q",
        &["UrlScanInProgress", "ClickAllowed"],
    ),
    (
        "https://payroll-update.hr-portal.example/login",
        &["UrlScanInProgress", "ClickBlocked", "ClickBlocked"],
    ),
];

/// Appends a click or two to `path` every few hundred milliseconds, in Defender's Advanced
/// Hunting row shape, dated now (minus `shift_ms`, which the collector adds back).
async fn feed(path: std::path::PathBuf, shift_ms: i64, stop: CancellationToken) {
    use std::io::Write;
    let mut seed = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(7) as u64 | 1;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let mut lines = String::new();
        for _ in 0..=rand(2) {
            n += 1;
            let (url, actions) = LIVE[rand(LIVE.len() as u64) as usize];
            let action = actions[rand(actions.len() as u64) as usize];
            let through = action == "ClickAllowed" && rand(4) == 0;
            let t = chrono::Utc::now().timestamp_millis() - shift_ms;
            let ts = chrono::DateTime::from_timestamp_millis(t)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            lines.push_str(&serde_json::json!({"Timestamp": ts, "Url": url, "ActionType": action, "IsClickedThrough": through,
                "AccountUpn": format!("user{}@contoso.example", rand(40)), "ReportId": format!("live-{n}")}).to_string());
            lines.push('\n');
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            let _ = f.write_all(lines.as_bytes());
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_millis(300 + rand(500))) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// Runs the demo. With `tui`, the collector keeps following the samples and a live feed, and
/// `top` shows the table until the user quits; otherwise the samples are read once and the
/// table is returned.
///
/// # Errors
/// When a service cannot start or the summary fails.
pub async fn run(width: usize, tui: bool, stop: CancellationToken) -> Result<String, ConsoleError> {
    let demo_err = |e: &dyn std::fmt::Display| ConsoleError::Demo(e.to_string());
    let tmp = tempfile::tempdir().map_err(|e| demo_err(&e))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| demo_err(&e))?;
    let addr = listener.local_addr().map_err(|e| demo_err(&e))?;
    let endpoint = format!("http://{addr}");
    let services = stop.child_token();
    let aggregator = {
        let services = services.clone();
        let config = AggregatorConfig::new(tmp.path().join("aggregator"));
        tokio::spawn(clicktally_aggregator::run(listener, config, async move {
            services.cancelled().await
        }))
    };

    let mut inputs = write_examples(&tmp.path().join("examples")).map_err(|e| demo_err(&e))?;
    let mut config = CollectorConfig::new(tmp.path().join("spool"));
    let newest = newest_click_ms(&inputs, config.max_record_bytes).map_err(|e| demo_err(&e))?;
    let now = chrono::Utc::now().timestamp_millis();
    let shift = newest.map(|n| now - n - 60_000).unwrap_or(0);
    config.time_shift_ms = shift;
    config.shipper.endpoint = endpoint.clone();

    let out = if tui {
        let live = tmp.path().join("live");
        std::fs::create_dir_all(&live).map_err(|e| demo_err(&e))?;
        inputs.push(InputSpec {
            kind: SourceKind::Defender,
            pattern: format!("{}/*.jsonl", live.display()),
        });
        config.inputs = inputs;
        config.follow_interval = std::time::Duration::from_millis(250);
        config.shipper.linger = std::time::Duration::from_millis(5);
        let collector = tokio::spawn(clicktally_collector::run(config, services.clone()));
        tokio::spawn(feed(
            live.join("defender-live.jsonl"),
            shift,
            services.clone(),
        ));
        let req = WatchRequest {
            filter: Some(SummaryRequest::default()),
            interval_ms: 500,
            rolling_window_ms: Some(crate::query_window_ms()),
        };
        let shown = crate::top::run(Conn::plain(endpoint), req, stop.clone()).await;
        services.cancel();
        let _ = collector.await;
        shown.map_err(|e| demo_err(&e))?;
        String::new()
    } else {
        config.inputs = inputs;
        config.once = true;
        config.once_deadline = std::time::Duration::from_secs(30);
        let report = clicktally_collector::run(config, stop.clone())
            .await
            .map_err(|e| demo_err(&e))?;
        let mut out = format!(
            "clicktally demo: aggregator on {addr}, sample Defender, Proofpoint and Mimecast files replayed as the last few days\n\n{report}\n\n"
        );
        let req = SummaryRequest {
            order_by: "Total".into(),
            ..Default::default()
        };
        out.push_str(
            &summary(
                &Conn::plain(endpoint.clone()),
                req,
                Format::Table,
                width,
                false,
            )
            .await?,
        );
        out
    };
    services.cancel();
    match aggregator.await {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(demo_err(&e)),
        Err(e) => Err(demo_err(&e)),
    }
}
