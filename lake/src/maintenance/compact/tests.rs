use std::collections::HashMap;
use std::fs::File;

use arrow_array::{Array, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use lake_format::rows::MetricsBuilder;
use lake_query::engine::{Engine, FreshRows, Limits};

use super::*;
use crate::ingest::state::State;
use crate::ingest::writer::write_flush;
use crate::testing::http_rows;

const DAY: i64 = 86_400_000_000;
/// 2026-11-01T00:00:00Z, a past day for every test run after it.
const NOV1: i64 = 20_758 * DAY;

fn metrics(rows: &[(&str, i64, f64)]) -> RecordBatch {
    let mut b = MetricsBuilder::new();
    for (host, ts, v) in rows {
        b.push(*ts, host, "load1", *v, &[("k", "v")]);
    }
    b.finish()
}

/// One flush per batch: one small file per batch in its date's partition.
fn flushes(data: &Path, batches: Vec<RecordBatch>) {
    for (n, b) in batches.into_iter().enumerate() {
        let taken = HashMap::from([(Table::Metrics.into(), vec![b])]);
        let state = State { next_flush: n as u64 + 1, ..Default::default() };
        write_flush(data, n as u64, &taken, &state, &Buffers::default()).unwrap();
    }
}

fn files(data: &Path, date: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join(format!("tables/metrics/date={date}")))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn read(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// (host, ts, value) of every row of a file, in file order.
fn rows_of(path: &Path) -> Vec<(String, i64, f64)> {
    let mut out = Vec::new();
    for b in read(path) {
        let host = b.column_by_name("host").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let ts = b.column_by_name("ts").unwrap().as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap().clone();
        let v = b.column_by_name("value").unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone();
        for i in 0..b.num_rows() {
            out.push((host.value(i).to_string(), ts.value(i), v.value(i)));
        }
    }
    out
}

fn cfg() -> CompactionConfig {
    CompactionConfig { settle: Duration::ZERO, min_files: 2, ..Default::default() }
}

fn pass(data: &Path, cfg: &CompactionConfig) -> PassReport {
    let buffers = Arc::new(Buffers::default());
    let swapper = Swapper::with_buffers(data, Duration::ZERO, Arc::clone(&buffers)).unwrap();
    run_pass(data, &swapper, &buffers, cfg, &Filter::default(), &mut |_| {}, &mut |r| {
        r.unwrap();
    })
    .unwrap()
}

/// An engine reading `data` beside the passes, which run on buffers of their own: so no
/// generation (as the CLI reads a data directory), every query lists the files.
fn engine(data: &Path) -> Engine {
    Engine::open(data, Arc::new(lake_query::engine::NoFreshRows) as Arc<dyn FreshRows>, Limits::default()).unwrap()
}

fn answer(e: &Engine, sql: &str) -> String {
    let r = e.query_blocking(sql).unwrap();
    arrow_cast::pretty::pretty_format_batches(&r.batches).unwrap().to_string()
}

#[test]
fn small_files_of_a_past_day_become_one_sorted_file_with_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    flushes(
        data,
        vec![
            metrics(&[("b", NOV1 + 5, 1.0), ("a", NOV1 + 9, 2.0)]),
            metrics(&[("a", NOV1 + 1, 3.0), ("c", NOV1 + 2, 4.0)]),
            metrics(&[("b", NOV1 + 3, 5.0), ("a", NOV1 + 4, 6.0)]),
        ],
    );
    assert_eq!(files(data, "2026-11-01").len(), 3);
    let e = engine(data);
    let sql = "SELECT host, ts::VARCHAR AS ts, name, value, labels FROM metrics ORDER BY ALL";
    let before = answer(&e, sql);

    let report = pass(data, &cfg());
    assert_eq!((report.bins, report.files_in, report.rows, report.failures), (1, 3, 6, 0));
    let after = files(data, "2026-11-01");
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(after[0].file_name().unwrap().to_str().unwrap().starts_with("c-"));
    let rows = rows_of(&after[0]);
    let keys: Vec<(&str, i64)> = rows.iter().map(|(h, t, _)| (h.as_str(), *t)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by (host, ts)");
    assert_eq!(answer(&e, sql), before, "the same rows, labels and types");
    // The merged file has the catalog's columns, in order.
    let names: Vec<String> = read(&after[0])[0].schema().fields().iter().map(|f| f.name().clone()).collect();
    let catalog: Vec<&str> = Table::Metrics.columns().map(|c| c.name).collect();
    assert_eq!(names, catalog);

    // Nothing left to do: a second pass is a no-op.
    assert_eq!(pass(data, &cfg()), PassReport::default());
}

#[test]
fn a_finished_days_lone_flushed_file_is_rewritten_sorted_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    flushes(data, vec![metrics(&[("b", NOV1 + 5, 1.0), ("a", NOV1 + 9, 2.0), ("a", NOV1 + 1, 3.0)])]);
    let before = files(data, "2026-11-01");
    assert_eq!(before.len(), 1);
    assert_eq!(rows_of(&before[0]).len(), 3);
    let report = pass(data, &cfg());
    assert_eq!((report.bins, report.files_in, report.rows, report.failures), (1, 1, 3, 0));
    let after = files(data, "2026-11-01");
    assert_eq!(after.len(), 1);
    assert!(after[0].file_name().unwrap().to_str().unwrap().starts_with("c-"), "{after:?}");
    let keys: Vec<(String, i64)> = rows_of(&after[0]).into_iter().map(|(h, t, _)| (h, t)).collect();
    assert_eq!(keys, [("a".to_string(), NOV1 + 1), ("a".into(), NOV1 + 9), ("b".into(), NOV1 + 5)]);
    assert_eq!(pass(data, &cfg()), PassReport::default(), "a compacted file is left alone");

    // Today's lone file waits for company.
    let now = lake_format::rows::now_micros();
    flushes(data, vec![metrics(&[("a", now, 1.0)])]);
    assert_eq!(pass(data, &cfg()), PassReport::default());
}

/// Issue 23 §1: compaction writes `metrics` with the lake's writer: series-major (name,
/// host, labels, ts), `ts` DELTA_BINARY_PACKED and `value` BYTE_STREAM_SPLIT in the
/// footer, and plain DuckDB reads back exactly the values flushed.
#[test]
fn metrics_are_compacted_series_major_with_their_encodings_and_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut expected = Vec::new();
    let batches: Vec<RecordBatch> = (0..3i64)
        .map(|f| {
            let mut b = MetricsBuilder::new();
            for t in 0..100 {
                for (host, iface) in [("b", "eth0"), ("a", "lo"), ("a", "eth0")] {
                    let ts = NOV1 + (f * 100 + t) * 2_000_000;
                    let v = (ts as f64).sqrt() * if iface == "lo" { -1.0 } else { 0.01 };
                    b.push(ts, host, "net_rx_bytes_per_second", v, &[("iface", iface)]);
                    expected.push((host.to_string(), iface.to_string(), ts, v.to_bits()));
                }
            }
            b.finish()
        })
        .collect();
    flushes(data, batches);
    assert_eq!(pass(data, &cfg()).rows, 900);
    let merged = files(data, "2026-11-01");
    assert_eq!(merged.len(), 1);
    let got = crate::ingest::writer::read_back_metrics(&merged[0], "iface");
    expected.sort();
    assert_eq!(got, expected, "series-major, every value exact");
}

