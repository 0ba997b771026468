//! Pure mapping of decoded OTLP requests onto the catalog's `logs`, `metrics` and `spans`
//! tables.
//!
//! In: an `ExportLogsServiceRequest`, `ExportMetricsServiceRequest` or
//! `ExportTraceServiceRequest`, the node named by the sender's token and the receive time.
//! Out: one record batch in the table's exact schema, plus how many items were skipped and
//! why (for `partial_success`).
//!
//! **Host.** `host` is the resource attribute `host.name` when it is a valid node name
//! (1–64 of `[A-Za-z0-9._-]`, no leading dot; so an OpenTelemetry Collector gateway can
//! forward for many machines), else the token's node. The token's node is always kept as
//! `lake.node` (in `attrs` or `labels`), overriding any attribute of that name, so a
//! sender cannot pass its data off as another node's without it showing.
//!
//! **Resource attributes** are all kept, none dropped: in a log row's `attrs` as
//! `resource.<name>` (so they never meet the record's own attributes); in a sample's
//! `labels` under their OpenTelemetry name (`service.name`, `host.name`,
//! `telemetry.sdk.language`, `k8s.pod.name`, ...), or as `resource.<name>` when the data
//! point has an attribute of the same name (the point's own value keeps the plain name);
//! in a span's `resource_attrs` map under their OpenTelemetry name.
//!
//! **Logs** (one row per log record): `ts` = `time_unix_nano`, else
//! `observed_time_unix_nano`, else the receive time (µs); `source` = `otlp`; `unit` =
//! resource `service.name`; `ident` = scope name; `pid` = resource `process.pid`;
//! `message` = the body (a string as is, any other value as JSON text); `priority` from
//! `severity_number` (or, when that is unset, from `severity_text`):
//!
//! | OTLP severity_number | name  | syslog priority |
//! |----------------------|-------|-----------------|
//! | 1–4                  | TRACE | 7 (debug)       |
//! | 5–8                  | DEBUG | 7 (debug)       |
//! | 9–12                 | INFO  | 6 (info)        |
//! | 13–16                | WARN  | 4 (warning)     |
//! | 17–20                | ERROR | 3 (err)         |
//! | 21–24                | FATAL | 2 (crit)        |
//! | 0 or out of range    |       | null            |
//!
//! `attrs` = the record's attributes, the resource's attributes prefixed `resource.`,
//! `scope.version`, `severity_text`, `severity_number`, `event_name`, `trace_id` and
//! `span_id` (lowercase hex) when present, and `lake.node`.
//!
//! **Metrics** (one row per value, `labels` = the data point's attributes, the resource's
//! `service.name` and other attributes (above), `otel_unit` = the metric's unit when it
//! has one (`s`, `By`, `1`, ...), `otel_temporality` = `cumulative` or `delta` for sums and
//! histograms, and `lake.node`). Unit and temporality are labels rather than columns: the
//! `metrics` table stays the one long format every source writes (a collector's samples
//! have neither), and a query that must tell a delta from a running total can still
//! filter on them.
//! - gauge and sum: `name` = the metric name, `value` = the point's int or double value.
//!   Cumulative sums (counters) are stored as the raw running totals the SDK reports; a
//!   per-second rate is the query's job (difference of consecutive totals over time). Delta
//!   sums are stored as the per-interval increments the SDK reports.
//! - histogram: `<name>_count`, `<name>_sum` (when present) and one `<name>_bucket` row per
//!   bucket with label `le` (upper bound, `+Inf` for the last) holding the *cumulative*
//!   count, as Prometheus does.
//! - exponential histogram: `<name>_count`, `<name>_sum` and the same cumulative
//!   `<name>_bucket` rows, so one percentile query serves both kinds: the negative buckets
//!   (most negative first, `le` = the bucket's upper end, a negative number), the zero
//!   bucket (`le` = its `zero_threshold`), each positive bucket `i` of scale `s` with `le`
//!   = 2^((i+1)·2^-s), and `le="+Inf"` = the count. A percentile read as the `le` of the
//!   first bucket reaching it is at most one bucket's width above the true value: a
//!   relative error of 2^(2^-s) − 1 (4.4 % at scale 4). At most [`MAX_EXP_BUCKETS`] buckets
//!   a side, and [`MAX_EXP_BUCKET_ROWS`] bucket rows a request (what a body of bucket
//!   counts, a byte each, may cost in memory stays bounded); a point past either, or of a
//!   scale outside −10..=20, or with buckets past the range of a double, is skipped.
//! - summary: `<name>_count`, `<name>_sum` and one `<name>` row per quantile with label
//!   `quantile`.
//!
//! A data point without a value (or flagged "no recorded value"), a metric without a name
//! or data, or a histogram whose bucket counts and bounds disagree is skipped and counted;
//! the first reason is reported back.
//!
//! **Spans** (one row per span): `ts` = start time (µs; else the end time, else the
//! receive time), `duration_ns` = end − start in nanoseconds, ids as lowercase hex,
//! `parent_span_id` null for a root span, `kind` and `status_code` as words, `service` =
//! resource `service.name`, `scope_name`/`scope_version` = the tracer's, `attrs` = the
//! span's attributes plus `otel.trace_state` and `otel.dropped_{attributes,events,links}_count`
//! when set (the `otel.` namespace is OpenTelemetry's own, so no application attribute
//! is overwritten) and `lake.node`; `events` and `links` as JSON objects (see the
//! catalog). A span whose trace id is not 16 bytes, whose span id (or parent's, or a
//! link's) is not 8, or any of them all zeroes, or with an event or link of more than
//! 1,000 attributes, is skipped and counted in `partial_success`.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, ExponentialHistogramDataPoint, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value as Json;

