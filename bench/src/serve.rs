//! Legs against an aggregator served in this process (`clicktally_aggregator::run` on a
//! 127.0.0.1:0 listener): Summary latency (leg 4) and Watch latency (leg 5).

use crate::workload::{Rng, DAY_MS};
use crate::Res;
use clicktally_aggregator::{AggregatorConfig, AggregatorError};
use clicktally_proto::v1::click_ingest_client::ClickIngestClient;
use clicktally_proto::v1::click_query_client::ClickQueryClient;
use clicktally_proto::v1::{ClickEvent, EventBatch, SummaryRequest, WatchRequest};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An aggregator running in this process.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Seconds from start to its first answer (opening and loading the store).
    pub startup_secs: f64,
    stop: CancellationToken,
    task: JoinHandle<Result<(), AggregatorError>>,
}

impl Server {
    /// Serves the data directory `dir` with the default configuration, except that up to
    /// `max_watchers` Watch streams are allowed (the default allows 16 per token, and without
    /// tokens every client is the same anonymous token); returns once a Summary is answered.
    ///
    /// # Errors
    /// When it cannot start.
    pub async fn start(dir: &Path, max_watchers: usize) -> Res<Self> {
        let started = Instant::now();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let stop = CancellationToken::new();
        let s = stop.clone();
        let mut config = AggregatorConfig::new(dir);
        config.max_watchers_per_token = config.max_watchers_per_token.max(max_watchers);
        let task = tokio::spawn(clicktally_aggregator::run(listener, config, async move {
            s.cancelled().await
        }));
        loop {
            if task.is_finished() {
                return Err(match task.await? {
                    Err(e) => format!("the in-process aggregator failed: {e}"),
                    Ok(()) => "the in-process aggregator stopped at once".into(),
                }
                .into());
            }
            if let Ok(mut c) = ClickQueryClient::connect(endpoint.clone()).await {
                let req = SummaryRequest {
                    limit: 1,
                    ..Default::default()
                };
                if c.summary(req).await.is_ok() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            endpoint,
            startup_secs: started.elapsed().as_secs_f64(),
            stop,
            task,
        })
    }

