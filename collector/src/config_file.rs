//! The collector's TOML config file (`--config collector.toml`): the aggregator, the spool, and
//! any number of `[[source]]` entries, files or pollers. Credentials are named by environment
//! variable or file, never written in the config. Flags and environment variables override it.
//! See `deploy/collector.toml` for every key, documented.

use crate::input::InputSpec;
use crate::poll::{mimecast::ApiConfig, proofpoint::TapConfig, PollerConfig};
use crate::secret::load;
use crate::sources::SourceKind;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration (like 500ms, 60s, 1h): {e}"
        ))
    })
}

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorFile {
    /// The aggregator's gRPC endpoint.
    pub aggregator: Option<String>,
    /// Spool directory.
    pub spool: Option<PathBuf>,
    /// Dead-letter file.
    pub dead_letter: Option<PathBuf>,
    /// `--once` deadline.
    #[serde(default, deserialize_with = "duration")]
    pub deadline: Option<Duration>,
    /// Events per batch.
    pub batch_events: Option<usize>,
    /// Partial-batch wait.
    #[serde(default, deserialize_with = "duration")]
    pub linger: Option<Duration>,
    /// Batches in flight.
    pub max_in_flight: Option<usize>,
    /// Spool size above which inputs pause.
    pub max_spool_events: Option<u64>,
    /// Longest record read.
    pub max_record_bytes: Option<u64>,
    /// Longest URL accepted.
    pub max_url_bytes: Option<usize>,
    /// How often followed files are scanned.
    #[serde(default, deserialize_with = "duration")]
    pub follow_interval: Option<Duration>,
    /// CA of the aggregator's certificate (PEM): connect over TLS.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub tls_key: Option<PathBuf>,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// File holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// Prometheus metrics address.
    pub metrics: Option<std::net::SocketAddr>,
    /// The sources.
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceEntry>,
}

/// One `[[source]]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourceEntry {
    /// Defender files: `path` is a file, directory or glob.
    Defender(FileEntry),
    /// Saved Proofpoint SIEM responses.
    Proofpoint(FileEntry),
    /// Saved Mimecast get-logs responses or NDJSON click logs.
    Mimecast(FileEntry),
    /// The Proofpoint TAP SIEM API.
    ProofpointTap(TapEntry),
    /// The Mimecast API 2.0.
    MimecastApi(MimecastEntry),
}

/// A file source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// A file, a directory or a glob.
    pub path: String,
}

/// A Proofpoint TAP poller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TapEntry {
    name: Option<String>,
    base_url: String,
    endpoint: Option<String>,
    principal_env: Option<String>,
    principal_file: Option<PathBuf>,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    window: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    overlap: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    start_from: Option<Duration>,
}

/// A Mimecast API poller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MimecastEntry {
    name: Option<String>,
    base_url: String,
    client_id_env: Option<String>,
    client_id_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    window: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    lag: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    start_from: Option<Duration>,
    page_size: Option<u32>,
}

/// What the sources of a file come to.
#[derive(Debug, Default)]
pub struct Sources {
    /// File inputs.
    pub inputs: Vec<InputSpec>,
    /// Pollers, credentials loaded.
    pub pollers: Vec<PollerConfig>,
}

impl CollectorFile {
    /// Reads and checks a config file.
    ///
    /// # Errors
    /// A message naming the file, the key and what is wrong with it.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// Parses config text.
    ///
    /// # Errors
    /// The TOML error, which names the line, the key and what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Resolves the sources, loading credentials through `lookup` (the environment).
    ///
    /// # Errors
    /// A message naming the source and the missing credential.
    pub fn sources(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Sources, String> {
        let mut out = Sources::default();
        for (i, s) in self.sources.iter().enumerate() {
            let at = |e: String| format!("source #{} ({}): {e}", i + 1, s.kind_name());
            match s {
                SourceEntry::Defender(f) => out.inputs.push(file(SourceKind::Defender, f)),
                SourceEntry::Proofpoint(f) => out.inputs.push(file(SourceKind::Proofpoint, f)),
                SourceEntry::Mimecast(f) => out.inputs.push(file(SourceKind::Mimecast, f)),
                SourceEntry::ProofpointTap(t) => {
                    let principal = load(
                        "principal",
                        t.principal_env.as_deref(),
                        t.principal_file.as_deref(),
                        lookup,
                    )
                    .map_err(at)?;
                    let secret = load(
                        "secret",
                        t.secret_env.as_deref(),
                        t.secret_file.as_deref(),
                        lookup,
                    )
                    .map_err(at)?;
                    let name = t.name.clone().unwrap_or_else(|| format!("tap{}", i + 1));
                    let mut c = TapConfig::new(&name, &t.base_url, principal, secret);
                    if let Some(e) = &t.endpoint {
                        if !["all", "clicks/blocked", "clicks/permitted"].contains(&e.as_str()) {
                            return Err(at(format!(
                                "endpoint {e:?} must be all, clicks/blocked or clicks/permitted"
                            )));
                        }
                        c.endpoint = e.clone();
                    }
                    if let Some(w) = t.window {
                        if w > Duration::from_secs(3600) {
                            return Err(at("window: the TAP API allows at most 1h".into()));
                        }
                        c.window = w;
                    }
                    c.interval = t.interval.unwrap_or(c.interval);
                    c.overlap = t.overlap.unwrap_or(c.overlap);
                    c.start_from = t.start_from.unwrap_or(c.start_from);
                    out.pollers.push(PollerConfig::ProofpointTap(c));
                }
                SourceEntry::MimecastApi(m) => {
                    let id = load(
                        "client_id",
                        m.client_id_env.as_deref(),
                        m.client_id_file.as_deref(),
                        lookup,
                    )
                    .map_err(at)?;
                    let secret = load(
                        "client_secret",
                        m.client_secret_env.as_deref(),
                        m.client_secret_file.as_deref(),
                        lookup,
                    )
                    .map_err(at)?;
                    let name = m
                        .name
                        .clone()
                        .unwrap_or_else(|| format!("mimecast{}", i + 1));
                    let mut c = ApiConfig::new(&name, &m.base_url, id, secret);
                    c.interval = m.interval.unwrap_or(c.interval);
                    c.window = m.window.unwrap_or(c.window);
                    c.lag = m.lag.unwrap_or(c.lag);
                    c.start_from = m.start_from.unwrap_or(c.start_from);
                    c.page_size = m.page_size.unwrap_or(c.page_size);
                    out.pollers.push(PollerConfig::MimecastApi(c));
                }
            }
        }
        Ok(out)
    }
}

impl SourceEntry {
    fn kind_name(&self) -> &'static str {
        match self {
            Self::Defender(_) => "defender",
            Self::Proofpoint(_) => "proofpoint",
            Self::Mimecast(_) => "mimecast",
            Self::ProofpointTap(_) => "proofpoint-tap",
            Self::MimecastApi(_) => "mimecast-api",
        }
    }
}

