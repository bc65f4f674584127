//! `ClickQuery`: Summary and UrlDetail over the in-memory counters; Watch through the
//! [`WatchHub`].

use crate::clock::Clock;
use crate::error::AggregatorError;
use crate::query::{summarize, url_detail, Filter};
use crate::store::CounterStore;
use crate::watch::WatchHub;
use clicktally_proto::v1::click_query_server::ClickQuery;
use clicktally_proto::v1::{
    SummaryRequest, SummaryResponse, UrlDetailRequest, UrlDetailResponse, WatchRequest, WatchUpdate,
};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
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
    /// Live watchers.
    hub: WatchHub,
}

impl QueryService {
    /// A query service over `store`.
    pub fn new(
        store: Arc<CounterStore>,
        exclusions: Vec<String>,
        clock: Arc<dyn Clock>,
        hub: WatchHub,
    ) -> Self {
        Self {
            store,
            exclusions: Arc::new(exclusions),
            clock,
            hub,
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
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        let filter_req = req.filter.clone().unwrap_or_default();
        crate::query::Column::parse(&filter_req.order_by).map_err(AggregatorError::from)?;
        let filter = Filter::new(&filter_req, &self.exclusions, None);
        let rx = self.hub.register(req, filter).await?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip(self, request))]
    async fn url_detail(
        &self,
        request: Request<UrlDetailRequest>,
    ) -> Result<Response<UrlDetailResponse>, Status> {
        let req = request.into_inner();
        if req.url.is_empty() {
            return Err(Status::invalid_argument("url is required"));
        }
        let state = self.store.read();
        let resp =
            url_detail(&state, &req, None, self.clock.now_ms()).map_err(AggregatorError::from)?;
        Ok(Response::new(resp))
    }
}
