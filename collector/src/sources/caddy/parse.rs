//! The pure parser of one Caddy JSON access log line into an `http` row.
//!
//! In: the bytes of one line. Out: an [`HttpRow`] borrowing from the line where it can
//! (serde_json with a hand-written visitor: no intermediate `Value`, no allocation for
//! fields without escapes), or a [`ParseError`] saying why the line is not a Caddy access
//! entry. Mapping (Caddy 2.6 and 2.7+, see `shared/reference/formats.md`):
//!
//! - `ts` float seconds → microseconds; `duration` float seconds → `duration_ms`, rounded
//!   to the microsecond like `ts` (Caddy writes nanoseconds, whose digits are noise at
//!   this scale and cost ~2 bytes per row on disk);
//! - `request.host` → `vhost` without its port (`[::1]:443` → `::1`); the full host goes
//!   to attrs `request.host` only when it carried a port;
//! - `request.uri` → `uri`, and `path` (before `?`); `method`, `proto`, `status`, `size`,
//!   `bytes_read`, `request.remote_ip`, `request.client_ip` (else `remote_ip`);
//! - `request.headers.User-Agent[0]`, `Referer[0]` → `user_agent`, `referer`;
//! - `request.tls.version` 769..772 → `"1.0"`..`"1.3"` (another number stays as its
//!   text), `request.tls.server_name` → `server_name`;
//! - everything else → attrs, flattened with dotted keys: `level`, `logger`, `msg`,
//!   `user_id`, `remote_port`, `request.headers.<Name>`, `resp_headers.<Name>`,
//!   `tls.<field>`, other `request.<field>`, any unknown top-level field; arrays are
//!   joined with ", ", numbers and booleans are their JSON text, null is `null`. Attrs
//!   are sorted by key (stable): Caddy writes header maps in Go's random map order, and
//!   one order per key set is what lets Parquet compress the map (~9 bytes per row).
//!
//! Required: a JSON object with a numeric `ts` and an object `request`. Known fields of
//! the wrong type are errors (a line we cannot map faithfully is kept raw instead).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// One `http` row, borrowing from the line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpRow<'a> {
    /// Microseconds since the epoch.
    pub ts_micros: i64,
    /// `request.host` without port.
    pub vhost: Option<Cow<'a, str>>,
    /// HTTP method.
    pub method: Option<Cow<'a, str>>,
    /// Path and query.
    pub uri: Option<Cow<'a, str>>,
    /// Path (uri before `?`).
    pub path: Option<Cow<'a, str>>,
    /// Protocol, e.g. `HTTP/1.1`.
    pub proto: Option<Cow<'a, str>>,
    /// Response status.
    pub status: Option<i64>,
    /// Response body bytes.
    pub size: Option<i64>,
    /// Request body bytes (2.7+).
    pub bytes_read: Option<i64>,
    /// Handling time in milliseconds.
    pub duration_ms: Option<f64>,
    /// Connection peer.
    pub remote_ip: Option<Cow<'a, str>>,
    /// Client after trusted proxies (2.7+), else `remote_ip`.
    pub client_ip: Option<Cow<'a, str>>,
    /// First User-Agent value.
    pub user_agent: Option<Cow<'a, str>>,
    /// First Referer value.
    pub referer: Option<Cow<'a, str>>,
    /// `1.0` .. `1.3`.
    pub tls_version: Option<Cow<'a, str>>,
    /// SNI.
    pub server_name: Option<Cow<'a, str>>,
    /// Everything else, flattened.
    pub attrs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// Why a line is not a Caddy access entry.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not UTF-8 (Caddy writes UTF-8 JSON).
    #[error("not valid UTF-8 at byte {0}")]
    NotUtf8(usize),
    /// Not JSON, not an object, or a known field of the wrong type.
    #[error("not a Caddy JSON access log entry (is the log `format json`?): {0}")]
    Json(#[from] serde_json::Error),
    /// A required field is missing.
    #[error("missing field {0:?}")]
    Missing(&'static str),
}

/// Parses one line (without its newline).
pub fn parse(line: &[u8]) -> Result<HttpRow<'_>, ParseError> {
    let text = std::str::from_utf8(line).map_err(|e| ParseError::NotUtf8(e.valid_up_to()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let mut row = HttpRow::default();
    let seen = de.deserialize_map(Top { row: &mut row })?;
    de.end()?;
    if !seen.ts {
        return Err(ParseError::Missing("ts"));
    }
    if !seen.request {
        return Err(ParseError::Missing("request"));
    }
    if row.client_ip.is_none() {
        row.client_ip.clone_from(&row.remote_ip);
    }
    row.attrs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(row)
}

/// `host[:port]` → host; `[v6]:port` and `[v6]` → v6. Empty → none.
fn strip_port(host: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let cut = |h: &str| -> Option<(usize, usize)> {
        if let Some(rest) = h.strip_prefix('[') {
            return rest.find(']').map(|end| (1, end + 1));
        }
        match h.rfind(':') {
            // Several colons without brackets: a bare IPv6 address, no port.
            Some(i) if h[..i].contains(':') => None,
            Some(i) => Some((0, i)),
            None => None,
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(match (cut(&host), host) {
        (None, h) => h,
        (Some((a, b)), Cow::Borrowed(h)) => Cow::Borrowed(&h[a..b]),
        (Some((a, b)), Cow::Owned(h)) => Cow::Owned(h[a..b].to_string()),
    })
}

/// Float seconds to whole microseconds. Whole seconds and the fraction are scaled apart:
/// `ts * 1e6` on today's epoch values lands on a 0.25 µs grid and can round up a µs.
/// Saturating: a value past ±292,000 years (hostile input, found by fuzzing) becomes
/// the extreme, which the lake's timestamp window then refuses, instead of overflowing.
pub fn seconds_to_micros(ts: f64) -> i64 {
    let secs = ts.floor();
    (secs as i64).saturating_mul(1_000_000).saturating_add(((ts - secs) * 1e6).round() as i64)
}

fn sub_cow<'a>(s: &Cow<'a, str>, end: usize) -> Cow<'a, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[..end]),
        Cow::Owned(o) => Cow::Owned(o[..end].to_string()),
    }
}

fn tls_version_name(v: i64) -> Cow<'static, str> {
    match v {
        769 => Cow::Borrowed("1.0"),
        770 => Cow::Borrowed("1.1"),
        771 => Cow::Borrowed("1.2"),
        772 => Cow::Borrowed("1.3"),
        other => Cow::Owned(other.to_string()),
    }
}

