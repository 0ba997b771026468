//! The `logs` formats of `[[log_file]]`: a record's first line matched against a list of
//! regexes whose named captures become the columns of one `logs` row.
//!
//! In: a record (one line, or several joined by [`super::super::multiline`]). Out: a
//! [`LogRow`] and its attrs, or why the record is not of the format. The first pattern
//! whose regex matches the first line wins; the record's other lines follow the `message`
//! capture (after `\n`), each with the pattern's `strip` prefix removed when it has one
//! (PostgreSQL repeats its prefix on `DETAIL:` and `HINT:` lines).
//!
//! Captures: `ts` (parsed with the pattern's [`TsFormat`]; the read time without it),
//! `zone` (the zone of a `ts` written without offset: `UTC`, `+02:00` or an IANA name;
//! the section's `timezone` otherwise), `level` (a level word → `priority`, see
//! [`priority_of`]; kept in attrs `level` when the word is unknown), `priority` (0–7),
//! `pri` (a syslog PRI: priority = pri % 8, attrs `facility` = pri / 8), `message`
//! (required), `unit`, `ident`, `pid` (an integer, else kept in attrs). Every other
//! capture goes to attrs under its name. A capture that is empty or `-` (syslog's and
//! Apache's "no value") is left out, but `message`, which stays as written.
//!
//! The presets are lists of such patterns ([`preset`]); `format = "regex"` is a list of
//! one, the user's.

use std::borrow::Cow;

use jiff::tz::TimeZone;
use lake_format::logs::LogRow;
use regex::Regex;

/// How a `ts` capture reads.
#[derive(Debug, Clone)]
pub enum TsFormat {
    /// RFC 3339 with its offset, or an ISO 8601 date and time without one (`T` or a space
    /// between; fraction after `.` or `,`), taken in the zone.
    Auto,
    /// The classic syslog `Nov 22 10:15:01`: no year (the one that puts it at most a day
    /// ahead of the read time) and no zone.
    Syslog,
    /// Seconds since the epoch, with an optional fraction.
    Unix,
    /// A jiff strftime format; without `%z`/`%Z`/`%Q` in the zone, without a year like
    /// [`TsFormat::Syslog`].
    Strftime(String),
}

impl TsFormat {
    /// A `ts_format` config value: `auto`, `syslog`, `unix` or a strftime format (checked
    /// by formatting a sample time with it).
    pub fn parse(value: &str) -> Result<TsFormat, String> {
        match value {
            "auto" => Ok(TsFormat::Auto),
            "syslog" => Ok(TsFormat::Syslog),
            "unix" => Ok(TsFormat::Unix),
            f if !f.contains('%') => Err(format!(
                "ts_format = {f:?}: use \"auto\", \"syslog\", \"unix\" or a strftime format like \"%Y-%m-%d %H:%M:%S\""
            )),
            f => {
                let sample = jiff::Timestamp::UNIX_EPOCH.to_zoned_datetime(TimeZone::UTC);
                jiff::fmt::strtime::format(f, &sample).map_err(|e| format!("ts_format = {f:?}: {e}"))?;
                Ok(TsFormat::Strftime(f.to_string()))
            }
        }
    }

    /// `s` as µs since the epoch; `tz` for times without an offset, `now` (µs) for times
    /// without a year.
    pub fn read(&self, s: &str, tz: &TimeZone, now: i64) -> Result<i64, String> {
        let bad = |why: &dyn std::fmt::Display| format!("ts {s:?}: {why}");
        match self {
            TsFormat::Auto => {
                if let Ok(t) = s.parse::<jiff::Timestamp>() {
                    return Ok(t.as_microsecond());
                }
                let civil = s.replacen(',', ".", 1);
                let dt = civil.parse::<jiff::civil::DateTime>().map_err(|e| bad(&e))?;
                in_zone(dt, tz).ok_or_else(|| bad(&"not a time in the zone"))
            }
            TsFormat::Syslog => {
                let squeezed = s.split_whitespace().collect::<Vec<_>>().join(" ");
                yearless(&squeezed, "%b %d %H:%M:%S", tz, now).map_err(|e| bad(&e))
            }
            TsFormat::Unix => {
                let secs: f64 = s.parse().map_err(|_| bad(&"not a number of seconds"))?;
                let micros = (secs * 1e6).round();
                if !micros.is_finite() || micros.abs() > 1e17 {
                    return Err(bad(&"out of range"));
                }
                Ok(micros as i64)
            }
            TsFormat::Strftime(f) => yearless(s, f, tz, now).map_err(|e| bad(&e)),
        }
    }
}

