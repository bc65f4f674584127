//! Safe to deploy: TLS and mutual TLS with certificates made in the test (rcgen), hashed bearer
//! tokens with roles and tenants, tokens never in logs, plaintext refused off loopback, and
//! metrics that move as events flow.

use clicktally_aggregator::auth::{hash_token, Role, TokenEntry};
use clicktally_aggregator::config::TlsConfig;
use clicktally_aggregator::{AggregatorConfig, ManualClock};
use clicktally_proto::client::{endpoint, BearerToken, ClientTls};
use clicktally_proto::v1::click_ingest_client::ClickIngestClient;
use clicktally_proto::v1::click_query_client::ClickQueryClient;
use clicktally_proto::v1::{EventBatch, SummaryRequest, WatchRequest};
use clicktally_tests::{binary, click, free_port};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NOW: i64 = 1_796_126_400_000;

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |purpose: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.extended_key_usages = vec![purpose];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: leaf(ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf(ExtendedKeyUsagePurpose::ClientAuth),
    }
}

fn tokens() -> Vec<TokenEntry> {
    let t = |name: &str, token: &str, role, tenant: Option<&str>| TokenEntry {
        name: name.into(),
        sha256: hash_token(token),
        role,
        tenant: tenant.map(str::to_owned),
    };
    vec![
        t("collector", "ingest-token-1", Role::Ingest, None),
        t("soc-a", "query-token-a", Role::Query, Some("a")),
        t("soc-b", "query-token-b", Role::Query, Some("b")),
        t("ops", "admin-token", Role::Admin, None),
    ]
}

struct Running {
    addr: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), clicktally_aggregator::AggregatorError>>,
}

