//! Builders that turn typed rows into record batches matching the catalog exactly.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::builder::{Float64Builder, MapBuilder, MapFieldNames, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;

use crate::catalog::{Table, TS_TZ};

/// Microseconds since the epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A builder for `Map<Utf8, Utf8>` columns (`labels`, `attrs`) with the catalog's field names.
pub fn text_map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames { entry: "entries".into(), key: "keys".into(), value: "values".into() };
    MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new())
}

/// Accumulates samples for the `metrics` table.
#[derive(Debug)]
pub struct MetricsBuilder {
    schema: SchemaRef,
    ts: TimestampMicrosecondBuilder,
    host: StringBuilder,
    name: StringBuilder,
    value: Float64Builder,
    labels: MapBuilder<StringBuilder, StringBuilder>,
    rows: usize,
}

impl MetricsBuilder {
    /// A builder with the `metrics` schema.
    pub fn new() -> Self {
        MetricsBuilder {
            schema: Table::Metrics.schema(),
            ts: TimestampMicrosecondBuilder::new().with_timezone(TS_TZ),
            host: StringBuilder::new(),
            name: StringBuilder::new(),
            value: Float64Builder::new(),
            labels: text_map_builder(),
            rows: 0,
        }
    }

    /// Adds one sample.
    pub fn push(&mut self, ts_micros: i64, host: &str, name: &str, value: f64, labels: &[(&str, &str)]) {
        self.ts.append_value(ts_micros);
        self.host.append_value(host);
        self.name.append_value(name);
        self.value.append_value(value);
        for (k, v) in labels {
            self.labels.keys().append_value(k);
            self.labels.values().append_value(v);
        }
        // The map builder only errors when keys and values are out of step, which push prevents.
        self.labels.append(true).expect("keys and values appended in pairs");
        self.rows += 1;
    }

    /// Samples pushed since the last `finish`.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no sample was pushed since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The batch of every sample pushed so far; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.labels.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), cols).expect("columns built to the metrics schema")
    }
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    #[test]
    fn built_batches_conform_to_the_catalog() {
        let mut b = MetricsBuilder::new();
        b.push(1, "n1", "load1", 0.5, &[]);
        b.push(2, "n1", "cpu_usage_percent", 12.0, &[("cpu", "0")]);
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 2);
        assert!(b.is_empty());
        let out = wire::conform(Table::Metrics, &Table::Metrics.schema(), &batch).unwrap();
        assert_eq!(out, batch);
    }
}
