//! One module per vendor: a parser from bytes to [`Record`]s with precise errors.

use crate::record::{FieldLimits, Record};
use std::fmt;
use std::str::FromStr;

pub mod defender;
pub mod mimecast;
pub mod proofpoint;

/// The kinds of input the collector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// Microsoft Defender for Office 365 `UrlClickEvents`.
    Defender,
    /// Proofpoint TAP SIEM API responses (`/v2/siem/...`, `format=json`).
    Proofpoint,
    /// Mimecast URL Protect click logs (`/api/ttp/url/get-logs`).
    Mimecast,
}

impl SourceKind {
    /// The name used in `--input KIND:PATH` and on events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Defender => defender::SOURCE,
            Self::Proofpoint => proofpoint::SOURCE,
            Self::Mimecast => mimecast::SOURCE,
        }
    }

    /// Parses one JSON value (a line or a whole document) of this source's records.
    pub fn parse(self, chunk: &[u8], limits: &FieldLimits, out: &mut Vec<Record>) {
        match self {
            Self::Defender => defender::parse(chunk, limits, out),
            Self::Proofpoint => proofpoint::parse(chunk, limits, out),
            Self::Mimecast => mimecast::parse(chunk, limits, out),
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SourceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "defender" | "mdo" | "urlclickevents" => Ok(Self::Defender),
            "proofpoint" => Ok(Self::Proofpoint),
            "mimecast" => Ok(Self::Mimecast),
            other => Err(format!(
                "unknown source {other:?}; known sources: defender, proofpoint, mimecast"
            )),
        }
    }
}
