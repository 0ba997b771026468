//! The tools of `/mcp`: their names, JSON Schemas and descriptions ([`list`]), and what a
//! call does ([`call`]). Each runs through the same engine path as `/v1/sql` (its sandbox,
//! row and time limits, its messages), and answers a compact text table, the lake's
//! terminal format ([`lake_query::output`]), cut at `[mcp] max_rows` with a note saying so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Mcp;
use crate::http::error::ApiError;
use crate::http::sql::expand_named;
use lake_format::Table;
use lake_query::correlate::{correlate_sql, ip_sql, top_sql};
use lake_query::engine::EVENTS_VIEW;
use lake_query::grafana::macros::parse_duration_ms;
use lake_query::output::{self, Format};
use lake_query::{EngineError, QueryResult};

/// Every tool, in the order `tools/list` gives them.
pub(super) const NAMES: [&str; 7] =
    ["list_tables", "describe_table", "run_sql", "named_query", "correlate", "top", "anomalies"];

/// What `initialize` tells the model about the server.
pub(super) const INSTRUCTIONS: &str = "Telemetry of a small fleet of servers in a DuckDB SQL lake: metrics, logs, HTTP access logs, firewall, fail2ban, probes, alerts, packages, listeners, systemd units, hosts, containers, and custom tables. Start with list_tables and describe_table, then run_sql (DuckDB SQL, read-only; filter on ts, e.g. ts >= now() - INTERVAL '1 hour'). named_query runs the operator's saved queries; correlate and top answer common cross-source questions; anomalies lists what moved unusually without a question. Results are text tables cut at a row limit; aggregate rather than page through rows.";

/// Most lags `correlate` tries each way: a wider search only ever hits the time limit.
const MAX_LAG: u32 = 10_000;
/// Most values `top` lists.
const MAX_TOP: u32 = 10_000;

/// A finished call: the text for the model and the rows behind it (for the log).
#[derive(Debug)]
pub(super) struct Done {
    pub(super) text: String,
    pub(super) rows: usize,
}

/// The `max_rows` argument every querying tool takes.
fn max_rows_schema(limit: usize) -> Value {
    json!({
        "type": "integer", "minimum": 1, "maximum": limit,
        "description": format!("Rows to show at most (default and most: {limit}). Rows beyond are left out with a note.")
    })
}

