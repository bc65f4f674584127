//! `Spool`: the collector's on-disk queue (sled). Every normalised event is durable here before
//! its source is acknowledged, and is deleted only after the aggregator acknowledges it.
//!
//! Layout, format version 2 (one tree, so an append and its input checkpoint are one atomic
//! batch):
//! - `b` + first sequence (u64 BE) -> a chunk: its event count (u32 BE), then that many
//!   `ClickEvent`s, each protobuf-encoded with its length in front (prost's length-delimited
//!   encoding). Sequences are consecutive from 1 and the chunks tile them without gaps: the
//!   chunk after `b`+`s` holding `n` events is `b`+`s+n`. An append writes its events as one
//!   chunk, or several when they are larger than [`CHUNK_BYTES`].
//! - `m` + `version` -> the spool format; `m` + `collector_id`; `m` + `next_seq`;
//!   `m` + `acked` -> every sequence up to this one has been acknowledged (u64 BE).
//! - `o` + input name -> the input's checkpoint (offset and identity of a file, a poller's cursor).
//!
//! An append (its chunks, `next_seq` and the checkpoint) is one `apply_batch` and one flush.
//! An acknowledgement moves `acked` and deletes the chunks it covers entirely, in one batch that
//! is not flushed: after a crash the events past the durable `acked` are sent again and the
//! aggregator recognises them as replays. A chunk only partly acknowledged stays whole until the
//! rest of it is acknowledged; its acknowledged events are never read again. So the events held
//! are always exactly `acked + 1 ..= next_seq - 1`.
//!
//! Costs are per chunk, not per event: one sled key written, looked up and deleted per chunk;
//! each event is encoded once, and decoded once when it is shipped (a read that starts inside a
//! chunk steps over the events before it by their length prefixes, without decoding them).
//!
//! Why chunks are small ([`CHUNK_BYTES`], a few KiB) and not one value per append: sled 0.34
//! writes any log message larger than a quarter of its 512 KiB segment to a file of its own (a
//! "blob"), and a leaf page holds up to about 20 values, so with values of tens of KiB or more
//! the pages of the chunk leaves become blobs. Blob files are not fsynced by `flush` (only the
//! log file is), so a power loss could lose events that a flush had reported durable; and they
//! are deleted lazily: with 1 MiB chunks a drained spool kept 1.2 GB of blob files. Chunks of
//! a few KiB keep every page in the log.

use clicktally_proto::v1::ClickEvent;
use prost::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio::sync::{watch, Mutex};

/// The spool format this build reads and writes.
pub const SPOOL_VERSION: u32 = 2;
/// Most encoded bytes in a chunk (header included), unless one event alone is larger: then
/// it has a chunk of its own. Small enough that a full sled leaf of chunks (~20 values) stays
/// under sled's blob threshold (128 KiB with its default 512 KiB segments); see the module doc.
pub const CHUNK_BYTES: usize = 6 * 1024;
const VERSION_KEY: &[u8] = b"mversion";
const ID_KEY: &[u8] = b"mcollector_id";
const NEXT_KEY: &[u8] = b"mnext_seq";
const ACKED_KEY: &[u8] = b"macked";
const CHUNK: u8 = b'b';
const CHECKPOINT: u8 = b'o';
/// The event count in front of a chunk's events.
const CHUNK_HEADER: usize = 4;

/// Why the spool cannot be used.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// sled failed.
    #[error("spool {path}: {source}")]
    Sled {
        /// The spool directory.
        path: PathBuf,
        /// What sled reported.
        source: sled::Error,
    },
    /// The spool was written by another version of the collector.
    #[error("spool {path} was written in format version {found}; this collector reads version {expected}. Drain it with the collector that wrote it, or move it aside")]
    Version {
        /// The spool directory.
        path: PathBuf,
        /// The version found.
        found: String,
        /// The version this build reads.
        expected: u32,
    },
    /// A stored record cannot be read.
    #[error("spool {path}: corrupt record: {detail}")]
    Corrupt {
        /// The spool directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The on-disk queue of events waiting for the aggregator's acknowledgement.
pub struct Spool {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
    collector_id: String,
    /// Serialises appends so sequences become visible in order.
    append_lock: Mutex<u64>,
    /// Last durable sequence (0 before any).
    last_seq: watch::Sender<u64>,
    /// Events held (appended, not yet acknowledged).
    depth: watch::Sender<u64>,
    /// What has been acknowledged; held by reads, so that no chunk is deleted under them.
    acks: std::sync::Mutex<Acks>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("path", &self.path).finish()
    }
}

#[derive(Debug, Default)]
struct Acks {
    /// Every sequence up to this one is acknowledged (and stored as `m` + `acked`).
    acked: u64,
    /// Acknowledged ranges past a gap (first -> last), waiting for the gap to close.
    pending: BTreeMap<u64, u64>,
}

