//! `clicktally-bench`: what clicktally does on this machine, against the targets of issue 7.
//!
//! ```sh
//! cargo run --release -p clicktally-bench            # full run, writes bench/RESULTS.md
//! cargo run --release -p clicktally-bench -- --quick # small sizes, one repetition, temp file
//! ```
//!
//! Legs: (1) the collector's parse + normalise in memory; (2) the aggregator's apply with
//! durable group commit in process; (3) end to end with the real binaries (files -> collector
//! -> gRPC on loopback -> aggregator -> flushed sled, acknowledged); (4) Summary latency at two
//! sizes, plus the real aggregator loaded to those sizes for its memory and disk; (5) Watch
//! latency with 1, 10 and 100 watchers; (6) Redis as the peer.

/// mimalloc: glibc's malloc took ~45% of the aggregator's CPU in the end-to-end profile
/// (issue 7), most of it in its free-list bookkeeping.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod binaries;
mod inproc;
mod procs;
mod redis;
mod report;
mod serve;
mod workload;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Errors of the benchmark: reported and the run stops.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Measures clicktally on this machine and writes the figures with the issue's targets.
#[derive(Debug, Parser)]
#[command(name = "clicktally-bench")]
struct Args {
    /// Small sizes and one repetition (for CI); writes to --out or a temporary file.
    #[arg(long)]
    quick: bool,
    /// Where to write the results [default: bench/RESULTS.md; with --quick a temporary file].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the workload.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Only write the Defender workload (the full or --quick size) to this file and exit, to
    /// profile the binaries by hand.
    #[arg(long, value_name = "FILE")]
    write_workload: Option<PathBuf>,
    /// Only these legs (comma-separated: 2,3,4,6; leg 1 always runs, leg 5 runs with 4), for
    /// working on one figure. Results of a partial run are incomplete: not for RESULTS.md.
    #[arg(long, value_delimiter = ',')]
    legs: Option<Vec<u8>>,
}

/// How big each leg is.
#[derive(Debug, Clone, Default)]
pub struct Sizes {
    /// Lines of the Defender workload (legs 1, 2, 3, 6).
    pub events: usize,
    /// Distinct URLs the workload draws from (Zipf).
    pub universe: usize,
    /// Repetitions of each figure.
    pub reps: usize,
    /// Distinct URLs of the two Summary cases.
    pub summary_urls: [usize; 2],
    /// Extra Zipf clicks in the Summary datasets, percent of their distinct URLs.
    pub summary_extra_pct: [usize; 2],
    /// Summaries per repetition, per case (fewer, at least 3, once 15 s have passed).
    pub summary_queries: [usize; 2],
    /// Watchers per Watch case.
    pub watchers: [usize; 3],
    /// Seconds of pushing per Watch repetition.
    pub watch_secs: f64,
}

impl Sizes {
    fn full() -> Self {
        Self {
            events: 1_000_000,
            universe: 100_000,
            reps: 3,
            summary_urls: [100_000, 1_000_000],
            summary_extra_pct: [100, 50],
            summary_queries: [25, 15],
            watchers: [1, 10, 100],
            watch_secs: 5.0,
        }
    }

    fn quick() -> Self {
        Self {
            events: 20_000,
            universe: 100_000,
            reps: 1,
            summary_urls: [10_000, 50_000],
            summary_extra_pct: [100, 50],
            summary_queries: [10, 10],
            watchers: [1, 10, 100],
            watch_secs: 3.0,
        }
    }
}

/// Median of a list (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// Nearest-rank percentile (`p` in 0..=1) of a list (0 when empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

