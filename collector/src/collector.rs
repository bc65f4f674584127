//! `run`: the collector as one future: read inputs, normalise, spool, ship, report.

use crate::config::CollectorConfig;
use crate::deadletter::{DeadLetter, DeadLetterFile};
use crate::error::CollectorError;
use crate::input::{ChunkReader, InputSpec};
use crate::record::{FieldLimits, Record};
use crate::shipper;
use crate::sources::SourceKind;
use crate::spool::Spool;
use crate::stats::{Report, Stats};
use crate::time::now_ms;
use clicktally_proto::v1::ClickEvent;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Runs the collector until its inputs are done (`once`, `dry_run`) or `shutdown` fires.
///
/// # Errors
/// When an input is missing, the spool or dead-letter file cannot be written, or (`once`)
/// not everything was acknowledged before the deadline.
pub async fn run(
    config: CollectorConfig,
    shutdown: CancellationToken,
) -> Result<Report, CollectorError> {
    let stats = Arc::new(Stats::default());
    let mut files: Vec<(SourceKind, PathBuf)> = Vec::new();
    for spec in &config.inputs {
        let found = spec.files().map_err(CollectorError::Input)?;
        if found.is_empty() {
            warn!(input = %spec.pattern, "input matches no file yet");
        }
        files.extend(found.into_iter().map(|f| (spec.kind, f)));
    }

    if config.dry_run {
        let mut dead = match &config.dead_letter {
            Some(p) => Some(open_dead_letters(p)?),
            None => None,
        };
        for (kind, path) in &files {
            read_file(&config, *kind, path, None, dead.as_mut(), &stats, &shutdown).await?;
        }
        return Ok(stats.report());
    }

    let dir = config.spool_dir.clone();
    let cache = config.spool_cache_capacity;
    let spool = tokio::task::spawn_blocking(move || Spool::open(&dir, cache))
        .await
        .map_err(|e| CollectorError::Input(format!("spool open task failed: {e}")))??;
    let spool = Arc::new(spool);
    let mut dead = open_dead_letters(&config.dead_letter_path())?;
    info!(collector = spool.collector_id(), spool = %config.spool_dir.display(), queued = spool.depth(), "collector started");

    let ship_token = CancellationToken::new();
    let shipper = tokio::spawn(shipper::run(
        spool.clone(),
        config.shipper.clone(),
        stats.clone(),
        ship_token.clone(),
    ));

    let result = async {
        for (kind, path) in &files {
            read_file(
                &config,
                *kind,
                path,
                Some(&spool),
                Some(&mut dead),
                &stats,
                &shutdown,
            )
            .await?;
            if shutdown.is_cancelled() {
                // Stopping is normal for a long-running collector: what was read is spooled
                // and checkpointed. For --once it means the job is not done.
                return if config.once {
                    Err(CollectorError::Interrupted {
                        unacked: spool.depth(),
                    })
                } else {
                    Ok(())
                };
            }
        }
        if config.once {
            wait_until_acknowledged(&spool, &config, &shutdown).await
        } else {
            shutdown.cancelled().await;
            Ok(())
        }
    }
    .await;

    ship_token.cancel();
    match shipper.await {
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(CollectorError::Input(format!("shipper task failed: {e}"))),
        Ok(Ok(())) => {}
    }
    spool.flush().await?;
    result?;
    Ok(stats.report())
}

fn open_dead_letters(path: &Path) -> Result<DeadLetterFile, CollectorError> {
    DeadLetterFile::open(path).map_err(|source| CollectorError::DeadLetter {
        path: path.to_owned(),
        source,
    })
}

async fn wait_until_acknowledged(
    spool: &Spool,
    config: &CollectorConfig,
    shutdown: &CancellationToken,
) -> Result<(), CollectorError> {
    let mut depth = spool.watch_depth();
    let wait = depth.wait_for(|d| *d == 0);
    tokio::select! {
        _ = wait => Ok(()),
        _ = tokio::time::sleep(config.once_deadline) => Err(CollectorError::Deadline {
            unacked: spool.depth(),
            waited: config.once_deadline,
            endpoint: config.shipper.endpoint.clone(),
        }),
        _ = shutdown.cancelled() => Err(CollectorError::Interrupted { unacked: spool.depth() }),
    }
}

/// A file's checkpoint: offset, line and inode, so a replaced file is read from the start.
fn encode_checkpoint(offset: u64, line: u64, inode: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    out[..8].copy_from_slice(&offset.to_be_bytes());
    out[8..16].copy_from_slice(&line.to_be_bytes());
    out[16..].copy_from_slice(&inode.to_be_bytes());
    out
}

fn decode_checkpoint(v: &[u8]) -> Option<(u64, u64, u64)> {
    let v: [u8; 24] = v.try_into().ok()?;
    let n = |r: std::ops::Range<usize>| u64::from_be_bytes(v[r].try_into().expect("8 bytes"));
    Some((n(0..8), n(8..16), n(16..24)))
}

fn inode(meta: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::ino(meta)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        0
    }
}

/// What one group of chunks became.
#[derive(Default)]
struct Parsed {
    events: Vec<ClickEvent>,
    dead: Vec<DeadLetter>,
    records: u64,
    skipped: u64,
    end_offset: u64,
    end_line: u64,
    done: bool,
}

