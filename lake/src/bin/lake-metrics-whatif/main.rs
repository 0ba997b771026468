//! `lake-metrics-whatif`: the `metrics` table's bytes per sample under each storage lever
//! (issue 23 §1), alone and together, for the samples of a lake's files.
//!
//! In: one or more directories (a `tables/metrics/date=…` partition, or the whole
//! `tables/metrics`); every `.parquet` file under them is one set of samples. Out: a table
//! of variants with the bytes per sample of each and of its costliest columns, and with
//! `--json FILE` the same as JSON (the bench harness puts it under its main table).
//!
//! Each variant is written the way compaction writes `metrics`: DuckDB sorts the rows
//! (`ORDER BY` of the variant) and streams them into the parquet crate's writer
//! ([`lake::maintenance::compact::write_sorted`]) with the variant's `WriterProperties`,
//! built from the lake's own [`lake::ingest::writer::properties_builder`], so the figures
//! are the ones the lake would write. Two rows are DuckDB's own COPY (what compaction did
//! before the levers), for comparison. Nothing is written beside the input: each variant
//! goes to a temporary file, removed after it is measured.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use lake::ingest::writer::{properties_builder, COMPACTED_ZSTD_LEVEL};
use lake::maintenance::compact::{write_sorted, COPY_OPTIONS};
use lake_format::custom::TableRef;
use lake_format::Table;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterPropertiesBuilder;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::ColumnPath;

/// lake-metrics-whatif: bytes per `metrics` sample under each encoding lever.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Directories whose `.parquet` files (recursively) hold the samples.
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the temporary files (default: the system's).
    #[arg(long)]
    tmp: Option<PathBuf>,
}

/// Row orders a variant may use.
const BY_TIME: &str = "name, host, ts";
const SERIES_MAJOR: &str = "name, host, labels, ts";

/// How a variant's file is written.
enum Writer {
    /// The lake's writer (parquet crate): `props` adjusts the builder of
    /// [`properties_builder`] at the given zstd level, whose `metrics` encodings are the
    /// adopted ones; `plain` starts from the parquet crate's defaults for every column
    /// instead (dictionaries everywhere, PLAIN fallback), as the writer was before.
    Lake { zstd: i32, plain: bool, adjust: fn(WriterPropertiesBuilder) -> WriterPropertiesBuilder },
    /// DuckDB's COPY with compaction's options (zstd 15, Parquet 2 encodings).
    DuckDb,
}

struct Variant {
    name: &'static str,
    order: &'static str,
    writer: Writer,
    row_group_rows: Option<usize>,
}

fn same(b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    b
}

