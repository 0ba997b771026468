//! fail2ban → `bans`: Found, Ban, Unban, Restore Ban, Increase Ban, "already banned" and
//! jail start/stop events.
//!
//! Input is a line of `/var/log/fail2ban.log`
//! (`YYYY-MM-DD HH:MM:SS,mmm fail2ban.<logger> [pid]: LEVEL [jail] Message`, in the
//! server's local time: `[fail2ban] timezone`) or the MESSAGE of a journal entry of
//! fail2ban (`logtarget = SYSTEMD-JOURNAL`: the same text without the timestamp, with or
//! without the `fail2ban.<logger> [pid]: LEVEL` part; the time is then the journal's).
//! [`parse`] is pure: other lines (Filter added, Set maxRetry, …) are `Ok(None)`, read
//! but not an event. Today rows come from journald routing ([`crate::sources::journald`]);
//! file mode goes through the shared tailer once it lands.

use std::collections::BTreeMap;

use anyhow::Context;
use jiff::tz::TimeZone;
use lake_format::rows::TableBuilder;
use lake_format::Table;
use serde::Deserialize;

use super::zone;

/// `[fail2ban]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail2banFile {
    /// Produce `bans` rows. Default false.
    #[serde(default)]
    enabled: bool,
    /// Take fail2ban's messages from journald (needs `[journald] enabled`). Default true.
    #[serde(default = "default_true")]
    from_journald: bool,
    /// Zone of fail2ban's own timestamps. Default "local".
    #[serde(default = "default_timezone")]
    timezone: String,
    /// Log files to follow as well, e.g. `["/var/log/fail2ban.log*"]`. Default none.
    #[serde(default)]
    paths: Vec<String>,
    /// Where to start in a file never seen before: "beginning" (default) or "end".
    #[serde(default = "default_start_at")]
    start_at: crate::tail::StartAt,
}

const fn default_start_at() -> crate::tail::StartAt {
    crate::tail::StartAt::Beginning
}

const fn default_true() -> bool {
    true
}
fn default_timezone() -> String {
    "local".to_string()
}

impl Default for Fail2banFile {
    fn default() -> Self {
        Fail2banFile {
            enabled: false,
            from_journald: true,
            timezone: default_timezone(),
            paths: Vec::new(),
            start_at: default_start_at(),
        }
    }
}

/// `[fail2ban]`, validated.
#[derive(Debug, Clone)]
pub struct Fail2banConfig {
    /// Whether `bans` rows are produced.
    pub enabled: bool,
    /// Whether journald entries of fail2ban are turned into rows.
    pub from_journald: bool,
    /// Zone of the log's timestamps.
    pub timezone: TimeZone,
    /// Files to follow (`None`: no file mode).
    pub files: Option<crate::tail::TailConfig>,
}

impl Fail2banFile {
    /// Checks the section and resolves the time zone.
    pub fn validate(self) -> anyhow::Result<Fail2banConfig> {
        let timezone = zone::parse_zone(&self.timezone).map_err(anyhow::Error::msg).context("fail2ban.timezone")?;
        Ok(Fail2banConfig {
            enabled: self.enabled,
            from_journald: self.from_journald,
            timezone,
            files: super::logfile::tail_config("fail2ban", self.paths, self.start_at)?,
        })
    }
}

/// Why a line is not a fail2ban line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The line starts like a timestamp that is not a valid date.
    #[error("invalid fail2ban timestamp {0:?}")]
    BadTimestamp(String),
    /// An event keyword without its address (a truncated line).
    #[error("truncated fail2ban event: {0:?}")]
    Truncated(String),
    /// `Increase Ban` details that do not read.
    #[error("malformed Increase Ban details: {0:?}")]
    BadIncrease(String),
}

/// One event of `bans`, before `host` is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanEvent {
    /// fail2ban's own timestamp (µs, UTC), when the line carried one.
    pub ts: Option<i64>,
    /// Jail, e.g. `sshd`.
    pub jail: Option<String>,
    /// found, ban, unban, restore, increase, already_banned, jail_started, jail_stopped.
    pub action: &'static str,
    /// Address (or fail2ban id) concerned.
    pub ip: Option<String>,
    /// Ban count of an Increase Ban.
    pub ban_count: Option<i64>,
    /// logger, pid, level and event details.
    pub attrs: BTreeMap<String, String>,
}

