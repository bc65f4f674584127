//! One count across vendors: Defender, Proofpoint TAP and Mimecast sample files through one
//! collector into one aggregator give exactly the seed query's answer over the union of their
//! clicks, and each source can be asked for on its own.

use clicktally_aggregator::ManualClock;
use clicktally_collector::input::InputSpec;
use clicktally_collector::sources::SourceKind;
use clicktally_collector::CollectorConfig;
use clicktally_proto::v1::SummaryRequest;
use clicktally_tests::{seed_rows, SeedRow, TestAggregator};
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// 2026-12-01T12:00:00Z: the samples are dated 2026-11-28..30.
const NOW: i64 = 1_796_126_400_000;

fn example(dir: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(dir)
        .display()
        .to_string()
}

fn r(url: &str, c: [u64; 6]) -> SeedRow {
    (url.to_string(), c[0], c[1], c[2], c[3], c[4], c[5])
}

#[tokio::test]
async fn three_vendors_give_one_exact_count() {
    let tmp = tempfile::tempdir().unwrap();
    let agg = TestAggregator::start(&tmp.path().join("agg"), Arc::new(ManualClock::new(NOW))).await;
    let mut config = CollectorConfig::new(tmp.path().join("spool"));
    config.inputs = vec![
        InputSpec {
            kind: SourceKind::Defender,
            pattern: example("defender"),
        },
        InputSpec {
            kind: SourceKind::Proofpoint,
            pattern: example("proofpoint"),
        },
        InputSpec {
            kind: SourceKind::Mimecast,
            pattern: example("mimecast"),
        },
    ];
    config.once = true;
    config.shipper.endpoint = agg.endpoint();
    let report = clicktally_collector::run(config, CancellationToken::new())
        .await
        .unwrap();
    // Defender 88 clicks + 1 other category + 1 truncated line; Proofpoint 12 clicks + 2
    // messages; Mimecast 11 clicks + 2 entry scans.
    assert_eq!(
        (
            report.events,
            report.skipped,
            report.dead_lettered,
            report.applied
        ),
        (111, 5, 1, 111)
    );

    // Blocked, Allowed, PendingVerdict, Error, ClickedThrough, Total: Defender + Proofpoint + Mimecast.
    let mut expected = vec![
        r(
            "https://login-microsoftonline.com-secure.example/owa/auth",
            [14 + 2 + 2, 3 + 1 + 1, 2, 0, 2 + 1, 19 + 3 + 3],
        ),
        r(
            "https://docs.contoso-invoices.example/inv/88213.pdf",
            [4, 9, 0, 1, 3, 14],
        ),
        r(
            "https://sharepoint.fabrikam.example/sites/finance/Shared%20Documents/Q4.xlsx",
            [0, 11 + 2, 0, 0, 0, 11 + 2],
        ),
        r(
            "http://paypal.account-verify.example/signin?session=a81f",
            [7 + 1 + 1, 1 + 1, 0, 0, 1 + 1, 10 + 2 + 2],
        ),
        r("https://bit.example/3xK9q", [0, 2 + 1, 4, 2, 1, 8 + 1]),
        r(
            "https://cdn.malware-drop.example/payload/update.exe",
            [6 + 2 + 1, 0, 0, 0, 0, 6 + 2 + 1],
        ),
        r(
            "https://jenkins.enterprise.com/job/deploy-prod/lastBuild/console",
            [0, 6, 0, 0, 0, 6],
        ),
        r(
            "https://www.contoso.com/benefits/2026",
            [0, 5 + 1, 0, 0, 0, 5 + 1],
        ),
        r(
            "https://training.microsoft.com/phish-sim/landing?c=42",
            [2, 3, 0, 0, 2, 5],
        ),
        r(
            "https://support.ticket.system.com/tickets/48213",
            [0, 4, 0, 0, 0, 4],
        ),
        r(
            "https://docu-sign.envelope-review.example/e/7Qm2",
            [1 + 1, 1, 0, 0, 0, 2 + 1],
        ),
        r(
            "https://dropbox-share.files-secure.example/s/q4-bonus.zip",
            [1, 1, 0, 0, 0, 2],
        ),
        r(
            "https://invoice-portal.billing-update.example/pay/2026-11",
            [0, 1, 0, 0, 1, 1],
        ),
    ];
    expected.sort();
    let rows = agg.summary(SummaryRequest::default()).await;
    assert_eq!(seed_rows(&rows), expected);
    let login = rows
        .iter()
        .find(|r| r.key.contains("login-microsoftonline"))
        .unwrap();
    let per_source: Vec<(&str, u64)> = login
        .sources
        .iter()
        .map(|s| (s.source.as_str(), s.count))
        .collect();
    assert_eq!(
        per_source,
        [("defender", 19), ("mimecast", 3), ("proofpoint", 3)]
    );

    let proofpoint = agg
        .summary(SummaryRequest {
            sources: vec!["proofpoint".into()],
            order_by: "Url".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        seed_rows(&proofpoint),
        vec![
            r(
                "http://paypal.account-verify.example/signin?session=a81f",
                [1, 1, 0, 0, 0, 2]
            ),
            r("https://bit.example/3xK9q", [0, 1, 0, 0, 0, 1]),
            r(
                "https://cdn.malware-drop.example/payload/update.exe",
                [2, 0, 0, 0, 0, 2]
            ),
            r(
                "https://docu-sign.envelope-review.example/e/7Qm2",
                [1, 1, 0, 0, 0, 2]
            ),
            r(
                "https://dropbox-share.files-secure.example/s/q4-bonus.zip",
                [1, 1, 0, 0, 0, 2]
            ),
            r(
                "https://login-microsoftonline.com-secure.example/owa/auth",
                [2, 1, 0, 0, 0, 3]
            ),
        ]
    );
    agg.shutdown().await;
}
