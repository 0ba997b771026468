//! Anomalies: series whose recent hours are far from the same hours of the week in earlier
//! weeks, found without a question. One SQL, built here, for every front end: `lake
//! anomalies`, the `anomalies` named query (SQL API, Grafana, web UI) and alert rules of
//! `kind = "anomaly"`.
//!
//! In: which series ([`Series`]), the window (two SQL time expressions: `now()` arithmetic
//! from the CLI, `$__timeFrom()`/`$__timeTo()` from a named query), how many earlier weeks
//! to compare with, the smallest |z| listed. Out: one row per series that deviates, its
//! strongest hour first: `source, series, hour, observed, expected, z, direction, hours,
//! weeks`.
//!
//! The computation, all in DuckDB:
//! - Series are **hourly**: a metric series (name, labels, host) is the hour's average (a
//!   counter — name ending `_total`, `_count` or `_sum` — its increase in the hour; a
//!   `delta` OTLP counter the hour's sum; histogram `_bucket` rows are left out); a count
//!   series is the rows of the hour per key: (vhost, status class) of `http`, (host,
//!   unit, priority) of `logs`, or the values of `by` columns of any table. A count series
//!   is 0 in an hour its table has rows but not its key, and unknown in an hour the table
//!   has none (the lake was not collecting it then, or its node was down).
//! - The window is whole hours: from the hour of `from` to the hour of `to` (the current,
//!   unfinished hour is left out), at most 7 days.
//! - Each window hour is compared with the same hour of the week in the `weeks` weeks
//!   before (seasonal by hour of week, UTC): expected = their median, robust z = (observed −
//!   median) / (1.4826 · MAD). The scale is guarded where the MAD is 0 (a flat history):
//!   1.2533 · the mean absolute deviation, and never below a floor — √max(median, 1) for
//!   counts (a Poisson count varies at least that much), 5 % of the larger of expected
//!   and observed for metrics (so a flat series that moves scores at most 20, not ∞). An
//!   hour needs at least two earlier weeks (one when `weeks` is 1).
//! - A series is listed once, at its hour of largest |z|, with the number of window hours
//!   at or beyond the threshold.
//!
//! Bounded cost: only the window and the same span `k` weeks earlier (k = 1..weeks) are
//! read (one range per week, which the scan prunes by `ts`), everything is grouped by the
//! hour at once, and a count source keeps its [`MAX_COUNT_SERIES`] busiest keys.
//!
//! Every name that reaches the SQL is checked ([`crate::correlate::TableColumns`],
//! [`crate::correlate::check_metric_name`]) and quoted.

use crate::correlate::{check_metric_name, ident, literal, QuestionError, TableColumns};

/// Earlier weeks compared with by default.
pub const DEFAULT_WEEKS: u32 = 4;
/// Most earlier weeks (each is one more range read).
pub const MAX_WEEKS: u32 = 12;
/// The smallest |z| listed by default.
pub const DEFAULT_MIN_Z: f64 = 3.0;
/// Keys kept per count source, busiest first: `--by` a column of many values (addresses)
/// must not make the hour grid unbounded.
pub const MAX_COUNT_SERIES: u32 = 1000;
/// Most columns of `by`.
pub const MAX_BY: usize = 4;
/// The longest window: a week (a longer one would overlap the weeks it is compared with).
pub const MAX_WINDOW_HOURS: u64 = 7 * 24;

/// Which series are compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Series {
    /// Every metric series, the (vhost, status class) counts of `http` and the (host, unit,
    /// priority) counts of `logs`.
    Default,
    /// Every series (host, labels) of one metric name.
    Metric(String),
    /// Rows per hour of a table per value of its `by` columns (none: the whole table).
    Counts {
        /// The table (built-in or custom).
        table: String,
        /// Quoted column identifiers, checked.
        by: Vec<String>,
        /// The column names, for the series text.
        names: Vec<String>,
    },
}

