//! `lake logs`: the fleet's log lines without writing SQL, like `journalctl` for every
//! node at once (`--host`, `--unit`, `--priority`, `--since`, `--grep`, `-n`, `-f`).
//!
//! It runs the lake's named query [`LOGS`] through `/v1/sql` (the web UI's Logs page and
//! the Grafana `logs` dashboard run the same one), every filter a template variable bound
//! as a parameter, so no argument can change the SQL.
//!
//! # Pages
//!
//! The query answers newest first, at most `limit` lines, ordered by `ts` and then by the
//! other columns, so lines of one instant come in the same order every time. The next
//! page asks for lines at or before (`before`) the oldest instant of the previous one
//! and skips the lines of that instant it already has ([`Page::after`]).
//!
//! # Following
//!
//! `-f` polls every `--interval` for the lines of the last `--follow-window` ([`Follow`]).
//! A line is printed once: the follower remembers how many times it has printed each
//! distinct line (every column, attrs included) of the window, and prints a line only as
//! often as it now occurs beyond that. So lines sharing a timestamp, identical lines, and
//! lines arriving late for an earlier instant (a collector's buffer drained after an
//! outage) are each printed exactly once, as long as they arrive within the window; a
//! line older than the window when it reaches the lake is not printed by `-f` (ask for
//! it with `--since`/`--until`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use lake_query::named::LOGS;
use serde_json::{Map, Value};

use super::query::finish;
use super::remote::{self, Remote};

/// Lines asked for per request.
const PAGE: usize = 1000;

/// How far into the future `-f` asks, for hosts whose clocks run ahead of this one.
const FUTURE_MS: i64 = 3_600_000;

/// Arguments of `lake logs`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  lake logs --since 10m                       the last 10 minutes, newest 100 lines
  lake logs -u nginx -p warning -f            nginx's warnings and worse, then follow
  lake logs --host web-1 --grep 'timeout' -n 500
  lake logs --source docker --unit postgres --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z
  lake logs -o json --since 1h | jq .message")]
pub(super) struct LogsArgs {
    /// Only lines of this host (repeat for several).
    #[arg(long, short = 'H')]
    host: Vec<String>,
    /// Only lines of this unit: a systemd unit (`nginx` matches `nginx.service`), an OTLP
    /// service, or a compose service / container name for Docker logs (repeat for several).
    #[arg(long, short)]
    unit: Vec<String>,
    /// Only lines of this source: journald, docker, otlp, a `[[log_file]]` name, ...
    /// (repeat for several).
    #[arg(long)]
    source: Vec<String>,
    /// Only lines of this priority or more urgent, as `journalctl -p`: emerg, alert, crit,
    /// err, warning, notice, info, debug, or 0-7. Lines without a priority count as info.
    #[arg(long, short, value_parser = parse_priority)]
    priority: Option<u8>,
    /// Only lines whose message contains this text, ignoring case. Plain text, not a
    /// regular expression: `.`, `*`, `%` and `_` match themselves.
    #[arg(long, short)]
    grep: Option<String>,
    /// Start: a duration back from now (30s, 10m, 2h, 7d) or an RFC 3339 time
    /// (2026-12-01T08:00:00Z).
    #[arg(long, short = 'S', default_value = "7d", value_parser = parse_time)]
    since: TimeArg,
    /// End, as --since (default: now).
    #[arg(long, short = 'U', value_parser = parse_time, conflicts_with = "follow")]
    until: Option<TimeArg>,
    /// How many of the newest lines to show (printed oldest first).
    #[arg(long, short = 'n', default_value_t = 100)]
    lines: usize,
    /// Keep printing lines as they arrive (polling the lake).
    #[arg(long, short)]
    follow: bool,
    /// With -f: how often to ask the lake.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// With -f: lines are printed when they reach the lake up to this long after their own
    /// time (a collector catching up after an outage); later ones only with --since.
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    follow_window: Duration,
    /// Output: short (`time host unit[pid]: message`, priority coloured on a terminal) or
    /// json (one object per line, every column).
    #[arg(long, short, value_enum, default_value_t = Output::Short)]
    output: Output,
    #[command(flatten)]
    remote: Remote,
}

/// How lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Short,
    Json,
}

