//! Buffers of acknowledged rows and their flush to Parquet.
//!
//! Rows wait in memory per table (they are already durable in the WAL) until the buffer
//! is old enough or large enough, then one flush writes a file per (table, date), sorted
//! by (host, ts), zstd, with statistics.
//!
//! # Commit protocol
//! 1. Files are written and fsynced under `<data>/staging/flush-<n>/`.
//! 2. A manifest `<data>/staging/flush-<n>.json` (the moves and the new [`State`]) is
//!    written atomically: **this is the commit point**.
//! 3. Files are renamed into `tables/<table>/date=…/`, directories fsynced, the state
//!    file written, the staging directory and manifest removed.
//!
//! On start, [`recover`] rolls every manifest forward (step 3 is idempotent) and deletes
//! staging directories without one, so a crash at any point leaves each flush either
//! wholly visible or wholly absent, and queries never see a partial file. It also numbers
//! the next flush after the highest `f-<n>` on disk, so a flush never renames over a
//! committed file when the state is behind the files. WAL records of
//! batches the state marks as committed are skipped on replay, so a crash between the
//! rename and the WAL truncation does not store rows twice.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use arrow_array::{Array, RecordBatch, TimestampMicrosecondArray};
use arrow_ord::sort::{lexsort_to_indices, SortColumn};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use lake_format::custom::TableRef;
use lake_format::layout::{self, Date};

use crate::ingest::state::{Manifest, State, VersionedState};
use lake_format::durable::{sync_dir, write_atomic};

/// Errors of flushing and recovery.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    /// File system trouble.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// Arrow or Parquet refused the data (a bug: batches are conformed at ingest).
    #[error("encoding {table}: {message}")]
    Encode {
        /// Table being written.
        table: String,
        /// What went wrong.
        message: String,
    },
}

type Result<T, E = WriterError> = std::result::Result<T, E>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriterError + 'a {
    move |source| WriterError::Io { op, path: path.to_path_buf(), source }
}

/// Rows acknowledged but not yet in Parquet. Readable by queries at any time.
#[derive(Debug, Default)]
pub struct Buffers {
    inner: Mutex<Inner>,
    /// Held shared while a query lists files and takes snapshots, exclusively while a
    /// flush makes its files visible and drops its rows from memory.
    visibility: RwLock<()>,
    /// Signalled on every push, so the flusher starts a size-triggered flush as soon as
    /// the buffer reaches the flush size rather than at its next timer tick: at 200k+
    /// rows/s a one-second tick lets the buffer overshoot the 503 limit between checks.
    pushed: tokio::sync::Notify,
    /// Files a swap replaced or dropped (`tables/<t>/date=…/<file>`), hidden from
    /// listings until they are deleted (see [`crate::maintenance::swap`]).
    retired: Mutex<std::collections::HashSet<String>>,
    /// The generation of the committed file set, bumped by every holder of `visibility`
    /// exclusively ([`Buffers::exclusive`]: flush commits, swaps, sweeps) before it lets
    /// go: queries reuse the views they made at the generation they read under the shared
    /// lock ([`lake_query::engine::FreshRows::generation`]).
    generation: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    open: HashMap<TableRef, Vec<RecordBatch>>,
    /// Taken by the running flush; still visible until its files are committed.
    flushing: HashMap<TableRef, Vec<RecordBatch>>,
    bytes: usize,
    /// Memory of `flushing`.
    flushing_bytes: usize,
    rows: usize,
    oldest: Option<Instant>,
}

