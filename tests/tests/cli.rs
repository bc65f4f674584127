//! The command-line contract that scripts rely on, exercised on the real binaries:
//! `clicktally-aggregator --listen --data`, `clicktally-collector --aggregator --spool --input
//! --once|--dry-run`, `clicktally summary --format json|csv|table --limit --order-by`.

use clicktally_tests::{free_port, run_binary, spawn_aggregator};
use std::path::Path;

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/defender")
        .display()
        .to_string()
}

#[test]
fn dry_run_counts_without_shipping() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let (ok, out, err) = run_binary(
        "clicktally-collector",
        &[
            "--aggregator",
            "http://127.0.0.1:9", // nothing listens there: dry-run never connects
            "--spool",
            spool.to_str().unwrap(),
            "--input",
            &format!("defender:{}", examples()),
            "--dry-run",
            "--report",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["records"], 90);
    assert_eq!(report["events"], 88);
    assert_eq!(report["skipped"], 1);
    assert_eq!(report["dead_lettered"], 1);
    assert_eq!(report["shipped"], 0);
    assert!(!spool.exists(), "dry-run must not write a spool");
    assert!(
        err.contains("malformed JSON"),
        "the dead letter's reason is shown: {err}"
    );
}

#[test]
fn once_then_summary_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // The examples are dated 2026-11-28..30: keep them whatever today's date.
    let _agg = spawn_aggregator(port, &tmp.path().join("data"), &["--retention", "36500d"]);
    let endpoint = format!("http://127.0.0.1:{port}");
    let (ok, out, err) = run_binary(
        "clicktally-collector",
        &[
            "--aggregator",
            &endpoint,
            "--spool",
            tmp.path().join("spool").to_str().unwrap(),
            "--input",
            &format!("defender:{}/*.json", examples()),
            "--input",
            &format!("defender:{}/*.jsonl", examples()),
            "--once",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("read                   90 records"), "{out}");
    assert!(
        out.contains("shipped                88 (counted 88"),
        "{out}"
    );

    let window = ["--since", "2026-11-01", "--until", "2026-12-31"];
    let summary = |extra: &[&str]| {
        let mut args = vec!["summary", "--aggregator", &endpoint];
        args.extend_from_slice(&window);
        args.extend_from_slice(extra);
        let (ok, out, err) = run_binary("clicktally", &args);
        assert!(ok, "{err}");
        out
    };
    let json: serde_json::Value =
        serde_json::from_str(&summary(&["--format", "json", "--limit", "0"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 10);
    let first = &rows[0];
    assert_eq!(
        first["Url"],
        "https://login-microsoftonline.com-secure.example/owa/auth"
    );
    assert_eq!(
        [
            &first["Blocked"],
            &first["Allowed"],
            &first["PendingVerdict"],
            &first["Error"],
            &first["ClickedThrough"],
            &first["Total"]
        ],
        [14, 3, 2, 0, 2, 19]
    );
    let paypal = rows
        .iter()
        .find(|r| r["Url"].as_str().unwrap().contains("paypal"))
        .unwrap();
    assert_eq!(
        (
            &paypal["Blocked"],
            &paypal["BlockedByPolicy"],
            &paypal["Total"]
        ),
        (&7.into(), &3.into(), &10.into())
    );
    let total: u64 = rows.iter().map(|r| r["Total"].as_u64().unwrap()).sum();
    assert_eq!(total, 88);

    let limited: serde_json::Value = serde_json::from_str(&summary(&[
        "--format",
        "json",
        "--limit",
        "2",
        "--order-by",
        "PendingVerdict",
    ]))
    .unwrap();
    let urls: Vec<_> = limited
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Url"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        urls,
        [
            "https://bit.example/3xK9q",
            "https://login-microsoftonline.com-secure.example/owa/auth"
        ]
    );

    let csv = summary(&[
        "--format",
        "csv",
        "--limit",
        "0",
        "--order-by",
        "Url",
        "--asc",
    ]);
    let lines: Vec<_> = csv.lines().collect();
    assert_eq!(lines[0], "Url,Blocked,Allowed,PendingVerdict,Error,ClickedThrough,Total,BlockedByPolicy,FirstSeen,LastSeen");
    assert_eq!(lines.len(), 11);
    // "http://" sorts before "https://".
    assert!(
        lines[1].starts_with(
            "http://paypal.account-verify.example/signin?session=a81f,7,0,0,0,1,10,3,"
        ),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("https://bit.example/3xK9q,0,2,4,2,1,8,0,"),
        "{}",
        lines[2]
    );

    let table = summary(&[]);
    for line in table.lines() {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
    }
    assert!(table.contains("10 of 10 rows"), "{table}");

    let (ok, _, err) = run_binary(
        "clicktally",
        &["summary", "--aggregator", &endpoint, "--order-by", "Colour"],
    );
    assert!(!ok);
    assert!(err.contains("unknown order_by column \"Colour\""), "{err}");
}

#[test]
fn collector_once_fails_clearly_when_nothing_acknowledges() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let (ok, _, err) = run_binary(
        "clicktally-collector",
        &[
            "--aggregator",
            &format!("http://127.0.0.1:{port}"),
            "--spool",
            tmp.path().join("spool").to_str().unwrap(),
            "--input",
            &format!("defender:{}/sentinel-urlclickevents.jsonl", examples()),
            "--once",
            "--deadline",
            "1500ms",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("30 events still unacknowledged after 1.5s"),
        "{err}"
    );
}

#[test]
fn a_missing_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, err) = run_binary(
        "clicktally-collector",
        &[
            "--spool",
            tmp.path().join("s").to_str().unwrap(),
            "--input",
            "defender:/no/such/file.json",
            "--dry-run",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("input defender:/no/such/file.json: no such file or directory"),
        "{err}"
    );
}

