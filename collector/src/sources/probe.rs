//! One row of the `probes` table, shared by the probing sources (`tailscale`, `uptime`).
//!
//! Probers build [`ProbeRow`]s (plain values, easy to compare in tests and to keep in
//! fixtures as JSON), then [`to_batch`] turns a tick's rows into one Arrow batch with
//! [`TableBuilder`], stamping `host` with the node name.

use std::collections::BTreeMap;

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;
use lake_format::rows::TableBuilder;
use lake_format::Table;
use serde::{Deserialize, Serialize};

/// One probe result, before `host` is added. Field meanings follow the catalog's columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRow {
    /// When the probe started, microseconds since the epoch (not kept in fixtures).
    #[serde(default, skip_serializing)]
    pub ts: i64,
    /// `tailscale`, `http`, `tcp`, `tls`, `icmp` or `dns`.
    pub kind: String,
    /// Peer name, URL or host:port.
    pub target: String,
    /// Whether the check passed.
    pub ok: bool,
    /// Round trip (average for icmp), response, connect, handshake or query time in ms.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Tailscale path: direct `ip:port` or `DERP(region)`.
    #[serde(default)]
    pub path: Option<String>,
    /// HTTP status code.
    #[serde(default)]
    pub status: Option<i64>,
    /// Days until the peer certificate's notAfter (negative once expired).
    #[serde(default)]
    pub cert_days_left: Option<f64>,
    /// Why the check failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Other details; empty values are left out.
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
}

impl ProbeRow {
    /// A row with only the required columns set.
    pub fn new(ts: i64, kind: &str, target: &str, ok: bool) -> ProbeRow {
        ProbeRow {
            ts,
            kind: kind.to_string(),
            target: target.to_string(),
            ok,
            latency_ms: None,
            path: None,
            status: None,
            cert_days_left: None,
            error: None,
            attrs: BTreeMap::new(),
        }
    }

    /// Adds an attribute unless the value is empty (absent and empty mean the same here).
    pub fn attr(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.attrs.insert(key.to_string(), value);
        }
    }
}

/// Builds the batch of a tick's rows and spools it as droppable data (probe results
/// cannot be read again; a full spool drops the oldest samples, counted).
pub async fn emit(
    ctx: &super::SourceContext,
    source: &'static str,
    rows: &[ProbeRow],
) -> Result<(), super::SourceError> {
    let batch = to_batch(&ctx.node, rows)
        .map_err(|e| super::SourceError::Encode { source_name: source, error: e.to_string() })?;
    ctx.emit_droppable(source, Table::Probes, &batch).await?;
    Ok(())
}

/// The `probes` batch of `rows`, `host` set to `node`.
pub fn to_batch(node: &str, rows: &[ProbeRow]) -> Result<RecordBatch, ArrowError> {
    let mut b = TableBuilder::new(Table::Probes);
    let col = |b: &TableBuilder, name: &str| {
        b.column(name).ok_or_else(|| ArrowError::SchemaError(format!("probes has no column {name:?}")))
    };
    let ts = col(&b, "ts")?;
    let host = col(&b, "host")?;
    let kind = col(&b, "kind")?;
    let target = col(&b, "target")?;
    let ok = col(&b, "ok")?;
    let latency = col(&b, "latency_ms")?;
    let path = col(&b, "path")?;
    let status = col(&b, "status")?;
    let days = col(&b, "cert_days_left")?;
    let error = col(&b, "error")?;
    let attrs = col(&b, "attrs")?;
    for r in rows {
        b.ts(ts, r.ts);
        b.text(host, Some(node));
        b.text(kind, Some(&r.kind));
        b.text(target, Some(&r.target));
        b.bool(ok, Some(r.ok));
        b.float(latency, r.latency_ms);
        b.text(path, r.path.as_deref());
        b.int(status, r.status);
        b.float(days, r.cert_days_left);
        b.text(error, r.error.as_deref());
        b.map(attrs, r.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        b.end_row();
    }
    b.finish()
}

/// Test helpers: a context over a temporary spool, and reading its rows back.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;
    use lake_format::wire;

    use super::*;
    use crate::sources::SourceContext;
    use crate::spool::{SpoolHandle, SpoolOptions};
    use crate::stats::Stats;

    /// A context whose spool lives in `dir`.
    pub(crate) async fn context(dir: &std::path::Path) -> SourceContext {
        let stats = Arc::new(Stats::default());
        let opts = SpoolOptions { max_size: 64 << 20, segment_size: 1 << 20 };
        let spool = SpoolHandle::open(dir.join("spool"), opts, Arc::clone(&stats)).await.unwrap();
        SourceContext { node: Arc::from("test-node"), spool, stats }
    }

    /// Every `probes` row spooled so far (acknowledging them), checking `host`.
    pub(crate) async fn drain(ctx: &SourceContext) -> Vec<ProbeRow> {
        let mut out = Vec::new();
        while let Some(rec) = ctx.spool.peek().await.unwrap() {
            assert_eq!(rec.table, "probes");
            let (_, batches) = wire::decode(&rec.body).unwrap();
            for batch in batches {
                out.extend(from_batch(&batch));
            }
            ctx.spool.ack(rec.seq).await.unwrap();
        }
        out
    }

    fn from_batch(b: &RecordBatch) -> Vec<ProbeRow> {
        let col = |n: &str| b.column(b.schema().index_of(n).unwrap()).clone();
        let ts = col("ts");
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let host = col("host");
        let text = |n: &str, i: usize| {
            let c = col(n);
            let c = c.as_string::<i32>();
            (!c.is_null(i)).then(|| c.value(i).to_string())
        };
        let float = |n: &str, i: usize| {
            let c = col(n);
            let c = c.as_primitive::<Float64Type>();
            (!c.is_null(i)).then(|| c.value(i))
        };
        let status = col("status");
        let status = status.as_primitive::<Int64Type>();
        let ok = col("ok");
        let ok = ok.as_boolean();
        let attrs = col("attrs");
        let attrs = attrs.as_map();
        (0..b.num_rows())
            .map(|i| {
                assert_eq!(host.as_string::<i32>().value(i), "test-node");
                let entry = attrs.value(i);
                let keys = entry.column(0).as_string::<i32>();
                let values = entry.column(1).as_string::<i32>();
                ProbeRow {
                    ts: ts.value(i),
                    kind: text("kind", i).unwrap(),
                    target: text("target", i).unwrap(),
                    ok: ok.value(i),
                    latency_ms: float("latency_ms", i),
                    path: text("path", i),
                    status: (!status.is_null(i)).then(|| status.value(i)),
                    cert_days_left: float("cert_days_left", i),
                    error: text("error", i),
                    attrs: (0..keys.len()).map(|j| (keys.value(j).to_string(), values.value(j).to_string())).collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake_format::wire;

    #[test]
    fn rows_build_a_conforming_batch() {
        let mut r = ProbeRow::new(1, "tcp", "127.0.0.1:22", true);
        r.latency_ms = Some(0.5);
        r.attr("name", "ssh");
        r.attr("empty", "");
        let mut fail = ProbeRow::new(2, "http", "http://x/", false);
        fail.status = Some(503);
        fail.error = Some("status 503 not expected".into());
        let batch = to_batch("n1", &[r, fail]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let out = wire::conform(Table::Probes, &Table::Probes.schema(), &batch).unwrap();
        assert_eq!(out, batch);
    }
}