pub fn say(msg: impl AsRef<str>) {
    eprintln!("[bench] {}", msg.as_ref());
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(out) => {
            say(format!("results written to {}", out.display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("clicktally-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Res<PathBuf> {
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let out = match &args.out {
        Some(p) => p.clone(),
        None if args.quick => {
            std::env::temp_dir().join(format!("clicktally-bench-quick-{}.md", std::process::id()))
        }
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("RESULTS.md"),
    };
    if let Some(path) = &args.write_workload {
        let w = workload::blob_lines(sizes.events, sizes.universe, args.seed, now_ms());
        std::fs::write(path, &w.text)?;
        return Ok(path.clone());
    }
    let want = |leg: u8| args.legs.as_ref().is_none_or(|l| l.contains(&leg));
    let bins = binaries::locate_bins()?;
    // Timed from here: building the binaries is not part of the run.
    let wall = Instant::now();
    let mut r = report::Results {
        quick: args.quick,
        seed: args.seed,
        sizes: sizes.clone(),
        machine: report::Machine::probe(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let work = tempfile::Builder::new()
        .prefix("clicktally-bench-")
        .tempdir()?;
    let now = now_ms();

    // The workload.
    say(format!(
        "generating {} Defender blob lines over {} URLs (Zipf s={}, seed {})",
        sizes.events,
        sizes.universe,
        workload::ZIPF_S,
        args.seed
    ));
    let w = workload::blob_lines(sizes.events, sizes.universe, args.seed, now);
    let input = work.path().join("defender-blob.jsonl");
    std::fs::write(&input, &w.text)?;
    r.workload = report::WorkloadFacts {
        lines: w.lines.len(),
        bytes: w.text.len(),
        repeated: w.repeated,
        distinct_urls: w.distinct_urls,
    };

    // Leg 1: parse + normalise.
    let mut events = Vec::new();
    for rep in 0..sizes.reps {
        let (run, evs) = inproc::parse_all(&w, now, rep == 0);
        if rep == 0 {
            events = evs;
        }
        if run.other != 0 {
            return Err(format!("{} lines did not parse as clicks", run.other).into());
        }
        say(format!(
            "leg 1 parse+normalise rep {}: {:.0} events/s",
            rep + 1,
            run.events as f64 / run.secs
        ));
        r.parse.push(run);
    }
    drop(w);

    // Leg 2: apply with durable group commit, in process.
    let batches = inproc::into_batches(events, "bench-apply");
    for rep in 0..sizes.reps * usize::from(want(2)) {
        let dir = tempfile::tempdir_in(work.path())?;
        let run = rt.block_on(inproc::apply_all(&batches, dir.path(), now))?;
        say(format!(
            "leg 2 apply rep {}: {:.0} events/s ({} groups, stage {:.2} s of {:.2} s)",
            rep + 1,
            run.events as f64 / run.secs,
            run.groups,
            run.stage_secs,
            run.secs
        ));
        r.apply.push(run);
    }
    // Leg 6 (while the events are in memory): Redis.
    match redis::available().and_then(|()| {
        if want(6) {
            Ok(())
        } else {
            Err("not asked for (--legs)".to_owned())
        }
    }) {
        Err(skip) => {
            say(format!("leg 6 Redis {skip}"));
            r.redis_skipped = Some(skip);
        }
        Ok(()) => {
            let dir = tempfile::tempdir_in(work.path())?;
            let server = redis::Redis::start(dir.path())?;
            for rep in 0..sizes.reps {
                let run = redis::count(&server, &batches)?;
                say(format!(
                    "leg 6 Redis rep {}: {:.0} events/s ({} HINCRBY)",
                    rep + 1,
                    run.events as f64 / run.secs,
                    run.commands
                ));
                r.redis.push(run);
            }
            r.redis_rss_kib = server.rss_kib();
            server.stop();
        }
    }
    drop(batches);

    // Leg 3: end to end with the real binaries.
    for rep in 0..sizes.reps * usize::from(want(3)) {
        let dir = tempfile::tempdir_in(work.path())?;
        let run = binaries::e2e_once(&rt, &bins, &input, dir.path())?;
        say(format!(
            "leg 3 end to end rep {}: {:.0} events/s, CPU {:.2} s collector + {:.2} s aggregator, peak RSS {} / {} MiB, disk {:.1} MB",
            rep + 1,
            run.events as f64 / run.secs,
            run.collector_cpu,
            run.aggregator_cpu,
            run.collector_rss_kib / 1024,
            run.aggregator_rss_kib / 1024,
            run.disk.0 as f64 / 1e6
        ));
        if rep == 0 {
            let a = inproc::account(&dir.path().join("data"))?;
            if a.clicks != run.applied {
                return Err(format!(
                    "the data directory holds {} clicks, the collector reports {} counted",
                    a.clicks, run.applied
                )
                .into());
            }
            r.e2e_accounting = Some(a);
        }
        r.e2e.push(run);
    }

    // Legs 4 and 5: Summary latency at two sizes, Watch latency at the first.
    for (i, &distinct) in sizes.summary_urls.iter().enumerate().filter(|_| want(4)) {
        let mut case = report::SummaryCase {
            distinct,
            ..Default::default()
        };
        let dir = tempfile::tempdir_in(work.path())?;
        let data = dir.path().join("data");
        let mut ds = workload::Dataset::new(distinct, sizes.summary_extra_pct[i], args.seed, now);
        say(format!(
            "leg 4 loading {} events over {distinct} distinct URLs in process",
            ds.total()
        ));
        let (n, secs, direct, heap) = rt.block_on(inproc::load_dataset(&mut ds, &data, now, 3))?;
        say(format!(
            "leg 4 in-memory state at {distinct} URLs: {}",
            heap.iter()
                .map(|(k, v)| format!("{k} {:.1} MB", *v as f64 / 1e6))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        case.heap = heap;
        case.events = n;
        case.load_secs = secs;
        say(format!(
            "leg 4 Summary computed directly on the store (no gRPC): {}",
            direct
                .iter()
                .map(|ms| format!("{ms:.1} ms"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        case.direct_ms = direct;
        let max_watchers = sizes.watchers.iter().copied().max().unwrap_or(1);
        rt.block_on(async {
            let server = serve::Server::start(&data, max_watchers).await?;
            case.startup_secs = server.startup_secs;
            // Warm up.
            serve::summary_latencies(&server.endpoint, 1, Duration::ZERO).await?;
            for rep in 0..sizes.reps {
                let (lat, rows) = serve::summary_latencies(
                    &server.endpoint,
                    sizes.summary_queries[i],
                    Duration::from_secs(15),
                )
                .await?;
                case.total_rows = rows;
                say(format!(
                    "leg 4 Summary top 100 at {distinct} URLs rep {}: p50 {:.1} ms, p99 {:.1} ms ({rows} rows matched)",
                    rep + 1,
                    percentile(&lat, 0.5),
                    percentile(&lat, 0.99)
                ));
                case.reps.push(lat);
            }
            if i == 0 {
                for &n in &sizes.watchers {
                    let mut runs = Vec::new();
                    for rep in 0..sizes.reps {
                        let tag = format!("w{n}-r{rep}");
                        let run = serve::watch_run(&server.endpoint, n, sizes.watch_secs, &tag).await?;
                        say(format!(
                            "leg 5 Watch with {n} watchers rep {}: p50 {:.0} ms, p99 {:.0} ms ({} clicks, {} missed)",
                            rep + 1,
                            percentile(&run.latencies_ms, 0.5),
                            percentile(&run.latencies_ms, 0.99),
                            run.pushed,
                            run.missed
                        ));
                        runs.push(run);
                    }
                    r.watch.push((n, runs));
                }
            }
            server.stop().await
        })?;
        if case.total_rows != distinct as u64 {
            return Err(format!(
                "the Summary matched {} rows, the dataset has {distinct} distinct URLs",
                case.total_rows
            )
            .into());
        }
        drop(dir);

        // The real aggregator loaded to the same size: its memory and disk.
        let dir = tempfile::tempdir_in(work.path())?;
        let ds = workload::Dataset::new(distinct, sizes.summary_extra_pct[i], args.seed, now);
        say(format!(
            "leg 4 loading the aggregator binary with {} events over {distinct} URLs via gRPC",
            ds.total()
        ));
        let loaded =
            binaries::loaded_aggregator(&rt, &bins, ds, sizes.summary_queries[i], dir.path())?;
        say(format!(
            "leg 4 aggregator binary at {distinct} URLs: {:.0} events/s over gRPC, peak RSS {} MiB (after restart {} MiB), disk {:.1} MB, Summary p99 {:.1} ms",
            loaded.events as f64 / loaded.push_secs,
            loaded.rss_kib / 1024,
            loaded.restart_rss_kib / 1024,
            loaded.disk.0 as f64 / 1e6,
            percentile(&loaded.summary_ms, 0.99)
        ));
        if loaded.total_rows != distinct as u64 {
            return Err(format!(
                "the aggregator binary's Summary matched {} rows, the dataset has {distinct} distinct URLs",
                loaded.total_rows
            )
            .into());
        }
        case.accounting = Some(inproc::account(&dir.path().join("data"))?);
        case.loaded = Some(loaded);
        r.summary.push(case);
    }

    r.machine.load_end = report::loadavg();
    r.wall_secs = wall.elapsed().as_secs_f64();
    let text = report::render(&r);
    if let Some(parent) = out.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    std::fs::write(&out, &text)?;
    println!("{}", report::headline_table(&r));
    Ok(out)
}
