//! `[[log_file]]` formats against the real and recorded logs of `fixtures/<program>/`
//! (their READMEs say how each was captured): every file is read the way the source reads
//! it (lines, joined into records by the format's `multiline`, then parsed) and its rows
//! are compared with `<file>.expected.jsonl` — one `{"table": …, "row": {every column}}`
//! per row. `LAKE_BLESS=1` rewrites the expected files (review the diff).
//!
//! Every format is also given the hostile lines (not of the format, not UTF-8, cut at
//! `max_line_bytes`): each becomes one `<name>-unparsed` row with its raw text; none is
//! dropped. `fixture_counts` prints the table of the acceptance: per format, lines read,
//! records, rows and unparsed rows.

use std::path::{Path, PathBuf};

use lake_collector::sources::log_file::{validate_all, LogFileConfig, LogFileFile, LogFileLines};
use lake_collector::sources::tailed::ParsedLines;
use serde_json::{json, Value};

const NODE: &str = "test-node";
/// The read time of every line: 2026-12-08T00:00:00Z (the fixtures were captured the day
/// before; a syslog `Dec 17` line is then last year's).
const READ_TS: i64 = 1_796_688_000_000_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn config(format: &str, extra: &str) -> LogFileConfig {
    #[derive(serde::Deserialize)]
    struct F {
        log_file: Vec<LogFileFile>,
    }
    let name = format.replace('_', "-");
    let tz = if extra.contains("timezone =") { "" } else { "timezone = \"UTC\"\n" };
    let toml =
        format!("[[log_file]]\nname = \"{name}\"\npaths = [\"/var/log/x.log\"]\nformat = \"{format}\"\n{tz}{extra}");
    let f: F = toml::from_str(&toml).unwrap();
    validate_all(f.log_file).unwrap().remove(0)
}

/// Rows of the records of `lines`, as the source makes them: `(table, row)`.
fn rows_of(config: &LogFileConfig, lines: &[(&[u8], bool)]) -> Vec<Value> {
    let mut p = ParsedLines::with_multiline(LogFileLines::new(config), config.multiline.clone());
    for (line, truncated) in lines {
        p.push(NODE, line, "/var/log/x.log", *truncated, READ_TS);
    }
    p.flush(NODE);
    let mut out = Vec::new();
    for rec in p.records(config.source).unwrap() {
        let (_, batches) = lake_format::wire::decode(&rec.body).unwrap();
        for b in &batches {
            out.extend(lake_test_support::batch_to_json(b).into_iter().map(|r| json!({"table": rec.table, "row": r})));
        }
    }
    out
}

fn file_lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    lines
}

/// Each fixture: format, file, how many records its lines make.
const CASES: &[(&str, &str, usize)] = &[
    ("nginx_combined", "nginx/access.log", 5),
    ("nginx_json", "nginx/access.json", 5),
    ("apache_combined", "apache/access.log", 5),
    ("syslog", "syslog/logger-udp.log", 5),
    ("syslog", "syslog/files.log", 5),
    ("postgres", "postgres/postgresql-15.log", 14),
    ("php_fpm", "php_fpm/php8.2-fpm.log", 9),
    ("php_fpm", "php_fpm/php_errors.log", 4),
    ("rails", "rails/production.log", 7),
    ("python", "python/stderr.log", 5),
    ("python", "python/asctime.log", 4),
    ("python", "python/uvicorn.log", 9),
];

#[test]
fn fixture_rows_are_exact_and_every_record_is_one_row() {
    let mut table = vec![format!(
        "{:<16} {:<28} {:>5} {:>7} {:>4} {:>8}",
        "preset", "fixture", "lines", "records", "rows", "unparsed"
    )];
    for (format, file, records) in CASES {
        let config = config(format, "");
        let path = fixtures().join(file);
        let lines = file_lines(&path);
        let input: Vec<(&[u8], bool)> = lines.iter().map(|l| (l.as_slice(), false)).collect();
        let rows = rows_of(&config, &input);
        let unparsed =
            rows.iter().filter(|r| r["row"]["source"].as_str().is_some_and(|s| s.ends_with("-unparsed"))).count();
        table.push(format!("{format:<16} {file:<28} {:>5} {records:>7} {:>4} {unparsed:>8}", lines.len(), rows.len()));
        assert_eq!(rows.len(), *records, "{file}: one row per record");
        assert_eq!(unparsed, 0, "{file}: every record of a real log reads: {rows:#?}");
        let want_table = if format.contains("nginx") || format.contains("apache") { "http" } else { "logs" };
        assert!(rows.iter().all(|r| r["table"] == want_table), "{file} → {want_table}");
        // The fuzz target's entry takes the same file (its seed) without a complaint.
        let selector = lake_collector::sources::log_file::FORMATS.iter().position(|f| f == format).unwrap() as u8;
        lake_collector::fuzzing::log_file(&[&[selector][..], &std::fs::read(&path).unwrap()].concat());
        lake_test_support::expect_jsonl(
            &path.with_extension(format!("{}.expected.jsonl", path.extension().unwrap().to_str().unwrap())),
            &rows,
        );
    }
    println!("{}", table.join("\n"));
}