/// A position inside a chunk value.
struct Chunk {
    /// The chunk's first sequence.
    first: u64,
    /// Its events.
    count: u64,
    /// The whole chunk value.
    bytes: sled::IVec,
    /// The sequence of the event at `pos`.
    seq: u64,
    /// A byte offset in `bytes`.
    pos: usize,
}

impl Chunk {
    /// Steps over the event at `pos` without decoding it.
    fn skip(&mut self) -> Result<(), String> {
        let mut buf = &self.bytes[self.pos..];
        let before = buf.len();
        let len = prost::decode_length_delimiter(&mut buf)
            .map_err(|e| format!("chunk {}: event {}: {e}", self.first, self.seq))?;
        if len > buf.len() {
            return Err(format!(
                "chunk {}: event {} is cut short",
                self.first, self.seq
            ));
        }
        self.pos += before - buf.len() + len;
        self.seq += 1;
        Ok(())
    }

    /// Decodes the event at `pos` and steps past it.
    fn next_event(&mut self) -> Result<ClickEvent, String> {
        let mut buf = &self.bytes[self.pos..];
        let before = buf.len();
        let ev = ClickEvent::decode_length_delimited(&mut buf)
            .map_err(|e| format!("chunk {}: event {}: {e}", self.first, self.seq))?;
        self.pos += before - buf.len();
        self.seq += 1;
        Ok(ev)
    }

    /// Past its last event.
    fn at_end(&self) -> bool {
        self.seq == self.first + self.count
    }
}

