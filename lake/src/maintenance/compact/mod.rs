//! Compaction: many small files of a partition become a few large ones.
//!
//! Every flush writes one file per (table, date), so a busy day leaves thousands of small
//! files, and a query opens each of them. Compaction merges the small files of a
//! partition into files of about [`CompactionConfig::target_size`], sorted by
//! (host, ts), with the catalog's columns (a column a newer version added reads as NULL
//! from older files and is written out as such: schema evolution).
//!
//! - **What:** files under half the target size. In a past day's partition any two or
//!   more; in today's (still growing) partition only files older than
//!   [`CompactionConfig::settle`], and only once there are at least
//!   [`CompactionConfig::min_files`] of them. Files go into bins, in name (age) order,
//!   up to the target size; a bin of one file is left alone.
//! - **How:** DuckDB (a private, unsandboxed instance with its own memory limit and
//!   spill directory) runs `COPY (SELECT … ORDER BY <the table's sort columns>) TO
//!   '<staging>/….parquet'` (`host, ts`; `name, host, labels, ts` for metrics, whose
//!   sorted rows DuckDB streams into the lake's own writer instead: [`write_sorted`]):
//!   its sort spills to disk, so a 128 MiB output does not need its decompressed size
//!   in memory. The output has the table's row groups (1Mi rows; 128Ki for metrics), as the
//!   flushed files have, and
//!   zstd level 15 (see [`COPY_OPTIONS`]). The output's row count (from its footer)
//!   must equal the inputs' before anything is committed.
//! - **Commit:** through [`crate::maintenance::swap`], so queries see the old files or the new one,
//!   never both, and a query that listed the old files can still read them.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use duckdb::Connection;
use parquet::file::reader::{FileReader, SerializedFileReader};

use lake_format::catalog::ColumnType;
use lake_format::custom::{self, TableRef};
use lake_format::layout::{self, Date};
use lake_format::units::{ByteSize, Dur};
use lake_format::Table;
use lake_query::engine::duckdb_type;
use tokio_util::sync::CancellationToken;

use crate::ingest::writer::Buffers;
use crate::maintenance::swap::{SwapError, Swapper};
use crate::progress::Progress;

/// Errors of compaction.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// File system trouble while planning.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// An input file's footer could not be read: the bin is skipped, the file kept.
    #[error("reading {path}: {message}")]
    BadInput {
        /// The unreadable file.
        path: PathBuf,
        /// Parquet's message.
        message: String,
    },
    /// DuckDB failed to merge.
    #[error("merging {table} {date}: {message}")]
    Merge {
        /// Table.
        table: TableRef,
        /// Partition.
        date: Date,
        /// DuckDB's message.
        message: String,
    },
    /// The merged file does not hold exactly the inputs' rows: nothing is committed.
    #[error("merging {table} {date}: {inputs} rows in, {output} rows out; sources kept")]
    RowCount {
        /// Table.
        table: TableRef,
        /// Partition.
        date: Date,
        /// Rows in the inputs.
        inputs: u64,
        /// Rows in the merged file.
        output: u64,
    },
    /// The swap failed.
    #[error(transparent)]
    Swap(#[from] SwapError),
}

type Result<T, E = CompactError> = std::result::Result<T, E>;

/// `[compaction]` settings.
#[derive(Debug, Clone)]
pub struct CompactionConfig {
    /// Size merged files aim at. Default 128 MiB.
    pub target_size: u64,
    /// Settled small files today's partition needs before it is compacted. Default 8.
    pub min_files: usize,
    /// Age (by modification time) before a file of today's partition may be merged. Default 1 h.
    pub settle: Duration,
    /// How often `lake serve` looks for work. Default 10 min; zero disables the schedule.
    pub interval: Duration,
    /// DuckDB memory limit of the merge (its sort spills beyond it). Default 512MB.
    pub memory_limit: String,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            target_size: 128 << 20,
            min_files: 8,
            settle: Duration::from_secs(3600),
            interval: Duration::from_secs(600),
            memory_limit: "512MB".into(),
        }
    }
}

/// One committed file considered for merging.
#[derive(Debug, Clone)]
pub struct Input {
    /// Path relative to the data directory (`tables/<t>/date=…/<file>`).
    pub rel: PathBuf,
    /// Bytes on disk.
    pub size: u64,
}