async fn start(dir: &std::path::Path, pki: &Pki, mutual: bool) -> Running {
    let mut c = AggregatorConfig::new(dir);
    c.clock = Arc::new(ManualClock::new(NOW));
    c.tokens = tokens();
    c.tls = Some(TlsConfig {
        cert_pem: pki.server.0.clone().into_bytes(),
        key_pem: pki.server.1.clone().into_bytes(),
        client_ca_pem: mutual.then(|| pki.ca.clone().into_bytes()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, metrics_addr) = (
        listener.local_addr().unwrap(),
        metrics.local_addr().unwrap(),
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(clicktally_aggregator::run_with_metrics(
        listener,
        Some(metrics),
        c,
        async move { s.cancelled().await },
    ));
    Running {
        addr,
        metrics: metrics_addr,
        stop,
        task,
    }
}

fn tls(pki: &Pki, with_identity: bool) -> ClientTls {
    ClientTls {
        ca_pem: Some(pki.ca.clone().into_bytes()),
        identity: with_identity.then(|| {
            (
                pki.client.0.clone().into_bytes(),
                pki.client.1.clone().into_bytes(),
            )
        }),
    }
}

async fn query(
    addr: std::net::SocketAddr,
    pki: &Pki,
    token: Option<&str>,
) -> ClickQueryClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, BearerToken>,
> {
    let channel = endpoint(
        &format!("https://localhost:{}", addr.port()),
        Some(&tls(pki, true)),
    )
    .unwrap()
    .connect()
    .await
    .unwrap();
    ClickQueryClient::with_interceptor(channel, BearerToken::new(token).unwrap())
}

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn keys(rows: &[clicktally_proto::v1::SummaryRow]) -> Vec<String> {
    let mut k: Vec<String> = rows.iter().map(|r| r.key.clone()).collect();
    k.sort();
    k
}

#[tokio::test]
async fn tls_tokens_roles_and_tenants() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki();
    let agg = start(tmp.path(), &pki, false).await;
    let https = format!("https://localhost:{}", agg.addr.port());

    // Plaintext against the TLS port fails (the TLS handshake never completes: bounded wait).
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", agg.addr.port()))
            .unwrap()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(3));
    let attempt = async {
        let channel = plain.connect().await?;
        let mut c = ClickQueryClient::new(channel);
        c.summary(SummaryRequest::default())
            .await
            .map_err(|s| Box::new(s) as Box<dyn std::error::Error + Send + Sync>)?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(10), attempt).await;
    assert!(
        !matches!(outcome, Ok(Ok(()))),
        "a plaintext client must not get an answer"
    );

    // The ingest token pushes clicks of two tenants.
    let channel = endpoint(&https, Some(&tls(&pki, false)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut ingest = ClickIngestClient::with_interceptor(
        channel,
        BearerToken::new(Some("ingest-token-1")).unwrap(),
    );
    let ev = |id: &str, url: &str, tenant: &str| {
        let mut e = click(id, url, "ClickBlocked", NOW - 60_000);
        e.tenant = tenant.into();
        e
    };
    let batch = EventBatch {
        collector_id: "c".into(),
        first_sequence: 1,
        events: vec![
            ev("1", "https://a-only.example/", "a"),
            ev("2", "https://b-only.example/", "b"),
            ev("3", "https://shared.example/", "a"),
            ev("4", "https://shared.example/", "b"),
        ],
    };
    let ack = ingest
        .push(tokio_stream::iter(vec![batch]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.applied, 4);

    // Each tenant sees only its own clicks; the admin sees all.
    let rows_a = query(agg.addr, &pki, Some("query-token-a"))
        .await
        .summary(SummaryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(
        keys(&rows_a),
        ["https://a-only.example/", "https://shared.example/"]
    );
    assert!(rows_a.iter().all(|r| r.total == 1));
    let rows_b = query(agg.addr, &pki, Some("query-token-b"))
        .await
        .summary(SummaryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(
        keys(&rows_b),
        ["https://b-only.example/", "https://shared.example/"]
    );
    let all = query(agg.addr, &pki, Some("admin-token"))
        .await
        .summary(SummaryRequest::default())
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(all.iter().map(|r| r.total).sum::<u64>(), 4);
    // In Watch too.
    let mut w = query(agg.addr, &pki, Some("query-token-b"))
        .await
        .watch(WatchRequest {
            filter: Some(SummaryRequest::default()),
            interval_ms: 100,
            rolling_window_ms: None,
        })
        .await
        .unwrap()
        .into_inner();
    let snap = tokio::time::timeout(Duration::from_secs(5), w.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        keys(&snap.rows),
        ["https://b-only.example/", "https://shared.example/"]
    );
    // And one URL's detail.
    let d = query(agg.addr, &pki, Some("query-token-a"))
        .await
        .url_detail(clicktally_proto::v1::UrlDetailRequest {
            url: "https://b-only.example/".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.total.unwrap().total,
        0,
        "tenant a learns nothing of tenant b's URL"
    );

    // Wrong role, unknown token, no token.
    let s = query(agg.addr, &pki, Some("ingest-token-1"))
        .await
        .summary(SummaryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    let s = query(agg.addr, &pki, Some("guessed"))
        .await
        .summary(SummaryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    let s = query(agg.addr, &pki, None)
        .await
        .summary(SummaryRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated);
    let channel = endpoint(&https, Some(&tls(&pki, false)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut as_query = ClickIngestClient::with_interceptor(
        channel,
        BearerToken::new(Some("query-token-a")).unwrap(),
    );
    let s = as_query
        .push(tokio_stream::iter(Vec::<EventBatch>::new()))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied);

    // The metrics moved.
    let m = metrics_text(agg.metrics).await;
    assert!(
        m.contains("clicktally_events_applied_total{source=\"defender\"} 4\n"),
        "{m}"
    );
    assert!(m.contains("clicktally_auth_failures_total 4\n"), "{m}");
    assert!(m.contains("clicktally_batches_total 1\n"), "{m}");
    assert!(
        m.contains("clicktally_group_commit_events_count 1\n"),
        "{m}"
    );
    agg.stop.cancel();
    agg.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn mutual_tls_refuses_a_collector_without_a_client_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = pki();
    let agg = start(&tmp.path().join("agg"), &pki, true).await;
    std::fs::create_dir_all(tmp.path().join("in")).unwrap();
    std::fs::write(
        tmp.path().join("in/rows.jsonl"),
        "{\"Timestamp\":\"2026-12-01T10:00:00Z\",\"Url\":\"https://m.example/\",\"ActionType\":\"ClickAllowed\"}\n",
    )
    .unwrap();
    let run = |spool: &str, identity: bool| {
        let mut c = clicktally_collector::CollectorConfig::new(tmp.path().join(spool));
        c.inputs = vec![format!("defender:{}", tmp.path().join("in").display())
            .parse()
            .unwrap()];
        c.once = true;
        c.once_deadline = Duration::from_secs(3);
        c.shipper.endpoint = format!("https://localhost:{}", agg.addr.port());
        c.shipper.tls = Some(tls(&pki, identity));
        c.shipper.token = Some(clicktally_collector::secret::Secret::new("ingest-token-1"));
        clicktally_collector::run(c, CancellationToken::new())
    };
    let refused = run("spool-anon", false).await;
    assert!(refused.is_err(), "an unenrolled collector must not get in");
    let enrolled = run("spool-enrolled", true).await.unwrap();
    assert_eq!(enrolled.applied, 1);
    agg.stop.cancel();
    agg.task.await.unwrap().unwrap();
}

#[test]
fn tokens_never_appear_in_logs_and_plaintext_stays_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    // Plaintext on a non-loopback address is refused unless --insecure.
    let port = free_port();
    let out = std::process::Command::new(binary("clicktally-aggregator"))
        .args(["--listen", &format!("0.0.0.0:{port}"), "--data"])
        .arg(tmp.path().join("refused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve plaintext on 0.0.0.0") && err.contains("--insecure"),
        "{err}"
    );

    // An aggregator that requires tokens, and a collector that presents one, both logging at debug.
    let config = tmp.path().join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "[[token]]\nname = \"collector\"\nsha256 = \"{}\"\nrole = \"ingest\"\n\n[[token]]\nname = \"soc\"\nsha256 = \"{}\"\nrole = \"query\"\n",
            hash_token("s3cret-ingest-value"),
            hash_token("s3cret-query-value")
        ),
    )
    .unwrap();
    let port = free_port();
    let agg_log = tmp.path().join("agg.log");
    let mut agg = clicktally_tests::ChildGuard(
        std::process::Command::new(binary("clicktally-aggregator"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
                config.to_str().unwrap(),
                "--data",
            ])
            .arg(tmp.path().join("data"))
            .env("RUST_LOG", "trace")
            .stderr(std::fs::File::create(&agg_log).unwrap())
            .spawn()
            .unwrap(),
    );
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::create_dir_all(tmp.path().join("in")).unwrap();
    std::fs::write(
        tmp.path().join("in/rows.jsonl"),
        "{\"Timestamp\":\"2026-12-01T10:00:00Z\",\"Url\":\"https://t.example/\",\"ActionType\":\"ClickAllowed\"}\n",
    )
    .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let collect = |token: &str| {
        std::process::Command::new(binary("clicktally-collector"))
            .args(["--aggregator", &endpoint, "--input"])
            .arg(format!("defender:{}", tmp.path().join("in").display()))
            .arg("--spool")
            .arg(tmp.path().join(format!("spool-{}", token.len())))
            .args(["--once", "--deadline", "5s"])
            .env("CLICKTALLY_TOKEN", token)
            .env("RUST_LOG", "trace")
            .output()
            .unwrap()
    };
    let bad = collect("wrong-s3cret-value");
    assert!(!bad.status.success());
    let bad_err = String::from_utf8_lossy(&bad.stderr).into_owned();
    assert!(
        bad_err.contains("refused this collector: unknown token"),
        "{bad_err}"
    );
    let good = collect("s3cret-ingest-value");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let (ok, out, err) = {
        let o = std::process::Command::new(binary("clicktally"))
            .args([
                "summary",
                "--aggregator",
                &endpoint,
                "--format",
                "json",
                "--since",
                "2026-11-01",
                "--until",
                "2026-12-31",
            ])
            .env("CLICKTALLY_TOKEN", "s3cret-query-value")
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(ok, "{err}");
    assert!(out.contains("https://t.example/"));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agg.0.id().to_string()])
        .status();
    let _ = agg.0.wait();
    let logs = format!(
        "{}{}{}{}",
        std::fs::read_to_string(&agg_log).unwrap(),
        bad_err,
        String::from_utf8_lossy(&good.stderr),
        err
    );
    assert!(logs.len() > 1000, "trace logging produced output");
    for secret in [
        "s3cret-ingest-value",
        "s3cret-query-value",
        "wrong-s3cret-value",
    ] {
        if let Some(i) = logs.find(secret) {
            let start = logs[..i]
                .char_indices()
                .rev()
                .nth(300)
                .map(|(j, _)| j)
                .unwrap_or(0);
            panic!(
                "{secret} appears in the logs: …{}…",
                &logs[start..(i + 40).min(logs.len())]
            );
        }
    }
}
