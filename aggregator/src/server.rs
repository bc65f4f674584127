//! `run`: the aggregator as one future, over a listener the caller bound.

use crate::auth::{Service, Tokens};
use crate::config::AggregatorConfig;
use crate::error::AggregatorError;
use crate::hosts::normalise_rule;
use crate::ingest::{run_writer, IngestService};
use crate::metrics::{self, Gauges, Metrics};
use crate::query_service::QueryService;
use crate::store::CounterStore;
use crate::watch::{WatchConfig, WatchHub};
use clicktally_proto::v1::click_ingest_server::ClickIngestServer;
use clicktally_proto::v1::click_query_server::ClickQueryServer;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tracing::info;

/// Opens the store in `config.data_dir`, serves ClickIngest, ClickQuery, health and reflection
/// on `listener` until `shutdown` completes, then drains in-flight batches and returns.
///
/// # Errors
/// When the data directory cannot be opened or written, the configuration is unsafe, or the
/// server fails.
pub async fn run(
    listener: TcpListener,
    config: AggregatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    run_with_metrics(listener, None, config, shutdown).await
}

/// [`run`], also serving Prometheus metrics on `metrics_listener`.
///
/// # Errors
/// As [`run`].
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: AggregatorConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AggregatorError> {
    let local = listener
        .local_addr()
        .map_err(|e| AggregatorError::Config(e.to_string()))?;
    if config.tls.is_none() && !config.insecure && !local.ip().is_loopback() {
        return Err(AggregatorError::Config(format!(
            "refusing to serve plaintext on {local}, which is not a loopback address: give --tls-cert and --tls-key, or --insecure to accept the risk"
        )));
    }
    let tokens = Tokens::new(&config.tokens).map_err(AggregatorError::Config)?;
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
    let metrics = Arc::new(Metrics::default());

    let hub = WatchHub::start(
        store.clone(),
        config.clock.clone(),
        WatchConfig::default(),
        metrics.clone(),
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
        metrics.clone(),
    ));

    if let Some(l) = metrics_listener {
        let (store, hub, tokens, metrics, stop) = (
            store.clone(),
            hub.clone(),
            tokens.clone(),
            metrics.clone(),
            token.clone(),
        );
        let render = Arc::new(move || {
            metrics.render(Gauges {
                watchers: hub.watchers(),
                auth_failures: tokens.failures.load(Relaxed),
                disk_bytes: store.size_on_disk(),
                event_ids: store.read().seen.len() as u64,
            })
        });
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(l, render, async move { stop.cancelled().await }).await {
                tracing::error!(cause = %e, "metrics endpoint failed");
            }
        });
    }

    let ingest = IngestService::new(
        commands_tx,
        config.max_batch_events,
        token.clone(),
        metrics.clone(),
    );
    let exclusions = config
        .exclusions
        .iter()
        .map(|r| normalise_rule(r))
        .collect();
    let query = QueryService::new(
        store.clone(),
        exclusions,
        config.clock.clone(),
        hub,
        config.max_watchers_per_token,
        metrics.clone(),
    );

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
    info!(%local, data = %config.data_dir.display(), tls = config.tls.is_some(), tokens = tokens.enabled(), "aggregator serving");

    let mut builder = tonic::transport::Server::builder()
        // A unary request (Summary, UrlDetail) that takes longer than this fails with
        // DEADLINE_EXCEEDED instead of holding a connection; streams are not cut.
        .timeout(config.request_timeout)
        // One connection cannot monopolise the server: past this, its requests wait.
        .concurrency_limit_per_connection(config.concurrency_per_connection)
        // Refuse work (UNAVAILABLE) rather than queue without bound when overloaded.
        .load_shed(true);
    if let Some(tls) = &config.tls {
        let mut t =
            ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
        if let Some(ca) = &tls.client_ca_pem {
            t = t.client_ca_root(Certificate::from_pem(ca));
        }
        builder = builder.tls_config(t)?;
    }
    let server_token = token.clone();
    let served = builder
        .add_service(health)
        .add_service(reflection)
        .add_service(InterceptedService::new(
            ClickIngestServer::new(ingest).max_decoding_message_size(config.max_message_bytes),
            tokens.interceptor(Service::Ingest),
        ))
        .add_service(InterceptedService::new(
            ClickQueryServer::new(query).max_decoding_message_size(1024 * 1024),
            tokens.interceptor(Service::Query),
        ))
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