/// The `tools/list` answer; `named_query`'s description lists `queries`.
pub(super) fn list(queries: &[lake_query::named::NamedQuery], max_rows: usize) -> Vec<Value> {
    let read_only =
        json!({"readOnlyHint": true, "destructiveHint": false, "idempotentHint": true, "openWorldHint": false});
    let tool = |name: &str, title: &str, description: String, schema: Value| json!({"name": name, "title": title, "description": description, "inputSchema": schema, "annotations": read_only});
    let tables: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    let named: Vec<String> = queries
        .iter()
        .map(|q| {
            let vars: Vec<&str> = q.vars.keys().map(String::as_str).collect();
            let vars = if vars.is_empty() { String::new() } else { format!(" (vars: {})", vars.join(", ")) };
            format!("- {} [{}]: {}{vars}", q.name, q.kind, q.description)
        })
        .collect();
    let names: Vec<&str> = queries.iter().map(|q| q.name.as_str()).collect();
    vec![
        tool(
            "list_tables",
            "List tables",
            "Lists every table of the lake (catalog and custom) with its row count and time span, what each catalog table holds, and the views. Call first.".into(),
            json!({"type": "object", "properties": {}, "additionalProperties": false}),
        ),
        tool(
            "describe_table",
            "Describe a table",
            format!("The columns of a table or view with their SQL types and, for the catalog tables ({}), what each column means.", tables.join(", ")),
            json!({
                "type": "object",
                "properties": {"table": {"type": "string", "description": "Table or view name, e.g. http, metrics, events, or a custom table."}},
                "required": ["table"], "additionalProperties": false
            }),
        ),
        tool(
            "run_sql",
            "Run SQL",
            "Runs one read-only DuckDB SQL statement over the lake's tables (SELECT, WITH, DESCRIBE, SHOW; no writes, COPY, ATTACH, INSTALL or file reads) under the lake's row and time limits, exactly as the lake's /v1/sql API. Every table has ts (TIMESTAMPTZ) and host; filter on ts, e.g. WHERE ts >= now() - INTERVAL '1 hour'. Maps (labels, attrs) are read as labels['key']. Answers a text table.".into(),
            json!({
                "type": "object",
                "properties": {
                    "sql": {"type": "string", "description": "One SQL statement."},
                    "max_rows": max_rows_schema(max_rows)
                },
                "required": ["sql"], "additionalProperties": false
            }),
        ),
        tool(
            "named_query",
            "Run a named query",
            format!("Runs one of the operator's named queries over a time range (default the last 24h). Template variables are given in vars; a variable left out takes the query's default. Known queries:\n{}", named.join("\n")),
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": names, "description": "The query's name."},
                    "since": {"type": "string", "description": "How far back, e.g. 30m, 6h, 7d (default 24h)."},
                    "from": {"type": "integer", "description": "Start of the range, Unix epoch milliseconds (instead of since)."},
                    "to": {"type": "integer", "description": "End of the range, Unix epoch milliseconds (default now)."},
                    "vars": {
                        "type": "object",
                        "description": "Template variables: a string is one value, a list several.",
                        "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
                    },
                    "max_rows": max_rows_schema(max_rows)
                },
                "required": ["name"], "additionalProperties": false
            }),
        ),
        tool(
            "correlate",
            "Correlate",
            "Either everything one IP address did (http requests, firewall packets, fail2ban events, in time order; give ip), or the Pearson correlation of two series over time buckets, trying lags either way to see which one leads (give a and b: metric:<name> or <table>:<numeric column>, e.g. metric:cpu_usage_percent and probes:latency_ms).".into(),
            json!({
                "type": "object",
                "properties": {
                    "ip": {"type": "string", "description": "An IPv4 or IPv6 address."},
                    "a": {"type": "string", "description": "First series: metric:<name> or <table>:<numeric column>."},
                    "b": {"type": "string", "description": "Second series, as a."},
                    "host": {"type": "string", "description": "Only this host, for the series."},
                    "bucket": {"type": "string", "description": "Bucket width of the series, e.g. 1m, 5m, 1h (default 1m)."},
                    "max_lag": {"type": "integer", "minimum": 0, "maximum": MAX_LAG, "description": "Lags tried, in buckets, each way (default 10)."},
                    "since": {"type": "string", "description": "How far back, e.g. 1h, 24h, 7d (default 24h)."},
                    "max_rows": max_rows_schema(max_rows)
                },
                "additionalProperties": false
            }),
        ),
        tool(
            "top",
            "Top values",
            "The most frequent values of a column of a catalog or custom table over a recent window, with their counts: e.g. table http by remote_ip, path or status; firewall by src; bans by jail.".into(),
            json!({
                "type": "object",
                "properties": {
                    "table": {"type": "string", "description": format!("A catalog table ({}) or a custom table (list_tables).", tables.join(", "))},
                    "by": {"type": "string", "description": "The column to group by."},
                    "since": {"type": "string", "description": "How far back, e.g. 15m, 1h, 7d (default 1h)."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_TOP, "description": "How many values (default 10)."}
                },
                "required": ["table", "by"], "additionalProperties": false
            }),
        ),
        tool(
            "anomalies",
            "Anomalies",
            "The series whose recent whole hours are furthest from the same hours of the week in earlier weeks (robust z-score on their median and MAD), strongest first, as lake anomalies: by default every metric series, http requests per vhost and status class, log lines per host, unit and priority; or the rows of a table (catalog or custom) per value of `by` columns; or one metric's series.".into(),
            json!({
                "type": "object",
                "properties": {
                    "since": {"type": "string", "description": "The recent window, whole hours, 1h to 7d (default 24h)."},
                    "table": {"type": "string", "description": "Count rows of this table instead of the default series."},
                    "by": {"type": "array", "items": {"type": "string"}, "maxItems": lake_query::anomaly::MAX_BY, "description": "With table: one series per value of these columns."},
                    "metric": {"type": "string", "description": "Only the series of this metric name."},
                    "weeks": {"type": "integer", "minimum": 1, "maximum": lake_query::anomaly::MAX_WEEKS, "description": "Earlier weeks compared with (default 4)."},
                    "min_z": {"type": "number", "minimum": 0, "description": "The smallest |z| listed (default 3)."},
                    "direction": {"type": "string", "enum": ["both", "up", "down"], "description": "Deviations listed (default both)."},
                    "max_rows": max_rows_schema(max_rows)
                },
                "additionalProperties": false
            }),
        ),
    ]
}