impl Series {
    /// The series of one metric name, checked.
    pub fn metric(name: &str) -> Result<Series, QuestionError> {
        check_metric_name(name)?;
        Ok(Series::Metric(name.to_string()))
    }

    /// Counts of `table` per value of the `by` columns (checked: groupable columns of the
    /// table, at most [`MAX_BY`]).
    pub fn counts(table: &TableColumns, by: &[String]) -> Result<Series, QuestionError> {
        if by.len() > MAX_BY {
            return Err(QuestionError(format!("by: at most {MAX_BY} columns, not {}", by.len())));
        }
        let mut quoted = Vec::new();
        for c in by {
            if c == "ts" {
                return Err(QuestionError("by: ts is the time; give columns whose values name a series".into()));
            }
            quoted.push(table.groupable(c)?);
        }
        Ok(Series::Counts { table: table.name.clone(), by: quoted, names: by.to_vec() })
    }
}

impl std::fmt::Display for Series {
    /// What the series are, for rule descriptions: `every default series`, `metric m`,
    /// `http by vhost`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Series::Default => {
                f.write_str("every metric, http by vhost and status class, logs by host, unit and priority")
            }
            Series::Metric(m) => write!(f, "metric {m}"),
            Series::Counts { table, names, .. } if names.is_empty() => write!(f, "{table} rows"),
            Series::Counts { table, names, .. } => write!(f, "{table} rows by {}", names.join(", ")),
        }
    }
}

/// Which deviations are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Above and below what is usual.
    #[default]
    Both,
    /// Above only (a storm, a burst).
    Up,
    /// Below only (traffic gone, a series fallen silent).
    Down,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "both" => Ok(Direction::Both),
            "up" => Ok(Direction::Up),
            "down" => Ok(Direction::Down),
            other => Err(format!("direction {other:?}: use up, down or both")),
        }
    }
}

/// What to compare and what to list.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The series.
    pub series: Series,
    /// Earlier weeks compared with, 1..=[`MAX_WEEKS`].
    pub weeks: u32,
    /// The smallest |z| listed.
    pub min_z: f64,
    /// Which deviations.
    pub direction: Direction,
    /// Most series listed.
    pub limit: u32,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            series: Series::Default,
            weeks: DEFAULT_WEEKS,
            min_z: DEFAULT_MIN_Z,
            direction: Direction::Both,
            limit: 20,
        }
    }
}

impl Params {
    /// Checks the numbers: weeks in 1..=12, min_z finite and not negative, limit at least 1.
    pub fn check(&self) -> Result<(), QuestionError> {
        if !(1..=MAX_WEEKS).contains(&self.weeks) {
            return Err(QuestionError(format!("weeks {} must be between 1 and {MAX_WEEKS}", self.weeks)));
        }
        if !self.min_z.is_finite() || self.min_z < 0.0 {
            return Err(QuestionError(format!("the z threshold {} must be a number of at least 0", self.min_z)));
        }
        if self.limit == 0 {
            return Err(QuestionError("limit must be at least 1".into()));
        }
        Ok(())
    }
}

/// The window of the last `hours` whole hours before now, as `(from, to)` SQL expressions
/// for [`anomalies_sql`].
pub fn last_hours(hours: u64) -> Result<(String, String), QuestionError> {
    if !(1..=MAX_WINDOW_HOURS).contains(&hours) {
        return Err(QuestionError(format!(
            "the window must be 1h to 7d, whole hours (it is compared with the same hours of earlier weeks), not {hours}h"
        )));
    }
    Ok((format!("(now() - INTERVAL '{hours} hours')"), "now()".to_string()))
}