/// A civil time in `tz`, DST resolved like [`crate::sources::zone`].
fn in_zone(dt: jiff::civil::DateTime, tz: &TimeZone) -> Option<i64> {
    Some(tz.to_ambiguous_timestamp(dt).compatible().ok()?.as_microsecond())
}

/// Parses `s` with strftime `f`; a time without offset is taken in `tz`, one without a
/// year in the year that puts it at most a day after `now`.
fn yearless(s: &str, f: &str, tz: &TimeZone, now: i64) -> Result<i64, String> {
    let mut tm = jiff::fmt::strtime::parse(f, s).map_err(|e| e.to_string())?;
    if tm.offset().is_some() || tm.iana_time_zone().is_some() {
        return tm.to_timestamp().map(|t| t.as_microsecond()).map_err(|e| e.to_string());
    }
    if tm.year().is_some() {
        let dt = tm.to_datetime().map_err(|e| e.to_string())?;
        return in_zone(dt, tz).ok_or_else(|| "not a time in the zone".to_string());
    }
    let year = crate::sources::zone::year_at(tz, now).ok_or("the read time has no year")?;
    let mut at = |y: i16| -> Option<i64> {
        tm.set_year(Some(y)).ok()?;
        in_zone(tm.to_datetime().ok()?, tz)
    };
    match at(year) {
        Some(t) if t <= now.saturating_add(86_400_000_000) => Ok(t),
        _ => at(year - 1).ok_or_else(|| "not a date".to_string()),
    }
}

/// A level word's syslog priority: `emerg`/`panic` 0, `alert` 1, `crit`/`critical`/
/// `fatal` (and PHP's `fatal error`, `parse error`) 2, `err`/`error` 3, `warn`/`warning` 4,
/// `notice`/`deprecated` 5, `info`/`log` (PostgreSQL)/`statement` 6, `debug`/`debug1`–
/// `debug5`/`trace` 7, and Ruby Logger's letters (`D`, `I`, `W`, `E`, `F`, `A`) alike;
/// case does not matter.
pub fn priority_of(level: &str) -> Option<i64> {
    let l = level.trim().to_ascii_lowercase();
    Some(match l.as_str() {
        "emerg" | "emergency" | "panic" => 0,
        "alert" | "a" => 1,
        "crit" | "critical" | "fatal" | "f" | "fatal error" | "parse error" | "core error" | "compile error" => 2,
        "err" | "error" | "e" | "recoverable fatal error" => 3,
        "warn" | "warning" | "w" | "core warning" | "compile warning" => 4,
        "notice" | "n" | "deprecated" | "strict standards" => 5,
        "info" | "i" | "log" | "information" | "informational" | "statement" => 6,
        "debug" | "d" | "trace" | "debug1" | "debug2" | "debug3" | "debug4" | "debug5" => 7,
        _ => return None,
    })
}

/// One way a record may be written.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// Matched against the record's first line.
    pub regex: Regex,
    /// How its `ts` capture reads.
    pub ts: TsFormat,
    /// Removed from the start of the record's other lines.
    pub strip: Option<Regex>,
}

/// Checks a pattern's regex: it compiles and has a `message` capture. `what` names it.
pub fn compile(what: &str, regex: &str) -> Result<Regex, String> {
    let re = Regex::new(regex).map_err(|e| format!("{what}: {e}"))?;
    if !re.capture_names().any(|n| n == Some("message")) {
        return Err(format!("{what}: the regex has no `message` capture, write one as (?P<message>.*)"));
    }
    Ok(re)
}

/// What a record became.
#[derive(Debug)]
pub struct Row<'a> {
    /// Time (µs).
    pub ts: i64,
    /// Columns.
    pub unit: Option<&'a str>,
    /// Syslog identifier.
    pub ident: Option<&'a str>,
    /// Process id.
    pub pid: Option<i64>,
    /// 0..=7.
    pub priority: Option<i64>,
    /// The message, with the record's other lines.
    pub message: Cow<'a, str>,
    /// Every other capture.
    pub attrs: Vec<(&'a str, Cow<'a, str>)>,
}

