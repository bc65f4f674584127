use super::*;
use crate::clock::HOUR_MS;
use clicktally_proto::v1::ClickEvent;

const NOW: i64 = 1_796_126_400_000; // 2026-12-01T12:00:00Z

fn limits() -> ApplyLimits {
    ApplyLimits {
        max_url_bytes: 100,
        retention_hours: 24 * 30,
    }
}

fn ev(id: &str, url: &str, action: &str, t: i64) -> ClickEvent {
    ClickEvent {
        event_id: id.into(),
        time_unix_ms: t,
        url: url.into(),
        action_type: action.into(),
        source: "defender".into(),
        ..Default::default()
    }
}

fn batch(collector: &str, first: u64, events: Vec<ClickEvent>) -> EventBatch {
    EventBatch {
        collector_id: collector.into(),
        first_sequence: first,
        events,
    }
}

async fn apply(store: &CounterStore, batches: &[EventBatch]) -> Vec<PushAck> {
    let staged = store.stage(batches, NOW, &limits());
    store.commit(staged.batch).await.unwrap();
    staged.acks
}

fn total(store: &CounterStore, url: &str) -> u64 {
    store
        .read()
        .entries()
        .filter(|(_, k, _)| k.url == url)
        .map(|(_, _, c)| c.total())
        .sum()
}

#[tokio::test]
async fn replayed_and_overlapping_batches_apply_only_new_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
    let t = NOW - HOUR_MS;
    let acks = apply(
        &store,
        &[batch(
            "c1",
            1,
            vec![
                ev("1", "u", "ClickAllowed", t),
                ev("2", "u", "ClickAllowed", t),
            ],
        )],
    )
    .await;
    assert_eq!((acks[0].applied, acks[0].last_sequence), (2, 2));
    // The same batch again (a lost ack), then one overlapping it by one event.
    let acks = apply(
        &store,
        &[
            batch(
                "c1",
                1,
                vec![
                    ev("1", "u", "ClickAllowed", t),
                    ev("2", "u", "ClickAllowed", t),
                ],
            ),
            batch(
                "c1",
                2,
                vec![
                    ev("2", "u", "ClickAllowed", t),
                    ev("3", "u", "ClickAllowed", t),
                ],
            ),
        ],
    )
    .await;
    assert_eq!((acks[0].applied, acks[0].replayed), (0, 2));
    assert_eq!((acks[1].applied, acks[1].replayed), (1, 1));
    assert_eq!(total(&store, "u"), 3);
    // Another collector's sequences are its own; its event ids are still deduplicated.
    let acks = apply(
        &store,
        &[batch(
            "c2",
            1,
            vec![
                ev("3", "u", "ClickAllowed", t),
                ev("4", "u", "ClickAllowed", t),
            ],
        )],
    )
    .await;
    assert_eq!((acks[0].applied, acks[0].duplicates), (1, 1));
    assert_eq!(total(&store, "u"), 4);
}

#[tokio::test]
async fn marks_digests_and_counts_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = NOW - 2 * HOUR_MS;
    {
        let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
        apply(
            &store,
            &[batch(
                "c1",
                1,
                vec![
                    ev("a", "u", "ClickBlocked", t),
                    ev("b", "v", "ClickAllowed", t + 1),
                ],
            )],
        )
        .await;
    }
    let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(store.read().hwm["c1"], 2);
    assert_eq!(store.read().seen.len(), 2);
    let acks = apply(
        &store,
        &[
            batch(
                "c1",
                2,
                vec![
                    ev("b", "v", "ClickAllowed", t + 1),
                    ev("x", "u", "ClickBlocked", t),
                ],
            ),
            batch("c9", 1, vec![ev("a", "u", "ClickBlocked", t)]),
        ],
    )
    .await;
    assert_eq!((acks[0].replayed, acks[0].applied), (1, 1));
    assert_eq!(acks[1].duplicates, 1);
    let state = store.read();
    let key = state.key_id("", "defender", "u").unwrap();
    let u = state.counts((t / HOUR_MS) as u32, key).unwrap();
    assert_eq!(u.actions[0].action_type, "ClickBlocked");
    assert_eq!(u.actions[0].count, 2);
}

