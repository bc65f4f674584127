//! The dead-letter file: every record that could not be read, with where it came from and why,
//! one JSON object per line, so nothing is silently lost and an operator can fix and replay it.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Longest raw record kept in a dead letter; longer ones are cut (the reason says how long it was).
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// One unreadable record.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    /// When it was dead-lettered (RFC 3339).
    pub time: String,
    /// Which source parser refused it.
    pub source: String,
    /// The file (or poller) it came from.
    pub input: String,
    /// 1-based line number in the file (0 for non-file inputs).
    pub line: u64,
    /// Why it was refused.
    pub reason: String,
    /// Its text (lossy UTF-8, cut at [`MAX_RAW_BYTES`]).
    pub record: String,
}

impl DeadLetter {
    /// A dead letter for `raw`, stamped now.
    pub fn new(source: &str, input: &str, line: u64, reason: String, raw: &[u8]) -> Self {
        let cut = &raw[..raw.len().min(MAX_RAW_BYTES)];
        Self {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            source: source.to_owned(),
            input: input.to_owned(),
            line,
            reason,
            record: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

/// Appends dead letters to a file, synced before the input's checkpoint moves past them.
/// Shared by every input and poller.
pub struct DeadLetterFile {
    /// Where they go.
    path: PathBuf,
    /// The open file, in append mode.
    file: Mutex<File>,
}

impl DeadLetterFile {
    /// Opens (or creates) the file for appending.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// Writes `letters` and syncs them to disk.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn append(&self, letters: &[DeadLetter]) -> io::Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for l in letters {
            serde_json::to_writer(&mut buf, l).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(&buf)?;
        file.sync_data()
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
