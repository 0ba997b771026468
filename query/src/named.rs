//! Named queries: SQL an operator gives a name in `lake.toml` (`[[queries]]`) and then
//! uses from the CLI, the SQL API and Grafana (the name is the Grafana target).
//!
//! The SQL may use the Grafana macros of [`crate::grafana::macros`] (`$__timeFilter(ts)`,
//! `$__timeGroup(ts, $__interval)`, …), expanded with the request's time range, or with a
//! default range where there is no request. [`defaults`] ships the queries an operator
//! of a small fleet asks first; user queries are added to them and replace a default of
//! the same name ([`merge`]).
//!
//! The log views (`lake logs`, the web UI's Logs page, the Grafana `logs` dashboard) all
//! run [`LOGS`] and [`LOGS_HISTOGRAM`], so their filter is written once ([`LOGS_FILTER`]).
//! Their filters are template variables, bound as parameters, never pasted into the SQL;
//! a variable holding `''` means "any", which [`NamedQuery::vars`] gives by default.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a named query's result is meant to be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Panel {
    /// A time column, numeric value columns and optional label columns naming the series.
    TimeSeries,
    /// Rows as they are.
    Table,
}

impl fmt::Display for Panel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Panel::TimeSeries => "timeseries",
            Panel::Table => "table",
        })
    }
}

/// A query with a name, as configured under `[[queries]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedQuery {
    /// `[a-z0-9_]+`, unique: the Grafana target and the CLI argument.
    pub name: String,
    /// One line for pickers and `--help`.
    pub description: String,
    /// The SQL, macros allowed.
    pub sql: String,
    /// Time series or table.
    pub kind: Panel,
    /// Values of the template variables a request does not give (`[[queries]]` of
    /// lake.toml have none: their variables must all come with the request).
    pub vars: BTreeMap<String, Vec<String>>,
}

impl NamedQuery {
    /// Adds to `vars` the query's default for every variable `vars` does not give.
    pub fn fill_vars(&self, vars: &mut BTreeMap<String, Vec<String>>) {
        for (name, values) in &self.vars {
            vars.entry(name.clone()).or_insert_with(|| values.clone());
        }
    }
}

/// The named query of log lines: newest first, filtered as [`LOGS_FILTER`] says.
pub const LOGS: &str = "logs";
/// The named query counting [`LOGS`]'s lines per time bucket and priority class.
pub const LOGS_HISTOGRAM: &str = "logs_histogram";
/// The named query of [`crate::anomaly`]: the request's range against earlier weeks.
pub const ANOMALIES: &str = "anomalies";

/// The filter of the log views. Variables (each a list of values; `''` among them
/// means "any"): `host`; `unit` (a systemd unit may be named without `.service`, as
/// `journalctl -u` allows; `-` stands for lines without one; Docker logs carry the
/// compose service here); `source`;
/// `priority` (the syslog priorities shown, `'0'`..`'7'`; lines without one count as
/// 6, info); `grep` (one value: a case-insensitive substring of the message, not a
/// pattern: `%`, `_` and regex characters are literal); `before` (one value: only lines
/// at or before this RFC 3339 instant, for paging back).
pub const LOGS_FILTER: &str = r#"$__timeFilter(ts)
  AND ('' IN (${host:csv}) OR host IN (${host:csv}))
  AND ('' IN (${unit:csv}) OR coalesce(unit, '-') IN (${unit:csv})
       OR (ends_with(unit, '.service') AND left(unit, length(unit) - 8) IN (${unit:csv})))
  AND ('' IN (${source:csv}) OR source IN (${source:csv}))
  AND ('' IN (${priority:csv}) OR CAST(coalesce(priority, 6) AS VARCHAR) IN (${priority:csv}))
  AND ($grep = '' OR contains(lower(message), lower($grep)))
  AND ($before = '' OR ts <= TRY_CAST($before AS TIMESTAMPTZ))"#;

