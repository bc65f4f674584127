//! The byte layout of everything the aggregator keeps in sled.
//!
//! Layout: one tree, so that a group commit is one atomic `apply_batch`.
//! - `l` + sequence (u64 BE) -> one part of the counters' journal ([`crate::journal`]): the
//!   changes of a group commit (new names and keys, absolute tallies) or a retention cutoff.
//! - `p` + snapshot generation (u64 BE) + part number (u32 BE) -> one part of a snapshot of
//!   every counter, in the journal's format.
//! - `msnapshot` -> generation (u64 BE) + last journal sequence it includes (u64 BE): the
//!   snapshot in force; journal parts after that sequence are replayed on top of it.
//! - `s` + hour (u32 BE) + commit number (u64 BE) -> concatenated 16-byte event-id digests first
//!   seen in that hour by that group commit.
//! - `h` + collector id -> u64 BE: the collector's high-water mark (last applied spool sequence).
//! - `m` + name -> metadata (the schema version).

use thiserror::Error;

/// Prefix of journal parts.
pub const LOG: u8 = b'l';
/// Prefix of snapshot parts.
pub const SNAP: u8 = b'p';
/// Key of the snapshot in force.
pub const SNAP_POINTER: &[u8] = b"msnapshot";
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
pub const SCHEMA_VERSION: u32 = 3;

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

/// The sled key of journal part `seq`.
pub fn log_key(seq: u64) -> [u8; 9] {
    let mut out = [LOG; 9];
    out[1..].copy_from_slice(&seq.to_be_bytes());
    out
}

/// The sled key of part `part` of snapshot `generation`.
pub fn snap_key(generation: u64, part: u32) -> [u8; 13] {
    let mut out = [SNAP; 13];
    out[1..9].copy_from_slice(&generation.to_be_bytes());
    out[9..].copy_from_slice(&part.to_be_bytes());
    out
}

/// Reads the sequence of a journal key, or the generation of a snapshot key.
///
/// # Errors
/// When the key is malformed.
pub fn decode_seq(key: &[u8]) -> Result<u64, CodecError> {
    key.get(1..9)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("journal key", format!("{} bytes", key.len())))
}

/// The snapshot pointer's value.
pub fn snap_pointer(generation: u64, through: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&generation.to_be_bytes());
    out[8..].copy_from_slice(&through.to_be_bytes());
    out
}

/// Reads [`snap_pointer`].
///
/// # Errors
/// When it is not 16 bytes long.
pub fn decode_snap_pointer(v: &[u8]) -> Result<(u64, u64), CodecError> {
    if v.len() != 16 {
        return Err(corrupt("snapshot pointer", format!("{} bytes", v.len())));
    }
    Ok((
        decode_u64("snapshot pointer", &v[..8])?,
        decode_u64("snapshot pointer", &v[8..])?,
    ))
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
    fn journal_and_snapshot_keys_sort_by_sequence() {
        assert!(log_key(255) < log_key(256));
        assert_eq!(decode_seq(&log_key(77)).unwrap(), 77);
        assert!(snap_key(1, u32::MAX) < snap_key(2, 0));
        assert_eq!(decode_seq(&snap_key(9, 3)).unwrap(), 9);
        assert_eq!(
            decode_snap_pointer(&snap_pointer(4, 1 << 40)).unwrap(),
            (4, 1 << 40)
        );
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
        assert!(decode_seq(b"l123").is_err());
        assert!(decode_snap_pointer(b"0123456789").is_err());
        assert!(decode_seen_key(b"s123").is_err());
    }
}
