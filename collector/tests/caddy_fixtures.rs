//! `fixtures/caddy/`: each input file, read through the real tailer and the Caddy row
//! builder, must produce exactly the rows of its `.expected.jsonl` (one JSON object per
//! row: table and every column). `LAKE_BLESS=1` rewrites the expected files (review the
//! diff!). Also the huge-line cases, generated here rather than committed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lake_collector::sources::caddy::CaddyRows;
use lake_collector::tail::{StartAt, TailConfig, Tailer, DEFAULT_MAX_LINE_BYTES};
use serde_json::Value;

const NODE: &str = "fixture-node";
/// `ts` of the `caddy-unparsed` rows (the read time in production).
const READ_TS: i64 = 1_800_000_000_000_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/caddy")
}

/// Rows of every line of `path`, with the `file` attribute shown as `file_name`.
fn rows_of(path: &Path, file_name: &str, max_line_bytes: usize) -> Vec<Value> {
    let cfg = TailConfig {
        patterns: vec![path.display().to_string()],
        start_at: StartAt::Beginning,
        max_line_bytes,
        poll_interval: Duration::ZERO,
    };
    let mut tailer = Tailer::new(cfg, None).unwrap();
    let mut rows = CaddyRows::new();
    let mut out = Vec::new();
    loop {
        let lines = tailer.read_blocking(1000).unwrap();
        if lines.is_empty() {
            break;
        }
        for l in lines.iter() {
            rows.push(NODE, l.bytes, file_name, l.truncated, READ_TS);
            // One row per line, in order: finish per line so http and logs rows interleave.
            let (http, logs) = rows.finish().unwrap();
            for (t, b) in [("http", http), ("logs", logs)] {
                if let Some(b) = b {
                    out.extend(lake_test_support::table_rows(t, &b));
                }
            }
        }
    }
    out
}

#[test]
fn every_fixture_produces_exactly_its_expected_rows() {
    let mut checked = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".log") {
            continue;
        }
        let got = rows_of(&path, &name, DEFAULT_MAX_LINE_BYTES);
        let expected_path = path.with_extension("expected.jsonl");
        lake_test_support::expect_jsonl(&expected_path, &got);
        checked += 1;
    }
    assert!(checked >= 1, "no fixture found in {}", fixtures().display());
}

/// A valid entry whose one header makes the line `len` bytes long.
fn huge_line(len: usize) -> String {
    let head = r#"{"level":"info","ts":1795648800.5,"logger":"http.log.access.log0","msg":"handled request","request":{"remote_ip":"127.0.0.1","remote_port":"1","proto":"HTTP/1.1","method":"GET","host":"h","uri":"/big","headers":{"X-Big":[""#;
    let tail = r#""]}},"user_id":"","duration":0.001,"size":1,"status":200,"resp_headers":{}}"#;
    format!("{head}{}{tail}", "a".repeat(len - head.len() - tail.len()))
}

#[test]
fn a_1_mib_line_parses_and_a_longer_one_is_cut_and_kept_raw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.log");
    let fits = huge_line(DEFAULT_MAX_LINE_BYTES);
    let over = huge_line(DEFAULT_MAX_LINE_BYTES + 4096);
    std::fs::write(&path, format!("{fits}\n{over}\n{}\n", huge_line(300))).unwrap();
    let rows = rows_of(&path, "huge.log", DEFAULT_MAX_LINE_BYTES);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["table"], "http");
    assert!(rows[0]["attrs"]["request.headers.X-Big"].as_str().unwrap().len() > 1_048_000);
    assert_eq!(rows[1]["table"], "logs");
    assert_eq!(rows[1]["source"], "caddy-unparsed");
    assert_eq!(rows[1]["attrs"]["truncated"], "true");
    assert_eq!(rows[1]["message"].as_str().unwrap().len(), DEFAULT_MAX_LINE_BYTES);
    assert_eq!(rows[1]["message"].as_str().unwrap(), &over[..DEFAULT_MAX_LINE_BYTES]);
    assert_eq!(rows[2]["table"], "http", "the line after a cut one is whole");
}
