//! `run`: the aggregator as one future, over a listener the caller bound.

use crate::config::AggregatorConfig;
use crate::error::AggregatorError;
use crate::hosts::normalise_rule;
use crate::ingest::{run_writer, IngestService};
use crate::query_service::QueryService;
use crate::store::CounterStore;
use crate::watch::{WatchConfig, WatchHub};
use clicktally_proto::v1::click_ingest_server::ClickIngestServer;
use clicktally_proto::v1::click_query_server::ClickQueryServer;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Opens the store in `config.data_dir`, serves ClickIngest, ClickQuery, health and reflection
/// on `listener` until `shutdown` completes, then drains in-flight batches and returns.
///
/// # Errors
/// When the data directory cannot be opened or written, or the server fails.
pub async fn run(
    listener: TcpListener,
    config: AggregatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    let dir = config.data_dir.clone();
    let cache = config.cache_capacity;
    let store = tokio::task::spawn_blocking(move || CounterStore::open(&dir, cache))
        .await
        .map_err(|_| AggregatorError::ShuttingDown)??;
    let store = Arc::new(store);
    let token = CancellationToken::new();
    {
        let token = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            token.cancel();
        });
    }

    let hub = WatchHub::start(
        store.clone(),
        config.clock.clone(),
        WatchConfig::default(),
        token.clone(),
    );
    let (commands_tx, commands_rx) = mpsc::channel(256);
    let notify = hub.clone();
    let mut writer = tokio::spawn(run_writer(
        store.clone(),
        config.clone(),
        commands_rx,
        token.clone(),
        Some(Box::new(move |_touched| notify.touched())),
    ));

    let ingest = IngestService::new(commands_tx, config.max_batch_events, token.clone());
    let exclusions = config
        .exclusions
        .iter()
        .map(|r| normalise_rule(r))
        .collect();
    let query = QueryService::new(store.clone(), exclusions, config.clock.clone(), hub);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ClickIngestServer<IngestService>>()
        .await;
    health_reporter
        .set_serving::<ClickQueryServer<QueryService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(clicktally_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    // Accepted sockets get TCP_NODELAY: without it small acks wait on Nagle and throughput
    // falls several times (see DESIGN.md's measured limits).
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        conn.and_then(|s| {
            s.set_nodelay(true)?;
            Ok(s)
        })
    });
    let local = config.data_dir.display().to_string();
    info!(data = %local, "aggregator serving");

    let server_token = token.clone();
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(
            ClickIngestServer::new(ingest).max_decoding_message_size(config.max_message_bytes),
        )
        .add_service(ClickQueryServer::new(query).max_decoding_message_size(1024 * 1024))
        .serve_with_incoming_shutdown(incoming, async move { server_token.cancelled().await });

    // The writer stopping (a disk error) stops the server too.
    let writer_result = tokio::select! {
        served = served => {
            token.cancel();
            served?;
            (&mut writer).await
        }
        written = &mut writer => {
            token.cancel();
            written
        }
    };
    health_reporter
        .set_not_serving::<ClickIngestServer<IngestService>>()
        .await;
    writer_result.map_err(|_| AggregatorError::ShuttingDown)??;
    info!("aggregator stopped");
    Ok(())
}
