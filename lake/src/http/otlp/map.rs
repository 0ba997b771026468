//! Pure mapping of decoded OTLP requests onto the catalog's `logs` and `metrics` tables.
//!
//! In: an `ExportLogsServiceRequest` or `ExportMetricsServiceRequest`, the node named by
//! the sender's token and the receive time. Out: one record batch in the table's exact
//! schema, plus how many items were skipped and why (for `partial_success`).
//!
//! **Host.** `host` is the resource attribute `host.name` when it is a valid node name
//! (1–64 of `[A-Za-z0-9._-]`, no leading dot; so an OpenTelemetry Collector gateway can
//! forward for many machines), else the token's node. The token's node is always kept as
//! `lake.node` (in `attrs` or `labels`), overriding any attribute of that name, so a
//! sender cannot pass its data off as another node's without it showing.
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
//! **Metrics** (one row per value, `labels` = the data point's attributes +
//! `service.name` + `lake.node`):
//! - gauge and sum: `name` = the metric name, `value` = the point's int or double value.
//!   Cumulative sums (counters) are stored as the raw running totals the SDK reports; a
//!   per-second rate is the query's job (difference of consecutive totals over time). Delta
//!   sums are stored as the per-interval increments the SDK reports.
//! - histogram: `<name>_count`, `<name>_sum` (when present) and one `<name>_bucket` row per
//!   bucket with label `le` (upper bound, `+Inf` for the last) holding the *cumulative*
//!   count, as Prometheus does.
//! - exponential histogram: `<name>_count` and `<name>_sum`.
//! - summary: `<name>_count`, `<name>_sum` and one `<name>` row per quantile with label
//!   `quantile`.
//!
//! A data point without a value (or flagged "no recorded value"), a metric without a name
//! or data, or a histogram whose bucket counts and bounds disagree is skipped and counted;
//! the first reason is reported back.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Metric};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::Value as Json;

use lake_format::logs::{hex, LogRow, LogsBuilder};
use lake_format::rows::MetricsBuilder;
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
    /// `resource.<key>` → value.
    attrs: Vec<(String, String)>,
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
        let attrs = kvs.iter().map(|kv| (format!("resource.{}", kv.key), kv_text(kv))).collect();
        Res { host, service, pid, attrs }
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

/// Labels of one data point: its attributes, `service.name` and `lake.node`.
fn labels(attributes: &[KeyValue], res: &Res, node: &str) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = attributes.iter().map(|kv| (kv.key.clone(), kv_text(kv))).collect();
    if let Some(s) = &res.service {
        l.insert("service.name".into(), s.clone());
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
    let mut b = MetricsBuilder::new();
    for rm in &req.resource_metrics {
        let res = Res::new(rm.resource.as_ref(), node);
        let mut rows = Rows { b, host: &res.host, now_us };
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                metric_rows(m, &res, node, &mut rows, &mut out);
            }
        }
        b = rows.b;
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
    let no_value = |out: &mut Mapped| out.skip(1, || format!("a data point of {name:?} has no recorded value"));
    match data {
        D::Gauge(g) => number_points(&g.data_points, name, res, node, rows, out),
        D::Sum(s) => number_points(&s.data_points, name, res, node, rows, out),
        D::Histogram(h) => {
            let bucket_name = format!("{name}_bucket");
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
                let l = labels(&p.attributes, res, node);
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
                let l = labels(&p.attributes, res, node);
                rows.push(p.time_unix_nano, &count_name, p.count as f64, &l, None);
                if let Some(sum) = p.sum {
                    rows.push(p.time_unix_nano, &sum_name, sum, &l, None);
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
                let l = labels(&p.attributes, res, node);
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

fn number_points(
    points: &[opentelemetry_proto::tonic::metrics::v1::NumberDataPoint],
    name: &str,
    res: &Res,
    node: &str,
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
        rows.push(p.time_unix_nano, name, value, &labels(&p.attributes, res, node), None);
        out.accepted += 1;
    }
}