fn variants() -> Vec<Variant> {
    let lake = |zstd, plain, adjust| Writer::Lake { zstd, plain, adjust };
    let v = |name, order, writer| Variant { name, order, writer, row_group_rows: None };
    vec![
        v("before: writer (name, host, ts; dictionaries; zstd 3)", BY_TIME, lake(3, true, same)),
        v("before: compaction (DuckDB COPY, name, host, ts; zstd 15, Parquet 2)", BY_TIME, Writer::DuckDb),
        // Each lever alone, on the writer as it was.
        v("  alone: series-major order (name, host, labels, ts)", SERIES_MAJOR, lake(3, true, same)),
        v("  alone: ts DELTA_BINARY_PACKED", BY_TIME, lake(3, true, ts_delta)),
        v("  alone: value BYTE_STREAM_SPLIT", BY_TIME, lake(3, true, value_bss)),
        v("  alone: zstd 15", BY_TIME, lake(15, true, same)),
        Variant { row_group_rows: Some(1 << 20), ..v("  alone: row groups of 1Mi rows", BY_TIME, lake(3, true, same)) },
        v("  alone: no dictionary for name, host, labels", BY_TIME, lake(3, true, no_label_dicts)),
        // Cumulative, in the order they were adopted.
        v("together: series-major", SERIES_MAJOR, lake(3, true, same)),
        v("together: + ts DELTA_BINARY_PACKED", SERIES_MAJOR, lake(3, true, ts_delta)),
        v("together: + value BYTE_STREAM_SPLIT", SERIES_MAJOR, lake(3, true, |b| value_bss(ts_delta(b)))),
        v("together: + pages of a row group = lake writer (flush)", SERIES_MAJOR, lake(3, false, same)),
        v("together: + zstd 15 = lake compaction", SERIES_MAJOR, lake(COMPACTED_ZSTD_LEVEL, false, same)),
        // Further settings, on top of the adopted ones.
        Variant {
            row_group_rows: Some(1 << 20),
            ..v("  then: row groups of 1Mi rows", SERIES_MAJOR, lake(COMPACTED_ZSTD_LEVEL, false, same))
        },
        v("  then: zstd 19", SERIES_MAJOR, lake(19, false, same)),
        v(
            "  then: value dictionary up to 1Ki values, then BYTE_STREAM_SPLIT",
            SERIES_MAJOR,
            lake(COMPACTED_ZSTD_LEVEL, false, |b| {
                b.set_column_dictionary_enabled(ColumnPath::from("value"), true).set_dictionary_page_size_limit(8 << 10)
            }),
        ),
        v(
            "  then: value PLAIN",
            SERIES_MAJOR,
            lake(COMPACTED_ZSTD_LEVEL, false, |b| b.set_column_encoding(ColumnPath::from("value"), Encoding::PLAIN)),
        ),
        v(
            "  then: pages of 20,000 rows (the crate's default)",
            SERIES_MAJOR,
            lake(COMPACTED_ZSTD_LEVEL, false, |b| {
                b.set_data_page_row_count_limit(20_000).set_data_page_size_limit(1 << 20)
            }),
        ),
        v("  then: (name, host, ts) order instead", BY_TIME, lake(COMPACTED_ZSTD_LEVEL, false, same)),
        v("  DuckDB COPY, series-major", SERIES_MAJOR, Writer::DuckDb),
    ]
}

fn ts_delta(b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    b.set_column_dictionary_enabled(ColumnPath::from("ts"), false)
        .set_column_encoding(ColumnPath::from("ts"), Encoding::DELTA_BINARY_PACKED)
}

fn value_bss(b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    b.set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_encoding(ColumnPath::from("value"), Encoding::BYTE_STREAM_SPLIT)
}

fn no_label_dicts(b: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    ["name", "host", "labels.entries.keys", "labels.entries.values"]
        .into_iter()
        .fold(b, |b, c| b.set_column_dictionary_enabled(ColumnPath::from(c), false))
}

/// The properties of a `Writer::Lake` variant.
fn lake_properties(
    zstd: i32,
    plain: bool,
    adjust: fn(WriterPropertiesBuilder) -> WriterPropertiesBuilder,
    rgs: Option<usize>,
) -> parquet::file::properties::WriterProperties {
    let table = TableRef::Builtin(Table::Metrics);
    let schema = Table::Metrics.schema();
    let mut b = if plain {
        // The writer before issue 23 §1: the common properties, the crate's defaults per column.
        let adopted = properties_builder(&table, &schema, zstd).build();
        parquet::file::properties::WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd).expect("valid level")))
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Page)
            .set_max_row_group_row_count(adopted.max_row_group_row_count())
            .set_sorting_columns(adopted.sorting_columns().cloned())
    } else {
        properties_builder(&table, &schema, zstd)
    };
    b = adjust(b);
    if let Some(n) = rgs {
        b = b.set_max_row_group_row_count(Some(n));
    }
    b.build()
}

