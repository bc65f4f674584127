//! `clicktally`: a thin CLI over [`clicktally_console`].

/// mimalloc: glibc's malloc took ~45% of the aggregator's CPU in the end-to-end profile
/// (issue 7), most of it in its free-list bookkeeping.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use clicktally_console::live::{follow, LiveEvent, LiveRows};
use clicktally_console::query::{connect, summary, Conn, ConsoleError, QueryArgs};
use clicktally_console::render::{self, Format, JsonRow};
use clicktally_console::timearg::{format_minute, format_rfc3339, parse_duration, parse_time};
use clicktally_console::{demo, terminal_width, top};
use clicktally_proto::client::{BearerToken, ClientTls};
use clicktally_proto::v1::watch_update::Kind;
use clicktally_proto::v1::{GroupBy, SummaryResponse, UrlDetailRequest};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Per-URL click counts across mail-security vendors: the seed's hunting table, live.
#[derive(Debug, Parser)]
#[command(name = "clicktally", version)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

/// How to reach an aggregator that serves TLS or requires a token.
#[derive(Debug, clap::Args)]
struct ConnArgs {
    /// The aggregator's gRPC endpoint (`https://` with TLS).
    #[arg(
        long,
        global = true,
        env = "CLICKTALLY_AGGREGATOR",
        default_value = "http://127.0.0.1:7401"
    )]
    aggregator: String,
    /// CA of the aggregator's certificate (PEM): connect over TLS (use an https:// endpoint).
    #[arg(long, global = true, env = "CLICKTALLY_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), for an aggregator that requires mutual TLS.
    #[arg(long, global = true, env = "CLICKTALLY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, global = true, env = "CLICKTALLY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Bearer token (prefer CLICKTALLY_TOKEN or --token-file: a flag shows in the process list).
    #[arg(long, global = true, env = "CLICKTALLY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, global = true, env = "CLICKTALLY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

impl ConnArgs {
    fn conn(&self) -> Result<Conn, ConsoleError> {
        let endpoint = self.aggregator.clone();
        let read = |what: &str, p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| ConsoleError::Usage(format!("{what} {}: {e}", p.display())))
        };
        let tls = if self.ca.is_some() || self.tls_cert.is_some() {
            Some(ClientTls {
                ca_pem: self.ca.as_ref().map(|p| read("--ca", p)).transpose()?,
                identity: match (&self.tls_cert, &self.tls_key) {
                    (Some(c), Some(k)) => Some((read("--tls-cert", c)?, read("--tls-key", k)?)),
                    (None, None) => None,
                    _ => {
                        return Err(ConsoleError::Usage(
                            "give both --tls-cert and --tls-key".into(),
                        ))
                    }
                },
            })
        } else {
            None
        };
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(
                String::from_utf8_lossy(&read("--token-file", f)?)
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let token = BearerToken::new(token.as_deref()).map_err(ConsoleError::Usage)?;
        Ok(Conn {
            endpoint,
            tls,
            token,
        })
    }
}

