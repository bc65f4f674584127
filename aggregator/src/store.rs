//! `CounterStore`: per-URL, per-hour counters in sled, mirrored in memory.
//!
//! sled is the durable truth; the in-memory mirror answers queries and makes every write an
//! absolute value (no read-modify-write on disk). A group of batches is staged in memory, written
//! as one atomic `apply_batch` (the group's journal parts, event-id digests and high-water marks
//! together) and flushed before any of its acknowledgements is sent. Counters reach sled as a
//! journal with periodic snapshots ([`crate::journal`]), not one key per counter.
//!
//! In memory, strings are interned to dense ids ([`crate::table`]): each URL is held once, a
//! counter is a [`Tally`] of a few dozen bytes under its key id, and the default 7-day window is
//! pre-aggregated per key ([`crate::totals`]).

use crate::actions::{classify, SeedColumns};
use crate::clock::{hour_of, HOUR_MS};
use crate::codec::{self, CodecError, CounterKey, Counts};
use crate::journal::{self, Entry};
use crate::seen::{self, SeenIds};
use crate::table::{IdHasher, IdMap, KeyParts, Table, Tally};
use crate::totals::{Nums, WindowTotals};
use clicktally_proto::v1::{EventBatch, PushAck};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
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
    /// Tenant names by id.
    pub tenants: Table<Box<str>>,
    /// Source names by id.
    pub sources: Table<Box<str>>,
    /// Action types by id.
    pub actions: Table<Box<str>>,
    /// The seed columns of each action id.
    pub action_cols: Vec<SeedColumns>,
    /// URLs by id; references are the counter keys using each.
    pub urls: Table<Box<str>>,
    /// Counter keys (tenant, source, URL ids) by id; references are the hours holding each.
    pub keys: Table<KeyParts>,
    /// Hour since the epoch -> key id -> counters of that hour.
    pub buckets: BTreeMap<u32, IdMap<Tally>>,
    /// Per-key totals over the default window.
    pub window: WindowTotals,
    /// Digests of counted event ids.
    pub seen: SeenIds,
    /// Collector id -> last applied spool sequence.
    pub hwm: HashMap<String, u64>,
    /// Number of the next group commit (names its event-id partition values).
    next_commit: u64,
    /// Sequence of the next journal part.
    next_seq: u64,
    /// Journal bytes written since the snapshot in force.
    log_bytes: u64,
    /// Bytes of the snapshot in force, and its generation.
    snapshot: (u64, u64),
}

/// A borrowed counter key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    /// Tenant (empty when none).
    pub tenant: &'a str,
    /// Source.
    pub source: &'a str,
    /// URL.
    pub url: &'a str,
}

