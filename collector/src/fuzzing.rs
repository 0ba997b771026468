//! Entry points of the fuzz targets (`fuzz/` at the repository root) and of the tests
//! that replay `fixtures/fuzz-regressions/`: not an API.
//!
//! Each function feeds arbitrary bytes through a parser the way its source does (parse,
//! then the row builder, then the Arrow batch), and panics only when an invariant the
//! source relies on breaks: a parser must answer with an error or a row, never panic, and
//! a batch of parsed rows must always build.

use std::borrow::Cow;

use jiff::tz::TimeZone;

use crate::sources::caddy::CaddyRows;
use crate::sources::fail2ban;
use crate::sources::journald::parse::parse_entry;
use crate::sources::logfile::{Fail2banLines, LineParser, Parsed, UfwLines};
use crate::sources::{prometheus, tailscale, ufw};

/// A fixed "now" (2024-03-09T16:00:00Z), so a crash replays the same way on any day.
const NOW_MICROS: i64 = 1_710_000_000_000_000;
const NODE: &str = "fuzz";

/// A zone with daylight saving (gaps and folds) when the system has one, else UTC.
fn zone() -> TimeZone {
    TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::UTC)
}

fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// One Caddy access-log line: an `http` row or a counted `caddy-unparsed` row.
pub fn caddy(data: &[u8]) {
    thread_local! {
        // Built once, like the source's: the classifier compiles the bot patterns.
        static ROWS: std::cell::RefCell<CaddyRows> = std::cell::RefCell::new(CaddyRows::new());
    }
    let (parsed, (http, logs)) = ROWS.with_borrow_mut(|rows| {
        let parsed = rows.push(NODE, data, "/var/log/caddy/access.log", false, NOW_MICROS);
        (parsed, rows.finish().expect("caddy rows build"))
    });
    let n = |b: Option<arrow_array::RecordBatch>| b.map_or(0, |b| b.num_rows());
    if parsed {
        assert_eq!((n(http), n(logs)), (1, 0), "a parsed caddy line is one http row");
    } else {
        assert_eq!((n(http), n(logs)), (0, 1), "an unparsed caddy line is one logs row");
    }
}

/// One `journalctl -o json` line, routed to ufw and fail2ban as the journald source does.
pub fn journald(data: &[u8]) {
    let mut logs = lake_format::logs::LogsBuilder::new();
    let mut firewall = ufw::FirewallRows::new();
    let mut bans = fail2ban::BansRows::new();
    if let Ok(entry) = parse_entry(data) {
        if entry.is_kernel() {
            if let Some(msg) = entry.message.as_deref().filter(|m| m.contains("[UFW ")) {
                if let Ok(ev) = ufw::parse(msg) {
                    firewall.push(NODE, entry.ts, &ev);
                }
            }
        }
        if entry.is_fail2ban() {
            if let Some(msg) = entry.message.as_deref() {
                if let Ok(Some(ev)) = fail2ban::parse(msg, &zone()) {
                    bans.push(NODE, entry.ts, &ev);
                }
            }
        }
        entry.push_to(&mut logs, NODE, "journald");
    }
    logs.finish().expect("logs rows build");
    firewall.finish().expect("firewall rows build");
    bans.finish().expect("bans rows build");
}

/// One ufw line (bare kernel message or syslog-file line), as the ufw log source reads it.
pub fn ufw(data: &[u8]) {
    let mut lines = UfwLines::new(zone());
    let line = text(data);
    let row = lines.push(NODE, line.as_bytes(), NOW_MICROS);
    let batch = lines.finish().expect("firewall rows build");
    assert_eq!(batch.num_rows(), usize::from(row.is_ok()));
}

/// One fail2ban log line, as the fail2ban log source reads it.
pub fn fail2ban(data: &[u8]) {
    let mut lines = Fail2banLines::new(zone());
    let line = text(data);
    let row = lines.push(NODE, line.as_bytes(), NOW_MICROS);
    let batch = lines.finish().expect("bans rows build");
    assert_eq!(batch.num_rows(), usize::from(row == Ok(Parsed::Row)));
}

/// `tailscale status --json` and `tailscale ping` output: the first byte picks which
/// (and the ping's exit status), the rest is the output.
pub fn tailscale(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let ping = tailscale::parse_ping(&text(rest), selector & 1 == 1);
    let peers = tailscale::parse_status(rest).unwrap_or_default();
    let rows: Vec<_> = peers.iter().map(|p| tailscale::peer_row(NOW_MICROS, p, &ping)).collect();
    crate::sources::probe::to_batch(NODE, &rows).expect("probe rows build");
}

/// A Prometheus text exposition (a scrape body or a textfile).
pub fn prometheus(data: &[u8]) {
    let exposition = prometheus::parse_bytes(data);
    let extra = [("instance".to_string(), "fuzz:9100".to_string())];
    let batch = prometheus::to_batch(NODE, &exposition.samples, NOW_MICROS, &extra);
    assert_eq!(batch.num_rows(), exposition.samples.len());
}

