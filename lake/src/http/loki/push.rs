//! The two bodies of Loki's push API, decoded into one shape ([`Stream`]): the protobuf
//! `logproto.PushRequest` of Loki's `push.proto` (what Promtail, Grafana Alloy, Docker's
//! loki log driver and Vector send) and the JSON body of the HTTP API (Fluent Bit, client
//! libraries, `curl`).
//!
//! A protobuf stream names its labels in one string, in the Prometheus selector syntax
//! (`{job="varlogs", host="web-1"}`); [`parse_labels`] reads it. Lines and label values
//! are taken as bytes, not as protobuf `string`s: Loki's own Go decoder accepts any
//! bytes there, and a log line that is not UTF-8 (a binary blob a container printed) must
//! not make the whole batch undecodable — the shipper would drop it, 4xx never being
//! retried. Such a line is stored lossily, its exact bytes kept in hex ([`Entry::raw`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use prost::Message;
use serde::Deserialize;

/// One stream of a push: its labels (in the order sent) and its entries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stream {
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) entries: Vec<Entry>,
}

/// One log line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// Nanoseconds since the epoch.
    pub(crate) ns: i128,
    /// The line, UTF-8 (lossy when the sender's bytes were not).
    pub(crate) line: String,
    /// The line's exact bytes when they were not UTF-8.
    pub(crate) raw: Option<Vec<u8>>,
    /// Structured metadata (Loki 2.9+): per-line labels that are not stream labels.
    pub(crate) metadata: Vec<(String, String)>,
}

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`; `hash` (3) is not read.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StreamAdapter {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) labels: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) entries: Vec<EntryAdapter>,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub(crate) timestamp: Option<Timestamp>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) line: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) structured_metadata: Vec<LabelPairAdapter>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Timestamp {
    #[prost(int64, tag = "1")]
    pub(crate) seconds: i64,
    #[prost(int32, tag = "2")]
    pub(crate) nanos: i32,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LabelPairAdapter {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) value: Vec<u8>,
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The streams of a protobuf `PushRequest` (already unsnappied).
pub(crate) fn from_protobuf(bytes: &[u8]) -> Result<Vec<Stream>, String> {
    let req = PushRequest::decode(bytes).map_err(|e| format!("body is not a protobuf logproto.PushRequest: {e}"))?;
    req.streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let text = lossy(s.labels);
            let labels = parse_labels(&text).map_err(|e| format!("stream {i}: labels {}: {e}", cut(&text)))?;
            let entries = s
                .entries
                .into_iter()
                .map(|e| {
                    let ts = e.timestamp.unwrap_or_default();
                    let (line, raw) = match String::from_utf8(e.line) {
                        Ok(line) => (line, None),
                        Err(bad) => (String::from_utf8_lossy(bad.as_bytes()).into_owned(), Some(bad.into_bytes())),
                    };
                    let metadata = e.structured_metadata.into_iter().map(|p| (lossy(p.name), lossy(p.value))).collect();
                    Entry { ns: i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos), line, raw, metadata }
                })
                .collect();
            Ok(Stream { labels, entries })
        })
        .collect()
}

/// The JSON body: `{"streams": [{"stream": {label: value}, "values": [[ns, line, {metadata}?]]}]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPush {
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonStream {
    stream: BTreeMap<String, String>,
    values: Vec<Vec<serde_json::Value>>,
}

/// The streams of a JSON push body.
pub(crate) fn from_json(bytes: &[u8]) -> Result<Vec<Stream>, String> {
    let push: JsonPush = serde_json::from_slice(bytes).map_err(|e| format!("body is not a Loki JSON push: {e}"))?;
    push.streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let labels: Vec<(String, String)> = s.stream.into_iter().collect();
            if let Some((name, _)) = labels.iter().find(|(n, _)| !is_label_name(n)) {
                return Err(format!("stream {i}: {name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"));
            }
            let entries = s
                .values
                .into_iter()
                .enumerate()
                .map(|(j, v)| json_entry(v).map_err(|e| format!("stream {i}, value {j}: {e}")))
                .collect::<Result<_, _>>()?;
            Ok(Stream { labels, entries })
        })
        .collect()
}

