//! Faults around the pipeline, on the real binaries: an aggregator that is not up yet, a data
//! directory that cannot be written, a spool from another version, SIGTERM on both sides, and a
//! gRPC peer that sends garbage or oversize messages.

use clicktally_proto::v1::click_ingest_client::ClickIngestClient;
use clicktally_proto::v1::{ClickEvent, EventBatch};
use clicktally_tests::{
    all_rows, as_expected, binary, free_port, generate_defender, run_binary, spawn_aggregator,
    ChildGuard,
};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn collector(port: u16, spool: &Path, input: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary("clicktally-collector"));
    cmd.args(["--aggregator", &format!("http://127.0.0.1:{port}")])
        .arg("--spool")
        .arg(spool)
        .arg("--input")
        .arg(format!("defender:{}", input.display()))
        .args(extra);
    cmd
}

fn sigterm(child: &ChildGuard) {
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut ChildGuard, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_collector_waits_for_an_aggregator_that_starts_later() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let expected = generate_defender(&input, 1, 2_000, 300, now_ms(), 7);
    let port = free_port();
    let mut col = ChildGuard(
        collector(
            port,
            &tmp.path().join("spool"),
            &input,
            &["--once", "--deadline", "60s"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        col.0.try_wait().unwrap().is_none(),
        "the collector gave up before the deadline"
    );
    let _agg = spawn_aggregator(port, &tmp.path().join("data"), &[]);
    let status = wait_exit(&mut col, Duration::from_secs(60)).expect("collector finished");
    let mut err = String::new();
    std::io::Read::read_to_string(col.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(
        err.contains("aggregator unreachable"),
        "the wait is logged: {err}"
    );
    let rows = rt().block_on(all_rows(&format!("http://127.0.0.1:{port}")));
    assert_eq!(as_expected(&rows), expected);
}

#[test]
fn an_unusable_data_directory_is_a_clear_error_and_a_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    for data in [file.clone(), file.join("below-a-file")] {
        let port = free_port();
        let mut child = ChildGuard(
            Command::new(binary("clicktally-aggregator"))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .arg("--data")
                .arg(&data)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let status = wait_exit(&mut child, Duration::from_secs(20))
            .expect("the aggregator must exit, not hang");
        assert!(!status.success());
        let mut err = String::new();
        std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(
            err.contains(&format!("data directory {}", data.display())),
            "{err}"
        );
    }
}

#[test]
fn a_spool_from_another_version_is_refused_not_misread() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    {
        let db = sled::open(&spool).unwrap();
        let tree = db.open_tree("spool").unwrap();
        // Format 1: one `e` + sequence key per event (format 2 stores chunks of events).
        tree.insert(b"mversion", &1u32.to_be_bytes()).unwrap();
        tree.insert(b"e\0\0\0\0\0\0\0\x01", b"an event in an old layout")
            .unwrap();
        db.flush().unwrap();
    }
    let input = tmp.path().join("in");
    generate_defender(&input, 1, 10, 5, now_ms(), 1);
    let (ok, _, err) = run_binary(
        "clicktally-collector",
        &[
            "--spool",
            spool.to_str().unwrap(),
            "--input",
            &format!("defender:{}", input.display()),
            "--once",
            "--deadline",
            "2s",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("was written in format version 1; this collector reads version 2"),
        "{err}"
    );
}

#[test]
fn sigterm_drains_both_sides_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let expected = generate_defender(&input, 2, 10_000, 2_000, now_ms(), 11);
    let port = free_port();
    let data = tmp.path().join("data");
    let spool = tmp.path().join("spool");
    let agg = spawn_aggregator(port, &data, &[]);
    // A long-running collector (no --once): SIGTERM it while it ships.
    let mut col = ChildGuard(
        collector(port, &spool, &input, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(700));
    sigterm(&col);
    let status = wait_exit(&mut col, Duration::from_secs(10))
        .expect("the collector stops within its drain deadline");
    assert!(status.success(), "{status:?}");
    // Then SIGTERM the aggregator while a second collector is streaming into it.
    let mut col = ChildGuard(
        collector(port, &spool, &input, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut agg = agg;
    sigterm(&agg);
    let status = wait_exit(&mut agg, Duration::from_secs(10))
        .expect("the aggregator stops within its drain deadline");
    assert!(status.success(), "{status:?}");
    sigterm(&col);
    wait_exit(&mut col, Duration::from_secs(10)).expect("collector stopped");
    // Restart both; --once finishes the job from the spool and the checkpoints.
    let _agg = spawn_aggregator(port, &data, &[]);
    let out = collector(port, &spool, &input, &["--once", "--deadline", "60s"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rt().block_on(all_rows(&format!("http://127.0.0.1:{port}")));
    assert_eq!(as_expected(&rows), expected);
}

#[test]
fn garbage_and_oversize_grpc_input_is_refused_and_the_service_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _agg = spawn_aggregator(
        port,
        &tmp.path().join("data"),
        &["--max-message-bytes", "65536", "--max-batch-events", "100"],
    );
    // Raw garbage on the socket, then a truncated HTTP/2 preface.
    for bytes in [
        &b"\x00\xffGARBAGE\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"[..],
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(bytes).unwrap();
        drop(s);
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let event = |url: String| ClickEvent {
        event_id: url.clone(),
        time_unix_ms: now_ms(),
        url,
        action_type: "ClickAllowed".into(),
        source: "defender".into(),
        ..Default::default()
    };
    rt().block_on(async {
        let push = |batch: EventBatch| {
            let endpoint = endpoint.clone();
            async move {
                let mut client = ClickIngestClient::connect(endpoint).await.unwrap();
                let mut acks = client
                    .push(tokio_stream::iter(vec![batch]))
                    .await?
                    .into_inner();
                acks.message().await
            }
        };
        // Over the message size limit.
        let big = EventBatch {
            collector_id: "c".into(),
            first_sequence: 1,
            events: vec![event(format!("https://x.example/{}", "a".repeat(70_000)))],
        };
        let status = push(big).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        // Over the batch size limit.
        let many = EventBatch {
            collector_id: "c".into(),
            first_sequence: 1,
            events: (0..101)
                .map(|i| event(format!("https://x.example/{i}")))
                .collect(),
        };
        let status = push(many).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("batch of 101 events exceeds the 100-event limit"),
            "{status:?}"
        );
        // No collector id.
        let anonymous = EventBatch {
            collector_id: String::new(),
            first_sequence: 1,
            events: vec![event("https://x.example/1".into())],
        };
        assert_eq!(
            push(anonymous).await.unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // A good batch still goes through, and queries still work.
        let good = EventBatch {
            collector_id: "c".into(),
            first_sequence: 1,
            events: vec![event("https://x.example/ok".into())],
        };
        let ack = push(good).await.unwrap().unwrap();
        assert_eq!((ack.applied, ack.last_sequence), (1, 1));
        let rows = all_rows(&endpoint).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, "https://x.example/ok");
    });
}
