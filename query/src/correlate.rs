//! The SQL of the operator's cross-source questions, built once for every front end that
//! asks them: `lake correlate` and `lake top` on the command line, and the `correlate` and
//! `top` tools of the MCP server (`lake::http::mcp`).
//!
//! - [`ip_sql`]: everything one address did (http requests, firewall packets, fail2ban
//!   events) in time order, from the `events` view.
//! - [`series_sql`] and [`correlation_sql`]: Pearson correlation of two series over time
//!   buckets, trying lags of up to `max_lag` buckets either way (does one lead the other?).
//! - [`top_sql`]: the most frequent values of a column.
//!
//! Tables are built-in or custom ([`TableColumns`]): a custom table's columns come from
//! its schema (the engine's [`crate::Engine::table_columns`]) or, for a remote lake, from
//! the columns of `SELECT * FROM t LIMIT 0` ([`TableColumns::probe_sql`]).
//!
//! Every name that ends up in SQL is checked against the catalog or the table's columns,
//! or parsed (an IP address, a metric name of safe characters, a host name), and quoted,
//! so the SQL built here cannot be steered by its arguments; it then runs in the engine's
//! sandbox like any other read.

use std::net::IpAddr;
use std::time::Duration;

use arrow_schema::{DataType, Schema};
use lake_format::catalog::ColumnType;
use lake_format::custom::{validate_column_name, validate_table_name};
use lake_format::Table;

/// Why a question cannot be turned into SQL; the message says what to give instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuestionError(pub String);

fn err(m: impl Into<String>) -> QuestionError {
    QuestionError(m.into())
}

/// A table of the lake with its columns, as far as they are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumns {
    /// The table's name: a catalog table or a valid custom table name.
    pub name: String,
    /// Its columns (`ts` and `host` first), or `None` where they cannot be known here (a
    /// custom table named in `lake.toml`, checked when it is read): then column names are
    /// only checked for their syntax and quoted, and DuckDB names a missing one.
    pub columns: Option<Vec<(String, ColumnType)>>,
}

impl TableColumns {
    /// A catalog table.
    pub fn builtin(table: Table) -> TableColumns {
        TableColumns {
            name: table.name().to_string(),
            columns: Some(table.columns().map(|c| (c.name.to_string(), c.ty)).collect()),
        }
    }

    /// `name` as a catalog table, else as a custom table whose columns are not known yet.
    pub fn parse(name: &str) -> Result<TableColumns, QuestionError> {
        if let Ok(t) = name.parse::<Table>() {
            return Ok(TableColumns::builtin(t));
        }
        validate_table_name(name)
            .map_err(|e| err(format!("{e} (a custom table's name, or one of: {})", builtin_names())))?;
        Ok(TableColumns { name: name.to_string(), columns: None })
    }

    /// A custom table with the columns of a result schema (of [`TableColumns::probe_sql`]).
    pub fn from_schema(name: &str, schema: &Schema) -> TableColumns {
        let columns =
            schema.fields().iter().filter_map(|f| column_type(f.data_type()).map(|t| (f.name().clone(), t))).collect();
        TableColumns { name: name.to_string(), columns: Some(columns) }
    }

    /// The SQL whose result schema lists the table's columns, reading no row.
    pub fn probe_sql(&self) -> String {
        format!("SELECT * FROM {} LIMIT 0", ident(&self.name))
    }

    /// The type of column `name` (`None`: unknown, the columns are not known), or an error
    /// naming the columns there are.
    pub fn column(&self, name: &str) -> Result<Option<ColumnType>, QuestionError> {
        match &self.columns {
            Some(cols) => match cols.iter().find(|(n, _)| n == name) {
                Some((_, t)) => Ok(Some(*t)),
                None => {
                    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
                    Err(err(format!("table {} has no column {name:?} (it has: {})", self.name, names.join(", "))))
                }
            },
            None => validate_column_name(name).map(|()| None).map_err(|e| err(e.to_string())),
        }
    }

    /// Column `name` if it can be grouped by (not a map or list), quoted for SQL.
    pub fn groupable(&self, name: &str) -> Result<String, QuestionError> {
        match self.column(name)? {
            Some(ColumnType::TextMap | ColumnType::TextList) => {
                Err(err(format!("column {name:?} of {} cannot be grouped by", self.name)))
            }
            _ => Ok(ident(name)),
        }
    }
}