/// Compressed bytes per column path, from a file's footer.
fn column_bytes(path: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let reader = SerializedFileReader::new(std::fs::File::open(path)?)?;
    let mut out = BTreeMap::new();
    for rg in reader.metadata().row_groups() {
        for c in rg.columns() {
            *out.entry(c.column_path().string()).or_default() += c.compressed_size() as u64;
        }
    }
    Ok(out)
}

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            parquet_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lake-metrics-whatif: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for d in &args.dirs {
        parquet_files(d, &mut files)?;
    }
    files.sort();
    if files.is_empty() {
        bail!("no .parquet file under {:?}", args.dirs);
    }
    let on_disk: u64 = files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).sum();
    let list = files.iter().map(|f| quote(&f.to_string_lossy())).collect::<Vec<_>>().join(", ");
    let cols = Table::Metrics.columns().map(|c| format!("\"{}\"", c.name)).collect::<Vec<_>>().join(", ");
    let conn = duckdb::Connection::open_in_memory()?;
    conn.execute_batch("SET threads = 1; SET preserve_insertion_order = true; SET TimeZone = 'UTC';")?;
    let from = format!("read_parquet([{list}], union_by_name = true, hive_partitioning = false)");
    let (samples, series): (u64, u64) = conn.query_row(
        &format!("SELECT count(*), count(DISTINCT (name, host, labels::VARCHAR)) FROM {from}"),
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if samples == 0 {
        bail!("the files hold no samples");
    }
    let per = |b: u64| b as f64 / samples as f64;
    println!("{samples} samples, {series} series, {} file(s); as on disk {:.3} B/sample", files.len(), per(on_disk));
    let out = args
        .tmp
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("lake-metrics-whatif-{}.parquet", std::process::id()));
    let result = measure(&conn, &cols, &from, samples, &out);
    let _ = std::fs::remove_file(&out);
    let results = result?;
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "inputs": args.dirs, "files": files.len(), "samples": samples, "series": series,
            "bytes_on_disk": on_disk, "bytes_per_sample_on_disk": per(on_disk), "variants": results,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Writes every variant to `out` in turn and measures it.
fn measure(
    conn: &duckdb::Connection,
    cols: &str,
    from: &str,
    samples: u64,
    out: &Path,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let per = |b: u64| b as f64 / samples as f64;
    println!("{:<72} {:>8}  costliest columns (B/sample)", "variant", "B/sample");
    let mut results = Vec::new();
    for v in variants() {
        let t = Instant::now();
        let select = format!("SELECT {cols} FROM {from} ORDER BY {}", v.order);
        match &v.writer {
            Writer::Lake { zstd, plain, adjust } => {
                let props = lake_properties(*zstd, *plain, *adjust, v.row_group_rows);
                let n =
                    write_sorted(conn, &select, &Table::Metrics.schema(), props, out).map_err(anyhow::Error::msg)?;
                if n != samples {
                    bail!("{}: {n} rows written of {samples}", v.name);
                }
            }
            Writer::DuckDb => {
                let rgs = v.row_group_rows.unwrap_or(Table::Metrics.row_group_rows());
                conn.execute_batch(&format!(
                    "COPY ({select}) TO {} ({COPY_OPTIONS}, ROW_GROUP_SIZE {rgs})",
                    quote(&out.to_string_lossy())
                ))?;
            }
        }
        let bytes = std::fs::metadata(out)?.len();
        let columns = column_bytes(out)?;
        let mut top: Vec<(&String, &u64)> = columns.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        println!(
            "{:<72} {:>8.3}  {}",
            v.name,
            per(bytes),
            top.iter().take(3).map(|(k, b)| format!("{k} {:.3}", per(**b))).collect::<Vec<_>>().join("  ")
        );
        results.push(serde_json::json!({
            "variant": v.name.trim(),
            "order": v.order,
            "bytes": bytes,
            "bytes_per_sample": per(bytes),
            "column_bytes_per_sample": columns.iter().map(|(k, b)| (k.clone(), per(*b))).collect::<BTreeMap<_, _>>(),
            "seconds": t.elapsed().as_secs_f64(),
        }));
        std::fs::remove_file(out)?;
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_adopted_variants_are_the_lakes_properties() {
        use super::*;
        let table = TableRef::Builtin(Table::Metrics);
        let schema = Table::Metrics.schema();
        let flush = lake::ingest::writer::parquet_properties(&table, &schema);
        let mine = lake_properties(3, false, same, None);
        let ts = ColumnPath::from("ts");
        let value = ColumnPath::from("value");
        for p in [&flush, &mine] {
            assert_eq!(p.encoding(&ts), Some(Encoding::DELTA_BINARY_PACKED));
            assert_eq!(p.encoding(&value), Some(Encoding::BYTE_STREAM_SPLIT));
            assert!(!p.dictionary_enabled(&value));
        }
        assert_eq!(flush.compression(&value), mine.compression(&value));
    }
}