/// A point in time given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeArg {
    /// This long before now, milliseconds.
    Ago(u64),
    /// This instant, epoch microseconds.
    At(i64),
}

impl TimeArg {
    fn micros(self, now_us: i64) -> i64 {
        match self {
            TimeArg::Ago(ms) => now_us.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1000)),
            TimeArg::At(us) => us,
        }
    }
}

fn parse_time(s: &str) -> Result<TimeArg, String> {
    if let Some(ms) = lake_query::grafana::macros::parse_duration_ms(s) {
        return Ok(TimeArg::Ago(ms));
    }
    match s.parse::<jiff::Timestamp>() {
        Ok(t) => Ok(TimeArg::At(t.as_microsecond())),
        Err(_) => Err("neither a duration (30s, 10m, 2h, 7d) nor an RFC 3339 time (2026-12-01T08:00:00Z)".into()),
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    lake_query::grafana::macros::parse_duration_ms(s)
        .map(Duration::from_millis)
        .ok_or_else(|| "not a duration (500ms, 1s, 2m)".to_string())
}

const PRIORITIES: [&str; 8] = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"];

fn parse_priority(s: &str) -> Result<u8, String> {
    let lower = s.to_ascii_lowercase();
    let alias = match lower.as_str() {
        "error" => "err",
        "warn" => "warning",
        "emergency" => "emerg",
        "critical" => "crit",
        other => other,
    };
    if let Some(i) = PRIORITIES.iter().position(|p| *p == alias) {
        return Ok(i as u8);
    }
    match s.parse::<u8>() {
        Ok(n) if n <= 7 => Ok(n),
        _ => Err(format!("use one of {} or 0-7", PRIORITIES.join(", "))),
    }
}

/// One line as the SQL API's JSON answered it.
#[derive(Debug, Clone)]
struct Line {
    ts_us: i64,
    /// Every column, in the query's order: what tells lines apart.
    key: String,
    fields: Map<String, Value>,
}

/// The filter and range of one request.
#[derive(Debug)]
struct Request<'a> {
    args: &'a LogsArgs,
    from_us: i64,
    to_us: i64,
}

/// A page of lines, newest first.
#[derive(Debug, Default)]
struct Page {
    lines: Vec<Line>,
    /// The lake cut the answer at its row limit.
    truncated: bool,
}

impl Page {
    /// The lines of `next` (asked `before` the oldest instant of `self`, inclusive) that
    /// `self` does not already hold: those of that instant are skipped as many times as
    /// `self` ends with them.
    fn after(&self, next: Vec<Line>) -> Vec<Line> {
        let Some(oldest) = self.lines.last().map(|l| l.ts_us) else {
            return next;
        };
        let have = self.lines.iter().rev().take_while(|l| l.ts_us == oldest).count();
        let mut skip = have;
        next.into_iter()
            .filter(|l| {
                if skip > 0 && l.ts_us == oldest {
                    skip -= 1;
                    false
                } else {
                    true
                }
            })
            .collect()
    }
}