/// Files of one partition to merge, in bins of about the target size.
#[derive(Debug, Clone)]
pub struct Job {
    /// Table.
    pub table: TableRef,
    /// Partition.
    pub date: Date,
    /// Each bin becomes one file.
    pub bins: Vec<Vec<Input>>,
}

impl Job {
    /// Bytes of every input.
    pub fn bytes(&self) -> u64 {
        self.bins.iter().flatten().map(|i| i.size).sum()
    }
}

/// Which partitions a run looks at.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this table.
    pub table: Option<TableRef>,
    /// Only partitions on or after this date.
    pub from: Option<Date>,
    /// Only partitions on or before this date.
    pub to: Option<Date>,
}

impl Filter {
    /// A filter from user input: a table name and `YYYY-MM-DD` dates, checked.
    pub fn parse(table: Option<&str>, from: Option<&str>, to: Option<&str>) -> std::result::Result<Filter, String> {
        let date = |key: &str, v: Option<&str>| {
            v.map(|d| Date::parse(d).ok_or_else(|| format!("{key}: {d:?} is not a date (YYYY-MM-DD)"))).transpose()
        };
        let table = table.map(|t| TableRef::parse_known(t).map_err(|e| format!("table: {e}"))).transpose()?;
        Ok(Filter { table, from: date("from", from)?, to: date("to", to)? })
    }

    fn wants(&self, table: &TableRef, date: Date) -> bool {
        self.table.as_ref().is_none_or(|t| t == table)
            && self.from.is_none_or(|f| date >= f)
            && self.to.is_none_or(|t| date <= t)
    }
}

/// The UTC date of a system time.
pub fn date_of(t: SystemTime) -> Date {
    let micros = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    Date::from_micros(micros)
}

/// Finds the partitions worth compacting. `retired` files (already replaced, awaiting
/// deletion) are never inputs again.
pub fn plan(
    data: &Path,
    cfg: &CompactionConfig,
    filter: &Filter,
    now: SystemTime,
    retired: &dyn Fn(&Path) -> bool,
) -> Result<Vec<Job>> {
    let today = date_of(now);
    let mut jobs = Vec::new();
    let customs = custom::load_all(data).0.into_iter().map(|s| TableRef::Custom(s.name.into()));
    for table in Table::ALL.into_iter().map(TableRef::from).chain(customs) {
        let tdir = layout::table_dir(data, table.name());
        let Ok(parts) = std::fs::read_dir(&tdir) else { continue };
        let mut dates: Vec<Date> = parts
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix("date=")).and_then(Date::parse))
            .filter(|d| filter.wants(&table, *d))
            .collect();
        dates.sort();
        for date in dates {
            let growing = date >= today;
            let dir = layout::partition_dir(data, table.name(), date);
            let mut small = Vec::new();
            let entries =
                std::fs::read_dir(&dir).map_err(|source| CompactError::Io { op: "list", path: dir.clone(), source })?;
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') || !name.ends_with(&format!(".{}", layout::PARQUET_EXT)) || retired(&e.path())
                {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                let settled =
                    meta.modified().ok().and_then(|m| now.duration_since(m).ok()).is_some_and(|age| age >= cfg.settle);
                if meta.len() < cfg.target_size / 2 && (!growing || settled) {
                    let rel =
                        PathBuf::from(layout::TABLES_DIR).join(table.name()).join(format!("date={date}")).join(name);
                    small.push(Input { rel, size: meta.len() });
                }
            }
            if small.is_empty() || (growing && small.len() < cfg.min_files.max(2)) {
                continue;
            }
            small.sort_by(|a, b| a.rel.cmp(&b.rel));
            let bins = bin(small, cfg.target_size, !growing);
            if !bins.is_empty() {
                jobs.push(Job { table: table.clone(), date, bins });
            }
        }
    }
    Ok(jobs)
}

/// Whether compaction wrote this file (it is sorted and in the final encoding already).
fn is_compacted(i: &Input) -> bool {
    i.rel.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(COMPACTED_PREFIX))
}

