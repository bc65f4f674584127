//! Compact in-memory tables behind the counters: strings and counter keys interned to dense
//! `u32` ids (each URL held once, however many hours it was clicked in), and the per-hour
//! [`Tally`] of one key.
//!
//! Ids are dense so that per-key data lives in plain vectors indexed by id and scans run in
//! memory order. An id whose last reference goes (retention deleted every hour it was counted
//! in) is freed and reused.

use crate::codec::CodecError;
use hashbrown::HashTable;
use smallvec::SmallVec;
use std::borrow::Borrow;
use std::hash::{BuildHasherDefault, Hasher};

/// A value a [`Table`] can index.
pub trait Hashed {
    /// A well-mixed 64-bit hash.
    fn hash64(&self) -> u64;
}

impl Hashed for str {
    fn hash64(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.as_bytes())
    }
}

impl Hashed for Box<str> {
    fn hash64(&self) -> u64 {
        (**self).hash64()
    }
}

/// A counter key by ids: tenant, source, URL.
pub type KeyParts = [u32; 3];

impl Hashed for KeyParts {
    fn hash64(&self) -> u64 {
        let v = (u64::from(self[0]) << 48) ^ (u64::from(self[1]) << 32) ^ u64::from(self[2]);
        mix64(v)
    }
}

/// A strong 64-bit finaliser (from SplitMix64).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes `u32` ids for maps keyed by id.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = mix64(self.0 ^ u64::from(*b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = mix64(u64::from(v));
    }
}

/// A map keyed by dense ids.
pub type IdMap<V> = std::collections::HashMap<u32, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone)]
struct Slot<T> {
    value: Option<T>,
    refs: u32,
}

/// Values interned to dense ids, with reference counts so that unused ids are freed.
#[derive(Debug, Clone)]
pub struct Table<T> {
    slots: Vec<Slot<T>>,
    index: HashTable<u32>,
    free: Vec<u32>,
    live: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            index: HashTable::new(),
            free: Vec::new(),
            live: 0,
        }
    }
}

impl<T: Hashed> Table<T> {
    /// The id of `q`, if interned.
    pub fn find<Q>(&self, q: &Q) -> Option<u32>
    where
        Q: Hashed + Eq + ?Sized,
        T: Borrow<Q>,
    {
        let slots = &self.slots;
        self.index
            .find(q.hash64(), |&id| {
                slots[id as usize]
                    .value
                    .as_ref()
                    .is_some_and(|v| v.borrow() == q)
            })
            .copied()
    }

    /// Interns `value` (which must not be present) and returns its new id.
    pub fn insert(&mut self, value: T) -> u32 {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.slots.push(Slot {
                    value: None,
                    refs: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.put(id, value);
        id
    }

    /// Interns `value` under `id` (loading a stored table). Gaps left below the highest id
    /// become free ids once [`Table::finish_load`] runs.
    pub fn insert_at(&mut self, id: u32, value: T) {
        let i = id as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || Slot {
                value: None,
                refs: 0,
            });
        }
        if self.slots[i].value.is_some() {
            self.remove(id);
            self.free.pop();
        }
        self.put(id, value);
    }

    fn put(&mut self, id: u32, value: T) {
        let hash = value.hash64();
        self.slots[id as usize] = Slot {
            value: Some(value),
            refs: 0,
        };
        let slots = &self.slots;
        self.index.insert_unique(hash, id, |&other| {
            slots[other as usize]
                .value
                .as_ref()
                .map(Hashed::hash64)
                .unwrap_or_default()
        });
        self.live += 1;
    }

    /// Forgets `id`; its value is returned and the id reused later.
    pub fn remove(&mut self, id: u32) -> Option<T> {
        let v = self.remove_deferred(id)?;
        self.free.push(id);
        Some(v)
    }

    /// Forgets `id` but does not reuse it until [`Table::free_ids`] says so (its stored copy
    /// must be deleted first).
    pub fn remove_deferred(&mut self, id: u32) -> Option<T> {
        let slot = self.slots.get_mut(id as usize)?;
        let value = slot.value.take()?;
        slot.refs = 0;
        if let Ok(entry) = self.index.find_entry(value.hash64(), |&other| other == id) {
            entry.remove();
        }
        self.live -= 1;
        Some(value)
    }

    /// Makes ids removed with [`Table::remove_deferred`] reusable.
    pub fn free_ids(&mut self, ids: &[u32]) {
        self.free.extend(ids.iter().filter(|&&id| {
            self.slots
                .get(id as usize)
                .is_some_and(|s| s.value.is_none())
        }));
    }

    /// After loading with [`Table::insert_at`]: every unused id below the highest becomes free.
    pub fn finish_load(&mut self) {
        self.free = (0..self.slots.len() as u32)
            .rev()
            .filter(|&id| self.slots[id as usize].value.is_none())
            .collect();
    }
}

impl<T> Table<T> {
    /// The value of `id`.
    pub fn get(&self, id: u32) -> Option<&T> {
        self.slots.get(id as usize)?.value.as_ref()
    }

    /// One past the highest id ever handed out: the length of vectors indexed by id.
    pub fn id_bound(&self) -> usize {
        self.slots.len()
    }

    /// Ids in use.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// References held on `id`.
    pub fn refs(&self, id: u32) -> u32 {
        self.slots.get(id as usize).map_or(0, |s| s.refs)
    }