/// The column type an Arrow type is read as; `None` for types no lake column has.
fn column_type(t: &DataType) -> Option<ColumnType> {
    Some(match t {
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => ColumnType::Timestamp,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnType::Text,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => ColumnType::Float,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => ColumnType::Int,
        DataType::Boolean => ColumnType::Bool,
        DataType::Map(..) => ColumnType::TextMap,
        DataType::List(_) | DataType::LargeList(_) => ColumnType::TextList,
        _ => return None,
    })
}

fn builtin_names() -> String {
    Table::ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
}

/// A quoted SQL identifier (lake names never hold `"`; doubled anyway).
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Checks a metric name: letters, digits, `_`, `.`, `:` and `-` only.
pub fn check_metric_name(name: &str) -> Result<(), QuestionError> {
    let safe = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if safe {
        Ok(())
    } else {
        Err(err(format!("metric name {name:?}: only letters, digits, '_', '.', ':' and '-'")))
    }
}

/// `ts` within the last `since` (at least a second).
pub fn since_filter(since: Duration) -> String {
    format!("ts >= now() - INTERVAL '{} seconds'", since.as_secs().max(1))
}

/// Everything `ip` did within the last `since`, oldest first.
pub fn ip_sql(ip: IpAddr, since: Duration) -> String {
    format!("SELECT ts, host, \"table\", summary FROM events WHERE ip = '{ip}' AND {} ORDER BY ts", since_filter(since))
}

/// Finds a table's columns: the catalog's, or a custom table's as the caller can learn them
/// (the engine's schemas, or a probe query to a remote lake).
pub type Resolve<'a> = &'a dyn Fn(&str) -> Result<TableColumns, QuestionError>;

/// A series (`metric:<name>` or `<table>:<numeric column>`, custom tables too) as a
/// bucketed SQL subquery `(b, v)`, of `host` only when given.
pub fn series_sql(
    spec: &str,
    host: Option<&str>,
    bucket: Duration,
    since: Duration,
    resolve: Resolve<'_>,
) -> Result<String, QuestionError> {
    let (kind, name) =
        spec.split_once(':').ok_or_else(|| err(format!("series {spec:?}: write metric:<name> or <table>:<column>")))?;
    let host = match host {
        Some(h) => {
            lake_format::wire::validate_node_name(h).map_err(|e| err(e.to_string()))?;
            format!(" AND host = '{h}'")
        }
        None => String::new(),
    };
    let bucket = format!("INTERVAL '{} seconds'", bucket.as_secs().max(1));
    let since = since_filter(since);
    if kind == "metric" || kind == "metrics" {
        check_metric_name(name)?;
        return Ok(format!(
            "SELECT time_bucket({bucket}, ts) AS b, avg(value) AS v FROM metrics WHERE name = '{name}' AND {since}{host} GROUP BY 1"
        ));
    }
    let table = resolve(kind).map_err(|e| err(format!("series {spec:?}: {e}")))?;
    match table.column(name).map_err(|e| err(format!("series {spec:?}: {e}")))? {
        Some(ColumnType::Float | ColumnType::Int) | None => {}
        Some(_) => return Err(err(format!("series {spec:?}: column {name:?} is not numeric"))),
    }
    Ok(format!(
        "SELECT time_bucket({bucket}, ts) AS b, avg({col}::DOUBLE) AS v FROM {t} WHERE {since}{host} GROUP BY 1",
        col = ident(name),
        t = ident(&table.name),
    ))
}

/// The SQL of a lag-searching correlation of two bucketed series ([`series_sql`]): one row
/// per lag with at least three common buckets, strongest correlation first.
pub fn correlation_sql(a: &str, b: &str, bucket: Duration, max_lag: u32) -> String {
    let secs = bucket.as_secs().max(1);
    format!(
        "WITH a AS ({a}), b AS ({b}),
         r AS (SELECT lag AS lag_buckets, lag * {secs} AS lag_seconds, round(corr(a.v, b.v), 4) AS pearson_r, count(*) AS buckets
                 FROM range(-{max_lag}, {max_lag} + 1) t(lag)
                 JOIN a ON true
                 JOIN b ON b.b = a.b + lag * INTERVAL '{secs} seconds'
                GROUP BY lag)
         SELECT * FROM r WHERE pearson_r IS NOT NULL AND NOT isnan(pearson_r) AND buckets >= 3
          ORDER BY abs(pearson_r) DESC, abs(lag_buckets)"
    )
}

