//! `lake tables` (what tables exist, with columns, rows, bytes and time span) and
//! `lake ingest <table> <file>` (NDJSON, a JSON array, CSV or Parquet into a custom table
//! of a running lake, in batches with idempotent ids).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

use super::query::{finish, Target};
use super::remote;

/// Arguments of `lake tables`.
#[derive(Debug, Args)]
pub(super) struct TablesArgs {
    #[command(flatten)]
    target: Target,
}

/// Runs `lake tables`.
pub(super) fn tables(args: TablesArgs) -> ExitCode {
    finish("tables", args.target.tables().and_then(|r| args.target.print(&r)))
}

/// Arguments of `lake ingest`.
#[derive(Debug, Args)]
pub(super) struct IngestArgs {
    /// Custom table to add the rows to (created by the first batch).
    table: String,
    /// File: .ndjson/.jsonl (one object per line), .json (an array of objects), .csv
    /// (header row) or .parquet.
    file: PathBuf,
    /// How to read the file when its extension does not say.
    #[arg(long, value_parser = ["ndjson", "json", "csv", "parquet"])]
    input: Option<String>,
    /// URL of the running lake.
    #[arg(long, env = "LAKE_URL", default_value = "http://127.0.0.1:7470")]
    url: String,
    /// Node name the ingest token belongs to (batch ids carry it).
    #[arg(long, env = "LAKE_NODE")]
    node: String,
    /// That node's ingest token.
    #[arg(long, env = "LAKE_INGEST_TOKEN", hide_env_values = true)]
    token: String,
    /// Rows per request.
    #[arg(long, default_value_t = 10_000)]
    batch_rows: usize,
}

/// One request's body.
struct Chunk {
    body: Vec<u8>,
    rows: usize,
    first_row: usize,
}

fn kind_of(path: &Path, explicit: Option<&str>) -> anyhow::Result<&'static str> {
    if let Some(k) = explicit {
        return Ok(match k {
            "csv" => "csv",
            "parquet" => "parquet",
            "json" => "json",
            _ => "ndjson",
        });
    }
    Ok(match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("ndjson" | "jsonl") => "ndjson",
        Some("json") => "json",
        Some("csv") => "csv",
        Some("parquet") => "parquet",
        _ => bail!(
            "cannot tell the format of {} from its extension: use --input ndjson|json|csv|parquet",
            path.display()
        ),
    })
}

fn ndjson_chunks(lines: impl Iterator<Item = String>, per: usize) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut cur = Chunk { body: Vec::new(), rows: 0, first_row: 1 };
    let mut n = 0;
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        n += 1;
        cur.body.extend_from_slice(line.as_bytes());
        cur.body.push(b'\n');
        cur.rows += 1;
        if cur.rows == per {
            chunks.push(std::mem::replace(&mut cur, Chunk { body: Vec::new(), rows: 0, first_row: n + 1 }));
        }
    }
    if cur.rows > 0 {
        chunks.push(cur);
    }
    chunks
}

fn chunks(kind: &str, path: &Path, per: usize) -> anyhow::Result<Vec<Chunk>> {
    let read = || std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    Ok(match kind {
        "ndjson" => {
            let text = String::from_utf8(read()?).with_context(|| format!("{} is not UTF-8", path.display()))?;
            ndjson_chunks(text.lines().map(str::to_string), per)
        }
        "json" => {
            let items: Vec<serde_json::Value> = serde_json::from_slice(&read()?)
                .with_context(|| format!("{}: expected a JSON array of objects", path.display()))?;
            ndjson_chunks(items.into_iter().map(|v| v.to_string()), per)
        }
        "csv" => {
            let bytes = read()?;
            let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
            let header = reader.headers().context("CSV header")?.clone();
            let mut out = Vec::new();
            let mut writer = csv::Writer::from_writer(Vec::new());
            writer.write_record(&header)?;
            let (mut rows, mut first, mut n) = (0, 1, 0);
            for rec in reader.records() {
                let rec = rec.with_context(|| format!("{}: CSV", path.display()))?;
                writer.write_record(&rec)?;
                rows += 1;
                n += 1;
                if rows == per {
                    out.push(Chunk {
                        body: writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?,
                        rows,
                        first_row: first,
                    });
                    writer = csv::Writer::from_writer(Vec::new());
                    writer.write_record(&header)?;
                    rows = 0;
                    first = n + 1;
                }
            }
            if rows > 0 {
                out.push(Chunk {
                    body: writer.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?,
                    rows,
                    first_row: first,
                });
            }
            out
        }
        _ => {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .with_context(|| format!("{} is not a Parquet file", path.display()))?
                .with_batch_size(per)
                .build()?;
            let mut out = Vec::new();
            let mut first = 1;
            for batch in reader {
                let batch = batch?;
                let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
                w.write(&batch)?;
                w.finish()?;
                out.push(Chunk { body: w.into_inner(), rows: batch.num_rows(), first_row: first });
                first += batch.num_rows();
            }
            out
        }
    })
}

