//! ufw → `firewall`: netfilter LOG lines with a `[UFW …]` prefix.
//!
//! [`parse`] is pure and takes either the bare kernel message (as journald stores it:
//! `[UFW BLOCK] IN=eth0 OUT= MAC=… SRC=… DST=… LEN=… … PROTO=TCP SPT=… DPT=…`) or a
//! syslog-file line (`Nov 22 10:15:01 host kernel: [ 123.456] [UFW BLOCK] …`, or the
//! RFC 3339 rsyslog variant). Columns: action, interfaces, addresses, protocol, ports,
//! length, TTL (or IPv6 HOPLIMIT); every other key and bare flag goes into attrs, so
//! nothing of the line is lost:
//! - `[UFW LIMIT BLOCK]` → action LIMIT, `[UFW AUDIT INVALID]` → AUDIT; the words after
//!   the action are kept as attrs `detail`.
//! - Keys that repeat after `PROTO=` (the UDP header's `LEN=`, ICMP's `ID=`) are stored
//!   as `<PROTO>_<KEY>` (`UDP_LEN`, `ICMP_ID`); the quoted packet of an ICMP error
//!   (`[SRC=… DST=… …]`) as `INNER_<KEY>`. Bare flags (DF, SYN, ACK, …) have value "".
//! - In syslog lines the sender's hostname goes to attrs `hostname`, the kernel uptime to
//!   `uptime`; the timestamp is returned unresolved ([`SyslogTime`]): the classic form has
//!   no year and no zone, the caller resolves it against its zone and clock.
//!
//! Today rows come from journald routing ([`crate::sources::journald`]).

use std::collections::BTreeMap;

use lake_format::rows::TableBuilder;
use lake_format::Table;
use serde::Deserialize;

/// `[ufw]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UfwFile {
    /// Produce `firewall` rows. Default false.
    #[serde(default)]
    enabled: bool,
    /// Take ufw's kernel lines from journald (needs `[journald] enabled`). Default true.
    #[serde(default = "default_true")]
    from_journald: bool,
    /// Log files to follow as well, e.g. `["/var/log/ufw.log*"]`. Default none.
    #[serde(default)]
    paths: Vec<String>,
    /// Where to start in a file never seen before: "beginning" (default) or "end".
    #[serde(default = "default_start_at")]
    start_at: crate::tail::StartAt,
    /// Zone of the files' classic syslog timestamps (`Nov 22 10:15:01`). Default "local".
    #[serde(default = "default_timezone")]
    timezone: String,
}

const fn default_start_at() -> crate::tail::StartAt {
    crate::tail::StartAt::Beginning
}
fn default_timezone() -> String {
    "local".to_string()
}

const fn default_true() -> bool {
    true
}

impl Default for UfwFile {
    fn default() -> Self {
        UfwFile {
            enabled: false,
            from_journald: true,
            paths: Vec::new(),
            start_at: default_start_at(),
            timezone: default_timezone(),
        }
    }
}

/// `[ufw]`, validated.
#[derive(Debug, Clone)]
pub struct UfwConfig {
    /// Whether `firewall` rows are produced.
    pub enabled: bool,
    /// Whether journald kernel entries are scanned for ufw lines.
    pub from_journald: bool,
    /// Files to follow (`None`: no file mode).
    pub files: Option<crate::tail::TailConfig>,
    /// Zone of the files' syslog timestamps.
    pub timezone: jiff::tz::TimeZone,
}

impl UfwFile {
    /// Checks the section.
    pub fn validate(self) -> anyhow::Result<UfwConfig> {
        let timezone = super::zone::parse_zone(&self.timezone)
            .map_err(anyhow::Error::msg)
            .map_err(|e| e.context("ufw.timezone"))?;
        Ok(UfwConfig {
            enabled: self.enabled,
            from_journald: self.from_journald,
            files: super::logfile::tail_config("ufw", self.paths, self.start_at)?,
            timezone,
        })
    }
}

/// Why a line is not a ufw line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// No `[UFW …]` prefix.
    #[error("not a ufw line (no \"[UFW \" prefix)")]
    NotUfw,
    /// A prefix whose action is not BLOCK, ALLOW, AUDIT or LIMIT.
    #[error("unknown ufw action in {0:?}")]
    Action(String),
    /// The line stops before the packet's addresses.
    #[error("truncated ufw line: no {0}")]
    Truncated(&'static str),
    /// The syslog header before the kernel message does not read.
    #[error("unreadable syslog header {0:?}")]
    Header(String),
}

/// The timestamp of a syslog-file line, before it is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTime {
    /// RFC 3339, resolved already (µs since the epoch).
    Micros(i64),
    /// `Nov 22 10:15:01`: local time without a year.
    Classic {
        /// 1..=12.
        month: i8,
        /// 1..=31.
        day: i8,
        /// Hours.
        hour: i8,
        /// Minutes.
        minute: i8,
        /// Seconds.
        second: i8,
    },
}

