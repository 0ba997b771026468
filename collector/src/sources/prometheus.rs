//! The Prometheus text exposition format (version 0.0.4, as `/metrics` endpoints and
//! node_exporter serve it) → `metrics` rows. Shared by `exec` (`format = "prometheus"`)
//! and `prometheus_scrape`.
//!
//! In: the text. Out: [`Sample`]s (name, labels, value, optional timestamp) and, for every
//! line that is not a sample, a comment, `# HELP`, `# TYPE` or blank, a [`LineError`]
//! with the raw line, so the source can keep it in `logs` and count it. Pure; never
//! panics on any input.
//!
//! Mapping and choices:
//! - One row per sample line. Histograms and summaries are their series as exposed:
//!   `x_bucket{le="…"}`, `x_sum`, `x_count`, and `x{quantile="…"}`; nothing is merged.
//! - Values: decimal floats, `NaN`, `+Inf`, `-Inf` (any case, as Go's `ParseFloat`).
//! - Timestamps: an integer is milliseconds since the epoch (the text format); a number
//!   with a fraction is seconds (OpenMetrics). Absent → the scrape (or run) time.
//! - `# HELP` and `# TYPE` are checked (a TYPE must be counter, gauge, histogram,
//!   summary, untyped, or an OpenMetrics type) and not stored; other `#` lines and
//!   `# EOF` are comments. An OpenMetrics exemplar (` # {…} v`) after a value is ignored.
//! - Label values are unescaped (`\\`, `\"`, `\n`); quoted UTF-8 metric and label names
//!   (`{"my.metric", "a.b"="x"}`, Prometheus 3) are accepted.
//! - Extra labels (the target's `job`, `instance`, configured labels) win over the
//!   sample's own; a sample label they replace is kept as `exported_<name>`, as
//!   Prometheus does with `honor_labels: false`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use arrow_array::RecordBatch;
use lake_format::rows::MetricsBuilder;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    /// Metric name.
    pub name: Cow<'a, str>,
    /// Labels in the order written.
    pub labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Value.
    pub value: f64,
    /// Time of the sample, microseconds since the epoch, when the line gave one.
    pub ts_micros: Option<i64>,
}

/// A line that could not be read, with its 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Line number, from 1.
    pub line_no: usize,
    /// The raw line, without its newline.
    pub raw: Vec<u8>,
    /// Why.
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line_no, self.reason)
    }
}

/// Everything read from one exposition.
#[derive(Debug, Default, PartialEq)]
pub struct Exposition<'a> {
    /// Samples in order.
    pub samples: Vec<Sample<'a>>,
    /// Lines that are not valid.
    pub errors: Vec<LineError>,
    /// `# TYPE` of each metric family that declared one.
    pub types: HashMap<Cow<'a, str>, Cow<'a, str>>,
}

const TYPES: &[&str] =
    &["counter", "gauge", "histogram", "summary", "untyped", "unknown", "gaugehistogram", "stateset", "info"];

/// Parses a whole exposition. Lines end in `\n` (a `\r` before it is dropped).
pub fn parse(text: &str) -> Exposition<'_> {
    parse_bytes(text.as_bytes())
}

/// [`parse`] of bytes: a line that is not UTF-8 is an error (kept raw), not the end.
pub fn parse_bytes(bytes: &[u8]) -> Exposition<'_> {
    let mut out = Exposition::default();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let parsed = match std::str::from_utf8(raw) {
            Ok(line) => parse_line(line),
            Err(_) => Err("not UTF-8".to_string()),
        };
        match parsed {
            Ok(Parsed::Sample(s)) => out.samples.push(s),
            Ok(Parsed::Type(name, kind)) => {
                out.types.insert(name, kind);
            }
            Ok(Parsed::Nothing) => {}
            Err(reason) => out.errors.push(LineError { line_no: i + 1, raw: raw.to_vec(), reason }),
        }
    }
    out
}

enum Parsed<'a> {
    Sample(Sample<'a>),
    Type(Cow<'a, str>, Cow<'a, str>),
    Nothing,
}

fn parse_line(line: &str) -> Result<Parsed<'_>, String> {
    let t = line.trim_start_matches([' ', '\t']);
    if t.trim_end().is_empty() {
        return Ok(Parsed::Nothing);
    }
    if let Some(rest) = t.strip_prefix('#') {
        return parse_comment(rest);
    }
    parse_sample(t).map(Parsed::Sample)
}

