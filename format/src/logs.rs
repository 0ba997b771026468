//! The one builder of `logs` rows, shared by every writer of that table: the collector's
//! journald source, its notes about its own runs, the unparsed lines of other sources,
//! and the lake's OTLP logs mapping.
//!
//! In: one [`LogRow`] (the columns by name) and the row's attrs. Out: a batch in the
//! catalog's `logs` schema ([`crate::catalog`]). A column a writer leaves `None` is null,
//! as it would be had the writer never set it, so every writer gets the same batch it
//! built by hand before; `attrs` is always a map (empty, never null).

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;

use crate::rows::TableBuilder;
use crate::Table;

/// Lowercase hex of `bytes`: how `logs` attrs keep exact bytes (a line that is not
/// UTF-8, a journal field, an OTLP trace id).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// The columns of one `logs` row but `attrs` (passed beside it to [`LogsBuilder::push`],
/// since writers hold them in different shapes).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogRow<'a> {
    /// Event time, µs since the epoch.
    pub ts: i64,
    /// The node (or the sender's `host.name`).
    pub host: &'a str,
    /// Where the line came from: `journald`, `otlp`, `<source>-unparsed`, …
    pub source: &'a str,
    /// systemd unit or OTLP `service.name`.
    pub unit: Option<&'a str>,
    /// Syslog identifier (or the OTLP scope, or the failing job's name).
    pub ident: Option<&'a str>,
    /// Process id.
    pub pid: Option<i64>,
    /// Syslog priority, 0..=7.
    pub priority: Option<i64>,
    /// The message.
    pub message: Option<&'a str>,
    /// journald boot id.
    pub boot_id: Option<&'a str>,
}

/// Column indices of `logs`, resolved once per builder.
#[derive(Debug)]
struct Cols {
    ts: usize,
    host: usize,
    source: usize,
    unit: usize,
    ident: usize,
    pid: usize,
    priority: usize,
    message: usize,
    boot_id: usize,
    attrs: usize,
}

/// Accumulates `logs` rows.
#[derive(Debug)]
pub struct LogsBuilder {
    b: TableBuilder,
    c: Cols,
}

impl Default for LogsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LogsBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        let b = TableBuilder::new(Table::Logs);
        // The catalog and this list live in one crate; a test builds every column.
        let c = |n: &str| b.column(n).unwrap_or_else(|| panic!("logs column {n} in the catalog"));
        let c = Cols {
            ts: c("ts"),
            host: c("host"),
            source: c("source"),
            unit: c("unit"),
            ident: c("ident"),
            pid: c("pid"),
            priority: c("priority"),
            message: c("message"),
            boot_id: c("boot_id"),
            attrs: c("attrs"),
        };
        LogsBuilder { b, c }
    }

    /// Adds one row with `attrs` (in the order given; keys are not deduplicated here).
    pub fn push<'a>(&mut self, row: &LogRow<'_>, attrs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let (b, c) = (&mut self.b, &self.c);
        b.ts(c.ts, row.ts);
        b.text(c.host, Some(row.host));
        b.text(c.source, Some(row.source));
        b.text(c.unit, row.unit);
        b.text(c.ident, row.ident);
        b.int(c.pid, row.pid);
        b.int(c.priority, row.priority);
        b.text(c.message, row.message);
        b.text(c.boot_id, row.boot_id);
        b.map(c.attrs, attrs);
        b.end_row();
    }

    /// Rows added since the last `finish`.
    pub fn len(&self) -> usize {
        self.b.len()
    }

    /// Whether no row was added since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    /// The batch of every row added so far; the builder starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        self.b.finish()
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::Array;

    use super::*;
    use crate::wire;

    #[test]
    fn unset_columns_are_null_and_attrs_an_empty_map() {
        let mut b = LogsBuilder::new();
        let full = LogRow {
            ts: 1,
            host: "n",
            source: "journald",
            unit: Some("sshd.service"),
            ident: Some("sshd"),
            pid: Some(7),
            priority: Some(6),
            message: Some("hello"),
            boot_id: Some("b1"),
        };
        b.push(&full, [("k", "v")]);
        b.push(&LogRow { ts: 2, host: "n", source: "x-unparsed", ..LogRow::default() }, []);
        let batch = b.finish().unwrap();
        assert!(b.is_empty());
        assert_eq!(wire::conform(Table::Logs, &Table::Logs.schema(), &batch).unwrap(), batch);
        for name in ["unit", "ident", "pid", "priority", "message", "boot_id"] {
            let col = batch.column_by_name(name).unwrap();
            assert!(col.is_valid(0) && col.is_null(1), "{name}");
        }
        assert_eq!(batch.column_by_name("pid").unwrap().as_primitive::<Int64Type>().value(0), 7);
        let attrs = batch.column_by_name("attrs").unwrap().as_map();
        assert_eq!((attrs.null_count(), attrs.value(0).len(), attrs.value(1).len()), (0, 1, 0));
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
