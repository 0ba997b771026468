//! `[syslog]` against what real senders put on the wire (`fixtures/syslog/received/`,
//! captured from util-linux `logger` and a real `rsyslogd` by `fixtures/syslog/capture.py`)
//! and against hand-written devices' lines and damage (`fixtures/syslog/devices.udp`,
//! `fixtures/syslog/hostile.tcp`): every file is read as the source reads it — a `.udp`
//! file one datagram a line, a `.tcp` file as one stream through the framer — and its rows
//! are compared with `<file>.expected.jsonl`. `LAKE_BLESS=1` rewrites the expected files
//! (review the diff).

use std::path::{Path, PathBuf};

use lake_collector::sources::syslog::frame::Framer;
use lake_collector::sources::syslog::{SyslogConfig, SyslogFile, SyslogRows};
use serde_json::{json, Value};

const NODE: &str = "test-node";
const SENDER: &str = "192.0.2.10";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/syslog")
}

fn config(extra: &str) -> SyslogConfig {
    #[derive(serde::Deserialize)]
    struct F {
        syslog: SyslogFile,
    }
    let f: F = toml::from_str(&format!("[syslog]\ntimezone = \"UTC\"\n{extra}")).unwrap();
    f.syslog.validate().unwrap()
}

/// The rows of one capture received at `received` (µs), and whether each was damaged.
fn rows_of(config: &SyslogConfig, path: &Path, received: i64) -> (Vec<Value>, usize) {
    let bytes = std::fs::read(path).unwrap();
    let (transport, frames): (&str, Vec<(Vec<u8>, bool)>) = match path.extension().and_then(|e| e.to_str()) {
        Some("udp") => {
            let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            if lines.last().is_some_and(|l| l.is_empty()) {
                lines.pop();
            }
            ("udp", lines.into_iter().map(|l| (l.to_vec(), false)).collect())
        }
        Some("tcp") => {
            let mut f = Framer::new(config.max_message_bytes);
            let mut out = Vec::new();
            // In reads of 100 bytes: frames cross reads as on a real connection.
            for chunk in bytes.chunks(100) {
                f.push(chunk, &mut out);
            }
            f.finish(&mut out);
            ("tcp", out.into_iter().map(|fr| (fr.bytes, fr.truncated)).collect())
        }
        other => panic!("{}: unknown capture kind {other:?}", path.display()),
    };
    let mut rows = SyslogRows::new(config);
    let mut damaged = 0;
    for (bytes, truncated) in &frames {
        damaged += usize::from(rows.push(NODE, bytes, *truncated, SENDER, transport, received));
    }
    let batch = rows.finish().unwrap();
    let out =
        lake_test_support::batch_to_json(&batch).into_iter().map(|r| json!({"table": "logs", "row": r})).collect();
    (out, damaged)
}

fn micros(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_microsecond()
}

/// Each capture: file, its receive time, rows, damaged rows.
const CASES: &[(&str, &str, usize, usize)] = &[
    ("received/logger.udp", "2026-12-07T11:05:53Z", 6, 0),
    ("received/logger.tcp", "2026-12-07T11:05:53Z", 6, 0),
    ("received/logger-octet-count.tcp", "2026-12-07T11:05:53Z", 6, 0),
    ("received/rsyslog-octet-counted-rfc5424.tcp", "2026-12-07T11:05:53Z", 6, 0),
    ("received/rsyslog-forward.tcp", "2026-12-07T11:05:53Z", 6, 0),
    ("received/rsyslog-forward.udp", "2026-12-07T11:05:53Z", 6, 0),
    ("devices.udp", "2026-12-07T11:00:00Z", 9, 0),
    ("hostile.tcp", "2026-12-07T11:00:00Z", 16, 6),
];

#[test]
fn captures_make_exactly_their_rows() {
    let c = config("max_message_bytes = \"1KiB\"\n");
    for (file, received, rows, damaged) in CASES {
        let path = fixtures().join(file);
        let (got, bad) = rows_of(&c, &path, micros(received));
        lake_test_support::expect_jsonl(
            &path.with_extension(format!("{}.expected.jsonl", path.extension().unwrap().to_str().unwrap())),
            &got,
        );
        assert_eq!((got.len(), bad), (*rows, *damaged), "{file}: rows, damaged");
    }
}

#[test]
fn a_listed_device_hostname_becomes_host() {
    let c = config("host = \"hostname\"\nhostnames = [\"nas\", \"ups1\"]\n");
    let (rows, _) = rows_of(&c, &fixtures().join("devices.udp"), micros("2026-12-07T11:00:00Z"));
    let hosts: Vec<&str> = rows.iter().map(|r| r["row"]["host"].as_str().unwrap()).collect();
    assert_eq!(
        hosts,
        ["test-node", "nas", "test-node", "test-node", "test-node", "test-node", "ups1", "test-node", "test-node"]
    );
}
