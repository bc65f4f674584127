//! The legs that run the real binaries as child processes: end to end (files -> collector ->
//! gRPC -> aggregator -> flushed sled, acknowledged), and an aggregator loaded with N distinct
//! URLs over gRPC for its memory and disk at that size.

use crate::procs::{dir_bytes, free_port, tail, Proc};
use crate::workload::Dataset;
use crate::Res;
use clicktally_proto::v1::click_ingest_client::ClickIngestClient;
use clicktally_proto::v1::click_query_client::ClickQueryClient;
use clicktally_proto::v1::{EventBatch, SummaryRequest};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// The two service binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `clicktally-aggregator`.
    pub aggregator: PathBuf,
    /// `clicktally-collector`.
    pub collector: PathBuf,
}

/// Finds the service binaries next to this one (target/<profile>/) and brings them up to date
/// with `cargo build --bins` (a no-op when they are), so the figures are of the current code.
///
/// # Errors
/// When they are missing and cannot be built.
pub fn locate_bins() -> Res<Bins> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or("the benchmark binary has no directory")?
        .to_owned();
    let bins = Bins {
        aggregator: dir.join("clicktally-aggregator"),
        collector: dir.join("clicktally-collector"),
    };
    let release = dir.file_name().is_some_and(|p| p == "release");
    if !release {
        eprintln!("warning: not a release build; the figures will mean little (cargo run --release -p clicktally-bench)");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // With the benchmark itself in the same build, cargo unifies features exactly as for
    // `cargo run -p clicktally-bench`, so neither build invalidates the other's artifacts.
    cmd.args([
        "build",
        "--bins",
        "-p",
        "clicktally-aggregator",
        "-p",
        "clicktally-collector",
        "-p",
        "clicktally-bench",
    ]);
    if release {
        cmd.arg("--release");
    }
    // `cargo run` gives this process its package's CARGO_PKG_* and CARGO_MANIFEST_* variables;
    // some build scripts (ring's) declare them as inputs, so passing them on would make this
    // build and the next plain one each rebuild half the dependency tree.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&&*k)
        {
            cmd.env_remove(&key);
        }
    }
    if let Some(ws) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        cmd.current_dir(ws);
    }
    eprintln!("building the service binaries: {cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            if !(bins.aggregator.exists() && bins.collector.exists()) {
                return Err(format!("cargo build --bins failed ({s})").into());
            }
            eprintln!("warning: cargo build --bins failed ({s}); using the binaries already built");
        }
        Err(e) => {
            if !(bins.aggregator.exists() && bins.collector.exists()) {
                return Err(format!("cannot run cargo to build the binaries: {e}").into());
            }
            eprintln!("warning: cannot run cargo ({e}); using the binaries already built");
        }
    }
    for b in [&bins.aggregator, &bins.collector] {
        if !b.exists() {
            return Err(format!("{} was not built", b.display()).into());
        }
    }
    Ok(bins)
}