fn chunk_key(seq: u64) -> [u8; 9] {
    let mut k = [CHUNK; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn checkpoint_key(input: &str) -> Vec<u8> {
    let mut k = vec![CHECKPOINT];
    k.extend_from_slice(input.as_bytes());
    k
}

/// A chunk's first sequence and event count, from its key and value.
fn chunk_range(key: &[u8], value: &[u8]) -> Result<(u64, u64), String> {
    let first = key
        .strip_prefix(&[CHUNK])
        .and_then(|k| <[u8; 8]>::try_from(k).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| format!("chunk key {key:?} is not b + 8 bytes"))?;
    let count = value
        .get(..CHUNK_HEADER)
        .and_then(|h| <[u8; 4]>::try_from(h).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| format!("chunk {first} has no header ({} bytes)", value.len()))?;
    if count == 0 || first == 0 || first.checked_add(u64::from(count)).is_none() {
        return Err(format!("chunk {first} holds {count} events"));
    }
    Ok((first, u64::from(count)))
}

/// Encodes `events` as chunks of at most `max_bytes` each (an event larger than that alone in
/// its chunk): (event count, value).
fn encode_chunks(events: &[ClickEvent], max_bytes: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0u32;
    let mut close = |buf: &mut Vec<u8>, n: &mut u32| {
        buf[..CHUNK_HEADER].copy_from_slice(&n.to_be_bytes());
        out.push((u64::from(*n), std::mem::take(buf)));
        *n = 0;
    };
    for ev in events {
        let len = ev.encoded_len();
        let size = prost::length_delimiter_len(len) + len;
        if n > 0 && (buf.len() + size > max_bytes || n == u32::MAX) {
            close(&mut buf, &mut n);
        }
        if n == 0 {
            buf.reserve_exact(max_bytes.max(CHUNK_HEADER + size));
            buf.extend_from_slice(&[0; CHUNK_HEADER]);
        }
        ev.encode_length_delimited(&mut buf)
            .expect("a Vec grows as needed");
        n += 1;
    }
    if n > 0 {
        close(&mut buf, &mut n);
    }
    out
}

impl Spool {
    /// Opens (or creates) the spool in `dir`.
    ///
    /// # Errors
    /// When the directory cannot be used, holds another format version, or its records are
    /// inconsistent.
    pub fn open(dir: &Path, cache_capacity: u64) -> Result<Self, SpoolError> {
        let err = |source| SpoolError::Sled {
            path: dir.to_owned(),
            source,
        };
        let db = open_sled(dir, cache_capacity).map_err(err)?;
        let tree = db.open_tree("spool").map_err(err)?;
        let fresh = tree.is_empty();
        match tree.get(VERSION_KEY).map_err(err)? {
            Some(v) if v.as_ref() == SPOOL_VERSION.to_be_bytes() => {}
            Some(v) => {
                return Err(SpoolError::Version {
                    path: dir.to_owned(),
                    found: match <[u8; 4]>::try_from(v.as_ref()) {
                        Ok(b) => u32::from_be_bytes(b).to_string(),
                        Err(_) => format!("unknown ({} bytes)", v.len()),
                    },
                    expected: SPOOL_VERSION,
                })
            }
            None if fresh => {
                let id = new_collector_id(dir);
                let mut b = sled::Batch::default();
                b.insert(VERSION_KEY, &SPOOL_VERSION.to_be_bytes());
                b.insert(ID_KEY, id.as_bytes());
                b.insert(NEXT_KEY, &1u64.to_be_bytes());
                b.insert(ACKED_KEY, &0u64.to_be_bytes());
                tree.apply_batch(b).map_err(err)?;
                db.flush().map_err(err)?;
            }
            None => {
                return Err(SpoolError::Version {
                    path: dir.to_owned(),
                    found: "none (written before spool versions existed)".into(),
                    expected: SPOOL_VERSION,
                })
            }
        }
        let corrupt = |detail: String| SpoolError::Corrupt {
            path: dir.to_owned(),
            detail,
        };
        let get_u64 = |key: &[u8], what: &str| {
            tree.get(key)
                .map_err(err)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(format!("missing {what}")))
        };
        let collector_id = tree
            .get(ID_KEY)
            .map_err(err)?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .ok_or_else(|| corrupt("missing collector id".into()))?;
        let next = get_u64(NEXT_KEY, "next sequence")?;
        let acked = get_u64(ACKED_KEY, "acknowledged sequence")?;
        let last = next
            .checked_sub(1)
            .ok_or_else(|| corrupt("next sequence 0".into()))?;
        if acked > last {
            return Err(corrupt(format!(
                "acknowledged through {acked} but only {last} events were written"
            )));
        }
        // The held events must start at acked + 1. Chunks wholly acknowledged whose deletion
        // did not happen (none are expected: they go in the same batch as `acked`) are dropped.
        let mut tidy = sled::Batch::default();
        let mut holds_next = false;
        for kv in tree.scan_prefix([CHUNK]) {
            let (k, v) = kv.map_err(err)?;
            let (first, count) = chunk_range(&k, &v).map_err(corrupt)?;
            if first + count - 1 <= acked {
                tidy.remove(k);
                continue;
            }
            holds_next = first <= acked + 1;
            break;
        }
        if last > acked && !holds_next {
            return Err(corrupt(format!(
                "events {}..={last} are not acknowledged but no chunk holds event {}",
                acked + 1,
                acked + 1
            )));
        }
        tree.apply_batch(tidy).map_err(err)?;
        Ok(Self {
            db,
            tree,
            path: dir.to_owned(),
            collector_id,
            append_lock: Mutex::new(next),
            last_seq: watch::Sender::new(last),
            depth: watch::Sender::new(last - acked),
            acks: std::sync::Mutex::new(Acks {
                acked,
                pending: BTreeMap::new(),
            }),
        })
    }

    /// This spool's collector identity, sent with every batch.
    pub fn collector_id(&self) -> &str {
        &self.collector_id
    }

    /// Appends events and moves `checkpoint` (input name, value) in one atomic, flushed write:
    /// when this returns, the events are durable and the source may be acknowledged.
    ///
    /// # Errors
    /// When sled cannot write.
    pub async fn append(
        &self,
        events: &[ClickEvent],
        checkpoint: Option<(&str, &[u8])>,
    ) -> Result<(), SpoolError> {
        let chunks = encode_chunks(events, CHUNK_BYTES);
        let mut next = self.append_lock.lock().await;
        let mut batch = sled::Batch::default();
        let mut seq = *next;
        for (count, value) in chunks {
            batch.insert(&chunk_key(seq)[..], value);
            seq += count;
        }
        let new_next = seq;
        batch.insert(NEXT_KEY, &new_next.to_be_bytes());
        if let Some((input, value)) = checkpoint {
            batch.insert(checkpoint_key(input), value);
        }
        self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        self.db.flush_async().await.map_err(|e| self.err(e))?;
        *next = new_next;
        if !events.is_empty() {
            self.depth.send_modify(|d| *d += events.len() as u64);
            self.last_seq.send_replace(new_next - 1);
        }
        Ok(())
    }

    /// The click time of the oldest event waiting, if any.
    pub fn oldest_click_ms(&self) -> Option<i64> {
        let first = self.first_seq().ok()??;
        let events = self.read_from(first, 1).ok()?;
        events.first().map(|e| e.time_unix_ms)
    }

    /// Up to `max` events in sequence order from sequence `from` on (from the first event held,
    /// if `from` was acknowledged already).
    ///
    /// # Errors
    /// When sled cannot read or a record is corrupt.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<ClickEvent>, SpoolError> {
        // Held across the read, so no chunk read is deleted meanwhile.
        let acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let end = *self.last_seq.borrow();
        let start = from.max(acks.acked + 1);
        if start > end || max == 0 {
            return Ok(Vec::new());
        }
        let want = usize::try_from(end - start + 1).map_or(max, |n| n.min(max));
        let mut out = Vec::with_capacity(want);
        let mut cur = self.chunk_holding(start)?;
        while cur.seq < start {
            cur.skip().map_err(|d| self.corrupt(d))?;
        }
        while out.len() < want {
            if cur.at_end() {
                if cur.pos != cur.bytes.len() {
                    return Err(self.corrupt(format!(
                        "chunk {} has {} bytes past its {} events",
                        cur.first,
                        cur.bytes.len() - cur.pos,
                        cur.count
                    )));
                }
                cur = self.chunk_starting(cur.seq)?;
            }
            out.push(cur.next_event().map_err(|d| self.corrupt(d))?);
        }
        drop(acks);
        Ok(out)
    }

    /// The chunk that holds sequence `seq`: the one with the greatest first sequence <= `seq`.
    fn chunk_holding(&self, seq: u64) -> Result<Chunk, SpoolError> {
        let (k, v) = self
            .tree
            .range(&chunk_key(0)[..]..=&chunk_key(seq)[..])
            .next_back()
            .transpose()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| self.corrupt(format!("no chunk holds event {seq}")))?;
        let cur = self.chunk_at(&k, v)?;
        if seq >= cur.first + cur.count {
            return Err(self.corrupt(format!(
                "no chunk holds event {seq} (the chunk before it ends at {})",
                cur.first + cur.count - 1
            )));
        }
        Ok(cur)
    }

    /// The chunk whose first sequence is `seq`.
    fn chunk_starting(&self, seq: u64) -> Result<Chunk, SpoolError> {
        let key = chunk_key(seq);
        let v = self
            .tree
            .get(key)
            .map_err(|e| self.err(e))?
            .ok_or_else(|| self.corrupt(format!("no chunk starts at event {seq}")))?;
        self.chunk_at(&key, v)
    }

    fn chunk_at(&self, key: &[u8], bytes: sled::IVec) -> Result<Chunk, SpoolError> {
        let (first, count) = chunk_range(key, &bytes).map_err(|d| self.corrupt(d))?;
        Ok(Chunk {
            first,
            count,
            bytes,
            seq: first,
            pos: CHUNK_HEADER,
        })
    }

    /// The first sequence still held, if any.
    ///
    /// # Errors
    /// None at present; kept for callers that may meet a store that can fail here.
    pub fn first_seq(&self) -> Result<Option<u64>, SpoolError> {
        let acked = self.acked();
        Ok((*self.last_seq.borrow() > acked).then_some(acked + 1))
    }

    /// Records that the aggregator acknowledged events `first..=last`, and deletes the chunks
    /// now wholly acknowledged. Not flushed: after a crash they are sent again and the
    /// aggregator recognises them as replays. Acknowledgements are expected in sequence order
    /// (as the aggregator sends them); a range past a gap takes effect when the gap closes.
    ///
    /// # Errors
    /// When sled cannot read or write, or a chunk is corrupt.
    pub fn remove(&self, first: u64, last: u64) -> Result<(), SpoolError> {
        let last = last.min(*self.last_seq.borrow());
        let mut acks = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        if first > last || last <= acks.acked {
            return Ok(());
        }
        if first > acks.acked + 1 {
            let held = acks.pending.entry(first).or_insert(last);
            *held = (*held).max(last);
            return Ok(());
        }
        let mut acked = last;
        for (&f, &l) in &acks.pending {
            if f > acked + 1 {
                break;
            }
            acked = acked.max(l);
        }
        let mut batch = sled::Batch::default();
        batch.insert(ACKED_KEY, &acked.to_be_bytes());
        for kv in self.tree.range(&chunk_key(0)[..]..=&chunk_key(acked)[..]) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let (first, count) = chunk_range(&k, &v).map_err(|d| self.corrupt(d))?;
            if first + count - 1 > acked {
                break;
            }
            batch.remove(k);
        }
        self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        let newly = acked - acks.acked;
        acks.acked = acked;
        acks.pending.retain(|&f, _| f > acked + 1);
        drop(acks);
        self.depth.send_modify(|d| *d = d.saturating_sub(newly));
        Ok(())
    }

    fn acked(&self) -> u64 {
        self.acks.lock().unwrap_or_else(|p| p.into_inner()).acked
    }

    /// An input's saved checkpoint.
    ///
    /// # Errors
    /// When sled cannot read.
    pub fn checkpoint(&self, input: &str) -> Result<Option<Vec<u8>>, SpoolError> {
        Ok(self
            .tree
            .get(checkpoint_key(input))
            .map_err(|e| self.err(e))?
            .map(|v| v.to_vec()))
    }

    /// Watches the last durable sequence (new events to ship).
    pub fn watch_last_seq(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// Watches how many events wait for acknowledgement.
    pub fn watch_depth(&self) -> watch::Receiver<u64> {
        self.depth.subscribe()
    }

    /// Events waiting for acknowledgement.
    pub fn depth(&self) -> u64 {
        *self.depth.borrow()
    }

    /// Flushes acknowledgements (used on orderly shutdown).
    ///
    /// # Errors
    /// When sled cannot write.
    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.db.flush_async().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    fn err(&self, source: sled::Error) -> SpoolError {
        SpoolError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, detail: String) -> SpoolError {
        SpoolError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }
}

