//! `clicktally top`: a full-screen live table (ratatui). Sort by any column (←/→, `r` to
//! reverse), filter by URL text (`/`, Enter to apply, Esc to cancel), rows that just changed are
//! highlighted, and a status line shows the aggregator, the window, clicks per second and the
//! connection state. It reconnects on its own.

use crate::live::{follow, LiveEvent, LiveRows};
use crate::query::Conn;
use crate::render::shorten;
use crate::timearg::format_minute;
use clicktally_proto::v1::{SummaryRequest, SummaryRow, WatchRequest};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;
use std::cmp::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a changed row stays highlighted.
const HIGHLIGHT: Duration = Duration::from_secs(3);

/// The columns `top` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortColumn {
    /// The URL (or host, or domain).
    Key,
    /// Blocked.
    Blocked,
    /// Allowed.
    Allowed,
    /// PendingVerdict.
    Pending,
    /// Error.
    Error,
    /// ClickedThrough.
    Through,
    /// Total.
    Total,
}

const COLUMNS: [SortColumn; 7] = [
    SortColumn::Key,
    SortColumn::Blocked,
    SortColumn::Allowed,
    SortColumn::Pending,
    SortColumn::Error,
    SortColumn::Through,
    SortColumn::Total,
];

impl SortColumn {
    fn title(self) -> &'static str {
        match self {
            Self::Key => "Url",
            Self::Blocked => "Blocked",
            Self::Allowed => "Allowed",
            Self::Pending => "Pending",
            Self::Error => "Error",
            Self::Through => "Through",
            Self::Total => "Total",
        }
    }

    fn value(self, r: &SummaryRow) -> u64 {
        match self {
            Self::Key => 0,
            Self::Blocked => r.blocked,
            Self::Allowed => r.allowed,
            Self::Pending => r.pending_verdict,
            Self::Error => r.error,
            Self::Through => r.clicked_through,
            Self::Total => r.total,
        }
    }

    /// Orders two rows by this column.
    pub fn compare(self, a: &SummaryRow, b: &SummaryRow) -> Ordering {
        match self {
            Self::Key => a.key.cmp(&b.key),
            _ => self.value(a).cmp(&self.value(b)),
        }
    }

    fn step(self, by: isize) -> Self {
        let i = COLUMNS.iter().position(|c| *c == self).unwrap_or(0) as isize;
        COLUMNS[(i + by).rem_euclid(COLUMNS.len() as isize) as usize]
    }
}

/// What `top` shows and how.
struct View {
    endpoint: String,
    live: LiveRows,
    state: String,
    sort: SortColumn,
    ascending: bool,
    filter: String,
    editing: Option<String>,
}

fn draw(f: &mut Frame, v: &View) {
    let [status, body, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let window = if v.live.window.1 > 0 {
        let short = |ms: i64| format_minute(ms).get(5..).unwrap_or_default().to_owned();
        format!(
            "{} → {} UTC",
            short(v.live.window.0),
            short(v.live.window.1)
        )
    } else {
        "waiting".into()
    };
    let line = format!(
        " {} · {} rows · {:.1} clicks/s · {} · {}",
        v.state,
        v.live.rows.len(),
        v.live.rate(),
        window,
        v.endpoint
    );
    f.render_widget(Paragraph::new(line).style(Style::new().reversed()), status);

    let key_width = body.width.saturating_sub(6 * 8 + 1).max(16) as usize;
    let header = Row::new(COLUMNS.iter().map(|c| {
        let mark = if *c == v.sort {
            if v.ascending {
                "▲"
            } else {
                "▼"
            }
        } else {
            ""
        };
        let text = format!("{}{mark}", c.title());
        if *c == SortColumn::Key {
            Cell::from(text)
        } else {
            Cell::from(Line::from(text).right_aligned())
        }
    }))
    .style(Style::new().bold());
    let now = Instant::now();
    let rows = v.live.sorted(v.sort, v.ascending).into_iter().map(|r| {
        let fresh = v
            .live
            .changed_at
            .get(&r.key)
            .is_some_and(|t| now.duration_since(*t) < HIGHLIGHT);
        let mut cells = vec![Cell::from(shorten(&r.key, key_width))];
        cells.extend(
            COLUMNS[1..]
                .iter()
                .map(|c| Cell::from(Line::from(c.value(r).to_string()).right_aligned())),
        );
        let row = Row::new(cells);
        if fresh {
            row.style(Style::new().yellow().add_modifier(Modifier::BOLD))
        } else {
            row
        }
    });
    let mut widths = vec![Constraint::Min(key_width as u16)];
    widths.extend(std::iter::repeat_n(Constraint::Length(7), 6));
    f.render_widget(
        Table::new(rows, widths).header(header).column_spacing(1),
        body,
    );

    let help_line = match &v.editing {
        Some(text) => format!(" filter URLs containing: {text}▏  (Enter apply, Esc cancel)"),
        None if v.filter.is_empty() => {
            " q quit · ←/→ sort column · r reverse · / filter".to_string()
        }
        None => format!(
            " q quit · ←/→ sort column · r reverse · / filter · c clear  [filter: {}]",
            v.filter
        ),
    };
    f.render_widget(Paragraph::new(help_line), help);
}

/// Runs the live table until the user quits (q, Esc, Ctrl-C) or `stop` fires.
///
/// # Errors
/// When the terminal cannot be set up.
pub async fn run(conn: Conn, base: WatchRequest, stop: CancellationToken) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = run_in(&mut terminal, conn, base, stop).await;
    ratatui::restore();
    result
}

