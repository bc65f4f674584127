//! `CounterStore`: per-URL, per-hour counters in sled, mirrored in memory.
//!
//! sled is the durable truth; the in-memory mirror answers queries and makes every write an
//! absolute value (no read-modify-write on disk). A group of batches is staged in memory, written
//! as one atomic `apply_batch` (counters, event-id digests and high-water marks together) and
//! flushed before any of its acknowledgements is sent.

use crate::clock::hour_of;
use crate::codec::{self, CodecError, CounterKey, Counts};
use crate::seen::{self, SeenIds};
use clicktally_proto::v1::{EventBatch, PushAck};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};
use thiserror::Error;

/// Why the store cannot be opened or written.
#[derive(Debug, Error)]
pub enum StoreError {
    /// sled failed (disk full, unwritable directory, I/O error).
    #[error("data directory {path}: {source}")]
    Sled {
        /// The data directory.
        path: PathBuf,
        /// What sled reported.
        source: sled::Error,
    },
    /// The directory holds data this build cannot read.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The directory was written by another schema version.
    #[error("data directory {path} holds schema version {found}; this aggregator reads version {expected}: upgrade with the matching release or point --data at a new directory")]
    Schema {
        /// The data directory.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
}

/// Limits applied to each event as it is counted.
#[derive(Debug, Clone)]
pub struct ApplyLimits {
    /// Longest URL accepted, in bytes.
    pub max_url_bytes: usize,
    /// Hours of history kept; older events are not counted.
    pub retention_hours: i64,
}

/// Everything the aggregator knows, in memory.
#[derive(Debug, Default)]
pub struct CounterState {
    /// Hour since the epoch -> counters of that hour.
    pub buckets: BTreeMap<u32, HashMap<CounterKey, Counts>>,
    /// Digests of counted event ids.
    pub seen: SeenIds,
    /// Collector id -> last applied spool sequence.
    pub hwm: HashMap<String, u64>,
    /// Number of the next group commit (names its event-id partition values).
    next_commit: u64,
}

/// A staged group commit: the sled writes and the acknowledgements they release.
pub struct StagedGroup {
    /// Counters, digests and high-water marks, as one atomic batch.
    pub batch: sled::Batch,
    /// One acknowledgement per input batch, in input order.
    pub acks: Vec<PushAck>,
    /// Keys (hour, counter) whose counts changed, for live watchers.
    pub touched: Vec<(u32, CounterKey)>,
    /// Events counted, by source, for metrics.
    pub applied_by_source: HashMap<String, u64>,
}

/// Durable per-URL, per-hour click counters.
pub struct CounterStore {
    /// The sled database (flushed per group commit).
    db: sled::Db,
    /// The one tree holding every record (see [`crate::codec`]).
    tree: sled::Tree,
    /// Where the database lives, for error messages.
    path: PathBuf,
    /// The in-memory mirror.
    state: RwLock<CounterState>,
}

impl std::fmt::Debug for CounterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterStore")
            .field("path", &self.path)
            .finish()
    }
}

impl CounterStore {
    /// Opens (or creates) the store in `dir` and loads it into memory.
    ///
    /// # Errors
    /// When the directory cannot be opened or written, or holds another schema version.
    pub fn open(dir: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let sled_err = |source| StoreError::Sled {
            path: dir.to_owned(),
            source,
        };
        let db = open_sled(dir, cache_capacity).map_err(sled_err)?;
        let tree = db.open_tree("counters").map_err(sled_err)?;
        match tree.get(codec::SCHEMA_KEY).map_err(sled_err)? {
            Some(v) => {
                let found = v
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX);
                if found != codec::SCHEMA_VERSION {
                    return Err(StoreError::Schema {
                        path: dir.to_owned(),
                        found,
                        expected: codec::SCHEMA_VERSION,
                    });
                }
            }
            None => {
                tree.insert(codec::SCHEMA_KEY, &codec::SCHEMA_VERSION.to_be_bytes())
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
        }
        let state = load(&tree).map_err(|e| match e {
            LoadError::Sled(source) => sled_err(source),
            LoadError::Codec(c) => StoreError::Codec(c),
        })?;
        Ok(Self {
            db,
            tree,
            path: dir.to_owned(),
            state: RwLock::new(state),
        })
    }

