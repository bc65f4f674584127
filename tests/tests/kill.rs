//! Nothing lost, nothing counted twice: the real binaries are killed with SIGKILL in the middle
//! of a large ingest and restarted, and afterwards the Summary equals, to the unit, both what
//! the generator wrote and what an uninterrupted run answers.

use clicktally_tests::{
    all_rows, as_expected, binary, differences, free_port, generate_defender, spawn_aggregator,
    ChildGuard, Rng,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FILES: usize = 4;
const LINES: usize = 15_000;
/// Aggregator flags: a snapshot every 64 KiB of journal.
const SNAPSHOTS: &[&str] = &["--snapshot-kib", "64"];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn spawn_collector(port: u16, spool: &Path, input: &Path, log: &Path) -> ChildGuard {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    ChildGuard(
        Command::new(binary("clicktally-collector"))
            .args(["--aggregator", &format!("http://127.0.0.1:{port}")])
            .arg("--spool")
            .arg(spool)
            .arg("--input")
            .arg(format!("defender:{}", input.display()))
            .args(["--once", "--deadline", "300s", "--batch-events", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn kill9(child: &mut ChildGuard) {
    child.0.kill().unwrap(); // SIGKILL on Unix
    child.0.wait().unwrap();
}

/// Waits for the collector to exit; true when it exited successfully before `timeout`.
fn wait_exit(child: &mut ChildGuard, timeout: Duration) -> Option<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return Some(status.success());
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn summary(port: u16) -> Vec<clicktally_proto::v1::SummaryRow> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(all_rows(&format!("http://127.0.0.1:{port}")))
}

#[derive(Debug, Clone, Copy)]
enum Victim {
    Aggregator,
    Collector,
    Either,
}

struct Outcome {
    rows: Vec<clicktally_proto::v1::SummaryRow>,
    aggregator_kills: u32,
    collector_kills: u32,
    restarts: u32,
    /// Snapshots written (the generation in force at the end).
    snapshots: u64,
    elapsed: Duration,
}

/// One ingest of `input`, killing `victim` up to `kills` times at random moments.
fn ingest(tmp: &Path, input: &Path, victim: Victim, kills: u32, rng: &mut Rng) -> Outcome {
    let started = Instant::now();
    let port = free_port();
    let data = tmp.join("data");
    let spool = tmp.join("spool");
    let log = tmp.join("collector.log");
    // Small snapshots, so that kills also land while one is being written.
    let mut agg = spawn_aggregator(port, &data, SNAPSHOTS);
    let mut col = spawn_collector(port, &spool, input, &log);
    let (mut aggregator_kills, mut collector_kills, mut restarts) = (0, 0, 0);
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(150 + rng.below(900)));
        if col.0.try_wait().unwrap().is_some() {
            break; // finished before this kill: nothing left to interrupt
        }
        let kill_aggregator = match victim {
            Victim::Aggregator => true,
            Victim::Collector => false,
            Victim::Either => rng.below(2) == 0,
        };
        if kill_aggregator {
            kill9(&mut agg);
            aggregator_kills += 1;
            std::thread::sleep(Duration::from_millis(rng.below(300)));
            agg = spawn_aggregator(port, &data, SNAPSHOTS);
        } else {
            kill9(&mut col);
            collector_kills += 1;
            col = spawn_collector(port, &spool, input, &log);
        }
        restarts += 1;
    }
    let finished = wait_exit(&mut col, Duration::from_secs(300));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        finished,
        Some(true),
        "the collector did not finish cleanly:\n{log_text}"
    );
    let rows = summary(port);
    drop(agg);
    let snapshots = clicktally_aggregator::store::CounterStore::open(&data, 1 << 20)
        .expect("the data directory opens after the run")
        .snapshot_generation();
    Outcome {
        snapshots,
        rows,
        aggregator_kills,
        collector_kills,
        restarts,
        elapsed: started.elapsed(),
    }
}

#[test]
fn counts_survive_kill_9_of_either_side() {
    let seed = now_ms() as u64;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    let expected = generate_defender(&input, FILES, LINES, 5_000, now_ms(), seed);
    let events: u64 = expected.values().map(|e| e[5]).sum();
    let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);

    let baseline = ingest(
        &tmp.path().join("baseline"),
        &input,
        Victim::Either,
        0,
        &mut rng,
    );
    let diff = differences(&as_expected(&baseline.rows), &expected);
    assert!(
        diff.is_empty(),
        "uninterrupted run differs from the generator (seed {seed}): {diff:#?}"
    );
    println!(
        "kill test (seed {seed}): uninterrupted: {events} distinct events in {} lines, {} URLs, {} snapshots, {:.1}s",
        FILES * LINES,
        expected.len(),
        baseline.snapshots,
        baseline.elapsed.as_secs_f64()
    );
    assert!(
        baseline.snapshots >= 2,
        "the journal should have been snapshotted (got generation {})",
        baseline.snapshots
    );

    let mut total_kills = 0;
    for (name, victim, kills) in [
        ("aggregator", Victim::Aggregator, 3),
        ("collector", Victim::Collector, 3),
        ("both", Victim::Either, 4),
    ] {
        let run = ingest(&tmp.path().join(name), &input, victim, kills, &mut rng);
        let diff = differences(&as_expected(&run.rows), &expected);
        assert!(
            diff.is_empty(),
            "{name}: counts differ from the generator (seed {seed}): {diff:#?}"
        );
        // Every field, first and last seen and per-action counts included.
        assert!(
            run.rows == baseline.rows,
            "{name}: Summary differs from the uninterrupted run (seed {seed})"
        );
        println!(
            "kill test (seed {seed}): {name}: {events} events, {} aggregator kills, {} collector kills, {} restarts, {} snapshots, {:.1}s; final counts equal the uninterrupted run: {} rows, {} clicks",
            run.aggregator_kills,
            run.collector_kills,
            run.restarts,
            run.snapshots,
            run.elapsed.as_secs_f64(),
            run.rows.len(),
            run.rows.iter().map(|r| r.total).sum::<u64>()
        );
        total_kills += run.aggregator_kills + run.collector_kills;
    }
    assert!(total_kills >= 3, "too few kills landed mid-ingest ({total_kills}); the ingest finished too fast to test anything");
}
