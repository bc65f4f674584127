//! `clicktally demo`: an aggregator and a collector in one process on loopback, with temporary
//! sled directories, fed the sample vendor files from `examples/` (embedded in the binary)
//! replayed as if they had just happened; then the seed's table.

use crate::query::{summary, ConsoleError};
use crate::render::Format;
use clicktally_aggregator::AggregatorConfig;
use clicktally_collector::collector::newest_click_ms;
use clicktally_collector::input::InputSpec;
use clicktally_collector::sources::SourceKind;
use clicktally_collector::CollectorConfig;
use clicktally_proto::v1::SummaryRequest;
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

/// Runs the demo and returns what it prints.
///
/// # Errors
/// When a service cannot start or the summary fails.
pub async fn run(width: usize) -> Result<String, ConsoleError> {
    let demo_err = |e: &dyn std::fmt::Display| ConsoleError::Demo(e.to_string());
    let tmp = tempfile::tempdir().map_err(|e| demo_err(&e))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| demo_err(&e))?;
    let addr = listener.local_addr().map_err(|e| demo_err(&e))?;
    let stop = CancellationToken::new();
    let aggregator = {
        let stop = stop.clone();
        let config = AggregatorConfig::new(tmp.path().join("aggregator"));
        tokio::spawn(clicktally_aggregator::run(listener, config, async move {
            stop.cancelled().await
        }))
    };

    let inputs = write_examples(&tmp.path().join("examples")).map_err(|e| demo_err(&e))?;
    let mut config = CollectorConfig::new(tmp.path().join("spool"));
    let newest = newest_click_ms(&inputs, config.max_record_bytes).map_err(|e| demo_err(&e))?;
    let now = chrono::Utc::now().timestamp_millis();
    config.time_shift_ms = newest.map(|n| now - n - 60_000).unwrap_or(0);
    config.inputs = inputs;
    config.once = true;
    config.once_deadline = std::time::Duration::from_secs(30);
    config.shipper.endpoint = format!("http://{addr}");
    let report = clicktally_collector::run(config, CancellationToken::new())
        .await
        .map_err(|e| demo_err(&e))?;

    let mut out = format!(
        "clicktally demo: aggregator on {addr}, sample Defender, Proofpoint and Mimecast files replayed as the last few days\n\n{report}\n\n"
    );
    let req = SummaryRequest {
        order_by: "Total".into(),
        ..Default::default()
    };
    out.push_str(&summary(&format!("http://{addr}"), req, Format::Table, width, false).await?);
    stop.cancel();
    match aggregator.await {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(demo_err(&e)),
        Err(e) => Err(demo_err(&e)),
    }
}