/// The HTTP side: one client and runtime for every request of the command.
struct Lake<'a> {
    remote: &'a Remote,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Lake<'_> {
    /// Up to `limit` lines of `req`, newest first, at or before `before` (epoch µs).
    fn page(&self, req: &Request<'_>, limit: usize, before: Option<i64>) -> anyhow::Result<Page> {
        let a = req.args;
        let any = |v: &[String]| if v.is_empty() { vec![String::new()] } else { v.to_vec() };
        let priority = match a.priority {
            Some(p) => (0..=p).map(|n| n.to_string()).collect(),
            None => vec![String::new()],
        };
        let before = match before {
            Some(us) => jiff::Timestamp::from_microsecond(us).context("time out of range")?.to_string(),
            None => String::new(),
        };
        let body = serde_json::json!({
            "query": LOGS,
            "from": req.from_us.div_euclid(1000),
            "to": req.to_us.div_euclid(1000) + 1,
            "format": "json",
            "vars": {
                "host": any(&a.host),
                "unit": any(&a.unit),
                "source": any(&a.source),
                "priority": priority,
                "grep": [a.grep.clone().unwrap_or_default()],
                "before": [before],
                "limit": [limit.to_string()],
            },
        });
        let answer: Value = self.rt.block_on(async {
            let resp = self
                .remote
                .request(&self.client, reqwest::Method::POST, "/v1/sql")
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await
                .with_context(|| {
                    format!("cannot reach the lake at {} (is `lake serve` running? use --url)", self.remote.url)
                })?;
            let status = resp.status();
            let bytes = resp.bytes().await.context("reading the answer")?;
            remote::check(status, &bytes)?;
            serde_json::from_slice::<Value>(&bytes).context("the lake's answer is not JSON")
        })?;
        if let Some(e) = answer.get("error").and_then(Value::as_str) {
            bail!("the lake failed mid-answer: {e}");
        }
        let names: Vec<String> = answer["columns"]
            .as_array()
            .context("no columns in the answer")?
            .iter()
            .map(|c| c["name"].as_str().unwrap_or_default().to_string())
            .collect();
        let mut lines = Vec::new();
        for row in answer["rows"].as_array().context("no rows in the answer")? {
            let cells = row.as_array().context("a row is not an array")?;
            let ts = cells.first().and_then(Value::as_str).context("a row without ts")?;
            let ts_us = ts.parse::<jiff::Timestamp>().with_context(|| format!("ts {ts:?}"))?.as_microsecond();
            let fields: Map<String, Value> = names.iter().cloned().zip(cells.iter().cloned()).collect();
            lines.push(Line { ts_us, key: row.to_string(), fields });
        }
        let truncated = answer["truncated"].as_bool().unwrap_or(false);
        Ok(Page { lines, truncated })
    }

    /// The newest `n` lines of `req`, newest first, over as many pages as the lake's row
    /// limit needs.
    fn newest(&self, req: &Request<'_>, n: usize) -> anyhow::Result<Vec<Line>> {
        let mut all = Page::default();
        // The lake's row limit, once an answer shows it.
        let mut cap = usize::MAX;
        while all.lines.len() < n {
            let before = all.lines.last().map(|l| l.ts_us);
            let tail = all.lines.iter().rev().take_while(|l| Some(l.ts_us) == before).count();
            let want = (tail + PAGE.min(n - all.lines.len())).min(cap);
            let page = self.page(req, want, before)?;
            if page.truncated {
                cap = page.lines.len().max(1);
            }
            let full = page.truncated || page.lines.len() >= want;
            let fresh = all.after(page.lines);
            if fresh.is_empty() {
                if full {
                    bail!(
                        "more than {want} lines share the instant {}: the lake's row limit ([query] max_rows) is too low to page through them",
                        all.lines.last().map(|l| l.fields["ts"].to_string()).unwrap_or_default()
                    );
                }
                break;
            }
            all.lines.extend(fresh);
            if !full {
                break;
            }
        }
        all.lines.truncate(n);
        Ok(all.lines)
    }
}

/// What `-f` has printed of the lines of its window (see the module docs).
#[derive(Debug, Default)]
struct Follow {
    /// Distinct line → (times printed, its ts).
    printed: HashMap<String, (usize, i64)>,
    /// Lines before this instant are never printed (they were before the first page, or
    /// have left the window).
    floor_us: i64,
}

impl Follow {
    /// Starts after `shown` (the first page, newest first): its lines count as printed,
    /// and nothing older than `floor_us` is printed.
    fn new(shown: &[Line], floor_us: i64) -> Follow {
        let mut f = Follow { printed: HashMap::new(), floor_us };
        for l in shown {
            f.printed.entry(l.key.clone()).or_insert((0, l.ts_us)).0 += 1;
        }
        f
    }

    /// The lines of a poll (every line at or after `window_us`, newest first) not printed
    /// yet, oldest first; forgets what is older than `window_us`.
    fn poll(&mut self, lines: Vec<Line>, window_us: i64) -> Vec<Line> {
        let floor = self.floor_us.max(window_us);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        for l in lines.iter().rev().filter(|l| l.ts_us >= floor) {
            let n = seen.entry(l.key.as_str()).or_insert(0);
            *n += 1;
            let done = self.printed.get(&l.key).map_or(0, |p| p.0);
            if *n > done {
                out.push(l.clone());
            }
        }
        for l in &out {
            self.printed.entry(l.key.clone()).or_insert((0, l.ts_us)).0 += 1;
        }
        self.printed.retain(|_, (_, ts)| *ts >= floor);
        self.floor_us = floor;
        out.sort_by_key(|l| l.ts_us);
        out
    }
}

