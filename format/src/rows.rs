//! Builders that turn typed rows into record batches matching the catalog exactly.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{ArrowError, SchemaRef};

use crate::catalog::{ColumnType, Table, TS_TZ};

/// Microseconds since the epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
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

/// Builds a batch of any catalog table column by column, row by row.
///
/// Resolve column indices once with [`TableBuilder::column`], then per row set the
/// columns you have and call [`TableBuilder::end_row`]: columns left unset in a row are
/// null (an error at [`TableBuilder::finish`] if the column is required).
#[derive(Debug)]
pub struct TableBuilder {
    table: Table,
    schema: SchemaRef,
    cols: Vec<Col>,
    rows: usize,
}

#[derive(Debug)]
enum Col {
    Ts(TimestampMicrosecondBuilder),
    Text(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Map(MapBuilder<StringBuilder, StringBuilder>),
    List(ListBuilder<StringBuilder>),
}

impl Col {
    fn new(ty: ColumnType) -> Col {
        match ty {
            ColumnType::Timestamp => Col::Ts(TimestampMicrosecondBuilder::new().with_timezone(TS_TZ)),
            ColumnType::Text => Col::Text(StringBuilder::new()),
            ColumnType::Int => Col::Int(Int64Builder::new()),
            ColumnType::Float => Col::Float(Float64Builder::new()),
            ColumnType::Bool => Col::Bool(BooleanBuilder::new()),
            ColumnType::TextMap => Col::Map(text_map_builder()),
            ColumnType::TextList => Col::List(ListBuilder::new(StringBuilder::new())),
        }
    }

    fn len(&self) -> usize {
        match self {
            Col::Ts(b) => b.len(),
            Col::Text(b) => b.len(),
            Col::Int(b) => b.len(),
            Col::Float(b) => b.len(),
            Col::Bool(b) => b.len(),
            Col::Map(b) => b.len(),
            Col::List(b) => b.len(),
        }
    }

    fn append_null(&mut self) {
        match self {
            Col::Ts(b) => b.append_null(),
            Col::Text(b) => b.append_null(),
            Col::Int(b) => b.append_null(),
            Col::Float(b) => b.append_null(),
            Col::Bool(b) => b.append_null(),
            // Keys and values are in step (both empty for this entry), so this cannot fail.
            Col::Map(b) => b.append(false).expect("empty map entry"),
            Col::List(b) => b.append(false),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Ts(b) => Arc::new(b.finish()),
            Col::Text(b) => Arc::new(b.finish()),
            Col::Int(b) => Arc::new(b.finish()),
            Col::Float(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Map(b) => Arc::new(b.finish()),
            Col::List(b) => Arc::new(b.finish()),
        }
    }
}

impl TableBuilder {
    /// An empty builder for `table`.
    pub fn new(table: Table) -> Self {
        TableBuilder { table, schema: table.schema(), cols: table.columns().map(|c| Col::new(c.ty)).collect(), rows: 0 }
    }

    /// The table being built.
    pub fn table(&self) -> Table {
        self.table
    }

    /// Index of a column, to pass to the setters.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.schema.index_of(name).ok()
    }

    /// Rows ended so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row was ended since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    // A setter called on a column of another type is a bug in the caller; in release
    // builds it leaves the column unset (null) instead of taking the process down.
    fn slot(&mut self, col: usize) -> Option<&mut Col> {
        let rows = self.rows;
        self.cols.get_mut(col).filter(|c| c.len() == rows)
    }

    /// Sets a timestamp column (microseconds since the epoch).
    pub fn ts(&mut self, col: usize, micros: i64) {
        match self.slot(col) {
            Some(Col::Ts(b)) => b.append_value(micros),
            _ => debug_assert!(false, "ts() on column {col} of {}", self.table),
        }
    }

    /// Sets a text column.
    pub fn text(&mut self, col: usize, v: Option<&str>) {
        match self.slot(col) {
            Some(Col::Text(b)) => b.append_option(v),
            _ => debug_assert!(false, "text() on column {col} of {}", self.table),
        }
    }

    /// Sets an integer column.
    pub fn int(&mut self, col: usize, v: Option<i64>) {
        match self.slot(col) {
            Some(Col::Int(b)) => b.append_option(v),
            _ => debug_assert!(false, "int() on column {col} of {}", self.table),
        }
    }

