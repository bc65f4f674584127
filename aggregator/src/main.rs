//! `clicktally-aggregator`: a thin CLI over [`clicktally_aggregator::run`].

/// mimalloc: glibc's malloc took ~45% of the aggregator's CPU in the end-to-end profile
/// (issue 7), most of it in its free-list bookkeeping.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use clicktally_aggregator::config::TlsConfig;
use clicktally_aggregator::config_file::AggregatorFile;
use clicktally_aggregator::AggregatorConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Keeps per-URL, per-hour click counters and answers Summary, Watch and UrlDetail over gRPC.
#[derive(Debug, Parser)]
#[command(name = "clicktally-aggregator", version)]
struct Args {
    /// TOML config file (see deploy/aggregator.toml); flags and environment variables override it.
    #[arg(long, env = "CLICKTALLY_AGGREGATOR_CONFIG")]
    config: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:7401].
    #[arg(long, env = "CLICKTALLY_LISTEN")]
    listen: Option<SocketAddr>,
    /// sled data directory, created if missing [default: clicktally-data].
    #[arg(long, env = "CLICKTALLY_DATA")]
    data: Option<PathBuf>,
    /// How long counters are kept (`30d`, `720h`) [default: 30d].
    #[arg(long, env = "CLICKTALLY_RETENTION", value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// How often expired counters are deleted [default: 10m].
    #[arg(long, env = "CLICKTALLY_RETENTION_INTERVAL", value_parser = humantime::parse_duration)]
    retention_interval: Option<Duration>,
    /// sled page cache in MiB [default: 16].
    #[arg(long, env = "CLICKTALLY_CACHE_MIB")]
    cache_mib: Option<u64>,
    /// Journal KiB after which a snapshot of the counters is written (it must also exceed the
    /// last snapshot's size) [default: 65536].
    #[arg(long, env = "CLICKTALLY_SNAPSHOT_KIB")]
    snapshot_kib: Option<u64>,
    /// Host hidden from queries with its subdomains (repeatable; added to the config's lists).
    #[arg(long = "exclude", env = "CLICKTALLY_EXCLUDE", value_delimiter = ',')]
    exclude: Vec<String>,
    /// Longest URL counted, in bytes [default: 8192].
    #[arg(long, env = "CLICKTALLY_MAX_URL_BYTES")]
    max_url_bytes: Option<usize>,
    /// Largest gRPC message accepted, in bytes; a pushed batch must fit [default: 16777216].
    #[arg(long, env = "CLICKTALLY_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Most events in one pushed batch [default: 10000].
    #[arg(long, env = "CLICKTALLY_MAX_BATCH_EVENTS")]
    max_batch_events: Option<usize>,
    /// Server certificate chain (PEM): serve gRPC over TLS.
    #[arg(long, env = "CLICKTALLY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "CLICKTALLY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS, only enrolled
    /// collectors and consoles may connect.
    #[arg(long, env = "CLICKTALLY_CLIENT_CA")]
    client_ca: Option<PathBuf>,
    /// Allow plaintext on an address that is not loopback.
    #[arg(long, env = "CLICKTALLY_INSECURE")]
    insecure: bool,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "CLICKTALLY_METRICS")]
    metrics: Option<SocketAddr>,
    /// Log format: plain or json.
    #[arg(long, env = "CLICKTALLY_LOG_FORMAT", default_value = "plain")]
    log_format: String,
}

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// Flags over the file over the defaults.
fn configure(args: &Args) -> Result<(AggregatorConfig, SocketAddr, Option<SocketAddr>), String> {
    let file = match &args.config {
        Some(p) => AggregatorFile::read(p)?,
        None => AggregatorFile::default(),
    };
    let data = args
        .data
        .clone()
        .or(file.data.clone())
        .unwrap_or_else(|| PathBuf::from("clicktally-data"));
    let mut c = AggregatorConfig::new(data);
    c.retention = args.retention.or(file.retention).unwrap_or(c.retention);
    c.retention_interval = args
        .retention_interval
        .or(file.retention_interval)
        .unwrap_or(c.retention_interval);
    c.cache_capacity = args
        .cache_mib
        .or(file.cache_mib)
        .map(|m| m * 1024 * 1024)
        .unwrap_or(c.cache_capacity);
    c.snapshot_min_bytes = args
        .snapshot_kib
        .or(file.snapshot_kib)
        .map(|k| k * 1024)
        .unwrap_or(c.snapshot_min_bytes);
    c.max_url_bytes = args
        .max_url_bytes
        .or(file.max_url_bytes)
        .unwrap_or(c.max_url_bytes);
    c.max_message_bytes = args
        .max_message_bytes
        .or(file.max_message_bytes)
        .unwrap_or(c.max_message_bytes);
    c.max_batch_events = args
        .max_batch_events
        .or(file.max_batch_events)
        .unwrap_or(c.max_batch_events);
    c.exclusions = file.excluded_hosts();
    c.exclusions.extend(args.exclude.iter().cloned());
    let cert = args.tls_cert.clone().or(file.tls_cert.clone());
    let key = args.tls_key.clone().or(file.tls_key.clone());
    let client_ca = args.client_ca.clone().or(file.client_ca.clone());
    c.tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert_pem: read_pem("--tls-cert", &cert)?,
            key_pem: read_pem("--tls-key", &key)?,
            client_ca_pem: client_ca
                .as_deref()
                .map(|p| read_pem("--client-ca", p))
                .transpose()?,
        }),
        (None, None) if client_ca.is_some() => {
            return Err("--client-ca needs --tls-cert and --tls-key".into())
        }
        (None, None) => None,
        _ => return Err("give both --tls-cert and --tls-key".into()),
    };
    c.insecure = args.insecure || file.insecure.unwrap_or(false);
    c.tokens = file.tokens.clone();
    c.max_watchers_per_token = file
        .max_watchers_per_token
        .unwrap_or(c.max_watchers_per_token);
    c.request_timeout = file.request_timeout.unwrap_or(c.request_timeout);
    c.concurrency_per_connection = file
        .concurrency_per_connection
        .unwrap_or(c.concurrency_per_connection);
    let metrics = args.metrics.or(file.metrics);
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7401)));
    Ok((c, listen, metrics))
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
    let (config, listen, metrics_addr) = match configure(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("clicktally-aggregator: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("clicktally-aggregator: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let metrics = match metrics_addr {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("clicktally-aggregator: cannot serve metrics on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    tracing::info!(%listen, "starting");
    match clicktally_aggregator::run_with_metrics(listener, metrics, config, shutdown_signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("clicktally-aggregator: {e}");
            ExitCode::FAILURE
        }
    }
}