impl SyslogTime {
    /// Microseconds since the epoch; a classic time is taken in `tz`, in the year that
    /// puts it at most a day after `now` (so December lines read in January are last year's).
    pub fn resolve(self, tz: &jiff::tz::TimeZone, now: i64) -> Option<i64> {
        match self {
            SyslogTime::Micros(m) => Some(m),
            SyslogTime::Classic { month, day, hour, minute, second } => {
                let year = super::zone::year_at(tz, now)?;
                let at = |y| super::zone::civil_micros(tz, y, month, day, hour, minute, second, 0);
                match at(year) {
                    Some(t) if t <= now + 86_400_000_000 => Some(t),
                    _ => at(year - 1),
                }
            }
        }
    }
}

/// One packet of `firewall`, before `ts` and `host` are added.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FirewallEvent {
    /// The syslog timestamp when the line had a header.
    pub time: Option<SyslogTime>,
    /// BLOCK, ALLOW, AUDIT or LIMIT.
    pub action: String,
    /// The `source` column: `ufw` for a kernel line, `cloudflare` for an edge event.
    pub source: Option<&'static str>,
    /// IN=, null when empty.
    pub in_if: Option<String>,
    /// OUT=, null when empty.
    pub out_if: Option<String>,
    /// SRC=.
    pub src: Option<String>,
    /// DST=.
    pub dst: Option<String>,
    /// PROTO=.
    pub proto: Option<String>,
    /// SPT=.
    pub src_port: Option<i64>,
    /// DPT=.
    pub dst_port: Option<i64>,
    /// The IP header's LEN=.
    pub len: Option<i64>,
    /// TTL= or HOPLIMIT=.
    pub ttl: Option<i64>,
    /// Everything else.
    pub attrs: BTreeMap<String, String>,
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Parses one ufw line (bare kernel message or syslog-file line).
pub fn parse(line: &str) -> Result<FirewallEvent, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let start = line.find("[UFW ").ok_or(ParseError::NotUfw)?;
    let mut ev = FirewallEvent { source: Some("ufw"), ..FirewallEvent::default() };
    let header = line[..start].trim();
    if !header.is_empty() {
        parse_header(header, &mut ev)?;
    }
    let rest = &line[start + 1..];
    let (label, body) = rest.split_once(']').ok_or(ParseError::Truncated("end of the [UFW …] prefix"))?;
    let mut words = label.split_whitespace().skip(1);
    let action = words.next().unwrap_or("");
    if !matches!(action, "BLOCK" | "ALLOW" | "AUDIT" | "LIMIT") {
        return Err(ParseError::Action(label.to_string()));
    }
    ev.action = action.to_string();
    let detail: Vec<&str> = words.collect();
    if !detail.is_empty() {
        ev.attrs.insert("detail".to_string(), detail.join(" "));
    }

    let mut seen: Vec<&str> = Vec::new();
    let mut inner = false;
    for mut tok in body.split_whitespace() {
        // The quoted header of an ICMP error: "[SRC=… … ]" possibly split over tokens.
        if let Some(t) = tok.strip_prefix('[') {
            inner = true;
            tok = t;
        }
        let closes = inner && tok.ends_with(']');
        let t = if closes { &tok[..tok.len() - 1] } else { tok };
        let (key, value) = t.split_once('=').unwrap_or((t, ""));
        if !key.is_empty() {
            if inner {
                ev.attrs.insert(format!("INNER_{key}"), value.to_string());
            } else {
                let repeated = seen.contains(&key);
                seen.push(key);
                set(&mut ev, key, value, repeated);
            }
        }
        if closes {
            inner = false;
        }
    }
    if ev.src.is_none() {
        return Err(ParseError::Truncated("SRC="));
    }
    if ev.dst.is_none() {
        return Err(ParseError::Truncated("DST="));
    }
    // Every netfilter LOG line has PROTO= after the addresses: without it the line was cut.
    if ev.proto.is_none() {
        return Err(ParseError::Truncated("PROTO="));
    }
    Ok(ev)
}

fn set(ev: &mut FirewallEvent, key: &str, value: &str, repeated: bool) {
    let text = |v: &str| (!v.is_empty()).then(|| v.to_string());
    let num = |v: &str| v.parse::<i64>().ok();
    if !repeated {
        let typed = match key {
            "IN" => {
                ev.in_if = text(value);
                true
            }
            "OUT" => {
                ev.out_if = text(value);
                true
            }
            "SRC" => {
                ev.src = text(value);
                true
            }
            "DST" => {
                ev.dst = text(value);
                true
            }
            "PROTO" => {
                ev.proto = text(value);
                true
            }
            "SPT" => {
                ev.src_port = num(value);
                ev.src_port.is_some()
            }
            "DPT" => {
                ev.dst_port = num(value);
                ev.dst_port.is_some()
            }
            "LEN" => {
                ev.len = num(value);
                ev.len.is_some()
            }
            "TTL" | "HOPLIMIT" => {
                ev.ttl = num(value);
                if key == "HOPLIMIT" {
                    // Which one it was stays visible: IPv6 lines have HOPLIMIT.
                    ev.attrs.insert("ttl_field".to_string(), "HOPLIMIT".to_string());
                }
                ev.ttl.is_some()
            }
            _ => false,
        };
        if typed {
            return;
        }
    }
    let name = match (repeated, ev.proto.as_deref()) {
        (true, Some(p)) => format!("{}_{key}", p.to_ascii_uppercase()),
        (true, None) => format!("{key}_2"),
        (false, _) => key.to_string(),
    };
    // A bare flag (DF, SYN) has no '=': its empty value says "present".
    ev.attrs.insert(name, value.to_string());
}