#[test]
fn hostile_lines_of_every_format_become_unparsed_rows() {
    let huge = vec![b'x'; 2 << 20];
    for format in
        ["nginx_combined", "nginx_json", "apache_combined", "syslog", "postgres", "php_fpm", "rails", "python"]
    {
        let config = config(format, "");
        let name = config.name;
        for (line, truncated, error) in [
            (&b"this is not a log line of any format"[..], false, None),
            (&b"ERROR:root:caf\xe9 \xff"[..], false, Some("invalid UTF-8")),
            (&huge[..1 << 20], true, Some("line longer than max_line_bytes (1048576 bytes kept)")),
        ] {
            let rows = rows_of(&config, &[(line, truncated)]);
            assert_eq!(rows.len(), 1, "{format}: {rows:?}");
            let r = &rows[0]["row"];
            assert_eq!(
                (rows[0]["table"].as_str(), r["source"].as_str()),
                (Some("logs"), Some(&*format!("{name}-unparsed")))
            );
            assert_eq!(
                r["message"].as_str().unwrap().len(),
                String::from_utf8_lossy(line).len(),
                "{format}: kept whole"
            );
            assert_eq!(r["attrs"]["file"], "/var/log/x.log");
            if let Some(e) = error {
                assert_eq!(r["attrs"]["error"], e, "{format}");
            }
            if !truncated && std::str::from_utf8(line).is_err() {
                assert_eq!(r["attrs"]["raw_hex"].as_str().unwrap(), lake_format::logs::hex(line));
            }
        }
        // A blank line is no record and no error.
        assert!(rows_of(&config, &[(&b""[..], false), (&b"   "[..], false)]).is_empty(), "{format}");
    }
}

#[test]
fn a_bad_time_is_an_unparsed_row_not_a_wrong_time() {
    let c = config("python", "");
    let rows = rows_of(&c, &[(&b"2026-13-45 10:00:00,000 - app - ERROR - boom"[..], false)]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["row"]["source"], "python-unparsed");
    assert!(rows[0]["row"]["attrs"]["error"].as_str().unwrap().starts_with("ts \"2026-13-45 10:00:00,000\""));
}

#[test]
fn a_regex_format_maps_captures_to_columns_and_attrs() {
    let c = config(
        "regex",
        r#"regex = '^(?P<ts>\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}) \[(?P<level>\w+)\] (?P<ident>\w+)\[(?P<pid>[^\]]+)\] (?:req=(?P<request>\S+) )?(?P<message>.*)$'
ts_format = "%d/%m/%Y %H:%M:%S"
timezone = "Europe/Paris"
[log_file.multiline]
start = '^\d{2}/'
"#,
    );
    let lines: &[(&[u8], bool)] = &[
        (&b"07/12/2026 06:00:01 [WARN] billing[812] req=abc charge retried"[..], false),
        (&b"07/12/2026 06:00:02 [LOUD] billing[main] failed"[..], false),
        (&b"  at charge (billing.js:12)"[..], false),
        (&b"  at main (billing.js:40)"[..], false),
    ];
    let rows = rows_of(&c, lines);
    let r: Vec<&Value> = rows.iter().map(|r| &r["row"]).collect();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["ts"], 1_796_619_601_000_000i64, "2026-12-07T06:00:01 in Europe/Paris is 05:00:01Z");
    assert_eq!(
        (r[0]["priority"].as_i64(), r[0]["ident"].as_str(), r[0]["pid"].as_i64()),
        (Some(4), Some("billing"), Some(812))
    );
    assert_eq!(r[0]["source"], "regex");
    assert_eq!(r[0]["attrs"], json!({"request": "abc"}));
    assert_eq!(r[1]["message"], "failed\n  at charge (billing.js:12)\n  at main (billing.js:40)");
    assert_eq!(r[1]["priority"], Value::Null, "an unknown level word is kept in attrs");
    assert_eq!(r[1]["attrs"], json!({"level": "LOUD", "pid": "main"}));
}

#[test]
fn a_record_over_max_bytes_is_cut_into_records_and_nothing_is_lost() {
    let c = config("python", "[log_file.multiline]\nmax_bytes = \"1KiB\"\n");
    let frame = format!("  File \"app.py\", line 1{}", " ".repeat(77)).into_bytes();
    assert_eq!(frame.len(), 100);
    let mut lines: Vec<(&[u8], bool)> = vec![(&b"ERROR:root:deep recursion"[..], false)];
    lines.extend(std::iter::repeat_n((&frame[..], false), 30));
    let rows = rows_of(&c, &lines);
    // 25 + 1 + 9 × 101 = 935 bytes fit; the 10th frame begins a record of its own, which
    // matches no pattern and is kept raw with the frames after it.
    assert_eq!(rows.len(), 4, "{rows:#?}");
    let total: usize = rows.iter().map(|r| r["row"]["message"].as_str().unwrap().len()).sum();
    assert!(rows.iter().all(|r| r["row"]["message"].as_str().unwrap().len() <= 1024));
    assert_eq!(rows[0]["row"]["source"], "python");
    assert_eq!(rows[1]["row"]["source"], "python-unparsed");
    assert!(total >= 30 * 100, "every frame is in some row");
}
