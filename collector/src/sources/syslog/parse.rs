//! One received syslog message → the columns and attrs of one `logs` row. Never fails:
//! whatever arrives is kept, and what did not read is said in attrs.
//!
//! The format is told per message: `<PRI>1 ` starts RFC 5424, anything else is read as
//! RFC 3164 (BSD) with the variants seen from real devices:
//! - RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`, NILVALUE `-`
//!   in any header field, RFC 3339 times with fractions and offsets, structured data
//!   (`[id name="value" …]…`, escapes `\"` `\\` `\]`) into attrs `sd.<id>.<name>` (a
//!   repeated name joins its values with `,`; an element without parameters is
//!   `sd.<id>` = ""), and a MSG starting with a UTF-8 BOM (the BOM is dropped, and so are
//!   spaces before the text, which rsyslog adds when it relays a BSD message as 5424).
//! - RFC 3164: `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`, and also: no HOSTNAME
//!   (`<13>Dec  7 05:00:03 sshd[12]: …`, which local `logger` and many appliances send),
//!   no timestamp at all (`<13>message`), an RFC 3339 time instead of the BSD one
//!   (rsyslog's forwarding template), a year (`Mmm dd yyyy hh:mm:ss`) or a fraction, and
//!   Cisco IOS (`<189>42: *Mar  1 18:46:11.123 UTC: %SYS-5-CONFIG_I: …`: the sequence
//!   number to attrs `sequence`, `*`/`.` clock marks skipped, a `UTC`/`GMT` zone name).
//!   A BSD time has no year: the year is the one that puts it nearest the receive time
//!   (a `Dec 31 23:59:59` message received on Jan 1 is last year's; a `Jan  1 00:00:01`
//!   from a sender whose clock runs ahead, received on Dec 31, is next year's), in the
//!   configured zone.
//!
//! Time: the message's own, else the receive time with attrs `ts_received` saying why —
//! `absent`, `unparsable` or `skewed` (further than `max_clock_skew` from the receive time:
//! a device with an unset clock must not date rows in 1970, which the lake would refuse
//! with the rest of their batch) — and the sent text in `sent_ts`.
//!
//! Damage is kept, never dropped: a missing or bad PRI (attrs `malformed` says what, and
//! the text is read on as 3164), a 5424 header or structured data that does not read (the
//! rest after PRI becomes the message), bytes that are not UTF-8 (the message replaced
//! lossily, attrs `invalid_utf8` = "true" and the exact bytes in `raw_hex`).

use std::borrow::Cow;

use jiff::tz::TimeZone;

/// What a message became. Attrs hold every field without a column: `hostname`,
/// `facility`, `msgid`, `procid` (when not a number), `sd.*`, `sequence`, `format`
/// (`rfc5424` or `rfc3164`), `ts_received`, `sent_ts`, `malformed`, `invalid_utf8`,
/// `raw_hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Time, µs since the epoch.
    pub ts: i64,
    /// Severity, 0..=7 (PRI % 8).
    pub priority: Option<i64>,
    /// APP-NAME or TAG.
    pub ident: Option<String>,
    /// PROCID or the TAG's `[pid]`, when a number.
    pub pid: Option<i64>,
    /// HOSTNAME as sent (also in attrs).
    pub hostname: Option<String>,
    /// MSG.
    pub message: String,
    /// Every other field.
    pub attrs: Vec<(String, String)>,
    /// Whether the message is damaged (bad PRI or header, not UTF-8): counted.
    pub damaged: bool,
}

/// How messages are read: the zone of times written without one, the bound on a
/// sender's clock.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Zone of BSD timestamps (no offset).
    pub tz: TimeZone,
    /// A message time further than this from the receive time is replaced by it, µs.
    pub max_skew: i64,
}

impl Message {
    fn attr(&mut self, k: impl Into<String>, v: impl Into<String>) {
        self.attrs.push((k.into(), v.into()));
    }
}