fn join_key<'a>(prefix: &str, key: Cow<'a, str>) -> Cow<'a, str> {
    if prefix.is_empty() {
        key
    } else {
        Cow::Owned(format!("{prefix}{key}"))
    }
}

/// A string that borrows from the input when it has no escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Default)]
struct Seen {
    ts: bool,
    request: bool,
}

struct Top<'r, 'a> {
    row: &'r mut HttpRow<'a>,
}

impl<'de> Visitor<'de> for Top<'_, 'de> {
    type Value = Seen;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Caddy access log object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
        let row = self.row;
        let mut seen = Seen::default();
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            match key.as_ref() {
                "ts" => {
                    row.ts_micros = seconds_to_micros(map.next_value()?);
                    seen.ts = true;
                }
                "request" => {
                    map.next_value_seed(Request { row: &mut *row })?;
                    seen.request = true;
                }
                "duration" => row.duration_ms = map.next_value::<Option<f64>>()?.map(|d| (d * 1e6).round() / 1e3),
                "size" => row.size = map.next_value()?,
                "status" => row.status = map.next_value()?,
                "bytes_read" => row.bytes_read = map.next_value()?,
                "resp_headers" => {
                    map.next_value_seed(Headers { prefix: "resp_headers.", row: &mut *row, request: false })?
                }
                _ => map.next_value_seed(Flat { key, row: &mut *row })?,
            }
        }
        Ok(seen)
    }
}

struct Request<'r, 'a> {
    row: &'r mut HttpRow<'a>,
}

impl<'de> DeserializeSeed<'de> for Request<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Request<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a request object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let row = self.row;
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            let text = |map: &mut A| -> Result<Option<Cow<'de, str>>, A::Error> {
                Ok(map.next_value::<Option<Str<'de>>>()?.map(|s| s.0))
            };
            match key.as_ref() {
                "remote_ip" => row.remote_ip = text(&mut map)?,
                "client_ip" => row.client_ip = text(&mut map)?,
                "proto" => row.proto = text(&mut map)?,
                "method" => row.method = text(&mut map)?,
                "host" => {
                    if let Some(host) = text(&mut map)? {
                        let bare = strip_port(host.clone());
                        if bare.as_deref() != Some(host.as_ref()) && !host.is_empty() {
                            row.attrs.push((Cow::Borrowed("request.host"), host));
                        }
                        row.vhost = bare;
                    }
                }
                "uri" => {
                    if let Some(uri) = text(&mut map)? {
                        let end = uri.find('?').unwrap_or(uri.len());
                        row.path = Some(sub_cow(&uri, end));
                        row.uri = Some(uri);
                    }
                }
                "headers" => {
                    map.next_value_seed(Headers { prefix: "request.headers.", row: &mut *row, request: true })?
                }
                "tls" => map.next_value_seed(Tls { row: &mut *row })?,
                "remote_port" => map.next_value_seed(Flat { key, row: &mut *row })?,
                _ => map.next_value_seed(Flat { key: join_key("request.", key), row: &mut *row })?,
            }
        }
        Ok(())
    }
}

