//! Pre-aggregation: every counter key's totals over the default window (the last 7 days),
//! kept up to date as clicks are counted and as the window slides hour by hour, so that the
//! Summary everyone asks for is one pass over a vector instead of a sum over 168 hours.

use crate::actions::SeedColumns;
use crate::clock::HOUR_MS;
use crate::table::{IdMap, Tally};
use std::collections::BTreeMap;

/// A row's figures: the seed's columns, totals and first/last click.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nums {
    /// Seed column Blocked.
    pub blocked: u64,
    /// Seed column Allowed.
    pub allowed: u64,
    /// Seed column PendingVerdict.
    pub pending_verdict: u64,
    /// Seed column Error.
    pub error: u64,
    /// ClickBlockedByTenantPolicy.
    pub blocked_by_policy: u64,
    /// Seed column ClickedThrough.
    pub clicked_through: u64,
    /// Every click.
    pub total: u64,
    /// Earliest click, ms since the epoch (meaningful when `total > 0`).
    pub first_ms: i64,
    /// Latest click, ms since the epoch (meaningful when `total > 0`).
    pub last_ms: i64,
}

impl Nums {
    /// The figures of one hour's tally; `cols` classifies action ids.
    pub fn of(t: &Tally, hour: u32, cols: &[SeedColumns]) -> Self {
        let start = i64::from(hour) * HOUR_MS;
        let mut n = Self {
            clicked_through: u64::from(t.clicked_through),
            first_ms: start + i64::from(t.first_off),
            last_ms: start + i64::from(t.last_off),
            ..Self::default()
        };
        for &(a, c) in &t.actions {
            let c = u64::from(c);
            let k = cols.get(a as usize).copied().unwrap_or_default();
            n.blocked += c * u64::from(k.blocked);
            n.allowed += c * u64::from(k.allowed);
            n.pending_verdict += c * u64::from(k.pending_verdict);
            n.error += c * u64::from(k.error);
            n.blocked_by_policy += c * u64::from(k.blocked_by_policy);
            n.total += c;
        }
        n
    }

    /// Adds `o` (counts summed, times widened).
    pub fn merge(&mut self, o: &Self) {
        if o.total == 0 {
            return;
        }
        if self.total == 0 || o.first_ms < self.first_ms {
            self.first_ms = o.first_ms;
        }
        if self.total == 0 || o.last_ms > self.last_ms {
            self.last_ms = o.last_ms;
        }
        self.blocked += o.blocked;
        self.allowed += o.allowed;
        self.pending_verdict += o.pending_verdict;
        self.error += o.error;
        self.blocked_by_policy += o.blocked_by_policy;
        self.clicked_through += o.clicked_through;
        self.total += o.total;
    }

    /// Takes away `o`'s counts (times are the caller's business).
    fn subtract(&mut self, o: &Self) {
        self.blocked -= o.blocked;
        self.allowed -= o.allowed;
        self.pending_verdict -= o.pending_verdict;
        self.error -= o.error;
        self.blocked_by_policy -= o.blocked_by_policy;
        self.clicked_through -= o.clicked_through;
        self.total -= o.total;
    }
}

/// Totals per counter key (indexed by key id) over the hours `[from, to)`.
#[derive(Debug, Default)]
pub struct WindowTotals {
    /// First hour counted.
    pub from: u32,
    /// One past the last hour counted.
    pub to: u32,
    /// By key id.
    pub totals: Vec<Nums>,
}

type Buckets = BTreeMap<u32, IdMap<Tally>>;

impl WindowTotals {
    /// True when `hour` is counted here.
    pub fn covers(&self, hour: u32) -> bool {
        (self.from..self.to).contains(&hour)
    }

    /// Counts one click of key `key` (already added to its hour's tally).
    pub fn add_one(&mut self, key: u32, one: &Nums) {
        let i = key as usize;
        if self.totals.len() <= i {
            // Grow by an eighth, not double: at a million keys this vector is 72 MB.
            let want = (i + 1).max(self.totals.len() + self.totals.len() / 8);
            self.totals.reserve_exact(want - self.totals.len());
            self.totals.resize(want, Nums::default());
        }
        self.totals[i].merge(one);
    }

    /// True when these totals answer exactly the hours `[from, to)` of `buckets`: the two
    /// ranges differ only by hours that hold no counters.
    pub fn answers(&self, buckets: &Buckets, from: u32, to: u32) -> bool {
        let empty = |a: u32, b: u32| buckets.range(a.min(b)..a.max(b)).next().is_none();
        self.to > self.from && empty(from, self.from) && empty(to, self.to)
    }