fn parse_comment(rest: &str) -> Result<Parsed<'_>, String> {
    let rest = rest.trim_start_matches([' ', '\t']);
    let (word, after) = split_word(rest);
    match word {
        "HELP" => {
            let (name, _) = split_word(after);
            if name.is_empty() || !valid_metric_name(name) && !name.starts_with('"') {
                return Err(format!("# HELP names no valid metric: {name:?}"));
            }
            Ok(Parsed::Nothing)
        }
        "TYPE" => {
            let (name, after) = split_word(after);
            let (kind, extra) = split_word(after);
            if name.is_empty() || !valid_metric_name(name) && !name.starts_with('"') {
                return Err(format!("# TYPE names no valid metric: {name:?}"));
            }
            if !TYPES.contains(&kind) {
                return Err(format!("# TYPE {name}: unknown type {kind:?}"));
            }
            if !extra.trim().is_empty() {
                return Err(format!("# TYPE {name} {kind}: unexpected {extra:?}"));
            }
            Ok(Parsed::Type(Cow::Borrowed(name), Cow::Borrowed(kind)))
        }
        // Any other comment, `# EOF` included.
        _ => Ok(Parsed::Nothing),
    }
}

/// The first whitespace-separated word and what follows it (leading blanks removed).
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

fn valid_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn parse_sample(t: &str) -> Result<Sample<'_>, String> {
    let name_end = t.find(['{', ' ', '\t']).unwrap_or(t.len());
    let mut name: Option<Cow<'_, str>> = None;
    if name_end > 0 {
        let n = &t[..name_end];
        if !valid_metric_name(n) {
            return Err(format!("invalid metric name {n:?}"));
        }
        name = Some(Cow::Borrowed(n));
    }
    let mut rest = &t[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut name, &mut labels)?;
    }
    let name = name.ok_or("no metric name")?;
    // Value, then an optional timestamp, then an optional exemplar.
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(format!("expected a blank after {name}, found {:?}", first_char(rest)));
    }
    let (value_text, after) = split_word(rest);
    if value_text.is_empty() {
        return Err(format!("{name} has no value"));
    }
    let value = parse_value(value_text).ok_or_else(|| format!("{name}: invalid value {value_text:?}"))?;
    let (ts_text, after) = split_word(after);
    let mut ts_micros = None;
    if !ts_text.is_empty() && !ts_text.starts_with('#') {
        ts_micros = Some(parse_timestamp(ts_text).ok_or_else(|| format!("{name}: invalid timestamp {ts_text:?}"))?);
        let after = after.trim_end();
        if !after.is_empty() && !after.starts_with('#') {
            return Err(format!("{name}: unexpected {after:?} after the timestamp"));
        }
    }
    Ok(Sample { name, labels, value, ts_micros })
}

fn first_char(s: &str) -> char {
    s.chars().next().unwrap_or(' ')
}

/// Go's ParseFloat forms that matter: decimals, exponents, NaN and ±Inf in any case.
fn parse_value(s: &str) -> Option<f64> {
    // Rust's parser accepts "inf", "infinity" and "nan" in any case, with a sign.
    s.parse::<f64>().ok()
}

fn parse_timestamp(s: &str) -> Option<i64> {
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'+') {
        let ms: i64 = s.parse().ok()?;
        return ms.checked_mul(1000);
    }
    let secs: f64 = s.parse().ok()?;
    if !secs.is_finite() || secs.abs() > 1e13 {
        return None;
    }
    Some((secs * 1e6).round() as i64)
}

/// Reads `name="value", …}` after the `{`; returns what follows the `}`.
fn parse_labels<'a>(
    mut s: &'a str,
    name: &mut Option<Cow<'a, str>>,
    labels: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> Result<&'a str, String> {
    loop {
        s = s.trim_start_matches([' ', '\t']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        // A label name, bare or quoted.
        let (key, after) = if let Some(q) = s.strip_prefix('"') {
            let (k, after) = quoted(q)?;
            (k, after)
        } else {
            let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
            let k = &s[..end];
            if !valid_label_name(k) {
                return Err(format!("invalid label name {:?}", &s[..end.max(first_char(s).len_utf8()).min(s.len())]));
            }
            (Cow::Borrowed(k), &s[end..])
        };
        let after = after.trim_start_matches([' ', '\t']);
        let after = if let Some(v) = after.strip_prefix('=') {
            let v = v.trim_start_matches([' ', '\t']);
            let v = v.strip_prefix('"').ok_or_else(|| format!("label {key}: value must be quoted"))?;
            let (value, after) = quoted(v)?;
            if key.starts_with("__") && key != "__name__" {
                // Reserved names are the scraper's, not the target's; keep them visible.
                labels.push((Cow::Owned(format!("exported{key}")), value));
            } else if key == "__name__" {
                if name.is_some() {
                    return Err("metric name given twice".to_string());
                }
                *name = Some(value);
            } else {
                if labels.iter().any(|(k, _)| *k == key) {
                    return Err(format!("label {key} given twice"));
                }
                labels.push((key, value));
            }
            after
        } else {
            // `{"metric.name", …}`: a quoted name without `=` is the metric name.
            if name.is_some() {
                return Err(format!("label {key} has no value"));
            }
            *name = Some(key);
            after
        };
        let after = after.trim_start_matches([' ', '\t']);
        if let Some(a) = after.strip_prefix(',') {
            s = a;
        } else if after.starts_with('}') {
            s = after;
        } else if after.is_empty() {
            return Err("labels not closed with }".to_string());
        } else {
            return Err(format!("expected , or }} in labels, found {:?}", first_char(after)));
        }
    }
}

