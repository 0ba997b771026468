//! Pure parts of the journald source: one `journalctl -o json` line → [`JournalEntry`],
//! unit filters, and the entry's `logs` row.
//!
//! Mapping (see `man systemd.journal-fields`):
//! - `ts`: `_SOURCE_REALTIME_TIMESTAMP` (when the sender gave one) else
//!   `__REALTIME_TIMESTAMP`, µs; the one not used stays in attrs.
//! - `unit`: `_SYSTEMD_UNIT`, else `_SYSTEMD_USER_UNIT` (an entry of Docker's journald log
//!   driver: the container's compose service or name, see [`map_container`]); `ident`: `SYSLOG_IDENTIFIER`;
//!   `pid`: `_PID` (else `SYSLOG_PID`); `priority`: `PRIORITY`; `boot_id`: `_BOOT_ID`.
//! - `message`: `MESSAGE`. journalctl prints a value that is not printable UTF-8 as an
//!   array of byte numbers: the message gets the lossy UTF-8 text, and when the bytes are
//!   not valid UTF-8 the exact bytes go to attrs `MESSAGE_hex` (lossless). The same rule
//!   holds for every other field (`<NAME>` lossy + `<NAME>_hex`).
//! - A field repeated in one entry (JSON array of values) is joined with "\n", in order.
//! - `_HOSTNAME` goes to attrs as `hostname`: the `host` column is the collector's node.
//! - Every other field goes to attrs under its journal name, except `__CURSOR` (large,
//!   only a position) and `__MONOTONIC_TIMESTAMP`. `null` values (a field too large for
//!   journalctl without `--all`) are kept as attrs `<NAME>_omitted` = "".

use std::collections::BTreeMap;

use lake_format::logs::{LogRow, LogsBuilder};
use serde_json::Value;

/// Why a line is not a journal entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a JSON object.
    #[error("not a JSON object: {0}")]
    Json(String),
    /// Neither timestamp field reads as µs.
    #[error("entry without a usable __REALTIME_TIMESTAMP")]
    NoTimestamp,
}

/// One journal entry, mapped to the `logs` columns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JournalEntry {
    /// `__CURSOR`: where to resume after this entry.
    pub cursor: Option<String>,
    /// Event time, µs since the epoch.
    pub ts: i64,
    /// systemd unit.
    pub unit: Option<String>,
    /// Syslog identifier.
    pub ident: Option<String>,
    /// Process id.
    pub pid: Option<i64>,
    /// 0..=7.
    pub priority: Option<i64>,
    /// Boot id.
    pub boot_id: Option<String>,
    /// The message, lossy UTF-8.
    pub message: Option<String>,
    /// `_TRANSPORT` (also in attrs), for routing kernel lines.
    pub transport: Option<String>,
    /// Every other field.
    pub attrs: BTreeMap<String, String>,
}

impl JournalEntry {
    /// A kernel message (where ufw lines come from).
    pub fn is_kernel(&self) -> bool {
        self.transport.as_deref() == Some("kernel") || self.ident.as_deref() == Some("kernel")
    }

    /// A message of fail2ban's server.
    pub fn is_fail2ban(&self) -> bool {
        matches!(self.ident.as_deref(), Some("fail2ban-server" | "fail2ban" | "fail2ban-client"))
            || self.unit.as_deref() == Some("fail2ban.service")
    }

    /// Adds the entry as a `logs` row of `host`, with `source`.
    pub fn push_to(&self, logs: &mut LogsBuilder, host: &str, source: &str) {
        let row = LogRow {
            ts: self.ts,
            host,
            source,
            unit: self.unit.as_deref(),
            ident: self.ident.as_deref(),
            pid: self.pid,
            priority: self.priority,
            message: self.message.as_deref(),
            boot_id: self.boot_id.as_deref(),
        };
        logs.push(&row, self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
}

/// A field's value: text, or bytes when journalctl printed a byte array.
enum Text {
    Exact(String),
    Bytes(Vec<u8>),
    Omitted,
}

fn text_of(v: &Value) -> Option<Text> {
    match v {
        Value::String(s) => Some(Text::Exact(s.clone())),
        Value::Null => Some(Text::Omitted),
        Value::Array(items) if items.iter().all(|i| i.is_u64()) => Some(Text::Bytes(
            items.iter().map(|i| i.as_u64().and_then(|n| u8::try_from(n).ok()).unwrap_or(b'?')).collect(),
        )),
        // A repeated field: each value is a string or a byte array.
        Value::Array(items) => {
            let mut bytes = Vec::new();
            let mut exact = true;
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    bytes.push(b'\n');
                }
                match text_of(item)? {
                    Text::Exact(s) => bytes.extend_from_slice(s.as_bytes()),
                    Text::Bytes(b) => {
                        exact = false;
                        bytes.extend_from_slice(&b)
                    }
                    Text::Omitted => {}
                }
            }
            Some(match (exact, String::from_utf8(bytes)) {
                (true, Ok(s)) => Text::Exact(s),
                (_, Ok(s)) => Text::Exact(s),
                (_, Err(e)) => Text::Bytes(e.into_bytes()),
            })
        }
        Value::Number(n) => Some(Text::Exact(n.to_string())),
        Value::Bool(b) => Some(Text::Exact(b.to_string())),
        Value::Object(_) => Some(Text::Exact(v.to_string())),
    }
}