impl Buffers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each critical section moves whole vectors; a poisoned lock holds consistent data.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds conformed batches of one table.
    pub fn push(&self, table: impl Into<TableRef>, batches: Vec<RecordBatch>) {
        let table = table.into();
        let mut g = self.lock();
        for b in batches {
            g.bytes += b.get_array_memory_size();
            g.rows += b.num_rows();
            g.open.entry(table.clone()).or_default().push(b);
        }
        g.oldest.get_or_insert_with(Instant::now);
        drop(g);
        self.pushed.notify_one();
    }

    /// Resolves after the next [`Buffers::push`] (or at once if one happened since the
    /// last call): the flusher's cue to look at [`Buffers::usage`] again.
    pub async fn pushed(&self) {
        self.pushed.notified().await
    }

    /// (rows, bytes, age of the oldest row) of the open buffer.
    pub fn usage(&self) -> (usize, usize, Option<std::time::Duration>) {
        let g = self.lock();
        (g.rows, g.bytes, g.oldest.map(|t| t.elapsed()))
    }

    /// Memory of every buffered row: open, and taken by the running flush (still held
    /// until its files are committed). Ingest answers 503 past a bound on it.
    pub fn held_bytes(&self) -> usize {
        let g = self.lock();
        g.bytes + g.flushing_bytes
    }

    /// Moves the open buffer to the flushing one and returns its contents.
    pub fn start_flush(&self) -> HashMap<TableRef, Vec<RecordBatch>> {
        let mut g = self.lock();
        let taken = std::mem::take(&mut g.open);
        g.flushing = taken.clone();
        g.flushing_bytes = g.bytes;
        g.bytes = 0;
        g.rows = 0;
        g.oldest = None;
        taken
    }

    /// The flush's files are committed: its rows are no longer served from memory.
    pub fn finish_flush(&self) {
        let mut g = self.lock();
        g.flushing.clear();
        g.flushing_bytes = 0;
    }

    /// The flush failed: its rows go back in front of the open buffer for the next try.
    pub fn abort_flush(&self) {
        let mut g = self.lock();
        let flushing = std::mem::take(&mut g.flushing);
        g.flushing_bytes = 0;
        for (table, mut batches) in flushing {
            g.rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
            g.bytes += batches.iter().map(RecordBatch::get_array_memory_size).sum::<usize>();
            let open = g.open.entry(table).or_default();
            batches.append(open);
            *open = batches;
        }
        g.oldest.get_or_insert_with(Instant::now);
    }

    /// Runs `f` while no flush can change which rows are in files and which in memory.
    pub fn consistent<T>(&self, f: impl FnOnce() -> T) -> T {
        let _shared = self.visibility.read().unwrap_or_else(|p| p.into_inner());
        f()
    }

    /// Holds off every query listing and every flush commit while a flush or a swap
    /// changes files, and moves to a new generation of the committed file set. The bump
    /// happens under the lock, so no query reads the new generation with the old files.
    pub(crate) fn exclusive(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        let guard = self.visibility.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        guard
    }

    /// The generation of the committed file set (see [`Buffers::exclusive`]); read it
    /// inside [`Buffers::consistent`].
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn retired_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.retired.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hides committed files (keys from [`crate::maintenance::swap::file_key`]) from listings.
    pub(crate) fn retire(&self, keys: impl IntoIterator<Item = String>) {
        self.retired_set().extend(keys);
    }

    /// Forgets retired files once they are deleted.
    pub(crate) fn unretire(&self, keys: impl IntoIterator<Item = String>) {
        let mut set = self.retired_set();
        for k in keys {
            set.remove(&k);
        }
    }

    /// Whether a committed file was retired by a swap.
    pub fn is_retired(&self, path: &Path) -> bool {
        let set = self.retired_set();
        !set.is_empty() && crate::maintenance::swap::file_key(path).is_some_and(|k| set.contains(&k))
    }

    /// Every buffered batch of a table, flushing or open.
    pub fn snapshot(&self, table: impl Into<TableRef>) -> Vec<RecordBatch> {
        let table = table.into();
        let g = self.lock();
        let mut out = g.flushing.get(&table).cloned().unwrap_or_default();
        out.extend(g.open.get(&table).into_iter().flatten().cloned());
        out
    }
}

lake_format::metrics! {
    // What waits in memory, read when `/metrics` is asked (each doc line is its help there).
    pub impl Buffers as b {
        /// rows waiting for Parquet
        Gauge("lake_buffered_rows") = b.usage().0 as u64,
        /// memory of rows waiting for Parquet
        Gauge("lake_buffered_bytes") = b.usage().1 as u64,
        /// memory of rows waiting for Parquet or being written to it (ingest answers 503 past 4 × ingest.flush_size)
        Gauge("lake_buffered_held_bytes") = b.held_bytes() as u64,
    }
}

lake_format::metrics! {
    /// Counters of the writer, on `/metrics` (each doc line is its help there); the
    /// failures in a row also decide `/health`.
    pub struct WriterStats {
        /// flushes committed
        pub flushes: Counter("lake_flushes_total"),
        /// flushes failed (rows kept, retried)
        pub flush_errors: Counter("lake_flush_errors_total"),
        /// rows written to Parquet
        pub rows_written: Counter("lake_rows_written_total"),
        /// Parquet files committed
        pub files_written: Counter("lake_files_written_total"),
        /// flushes failed since the last one that succeeded
        pub consecutive_failures: Gauge("lake_flush_failures_in_a_row"),
    }
    also {
        /// The last failed flush's error, until a flush succeeds.
        pub last_error: Mutex<Option<String>>,
    }
}