/// A quoted string after its opening quote: its unescaped value and what follows.
fn quoted(s: &str) -> Result<(Cow<'_, str>, &str), String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut owned: Option<String> = None;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let v = match owned {
                    Some(o) => Cow::Owned(o),
                    None => Cow::Borrowed(&s[..i]),
                };
                return Ok((v, &s[i + 1..]));
            }
            b'\\' => {
                let o = owned.get_or_insert_with(|| s[..i].to_string());
                match bytes.get(i + 1) {
                    Some(b'n') => o.push('\n'),
                    Some(b'\\') => o.push('\\'),
                    Some(b'"') => o.push('"'),
                    Some(_) => {
                        // Unknown escape: kept as written (Prometheus' parser refuses it;
                        // keeping the sample loses less).
                        o.push('\\');
                        let c = first_char(&s[i + 1..]);
                        o.push(c);
                        i += 1 + c.len_utf8();
                        continue;
                    }
                    None => break,
                }
                i += 2;
            }
            _ => {
                let c = first_char(&s[i..]);
                if let Some(o) = owned.as_mut() {
                    o.push(c);
                }
                i += c.len_utf8();
            }
        }
    }
    Err("unterminated quoted string".to_string())
}

/// Appends `samples` to `out` as `metrics` rows: `ts` is the sample's own or `default_ts`,
/// `extra` labels are added (winning over the sample's, which become `exported_*`).
pub fn push_rows(
    out: &mut MetricsBuilder,
    node: &str,
    samples: &[Sample<'_>],
    default_ts: i64,
    extra: &[(String, String)],
) {
    let mut labels: Vec<(Cow<'_, str>, &str)> = Vec::new();
    for s in samples {
        labels.clear();
        for (k, v) in &s.labels {
            if extra.iter().any(|(e, _)| e == k) {
                labels.push((Cow::Owned(format!("exported_{k}")), v.as_ref()));
            } else {
                labels.push((Cow::Borrowed(k.as_ref()), v.as_ref()));
            }
        }
        for (k, v) in extra {
            labels.push((Cow::Borrowed(k.as_str()), v.as_str()));
        }
        let refs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
        out.push(s.ts_micros.unwrap_or(default_ts), node, &s.name, s.value, &refs);
    }
}

/// The `metrics` batch of `samples` (see [`push_rows`]).
pub fn to_batch(node: &str, samples: &[Sample<'_>], default_ts: i64, extra: &[(String, String)]) -> RecordBatch {
    let mut b = MetricsBuilder::new();
    push_rows(&mut b, node, samples, default_ts, extra);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Sample<'_> {
        let e = parse(line);
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        assert_eq!(e.samples.len(), 1);
        e.samples.into_iter().next().unwrap()
    }

    fn labels<'a>(s: &'a Sample<'_>) -> Vec<(&'a str, &'a str)> {
        s.labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect()
    }

    #[test]
    fn a_full_exposition_with_every_kind() {
        let text = "# HELP http_requests_total The total number of HTTP requests.\n\
# TYPE http_requests_total counter\n\
http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000\n\
\n\
# Escaping in label values:\n\
msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9\n\
metric_without_timestamp_and_labels 12.47\n\
something_weird{problem=\"division by zero\"} +Inf -3982045\n\
# HELP http_request_duration_seconds A histogram of the request duration.\n\
# TYPE http_request_duration_seconds histogram\n\
http_request_duration_seconds_bucket{le=\"0.05\"} 24054\n\
http_request_duration_seconds_bucket{le=\"+Inf\"} 144320\n\
http_request_duration_seconds_sum 53423\n\
http_request_duration_seconds_count 144320\n\
# TYPE rpc_duration_seconds summary\n\
rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
rpc_duration_seconds{quantile=\"0.99\"} NaN\n\
rpc_duration_seconds_sum 1.7560473e+07\n\
rpc_duration_seconds_count 2693\n";
        let e = parse(text);
        assert!(e.errors.is_empty(), "{:?}", e.errors);
        assert_eq!(e.samples.len(), 13);
        assert_eq!(e.types.get("http_request_duration_seconds").map(|c| c.as_ref()), Some("histogram"));
        let s = &e.samples[0];
        assert_eq!(s.name, "http_requests_total");
        assert_eq!(labels(s), [("method", "post"), ("code", "200")]);
        assert_eq!(s.value, 1027.0);
        assert_eq!(s.ts_micros, Some(1_395_066_363_000_000));
        let path = &e.samples[2];
        assert_eq!(labels(path), [("path", "C:\\DIR\\FILE.TXT"), ("error", "Cannot find file:\n\"FILE.TXT\"")]);
        assert_eq!(e.samples[3].ts_micros, None);
        assert_eq!(e.samples[4].value, f64::INFINITY);
        assert_eq!(e.samples[4].ts_micros, Some(-3_982_045_000));
        assert_eq!(labels(&e.samples[6]), [("le", "+Inf")]);
        assert!(e.samples[10].value.is_nan());
        assert_eq!(e.samples[11].value, 1.7560473e7);
    }

    #[test]
    fn values_and_timestamps() {
        assert_eq!(one("a -Inf").value, f64::NEG_INFINITY);
        assert!(one("a nan").value.is_nan());
        assert_eq!(one("a 1e-3").value, 0.001);
        assert_eq!(one("a\t2\t1700000000123").ts_micros, Some(1_700_000_000_123_000));
        assert_eq!(one("a 2 1700000000.5").ts_micros, Some(1_700_000_000_500_000), "OpenMetrics seconds");
        assert_eq!(one("a{} 3").labels.len(), 0);
        assert_eq!(one("a 3 # {trace_id=\"x\"} 1").ts_micros, None, "exemplar ignored");
        assert_eq!(one("a 3 17 # {trace_id=\"x\"} 1").ts_micros, Some(17_000));
        assert_eq!(one("a 3\r").value, 3.0);
        assert_eq!(one("  indented 1").name, "indented");
    }

    #[test]
    fn quoted_names_trailing_commas_and_reserved_labels() {
        let s = one("{\"my.metric\", \"a.b\"=\"x\", c=\"y\",} 1");
        assert_eq!(s.name, "my.metric");
        assert_eq!(labels(&s), [("a.b", "x"), ("c", "y")]);
        let s = one("{__name__=\"n\",__meta=\"m\"} 1");
        assert_eq!(s.name, "n");
        assert_eq!(labels(&s), [("exported__meta", "m")]);
        let s = one("u{v=\"caf\u{e9} \\t\"} 1");
        assert_eq!(labels(&s), [("v", "caf\u{e9} \\t")], "unknown escapes are kept as written");
    }

    #[test]
    fn garbage_lines_are_errors_with_the_raw_line_and_never_panic() {
        let text = "ok 1\nnot a metric line at all\n{} 1\na{b=\"c\" 1\na{b=c} 1\na{1b=\"c\"} 1\na{b=\"c\",b=\"d\"} 1\na\na x\na 1 2 3\n9a 1\na{b=\"unterminated} 1\n# TYPE a sometype\n# TYPE 5 counter\n# HELP\na{b=\"\\\n\u{1F600} 1\nfine{x=\"\u{1F600}\"} 2\n";
        let e = parse(text);
        assert_eq!(e.samples.len(), 2, "{:?}", e.samples);
        let bad: Vec<usize> = e.errors.iter().map(|l| l.line_no).collect();
        assert_eq!(bad, (2..=17).collect::<Vec<_>>(), "{:#?}", e.errors);
        assert_eq!(e.errors[0].raw, b"not a metric line at all");
        let e = parse_bytes(b"a 1\nb\xff 2\nc 3");
        assert_eq!((e.samples.len(), e.errors[0].line_no, e.errors[0].raw.as_slice()), (2, 2, &b"b\xff 2"[..]));
        // Every prefix and byte soup is safe.
        let all = text.to_string() + "\u{0}\u{7f}{{{}}}\"\"\\";
        for end in 0..=all.len() {
            if all.is_char_boundary(end) {
                let _ = parse(&all[..end]);
            }
        }
    }

    #[test]
    fn extra_labels_win_and_the_sample_labels_stay_as_exported() {
        let e = parse("up{job=\"inner\",x=\"1\"} 1 1000\nplain 2\n");
        let extra = vec![("job".to_string(), "outer".to_string()), ("instance".to_string(), "h:1".to_string())];
        let batch = to_batch("n1", &e.samples, 42, &extra);
        assert_eq!(batch.num_rows(), 2);
        let out =
            lake_format::wire::conform(lake_format::Table::Metrics, &lake_format::Table::Metrics.schema(), &batch)
                .unwrap();
        let ts = out.column(0).as_any().downcast_ref::<arrow_array::TimestampMicrosecondArray>().unwrap();
        assert_eq!((ts.value(0), ts.value(1)), (1_000_000, 42));
        let labels = format!("{:?}", out.column(4));
        for want in ["exported_job", "inner", "outer", "instance"] {
            assert!(labels.contains(want), "{labels}");
        }
    }
}
