//! The in-process legs: the collector's parse + normalise (leg 1), the aggregator's apply with
//! durable group commit (leg 2), loading datasets, and accounting for what a data directory
//! holds.

use crate::workload::{BlobLines, Dataset};
use crate::Res;
use clicktally_aggregator::query::{summarize, Filter};
use clicktally_aggregator::store::{ApplyLimits, CounterStore};
use clicktally_collector::record::{FieldLimits, Record};
use clicktally_collector::sources::SourceKind;
use clicktally_proto::v1::{ClickEvent, EventBatch, SummaryRequest};
use std::path::Path;
use std::time::Instant;

/// Events per pushed batch: the collector's default `--batch-events`.
pub const BATCH_EVENTS: usize = 1_000;
/// Events per group commit: the aggregator's default `group_commit_events`.
pub const GROUP_EVENTS: usize = 20_000;
/// The aggregator's default sled cache.
pub const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// One run of leg 1.
#[derive(Debug, Clone, Copy)]
pub struct ParseRun {
    /// Wall seconds.
    pub secs: f64,
    /// Clicks normalised.
    pub events: usize,
    /// Records that were not clicks (should be none).
    pub other: usize,
}

/// Parses and normalises every line, as the collector's file reader does; keeps the events
/// when `keep`.
pub fn parse_all(w: &BlobLines, now_ms: i64, keep: bool) -> (ParseRun, Vec<ClickEvent>) {
    let limits = FieldLimits {
        max_url_bytes: 8 * 1024,
        now_ms,
    };
    let mut out = Vec::with_capacity(4);
    let mut events = Vec::with_capacity(if keep { w.lines.len() } else { 0 });
    let (mut n, mut other) = (0, 0);
    let started = Instant::now();
    for i in 0..w.lines.len() {
        SourceKind::Defender.parse(w.line(i), &limits, &mut out);
        for rec in out.drain(..) {
            match rec {
                Record::Click(ev) => {
                    n += 1;
                    if keep {
                        events.push(ev);
                    } else {
                        std::hint::black_box(ev);
                    }
                }
                _ => other += 1,
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (
        ParseRun {
            secs,
            events: n,
            other,
        },
        events,
    )
}

/// Splits events into the batches a collector would push (consecutive sequences from 1).
pub fn into_batches(events: Vec<ClickEvent>, collector_id: &str) -> Vec<EventBatch> {
    let mut out = Vec::with_capacity(events.len() / BATCH_EVENTS + 1);
    let mut seq = 1;
    let mut it = events.into_iter().peekable();
    while it.peek().is_some() {
        let events: Vec<ClickEvent> = it.by_ref().take(BATCH_EVENTS).collect();
        let n = events.len() as u64;
        out.push(EventBatch {
            collector_id: collector_id.to_owned(),
            first_sequence: seq,
            events,
        });
        seq += n;
    }
    out
}

fn limits() -> ApplyLimits {
    ApplyLimits {
        max_url_bytes: 8 * 1024,
        retention_hours: 30 * 24,
    }
}

/// One run of leg 2.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyRun {
    /// Wall seconds of stage + commit.
    pub secs: f64,
    /// Events offered.
    pub events: u64,
    /// Events counted.
    pub applied: u64,
    /// Events dropped as already counted.
    pub duplicates: u64,
    /// Group commits.
    pub groups: u64,
    /// Seconds spent in `stage` (in memory) out of `secs`; the rest is sled's write and flush.
    pub stage_secs: f64,
}

/// Applies `batches` to a new store in `dir` in groups of [`GROUP_EVENTS`] events, each group
/// staged and committed (written and flushed) before the next, as the aggregator's writer does.
///
/// # Errors
/// When sled fails.
pub async fn apply_all(batches: &[EventBatch], dir: &Path, now_ms: i64) -> Res<ApplyRun> {
    let store = CounterStore::open(dir, CACHE_BYTES)?;
    let limits = limits();
    let per_group = (GROUP_EVENTS / BATCH_EVENTS).max(1);
    let mut run = ApplyRun::default();
    let started = Instant::now();
    for group in batches.chunks(per_group) {
        let t = Instant::now();
        let staged = store.stage(group, now_ms, &limits);
        run.stage_secs += t.elapsed().as_secs_f64();
        store.commit(staged.batch).await?;
        for ack in &staged.acks {
            run.events += ack.last_sequence - ack.first_sequence + 1;
            run.applied += u64::from(ack.applied);
            run.duplicates += u64::from(ack.duplicates);
        }
        run.groups += 1;
    }
    run.secs = started.elapsed().as_secs_f64();
    Ok(run)
}

/// Loads a whole dataset into a new store in `dir` (the same group commits as [`apply_all`]),
/// then times up to `queries` 7-day top-100 Summaries computed directly on the store (no
/// gRPC; at least one, no more once 5 s have passed);
/// returns (events, seconds, those latencies in ms). The store is closed when this returns.
///
/// # Errors
/// When sled fails.
pub async fn load_dataset(
    ds: &mut Dataset,
    dir: &Path,
    now_ms: i64,
    queries: usize,
) -> Res<(u64, f64, Vec<f64>, Vec<(String, u64)>)> {
    let store = CounterStore::open(dir, CACHE_BYTES)?;
    let limits = limits();
    let mut seq = 1u64;
    let started = Instant::now();
    loop {
        let mut group = Vec::new();
        let mut n = 0;
        while n < GROUP_EVENTS {
            let events = ds.next_batch(BATCH_EVENTS);
            if events.is_empty() {
                break;
            }
            n += events.len();
            let len = events.len() as u64;
            group.push(EventBatch {
                collector_id: "bench-load".into(),
                first_sequence: seq,
                events,
            });
            seq += len;
        }
        if group.is_empty() {
            break;
        }
        let staged = store.stage(&group, now_ms, &limits);
        store.commit(staged.batch).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let heap = store
        .read()
        .heap_bytes()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let req = SummaryRequest {
        limit: 100,
        ..Default::default()
    };
    let filter = Filter::new(&req, &[], None);
    let mut direct = Vec::with_capacity(queries);
    let until = Instant::now() + std::time::Duration::from_secs(5);
    for i in 0..queries {
        if i > 0 && Instant::now() > until {
            break;
        }
        let t = Instant::now();
        let state = store.read();
        let resp = summarize(&state, &req, &filter, crate::now_ms())?;
        std::hint::black_box(resp);
        direct.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((seq - 1, secs, direct, heap))
}

/// What a data directory holds. The counter data is measured independently of how the store
/// lays it out: a flat table with one row per (hour, tenant, source, URL), each row its key
/// (1 + 4-byte hour + 2-byte lengths + the strings) and its counts as protobuf `Counts`
/// (action names and counts, clicked-through, first and last click).
#[derive(Debug, Clone, Copy, Default)]
pub struct Accounting {
    /// Counter keys (URL x source x tenant x hour).
    pub keys: u64,
    /// Bytes of those keys in the flat table.
    pub key_bytes: u64,
    /// Bytes of their counts in the flat table.
    pub value_bytes: u64,
    /// Bytes of the distinct (tenant, source, URL) strings, each once.
    pub distinct_key_bytes: u64,
    /// Clicks counted.
    pub clicks: u64,
    /// Distinct URLs.
    pub urls: u64,
    /// Event-id digests held (16 bytes each on disk).
    pub digests: u64,
    /// Resident memory the benchmark process grew by when it opened the directory, KiB.
    pub open_rss_kib: u64,
    /// The opened state's heap, estimated from capacities.
    pub open_heap_bytes: u64,
}

impl Accounting {
    /// The counter data: rows x (key bytes + value bytes) of the flat table.
    pub fn counter_bytes(&self) -> u64 {
        self.key_bytes + self.value_bytes
    }
}

/// Opens a (closed) data directory and accounts for it.
///
/// # Errors
/// When it cannot be opened.
pub fn account(dir: &Path) -> Res<Accounting> {
    let me = std::process::id() as i32;
    let rss0 = crate::procs::vm_rss_kib(me).unwrap_or(0);
    let store = CounterStore::open(dir, CACHE_BYTES)?;
    let rss1 = crate::procs::vm_rss_kib(me).unwrap_or(0);
    let heap: u64 = store.read().heap_bytes().iter().map(|(_, v)| v).sum();
    let state = store.read();
    let mut a = Accounting::default();
    let mut urls = std::collections::HashSet::new();
    for (_, key, counts) in state.entries() {
        a.keys += 1;
        a.key_bytes += (9 + key.tenant.len() + key.source.len() + key.url.len()) as u64;
        a.value_bytes += prost::Message::encoded_len(&counts) as u64;
        a.clicks += counts.total();
        urls.insert(key.url);
    }
    a.distinct_key_bytes = state
        .keys
        .iter()
        .filter_map(|(id, _)| state.key(id))
        .map(|k| (k.tenant.len() + k.source.len() + k.url.len()) as u64)
        .sum();
    a.urls = urls.len() as u64;
    a.digests = state.seen.len() as u64;
    a.open_rss_kib = rss1.saturating_sub(rss0);
    a.open_heap_bytes = heap;
    Ok(a)
}
