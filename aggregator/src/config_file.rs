//! The aggregator's TOML config file (`--config aggregator.toml`): where it listens and keeps
//! its data, retention, limits, and named exclusion lists. Flags and environment variables
//! override it. See `deploy/aggregator.toml` for every key, documented.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("{s:?} is not a duration (like 30d, 12h, 10m): {e}"))
    })
}

/// The file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorFile {
    /// gRPC listen address.
    pub listen: Option<SocketAddr>,
    /// sled data directory.
    pub data: Option<PathBuf>,
    /// How long counters are kept.
    #[serde(default, deserialize_with = "duration")]
    pub retention: Option<Duration>,
    /// How often expired counters are deleted.
    #[serde(default, deserialize_with = "duration")]
    pub retention_interval: Option<Duration>,
    /// sled page cache, MiB.
    pub cache_mib: Option<u64>,
    /// Journal size, KiB, past which a snapshot of the counters is written.
    pub snapshot_kib: Option<u64>,
    /// Longest URL counted.
    pub max_url_bytes: Option<usize>,
    /// Largest gRPC message.
    pub max_message_bytes: Option<usize>,
    /// Most events per pushed batch.
    pub max_batch_events: Option<usize>,
    /// Named lists of hosts hidden from queries (a host and its subdomains).
    #[serde(default)]
    pub exclusions: BTreeMap<String, Vec<String>>,
    /// Server certificate chain (PEM) for TLS.
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA whose certificates clients must present (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Allow plaintext on a non-loopback address.
    pub insecure: Option<bool>,
    /// Prometheus metrics address.
    pub metrics: Option<SocketAddr>,
    /// Watch streams one token may hold.
    pub max_watchers_per_token: Option<usize>,
    /// Deadline for unary requests.
    #[serde(default, deserialize_with = "duration")]
    pub request_timeout: Option<Duration>,
    /// Requests served at once per connection.
    pub concurrency_per_connection: Option<usize>,
    /// Bearer tokens, hashed; none turns authentication off.
    #[serde(default, rename = "token")]
    pub tokens: Vec<crate::auth::TokenEntry>,
}

impl AggregatorFile {
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
        let f: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, hosts) in &f.exclusions {
            if let Some(bad) = hosts
                .iter()
                .find(|h| h.trim().is_empty() || h.contains(char::is_whitespace))
            {
                return Err(format!("exclusions.{name}: {bad:?} is not a host"));
            }
        }
        Ok(f)
    }

    /// Every excluded host, from every list.
    pub fn excluded_hosts(&self) -> Vec<String> {
        self.exclusions.values().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_with_the_seeds_five_scenarios() {
        let f = AggregatorFile::parse(include_str!("../../deploy/aggregator.toml")).unwrap();
        assert_eq!(f.retention, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(f.exclusions.len(), 5);
        assert_eq!(f.tokens.len(), 0, "the example's tokens are commented out");
        let hosts = f.excluded_hosts();
        for h in [
            "support.ticket.system.com",
            "artifactory.internal.com",
            "nexus.internal.com",
            "training.microsoft.com",
            "security.google.com",
            "diagtool.enterprise.com",
            "support.diagtool.com",
            "ci.pipeline.enterprise.com",
            "jenkins.enterprise.com",
        ] {
            assert!(hosts.contains(&h.to_string()), "{h}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = AggregatorFile::parse("retention = \"a month\"").unwrap_err();
        assert!(
            e.contains("retention") && e.contains("not a duration"),
            "{e}"
        );
        let e = AggregatorFile::parse("[exclusions]\nci = [\"jenkins example.com\"]").unwrap_err();
        assert_eq!(e, "exclusions.ci: \"jenkins example.com\" is not a host");
        let e = AggregatorFile::parse("listn = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.contains("unknown field `listn`"), "{e}");
    }
}