impl WriterStats {
    /// A flush failed with `error`: counted, kept for `/health`.
    pub fn flush_failed(&self, error: String) {
        self.flush_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// The last failed flush's error, if no flush succeeded since.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Records whether the latest flush attempt failed.
    pub fn flush_attempted(&self, failed: bool) {
        if failed {
            self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        } else {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

fn staging_dir(data: &Path) -> PathBuf {
    data.join(layout::STAGING_DIR)
}

/// Path of the state file.
pub fn state_path(data: &Path) -> PathBuf {
    data.join(layout::STATE_DIR).join("lake.json")
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Rows per Arrow batch a flush hands the Parquet writer. A flush copies its rows into
/// sort order one chunk at a time, straight from the buffered batches: it holds the
/// buffered rows plus one chunk (and the writer's encoded row group), where sorting a
/// concatenated copy held three copies of every row (buffered, concatenated, sorted):
/// twice up to 128 MiB more under the 8-collector ingest bench, whose `http` rows take
/// ~590 bytes each in Arrow, so a chunk is ~10 MB.
const FLUSH_CHUNK_ROWS: usize = 16_384;

/// A table's buffered rows in its sort order, by UTC date.
struct SortedRows {
    /// The buffered batches, all with one schema.
    batches: Vec<RecordBatch>,
    /// Where each batch's rows start in the row numbering of `by_date`.
    starts: Vec<usize>,
    /// Per date, its rows (numbered across `batches`) in sort order.
    by_date: Vec<(Date, Vec<u32>)>,
}

impl SortedRows {
    fn schema(&self) -> arrow_schema::SchemaRef {
        self.batches[0].schema()
    }

    /// `rows` (numbers of `by_date`) as (batch, row) positions.
    fn positions(&self, rows: &[u32], out: &mut Vec<(usize, usize)>) {
        out.clear();
        out.extend(rows.iter().map(|&r| {
            let r = r as usize;
            let b = self.starts.partition_point(|&s| s <= r) - 1;
            (b, r - self.starts[b])
        }));
    }
}

/// Sorts a table's rows by its sort columns ([`TableRef::sort_columns`]) and splits them
/// by UTC date, without copying them: only the sort columns are concatenated.
fn sorted_by_date(table: &TableRef, batches: &[RecordBatch]) -> Result<SortedRows> {
    let enc = |e: arrow_schema::ArrowError| WriterError::Encode { table: table.to_string(), message: e.to_string() };
    let t0 = Instant::now();
    let batches: Vec<RecordBatch> = if batches.iter().all(|b| b.schema().fields() == batches[0].schema().fields()) {
        batches.to_vec()
    } else {
        // A custom table that gained columns while these rows waited: the union of the
        // batches' columns (each only ever adds), missing values NULL.
        let mut fields: Vec<arrow_schema::FieldRef> = Vec::new();
        for b in batches {
            for f in b.schema().fields() {
                if !fields.iter().any(|g| g.name() == f.name()) {
                    fields.push(Arc::clone(f));
                }
            }
        }
        let schema = Arc::new(arrow_schema::Schema::new_with_metadata(fields, batches[0].schema().metadata().clone()));
        batches.iter().map(|b| crate::custom::conform_to(&schema, b)).collect::<Result<_, _>>().map_err(enc)?
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if u32::try_from(rows).is_err() {
        return Err(WriterError::Encode { table: table.to_string(), message: format!("{rows} rows in one flush") });
    }
    let starts: Vec<usize> = batches
        .iter()
        .scan(0, |next, b| {
            let start = *next;
            *next += b.num_rows();
            Some(start)
        })
        .collect();
    let column = |name: &str| -> Result<arrow_array::ArrayRef> {
        let parts: Vec<&dyn Array> = batches
            .iter()
            .map(|b| {
                b.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| WriterError::Encode {
                    table: table.to_string(),
                    message: format!("no column {name}"),
                })
            })
            .collect::<Result<_>>()?;
        arrow_select::concat::concat(&parts).map_err(enc)
    };
    let keys: Vec<arrow_array::ArrayRef> = table.sort_columns().iter().map(|c| column(c)).collect::<Result<_>>()?;
    let t1 = Instant::now();
    let sort: Vec<SortColumn> = keys.iter().map(|k| SortColumn { values: Arc::clone(k), options: None }).collect();
    let indices = lexsort_to_indices(&sort, None).map_err(enc)?;
    let t2 = Instant::now();
    let ts_index = table.sort_columns().iter().position(|c| *c == "ts");
    let ts_column = match ts_index {
        Some(i) => Arc::clone(&keys[i]),
        None => column("ts")?,
    };
    drop(keys);
    let ts = ts_column.as_any().downcast_ref::<TimestampMicrosecondArray>().ok_or_else(|| WriterError::Encode {
        table: table.to_string(),
        message: "ts is not a microsecond timestamp".into(),
    })?;
    let mut by_date: BTreeMap<Date, Vec<u32>> = BTreeMap::new();
    for &row in indices.values() {
        by_date.entry(Date::from_micros(ts.value(row as usize))).or_default().push(row);
    }
    tracing::debug!(%table, rows, concat_ms = ms(t1 - t0), sort_ms = ms(t2 - t1), "flush: sorted");
    Ok(SortedRows { batches, starts, by_date: by_date.into_iter().collect() })
}

/// The row order of `batch` by the table's sort columns.
pub fn sort_indices(
    table: &TableRef,
    batch: &RecordBatch,
) -> std::result::Result<arrow_array::UInt32Array, arrow_schema::ArrowError> {
    let sort: Vec<SortColumn> = table
        .sort_columns()
        .iter()
        .map(|c| SortColumn {
            values: Arc::clone(batch.column_by_name(c).expect("every table has its sort columns")),
            options: None,
        })
        .collect();
    lexsort_to_indices(&sort, None)
}

/// zstd level of flushed files: a flush is on the ingest path, so it stays cheap;
/// compaction rewrites a finished day at [`COMPACTED_ZSTD_LEVEL`].
const FLUSH_ZSTD_LEVEL: i32 = 3;

/// zstd level of the files compaction writes with the lake's writer (`metrics`; the other
/// tables are merged by DuckDB's COPY, see `maintenance::compact::COPY_OPTIONS`). On a
/// generated metrics day (1 M samples, with the encodings of [`metrics_columns`]) level 3
/// gave 1.596 B/sample, 15 1.579, 19 1.526 (`lake-metrics-whatif`): 15, as for http; 19
/// would save 3 % more for several times the CPU and the compressor's memory inside
/// `lake serve`.
pub const COMPACTED_ZSTD_LEVEL: i32 = 15;

/// The properties of every Parquet file the writer commits for a table (`schema`): zstd,
/// page statistics, the table's sort columns and row group size, and for `metrics` its
/// per-column encodings ([`metrics_columns`]). Shared with `lake-gen`, which writes the
/// same files.
pub fn parquet_properties(table: &TableRef, schema: &arrow_schema::Schema) -> WriterProperties {
    properties_builder(table, schema, FLUSH_ZSTD_LEVEL).build()
}

/// [`parquet_properties`] at [`COMPACTED_ZSTD_LEVEL`]: the files compaction writes with the
/// lake's writer (a finished day, kept for good).
pub fn compacted_parquet_properties(table: &TableRef, schema: &arrow_schema::Schema) -> WriterProperties {
    properties_builder(table, schema, COMPACTED_ZSTD_LEVEL).build()
}

/// [`parquet_properties`] at any zstd level, to be adjusted further (the what-if tool).
pub fn properties_builder(table: &TableRef, schema: &arrow_schema::Schema, zstd_level: i32) -> WriterPropertiesBuilder {
    // Parquet's sorting columns are leaf columns: the leading sort columns that are one
    // (a map such as `labels` is two leaves and ends the declared prefix; `ts` after it is
    // ordered within a series, not within (name, host)).
    let sorting = table
        .sort_columns()
        .iter()
        .map(|c| schema.index_of(c).expect("every table has its sort columns"))
        .take_while(|i| !schema.field(*i).data_type().is_nested())
        .map(|i| SortingColumn { column_idx: i as i32, descending: false, nulls_first: false })
        .collect();
    let b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level).expect("valid level")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(table.row_group_rows()))
        .set_sorting_columns(Some(sorting));
    match table {
        TableRef::Builtin(lake_format::Table::Metrics) => metrics_columns(b),
        _ => b,
    }
}

/// The `metrics` table's column encodings (issue 23 §1), for rows in series-major order
/// (name, host, labels, ts: [`lake_format::Table::sort_columns`]). Measured with
/// `lake-metrics-whatif` on a generated day (999,905 samples, 155 series), bytes per
/// sample of the whole file, each added to the one before: series-major with the parquet
/// crate's defaults 5.255 (the writer before: 5.586 in (name, host, ts) order), then
/// - `ts` DELTA_BINARY_PACKED, no dictionary: 3.452. In series order the deltas are the
///   sampling interval, nearly constant, and pack to a few bits: `ts` costs 0.002 B,
///   against 1.8 as a dictionary of the day's ticks;
/// - `value` BYTE_STREAM_SPLIT, no dictionary: 1.825. The bytes of one significance side
///   by side (sign and exponent, then the high mantissa bytes) are what zstd finds
///   repeats in; PLAIN was 2.24, a dictionary (falling back to BYTE_STREAM_SPLIT) 1.60;
/// - data pages as large as a row group (128Ki rows): 1.596. zstd compresses each page
///   alone, and the crate's 20,000-row pages cut a series into short frames.
///
/// `name`, `host` and the `labels` keys and values keep their dictionaries (the default):
/// in a series-major file each repeats in long runs that RLE makes nearly free (0.003 B).
/// These encodings are Parquet 2's, which DuckDB, pyarrow and Spark read; the pages stay
/// data page v1, so earlier readers of the lake's files read them as before.
pub fn metrics_columns(b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    let rows = lake_format::Table::Metrics.row_group_rows();
    b.set_data_page_row_count_limit(rows)
        .set_data_page_size_limit(rows * 8)
        .set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT)
}

/// Writes the `rows` of `sorted` (numbers of [`SortedRows::by_date`], in order) to one
/// Parquet file, [`FLUSH_CHUNK_ROWS`] at a time.
fn write_parquet(table: &TableRef, path: &Path, sorted: &SortedRows, rows: &[u32]) -> Result<()> {
    let enc = |message: String| WriterError::Encode { table: table.to_string(), message };
    let schema = sorted.schema();
    let props = parquet_properties(table, &schema);
    let file = File::create(path).map_err(io_err("create", path))?;
    let t0 = Instant::now();
    let mut w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| enc(e.to_string()))?;
    let batches: Vec<&RecordBatch> = sorted.batches.iter().collect();
    let mut positions = Vec::with_capacity(FLUSH_CHUNK_ROWS.min(rows.len()));
    for chunk in rows.chunks(FLUSH_CHUNK_ROWS) {
        sorted.positions(chunk, &mut positions);
        let part =
            arrow_select::interleave::interleave_record_batch(&batches, &positions).map_err(|e| enc(e.to_string()))?;
        w.write(&part).map_err(|e| enc(e.to_string()))?;
    }
    let file = w.into_inner().map_err(|e| enc(e.to_string()))?;
    let t1 = Instant::now();
    file.sync_all().map_err(io_err("fsync", path))?;
    tracing::debug!(%table, rows = rows.len(), encode_ms = ms(t1 - t0), fsync_ms = ms(t1.elapsed()), "flush: file written");
    Ok(())
}

/// Writes one flush and commits it; once its files are visible its rows leave `buffers`
/// (atomically for queries). Blocking: run it off the async runtime.
/// `state` is the state after this flush (its `next_flush` already advanced).
/// Returns the rows and files written.
pub fn write_flush(
    data: &Path,
    flush: u64,
    taken: &HashMap<TableRef, Vec<RecordBatch>>,
    state: &State,
    buffers: &Buffers,
) -> Result<(usize, usize)> {
    let stage = staging_dir(data).join(format!("flush-{flush}"));
    let staged = stage_files(data, &stage, flush, taken, state);
    let (mpath, manifest, rows) = match staged {
        Ok(s) => s,
        Err(e) => {
            // Before the commit point nothing is visible: free the space (a full disk is
            // the usual cause) so the retry starts clean.
            let _ = fs::remove_dir_all(&stage);
            let _ = fs::remove_file(staging_dir(data).join(format!("flush-{flush}.json")));
            let _ = fs::remove_file(staging_dir(data).join(format!("flush-{flush}.tmp")));
            return Err(e);
        }
    };
    {
        let _exclusive = buffers.exclusive();
        apply_manifest(data, &mpath, &manifest)?;
        buffers.finish_flush();
    }
    Ok((rows, manifest.moves.len()))
}

/// Steps 1 and 2: staged, fsynced files and the manifest that commits them.
fn stage_files(
    data: &Path,
    stage: &Path,
    flush: u64,
    taken: &HashMap<TableRef, Vec<RecordBatch>>,
    state: &State,
) -> Result<(PathBuf, Manifest, usize)> {
    fs::create_dir_all(stage).map_err(io_err("create", stage))?;
    let mut moves = Vec::new();
    let mut rows = 0;
    let mut tables: Vec<_> = taken.iter().filter(|(_, b)| !b.is_empty()).collect();
    tables.sort_by(|a, b| a.0.cmp(b.0));
    for (table, batches) in tables {
        let sorted = sorted_by_date(table, batches)?;
        for (date, date_rows) in &sorted.by_date {
            let name = format!("{}.{date}.{}", table.name(), layout::PARQUET_EXT);
            let staged = stage.join(&name);
            write_parquet(table, &staged, &sorted, date_rows)?;
            rows += date_rows.len();
            let fin = layout::partition_dir(Path::new(""), table.name(), *date).join(layout::file_name("f", flush));
            moves.push((staged.strip_prefix(data).unwrap_or(&staged).to_path_buf(), fin));
        }
    }
    sync_dir(stage).map_err(io_err("fsync", stage))?;
    let manifest = Manifest { moves, state: VersionedState::from(state.clone()) };
    let mpath = staging_dir(data).join(format!("flush-{flush}.json"));
    let bytes = serde_json::to_vec(&manifest).map_err(|e| io_err("encode", &mpath)(io::Error::other(e)))?;
    write_atomic(&mpath, &bytes).map_err(io_err("write", &mpath))?;
    Ok((mpath, manifest, rows))
}

/// Step 3 of the commit; safe to repeat after a crash at any point inside it.
fn apply_manifest(data: &Path, mpath: &Path, manifest: &Manifest) -> Result<()> {
    crate::maintenance::swap::apply_adds(data, &manifest.moves).map_err(|e| match e {
        crate::maintenance::swap::SwapError::Io { op, path, source } => WriterError::Io { op, path, source },
        other => {
            WriterError::Io { op: "commit", path: mpath.to_path_buf(), source: io::Error::other(other.to_string()) }
        }
    })?;
    let state = manifest.state.current();
    let spath = state_path(data);
    state.store(&spath).map_err(io_err("write", &spath))?;
    if let Some(stem) = mpath.file_stem() {
        let stage = staging_dir(data).join(stem);
        if stage.exists() {
            fs::remove_dir_all(&stage).map_err(io_err("remove", &stage))?;
        }
    }
    fs::remove_file(mpath).map_err(io_err("remove", mpath))?;
    Ok(())
}

/// Finishes or discards flushes interrupted by a crash; returns the committed state.
pub fn recover(data: &Path) -> Result<State> {
    let staging = staging_dir(data);
    fs::create_dir_all(&staging).map_err(io_err("create", &staging))?;
    let mut entries: Vec<PathBuf> =
        fs::read_dir(&staging).map_err(io_err("list", &staging))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    // Other staging entries belong to swaps (crate::maintenance::swap), which recover their own.
    let is_flush = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("flush-"));
    entries.retain(is_flush);
    for m in entries.iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let bytes = fs::read(m).map_err(io_err("read", m))?;
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(manifest) => {
                tracing::warn!(manifest = %m.display(), "completing a flush interrupted by a crash");
                apply_manifest(data, m, &manifest)?;
            }
            // write_atomic renames a complete file into place, so this is outside damage.
            Err(e) => tracing::error!(manifest = %m.display(), %e, "unreadable flush manifest left in place"),
        }
    }
    for e in fs::read_dir(&staging).map_err(io_err("list", &staging))? {
        let p = e.map_err(io_err("list", &staging))?.path();
        if !is_flush(&p) {
            continue;
        }
        let uncommitted = p.is_dir() && !p.with_extension("json").exists();
        if uncommitted || p.extension().is_some_and(|e| e == "tmp") {
            tracing::info!(path = %p.display(), "removing uncommitted staging data");
            if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) }.map_err(io_err("remove", &p))?;
        }
    }
    let spath = state_path(data);
    let mut state = State::load(&spath).map_err(io_err("read", &spath))?;
    // A flush names its files after its number, and its rename replaces whatever has the
    // name: a state behind the files beside it (lost, or the files restored or copied in
    // from another lake) would have the next flushes replace committed files, losing their
    // rows. The numbers go on after the highest one in use.
    if let Some(highest) = highest_flush_file(data).filter(|h| *h >= state.next_flush) {
        tracing::warn!(
            next_flush = state.next_flush,
            highest,
            "the state's flush number is behind the files on disk; continuing after the highest"
        );
        state.next_flush = highest.saturating_add(1);
    }
    Ok(state)
}

