//! `clicktally-collector`: a thin CLI over [`clicktally_collector::run`].

use clap::Parser;
use clicktally_collector::input::{parse_input, InputSpec};
use clicktally_collector::CollectorConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reads click events from vendor sources, spools them on disk and ships them to the aggregator.
#[derive(Debug, Parser)]
#[command(name = "clicktally-collector", version)]
struct Args {
    /// The aggregator's gRPC endpoint.
    #[arg(
        long,
        env = "CLICKTALLY_AGGREGATOR",
        default_value = "http://127.0.0.1:7401"
    )]
    aggregator: String,
    /// Spool directory (sled); events wait here until the aggregator acknowledges them.
    #[arg(long, env = "CLICKTALLY_SPOOL", default_value = "clicktally-spool")]
    spool: PathBuf,
    /// An input, KIND:PATH, where PATH is a file, a directory or a glob (repeatable).
    /// Kinds: defender, proofpoint, mimecast.
    #[arg(long = "input", required = true, value_parser = parse_input)]
    inputs: Vec<InputSpec>,
    /// Read every input to its end, ship everything, wait for acknowledgement, print counts, exit.
    #[arg(long)]
    once: bool,
    /// Parse and normalise only; print the counts; ship nothing (no spool is written).
    #[arg(long, conflicts_with = "once")]
    dry_run: bool,
    /// With --once: give up (exit 1) if not everything is acknowledged within this time.
    #[arg(long, env = "CLICKTALLY_DEADLINE", default_value = "5m", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// Dead-letter file for unreadable records (default: SPOOL/dead-letter.jsonl).
    #[arg(long, env = "CLICKTALLY_DEAD_LETTER")]
    dead_letter: Option<PathBuf>,
    /// Most events per shipped batch.
    #[arg(long, default_value_t = 1000)]
    batch_events: usize,
    /// How long a partial batch waits for more events.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Batches in flight before waiting for acknowledgements.
    #[arg(long, default_value_t = 8)]
    max_in_flight: usize,
    /// Most events held in the spool while the aggregator is away; inputs pause above it.
    #[arg(long, env = "CLICKTALLY_MAX_SPOOL_EVENTS", default_value_t = 5_000_000)]
    max_spool_events: u64,
    /// Longest line or document read, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_record_bytes: u64,
    /// Longest URL accepted, in bytes.
    #[arg(long, default_value_t = 8192)]
    max_url_bytes: usize,
    /// Report format: text or json.
    #[arg(long, default_value = "text")]
    report: String,
    /// Log format: plain or json.
    #[arg(long, env = "CLICKTALLY_LOG_FORMAT", default_value = "plain")]
    log_format: String,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,clicktally_collector=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_format);
    let mut config = CollectorConfig::new(&args.spool);
    config.inputs = args.inputs;
    config.once = args.once;
    config.dry_run = args.dry_run;
    config.once_deadline = args.deadline;
    config.dead_letter = args.dead_letter;
    config.max_record_bytes = args.max_record_bytes;
    config.max_url_bytes = args.max_url_bytes;
    config.max_spool_events = args.max_spool_events.max(1);
    config.shipper.endpoint = args.aggregator;
    config.shipper.batch_events = args.batch_events.max(1);
    config.shipper.linger = args.linger;
    config.shipper.max_in_flight = args.max_in_flight.max(1);

    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            shutdown.cancel();
        });
    }
    match clicktally_collector::run(config, shutdown).await {
        Ok(report) => {
            if args.report == "json" {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clicktally-collector: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
