//! The seeded workloads: Defender storage-blob JSON Lines for the collector (Zipf-distributed
//! URLs, mixed actions, click times over the last 7 days), and normalised events with an exact
//! number of distinct URLs for loading an aggregator directly.

use clicktally_proto::v1::ClickEvent;
use std::ops::Range;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// The Zipf exponent of URL popularity.
pub const ZIPF_S: f64 = 1.1;

/// splitmix64: a strong 64-bit mix, used to seed and to derive per-index variety.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xorshift64*: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value, zero included).
    pub fn new(seed: u64) -> Self {
        Self(mix(seed) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(s) over ranks `0..n` (rank 0 the most clicked), sampled by inverting its CDF.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks with exponent `s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut acc = 0.0;
        for k in 1..=n.max(1) {
            acc += (k as f64).powf(-s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Self { cdf }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

const HOST_WORDS: &[&str] = &[
    "login-microsoftonline",
    "sharepoint-docs",
    "account-verify",
    "dropbox-share",
    "docusign-review",
    "outlook-secure",
    "cdn",
    "mail",
    "files",
    "portal",
    "intranet",
    "news",
    "shop",
    "track",
    "billing",
    "hr-benefits",
    "webinar",
    "survey",
    "support",
    "updates",
];
const TLDS: &[&str] = &["com", "net", "org", "io", "co", "info", "biz", "example"];
const PATH_WORDS: &[&str] = &[
    "owa",
    "auth",
    "docs",
    "invoice",
    "share",
    "view",
    "download",
    "reset",
    "account",
    "verify",
    "update",
    "login",
    "files",
    "campaign",
    "newsletter",
    "events",
    "payments",
    "onboarding",
];

fn pick<'a>(words: &[&'a str], h: u64) -> &'a str {
    words[(h % words.len() as u64) as usize]
}

/// URL number `i`: distinct for every `i`, 40 to 110 bytes, over 5,000 hosts.
pub fn url_for(i: u64) -> String {
    let h = mix(i ^ 0x005E_ED0F_0A11);
    let host_id = h % 5_000;
    let host = format!(
        "{}{host_id}.{}",
        pick(HOST_WORDS, host_id),
        pick(TLDS, host_id / 7)
    );
    let (p1, p2, p3) = (
        pick(PATH_WORDS, h >> 13),
        pick(PATH_WORDS, h >> 23),
        pick(PATH_WORDS, h >> 33),
    );
    match (h >> 43) % 4 {
        0 => format!("https://{host}/{p1}/{p2}/{i:x}"),
        1 => format!(
            "https://{host}/{p1}/{i:x}?session={:08x}&lang=en-US",
            (h >> 8) as u32
        ),
        2 => format!("https://www.{host}/{p1}/{p2}/{p3}-{i}.pdf"),
        _ => format!("http://{host}/r/{:012x}{i:x}", h >> 16),
    }
}

fn guid(rng: &mut Rng) -> String {
    let (a, b) = (rng.next_u64(), rng.next_u64());
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// RFC 3339 with 7 fractional digits, as Defender writes it.
pub fn rfc3339_7(ms: i64) -> String {
    let (y, m, d, sod) = civil(ms.div_euclid(1000));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}0000Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

/// `YYYY-MM-DD HH:MM UTC`, for the report.
pub fn date_utc(ms: i64) -> String {
    let (y, m, d, sod) = civil(ms.div_euclid(1000));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        sod / 3600,
        sod % 3600 / 60
    )
}

/// (year, month, day, second of day) of a Unix time (Howard Hinnant's civil-from-days).
fn civil(secs: i64) -> (i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod)
}

/// Action types with their share of clicks, in percent (sums to 100). Case variants and a
/// compound value exercise the seed's `has_any` semantics as real exports do.
pub const ACTIONS: &[(&str, u64)] = &[
    ("ClickAllowed", 61),
    ("ClickBlocked", 17),
    ("UrlScanInProgress", 7),
    ("ClickBlockedByTenantPolicy", 5),
    ("UrlErrorPage", 3),
    ("clickallowed", 2),
    ("ClickBlocked;Warn", 3),
    ("ClickAllowedAfterWarning", 2),
];

fn action(rng: &mut Rng) -> (&'static str, bool) {
    let mut r = rng.below(100);
    for (a, share) in ACTIONS {
        if r < *share {
            // Users click through warnings on blocked pages far more often than elsewhere.
            let through_pct = if a.contains("Blocked") || a.contains("Warning") {
                15
            } else {
                1
            };
            return (a, rng.below(100) < through_pct);
        }
        r -= share;
    }
    ("ClickAllowed", false)
}

/// Defender storage-blob JSON Lines in memory.
pub struct BlobLines {
    /// The file's bytes, CRLF line ends.
    pub text: Vec<u8>,
    /// Each line's range in `text`, without its CRLF.
    pub lines: Vec<Range<usize>>,
    /// Lines written byte-for-byte twice in a row (a re-delivered record).
    pub repeated: usize,
    /// Distinct URLs among the lines.
    pub distinct_urls: usize,
}

impl BlobLines {
    /// Line `i` without its line end.
    pub fn line(&self, i: usize) -> &[u8] {
        &self.text[self.lines[i].clone()]
    }
}

/// `n` lines of clicks over a universe of `universe` URLs (Zipf, s = [`ZIPF_S`]), 1% of them
/// repeated byte-for-byte, click times spread uniformly over the 7 days before `now_ms` and
/// written in time order with +-5 minutes of jitter, as hourly blob exports are.
pub fn blob_lines(n: usize, universe: usize, seed: u64, now_ms: i64) -> BlobLines {
    let zipf = Zipf::new(universe, ZIPF_S);
    let mut rng = Rng::new(seed);
    let span = (7 * DAY_MS - 20 * 60_000) as u64;
    let mut offsets: Vec<i64> = (0..n).map(|_| rng.below(span) as i64).collect();
    offsets.sort_unstable_by(|a, b| b.cmp(a));
    let mut seen = vec![false; universe.max(1)];
    let mut out = BlobLines {
        text: Vec::with_capacity(n * 420),
        lines: Vec::with_capacity(n),
        repeated: 0,
        distinct_urls: 0,
    };
    let mut last: Option<Range<usize>> = None;
    for off in offsets {
        if let Some(prev) = &last {
            if rng.below(100) == 0 {
                let start = out.text.len();
                out.text.extend_from_within(prev.start..prev.end + 2);
                out.lines.push(start..start + prev.len());
                out.repeated += 1;
                continue;
            }
        }
        let rank = zipf.sample(&mut rng);
        if !seen[rank] {
            seen[rank] = true;
            out.distinct_urls += 1;
        }
        let url = url_for(rank as u64);
        let jitter = rng.below(600_000) as i64 - 300_000;
        let t = (now_ms - 10 * 60_000 - off + jitter).min(now_ms - 60_000);
        let ts = rfc3339_7(t);
        let exported = rfc3339_7(t + 5_000 + rng.below(120_000) as i64);
        let (action, through) = action(&mut rng);
        let user = rng.below(3_000);
        let report = guid(&mut rng);
        let message = guid(&mut rng);
        let line = format!(
            "{{\"time\":\"{exported}\",\"tenantId\":\"t1\",\"category\":\"AdvancedHunting-UrlClickEvents\",\"properties\":{{\"Timestamp\":\"{ts}\",\"Url\":\"{url}\",\"ActionType\":\"{action}\",\"AccountUpn\":\"user{user}@contoso.com\",\"IsClickedThrough\":{through},\"ReportId\":\"{report}\",\"NetworkMessageId\":\"{message}\"}}}}"
        );
        let start = out.text.len();
        out.text.extend_from_slice(line.as_bytes());
        out.text.extend_from_slice(b"\r\n");
        let range = start..start + line.len();
        out.lines.push(range.clone());
        last = Some(range);
    }
    out
}

/// Normalised events covering exactly `distinct` URLs: every URL once, plus `distinct *
/// extra_pct / 100` Zipf-distributed clicks on them, in time order over the last 7 days
/// (inside a 7-day Summary window). Deterministic: the same arguments give the same events,
/// so one dataset can be loaded in process and pushed to a real aggregator.
pub struct Dataset {
    distinct: u64,
    total: u64,
    next: u64,
    zipf: Zipf,
    rng: Rng,
    start_ms: i64,
    span_ms: i64,
}

impl Dataset {
    /// The dataset for `distinct` URLs at `now_ms`.
    pub fn new(distinct: usize, extra_pct: usize, seed: u64, now_ms: i64) -> Self {
        let span_ms = 7 * DAY_MS - 3 * HOUR_MS;
        Self {
            distinct: distinct as u64,
            total: (distinct + distinct * extra_pct / 100) as u64,
            next: 0,
            zipf: Zipf::new(distinct, ZIPF_S),
            rng: Rng::new(seed ^ 0xDA7A),
            start_ms: now_ms - 2 * 60_000 - span_ms,
            span_ms,
        }
    }

    /// Events in the dataset.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The next up to `n` events (empty at the end).
    pub fn next_batch(&mut self, n: usize) -> Vec<ClickEvent> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && self.next < self.total {
            let k = self.next;
            self.next += 1;
            // `distinct` of the slots, spread evenly, cover each URL once, in an order scrambled
            // by a permutation (multiplying by a prime that does not divide `distinct`); the
            // other slots are Zipf-distributed clicks.
            let covered = (k + 1) * self.distinct / self.total;
            let i = if covered != k * self.distinct / self.total {
                let step = if self.distinct.is_multiple_of(7919) {
                    1
                } else {
                    7919
                };
                ((covered - 1) * step + 13) % self.distinct
            } else {
                self.zipf.sample(&mut self.rng) as u64
            };
            let t = self.start_ms + (k as i128 * self.span_ms as i128 / self.total as i128) as i64;
            let (action, through) = action(&mut self.rng);
            out.push(ClickEvent {
                event_id: format!("{:016x}{:016x}", mix(k), mix(k ^ 0xFFFF)),
                time_unix_ms: t,
                url: url_for(i),
                action_type: action.to_owned(),
                source_action: action.to_owned(),
                clicked_through: through,
                source: "defender".into(),
                tenant: "t1".into(),
                account: format!("user{}@contoso.com", self.rng.below(3_000)),
                network_message_id: guid(&mut self.rng),
                ..Default::default()
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339_7(1_796_126_400_123), "2026-12-01T12:00:00.1230000Z");
        assert_eq!(rfc3339_7(951_782_400_000), "2000-02-29T00:00:00.0000000Z");
    }

    #[test]
    fn zipf_puts_the_head_first() {
        let z = Zipf::new(100_000, ZIPF_S);
        let mut rng = Rng::new(1);
        let n = 200_000;
        let head = (0..n).filter(|_| z.sample(&mut rng) < 10).count();
        // P(rank < 10) for s = 1.1 over 100k ranks is about 0.33.
        assert!((0.28..0.38).contains(&(head as f64 / n as f64)), "{head}");
    }

    #[test]
    fn a_dataset_covers_every_url_exactly() {
        let mut d = Dataset::new(1_000, 50, 7, 1_796_126_400_000);
        let mut urls = std::collections::HashSet::new();
        let mut n = 0;
        loop {
            let b = d.next_batch(128);
            if b.is_empty() {
                break;
            }
            n += b.len();
            urls.extend(b.into_iter().map(|e| e.url));
        }
        assert_eq!(n, 1_500);
        assert_eq!(urls.len(), 1_000);
    }

    #[test]
    fn blob_lines_parse_as_defender_clicks() {
        let w = blob_lines(500, 1_000, 3, 1_796_126_400_000);
        assert_eq!(w.lines.len(), 500);
        assert!(w.text.ends_with(b"}}\r\n"));
        let limits = clicktally_collector::record::FieldLimits {
            max_url_bytes: 8192,
            now_ms: 1_796_126_400_000,
        };
        let mut out = Vec::new();
        for i in 0..w.lines.len() {
            clicktally_collector::sources::SourceKind::Defender.parse(w.line(i), &limits, &mut out);
        }
        assert_eq!(out.len(), 500);
        assert!(out
            .iter()
            .all(|r| matches!(r, clicktally_collector::record::Record::Click(_))));
    }
}