use lake_format::logs::{hex, LogRow, LogsBuilder};
use lake_format::rows::{MetricsBuilder, TableBuilder};
use lake_format::wire::validate_node_name;
use lake_format::Table;

/// `source` of every log row from OTLP.
pub(crate) const SOURCE: &str = "otlp";
/// Key under which the token's node is kept.
pub(crate) const NODE_KEY: &str = "lake.node";
/// Bit of a data point's `flags` meaning "no recorded value" (a staleness marker).
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// A request mapped onto a table.
#[derive(Debug)]
pub(crate) struct Mapped {
    /// The rows, in the table's schema (possibly empty).
    pub(crate) batch: RecordBatch,
    /// Items (log records or data points) stored.
    pub(crate) accepted: u64,
    /// Items skipped.
    pub(crate) rejected: u64,
    /// Why the first skipped item was skipped.
    pub(crate) reason: Option<String>,
}

impl Mapped {
    fn skip(&mut self, n: u64, why: impl FnOnce() -> String) {
        if n > 0 {
            self.rejected += n;
            self.reason.get_or_insert_with(why);
        }
    }
}

/// What a resource contributes to every row under it.
struct Res {
    host: String,
    service: Option<String>,
    pid: Option<i64>,
    /// `resource.<key>` → value (logs).
    attrs: Vec<(String, String)>,
    /// Every attribute under its OpenTelemetry name → value (metrics, spans).
    otel: Vec<(String, String)>,
}

impl Res {
    fn new(resource: Option<&Resource>, node: &str) -> Res {
        let kvs = resource.map(|r| r.attributes.as_slice()).unwrap_or_default();
        let host = string_attr(kvs, "host.name").filter(|h| validate_node_name(h).is_ok()).unwrap_or(node).to_string();
        let service = string_attr(kvs, "service.name").map(str::to_string);
        let pid = kvs.iter().find(|kv| kv.key == "process.pid").and_then(|kv| match any(kv) {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            Some(any_value::Value::StringValue(s)) => s.parse().ok(),
            _ => None,
        });
        let otel: Vec<(String, String)> = kvs.iter().map(|kv| (kv.key.clone(), kv_text(kv))).collect();
        let attrs = otel.iter().map(|(k, v)| (format!("resource.{k}"), v.clone())).collect();
        Res { host, service, pid, attrs, otel }
    }
}

fn any(kv: &KeyValue) -> Option<&any_value::Value> {
    kv.value.as_ref().and_then(|v| v.value.as_ref())
}

