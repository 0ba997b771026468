//! `lake query`: SQL against a running lake (`--url`, the default) or straight against a
//! data directory (`--data-dir`, no server needed; rows still buffered in a running
//! lake's memory are not visible that way).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use lake_query::correlate::TableColumns;
use lake_query::engine::{Engine, Limits, NoFreshRows, QueryResult};
use lake_query::output::{self, Format};

use super::remote::{self, Remote};

/// Arguments of `lake query`.
#[derive(Debug, Args)]
pub(super) struct QueryArgs {
    /// The SQL to run, e.g. "select name, count(*) from metrics group by 1".
    #[arg(required_unless_present = "named")]
    sql: Option<String>,
    /// Run a named query instead (the defaults, e.g. http_5xx_ratio, disk_usage_per_mount,
    /// or `[[queries]]` of lake.toml).
    #[arg(long, conflicts_with = "sql")]
    named: Option<String>,
    /// Time span a named query covers, e.g. 30m, 6h, 7d.
    #[arg(long, default_value = "24h")]
    since: String,
    #[command(flatten)]
    pub(super) target: Target,
}

/// Where a command's SQL runs and how its result is printed (shared by `query`,
/// `correlate`, `top` and `anomalies`).
#[derive(Debug, Args)]
pub(super) struct Target {
    /// Output: table (aligned, for people), json, csv, or arrow (IPC stream).
    #[arg(long, short, default_value = "table", value_parser = parse_format)]
    pub(super) format: Format,
    #[command(flatten)]
    remote: Remote,
    /// Query a data directory directly instead of a running lake.
    #[arg(long, conflicts_with = "url")]
    data_dir: Option<PathBuf>,
    /// Most rows to return.
    #[arg(long, default_value_t = 100_000)]
    max_rows: usize,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse().map_err(|_| format!("unknown format {s:?}: use table, json, csv or arrow"))
}

/// Runs the command; the exit code follows the CLI conventions.
pub(super) fn run(args: QueryArgs) -> ExitCode {
    let result = match (&args.named, &args.sql) {
        (Some(name), _) => args.target.execute_named(name, &args.since),
        (None, Some(sql)) => args.target.execute(sql),
        (None, None) => Err(anyhow::anyhow!("give SQL or --named NAME")),
    };
    finish("query", result.and_then(|r| args.target.print(&r)))
}

/// The exit code of a command's outcome: a closed stdout is success, an error is 2.
pub(super) fn finish(command: &str, outcome: anyhow::Result<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lake {command}: {e:#}");
            ExitCode::from(2)
        }
    }
}

impl Target {
    /// Runs `sql` on the lake or data directory.
    pub(super) fn execute(&self, sql: &str) -> anyhow::Result<QueryResult> {
        match &self.data_dir {
            Some(dir) => local(dir, sql, self),
            None => remote_query(sql, self),
        }
    }

    /// Runs a named query over the last `since`.
    pub(super) fn execute_named(&self, name: &str, since: &str) -> anyhow::Result<QueryResult> {
        match &self.data_dir {
            Some(dir) => {
                // Without a lake, only the built-in named queries are known.
                let q = lake_query::named::defaults().into_iter().find(|q| q.name == name).with_context(|| {
                    format!("unknown named query {name:?} (with --data-dir only the defaults are known)")
                })?;
                let span = lake_query::grafana::macros::parse_duration_ms(since)
                    .with_context(|| format!("--since {since:?}: use e.g. 30m, 6h, 7d"))?;
                let now_ms = lake_format::rows::now_micros() / 1000;
                let ctx = lake_query::grafana::macros::MacroContext::last(now_ms, span as i64, 200);
                let e = lake_query::grafana::macros::expand(&q.sql, &ctx)?;
                let engine = local_engine(dir, self)?;
                Ok(engine.query_params_blocking(&e.sql, e.params)?)
            }
            None => post(self, serde_json::json!({ "query": name, "since": since, "format": "arrow" })),
        }
    }

    /// The columns of table `name`: the catalog's; a custom table's from the data
    /// directory's schemas, or from the remote lake (the columns of a query reading no row).
    pub(super) fn table_columns(&self, name: &str) -> anyhow::Result<TableColumns> {
        let t = TableColumns::parse(name)?;
        if t.columns.is_some() {
            return Ok(t);
        }
        match &self.data_dir {
            Some(dir) => Ok(local_engine(dir, self)?.table_columns(name)?),
            None => {
                let r =
                    remote_query(&t.probe_sql(), self).with_context(|| format!("learning the columns of {name}"))?;
                Ok(TableColumns::from_schema(name, &r.schema))
            }
        }
    }

    /// `lake tables`: the lake's `/v1/tables`, or the data directory's tables.
    pub(super) fn tables(&self) -> anyhow::Result<QueryResult> {
        match &self.data_dir {
            Some(dir) => Ok(local_engine(dir, self)?.describe_tables_blocking()?),
            None => fetch(self, reqwest::Method::GET, "/v1/tables?format=arrow", None),
        }
    }

    /// Prints a result in the chosen format.
    pub(super) fn print(&self, r: &QueryResult) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        output::write(self.format, r, &mut out).and_then(|()| out.flush()).map_err(anyhow::Error::from)
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

fn local_engine(dir: &std::path::Path, args: &Target) -> anyhow::Result<Engine> {
    if !dir.join(lake_format::layout::TABLES_DIR).is_dir() {
        bail!("{} is not a lake data directory (no tables/ inside)", dir.display());
    }
    let limits = Limits { max_rows: args.max_rows, ..Limits::default() };
    Ok(Engine::open(dir, Arc::new(NoFreshRows), limits)?)
}

fn local(dir: &std::path::Path, sql: &str, args: &Target) -> anyhow::Result<QueryResult> {
    Ok(local_engine(dir, args)?.query_blocking(sql)?)
}

fn remote_query(sql: &str, args: &Target) -> anyhow::Result<QueryResult> {
    post(args, serde_json::json!({ "sql": sql, "format": "arrow" }))
}

/// Sends a request to the lake's SQL API and decodes the Arrow answer.
fn post(args: &Target, body: serde_json::Value) -> anyhow::Result<QueryResult> {
    fetch(args, reqwest::Method::POST, "/v1/sql", Some(body))
}

/// A request to the lake answered with Arrow IPC (or a JSON error).
fn fetch(
    args: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<QueryResult> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut req = args.remote.request(&reqwest::Client::new(), method, path);
        if let Some(body) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot reach the lake at {} (is `lake serve` running? use --url or --data-dir)", args.remote.url)
        })?;
        let status = resp.status();
        let truncated = resp.headers().get("lake-truncated").is_some_and(|v| v == "true");
        let bytes = resp.bytes().await.context("reading the answer")?;
        remote::check(status, &bytes)?;
        let (schema, batches) = lake_format::wire::decode(&bytes)?;
        Ok(QueryResult { schema, batches, truncated })
    })
}
