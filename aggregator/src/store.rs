//! `CounterStore`: per-URL, per-hour counters in sled, mirrored in memory.
//!
//! sled is the durable truth; the in-memory mirror answers queries and makes every write an
//! absolute value (no read-modify-write on disk). A group of batches is staged in memory, written
//! as one atomic `apply_batch` (counters, new dictionary entries, event-id digests and high-water
//! marks together) and flushed before any of its acknowledgements is sent.
//!
//! In memory, strings are interned to dense ids ([`crate::table`]): each URL is held once, a
//! counter is a [`Tally`] of a few dozen bytes under its key id, and the default 7-day window is
//! pre-aggregated per key ([`crate::totals`]).

use crate::actions::{classify, SeedColumns};
use crate::clock::{hour_of, HOUR_MS};
use crate::codec::{self, CodecError, CounterKey, Counts};
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

    /// Counter entries (URL x tenant x source x hour) held.
    pub fn counter_entries(&self) -> usize {
        self.buckets.values().map(|b| b.len()).sum()
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
        self.count(ev, hour, &mut Vec::new())
    }

    /// Counts one click in memory; returns its key id. New
    /// dictionary entries are added to `dict` for the same sled batch.
    fn count(
        &mut self,
        ev: &clicktally_proto::v1::ClickEvent,
        hour: u32,
        dict: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> u32 {
        let tenant = intern_name(&mut self.tenants, &ev.tenant, codec::TENANT_NAME, dict);
        let source = intern_name(&mut self.sources, &ev.source, codec::SOURCE_NAME, dict);
        let action = match self.actions.find(ev.action_type.as_str()) {
            Some(a) => a,
            None => {
                let a = intern_name(&mut self.actions, &ev.action_type, codec::ACTION_NAME, dict);
                if self.action_cols.len() <= a as usize {
                    self.action_cols
                        .resize(a as usize + 1, SeedColumns::default());
                }
                self.action_cols[a as usize] = classify(&ev.action_type);
                a
            }
        };
        let url = match self.urls.find(ev.url.as_str()) {
            Some(u) => u,
            None => {
                let u = self.urls.insert(ev.url.as_str().into());
                dict.push((
                    codec::dict_key(codec::URL, None, u),
                    ev.url.as_bytes().to_vec(),
                ));
                u
            }
        };
        let parts = [tenant, source, url];
        let key = match self.keys.find(&parts) {
            Some(k) => k,
            None => {
                let k = self.keys.insert(parts);
                self.urls.retain(url);
                dict.push((
                    codec::dict_key(codec::KEY, None, k),
                    codec::key_value(parts).to_vec(),
                ));
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

    /// Lets ids freed by [`CounterState::expire`] be reused, once sled no longer holds them.
    fn free_ids(&mut self, keys: &[u32], urls: &[u32]) {
        self.keys.free_ids(keys);
        self.urls.free_ids(urls);
    }
}

/// The hours of the default window (the last 7 days) at `now_ms`.
pub fn default_hours(now_ms: i64) -> (u32, u32) {
    let (from, to) =
        crate::query::hours_of_window(now_ms - crate::query::DEFAULT_WINDOW_MS, now_ms);
    (
        from.clamp(0, u32::MAX as i64) as u32,
        to.clamp(0, u32::MAX as i64) as u32,
    )
}

fn intern_name(
    table: &mut Table<Box<str>>,
    name: &str,
    kind: u8,
    dict: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> u32 {
    if let Some(id) = table.find(name) {
        return id;
    }
    let id = table.insert(name.into());
    dict.push((
        codec::dict_key(codec::NAME, Some(kind), id),
        name.as_bytes().to_vec(),
    ));
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
        let mut dict: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
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
        for (k, v) in dict {
            sled_batch.insert(k, v);
        }
        for (hour, key) in &touched {
            if let Some(t) = state.buckets.get(hour).and_then(|b| b.get(key)) {
                sled_batch.insert(&codec::counter_key(*hour, *key)[..], t.encode());
            }
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

    /// Forgets every bucket and event-id partition older than `cutoff_hour` in memory (at once,
    /// so queries stop counting them), then deletes them from sled in chunks of `chunk` keys,
    /// so that a large expiry never holds up other writers for long, with the dictionary entries
    /// of keys and URLs no counter uses any more. Returns how many counter keys were deleted.
    ///
    /// # Errors
    /// When sled cannot write.
    pub fn expire_before(&self, cutoff_hour: u32, chunk: usize) -> Result<usize, StoreError> {
        let (keys, urls) = self
            .state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .expire(cutoff_hour);
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
        let dict = keys
            .iter()
            .map(|k| codec::dict_key(codec::KEY, None, *k))
            .chain(urls.iter().map(|u| codec::dict_key(codec::URL, None, *u)));
        let dict: Vec<Vec<u8>> = dict.collect();
        for part in dict.chunks(chunk.max(1)) {
            let mut batch = sled::Batch::default();
            for k in part {
                batch.remove(k.as_slice());
            }
            self.tree.apply_batch(batch).map_err(|e| self.err(e))?;
        }
        if !dict.is_empty() {
            // The ids may be reused only once their old entries are gone for good.
            self.db.flush().map_err(|e| self.err(e))?;
        }
        self.state
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .free_ids(&keys, &urls);
        Ok(removed)
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
    for kv in tree.scan_prefix([codec::NAME]) {
        let (k, v) = kv?;
        let (kind, id) = codec::decode_dict_key(&k)?;
        let name = codec::decode_name("name", &v)?;
        match kind {
            Some(codec::TENANT_NAME) => state.tenants.insert_at(id, name),
            Some(codec::SOURCE_NAME) => state.sources.insert_at(id, name),
            Some(codec::ACTION_NAME) => {
                if state.action_cols.len() <= id as usize {
                    state
                        .action_cols
                        .resize(id as usize + 1, SeedColumns::default());
                }
                state.action_cols[id as usize] = classify(&name);
                state.actions.insert_at(id, name);
            }
            _ => {
                return Err(CodecError {
                    what: "name entry",
                    detail: format!("unknown kind in {k:?}"),
                }
                .into())
            }
        }
    }
    for kv in tree.scan_prefix([codec::URL]) {
        let (k, v) = kv?;
        let (_, id) = codec::decode_dict_key(&k)?;
        state.urls.insert_at(id, codec::decode_name("url", &v)?);
    }
    for kv in tree.scan_prefix([codec::KEY]) {
        let (k, v) = kv?;
        let (_, id) = codec::decode_dict_key(&k)?;
        let parts = codec::decode_key_value(&v)?;
        if state.urls.get(parts[2]).is_some() {
            state.keys.insert_at(id, parts);
        } // else: left over from a retention run cut short; no counter can name it
    }
    for kv in tree.scan_prefix([codec::COUNTER]) {
        let (k, v) = kv?;
        let (hour, key) = codec::decode_counter_key(&k)?;
        if state.keys.get(key).is_none() {
            return Err(CodecError {
                what: "counter",
                detail: format!("hour {hour} names key {key} which is not stored"),
            }
            .into());
        }
        let tally = Tally::decode(&v)?;
        state.buckets.entry(hour).or_default().insert(key, tally);
        state.keys.retain(key);
    }
    // Keys and URLs no counter uses (retention deleted their counters, then the process
    // stopped before their entries went) are forgotten; their ids are overwritten when reused.
    let unused: Vec<u32> = state
        .keys
        .iter()
        .filter(|(id, _)| state.keys.refs(*id) == 0)
        .map(|(id, _)| id)
        .collect();
    for id in unused {
        state.keys.remove(id);
    }
    let used: Vec<u32> = state.keys.iter().map(|(_, p)| p[2]).collect();
    for u in used {
        state.urls.retain(u);
    }
    let unused: Vec<u32> = state
        .urls
        .iter()
        .filter(|(id, _)| state.urls.refs(*id) == 0)
        .map(|(id, _)| id)
        .collect();
    for id in unused {
        state.urls.remove(id);
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