    /// Stops it and waits until its store is closed.
    ///
    /// # Errors
    /// When it failed.
    pub async fn stop(self) -> Res<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Runs up to `n` 7-day top-100 Summaries one after another over one connection, stopping
/// early (after at least 3) once `budget` has passed; returns their latencies in ms and the
/// rows matched.
///
/// # Errors
/// When a query fails.
pub async fn summary_latencies(endpoint: &str, n: usize, budget: Duration) -> Res<(Vec<f64>, u64)> {
    let mut client = ClickQueryClient::connect(endpoint.to_owned()).await?;
    let mut out = Vec::with_capacity(n);
    let mut total_rows = 0;
    let until = Instant::now() + budget;
    for i in 0..n {
        if i >= 3 && Instant::now() > until {
            break;
        }
        let started = Instant::now();
        let resp = client
            .summary(SummaryRequest {
                limit: 100,
                ..Default::default()
            })
            .await?
            .into_inner();
        out.push(started.elapsed().as_secs_f64() * 1e3);
        total_rows = resp.total_rows;
        if resp.rows.len() != 100.min(resp.total_rows as usize) {
            return Err(format!("Summary returned {} rows", resp.rows.len()).into());
        }
    }
    Ok((out, total_rows))
}

/// One run of the Watch leg.
#[derive(Debug, Clone, Default)]
pub struct WatchRun {
    /// Latency of every (event, watcher) pair seen, ms.
    pub latencies_ms: Vec<f64>,
    /// Events pushed.
    pub pushed: usize,
    /// (event, watcher) pairs never seen before the run ended.
    pub missed: usize,
}

/// The interval watchers ask for, ms.
pub const WATCH_INTERVAL_MS: u32 = 1_000;

/// Opens `watchers` Watch streams (7-day rolling window, top 100 by LastSeen, so that a new
/// click always enters the rows), each on its own connection as consoles are; then pushes one
/// click on a fresh URL every 100-175 ms for `secs` over one Push stream (as a collector does)
/// and times, for every watcher, from handing the click to the stream to the watcher receiving
/// a row for its URL.
///
/// # Errors
/// When a stream cannot be opened or the push is refused.
pub async fn watch_run(endpoint: &str, watchers: usize, secs: f64, tag: &str) -> Res<WatchRun> {
    let prefix = format!("https://watch-probe.example/{tag}/");
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut tasks = Vec::with_capacity(watchers);
    let mut ready = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let mut client = ClickQueryClient::connect(endpoint.to_owned())
            .await?
            .max_decoding_message_size(64 * 1024 * 1024);
        let mut stream = client
            .watch(WatchRequest {
                filter: Some(SummaryRequest {
                    limit: 100,
                    order_by: "LastSeen".into(),
                    ..Default::default()
                }),
                interval_ms: WATCH_INTERVAL_MS,
                rolling_window_ms: Some(7 * DAY_MS as u64),
            })
            .await?
            .into_inner();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        ready.push(ready_rx);
        let (sent, latencies, stop, prefix) = (
            sent.clone(),
            latencies.clone(),
            stop.clone(),
            prefix.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _client = client;
            let mut ready_tx = Some(ready_tx);
            let mut got: HashSet<String> = HashSet::new();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = stream.message() => m,
                };
                let Ok(Some(update)) = msg else { break };
                let now = Instant::now();
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
                for row in update.rows {
                    if row.key.starts_with(&prefix) && !got.contains(&row.key) {
                        let at = sent
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get(&row.key)
                            .copied();
                        if let Some(at) = at {
                            latencies
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(now.duration_since(at).as_secs_f64() * 1e3);
                        }
                        got.insert(row.key);
                    }
                }
            }
        }));
    }
    for r in ready {
        tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .map_err(|_| "a watcher got no snapshot within 30 s")?
            .map_err(|_| "a watcher's stream ended before its snapshot")?;
    }

    let mut ingest = ClickIngestClient::connect(endpoint.to_owned()).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(64);
    let mut acks = ingest
        .push(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let drain = tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(Some(_)) = acks.message().await {
            n += 1;
        }
        n
    });
    let mut rng = Rng::new(tag.len() as u64 ^ 0x77A7C4);
    let collector_id = format!("bench-watch-{tag}");
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut seq = 1u64;
    while Instant::now() < until {
        let url = format!("{prefix}{seq}");
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let event = ClickEvent {
            event_id: format!("watch-{tag}-{seq}"),
            time_unix_ms: now_ms,
            url: url.clone(),
            action_type: "ClickAllowed".into(),
            source_action: "ClickAllowed".into(),
            source: "defender".into(),
            tenant: "t1".into(),
            ..Default::default()
        };
        sent.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(url, Instant::now());
        tx.send(EventBatch {
            collector_id: collector_id.clone(),
            first_sequence: seq,
            events: vec![event],
        })
        .await
        .map_err(|_| "the push stream closed")?;
        seq += 1;
        tokio::time::sleep(Duration::from_millis(100 + rng.below(76))).await;
    }
    // Long enough for the last click to reach every watcher at its next interval.
    tokio::time::sleep(Duration::from_millis(
        u64::from(WATCH_INTERVAL_MS) * 2 + 500,
    ))
    .await;
    drop(tx);
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let acked = drain.await?;
    let pushed = (seq - 1) as usize;
    if acked != pushed as u64 {
        return Err(format!("{pushed} clicks pushed, {acked} acknowledged").into());
    }
    let latencies_ms = std::mem::take(&mut *latencies.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(WatchRun {
        missed: (pushed * watchers).saturating_sub(latencies_ms.len()),
        latencies_ms,
        pushed,
    })
}