fn parse_header(header: &str, ev: &mut FirewallEvent) -> Result<(), ParseError> {
    let bad = || ParseError::Header(header.to_string());
    let mut parts = header.split_whitespace();
    let first = parts.next().ok_or_else(bad)?;
    if let Some(m) = super::zone::rfc3339_micros(first) {
        ev.time = Some(SyslogTime::Micros(m));
    } else {
        let month = MONTHS.iter().position(|m| *m == first).ok_or_else(bad)? as i8 + 1;
        let day: i8 = parts.next().and_then(|d| d.parse().ok()).ok_or_else(bad)?;
        let hms: Vec<i8> = parts.next().ok_or_else(bad)?.split(':').filter_map(|p| p.parse().ok()).collect();
        let [hour, minute, second] = hms[..] else {
            return Err(bad());
        };
        ev.time = Some(SyslogTime::Classic { month, day, hour, minute, second });
    }
    let host = parts.next().ok_or_else(bad)?;
    ev.attrs.insert("hostname".to_string(), host.to_string());
    let tag = parts.next().ok_or_else(bad)?;
    if tag != "kernel:" {
        return Err(bad());
    }
    let rest: Vec<&str> = parts.collect();
    let uptime = rest.join("");
    if let Some(u) = uptime.strip_prefix('[').and_then(|u| u.strip_suffix(']')) {
        ev.attrs.insert("uptime".to_string(), u.to_string());
    } else if !uptime.is_empty() {
        return Err(bad());
    }
    Ok(())
}

/// Accumulates `firewall` rows.
#[derive(Debug)]
pub struct FirewallRows {
    b: TableBuilder,
    cols: [usize; 14],
}

impl Default for FirewallRows {
    fn default() -> Self {
        Self::new()
    }
}

impl FirewallRows {
    /// An empty batch.
    pub fn new() -> Self {
        let b = TableBuilder::new(Table::Firewall);
        let c = |n: &str| b.column(n).expect("firewall column in the catalog");
        let cols = [
            c("ts"),
            c("host"),
            c("action"),
            c("source"),
            c("in_if"),
            c("out_if"),
            c("src"),
            c("dst"),
            c("proto"),
            c("src_port"),
            c("dst_port"),
            c("len"),
            c("ttl"),
            c("attrs"),
        ];
        FirewallRows { b, cols }
    }

    /// Adds a packet seen at `ts`.
    pub fn push(&mut self, host: &str, ts: i64, e: &FirewallEvent) {
        let [c_ts, h, action, source, in_if, out_if, src, dst, proto, spt, dpt, len, ttl, attrs] = self.cols;
        let b = &mut self.b;
        b.ts(c_ts, ts);
        b.text(h, Some(host));
        b.text(action, Some(&e.action));
        b.text(source, e.source);
        b.text(in_if, e.in_if.as_deref());
        b.text(out_if, e.out_if.as_deref());
        b.text(src, e.src.as_deref());
        b.text(dst, e.dst.as_deref());
        b.text(proto, e.proto.as_deref());
        b.int(spt, e.src_port);
        b.int(dpt, e.dst_port);
        b.int(len, e.len);
        b.int(ttl, e.ttl);
        b.map(attrs, e.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        b.end_row();
    }
}

crate::sources::rows_deref!(FirewallRows);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_message_ipv4_tcp() {
        let e = parse("[UFW BLOCK] IN=eth0 OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00 SRC=203.0.113.7 DST=198.51.100.2 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=54321 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0").unwrap();
        assert_eq!(e.action, "BLOCK");
        assert_eq!(e.in_if.as_deref(), Some("eth0"));
        assert_eq!(e.out_if, None);
        assert_eq!((e.src_port, e.dst_port, e.len, e.ttl), (Some(54321), Some(22), Some(60), Some(52)));
        assert_eq!(e.attrs["DF"], "");
        assert_eq!(e.attrs["SYN"], "");
        assert_eq!(e.time, None);
    }

    #[test]
    fn classic_time_resolves_to_last_year_in_january() {
        let tz = jiff::tz::TimeZone::UTC;
        let t = SyslogTime::Classic { month: 12, day: 31, hour: 23, minute: 0, second: 0 };
        let now = super::super::zone::rfc3339_micros("2027-01-01T00:10:00Z").unwrap();
        assert_eq!(t.resolve(&tz, now), super::super::zone::rfc3339_micros("2026-12-31T23:00:00Z"));
    }
}