fn string_attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    kvs.iter().find(|kv| kv.key == key).and_then(|kv| match any(kv) {
        Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    })
}

fn kv_text(kv: &KeyValue) -> String {
    kv.value.as_ref().map(value_text).unwrap_or_default()
}

/// An attribute or body value as text: strings as they are, everything else as JSON.
pub(crate) fn value_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        None => String::new(),
        Some(_) => value_json(v).to_string(),
    }
}

/// An `AnyValue` as JSON; bytes become lowercase hex.
fn value_json(v: &AnyValue) -> Json {
    use any_value::Value as V;
    match &v.value {
        None => Json::Null,
        Some(V::StringValue(s)) => Json::from(s.as_str()),
        Some(V::BoolValue(b)) => Json::from(*b),
        Some(V::IntValue(i)) => Json::from(*i),
        Some(V::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map(Json::Number).unwrap_or_else(|| Json::from(d.to_string()))
        }
        Some(V::BytesValue(b)) => Json::from(hex(b)),
        Some(V::ArrayValue(a)) => Json::Array(a.values.iter().map(value_json).collect()),
        Some(V::KvlistValue(l)) => Json::Object(
            l.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map(value_json).unwrap_or(Json::Null)))
                .collect(),
        ),
        // A reference into a profiles dictionary; meaningless without it, kept as is.
        Some(V::StringValueStrindex(i)) => serde_json::json!({ "stringValueStrindex": i }),
    }
}

/// Nanoseconds since the epoch to microseconds; 0 (unset) is `None`.
fn micros(ns: u64) -> Option<i64> {
    // u64::MAX / 1000 fits in i64.
    (ns != 0).then_some((ns / 1000) as i64)
}

/// Syslog priority of an OTLP severity number (see the module table).
pub(crate) fn priority(severity_number: i32) -> Option<i64> {
    match severity_number {
        1..=8 => Some(7),
        9..=12 => Some(6),
        13..=16 => Some(4),
        17..=20 => Some(3),
        21..=24 => Some(2),
        _ => None,
    }
}

/// Syslog priority of a severity text when the number is unset (`WARN`, `error`, `Info2`…).
pub(crate) fn priority_of_text(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.trim_end_matches(|c: char| c.is_ascii_digit());
    match t {
        "TRACE" | "DEBUG" => Some(7),
        "INFO" | "INFORMATION" => Some(6),
        "NOTICE" => Some(5),
        "WARN" | "WARNING" => Some(4),
        "ERROR" | "ERR" => Some(3),
        "FATAL" | "CRITICAL" | "CRIT" => Some(2),
        "ALERT" => Some(1),
        "EMERG" | "EMERGENCY" => Some(0),
        _ => None,
    }
}