/// Parses one message (its frame, without the delimiter) received at `received` (µs).
pub fn parse(bytes: &[u8], reading: &Reading, received: i64) -> Message {
    // Trailing delimiters some senders add inside a datagram or before LF framing.
    let end = bytes.iter().rposition(|b| !matches!(b, b'\n' | b'\r' | b'\0')).map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    let text = String::from_utf8_lossy(bytes);
    let mut m = Message {
        ts: received,
        priority: None,
        ident: None,
        pid: None,
        hostname: None,
        message: String::new(),
        attrs: Vec::new(),
        damaged: false,
    };
    if let Cow::Owned(_) = text {
        m.damaged = true;
        m.attr("invalid_utf8", "true");
        m.attr("raw_hex", lake_format::logs::hex(bytes));
    }
    let rest = match pri(&text) {
        Pri::Valid(p, rest) => {
            m.priority = Some(i64::from(p % 8));
            m.attr("facility", (p / 8).to_string());
            rest
        }
        Pri::Bad(why, rest) => {
            m.damaged = true;
            m.attr("malformed", why);
            rest
        }
    };
    let mut sent_ts: Option<&str> = None;
    let mut ts: Option<i64> = None;
    if let Some(after_version) = rest.strip_prefix("1 ") {
        m.attr("format", "rfc5424");
        match rfc5424(after_version, &mut m) {
            Ok(t) => {
                sent_ts = t;
                ts = t.and_then(|t| rfc3339(t, &reading.tz));
            }
            Err(why) => {
                m.damaged = true;
                m.attr("malformed", format!("RFC 5424 header: {why}"));
                // Fields read before the damage stay; the text is kept whole.
                m.message = rest.to_string();
            }
        }
    } else {
        m.attr("format", "rfc3164");
        let (t, parsed) = rfc3164(rest, reading, received, &mut m);
        sent_ts = t;
        ts = parsed;
    }
    match (sent_ts, ts) {
        (None, _) => m.attr("ts_received", "absent"),
        (Some(s), None) => {
            m.attr("ts_received", "unparsable");
            m.attr("sent_ts", s);
        }
        (Some(s), Some(t)) if t.abs_diff(received) > reading.max_skew.unsigned_abs() => {
            m.attr("ts_received", "skewed");
            m.attr("sent_ts", s);
        }
        (Some(_), Some(t)) => m.ts = t,
    }
    if let Some(h) = &m.hostname {
        let h = h.clone();
        m.attr("hostname", h);
    }
    m
}

enum Pri<'a> {
    Valid(u8, &'a str),
    /// Why, and the text read on.
    Bad(String, &'a str),
}

/// `<N>` with N in 0..=191 (1 to 3 digits).
fn pri(s: &str) -> Pri<'_> {
    let Some(body) = s.strip_prefix('<') else {
        return Pri::Bad("no <PRI>".into(), s);
    };
    let Some(close) = body.bytes().take(5).position(|b| b == b'>') else {
        return Pri::Bad("<PRI> not closed by '>' within 4 characters".into(), s);
    };
    let digits = &body[..close];
    let rest = &body[close + 1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Pri::Bad(format!("PRI <{digits}> is not a number"), rest);
    }
    match digits.parse::<u16>() {
        Ok(p) if p <= 191 => Pri::Valid(p as u8, rest),
        _ => Pri::Bad(format!("PRI <{digits}> is not 0 to 191"), rest),
    }
}

/// An RFC 3339 time, or one without offset taken in `tz`.
fn rfc3339(s: &str, tz: &TimeZone) -> Option<i64> {
    if let Ok(t) = s.parse::<jiff::Timestamp>() {
        return Some(t.as_microsecond());
    }
    let dt = s.parse::<jiff::civil::DateTime>().ok()?;
    Some(tz.to_ambiguous_timestamp(dt).compatible().ok()?.as_microsecond())
}

/// The header field `this` (up to its space) and what follows; `next` names the field
/// after it, for the error of a header cut short.
fn field<'a>(s: &'a str, this: &str, next: &str) -> Result<(&'a str, &'a str), String> {
    match s.split_once(' ') {
        Some(("", _)) => Err(format!("{this} is empty (two spaces)")),
        Some((f, rest)) => Ok((f, rest)),
        None => Err(format!("the message ends before {next}")),
    }
}

fn nil(f: &str) -> Option<&str> {
    (f != "-").then_some(f)
}

/// The header after `1 `: fills `m`, returns the TIMESTAMP text (not NILVALUE).
fn rfc5424<'a>(s: &'a str, m: &mut Message) -> Result<Option<&'a str>, String> {
    let (ts, s) = field(s, "TIMESTAMP", "HOSTNAME")?;
    let (host, s) = field(s, "HOSTNAME", "APP-NAME")?;
    let (app, s) = field(s, "APP-NAME", "PROCID")?;
    let (procid, s) = field(s, "PROCID", "MSGID")?;
    let (msgid, s) = field(s, "MSGID", "STRUCTURED-DATA")?;
    let mut sd = Vec::new();
    let msg = if let Some(after) = s.strip_prefix('-') {
        after
    } else if s.starts_with('[') {
        structured_data(s, &mut sd)?
    } else {
        return Err("STRUCTURED-DATA is neither '-' nor '['".into());
    };
    let msg = match msg.strip_prefix(' ') {
        Some(msg) => msg,
        None if msg.is_empty() => "",
        None => return Err("no space after STRUCTURED-DATA".into()),
    };
    m.hostname = nil(host).map(str::to_string);
    m.ident = nil(app).map(str::to_string);
    if let Some(p) = nil(procid) {
        match p.parse::<i64>() {
            Ok(pid) => m.pid = Some(pid),
            Err(_) => m.attr("procid", p),
        }
    }
    if let Some(id) = nil(msgid) {
        m.attr("msgid", id);
    }
    m.attrs.extend(sd);
    // rsyslog relaying a BSD message writes its MSG after one more space (`- -  text`).
    m.message = msg.strip_prefix('\u{feff}').unwrap_or(msg).trim_start_matches(' ').to_string();
    Ok(nil(ts))
}

