//! File inputs: each file is read from its checkpoint (offset, line, inode) to its end; with
//! `follow`, inputs are scanned again and again, so growing files and new files are picked up,
//! and a half-written last line waits for its newline.

use crate::config::CollectorConfig;
use crate::error::CollectorError;
use crate::input::{ChunkReader, InputSpec, Layout};
use crate::record::FieldLimits;
use crate::sink::{Committed, Parsed, Sink};
use crate::sources::SourceKind;
use crate::time::now_ms;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tracing::{debug, warn};

/// A pretty-printed document that changed this recently may still be being written.
const SETTLE: Duration = Duration::from_secs(2);

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

/// Reads every file of `inputs` once (`once`, dry runs) or follows them until shutdown.
///
/// # Errors
/// When an input is misconfigured, a file cannot be read, or the sink fails.
pub async fn read_inputs(config: &CollectorConfig, sink: &Sink) -> Result<(), CollectorError> {
    let follow = !config.once && !config.dry_run;
    loop {
        for spec in &config.inputs {
            let files = match spec.files() {
                Ok(f) => f,
                // A followed glob or directory may be empty or gone for a while.
                Err(e) if follow => {
                    debug!(cause = %e, "input not there yet");
                    continue;
                }
                Err(e) => return Err(CollectorError::Input(e)),
            };
            for path in files {
                if read_file(config, spec.kind, &path, sink, follow).await? == Committed::Stopped {
                    return Ok(());
                }
            }
        }
        if !follow {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(config.follow_interval) => {}
            _ = sink.shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn read_file(
    config: &CollectorConfig,
    kind: SourceKind,
    path: &Path,
    sink: &Sink,
    follow: bool,
) -> Result<Committed, CollectorError> {
    let read_err = |source| CollectorError::Read {
        path: path.to_owned(),
        source,
    };
    let canonical = std::fs::canonicalize(path).map_err(read_err)?;
    let meta = std::fs::metadata(&canonical).map_err(read_err)?;
    let ino = inode(&meta);
    let input_name = format!("file:{kind}:{}", canonical.display());
    let (mut offset, mut line) = (0, 0);
    if let Some((o, l, i)) = sink
        .checkpoint(&input_name)?
        .as_deref()
        .and_then(decode_checkpoint)
    {
        if i == ino && o <= meta.len() {
            (offset, line) = (o, l);
        } else {
            warn!(file = %canonical.display(), "file was replaced or truncated; reading it from the start");
        }
    }
    if offset == meta.len() {
        return Ok(Committed::Done);
    }
    let mut reader =
        ChunkReader::open(&canonical, offset, line, config.max_record_bytes).map_err(read_err)?;
    if follow {
        let recent = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age < SETTLE);
        if reader.layout() == Layout::Document && recent {
            return Ok(Committed::Done); // still being written: next scan
        }
        reader = reader.following();
    }
    let display = canonical.display().to_string();
    let limits = FieldLimits {
        max_url_bytes: config.max_url_bytes,
        now_ms: now_ms(),
    };
    let mut reader = Some(reader);
    loop {
        let mut r = reader
            .take()
            .expect("the reader is put back after each group");
        let (chunks, max_record, input) = (
            config.chunk_records,
            config.max_record_bytes,
            display.clone(),
        );
        let (r, group) = tokio::task::spawn_blocking(move || {
            let group = parse_group(&mut r, kind, &input, chunks, max_record, &limits);
            (r, group)
        })
        .await
        .map_err(|e| CollectorError::Input(format!("reader task failed: {e}")))?;
        reader = Some(r);
        let (parsed, end) = group.map_err(read_err)?;
        let Some((end_offset, end_line, done)) = end else {
            return Ok(Committed::Done); // nothing new
        };
        let cp = encode_checkpoint(end_offset, end_line, ino);
        if sink.commit(parsed, Some((&input_name, &cp))).await? == Committed::Stopped {
            return Ok(Committed::Stopped);
        }
        if done {
            return Ok(Committed::Done);
        }
        if sink.shutdown.is_cancelled() {
            return Ok(Committed::Stopped);
        }
    }
}

/// Up to `max_chunks` chunks parsed, with the offset, line and end-of-file flag after them
/// (`None` when there was nothing to read).
type Group = (Parsed, Option<(u64, u64, bool)>);

fn parse_group(
    reader: &mut ChunkReader,
    kind: SourceKind,
    input: &str,
    max_chunks: usize,
    max_record: u64,
    limits: &FieldLimits,
) -> std::io::Result<Group> {
    let mut p = Parsed::default();
    let mut end = None;
    for _ in 0..max_chunks {
        let Some(chunk) = reader.next_chunk()? else {
            if let Some((o, l, _)) = end {
                end = Some((o, l, true));
            }
            return Ok((p, end.or(None)));
        };
        end = Some((chunk.end_offset, reader.line(), false));
        match chunk.oversize {
            Some(len) => p.add_oversize(kind, input, chunk.line, len, max_record),
            None => p.add_chunk(kind, &chunk.bytes, input, chunk.line, limits),
        }
    }
    Ok((p, end))
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
                path: PathBuf::from(&path),
                source,
            };
            let mut reader = ChunkReader::open(&path, 0, 0, max_record_bytes).map_err(read_err)?;
            loop {
                let (p, end) = parse_group(
                    &mut reader,
                    spec.kind,
                    "",
                    10_000,
                    max_record_bytes,
                    &limits,
                )
                .map_err(read_err)?;
                newest = p.events.iter().map(|e| e.time_unix_ms).chain(newest).max();
                if end.is_none_or(|(_, _, done)| done) {
                    break;
                }
            }
        }
    }
    Ok(newest)
}
