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
//! Every name that ends up in SQL is checked against the catalog or parsed (an IP address,
//! a metric name of safe characters, a host name), so the SQL built here cannot be steered
//! by its arguments; it then runs in the engine's sandbox like any other read.

use std::net::IpAddr;
use std::time::Duration;

use lake_format::catalog::ColumnType;
use lake_format::Table;

/// Why a question cannot be turned into SQL; the message says what to give instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QuestionError(pub String);

fn err(m: impl Into<String>) -> QuestionError {
    QuestionError(m.into())
}

/// `ts` within the last `since` (at least a second).
pub fn since_filter(since: Duration) -> String {
    format!("ts >= now() - INTERVAL '{} seconds'", since.as_secs().max(1))
}

/// Everything `ip` did within the last `since`, oldest first.
pub fn ip_sql(ip: IpAddr, since: Duration) -> String {
    format!("SELECT ts, host, \"table\", summary FROM events WHERE ip = '{ip}' AND {} ORDER BY ts", since_filter(since))
}

/// A series (`metric:<name>` or `<table>:<numeric column>`) as a bucketed SQL subquery
/// `(b, v)`, of `host` only when given.
pub fn series_sql(spec: &str, host: Option<&str>, bucket: Duration, since: Duration) -> Result<String, QuestionError> {
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
        let safe = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !safe {
            return Err(err(format!("metric name {name:?}: only letters, digits, '_', '.', ':' and '-'")));
        }
        return Ok(format!(
            "SELECT time_bucket({bucket}, ts) AS b, avg(value) AS v FROM metrics WHERE name = '{name}' AND {since}{host} GROUP BY 1"
        ));
    }
    let table: Table = kind.parse().map_err(|e| err(format!("series {spec:?}: {e}")))?;
    let column = table
        .columns()
        .find(|c| c.name == name)
        .ok_or_else(|| err(format!("series {spec:?}: table {table} has no column {name:?}")))?;
    if !matches!(column.ty, ColumnType::Float | ColumnType::Int) {
        return Err(err(format!("series {spec:?}: column {name:?} is not numeric")));
    }
    Ok(format!(
        "SELECT time_bucket({bucket}, ts) AS b, avg(\"{name}\") AS v FROM {table} WHERE {since}{host} GROUP BY 1"
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
) -> Result<String, QuestionError> {
    let a = series_sql(a, host, bucket, since)?;
    let b = series_sql(b, host, bucket, since)?;
    Ok(correlation_sql(&a, &b, bucket, max_lag))
}

/// The `limit` most frequent values of `table.by` within the last `since`, with their counts.
pub fn top_sql(table: Table, by: &str, since: Duration, limit: u32) -> Result<String, QuestionError> {
    match table.columns().find(|c| c.name == by) {
        Some(c) if !matches!(c.ty, ColumnType::TextMap | ColumnType::TextList) => Ok(format!(
            "SELECT \"{by}\", count(*) AS count FROM {table} WHERE {since} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {limit}",
            by = c.name,
            since = since_filter(since),
        )),
        Some(_) => Err(err(format!("column {by:?} of {table} cannot be grouped by"))),
        None => {
            let names: Vec<&str> = table.columns().map(|c| c.name).collect();
            Err(err(format!("table {table} has no column {by:?} (it has: {})", names.join(", "))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_are_checked_before_they_reach_sql() {
        let d = Duration::from_secs(60);
        assert!(series_sql("metric:cpu_usage_percent", Some("node-a"), d, d)
            .unwrap()
            .contains("name = 'cpu_usage_percent'"));
        assert!(series_sql("probes:latency_ms", None, d, d).unwrap().contains("avg(\"latency_ms\") AS v FROM probes"));
        for bad in ["metric:x' or 1=1 --", "probes:error", "nope:x", "http:nope", "cpu"] {
            assert!(series_sql(bad, None, d, d).is_err(), "{bad} accepted");
        }
        assert!(series_sql("metric:load1", Some("a'b"), d, d).is_err());
    }

    #[test]
    fn top_takes_only_a_groupable_catalog_column() {
        let d = Duration::from_secs(3600);
        assert!(top_sql(Table::Http, "remote_ip", d, 5).unwrap().contains("GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5"));
        let e = top_sql(Table::Http, "x\" or 1=1", d, 5).unwrap_err();
        assert!(e.0.contains("has no column") && e.0.contains("remote_ip"), "{e}");
        assert!(top_sql(Table::Logs, "attrs", d, 5).unwrap_err().0.contains("cannot be grouped by"));
    }
}
