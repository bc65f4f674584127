//! `clicktally-aggregator`: a thin CLI over [`clicktally_aggregator::run`].

use clap::Parser;
use clicktally_aggregator::AggregatorConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Keeps per-URL, per-hour click counters and answers Summary queries over gRPC.
#[derive(Debug, Parser)]
#[command(name = "clicktally-aggregator", version)]
struct Args {
    /// Address to serve gRPC on.
    #[arg(long, env = "CLICKTALLY_LISTEN", default_value = "127.0.0.1:7401")]
    listen: SocketAddr,
    /// sled data directory (created if missing).
    #[arg(long, env = "CLICKTALLY_DATA", default_value = "clicktally-data")]
    data: PathBuf,
    /// How long counters are kept (`30d`, `720h`).
    #[arg(long, env = "CLICKTALLY_RETENTION", default_value = "30d", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// sled page cache in MiB.
    #[arg(long, env = "CLICKTALLY_CACHE_MIB", default_value_t = 64)]
    cache_mib: u64,
    /// Host hidden from queries with its subdomains (repeatable; requests may turn exclusions off).
    #[arg(long = "exclude", env = "CLICKTALLY_EXCLUDE", value_delimiter = ',')]
    exclude: Vec<String>,
    /// Longest URL counted, in bytes.
    #[arg(long, env = "CLICKTALLY_MAX_URL_BYTES", default_value_t = 8192)]
    max_url_bytes: usize,
    /// Largest gRPC message accepted, in bytes (a pushed batch must fit).
    #[arg(long, env = "CLICKTALLY_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_message_bytes: usize,
    /// Most events in one pushed batch.
    #[arg(long, env = "CLICKTALLY_MAX_BATCH_EVENTS", default_value_t = 10_000)]
    max_batch_events: usize,
    /// Log format: plain or json.
    #[arg(long, env = "CLICKTALLY_LOG_FORMAT", default_value = "plain")]
    log_format: String,
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
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

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_format);
    let mut config = AggregatorConfig::new(&args.data);
    config.retention = args.retention;
    config.cache_capacity = args.cache_mib * 1024 * 1024;
    config.exclusions = args.exclude;
    config.max_url_bytes = args.max_url_bytes;
    config.max_message_bytes = args.max_message_bytes;
    config.max_batch_events = args.max_batch_events;
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "clicktally-aggregator: cannot listen on {}: {e}",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %args.listen, "starting");
    match clicktally_aggregator::run(listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clicktally-aggregator: {e}");
            ExitCode::FAILURE
        }
    }
}