/// Where `-f` starts after printing `first` (the newest `lines` of the range from
/// `from_us`, newest first): a page cut at `-n` left older lines out on purpose, and
/// `-n 0` asks for new lines only, as `journalctl -n 0 -f` does.
fn follow_floor(first: &[Line], lines: usize, from_us: i64, now_us: i64) -> i64 {
    match first.last() {
        _ if lines == 0 => now_us,
        Some(l) if first.len() >= lines => l.ts_us,
        _ => from_us,
    }
}

/// Runs `lake logs`.
pub(super) fn run(args: LogsArgs) -> ExitCode {
    finish("logs", logs(&args))
}

fn logs(args: &LogsArgs) -> anyhow::Result<()> {
    let lake = Lake {
        remote: &args.remote,
        client: reqwest::Client::new(),
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
    };
    let now = lake_format::rows::now_micros();
    let from_us = args.since.micros(now);
    let to_us = args.until.map_or(now, |u| u.micros(now));
    if from_us >= to_us {
        bail!("--since must be before --until (or now)");
    }
    let colour = args.output == Output::Short && std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let first = lake.newest(&Request { args, from_us, to_us }, args.lines)?;
    for l in first.iter().rev() {
        print_line(&mut out, l, args.output, colour)?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    let mut follow = Follow::new(&first, follow_floor(&first, args.lines, from_us, now));
    let window_us = i64::try_from(args.follow_window.as_micros()).unwrap_or(i64::MAX);
    loop {
        std::thread::sleep(args.interval);
        let now = lake_format::rows::now_micros();
        let from = follow.floor_us.max(now - window_us);
        let req = Request { args, from_us: from, to_us: now + FUTURE_MS * 1000 };
        let lines = lake.newest(&req, usize::MAX)?;
        for l in follow.poll(lines, from) {
            print_line(&mut out, &l, args.output, colour)?;
        }
        out.flush()?;
    }
}

fn print_line(out: &mut impl Write, line: &Line, output: Output, colour: bool) -> std::io::Result<()> {
    match output {
        Output::Json => writeln!(out, "{}", Value::Object(line.fields.clone())),
        Output::Short => writeln!(out, "{}", short(line, colour)),
    }
}

/// `2026-12-07T04:56:22.123Z host unit[pid]: message`, continuation lines indented like
/// journalctl's, control characters escaped (a message cannot drive the terminal).
fn short(line: &Line, colour: bool) -> String {
    let f = &line.fields;
    let text = |k: &str| f.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let ts = jiff::Timestamp::from_microsecond(line.ts_us)
        .map(|t| format!("{}.{:03}Z", t.strftime("%Y-%m-%dT%H:%M:%S"), line.ts_us.rem_euclid(1_000_000) / 1000))
        .unwrap_or_default();
    let host = text("host").unwrap_or("-");
    let unit = text("unit").or_else(|| text("ident")).or_else(|| text("source")).unwrap_or("-");
    let pid = f.get("pid").and_then(Value::as_i64).map(|p| format!("[{p}]")).unwrap_or_default();
    let message = escape(text("message").unwrap_or(""));
    let prefix = format!("{ts} {} {}{pid}: ", escape(host), escape(unit));
    let message = message.replace('\n', &format!("\n{}", " ".repeat(prefix.chars().count())));
    let priority = f.get("priority").and_then(Value::as_i64);
    let (on, off) = match (colour, priority) {
        (true, Some(0..=3)) => ("\x1b[1;31m", "\x1b[0m"),
        (true, Some(4)) => ("\x1b[1;33m", "\x1b[0m"),
        (true, Some(5)) => ("\x1b[1m", "\x1b[0m"),
        (true, Some(7)) => ("\x1b[2m", "\x1b[0m"),
        _ => ("", ""),
    };
    format!("{prefix}{on}{message}{off}")
}

/// Control characters but newline as `\x..` / `\u{..}`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts_us: i64, msg: &str) -> Line {
        let mut fields = Map::new();
        fields.insert("ts".into(), Value::from(ts_us));
        fields.insert("message".into(), Value::from(msg));
        Line { ts_us, key: format!("{ts_us}|{msg}"), fields }
    }

    fn messages(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.fields["message"].as_str().unwrap().to_string()).collect()
    }

    #[test]
    fn times_and_priorities_parse_and_bad_ones_say_what_they_want() {
        assert_eq!(parse_time("10m"), Ok(TimeArg::Ago(600_000)));
        assert_eq!(parse_time("2h"), Ok(TimeArg::Ago(7_200_000)));
        assert_eq!(parse_time("2026-12-01T08:00:00Z"), Ok(TimeArg::At(1_796_112_000_000_000)));
        assert!(parse_time("10 minutes").unwrap_err().contains("RFC 3339"));
        assert!(parse_time("").is_err());
        assert_eq!(parse_priority("err"), Ok(3));
        assert_eq!(parse_priority("WARNING"), Ok(4));
        assert_eq!(parse_priority("7"), Ok(7));
        assert!(parse_priority("8").unwrap_err().contains("emerg"));
        assert_eq!(TimeArg::Ago(1).micros(5_000), 4_000);
    }

    #[test]
    fn a_page_skips_the_lines_of_the_boundary_instant_it_already_has() {
        let first = Page { lines: vec![line(9, "a"), line(5, "b"), line(5, "c")], truncated: false };
        let next = vec![line(5, "b"), line(5, "c"), line(5, "d"), line(4, "e")];
        assert_eq!(messages(&first.after(next)), ["d", "e"]);
    }

    #[test]
    fn follow_starts_after_what_the_first_page_showed() {
        let first = [line(9, "b"), line(7, "a")];
        assert_eq!(follow_floor(&first, 2, 1, 100), 7, "a page cut at -n");
        assert_eq!(follow_floor(&first, 5, 1, 100), 1, "the whole range was shown");
        assert_eq!(follow_floor(&[], 0, 1, 100), 100, "-n 0: new lines only");
    }

    #[test]
    fn follow_prints_every_line_once_even_late_or_repeated() {
        // The first page showed two identical lines at t=10.
        let mut f = Follow::new(&[line(10, "x"), line(10, "x")], 0);
        // A third identical line arrives, and another at the same instant (oldest first, in
        // the lake's order reversed within an instant).
        let got = f.poll(vec![line(11, "z"), line(10, "x"), line(10, "y"), line(10, "x"), line(10, "x")], 0);
        assert_eq!(messages(&got), ["y", "x", "z"]);
        // Nothing new: nothing printed.
        assert!(f.poll(vec![line(11, "z"), line(10, "x"), line(10, "y"), line(10, "x"), line(10, "x")], 0).is_empty());
        // A line arrives late for t=10, after t=11 was printed.
        let got = f
            .poll(vec![line(11, "z"), line(10, "late"), line(10, "x"), line(10, "y"), line(10, "x"), line(10, "x")], 0);
        assert_eq!(messages(&got), ["late"]);
        // The window moves past t=10: those lines are forgotten and never printed again.
        let got = f.poll(vec![line(12, "w"), line(11, "z")], 11);
        assert_eq!(messages(&got), ["w"]);
        assert!(f.printed.values().all(|(_, ts)| *ts >= 11));
        // A line older than the window is not printed.
        assert!(f.poll(vec![line(12, "w"), line(10, "too late")], 11).is_empty());
    }

    #[test]
    fn short_lines_escape_control_characters_and_colour_only_when_asked() {
        let mut l = line(1_796_112_000_123_000, "bad \x1b[31mred\x1b[0m\nsecond");
        l.fields.insert("host".into(), Value::from("web-1"));
        l.fields.insert("unit".into(), Value::from("nginx.service"));
        l.fields.insert("pid".into(), Value::from(42));
        l.fields.insert("priority".into(), Value::from(3));
        let plain = short(&l, false);
        let prefix = "2026-12-01T08:00:00.123Z web-1 nginx.service[42]: ";
        let indent = " ".repeat(prefix.len());
        assert_eq!(plain, format!("{prefix}bad \\u{{1b}}[31mred\\u{{1b}}[0m\n{indent}second"));
        assert!(short(&l, true).contains("\x1b[1;31mbad"));
    }
}
