//! Following a Watch stream: reconnects with capped backoff (500 ms to 5 s), and keeps the
//! current rows by applying snapshots, updates and removals, as `watch` and `top` show them.

use crate::query::{connect, Conn};
use clicktally_proto::v1::watch_update::Kind;
use clicktally_proto::v1::{SummaryRow, WatchRequest, WatchUpdate};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the follower reports.
#[derive(Debug)]
pub enum LiveEvent {
    /// Connected; a snapshot follows.
    Connected,
    /// A message from the aggregator.
    Update(WatchUpdate),
    /// The connection was lost or refused; it retries by itself.
    Disconnected(String),
}

/// Follows `req` on `endpoint` until `stop`, sending what happens to `tx`.
pub async fn follow(
    conn: Conn,
    req: WatchRequest,
    tx: mpsc::Sender<LiveEvent>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = async {
            let mut client = connect(&conn).await.map_err(|e| e.to_string())?;
            let mut stream = client
                .watch(req.clone())
                .await
                .map_err(|s| s.message().to_owned())?
                .into_inner();
            let _ = tx.send(LiveEvent::Connected).await;
            loop {
                match stream.message().await {
                    Ok(Some(u)) => {
                        if tx.send(LiveEvent::Update(u)).await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Err("the aggregator ended the stream".to_string()),
                    Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
                }
            }
        };
        let outcome = tokio::select! {
            r = attempt => r,
            _ = stop.cancelled() => return,
        };
        match outcome {
            Ok(()) => return,
            Err(why) => {
                if tx.send(LiveEvent::Disconnected(why)).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The rows a live view shows, kept current from Watch messages.
#[derive(Debug, Default)]
pub struct LiveRows {
    /// Rows by key.
    pub rows: HashMap<String, SummaryRow>,
    /// When each row last changed.
    pub changed_at: HashMap<String, Instant>,
    /// The window of the last message, ms.
    pub window: (i64, i64),
    /// (when, total clicks) samples for a clicks-per-second rate.
    samples: Vec<(Instant, u64)>,
}

impl LiveRows {
    /// Applies one message.
    pub fn apply(&mut self, u: &WatchUpdate, now: Instant) {
        if u.kind() == Kind::Snapshot {
            self.rows.clear();
        }
        for r in &u.rows {
            if u.kind() == Kind::Update {
                self.changed_at.insert(r.key.clone(), now);
            }
            self.rows.insert(r.key.clone(), r.clone());
        }
        for k in &u.removed {
            self.rows.remove(k);
            self.changed_at.remove(k);
        }
        self.window = (u.since_unix_ms, u.until_unix_ms);
        self.samples.push((now, self.total()));
        self.samples
            .retain(|(t, _)| now.duration_since(*t) <= Duration::from_secs(10));
    }

    /// Clicks in all rows.
    pub fn total(&self) -> u64 {
        self.rows.values().map(|r| r.total).sum()
    }

    /// Clicks per second over the last ten seconds of messages.
    pub fn rate(&self) -> f64 {
        match (self.samples.first(), self.samples.last()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                n1.saturating_sub(*n0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Rows sorted like a Summary (by `order`, descending unless `ascending`, ties by key).
    pub fn sorted(&self, order: crate::top::SortColumn, ascending: bool) -> Vec<&SummaryRow> {
        let mut v: Vec<&SummaryRow> = self.rows.values().collect();
        v.sort_by(|a, b| {
            let o = order.compare(a, b);
            let o = if ascending { o } else { o.reverse() };
            o.then_with(|| a.key.cmp(&b.key))
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, total: u64) -> SummaryRow {
        SummaryRow {
            key: key.into(),
            total,
            ..Default::default()
        }
    }

    #[test]
    fn snapshots_replace_updates_merge_and_removals_remove() {
        let mut live = LiveRows::default();
        let t0 = Instant::now();
        live.apply(
            &WatchUpdate {
                kind: Kind::Snapshot as i32,
                rows: vec![row("a", 1), row("b", 2)],
                ..Default::default()
            },
            t0,
        );
        live.apply(
            &WatchUpdate {
                kind: Kind::Update as i32,
                rows: vec![row("a", 5)],
                removed: vec!["b".into()],
                ..Default::default()
            },
            t0 + Duration::from_secs(2),
        );
        assert_eq!(live.rows.len(), 1);
        assert_eq!(live.rows["a"].total, 5);
        assert!(live.changed_at.contains_key("a"));
        assert_eq!(live.rate(), 1.0); // 3 clicks to 5 in 2 s
        live.apply(
            &WatchUpdate {
                kind: Kind::Snapshot as i32,
                rows: vec![row("c", 1)],
                ..Default::default()
            },
            t0,
        );
        assert_eq!(live.rows.keys().collect::<Vec<_>>(), ["c"]);
    }
}