pub use crate::sources::unparsed::hex;

/// The text of a field; invalid UTF-8 adds `<name>_hex` to `attrs`.
fn resolve(name: &str, t: Text, attrs: &mut BTreeMap<String, String>) -> Option<String> {
    match t {
        Text::Exact(s) => Some(s),
        Text::Omitted => {
            attrs.insert(format!("{name}_omitted"), String::new());
            None
        }
        Text::Bytes(b) => match String::from_utf8(b) {
            Ok(s) => Some(s),
            Err(e) => {
                let b = e.into_bytes();
                attrs.insert(format!("{name}_hex"), hex(&b));
                Some(String::from_utf8_lossy(&b).into_owned())
            }
        },
    }
}

/// Parses one line of `journalctl -o json`.
pub fn parse_entry(line: &[u8]) -> Result<JournalEntry, ParseError> {
    let obj: serde_json::Map<String, Value> =
        serde_json::from_slice(line).map_err(|e| ParseError::Json(e.to_string()))?;
    let mut e = JournalEntry::default();
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let mut attrs = BTreeMap::new();
    for (k, v) in obj {
        if k == "__MONOTONIC_TIMESTAMP" {
            continue;
        }
        let Some(t) = text_of(&v) else { continue };
        if let Some(s) = resolve(&k, t, &mut attrs) {
            fields.insert(k, s);
        }
    }
    e.cursor = fields.remove("__CURSOR");
    let micros = |s: Option<&String>| s.and_then(|s| s.trim().parse::<i64>().ok());
    e.ts = match micros(fields.get("_SOURCE_REALTIME_TIMESTAMP")) {
        Some(t) => {
            fields.remove("_SOURCE_REALTIME_TIMESTAMP");
            t
        }
        None => {
            let t = micros(fields.get("__REALTIME_TIMESTAMP")).ok_or(ParseError::NoTimestamp)?;
            fields.remove("__REALTIME_TIMESTAMP");
            t
        }
    };
    e.unit = fields.remove("_SYSTEMD_UNIT").or_else(|| fields.remove("_SYSTEMD_USER_UNIT"));
    map_container(&mut e, &mut fields, &mut attrs);
    e.ident = fields.remove("SYSLOG_IDENTIFIER");
    let num = |s: &str| s.split('\n').next().and_then(|v| v.trim().parse::<i64>().ok());
    e.pid = fields.get("_PID").or_else(|| fields.get("SYSLOG_PID")).and_then(|p| num(p));
    if e.pid.is_some() {
        // Only the one that became the column leaves attrs.
        if fields.contains_key("_PID") {
            fields.remove("_PID");
        } else {
            fields.remove("SYSLOG_PID");
        }
    }
    if let Some(p) = fields.get("PRIORITY").and_then(|p| num(p)).filter(|p| (0..=7).contains(p)) {
        e.priority = Some(p);
        fields.remove("PRIORITY");
    }
    e.boot_id = fields.remove("_BOOT_ID");
    e.message = fields.remove("MESSAGE");
    e.transport = fields.get("_TRANSPORT").cloned();
    if let Some(h) = fields.remove("_HOSTNAME") {
        attrs.insert("hostname".to_string(), h);
    }
    attrs.extend(fields);
    e.attrs = attrs;
    Ok(e)
}

/// An entry of Docker's journald log driver (it has `CONTAINER_NAME`) gets the columns
/// the docker source writes: `unit` = the compose service (the label
/// `com.docker.compose.service`, a field only when the driver's `labels` option names it)
/// else the container name — the daemon's own unit moves to attr `systemd_unit` — and attrs
/// `container`, `container_id` (`CONTAINER_ID_FULL`, else the short `CONTAINER_ID`),
/// `image` (`IMAGE_NAME`) and `compose_project`.
fn map_container(e: &mut JournalEntry, fields: &mut BTreeMap<String, String>, attrs: &mut BTreeMap<String, String>) {
    let Some(name) = fields.remove("CONTAINER_NAME") else { return };
    let full = fields.remove("CONTAINER_ID_FULL");
    let short = fields.remove("CONTAINER_ID");
    if let Some(id) = full.or(short) {
        attrs.insert("container_id".into(), id);
    }
    if let Some(image) = fields.remove("IMAGE_NAME") {
        attrs.insert("image".into(), image);
    }
    if let Some(project) = fields.remove("COM_DOCKER_COMPOSE_PROJECT") {
        attrs.insert("compose_project".into(), project);
    }
    let service = fields.remove("COM_DOCKER_COMPOSE_SERVICE");
    if let Some(unit) = e.unit.take() {
        attrs.insert("systemd_unit".into(), unit);
    }
    e.unit = Some(service.unwrap_or_else(|| name.clone()));
    attrs.insert("container".into(), name);
}