/// Reads `[id name="value" …]…` into `sd.<id>.<name>` attrs; returns what follows.
fn structured_data<'a>(mut s: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    while let Some(elem) = s.strip_prefix('[') {
        let id_end = elem.find([' ', ']']).ok_or("an SD-ELEMENT is not closed")?;
        let id = &elem[..id_end];
        if id.is_empty() || id.contains(['=', '"']) {
            return Err(format!("bad SD-ID {id:?}"));
        }
        let mut rest = &elem[id_end..];
        let mut any = false;
        loop {
            if let Some(after) = rest.strip_prefix(']') {
                rest = after;
                break;
            }
            let p = rest.strip_prefix(' ').ok_or_else(|| format!("[{id}: a parameter is not separated by a space"))?;
            let eq = p.find('=').ok_or_else(|| format!("[{id}: a parameter has no '='"))?;
            let name = &p[..eq];
            if name.is_empty() || name.contains([' ', ']', '"']) {
                return Err(format!("[{id}: bad PARAM-NAME {name:?}"));
            }
            let v = p[eq + 1..].strip_prefix('"').ok_or_else(|| format!("[{id} {name}: the value is not quoted"))?;
            let mut value = String::new();
            let mut chars = v.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err(format!("[{id} {name}: the value is not closed")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c @ ('"' | '\\' | ']'))) => value.push(c),
                        // RFC 5424 §6.3.3: any other backslash is kept as written.
                        Some((_, c)) => {
                            value.push('\\');
                            value.push(c);
                        }
                        None => return Err(format!("[{id} {name}: the value is not closed")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            rest = &v[close + 1..];
            let key = format!("sd.{id}.{name}");
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, old)) => {
                    old.push(',');
                    old.push_str(&value);
                }
                None => out.push((key, value)),
            }
            any = true;
        }
        if !any {
            out.push((format!("sd.{id}"), String::new()));
        }
        s = rest;
    }
    Ok(s)
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];

/// A BSD time at the start of `s`: `Mmm dd[ yyyy] hh:mm:ss[.frac]`. Returns its civil
/// parts (year if written, month, day, h, m, s, µs) and the bytes it took.
#[allow(clippy::type_complexity)]
fn bsd_time(s: &str) -> Option<((Option<i16>, i8, i8, i8, i8, i8, i32), usize)> {
    let b = s.as_bytes();
    let month = MONTHS.iter().position(|m| b.len() > 3 && b[..3].eq_ignore_ascii_case(m.as_bytes()))? as i8 + 1;
    let mut i = 3;
    let spaces = b[i..].iter().take_while(|c| **c == b' ').count();
    if spaces == 0 || spaces > 2 {
        return None;
    }
    i += spaces;
    let digits = |i: usize, n: usize| -> Option<i32> {
        let d = b.get(i..i + n)?;
        d.iter().all(u8::is_ascii_digit).then(|| std::str::from_utf8(d).ok()?.parse().ok())?
    };
    let day_len = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=2).contains(&day_len) {
        return None;
    }
    let day = digits(i, day_len)? as i8;
    i += day_len;
    if b.get(i) != Some(&b' ') {
        return None;
    }
    i += 1;
    let mut year = None;
    if b.get(i + 4) == Some(&b' ') {
        year = Some(digits(i, 4)? as i16);
        i += 5;
    }
    let hour = digits(i, 2)?;
    let (c1, c2) = (b.get(i + 2), b.get(i + 5));
    if c1 != Some(&b':') || c2 != Some(&b':') {
        return None;
    }
    let (min, sec) = (digits(i + 3, 2)?, digits(i + 6, 2)?);
    i += 8;
    let mut micros = 0;
    if b.get(i) == Some(&b'.') {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let frac = &s[i + 1..i + 1 + n.min(6)];
        micros = frac.parse::<i32>().ok()? * 10_i32.pow(6 - n.min(6) as u32);
        i += 1 + n;
    }
    Some(((year, month, day, hour as i8, min as i8, sec as i8, micros), i))
}