#[test]
fn http_is_merged_in_hour_site_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    const HOUR: i64 = 3_600_000_000;
    for (n, base) in [NOV1 + 3 * HOUR + 5, NOV1 + HOUR, NOV1 + 3 * HOUR].into_iter().enumerate() {
        let b = http_rows("web", 200, n as u64 + 1, base, None);
        let taken = HashMap::from([(Table::Http.into(), vec![b])]);
        let state = State { next_flush: n as u64 + 1, ..Default::default() };
        write_flush(data, n as u64, &taken, &state, &Buffers::default()).unwrap();
    }
    let report = pass(data, &cfg());
    assert_eq!((report.files_in, report.rows), (3, 600));
    let part = data.join("tables/http/date=2026-11-01");
    let file = std::fs::read_dir(&part).unwrap().flatten().map(|e| e.path()).collect::<Vec<_>>();
    assert_eq!(file.len(), 1);
    let mut keys = Vec::new();
    for b in read(&file[0]) {
        let text = |n: &str| b.column_by_name(n).unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let ts = b.column_by_name("ts").unwrap().as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap().clone();
        let (vhost, path) = (text("vhost"), text("path"));
        for i in 0..b.num_rows() {
            keys.push((ts.value(i) / HOUR, vhost.value(i).to_string(), path.value(i).to_string(), ts.value(i)));
        }
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.first().unwrap().0, (NOV1 + HOUR) / HOUR);
    assert!(
        keys.windows(2).any(|w| w[1].3 < w[0].3),
        "not in plain time order: sites and paths come first within an hour"
    );
}