#[test]
fn a_config_file_with_three_vendors_and_per_source_views() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _agg = spawn_aggregator(port, &tmp.path().join("data"), &["--retention", "36500d"]);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let config = tmp.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "aggregator = \"http://127.0.0.1:{port}\"\nspool = \"{}\"\n\n[[source]]\nkind = \"defender\"\npath = \"{}\"\n\n[[source]]\nkind = \"proofpoint\"\npath = \"{}\"\n\n[[source]]\nkind = \"mimecast\"\npath = \"{}\"\n",
            tmp.path().join("spool").display(),
            examples.join("defender").display(),
            examples.join("proofpoint").display(),
            examples.join("mimecast").display(),
        ),
    )
    .unwrap();
    let (ok, out, err) = run_binary(
        "clicktally-collector",
        &[
            "--config",
            config.to_str().unwrap(),
            "--once",
            "--report",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&report["events"], &report["applied"], &report["skipped"]),
        (&111.into(), &111.into(), &5.into())
    );

    let endpoint = format!("http://127.0.0.1:{port}");
    let window = ["--since", "2026-11-01", "--until", "2026-12-31"];
    let mut args = vec![
        "summary",
        "--aggregator",
        endpoint.as_str(),
        "--source",
        "mimecast",
        "--format",
        "json",
        "--order-by",
        "Url",
        "--asc",
    ];
    args.extend_from_slice(&window);
    let (ok, out, err) = run_binary("clicktally", &args);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let totals: Vec<(String, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["Url"].as_str().unwrap().to_owned(),
                r["Total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(totals.iter().map(|t| t.1).sum::<u64>(), 11);
    assert_eq!(
        totals[0],
        (
            "http://paypal.account-verify.example/signin?session=a81f".to_string(),
            2
        )
    );

    let mut args = vec![
        "summary",
        "--aggregator",
        endpoint.as_str(),
        "--per-source",
        "--limit",
        "1",
    ];
    args.extend_from_slice(&window);
    let (ok, out, err) = run_binary("clicktally", &args);
    assert!(ok, "{err}");
    let first = out.lines().nth(1).unwrap();
    assert!(
        first.contains("    18       5       2     0       3    25 de19 mi3 pr3"),
        "{out}"
    );

    // A config error names the key and what is wrong, and exits 2.
    std::fs::write(&config, "[[source]]\nkind = \"defender\"\npaht = \"/x\"\n").unwrap();
    let out = std::process::Command::new(clicktally_tests::binary("clicktally-collector"))
        .args(["--config", config.to_str().unwrap(), "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `paht`, expected `path`"),
        "{err}"
    );
}

/// Applies `watch --format json` lines to a view: URL -> the seed's columns and Total.
fn apply_watch_line(view: &mut std::collections::BTreeMap<String, Vec<u64>>, line: &str) -> String {
    let msg: serde_json::Value = serde_json::from_str(line).unwrap();
    let kind = msg["kind"].as_str().unwrap().to_owned();
    if kind == "snapshot" {
        view.clear();
    }
    for r in msg["rows"].as_array().unwrap() {
        let cols = [
            "Blocked",
            "Allowed",
            "PendingVerdict",
            "Error",
            "ClickedThrough",
            "Total",
        ];
        view.insert(
            r["Url"].as_str().unwrap().to_owned(),
            cols.iter().map(|c| r[c].as_u64().unwrap()).collect(),
        );
    }
    for k in msg["removed"].as_array().into_iter().flatten() {
        view.remove(k.as_str().unwrap());
    }
    kind
}

#[test]
fn watch_json_follows_the_same_figures_as_summary() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _agg = spawn_aggregator(port, &tmp.path().join("data"), &["--retention", "36500d"]);
    let endpoint = format!("http://127.0.0.1:{port}");
    let ingest = |kind: &str| {
        let (ok, _, err) = run_binary(
            "clicktally-collector",
            &[
                "--aggregator",
                &endpoint,
                "--spool",
                tmp.path().join(format!("spool-{kind}")).to_str().unwrap(),
                "--input",
                &format!(
                    "{kind}:{}",
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../examples")
                        .join(kind)
                        .display()
                ),
                "--once",
            ],
        );
        assert!(ok, "{err}");
    };
    let window = ["--since", "2026-11-01", "--until", "2026-12-31"];
    let summary = || {
        let mut args = vec![
            "summary",
            "--aggregator",
            endpoint.as_str(),
            "--format",
            "json",
            "--limit",
            "0",
        ];
        args.extend_from_slice(&window);
        let (ok, out, err) = run_binary("clicktally", &args);
        assert!(ok, "{err}");
        let mut view = std::collections::BTreeMap::new();
        apply_watch_line(
            &mut view,
            &format!(
                "{{\"kind\":\"snapshot\",\"rows\":{}}}",
                out.replace('\n', "")
            ),
        );
        view
    };
    ingest("defender");
    let mut child = clicktally_tests::ChildGuard(
        std::process::Command::new(clicktally_tests::binary("clicktally"))
            .args([
                "watch",
                "--aggregator",
                &endpoint,
                "--format",
                "json",
                "--interval",
                "200ms",
            ])
            .args(window)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let mut view = std::collections::BTreeMap::new();
    assert_eq!(
        apply_watch_line(&mut view, &lines.next().unwrap().unwrap()),
        "snapshot"
    );
    assert_eq!(view, summary());
    assert_eq!(view.values().map(|v| v[5]).sum::<u64>(), 88);
    ingest("proofpoint");
    let want = summary();
    while view != want {
        assert_eq!(
            apply_watch_line(&mut view, &lines.next().unwrap().unwrap()),
            "update"
        );
    }
    assert_eq!(view.values().map(|v| v[5]).sum::<u64>(), 100);

    // One URL's detail agrees too.
    let (ok, out, err) = run_binary(
        "clicktally",
        &[
            "url",
            "https://login-microsoftonline.com-secure.example/owa/auth",
            "--aggregator",
            &endpoint,
            "--format",
            "json",
            "--since",
            "2026-11-01",
            "--until",
            "2026-12-31",
        ],
    );
    assert!(ok, "{err}");
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&d["Blocked"], &d["Allowed"], &d["Total"]),
        (&16.into(), &4.into(), &22.into())
    );
    assert_eq!(
        d["Sources"],
        serde_json::json!({"defender": 19, "proofpoint": 3})
    );
    let hourly: u64 = d["Hours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["Total"].as_u64().unwrap())
        .sum();
    assert_eq!(hourly, 22);
}

