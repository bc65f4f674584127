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

fn everything(store: &CounterStore) -> Vec<(u32, CounterKey, Counts)> {
    let mut v: Vec<_> = store.read().entries().collect();
    v.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    v
}

fn prefixed(store: &CounterStore, prefix: u8) -> usize {
    store.tree.scan_prefix([prefix]).count()
}

/// Counters come back from a snapshot plus the journal after it exactly as they were, through
/// retention (ids freed and reused after the snapshot), and the journal a snapshot includes is
/// deleted.
#[tokio::test]
async fn snapshot_and_journal_replay_to_the_same_counters() {
    let dir = tempfile::tempdir().unwrap();
    let old = NOW - 20 * 24 * HOUR_MS;
    let urls: Vec<String> = (0..300).map(|i| format!("https://x{i}.example/")).collect();
    let before;
    {
        let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
        let mut seq = 1;
        for round in 0..6i64 {
            let mut events: Vec<ClickEvent> = urls
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let action = ["ClickAllowed", "ClickBlocked", "UrlScanInProgress"][i % 3];
                    ev(
                        &format!("{round}-{i}"),
                        u,
                        action,
                        NOW - round * HOUR_MS + i as i64,
                    )
                })
                .collect();
            if round == 0 {
                events.extend((0..150).map(|i| {
                    ev(
                        &format!("old{i}"),
                        &format!("https://old{i}.example/"),
                        "ClickAllowed",
                        old,
                    )
                }));
            }
            let n = events.len() as u64;
            apply(&store, &[batch("c1", seq, events)]).await;
            seq += n;
            if round == 2 {
                let logs = prefixed(&store, codec::LOG);
                assert!(logs > 1, "{logs} journal parts");
                let snap = store.capture();
                assert_eq!(snap.generation, 1);
                assert!(!snap.parts.is_empty());
                store.install(snap).unwrap();
                assert_eq!(prefixed(&store, codec::LOG), 0);
                assert!(prefixed(&store, codec::SNAP) > 0);
            }
            if round == 3 {
                // The old hour goes; its 150 URLs are freed, then reused by new ones below.
                assert_eq!(
                    store.expire_before((NOW / HOUR_MS - 24) as u32, 7).unwrap(),
                    150
                );
                assert_eq!(store.read().urls.len(), 300);
            }
        }
        let fresh: Vec<ClickEvent> = (0..150)
            .map(|i| {
                ev(
                    &format!("f{i}"),
                    &format!("https://fresh{i}.example/"),
                    "UrlErrorPage",
                    NOW,
                )
            })
            .collect();
        apply(&store, &[batch("c1", seq, fresh)]).await;
        assert_eq!(store.read().urls.len(), 450);
        assert_eq!(
            store.read().keys.id_bound(),
            450,
            "freed key ids were reused"
        );
        before = everything(&store);
        store.flush().await.unwrap();
    }
    let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
    let after = everything(&store);
    assert_eq!(after.len(), before.len());
    assert_eq!(after, before);
    assert_eq!(total(&store, &urls[0]), 6);
    assert_eq!(total(&store, "https://old0.example/"), 0);
    assert_eq!(total(&store, "https://fresh0.example/"), 1);
    assert_eq!(store.read().seen.len(), 6 * 300 + 150);
}

/// A snapshot cut short by a crash (parts written, pointer not) is ignored and cleaned up.
#[tokio::test]
async fn a_snapshot_cut_short_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
        apply(
            &store,
            &[batch(
                "c1",
                1,
                vec![
                    ev("1", "a", "ClickAllowed", NOW),
                    ev("2", "b", "ClickBlocked", NOW),
                ],
            )],
        )
        .await;
        let snap = store.capture();
        // Only the parts, as if the process died before the pointer was written.
        for (i, p) in snap.parts.iter().enumerate() {
            store
                .tree
                .insert(
                    &codec::snap_key(snap.generation, i as u32)[..],
                    p.as_slice(),
                )
                .unwrap();
        }
        apply(
            &store,
            &[batch("c1", 3, vec![ev("3", "a", "ClickAllowed", NOW)])],
        )
        .await;
        before = everything(&store);
        store.flush().await.unwrap();
    }
    let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(everything(&store), before);
    assert_eq!(total(&store, "a"), 2);
    assert_eq!(prefixed(&store, codec::SNAP), 0);
    assert_eq!(prefixed(&store, codec::LOG), 2);
}

/// A damaged journal part is a clear error naming it, not a panic.
#[test]
fn a_damaged_journal_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
        store
            .tree
            .insert(&codec::log_key(1)[..], &[3, 1, 2, 9, 9][..])
            .unwrap();
        store.db.flush().unwrap();
    }
    let e = CounterStore::open(dir.path(), 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("corrupt journal part"), "{e}");
}

/// A journal naming an id far beyond any in use is refused as damage instead of allocating for
/// it; so is a key defined again while hours still count it.
#[test]
fn damaged_ids_in_the_journal_are_refused() {
    for (n, part) in [
        (0, {
            let mut w = journal::Writer::default();
            w.key(4_000_000_000, 0, 0, "https://x/");
            w.finish()
        }),
        (1, {
            let mut w = journal::Writer::default();
            w.name(codec::TENANT_NAME, 0, "");
            w.name(codec::SOURCE_NAME, 0, "defender");
            w.name(codec::ACTION_NAME, 0, "ClickAllowed");
            w.key(0, 0, 0, "https://a/");
            let mut t = crate::table::Tally::default();
            t.add(0, false, 5);
            w.tally(490_000, 0, &t);
            w.key(0, 0, 0, "https://b/");
            w.finish()
        }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = CounterStore::open(dir.path(), 1 << 20).unwrap();
            for (i, p) in part.iter().enumerate() {
                store
                    .tree
                    .insert(&codec::log_key(1 + i as u64)[..], p.as_slice())
                    .unwrap();
            }
            store.db.flush().unwrap();
        }
        let e = CounterStore::open(dir.path(), 1 << 20)
            .unwrap_err()
            .to_string();
        let want = ["far beyond", "defined again"][n];
        assert!(e.contains(want), "{e}");
    }
}
