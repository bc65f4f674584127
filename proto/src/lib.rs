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
