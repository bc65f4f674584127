//! The `clicktally.v1` protocol: the canonical [`v1::ClickEvent`], the collector's
//! `ClickIngest.Push` stream and the `ClickQuery` service, generated from
//! `proto/clicktally/v1/clicktally.proto`.
#![forbid(unsafe_code)]

/// Generated messages, clients and servers of package `clicktally.v1`.
#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("clicktally.v1");
}

/// Encoded `FileDescriptorSet` of the package, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/clicktally_descriptor.bin"));

/// What every client of the API attaches: a bearer token on each request, and TLS settings.
pub mod client {
    use tonic::metadata::{Ascii, MetadataValue};
    use tonic::service::Interceptor;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    use tonic::{Request, Status};

    /// Adds `authorization: Bearer <token>` to every request (nothing when there is no token).
    #[derive(Clone, Default)]
    pub struct BearerToken(Option<MetadataValue<Ascii>>);

    impl std::fmt::Debug for BearerToken {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(if self.0.is_some() {
                "BearerToken(***)"
            } else {
                "BearerToken(none)"
            })
        }
    }

    impl BearerToken {
        /// A token to present.
        ///
        /// # Errors
        /// When the token has characters a header cannot carry.
        pub fn new(token: Option<&str>) -> Result<Self, String> {
            match token.map(str::trim).filter(|t| !t.is_empty()) {
                None => Ok(Self(None)),
                Some(t) => format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map(|mut v| {
                        // Sensitive: HPACK never indexes it, and Debug output shows no value.
                        v.set_sensitive(true);
                        Self(Some(v))
                    })
                    .map_err(|_| {
                        "the token has characters that cannot be sent in a header".to_string()
                    }),
            }
        }
    }

    impl Interceptor for BearerToken {
        fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
            if let Some(v) = &self.0 {
                req.metadata_mut().insert("authorization", v.clone());
            }
            Ok(req)
        }
    }

    /// PEM material for a TLS client.
    #[derive(Debug, Clone, Default)]
    pub struct ClientTls {
        /// CA that signed the server's certificate (default: the system's roots are not used;
        /// give the CA of your deployment).
        pub ca_pem: Option<Vec<u8>>,
        /// Client certificate and key, for mutual TLS.
        pub identity: Option<(Vec<u8>, Vec<u8>)>,
    }

    /// An endpoint for `uri`, with TLS when `tls` is given.
    ///
    /// # Errors
    /// When the URI or the TLS settings are unusable.
    pub fn endpoint(uri: &str, tls: Option<&ClientTls>) -> Result<Endpoint, String> {
        let mut e = Endpoint::from_shared(uri.to_owned())
            .map_err(|e| format!("{uri:?} is not a valid URI: {e}"))?;
        if let Some(tls) = tls {
            let mut c = ClientTlsConfig::new();
            if let Some(ca) = &tls.ca_pem {
                c = c.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                c = c.identity(Identity::from_pem(cert, key));
            }
            e = e
                .tls_config(c)
                .map_err(|e| format!("TLS settings for {uri}: {e}"))?;
        }
        Ok(e)
    }
}