/// Parses one line or journal message. `Ok(None)`: a fail2ban line that is not an event.
pub fn parse(line: &str, tz: &TimeZone) -> Result<Option<BanEvent>, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let mut attrs = BTreeMap::new();
    let (ts, rest) = split_timestamp(line, tz)?;
    let rest = rest.trim_start();
    let msg = match rest.strip_prefix("fail2ban.") {
        Some(after) => {
            let (logger, after) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
            // "fail2ban.filter [812]:" or, when the name fills its padding, "fail2ban.x[812]:".
            let (logger, pid_inline) = match logger.split_once('[') {
                Some((l, p)) => (l, Some(p)),
                None => (logger, None),
            };
            attrs.insert("logger".to_string(), format!("fail2ban.{logger}"));
            let mut after = after.trim_start();
            let pid_part = match pid_inline {
                Some(p) => Some(p),
                None => after.strip_prefix('[').map(|p| {
                    let (pid, tail) = p.split_once(char::is_whitespace).unwrap_or((p, ""));
                    after = tail;
                    pid
                }),
            };
            if let Some(p) = pid_part {
                let pid = p.trim_end_matches(':').trim_end_matches(']');
                attrs.insert("pid".to_string(), pid.to_string());
                if pid_inline.is_some() {
                    after = after.trim_start();
                }
            }
            let after = after.trim_start();
            let (level, msg) = after.split_once(char::is_whitespace).unwrap_or((after, ""));
            if !level.is_empty() {
                attrs.insert("level".to_string(), level.to_string());
            }
            msg.trim_start()
        }
        None => rest,
    };
    let (jail, msg) = match msg.strip_prefix('[').and_then(|m| m.split_once("] ")) {
        Some((j, m)) => (Some(j.to_string()), m.trim_start()),
        None => (None, msg),
    };
    let event = |action, ip: Option<&str>, attrs| BanEvent {
        ts,
        jail: jail.clone(),
        action,
        ip: ip.map(str::to_string),
        ban_count: None,
        attrs,
    };
    let word = |s: &str| -> Result<String, ParseError> {
        let ip = s.split_whitespace().next().unwrap_or("");
        if ip.is_empty() {
            Err(ParseError::Truncated(line.to_string()))
        } else {
            Ok(ip.to_string())
        }
    };

    if let Some(r) = msg.strip_prefix("Found ").or(if msg == "Found" { Some("") } else { None }) {
        let ip = word(r)?;
        if let Some((_, when)) = r.split_once(" - ") {
            attrs.insert("found_time".to_string(), when.trim().to_string());
        }
        return Ok(Some(event("found", Some(&ip), attrs)));
    }
    if let Some(r) = msg.strip_prefix("Restore Ban ").or(if msg == "Restore Ban" { Some("") } else { None }) {
        return Ok(Some(event("restore", Some(&word(r)?), attrs)));
    }
    if let Some(r) = msg.strip_prefix("Increase Ban ").or(if msg == "Increase Ban" { Some("") } else { None }) {
        let ip = word(r)?;
        let mut e = event("increase", Some(&ip), attrs);
        // "(2 # 2:00:00 -> 2026-11-22 12:40:00)"
        if let Some(details) = r.split_once('(').map(|(_, d)| d.trim_end().trim_end_matches(')')) {
            let bad = || ParseError::BadIncrease(line.to_string());
            let (count, times) = details.split_once('#').ok_or_else(bad)?;
            e.ban_count = Some(count.trim().parse().map_err(|_| bad())?);
            let (bantime, until) = times.split_once("->").ok_or_else(bad)?;
            e.attrs.insert("ban_time".to_string(), bantime.trim().to_string());
            e.attrs.insert("banned_until".to_string(), until.trim().to_string());
        }
        return Ok(Some(e));
    }
    if let Some(r) = msg.strip_prefix("Unban ").or(if msg == "Unban" { Some("") } else { None }) {
        return Ok(Some(event("unban", Some(&word(r)?), attrs)));
    }
    if let Some(r) = msg.strip_prefix("Ban ").or(if msg == "Ban" { Some("") } else { None }) {
        return Ok(Some(event("ban", Some(&word(r)?), attrs)));
    }
    if let Some(ip) = msg.strip_suffix(" already banned") {
        return Ok(Some(event("already_banned", Some(&word(ip)?), attrs)));
    }
    if let Some(r) = msg.strip_prefix("Jail '") {
        if let Some((name, state)) = r.split_once("' ") {
            let action = match state.trim() {
                "started" => "jail_started",
                "stopped" => "jail_stopped",
                _ => return Ok(None),
            };
            let mut e = event(action, None, attrs);
            e.jail = Some(name.to_string());
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// Splits `YYYY-MM-DD HH:MM:SS,mmm ` off the line when it starts with one.
fn split_timestamp<'a>(line: &'a str, tz: &TimeZone) -> Result<(Option<i64>, &'a str), ParseError> {
    let b = line.as_bytes();
    let shape = b.len() >= 23
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b','
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22].iter().all(|&i| b[i].is_ascii_digit());
    if !shape {
        return Ok((None, line));
    }
    let n = |r: std::ops::Range<usize>| line[r].parse::<i32>().unwrap_or(-1);
    let bad = || ParseError::BadTimestamp(line[..23].to_string());
    let narrow = |v: i32| i8::try_from(v).map_err(|_| bad());
    let ts = zone::civil_micros(
        tz,
        i16::try_from(n(0..4)).map_err(|_| bad())?,
        narrow(n(5..7))?,
        narrow(n(8..10))?,
        narrow(n(11..13))?,
        narrow(n(14..16))?,
        narrow(n(17..19))?,
        n(20..23) * 1000,
    )
    .ok_or_else(bad)?;
    Ok((Some(ts), &line[23..]))
}