/// Maps every log record of a request onto `logs` rows.
pub(crate) fn logs(req: &ExportLogsServiceRequest, node: &str, now_us: i64) -> Result<Mapped, ArrowError> {
    let mut b = LogsBuilder::new();
    let mut accepted = 0;
    for rl in &req.resource_logs {
        let res = Res::new(rl.resource.as_ref(), node);
        for sl in &rl.scope_logs {
            let scope = sl.scope.as_ref();
            let scope_name = scope.map(|s| s.name.as_str()).filter(|n| !n.is_empty());
            let scope_version = scope.map(|s| s.version.as_str()).filter(|v| !v.is_empty());
            for r in &sl.log_records {
                let mut a: BTreeMap<String, String> = res.attrs.iter().cloned().collect();
                for kv in &r.attributes {
                    a.insert(kv.key.clone(), kv_text(kv));
                }
                if let Some(v) = scope_version {
                    a.insert("scope.version".into(), v.to_string());
                }
                if !r.severity_text.is_empty() {
                    a.insert("severity_text".into(), r.severity_text.clone());
                }
                if r.severity_number != 0 {
                    a.insert("severity_number".into(), r.severity_number.to_string());
                }
                if !r.event_name.is_empty() {
                    a.insert("event_name".into(), r.event_name.clone());
                }
                if !r.trace_id.is_empty() {
                    a.insert("trace_id".into(), hex(&r.trace_id));
                }
                if !r.span_id.is_empty() {
                    a.insert("span_id".into(), hex(&r.span_id));
                }
                a.insert(NODE_KEY.into(), node.to_string());

                let body = r.body.as_ref().filter(|v| v.value.is_some()).map(value_text);
                let row = LogRow {
                    ts: micros(r.time_unix_nano).or(micros(r.observed_time_unix_nano)).unwrap_or(now_us),
                    host: &res.host,
                    source: SOURCE,
                    unit: res.service.as_deref(),
                    ident: scope_name,
                    pid: res.pid,
                    priority: priority(r.severity_number).or_else(|| priority_of_text(&r.severity_text)),
                    message: body.as_deref(),
                    boot_id: None,
                };
                b.push(&row, a.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                accepted += 1;
            }
        }
    }
    Ok(Mapped { batch: b.finish()?, accepted, rejected: 0, reason: None })
}

/// Labels of one data point: its attributes, the resource's `service.name`, every other
/// resource attribute under its OpenTelemetry name (or `resource.<name>` when the point has
/// an attribute of that name: neither is lost), the metric's `meta` (unit, temporality)
/// and `lake.node`.
fn labels(attributes: &[KeyValue], res: &Res, node: &str, meta: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = attributes.iter().map(|kv| (kv.key.clone(), kv_text(kv))).collect();
    if let Some(s) = &res.service {
        l.insert("service.name".into(), s.clone());
    }
    for (k, v) in &res.otel {
        if k == "service.name" {
            continue;
        }
        if l.contains_key(k) {
            l.entry(format!("resource.{k}")).or_insert_with(|| v.clone());
        } else {
            l.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in meta {
        l.insert((*k).to_string(), (*v).to_string());
    }
    l.insert(NODE_KEY.into(), node.to_string());
    l
}

/// Upper bound or quantile as a label value, as Prometheus writes it.
fn float_label(f: f64) -> String {
    if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        f.to_string()
    }
}

struct Rows<'a> {
    b: MetricsBuilder,
    host: &'a str,
    now_us: i64,
    /// Bucket rows exponential histograms made so far in this request.
    exp_buckets: usize,
}

impl Rows<'_> {
    fn push(
        &mut self,
        time_ns: u64,
        name: &str,
        value: f64,
        labels: &BTreeMap<String, String>,
        extra: Option<(&str, &str)>,
    ) {
        let mut pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Some((k, v)) = extra {
            pairs.retain(|(key, _)| *key != k);
            pairs.push((k, v));
        }
        self.b.push(micros(time_ns).unwrap_or(self.now_us), self.host, name, value, &pairs);
    }
}

/// Maps every data point of a request onto `metrics` rows.
pub(crate) fn metrics(req: &ExportMetricsServiceRequest, node: &str, now_us: i64) -> Result<Mapped, ArrowError> {
    let mut out =
        Mapped { batch: RecordBatch::new_empty(Table::Metrics.schema()), accepted: 0, rejected: 0, reason: None };
    let (mut b, mut exp_buckets) = (MetricsBuilder::new(), 0);
    for rm in &req.resource_metrics {
        let res = Res::new(rm.resource.as_ref(), node);
        let mut rows = Rows { b, host: &res.host, now_us, exp_buckets };
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                metric_rows(m, &res, node, &mut rows, &mut out);
            }
        }
        (b, exp_buckets) = (rows.b, rows.exp_buckets);
    }
    out.batch = b.finish();
    Ok(out)
}

fn points(data: &metric::Data) -> u64 {
    use metric::Data as D;
    (match data {
        D::Gauge(g) => g.data_points.len(),
        D::Sum(s) => s.data_points.len(),
        D::Histogram(h) => h.data_points.len(),
        D::ExponentialHistogram(h) => h.data_points.len(),
        D::Summary(s) => s.data_points.len(),
    }) as u64
}

