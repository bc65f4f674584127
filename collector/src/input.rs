//! File inputs: `KIND:PATH` where PATH is a file, a directory or a glob, read as JSON Lines
//! (one record or message per line, CRLF allowed) or, when the file is one pretty-printed JSON
//! document, as a whole.

use crate::sources::SourceKind;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One `--input KIND:PATH` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// Which vendor's format.
    pub kind: SourceKind,
    /// A file, a directory (its files, sorted) or a glob.
    pub pattern: String,
}

impl FromStr for InputSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, pattern) = s.split_once(':').ok_or_else(|| {
            format!("input {s:?} must be KIND:PATH, e.g. defender:/var/spool/mdo/*.json")
        })?;
        if pattern.is_empty() {
            return Err(format!("input {s:?} has no path"));
        }
        Ok(Self {
            kind: kind.parse()?,
            pattern: pattern.to_owned(),
        })
    }
}

impl InputSpec {
    /// The files this input names now, sorted.
    ///
    /// # Errors
    /// When a plain path does not exist, or a glob is malformed.
    pub fn files(&self) -> Result<Vec<PathBuf>, String> {
        let path = Path::new(&self.pattern);
        let mut files = if path.is_dir() {
            std::fs::read_dir(path)
                .map_err(|e| format!("input {}:{}: {e}", self.kind, self.pattern))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && !is_hidden(p))
                .collect()
        } else if self.pattern.contains(['*', '?', '[']) {
            glob::glob(&self.pattern)
                .map_err(|e| format!("input {}:{}: bad glob: {e}", self.kind, self.pattern))?
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect()
        } else if path.is_file() {
            vec![path.to_owned()]
        } else {
            return Err(format!(
                "input {}:{}: no such file or directory",
                self.kind, self.pattern
            ));
        };
        files.sort();
        Ok(files)
    }
}

fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// How a file's bytes are split into JSON values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One JSON value per line.
    Lines,
    /// The whole file is one JSON value (a pretty-printed response or message).
    Document,
}

/// Decides the layout from the file's first non-empty line: a complete JSON value means JSON
/// Lines; an opening brace or bracket alone (pretty-printed) means one document.
pub fn detect_layout(first_line: &[u8]) -> Layout {
    let t = first_line.trim_ascii();
    if serde_json::from_slice::<serde::de::IgnoredAny>(t).is_ok() {
        return Layout::Lines;
    }
    let opens_document = matches!(t, b"{" | b"[") || t.ends_with(b"[") || t.ends_with(b"{");
    if opens_document {
        Layout::Document
    } else {
        Layout::Lines
    }
}

/// A unit read from a file: one line, or the whole document.
#[derive(Debug)]
pub struct Chunk {
    /// 1-based line number where it starts.
    pub line: u64,
    /// Its bytes, without the line ending (empty when `oversize`).
    pub bytes: Vec<u8>,
    /// Its full length when it was longer than the limit (and so not kept).
    pub oversize: Option<u64>,
    /// Byte offset just past it: where to resume.
    pub end_offset: u64,
}

/// Reads chunks from a file, from a saved offset.
pub struct ChunkReader {
    reader: BufReader<File>,
    layout: Layout,
    offset: u64,
    line: u64,
    max_bytes: u64,
    done: bool,
    /// Leave a last line without its newline for later: the file is still being written.
    follow: bool,
}

impl ChunkReader {
    /// Opens `path` at `offset` (a checkpoint); chunks longer than `max_bytes` are reported,
    /// not kept.
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn open(path: &Path, offset: u64, line: u64, max_bytes: u64) -> io::Result<Self> {
        let mut file = File::open(path)?;
        let layout = if offset == 0 {
            let mut first = Vec::new();
            let mut r = BufReader::new(&mut file);
            loop {
                first.clear();
                let n = r.by_ref().take(max_bytes).read_until(b'\n', &mut first)?;
                if n == 0 || !first.trim_ascii().is_empty() {
                    break;
                }
            }
            detect_layout(&first)
        } else {
            Layout::Lines
        };
        file.seek(SeekFrom::Start(offset))?;
        Ok(Self {
            reader: BufReader::with_capacity(256 * 1024, file),
            layout,
            offset,
            line,
            max_bytes,
            done: false,
            follow: false,
        })
    }

    /// Reads as a file that is still growing: a last line without a newline is left unread
    /// (its offset is not passed) until the writer finishes it.
    pub fn following(mut self) -> Self {
        self.follow = true;
        self
    }

