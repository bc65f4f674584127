//! Bearer tokens with roles and tenants. Tokens are configured as SHA-256 digests (never in
//! clear), each with a role (`ingest`, `query`, `admin`) and optionally a tenant. A
//! tenant-scoped token only ever sees (and only pushes) its tenant's clicks. Checked by an
//! interceptor in front of each service, comparing digests in constant time.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Push click events (collectors).
    Ingest,
    /// Summary, Watch, UrlDetail (consoles, other services).
    Query,
    /// Both.
    Admin,
}

/// Which service a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `ClickIngest`.
    Ingest,
    /// `ClickQuery`.
    Query,
}

impl Role {
    fn allows(self, service: Service) -> bool {
        matches!(
            (self, service),
            (Role::Admin, _) | (Role::Ingest, Service::Ingest) | (Role::Query, Service::Query)
        )
    }
}

/// One configured token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Names the caller in logs and metrics (never the token).
    pub name: String,
    /// Hex SHA-256 of the token (`clicktally hash-token` prints it).
    pub sha256: String,
    /// What it may do.
    pub role: Role,
    /// The only tenant it sees; none for every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Who made a request, put in the request's extensions by the interceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its tenant scope.
    pub tenant: Option<String>,
}

/// The configured tokens; empty means authentication is off.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Arc<Vec<([u8; 32], Caller)>>,
    /// Requests refused (unknown, missing or wrong-role tokens).
    pub failures: Arc<AtomicU64>,
}

/// The hex SHA-256 of a token, as it is configured.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// Tokens from configuration.
    ///
    /// # Errors
    /// When a digest is not 64 hex characters.
    pub fn new(entries: &[TokenEntry]) -> Result<Self, String> {
        let mut out = Vec::new();
        for e in entries {
            let digest: [u8; 32] = hex::decode(e.sha256.trim())
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| format!("token {:?}: sha256 must be 64 hex characters", e.name))?;
            out.push((
                digest,
                Caller {
                    name: e.name.clone(),
                    role: e.role,
                    tenant: e.tenant.clone().filter(|t| !t.is_empty()),
                },
            ));
        }
        Ok(Self {
            entries: Arc::new(out),
            failures: Arc::default(),
        })
    }

    /// True when tokens are required.
    pub fn enabled(&self) -> bool {
        !self.entries.is_empty()
    }

    /// Checks the bearer token of a request for `service`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a missing or unknown token, `PERMISSION_DENIED` for a token whose
    /// role does not allow the service.
    pub fn check(
        &self,
        metadata: &MetadataMap,
        service: Service,
    ) -> Result<Option<Caller>, Status> {
        if !self.enabled() {
            return Ok(None);
        }
        let fail = |s: Status| {
            self.failures.fetch_add(1, Ordering::Relaxed);
            Err(s)
        };
        let Some(token) = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
        else {
            return fail(Status::unauthenticated(
                "a bearer token is required (--token or CLICKTALLY_TOKEN)",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Compare with every entry, so the time taken does not say which one matched.
        let mut found: Option<&Caller> = None;
        for (d, caller) in self.entries.iter() {
            if constant_time_eq(d, &digest) {
                found = Some(caller);
            }
        }
        match found {
            None => fail(Status::unauthenticated("unknown token")),
            Some(c) if !c.role.allows(service) => fail(Status::permission_denied(format!(
                "token {:?} has role {:?}, which may not use this service",
                c.name, c.role
            ))),
            Some(c) => Ok(Some(c.clone())),
        }
    }

    /// An interceptor for `service` that puts the [`Caller`] in the request's extensions.
    pub fn interceptor(
        &self,
        service: Service,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        let tokens = self.clone();
        move |mut req: Request<()>| {
            if let Some(caller) = tokens.check(req.metadata(), service)? {
                req.extensions_mut().insert(caller);
            }
            Ok(req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&[
            TokenEntry {
                name: "col".into(),
                sha256: hash_token("ingest-secret"),
                role: Role::Ingest,
                tenant: None,
            },
            TokenEntry {
                name: "soc-a".into(),
                sha256: hash_token("query-a"),
                role: Role::Query,
                tenant: Some("a".into()),
            },
            TokenEntry {
                name: "ops".into(),
                sha256: hash_token("admin"),
                role: Role::Admin,
                tenant: None,
            },
        ])
        .unwrap()
    }

    fn md(token: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(t) = token {
            m.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        m
    }

    #[test]
    fn roles_tenants_and_refusals() {
        let t = tokens();
        assert_eq!(
            t.check(&md(Some("query-a")), Service::Query)
                .unwrap()
                .unwrap()
                .tenant
                .as_deref(),
            Some("a")
        );
        assert_eq!(
            t.check(&md(Some("ingest-secret")), Service::Query)
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            t.check(&md(Some("query-a")), Service::Ingest)
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert!(t.check(&md(Some("admin")), Service::Ingest).is_ok());
        assert_eq!(
            t.check(&md(Some("nope")), Service::Query)
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            t.check(&md(None), Service::Query).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(t.failures.load(Ordering::Relaxed), 4);
        assert!(
            Tokens::default()
                .check(&md(None), Service::Query)
                .unwrap()
                .is_none(),
            "no tokens: open"
        );
        assert!(Tokens::new(&[TokenEntry {
            name: "x".into(),
            sha256: "abc".into(),
            role: Role::Query,
            tenant: None
        }])
        .is_err());
    }

    #[test]
    fn refusals_never_echo_the_token() {
        let e = tokens()
            .check(&md(Some("a-secret-value")), Service::Query)
            .unwrap_err();
        assert!(!e.message().contains("a-secret-value"));
        assert_eq!(hash_token("x\n"), hash_token("x"));
    }
}