/// Label holding a metric's unit (`unit` of the OTLP metric, e.g. `s`, `By`, `1`).
pub(crate) const UNIT_LABEL: &str = "otel_unit";
/// Label holding a sum's or histogram's aggregation temporality: `cumulative` or `delta`.
pub(crate) const TEMPORALITY_LABEL: &str = "otel_temporality";
/// Most buckets of one side (positive or negative) of an exponential histogram point: each
/// becomes a row, and SDKs keep 160 by default.
pub(crate) const MAX_EXP_BUCKETS: usize = 1000;
/// Most bucket rows the exponential histograms of one request make. A bucket count is a
/// byte on the wire and a row of a few hundred bytes in memory, so without this bound a
/// 20 MiB body would build gigabytes of rows, far past the ingest memory budget's estimate
/// (10x the body); 250,000 rows (about 75 MB) is 1,500 points of an SDK's 160 buckets.
pub(crate) const MAX_EXP_BUCKET_ROWS: usize = 250_000;

fn temporality(t: i32) -> Option<&'static str> {
    match t {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

fn metric_rows(m: &Metric, res: &Res, node: &str, rows: &mut Rows<'_>, out: &mut Mapped) {
    use metric::Data as D;
    let Some(data) = &m.data else {
        out.skip(1, || format!("metric {:?} has no data", m.name));
        return;
    };
    if m.name.is_empty() {
        out.skip(points(data).max(1), || "a metric without a name".into());
        return;
    }
    let name = m.name.as_str();
    let count_name = format!("{name}_count");
    let sum_name = format!("{name}_sum");
    let bucket_name = format!("{name}_bucket");
    let no_value = |out: &mut Mapped| out.skip(1, || format!("a data point of {name:?} has no recorded value"));
    let mut meta: Vec<(&str, &str)> = Vec::with_capacity(2);
    if !m.unit.is_empty() {
        meta.push((UNIT_LABEL, m.unit.as_str()));
    }
    let t = match data {
        D::Sum(s) => temporality(s.aggregation_temporality),
        D::Histogram(h) => temporality(h.aggregation_temporality),
        D::ExponentialHistogram(h) => temporality(h.aggregation_temporality),
        D::Gauge(_) | D::Summary(_) => None,
    };
    if let Some(t) = t {
        meta.push((TEMPORALITY_LABEL, t));
    }
    let meta = meta.as_slice();
    match data {
        D::Gauge(g) => number_points(&g.data_points, name, res, node, meta, rows, out),
        D::Sum(s) => number_points(&s.data_points, name, res, node, meta, rows, out),
        D::Histogram(h) => {
            for p in &h.data_points {
                if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
                    no_value(out);
                    continue;
                }
                let buckets_ok = p.bucket_counts.is_empty() || p.bucket_counts.len() == p.explicit_bounds.len() + 1;
                if !buckets_ok {
                    out.skip(1, || {
                        format!(
                            "histogram {name:?}: {} bucket counts for {} bounds (expected bounds + 1)",
                            p.bucket_counts.len(),
                            p.explicit_bounds.len()
                        )
                    });
                    continue;
                }
                let l = labels(&p.attributes, res, node, meta);
                rows.push(p.time_unix_nano, &count_name, p.count as f64, &l, None);
                if let Some(sum) = p.sum {
                    rows.push(p.time_unix_nano, &sum_name, sum, &l, None);
                }
                let mut cumulative = 0u64;
                for (i, c) in p.bucket_counts.iter().enumerate() {
                    cumulative = cumulative.saturating_add(*c);
                    let le = float_label(p.explicit_bounds.get(i).copied().unwrap_or(f64::INFINITY));
                    rows.push(p.time_unix_nano, &bucket_name, cumulative as f64, &l, Some(("le", &le)));
                }
                out.accepted += 1;
            }
        }
        D::ExponentialHistogram(h) => {
            for p in &h.data_points {
                if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
                    no_value(out);
                    continue;
                }
                let buckets = match exponential_buckets(p) {
                    Ok(b) if rows.exp_buckets + b.len() > MAX_EXP_BUCKET_ROWS => {
                        out.skip(1, || {
                            format!(
                                "exponential histogram {name:?}: the request's exponential histograms hold more \
                                 than {MAX_EXP_BUCKET_ROWS} buckets; export fewer points per request"
                            )
                        });
                        continue;
                    }
                    Ok(b) => b,
                    Err(why) => {
                        out.skip(1, || format!("exponential histogram {name:?}: {why}"));
                        continue;
                    }
                };
                rows.exp_buckets += buckets.len();
                let l = labels(&p.attributes, res, node, meta);
                rows.push(p.time_unix_nano, &count_name, p.count as f64, &l, None);
                if let Some(sum) = p.sum {
                    rows.push(p.time_unix_nano, &sum_name, sum, &l, None);
                }
                for (le, cumulative) in buckets {
                    let le = float_label(le);
                    rows.push(p.time_unix_nano, &bucket_name, cumulative as f64, &l, Some(("le", &le)));
                }
                out.accepted += 1;
            }
        }
        D::Summary(s) => {
            for p in &s.data_points {
                if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
                    no_value(out);
                    continue;
                }
                let l = labels(&p.attributes, res, node, meta);
                rows.push(p.time_unix_nano, &count_name, p.count as f64, &l, None);
                rows.push(p.time_unix_nano, &sum_name, p.sum, &l, None);
                for q in &p.quantile_values {
                    let quantile = float_label(q.quantile);
                    rows.push(p.time_unix_nano, name, q.value, &l, Some(("quantile", &quantile)));
                }
                out.accepted += 1;
            }
        }
    }
}