fn file(kind: SourceKind, f: &FileEntry) -> InputSpec {
    InputSpec {
        kind,
        pattern: f.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
aggregator = "http://10.0.0.5:7401"
spool = "/var/lib/clicktally/spool"
deadline = "2m"

[[source]]
kind = "defender"
path = "/srv/mdo/*.json"

[[source]]
kind = "proofpoint-tap"
name = "tap-eu"
base_url = "https://tap-api-v2.proofpoint.com"
principal_env = "PP_PRINCIPAL"
secret_env = "PP_SECRET"
overlap = "10m"

[[source]]
kind = "mimecast-api"
base_url = "https://api.services.mimecast.com"
client_id_env = "MC_ID"
client_secret_env = "MC_SECRET"
page_size = 500
"#;

    fn env(k: &str) -> Option<String> {
        ["PP_PRINCIPAL", "PP_SECRET", "MC_ID", "MC_SECRET"]
            .contains(&k)
            .then(|| format!("value-of-{k}"))
    }

    #[test]
    fn a_full_config_resolves_files_and_pollers() {
        let f = CollectorFile::parse(EXAMPLE).unwrap();
        assert_eq!(f.aggregator.as_deref(), Some("http://10.0.0.5:7401"));
        assert_eq!(f.deadline, Some(Duration::from_secs(120)));
        let s = f.sources(&env).unwrap();
        assert_eq!(
            s.inputs,
            vec![InputSpec {
                kind: SourceKind::Defender,
                pattern: "/srv/mdo/*.json".into()
            }]
        );
        match &s.pollers[0] {
            PollerConfig::ProofpointTap(c) => {
                assert_eq!(
                    (c.name.as_str(), c.overlap),
                    ("tap-eu", Duration::from_secs(600))
                );
                assert_eq!(c.secret.expose(), "value-of-PP_SECRET");
            }
            other => panic!("{other:?}"),
        }
        match &s.pollers[1] {
            PollerConfig::MimecastApi(c) => {
                assert_eq!((c.name.as_str(), c.page_size), ("mimecast3", 500))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !format!("{:?}", s.pollers).contains("value-of"),
            "secrets never print"
        );
    }

    #[test]
    fn errors_name_the_key_and_what_is_wrong() {
        let e = CollectorFile::parse("spool = 3").unwrap_err();
        assert!(e.contains("spool") && e.contains("invalid type"), "{e}");
        let e = CollectorFile::parse("[[source]]\nkind = \"defender\"\npth = \"/x\"").unwrap_err();
        assert!(e.contains("unknown field `pth`"), "{e}");
        let e = CollectorFile::parse("[[source]]\nkind = \"imap\"\npath = \"/x\"").unwrap_err();
        assert!(e.contains("unknown variant `imap`"), "{e}");
        let e = CollectorFile::parse("linger = \"soon\"").unwrap_err();
        assert!(e.contains("linger") && e.contains("not a duration"), "{e}");
        let f = CollectorFile::parse(EXAMPLE).unwrap();
        let e = f.sources(&|_| None).unwrap_err();
        assert_eq!(e, "source #2 (proofpoint-tap): principal_env: environment variable PP_PRINCIPAL is not set");
        let f = CollectorFile::parse("[[source]]\nkind = \"proofpoint-tap\"\nbase_url = \"x\"\nprincipal_env = \"PP_PRINCIPAL\"\nsecret_env = \"PP_SECRET\"\nwindow = \"2h\"").unwrap();
        assert!(f.sources(&env).unwrap_err().contains("at most 1h"));
    }
}

#[cfg(test)]
mod shipped_example {
    /// `[[source]]` or `key = value`: a commented-out setting rather than prose.
    fn is_setting(line: &str) -> bool {
        line.starts_with("[[")
            || line.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    }

    #[test]
    fn the_example_in_deploy_parses() {
        let text = include_str!("../../deploy/collector.toml");
        let f = super::CollectorFile::parse(text).unwrap();
        assert_eq!(f.sources.len(), 1);
        assert_eq!(f.batch_events, Some(1000));
        // The commented-out pollers parse too, once uncommented.
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|r| is_setting(r)).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = super::CollectorFile::parse(&uncommented).unwrap();
        assert_eq!(f.sources.len(), 5);
        let env = |_: &str| Some("x".to_string());
        assert_eq!(f.sources(&env).unwrap().pollers.len(), 2);
    }
}