/// A `[[log_file]]` entry of each format (and a `regex` one), built once.
fn log_file_configs() -> Vec<crate::sources::log_file::LogFileConfig> {
    #[derive(serde::Deserialize)]
    struct F {
        log_file: Vec<crate::sources::log_file::LogFileFile>,
    }
    let mut toml = String::new();
    for f in crate::sources::log_file::FORMATS {
        toml += &format!(
            "[[log_file]]\nname = \"{}\"\npaths = [\"/l\"]\nformat = \"{f}\"\ntimezone = \"Europe/Berlin\"\n",
            f.replace('_', "-")
        );
        if *f == "regex" {
            toml += "regex = '^(?P<ts>\\S+ \\S+) (?P<level>\\w+) (?P<pid>\\S+) (?P<message>.*)'\nts_format = \"%Y-%m-%d %H:%M:%S\"\n[log_file.multiline]\nstart = '^\\d'\nmax_bytes = \"1KiB\"\n";
        }
    }
    let f: F = toml::from_str(&toml).expect("fuzz log_file config");
    crate::sources::log_file::validate_all(f.log_file).expect("fuzz log_file config is valid")
}

/// A plain-text log file: the first byte picks the `[[log_file]]` format, the rest is the
/// file's lines. Every line is read as the source reads it (joined into records by the
/// format's `multiline`, then parsed or kept raw); the pending records survive a state
/// round trip unchanged, and the batches build.
pub fn log_file(data: &[u8]) {
    use crate::sources::log_file::LogFileLines;
    use crate::sources::tailed::ParsedLines;
    thread_local! {
        static CONFIGS: Vec<crate::sources::log_file::LogFileConfig> = log_file_configs();
    }
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    CONFIGS.with(|configs| {
        let config = &configs[usize::from(selector) % configs.len()];
        let mut lines = ParsedLines::with_multiline(LogFileLines::new(config), config.multiline.clone());
        for line in rest.split(|b| *b == b'\n') {
            lines.push(NODE, line, "/l", false, NOW_MICROS);
        }
        if let Some(m) = config.multiline.clone() {
            let saved = serde_json::to_string(&lines.pending()).expect("pending records serialize");
            let mut again = crate::sources::multiline::Joiner::new(m);
            again.restore(serde_json::from_str(&saved).expect("pending records read back")).expect("restore");
            assert_eq!(again.pending(), lines.pending(), "pending records survive a restart");
        }
        lines.flush(NODE);
        let records = lines.records(config.source).expect("log_file rows build");
        let rows: u64 = records.iter().map(|r| r.rows).sum();
        let single = !rest.contains(&b'\n') && !String::from_utf8_lossy(rest).trim().is_empty();
        if single {
            assert_eq!(rows, 1, "one non-blank line is one row");
        }
    });
}

/// A collector config file.
pub fn config(data: &[u8]) {
    let Ok(toml) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::Config::from_toml(toml, Some("fuzz-token-0123456789abcdef"));
}

/// Every entry point by the name of its fuzz target (and of its directory under
/// `fixtures/fuzz-regressions/`).
pub const TARGETS: &[lake_format::fuzz_regressions::Target] = &[
    ("caddy", caddy),
    ("journald", journald),
    ("ufw", ufw),
    ("fail2ban", fail2ban),
    ("tailscale", tailscale),
    ("prometheus", prometheus),
    ("collector_config", config),
    ("log_file", log_file),
    ("syslog", syslog),
];

/// A syslog TCP stream (or, with the first byte odd, one UDP datagram) through the framer
/// and the parser into `logs` rows, as the `[syslog]` source reads it. The stream (after
/// a second byte saying where) is cut in two reads, so frames cross reads. Invariants: the framer never
/// holds more than one frame can need, no frame is longer than the limit, every message
/// is one row, and the batch builds.
pub fn syslog(data: &[u8]) {
    use crate::sources::syslog::frame::Framer;
    use crate::sources::syslog::parse::{parse, Reading};
    const MAX: usize = 512;
    let Some((&mode, data)) = data.split_first() else { return };
    let reading = Reading { tz: zone(), max_skew: 86_400_000_000 };
    let mut frames = Vec::new();
    if mode & 1 == 1 {
        frames.push((data.to_vec(), false));
    } else {
        let Some((&cut, data)) = data.split_first() else { return };
        let cut = usize::from(cut).min(data.len());
        let mut f = Framer::new(MAX);
        let mut out = Vec::new();
        for part in [&data[..cut], &data[cut..]] {
            f.push(part, &mut out);
            assert!(f.buffered() <= MAX + 11, "the framer holds {} bytes", f.buffered());
        }
        f.finish(&mut out);
        for fr in out {
            assert!(!fr.bytes.is_empty() && fr.bytes.len() <= MAX, "a frame of {} bytes", fr.bytes.len());
            frames.push((fr.bytes, fr.truncated));
        }
    }
    let mut logs = lake_format::logs::LogsBuilder::new();
    for (bytes, _) in &frames {
        let m = parse(bytes, &reading, NOW_MICROS);
        let row = lake_format::logs::LogRow {
            ts: m.ts,
            host: NODE,
            source: "syslog",
            ident: m.ident.as_deref(),
            pid: m.pid,
            priority: m.priority,
            message: Some(&m.message),
            ..Default::default()
        };
        assert!(m.priority.is_none_or(|p| (0..=7).contains(&p)));
        logs.push(&row, m.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    let batch = logs.finish().expect("syslog rows build");
    assert_eq!(batch.num_rows(), frames.len(), "one row per message");
}
