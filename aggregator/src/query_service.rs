//! `ClickQuery`: Summary and UrlDetail over the in-memory counters; Watch through the
//! [`WatchHub`].

use crate::auth::Caller;
use crate::clock::Clock;
use crate::error::AggregatorError;
use crate::metrics::Metrics;
use crate::query::{summarize, url_detail, Filter};
use crate::store::CounterStore;
use crate::watch::WatchHub;
use clicktally_proto::v1::click_query_server::ClickQuery;
use clicktally_proto::v1::{
    SummaryRequest, SummaryResponse, UrlDetailRequest, UrlDetailResponse, WatchRequest, WatchUpdate,
};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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
    /// Watch streams open per token name.
    watchers: Arc<Mutex<HashMap<String, usize>>>,
    /// Watch streams one token may hold.
    max_watchers_per_token: usize,
    /// Counts limit hits.
    metrics: Arc<Metrics>,
}

/// The caller's tenant scope, if its token has one.
fn tenant_of<T>(req: &Request<T>) -> Option<String> {
    req.extensions()
        .get::<Caller>()
        .and_then(|c| c.tenant.clone())
}

/// A Watch stream that gives its slot back to its token when the client goes away.
struct CountedStream {
    inner: ReceiverStream<Result<WatchUpdate, Status>>,
    slots: Arc<Mutex<HashMap<String, usize>>>,
    token: String,
}

impl Stream for CountedStream {
    type Item = Result<WatchUpdate, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// Gives one watch slot of `token` back.
fn release(slots: &Mutex<HashMap<String, usize>>, token: &str) {
    let mut slots = slots.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = slots.get_mut(token) {
        *n = n.saturating_sub(1);
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        release(&self.slots, &self.token);
    }
}

impl QueryService {
    /// A query service over `store`.
    pub fn new(
        store: Arc<CounterStore>,
        exclusions: Vec<String>,
        clock: Arc<dyn Clock>,
        hub: WatchHub,
        max_watchers_per_token: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            exclusions: Arc::new(exclusions),
            clock,
            hub,
            watchers: Arc::default(),
            max_watchers_per_token,
            metrics,
        }
    }

    /// Answers one Summary request.
    ///
    /// # Errors
    /// When the request cannot be answered as asked.
    pub fn summary(
        &self,
        req: &SummaryRequest,
        tenant: Option<String>,
    ) -> Result<SummaryResponse, AggregatorError> {
        let filter = Filter::new(req, &self.exclusions, tenant);
        let now = self.clock.now_ms();
        self.store.advance_window(now);
        let state = self.store.read();
        Ok(summarize(&state, req, &filter, now)?)
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
        let tenant = tenant_of(&request);
        let req = request.into_inner();
        let this = self.clone();
        let resp = tokio::task::spawn_blocking(move || this.summary(&req, tenant))
            .await
            .map_err(|e| Status::internal(format!("summary task failed: {e}")))??;
        Ok(Response::new(resp))
    }

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let tenant = tenant_of(&request);
        let token = request
            .extensions()
            .get::<Caller>()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let req = request.into_inner();
        let filter_req = req.filter.clone().unwrap_or_default();
        crate::query::Column::parse(&filter_req.order_by).map_err(AggregatorError::from)?;
        let filter = Filter::new(&filter_req, &self.exclusions, tenant);
        {
            let mut slots = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            let n = slots.entry(token.clone()).or_default();
            if *n >= self.max_watchers_per_token {
                self.metrics.limit_hits.fetch_add(1, Relaxed);
                return Err(Status::resource_exhausted(format!(
                    "this token already holds {} watch streams (the limit)",
                    self.max_watchers_per_token
                )));
            }
            *n += 1;
        }
        let rx = match self.hub.register(req, filter).await {
            Ok(rx) => rx,
            Err(status) => {
                release(&self.watchers, &token);
                return Err(status);
            }
        };
        let stream = CountedStream {
            inner: ReceiverStream::new(rx),
            slots: self.watchers.clone(),
            token,
        };
        Ok(Response::new(Box::pin(stream)))
    }

    #[instrument(skip(self, request))]
    async fn url_detail(
        &self,
        request: Request<UrlDetailRequest>,
    ) -> Result<Response<UrlDetailResponse>, Status> {
        let tenant = tenant_of(&request);
        let req = request.into_inner();
        if req.url.is_empty() {
            return Err(Status::invalid_argument("url is required"));
        }
        let state = self.store.read();
        let resp = url_detail(&state, &req, tenant.as_deref(), self.clock.now_ms())
            .map_err(AggregatorError::from)?;
        Ok(Response::new(resp))
    }
}