/// A batch-id epoch for one run of `lake ingest`: random, never 0.
fn run_epoch() -> u64 {
    rand::random::<u64>().max(1)
}

/// Runs `lake ingest`.
pub(super) fn ingest(args: IngestArgs) -> ExitCode {
    finish("ingest", run_ingest(&args))
}

fn run_ingest(args: &IngestArgs) -> anyhow::Result<()> {
    lake_format::custom::validate_table_name(&args.table)?;
    let kind = kind_of(&args.file, args.input.as_deref())?;
    let chunks = chunks(kind, &args.file, args.batch_rows.max(1))?;
    if chunks.is_empty() {
        bail!("{} holds no rows", args.file.display());
    }
    let endpoint = if kind == "csv" { "csv" } else { "json" };
    let url = format!("{}/v1/ingest/{endpoint}/{}", args.url.trim_end_matches('/'), args.table);
    // One epoch per run: a retry within the run keeps its id and is recognised; a second
    // run is new data and must never share an id with another run. A random 64-bit
    // epoch does that (the unix second did not: two runs in one second collided, and
    // the lake acknowledged the second one's rows as duplicates without storing them).
    let epoch = run_epoch();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let client = reqwest::Client::new();
    let mut total = 0;
    for (i, c) in chunks.iter().enumerate() {
        let id = format!("{}/{epoch}/{}", args.node, i + 1);
        let content_type = if kind == "csv" { "text/csv" } else { "application/x-ndjson" };
        let mut wait = Duration::from_millis(200);
        loop {
            let sent = rt.block_on(
                client
                    .post(&url)
                    .bearer_auth(&args.token)
                    .header(lake_format::wire::BATCH_HEADER, &id)
                    .header("content-type", content_type)
                    .body(c.body.clone())
                    .send(),
            );
            let resp = match sent {
                Ok(r) => r,
                Err(e) if wait < Duration::from_secs(30) => {
                    eprintln!("lake ingest: {e}; retrying in {wait:?}");
                    std::thread::sleep(wait);
                    wait *= 2;
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("cannot reach the lake at {}", args.url)),
            };
            let status = resp.status();
            let text = rt.block_on(resp.text()).unwrap_or_default();
            if status.is_success() {
                // Only a retry of this very request is a duplicate (its first answer was
                // lost); say so rather than count rows the lake had stored before.
                let answer = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
                if answer["duplicate"].as_bool() == Some(true) {
                    eprintln!("lake ingest: batch {id} was already stored (a retry of this run)");
                }
                break;
            }
            if (status.as_u16() == 503 || status.as_u16() == 507) && wait < Duration::from_secs(60) {
                std::thread::sleep(wait);
                wait *= 2;
                continue;
            }
            let msg = remote::error_message(text.as_bytes());
            bail!("batch {} (rows {}..{} of the file): {status}: {msg}", i + 1, c.first_row, c.first_row + c.rows - 1);
        }
        total += c.rows;
    }
    println!("ingested {total} rows into {} in {} batches", args.table, chunks.len());
    Ok(())
}
