//! The ufw and fail2ban parsers against `fixtures/<source>/`: each input line is paired
//! with one line of `<name>.expected.jsonl` — `{"row": {every column}}`, `{"none": true}`
//! (a line that is not an event) or `{"error": "<message>"}`. Input is read as bytes and
//! made UTF-8 the lossy way, as the file tailer does. `LAKE_BLESS=1` rewrites the expected
//! files (review the diff). Huge (1 MiB) lines are generated here, not committed.

use std::path::{Path, PathBuf};

use lake_collector::sources::fail2ban::{self, BansRows};
use lake_collector::sources::ufw::{self, FirewallRows};
use lake_collector::sources::zone;
use serde_json::{json, Value};

const NODE: &str = "test-node";
/// Time of a line that carries none (journald gives it in real use).
const FALLBACK_TS: i64 = 1_795_374_070_000_000;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| String::from_utf8_lossy(l).into_owned()).collect()
}

fn ufw_row(line: &str) -> Value {
    let tz = zone::parse_zone("UTC").unwrap();
    let now = zone::rfc3339_micros("2026-12-01T00:00:00Z").unwrap();
    match ufw::parse(line) {
        Ok(ev) => {
            let ts = ev.time.and_then(|t| t.resolve(&tz, now)).unwrap_or(FALLBACK_TS);
            let mut b = FirewallRows::new();
            b.push(NODE, ts, &ev);
            json!({"row": lake_test_support::batch_to_json(&b.finish().unwrap())[0]})
        }
        Err(e) => json!({"error": e.to_string()}),
    }
}

fn ban_row(line: &str, tz: &jiff::tz::TimeZone) -> Value {
    match fail2ban::parse(line, tz) {
        Ok(Some(ev)) => {
            let mut b = BansRows::new();
            b.push(NODE, FALLBACK_TS, &ev);
            json!({"row": lake_test_support::batch_to_json(&b.finish().unwrap())[0]})
        }
        Ok(None) => json!({"none": true}),
        Err(e) => json!({"error": e.to_string()}),
    }
}

#[test]
fn ufw_fixture() {
    let dir = fixtures().join("ufw");
    let got: Vec<Value> = lines(&dir.join("kernel.log")).iter().map(|l| ufw_row(l)).collect();
    lake_test_support::expect_jsonl(&dir.join("kernel.expected.jsonl"), &got);
}

#[test]
fn fail2ban_fixture() {
    // The log's times are the server's local time; the fixture's server ran at +01:00.
    let tz = zone::parse_zone("+01:00").unwrap();
    let dir = fixtures().join("fail2ban");
    let got: Vec<Value> = lines(&dir.join("fail2ban.log")).iter().map(|l| ban_row(l, &tz)).collect();
    lake_test_support::expect_jsonl(&dir.join("fail2ban.expected.jsonl"), &got);
}

#[test]
fn huge_lines_parse_without_loss() {
    let mac = "a".repeat(1 << 20);
    let line =
        format!("[UFW BLOCK] IN=eth0 OUT= MAC={mac} SRC=203.0.113.7 DST=198.51.100.2 LEN=60 PROTO=TCP SPT=1 DPT=2");
    let row = ufw_row(&line);
    assert_eq!(row["row"]["attrs"]["MAC"].as_str().unwrap().len(), 1 << 20);
    assert_eq!(row["row"]["dst_port"], 2);
    let tz = zone::parse_zone("UTC").unwrap();
    let ip = "9".repeat(1 << 20);
    let row = ban_row(&format!("2026-11-22 10:15:03,002 fail2ban.actions        [812]: NOTICE  [sshd] Ban {ip}"), &tz);
    assert_eq!(row["row"]["ip"].as_str().unwrap().len(), 1 << 20);
}
