use super::*;
use crate::clock::ManualClock;
use crate::store::ApplyLimits;
use clicktally_proto::v1::{ClickEvent, EventBatch};

const NOW: i64 = 1_796_126_400_000;

fn limits() -> ApplyLimits {
    ApplyLimits {
        max_url_bytes: 1000,
        retention_hours: 720,
    }
}

async fn add(store: &CounterStore, hub: &WatchHub, seq: u64, url: &str) {
    let batch = EventBatch {
        collector_id: "c".into(),
        first_sequence: seq,
        events: vec![ClickEvent {
            event_id: seq.to_string(),
            time_unix_ms: NOW - 1000,
            url: url.into(),
            action_type: "ClickBlocked".into(),
            source: "defender".into(),
            ..Default::default()
        }],
    };
    let staged = store.stage(&[batch], NOW, &limits());
    store.commit(staged.batch).await.unwrap();
    hub.touched();
}

fn fast(max_lag: Duration) -> WatchConfig {
    WatchConfig {
        tick: Duration::from_millis(5),
        min_interval: Duration::from_millis(10),
        max_lag,
    }
}

fn request() -> WatchRequest {
    WatchRequest {
        filter: Some(SummaryRequest::default()),
        interval_ms: 10,
        rolling_window_ms: None,
    }
}

#[tokio::test]
async fn a_lagging_watcher_gets_a_fresh_snapshot_when_it_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CounterStore::open(dir.path(), 1 << 20).unwrap());
    let stop = CancellationToken::new();
    let hub = WatchHub::start(
        store.clone(),
        Arc::new(ManualClock::new(NOW)),
        fast(Duration::from_secs(60)),
        Arc::default(),
        stop.clone(),
    );
    let filter = Filter::new(&SummaryRequest::default(), &[], None);
    let mut rx = hub.register(request(), filter).await.unwrap();
    for seq in 1..=20 {
        add(&store, &hub, seq, &format!("https://x.example/{seq}")).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    // Only what fits in the buffer was sent; the rest was skipped, not queued.
    let mut buffered = Vec::new();
    while let Ok(m) = rx.try_recv() {
        buffered.push(m.unwrap());
    }
    assert_eq!(buffered.len(), WATCHER_BUFFER);
    assert_eq!(buffered[0].kind(), Kind::Snapshot);
    // Caught up: the next message is a snapshot of all 20 rows.
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.kind(), Kind::Snapshot);
    assert_eq!(m.rows.len(), 20);
    assert_eq!(hub.watchers(), 1);
    stop.cancel();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), async {
            while rx.recv().await.is_some() {}
        })
        .await
        .is_ok(),
        "shutdown ends the stream"
    );
}

#[tokio::test]
async fn a_watcher_that_stays_full_is_dropped_with_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CounterStore::open(dir.path(), 1 << 20).unwrap());
    let stop = CancellationToken::new();
    let hub = WatchHub::start(
        store.clone(),
        Arc::new(ManualClock::new(NOW)),
        fast(Duration::from_millis(100)),
        Arc::default(),
        stop.clone(),
    );
    let mut rx = hub
        .register(
            request(),
            Filter::new(&SummaryRequest::default(), &[], None),
        )
        .await
        .unwrap();
    for seq in 1..=30 {
        add(&store, &hub, seq, &format!("https://x.example/{seq}")).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut last = None;
    while let Some(m) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
    {
        last = Some(m);
    }
    let status = last.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status
            .message()
            .starts_with("watch dropped: the client read nothing for"),
        "{status:?}"
    );
    assert_eq!(hub.watchers(), 0);
    stop.cancel();
}