/// Accumulates `bans` rows.
#[derive(Debug)]
pub struct BansRows {
    b: TableBuilder,
    cols: [usize; 7],
}

impl Default for BansRows {
    fn default() -> Self {
        Self::new()
    }
}

impl BansRows {
    /// An empty batch.
    pub fn new() -> Self {
        let b = TableBuilder::new(Table::Bans);
        let c = |n: &str| b.column(n).expect("bans column in the catalog");
        let cols = [c("ts"), c("host"), c("jail"), c("action"), c("ip"), c("ban_count"), c("attrs")];
        BansRows { b, cols }
    }

    /// Adds an event; `ts` is used when the event carries none (journal time).
    pub fn push(&mut self, host: &str, fallback_ts: i64, e: &BanEvent) {
        let [ts, h, jail, action, ip, count, attrs] = self.cols;
        self.b.ts(ts, e.ts.unwrap_or(fallback_ts));
        self.b.text(h, Some(host));
        self.b.text(jail, e.jail.as_deref());
        self.b.text(action, Some(e.action));
        self.b.text(ip, e.ip.as_deref());
        self.b.int(count, e.ban_count);
        self.b.map(attrs, e.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.b.end_row();
    }
}

crate::sources::rows_deref!(BansRows);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_line_with_padding_and_journal_message_without_prefix() {
        let tz = TimeZone::UTC;
        let e = parse("2026-11-22 10:15:03,002 fail2ban.actions        [812]: NOTICE  [sshd] Ban 203.0.113.7", &tz)
            .unwrap()
            .unwrap();
        assert_eq!(e.action, "ban");
        assert_eq!(e.jail.as_deref(), Some("sshd"));
        assert_eq!(e.ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(e.ts, zone::rfc3339_micros("2026-11-22T10:15:03.002Z"));
        assert_eq!(e.attrs["pid"], "812");
        assert_eq!(e.attrs["level"], "NOTICE");
        let j = parse("[sshd] Unban 203.0.113.7", &tz).unwrap().unwrap();
        assert_eq!((j.action, j.ts), ("unban", None));
        let k = parse("fail2ban.actions        [812]: NOTICE  [sshd] Ban 2001:db8::1", &tz).unwrap().unwrap();
        assert_eq!(k.ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(
            parse("2026-11-22 10:15:03,002 fail2ban.filter [1]: INFO    [sshd] Set maxRetry = 5", &tz),
            Ok(None)
        );
        assert!(parse("2026-13-22 10:15:03,002 fail2ban.filter [1]: INFO    x", &tz).is_err());
        assert!(parse("2026-11-22 10:15:03,002 fail2ban.actions [1]: NOTICE  [sshd] Ban", &tz).is_err());
    }
}