#[test]
fn todays_partition_waits_for_settled_files_and_enough_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let now = lake_format::rows::now_micros();
    flushes(data, (0..3).map(|i| metrics(&[("a", now - i, 1.0)])).collect());
    let never = |_: &Path| false;
    let waiting = CompactionConfig { settle: Duration::from_secs(3600), min_files: 2, ..Default::default() };
    assert!(plan(data, &waiting, &Filter::default(), SystemTime::now(), &never).unwrap().is_empty(), "not settled");
    let few = CompactionConfig { min_files: 4, ..cfg() };
    assert!(plan(data, &few, &Filter::default(), SystemTime::now(), &never).unwrap().is_empty(), "too few");
    let jobs = plan(data, &cfg(), &Filter::default(), SystemTime::now(), &never).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].bins[0].len(), 3);
    // Retired files are never inputs again.
    let retired = |p: &Path| p.to_string_lossy().contains("f-000000000000");
    assert_eq!(plan(data, &cfg(), &Filter::default(), SystemTime::now(), &retired).unwrap()[0].bins[0].len(), 2);
}

#[test]
fn bins_respect_the_target_size_and_large_files_stay() {
    let f = |n: u64, size| Input { rel: PathBuf::from(format!("tables/metrics/date=2026-11-01/f-{n}.parquet")), size };
    let bins = bin(vec![f(1, 40), f(2, 40), f(3, 40), f(4, 100), f(5, 10)], 100, false);
    let sizes: Vec<Vec<u64>> = bins.iter().map(|b| b.iter().map(|i| i.size).collect()).collect();
    assert_eq!(sizes, vec![vec![40, 40]], "[40,40] | [40] | [100] | [10] — single-file bins dropped");
    // A finished day: a lone flushed file is rewritten once, a lone compacted one is not.
    let c = |n: u64, size| Input { rel: PathBuf::from(format!("tables/metrics/date=2026-11-01/c-{n}.parquet")), size };
    let bins = bin(vec![f(1, 40), f(2, 40), c(3, 100), f(4, 10)], 100, true);
    let names: Vec<Vec<String>> = bins
        .iter()
        .map(|b| b.iter().map(|i| i.rel.file_name().unwrap().to_string_lossy().into_owned()).collect())
        .collect();
    assert_eq!(names, vec![vec!["f-1.parquet", "f-2.parquet"], vec!["f-4.parquet"]]);
    let dir = tempfile::tempdir().unwrap();
    flushes(dir.path(), vec![metrics(&[("a", NOV1, 1.0)]), metrics(&[("a", NOV1 + 1, 1.0)])]);
    let tiny = CompactionConfig { target_size: 10, ..cfg() };
    assert!(
        plan(dir.path(), &tiny, &Filter::default(), SystemTime::now(), &|_| false).unwrap().is_empty(),
        "every file is already 'large'"
    );
}

