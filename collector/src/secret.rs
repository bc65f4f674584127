//! Credentials read from the environment or a file, never printed: `Debug` shows `***`.

use std::fmt;
use std::path::Path;

/// A credential. Its value is only reachable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads the secret named `key` from the environment variable `env` (through `lookup`, so
/// tests pass a map) or from the file `file` (trailing newline trimmed).
///
/// # Errors
/// A message naming the key and what is missing; never the value.
pub fn load(
    key: &str,
    env: Option<&str>,
    file: Option<&Path>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Secret, String> {
    match (env, file) {
        (Some(var), None) => lookup(var)
            .filter(|v| !v.is_empty())
            .map(Secret)
            .ok_or_else(|| format!("{key}_env: environment variable {var} is not set")),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|v| Secret(v.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| format!("{key}_file: cannot read {}: {e}", path.display()))
            .and_then(|s| {
                if s.0.is_empty() {
                    Err(format!("{key}_file: {} is empty", path.display()))
                } else {
                    Ok(s)
                }
            }),
        (Some(_), Some(_)) => Err(format!("give either {key}_env or {key}_file, not both")),
        (None, None) => Err(format!("{key}_env or {key}_file is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_env_or_file_and_never_print() {
        let lookup = |k: &str| (k == "PP_SECRET").then(|| "s3cr3t".to_string());
        let s = load("secret", Some("PP_SECRET"), None, &lookup).unwrap();
        assert_eq!(s.expose(), "s3cr3t");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let e = load("secret", Some("NOPE"), None, &lookup).unwrap_err();
        assert_eq!(e, "secret_env: environment variable NOPE is not set");
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "from-file\n").unwrap();
        assert_eq!(
            load("secret", None, Some(f.path()), &lookup)
                .unwrap()
                .expose(),
            "from-file"
        );
        assert!(load("secret", None, None, &lookup)
            .unwrap_err()
            .contains("required"));
    }
}