/// The year that puts a year-less civil time nearest `received`, in `tz`.
#[allow(clippy::too_many_arguments)]
fn nearest_year(tz: &TimeZone, received: i64, mo: i8, d: i8, h: i8, mi: i8, s: i8, us: i32) -> Option<i64> {
    let year = crate::sources::zone::year_at(tz, received)?;
    [year - 1, year, year + 1]
        .into_iter()
        .filter_map(|y| crate::sources::zone::civil_micros(tz, y, mo, d, h, mi, s, us))
        .min_by_key(|t| t.abs_diff(received))
}

/// A TAG with its optional `[pid]` and `:`: `sshd[12]:`, `CRON:`, `%SYS-5-CONFIG_I:`.
fn tag(word: &str) -> Option<(&str, Option<&str>)> {
    let (head, colon) = match word.strip_suffix(':') {
        Some(h) => (h, true),
        None => (word, false),
    };
    let (name, pid) = match head.split_once('[') {
        Some((n, p)) => (n, Some(p.strip_suffix(']')?)),
        None => (head, None),
    };
    // Without its colon, only `name[pid]` says "tag" (`sshd[12] msg`, seen from some
    // appliances); a bare word is the message's first word.
    let ok = !name.is_empty() && !name.contains([']', ':']) && (colon || pid.is_some());
    ok.then_some((name, pid))
}

/// The RFC 3164 header of `s` (after PRI): fills `m`, returns the sent time text and
/// the time it reads as.
fn rfc3164<'a>(s: &'a str, reading: &Reading, received: i64, m: &mut Message) -> (Option<&'a str>, Option<i64>) {
    let mut rest = s;
    // Cisco IOS: `<189>42: ` — a sequence number before the time.
    if let Some((seq, after)) = rest.split_once(": ") {
        if !seq.is_empty() && seq.len() <= 10 && seq.bytes().all(|b| b.is_ascii_digit()) {
            m.attr("sequence", seq);
            rest = after;
        }
    }
    // Cisco's clock marks: `*` not synchronized, `.` synchronized once but not now.
    let marked = rest.strip_prefix(['*', '.']).filter(|r| bsd_time(r).is_some());
    let rest_t = marked.unwrap_or(rest);
    let mut sent: Option<&str> = None;
    let mut ts: Option<i64> = None;
    let mut after: Option<&str> = None;
    if let Some(((year, mo, d, h, mi, sec, us), n)) = bsd_time(rest_t) {
        let mut tail = &rest_t[n..];
        let mut tz = reading.tz.clone();
        // Cisco's `service timestamps … show-timezone`: ` UTC:`.
        for zone in [" UTC", " GMT"] {
            if let Some(t) = tail.strip_prefix(zone) {
                tz = TimeZone::UTC;
                tail = t;
            }
        }
        sent = Some(&rest_t[..rest_t.len() - tail.len()]);
        ts = match year {
            Some(y) => crate::sources::zone::civil_micros(&tz, y, mo, d, h, mi, sec, us),
            None => nearest_year(&tz, received, mo, d, h, mi, sec, us),
        };
        after = Some(tail);
    } else if let Some((word, tail)) = rest.split_once(' ') {
        // An RFC 3339 time (rsyslog's forwarding format and many appliances).
        if word.len() >= 19 && word.as_bytes()[4] == b'-' && word.as_bytes()[10] == b'T' {
            sent = Some(word);
            ts = rfc3339(word, &reading.tz);
            after = Some(tail);
        }
    }
    let Some(tail) = after else {
        // No time: `<PRI>` then the message, maybe with a tag.
        header_tag(rest, m);
        return (None, None);
    };
    if let Some(t) = tail.strip_prefix(": ").or_else(|| tail.strip_prefix(':')) {
        // Cisco: the time ends with a colon and no HOSTNAME follows.
        header_tag(t, m);
        return (sent, ts);
    }
    let tail = tail.strip_prefix(' ').unwrap_or(tail);
    // HOSTNAME unless the first word is already the TAG (senders that leave it out).
    match tail.split_once(' ') {
        Some((word, more)) if tag(word).is_none() && !word.is_empty() => {
            m.hostname = Some(word.to_string());
            header_tag(more, m);
        }
        _ => header_tag(tail, m),
    }
    (sent, ts)
}

/// TAG (with `[pid]`) and MSG of `s`; without a tag the whole of `s` is the message.
fn header_tag(s: &str, m: &mut Message) {
    let (word, more) = s.split_once(' ').unwrap_or((s, ""));
    match tag(word) {
        Some((name, pid)) => {
            m.ident = Some(name.to_string());
            if let Some(p) = pid {
                match p.parse::<i64>() {
                    Ok(n) => m.pid = Some(n),
                    Err(_) => m.attr("procid", p),
                }
            }
            m.message = more.to_string();
        }
        None => m.message = s.to_string(),
    }
}
