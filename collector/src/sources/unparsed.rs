//! `logs` rows for input lines a source could not parse (`<source>-unparsed`): the line
//! is kept, never dropped — as text, plus its exact bytes hex-encoded when they are not
//! UTF-8 — with the file it came from and why it did not parse.

use lake_format::rows::TableBuilder;
use lake_format::Table;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Accumulates unparsed lines as `logs` rows.
#[derive(Debug)]
pub struct UnparsedRows {
    b: TableBuilder,
    cols: [usize; 5],
    source: String,
}

impl UnparsedRows {
    /// Rows whose `source` is `<name>-unparsed`.
    pub fn new(name: &str) -> Self {
        let b = TableBuilder::new(Table::Logs);
        let c = |n: &str| b.column(n).expect("logs column in the catalog");
        let cols = [c("ts"), c("host"), c("source"), c("message"), c("attrs")];
        UnparsedRows { b, cols, source: format!("{name}-unparsed") }
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
        let [c_ts, host, source, message, attrs] = self.cols;
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
        self.b.ts(c_ts, ts);
        self.b.text(host, Some(node));
        self.b.text(source, Some(&self.source));
        self.b.text(message, Some(&text));
        self.b.map(attrs, a);
        self.b.end_row();
    }
}

crate::sources::rows_deref!(UnparsedRows);

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
