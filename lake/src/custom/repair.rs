//! Repair of custom tables stored before column names had to be unique ignoring case.
//!
//! Before that rule ([`lake_format::custom::same_name`]), `{"Host": "x"}` or a log with
//! both `level` and `Level` added a second column of the same name to DuckDB, and no
//! query could be run any more. [`run`] fixes such a lake when `lake serve` starts, before
//! the WAL is replayed and before any query, losing no value:
//!
//! 1. The fixed schema keeps, for each name, `ts`, `host`, `_extra` or the first column;
//!    the others leave it ([`CustomSchema::without_collisions`]) and are listed in its
//!    `moved_to_extra`. `_extra` is added if the table had none.
//! 2. Every committed file of the table holding a column the fixed schema lacks (a moved
//!    one) is rewritten with those values merged into its `_extra` under their names ([`super::merge_into_extra`]):
//!    written under `<data>/staging/`, then committed through the [`Swapper`] (fsync,
//!    manifest, rename, directory fsync) under a new name `r-<µs>.parquet`, the old file
//!    removed. Files are never changed in place, so the archive's ledger (name + size)
//!    stays right and the next archive run uploads the new file.
//! 3. The fixed schema file is written (atomically) last.
//!
//! A stop anywhere is harmless: an uncommitted stage is discarded and a committed swap
//! rolled forward by the next start's [`Swapper`], files already rewritten no longer hold
//! a moved column, and the schema is written only once every file is done — so the next
//! start simply repeats the repair on what is left. Tables whose schema lists
//! `moved_to_extra` get their files checked at every start (a file from before the
//! repair can come back through `lake restore`); other tables cost nothing.
//!
//! A file that compaction merged before the repair holds no second column of the name:
//! DuckDB read both as the first (`"Host"` binds to `host`) and wrote the copies as
//! `host_1`, `Level_1`; the second column's values were lost then. The repair moves any
//! column its table's schema lacks into `_extra` too, so those files stay mergeable.
//!
//! The WAL may still hold batches of such a table with the old columns: replay conforms
//! them to the fixed schema with [`super::conform_to`], which moves the same values to
//! `_extra`. A file that cannot be read or rewritten is logged and left as it is (queries
//! do not see its moved column; the next start tries again); the schema is fixed anyway,
//! so the table's queries work.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use lake_format::custom::{self, CustomSchema, TableRef, EXTRA_COLUMN};
use lake_format::layout::{self, PARQUET_EXT};

use crate::maintenance::swap::{SwapError, Swapper};

/// Why the repair could not run at all (per-table trouble is logged, not returned).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The staging area for rewritten files could not be prepared.
    #[error("preparing to repair custom tables: {0}")]
    Swap(#[from] SwapError),
}

/// Why one file could not be repaired.
#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("{0}")]
    Swap(#[from] SwapError),
}

/// What the repair did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The table.
    pub table: String,
    /// Columns taken out of the schema now (kept name, moved name).
    pub moved: Vec<(String, String)>,
    /// Files rewritten with those columns' values in `_extra`.
    pub files: usize,
    /// Files that could not be rewritten (logged; tried again at the next start).
    pub failed: usize,
}

/// Repairs every custom table under `data` whose schema has columns differing only in
/// case, or whose files may still hold columns an earlier repair moved. Blocking; call
/// before the WAL is replayed and queries are served. Returns what was done, per table.
pub fn run(data: &Path) -> Result<Vec<Repaired>, RepairError> {
    let (schemas, _damaged) = custom::load_all(data);
    let todo: Vec<CustomSchema> =
        schemas.into_iter().filter(|s| !s.collisions().is_empty() || !s.moved_to_extra.is_empty()).collect();
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    // Offline use of the swapper: nothing reads the files yet, so removed files go at once.
    let swapper = Swapper::open(data, Duration::ZERO)?;
    let mut report = Vec::new();
    for schema in todo {
        let (fixed, collisions) = schema.without_collisions();
        let (mut files, mut failed) = (0, 0);
        for path in committed_files(data, &fixed.name) {
            match repair_file(&swapper, data, &fixed, &path) {
                Ok(true) => files += 1,
                Ok(false) => {}
                Err(e) => {
                    failed += 1;
                    tracing::error!(table = %fixed.name, file = %path.display(), error = %e, "custom table file not repaired; its moved columns stay out of queries until the next start repairs it");
                }
            }
        }
        if !collisions.is_empty() {
            let path = custom::schema_path(data, &fixed.name);
            let stored = serde_json::to_vec_pretty(&fixed)
                .map_err(std::io::Error::other)
                .and_then(|b| lake_format::durable::write_atomic(&path, &b));
            if let Err(e) = stored {
                tracing::error!(table = %fixed.name, path = %path.display(), error = %e, "repaired custom table schema not written; the next start tries again");
                failed += 1;
            }
        }
        let moved: Vec<(String, String)> = collisions.into_iter().map(|c| (c.kept, c.moved)).collect();
        if !moved.is_empty() || files > 0 {
            let pairs: Vec<String> = moved.iter().map(|(k, m)| format!("{m} (beside {k})")).collect();
            tracing::warn!(
                table = %fixed.name,
                moved = %pairs.join(", "),
                files,
                failed,
                "custom table repaired: columns whose names differed only in case now live in _extra under their names"
            );
        }
        report.push(Repaired { table: fixed.name.clone(), moved, files, failed });
    }
    Ok(report)
}