fn command(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    // Nothing from the caller's environment (CLICKTALLY_*, RUST_LOG) changes what is measured.
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// Starts the aggregator binary on a free loopback port over `data`; waits until it answers a
/// Summary. Returns the process, its endpoint and how long it took to answer.
fn start_aggregator(
    rt: &Runtime,
    bins: &Bins,
    data: &Path,
    log: &Path,
) -> Res<(Proc, String, f64)> {
    let port = free_port()?;
    let started = Instant::now();
    let mut agg = Proc::spawn(
        "clicktally-aggregator",
        command(&bins.aggregator)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?),
    )?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = started + Duration::from_secs(120);
    loop {
        if !agg.running() {
            return Err(format!("the aggregator exited at start:\n{}", tail(log, 20)).into());
        }
        let ok = rt.block_on(async {
            let Ok(mut c) = ClickQueryClient::connect(endpoint.clone()).await else {
                return false;
            };
            c.summary(SummaryRequest {
                limit: 1,
                ..Default::default()
            })
            .await
            .is_ok()
        });
        if ok {
            return Ok((agg, endpoint, started.elapsed().as_secs_f64()));
        }
        if Instant::now() > deadline {
            return Err(format!("the aggregator did not answer:\n{}", tail(log, 20)).into());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One end-to-end run.
#[derive(Debug, Clone, Default)]
pub struct E2eRun {
    /// Wall seconds from starting the collector to its exit (everything acknowledged).
    pub secs: f64,
    /// Clicks the collector read and normalised.
    pub events: u64,
    /// Of those, counted by the aggregator.
    pub applied: u64,
    /// Of those, dropped as already counted.
    pub duplicates: u64,
    /// Collector CPU seconds (whole life, from wait4).
    pub collector_cpu: f64,
    /// Aggregator CPU seconds while the collector ran.
    pub aggregator_cpu: f64,
    /// Collector peak RSS, KiB.
    pub collector_rss_kib: u64,
    /// Aggregator peak RSS, KiB (VmHWM just before SIGTERM).
    pub aggregator_rss_kib: u64,
    /// Aggregator data directory after a clean stop: (apparent, allocated) bytes.
    pub disk: (u64, u64),
    /// Collector spool after the run: (apparent, allocated) bytes.
    pub spool: (u64, u64),
}

/// Runs the collector binary over `input` into a fresh aggregator binary. The data directory
/// is `work/data` (left in place for accounting).
///
/// # Errors
/// When a process fails or the collector's report does not add up.
pub fn e2e_once(rt: &Runtime, bins: &Bins, input: &Path, work: &Path) -> Res<E2eRun> {
    let data = work.join("data");
    let spool = work.join("spool");
    let (mut agg, endpoint, _) = start_aggregator(rt, bins, &data, &work.join("aggregator.log"))?;
    let cpu0 = agg.cpu_seconds().unwrap_or(0.0);
    let coll_log = work.join("collector.log");
    let started = Instant::now();
    let mut coll = Proc::spawn(
        "clicktally-collector",
        command(&bins.collector)
            .arg("--aggregator")
            .arg(&endpoint)
            .arg("--spool")
            .arg(&spool)
            .arg("--input")
            .arg(format!("defender:{}", input.display()))
            .arg("--once")
            .arg("--report")
            .arg("json")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&coll_log)?),
    )?;
    // The collector's peak RSS is sampled from /proc while it runs: wait4's ru_maxrss would
    // report the benchmark's own peak, which a child inherits from before exec.
    let cpid = coll.pid();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(kib) = crate::procs::vm_hwm_kib(cpid) {
            peak = peak.max(kib);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak
    });
    let mut report = String::new();
    if let Some(mut out) = coll.child.stdout.take() {
        out.read_to_string(&mut report)?;
    }
    let cexit = coll.wait()?;
    let collector_rss_kib = sampler.join().unwrap_or(0);
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = agg.cpu_seconds().unwrap_or(cpu0);
    let agg_rss = agg.vm_hwm_kib().unwrap_or(0);
    let aexit = agg.terminate()?;
    if cexit.code != Some(0) {
        return Err(format!(
            "the collector failed ({:?}):\n{}",
            cexit.code,
            tail(&coll_log, 20)
        )
        .into());
    }
    if aexit.code != Some(0) {
        eprintln!(
            "warning: the aggregator exited with {:?} on SIGTERM:\n{}",
            aexit.code,
            tail(&work.join("aggregator.log"), 10)
        );
    }
    let r: serde_json::Value = serde_json::from_str(report.trim())
        .map_err(|e| format!("unreadable collector report {report:?}: {e}"))?;
    let field = |k: &str| r.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let run = E2eRun {
        secs,
        events: field("events"),
        applied: field("applied"),
        duplicates: field("duplicates"),
        collector_cpu: cexit.cpu_s,
        aggregator_cpu: cpu1 - cpu0,
        collector_rss_kib,
        aggregator_rss_kib: agg_rss,
        disk: dir_bytes(&data),
        spool: dir_bytes(&spool),
    };
    if field("shipped") != run.events
        || run.applied + run.duplicates != run.events
        || field("dead_lettered") != 0
    {
        return Err(format!("the collector's report does not add up: {report}").into());
    }
    Ok(run)
}

/// An aggregator binary loaded with a dataset over gRPC, then queried.
#[derive(Debug, Clone, Default)]
pub struct LoadedRun {
    /// Events pushed and acknowledged.
    pub events: u64,
    /// Seconds from the first push to the last acknowledgement.
    pub push_secs: f64,
    /// Summary latencies (ms) against the binary after loading.
    pub summary_ms: Vec<f64>,
    /// Rows the Summary matched (distinct URLs in the window).
    pub total_rows: u64,
    /// Acknowledgement latency of one pushed click with nothing else going on, ms.
    pub ack_idle_ms: f64,
    /// The same while Summaries run back to back, ms.
    pub ack_during_summary_ms: f64,
    /// Aggregator CPU seconds while loading.
    pub cpu_load: f64,
    /// Peak RSS over loading and the queries, KiB.
    pub rss_kib: u64,
    /// RSS after the queries, KiB.
    pub rss_now_kib: u64,
    /// Data directory after a clean stop: (apparent, allocated) bytes.
    pub disk: (u64, u64),
    /// Seconds a restarted aggregator took to load this directory and answer.
    pub restart_secs: f64,
    /// Peak RSS of the restarted aggregator after the same queries, KiB.
    pub restart_rss_kib: u64,
}