/// Greedy bins in order, each at most `target` bytes (a larger file alone). A bin of one
/// file is dropped, there being nothing to merge, unless `rewrite_flushed` (the day is
/// finished) and compaction has not written that file yet: a flushed file has the
/// writer's row groups, order and zstd level 3 (http 42 B/row, rewritten 22).
fn bin(files: Vec<Input>, target: u64, rewrite_flushed: bool) -> Vec<Vec<Input>> {
    let mut bins: Vec<Vec<Input>> = Vec::new();
    let mut cur: Vec<Input> = Vec::new();
    let mut size = 0;
    for f in files {
        if !cur.is_empty() && size + f.size > target {
            bins.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += f.size;
        cur.push(f);
    }
    bins.push(cur);
    bins.retain(|b| b.len() > 1 || (rewrite_flushed && !is_compacted(&b[0])));
    bins
}

/// What one merged bin did.
#[derive(Debug, Clone)]
pub struct BinReport {
    /// Table.
    pub table: TableRef,
    /// Partition.
    pub date: Date,
    /// Files merged.
    pub files_in: usize,
    /// Bytes merged.
    pub bytes_in: u64,
    /// Bytes of the merged file.
    pub bytes_out: u64,
    /// Rows carried over.
    pub rows: u64,
}

/// Merges planned bins with a private DuckDB instance.
#[derive(Debug)]
pub struct Merger {
    conn: Connection,
    data: PathBuf,
    spill: PathBuf,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The columns a merged file of `table` has: the catalog's, or the custom table's
/// current schema (its newest columns included, so older files gain them as NULL).
/// A custom schema with two columns of one name ignoring case (stored before that was
/// refused) is not merged: DuckDB would read one column's values as the other's, and
/// `lake serve` repairs such a table when it starts ([`crate::custom::repair`]).
fn columns_of(data: &Path, table: &TableRef) -> std::result::Result<Vec<(String, ColumnType)>, String> {
    match table {
        TableRef::Builtin(t) => Ok(t.columns().map(|c| (c.name.to_string(), c.ty)).collect()),
        TableRef::Custom(name) => {
            let s = std::fs::read(custom::schema_path(data, name))
                .ok()
                .and_then(|b| serde_json::from_slice::<custom::CustomSchema>(&b).ok())
                .ok_or_else(|| "its schema file is missing or unreadable".to_string())?;
            match s.collisions().first() {
                Some(c) => Err(format!(
                    "its schema has columns {:?} and {:?}, one name to DuckDB; start `lake serve` once to repair it",
                    c.kept, c.moved
                )),
                None => Ok(s.all_columns()),
            }
        }
    }
}

/// How merged files are written. Compacted files are what a lake keeps for good, so they
/// get the costlier settings; measured on `bench/harness/storage.py`'s http rows (bytes
/// per row, 1M rows, DuckDB 1.5): row groups of 122,880 rows and zstd level 3 (DuckDB's
/// defaults) 47.7, level 9 36.7; 1Mi-row groups, level 9 27.7, level 15 26.0. Small row groups
/// repeat every column's dictionary (client IPs, attrs values) in each group; level 3's
/// small match window misses the repeats inside attrs. The cost: about 55 s of one core
/// per million http rows (level 9: ~40 s), and ~350 MB more resident memory than the
/// merge's `memory_limit` while a 1Mi-row group is assembled (DuckDB writes a row group
/// at once). Decompression speed does not depend on the level.
///
/// Parquet 2 encodings (delta timestamps, byte-stream-split floats): http 26.0 -> 25.7,
/// a generated metrics day 3.8 -> 2.2 B/sample. Bloom filters at 1 % false positives were
/// 0.7 B of every http row (duration_ms alone 0.26); at 10 % they still let a lookup of one
/// client IP skip nine in ten days without it, for half the bytes.
pub const COPY_OPTIONS: &str =
    "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 15, PARQUET_VERSION V2, BLOOM_FILTER_FALSE_POSITIVE_RATIO 0.1";

/// Runs `select` in `conn` and writes its rows, streamed as DuckDB produces them, to `out`
/// with `props` and `schema` (each column cast to the schema's type: DuckDB names a map's
/// fields its own way). Memory: DuckDB's sort, which spills, and the row group being
/// encoded. The caller checks the row count from the footer. Returns the rows written.
pub fn write_sorted(
    conn: &Connection,
    select: &str,
    schema: &arrow_schema::SchemaRef,
    props: parquet::file::properties::WriterProperties,
    out: &Path,
) -> std::result::Result<u64, String> {
    let mut stmt = conn.prepare(select).map_err(|e| e.to_string())?;
    // DuckDB's iterator panics on fetch errors: rows are pulled with `step`.
    let _ = stmt.stream_arrow([]).map_err(|e| e.to_string())?;
    let file = std::fs::File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let mut w =
        parquet::arrow::ArrowWriter::try_new(file, Arc::clone(schema), Some(props)).map_err(|e| e.to_string())?;
    let mut rows = 0u64;
    while let Some(chunk) = stmt.step().map_err(|e| e.to_string())? {
        if arrow_array::Array::is_empty(&chunk) {
            continue;
        }
        let (_, columns, _) = chunk.into_parts();
        if columns.len() != schema.fields().len() {
            return Err(format!("the query gave {} columns for {}", columns.len(), schema.fields().len()));
        }
        let columns =
            columns
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| {
                    if c.data_type() == f.data_type() {
                        Ok(Arc::clone(c))
                    } else {
                        arrow_cast::cast(c, f.data_type())
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
        let batch = arrow_array::RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| e.to_string())?;
        rows += batch.num_rows() as u64;
        w.write(&batch).map_err(|e| e.to_string())?;
    }
    w.close().map_err(|e| e.to_string())?;
    Ok(rows)
}

/// The ORDER BY of a merge. `http` is ordered by hour, then site and path, then time:
/// requests for one path look alike (size, content type, cache headers), and side by side
/// they compress to 22.4 B/row against 25.4 in (host, ts) order. Hours keep each row group
/// to a stretch of time, so a query for the last hours still skips the rest of the day.
fn order_by(table: &TableRef) -> String {
    match table {
        TableRef::Builtin(Table::Http) => "host, date_trunc('hour', ts), vhost, path, ts".into(),
        t => t.sort_columns().join(", "),
    }
}

/// File names compaction writes start with this; the writer's start with `f-`.
const COMPACTED_PREFIX: &str = "c-";

/// Rows and column names of a Parquet file, from its footer.
fn footer(path: &Path) -> Result<(u64, Vec<String>)> {
    let bad = |message: String| CompactError::BadInput { path: path.to_path_buf(), message };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
    let meta = reader.metadata().file_metadata();
    let names = meta.schema_descr().root_schema().get_fields().iter().map(|f| f.name().to_string()).collect();
    Ok((meta.num_rows().max(0) as u64, names))
}

impl Merger {
    /// A DuckDB instance for merging files of `data`: one thread (compaction runs beside
    /// ingest and queries), `memory_limit`, spilling under `<data>/staging/compact-tmp`.
    pub fn open(data: &Path, memory_limit: &str) -> Result<Merger> {
        let spill = data.join(layout::STAGING_DIR).join("compact-tmp");
        // Spill files of a previous process are garbage.
        let _ = std::fs::remove_dir_all(&spill);
        std::fs::create_dir_all(&spill).map_err(|source| CompactError::Io {
            op: "create",
            path: spill.clone(),
            source,
        })?;
        let conn = Connection::open_in_memory().map_err(|e| CompactError::Io {
            op: "open duckdb for",
            path: spill.clone(),
            source: std::io::Error::other(e),
        })?;
        let setup = format!(
            "SET threads = 1; SET memory_limit = {}; SET temp_directory = {}; SET preserve_insertion_order = true; SET TimeZone = 'UTC';",
            quote(memory_limit),
            quote(&spill.to_string_lossy())
        );
        conn.execute_batch(&setup).map_err(|e| CompactError::Io {
            op: "configure duckdb for",
            path: spill.clone(),
            source: std::io::Error::other(e),
        })?;
        Ok(Merger { conn, data: data.to_path_buf(), spill })
    }

    /// Merges one bin into a staged file and commits it through `swapper`.
    pub fn merge(&self, swapper: &Swapper, table: &TableRef, date: Date, inputs: &[Input]) -> Result<BinReport> {
        let merge_err = |message: String| CompactError::Merge { table: table.clone(), date, message };
        let mut rows_in = 0;
        let mut present: Vec<String> = Vec::new();
        for i in inputs {
            let (rows, names) = footer(&self.data.join(&i.rel))?;
            rows_in += rows;
            present.extend(names);
        }
        let columns = columns_of(&self.data, table).map_err(merge_err)?;
        // A column the schema does not know would be dropped by the select list below.
        if let Some(lost) = present.iter().find(|p| !columns.iter().any(|(c, _)| c == *p)) {
            return Err(merge_err(format!("an input has column {lost:?}, which the table's schema lacks; not merged")));
        }
        let cols: Vec<String> = columns
            .into_iter()
            .map(|(name, ty)| {
                let q = name.replace('"', "\"\"");
                if present.contains(&name) {
                    format!("\"{q}\"")
                } else {
                    format!("CAST(NULL AS {}) AS \"{q}\"", duckdb_type(ty))
                }
            })
            .collect();
        let files: Vec<String> = inputs.iter().map(|i| quote(&self.data.join(&i.rel).to_string_lossy())).collect();
        let stage = swapper.stage_dir()?;
        let out = stage.join("merged.parquet");
        let select = format!(
            "SELECT {} FROM read_parquet([{}], union_by_name = true, hive_partitioning = false) ORDER BY {}",
            cols.join(", "),
            files.join(", "),
            order_by(table),
        );
        // `metrics` is written by the lake's own writer (DuckDB sorts, [`write_sorted`]
        // encodes) for its per-column encodings ([`crate::ingest::writer::metrics_columns`]),
        // which COPY cannot choose: DuckDB picks one encoding per type and keeps a
        // dictionary for `ts` (the day's ticks). Series-major, a generated metrics day
        // compacted to 2.393 B/sample by COPY, 1.579 by the lake's writer (of which `ts`
        // 0.829 and 0.002; `lake-metrics-whatif`).
        let written = if let TableRef::Builtin(t @ Table::Metrics) = table {
            let schema = t.schema();
            let props = crate::ingest::writer::compacted_parquet_properties(table, &schema);
            write_sorted(&self.conn, &select, &schema, props, &out).map(|_| ())
        } else {
            let sql = format!(
                "COPY ({select}) TO {} ({COPY_OPTIONS}, ROW_GROUP_SIZE {})",
                quote(&out.to_string_lossy()),
                table.row_group_rows()
            );
            self.conn.execute_batch(&sql).map_err(|e| e.to_string())
        };
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(merge_err(e));
        }
        let (rows_out, _) = footer(&out)?;
        if rows_out != rows_in {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(CompactError::RowCount { table: table.clone(), date, inputs: rows_in, output: rows_out });
        }
        let bytes_out = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        let micros = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_micros();
        let name = format!("{COMPACTED_PREFIX}{micros:016}.{}", layout::PARQUET_EXT);
        let fin = PathBuf::from(layout::TABLES_DIR).join(table.name()).join(format!("date={date}")).join(name);
        swapper.commit(vec![(out, fin)], inputs.iter().map(|i| i.rel.clone()).collect())?;
        Ok(BinReport {
            table: table.clone(),
            date,
            files_in: inputs.len(),
            bytes_in: inputs.iter().map(|i| i.size).sum(),
            bytes_out,
            rows: rows_in,
        })
    }
}

impl Drop for Merger {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.spill);
    }
}

