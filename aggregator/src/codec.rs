//! The byte layout of everything the aggregator keeps in sled.
//!
//! Layout: one tree, so that a group commit is one atomic `apply_batch`. Strings are stored once
//! and referred to by dense `u32` ids (see [`crate::table`]), so a URL clicked in 168 hours is
//! written once, not 168 times.
//! - `c` + hour (u32 BE) + key id (u32 BE) -> [`crate::table::Tally`] (varints): the counters of
//!   one counter key in one hour.
//! - `k` + key id (u32 BE) -> tenant id, source id, URL id (3 x u32 BE): one counter key.
//! - `u` + URL id (u32 BE) -> the URL's bytes.
//! - `n` + kind (`t` tenant, `s` source, `a` action) + id (u32 BE) -> the name's bytes.
//! - `s` + hour (u32 BE) + commit number (u64 BE) -> concatenated 16-byte event-id digests first
//!   seen in that hour by that group commit.
//! - `h` + collector id -> u64 BE: the collector's high-water mark (last applied spool sequence).
//! - `m` + name -> metadata (the schema version).
//!
//! A dictionary entry (`k`, `u`, `n`) is written in the same batch as the first counter that
//! uses it; retention deletes the `k` and `u` entries no counter uses any more.

use thiserror::Error;

/// Prefix of counter keys.
pub const COUNTER: u8 = b'c';
/// Prefix of counter-key dictionary entries.
pub const KEY: u8 = b'k';
/// Prefix of URL dictionary entries.
pub const URL: u8 = b'u';
/// Prefix of small name dictionaries (tenants, sources, actions).
pub const NAME: u8 = b'n';
/// Name kind: tenant.
pub const TENANT_NAME: u8 = b't';
/// Name kind: source.
pub const SOURCE_NAME: u8 = b's';
/// Name kind: action type.
pub const ACTION_NAME: u8 = b'a';
/// Prefix of event-id digest partitions.
pub const SEEN: u8 = b's';
/// Prefix of collector high-water marks.
pub const HWM: u8 = b'h';
/// Key of the schema version.
pub const SCHEMA_KEY: &[u8] = b"mschema";
/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 2;

/// A stored key or value that this build cannot read.
#[derive(Debug, Error)]
#[error("corrupt {what} in the data directory: {detail}")]
pub struct CodecError {
    /// Which kind of record.
    pub what: &'static str,
    /// What is wrong with it.
    pub detail: String,
}

fn corrupt(what: &'static str, detail: impl Into<String>) -> CodecError {
    CodecError {
        what,
        detail: detail.into(),
    }
}

/// What one counter is kept per: a URL, as clicked in one tenant and reported by one source.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    /// The tenant the click belongs to (empty when the source has none).
    pub tenant: String,
    /// The source that reported it: `defender`, `proofpoint`, ...
    pub source: String,
    /// The clicked URL exactly as reported.
    pub url: String,
}

/// Counters of one [`CounterKey`] in one hour.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Counts {
    /// Clicks per `action_type`, in first-seen order.
    #[prost(message, repeated, tag = "1")]
    pub actions: Vec<ActionTally>,
    /// Clicks whose user went on past a warning.
    #[prost(uint64, tag = "2")]
    pub clicked_through: u64,
    /// Earliest click time seen, ms since the epoch.
    #[prost(int64, tag = "3")]
    pub first_ms: i64,
    /// Latest click time seen, ms since the epoch.
    #[prost(int64, tag = "4")]
    pub last_ms: i64,
}

/// Clicks with one `action_type`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ActionTally {
    /// The Defender-vocabulary action.
    #[prost(string, tag = "1")]
    pub action_type: String,
    /// How many clicks.
    #[prost(uint64, tag = "2")]
    pub count: u64,
}

impl Counts {
    /// Adds one click.
    pub fn add(&mut self, action_type: &str, clicked_through: bool, time_ms: i64) {
        match self
            .actions
            .iter_mut()
            .find(|a| a.action_type == action_type)
        {
            Some(a) => a.count += 1,
            None => self.actions.push(ActionTally {
                action_type: action_type.to_owned(),
                count: 1,
            }),
        }
        if clicked_through {
            self.clicked_through += 1;
        }
        if self.total() == 1 || time_ms < self.first_ms {
            self.first_ms = time_ms;
        }
        if self.total() == 1 || time_ms > self.last_ms {
            self.last_ms = time_ms;
        }
    }

    /// All clicks, whatever their action.
    pub fn total(&self) -> u64 {
        self.actions.iter().map(|a| a.count).sum()
    }
}

/// The sled key of one counter: hour and key id.
pub fn counter_key(hour: u32, key: u32) -> [u8; 9] {
    let mut out = [COUNTER; 9];
    out[1..5].copy_from_slice(&hour.to_be_bytes());
    out[5..].copy_from_slice(&key.to_be_bytes());
    out
}