/// The cumulative `(le, count)` buckets of an exponential histogram point, lowest bound
/// first, ending with `+Inf` = the point's count: the negative buckets (most negative
/// first), the zero bucket (`le` = its threshold), then the positive ones. Bucket `i` at
/// scale `s` holds the values whose magnitude lies in `(base^i, base^(i+1)]`, `base` =
/// 2^(2^-s), as the OTLP data model defines it.
pub(crate) fn exponential_buckets(p: &ExponentialHistogramDataPoint) -> Result<Vec<(f64, u64)>, String> {
    if !(-10..=20).contains(&p.scale) {
        return Err(format!("scale {} is outside -10..=20", p.scale));
    }
    let empty = Default::default();
    let positive = p.positive.as_ref().unwrap_or(&empty);
    let negative = p.negative.as_ref().unwrap_or(&empty);
    for (side, b) in [("positive", positive), ("negative", negative)] {
        if b.bucket_counts.len() > MAX_EXP_BUCKETS {
            return Err(format!("{} {side} buckets (at most {MAX_EXP_BUCKETS})", b.bucket_counts.len()));
        }
    }
    let step = (-f64::from(p.scale)).exp2();
    // The lower magnitude of bucket `i`; refused when not a positive finite double.
    let bound = |i: i64| -> Result<f64, String> {
        let b = (i as f64 * step).exp2();
        if b.is_finite() && b > 0.0 {
            Ok(b)
        } else {
            Err(format!("bucket {i} at scale {} lies beyond the range of a double", p.scale))
        }
    };
    let threshold = if p.zero_threshold.is_finite() && p.zero_threshold >= 0.0 { p.zero_threshold } else { 0.0 };
    let mut out = Vec::with_capacity(positive.bucket_counts.len() + negative.bucket_counts.len() + 2);
    let mut cumulative = 0u64;
    for (k, c) in negative.bucket_counts.iter().enumerate().rev() {
        cumulative = cumulative.saturating_add(*c);
        out.push((-bound(i64::from(negative.offset) + k as i64)?, cumulative));
    }
    cumulative = cumulative.saturating_add(p.zero_count);
    out.push((threshold, cumulative));
    for (k, c) in positive.bucket_counts.iter().enumerate() {
        cumulative = cumulative.saturating_add(*c);
        out.push((bound(i64::from(positive.offset) + k as i64 + 1)?, cumulative));
    }
    out.push((f64::INFINITY, p.count));
    Ok(out)
}

fn number_points(
    points: &[opentelemetry_proto::tonic::metrics::v1::NumberDataPoint],
    name: &str,
    res: &Res,
    node: &str,
    meta: &[(&str, &str)],
    rows: &mut Rows<'_>,
    out: &mut Mapped,
) {
    for p in points {
        let value = match p.value {
            _ if p.flags & FLAG_NO_RECORDED_VALUE != 0 => None,
            Some(number_data_point::Value::AsDouble(d)) => Some(d),
            Some(number_data_point::Value::AsInt(i)) => Some(i as f64),
            None => None,
        };
        let Some(value) = value else {
            out.skip(1, || format!("a data point of {name:?} has no value"));
            continue;
        };
        rows.push(p.time_unix_nano, name, value, &labels(&p.attributes, res, node, meta), None);
        out.accepted += 1;
    }
}

