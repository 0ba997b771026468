//! The access-log formats of `[[log_file]]` → `http` rows (the same columns as Caddy's,
//! [`HttpRow`]; the traffic classes are added by Caddy's classifier when the row is built).
//!
//! - `nginx_combined` and `apache_combined`: the NCSA combined format
//!   (`$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//!   "$http_referer" "$http_user_agent"`, Apache's `%h %l %u %t "%r" %>s %b "%{Referer}i"
//!   "%{User-agent}i"`), also without its two last fields (the common format); fields
//!   written after them go to attrs `extra`. Escapes are undone: nginx writes `"`, `\` and
//!   bytes outside printable ASCII as `\xHH`, Apache as `\"`, `\\` and `\xHH`.
//! - `nginx_json`: a JSON object per line from a `log_format … escape=json` whose keys are
//!   nginx's variable names (the README shows one): `msec`, `time_iso8601` or
//!   `time_local` → ts; `remote_addr`; `host` or `server_name` → vhost;
//!   `request_method`, `request_uri` (or `request`), `server_protocol`, `status`,
//!   `body_bytes_sent`, `request_length` → bytes_read, `request_time` (seconds) →
//!   duration_ms, `http_user_agent`, `http_referer`, `ssl_protocol` → tls_version,
//!   `ssl_server_name`. Other keys go to attrs; empty and `-` values are left out.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

use crate::sources::caddy::HttpRow;

static COMBINED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"^(?P<remote>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<size>\d+|-)(?: "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<ua>(?:[^"\\]|\\.)*)")?(?P<extra>.*)$"#,
    )
    .expect("combined regex")
});

/// Undoes nginx's and Apache's escapes (`\xHH`, `\"`, `\\`, `\n`, `\t`, `\r`); bytes
/// that are not UTF-8 once unescaped become U+FFFD.
pub fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let hex =
                |j: usize| b.get(j..j + 2).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
            match b[i + 1] {
                b'x' if hex(i + 2).is_some() => {
                    out.push(hex(i + 2).expect("checked"));
                    i += 4;
                    continue;
                }
                c @ (b'"' | b'\\') => out.push(c),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                _ => {
                    out.push(b'\\');
                    i += 1;
                    continue;
                }
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn value(s: &str) -> Option<&str> {
    (!s.is_empty() && s != "-").then_some(s)
}

/// Sets method, uri, path and proto from a request line (`GET /a?b HTTP/1.1`); one that
/// is not of that shape (a TLS handshake sent to a plain port) goes to attrs `request`.
fn set_request<'a>(row: &mut HttpRow<'a>, request: Cow<'a, str>) {
    let parts: Vec<&str> = request.split(' ').collect();
    let ok = parts.len() == 3
        && !parts[0].is_empty()
        && parts[0].bytes().all(|c| c.is_ascii_uppercase() || c == b'-' || c == b'_')
        && parts[2].starts_with("HTTP/");
    if !ok {
        if let Some(r) = value(&request) {
            row.attrs.push((Cow::Borrowed("request"), Cow::Owned(r.to_string())));
        }
        return;
    }
    set_uri(row, parts[1].to_string());
    row.method = Some(Cow::Owned(parts[0].to_string()));
    row.proto = Some(Cow::Owned(parts[2].to_string()));
}

fn set_uri(row: &mut HttpRow<'_>, uri: String) {
    row.path = Some(Cow::Owned(uri.split('?').next().unwrap_or_default().to_string()));
    row.uri = Some(Cow::Owned(uri));
}

fn int(what: &str, v: &str) -> Result<i64, String> {
    v.parse().map_err(|_| format!("{what} {v:?} is not an integer"))
}

/// A combined (or common) access-log line.
pub fn combined(line: &str) -> Result<HttpRow<'_>, String> {
    let c = COMBINED.captures(line).ok_or("not a combined access-log line")?;
    let get = |n: &str| c.name(n).map(|m| m.as_str()).and_then(value);
    let time = get("time").ok_or("no time")?;
    let ts = jiff::fmt::strtime::parse("%d/%b/%Y:%H:%M:%S %z", time)
        .and_then(|t| t.to_timestamp())
        .map_err(|e| format!("time [{time}]: {e}"))?;
    let mut row = HttpRow { ts_micros: ts.as_microsecond(), ..HttpRow::default() };
    row.status = Some(int("status", get("status").ok_or("no status")?)?);
    row.size = get("size").map(|s| int("size", s)).transpose()?;
    row.remote_ip = get("remote").map(Cow::Borrowed);
    row.client_ip.clone_from(&row.remote_ip);
    row.referer = get("referer").map(unescape);
    row.user_agent = get("ua").map(unescape);
    set_request(&mut row, unescape(c.name("request").map_or("", |m| m.as_str())));
    for (key, name) in [("ident", "ident"), ("user", "remote_user")] {
        if let Some(v) = get(key) {
            row.attrs.push((Cow::Borrowed(name), unescape(v)));
        }
    }
    if let Some(extra) = get("extra").map(str::trim).filter(|e| !e.is_empty()) {
        row.attrs.push((Cow::Borrowed("extra"), Cow::Borrowed(extra)));
    }
    Ok(row)
}