async fn run_in(
    terminal: &mut ratatui::DefaultTerminal,
    conn: Conn,
    base: WatchRequest,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let (keys_tx, mut keys) = mpsc::channel(32);
    let input_stop = stop.child_token();
    {
        let input_stop = input_stop.clone();
        std::thread::spawn(move || {
            while !input_stop.is_cancelled() {
                if event::poll(Duration::from_millis(100)).unwrap_or(false) {
                    if let Ok(ev) = event::read() {
                        if keys_tx.blocking_send(ev).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut view = View {
        endpoint: conn.endpoint.clone(),
        live: LiveRows::default(),
        state: "connecting".into(),
        sort: SortColumn::Total,
        ascending: false,
        filter: base
            .filter
            .as_ref()
            .map(|f| f.url_contains.clone())
            .unwrap_or_default(),
        editing: None,
    };
    let (mut events, mut follower) = start_follow(&conn, &base, &view.filter, &stop);
    let mut redraw = tokio::time::interval(Duration::from_millis(250));
    loop {
        terminal.draw(|f| draw(f, &view))?;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = redraw.tick() => {}
            ev = events.recv() => match ev {
                Some(LiveEvent::Connected) => view.state = "connected".into(),
                Some(LiveEvent::Update(u)) => view.live.apply(&u, Instant::now()),
                Some(LiveEvent::Disconnected(why)) => view.state = format!("reconnecting ({why})"),
                None => {}
            },
            key = keys.recv() => {
                let Some(Event::Key(k)) = key else { continue };
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                if let Some(text) = view.editing.as_mut() {
                    match k.code {
                        KeyCode::Enter => {
                            view.filter = view.editing.take().unwrap_or_default();
                            follower.cancel();
                            view.live = LiveRows::default();
                            view.state = "connecting".into();
                            (events, follower) = start_follow(&conn, &base, &view.filter, &stop);
                        }
                        KeyCode::Esc => view.editing = None,
                        KeyCode::Backspace => {
                            text.pop();
                        }
                        KeyCode::Char(c) => text.push(c),
                        _ => {}
                    }
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => break,
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => break,
                    KeyCode::Right | KeyCode::Tab => view.sort = view.sort.step(1),
                    KeyCode::Left | KeyCode::BackTab => view.sort = view.sort.step(-1),
                    KeyCode::Char('r') => view.ascending = !view.ascending,
                    KeyCode::Char('/') => view.editing = Some(view.filter.clone()),
                    KeyCode::Char('c') if !view.filter.is_empty() => {
                        view.filter.clear();
                        follower.cancel();
                        view.live = LiveRows::default();
                        (events, follower) = start_follow(&conn, &base, &view.filter, &stop);
                    }
                    _ => {}
                }
            }
        }
    }
    follower.cancel();
    input_stop.cancel();
    Ok(())
}

fn start_follow(
    conn: &Conn,
    base: &WatchRequest,
    filter: &str,
    stop: &CancellationToken,
) -> (mpsc::Receiver<LiveEvent>, CancellationToken) {
    let mut req = base.clone();
    let mut f: SummaryRequest = req.filter.take().unwrap_or_default();
    f.url_contains = filter.to_owned();
    f.limit = 0;
    req.filter = Some(f);
    let (tx, rx) = mpsc::channel(64);
    let token = stop.child_token();
    tokio::spawn(follow(conn.clone(), req, tx, token.clone()));
    (rx, token)
}