/// The values of [`LOGS_FILTER`]'s variables that filter nothing, and `limit` (the most
/// lines [`LOGS`] returns) at 1000.
pub fn logs_vars() -> BTreeMap<String, Vec<String>> {
    let any = ["host", "unit", "source", "priority", "grep", "before"];
    let mut vars: BTreeMap<String, Vec<String>> = any.iter().map(|k| (k.to_string(), vec![String::new()])).collect();
    vars.insert("limit".into(), vec!["1000".into()]);
    vars
}

/// Why a named query is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamedQueryError {
    /// The name is empty or has a character outside `[a-z0-9_]`.
    #[error("query name {0:?} must be non-empty and use only a-z, 0-9 and _")]
    BadName(String),
    /// Two user queries share a name.
    #[error("query name {0:?} is defined twice")]
    Duplicate(String),
    /// The SQL is blank.
    #[error("query {0:?} has no sql")]
    EmptySql(String),
}

/// Checks a name against `[a-z0-9_]+`.
pub fn validate_name(name: &str) -> Result<(), NamedQueryError> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NamedQueryError::BadName(name.to_string()))
    }
}

/// The defaults followed by `user`'s queries; a user query named like a default takes
/// its place (same position). `user` is validated: names well-formed and unique, SQL
/// not blank.
pub fn merge(user: Vec<NamedQuery>) -> Result<Vec<NamedQuery>, NamedQueryError> {
    let mut seen: Vec<&str> = Vec::new();
    for q in &user {
        validate_name(&q.name)?;
        if seen.contains(&q.name.as_str()) {
            return Err(NamedQueryError::Duplicate(q.name.clone()));
        }
        if q.sql.trim().is_empty() {
            return Err(NamedQueryError::EmptySql(q.name.clone()));
        }
        seen.push(&q.name);
    }
    let mut all = defaults();
    for q in user {
        match all.iter_mut().find(|d| d.name == q.name) {
            Some(slot) => *slot = q,
            None => all.push(q),
        }
    }
    Ok(all)
}

