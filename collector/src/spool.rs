//! `Spool`: the collector's on-disk queue (sled). Every normalised event is durable here before
//! its source is acknowledged, and is deleted only after the aggregator acknowledges it.
//!
//! Layout (one tree, so an append and its input checkpoint are one atomic batch):
//! - `e` + sequence (u64 BE) -> `ClickEvent` (protobuf); sequences are consecutive from 1.
//! - `m` + `version` -> the spool format; `m` + `collector_id`; `m` + `next_seq`.
//! - `o` + input name -> the input's checkpoint (offset and identity of a file, a poller's cursor).

use clicktally_proto::v1::ClickEvent;
use prost::Message;
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio::sync::{watch, Mutex};

/// The spool format this build reads and writes.
pub const SPOOL_VERSION: u32 = 1;
const VERSION_KEY: &[u8] = b"mversion";
const ID_KEY: &[u8] = b"mcollector_id";
const NEXT_KEY: &[u8] = b"mnext_seq";
const EVENT: u8 = b'e';
const CHECKPOINT: u8 = b'o';

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
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("path", &self.path).finish()
    }
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn checkpoint_key(input: &str) -> Vec<u8> {
    let mut k = vec![CHECKPOINT];
    k.extend_from_slice(input.as_bytes());
    k
}

impl Spool {
    /// Opens (or creates) the spool in `dir`.
    ///
    /// # Errors
    /// When the directory cannot be used or holds another format version.
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
        let corrupt = |detail: &str| SpoolError::Corrupt {
            path: dir.to_owned(),
            detail: detail.to_owned(),
        };
        let collector_id = tree
            .get(ID_KEY)
            .map_err(err)?
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .ok_or_else(|| corrupt("missing collector id"))?;
        let next = tree
            .get(NEXT_KEY)
            .map_err(err)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt("missing next sequence"))?;
        let depth = tree.scan_prefix([EVENT]).count() as u64;
        Ok(Self {
            db,
            tree,
            path: dir.to_owned(),
            collector_id,
            append_lock: Mutex::new(next),
            last_seq: watch::Sender::new(next - 1),
            depth: watch::Sender::new(depth),
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
        let mut next = self.append_lock.lock().await;
        let mut batch = sled::Batch::default();
        for (i, ev) in events.iter().enumerate() {
            batch.insert(&event_key(*next + i as u64)[..], ev.encode_to_vec());
        }
        let new_next = *next + events.len() as u64;
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
        let (_, v) = self.tree.scan_prefix([EVENT]).next()?.ok()?;
        ClickEvent::decode(v.as_ref()).ok().map(|e| e.time_unix_ms)
    }

    /// Up to `max` events from sequence `from` on, with the sequence of the first.
    ///
    /// # Errors
    /// When sled cannot read or a record is corrupt.
    pub fn read_from(&self, from: u64, max: usize) -> Result<Vec<ClickEvent>, SpoolError> {
        let mut out = Vec::with_capacity(max.min(4096));
        let end = *self.last_seq.borrow();
        for kv in self
            .tree
            .range(&event_key(from)[..]..=&event_key(end)[..])
            .take(max)
        {
            let (_, v) = kv.map_err(|e| self.err(e))?;
            out.push(
                ClickEvent::decode(v.as_ref()).map_err(|e| SpoolError::Corrupt {
                    path: self.path.clone(),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// The first sequence still held, if any.
    ///
    /// # Errors
    /// When sled cannot read.
    pub fn first_seq(&self) -> Result<Option<u64>, SpoolError> {
        Ok(self
            .tree
            .scan_prefix([EVENT])
            .next()
            .transpose()
            .map_err(|e| self.err(e))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(&k[1..]).ok())
            .map(u64::from_be_bytes))
    }

    /// Deletes events `first..=last` once the aggregator has acknowledged them. Not flushed:
    /// after a crash they are sent again and the aggregator recognises them as replays.
    ///
    /// # Errors
    /// When sled cannot write.
    pub fn remove(&self, first: u64, last: u64) -> Result<(), SpoolError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self
            .tree
            .range(&event_key(first)[..]..=&event_key(last)[..])
        {
            let (k, _) = kv.map_err(|e| self.err(e))?;
            batch.remove(k);
            n += 1;
        }
        self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        self.depth.send_modify(|d| *d = d.saturating_sub(n));
        Ok(())
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

    /// Flushes deletions (used on orderly shutdown).
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

    #[tokio::test]
    async fn events_survive_reopen_with_consecutive_sequences() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let s = Spool::open(dir.path(), 1 << 20).unwrap();
            s.append(&[ev("a"), ev("b")], Some(("f", b"x")))
                .await
                .unwrap();
            s.append(&[ev("c")], None).await.unwrap();
            s.remove(1, 1).unwrap();
            s.flush().await.unwrap();
            s.collector_id().to_owned()
        };
        let s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.collector_id(), id);
        assert_eq!(s.depth(), 2);
        assert_eq!(s.first_seq().unwrap(), Some(2));
        let urls: Vec<_> = s
            .read_from(2, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.url)
            .collect();
        assert_eq!(urls, vec!["b", "c"]);
        assert_eq!(s.checkpoint("f").unwrap().as_deref(), Some(&b"x"[..]));
        s.append(&[ev("d")], None).await.unwrap();
        assert_eq!(*s.watch_last_seq().borrow(), 4);
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
        assert!(e.contains("reads version 1"), "{e}");
    }
}
