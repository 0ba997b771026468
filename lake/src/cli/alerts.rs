//! `lake alerts` (firing, pending and recently resolved alerts with their delivery
//! status; `--watch` refreshes) and `lake silence add|list|remove`.
//!
//! Both talk to a running lake over HTTP (`--url`, `LAKE_URL`; `--token`, `LAKE_TOKEN`:
//! a read or an alerts token to look, an alerts or admin token to add or remove silences). `lake alerts --data-dir` reads the state file of a lake that
//! is not running instead (silences need the running lake, which owns that file).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use lake_format::units::Dur;
use lake_query::alerts::state::DeliveryStatus;
use lake_query::alerts::Labels;

use crate::alerts::api::{AlertView, NewSilence, SilenceView, Snapshot};
use crate::alerts::store;

use super::query::finish;
use super::remote::{self, Remote};

/// Arguments of `lake alerts`.
#[derive(Debug, Args)]
pub(super) struct AlertsArgs {
    #[command(flatten)]
    remote: Remote,
    /// Read the state file of a lake that is not running instead of asking one.
    #[arg(long, conflicts_with = "url")]
    data_dir: Option<PathBuf>,
    /// Output: table (for people) or json (the `/v1/alerts` document).
    #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
    format: String,
    /// Redraw every `--interval` until interrupted.
    #[arg(long, short)]
    watch: bool,
    /// Refresh interval of `--watch`.
    #[arg(long, default_value = "2s")]
    interval: Dur,
}