impl CounterState {
    /// The names of key `id`.
    pub fn key(&self, id: u32) -> Option<KeyRef<'_>> {
        let [t, s, u] = *self.keys.get(id)?;
        Some(KeyRef {
            tenant: self.tenants.get(t).map_or("", |v| v),
            source: self.sources.get(s).map_or("", |v| v),
            url: self.urls.get(u).map_or("", |v| v),
        })
    }

    /// The id of a counter key, if it was ever counted.
    pub fn key_id(&self, tenant: &str, source: &str, url: &str) -> Option<u32> {
        let parts = [
            self.tenants.find(tenant)?,
            self.sources.find(source)?,
            self.urls.find(url)?,
        ];
        self.keys.find(&parts)
    }

    /// The counters of one key in one hour, with action names.
    pub fn counts(&self, hour: u32, key: u32) -> Option<Counts> {
        let t = self.buckets.get(&hour)?.get(&key)?;
        Some(self.materialize(hour, t))
    }

    /// A tally with its action names and absolute times.
    pub fn materialize(&self, hour: u32, t: &Tally) -> Counts {
        let start = i64::from(hour) * HOUR_MS;
        Counts {
            actions: t
                .actions
                .iter()
                .map(|(a, n)| codec::ActionTally {
                    action_type: self
                        .actions
                        .get(u32::from(*a))
                        .map_or_else(String::new, |s| s.to_string()),
                    count: u64::from(*n),
                })
                .collect(),
            clicked_through: u64::from(t.clicked_through),
            first_ms: start + i64::from(t.first_off),
            last_ms: start + i64::from(t.last_off),
        }
    }

    /// Every counter: (hour, key, counts), hour by hour.
    pub fn entries(&self) -> impl Iterator<Item = (u32, CounterKey, Counts)> + '_ {
        self.buckets.iter().flat_map(move |(hour, b)| {
            b.iter().filter_map(move |(k, t)| {
                let key = self.key(*k)?;
                Some((
                    *hour,
                    CounterKey {
                        tenant: key.tenant.into(),
                        source: key.source.into(),
                        url: key.url.into(),
                    },
                    self.materialize(*hour, t),
                ))
            })
        })
    }

    /// Estimated heap bytes of each part of the state, for metrics and the benchmark.
    pub fn heap_bytes(&self) -> Vec<(&'static str, u64)> {
        let strings = |t: &Table<Box<str>>| t.iter().map(|(_, s)| s.len() as u64).sum::<u64>();
        let bucket = std::mem::size_of::<(u32, Tally)>() as u64 + 1;
        vec![
            ("url strings", strings(&self.urls)),
            ("url table", self.urls.heap_bytes()),
            ("key table", self.keys.heap_bytes()),
            (
                "hourly tallies",
                self.buckets
                    .values()
                    .map(|b| b.capacity() as u64 * bucket)
                    .sum(),
            ),
            (
                "7-day totals",
                (self.window.totals.capacity() * std::mem::size_of::<Nums>()) as u64,
            ),
            ("event-id digests", self.seen.heap_bytes()),
        ]
    }

    /// Moves the pre-aggregated window to the default window at `now_ms`.
    pub fn advance_window(&mut self, now_ms: i64) {
        let (from, to) = default_hours(now_ms);
        if (from, to) != (self.window.from, self.window.to) {
            self.window
                .move_to(&self.buckets, &self.action_cols, from, to);
        }
    }

    /// Counts one click in memory only, without any of the checks of [`CounterStore::stage`]
    /// (for tests and tools that build a state by hand). Returns its key id.
    pub fn add_click(&mut self, ev: &clicktally_proto::v1::ClickEvent) -> u32 {
        let hour = hour_of(ev.time_unix_ms).clamp(0, u32::MAX as i64) as u32;
        self.count(ev, hour, &mut journal::Writer::default())
    }

    /// Counts one click in memory; returns its key id. New names and keys are added to the
    /// group's journal record.
    fn count(
        &mut self,
        ev: &clicktally_proto::v1::ClickEvent,
        hour: u32,
        dict: &mut journal::Writer,
    ) -> u32 {
        let tenant = intern_name(&mut self.tenants, &ev.tenant, codec::TENANT_NAME, dict);
        let source = intern_name(&mut self.sources, &ev.source, codec::SOURCE_NAME, dict);
        let action = match self.actions.find(ev.action_type.as_str()) {
            Some(a) => a,
            None => {
                let a = intern_name(&mut self.actions, &ev.action_type, codec::ACTION_NAME, dict);
                self.classify_action(a, &ev.action_type);
                a
            }
        };
        let url = match self.urls.find(ev.url.as_str()) {
            Some(u) => u,
            None => self.urls.insert(ev.url.as_str().into()),
        };
        let parts = [tenant, source, url];
        let key = match self.keys.find(&parts) {
            Some(k) => k,
            None => {
                let k = self.keys.insert(parts);
                self.urls.retain(url);
                dict.key(k, tenant, source, &ev.url);
                k
            }
        };
        let off = (ev.time_unix_ms - i64::from(hour) * HOUR_MS) as u32;
        let bucket = self.buckets.entry(hour).or_default();
        let tally = match bucket.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                self.keys.retain(key);
                v.insert(Tally::default())
            }
        };
        tally.add(action as u16, ev.clicked_through, off);
        if self.window.covers(hour) {
            let mut one = Tally::default();
            one.add(action as u16, ev.clicked_through, off);
            self.window
                .add_one(key, &Nums::of(&one, hour, &self.action_cols));
        }
        key
    }

    /// Records the seed columns of action `id`.
    fn classify_action(&mut self, id: u32, name: &str) {
        let i = id as usize;
        if self.action_cols.len() <= i {
            self.action_cols.resize(i + 1, SeedColumns::default());
        }
        self.action_cols[i] = classify(name);
    }

    /// Adds a journal record's parts to `batch` under the next sequence numbers, without
    /// taking them: returns the next sequence after them and their bytes, for the caller to
    /// record once the batch is written (or at once, when it is committed later).
    fn journal_into(&self, record: journal::Writer, batch: &mut sled::Batch) -> (u64, u64) {
        let (mut seq, mut bytes) = (self.next_seq, 0);
        for part in record.finish() {
            bytes += part.len() as u64;
            batch.insert(&codec::log_key(seq)[..], part);
            seq += 1;
        }
        (seq, bytes)
    }

    /// Forgets the hours before `cutoff` in memory; returns the key and URL ids no counter
    /// uses any more (not yet reusable: see [`CounterState::free_ids`]).
    fn expire(&mut self, cutoff: u32) -> (Vec<u32>, Vec<u32>) {
        let old: Vec<u32> = self.buckets.range(..cutoff).map(|(h, _)| *h).collect();
        for hour in &old {
            self.window
                .drop_earliest(&self.buckets, &self.action_cols, *hour);
        }
        let kept = self.buckets.split_off(&cutoff);
        let gone = std::mem::replace(&mut self.buckets, kept);
        self.seen.expire_before(cutoff);
        let (mut keys, mut urls) = (Vec::new(), Vec::new());
        for bucket in gone.into_values() {
            for k in bucket.into_keys() {
                if self.keys.release(k) {
                    if let Some([_, _, u]) = self.keys.remove_deferred(k) {
                        keys.push(k);
                        if self.urls.release(u) && self.urls.remove_deferred(u).is_some() {
                            urls.push(u);
                        }
                    }
                }
            }
        }
        (keys, urls)
    }

    /// Lets ids freed by [`CounterState::expire`] be reused.
    fn free_ids(&mut self, keys: &[u32], urls: &[u32]) {
        self.keys.free_ids(keys);
        self.urls.free_ids(urls);
    }

    /// Applies one journal entry while loading.
    fn replay(&mut self, e: Entry<'_>) -> Result<(), CodecError> {
        let bad = |detail: String| CodecError {
            what: "journal entry",
            detail,
        };
        // Ids are dense: one far beyond those in use is damage, not a reason to allocate.
        let check = |id: u32, bound: usize| {
            if id as usize > bound + (1 << 24) {
                Err(bad(format!("id {id} is far beyond the {bound} in use")))
            } else {
                Ok(())
            }
        };
        match &e {
            Entry::Name { kind, id, .. } => {
                let bound = match *kind {
                    codec::ACTION_NAME if *id as usize > MAX_ACTION_TYPES => {
                        return Err(bad(format!("action id {id} is beyond the limit")))
                    }
                    codec::TENANT_NAME => self.tenants.id_bound(),
                    codec::SOURCE_NAME => self.sources.id_bound(),
                    _ => self.actions.id_bound(),
                };
                check(*id, bound)?;
            }
            Entry::Key { id, .. } => check(*id, self.keys.id_bound())?,
            Entry::Tally { .. } | Entry::Cutoff { .. } => {}
        }
        match e {
            Entry::Name { kind, id, name } => {
                let table = match kind {
                    codec::TENANT_NAME => &mut self.tenants,
                    codec::SOURCE_NAME => &mut self.sources,
                    codec::ACTION_NAME => {
                        self.classify_action(id, name);
                        &mut self.actions
                    }
                    k => {
                        return Err(CodecError {
                            what: "journal name",
                            detail: format!("unknown kind {k}"),
                        })
                    }
                };
                if table.get(id).map(|v| &**v) != Some(name) {
                    table.insert_at(id, name.into());
                }
            }
            Entry::Key {
                id,
                tenant,
                source,
                url,
            } => {
                if self.keys.refs(id) > 0 {
                    return Err(bad(format!(
                        "key {id} is defined again while {} hours still count it",
                        self.keys.refs(id)
                    )));
                }
                if let Some([_, _, old]) = self.keys.remove_deferred(id) {
                    if self.urls.release(old) {
                        self.urls.remove(old);
                    }
                }
                let u = match self.urls.find(url) {
                    Some(u) => u,
                    None => self.urls.insert(url.into()),
                };
                self.urls.retain(u);
                self.keys.insert_at(id, [tenant, source, u]);
            }
            Entry::Tally { hour, key, tally } => {
                if self.keys.get(key).is_none() {
                    return Err(CodecError {
                        what: "journal tally",
                        detail: format!("hour {hour} names key {key}, which is not defined"),
                    });
                }
                if self
                    .buckets
                    .entry(hour)
                    .or_default()
                    .insert(key, tally)
                    .is_none()
                {
                    self.keys.retain(key);
                }
            }
            Entry::Cutoff { hour } => {
                let (keys, urls) = self.expire(hour);
                self.free_ids(&keys, &urls);
            }
        }
        Ok(())
    }

    /// Every counter as journal entries: names, keys, tallies.
    fn snapshot_parts(&self) -> Vec<Vec<u8>> {
        let mut w = journal::Writer::default();
        for (kind, table) in [
            (codec::TENANT_NAME, &self.tenants),
            (codec::SOURCE_NAME, &self.sources),
            (codec::ACTION_NAME, &self.actions),
        ] {
            for (id, name) in table.iter() {
                w.name(kind, id, name);
            }
        }
        for (id, [t, s, u]) in self.keys.iter() {
            w.key(id, *t, *s, self.urls.get(*u).map_or("", |v| v));
        }
        for (hour, bucket) in &self.buckets {
            for (k, t) in bucket {
                w.tally(*hour, *k, t);
            }
        }
        w.finish()
    }
}