/// Plans and runs a compaction pass. Blocking. `on_bin` hears of each merged bin (for
/// progress) and of each failure (the bin's files are kept; the pass goes on).
pub fn run_pass(
    data: &Path,
    swapper: &Swapper,
    buffers: &Arc<Buffers>,
    cfg: &CompactionConfig,
    filter: &Filter,
    on_plan: &mut dyn FnMut(&[Job]),
    on_bin: &mut dyn FnMut(Result<&BinReport, &CompactError>),
) -> Result<PassReport> {
    let jobs = plan(data, cfg, filter, SystemTime::now(), &|p| buffers.is_retired(p))?;
    on_plan(&jobs);
    let mut report = PassReport::default();
    if jobs.is_empty() {
        return Ok(report);
    }
    let merger = Merger::open(data, &cfg.memory_limit)?;
    for job in &jobs {
        for inputs in &job.bins {
            match merger.merge(swapper, &job.table, job.date, inputs) {
                Ok(r) => {
                    report.bins += 1;
                    report.files_in += r.files_in;
                    report.bytes_in += r.bytes_in;
                    report.bytes_out += r.bytes_out;
                    report.rows += r.rows;
                    on_bin(Ok(&r));
                }
                Err(e) => {
                    report.failures += 1;
                    tracing::error!(table = %job.table, date = %job.date, %e, "compaction of a bin failed; its files are kept");
                    on_bin(Err(&e));
                }
            }
        }
    }
    Ok(report)
}

