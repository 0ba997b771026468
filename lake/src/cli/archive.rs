//! `lake archive --now`, `lake archive status` and `lake restore`.
//!
//! Each first tries to take the data directory's lock ([`DataLock`]). Free: no lake runs
//! on it, so the command takes the lock and runs the job in-process (progress bar or
//! plain lines on stderr). Held by `lake serve`: the command asks the running lake's
//! admin API (`--url`, default the `listen` address of the config, with `--token` /
//! `LAKE_ADMIN_TOKEN` when `[admin] tokens` are set), and renders the NDJSON progress the
//! server streams the same way. The result goes to stdout: a summary (`--format table`)
//! or the report as JSON (`--format json`); status prints as a table, JSON or CSV.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use lake_query::engine::QueryResult;
use lake_query::output::{self, Format};

use crate::config::Config;
use crate::ingest::writer::Buffers;
use crate::lock::{DataLock, LockError};
use crate::maintenance::archive::restore::{RestoreReport, RestoreRequest};
use crate::maintenance::archive::{status, ArchiveReport, Maintenance, StatusRow};
use crate::maintenance::swap::Swapper;
use crate::progress::{human_bytes, replay, Event, Progress, TermProgress};

use super::remote::{bearer, success};

/// How to reach the lake (shared by the archive commands).
#[derive(Debug, Args)]
pub(super) struct Conn {
    /// Configuration file of the lake (data_dir, listen, [archive], [retention]).
    #[arg(long, short, env = "LAKE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Admin API of the running lake (default: http://<listen of the config>).
    #[arg(long, global = true)]
    url: Option<String>,
    /// Admin token, when the lake has [admin] tokens.
    #[arg(long, env = "LAKE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Output: table (for people), json or csv.
    #[arg(long, short, default_value = "table", value_parser = parse_format, global = true)]
    format: Format,
}

fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        _ => Err(format!("unknown format {s:?}: use table, json or csv")),
    }
}

/// Arguments of `lake archive`.
#[derive(Debug, Args)]
pub(super) struct ArchiveArgs {
    #[command(subcommand)]
    command: Option<ArchiveCommand>,
    /// Run the nightly job now: upload and verify every finished partition, then apply retention.
    #[arg(long)]
    now: bool,
    /// With --now: upload and verify only, no retention.
    #[arg(long, requires = "now")]
    no_retention: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Subcommand)]
enum ArchiveCommand {
    /// What is where, per table and partition: local files and bytes, archived bytes,
    /// verified, restored.
    Status {
        /// Only this table.
        #[arg(long)]
        table: Option<String>,
    },
}

