//! The event-id index: which clicks were already counted, so that a click delivered twice (an
//! overlapping poll window, a re-sent file) counts once.
//!
//! Each id is kept as a 16-byte digest, partitioned by the hour of the click so that retention
//! drops whole partitions. The live set is held in memory (a new id costs no disk read); sled
//! holds one value per hour per group commit, written in the same atomic batch as the counters.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// The 16-byte digest of an event's identity (its source and its `event_id`).
pub fn digest(source: &str, event_id: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(source.as_bytes());
    h.update(&[0]);
    h.update(event_id.as_bytes());
    h.digest128()
}

/// Digests are already uniformly distributed: hashing them again is wasted work.
#[derive(Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

type DigestSet = HashSet<u128, BuildHasherDefault<DigestHasher>>;

/// The digests of all counted events still inside retention, by hour.
#[derive(Debug, Default)]
pub struct SeenIds {
    /// Hour (since the epoch) -> digests of the events of that hour.
    by_hour: BTreeMap<u32, DigestSet>,
    /// How many digests are held, for metrics and the benchmark.
    len: usize,
}

impl SeenIds {
    /// Records `digest` for `hour`; false when it was already there.
    pub fn insert(&mut self, hour: u32, digest: u128) -> bool {
        let fresh = self.by_hour.entry(hour).or_default().insert(digest);
        if fresh {
            self.len += 1;
        }
        fresh
    }

    /// Forgets every hour before `cutoff`.
    pub fn expire_before(&mut self, cutoff: u32) {
        let kept = self.by_hour.split_off(&cutoff);
        let dropped = std::mem::replace(&mut self.by_hour, kept);
        self.len -= dropped.values().map(HashSet::len).sum::<usize>();
    }

    /// Bytes held on the heap (estimated from capacities).
    pub fn heap_bytes(&self) -> u64 {
        self.by_hour
            .values()
            .map(|s| s.capacity() as u64 * 17)
            .sum()
    }

    /// True when some digest is of an hour before `cutoff`.
    pub fn has_before(&self, cutoff: u32) -> bool {
        self.by_hour.range(..cutoff).next().is_some()
    }

    /// Number of digests held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no digest is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Packs digests into one stored value.
pub fn pack(digests: &[u128]) -> Vec<u8> {
    let mut out = Vec::with_capacity(digests.len() * 16);
    for d in digests {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// Unpacks a value written by [`pack`]; a trailing partial digest is ignored.
pub fn unpack(value: &[u8]) -> impl Iterator<Item = u128> + '_ {
    value
        .chunks_exact(16)
        .map(|c| u128::from_be_bytes(c.try_into().expect("16 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_seen_once_per_hour_and_expires_with_its_hour() {
        let mut s = SeenIds::default();
        let d = digest("defender", "abc");
        assert!(s.insert(10, d));
        assert!(!s.insert(10, d));
        assert!(s.insert(11, digest("defender", "abd")));
        assert_eq!(s.len(), 2);
        s.expire_before(11);
        assert_eq!(s.len(), 1);
        assert!(s.insert(10, d));
    }

    #[test]
    fn digests_depend_on_source_and_id() {
        assert_ne!(digest("proofpoint", "x"), digest("mimecast", "x"));
        assert_ne!(digest("a", "bc"), digest("ab", "c"));
        let packed = pack(&[1, u128::MAX]);
        assert_eq!(unpack(&packed).collect::<Vec<_>>(), vec![1, u128::MAX]);
    }
}