/// A JSON value as nginx's text (`escape=json` writes every variable as a string, but a
/// format may leave numbers bare).
fn text_of(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => value(s).map(str::to_string),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// An nginx `escape=json` access-log line.
pub fn nginx_json(line: &str) -> Result<HttpRow<'static>, String> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let mut row = HttpRow::default();
    let mut ts: Option<i64> = None;
    let mut request: Option<String> = None;
    let mut vhost_from_host = false;
    for (k, v) in map {
        let Some(s) = text_of(&v) else { continue };
        let owned = |s: String| Some(Cow::Owned(s));
        match k.as_str() {
            "msec" => {
                let secs: f64 = s.parse().map_err(|_| format!("msec {s:?} is not seconds"))?;
                ts = Some((secs * 1e6).round() as i64);
            }
            "time_iso8601" if ts.is_none() => {
                let t: jiff::Timestamp = s.parse().map_err(|e| format!("time_iso8601 {s:?}: {e}"))?;
                ts = Some(t.as_microsecond());
            }
            "time_local" if ts.is_none() => {
                let t = jiff::fmt::strtime::parse("%d/%b/%Y:%H:%M:%S %z", &s)
                    .and_then(|t| t.to_timestamp())
                    .map_err(|e| format!("time_local {s:?}: {e}"))?;
                ts = Some(t.as_microsecond());
            }
            "time_iso8601" | "time_local" => {}
            "remote_addr" => {
                row.remote_ip = owned(s.clone());
                row.client_ip = owned(s);
            }
            "host" => {
                row.vhost = owned(s);
                vhost_from_host = true;
            }
            "server_name" if !vhost_from_host => row.vhost = owned(s),
            "request_method" => row.method = owned(s),
            "request_uri" => set_uri(&mut row, s),
            "request" => request = Some(s),
            "server_protocol" => row.proto = owned(s),
            "status" => row.status = Some(int("status", &s)?),
            "body_bytes_sent" => row.size = Some(int("body_bytes_sent", &s)?),
            "request_length" => row.bytes_read = Some(int("request_length", &s)?),
            "request_time" => {
                let secs: f64 = s.parse().map_err(|_| format!("request_time {s:?} is not seconds"))?;
                row.duration_ms = Some(secs * 1000.0);
            }
            "http_user_agent" => row.user_agent = owned(s),
            "http_referer" => row.referer = owned(s),
            "ssl_protocol" => row.tls_version = owned(s.strip_prefix("TLSv").unwrap_or(&s).to_string()),
            "ssl_server_name" => row.server_name = owned(s),
            _ => row.attrs.push((Cow::Owned(k), Cow::Owned(s))),
        }
    }
    if row.method.is_none() {
        if let Some(r) = request {
            let uri = row.uri.take();
            set_request(&mut row, Cow::Owned(r));
            if let Some(u) = uri {
                row.uri = Some(u);
            }
        }
    }
    row.ts_micros = ts.ok_or("no msec, time_iso8601 nor time_local")?;
    if row.status.is_none() {
        return Err("no status".into());
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_of_nginx_and_apache_are_undone() {
        assert_eq!(unescape(r#"a\x22b\x5Cc"#), "a\"b\\c");
        assert_eq!(unescape(r#"a\"b\\c"#), "a\"b\\c");
        assert_eq!(unescape(r"caf\xC3\xA9 \xff \q"), "café \u{fffd} \\q");
        assert_eq!(unescape("plain"), "plain");
    }

    #[test]
    fn a_request_that_is_not_http_is_kept_in_attrs() {
        let line = r#"203.0.113.9 - - [22/Nov/2026:10:15:01 +0000] "\x16\x03\x01\x00" 400 157 "-" "-""#;
        let r = combined(line).unwrap();
        assert_eq!((r.method, r.status, r.size), (None, Some(400), Some(157)));
        assert_eq!(r.attrs[0].0, "request");
        assert!(combined("203.0.113.9 - - [22/Nov/2026:10:15:01 +0000] \"GET / HTTP/1.1\" 2000 1").is_err());
        assert!(combined("203.0.113.9 - - [32/Nov/2026:10:15:01 +0000] \"GET / HTTP/1.1\" 200 1").is_err());
    }
}