    /// Read access to the counters, for queries.
    pub fn read(&self) -> RwLockReadGuard<'_, CounterState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a group of batches in memory and returns the sled writes that make it durable.
    /// Batches at or below their collector's high-water mark, repeated event ids, expired and
    /// invalid events are acknowledged without being counted.
    pub fn stage<'a>(
        &self,
        batches: impl IntoIterator<Item = &'a EventBatch>,
        now_ms: i64,
        limits: &ApplyLimits,
    ) -> StagedGroup {
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        let cutoff = hour_of(now_ms) - limits.retention_hours;
        let mut touched: HashSet<(u32, CounterKey)> = HashSet::new();
        let mut new_digests: BTreeMap<u32, Vec<u128>> = BTreeMap::new();
        let mut touched_hwm: Vec<String> = Vec::new();
        let mut acks = Vec::new();
        let mut applied_by_source: HashMap<String, u64> = HashMap::new();
        for batch in batches {
            let mut ack = PushAck {
                collector_id: batch.collector_id.clone(),
                first_sequence: batch.first_sequence,
                last_sequence: batch.first_sequence + batch.events.len() as u64 - 1,
                ..Default::default()
            };
            let hwm = state.hwm.get(&batch.collector_id).copied().unwrap_or(0);
            for (i, ev) in batch.events.iter().enumerate() {
                if batch.first_sequence + i as u64 <= hwm {
                    ack.replayed += 1;
                    continue;
                }
                if let Err(reason) = validate(ev, limits) {
                    ack.rejected += 1;
                    if ack.rejections.len() < 10 {
                        ack.rejections.push(reason);
                    }
                    continue;
                }
                let hour = hour_of(ev.time_unix_ms);
                if hour < cutoff {
                    ack.expired += 1;
                    continue;
                }
                let hour = hour as u32;
                if !ev.event_id.is_empty() {
                    let d = seen::digest(&ev.source, &ev.event_id);
                    if !state.seen.insert(hour, d) {
                        ack.duplicates += 1;
                        continue;
                    }
                    new_digests.entry(hour).or_default().push(d);
                }
                let key = CounterKey {
                    tenant: ev.tenant.clone(),
                    source: ev.source.clone(),
                    url: ev.url.clone(),
                };
                state
                    .buckets
                    .entry(hour)
                    .or_default()
                    .entry(key.clone())
                    .or_default()
                    .add(&ev.action_type, ev.clicked_through, ev.time_unix_ms);
                touched.insert((hour, key));
                ack.applied += 1;
                match applied_by_source.get_mut(&ev.source) {
                    Some(n) => *n += 1,
                    None => {
                        applied_by_source.insert(ev.source.clone(), 1);
                    }
                }
            }
            if ack.last_sequence > hwm {
                state
                    .hwm
                    .insert(batch.collector_id.clone(), ack.last_sequence);
                touched_hwm.push(batch.collector_id.clone());
            }
            acks.push(ack);
        }
        let mut sled_batch = sled::Batch::default();
        for (hour, key) in &touched {
            let counts = &state.buckets[hour][key];
            sled_batch.insert(
                codec::counter_key(*hour, key),
                prost::Message::encode_to_vec(counts),
            );
        }
        if !new_digests.is_empty() {
            let commit = state.next_commit;
            state.next_commit += 1;
            for (hour, digests) in &new_digests {
                sled_batch.insert(&codec::seen_key(*hour, commit)[..], seen::pack(digests));
            }
        }
        for id in touched_hwm {
            sled_batch.insert(codec::hwm_key(&id), &state.hwm[&id].to_be_bytes());
        }
        StagedGroup {
            batch: sled_batch,
            acks,
            touched: touched.into_iter().collect(),
            applied_by_source,
        }
    }

    /// Writes a staged group atomically and waits until it is on disk.
    ///
    /// # Errors
    /// When sled cannot write or flush; the caller must stop acknowledging.
    pub async fn commit(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        self.db.flush_async().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets every bucket and event-id partition older than `cutoff_hour` in memory (at once,
    /// so queries stop counting them), then deletes them from sled in chunks of `chunk` keys,
    /// so that a large expiry never holds up other writers for long. Returns how many counter
    /// keys were deleted.
    ///
    /// # Errors
    /// When sled cannot write.
    pub fn expire_before(&self, cutoff_hour: u32, chunk: usize) -> Result<usize, StoreError> {
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let kept = state.buckets.split_off(&cutoff_hour);
            state.buckets = kept;
            state.seen.expire_before(cutoff_hour);
        }
        let mut removed = 0;
        for prefix in [codec::COUNTER, codec::SEEN] {
            let end = codec::hour_prefix(prefix, cutoff_hour);
            loop {
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for kv in self.tree.range(&[prefix][..]..&end[..]).take(chunk.max(1)) {
                    let (k, _) = kv.map_err(|e| self.err(e))?;
                    batch.remove(k);
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
                if prefix == codec::COUNTER {
                    removed += n;
                }
            }
        }
        Ok(removed)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }
}

/// Refuses events that can never be counted correctly.
fn validate(ev: &clicktally_proto::v1::ClickEvent, limits: &ApplyLimits) -> Result<(), String> {
    if ev.url.is_empty() {
        return Err("event has an empty url".into());
    }
    if ev.url.len() > limits.max_url_bytes {
        return Err(format!(
            "url of {} bytes exceeds the {}-byte limit",
            ev.url.len(),
            limits.max_url_bytes
        ));
    }
    let hour = hour_of(ev.time_unix_ms);
    if !(0..=u32::MAX as i64).contains(&hour) {
        return Err(format!("time {} ms is out of range", ev.time_unix_ms));
    }
    Ok(())
}

enum LoadError {
    Sled(sled::Error),
    Codec(CodecError),
}

impl From<sled::Error> for LoadError {
    fn from(e: sled::Error) -> Self {
        Self::Sled(e)
    }
}

impl From<CodecError> for LoadError {
    fn from(e: CodecError) -> Self {
        Self::Codec(e)
    }
}

fn load(tree: &sled::Tree) -> Result<CounterState, LoadError> {
    let mut state = CounterState::default();
    for kv in tree.scan_prefix([codec::COUNTER]) {
        let (k, v) = kv?;
        let (hour, key) = codec::decode_counter_key(&k)?;
        let counts: Counts = prost::Message::decode(v.as_ref()).map_err(|e| CodecError {
            what: "counter value",
            detail: e.to_string(),
        })?;
        state.buckets.entry(hour).or_default().insert(key, counts);
    }
    for kv in tree.scan_prefix([codec::SEEN]) {
        let (k, v) = kv?;
        let (hour, commit) = codec::decode_seen_key(&k)?;
        for d in seen::unpack(&v) {
            state.seen.insert(hour, d);
        }
        state.next_commit = state.next_commit.max(commit + 1);
    }
    for kv in tree.scan_prefix([codec::HWM]) {
        let (k, v) = kv?;
        let id = String::from_utf8_lossy(&k[1..]).into_owned();
        state
            .hwm
            .insert(id, codec::decode_u64("high-water mark", &v)?);
    }
    Ok(state)
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
#[path = "store_tests.rs"]
mod tests;
