//! The aggregator's errors, and the one place that maps them to gRPC statuses.

use crate::query::QueryError;
use crate::store::StoreError;
use thiserror::Error;

/// Everything that can stop the aggregator or fail a request.
#[derive(Debug, Error)]
pub enum AggregatorError {
    /// The store could not be opened or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A query cannot be answered as asked.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be built from the descriptor set.
    #[error("server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server's configuration is unsafe or unusable (plaintext on a public address, a bad
    /// certificate, a malformed token digest).
    #[error("{0}")]
    Config(String),
    /// The writer's flush task failed unexpectedly.
    #[error("the writer failed: {0}")]
    Writer(String),
    /// The aggregator is shutting down or its writer stopped.
    #[error("the aggregator is shutting down")]
    ShuttingDown,
}

impl From<AggregatorError> for tonic::Status {
    fn from(e: AggregatorError) -> Self {
        match &e {
            AggregatorError::Query(_) => tonic::Status::invalid_argument(e.to_string()),
            AggregatorError::ShuttingDown => tonic::Status::unavailable(e.to_string()),
            AggregatorError::Store(_)
            | AggregatorError::Transport(_)
            | AggregatorError::Reflection(_)
            | AggregatorError::Config(_)
            | AggregatorError::Writer(_) => tonic::Status::internal(e.to_string()),
        }
    }
}