/// The highest flush number of a committed file (`tables/*/date=*/f-<n>.parquet`).
fn highest_flush_file(data: &Path) -> Option<u64> {
    let dirs = |p: &Path| fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path());
    dirs(&data.join(layout::TABLES_DIR))
        .flat_map(|table| dirs(&table).collect::<Vec<_>>())
        .flat_map(|partition| dirs(&partition).collect::<Vec<_>>())
        .filter_map(|file| layout::file_seq("f", file.file_name()?.to_str()?))
        .max()
}

/// Timestamps of a batch, for tests and checks.
pub fn ts_values(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column_by_name("ts")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}

/// Test support: asserts that a `metrics` file's footer names the encodings of
/// [`metrics_columns`] (`ts` DELTA_BINARY_PACKED, `value` BYTE_STREAM_SPLIT, neither as a
/// dictionary), and reads it back with plain DuckDB `read_parquet` as (host,
/// `labels[label]`, ts in µs, the value's bits), in file order.
#[cfg(test)]
pub(crate) fn read_back_metrics(path: &Path, label: &str) -> Vec<(String, String, i64, u64)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    for rg in reader.metadata().row_groups() {
        for c in rg.columns() {
            let enc: Vec<Encoding> = c.encodings().collect();
            match c.column_path().string().as_str() {
                "ts" => assert!(enc.contains(&Encoding::DELTA_BINARY_PACKED), "ts: {enc:?}"),
                "value" => assert!(enc.contains(&Encoding::BYTE_STREAM_SPLIT), "value: {enc:?}"),
                _ => continue,
            }
            assert!(!enc.contains(&Encoding::RLE_DICTIONARY), "{}: {enc:?}", c.column_path());
        }
    }
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let sql = format!("SELECT host, labels['{label}'], epoch_us(ts), value FROM read_parquet('{}')", path.display());
    let mut stmt = conn.prepare(&sql).unwrap();
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, f64>(3)?.to_bits()))).unwrap();
    rows.map(|r| r.unwrap()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use lake_format::rows::MetricsBuilder;
    use lake_format::Table;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    const DAY: i64 = 86_400_000_000;

    fn batch(host: &str, ts: &[i64]) -> RecordBatch {
        let mut b = MetricsBuilder::new();
        for t in ts {
            b.push(*t, host, "load1", *t as f64, &[("k", "v")]);
        }
        b.finish()
    }

    fn read_all(data: &Path) -> Vec<(PathBuf, Vec<RecordBatch>)> {
        let mut files: Vec<PathBuf> = Vec::new();
        let root = layout::table_dir(data, "metrics");
        for d in fs::read_dir(&root).into_iter().flatten() {
            for f in fs::read_dir(d.unwrap().path()).unwrap() {
                files.push(f.unwrap().path());
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let r = ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap()).unwrap().build().unwrap();
                (p.clone(), r.map(|b| b.unwrap()).collect())
            })
            .collect()
    }

    #[test]
    fn flush_sorts_by_host_then_ts_and_splits_days() {
        let dir = tempfile::tempdir().unwrap();
        let taken =
            HashMap::from([(Table::Metrics.into(), vec![batch("b", &[DAY + 5, 3]), batch("a", &[DAY + 1, 7, 2])])]);
        let state = State { next_flush: 1, ..Default::default() };
        assert_eq!(write_flush(dir.path(), 0, &taken, &state, &Buffers::default()).unwrap(), (5, 2));
        let files = read_all(dir.path());
        assert_eq!(files.len(), 2);
        assert!(files[0].0.ends_with("date=1970-01-01/f-000000000000.parquet"));
        assert_eq!(ts_values(&files[0].1[0]), vec![2, 7, 3]);
        assert_eq!(ts_values(&files[1].1[0]), vec![DAY + 1, DAY + 5]);
        assert_eq!(files[0].1[0].schema().fields(), Table::Metrics.schema().fields());
        assert_eq!(recover(dir.path()).unwrap(), state);
        assert_eq!(fs::read_dir(staging_dir(dir.path())).unwrap().count(), 0);
    }

    /// More rows than one chunk of [`FLUSH_CHUNK_ROWS`], from several batches and over two
    /// days: every row lands once, each file in sort order (name, host, labels, ts; the labels here are one).
    #[test]
    fn a_flush_larger_than_a_chunk_writes_every_row_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let per_batch = FLUSH_CHUNK_ROWS / 2 + 7;
        let batches: Vec<RecordBatch> = (0..3)
            .map(|b| {
                let mut m = MetricsBuilder::new();
                for i in 0..per_batch {
                    // Interleaved hosts and names, timestamps straddling midnight.
                    let t = DAY - 1000 + ((i * 7919 + b * 13) % 2000) as i64;
                    m.push(t, ["b", "a", "c"][(i + b) % 3], ["load1", "cpu"][i % 2], i as f64, &[("k", "v")]);
                }
                m.finish()
            })
            .collect();
        let taken = HashMap::from([(Table::Metrics.into(), batches)]);
        let state = State { next_flush: 1, ..Default::default() };
        let (rows, files) = write_flush(dir.path(), 0, &taken, &state, &Buffers::default()).unwrap();
        assert_eq!((rows, files), (3 * per_batch, 2));
        let mut total = 0;
        for (path, read) in read_all(dir.path()) {
            let mut keys = Vec::new();
            for b in &read {
                let name = b.column_by_name("name").unwrap().as_string::<i32>();
                let host = b.column_by_name("host").unwrap().as_string::<i32>();
                let ts = ts_values(b);
                for (i, t) in ts.into_iter().enumerate() {
                    keys.push((name.value(i).to_string(), host.value(i).to_string(), t));
                }
            }
            let day = if path.to_string_lossy().contains("1970-01-01") { 0 } else { DAY };
            assert!(keys.iter().all(|k| (day..day + DAY).contains(&k.2)), "{}", path.display());
            assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{} is sorted", path.display());
            total += keys.len();
        }
        assert_eq!(total, 3 * per_batch);
    }

    /// Issue 23 §1: a flushed `metrics` file is series-major (name, host, labels, ts), its
    /// footer names the chosen encodings (`ts` DELTA_BINARY_PACKED, `value`
    /// BYTE_STREAM_SPLIT, no dictionary for either), and plain DuckDB `read_parquet` reads
    /// back exactly the values written, bit for bit.
    #[test]
    fn metrics_files_carry_their_encodings_and_plain_duckdb_reads_them_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let odd = [0.1 + 0.2, -0.0, f64::MIN_POSITIVE, 1e300, -123_456_789.125, 42.0];
        let mut b = MetricsBuilder::new();
        let mut expected = Vec::new();
        for t in 0..300i64 {
            // Series interleaved as a collector sends them: every series of a tick together.
            for (host, cpu) in [("b", "1"), ("a", "0"), ("a", "1"), ("b", "0")] {
                let ts = DAY + t * 10_000_000 + 123;
                let v = odd[(t as usize + cpu.len() + host.len()) % odd.len()] * (t as f64 + 1.0);
                b.push(ts, host, "cpu_usage_percent", v, &[("cpu", cpu)]);
                expected.push((host.to_string(), cpu.to_string(), ts, v.to_bits()));
            }
        }
        let taken = HashMap::from([(Table::Metrics.into(), vec![b.finish()])]);
        write_flush(dir.path(), 0, &taken, &State { next_flush: 1, ..Default::default() }, &Buffers::default())
            .unwrap();
        let files = read_all(dir.path());
        assert_eq!(files.len(), 1);
        let path = &files[0].0;

        let got = read_back_metrics(path, "cpu");
        expected.sort();
        assert_eq!(got, expected, "series-major, every value exact");
    }

    #[test]
    fn a_state_behind_the_files_never_has_a_flush_replace_one() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        for flush in [0, 6] {
            let taken = HashMap::from([(Table::Metrics.into(), vec![batch("a", &[flush as i64])])]);
            let state = State { next_flush: flush + 1, ..Default::default() };
            write_flush(data, flush, &taken, &state, &Buffers::default()).unwrap();
        }
        // The state lost (or older than files copied in): it would number the next flush 0.
        fs::remove_file(state_path(data)).unwrap();
        let state = recover(data).unwrap();
        assert_eq!(state.next_flush, 7, "after the highest f-<n> on disk");
        let taken = HashMap::from([(Table::Metrics.into(), vec![batch("a", &[9])])]);
        let after = State { next_flush: 8, ..state };
        write_flush(data, 7, &taken, &after, &Buffers::default()).unwrap();
        let rows: Vec<i64> = read_all(data).iter().flat_map(|(_, b)| b.iter().flat_map(ts_values)).collect();
        assert_eq!(rows, [0, 6, 9], "every committed row kept");
        // A state ahead of the files is kept as it is.
        assert_eq!(recover(data).unwrap().next_flush, 8);
    }

    #[test]
    fn a_crash_before_the_manifest_discards_and_after_it_completes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let taken = HashMap::from([(Table::Metrics.into(), vec![batch("a", &[1, 2])])]);
        let state = State { next_flush: 1, ..Default::default() };
        write_flush(data, 0, &taken, &state, &Buffers::default()).unwrap();

        // Crash after staging, before the manifest: the flush vanishes.
        let stage = staging_dir(data).join("flush-1");
        fs::create_dir_all(&stage).unwrap();
        fs::write(stage.join("metrics.1970-01-01.parquet"), b"PAR1 torn").unwrap();
        assert_eq!(recover(data).unwrap(), state);
        assert!(!stage.exists());
        assert_eq!(read_all(data).len(), 1);

        // Crash after the manifest with one file already renamed: recovery completes it.
        let next = State { next_flush: 2, ..Default::default() };
        let taken = HashMap::from([(Table::Metrics.into(), vec![batch("a", &[3, DAY])])]);
        write_flush(data, 1, &taken, &next, &Buffers::default()).unwrap();
        let files = read_all(data);
        assert_eq!(files.len(), 3);
        // Rebuild the mid-commit situation: manifest present, one file back in staging.
        let manifest = Manifest {
            moves: vec![(
                PathBuf::from("staging/flush-1/metrics.1970-01-02.parquet"),
                PathBuf::from("tables/metrics/date=1970-01-02/f-000000000001.parquet"),
            )],
            state: VersionedState::from(next.clone()),
        };
        fs::create_dir_all(staging_dir(data).join("flush-1")).unwrap();
        fs::rename(data.join(&manifest.moves[0].1), data.join(&manifest.moves[0].0)).unwrap();
        fs::write(staging_dir(data).join("flush-1.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
        assert_eq!(read_all(data).len(), 2);
        assert_eq!(recover(data).unwrap(), next);
        assert_eq!(read_all(data).len(), 3);
    }

    /// `http` rows of the ingest benchmark: one host per batch, eight hosts.
    fn http_batches(batches: usize, rows: usize) -> Vec<RecordBatch> {
        (0..batches)
            .map(|n| {
                let base = 1_700_000_000_000_000 + (n * rows) as i64;
                crate::testing::http_rows(&format!("sim-{}", n % 8), rows, n as u64 % 32, base, None)
            })
            .collect()
    }

    /// Flush cost on 1M `http` rows, stage by stage:
    /// `cargo test --release -p lake --lib flush_microbench -- --ignored --nocapture`.
    #[test]
    #[ignore = "a benchmark: run it in release mode on purpose"]
    fn flush_microbench() {
        let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).with_test_writer().try_init();
        let batches = http_batches(100, 10_000);
        let bytes: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        println!("1M http rows: {} MiB in memory", bytes >> 20);
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let taken = HashMap::from([(Table::Http.into(), batches.clone())]);
            let state = State { next_flush: 1, ..Default::default() };
            let t = Instant::now();
            let (rows, files) = write_flush(dir.path(), 0, &taken, &state, &Buffers::default()).unwrap();
            let total = t.elapsed();
            let mut size = 0;
            for d in fs::read_dir(layout::table_dir(dir.path(), "http")).unwrap() {
                for f in fs::read_dir(d.unwrap().path()).unwrap() {
                    size += f.unwrap().metadata().unwrap().len();
                }
            }
            println!(
                "write_flush: {rows} rows, {files} files, {:.0} ms, {:.0} krows/s, {:.2} bytes/row",
                total.as_secs_f64() * 1e3,
                rows as f64 / total.as_secs_f64() / 1e3,
                size as f64 / rows as f64
            );
        }
    }

    #[test]
    fn buffers_stay_visible_while_flushing_and_return_on_failure() {
        let b = Buffers::default();
        b.push(Table::Metrics, vec![batch("a", &[1])]);
        let taken = b.start_flush();
        assert_eq!(taken[&Table::Metrics.into()].len(), 1);
        b.push(Table::Metrics, vec![batch("a", &[2])]);
        assert_eq!(b.snapshot(Table::Metrics).len(), 2);
        b.abort_flush();
        assert_eq!(b.usage().0, 2);
        let again = b.start_flush();
        assert_eq!(ts_values(&again[&Table::Metrics.into()][0]), vec![1]);
        b.finish_flush();
        assert!(b.snapshot(Table::Metrics).is_empty());
    }

    /// Issue 23 §3: queries reuse a pooled connection's views while the generation stays;
    /// a flush commit and a swap (compaction, retention, restore) each move it, so every
    /// row is seen once across them, on the same connection.
    #[test]
    fn a_pooled_query_connection_sees_every_row_once_across_a_flush_and_a_swap() {
        use lake_query::engine::{Engine, Limits};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let buffers = Arc::new(Buffers::default());
        let engine = Engine::open(data, buffers.clone(), Limits::default()).unwrap();
        let values = || -> Vec<i64> {
            let r = engine.query_blocking("select epoch_us(ts) from metrics order by 1").unwrap();
            r.batches
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<arrow_array::types::Int64Type>().values().to_vec())
                .collect()
        };
        buffers.push(Table::Metrics, vec![batch("a", &[1, 2])]);
        assert_eq!(values(), [1, 2], "fresh rows");
        let before = buffers.generation();
        let taken = buffers.start_flush();
        assert_eq!(values(), [1, 2], "while the flush writes");
        write_flush(data, 0, &taken, &State { next_flush: 1, ..Default::default() }, &buffers).unwrap();
        assert!(buffers.generation() > before, "a flush commit moves the generation");
        assert_eq!(values(), [1, 2], "committed: read from the file, once");
        buffers.push(Table::Metrics, vec![batch("a", &[3])]);
        assert_eq!(values(), [1, 2, 3]);

        // Compaction: the flushed file replaced by a rewrite of it, through the server's swapper.
        let swapper =
            crate::maintenance::swap::Swapper::with_buffers(data, std::time::Duration::ZERO, buffers.clone()).unwrap();
        let old = read_all(data).remove(0).0;
        let rel_old = old.strip_prefix(data).unwrap().to_path_buf();
        let stage = swapper.stage_dir().unwrap();
        let staged = stage.join("c.parquet");
        fs::copy(&old, &staged).unwrap();
        let rel_new = rel_old.with_file_name(layout::file_name("c", 1));
        let before = buffers.generation();
        swapper.commit(vec![(staged, rel_new.clone())], vec![rel_old]).unwrap();
        assert!(buffers.generation() > before, "a swap moves the generation");
        assert_eq!(values(), [1, 2, 3], "after the compaction swap: each row once");

        // Restore: a file comes back into a partition of its own.
        let stage = swapper.stage_dir().unwrap();
        let staged = stage.join("r.parquet");
        fs::copy(data.join(&rel_new), &staged).unwrap();
        let restored = rel_new.parent().unwrap().with_file_name("date=1969-12-31").join(layout::file_name("r", 1));
        swapper.commit(vec![(staged, restored)], Vec::new()).unwrap();
        assert_eq!(values(), [1, 1, 2, 2, 3], "the restored file is read, once");
    }
}