/// Exact names and `*` globs of systemd units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitFilter {
    /// When not empty, only entries of these units are kept.
    pub include: Vec<String>,
    /// Entries of these units are dropped.
    pub exclude: Vec<String>,
}

impl UnitFilter {
    /// Whether an entry of `unit` (None: no unit, e.g. kernel) goes to `logs`.
    pub fn keeps(&self, unit: Option<&str>) -> bool {
        let matches = |pats: &[String], u: &str| pats.iter().any(|p| glob(p.as_bytes(), u.as_bytes()));
        match unit {
            Some(u) => (self.include.is_empty() || matches(&self.include, u)) && !matches(&self.exclude, u),
            None => self.include.is_empty(),
        }
    }
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.iter().position(|&c| c == b'*') {
        None => pat == s,
        Some(i) => {
            if s.len() < i || pat[..i] != s[..i] {
                return false;
            }
            let rest = &pat[i + 1..];
            (i..=s.len()).any(|j| glob(rest, &s[j..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_message_is_lossy_with_exact_hex() {
        let line = br#"{"_BOOT_ID":"b1","__REALTIME_TIMESTAMP":"1795374071000000","_HOSTNAME":"salem-storage","MESSAGE":[98,105,110,255,254,97,114,121],"PRIORITY":"6","_SYSTEMD_UNIT":"sshd.service","__CURSOR":"s=1;i=2","__MONOTONIC_TIMESTAMP":"123999"}"#;
        let e = parse_entry(line).unwrap();
        assert_eq!(e.message.as_deref(), Some("bin\u{fffd}\u{fffd}ary"));
        assert_eq!(e.attrs["MESSAGE_hex"], "62696efffe617279");
        assert_eq!(e.attrs["hostname"], "salem-storage");
        assert_eq!(e.cursor.as_deref(), Some("s=1;i=2"));
        assert_eq!((e.ts, e.priority, e.unit.as_deref()), (1795374071000000, Some(6), Some("sshd.service")));
        assert_eq!(e.attrs.len(), 2, "{:?}", e.attrs);
    }

    #[test]
    fn docker_journald_driver_entries_map_like_the_docker_source() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/journald/docker-driver.json"))
                .unwrap();
        let got: Vec<JournalEntry> = text.lines().map(|l| parse_entry(l.as_bytes()).unwrap()).collect();
        let brief = |e: &JournalEntry, k: &str| e.attrs.get(k).cloned();
        let (err, out, plain) = (&got[0], &got[1], &got[2]);
        assert_eq!((err.unit.as_deref(), err.priority, err.message.as_deref()), (Some("web"), Some(3), Some("oops")));
        assert_eq!((out.unit.as_deref(), out.priority), (Some("web"), Some(6)));
        for e in [err, out] {
            assert_eq!(brief(e, "container").as_deref(), Some("jd-web-1"));
            assert_eq!(
                brief(e, "container_id").as_deref(),
                Some("7924c81ce137156f52112e88c7c6625552695ee79bdb071674756545e5ad9b03")
            );
            assert_eq!(brief(e, "compose_project").as_deref(), Some("shop"));
            assert_eq!(brief(e, "image").as_deref(), Some("bb:1"));
            for gone in
                ["CONTAINER_NAME", "CONTAINER_ID", "CONTAINER_ID_FULL", "IMAGE_NAME", "COM_DOCKER_COMPOSE_SERVICE"]
            {
                assert!(!e.attrs.contains_key(gone), "{gone} is mapped, not kept twice");
            }
        }
        assert_eq!((plain.unit.as_deref(), plain.message.as_deref()), (Some("plain-jd"), Some("plain line")));
        assert_eq!(brief(plain, "compose_project"), None);
        // The daemon's own unit (under systemd) is kept beside the container's.
        let with_unit = text.lines().nth(2).unwrap().replacen('{', r#"{"_SYSTEMD_UNIT":"docker.service","#, 1);
        let e = parse_entry(with_unit.as_bytes()).unwrap();
        assert_eq!(
            (e.unit.as_deref(), brief(&e, "systemd_unit").as_deref()),
            (Some("plain-jd"), Some("docker.service"))
        );
    }

    #[test]
    fn repeated_fields_join_and_filters_glob() {
        let e = parse_entry(br#"{"__REALTIME_TIMESTAMP":"1","MESSAGE":["a","b"],"X":["c",[255]]}"#).unwrap();
        assert_eq!(e.message.as_deref(), Some("a\nb"));
        assert_eq!(e.attrs["X_hex"], "630aff");
        assert!(parse_entry(b"{}").is_err());
        assert!(parse_entry(b"[1").is_err());
        let f = UnitFilter { include: vec![], exclude: vec!["cron*".into(), "user@*.service".into()] };
        assert!(!f.keeps(Some("cron.service")));
        assert!(!f.keeps(Some("user@1000.service")));
        assert!(f.keeps(Some("sshd.service")) && f.keeps(None));
        let f = UnitFilter { include: vec!["ssh*".into()], exclude: vec![] };
        assert!(f.keeps(Some("ssh.service")) && !f.keeps(None) && !f.keeps(Some("cron.service")));
    }
}