    /// Takes a reference on `id`.
    pub fn retain(&mut self, id: u32) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            s.refs += 1;
        }
    }

    /// Drops a reference on `id`; true when none is left.
    pub fn release(&mut self, id: u32) -> bool {
        match self.slots.get_mut(id as usize) {
            Some(s) => {
                s.refs = s.refs.saturating_sub(1);
                s.refs == 0
            }
            None => false,
        }
    }

    /// Bytes this table holds on the heap, besides what its values own.
    pub fn heap_bytes(&self) -> u64 {
        (self.slots.capacity() * std::mem::size_of::<Slot<T>>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
            + self.free.capacity() * 4) as u64
    }

    /// Every (id, value) in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.value.as_ref().map(|v| (i as u32, v)))
    }
}

/// Clicks of one counter key in one hour. Times are kept as milliseconds into the hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Earliest click, ms after the start of the hour.
    pub first_off: u32,
    /// Latest click, ms after the start of the hour.
    pub last_off: u32,
    /// Clicks whose user went on past a warning.
    pub clicked_through: u32,
    /// (action id, clicks), in first-seen order.
    pub actions: SmallVec<[(u16, u32); 2]>,
}

impl Tally {
    /// Adds one click `off` ms into the hour.
    pub fn add(&mut self, action: u16, clicked_through: bool, off: u32) {
        let first = self.actions.is_empty();
        match self.actions.iter_mut().find(|(a, _)| *a == action) {
            Some((_, n)) => *n = n.saturating_add(1),
            None => self.actions.push((action, 1)),
        }
        if clicked_through {
            self.clicked_through = self.clicked_through.saturating_add(1);
        }
        if first || off < self.first_off {
            self.first_off = off;
        }
        if first || off > self.last_off {
            self.last_off = off;
        }
    }

    /// All clicks.
    pub fn total(&self) -> u64 {
        self.actions.iter().map(|(_, n)| u64::from(*n)).sum()
    }

    /// The stored form: varints of clicked-through, first, last, then (action, count) pairs.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 4 * self.actions.len());
        for v in [self.clicked_through, self.first_off, self.last_off] {
            prost::encoding::encode_varint(u64::from(v), &mut out);
        }
        for (a, n) in &self.actions {
            prost::encoding::encode_varint(u64::from(*a), &mut out);
            prost::encoding::encode_varint(u64::from(*n), &mut out);
        }
        out
    }

    /// Reads a value written by [`Tally::encode`].
    ///
    /// # Errors
    /// When the bytes are not a well-formed tally.
    pub fn decode(mut bytes: &[u8]) -> Result<Self, CodecError> {
        let bad = |detail: String| CodecError {
            what: "counter value",
            detail,
        };
        let next = |bytes: &mut &[u8], max: u64| -> Result<u64, CodecError> {
            let v = prost::encoding::decode_varint(bytes).map_err(|e| bad(e.to_string()))?;
            if v > max {
                return Err(bad(format!("{v} is out of range")));
            }
            Ok(v)
        };
        let m32 = u64::from(u32::MAX);
        let clicked_through = next(&mut bytes, m32)? as u32;
        let first_off = next(&mut bytes, m32)? as u32;
        let last_off = next(&mut bytes, m32)? as u32;
        let mut actions = SmallVec::new();
        while !bytes.is_empty() {
            let a = next(&mut bytes, u64::from(u16::MAX))? as u16;
            let n = next(&mut bytes, m32)? as u32;
            actions.push((a, n));
        }
        if actions.is_empty() {
            return Err(bad("no actions".into()));
        }
        Ok(Self {
            first_off,
            last_off,
            clicked_through,
            actions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_found_by_value_and_reused_after_removal() {
        let mut t: Table<Box<str>> = Table::default();
        let a = t.insert("a".into());
        let b = t.insert("b".into());
        assert_eq!((a, b), (0, 1));
        assert_eq!(t.find("b"), Some(1));
        assert_eq!(t.find("c"), None);
        t.retain(a);
        t.retain(a);
        assert!(!t.release(a));
        assert!(t.release(a));
        assert_eq!(t.remove(a).as_deref(), Some("a"));
        assert_eq!(t.find("a"), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.insert("c".into()), 0);
        assert_eq!(t.find("c"), Some(0));
        assert_eq!(t.id_bound(), 2);
    }

    #[test]
    fn a_loaded_table_frees_its_gaps() {
        let mut t: Table<KeyParts> = Table::default();
        t.insert_at(3, [0, 1, 2]);
        t.insert_at(1, [0, 1, 3]);
        t.finish_load();
        assert_eq!(t.find(&[0, 1, 2]), Some(3));
        assert_eq!(t.insert([9, 9, 9]), 0);
        assert_eq!(t.insert([9, 9, 8]), 2);
        assert_eq!(t.insert([9, 9, 7]), 4);
        assert_eq!(
            t.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn tallies_round_trip_and_refuse_garbage() {
        let mut t = Tally::default();
        t.add(2, true, 500);
        t.add(0, false, 100);
        t.add(2, false, 3_599_999);
        assert_eq!(t.total(), 3);
        assert_eq!(
            (t.first_off, t.last_off, t.clicked_through),
            (100, 3_599_999, 1)
        );
        assert_eq!(&t.actions[..], &[(2, 2), (0, 1)]);
        assert_eq!(Tally::decode(&t.encode()).unwrap(), t);
        assert!(Tally::decode(&[0x80]).is_err());
        assert!(Tally::decode(&[0, 0, 0]).is_err());
        assert!(Tally::decode(&[0, 0, 0, 0xff, 0xff, 0x7f, 1]).is_err());
    }
}
