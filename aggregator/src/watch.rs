//! `WatchHub`: live summaries for consoles. The Watch handler only registers a bounded channel
//! with the hub and returns its receiving end; the hub owns every watcher, wakes on a short tick,
//! and for each watcher that is due (at most one message per interval) and whose rows may have
//! changed (a commit since its last look, or its rolling window moved to another hour),
//! recomputes its rows and sends the ones that changed, in full.
//!
//! Ingestion never waits on a watcher: the writer only bumps a counter, and the hub sends with
//! `try_reserve`. A watcher whose buffer is full is skipped and gets a fresh snapshot when it has
//! room again; one that stays full for `max_lag` is dropped with a clear status.

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::query::{hours_of_window, summarize, Filter};
use crate::store::CounterStore;
use clicktally_proto::v1::watch_update::Kind;
use clicktally_proto::v1::{SummaryRequest, SummaryRow, WatchRequest, WatchUpdate};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info};

/// Messages buffered per watcher before it counts as lagging.
pub const WATCHER_BUFFER: usize = 4;

/// How the hub runs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// How often the hub looks for due watchers.
    pub tick: Duration,
    /// Shortest interval a client may ask for.
    pub min_interval: Duration,
    /// A watcher whose buffer stays full this long is dropped.
    pub max_lag: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(50),
            min_interval: Duration::from_millis(100),
            max_lag: Duration::from_secs(30),
        }
    }
}

/// Rows computed once per tick per distinct request (encoded), with their window.
type Computed = HashMap<Vec<u8>, Result<(Vec<SummaryRow>, i64, i64), Status>>;

/// The sending end of one Watch stream.
pub type UpdateSender = mpsc::Sender<Result<WatchUpdate, Status>>;

/// A Watch stream as the hub keeps it.
struct Watcher {
    req: WatchRequest,
    filter: Filter,
    interval: Duration,
    tx: UpdateSender,
    /// Rows as last sent, by key.
    sent: HashMap<String, SummaryRow>,
    next_due: Instant,
    /// Commit generation at its last computation.
    seen_generation: u64,
    /// Window hours at its last computation.
    seen_hours: (i64, i64),
    /// Since when its buffer has been full.
    lagging_since: Option<Instant>,
    /// It missed updates: its next message is a snapshot.
    needs_snapshot: bool,
}

/// Registers watchers and tells the hub that counts changed.
#[derive(Clone)]
pub struct WatchHub {
    register: mpsc::Sender<(WatchRequest, Filter, UpdateSender)>,
    generation: Arc<AtomicU64>,
    watchers: Arc<AtomicU64>,
}