/// Span kinds by their OTLP number: 0 (unspecified) is null, a number this version does
/// not know is kept as that number.
fn span_kind(kind: i32) -> Option<std::borrow::Cow<'static, str>> {
    match kind {
        0 => None,
        1 => Some("internal".into()),
        2 => Some("server".into()),
        3 => Some("client".into()),
        4 => Some("producer".into()),
        5 => Some("consumer".into()),
        n => Some(n.to_string().into()),
    }
}

/// Status codes by their OTLP number; an unknown one is kept as its number.
fn status_code(code: i32) -> std::borrow::Cow<'static, str> {
    match code {
        0 => "unset".into(),
        1 => "ok".into(),
        2 => "error".into(),
        n => n.to_string().into(),
    }
}

/// Why an id of `want` bytes is not valid (all zeroes is invalid too, as in W3C Trace Context).
fn bad_id(id: &[u8], want: usize) -> Option<String> {
    if id.len() != want {
        Some(format!("{} bytes, expected {want}", id.len()))
    } else if id.iter().all(|b| *b == 0) {
        Some("all zeroes".into())
    } else {
        None
    }
}

/// Attributes as a JSON object (values as in [`value_json`]).
fn attrs_json(kvs: &[KeyValue]) -> Json {
    Json::Object(
        kvs.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(value_json).unwrap_or(Json::Null))).collect(),
    )
}

/// Nanoseconds since the epoch as RFC 3339 UTC with microseconds (what DuckDB casts to
/// TIMESTAMPTZ); 0 (unset) is null.
fn rfc3339_ns(ns: u64) -> Json {
    micros(ns)
        .and_then(|us| jiff::Timestamp::from_microsecond(us).ok())
        .map(|t| Json::from(t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()))
        .unwrap_or(Json::Null)
}

/// Why a span cannot be stored, if it cannot: ids of the wrong length (or all zeroes), or
/// an event or link with more attributes than a row's map may hold.
fn span_problem(sp: &Span) -> Option<String> {
    let max = super::super::bounds::MAX_MAP_ENTRIES;
    if let Some(why) = bad_id(&sp.trace_id, 16) {
        return Some(format!("trace_id has {why}"));
    }
    if let Some(why) = bad_id(&sp.span_id, 8) {
        return Some(format!("span_id has {why}"));
    }
    if !sp.parent_span_id.is_empty() {
        if let Some(why) = bad_id(&sp.parent_span_id, 8) {
            return Some(format!("parent_span_id has {why}"));
        }
    }
    for (i, l) in sp.links.iter().enumerate() {
        if let Some(why) = bad_id(&l.trace_id, 16).or_else(|| bad_id(&l.span_id, 8)) {
            return Some(format!("link {i} has an id of {why}"));
        }
    }
    let too_many = |what: &str, i: usize, n: usize| format!("{what} {i} has {n} attributes (at most {max})");
    if let Some((i, e)) = sp.events.iter().enumerate().find(|(_, e)| e.attributes.len() > max) {
        return Some(too_many("event", i, e.attributes.len()));
    }
    if let Some((i, l)) = sp.links.iter().enumerate().find(|(_, l)| l.attributes.len() > max) {
        return Some(too_many("link", i, l.attributes.len()));
    }
    None
}