/// The hours of the default window (the last 7 days) at `now_ms`.
pub fn default_hours(now_ms: i64) -> (u32, u32) {
    crate::query::stored_hours(now_ms - crate::query::DEFAULT_WINDOW_MS, now_ms)
}

fn intern_name(
    table: &mut Table<Box<str>>,
    name: &str,
    kind: u8,
    dict: &mut journal::Writer,
) -> u32 {
    if let Some(id) = table.find(name) {
        return id;
    }
    let id = table.insert(name.into());
    dict.name(kind, id, name);
    id
}

/// A staged group commit: the sled writes and the acknowledgements they release.
pub struct StagedGroup {
    /// Counters, digests and high-water marks, as one atomic batch.
    pub batch: sled::Batch,
    /// One acknowledgement per input batch, in input order.
    pub acks: Vec<PushAck>,
    /// (hour, key id) pairs whose counts changed, for live watchers.
    pub touched: Vec<(u32, u32)>,
    /// Events counted, by source, for metrics.
    pub applied_by_source: HashMap<String, u64>,
}

/// A snapshot taken by [`CounterStore::capture`], to be written by [`CounterStore::install`].
pub struct Snapshot {
    /// Its generation.
    pub generation: u64,
    /// The last journal sequence it includes.
    pub through: u64,
    /// Its parts, in the journal's format.
    pub parts: Vec<Vec<u8>>,
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
        state.advance_window(now_ms);
        let cutoff = hour_of(now_ms) - limits.retention_hours;
        let mut touched: HashSet<(u32, u32), BuildHasherDefault<IdHasher>> = HashSet::default();
        let mut new_digests: BTreeMap<u32, Vec<u128>> = BTreeMap::new();
        let mut dict = journal::Writer::default();
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
                if let Err(reason) = validate(ev, limits, state) {
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
                let key = state.count(ev, hour, &mut dict);
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
            if let Some(t) = state.buckets.get(hour).and_then(|b| b.get(key)) {
                dict.tally(*hour, *key, t);
            }
        }
        let (next_seq, bytes) = state.journal_into(dict, &mut sled_batch);
        state.next_seq = next_seq;
        state.log_bytes += bytes;
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
        self.write(batch)?;
        self.flush().await
    }

    /// Writes a staged group atomically, not yet durable: see [`CounterStore::flush`].
    ///
    /// # Errors
    /// When sled cannot write.
    pub fn write(&self, batch: sled::Batch) -> Result<(), StoreError> {
        self.tree.apply_batch(batch).map_err(|e| self.err(e))
    }

    /// Waits until everything written so far is on disk.
    ///
    /// # Errors
    /// When sled cannot flush; nothing written since the last good flush may be acknowledged.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets every bucket and event-id partition older than `cutoff_hour`: in memory at once
    /// (so queries stop counting them), with a cutoff entry in the journal (written in journal
    /// order, so a replay forgets them at the same point), then deletes the event-id partitions
    /// from sled in chunks of `chunk` keys, so that a large expiry never holds up other writers
    /// for long. Returns how many counters (URL x hour) were forgotten.
    ///
    /// # Errors
    /// When sled cannot write.
    pub fn expire_before(&self, cutoff_hour: u32, chunk: usize) -> Result<usize, StoreError> {
        let removed = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let removed: usize = state
                .buckets
                .range(..cutoff_hour)
                .map(|(_, b)| b.len())
                .sum();
            if removed > 0 || state.seen.has_before(cutoff_hour) {
                // The cutoff is in the journal before memory forgets anything or an id is
                // reused: a failed write changes nothing and the next run retries it.
                let mut w = journal::Writer::default();
                w.cutoff(cutoff_hour);
                let mut batch = sled::Batch::default();
                let (seq, bytes) = state.journal_into(w, &mut batch);
                self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
                state.next_seq = seq;
                state.log_bytes += bytes;
                let (keys, urls) = state.expire(cutoff_hour);
                state.free_ids(&keys, &urls);
            }
            removed
        };
        let end = codec::hour_prefix(codec::SEEN, cutoff_hour);
        self.remove_range(&[codec::SEEN][..], &end[..], chunk)?;
        Ok(removed)
    }

    /// Deletes the keys in `[from, to)` in batches of `chunk`.
    fn remove_range(&self, from: &[u8], to: &[u8], chunk: usize) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for kv in self.tree.range(from..to).take(chunk.max(1)) {
                let (k, _) = kv.map_err(|e| self.err(e))?;
                batch.remove(k);
                n += 1;
            }
            if n == 0 {
                return Ok(removed);
            }
            self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
            removed += n;
        }
    }

    /// True when the journal since the last snapshot has grown past the snapshot's size (and
    /// past `min_bytes`): time for [`CounterStore::capture`].
    pub fn snapshot_due(&self, min_bytes: u64) -> bool {
        let state = self.read();
        state.log_bytes >= min_bytes.max(state.snapshot.0)
    }

    /// Takes a snapshot of every counter in memory. Call it only between group commits (from
    /// the writer), when everything counted is in journal parts already written; write it with
    /// [`CounterStore::install`], which may run in the background.
    pub fn capture(&self) -> Snapshot {
        // Under the read lock: queries go on; the writer is here, and retention waits for the
        // lock like any writer, so the parts and `through` describe one moment.
        let (parts, generation, through) = {
            let state = self.read();
            (
                state.snapshot_parts(),
                state.snapshot.1 + 1,
                state.next_seq.saturating_sub(1),
            )
        };
        let bytes: u64 = parts.iter().map(|p| p.len() as u64).sum();
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.snapshot = (bytes, generation);
        state.log_bytes = 0;
        Snapshot {
            generation,
            through,
            parts,
        }
    }

    /// Writes a snapshot, makes it the one in force, then deletes the journal it includes and
    /// older snapshots. A crash at any point leaves a loadable store: the previous snapshot
    /// and journal stay until the new pointer is on disk.
    ///
    /// # Errors
    /// When sled cannot write.
    pub fn install(&self, snap: Snapshot) -> Result<(), StoreError> {
        let Snapshot {
            generation,
            through,
            parts,
        } = snap;
        let mut part_no = 0u32;
        for chunk in parts.chunks(64) {
            let mut batch = sled::Batch::default();
            for p in chunk {
                batch.insert(&codec::snap_key(generation, part_no)[..], p.as_slice());
                part_no += 1;
            }
            self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        }
        drop(parts);
        self.db.flush().map_err(|e| self.err(e))?;
        self.tree
            .insert(
                codec::SNAP_POINTER,
                &codec::snap_pointer(generation, through),
            )
            .map_err(|e| self.err(e))?;
        self.db.flush().map_err(|e| self.err(e))?;
        self.remove_range(
            &[codec::LOG][..],
            &codec::log_key(through.saturating_add(1))[..],
            1_000,
        )?;
        self.remove_range(
            &[codec::SNAP][..],
            &codec::snap_key(generation, 0)[..],
            1_000,
        )?;
        Ok(())
    }

    /// Moves the pre-aggregated window to the default window at `now_ms`, when it is not there.
    pub fn advance_window(&self, now_ms: i64) {
        let due = {
            let state = self.read();
            default_hours(now_ms) != (state.window.from, state.window.to)
        };
        if due {
            self.state
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .advance_window(now_ms);
        }
    }

    /// The generation of the snapshot in force (0 before the first).
    pub fn snapshot_generation(&self) -> u64 {
        self.read().snapshot.1
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

/// Distinct action types kept (they are stored as 16-bit ids; real vocabularies have a dozen).
pub const MAX_ACTION_TYPES: usize = 60_000;

/// Refuses events that can never be counted correctly.
fn validate(
    ev: &clicktally_proto::v1::ClickEvent,
    limits: &ApplyLimits,
    state: &CounterState,
) -> Result<(), String> {
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
    if state.actions.len() > MAX_ACTION_TYPES
        && state.actions.find(ev.action_type.as_str()).is_none()
    {
        return Err(format!(
            "action type {:?} would exceed the limit of {MAX_ACTION_TYPES} distinct action types",
            ev.action_type
        ));
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
    let (generation, through) = match tree.get(codec::SNAP_POINTER)? {
        Some(v) => codec::decode_snap_pointer(&v)?,
        None => (0, 0),
    };
    let mut snap_bytes = 0;
    let mut stale = Vec::new();
    for kv in tree.scan_prefix([codec::SNAP]) {
        let (k, v) = kv?;
        if codec::decode_seq(&k)? != generation {
            stale.push(k); // an older snapshot, or one cut short by a crash
            continue;
        }
        snap_bytes += v.len() as u64;
        journal::read(&v, |e| state.replay(e))?;
    }
    let mut log_bytes = 0;
    let mut next_seq = through + 1;
    for kv in tree.scan_prefix([codec::LOG]) {
        let (k, v) = kv?;
        let seq = codec::decode_seq(&k)?;
        if seq <= through && generation > 0 {
            stale.push(k); // included in the snapshot; its deletion was cut short
            continue;
        }
        log_bytes += v.len() as u64;
        journal::read(&v, |e| state.replay(e))?;
        next_seq = next_seq.max(seq + 1);
    }
    for k in stale {
        tree.remove(k)?;
    }
    // Keys no counter uses (retention dropped all their hours) are forgotten.
    let unused: Vec<u32> = state
        .keys
        .iter()
        .filter(|(id, _)| state.keys.refs(*id) == 0)
        .map(|(id, _)| id)
        .collect();
    for id in unused {
        if let Some([_, _, u]) = state.keys.remove(id) {
            if state.urls.release(u) {
                state.urls.remove(u);
            }
        }
    }
    for t in [
        &mut state.tenants,
        &mut state.sources,
        &mut state.actions,
        &mut state.urls,
    ] {
        t.finish_load();
    }
    state.keys.finish_load();
    state.next_seq = next_seq.max(1);
    state.log_bytes = log_bytes;
    state.snapshot = (snap_bytes, generation);
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