    /// The layout detected for the file.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The next non-empty chunk, or `None` at the end of the file.
    ///
    /// # Errors
    /// When reading fails.
    pub fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        if self.layout == Layout::Document {
            self.done = true;
            let mut bytes = Vec::new();
            let n = self
                .reader
                .by_ref()
                .take(self.max_bytes + 1)
                .read_to_end(&mut bytes)? as u64;
            let mut total = self.offset + n;
            let oversize = if n > self.max_bytes {
                let rest = io::copy(&mut self.reader, &mut io::sink())?;
                total += rest;
                bytes = Vec::new();
                Some(n + rest)
            } else {
                None
            };
            self.offset = total;
            return Ok(Some(Chunk {
                line: self.line + 1,
                bytes,
                oversize,
                end_offset: total,
            }));
        }
        loop {
            let start_line = self.line + 1;
            let mut bytes = Vec::new();
            let mut len = 0u64;
            let mut oversize = false;
            let mut newline = false;
            loop {
                let buf = self.reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                let (take, found) = match memchr_newline(buf) {
                    Some(i) => (i + 1, true),
                    None => (buf.len(), false),
                };
                len += take as u64;
                if !oversize && len <= self.max_bytes + 2 {
                    bytes.extend_from_slice(&buf[..take]);
                } else {
                    oversize = true;
                    bytes = Vec::new();
                }
                self.reader.consume(take);
                if found {
                    newline = true;
                    break;
                }
            }
            if len == 0 || (self.follow && !newline) {
                self.done = true;
                return Ok(None);
            }
            self.offset += len;
            self.line += 1;
            while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                bytes.pop();
            }
            let content_len = if oversize {
                len - u64::from(newline)
            } else {
                bytes.len() as u64
            };
            if !oversize && bytes.trim_ascii().is_empty() {
                continue;
            }
            let oversize = (oversize || content_len > self.max_bytes).then_some(content_len);
            if oversize.is_some() {
                bytes = Vec::new();
            }
            return Ok(Some(Chunk {
                line: start_line,
                bytes,
                oversize,
                end_offset: self.offset,
            }));
        }
    }

    /// Lines read so far (for checkpoints).
    pub fn line(&self) -> u64 {
        self.line
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// Parses `KIND:PATH` for clap.
///
/// # Errors
/// When the spec is malformed.
pub fn parse_input(s: &str) -> Result<InputSpec, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    fn chunks(content: &[u8], max: u64) -> Vec<Chunk> {
        let f = write(content);
        let mut r = ChunkReader::open(f.path(), 0, 0, max).unwrap();
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            out.push(c);
        }
        out
    }

    #[test]
    fn json_lines_with_crlf_blank_lines_and_no_final_newline() {
        let c = chunks(b"{\"a\":1}\r\n\r\n{\"a\":2}\n{\"a\":3}", 1024);
        let lines: Vec<_> = c
            .iter()
            .map(|c| (c.line, c.bytes.clone(), c.end_offset))
            .collect();
        assert_eq!(
            lines,
            vec![
                (1, b"{\"a\":1}".to_vec(), 9),
                (3, b"{\"a\":2}".to_vec(), 19),
                (4, b"{\"a\":3}".to_vec(), 26),
            ]
        );
    }

    #[test]
    fn oversize_lines_are_reported_not_kept() {
        let mut content = b"{\"a\":1}\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', 5000));
        content.extend_from_slice(b"\n{\"a\":2}\n");
        let c = chunks(&content, 100);
        assert_eq!(c.len(), 3);
        assert_eq!(c[1].oversize, Some(5000));
        assert!(c[1].bytes.is_empty());
        assert_eq!(c[2].bytes, b"{\"a\":2}");
        assert_eq!(c[2].line, 3);
    }

    #[test]
    fn pretty_printed_documents_are_read_whole() {
        let c = chunks(b"{\n  \"records\": [\n  {\"a\": 1}\n  ]\n}\n", 1024);
        assert_eq!(c.len(), 1);
        assert!(c[0].bytes.starts_with(b"{\n  \"records\""));
        assert_eq!(c[0].end_offset, 34);
    }

    #[test]
    fn a_followed_file_leaves_an_unfinished_last_line() {
        let f = write(b"{\"a\":1}\n{\"a\":");
        let mut r = ChunkReader::open(f.path(), 0, 0, 1024).unwrap().following();
        let c = r.next_chunk().unwrap().unwrap();
        assert_eq!((c.bytes.as_slice(), c.end_offset), (&b"{\"a\":1}"[..], 8));
        assert!(r.next_chunk().unwrap().is_none());
    }

    #[test]
    fn reading_resumes_from_an_offset() {
        let f = write(b"{\"a\":1}\n{\"a\":2}\n");
        let mut r = ChunkReader::open(f.path(), 8, 1, 1024).unwrap();
        let c = r.next_chunk().unwrap().unwrap();
        assert_eq!((c.line, c.bytes.as_slice()), (2, &b"{\"a\":2}"[..]));
        assert!(r.next_chunk().unwrap().is_none());
    }

    #[test]
    fn input_specs_name_kind_and_path() {
        let spec: InputSpec = "defender:/tmp/x/*.json".parse().unwrap();
        assert_eq!(spec.kind, SourceKind::Defender);
        assert_eq!(spec.pattern, "/tmp/x/*.json");
        assert!("nope"
            .parse::<InputSpec>()
            .unwrap_err()
            .contains("KIND:PATH"));
        assert!("foo:/x"
            .parse::<InputSpec>()
            .unwrap_err()
            .contains("unknown source"));
        let missing: InputSpec = "defender:/no/such/file".parse().unwrap();
        assert!(missing.files().unwrap_err().contains("no such file"));
    }
}