/// The anomalies SQL over the window from `from` to `to` (TIMESTAMPTZ SQL expressions the
/// caller builds, never user text: `now()` arithmetic or `$__timeFrom()`/`$__timeTo()`).
/// `params` must have passed [`Params::check`].
pub fn anomalies_sql(params: &Params, from: &str, to: &str) -> String {
    let weeks = params.weeks.clamp(1, MAX_WEEKS);
    let w1 = format!("date_trunc('hour', {to})");
    let w0 = format!("greatest(date_trunc('hour', {from}), {w1} - INTERVAL 7 DAY)");
    // The window and the same span each earlier week: the only rows read.
    let ranges: Vec<String> = (0..=weeks)
        .map(|k| format!("(ts >= {w0} - INTERVAL {d} DAY AND ts < {w1} - INTERVAL {d} DAY)", d = 7 * k))
        .collect();
    let ranges = format!("({})", ranges.join(" OR "));
    let (metric_sql, count_sql) = sources(&params.series, &ranges);
    let min_weeks = weeks.min(2);
    let min_z = params.min_z;
    let direction = match params.direction {
        Direction::Both => String::new(),
        Direction::Up => " AND z > 0".into(),
        Direction::Down => " AND z < 0".into(),
    };
    let limit = params.limit;
    format!(
        "WITH
counted AS ({count_sql}),
covered AS (SELECT DISTINCT src, b FROM counted),
keyed AS (
    SELECT src, series FROM counted GROUP BY src, series
    QUALIFY row_number() OVER (PARTITION BY src ORDER BY sum(n) DESC, series) <= {MAX_COUNT_SERIES}
),
series AS (
    SELECT k.src, k.series, c.b, coalesce(r.n, 0)::DOUBLE AS v, true AS is_count
      FROM keyed k JOIN covered c ON c.src = k.src
      LEFT JOIN counted r ON r.src = k.src AND r.series = k.series AND r.b = c.b
    UNION ALL
    SELECT src, series, b, v, false FROM ({metric_sql})
),
recent AS (SELECT * FROM series WHERE b >= {w0} AND b < {w1}),
pairs AS (
    SELECT r.src, r.series, r.b, r.v AS observed, r.is_count, h.v AS past,
           median(h.v) OVER (PARTITION BY r.src, r.series, r.b) AS expected
      FROM recent r CROSS JOIN range(1, {weeks} + 1) w(k)
      JOIN series h ON h.src = r.src AND h.series = r.series AND h.b = r.b - w.k * INTERVAL 7 DAY
),
spread AS (
    SELECT src, series, b, any_value(observed) AS observed, any_value(expected) AS expected,
           any_value(is_count) AS is_count, count(*) AS weeks,
           median(abs(past - expected)) AS mad, avg(abs(past - expected)) AS mean_ad
      FROM pairs GROUP BY src, series, b HAVING count(*) >= {min_weeks}
),
scored AS (
    SELECT *, (observed - expected) / greatest(
               CASE WHEN mad > 0 THEN 1.4826 * mad ELSE 1.2533 * mean_ad END,
               CASE WHEN is_count THEN sqrt(greatest(expected, 1))
                    ELSE 0.05 * greatest(abs(expected), abs(observed)) END,
               1e-9) AS z
      FROM spread
),
strongest AS (
    SELECT *, count(*) FILTER (WHERE abs(z) >= {min_z}) OVER (PARTITION BY src, series) AS hours
      FROM scored
   QUALIFY row_number() OVER (PARTITION BY src, series ORDER BY abs(z) DESC, b DESC) = 1
)
SELECT src AS source, series, b AS hour, round(observed, 3) AS observed, round(expected, 3) AS expected,
       round(z, 2) AS z, CASE WHEN z > 0 THEN 'up' ELSE 'down' END AS direction, hours, weeks
  FROM strongest
 WHERE abs(z) >= {min_z}{direction}
 ORDER BY abs(z) DESC, source, series
 LIMIT {limit}"
    )
}

