//! `lake correlate` and `lake top`: the operator's cross-source questions without
//! hand-written joins.
//!
//! - `lake correlate --ip 203.0.113.7`: everything one address did (http requests,
//!   firewall packets, fail2ban events) in time order, from the `events` view.
//! - `lake correlate metric:cpu_usage_percent probes:latency_ms --host h --bucket 1m`:
//!   Pearson correlation of two series over time buckets, trying lags of up to
//!   `--max-lag` buckets either way (does one lead the other?).
//! - `lake top --table http --by remote_ip --since 1h`: the most frequent values.
//! - `lake anomalies --since 24h`: the series whose recent hours are far from the same
//!   hours of earlier weeks ([`lake_query::anomaly`]); `--table T --by COL` or `--metric
//!   NAME` for chosen series.
//!
//! Custom tables work like built-in ones: their columns come from the data directory's
//! schemas, or from the remote lake (a query reading no row).
//!
//! Every name that ends up in SQL is checked against the catalog or parsed (an IP
//! address, a metric name of safe characters), so the SQL built here cannot be steered
//! by its arguments; it then runs like `lake query` (remote lake or `--data-dir`).

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use lake_query::anomaly::{self, Direction, Params, Series};
use lake_query::correlate::{correlate_sql, ip_sql, top_sql, QuestionError};

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
    /// Table to count in, e.g. http, firewall, bans, or a custom table.
    #[arg(long)]
    table: String,
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

/// Arguments of `lake anomalies`.
#[derive(Debug, Args)]
pub(super) struct AnomaliesArgs {
    /// The recent window, whole hours up to 7d (the unfinished hour is left out), e.g. 6h, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    since: Duration,
    /// Count rows of this table (built-in or custom) instead of the default series
    /// (every metric, http by vhost and status class, logs by host, unit and priority).
    #[arg(long, conflicts_with = "metric")]
    table: Option<String>,
    /// With --table: one series per value of these columns (comma-separated, at most 4);
    /// without, the whole table is one series.
    #[arg(long, requires = "table", value_delimiter = ',')]
    by: Vec<String>,
    /// Only the series (every host and label set) of this metric.
    #[arg(long)]
    metric: Option<String>,
    /// Earlier weeks the window is compared with (same hours of the week), 1 to 12.
    #[arg(long, default_value_t = anomaly::DEFAULT_WEEKS)]
    weeks: u32,
    /// The smallest robust z-score listed.
    #[arg(long, default_value_t = anomaly::DEFAULT_MIN_Z)]
    min_z: f64,
    /// Deviations listed: up, down or both.
    #[arg(long, default_value = "both")]
    direction: Direction,
    /// How many series to list, strongest first.
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[command(flatten)]
    target: Target,
}

/// Runs `lake correlate`.
pub(super) fn correlate(args: CorrelateArgs) -> ExitCode {
    let resolve = |t: &str| args.target.table_columns(t).map_err(|e| QuestionError(format!("{e:#}")));
    let sql = match (&args.ip, args.series.as_slice()) {
        (Some(ip), []) => Ok(ip_sql(*ip, args.since)),
        (None, [a, b]) => correlate_sql(a, b, args.host.as_deref(), args.bucket, args.max_lag, args.since, &resolve)
            .map_err(anyhow::Error::from),
        _ => {
            Err(anyhow::anyhow!("give --ip ADDRESS, or two series such as metric:cpu_usage_percent probes:latency_ms"))
        }
    };
    finish("correlate", sql.and_then(|sql| args.target.execute(&sql)).and_then(|r| args.target.print(&r)))
}

/// Runs `lake top`.
pub(super) fn top(args: TopArgs) -> ExitCode {
    let sql = args
        .target
        .table_columns(&args.table)
        .and_then(|t| top_sql(&t, &args.by, args.since, args.limit).map_err(anyhow::Error::from));
    finish("top", sql.and_then(|sql| args.target.execute(&sql)).and_then(|r| args.target.print(&r)))
}

/// Runs `lake anomalies`.
pub(super) fn anomalies(args: AnomaliesArgs) -> ExitCode {
    finish(
        "anomalies",
        anomalies_sql(&args).and_then(|sql| args.target.execute(&sql)).and_then(|r| args.target.print(&r)),
    )
}

fn anomalies_sql(args: &AnomaliesArgs) -> anyhow::Result<String> {
    let series = match (&args.table, &args.metric) {
        (Some(table), _) => Series::counts(&args.target.table_columns(table)?, &args.by)?,
        (None, Some(metric)) => Series::metric(metric)?,
        (None, None) => Series::Default,
    };
    let params = Params { series, weeks: args.weeks, min_z: args.min_z, direction: args.direction, limit: args.limit };
    params.check()?;
    let (from, to) = anomaly::last_hours(args.since.as_secs().div_ceil(3600))?;
    Ok(anomaly::anomalies_sql(&params, &from, &to))
}