/// The whole correlation of two series specs ([`series_sql`], then [`correlation_sql`]).
pub fn correlate_sql(
    a: &str,
    b: &str,
    host: Option<&str>,
    bucket: Duration,
    max_lag: u32,
    since: Duration,
    resolve: Resolve<'_>,
) -> Result<String, QuestionError> {
    let a = series_sql(a, host, bucket, since, resolve)?;
    let b = series_sql(b, host, bucket, since, resolve)?;
    Ok(correlation_sql(&a, &b, bucket, max_lag))
}

/// The `limit` most frequent values of `table.by` within the last `since`, with their counts.
pub fn top_sql(table: &TableColumns, by: &str, since: Duration, limit: u32) -> Result<String, QuestionError> {
    let col = table.groupable(by)?;
    Ok(format!(
        "SELECT {col}, count(*) AS count FROM {t} WHERE {since} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {limit}",
        t = ident(&table.name),
        since = since_filter(since),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built-in tables from the catalog, `stripe` a custom table with known columns.
    fn resolve(name: &str) -> Result<TableColumns, QuestionError> {
        let t = TableColumns::parse(name)?;
        match t.name.as_str() {
            _ if t.columns.is_some() => Ok(t),
            "stripe" => {
                let cols = [
                    ("ts", ColumnType::Timestamp),
                    ("host", ColumnType::Text),
                    ("amount", ColumnType::Int),
                    ("kind", ColumnType::Text),
                ];
                Ok(TableColumns { columns: Some(cols.iter().map(|(n, t)| (n.to_string(), *t)).collect()), ..t })
            }
            other => Err(err(format!("the lake has no table {other:?}"))),
        }
    }

    #[test]
    fn series_names_are_checked_before_they_reach_sql() {
        let d = Duration::from_secs(60);
        assert!(series_sql("metric:cpu_usage_percent", Some("node-a"), d, d, &resolve)
            .unwrap()
            .contains("name = 'cpu_usage_percent'"));
        assert!(series_sql("probes:latency_ms", None, d, d, &resolve)
            .unwrap()
            .contains("avg(\"latency_ms\"::DOUBLE) AS v FROM \"probes\""));
        assert!(series_sql("stripe:amount", None, d, d, &resolve).unwrap().contains("FROM \"stripe\""));
        for bad in
            ["metric:x' or 1=1 --", "probes:error", "nope:x", "http:nope", "cpu", "stripe:kind", "stripe:x", "Bad:x"]
        {
            assert!(series_sql(bad, None, d, d, &resolve).is_err(), "{bad} accepted");
        }
        assert!(series_sql("metric:load1", Some("a'b"), d, d, &resolve).is_err());
    }

    #[test]
    fn top_takes_only_a_groupable_column_of_a_catalog_or_custom_table() {
        let d = Duration::from_secs(3600);
        let http = TableColumns::builtin(Table::Http);
        assert!(top_sql(&http, "remote_ip", d, 5).unwrap().contains("GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5"));
        let e = top_sql(&http, "x\" or 1=1", d, 5).unwrap_err();
        assert!(e.0.contains("has no column") && e.0.contains("remote_ip"), "{e}");
        assert!(top_sql(&TableColumns::builtin(Table::Logs), "attrs", d, 5)
            .unwrap_err()
            .0
            .contains("cannot be grouped by"));
        let stripe = resolve("stripe").unwrap();
        assert!(top_sql(&stripe, "kind", d, 5)
            .unwrap()
            .starts_with("SELECT \"kind\", count(*) AS count FROM \"stripe\""));
        assert!(top_sql(&stripe, "nope", d, 5).unwrap_err().0.contains("it has: ts, host, amount, kind"));
        // Columns not known (a remote lake's table before its probe): syntax only, quoted.
        let unknown = TableColumns::parse("webhooks").unwrap();
        assert!(top_sql(&unknown, "a b", d, 5).unwrap().contains("\"a b\""));
        assert!(top_sql(&unknown, "a\"b", d, 5).is_err());
        assert!(TableColumns::parse("Drop table").unwrap_err().0.contains("lower-case identifier"));
    }
}