/// What the blocking pass tells the task reporting its progress.
enum Step {
    Plan { files: u64, bytes: u64 },
    Bin(std::result::Result<(u64, u64), String>),
}

/// [`run_pass`] off the runtime, reported through `progress`: a `compact` phase with the
/// planned files and bytes, advanced bin by bin; failed bins become messages.
pub async fn pass_with_progress(
    data: &Path,
    swapper: &Arc<Swapper>,
    buffers: &Arc<Buffers>,
    cfg: &CompactionConfig,
    filter: Filter,
    progress: &dyn Progress,
) -> Result<PassReport> {
    // Bounded: the blocking side waits for the reporter, it never buffers without end.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Step>(64);
    let (data, swapper, buffers, cfg) = (data.to_path_buf(), Arc::clone(swapper), Arc::clone(buffers), cfg.clone());
    let task = tokio::task::spawn_blocking(move || {
        let plan_tx = tx.clone();
        run_pass(
            &data,
            &swapper,
            &buffers,
            &cfg,
            &filter,
            &mut |jobs| {
                let files = jobs.iter().flat_map(|j| &j.bins).map(|b| b.len() as u64).sum();
                let bytes = jobs.iter().map(Job::bytes).sum();
                let _ = plan_tx.blocking_send(Step::Plan { files, bytes });
            },
            &mut |r| {
                let step = Step::Bin(r.map(|b| (b.files_in as u64, b.bytes_in)).map_err(|e| e.to_string()));
                let _ = tx.blocking_send(step);
            },
        )
    });
    let mut started = false;
    while let Some(step) = rx.recv().await {
        match step {
            Step::Plan { files, bytes } => {
                progress.phase("compact", files, bytes);
                started = true;
            }
            Step::Bin(Ok((files, bytes))) => progress.advance(files, bytes),
            Step::Bin(Err(e)) => progress.message(&format!("a merge failed, its files are kept: {e}")),
        }
    }
    let report = task.await.map_err(|e| CompactError::Io {
        op: "join compaction task for",
        path: PathBuf::new(),
        source: std::io::Error::other(e),
    })??;
    if started {
        progress.finish();
    }
    Ok(report)
}