/// Parses a call's arguments (absent: none), naming the tool in the error.
fn args<T: DeserializeOwned>(tool: &str, args: Value) -> Result<T, String> {
    let args = if args.is_null() { json!({}) } else { args };
    serde_json::from_value(args).map_err(|e| format!("invalid arguments for {tool}: {e}"))
}

fn duration(what: &str, text: Option<&str>, default: &str) -> Result<Duration, String> {
    let text = text.unwrap_or(default);
    humantime::parse_duration(text).map_err(|e| format!("{what} {text:?}: {e} (use e.g. 30m, 6h, 7d)"))
}

/// What a failed query tells the model: `/v1/sql`'s message for the same failure.
fn engine_error(e: EngineError) -> String {
    let api = ApiError::from(e);
    if api.status().is_server_error() {
        tracing::error!(target: "lake::mcp", error = %api.message(), "MCP query failed");
    }
    api.client_message().to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DescribeArgs {
    table: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlArgs {
    sql: String,
    max_rows: Option<usize>,
}

/// A variable's values: a string is one.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedArgs {
    name: String,
    since: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    #[serde(default)]
    vars: BTreeMap<String, OneOrMany>,
    max_rows: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrelateArgs {
    ip: Option<String>,
    a: Option<String>,
    b: Option<String>,
    host: Option<String>,
    bucket: Option<String>,
    max_lag: Option<u32>,
    since: Option<String>,
    max_rows: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopArgs {
    table: String,
    by: String,
    since: Option<String>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnomaliesArgs {
    since: Option<String>,
    table: Option<String>,
    by: Option<Vec<String>>,
    metric: Option<String>,
    weeks: Option<u32>,
    min_z: Option<f64>,
    direction: Option<lake_query::anomaly::Direction>,
    max_rows: Option<usize>,
}

/// The SQL of the `anomalies` tool, as `lake anomalies` builds it.
fn anomalies_sql(mcp: &Mcp, a: AnomaliesArgs, show: usize) -> Result<String, String> {
    use lake_query::anomaly::{self, Params, Series};
    let series = match (&a.table, &a.metric, &a.by) {
        (Some(_), Some(_), _) => return Err("give table (with by) or metric, not both".into()),
        (None, _, Some(_)) => return Err("by needs table".into()),
        (Some(t), None, by) => {
            let table = mcp.engine.table_columns(t).map_err(|e| e.to_string())?;
            Series::counts(&table, by.as_deref().unwrap_or(&[])).map_err(|e| e.to_string())?
        }
        (None, Some(m), None) => Series::metric(m).map_err(|e| e.to_string())?,
        (None, None, None) => Series::Default,
    };
    let params = Params {
        series,
        weeks: a.weeks.unwrap_or(anomaly::DEFAULT_WEEKS),
        min_z: a.min_z.unwrap_or(anomaly::DEFAULT_MIN_Z),
        direction: a.direction.unwrap_or_default(),
        limit: u32::try_from(show).unwrap_or(u32::MAX),
    };
    params.check().map_err(|e| e.to_string())?;
    let since = duration("since", a.since.as_deref(), "24h")?;
    let (from, to) = anomaly::last_hours(since.as_secs().div_ceil(3600)).map_err(|e| e.to_string())?;
    Ok(anomaly::anomalies_sql(&params, &from, &to))
}

/// Runs tool `name` (one of [`NAMES`]) with `a`; `Err` is the message of an `isError` result.
pub(super) async fn call(mcp: &Arc<Mcp>, name: &str, a: Value) -> Result<Done, String> {
    let limit = mcp.config.max_rows;
    let shown = |asked: Option<usize>| -> Result<usize, String> {
        match asked {
            Some(0) => Err("max_rows must be at least 1".into()),
            Some(n) => Ok(n.min(limit)),
            None => Ok(limit),
        }
    };
    match name {
        "list_tables" => {
            let NoArgs {} = args(name, a)?;
            list_tables(mcp).await
        }
        "describe_table" => {
            let DescribeArgs { table } = args(name, a)?;
            describe_table(mcp, &table).await
        }
        "run_sql" => {
            let SqlArgs { sql, max_rows } = args(name, a)?;
            let show = shown(max_rows)?;
            if sql.trim().is_empty() {
                return Err("empty SQL".into());
            }
            run(mcp, sql, Vec::new(), show).await
        }
        "named_query" => {
            let NamedArgs { name: query, since, from, to, vars, max_rows } = args(name, a)?;
            let show = shown(max_rows)?;
            let since_ms = match since.as_deref() {
                Some(s) => parse_duration_ms(s).ok_or_else(|| format!("since {s:?}: use e.g. 30m, 6h, 7d"))?,
                None => 24 * 3_600_000,
            };
            let vars = vars
                .into_iter()
                .map(|(k, v)| match v {
                    OneOrMany::One(s) => (k, vec![s]),
                    OneOrMany::Many(list) => (k, list),
                })
                .collect();
            let (sql, params) = expand_named(&mcp.queries, &query, from, to, since_ms, vars)
                .map_err(|e| e.client_message().to_string())?;
            run(mcp, sql, params, show).await
        }
        "correlate" => {
            let c: CorrelateArgs = args(name, a)?;
            let show = shown(c.max_rows)?;
            let since = duration("since", c.since.as_deref(), "24h")?;
            let sql = match (&c.ip, &c.a, &c.b) {
                (Some(ip), None, None) => {
                    let ip = ip.trim().parse().map_err(|_| format!("ip {ip:?} is not an IPv4 or IPv6 address"))?;
                    ip_sql(ip, since)
                }
                (None, Some(a), Some(b)) => {
                    let bucket = duration("bucket", c.bucket.as_deref(), "1m")?;
                    let max_lag = c.max_lag.unwrap_or(10);
                    if max_lag > MAX_LAG {
                        return Err(format!("max_lag {max_lag} is more than {MAX_LAG} buckets"));
                    }
                    let resolve = |t: &str| mcp.engine.table_columns(t);
                    correlate_sql(a, b, c.host.as_deref(), bucket, max_lag, since, &resolve)
                        .map_err(|e| e.to_string())?
                }
                _ => {
                    return Err(
                        "give ip, or two series a and b such as metric:cpu_usage_percent and probes:latency_ms".into()
                    )
                }
            };
            run(mcp, sql, Vec::new(), show).await
        }
        "top" => {
            let TopArgs { table, by, since, limit: n } = args(name, a)?;
            let table = mcp.engine.table_columns(&table).map_err(|e| e.to_string())?;
            let since = duration("since", since.as_deref(), "1h")?;
            let n = n.unwrap_or(10);
            if !(1..=MAX_TOP).contains(&n) {
                return Err(format!("limit {n} must be between 1 and {MAX_TOP}"));
            }
            let sql = top_sql(&table, &by, since, n).map_err(|e| e.to_string())?;
            run(mcp, sql, Vec::new(), limit).await
        }
        "anomalies" => {
            let a: AnomaliesArgs = args(name, a)?;
            let show = shown(a.max_rows)?;
            let sql = anomalies_sql(mcp, a, show)?;
            run(mcp, sql, Vec::new(), show).await
        }
        other => Err(format!("unknown tool {other:?}")),
    }
}

/// Runs SQL as `/v1/sql` does and renders at most `show` rows.
async fn run(mcp: &Arc<Mcp>, sql: String, params: Vec<lake_query::ParamValue>, show: usize) -> Result<Done, String> {
    let result = mcp.engine.query_params(sql, params).await.map_err(engine_error)?;
    Ok(render(&result, show, mcp.engine.limits().max_rows))
}

/// `result` as a text table of at most `show` rows, with notes on what was left out.
fn render(result: &QueryResult, show: usize, engine_max_rows: usize) -> Done {
    let total = result.num_rows();
    let mut batches = Vec::new();
    let mut left = show;
    for b in &result.batches {
        if left == 0 {
            break;
        }
        let take = b.num_rows().min(left);
        batches.push(b.slice(0, take));
        left -= take;
    }
    let shown = QueryResult { schema: std::sync::Arc::clone(&result.schema), batches, truncated: false };
    let mut out = Vec::new();
    if let Err(e) = output::write(Format::Table, &shown, &mut out) {
        // Writing to memory fails only on a value arrow cannot format: say so, keep the count.
        return Done { text: format!("the result ({total} rows) could not be rendered: {e}"), rows: total };
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if total > show {
        text.push_str(&format!(
            "(showing the first {show} of {total}{} rows: aggregate, filter or add LIMIT to see the rest)\n",
            if result.truncated { "+" } else { "" }
        ));
    }
    if result.truncated {
        text.push_str(&format!("(the query's result was cut at the lake's row limit of {engine_max_rows} rows)\n"));
    }
    Done { text, rows: total }
}

async fn list_tables(mcp: &Arc<Mcp>) -> Result<Done, String> {
    let engine = Arc::clone(&mcp.engine);
    let result = tokio::task::spawn_blocking(move || engine.describe_tables_blocking())
        .await
        .map_err(|e| engine_error(EngineError::Internal(format!("tables task failed: {e}"))))?
        .map_err(engine_error)?;
    // table, kind, rows, first_ts, last_ts: the columns are describe_table's job.
    let mut projected = Vec::new();
    for b in &result.batches {
        projected.push(b.project(&[0, 1, 3, 5, 6]).map_err(|e| engine_error(EngineError::Internal(e.to_string())))?);
    }
    let schema = match projected.first() {
        Some(b) => b.schema(),
        None => Arc::new(
            result.schema.project(&[0, 1, 3, 5, 6]).map_err(|e| engine_error(EngineError::Internal(e.to_string())))?,
        ),
    };
    let tables = QueryResult { schema, batches: projected, truncated: false };
    let mut done = render(&tables, usize::MAX, usize::MAX);
    done.text.push_str("\nCatalog tables:\n");
    for t in Table::ALL {
        done.text.push_str(&format!("- {}: {}\n", t.name(), t.doc()));
    }
    done.text.push_str(&format!(
        "\nViews:\n- {EVENTS_VIEW}: one row per event of any kind (http, firewall, bans, logs, probes, alerts, spans and every custom table) on ts, host, table, ip, summary\n\nColumns: describe_table.\n"
    ));
    Ok(done)
}

async fn describe_table(mcp: &Arc<Mcp>, name: &str) -> Result<Done, String> {
    if let Ok(t) = name.parse::<Table>() {
        let mut text = format!("{}: {}\n\n", t.name(), t.doc());
        for c in t.columns() {
            text.push_str(&format!("- {} {}: {}\n", c.name, output::sql_type_name(&c.ty.data_type()), c.doc));
        }
        return Ok(Done { text, rows: t.columns().count() });
    }
    // A view or a custom table: its columns as the engine sees them. The name is checked
    // first, so nothing but an identifier reaches the SQL.
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ok {
        return Err(format!(
            "table {name:?}: a table name is lower-case letters, digits and _ (list_tables lists them)"
        ));
    }
    let result = mcp
        .engine
        .query(format!("SELECT * FROM \"{name}\" LIMIT 0"))
        .await
        .map_err(|e| format!("table {name:?}: {} (list_tables lists the tables)", engine_error(e)))?;
    let kind = if name == EVENTS_VIEW { "view" } else { "custom table" };
    let mut text = format!("{name} ({kind})\n\n");
    for f in result.schema.fields() {
        text.push_str(&format!("- {} {}\n", f.name(), output::sql_type_name(f.data_type())));
    }
    Ok(Done { text, rows: result.schema.fields().len() })
}