struct Tls<'r, 'a> {
    row: &'r mut HttpRow<'a>,
}

impl<'de> DeserializeSeed<'de> for Tls<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Tls<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a tls object")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let row = self.row;
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            match key.as_ref() {
                "version" => row.tls_version = map.next_value::<Option<i64>>()?.map(tls_version_name),
                "server_name" => row.server_name = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                _ => map.next_value_seed(Flat { key: join_key("tls.", key), row: &mut *row })?,
            }
        }
        Ok(())
    }
}

/// `{Name: [values]}`: User-Agent and Referer of the request become columns.
struct Headers<'r, 'a> {
    prefix: &'static str,
    row: &'r mut HttpRow<'a>,
    request: bool,
}

impl<'de> DeserializeSeed<'de> for Headers<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for Headers<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a headers object")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let row = self.row;
        while let Some(Str(name)) = map.next_key::<Str<'de>>()? {
            let column = match name.as_ref() {
                "User-Agent" if self.request => Some(&mut row.user_agent),
                "Referer" if self.request => Some(&mut row.referer),
                _ => None,
            };
            match column {
                Some(col) => {
                    let values: Vec<Str<'de>> = map.next_value()?;
                    let many = values.len() > 1;
                    let joined = many.then(|| values.iter().map(|v| v.0.as_ref()).collect::<Vec<_>>().join(", "));
                    *col = values.into_iter().next().map(|v| v.0);
                    if let Some(all) = joined {
                        // Only the first value fits the column: keep them all here.
                        row.attrs.push((join_key(self.prefix, name), Cow::Owned(all)));
                    }
                }
                None => map.next_value_seed(Flat { key: join_key(self.prefix, name), row: &mut *row })?,
            }
        }
        Ok(())
    }
}

/// Any JSON value flattened into attrs under `key`.
struct Flat<'r, 'a> {
    key: Cow<'a, str>,
    row: &'r mut HttpRow<'a>,
}

impl<'de> DeserializeSeed<'de> for Flat<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Flat<'_, 'de> {
    fn put(self, v: Cow<'de, str>) {
        self.row.attrs.push((self.key, v));
    }
}