/// Arguments of `lake compact`.
#[derive(Debug, Args)]
pub(super) struct CompactArgs {
    /// Only this table.
    #[arg(long)]
    table: Option<String>,
    /// Only partitions on or after this date (YYYY-MM-DD, UTC).
    #[arg(long)]
    from: Option<String>,
    /// Only partitions on or before this date.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `lake compact`: merge small files now, in-process or in the running lake.
pub(super) fn compact(args: CompactArgs) -> ExitCode {
    let outcome = (|| -> anyhow::Result<crate::maintenance::compact::PassReport> {
        let filter =
            crate::maintenance::compact::Filter::parse(args.table.as_deref(), args.from.as_deref(), args.to.as_deref())
                .map_err(|e| anyhow::anyhow!(e))?;
        match args.conn.mode()? {
            Mode::Local(_lock, config) => {
                let m = local_maintenance(&config)?;
                let progress = TermProgress::new("lake compact");
                Ok(runtime()?.block_on(async {
                    let _job = m.try_job("compact")?;
                    m.compact(filter, &progress).await
                })?)
            }
            Mode::Remote { url, token } => {
                let body = serde_json::json!({ "table": args.table, "from": args.from, "to": args.to });
                let v = remote_job(&format!("{url}/v1/admin/compact"), token.as_deref(), body, "lake compact")?;
                Ok(serde_json::from_value(v).context("the lake's compaction report")?)
            }
        }
    })();
    let printed = outcome.and_then(|r| {
        print_report(args.conn.format, &r, |out| {
            writeln!(
                out,
                "compacted {} small files into {} ({} -> {}, {} rows); {} merges failed",
                r.files_in,
                r.bins,
                human_bytes(r.bytes_in),
                human_bytes(r.bytes_out),
                r.rows,
                r.failures
            )
        })
    });
    super::query::finish("compact", printed)
}

/// Arguments of `lake restore`.
#[derive(Debug, Args)]
pub(super) struct RestoreArgs {
    /// Table to restore, e.g. http.
    #[arg(long)]
    table: String,
    /// First date (YYYY-MM-DD, UTC).
    #[arg(long)]
    from: String,
    /// Last date, inclusive (YYYY-MM-DD); default: the --from date.
    #[arg(long)]
    to: Option<String>,
    /// Days to keep the restored partitions before retention may remove them again
    /// (default: [retention] restored_keep_days, 7).
    #[arg(long)]
    keep_days: Option<u32>,
    #[command(flatten)]
    conn: Conn,
}

/// Where a command runs.
enum Mode {
    /// No lake runs: in-process, holding the lock.
    Local(DataLock, Box<Config>),
    /// Ask the running lake.
    Remote { url: String, token: Option<String> },
}

impl Conn {
    fn mode(&self) -> anyhow::Result<Mode> {
        let config = Config::load(self.config.as_deref())?;
        match DataLock::acquire(&config.data_dir) {
            Ok(lock) => Ok(Mode::Local(lock, Box::new(config))),
            Err(LockError::Held(_)) => {
                let url = match &self.url {
                    Some(u) => u.trim_end_matches('/').to_string(),
                    None => {
                        let mut addr = config.listen;
                        if addr.ip().is_unspecified() {
                            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                        }
                        format!("http://{addr}")
                    }
                };
                Ok(Mode::Remote { url, token: self.token.clone() })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Opens the job runner of an offline lake (the lock is held by the caller).
fn local_maintenance(config: &Config) -> anyhow::Result<Arc<Maintenance>> {
    let swapper = Swapper::open(&config.data_dir, Duration::ZERO).context("recovering interrupted swaps")?;
    let m = Maintenance::new(
        &config.data_dir,
        config.archive.clone(),
        config.retention.clone(),
        Arc::new(swapper),
        Arc::new(Buffers::default()),
    )?
    .with_compaction(config.compaction.clone());
    Ok(Arc::new(m))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `lake archive`.
pub(super) fn archive(args: ArchiveArgs) -> ExitCode {
    let outcome = match (&args.command, args.now) {
        (Some(ArchiveCommand::Status { table }), _) => status_cmd(&args.conn, table.as_deref()),
        (None, true) => archive_now(&args.conn, !args.no_retention),
        (None, false) => Err(anyhow::anyhow!("say what to do: `lake archive --now` runs the nightly archive now, `lake archive status` shows what is where")),
    };
    super::query::finish("archive", outcome.map(|_| ()))
}

fn archive_now(conn: &Conn, retention: bool) -> anyhow::Result<()> {
    let report: ArchiveReport = match conn.mode()? {
        Mode::Local(_lock, config) => {
            let m = local_maintenance(&config)?;
            let progress = TermProgress::new("lake archive");
            runtime()?.block_on(async {
                let cancel = CancellationToken::new();
                super::cancel_on_signals(cancel.clone());
                let _job = m.try_job("archive")?;
                if retention {
                    m.nightly(&progress, &cancel).await
                } else {
                    m.archive(&progress, &cancel).await
                }
            })?
        }
        Mode::Remote { url, token } => {
            let v = remote_job(
                &format!("{url}/v1/admin/archive"),
                token.as_deref(),
                serde_json::json!({ "retention": retention }),
                "lake archive",
            )?;
            serde_json::from_value(v).context("the lake's archive report")?
        }
    };
    print_report(conn.format, &report, |out| {
        writeln!(
            out,
            "archived {} files ({}) to {}; {} already verified; {} of {} finished partitions verified; {} small files compacted into {} first",
            report.files_uploaded,
            human_bytes(report.bytes_uploaded),
            report.store,
            report.files_already_verified,
            report.partitions_verified,
            report.partitions,
            report.files_compacted,
            report.files_compacted_into
        )?;
        if report.multipart_uploads > 0 || report.files_superseded > 0 || report.retries > 0 {
            writeln!(
                out,
                "  {} multipart uploads, {} superseded files deleted, {} retries",
                report.multipart_uploads, report.files_superseded, report.retries
            )?;
        }
        if let Some(r) = &report.retention {
            writeln!(
                out,
                "retention: {} local partitions deleted ({} files, {}); {} kept (not archived), {} kept (restored); {} archive partitions expired",
                r.partitions_evicted,
                r.files_evicted,
                human_bytes(r.bytes_freed),
                r.partitions_kept_not_archived,
                r.partitions_kept_restored,
                r.archive_partitions_expired
            )?;
        }
        Ok(())
    })
}

/// `lake restore`.
pub(super) fn restore(args: RestoreArgs) -> ExitCode {
    let req = RestoreRequest {
        table: args.table.clone(),
        from: args.from.clone(),
        to: args.to.clone().unwrap_or_else(|| args.from.clone()),
        keep_days: args.keep_days,
    };
    let outcome = (|| -> anyhow::Result<RestoreReport> {
        req.parse().map_err(|e| anyhow::anyhow!(e))?;
        match args.conn.mode()? {
            Mode::Local(_lock, config) => {
                let m = local_maintenance(&config)?;
                let progress = TermProgress::new("lake restore");
                Ok(runtime()?.block_on(async {
                    let cancel = CancellationToken::new();
                    super::cancel_on_signals(cancel.clone());
                    let _job = m.try_job("restore")?;
                    m.restore(&req, &progress, &cancel).await
                })?)
            }
            Mode::Remote { url, token } => {
                let v = remote_job(
                    &format!("{url}/v1/admin/restore"),
                    token.as_deref(),
                    serde_json::to_value(&req)?,
                    "lake restore",
                )?;
                Ok(serde_json::from_value(v).context("the lake's restore report")?)
            }
        }
    })();
    let report = match outcome {
        Ok(r) => r,
        Err(e) => return super::query::finish("restore", Err(e)),
    };
    let printed = print_report(args.conn.format, &report, |out| {
        writeln!(
            out,
            "restored {} files ({}) into {} partitions of {}; {} files were still local; kept through {}",
            report.files_restored,
            human_bytes(report.bytes_restored),
            report.partitions_restored,
            report.table,
            report.files_already_local,
            report.restored_until
        )?;
        if !report.dates_not_archived.is_empty() {
            writeln!(out, "not archived: {}", report.dates_not_archived.join(", "))?;
        }
        Ok(())
    });
    match printed {
        // Nothing of the range is archived: a negative answer.
        Ok(()) if report.partitions_archived == 0 => ExitCode::from(1),
        other => super::query::finish("restore", other),
    }
}

fn status_cmd(conn: &Conn, table: Option<&str>) -> anyhow::Result<()> {
    let table = table
        .map(lake_format::custom::TableRef::parse_known)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--table: {e}"))?;
    let rows: Vec<StatusRow> = match conn.mode()? {
        Mode::Local(_lock, config) => status::rows(&config.data_dir, &Buffers::default(), table)?,
        Mode::Remote { url, token } => {
            let mut u = format!("{url}/v1/admin/archive/status");
            if let Some(t) = table {
                u.push_str(&format!("?table={}", t.name()));
            }
            runtime()?.block_on(async {
                let resp = bearer(reqwest::Client::new().get(&u), token.as_deref())
                    .send()
                    .await
                    .with_context(|| unreachable(&url))?;
                let resp = success(resp).await?;
                let body = resp.bytes().await.context("reading the lake's status answer")?;
                serde_json::from_slice::<Vec<StatusRow>>(&body).context("the lake's status answer")
            })?
        }
    };
    let batch = status::to_batch(&rows);
    let result = QueryResult { schema: batch.schema(), batches: vec![batch], truncated: false };
    let mut out = std::io::stdout().lock();
    output::write(conn.format, &result, &mut out)?;
    out.flush()?;
    Ok(())
}

fn print_report<T: serde::Serialize>(
    format: Format,
    report: &T,
    human: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, report)?;
            writeln!(out)?;
        }
        _ => human(&mut out)?,
    }
    out.flush()?;
    Ok(())
}

fn unreachable(url: &str) -> String {
    format!("the data directory is locked by a running lake, but its admin API at {url} does not answer (use --url)")
}

/// Posts a job to the admin API and renders its NDJSON progress; returns the report.
fn remote_job(
    url: &str,
    token: Option<&str>,
    body: serde_json::Value,
    prefix: &str,
) -> anyhow::Result<serde_json::Value> {
    let progress = TermProgress::new(prefix);
    runtime()?.block_on(async {
        let base = url.rsplit_once("/v1/").map_or(url, |(b, _)| b);
        let req = reqwest::Client::new()
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let mut resp = success(bearer(req, token).send().await.with_context(|| unreachable(base))?).await?;
        let mut buf: Vec<u8> = Vec::new();
        let broken = "the lake's progress stream broke (did the lake stop?); run the command again to resume";
        while let Some(chunk) = resp.chunk().await.context(broken)? {
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let event: Event =
                    serde_json::from_slice(&line[..line.len() - 1]).context("a progress line from the lake")?;
                if let Some(end) = replay(event, &progress) {
                    progress.finish();
                    return end.map_err(|m| anyhow::anyhow!(m));
                }
            }
        }
        bail!("the lake closed the progress stream before the job ended (was it stopped?)")
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn parses_the_commands() {
        let cli = crate::cli::Cli::try_parse_from(["lake", "archive", "--now", "--config", "x.toml"]).unwrap();
        assert!(format!("{cli:?}").contains("now: true"));
        crate::cli::Cli::try_parse_from(["lake", "archive", "status", "--table", "http", "--format", "json"]).unwrap();
        crate::cli::Cli::try_parse_from([
            "lake",
            "restore",
            "--table",
            "http",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-03",
        ])
        .unwrap();
        assert!(crate::cli::Cli::try_parse_from(["lake", "archive", "--no-retention"]).is_err());
        assert!(crate::cli::Cli::try_parse_from(["lake", "restore", "--from", "2026-11-01"]).is_err());
    }
}