#[tokio::test]
async fn expired_invalid_and_empty_id_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
    let old = NOW - 31 * 24 * HOUR_MS;
    let acks = apply(
        &store,
        &[batch(
            "c1",
            1,
            vec![
                ev("1", "u", "ClickAllowed", old),
                ev("2", "", "ClickAllowed", NOW),
                ev("3", &"x".repeat(101), "ClickAllowed", NOW),
                ev("", "u", "ClickAllowed", NOW),
                ev("", "u", "ClickAllowed", NOW),
            ],
        )],
    )
    .await;
    assert_eq!(acks[0].expired, 1);
    assert_eq!(acks[0].rejected, 2);
    assert_eq!(
        acks[0].rejections,
        vec![
            "event has an empty url",
            "url of 101 bytes exceeds the 100-byte limit"
        ]
    );
    // Without an id an event cannot be deduplicated: both count.
    assert_eq!(acks[0].applied, 2);
}

#[tokio::test]
async fn retention_deletes_old_hours_in_memory_and_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let old = NOW - 20 * 24 * HOUR_MS;
    {
        let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
        apply(
            &store,
            &[batch(
                "c1",
                1,
                vec![
                    ev("1", "old", "ClickAllowed", old),
                    ev("2", "new", "ClickAllowed", NOW),
                ],
            )],
        )
        .await;
        let removed = store.expire_before((NOW / HOUR_MS - 24) as u32, 1).unwrap();
        assert_eq!(removed, 1);
        assert_eq!(total(&store, "old"), 0);
        assert_eq!(store.read().seen.len(), 1);
        store.commit(sled::Batch::default()).await.unwrap();
    }
    let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(total(&store, "old"), 0);
    assert_eq!(total(&store, "new"), 1);
    assert_eq!(store.read().seen.len(), 1);
}

#[test]
fn another_schema_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("counters")
            .unwrap()
            .insert(codec::SCHEMA_KEY, &7u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let e = CounterStore::open(dir.path(), 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("schema version 7"), "{e}");
}

/// Retention forgets the URLs and keys no counter uses any more, on disk too, and their ids are
/// reused only after that; a reopened store names every counter as before.
#[tokio::test]
async fn retention_frees_unused_urls_and_reuses_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let old = NOW - 20 * 24 * HOUR_MS;
    let cutoff = (NOW / HOUR_MS - 24) as u32;
    {
        let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
        apply(
            &store,
            &[batch(
                "c1",
                1,
                vec![
                    ev("1", "gone", "ClickAllowed", old),
                    ev("2", "kept", "ClickAllowed", old),
                    ev("3", "kept", "ClickBlocked", NOW),
                ],
            )],
        )
        .await;
        let gone_id = store.read().key_id("", "defender", "gone").unwrap();
        assert_eq!(store.expire_before(cutoff, 1).unwrap(), 2);
        {
            let state = store.read();
            assert_eq!(state.key_id("", "defender", "gone"), None);
            assert_eq!(state.urls.len(), 1);
            assert_eq!(state.keys.len(), 1);
        }
        let stored_urls = store.tree.scan_prefix([codec::URL]).count();
        assert_eq!(stored_urls, 1);
        apply(
            &store,
            &[batch("c1", 4, vec![ev("4", "fresh", "UrlErrorPage", NOW)])],
        )
        .await;
        assert_eq!(store.read().key_id("", "defender", "fresh"), Some(gone_id));
    }
    let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(total(&store, "gone"), 0);
    assert_eq!(total(&store, "kept"), 1);
    assert_eq!(total(&store, "fresh"), 1);
    let state = store.read();
    let fresh = state.key_id("", "defender", "fresh").unwrap();
    let c = state.counts((NOW / HOUR_MS) as u32, fresh).unwrap();
    assert_eq!(c.actions[0].action_type, "UrlErrorPage");
}