/// Starts the aggregator binary over `work/data`, pushes `ds` over one Push stream in batches
/// of 1,000 (as a collector does), runs `queries` 7-day top-100 Summaries, and stops it; then
/// restarts it over the same directory and queries it again, for its load time and memory.
///
/// # Errors
/// When a process fails or not everything is acknowledged.
pub fn loaded_aggregator(
    rt: &Runtime,
    bins: &Bins,
    ds: Dataset,
    queries: usize,
    work: &Path,
) -> Res<LoadedRun> {
    let data = work.join("data");
    let log = work.join("aggregator-loaded.log");
    let (mut agg, endpoint, _) = start_aggregator(rt, bins, &data, &log)?;
    let cpu0 = agg.cpu_seconds().unwrap_or(0.0);
    let total = ds.total();
    let started = Instant::now();
    let acked = rt.block_on(push_dataset(&endpoint, ds, "bench-loaded"))?;
    let push_secs = started.elapsed().as_secs_f64();
    let cpu_load = agg.cpu_seconds().unwrap_or(cpu0) - cpu0;
    if acked != total {
        return Err(format!("only {acked} of {total} events were acknowledged").into());
    }
    let ack_idle_ms = rt.block_on(probe_push(&endpoint, "bench-probe-idle", Duration::ZERO))?;
    let (summary_ms, total_rows) = rt.block_on(crate::serve::summary_latencies(
        &endpoint,
        queries,
        Duration::from_secs(20),
    ))?;
    // One click pushed halfway through a Summary: how long ingestion waits on a query.
    let half = Duration::from_secs_f64(crate::median(&summary_ms) / 2e3);
    let ack_during_summary_ms = rt.block_on(async {
        let query = tokio::spawn({
            let endpoint = endpoint.clone();
            async move { crate::serve::summary_latencies(&endpoint, 1, Duration::ZERO).await }
        });
        let stall = probe_push(&endpoint, "bench-probe-busy", half).await?;
        query.await??;
        Res::Ok(stall)
    })?;
    let rss_kib = agg.vm_hwm_kib().unwrap_or(0);
    let rss_now_kib = crate::procs::vm_rss_kib(agg.pid()).unwrap_or(0);
    agg.terminate()?;
    let disk = dir_bytes(&data);
    let (mut again, endpoint, restart_secs) =
        start_aggregator(rt, bins, &data, &work.join("aggregator-restart.log"))?;
    rt.block_on(crate::serve::summary_latencies(
        &endpoint,
        1,
        Duration::ZERO,
    ))?;
    let restart_rss_kib = again.vm_hwm_kib().unwrap_or(0);
    again.terminate()?;
    Ok(LoadedRun {
        events: acked,
        push_secs,
        summary_ms,
        total_rows,
        ack_idle_ms,
        ack_during_summary_ms,
        cpu_load,
        rss_kib,
        rss_now_kib,
        disk,
        restart_secs,
        restart_rss_kib,
    })
}

/// Opens a Push stream, waits `delay`, pushes one click and returns how long its
/// acknowledgement took, ms.
async fn probe_push(endpoint: &str, collector_id: &str, delay: Duration) -> Res<f64> {
    let mut client = ClickIngestClient::connect(endpoint.to_owned()).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(1);
    let mut acks = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    tokio::time::sleep(delay).await;
    // Eight days old: inside retention, so it is counted like any click, but outside the
    // 7-day window, so it does not change what the Summaries answer.
    let now_ms = crate::now_ms();
    let event = clicktally_proto::v1::ClickEvent {
        event_id: format!("{collector_id}-{now_ms}"),
        time_unix_ms: now_ms - 8 * crate::workload::DAY_MS,
        url: format!("https://probe.example/{collector_id}"),
        action_type: "ClickAllowed".into(),
        source_action: "ClickAllowed".into(),
        source: "defender".into(),
        tenant: "t1".into(),
        ..Default::default()
    };
    let started = Instant::now();
    tx.send(EventBatch {
        collector_id: collector_id.to_owned(),
        first_sequence: 1,
        events: vec![event],
    })
    .await
    .map_err(|_| "the probe's push stream closed")?;
    acks.message().await?.ok_or("no acknowledgement")?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

/// Pushes a dataset over one Push stream as the collector's shipper does: batches of 1,000,
/// at most 8 unacknowledged; returns the events acknowledged.
async fn push_dataset(endpoint: &str, mut ds: Dataset, collector_id: &str) -> Res<u64> {
    const IN_FLIGHT: usize = 8;
    let mut client = ClickIngestClient::connect(endpoint.to_owned())
        .await?
        .max_encoding_message_size(64 * 1024 * 1024);
    let total = ds.total();
    let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(IN_FLIGHT);
    let window = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let id = collector_id.to_owned();
    let slots = window.clone();
    let producer = tokio::spawn(async move {
        let mut seq = 1u64;
        loop {
            match slots.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            let events = ds.next_batch(crate::inproc::BATCH_EVENTS);
            if events.is_empty() {
                break;
            }
            let n = events.len() as u64;
            let batch = EventBatch {
                collector_id: id.clone(),
                first_sequence: seq,
                events,
            };
            if tx.send(batch).await.is_err() {
                break;
            }
            seq += n;
        }
        seq - 1
    });
    let mut acks = client
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut acked = 0u64;
    while acked < total {
        match acks.message().await? {
            Some(ack) => {
                acked += ack.last_sequence - ack.first_sequence + 1;
                window.add_permits(1);
            }
            None => break,
        }
    }
    let sent = producer.await?;
    if acked != sent {
        return Err(format!("sent {sent} events, {acked} acknowledged").into());
    }
    Ok(acked)
}