impl<'de> Visitor<'de> for Flat<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        self.put(Cow::Borrowed(v));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.put(Cow::Owned(v.to_string()));
        Ok(())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.put(Cow::Owned(v));
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.put(Cow::Borrowed(if v { "true" } else { "false" }));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.put(Cow::Owned(v.to_string()));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.put(Cow::Owned(v.to_string()));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.put(Cow::Owned(v.to_string()));
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.put(Cow::Borrowed("null"));
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut parts: Vec<String> = Vec::new();
        while let Some(v) = seq.next_element::<serde_json::Value>()? {
            parts.push(match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        }
        // One element (the usual header) borrows nothing but allocates once either way.
        self.put(Cow::Owned(parts.join(", ")));
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Flat { key, row } = self;
        let mut empty = true;
        while let Some(Str(k)) = map.next_key::<Str<'de>>()? {
            empty = false;
            map.next_value_seed(Flat { key: Cow::Owned(format!("{key}.{k}")), row: &mut *row })?;
        }
        if empty {
            row.attrs.push((key, Cow::Borrowed("{}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CADDY_26: &str = r#"{"level":"info","ts":1795374070.6534984,"logger":"http.log.access.log0","msg":"handled request","request":{"remote_ip":"127.0.0.1","remote_port":"55910","proto":"HTTP/1.1","method":"GET","host":"127.0.0.1:18080","uri":"/ok?x=1","headers":{"User-Agent":["probe/1.0"],"Accept":["*/*"]}},"user_id":"","duration":0.000036034,"size":5,"status":200,"resp_headers":{"Server":["Caddy"],"Content-Type":["text/plain; charset=utf-8"]}}"#;

    #[test]
    fn a_caddy_2_6_line_maps_every_field() {
        let r = parse(CADDY_26.as_bytes()).unwrap();
        assert_eq!(r.ts_micros, 1_795_374_070_653_498);
        assert_eq!(r.vhost.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.uri.as_deref(), Some("/ok?x=1"));
        assert_eq!(r.path.as_deref(), Some("/ok"));
        assert_eq!(r.status, Some(200));
        assert_eq!(r.size, Some(5));
        assert_eq!(r.bytes_read, None);
        assert_eq!(r.duration_ms, Some(0.036), "rounded to the µs");
        assert_eq!(r.client_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.user_agent.as_deref(), Some("probe/1.0"));
        assert!(matches!(r.method, Some(Cow::Borrowed("GET"))), "fields borrow from the line");
        let attrs: Vec<(&str, &str)> = r.attrs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        assert_eq!(
            attrs,
            [
                ("level", "info"),
                ("logger", "http.log.access.log0"),
                ("msg", "handled request"),
                ("remote_port", "55910"),
                ("request.headers.Accept", "*/*"),
                ("request.host", "127.0.0.1:18080"),
                ("resp_headers.Content-Type", "text/plain; charset=utf-8"),
                ("resp_headers.Server", "Caddy"),
                ("user_id", ""),
            ]
        );
    }

    #[test]
    fn attrs_do_not_depend_on_the_order_caddy_wrote() {
        let a = parse(br#"{"ts":1,"request":{"headers":{"B":["1"],"A":["2"]}},"z":1,"m":2}"#);
        let b = parse(br#"{"ts":1,"request":{"headers":{"A":["2"],"B":["1"]}},"m":2,"z":1}"#);
        assert_eq!(a.unwrap().attrs, b.unwrap().attrs);
    }

    #[test]
    fn hosts_lose_their_port_ipv6_included() {
        for (h, want) in [
            ("example.com", Some("example.com")),
            ("example.com:8443", Some("example.com")),
            ("[::1]:443", Some("::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("2001:db8::1", Some("2001:db8::1")),
            ("", None),
        ] {
            assert_eq!(strip_port(Cow::Borrowed(h)).as_deref(), want, "{h}");
        }
    }

    #[test]
    fn tls_and_2_7_fields() {
        let line = r#"{"ts":1.5,"request":{"remote_ip":"10.0.0.1","client_ip":"203.0.113.9","host":"[::1]:443","uri":"/","tls":{"resumed":false,"version":772,"cipher_suite":4865,"proto":"h2","server_name":"example.com"}},"bytes_read":12,"extra":{"a":[1,"b"],"n":null}}"#;
        let r = parse(line.as_bytes()).unwrap();
        assert_eq!(r.ts_micros, 1_500_000);
        assert_eq!(r.client_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(r.tls_version.as_deref(), Some("1.3"));
        assert_eq!(r.server_name.as_deref(), Some("example.com"));
        assert_eq!(r.bytes_read, Some(12));
        let attrs: Vec<(&str, &str)> = r.attrs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
        assert!(attrs.contains(&("tls.cipher_suite", "4865")));
        assert!(attrs.contains(&("tls.resumed", "false")));
        assert!(attrs.contains(&("extra.a", "1, b")));
        assert!(attrs.contains(&("extra.n", "null")));
    }

    #[test]
    fn what_is_not_an_access_entry_is_an_error() {
        for bad in [
            &b"not json"[..],
            b"[1,2]",
            b"{\"ts\":1}",
            b"{\"request\":{}}",
            b"{\"ts\":\"x\",\"request\":{}}",
            b"{\"ts\":1,\"request\":{}} x",
            b"{\"ts\":1,\"request\":{\"uri\":\"\xff\"}}",
            b"{\"ts\":1,\"status\":\"200\",\"request\":{}}",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(matches!(parse(b"\xff"), Err(ParseError::NotUtf8(0))));
    }

    #[test]
    fn a_timestamp_past_the_microsecond_range_saturates() {
        // Found by the caddy fuzz target: `ts` of 1e300 overflowed the µs multiplication.
        assert_eq!(seconds_to_micros(1e300), i64::MAX);
        assert_eq!(seconds_to_micros(-1e300), i64::MIN);
        assert_eq!(seconds_to_micros(1_795_374_070.653_498_4), 1_795_374_070_653_498);
    }
}
