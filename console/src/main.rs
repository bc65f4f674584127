//! `clicktally`: a thin CLI over [`clicktally_console`].

use clap::{Parser, Subcommand};
use clicktally_console::query::{summary, ConsoleError, QueryArgs};
use clicktally_console::render::Format;
use clicktally_console::{demo, terminal_width};
use std::process::ExitCode;

/// Per-URL click counts across mail-security vendors: the seed's hunting table, live.
#[derive(Debug, Parser)]
#[command(name = "clicktally", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the size difference between subcommands does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Print the per-URL table: Blocked, Allowed, PendingVerdict, Error, ClickedThrough, Total.
    Summary {
        /// The aggregator's gRPC endpoint.
        #[arg(
            long,
            env = "CLICKTALLY_AGGREGATOR",
            default_value = "http://127.0.0.1:7401"
        )]
        aggregator: String,
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
    /// Start an aggregator and a collector in this process with the sample data and show the table.
    Demo,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result: Result<String, ConsoleError> = match cli.command {
        Command::Summary {
            aggregator,
            query,
            limit,
            format,
            per_source,
        } => {
            let now = chrono::Utc::now().timestamp_millis();
            match query.request(now, limit) {
                Ok(req) => summary(&aggregator, req, format, terminal_width(), per_source).await,
                Err(e) => Err(e),
            }
        }
        Command::Demo => demo::run(terminal_width()).await,
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