fn json_entry(v: Vec<serde_json::Value>) -> Result<Entry, String> {
    use serde_json::Value;
    let mut it = v.into_iter();
    let (Some(ts), Some(line), metadata, None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(
            "a value is [\"<unix epoch ns>\", \"<line>\"] or [\"<ns>\", \"<line>\", {structured metadata}]".into()
        );
    };
    let Value::String(ts) = ts else {
        return Err(format!("the timestamp is a string of nanoseconds since the epoch, not {ts}"));
    };
    let ns = ts
        .parse::<i128>()
        .ok()
        .filter(|_| ts.bytes().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| format!("timestamp {:?} is not nanoseconds since the epoch", cut(&ts)))?;
    let Value::String(line) = line else { return Err(format!("the line is a string, not {}", kind(&line))) };
    let metadata = match metadata {
        None => Vec::new(),
        Some(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                other => Err(format!("structured metadata {k:?} is a string, not {}", kind(&other))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("structured metadata is an object of strings, not {}", kind(&other))),
    };
    Ok(Entry { ns, line, raw: None, metadata })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Whether `name` is a Prometheus/Loki label name.
pub(crate) fn is_label_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The labels of a selector string `{name="value", …}`: Go-quoted values (`\\`, `\"`,
/// `\n`, `\t`, `\r`, `\uXXXX`, …), spaces anywhere between tokens, a trailing comma
/// allowed, as Loki's parser reads them.
pub(crate) fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = Cursor { s: text.as_bytes(), at: 0 };
    p.spaces();
    p.expect(b'{')?;
    let mut labels = Vec::new();
    loop {
        p.spaces();
        if p.eat(b'}') {
            break;
        }
        let start = p.at;
        while p.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_') {
            p.at += 1;
        }
        let name = &text[start..p.at];
        if !is_label_name(name) {
            return Err(format!("expected a label name at byte {start}"));
        }
        p.spaces();
        p.expect(b'=')?;
        p.spaces();
        let value = p.quoted()?;
        labels.push((name.to_string(), value.into_owned()));
        p.spaces();
        if !p.eat(b',') {
            p.spaces();
            p.expect(b'}')?;
            break;
        }
    }
    p.spaces();
    if p.at != p.s.len() {
        return Err(format!("unexpected text after the closing brace at byte {}", p.at));
    }
    Ok(labels)
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.at += usize::from(hit);
        hit
    }
    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", c as char, self.at))
        }
    }
    fn spaces(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }
    /// A double-quoted Go string literal.
    fn quoted(&mut self) -> Result<Cow<'a, str>, String> {
        let open = self.at;
        self.expect(b'"')?;
        let start = self.at;
        let s: &'a [u8] = self.s;
        // The common case, no escapes: a slice of the input.
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.at += 1;
                    return Ok(String::from_utf8_lossy(&s[start..self.at - 1]));
                }
                b'\\' => break,
                _ => self.at += 1,
            }
        }
        let mut out: Vec<u8> = s[start..self.at].to_vec();
        loop {
            let Some(c) = self.peek() else { return Err(format!("unterminated string starting at byte {open}")) };
            self.at += 1;
            match c {
                b'"' => return Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned())),
                b'\\' => {
                    let e = self.peek().ok_or_else(|| format!("unterminated string starting at byte {open}"))?;
                    self.at += 1;
                    match e {
                        b'\\' | b'"' | b'\'' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'a' => out.push(7),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'v' => out.push(11),
                        b'x' => out.push(self.hex(2)? as u8),
                        b'u' | b'U' => {
                            let n = self.hex(if e == b'u' { 4 } else { 8 })?;
                            let ch = char::from_u32(n)
                                .ok_or_else(|| format!("\\{} escape {n:#x} is not a character", e as char))?;
                            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        other => {
                            return Err(format!("unknown escape \\{} at byte {}", other as char, self.at - 1));
                        }
                    }
                }
                _ => out.push(c),
            }
        }
    }
    fn hex(&mut self, digits: usize) -> Result<u32, String> {
        let end = self.at + digits;
        let text = self.s.get(self.at..end).and_then(|h| std::str::from_utf8(h).ok());
        let n = text
            .filter(|t| t.bytes().all(|c| c.is_ascii_hexdigit()))
            .and_then(|t| u32::from_str_radix(t, 16).ok())
            .ok_or_else(|| format!("expected {digits} hex digits at byte {}", self.at))?;
        self.at = end;
        Ok(n)
    }
}

/// `text`, cut to 200 characters for an error message.
pub(crate) fn cut(text: &str) -> String {
    if text.chars().count() > 200 {
        text.chars().take(200).chain("…".chars()).collect()
    } else {
        text.to_string()
    }
}