impl WatchHub {
    /// Starts the hub task; it ends when `shutdown` fires, ending every stream.
    pub fn start(
        store: Arc<CounterStore>,
        clock: Arc<dyn Clock>,
        config: WatchConfig,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        let (register, rx) = mpsc::channel(64);
        let hub = Self {
            register,
            generation: Arc::new(AtomicU64::new(0)),
            watchers: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(run(
            store,
            clock,
            config,
            rx,
            hub.clone(),
            metrics,
            shutdown,
        ));
        hub
    }

    /// Notes that a group commit changed counts. Never blocks.
    pub fn touched(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Watchers connected now.
    pub fn watchers(&self) -> u64 {
        self.watchers.load(Ordering::Relaxed)
    }

    /// Adds a watcher; its stream gets a snapshot first.
    ///
    /// # Errors
    /// When the hub has stopped (shutdown).
    pub async fn register(
        &self,
        req: WatchRequest,
        filter: Filter,
    ) -> Result<mpsc::Receiver<Result<WatchUpdate, Status>>, Status> {
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        self.register
            .send((req, filter, tx))
            .await
            .map_err(|_| Status::unavailable("the aggregator is shutting down"))?;
        Ok(rx)
    }
}

/// The effective Summary request of a watcher at `now_ms`.
fn request_at(req: &WatchRequest, now_ms: i64) -> SummaryRequest {
    let mut r = req.filter.clone().unwrap_or_default();
    r.page_token.clear();
    if r.since_unix_ms.is_none() && r.until_unix_ms.is_none() {
        if let Some(w) = req.rolling_window_ms {
            r.until_unix_ms = Some(now_ms);
            r.since_unix_ms = Some(now_ms - w as i64);
        }
    }
    r
}

async fn run(
    store: Arc<CounterStore>,
    clock: Arc<dyn Clock>,
    config: WatchConfig,
    mut register: mpsc::Receiver<(WatchRequest, Filter, UpdateSender)>,
    hub: WatchHub,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut watchers: Vec<Watcher> = Vec::new();
    let mut tick = tokio::time::interval(config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            reg = register.recv() => {
                let Some((req, filter, tx)) = reg else { break };
                let interval = match req.interval_ms {
                    0 => Duration::from_secs(1),
                    ms => Duration::from_millis(u64::from(ms)).max(config.min_interval),
                };
                watchers.push(Watcher {
                    req,
                    filter,
                    interval,
                    tx,
                    sent: HashMap::new(),
                    next_due: Instant::now(),
                    seen_generation: u64::MAX,
                    seen_hours: (0, 0),
                    lagging_since: None,
                    needs_snapshot: true,
                });
                info!(watchers = watchers.len(), "watcher connected");
            }
            _ = tick.tick() => {
                let generation = hub.generation.load(Ordering::Relaxed);
                let now = Instant::now();
                let now_ms = clock.now_ms();
                if !watchers.is_empty() {
                    store.advance_window(now_ms);
                }
                // Watchers with the same request share one computation per tick.
                let mut computed = Computed::new();
                watchers.retain_mut(|w| step(w, &store, now, now_ms, generation, &config, &metrics, &mut computed));
            }
        }
        hub.watchers.store(watchers.len() as u64, Ordering::Relaxed);
    }
    info!(
        watchers = watchers.len(),
        "watch hub stopped; ending every stream"
    );
}

/// Brings one watcher up to date; false when it is to be dropped.
#[allow(clippy::too_many_arguments)]
fn step(
    w: &mut Watcher,
    store: &CounterStore,
    now: Instant,
    now_ms: i64,
    generation: u64,
    config: &WatchConfig,
    metrics: &Metrics,
    computed: &mut Computed,
) -> bool {
    if w.tx.is_closed() {
        debug!("watcher went away");
        return false;
    }
    if now < w.next_due {
        return true;
    }
    let req = request_at(&w.req, now_ms);
    let hours = hours_of_window(
        req.since_unix_ms
            .unwrap_or(now_ms - crate::query::DEFAULT_WINDOW_MS),
        req.until_unix_ms.unwrap_or(now_ms),
    );
    let stale = w.seen_generation != generation || w.seen_hours != hours;
    if !stale && !w.needs_snapshot {
        return true;
    }
    let permit = match w.tx.try_reserve() {
        Ok(p) => p,
        Err(mpsc::error::TrySendError::Closed(_)) => return false,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let since = *w.lagging_since.get_or_insert(now);
            w.needs_snapshot = true;
            if now.duration_since(since) >= config.max_lag {
                let tx = w.tx.clone();
                let lag = config.max_lag;
                tokio::spawn(async move {
                    let status = Status::resource_exhausted(format!(
                        "watch dropped: the client read nothing for {lag:?}; reconnect to get a fresh snapshot"
                    ));
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), tx.send(Err(status))).await;
                });
                metrics.watch_dropped.fetch_add(1, Ordering::Relaxed);
                info!("dropped a watcher that fell behind");
                return false;
            }
            return true;
        }
    };
    w.lagging_since = None;
    let key = prost::Message::encode_to_vec(&req);
    let result = computed
        .entry(key)
        .or_insert_with(|| {
            let state = store.read();
            summarize(&state, &req, &w.filter, now_ms)
                .map(|r| (r.rows, r.since_unix_ms, r.until_unix_ms))
                .map_err(|e| Status::invalid_argument(e.to_string()))
        })
        .clone();
    let (rows, since, until) = match result {
        Ok(r) => r,
        Err(status) => {
            permit.send(Err(status));
            return false;
        }
    };
    w.seen_generation = generation;
    w.seen_hours = hours;
    w.next_due = now + w.interval;
    let update = if w.needs_snapshot {
        w.needs_snapshot = false;
        w.sent = rows.iter().map(|r| (r.key.clone(), r.clone())).collect();
        WatchUpdate {
            kind: Kind::Snapshot as i32,
            rows,
            removed: Vec::new(),
            since_unix_ms: since,
            until_unix_ms: until,
        }
    } else {
        let mut changed = Vec::new();
        let mut current: HashMap<String, SummaryRow> = HashMap::with_capacity(rows.len());
        for r in rows {
            if w.sent.get(&r.key) != Some(&r) {
                changed.push(r.clone());
            }
            current.insert(r.key.clone(), r);
        }
        let mut removed: Vec<String> = w
            .sent
            .keys()
            .filter(|k| !current.contains_key(*k))
            .cloned()
            .collect();
        removed.sort();
        w.sent = current;
        if changed.is_empty() && removed.is_empty() {
            return true; // nothing to say; the permit is released unused
        }
        WatchUpdate {
            kind: Kind::Update as i32,
            rows: changed,
            removed,
            since_unix_ms: since,
            until_unix_ms: until,
        }
    };
    permit.send(Ok(update));
    true
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