impl Row<'_> {
    /// The row's columns as a `logs` row of `source` on `host`.
    pub fn log_row<'b>(&'b self, host: &'b str, source: &'b str) -> LogRow<'b> {
        LogRow {
            ts: self.ts,
            host,
            source,
            unit: self.unit,
            ident: self.ident,
            pid: self.pid,
            priority: self.priority,
            message: Some(&self.message),
            boot_id: None,
        }
    }
}

/// Reads `record` with the first of `patterns` that matches its first line.
pub fn parse<'a>(patterns: &'a [Pattern], record: &'a str, tz: &TimeZone, read_ts: i64) -> Result<Row<'a>, String> {
    let (first, rest) = match record.split_once('\n') {
        Some((f, r)) => (f, Some(r)),
        None => (record, None),
    };
    let first = first.strip_suffix('\r').unwrap_or(first);
    let Some((p, caps)) = patterns.iter().find_map(|p| p.regex.captures(first).map(|c| (p, c))) else {
        return Err(if patterns.len() == 1 {
            "the line does not match the regex".to_string()
        } else {
            format!("the line matches none of the format's {} patterns", patterns.len())
        });
    };
    let mut row =
        Row { ts: read_ts, unit: None, ident: None, pid: None, priority: None, message: "".into(), attrs: vec![] };
    let mut zone: Option<TimeZone> = None;
    let mut ts: Option<&str> = None;
    for name in p.regex.capture_names().flatten() {
        let Some(m) = caps.name(name) else { continue };
        let v = m.as_str();
        if name == "message" {
            row.message = Cow::Borrowed(v);
            continue;
        }
        if v.is_empty() || v == "-" {
            continue;
        }
        match name {
            "ts" => ts = Some(v),
            "zone" => zone = Some(zone_of(v).ok_or_else(|| format!("zone {v:?}: not an offset or a zone name"))?),
            "level" => {
                row.priority = priority_of(v);
                if row.priority.is_none() {
                    row.attrs.push(("level", Cow::Borrowed(v)));
                }
            }
            "priority" => match v.parse::<i64>() {
                Ok(n) if (0..=7).contains(&n) => row.priority = Some(n),
                _ => return Err(format!("priority {v:?}: not 0 to 7")),
            },
            "pri" => match v.parse::<i64>() {
                Ok(n) if (0..=191).contains(&n) => {
                    row.priority = Some(n % 8);
                    row.attrs.push(("facility", Cow::Owned((n / 8).to_string())));
                }
                _ => return Err(format!("syslog PRI <{v}>: not 0 to 191")),
            },
            "unit" => row.unit = Some(v),
            "ident" => row.ident = Some(v),
            "pid" => match v.parse::<i64>() {
                Ok(n) => row.pid = Some(n),
                Err(_) => row.attrs.push(("pid", Cow::Borrowed(v))),
            },
            _ => row.attrs.push((name, Cow::Borrowed(v))),
        }
    }
    if let Some(ts) = ts {
        row.ts = p.ts.read(ts, zone.as_ref().unwrap_or(tz), read_ts)?;
    }
    if let Some(rest) = rest {
        let mut m = row.message.into_owned();
        for line in rest.split('\n') {
            // A first line without text (Rails' tagged line before an exception) adds none.
            if !m.is_empty() {
                m.push('\n');
            }
            let line = line.strip_suffix('\r').unwrap_or(line);
            match p.strip.as_ref().and_then(|s| s.find(line)).filter(|f| f.start() == 0) {
                Some(f) => m.push_str(&line[f.end()..]),
                None => m.push_str(line),
            }
        }
        row.message = Cow::Owned(m);
    }
    Ok(row)
}

/// A `zone` capture: `UTC`/`GMT`/`Z`, an offset, or an IANA name.
fn zone_of(v: &str) -> Option<TimeZone> {
    match v {
        "UTC" | "GMT" | "Z" | "utc" | "gmt" => Some(TimeZone::UTC),
        _ if v.starts_with('+') || v.starts_with('-') => crate::sources::zone::parse_zone(v).ok(),
        _ => TimeZone::get(v).ok(),
    }
}

/// Python's level names.
const PY_LEVELS: &str = "DEBUG|INFO|WARNING|ERROR|CRITICAL";