async fn read_file(
    config: &CollectorConfig,
    kind: SourceKind,
    path: &Path,
    spool: Option<&Arc<Spool>>,
    mut dead: Option<&mut DeadLetterFile>,
    stats: &Stats,
    shutdown: &CancellationToken,
) -> Result<(), CollectorError> {
    let read_err = |source| CollectorError::Read {
        path: path.to_owned(),
        source,
    };
    let canonical = std::fs::canonicalize(path).map_err(read_err)?;
    let meta = std::fs::metadata(&canonical).map_err(read_err)?;
    let ino = inode(&meta);
    let input_name = format!("file:{kind}:{}", canonical.display());
    let (mut offset, mut line) = (0, 0);
    if let Some(spool) = spool {
        if let Some((o, l, i)) = spool
            .checkpoint(&input_name)?
            .as_deref()
            .and_then(decode_checkpoint)
        {
            if i == ino && o <= meta.len() {
                (offset, line) = (o, l);
            }
        }
    }
    if offset == meta.len() && offset > 0 {
        info!(file = %canonical.display(), "already read to its end");
        return Ok(());
    }
    let reader =
        ChunkReader::open(&canonical, offset, line, config.max_record_bytes).map_err(read_err)?;
    let mut reader = Some(reader);
    let display = canonical.display().to_string();
    let limits = FieldLimits {
        max_url_bytes: config.max_url_bytes,
        now_ms: now_ms(),
    };
    loop {
        let mut r = reader.take().expect("reader is put back after each group");
        let chunk_records = config.chunk_records;
        let max_record = config.max_record_bytes;
        let input = display.clone();
        let (r, parsed) = tokio::task::spawn_blocking(move || {
            let parsed = parse_group(&mut r, kind, &input, chunk_records, max_record, &limits);
            (r, parsed)
        })
        .await
        .map_err(|e| CollectorError::Input(format!("reader task failed: {e}")))?;
        reader = Some(r);
        let mut parsed = parsed.map_err(read_err)?;
        if config.time_shift_ms != 0 {
            for ev in &mut parsed.events {
                ev.time_unix_ms += config.time_shift_ms;
            }
        }
        if let Some(dead) = dead.as_deref_mut() {
            dead.append(&parsed.dead)
                .map_err(|source| CollectorError::DeadLetter {
                    path: dead.path().to_owned(),
                    source,
                })?;
        } else {
            for d in &parsed.dead {
                warn!(input = %d.input, line = d.line, reason = %d.reason, "dead letter");
            }
        }
        if let Some(spool) = spool {
            let mut depth = spool.watch_depth();
            // A full spool pauses reading (this chunk is not checkpointed, so nothing is lost).
            // With --once, waiting longer than the deadline for the aggregator is a failure.
            tokio::select! {
                _ = depth.wait_for(|d| *d < config.max_spool_events) => {}
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(config.once_deadline), if config.once => {
                    return Err(CollectorError::Deadline {
                        unacked: spool.depth(),
                        waited: config.once_deadline,
                        endpoint: config.shipper.endpoint.clone(),
                    });
                }
            }
            let cp = encode_checkpoint(parsed.end_offset, parsed.end_line, ino);
            spool
                .append(&parsed.events, Some((&input_name, &cp)))
                .await?;
        }
        stats.records.fetch_add(parsed.records, Relaxed);
        stats.events.fetch_add(parsed.events.len() as u64, Relaxed);
        stats.skipped.fetch_add(parsed.skipped, Relaxed);
        stats
            .dead_lettered
            .fetch_add(parsed.dead.len() as u64, Relaxed);
        if parsed.done || shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

fn parse_group(
    reader: &mut ChunkReader,
    kind: SourceKind,
    input: &str,
    max_chunks: usize,
    max_record: u64,
    limits: &FieldLimits,
) -> std::io::Result<Parsed> {
    let mut p = Parsed::default();
    let mut records = Vec::new();
    for _ in 0..max_chunks {
        let Some(chunk) = reader.next_chunk()? else {
            p.done = true;
            break;
        };
        p.end_offset = chunk.end_offset;
        p.end_line = reader.line();
        if let Some(len) = chunk.oversize {
            p.records += 1;
            p.dead.push(DeadLetter::new(
                kind.name(),
                input,
                chunk.line,
                format!("record of {len} bytes exceeds the {max_record}-byte limit"),
                b"",
            ));
            continue;
        }
        records.clear();
        kind.parse(&chunk.bytes, limits, &mut records);
        for rec in records.drain(..) {
            p.records += 1;
            match rec {
                Record::Click(ev) => p.events.push(ev),
                Record::Skipped(_) => p.skipped += 1,
                Record::Invalid { reason, raw } => {
                    let raw = raw.as_deref().map(str::as_bytes).unwrap_or(&chunk.bytes);
                    p.dead
                        .push(DeadLetter::new(kind.name(), input, chunk.line, reason, raw));
                }
            }
        }
    }
    Ok(p)
}

/// The inputs of a config, for messages.
pub fn describe_inputs(inputs: &[InputSpec]) -> String {
    inputs
        .iter()
        .map(|i| format!("{}:{}", i.kind, i.pattern))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The newest click time in the inputs (for replaying sample files as if they happened now).
///
/// # Errors
/// When an input is missing or unreadable.
pub fn newest_click_ms(
    inputs: &[InputSpec],
    max_record_bytes: u64,
) -> Result<Option<i64>, CollectorError> {
    let limits = FieldLimits {
        max_url_bytes: usize::MAX,
        now_ms: now_ms(),
    };
    let mut newest = None;
    for spec in inputs {
        for path in spec.files().map_err(CollectorError::Input)? {
            let read_err = |source| CollectorError::Read {
                path: path.clone(),
                source,
            };
            let mut reader = ChunkReader::open(&path, 0, 0, max_record_bytes).map_err(read_err)?;
            loop {
                let p = parse_group(
                    &mut reader,
                    spec.kind,
                    "",
                    10_000,
                    max_record_bytes,
                    &limits,
                )
                .map_err(read_err)?;
                newest = p.events.iter().map(|e| e.time_unix_ms).chain(newest).max();
                if p.done {
                    break;
                }
            }
        }
    }
    Ok(newest)
}