/// The queries shipped with the lake, written against the catalog.
///
/// Over a day of `http` (~1.7 M rows) they group on the raw columns and label the few
/// groups afterwards (`coalesce`, string building): an expression over every row before
/// the grouping costs more than the grouping itself (`traffic_by_class` 370 -> 170 ms).
pub fn defaults() -> Vec<NamedQuery> {
    let q = |name: &str, description: &str, kind: Panel, sql: &str| NamedQuery {
        name: name.to_string(),
        description: description.to_string(),
        sql: sql.trim().to_string(),
        kind,
        vars: BTreeMap::new(),
    };
    let logs = |name: &str, description: &str, kind: Panel, sql: String| NamedQuery {
        vars: logs_vars(),
        ..q(name, description, kind, &sql)
    };
    vec![
        q(
            "http_5xx_ratio",
            "share of HTTP responses with a 5xx status, per vhost",
            Panel::TimeSeries,
            r#"
SELECT time, coalesce(vhost, '-') AS vhost, ratio_5xx
FROM (
    SELECT $__timeGroup(ts, $__interval) AS time,
           vhost,
           count(*) FILTER (WHERE status >= 500) / count(*) AS ratio_5xx
    FROM http
    WHERE $__timeFilter(ts)
    GROUP BY 1, 2
)
ORDER BY 1, 2"#,
        ),
        q(
            "top_blocked_sources",
            "source addresses the firewall blocked most, with the ports they tried",
            Panel::Table,
            r#"
SELECT src,
       count(*) AS packets,
       count(DISTINCT dst_port) AS ports,
       string_agg(DISTINCT host, ',' ORDER BY host) AS hosts,
       min(ts) AS first_seen,
       max(ts) AS last_seen
FROM firewall
WHERE action = 'BLOCK' AND src IS NOT NULL AND $__timeFilter(ts)
GROUP BY src
ORDER BY packets DESC, src
LIMIT 50"#,
        ),
        q(
            "bans_per_jail",
            "fail2ban bans per jail",
            Panel::TimeSeries,
            r#"
SELECT $__timeGroup(ts, $__interval) AS time,
       coalesce(jail, '-') AS jail,
       count(*) AS bans
FROM bans
WHERE action = 'ban' AND $__timeFilter(ts)
GROUP BY 1, 2
ORDER BY 1, 2"#,
        ),
        q(
            "p95_latency_per_vhost",
            "95th percentile of HTTP request duration (ms), per vhost",
            Panel::TimeSeries,
            r#"
SELECT time, coalesce(vhost, '-') AS vhost, p95_ms
FROM (
    SELECT $__timeGroup(ts, $__interval) AS time,
           vhost,
           quantile_cont(duration_ms, 0.95) AS p95_ms
    FROM http
    WHERE duration_ms IS NOT NULL AND $__timeFilter(ts)
    GROUP BY 1, 2
)
ORDER BY 1, 2"#,
        ),
        // Long format (from, to, …): Grafana's "Grouping to matrix" transformation turns
        // it into the matrix; a SQL PIVOT would need its columns known in advance.
        q(
            "mesh_latency",
            "Tailscale latency between nodes (from host to peer): median, p95, failures, path",
            Panel::Table,
            r#"
SELECT host AS "from",
       target AS "to",
       round(median(latency_ms), 2) AS median_ms,
       round(quantile_cont(latency_ms, 0.95), 2) AS p95_ms,
       count(*) FILTER (WHERE NOT ok) AS failures,
       count(*) AS probes,
       arg_max(path, ts) AS last_path
FROM probes
WHERE kind = 'tailscale' AND $__timeFilter(ts)
GROUP BY 1, 2
ORDER BY 1, 2"#,
        ),
        // Each host's latest samples only: a `latest` pass reads just (name, host, ts), and
        // its times bound the second pass, which DuckDB then reads only around the end of
        // the range (row groups pruned by their ts statistics) instead of decoding every
        // sample's `labels` map: ~3x faster over a day of 5 hosts (330 -> 120 ms). A mount
        // missing from the host's last 10 minutes of samples (unmounted) is left out.
        q(
            "disk_usage_per_mount",
            "latest filesystem usage per host and mount point",
            Panel::Table,
            r#"
WITH latest AS (
    SELECT host, max(ts) AS ts
    FROM metrics
    WHERE name IN ('filesystem_used_bytes', 'filesystem_total_bytes', 'filesystem_used_ratio')
      AND $__timeFilter(ts)
    GROUP BY host
)
SELECT m.host,
       m.labels['mount'] AS mount,
       arg_max(m.value, m.ts) FILTER (WHERE m.name = 'filesystem_used_bytes') AS used_bytes,
       arg_max(m.value, m.ts) FILTER (WHERE m.name = 'filesystem_total_bytes') AS total_bytes,
       round(100 * arg_max(m.value, m.ts) FILTER (WHERE m.name = 'filesystem_used_ratio'), 1)
           AS used_percent
FROM metrics m
JOIN latest l ON m.host = l.host AND m.ts >= l.ts - INTERVAL 10 MINUTE
WHERE m.name IN ('filesystem_used_bytes', 'filesystem_total_bytes', 'filesystem_used_ratio')
  AND $__timeFilter(m.ts)
GROUP BY 1, 2
ORDER BY used_percent DESC NULLS LAST, 1, 2"#,
        ),
        q(
            "traffic_by_class",
            "requests per vhost and client class (human, search_bot, ai_crawler, monitor, scanner, other_bot)",
            Panel::Table,
            r#"
WITH g AS (
    SELECT vhost, client_class, client_name, count(*) AS n
    FROM http
    WHERE $__timeFilter(ts)
    GROUP BY ALL
)
SELECT coalesce(vhost, '-') AS vhost,
       coalesce(client_class, 'unknown') AS client_class,
       CAST(sum(n) AS BIGINT) AS requests,
       round(100 * sum(n) / sum(sum(n)) OVER (PARTITION BY coalesce(vhost, '-')), 1) AS percent,
       string_agg(DISTINCT client_name, ', ' ORDER BY client_name) FILTER (WHERE client_name IS NOT NULL) AS clients
FROM g
GROUP BY 1, 2
ORDER BY 1, requests DESC"#,
        ),
        // A trace id per row, so the operator can list the whole trace next
        // (`WHERE trace_id = '…' ORDER BY ts`).
        q(
            "slow_spans",
            "the 50 slowest OpenTelemetry spans (OTLP traces), with their service, status and trace id",
            Panel::Table,
            r#"
SELECT ts,
       round(duration_ns / 1e6, 3) AS duration_ms,
       coalesce(service, '-') AS service,
       name,
       kind,
       status_code,
       status_message,
       host,
       trace_id,
       span_id
FROM spans
WHERE duration_ns IS NOT NULL AND $__timeFilter(ts)
ORDER BY duration_ns DESC, ts, span_id
LIMIT 50"#,
        ),
        // `message` comes second and `level` is named as Grafana's logs panel wants them.
        // The columns after `ts` order rows of one instant the same way every time, so
        // a page that ends inside a group of equal timestamps continues exactly where
        // it stopped (`before` is inclusive; the reader skips what it already has).
        logs(
            LOGS,
            "log lines, newest first, with a Grafana level (variables host, unit, source, priority, grep, before, limit)",
            Panel::Table,
            format!(
                r#"
SELECT ts, message, host, source, unit, ident, pid, priority,
       ['critical', 'critical', 'critical', 'error', 'warning', 'info', 'info', 'debug'][coalesce(priority, 6) + 1] AS level,
       boot_id, attrs
FROM logs
WHERE {LOGS_FILTER}
ORDER BY ts DESC, host, source, unit, pid, priority, message
LIMIT CAST($limit AS BIGINT)"#
            ),
        ),
        logs(
            LOGS_HISTOGRAM,
            "log lines per time bucket by priority: error (0-3), warning (4), info (5-6, or none), debug (7)",
            Panel::TimeSeries,
            format!(
                r#"
SELECT $__timeGroup(ts, $__interval) AS time,
       count(*) FILTER (WHERE priority <= 3) AS error,
       count(*) FILTER (WHERE priority = 4) AS warning,
       count(*) FILTER (WHERE priority IS NULL OR priority IN (5, 6)) AS info,
       count(*) FILTER (WHERE priority >= 7) AS debug
FROM logs
WHERE {LOGS_FILTER}
GROUP BY 1
ORDER BY 1"#
            ),
        ),
        // The window is the request's range in whole hours (at most its last 7 days), each
        // hour against the same hour of the 4 weeks before.
        q(
            ANOMALIES,
            "series far from the same hours of earlier weeks (every metric, http by vhost and status class, logs by host, unit and priority), strongest first",
            Panel::Table,
            &crate::anomaly::anomalies_sql(
                &crate::anomaly::Params { limit: 50, ..Default::default() },
                "$__timeFrom()",
                "$__timeTo()",
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> NamedQuery {
        NamedQuery {
            name: name.to_string(),
            description: String::new(),
            sql: "select 1".to_string(),
            kind: Panel::Table,
            vars: BTreeMap::new(),
        }
    }

    #[test]
    fn defaults_have_valid_unique_names() {
        let d = defaults();
        assert_eq!(d.len(), 11);
        for q in &d {
            validate_name(&q.name).unwrap();
        }
        let mut names: Vec<_> = d.iter().map(|q| &q.name).collect();
        names.dedup();
        assert_eq!(names.len(), 11);
    }

    #[test]
    fn user_queries_add_to_or_replace_defaults() {
        let all = merge(vec![user("mine"), user("bans_per_jail")]).unwrap();
        assert_eq!(all.len(), 12);
        assert_eq!(all[2].name, "bans_per_jail");
        assert_eq!(all[2].sql, "select 1");
        assert_eq!(all[11].name, "mine");
    }

    #[test]
    fn bad_user_queries_are_refused() {
        assert_eq!(merge(vec![user("Bad-Name")]), Err(NamedQueryError::BadName("Bad-Name".into())));
        assert_eq!(merge(vec![user("a"), user("a")]), Err(NamedQueryError::Duplicate("a".into())));
        let mut blank = user("b");
        blank.sql = " ".into();
        assert_eq!(merge(vec![blank]), Err(NamedQueryError::EmptySql("b".into())));
        assert!(validate_name("").is_err());
    }
}