/// `tables/<table>/date=*/*.parquet` under `data`, hidden files excluded, sorted.
fn committed_files(data: &Path, table: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in std::fs::read_dir(layout::table_dir(data, table)).into_iter().flatten().flatten() {
        if !part.file_name().to_string_lossy().starts_with("date=") {
            continue;
        }
        for f in std::fs::read_dir(part.path()).into_iter().flatten().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(&format!(".{PARQUET_EXT}")) && !name.starts_with('.') {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Rewrites the file at `path` if it holds a column `fixed` lacks (one it moved to
/// `_extra`, or one a compaction before the repair made of it); `false` when it holds none.
fn repair_file(swapper: &Swapper, data: &Path, fixed: &CustomSchema, path: &Path) -> Result<bool, FileError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?;
    let file_schema = Arc::clone(builder.schema());
    let known: Vec<String> = fixed.all_columns().into_iter().map(|(n, _)| n).collect();
    let moved: Vec<usize> =
        (0..file_schema.fields().len()).filter(|i| !known.contains(file_schema.field(*i).name())).collect();
    if moved.is_empty() {
        return Ok(false);
    }
    // The file's own columns (and types) but the moved ones, `_extra` holding their values.
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(i, _)| !moved.contains(i))
        .map(|(_, f)| f.as_ref().clone())
        .collect();
    if !fields.iter().any(|f| f.name() == EXTRA_COLUMN) {
        fields.push(Field::new(EXTRA_COLUMN, DataType::Utf8, true));
    }
    let out_schema = Arc::new(Schema::new_with_metadata(fields, file_schema.metadata().clone()));
    let table = TableRef::Custom(fixed.name.as_str().into());
    let stage = swapper.stage_dir()?;
    let staged = stage.join(format!("repaired.{PARQUET_EXT}"));
    let props = crate::ingest::writer::parquet_properties(&table, &out_schema);
    let mut writer = ArrowWriter::try_new(File::create(&staged)?, Arc::clone(&out_schema), Some(props))?;
    for batch in builder.build()? {
        let batch = batch?;
        let extra = super::merge_into_extra(&batch, &moved)?;
        let columns = out_schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == EXTRA_COLUMN {
                    Ok(Arc::clone(&extra))
                } else {
                    batch
                        .column_by_name(f.name())
                        .cloned()
                        .ok_or_else(|| arrow_schema::ArrowError::SchemaError(format!("column {} vanished", f.name())))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        writer.write(&RecordBatch::try_new(Arc::clone(&out_schema), columns)?)?;
    }
    writer.close()?;
    let rel_old = path
        .strip_prefix(data)
        .map_err(|_| std::io::Error::other(format!("{} is not under {}", path.display(), data.display())))?
        .to_path_buf();
    let dir = path.parent().ok_or_else(|| std::io::Error::other("a file without a directory"))?;
    let rel_dir = rel_old.parent().ok_or_else(|| std::io::Error::other("a file without a directory"))?;
    let micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_micros();
    let name = (0..)
        .map(|i| format!("r-{:016}.{PARQUET_EXT}", micros + i))
        .find(|n| !dir.join(n).exists())
        .expect("a free name");
    swapper.commit(vec![(staged, rel_dir.join(name))], vec![rel_old])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use lake_format::catalog::ColumnType;
    use lake_format::custom::CustomColumn;

    /// A schema and a file as the lake wrote them before the rule: `host` and `Host`,
    /// `Level` and `level`.
    fn old_lake(data: &Path) -> PathBuf {
        let mut s = CustomSchema::new("app");
        for (n, ty) in [
            ("Host", ColumnType::Text),
            ("Level", ColumnType::Text),
            ("n", ColumnType::Int),
            ("level", ColumnType::Text),
        ] {
            s.columns.push(CustomColumn { name: n.into(), ty });
        }
        lake_format::durable::write_atomic(&custom::schema_path(data, "app"), &serde_json::to_vec(&s).unwrap())
            .unwrap();
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_795_600_800_000_000, 1_795_600_860_000_000])
                .with_timezone(lake_format::catalog::TS_TZ),
        );
        let text = |v: [Option<&str>; 2]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
        let batch = RecordBatch::try_new(
            s.arrow_schema(),
            vec![
                ts,
                text([Some("node-a"), Some("node-a")]),
                text([Some("x"), None]),
                text([Some("INFO"), None]),
                Arc::new(Int64Array::from(vec![1, 2])),
                text([None, Some("warn")]),
            ],
        )
        .unwrap();
        let dir = data.join("tables/app/date=2026-11-25");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f-000000000001.parquet");
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        path
    }

    fn read(path: &Path) -> RecordBatch {
        let r = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
        let batches: Vec<RecordBatch> = r.map(Result::unwrap).collect();
        arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn a_colliding_table_is_repaired_once_and_keeps_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let old = old_lake(dir.path());
        let report = run(dir.path()).unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0].moved, [("host".to_string(), "Host".to_string()), ("Level".into(), "level".into())]);
        assert_eq!((report[0].files, report[0].failed), (1, 0));
        assert!(!old.exists(), "the old file is retired");
        let files = committed_files(dir.path(), "app");
        assert_eq!(files.len(), 1);
        assert!(files[0].file_name().unwrap().to_string_lossy().starts_with("r-"));
        let b = read(&files[0]);
        let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["ts", "host", "Level", "n", EXTRA_COLUMN]);
        let extra = b.column_by_name(EXTRA_COLUMN).unwrap().as_string::<i32>();
        let row = |i: usize| serde_json::from_str::<serde_json::Value>(extra.value(i)).unwrap();
        assert_eq!(row(0), serde_json::json!({"Host": "x"}));
        assert_eq!(row(1), serde_json::json!({"level": "warn"}));
        assert_eq!(b.column_by_name("Level").unwrap().as_string::<i32>().value(0), "INFO");
        let schema: CustomSchema =
            serde_json::from_slice(&std::fs::read(custom::schema_path(dir.path(), "app")).unwrap()).unwrap();
        let cols: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(cols, ["Level", "n", EXTRA_COLUMN]);
        assert_eq!(schema.moved_to_extra, ["Host", "level"]);
        // Running again changes nothing: the files no longer hold a moved column.
        let again = run(dir.path()).unwrap();
        assert_eq!((again[0].files, again[0].moved.len()), (0, 0));
        assert_eq!(committed_files(dir.path(), "app"), files);
    }

    #[test]
    fn a_file_compaction_merged_before_the_repair_is_made_mergeable() {
        let dir = tempfile::tempdir().unwrap();
        let old = old_lake(dir.path());
        std::fs::remove_file(&old).unwrap();
        // What DuckDB's COPY wrote for `SELECT "ts", "host", "Host", "Level", "n", "level"`:
        // the second of each pair a copy of the first, renamed.
        let text = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_795_600_800_000_000]).with_timezone(lake_format::catalog::TS_TZ),
        );
        let batch = RecordBatch::try_from_iter([
            ("ts", ts),
            ("host", text("node-a")),
            ("host_1", text("node-a")),
            ("Level", text("INFO")),
            ("n", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("Level_1", text("INFO")),
        ])
        .unwrap();
        let path = old.with_file_name("c-0000000000000001.parquet");
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        assert_eq!(run(dir.path()).unwrap()[0].files, 1);
        let b = read(&committed_files(dir.path(), "app")[0]);
        let names: Vec<String> = b.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["ts", "host", "Level", "n", EXTRA_COLUMN]);
        let extra: serde_json::Value =
            serde_json::from_str(b.column_by_name(EXTRA_COLUMN).unwrap().as_string::<i32>().value(0)).unwrap();
        assert_eq!(extra, serde_json::json!({"host_1": "node-a", "Level_1": "INFO"}));
    }

    #[test]
    fn a_stop_before_the_schema_is_written_is_finished_by_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        old_lake(dir.path());
        let schema_before = std::fs::read(custom::schema_path(dir.path(), "app")).unwrap();
        run(dir.path()).unwrap();
        // As if the process had stopped after the files and before the schema: the old
        // schema is back, one file rewritten, and a second old file waits.
        std::fs::write(custom::schema_path(dir.path(), "app"), &schema_before).unwrap();
        let second = old_lake(dir.path());
        let report = run(dir.path()).unwrap();
        assert_eq!((report[0].files, report[0].moved.len()), (1, 2), "only the file still holding the columns");
        assert!(!second.exists());
        let total: usize = committed_files(dir.path(), "app").iter().map(|p| read(p).num_rows()).sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn a_wal_batch_with_a_moved_column_is_conformed_into_extra() {
        let dir = tempfile::tempdir().unwrap();
        old_lake(dir.path());
        let file = read(&committed_files(dir.path(), "app")[0]);
        run(dir.path()).unwrap();
        let schema: CustomSchema =
            serde_json::from_slice(&std::fs::read(custom::schema_path(dir.path(), "app")).unwrap()).unwrap();
        let conformed = super::super::conform_to(&schema.arrow_schema(), &file).unwrap();
        let extra = conformed.column_by_name(EXTRA_COLUMN).unwrap().as_string::<i32>();
        assert_eq!(extra.value(0), r#"{"Host":"x"}"#);
        assert_eq!(extra.value(1), r#"{"level":"warn"}"#);
    }
}
