//! The counters' journal: how counts reach sled.
//!
//! Writing one sled key per counter cost most of the aggregator's CPU and memory (sled clones
//! a whole leaf for every insert and frees the copies later), so counters are stored as
//! records instead: each group commit appends its changes (new names, new counter keys, the
//! absolute tallies it touched, retention cutoffs) as a few values of about [`PART_BYTES`];
//! from time to time a snapshot of the whole state is written and the journal before it
//! deleted. Loading replays the snapshot, then the journal after it, in order.
//!
//! A part is a sequence of entries, each a tag byte and varints:
//! - `1` kind id len bytes: a name (kind `t` tenant, `s` source, `a` action type);
//! - `2` key tenant source len url: a counter key and its URL (each URL written once);
//! - `3` hour key len tally: the counters of a key in an hour, absolute ([`Tally::encode`]);
//! - `4` hour: retention dropped every hour before this one.

use crate::codec::CodecError;
use crate::table::Tally;
use prost::encoding::{decode_varint, encode_varint};

/// Target size of one stored part: small enough that sled keeps its leaves out of blob
/// files (sled moves values of leaves above 128 KiB there).
pub const PART_BYTES: usize = 6 * 1024;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A tenant, source or action name.
    Name {
        /// `t`, `s` or `a`.
        kind: u8,
        /// Its id.
        id: u32,
        /// The name.
        name: &'a str,
    },
    /// A counter key.
    Key {
        /// Its id.
        id: u32,
        /// Tenant id.
        tenant: u32,
        /// Source id.
        source: u32,
        /// The URL.
        url: &'a str,
    },
    /// A key's counters in an hour.
    Tally {
        /// Hour since the epoch.
        hour: u32,
        /// Key id.
        key: u32,
        /// The counters.
        tally: Tally,
    },
    /// Hours before this one were dropped by retention.
    Cutoff {
        /// First hour kept.
        hour: u32,
    },
}

/// Builds the parts of one record.
#[derive(Debug, Default)]
pub struct Writer {
    parts: Vec<Vec<u8>>,
    cur: Vec<u8>,
}

impl Writer {
    fn start(&mut self) {
        if self.cur.len() >= PART_BYTES {
            self.parts.push(std::mem::take(&mut self.cur));
        }
    }

    fn bytes_str(&mut self, s: &str) {
        encode_varint(s.len() as u64, &mut self.cur);
        self.cur.extend_from_slice(s.as_bytes());
    }

    /// Appends a name.
    pub fn name(&mut self, kind: u8, id: u32, name: &str) {
        self.start();
        self.cur.push(1);
        self.cur.push(kind);
        encode_varint(u64::from(id), &mut self.cur);
        self.bytes_str(name);
    }

    /// Appends a counter key.
    pub fn key(&mut self, id: u32, tenant: u32, source: u32, url: &str) {
        self.start();
        self.cur.push(2);
        for v in [id, tenant, source] {
            encode_varint(u64::from(v), &mut self.cur);
        }
        self.bytes_str(url);
    }

    /// Appends a key's counters in an hour.
    pub fn tally(&mut self, hour: u32, key: u32, tally: &Tally) {
        self.start();
        self.cur.push(3);
        encode_varint(u64::from(hour), &mut self.cur);
        encode_varint(u64::from(key), &mut self.cur);
        let t = tally.encode();
        encode_varint(t.len() as u64, &mut self.cur);
        self.cur.extend_from_slice(&t);
    }

    /// Appends a retention cutoff.
    pub fn cutoff(&mut self, hour: u32) {
        self.start();
        self.cur.push(4);
        encode_varint(u64::from(hour), &mut self.cur);
    }

    /// The parts, each at most about [`PART_BYTES`] (an entry is never split).
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if !self.cur.is_empty() {
            self.parts.push(std::mem::take(&mut self.cur));
        }
        self.parts
    }
}

fn corrupt(detail: impl Into<String>) -> CodecError {
    CodecError {
        what: "journal part",
        detail: detail.into(),
    }
}

fn varint32(b: &mut &[u8]) -> Result<u32, CodecError> {
    let v = decode_varint(b).map_err(|e| corrupt(e.to_string()))?;
    u32::try_from(v).map_err(|_| corrupt(format!("{v} does not fit 32 bits")))
}

fn take<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], CodecError> {
    let len = decode_varint(b).map_err(|e| corrupt(e.to_string()))? as usize;
    if b.len() < len {
        return Err(corrupt(format!("{len} bytes announced, {} left", b.len())));
    }
    let (head, rest) = b.split_at(len);
    *b = rest;
    Ok(head)
}

fn text<'a>(b: &mut &'a [u8]) -> Result<&'a str, CodecError> {
    std::str::from_utf8(take(b)?).map_err(|e| corrupt(e.to_string()))
}

/// Reads every entry of one part, in order.
///
/// # Errors
/// When the part is malformed, or `f` fails.
pub fn read(
    mut b: &[u8],
    mut f: impl FnMut(Entry<'_>) -> Result<(), CodecError>,
) -> Result<(), CodecError> {
    while let Some((&tag, rest)) = b.split_first() {
        b = rest;
        let entry = match tag {
            1 => {
                let (&kind, rest) = b.split_first().ok_or_else(|| corrupt("truncated name"))?;
                b = rest;
                Entry::Name {
                    kind,
                    id: varint32(&mut b)?,
                    name: text(&mut b)?,
                }
            }
            2 => Entry::Key {
                id: varint32(&mut b)?,
                tenant: varint32(&mut b)?,
                source: varint32(&mut b)?,
                url: text(&mut b)?,
            },
            3 => Entry::Tally {
                hour: varint32(&mut b)?,
                key: varint32(&mut b)?,
                tally: Tally::decode(take(&mut b)?)?,
            },
            4 => Entry::Cutoff {
                hour: varint32(&mut b)?,
            },
            t => return Err(corrupt(format!("unknown entry tag {t}"))),
        };
        f(entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_parts_of_bounded_size() {
        let mut w = Writer::default();
        let mut t = Tally::default();
        t.add(1, true, 42);
        w.name(b'a', 1, "ClickBlocked");
        for i in 0..2_000u32 {
            w.key(i, 0, 1, &format!("https://example.com/{i}"));
            w.tally(490_000, i, &t);
        }
        w.cutoff(489_000);
        let parts = w.finish();
        assert!(parts.len() > 5, "{} parts", parts.len());
        assert!(parts.iter().all(|p| p.len() < PART_BYTES + 64));
        let mut seen = Vec::new();
        for p in &parts {
            read(p, |e| {
                seen.push(format!("{e:?}"));
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(seen.len(), 1 + 2 * 2_000 + 1);
        assert!(seen[0].contains("ClickBlocked"));
        assert!(seen[3999].contains("https://example.com/1999"));
        assert_eq!(seen[4001], "Cutoff { hour: 489000 }");
    }

    #[test]
    fn damaged_parts_are_errors_not_panics() {
        let mut w = Writer::default();
        w.key(7, 0, 1, "https://example.com/");
        let part = w.finish().remove(0);
        for cut in 0..part.len() {
            assert!(read(&part[..cut], |_| Ok(())).is_err() || cut == 0);
        }
        assert!(read(&[9], |_| Ok(())).is_err());
        assert!(read(&[2, 1, 0, 0, 2, 0xff, 0xfe], |_| Ok(())).is_err());
    }
}