#[test]
fn the_aggregator_config_hides_the_seeds_benign_look_alikes() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aggregator.toml");
    // Flags override the file's listen address, data directory and retention.
    let _agg = spawn_aggregator(
        port,
        &tmp.path().join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--retention",
            "36500d",
        ],
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let (ok, _, err) = run_binary(
        "clicktally-collector",
        &[
            "--aggregator",
            &endpoint,
            "--spool",
            tmp.path().join("spool").to_str().unwrap(),
            "--input",
            &format!("defender:{}", examples()),
            "--once",
        ],
    );
    assert!(ok, "{err}");
    let window = ["--since", "2026-11-01", "--until", "2026-12-31"];
    let mut args = vec!["summary", "--aggregator", endpoint.as_str()];
    args.extend_from_slice(&window);
    let (ok, out, err) = run_binary("clicktally", &args);
    assert!(ok, "{err}");
    // jenkins.enterprise.com (6), training.microsoft.com (5), support.ticket.system.com (4).
    assert!(
        out.contains("7 of 7 rows") && out.contains("exclusions hid 3 rows (15 clicks)"),
        "{out}"
    );
    assert!(!out.contains("jenkins"));
    args.push("--no-exclusions");
    let (_, out, _) = run_binary("clicktally", &args);
    assert!(
        out.contains("10 of 10 rows") && out.contains("jenkins.enterprise.com"),
        "{out}"
    );
}

#[test]
fn the_systemd_units_verify() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed here; the units are checked where it is");
        return;
    };
    assert!(out.status.success());
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    for unit in [
        "clicktally-aggregator.service",
        "clicktally-collector.service",
    ] {
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(deploy.join(unit))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // The binaries are not installed on a build machine: only that complaint is allowed.
        let problems: Vec<&str> = err
            .lines()
            .filter(|l| !l.contains("/usr/local/bin/clicktally") && !l.trim().is_empty())
            .filter(|l| {
                !l.contains("Failed to prepare filename")
                    && !l.contains("Unit configuration has fatal error")
            })
            .collect();
        assert!(problems.is_empty(), "{unit}: {err}");
    }
}