/// A collector id unique to this spool: host name, time and directory, hashed.
fn new_collector_id(dir: &Path) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "collector".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let seed = format!("{host}|{nanos}|{}|{}", std::process::id(), dir.display());
    format!(
        "{host}-{:016x}",
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes())
    )
}

/// Opens sled, waiting up to three seconds for the directory's lock: sled releases it from a
/// background thread after the previous owner (an in-process restart, or a process still
/// exiting) is dropped.
fn open_sled(dir: &Path, cache_capacity: u64) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(url: &str) -> ClickEvent {
        ClickEvent {
            url: url.into(),
            ..Default::default()
        }
    }

    /// Events named `{prefix}{i}` for `i` in `range`, clicked at `i` ms.
    fn evs(prefix: &str, range: std::ops::Range<u64>) -> Vec<ClickEvent> {
        range
            .map(|i| ClickEvent {
                url: format!("{prefix}{i}"),
                time_unix_ms: i as i64,
                ..Default::default()
            })
            .collect()
    }

    fn urls(events: Vec<ClickEvent>) -> Vec<String> {
        events.into_iter().map(|e| e.url).collect()
    }

    fn read(s: &Spool, from: u64, max: usize) -> Vec<String> {
        urls(s.read_from(from, max).unwrap())
    }

    /// The chunks in the tree: (first sequence, event count, value bytes).
    fn chunks(s: &Spool) -> Vec<(u64, u64, usize)> {
        s.tree
            .scan_prefix([CHUNK])
            .map(|kv| {
                let (k, v) = kv.unwrap();
                let (first, count) = chunk_range(&k, &v).unwrap();
                (first, count, v.len())
            })
            .collect()
    }

    fn firsts(s: &Spool) -> Vec<u64> {
        chunks(s).into_iter().map(|c| c.0).collect()
    }

    fn open(dir: &Path) -> Spool {
        Spool::open(dir, 1 << 20).unwrap()
    }

    #[tokio::test]
    async fn events_survive_reopen_with_consecutive_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let s = open(dir.path());
            s.append(&[ev("a"), ev("b")], Some(("f", b"x")))
                .await
                .unwrap();
            s.append(&[ev("c")], None).await.unwrap();
            s.remove(1, 1).unwrap();
            s.flush().await.unwrap();
            s.collector_id().to_owned()
        };
        let s = open(dir.path());
        assert_eq!(s.collector_id(), id);
        assert_eq!(s.depth(), 2);
        assert_eq!(s.first_seq().unwrap(), Some(2));
        assert_eq!(read(&s, 2, 10), ["b", "c"]);
        assert_eq!(s.checkpoint("f").unwrap().as_deref(), Some(&b"x"[..]));
        s.append(&[ev("d")], None).await.unwrap();
        assert_eq!(*s.watch_last_seq().borrow(), 4);
        assert_eq!(read(&s, 2, 10), ["b", "c", "d"]);
    }

    #[test]
    fn a_spool_of_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let t = db.open_tree("spool").unwrap();
            t.insert(VERSION_KEY, &99u32.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        let e = Spool::open(dir.path(), 1 << 20).unwrap_err().to_string();
        assert!(e.contains("format version 99"), "{e}");
        assert!(e.contains("reads version 2"), "{e}");
    }

    #[test]
    fn a_version_1_spool_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        // Format 1: one `e` + sequence key per event.
        let mut key = vec![b'e'];
        key.extend_from_slice(&1u64.to_be_bytes());
        {
            let db = sled::open(dir.path()).unwrap();
            let t = db.open_tree("spool").unwrap();
            t.insert(VERSION_KEY, &1u32.to_be_bytes()).unwrap();
            t.insert(ID_KEY, &b"host-0123456789abcdef"[..]).unwrap();
            t.insert(NEXT_KEY, &2u64.to_be_bytes()).unwrap();
            t.insert(&key[..], ev("a").encode_to_vec()).unwrap();
            db.flush().unwrap();
        }
        let err = Spool::open(dir.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(&err, SpoolError::Version { found, expected: 2, .. } if found == "1"),
            "{err:?}"
        );
        let e = err.to_string();
        assert!(e.contains("written in format version 1"), "{e}");
        assert!(e.contains("this collector reads version 2"), "{e}");
        assert!(
            e.contains("Drain it with the collector that wrote it"),
            "{e}"
        );
        // Nothing was rewritten: the old collector can still drain it.
        let db = open_sled(dir.path(), 1 << 20).unwrap();
        let t = db.open_tree("spool").unwrap();
        assert_eq!(
            t.get(VERSION_KEY).unwrap().as_deref(),
            Some(&1u32.to_be_bytes()[..])
        );
        assert_eq!(t.get(&key[..]).unwrap().unwrap(), ev("a").encode_to_vec());
        assert_eq!(t.get(ACKED_KEY).unwrap(), None);
    }

    #[tokio::test]
    async fn an_append_is_one_chunk_and_a_read_may_start_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.append(&evs("u", 1..6), Some(("f", b"5"))).await.unwrap();
        assert_eq!(chunks(&s).len(), 1);
        assert_eq!((chunks(&s)[0].0, chunks(&s)[0].1), (1, 5));
        assert_eq!(read(&s, 3, 10), ["u3", "u4", "u5"]);
        assert_eq!(read(&s, 2, 2), ["u2", "u3"]);
        assert_eq!(read(&s, 5, 1), ["u5"]);
        assert_eq!(read(&s, 1, 0), Vec::<String>::new());
        assert_eq!(read(&s, 6, 10), Vec::<String>::new());
        // Sequence 0 was never used: a read from it starts at the first event.
        assert_eq!(read(&s, 0, 2), ["u1", "u2"]);
        assert_eq!(s.depth(), 5);
        assert_eq!(*s.watch_last_seq().borrow(), 5);
    }

    #[tokio::test]
    async fn reads_go_across_chunks_up_to_max() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.append(&evs("u", 1..4), None).await.unwrap();
        s.append(&evs("u", 4..6), None).await.unwrap();
        s.append(&evs("u", 6..7), None).await.unwrap();
        // An append of no events (a checkpoint only) writes no chunk and no sequence.
        s.append(&[], Some(("f", b"x"))).await.unwrap();
        assert_eq!(firsts(&s), [1, 4, 6]);
        assert_eq!(read(&s, 2, 4), ["u2", "u3", "u4", "u5"]);
        assert_eq!(read(&s, 3, 3), ["u3", "u4", "u5"]);
        assert_eq!(read(&s, 4, 100), ["u4", "u5", "u6"]);
        assert_eq!(read(&s, 5, 2), ["u5", "u6"]);
        assert_eq!(read(&s, 1, 100), ["u1", "u2", "u3", "u4", "u5", "u6"]);
        assert_eq!(s.depth(), 6);
        assert_eq!(*s.watch_last_seq().borrow(), 6);
    }

    #[tokio::test]
    async fn a_large_append_is_cut_into_chunks_that_tile_its_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let pad = "x".repeat(100);
        let mut events = evs(&format!("{pad}-"), 1..301);
        // One event larger than a chunk: alone in its chunk.
        events[149].url = "y".repeat(CHUNK_BYTES * 2);
        s.append(&events, Some(("f", b"300"))).await.unwrap();
        let cs = chunks(&s);
        assert!(cs.len() >= 6, "{cs:?}");
        let mut expect_first = 1;
        for &(first, count, len) in &cs {
            assert_eq!(first, expect_first, "{cs:?}");
            if first == 150 {
                assert_eq!(count, 1, "{cs:?}");
            } else {
                assert!(len <= CHUNK_BYTES, "{cs:?}");
            }
            expect_first += count;
        }
        assert_eq!(expect_first, 301);
        let want: Vec<String> = events.iter().map(|e| e.url.clone()).collect();
        assert_eq!(read(&s, 1, 1000), want);
        // Reads that start on either side of each chunk boundary.
        for &(first, _, _) in &cs[1..] {
            assert_eq!(read(&s, first - 1, 3), want[first as usize - 2..][..3]);
            assert_eq!(read(&s, first, 2), want[first as usize - 1..][..2]);
        }
        assert_eq!(s.depth(), 300);
        assert_eq!(s.checkpoint("f").unwrap().as_deref(), Some(&b"300"[..]));
    }

    #[tokio::test]
    async fn removing_part_of_a_chunk_keeps_it_and_a_restart_resends_exactly_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            s.append(&evs("u", 1..6), None).await.unwrap();
            s.append(&evs("u", 6..8), None).await.unwrap();
            s.remove(1, 3).unwrap();
            // The first chunk still holds 4 and 5, so it stays whole.
            assert_eq!(firsts(&s), [1, 6]);
            assert_eq!(s.depth(), 4);
            assert_eq!(s.first_seq().unwrap(), Some(4));
            assert_eq!(s.oldest_click_ms(), Some(4));
            // What was acknowledged is not read again.
            assert_eq!(read(&s, 1, 100), ["u4", "u5", "u6", "u7"]);
            assert_eq!(read(&s, 3, 1), ["u4"]);
            s.flush().await.unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.depth(), 4);
        assert_eq!(*s.watch_depth().borrow(), 4);
        assert_eq!(s.first_seq().unwrap(), Some(4));
        assert_eq!(*s.watch_last_seq().borrow(), 7);
        assert_eq!(s.oldest_click_ms(), Some(4));
        assert_eq!(read(&s, 4, 100), ["u4", "u5", "u6", "u7"]);
        s.remove(4, 5).unwrap();
        assert_eq!(firsts(&s), [6]);
        assert_eq!(s.depth(), 2);
        assert_eq!(read(&s, 6, 100), ["u6", "u7"]);
        s.remove(6, 6).unwrap();
        assert_eq!(firsts(&s), [6]);
        assert_eq!(s.first_seq().unwrap(), Some(7));
        assert_eq!(s.depth(), 1);
    }

    #[tokio::test]
    async fn removing_everything_leaves_no_chunks_and_sequences_go_on() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            s.append(&evs("u", 1..4), None).await.unwrap();
            s.append(&evs("u", 4..6), None).await.unwrap();
            s.append(&evs("u", 6..7), None).await.unwrap();
            s.remove(1, 2).unwrap();
            s.remove(3, 6).unwrap();
            assert_eq!(chunks(&s), []);
            assert_eq!(s.depth(), 0);
            assert_eq!(s.first_seq().unwrap(), None);
            assert_eq!(s.oldest_click_ms(), None);
            assert_eq!(read(&s, 1, 10), Vec::<String>::new());
            // Acknowledging again, or past the end, changes nothing.
            s.remove(1, 100).unwrap();
            assert_eq!(s.depth(), 0);
            s.flush().await.unwrap();
        }
        let s = open(dir.path());
        assert_eq!(chunks(&s), []);
        assert_eq!(s.depth(), 0);
        assert_eq!(s.first_seq().unwrap(), None);
        assert_eq!(s.tree.scan_prefix([CHUNK]).count(), 0);
        assert_eq!(
            s.tree.get(ACKED_KEY).unwrap().as_deref(),
            Some(&6u64.to_be_bytes()[..])
        );
        s.append(&[ev("next")], None).await.unwrap();
        assert_eq!(*s.watch_last_seq().borrow(), 7);
        assert_eq!(firsts(&s), [7]);
        assert_eq!(s.first_seq().unwrap(), Some(7));
        assert_eq!(read(&s, 7, 10), ["next"]);
    }

    #[tokio::test]
    async fn an_acknowledgement_past_a_gap_waits_for_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.append(&evs("u", 1..4), None).await.unwrap();
        s.append(&evs("u", 4..7), None).await.unwrap();
        s.remove(4, 6).unwrap();
        assert_eq!(s.depth(), 6);
        assert_eq!(s.first_seq().unwrap(), Some(1));
        assert_eq!(firsts(&s), [1, 4]);
        s.remove(1, 3).unwrap();
        assert_eq!(s.depth(), 0);
        assert_eq!(chunks(&s), []);
    }

    /// Replaces the value of the chunk starting at `first`.
    fn corrupt(s: &Spool, first: u64, value: &[u8]) {
        s.tree.insert(chunk_key(first), value).unwrap();
    }

    fn is_corrupt(r: Result<Vec<ClickEvent>, SpoolError>) -> String {
        match r {
            Err(SpoolError::Corrupt { detail, .. }) => detail,
            other => panic!("expected a corrupt record, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_corrupt_chunk_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        s.append(&evs("u", 1..4), None).await.unwrap();
        s.append(&evs("u", 4..6), None).await.unwrap();
        let good = s.tree.get(chunk_key(1)).unwrap().unwrap();

        // Garbage after a plausible header.
        let mut v = 3u32.to_be_bytes().to_vec();
        v.extend_from_slice(&[0xff; 20]);
        corrupt(&s, 1, &v);
        let d = is_corrupt(s.read_from(1, 10));
        assert!(d.contains("chunk 1: event 1"), "{d}");
        // Skipping over it to a later event reads the length prefix: also refused.
        is_corrupt(s.read_from(2, 10));

        // Too short for a header.
        corrupt(&s, 1, &[0, 1]);
        let d = is_corrupt(s.read_from(1, 10));
        assert!(d.contains("no header"), "{d}");

        // A header that claims no events.
        corrupt(&s, 1, &0u32.to_be_bytes());
        is_corrupt(s.read_from(1, 10));

        // Fewer events than the header says.
        let mut v = good.to_vec();
        v[..4].copy_from_slice(&5u32.to_be_bytes());
        corrupt(&s, 1, &v);
        assert_eq!(read(&s, 1, 3), ["u1", "u2", "u3"]);
        is_corrupt(s.read_from(1, 4));

        // More bytes than the header's events.
        let mut v = good.to_vec();
        v[..4].copy_from_slice(&2u32.to_be_bytes());
        corrupt(&s, 1, &v);
        let d = is_corrupt(s.read_from(1, 5));
        assert!(d.contains("bytes past its 2 events"), "{d}");

        // A chunk missing in the middle.
        corrupt(&s, 1, &good);
        assert_eq!(read(&s, 1, 5), ["u1", "u2", "u3", "u4", "u5"]);
        let four = s.tree.remove(chunk_key(4)).unwrap().unwrap();
        let d = is_corrupt(s.read_from(2, 5));
        assert!(d.contains("no chunk starts at event 4"), "{d}");
        let d = is_corrupt(s.read_from(5, 5));
        assert!(d.contains("no chunk holds event 5"), "{d}");
        s.tree.insert(chunk_key(4), four).unwrap();
        assert_eq!(read(&s, 2, 5), ["u2", "u3", "u4", "u5"]);

        // Acknowledging over a corrupt chunk is an error too, and changes nothing.
        corrupt(&s, 1, &[7]);
        assert!(matches!(s.remove(1, 3), Err(SpoolError::Corrupt { .. })));
        assert_eq!(s.depth(), 5);
        assert_eq!(s.first_seq().unwrap(), Some(1));
    }

    #[tokio::test]
    async fn a_spool_whose_unacknowledged_events_are_missing_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            s.append(&evs("u", 1..4), None).await.unwrap();
            s.append(&evs("u", 4..6), None).await.unwrap();
            s.tree.insert(chunk_key(1), &[1u8][..]).unwrap();
            s.flush().await.unwrap();
        }
        let err = Spool::open(dir.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(&err, SpoolError::Corrupt { detail, .. } if detail.contains("no header")),
            "{err:?}"
        );
        {
            let db = open_sled(dir.path(), 1 << 20).unwrap();
            let t = db.open_tree("spool").unwrap();
            t.remove(chunk_key(1)).unwrap();
            db.flush().unwrap();
        }
        let err = Spool::open(dir.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(&err, SpoolError::Corrupt { detail, .. }
                if detail == "events 1..=5 are not acknowledged but no chunk holds event 1"),
            "{err:?}"
        );
    }

    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::VecDeque;

        #[derive(Debug, Clone)]
        enum Op {
            /// Append this many events, their URLs this long.
            Append(u64, usize),
            /// Acknowledge this many of the events held, in batches of at most this many.
            Ack(u64, u64),
            /// Read at most `max` from this offset into what is held.
            Read(u64, usize),
            Reopen,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (0u64..120, prop_oneof![Just(5usize), Just(300), Just(7000)])
                    .prop_map(|(n, l)| Op::Append(n, l)),
                3 => (0u64..150, 1u64..60).prop_map(|(n, b)| Op::Ack(n, b)),
                3 => (0u64..150, 0usize..200).prop_map(|(o, m)| Op::Read(o, m)),
                1 => Just(Op::Reopen),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

            /// Whatever the appends, acknowledgements and restarts, the spool holds exactly the
            /// events not yet acknowledged, in order, and reads any run of them.
            #[test]
            fn the_spool_holds_exactly_what_was_not_acknowledged(ops in proptest::collection::vec(op(), 1..25)) {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let dir = tempfile::tempdir().unwrap();
                let mut s = Some(open(dir.path()));
                let mut held: VecDeque<(u64, String)> = VecDeque::new();
                let mut next = 1u64;
                for op in ops {
                    let sp = s.as_ref().unwrap();
                    match op {
                        Op::Append(n, len) => {
                            let events: Vec<ClickEvent> = (next..next + n)
                                .map(|i| ClickEvent {
                                    url: format!("{i}-{}", "x".repeat(len)),
                                    time_unix_ms: i as i64,
                                    ..Default::default()
                                })
                                .collect();
                            rt.block_on(sp.append(&events, None)).unwrap();
                            for e in events {
                                held.push_back((next, e.url));
                                next += 1;
                            }
                        }
                        Op::Ack(n, batch) => {
                            let n = n.min(held.len() as u64);
                            let mut done = 0;
                            while done < n {
                                let k = batch.min(n - done);
                                let first = held[0].0;
                                sp.remove(first, first + k - 1).unwrap();
                                held.drain(..k as usize);
                                done += k;
                            }
                        }
                        Op::Read(offset, max) => {
                            let from = held.front().map_or(next, |h| h.0) + offset;
                            let want: Vec<String> = held
                                .iter()
                                .filter(|h| h.0 >= from)
                                .take(max)
                                .map(|h| h.1.clone())
                                .collect();
                            prop_assert_eq!(read(sp, from, max), want);
                        }
                        Op::Reopen => {
                            rt.block_on(sp.flush()).unwrap();
                            drop(s.take());
                            s = Some(open(dir.path()));
                        }
                    }
                    let sp = s.as_ref().unwrap();
                    prop_assert_eq!(sp.depth(), held.len() as u64);
                    prop_assert_eq!(sp.first_seq().unwrap(), held.front().map(|h| h.0));
                    prop_assert_eq!(*sp.watch_last_seq().borrow(), next - 1);
                    prop_assert_eq!(sp.oldest_click_ms(), held.front().map(|h| h.0 as i64));
                    // The chunks tile exactly the events held, and no more than one of them
                    // holds acknowledged events.
                    let cs = chunks(sp);
                    match held.front() {
                        None => prop_assert!(cs.is_empty(), "{:?}", cs),
                        Some(&(first, _)) => {
                            prop_assert!(cs[0].0 <= first && first < cs[0].0 + cs[0].1, "{:?}", cs);
                            for w in cs.windows(2) {
                                prop_assert_eq!(w[0].0 + w[0].1, w[1].0);
                            }
                            let last = cs.last().unwrap();
                            prop_assert_eq!(last.0 + last.1, next);
                        }
                    }
                }
            }
        }
    }
}
