//! `logs` rows for input lines a source could not parse (`<source>-unparsed`): the line
//! is kept, never dropped — as text, plus its exact bytes hex-encoded when they are not
//! UTF-8 — with the file it came from and why it did not parse.

use lake_format::logs::{LogRow, LogsBuilder};

pub use lake_format::logs::hex;

/// Accumulates unparsed lines as `logs` rows.
#[derive(Debug)]
pub struct UnparsedRows {
    logs: LogsBuilder,
    source: String,
}

impl UnparsedRows {
    /// Rows whose `source` is `<name>-unparsed`.
    pub fn new(name: &str) -> Self {
        UnparsedRows { logs: LogsBuilder::new(), source: format!("{name}-unparsed") }
    }

    /// Keeps one line read at `ts` from `file` that failed with `error`.
    pub fn push(&mut self, node: &str, bytes: &[u8], file: &str, error: &str, truncated: bool, ts: i64) {
        self.push_from(node, bytes, &[("file", file)], error, truncated, ts);
    }

    /// Keeps one line that failed with `error`; `origin` says where it came from (e.g.
    /// `[("file", path)]`, or `[("exec", name), ("line", "3")]`) and goes first in attrs.
    pub fn push_from(
        &mut self,
        node: &str,
        bytes: &[u8],
        origin: &[(&str, &str)],
        error: &str,
        truncated: bool,
        ts: i64,
    ) {
        let text = String::from_utf8_lossy(bytes);
        let raw_hex = matches!(text, std::borrow::Cow::Owned(_)).then(|| hex(bytes));
        let mut a: Vec<(&str, &str)> = origin.to_vec();
        a.push(("error", error));
        if let Some(h) = raw_hex.as_deref() {
            a.push(("raw_hex", h));
        }
        if truncated {
            a.push(("truncated", "true"));
        }
        let row = LogRow { ts, host: node, source: &self.source, message: Some(&text), ..LogRow::default() };
        self.logs.push(&row, a);
    }

    /// Rows added since the last `finish`.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether no row was added since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// The batch of the rows added so far; empty again after.
    pub fn finish(&mut self) -> Result<arrow_array::RecordBatch, arrow_schema::ArrowError> {
        self.logs.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsed_lines_keep_exact_bytes() {
        let mut u = UnparsedRows::new("ufw");
        u.push("n", b"bad \xff line", "/var/log/ufw.log", "invalid UTF-8", false, 1);
        u.push("n", b"fine but cut", "/var/log/ufw.log", "too long", true, 2);
        let b = u.finish().unwrap();
        assert_eq!(b.num_rows(), 2);
        let attrs = format!("{:?}", b.column_by_name("attrs").unwrap());
        assert!(attrs.contains("62616420ff206c696e65") && attrs.contains("truncated"), "{attrs}");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