    /// Sets a float column.
    pub fn float(&mut self, col: usize, v: Option<f64>) {
        match self.slot(col) {
            Some(Col::Float(b)) => b.append_option(v),
            _ => debug_assert!(false, "float() on column {col} of {}", self.table),
        }
    }

    /// Sets a boolean column.
    pub fn bool(&mut self, col: usize, v: Option<bool>) {
        match self.slot(col) {
            Some(Col::Bool(b)) => b.append_option(v),
            _ => debug_assert!(false, "bool() on column {col} of {}", self.table),
        }
    }

    /// Sets a map column (`labels`, `attrs`); no entries gives an empty map.
    pub fn map<'a>(&mut self, col: usize, entries: impl IntoIterator<Item = (&'a str, &'a str)>) {
        match self.slot(col) {
            Some(Col::Map(b)) => {
                for (k, v) in entries {
                    b.keys().append_value(k);
                    b.values().append_value(v);
                }
                b.append(true).expect("keys and values appended in pairs");
            }
            _ => debug_assert!(false, "map() on column {col} of {}", self.table),
        }
    }

    /// Sets a list-of-text column.
    pub fn list<'a>(&mut self, col: usize, items: impl IntoIterator<Item = &'a str>) {
        match self.slot(col) {
            Some(Col::List(b)) => {
                for i in items {
                    b.values().append_value(i);
                }
                b.append(true);
            }
            _ => debug_assert!(false, "list() on column {col} of {}", self.table),
        }
    }

    /// Ends the row: columns not set in it become null.
    pub fn end_row(&mut self) {
        let rows = self.rows;
        for c in &mut self.cols {
            if c.len() == rows {
                c.append_null();
            }
        }
        self.rows += 1;
    }

    /// The batch of every row ended so far; the builder starts empty again. Fails when a
    /// required column was left null.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let cols: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        let rows = std::mem::take(&mut self.rows);
        if let Some((f, _)) =
            self.schema.fields().iter().zip(&cols).find(|(f, a)| !f.is_nullable() && a.null_count() > 0)
        {
            return Err(ArrowError::InvalidArgumentError(format!(
                "column {:?} of table {} is required but was not set in every row",
                f.name(),
                self.table
            )));
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), cols, &options)
    }
}

#[cfg(test)]
mod table_builder_tests {
    use super::*;
    use crate::wire;

    #[test]
    fn every_table_builds_and_conforms() {
        for t in Table::ALL {
            let mut b = TableBuilder::new(t);
            for (i, c) in t.columns().enumerate() {
                match c.ty {
                    ColumnType::Timestamp => b.ts(i, 1),
                    ColumnType::Text => b.text(i, Some("x")),
                    ColumnType::Int => b.int(i, Some(1)),
                    ColumnType::Float => b.float(i, Some(1.5)),
                    ColumnType::Bool => b.bool(i, Some(true)),
                    ColumnType::TextMap => b.map(i, [("k", "v")]),
                    ColumnType::TextList => b.list(i, ["a", "b"]),
                }
            }
            b.end_row();
            // A second row with only the required columns set.
            for (i, c) in t.columns().enumerate().filter(|(_, c)| !c.nullable) {
                match c.ty {
                    ColumnType::Timestamp => b.ts(i, 2),
                    ColumnType::Text => b.text(i, Some("y")),
                    ColumnType::Float => b.float(i, Some(0.0)),
                    ColumnType::Bool => b.bool(i, Some(false)),
                    ColumnType::Int => b.int(i, Some(0)),
                    _ => unreachable!("no required map or list column"),
                }
            }
            b.end_row();
            let batch = b.finish().unwrap();
            assert_eq!(batch.num_rows(), 2);
            assert_eq!(wire::conform(t, &t.schema(), &batch).unwrap(), batch, "{t}");
        }
    }

    #[test]
    fn a_missing_required_column_is_an_error_naming_it() {
        let mut b = TableBuilder::new(Table::Http);
        let ts = b.column("ts").unwrap();
        b.ts(ts, 1);
        b.end_row();
        let err = b.finish().unwrap_err().to_string();
        assert!(err.contains("\"host\""), "{err}");
        assert!(b.is_empty());
    }
}
