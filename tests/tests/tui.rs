//! `clicktally top` and `clicktally demo` in a real terminal: tmux runs them, `send-keys` types,
//! `capture-pane` reads the screen.

use clicktally_aggregator::ManualClock;
use clicktally_tests::{binary, click, push, TestAggregator};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn tmux_available() -> bool {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("tmux is not installed: .ci/run installs it; this test needs a real terminal");
    }
    ok
}

/// A tmux session running `cmd`, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn start(name: &str, cmd: &str) -> Self {
        let name = format!("{name}-{}", std::process::id());
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "110",
                "-y",
                "30",
                cmd,
            ])
            .status()
            .unwrap();
        assert!(status.success());
        Self(name)
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen with its colour and bold escapes.
    fn screen_styled(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-e", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend_from_slice(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }

    /// Waits (bounded) until the screen satisfies `pred`; returns it.
    fn until(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

/// The line of the screen that shows `url` (without its scheme), split into words.
fn row<'a>(screen: &'a str, url: &str) -> Vec<&'a str> {
    screen
        .lines()
        .find(|l| l.contains(url))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_sorts_filters_and_highlights_live_counts() {
    if !tmux_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let now = now_ms();
    let agg = TestAggregator::start(&tmp.path().join("agg"), Arc::new(ManualClock::new(now))).await;
    let e = agg.endpoint();
    push(
        &e,
        "c",
        1,
        vec![
            click(
                "1",
                "https://evil.example/login",
                "ClickBlocked",
                now - 60_000,
            ),
            click(
                "2",
                "https://evil.example/login",
                "ClickBlocked",
                now - 60_000,
            ),
            click(
                "3",
                "https://fine.example/doc",
                "ClickAllowed",
                now - 60_000,
            ),
        ],
    )
    .await;
    let top = Tmux::start(
        "top",
        &format!(
            "{} top --aggregator {e} --interval 200ms",
            binary("clicktally").display()
        ),
    );
    let screen = tokio::task::block_in_place(|| {
        top.until("both rows", |s| {
            s.contains("evil.example/login") && s.contains("fine.example/doc")
        })
    });
    assert_eq!(
        row(&screen, "evil.example/login")[1..],
        ["2", "0", "0", "0", "0", "2"]
    );
    assert!(screen.contains("connected"), "{screen}");
    assert!(screen.contains("Total▼"), "{screen}");

    // A new click: the count moves and the row is highlighted (bold, yellow).
    push(
        &e,
        "c",
        4,
        vec![click(
            "4",
            "https://fine.example/doc",
            "ClickAllowed",
            now - 30_000,
        )],
    )
    .await;
    let screen = tokio::task::block_in_place(|| {
        top.until("the new count", |s| {
            row(s, "fine.example/doc").get(2) == Some(&"2")
        })
    });
    assert_eq!(
        row(&screen, "fine.example/doc")[1..],
        ["0", "2", "0", "0", "0", "2"]
    );
    let styled = top.screen_styled();
    let line = styled
        .lines()
        .find(|l| l.contains("fine.example/doc"))
        .unwrap();
    assert!(
        line.contains("\u{1b}[1m") || line.contains(";1m") || line.contains("[1;"),
        "highlighted: {line:?}"
    );

    // Sort by URL (→ wraps from Total to Url), then reverse.
    top.keys(&["Right"]);
    let screen = tokio::task::block_in_place(|| top.until("sort by Url", |s| s.contains("Url▼")));
    let order: Vec<usize> = ["fine.example", "evil.example"]
        .iter()
        .map(|u| screen.find(u).unwrap())
        .collect();
    assert!(
        order[0] < order[1],
        "descending by URL: fine before evil\n{screen}"
    );
    top.keys(&["r"]);
    let screen = tokio::task::block_in_place(|| top.until("ascending", |s| s.contains("Url▲")));
    assert!(screen.find("evil.example").unwrap() < screen.find("fine.example").unwrap());

    // Filter box.
    top.keys(&["/"]);
    top.keys(&["-l", "evil"]);
    top.keys(&["Enter"]);
    let screen = tokio::task::block_in_place(|| {
        top.until("the filter", |s| {
            s.contains("[filter: evil]")
                && s.contains("evil.example/login")
                && !s.contains("fine.example")
        })
    });
    assert_eq!(
        row(&screen, "evil.example/login")[1..],
        ["2", "0", "0", "0", "0", "2"]
    );

    top.keys(&["q"]);
    tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while top.alive() {
            assert!(Instant::now() < deadline, "top did not quit on q");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    agg.shutdown().await;
}

#[test]
fn the_demo_shows_a_live_changing_table() {
    if !tmux_available() {
        return;
    }
    let demo = Tmux::start(
        "demo",
        &binary("clicktally")
            .display()
            .to_string()
            .replace("clicktally", "clicktally demo"),
    );
    let total = |s: &str| {
        row(s, "login-microsoftonline")
            .last()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The samples (25 clicks on this URL) are read first; then the live feed adds more.
    let first = demo.until("the sample rows", |s| {
        s.contains("connected") && total(s) >= 25
    });
    let before: u64 = first
        .lines()
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum();
    let later = demo.until("new clicks from the live feed", |s| {
        s.lines()
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>()
            > before + 3
    });
    assert!(later.contains("clicks/s"));
    demo.keys(&["q"]);
}
