//! `ClickQuery`: Summary over the in-memory counters (Watch comes with its own issue).

use crate::clock::Clock;
use crate::error::AggregatorError;
use crate::query::{summarize, Filter};
use crate::store::CounterStore;
use clicktally_proto::v1::click_query_server::ClickQuery;
use clicktally_proto::v1::{SummaryRequest, SummaryResponse, WatchRequest, WatchUpdate};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::instrument;

/// Answers queries from the store's in-memory mirror.
#[derive(Clone)]
pub struct QueryService {
    /// The counters.
    store: Arc<CounterStore>,
    /// Configured exclusion rules (normalised hosts).
    exclusions: Arc<Vec<String>>,
    /// Where "now" comes from, for default windows.
    clock: Arc<dyn Clock>,
}

impl QueryService {
    /// A query service over `store`.
    pub fn new(store: Arc<CounterStore>, exclusions: Vec<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            exclusions: Arc::new(exclusions),
            clock,
        }
    }

    /// Answers one Summary request.
    ///
    /// # Errors
    /// When the request cannot be answered as asked.
    pub fn summary(&self, req: &SummaryRequest) -> Result<SummaryResponse, AggregatorError> {
        let filter = Filter::new(req, &self.exclusions, None);
        let state = self.store.read();
        Ok(summarize(&state, req, &filter, self.clock.now_ms())?)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl ClickQuery for QueryService {
    type WatchStream = WatchStream;

    #[instrument(skip(self, request))]
    async fn summary(
        &self,
        request: Request<SummaryRequest>,
    ) -> Result<Response<SummaryResponse>, Status> {
        let req = request.into_inner();
        let this = self.clone();
        let resp = tokio::task::spawn_blocking(move || this.summary(&req))
            .await
            .map_err(|e| Status::internal(format!("summary task failed: {e}")))??;
        Ok(Response::new(resp))
    }

    async fn watch(
        &self,
        _request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("Watch is not built yet"))
    }
}