/// The metric series `(src, series, b, v)` and the count rows `(src, series, b, n)` of
/// `series`, each reading only `ranges`.
fn sources(series: &Series, ranges: &str) -> (String, String) {
    let no_metrics =
        "SELECT NULL::VARCHAR AS src, NULL::VARCHAR AS series, NULL::TIMESTAMPTZ AS b, NULL::DOUBLE AS v WHERE false";
    let no_counts =
        "SELECT NULL::VARCHAR AS src, NULL::VARCHAR AS series, NULL::TIMESTAMPTZ AS b, 0::BIGINT AS n WHERE false";
    match series {
        Series::Default => (metrics_sql(ranges, ""), format!("{} UNION ALL {}", http_sql(ranges), logs_sql(ranges))),
        Series::Metric(name) => (metrics_sql(ranges, &format!(" AND name = {}", literal(name))), no_counts.into()),
        Series::Counts { table, by, names } => (no_metrics.into(), counts_sql(table, by, names, ranges)),
    }
}

/// Hourly metric series: grouped on the raw columns first, named afterwards (building the
/// name for every sample would cost more than the grouping), and on a hash of the labels
/// rather than the map itself (half the time of hashing maps for the grouping; two label
/// sets of one name and host sharing a 64-bit hash are not a worry).
fn metrics_sql(ranges: &str, filter: &str) -> String {
    format!(
        "SELECT 'metrics' AS src,
        name || CASE WHEN cardinality(labels) > 0 THEN labels::VARCHAR ELSE '' END || ' @ ' || host AS series,
        b,
        CASE WHEN labels['otel_temporality'] = 'delta' THEN total
             WHEN suffix(name, '_total') OR suffix(name, '_count') OR suffix(name, '_sum') THEN greatest(hi - lo, 0)
             ELSE mean END AS v
   FROM (SELECT name, host, hash(labels) AS h, any_value(labels) AS labels, date_trunc('hour', ts) AS b,
                sum(value) AS total, max(value) AS hi, min(value) AS lo, avg(value) AS mean
           FROM metrics
          WHERE {ranges} AND NOT suffix(name, '_bucket'){filter}
          GROUP BY name, host, h, b)"
    )
}

fn http_sql(ranges: &str) -> String {
    format!(
        "SELECT 'http' AS src,
        'vhost=' || coalesce(vhost, '-') || ' status=' || coalesce(class::VARCHAR || 'xx', '-') AS series, b, n
   FROM (SELECT vhost, status // 100 AS class, date_trunc('hour', ts) AS b, count(*) AS n
           FROM http WHERE {ranges} GROUP BY 1, 2, 3)"
    )
}

/// Log lines per (host, unit, priority): a line without a unit counts under its syslog
/// identifier (the kernel's), one without a priority as info, as the log views do.
fn logs_sql(ranges: &str) -> String {
    format!(
        "SELECT 'logs' AS src,
        'host=' || host || ' unit=' || coalesce(unit, ident, '-') || ' priority='
            || ['emerg', 'alert', 'crit', 'err', 'warning', 'notice', 'info', 'debug'][least(greatest(coalesce(priority, 6), 0), 7) + 1] AS series,
        b, n
   FROM (SELECT host, unit, ident, priority, date_trunc('hour', ts) AS b, count(*) AS n
           FROM logs WHERE {ranges} GROUP BY ALL)"
    )
}

fn counts_sql(table: &str, by: &[String], names: &[String], ranges: &str) -> String {
    let series = if by.is_empty() {
        "'all'".to_string()
    } else {
        let parts: Vec<String> = by
            .iter()
            .zip(names)
            .map(|(q, n)| format!("{} || coalesce({q}::VARCHAR, '-')", literal(&format!("{n}="))))
            .collect();
        parts.join(" || ' ' || ")
    };
    let keys: String = by.iter().map(|q| format!("{q}, ")).collect();
    format!(
        "SELECT {src} AS src, {series} AS series, b, n
   FROM (SELECT {keys}date_trunc('hour', ts) AS b, count(*) AS n FROM {t} WHERE {ranges} GROUP BY ALL)",
        src = literal(table),
        t = ident(table),
    )
}

#[cfg(test)]
mod tests;