/// Totals of a pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PassReport {
    /// Files written.
    pub bins: usize,
    /// Files merged away.
    pub files_in: usize,
    /// Bytes merged.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Rows carried.
    pub rows: u64,
    /// Bins that failed (their files kept).
    pub failures: usize,
}

#[cfg(test)]
mod tests;

const fn default_target_size() -> ByteSize {
    ByteSize(128 << 20)
}
const fn default_min_files() -> usize {
    8
}
const fn default_settle() -> Dur {
    Dur(Duration::from_secs(3600))
}
const fn default_interval() -> Dur {
    Dur(Duration::from_secs(600))
}
fn default_memory_limit() -> String {
    "512MB".into()
}

/// `[compaction]` of `lake.toml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionFile {
    /// Size merged files aim at, e.g. `"128MiB"`.
    #[serde(default = "default_target_size")]
    target_size: ByteSize,
    /// Settled small files today's partition needs before it is compacted.
    #[serde(default = "default_min_files")]
    min_files: usize,
    /// Age before a file of today's partition may be merged, e.g. `"1h"`.
    #[serde(default = "default_settle")]
    settle: Dur,
    /// How often `lake serve` compacts; `"0s"` turns the schedule off.
    #[serde(default = "default_interval")]
    interval: Dur,
    /// DuckDB memory limit of a merge, e.g. `"512MB"`.
    #[serde(default = "default_memory_limit")]
    memory_limit: String,
}

impl Default for CompactionFile {
    fn default() -> Self {
        CompactionFile {
            target_size: default_target_size(),
            min_files: default_min_files(),
            settle: default_settle(),
            interval: default_interval(),
            memory_limit: default_memory_limit(),
        }
    }
}

