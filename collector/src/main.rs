//! `clicktally-collector`: a thin CLI over [`clicktally_collector::run`].
//!
//! Precedence: flags, then environment variables, then the `--config` file, then defaults.

/// mimalloc: glibc's malloc took ~45% of the aggregator's CPU in the end-to-end profile
/// (issue 7), most of it in its free-list bookkeeping.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use clicktally_collector::config_file::CollectorFile;
use clicktally_collector::input::{parse_input, InputSpec};
use clicktally_collector::secret::{load, Secret};
use clicktally_collector::CollectorConfig;
use clicktally_proto::client::ClientTls;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Reads click events from vendor files and APIs, spools them on disk and ships them to the
/// aggregator.
#[derive(Debug, Parser)]
#[command(name = "clicktally-collector", version)]
struct Args {
    /// TOML config file (see deploy/collector.toml); flags and environment variables override it.
    #[arg(long, env = "CLICKTALLY_COLLECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// The aggregator's gRPC endpoint [default: http://127.0.0.1:7401].
    #[arg(long, env = "CLICKTALLY_AGGREGATOR")]
    aggregator: Option<String>,
    /// Spool directory (sled); events wait here until the aggregator acknowledges them
    /// [default: clicktally-spool].
    #[arg(long, env = "CLICKTALLY_SPOOL")]
    spool: Option<PathBuf>,
    /// An input, KIND:PATH, where PATH is a file, a directory or a glob (repeatable; added to
    /// the config file's sources). Kinds: defender, proofpoint, mimecast.
    #[arg(long = "input", value_parser = parse_input)]
    inputs: Vec<InputSpec>,
    /// Read every input to its end (pollers: up to now), ship everything, wait for
    /// acknowledgement, print counts, exit. Without it, files are followed as they grow.
    #[arg(long)]
    once: bool,
    /// Parse and normalise only; print the counts; ship nothing (no spool is written).
    #[arg(long, conflicts_with = "once")]
    dry_run: bool,
    /// With --once: give up (exit 1) if the aggregator has not acknowledged everything within
    /// this time [default: 5m].
    #[arg(long, env = "CLICKTALLY_DEADLINE", value_parser = humantime::parse_duration)]
    deadline: Option<Duration>,
    /// Dead-letter file for unreadable records [default: SPOOL/dead-letter.jsonl].
    #[arg(long, env = "CLICKTALLY_DEAD_LETTER")]
    dead_letter: Option<PathBuf>,
    /// Most events per shipped batch [default: 1000].
    #[arg(long, env = "CLICKTALLY_BATCH_EVENTS")]
    batch_events: Option<usize>,
    /// How long a partial batch waits for more events [default: 20ms].
    #[arg(long, env = "CLICKTALLY_LINGER", value_parser = humantime::parse_duration)]
    linger: Option<Duration>,
    /// Batches in flight before waiting for acknowledgements [default: 8].
    #[arg(long, env = "CLICKTALLY_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// Most events held in the spool while the aggregator is away; inputs pause above it
    /// [default: 5000000].
    #[arg(long, env = "CLICKTALLY_MAX_SPOOL_EVENTS")]
    max_spool_events: Option<u64>,
    /// Longest line or document read, in bytes [default: 16777216].
    #[arg(long, env = "CLICKTALLY_MAX_RECORD_BYTES")]
    max_record_bytes: Option<u64>,
    /// Longest URL accepted, in bytes [default: 8192].
    #[arg(long, env = "CLICKTALLY_MAX_URL_BYTES")]
    max_url_bytes: Option<usize>,
    /// How often followed inputs are scanned for new lines and files [default: 1s].
    #[arg(long, env = "CLICKTALLY_FOLLOW_INTERVAL", value_parser = humantime::parse_duration)]
    follow_interval: Option<Duration>,
    /// CA of the aggregator's certificate (PEM): connect over TLS (use an https:// endpoint).
    #[arg(long, env = "CLICKTALLY_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), for an aggregator that requires mutual TLS.
    #[arg(long, env = "CLICKTALLY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "CLICKTALLY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Bearer token presented to the aggregator (prefer CLICKTALLY_TOKEN or --token-file: a
    /// flag shows in the process list).
    #[arg(long, env = "CLICKTALLY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, env = "CLICKTALLY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "CLICKTALLY_METRICS")]
    metrics: Option<std::net::SocketAddr>,
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

/// Flags over the file over the defaults.
fn configure(args: Args) -> Result<(CollectorConfig, String), String> {
    let file = match &args.config {
        Some(path) => CollectorFile::read(path)?,
        None => CollectorFile::default(),
    };
    let sources = file.sources(&|var| std::env::var(var).ok())?;
    let spool = args
        .spool
        .or(file.spool)
        .unwrap_or_else(|| PathBuf::from("clicktally-spool"));
    let mut c = CollectorConfig::new(spool);
    c.inputs = sources.inputs;
    c.inputs.extend(args.inputs);
    c.pollers = sources.pollers;
    if c.inputs.is_empty() && c.pollers.is_empty() {
        return Err(
            "nothing to read: give --input KIND:PATH or [[source]] entries in --config".into(),
        );
    }
    c.once = args.once;
    c.dry_run = args.dry_run;
    c.dead_letter = args.dead_letter.or(file.dead_letter);
    c.once_deadline = args.deadline.or(file.deadline).unwrap_or(c.once_deadline);
    c.max_spool_events = args
        .max_spool_events
        .or(file.max_spool_events)
        .unwrap_or(c.max_spool_events)
        .max(1);
    c.max_record_bytes = args
        .max_record_bytes
        .or(file.max_record_bytes)
        .unwrap_or(c.max_record_bytes);
    c.max_url_bytes = args
        .max_url_bytes
        .or(file.max_url_bytes)
        .unwrap_or(c.max_url_bytes);
    c.follow_interval = args
        .follow_interval
        .or(file.follow_interval)
        .unwrap_or(c.follow_interval);
    c.metrics = args.metrics.or(file.metrics);
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))
    };
    let ca = args.ca.clone().or(file.ca.clone());
    let cert = args.tls_cert.clone().or(file.tls_cert.clone());
    let key = args.tls_key.clone().or(file.tls_key.clone());
    if ca.is_some() || cert.is_some() {
        c.shipper.tls = Some(ClientTls {
            ca_pem: ca.as_deref().map(|p| read("--ca", p)).transpose()?,
            identity: match (cert, key) {
                (Some(cert), Some(key)) => {
                    Some((read("--tls-cert", &cert)?, read("--tls-key", &key)?))
                }
                (None, None) => None,
                _ => return Err("give both --tls-cert and --tls-key".into()),
            },
        });
    }
    c.shipper.token = match (
        args.token.clone(),
        args.token_file.clone().or(file.token_file.clone()),
    ) {
        (Some(t), _) => Some(Secret::new(t)),
        (None, Some(f)) => Some(load("token", None, Some(&f), &|_| None)?),
        (None, None) => match &file.token_env {
            Some(var) => Some(load("token", Some(var), None, &|v| std::env::var(v).ok())?),
            None => None,
        },
    };
    let s = &mut c.shipper;
    s.endpoint = args
        .aggregator
        .or(file.aggregator)
        .unwrap_or_else(|| s.endpoint.clone());
    s.batch_events = args
        .batch_events
        .or(file.batch_events)
        .unwrap_or(s.batch_events)
        .max(1);
    s.linger = args.linger.or(file.linger).unwrap_or(s.linger);
    s.max_in_flight = args
        .max_in_flight
        .or(file.max_in_flight)
        .unwrap_or(s.max_in_flight)
        .max(1);
    Ok((c, args.report))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(&args.log_format);
    let (config, report_format) = match configure(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clicktally-collector: {e}");
            return ExitCode::from(2);
        }
    };
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
            if report_format == "json" {
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