/// `lake silence`.
#[derive(Debug, Args)]
pub(super) struct SilenceArgs {
    #[command(subcommand)]
    command: SilenceCommand,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum SilenceCommand {
    /// Hold notifications of matching alerts, e.g. `--rule uptime_down --label target=https://x/ --for 2h`.
    Add {
        /// Rule to silence (every rule if omitted; then give labels).
        #[arg(long)]
        rule: Option<String>,
        /// Label an alert must carry, `name=value`; repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// How long, e.g. 30m, 2h, 1d.
        #[arg(long = "for")]
        duration: String,
        /// Why (shown by `lake silence list`).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List silences.
    List,
    /// End a silence early.
    Remove {
        /// The id `lake silence list` shows.
        id: u64,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: use name=value")),
    }
}

/// Runs `lake alerts`.
pub(super) fn alerts(args: AlertsArgs) -> ExitCode {
    finish("alerts", run_alerts(&args))
}

/// Runs `lake silence`.
pub(super) fn silence(args: SilenceArgs) -> ExitCode {
    finish("silence", run_silence(args))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn run_alerts(args: &AlertsArgs) -> anyhow::Result<()> {
    let rt = runtime()?;
    let client = reqwest::Client::new();
    loop {
        let snap = match &args.data_dir {
            Some(dir) => {
                let path = store::path(dir);
                if !dir.join(lake_format::layout::TABLES_DIR).is_dir() {
                    bail!("{} is not a lake data directory (no tables/ inside)", dir.display());
                }
                let p = store::load(&path).with_context(|| format!("reading {}", path.display()))?;
                Snapshot::of(&p, lake_format::rows::now_micros())
            }
            None => rt.block_on(get(&client, &args.remote))?,
        };
        let text = if args.format == "json" { serde_json::to_string_pretty(&snap)? + "\n" } else { render(&snap) };
        let mut out = std::io::stdout().lock();
        if args.watch && out.is_terminal() {
            // Clear the screen and home the cursor before each redraw.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        out.write_all(text.as_bytes())?;
        out.flush()?;
        if !args.watch {
            return Ok(());
        }
        drop(out);
        std::thread::sleep(args.interval.0.max(Duration::from_millis(200)));
    }
}

async fn get(client: &reqwest::Client, r: &Remote) -> anyhow::Result<Snapshot> {
    let resp =
        r.request(client, reqwest::Method::GET, "/v1/alerts").send().await.with_context(|| unreachable_hint(&r.url))?;
    decode(resp).await
}

fn unreachable_hint(url: &str) -> String {
    format!("cannot reach the lake at {url} (is `lake serve` running? use --url, or --data-dir for a stopped lake)")
}

async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    let bytes = resp.bytes().await.context("reading the answer")?;
    remote::check(status, &bytes)?;
    serde_json::from_slice(&bytes).context("decoding the answer")
}

fn run_silence(args: SilenceArgs) -> anyhow::Result<()> {
    let rt = runtime()?;
    let client = reqwest::Client::new();
    let base = args.remote.url.trim_end_matches('/').to_string();
    let auth = |req: reqwest::RequestBuilder| remote::bearer(req, args.remote.token.as_deref());
    rt.block_on(async {
        match args.command {
            SilenceCommand::Add { rule, labels, duration, comment } => {
                let body = NewSilence { rule, labels: labels.into_iter().collect(), duration, comment };
                let req = auth(client.post(format!("{base}/v1/silences")))
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&body)?);
                let s: SilenceView = decode(req.send().await.with_context(|| unreachable_hint(&base))?).await?;
                println!("silence {} added: {} until {}", s.id, describe(&s), s.ends_at);
            }
            SilenceCommand::List => {
                let req = auth(client.get(format!("{base}/v1/silences")));
                let list: Vec<SilenceView> = decode(req.send().await.with_context(|| unreachable_hint(&base))?).await?;
                print!("{}", silences_table(&list));
            }
            SilenceCommand::Remove { id } => {
                let req = auth(client.delete(format!("{base}/v1/silences/{id}")));
                let _: serde_json::Value = decode(req.send().await.with_context(|| unreachable_hint(&base))?).await?;
                println!("silence {id} removed");
            }
        }
        Ok(())
    })
}

fn describe(s: &SilenceView) -> String {
    let rule = s.rule.as_deref().unwrap_or("any rule");
    if s.labels.is_empty() {
        rule.to_string()
    } else {
        format!("{rule} {}", labels(&s.labels))
    }
}

fn labels(l: &Labels) -> String {
    lake_query::alerts::eval::fmt_labels(l)
}

/// `2026-11-26T10:15:02.123Z` → `2026-11-26 10:15:02`.
fn short_time(t: &str) -> String {
    let t = t.replace('T', " ");
    t.split('.').next().unwrap_or(&t).trim_end_matches('Z').to_string()
}

fn deliveries(d: &BTreeMap<String, DeliveryStatus>) -> String {
    if d.is_empty() {
        return "-".into();
    }
    d.iter()
        .map(|(channel, s)| {
            let mut text = format!("{channel}: {} {}", s.kind.as_str(), s.state.as_str());
            if s.attempts > 1 {
                text.push_str(&format!(" ({} tries)", s.attempts));
            }
            if let Some(e) = &s.error {
                text.push_str(&format!(": {}", one_line(e, 60)));
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn one_line(s: &str, max: usize) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        s.chars().take(max - 1).chain(std::iter::once('…')).collect()
    } else {
        s
    }
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(width[i] - c.chars().count() + 2));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn alert_rows(alerts: &[AlertView], resolved: bool) -> Vec<Vec<String>> {
    alerts
        .iter()
        .map(|a| {
            let state = match &a.held {
                Some(h) => format!("{} ({h})", a.state),
                None => a.state.clone(),
            };
            let when = if resolved { a.resolved_at.as_deref() } else { a.since.as_deref() };
            vec![
                state,
                a.rule.clone(),
                a.severity.clone(),
                when.map(short_time).unwrap_or_else(|| "-".into()),
                a.value.map(lake_query::alerts::format_value).unwrap_or_else(|| "-".into()),
                labels(&a.labels),
                deliveries(&a.deliveries),
            ]
        })
        .collect()
}

fn silences_table(list: &[SilenceView]) -> String {
    if list.is_empty() {
        return "No silences.\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.rule.clone().unwrap_or_else(|| "*".into()),
                if s.labels.is_empty() { "-".into() } else { labels(&s.labels) },
                short_time(&s.ends_at),
                s.comment.clone(),
            ]
        })
        .collect();
    table(&["ID", "RULE", "LABELS", "UNTIL (UTC)", "COMMENT"], &rows)
}

/// The table `lake alerts` prints.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    if s.alerts.is_empty() {
        out.push_str("No alerts firing or pending.\n");
    } else {
        out.push_str(&table(
            &["STATE", "RULE", "SEVERITY", "SINCE (UTC)", "VALUE", "INSTANCE", "DELIVERY"],
            &alert_rows(&s.alerts, false),
        ));
    }
    if !s.recent.is_empty() {
        out.push_str("\nRecently resolved:\n");
        let rows = alert_rows(&s.recent[..s.recent.len().min(10)], true);
        out.push_str(&table(&["STATE", "RULE", "SEVERITY", "RESOLVED (UTC)", "VALUE", "INSTANCE", "DELIVERY"], &rows));
    }
    if !s.queue.is_empty() {
        out.push_str("\nDeliveries waiting:\n");
        let rows: Vec<Vec<String>> = s
            .queue
            .iter()
            .map(|q| {
                vec![
                    q.channel.clone(),
                    q.rule.clone(),
                    format!("{} ({} alert{})", q.status, q.alerts, if q.alerts == 1 { "" } else { "s" }),
                    q.attempts.to_string(),
                    short_time(&q.next_at),
                    q.last_error.as_deref().map(|e| one_line(e, 80)).unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        out.push_str(&table(&["CHANNEL", "RULE", "NOTIFICATION", "TRIES", "NEXT (UTC)", "LAST ERROR"], &rows));
    }
    if !s.silences.is_empty() {
        out.push_str("\nSilences:\n");
        out.push_str(&silences_table(&s.silences));
    }
    let broken: Vec<_> = s.rules.iter().filter(|r| r.error.is_some()).collect();
    if !broken.is_empty() {
        out.push_str("\nRules failing to evaluate:\n");
        for r in broken {
            out.push_str(&format!("  {}: {}\n", r.name, one_line(r.error.as_deref().unwrap_or_default(), 200)));
        }
    }
    if s.enabled == Some(false) {
        out.push_str("\nAlerting is switched off ([alerts] enabled = false).\n");
    }
    out
}

/// The alerting part of `lake check-config`.
pub(super) fn describe_config(c: &lake_query::alerts::rules::AlertsConfig) -> String {
    let mut out = String::new();
    let onoff = if c.enabled { "on" } else { "off ([alerts] enabled = false)" };
    out.push_str(&format!("  alerting        {onoff}; links to {}\n", c.external_url));
    if c.channels.is_empty() {
        out.push_str("  channels        none (alerts are recorded in the alerts table only)\n");
    }
    for ch in &c.channels {
        out.push_str(&format!("  channel         {}: {}\n", ch.name(), ch.describe()));
    }
    out.push_str(&format!(
        "  retries         {} attempts, {} doubling to {}\n",
        c.retry.attempts,
        Dur(c.retry.initial),
        Dur(c.retry.max)
    ));
    for r in &c.rules {
        let channels = if r.channels.is_empty() { "-".to_string() } else { r.channels.join(",") };
        out.push_str(&format!(
            "  rule            {}{}: value {} for {} every {}, {}, to {channels}\n",
            r.name,
            if r.builtin { " (built-in)" } else { "" },
            r.condition,
            Dur(r.for_),
            Dur(r.every),
            r.severity,
        ));
    }
    for d in &c.disabled {
        out.push_str(&format!("  rule            {d}: disabled\n"));
    }
    out
}