/// Reads a key written by [`counter_key`].
///
/// # Errors
/// When the key is not a well-formed counter key.
pub fn decode_counter_key(key: &[u8]) -> Result<(u32, u32), CodecError> {
    if key.len() != 9 || key[0] != COUNTER {
        return Err(corrupt("counter key", format!("{} bytes", key.len())));
    }
    Ok((be32(&key[1..5]), be32(&key[5..9])))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The sled key of a dictionary entry: `prefix` (+ `kind`) + id.
pub fn dict_key(prefix: u8, kind: Option<u8>, id: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(6);
    out.push(prefix);
    out.extend(kind);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// Reads the id (and kind, for `n` entries) of a dictionary key.
///
/// # Errors
/// When the key is malformed.
pub fn decode_dict_key(key: &[u8]) -> Result<(Option<u8>, u32), CodecError> {
    match key {
        [NAME, kind, id @ ..] if id.len() == 4 => Ok((Some(*kind), be32(id))),
        [KEY | URL, id @ ..] if id.len() == 4 => Ok((None, be32(id))),
        _ => Err(corrupt("dictionary key", format!("{key:?}"))),
    }
}

/// The stored value of a counter key: tenant, source and URL ids.
pub fn key_value(parts: [u32; 3]) -> [u8; 12] {
    let mut out = [0u8; 12];
    for (i, p) in parts.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&p.to_be_bytes());
    }
    out
}

/// Reads a value written by [`key_value`].
///
/// # Errors
/// When it is not 12 bytes long.
pub fn decode_key_value(v: &[u8]) -> Result<[u32; 3], CodecError> {
    if v.len() != 12 {
        return Err(corrupt("counter-key entry", format!("{} bytes", v.len())));
    }
    Ok([be32(&v[0..4]), be32(&v[4..8]), be32(&v[8..12])])
}

/// Reads a stored name.
///
/// # Errors
/// When it is not UTF-8.
pub fn decode_name(what: &'static str, v: &[u8]) -> Result<Box<str>, CodecError> {
    std::str::from_utf8(v)
        .map(Into::into)
        .map_err(|e| corrupt(what, e.to_string()))
}

/// The first key of `prefix`'s partition for `hour`: keys of earlier hours sort before it.
pub fn hour_prefix(prefix: u8, hour: u32) -> [u8; 5] {
    let h = hour.to_be_bytes();
    [prefix, h[0], h[1], h[2], h[3]]
}

/// The sled key of one group commit's digests for one hour.
pub fn seen_key(hour: u32, commit: u64) -> [u8; 13] {
    let mut out = [0u8; 13];
    out[..5].copy_from_slice(&hour_prefix(SEEN, hour));
    out[5..].copy_from_slice(&commit.to_be_bytes());
    out
}

/// Reads a key written by [`seen_key`].
///
/// # Errors
/// When the key is not 13 bytes long.
pub fn decode_seen_key(key: &[u8]) -> Result<(u32, u64), CodecError> {
    if key.len() != 13 || key[0] != SEEN {
        return Err(corrupt("event-id key", format!("{} bytes", key.len())));
    }
    let hour = u32::from_be_bytes(key[1..5].try_into().expect("4 bytes"));
    let commit = u64::from_be_bytes(key[5..13].try_into().expect("8 bytes"));
    Ok((hour, commit))
}

/// The sled key of a collector's high-water mark.
pub fn hwm_key(collector_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + collector_id.len());
    out.push(HWM);
    out.extend_from_slice(collector_id.as_bytes());
    out
}

/// Reads a u64 stored big-endian.
///
/// # Errors
/// When the value is not 8 bytes long.
pub fn decode_u64(what: &'static str, value: &[u8]) -> Result<u64, CodecError> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| corrupt(what, format!("{} bytes, expected 8", value.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_keys_round_trip_and_sort_by_hour() {
        let bytes = counter_key(490_000, 77);
        assert_eq!(decode_counter_key(&bytes).unwrap(), (490_000, 77));
        assert!(
            counter_key(489_999, u32::MAX).as_slice() < hour_prefix(COUNTER, 490_000).as_slice()
        );
        assert!(bytes.as_slice() < hour_prefix(COUNTER, 490_001).as_slice());
        assert_eq!(decode_key_value(&key_value([1, 2, 3])).unwrap(), [1, 2, 3]);
        assert_eq!(
            decode_dict_key(&dict_key(NAME, Some(ACTION_NAME), 9)).unwrap(),
            (Some(ACTION_NAME), 9)
        );
        assert_eq!(decode_dict_key(&dict_key(URL, None, 5)).unwrap(), (None, 5));
    }

    #[test]
    fn counts_track_actions_and_times() {
        let mut c = Counts::default();
        c.add("ClickAllowed", true, 500);
        c.add("ClickBlocked", false, 100);
        c.add("ClickAllowed", false, 900);
        assert_eq!(c.total(), 3);
        assert_eq!(c.clicked_through, 1);
        assert_eq!((c.first_ms, c.last_ms), (100, 900));
        assert_eq!(c.actions[0].count, 2);
        assert_eq!(c.actions[1].action_type, "ClickBlocked");
    }

    #[test]
    fn truncated_keys_are_errors_not_panics() {
        assert!(decode_counter_key(b"c").is_err());
        assert!(decode_counter_key(b"c\0\0\0\x01\x00\x09a").is_err());
        assert!(decode_dict_key(b"u12").is_err());
        assert!(decode_key_value(b"12345").is_err());
        assert!(decode_name("url", &[0xff]).is_err());
        assert!(decode_seen_key(b"s123").is_err());
    }
}
