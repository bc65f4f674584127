//! What a source parser makes of one record: a click, a record that is not a click, or a
//! record that cannot be read (dead-lettered with its reason).

use clicktally_proto::v1::ClickEvent;

/// The outcome of reading one vendor record.
// Clicks are the common case: boxing them would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A click, normalised.
    Click(ClickEvent),
    /// A valid record that is not a click (another category, a message, a delivery-time scan).
    Skipped(&'static str),
    /// A record that cannot be read: why, and its raw text where it differs from the line's.
    Invalid {
        /// What is wrong, precisely.
        reason: String,
        /// The record's own text, when it is one of several in a larger document.
        raw: Option<String>,
    },
}

impl Record {
    /// An invalid record whose raw text is the whole input chunk.
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self::Invalid {
            reason: reason.into(),
            raw: None,
        }
    }
}

/// A content hash of a record's bytes, as a 32-character hex `event_id` (xxh3-128): the same
/// bytes delivered twice get the same id, and the aggregator counts them once.
pub fn content_id(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

/// Limits every parser applies to the fields it reads.
#[derive(Debug, Clone, Copy)]
pub struct FieldLimits {
    /// Longest URL accepted, in bytes.
    pub max_url_bytes: usize,
    /// The current time (ms since the epoch), for refusing implausible click times.
    pub now_ms: i64,
}

impl FieldLimits {
    /// Checks a URL against the limits.
    ///
    /// # Errors
    /// When it is empty or too long.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        if url.trim().is_empty() {
            return Err("empty url".into());
        }
        if url.len() > self.max_url_bytes {
            return Err(format!(
                "url of {} bytes exceeds the {}-byte limit",
                url.len(),
                self.max_url_bytes
            ));
        }
        Ok(())
    }
}