    /// Moves the window to `[from, to)`: forward hour by hour when it slides forward, rebuilt
    /// from the buckets otherwise.
    pub fn move_to(&mut self, buckets: &Buckets, cols: &[SeedColumns], from: u32, to: u32) {
        if (from, to) == (self.from, self.to) {
            return;
        }
        if from < self.from
            && self.to > self.from
            && buckets.range(from..self.from).next().is_none()
        {
            // Retention dropped those hours already: nothing to add back.
            self.from = from;
        }
        let forward = from >= self.from && to >= self.to && from <= self.to;
        if !forward || self.to <= self.from {
            self.rebuild(buckets, cols, from, to);
            return;
        }
        let leaving: Vec<u32> = buckets.range(self.from..from).map(|(h, _)| *h).collect();
        for hour in leaving {
            self.drop_earliest(buckets, cols, hour);
        }
        for (hour, bucket) in buckets.range(self.to..to) {
            for (k, t) in bucket {
                self.add_one(*k, &Nums::of(t, *hour, cols));
            }
        }
        self.from = from;
        self.to = to;
    }

    /// Takes the earliest counted hour, `hour`, out of the totals (before retention deletes it,
    /// or as the window slides past it). A key's first click then comes from its next hour.
    pub fn drop_earliest(&mut self, buckets: &Buckets, cols: &[SeedColumns], hour: u32) {
        let Some(bucket) = buckets.get(&hour) else {
            return;
        };
        if !self.covers(hour) {
            return;
        }
        for (k, t) in bucket {
            let Some(n) = self.totals.get_mut(*k as usize) else {
                continue;
            };
            let gone = Nums::of(t, hour, cols);
            n.subtract(&gone);
            if n.total == 0 {
                *n = Nums::default();
            } else if n.first_ms == gone.first_ms {
                if let Some((h, t2)) = buckets
                    .range(hour + 1..self.to)
                    .find_map(|(h, b)| b.get(k).map(|t2| (*h, t2)))
                {
                    n.first_ms = i64::from(h) * HOUR_MS + i64::from(t2.first_off);
                }
            }
        }
        self.from = self.from.max(hour + 1);
    }

    /// Recomputes every total for `[from, to)`.
    pub fn rebuild(&mut self, buckets: &Buckets, cols: &[SeedColumns], from: u32, to: u32) {
        self.totals.iter_mut().for_each(|n| *n = Nums::default());
        self.from = from;
        self.to = to;
        for (hour, bucket) in buckets.range(from..to.max(from)) {
            for (k, t) in bucket {
                self.add_one(*k, &Nums::of(t, *hour, cols));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(action: u16, n: u32, first: u32, last: u32) -> Tally {
        let mut t = Tally::default();
        for i in 0..n {
            t.add(action, i == 0, if i == 0 { first } else { last });
        }
        t
    }

    #[test]
    fn sliding_forward_equals_rebuilding() {
        let cols = vec![
            crate::actions::classify("ClickAllowed"),
            crate::actions::classify("ClickBlocked"),
        ];
        let mut buckets: Buckets = BTreeMap::new();
        for h in 10..20u32 {
            let b = buckets.entry(h).or_default();
            b.insert(1, tally((h % 2) as u16, h - 9, 5, 900));
            if h % 3 == 0 {
                b.insert(2, tally(1, 1, 7, 7));
            }
        }
        let mut slid = WindowTotals::default();
        slid.rebuild(&buckets, &cols, 10, 15);
        assert_eq!(slid.totals[1].total, 1 + 2 + 3 + 4 + 5);
        assert_eq!(slid.totals[1].first_ms, 10 * HOUR_MS + 5);
        for to in 16..=21 {
            slid.move_to(&buckets, &cols, to - 5, to);
            let mut fresh = WindowTotals::default();
            fresh.rebuild(&buckets, &cols, to - 5, to);
            assert_eq!(slid.totals, fresh.totals, "window ending at hour {to}");
        }
        // Hours 16..21: key 1 has 7+8+9+10 clicks (hours 16-19), key 2 one in hour 18.
        assert_eq!(slid.totals[1].total, 34);
        assert_eq!(slid.totals[1].first_ms, 16 * HOUR_MS + 5);
        assert_eq!(slid.totals[1].last_ms, 19 * HOUR_MS + 900);
        assert_eq!(slid.totals[1].allowed, 7 + 9);
        assert_eq!(slid.totals[2].blocked, 1);
        assert!(slid.answers(&buckets, 16, 25));
        assert!(!slid.answers(&buckets, 15, 21));
    }
}