// Parsed once per run: the size difference between subcommands does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Print the per-URL table: Blocked, Allowed, PendingVerdict, Error, ClickedThrough, Total.
    Summary {
        #[command(flatten)]
        query: QueryArgs,
        /// Rows to print; 0 means every row.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Table: add a column of clicks per source (JSON and CSV always carry them).
        #[arg(long)]
        per_source: bool,
    },
    /// Follow the table live: a snapshot, then the rows that change. With --format json, one
    /// object per message and line: {"kind":"snapshot"|"update","rows":[...]}.
    Watch {
        #[command(flatten)]
        query: QueryArgs,
        /// At most one message per this interval.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Rows followed; 0 means every row.
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// A full-screen live table: sort with ←/→ and r, filter with /, quit with q.
    Top {
        #[command(flatten)]
        query: QueryArgs,
        /// At most one update per this interval.
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
    },
    /// One URL (or, with --host, a host and its subdomains) for triage: totals, per action and
    /// source, first and last seen, and its clicks hour by hour.
    Url {
        /// The URL exactly as clicked, or a host with --host.
        url: String,
        /// Treat the argument as a host.
        #[arg(long)]
        host: bool,
        /// Window start: a duration ago or a time.
        #[arg(long, default_value = "7d")]
        since: String,
        /// Window end: a duration ago or a time; default now.
        #[arg(long)]
        until: Option<String>,
        /// Output format: table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Print the SHA-256 of a token read from standard input, for the aggregator's [[token]] list.
    HashToken,
    /// Start an aggregator and a collector in this process with the sample data, fed live, and
    /// open `top` on it (or, when not on a terminal, print the table once).
    Demo {
        /// Print the table once instead of opening the live view.
        #[arg(long)]
        no_tui: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let now = chrono::Utc::now().timestamp_millis();
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
    }
    let result: Result<String, ConsoleError> = match cli.command {
        Command::Summary {
            query,
            limit,
            format,
            per_source,
        } => match (query.request(now, limit), cli.conn.conn()) {
            (Ok(req), Ok(conn)) => summary(&conn, req, format, terminal_width(), per_source).await,
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Command::Watch {
            query,
            interval,
            limit,
            format,
        } => match (query.watch_request(now, limit, interval), cli.conn.conn()) {
            (Ok(req), Ok(conn)) => {
                let group_by = GroupBy::try_from(query_group(&req)).unwrap_or(GroupBy::Url);
                watch(conn, req, format, group_by, stop).await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        },
        Command::Top { query, interval } => {
            match (query.watch_request(now, 0, interval), cli.conn.conn()) {
                (Ok(req), Ok(conn)) => top::run(conn, req, stop)
                    .await
                    .map(|_| String::new())
                    .map_err(|e| ConsoleError::Demo(e.to_string())),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Command::Url {
            url,
            host,
            since,
            until,
            format,
        } => match cli.conn.conn() {
            Ok(conn) => url_detail(&conn, url, host, &since, until.as_deref(), format, now).await,
            Err(e) => Err(e),
        },
        Command::HashToken => {
            let mut token = String::new();
            match std::io::stdin().read_line(&mut token) {
                Ok(_) if !token.trim().is_empty() => Ok(format!(
                    "{}\n",
                    clicktally_aggregator::auth::hash_token(&token)
                )),
                _ => Err(ConsoleError::Usage(
                    "give the token on standard input".into(),
                )),
            }
        }
        Command::Demo { no_tui } => {
            let tui = !no_tui && std::io::stdout().is_terminal();
            demo::run(terminal_width(), tui, stop).await
        }
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clicktally: {e}");
            ExitCode::FAILURE
        }
    }
}

fn query_group(req: &clicktally_proto::v1::WatchRequest) -> i32 {
    req.filter.as_ref().map(|f| f.group_by).unwrap_or_default()
}

/// Prints each Watch message: one JSON object per line, or the whole current table.
async fn watch(
    conn: Conn,
    req: clicktally_proto::v1::WatchRequest,
    format: Format,
    group_by: GroupBy,
    stop: CancellationToken,
) -> Result<String, ConsoleError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(follow(conn, req, tx, stop.clone()));
    let mut live = LiveRows::default();
    let mut out = std::io::stdout();
    while let Some(ev) = rx.recv().await {
        match ev {
            LiveEvent::Connected => {}
            LiveEvent::Disconnected(why) => {
                eprintln!("clicktally: watch interrupted ({why}); reconnecting")
            }
            LiveEvent::Update(u) => {
                if format == Format::Json {
                    let kind = if u.kind() == Kind::Snapshot {
                        "snapshot"
                    } else {
                        "update"
                    };
                    let rows: Vec<JsonRow> =
                        u.rows.iter().map(|r| JsonRow::new(r, group_by)).collect();
                    let mut msg = serde_json::json!({ "kind": kind, "rows": rows });
                    if !u.removed.is_empty() {
                        msg["removed"] = serde_json::json!(u.removed);
                    }
                    let _ = writeln!(out, "{msg}");
                } else {
                    live.apply(&u, Instant::now());
                    let rows = live
                        .sorted(top::SortColumn::Total, false)
                        .into_iter()
                        .cloned()
                        .collect();
                    let resp = SummaryResponse {
                        total_rows: live.rows.len() as u64,
                        rows,
                        since_unix_ms: u.since_unix_ms,
                        until_unix_ms: u.until_unix_ms,
                        ..Default::default()
                    };
                    let _ = writeln!(
                        out,
                        "{}",
                        render::table(&resp, group_by, terminal_width(), false)
                    );
                }
                let _ = out.flush();
            }
        }
    }
    Ok(String::new())
}

async fn url_detail(
    conn: &Conn,
    url: String,
    by_host: bool,
    since: &str,
    until: Option<&str>,
    format: Format,
    now: i64,
) -> Result<String, ConsoleError> {
    let since = parse_time(since, now).map_err(ConsoleError::Usage)?;
    let until = until
        .map(|u| parse_time(u, now))
        .transpose()
        .map_err(ConsoleError::Usage)?
        .unwrap_or(now);
    let mut client = connect(conn).await?;
    let d = client
        .url_detail(UrlDetailRequest {
            url,
            by_host,
            since_unix_ms: Some(since),
            until_unix_ms: Some(until),
        })
        .await?
        .into_inner();
    let t = d.total.unwrap_or_default();
    if format == Format::Json {
        let hours: Vec<_> = d
            .hours
            .iter()
            .map(|h| serde_json::json!({"Hour": format_rfc3339(h.hour_start_unix_ms), "Blocked": h.blocked, "Allowed": h.allowed,
                "PendingVerdict": h.pending_verdict, "Error": h.error, "ClickedThrough": h.clicked_through, "Total": h.total}))
            .collect();
        let mut v = serde_json::to_value(JsonRow::new(&t, GroupBy::Url)).unwrap_or_default();
        v["Hours"] = serde_json::json!(hours);
        return Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        ));
    }
    let mut out = format!(
        "{}\n  Blocked {}  Allowed {}  PendingVerdict {}  Error {}  ClickedThrough {}  Total {}  BlockedByPolicy {}\n",
        t.key, t.blocked, t.allowed, t.pending_verdict, t.error, t.clicked_through, t.total, t.blocked_by_policy
    );
    if t.total > 0 {
        out += &format!(
            "  first seen {} UTC, last seen {} UTC\n",
            format_minute(t.first_seen_unix_ms),
            format_minute(t.last_seen_unix_ms)
        );
    }
    let list = |pairs: Vec<(String, u64)>| {
        pairs
            .into_iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out += &format!(
        "  actions: {}\n",
        list(
            t.actions
                .iter()
                .map(|a| (a.action_type.clone(), a.count))
                .collect()
        )
    );
    out += &format!(
        "  sources: {}\n\n",
        list(
            t.sources
                .iter()
                .map(|s| (s.source.clone(), s.count))
                .collect()
        )
    );
    out += "  hour (UTC)        Blocked Allowed Pending Error Through Total\n";
    for h in &d.hours {
        out += &format!(
            "  {}  {:>7} {:>7} {:>7} {:>5} {:>7} {:>5}\n",
            format_minute(h.hour_start_unix_ms),
            h.blocked,
            h.allowed,
            h.pending_verdict,
            h.error,
            h.clicked_through,
            h.total
        );
    }
    Ok(out)
}