impl CompactionFile {
    /// Checks the values; errors name the key.
    pub fn validate(self) -> anyhow::Result<CompactionConfig> {
        if self.target_size.0 < 1 << 20 {
            anyhow::bail!("[compaction] target_size = {}: must be at least 1MiB", self.target_size);
        }
        if self.min_files < 2 {
            anyhow::bail!(
                "[compaction] min_files = {}: must be at least 2 (merging one file does nothing)",
                self.min_files
            );
        }
        let m = self.memory_limit.trim();
        let digits = m.trim_end_matches(|c: char| c.is_ascii_alphabetic()).trim();
        if digits.is_empty() || digits.parse::<f64>().is_err() {
            anyhow::bail!(
                "[compaction] memory_limit = {:?}: expected a size DuckDB understands, e.g. \"512MB\" or \"2GB\"",
                self.memory_limit
            );
        }
        Ok(CompactionConfig {
            target_size: self.target_size.0,
            min_files: self.min_files,
            settle: self.settle.0,
            interval: self.interval.0,
            memory_limit: m.to_string(),
        })
    }
}

lake_format::metrics! {
    /// Counters of compaction, on `/metrics` (each doc line is its help there).
    pub struct CompactionStats {
        /// compaction passes run
        pub passes: Counter("lake_compaction_passes_total"),
        /// merged files written by compaction
        pub files_written: Counter("lake_compaction_files_written_total"),
        /// small files merged away
        pub files_merged: Counter("lake_compaction_files_merged_total"),
        /// compaction bins that failed (their files kept)
        pub failures: Counter("lake_compaction_failures_total"),
    }
}

/// Compaction inside `lake serve`: on its schedule and on demand, one pass at a time
/// (and never beside another maintenance job holding `jobs`).
#[derive(Debug)]
pub struct Compactor {
    data: PathBuf,
    swapper: Arc<Swapper>,
    buffers: Arc<Buffers>,
    cfg: CompactionConfig,
    jobs: Arc<tokio::sync::Mutex<()>>,
    /// Counters.
    pub stats: CompactionStats,
}

/// How often retired files are looked at for deletion.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Compactor {
    /// `jobs` is the maintenance lock shared with archive and retention.
    pub fn new(
        data: &Path,
        swapper: Arc<Swapper>,
        buffers: Arc<Buffers>,
        cfg: CompactionConfig,
        jobs: Arc<tokio::sync::Mutex<()>>,
    ) -> Compactor {
        Compactor { data: data.to_path_buf(), swapper, buffers, cfg, jobs, stats: CompactionStats::default() }
    }

    /// One pass over the partitions `filter` selects, reported through `progress`;
    /// waits for any other maintenance job to end first.
    pub async fn pass(&self, filter: Filter, progress: &dyn Progress) -> Result<PassReport> {
        let _job = self.jobs.lock().await;
        let report = pass_with_progress(&self.data, &self.swapper, &self.buffers, &self.cfg, filter, progress).await?;
        self.stats.passes.fetch_add(1, Ordering::Relaxed);
        self.stats.files_written.fetch_add(report.bins as u64, Ordering::Relaxed);
        self.stats.files_merged.fetch_add(report.files_in as u64, Ordering::Relaxed);
        self.stats.failures.fetch_add(report.failures as u64, Ordering::Relaxed);
        if report.bins > 0 || report.failures > 0 {
            tracing::info!(
                files_in = report.files_in,
                files_out = report.bins,
                bytes_in = report.bytes_in,
                bytes_out = report.bytes_out,
                rows = report.rows,
                failures = report.failures,
                "compacted"
            );
        }
        Ok(report)
    }

    /// The schedule: a pass every [`CompactionConfig::interval`] (none when zero) and
    /// deletion of retired files whose grace is over, until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut last_pass = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(SWEEP_EVERY.min(self.cfg.interval.max(Duration::from_millis(100)))) => {}
            }
            let swapper = Arc::clone(&self.swapper);
            match tokio::task::spawn_blocking(move || swapper.sweep()).await {
                Ok(Ok(n)) if n > 0 => tracing::debug!(deleted = n, "retired files deleted"),
                Ok(Err(e)) => tracing::warn!(%e, "deleting retired files failed; retried later"),
                _ => {}
            }
            if self.cfg.interval.is_zero() || last_pass.elapsed() < self.cfg.interval {
                continue;
            }
            last_pass = tokio::time::Instant::now();
            if let Err(e) = self.pass(Filter::default(), &crate::progress::NoProgress).await {
                tracing::error!(%e, "compaction pass failed");
            }
        }
    }
}