/// Maps every span of a request onto `spans` rows; a span with a bad id is skipped.
pub(crate) fn spans(req: &ExportTraceServiceRequest, node: &str, now_us: i64) -> Result<Mapped, ArrowError> {
    let mut b = TableBuilder::new(Table::Spans);
    let c = |name: &str| b.column(name).ok_or_else(|| ArrowError::SchemaError(format!("spans has no column {name}")));
    let (ts, host, trace_id, span_id, parent) =
        (c("ts")?, c("host")?, c("trace_id")?, c("span_id")?, c("parent_span_id")?);
    let (name, kind, duration, status, status_message) =
        (c("name")?, c("kind")?, c("duration_ns")?, c("status_code")?, c("status_message")?);
    let (service, scope_name, scope_version) = (c("service")?, c("scope_name")?, c("scope_version")?);
    let (attrs, resource_attrs, events, links) = (c("attrs")?, c("resource_attrs")?, c("events")?, c("links")?);
    let mut out =
        Mapped { batch: RecordBatch::new_empty(Table::Spans.schema()), accepted: 0, rejected: 0, reason: None };
    for rs in &req.resource_spans {
        let res = Res::new(rs.resource.as_ref(), node);
        for ss in &rs.scope_spans {
            let scope = ss.scope.as_ref();
            let scope_n = scope.map(|s| s.name.as_str()).filter(|n| !n.is_empty());
            let scope_v = scope.map(|s| s.version.as_str()).filter(|v| !v.is_empty());
            for sp in &ss.spans {
                if let Some(why) = span_problem(sp) {
                    out.skip(1, || format!("span {:?}: {why}", sp.name));
                    continue;
                }
                let start = micros(sp.start_time_unix_nano);
                b.ts(ts, start.or(micros(sp.end_time_unix_nano)).unwrap_or(now_us));
                b.text(host, Some(&res.host));
                b.text(trace_id, Some(&hex(&sp.trace_id)));
                b.text(span_id, Some(&hex(&sp.span_id)));
                b.text(parent, (!sp.parent_span_id.is_empty()).then(|| hex(&sp.parent_span_id)).as_deref());
                b.text(name, Some(&sp.name));
                b.text(kind, span_kind(sp.kind).as_deref());
                let ns = (sp.start_time_unix_nano != 0 && sp.end_time_unix_nano >= sp.start_time_unix_nano)
                    .then(|| i64::try_from(sp.end_time_unix_nano - sp.start_time_unix_nano).ok())
                    .flatten();
                b.int(duration, ns);
                let st = sp.status.as_ref();
                b.text(status, Some(&status_code(st.map(|s| s.code).unwrap_or(0))));
                b.text(status_message, st.map(|s| s.message.as_str()).filter(|m| !m.is_empty()));
                b.text(service, res.service.as_deref());
                b.text(scope_name, scope_n);
                b.text(scope_version, scope_v);
                let mut a: BTreeMap<String, String> =
                    sp.attributes.iter().map(|kv| (kv.key.clone(), kv_text(kv))).collect();
                // `otel.` is the namespace OpenTelemetry keeps for itself: no application
                // attribute is overwritten by these.
                if !sp.trace_state.is_empty() {
                    a.insert("otel.trace_state".into(), sp.trace_state.clone());
                }
                for (key, n) in [
                    ("otel.dropped_attributes_count", sp.dropped_attributes_count),
                    ("otel.dropped_events_count", sp.dropped_events_count),
                    ("otel.dropped_links_count", sp.dropped_links_count),
                ] {
                    if n > 0 {
                        a.insert(key.into(), n.to_string());
                    }
                }
                a.insert(NODE_KEY.into(), node.to_string());
                b.map(attrs, a.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                b.map(resource_attrs, res.otel.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                let ev: Vec<String> = sp
                    .events
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "time": rfc3339_ns(e.time_unix_nano),
                            "name": e.name,
                            "attrs": attrs_json(&e.attributes),
                        })
                        .to_string()
                    })
                    .collect();
                b.list(events, ev.iter().map(String::as_str));
                let ln: Vec<String> = sp
                    .links
                    .iter()
                    .map(|l| {
                        serde_json::json!({
                            "trace_id": hex(&l.trace_id),
                            "span_id": hex(&l.span_id),
                            "trace_state": l.trace_state,
                            "attrs": attrs_json(&l.attributes),
                        })
                        .to_string()
                    })
                    .collect();
                b.list(links, ln.iter().map(String::as_str));
                b.end_row();
                out.accepted += 1;
            }
        }
    }
    out.batch = b.finish()?;
    Ok(out)
}
