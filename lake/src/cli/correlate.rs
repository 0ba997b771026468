//! `lake correlate` and `lake top`: the operator's cross-source questions without
//! hand-written joins.
//!
//! - `lake correlate --ip 203.0.113.7`: everything one address did (http requests,
//!   firewall packets, fail2ban events) in time order, from the `events` view.
//! - `lake correlate metric:cpu_usage_percent probes:latency_ms --host h --bucket 1m`:
//!   Pearson correlation of two series over time buckets, trying lags of up to
//!   `--max-lag` buckets either way (does one lead the other?).
//! - `lake top --table http --by remote_ip --since 1h`: the most frequent values.
//!
//! Every name that ends up in SQL is checked against the catalog or parsed (an IP
//! address, a metric name of safe characters), so the SQL built here cannot be steered
//! by its arguments; it then runs like `lake query` (remote lake or `--data-dir`).

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use lake_format::catalog::ColumnType;
use lake_format::Table;

use super::query::{finish, Target};

/// Arguments of `lake correlate`.
#[derive(Debug, Args)]
pub(super) struct CorrelateArgs {
    /// Everything this address did, across http, firewall and fail2ban.
    #[arg(long, conflicts_with_all = ["series"])]
    ip: Option<IpAddr>,
    /// Two series to correlate: `metric:<name>` or `<table>:<numeric column>`.
    #[arg(num_args = 0..=2)]
    series: Vec<String>,
    /// Only this host (node) for the series.
    #[arg(long)]
    host: Option<String>,
    /// Bucket width of the series, e.g. 1m, 5m, 1h.
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    bucket: Duration,
    /// Lags tried, in buckets, each way.
    #[arg(long, default_value_t = 10)]
    max_lag: u32,
    /// How far back to look, e.g. 1h, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    #[command(flatten)]
    target: Target,
}

/// Arguments of `lake top`.
#[derive(Debug, Args)]
pub(super) struct TopArgs {
    /// Table to count in, e.g. http, firewall, bans.
    #[arg(long)]
    table: Table,
    /// Column to group by, e.g. remote_ip, path, src, jail.
    #[arg(long)]
    by: String,
    /// How far back to look.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    since: Duration,
    /// How many values to show.
    #[arg(long, default_value_t = 10)]
    limit: u32,
    #[command(flatten)]
    target: Target,
}

fn since_filter(since: Duration) -> String {
    format!("ts >= now() - INTERVAL '{} seconds'", since.as_secs().max(1))
}

/// A series argument resolved to a bucketed SQL subquery `(b, v)`.
fn series_sql(spec: &str, host: Option<&str>, bucket: Duration, since: Duration) -> anyhow::Result<String> {
    let (kind, name) =
        spec.split_once(':').with_context(|| format!("series {spec:?}: write metric:<name> or <table>:<column>"))?;
    let host = match host {
        Some(h) => {
            lake_format::wire::validate_node_name(h)?;
            format!(" AND host = '{h}'")
        }
        None => String::new(),
    };
    let bucket = format!("INTERVAL '{} seconds'", bucket.as_secs().max(1));
    let since = since_filter(since);
    if kind == "metric" || kind == "metrics" {
        let safe = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !safe {
            bail!("metric name {name:?}: only letters, digits, '_', '.', ':' and '-'");
        }
        return Ok(format!(
            "SELECT time_bucket({bucket}, ts) AS b, avg(value) AS v FROM metrics WHERE name = '{name}' AND {since}{host} GROUP BY 1"
        ));
    }
    let table: Table = kind.parse().with_context(|| format!("series {spec:?}"))?;
    let column = table
        .columns()
        .find(|c| c.name == name)
        .with_context(|| format!("series {spec:?}: table {table} has no column {name:?}"))?;
    if !matches!(column.ty, ColumnType::Float | ColumnType::Int) {
        bail!("series {spec:?}: column {name:?} is not numeric");
    }
    Ok(format!(
        "SELECT time_bucket({bucket}, ts) AS b, avg(\"{name}\") AS v FROM {table} WHERE {since}{host} GROUP BY 1"
    ))
}

/// The SQL of a lag-searching correlation of two bucketed series.
fn correlation_sql(a: &str, b: &str, bucket: Duration, max_lag: u32) -> String {
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

/// Runs `lake correlate`.
pub(super) fn correlate(args: CorrelateArgs) -> ExitCode {
    let sql = match (&args.ip, args.series.as_slice()) {
        (Some(ip), []) => Ok(format!(
            "SELECT ts, host, \"table\", summary FROM events WHERE ip = '{ip}' AND {} ORDER BY ts",
            since_filter(args.since)
        )),
        (None, [a, b]) => series_sql(a, args.host.as_deref(), args.bucket, args.since).and_then(|a| {
            let b = series_sql(b, args.host.as_deref(), args.bucket, args.since)?;
            Ok(correlation_sql(&a, &b, args.bucket, args.max_lag))
        }),
        _ => {
            Err(anyhow::anyhow!("give --ip ADDRESS, or two series such as metric:cpu_usage_percent probes:latency_ms"))
        }
    };
    finish("correlate", sql.and_then(|sql| args.target.execute(&sql)).and_then(|r| args.target.print(&r)))
}

/// Runs `lake top`.
pub(super) fn top(args: TopArgs) -> ExitCode {
    let sql = match args.table.columns().find(|c| c.name == args.by) {
        Some(c) if !matches!(c.ty, ColumnType::TextMap | ColumnType::TextList) => Ok(format!(
            "SELECT \"{by}\", count(*) AS count FROM {table} WHERE {since} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {limit}",
            by = c.name,
            table = args.table,
            since = since_filter(args.since),
            limit = args.limit
        )),
        Some(_) => Err(anyhow::anyhow!("column {:?} of {} cannot be grouped by", args.by, args.table)),
        None => {
            let names: Vec<&str> = args.table.columns().map(|c| c.name).collect();
            Err(anyhow::anyhow!("table {} has no column {:?} (it has: {})", args.table, args.by, names.join(", ")))
        }
    };
    finish("top", sql.and_then(|sql| args.target.execute(&sql)).and_then(|r| args.target.print(&r)))
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
}