/// The patterns of a preset and the `multiline.start` it implies (`None`: a line is a
/// record); `None` for a name that is not a `logs` preset.
pub fn preset(name: &str) -> Option<(Vec<Pattern>, Option<&'static str>)> {
    let pat = |re: &str, ts: TsFormat| Pattern { regex: Regex::new(re).expect("preset regex"), ts, strip: None };
    Some(match name {
        "syslog" => (
            vec![
                // RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG].
                pat(
                    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<hostname>\S+) (?P<ident>\S+) (?P<pid>\S+) (?P<msgid>\S+) (?P<structured_data>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: \x{FEFF}?(?P<message>.*))?$",
                    TsFormat::Auto,
                ),
                // RFC 3164 (and the classic /var/log/syslog line, without PRI).
                pat(
                    r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>[A-Z][a-z]{2} [ \d]?\d \d{2}:\d{2}:\d{2}) (?P<hostname>\S+) (?P<ident>[^\s\[:]+)(?:\[(?P<pid>[^\]]*)\])?: ?(?P<message>.*)$",
                    TsFormat::Syslog,
                ),
                // rsyslog's RFC 3339 file format (Debian's default).
                pat(
                    r"^(?:<(?P<pri>\d{1,3})>)?(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\S*) (?P<hostname>\S+) (?P<ident>[^\s\[:]+)(?:\[(?P<pid>[^\]]*)\])?: ?(?P<message>.*)$",
                    TsFormat::Auto,
                ),
            ],
            None,
        ),
        "postgres" => {
            // log_line_prefix '%m [%p] ' (PostgreSQL's default), with Debian's `%q%u@%d `.
            let prefix = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?(?: [A-Za-z][\w+:/-]*)? \[\d+\] (?:\S+@\S+ )?";
            let mut p = pat(
                r"^(?P<ts>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?)(?: (?P<zone>[A-Za-z][\w+:/-]*))? \[(?P<pid>\d+)\] (?:(?P<user>\S+)@(?P<database>\S+) )?(?P<level>[A-Z]+[1-5]?):  (?P<message>.*)$",
                TsFormat::Auto,
            );
            p.strip = Some(Regex::new(&format!("^{prefix}")).expect("postgres prefix"));
            // DETAIL, HINT, CONTEXT, STATEMENT… lines belong to the message before them.
            (
                vec![p],
                Some(
                    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?(?: [A-Za-z][\w+:/-]*)? \[\d+\] (?:\S+@\S+ )?(?:LOG|ERROR|WARNING|FATAL|PANIC|NOTICE|INFO|DEBUG[1-5]?):  ",
                ),
            )
        }
        "php_fpm" => (
            vec![
                // php-fpm's own log: `[22-Nov-2026 10:15:01] WARNING: [pool www] child 12 said into stderr: "…"`.
                pat(
                    r"^\[(?P<ts>\d{2}-[A-Z][a-z]{2}-\d{4} \d{2}:\d{2}:\d{2}(?:\.\d+)?)\] (?P<level>[A-Z]+): (?:\[pool (?P<pool>[^\]]+)\] )?(?:child (?P<pid>\d+) said into (?P<stream>stderr|stdout): )?(?P<message>.*)$",
                    TsFormat::Strftime("%d-%b-%Y %H:%M:%S%.f".into()),
                ),
                // PHP's error_log: `[22-Nov-2026 10:15:01 UTC] PHP Fatal error:  Uncaught …`.
                pat(
                    r"^\[(?P<ts>\d{2}-[A-Z][a-z]{2}-\d{4} \d{2}:\d{2}:\d{2})(?: (?P<zone>[^\]]+))?\] PHP (?P<level>[A-Za-z ]+?):  (?P<message>.*)$",
                    TsFormat::Strftime("%d-%b-%Y %H:%M:%S".into()),
                ),
            ],
            Some(r"^\[\d{2}-[A-Z][a-z]{2}-\d{4} "),
        ),
        "rails" => (
            // Ruby's Logger::Formatter, Rails' production default:
            // `I, [2026-11-22T10:15:01.123456 #1234]  INFO -- : [request-id] Started GET "/"`.
            vec![pat(
                r"^[DIWEFAU], \[(?P<ts>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?) #(?P<pid>\d+)\]\s+(?P<level>[A-Z]+) -- (?P<ident>[^:]*): (?:\[(?P<request_id>[0-9a-f]{8}-[0-9a-f-]{27})\] )?(?P<message>.*)$",
                TsFormat::Auto,
            )],
            Some(r"^[DIWEFAU], \["),
        ),
        "python" => (
            vec![
                // uvicorn's access log: `INFO:     127.0.0.1:1234 - "GET / HTTP/1.1" 200 OK`.
                pat(
                    &format!(
                        r#"^(?P<level>{PY_LEVELS}):\s+(?P<message>(?P<client>\S+) - "(?P<method>[A-Z]+) (?P<path>\S+) (?P<proto>HTTP/[\d.]+)" (?P<status>\d{{3}})(?: .*)?)$"#
                    ),
                    TsFormat::Auto,
                ),
                // uvicorn's other lines: `INFO:     Started server process [12]`.
                pat(&format!(r"^(?P<level>{PY_LEVELS}):\s+(?P<message>.*)$"), TsFormat::Auto),
                // logging's default: `WARNING:root:message`.
                pat(&format!(r"^(?P<level>{PY_LEVELS}):(?P<logger>[^:]*):(?P<message>.*)$"), TsFormat::Auto),
                // `%(asctime)s - %(name)s - %(levelname)s - %(message)s`.
                pat(
                    &format!(
                        r"^(?P<ts>\d{{4}}-\d{{2}}-\d{{2}} \d{{2}}:\d{{2}}:\d{{2}}(?:,\d+)?) - (?P<logger>.+?) - (?P<level>{PY_LEVELS}) - (?P<message>.*)$"
                    ),
                    TsFormat::Auto,
                ),
            ],
            Some(r"^(?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL):|\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})"),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_342_501_000_000; // 2026-11-22T10:15:01Z

    #[test]
    fn timestamps_read_in_every_format() {
        let utc = TimeZone::UTC;
        let paris = TimeZone::get("Europe/Paris").unwrap();
        assert_eq!(TsFormat::Auto.read("2026-11-22T10:15:01Z", &utc, 0).unwrap(), NOW);
        assert_eq!(TsFormat::Auto.read("2026-11-22 11:15:01,000", &paris, 0).unwrap(), NOW);
        assert_eq!(TsFormat::Syslog.read("Nov 22 10:15:01", &utc, NOW).unwrap(), NOW);
        let last_year = "2025-12-31T23:00:00Z".parse::<jiff::Timestamp>().unwrap().as_microsecond();
        assert_eq!(TsFormat::Syslog.read("Dec 31 23:00:00", &utc, NOW).unwrap(), last_year);
        let nov2 = "2026-11-02T10:15:01Z".parse::<jiff::Timestamp>().unwrap().as_microsecond();
        assert_eq!(TsFormat::Syslog.read("Nov  2 10:15:01", &utc, NOW).unwrap(), nov2);
        assert_eq!(TsFormat::Unix.read("1795342501.000", &utc, 0).unwrap(), NOW);
        let f = TsFormat::parse("%d/%b/%Y:%H:%M:%S %z").unwrap();
        assert_eq!(f.read("22/Nov/2026:11:15:01 +0100", &utc, 0).unwrap(), NOW);
        assert!(TsFormat::parse("%Q%!").is_err() && TsFormat::parse("yyyy-mm-dd").is_err());
        assert!(TsFormat::Auto.read("yesterday", &utc, 0).unwrap_err().starts_with("ts \"yesterday\""));
    }

    #[test]
    fn level_words_map_to_priorities() {
        for (w, p) in
            [("ERROR", 3), ("warning", 4), ("LOG", 6), ("DEBUG3", 7), ("F", 2), ("Fatal error", 2), ("NOTICE", 5)]
        {
            assert_eq!(priority_of(w), Some(p), "{w}");
        }
        assert_eq!(priority_of("LOUD"), None);
    }

    #[test]
    fn a_regex_needs_a_message_capture() {
        assert!(compile("r", r"^(?P<ts>\S+) (?P<message>.*)$").is_ok());
        assert!(compile("r", r"^(?P<ts>\S+) (?P<msg>.*)$").unwrap_err().contains("no `message` capture"));
        assert!(compile("r", r"^(?P<ts>\S+").unwrap_err().starts_with("r: "));
    }
}