/// A metrics file written by an older version whose catalog had no `labels` column.
fn write_old_file(data: &Path) {
    let full = metrics(&[("old", NOV1 + 100, 7.0)]);
    let keep: Vec<usize> = (0..full.num_columns()).filter(|i| full.schema().field(*i).name() != "labels").collect();
    let old = full.project(&keep).unwrap();
    let dir = data.join("tables/metrics/date=2026-11-01");
    std::fs::create_dir_all(&dir).unwrap();
    let mut w =
        ArrowWriter::try_new(File::create(dir.join("f-000000000099.parquet")).unwrap(), old.schema(), None).unwrap();
    w.write(&old).unwrap();
    w.close().unwrap();
}

#[test]
fn files_from_before_a_column_was_added_read_it_as_null_before_and_after_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    flushes(data, vec![metrics(&[("new", NOV1 + 1, 1.0)])]);
    write_old_file(data);
    let e = engine(data);
    let sql = "SELECT host, value, labels FROM metrics ORDER BY host";
    let before = answer(&e, sql);
    assert!(before.contains("| new  | 1.0   | {k: v} |") && before.contains("| old  | 7.0   |        |"), "{before}");
    assert_eq!(pass(data, &cfg()).rows, 2);
    assert_eq!(answer(&e, sql), before);

    // Old files only: the column exists in no input and is written out as NULL.
    let dir = tempfile::tempdir().unwrap();
    write_old_file(dir.path());
    let moved = dir.path().join("tables/metrics/date=2026-11-01/f-000000000099.parquet");
    std::fs::copy(&moved, moved.with_file_name("f-000000000098.parquet")).unwrap();
    assert_eq!(pass(dir.path(), &cfg()).rows, 2);
    let merged = &files(dir.path(), "2026-11-01")[0];
    let b = &read(merged)[0];
    assert_eq!(b.column_by_name("labels").unwrap().null_count(), 2);
}

#[test]
fn an_unreadable_input_fails_its_bin_and_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    flushes(data, vec![metrics(&[("a", NOV1, 1.0)]), metrics(&[("a", NOV1 + 1, 2.0)])]);
    let torn = data.join("tables/metrics/date=2026-11-01/f-000000000007.parquet");
    std::fs::write(&torn, b"PAR1 not really").unwrap();
    let buffers = Arc::new(Buffers::default());
    let swapper = Swapper::with_buffers(data, Duration::ZERO, Arc::clone(&buffers)).unwrap();
    let mut failures = 0;
    let report = run_pass(data, &swapper, &buffers, &cfg(), &Filter::default(), &mut |_| {}, &mut |r| {
        failures += usize::from(r.is_err());
    })
    .unwrap();
    assert_eq!((report.failures, failures, report.bins), (1, 1, 0));
    assert_eq!(files(data, "2026-11-01").len(), 3);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

    /// Compaction keeps every row (as a multiset) and sorts them by (host, ts).
    #[test]
    fn compaction_keeps_rows(batches in proptest::collection::vec(
        proptest::collection::vec((0u8..4, 0i64..DAY, -1e6f64..1e6), 1..40), 2..6)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path();
        let hosts = ["a", "b", "c", "d"];
        let mut expected: Vec<(String, i64, u64)> = Vec::new();
        let built: Vec<RecordBatch> = batches.iter().map(|rows| {
            let rows: Vec<(&str, i64, f64)> = rows.iter().map(|(h, t, v)| (hosts[*h as usize], NOV1 + t, *v)).collect();
            expected.extend(rows.iter().map(|(h, t, v)| (h.to_string(), *t, v.to_bits())));
            metrics(&rows)
        }).collect();
        flushes(data, built);
        let report = pass(data, &cfg());
        proptest::prop_assert_eq!(report.rows as usize, expected.len());
        let merged = files(data, "2026-11-01");
        proptest::prop_assert_eq!(merged.len(), 1);
        let got = rows_of(&merged[0]);
        let keys: Vec<(String, i64)> = got.iter().map(|(h, t, _)| (h.clone(), *t)).collect();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort();
        proptest::prop_assert_eq!(keys, sorted_keys);
        let mut got: Vec<(String, i64, u64)> = got.into_iter().map(|(h, t, v)| (h, t, v.to_bits())).collect();
        got.sort();
        expected.sort();
        proptest::prop_assert_eq!(got, expected);
    }
}
