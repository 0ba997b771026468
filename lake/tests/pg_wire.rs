//! `[pg]`: a real `lake serve` answering the PostgreSQL protocol to real clients — Debian's
//! `psql` 15, Python's psycopg 3 (the driver; also replaying the exact queries Grafana's
//! PostgreSQL data source sends, `fixtures/grafana-postgres/`), and hostile raw sockets.
//!
//! Needs `psql` (Debian `postgresql-client`), `openssl`, and psycopg in the peers venv
//! (`scripts/setup peers`, then its bin/ first on PATH, as `make test` does).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use lake_format::rows::MetricsBuilder;
use serde_json::{json, Value};

const SETUP: &str = "run `scripts/setup peers` (postgresql-client, openssl; psycopg==3.2.10 into ~/.cache/lake/peers-venv) and put the venv's bin/ first on PATH, as `make test` does";

/// 2026-12-07T10:00:00Z: the start of the window the Grafana fixtures were recorded over.
const WINDOW_START_US: i64 = 1_796_637_600_000_000;

/// Twelve `pg_seq` samples, one every 5 minutes from the window's start, values 0..11.
async fn seed(c: &reqwest::Client, url: &str) {
    let mut b = MetricsBuilder::new();
    for i in 0..12i64 {
        let k = format!("v{i}");
        b.push(WINDOW_START_US + i * 300_000_000, NODE, "pg_seq", i as f64, &[("k", k.as_str())]);
    }
    let (status, body) = post(c, url, "metrics", TOKEN, &format!("{NODE}/1/1"), encode(&b.finish())).await;
    assert_eq!(status, 200, "{body}");
}

struct PgLake {
    lake: Lake,
    pg_port: u16,
    _dir: tempfile::TempDir,
}

impl PgLake {
    fn dsn(&self, password: &str) -> String {
        format!("host=127.0.0.1 port={} user=grafana dbname=lake password={password} sslmode=disable", self.pg_port)
    }
}

/// A lake with `[pg]` (extra lines appended to the section), seeded, flushing only hourly:
/// every row the tests read is a fresh, unflushed one.
async fn start(pg_lines: &str, query_lines: &str) -> PgLake {
    let dir = tempfile::tempdir().unwrap();
    let (port, pg_port) = (free_port(), free_port());
    let mut toml = lake_toml(dir.path(), port).flush("1h");
    if !query_lines.is_empty() {
        toml = toml.query(query_lines);
    }
    let config = toml.section(&format!("[pg]\nlisten = \"127.0.0.1:{pg_port}\"\n{pg_lines}\n")).write();
    let lake = Lake::start(&config, port);
    seed(&reqwest::Client::new(), &lake.url).await;
    PgLake { lake, pg_port, _dir: dir }
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {what} ({e}): {SETUP}"))
}

fn psql(port: u16, password: &str, args: &[&str]) -> Output {
    run(
        Command::new("psql")
            .args([
                "-X",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "ops",
                "-d",
                "lake",
            ])
            .args(args)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10"),
        "psql",
    )
}

fn client_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg_wire/client.py")
}

fn python(args: &[&str]) -> Value {
    let out = run(Command::new("python3").arg(client_py()).args(args), "python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!("psycopg is not installed: {SETUP}\n{stderr}"),
        _ => panic!("client.py {args:?} failed ({}):\nstdout: {stdout}\nstderr: {stderr}", out.status),
    }
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("client.py printed {stdout:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_describes_queries_and_copies() {
    let l = start("", "").await;
    let out = psql(
        l.pg_port,
        READ_TOKEN,
        &[
            "-c",
            r"\dt",
            "-c",
            r"\d http",
            "-c",
            r"\d+ metrics",
            "-c",
            r"\x",
            "-c",
            "SELECT name, value, labels FROM metrics WHERE name = 'pg_seq' ORDER BY ts LIMIT 2",
            "-c",
            "COPY (SELECT value, labels['k'] AS k FROM metrics WHERE name = 'pg_seq' ORDER BY ts LIMIT 3) TO STDOUT",
            "-c",
            "COPY (SELECT name, value FROM metrics WHERE name = 'pg_seq' ORDER BY ts LIMIT 2) TO STDOUT WITH (FORMAT csv, HEADER)",
        ],
    );
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}");
    // \dt: every catalog table, in schema public.
    for table in ["http", "logs", "metrics", "alerts"] {
        assert!(t.contains(&format!(" public | {table:<10} | table | lake")), "\\dt lists {table}:\n{t}");
    }
    // \d http: the catalog's columns with the types their values come as.
    assert!(t.contains("Table \"public.http\""), "{t}");
    assert!(t.contains(" ts ") && t.contains("timestamp with time zone"), "{t}");
    assert!(t.contains("bigint") && t.contains("text"), "{t}");
    // \d+ metrics: the catalog's column docs as descriptions.
    assert!(
        t.contains("Table \"public.metrics\"") && t.contains("Description") && t.contains("Access method: heap"),
        "{t}"
    );
    // \x then a query: expanded records, the map as JSON.
    assert!(t.contains("-[ RECORD 1 ]"), "{t}");
    assert!(t.contains(r#"labels | {"k":"v0"}"#), "{t}");
    // COPY ... TO STDOUT, text and CSV.
    assert!(t.contains("0\tv0\n1\tv1\n2\tv2\n"), "{t}");
    assert!(t.contains("name,value\npg_seq,0\npg_seq,1\n"), "{t}");

    // A custom table (made by its first batch) is listed, described and read like the others.
    let c = reqwest::Client::new();
    let line = "{\"ts\": \"2026-12-07T10:00:00Z\", \"plan\": \"pro\", \"amount\": 9.5}\n";
    let (s, v) = send_custom(&c, &l.lake.url, "json", "signups", &format!("{NODE}/2/1"), line).await;
    assert_eq!(s, 200, "{v}");
    let out = psql(
        l.pg_port,
        READ_TOKEN,
        &["-c", r"\dt sign*", "-c", r"\d signups", "-At", "-c", "select plan, amount from signups"],
    );
    let t = text(&out);
    println!("{t}");
    assert!(out.status.success(), "{t}");
    // (-At: unaligned rows without headers, for every command.)
    assert!(t.contains("public|signups|table|lake\n"), "{t}");
    assert!(t.contains("plan|text|||\n") && t.contains("amount|double precision|||\n"), "{t}");
    assert!(t.contains("pro|9.5\n"), "{t}");

    // A wrong password: 28P01 in psql's words, counted.
    let out = psql(l.pg_port, "not-a-read-token-at-all", &["-c", "select 1"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("password authentication failed") && t.contains("read token"), "{t}");

    // A write: refused with the sandbox's reason, as /v1/sql refuses it.
    let out = psql(l.pg_port, READ_TOKEN, &["-c", "DROP TABLE http"]);
    let t = text(&out);
    assert!(!out.status.success() && t.contains("ERROR:"), "{t}");

    let metrics = reqwest::get(format!("{}/metrics", l.lake.url)).await.unwrap().text().await.unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{metrics}"))
    };
    assert!(value("lake_pg_connections_total ") >= 3);
    assert_eq!(value("lake_pg_auth_failures_total "), 1);
    assert!(value("lake_pg_queries_total ") >= 10);
    assert!(value("lake_pg_errors_total ") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_round_trips_types_and_binds_parameters() {
    let l = start("", "").await;
    let got = python(&["types", &l.dsn(READ_TOKEN)]);
    println!("{got:#}");
    for format in ["text", "binary"] {
        let r = &got[format];
        // timestamptz, text, float8, json, int8, bool, json, date.
        assert_eq!(r["oids"], json!([1184, 25, 701, 114, 20, 16, 114, 1082]), "{format}: {r}");
        assert_eq!(r["python"], json!(["datetime", "str", "float", "dict", "int", "bool", "list", "date"]), "{format}");
        assert_eq!(r["ts"], "2026-12-07T10:15:00+00:00", "{format}");
        assert_eq!(r["utcoffset"], 0.0, "{format}");
        assert_eq!(r["row"], json!([NODE, 3.0, {"k": "v3"}, 3, false, ["a", "b"], "2026-12-07"]), "{format}");
        assert_eq!(r["rows"], 2, "{format}");
    }
    assert_eq!(got["prepared"], json!([11, 2]));
    assert_eq!(got["injection"], 0);
    assert_eq!(got["since"], 6);
    assert_eq!(got["echo"], json!([2.5, true]));

    // A CancelRequest (psql's Ctrl-C) interrupts the running statement, not the session.
    let got = python(&["cancel", &l.dsn(READ_TOKEN)]);
    println!("{got:#}");
    assert_eq!(got["sqlstate"], "57014", "{got}");
    assert!(got["error"].as_str().unwrap().contains("canceling statement due to user request"), "{got}");
    assert!(got["seconds"].as_f64().unwrap() < 10.0, "cancelled long before the 30 s time limit: {got}");
    assert_eq!(got["after"], 42, "{got}");
    // The engine's query was interrupted too, not left running to its time limit.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = reqwest::get(format!("{}/metrics", l.lake.url)).await.unwrap().text().await.unwrap();
        if m.contains("\nlake_engine_cancelled_total 1\n") && m.contains("\nlake_engine_running 0\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the cancelled query still runs:\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fixtures' texts, replayed as Grafana's pgx sends them; `.panel.sql` files are the
/// panels' SQL before Grafana expands its macros (documentation), not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_postgres_queries_replay_against_lake_tables() {
    let l = start("", "").await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/grafana-postgres");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql") && !p.to_string_lossy().ends_with(".panel.sql"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut args = vec!["replay".to_string(), l.dsn(READ_TOKEN)];
    args.extend(files.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let got = python(&args);
    println!("{got:#}");
    assert_eq!(got.as_object().unwrap().len(), files.len(), "one answer per fixture: {got}");
    for (name, v) in got.as_object().unwrap() {
        assert!(v.get("error").is_none(), "{name}: {v}");
    }
    assert_eq!(got["health-check"], json!({"status": "EMPTY_QUERY"}));
    assert_eq!(got["version"]["rows"], json!([[1500]]));
    assert_eq!(got["timescaledb"]["rows"], json!([]));
    assert_eq!(got["schemas"]["rows"], json!([["public"]]));
    let tables: Vec<&str> = got["tables"]["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    for t in ["http", "logs", "metrics", "units"] {
        assert!(tables.contains(&t), "{t} in {tables:?}");
    }
    assert_eq!(got["tables-in-schema"]["rows"], got["tables"]["rows"]);
    let columns = &got["columns"]["rows"];
    assert_eq!(columns[0], json!(["ts", "timestamp with time zone"]), "{columns}");
    assert!(columns.as_array().unwrap().contains(&json!(["labels", "json"])), "{columns}");
    assert!(columns.as_array().unwrap().contains(&json!(["value", "double precision"])), "{columns}");
    // $__timeGroupAlias(ts,5m) + $__timeFilter(ts): one sample per 5-minute bucket.
    let tg = &got["time-group-alias"];
    assert_eq!(tg["described"], json!(["time", "value"]));
    assert_eq!(tg["rows"].as_array().unwrap().len(), 12, "{tg}");
    assert_eq!(tg["rows"][0], json!([1_796_637_600.0, 0.0]));
    assert_eq!(tg["rows"][11], json!([1_796_640_900.0, 11.0]));
    // $__timeGroup(ts,'5m',0): the buckets (Grafana fills the empty ones itself).
    assert_eq!(got["time-group-fill"]["rows"][3], json!([1_796_638_500.0, 1]));
    // $__timeFrom()/$__timeTo().
    assert_eq!(got["time-from-to"]["rows"], json!([[12, "2026-12-07T10:00:00+00:00", "2026-12-07T10:55:00+00:00"]]));
    // $__unixEpochFilter(t).
    assert_eq!(got["unix-epoch-filter"]["rows"], json!([[12]]));
    // $__time(ts) with the labels map as JSON.
    assert_eq!(got["table-with-labels"]["rows"][1], json!(["2026-12-07T10:05:00+00:00", NODE, 1.0, {"k": "v1"}]));
}

/// The startup message of protocol 3.0 for `user`.
fn startup(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for s in ["user", user, "database", "lake", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut m = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

/// Reads backend messages until one of type `want` (returned with its body) or the end.
fn read_until(s: &mut TcpStream, want: u8) -> Option<Vec<u8>> {
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).ok()?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).ok()?;
        if head[0] == want {
            return Some(body);
        }
    }
}

/// A raw session logged in with the read token, ready for queries.
fn raw_login(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&startup("raw")).unwrap();
    read_until(&mut s, b'R').expect("an authentication request");
    let mut pw = READ_TOKEN.as_bytes().to_vec();
    pw.push(0);
    let mut m = vec![b'p'];
    m.extend_from_slice(&((pw.len() + 4) as i32).to_be_bytes());
    m.extend(pw);
    s.write_all(&m).unwrap();
    read_until(&mut s, b'Z').expect("ready for query");
    s
}

/// The SQLSTATE and message of an ErrorResponse body.
fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut msg) = (String::new(), String::new());
    for f in body.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let v = String::from_utf8_lossy(&f[1..]).into_owned();
        match f[0] {
            b'C' => code = v,
            b'M' => msg = v,
            _ => {}
        }
    }
    (code, msg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_get_postgres_errors_and_never_hold_the_others() {
    let l = start(
        "max_connections = 3\nauth_timeout = \"2s\"\nidle_timeout = \"4s\"\nmax_message = \"64KiB\"",
        "timeout = \"2s\"\nmax_rows = 5",
    )
    .await;

    // A result cut at query.max_rows: the rows up to it, and psql shows why (a NOTICE).
    let out = psql(l.pg_port, READ_TOKEN, &["-At", "-c", "select * from range(10)"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n1\n2\n3\n4\n", "{t}");
    assert!(t.contains("NOTICE:  result cut at the lake's row limit of 5 rows (query.max_rows)"), "{t}");

    // Refused statements come back as PostgreSQL errors naming what was wrong, and the
    // connection answers the next query.
    let got = python(&["errors", &l.dsn(READ_TOKEN)]);
    println!("{got:#}");
    let by_sql = |prefix: &str| -> &Value {
        got.as_array().unwrap().iter().find(|e| e["sql"].as_str().unwrap().starts_with(prefix)).unwrap()
    };
    for (prefix, code) in [
        ("CREATE TABLE", "42501"),
        ("INSERT INTO", "42501"),
        ("SELECT * FROM read_csv", "42501"),
        ("SELEC 1", "42601"),
        ("SELECT count(*) FROM range", "57014"),
        ("COPY metrics FROM", "42501"),
        ("SELECT rolname FROM pg_catalog", "0A000"),
        ("SELECT * FROM no_such_table", "42P01"),
    ] {
        let e = by_sql(prefix);
        assert_eq!(e["sqlstate"], code, "{e}");
        assert!(!e["error"].as_str().unwrap().is_empty(), "{e}");
        assert_eq!(e["after"], 42, "the connection stays usable after {e}");
    }
    assert!(by_sql("SELECT * FROM read_csv")["error"].as_str().unwrap().contains("file"), "{got}");
    assert!(by_sql("SELECT count(*) FROM range")["error"].as_str().unwrap().contains("time limit"), "{got}");

    // A client that connects and says nothing is dropped at pg.auth_timeout; meanwhile a
    // query on another connection is answered at once.
    let mut silent = TcpStream::connect(("127.0.0.1", l.pg_port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t0 = Instant::now();
    let out = psql(l.pg_port, READ_TOKEN, &["-At", "-c", "select 5"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5", "{}", text(&out));
    assert!(t0.elapsed() < Duration::from_secs(2), "answered while a silent client waits");
    let mut buf = [0u8; 1];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the silent client's connection is closed");
    assert!(t0.elapsed() >= Duration::from_millis(1500) && t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());

    // A message over pg.max_message: refused from its header (54000), nothing buffered.
    let mut s = raw_login(l.pg_port);
    let mut m = vec![b'Q'];
    m.extend_from_slice(&(100_000_000i32).to_be_bytes());
    m.extend_from_slice(b"SELECT ");
    s.write_all(&m).unwrap();
    let body = read_until(&mut s, b'E').expect("an error response");
    let (code, msg) = error_fields(&body);
    assert_eq!(code, "54000", "{msg}");
    assert!(msg.contains("pg.max_message"), "{msg}");
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed after the oversized message");

    // Without [pg] TLS an SSLRequest is answered 'N' and the session goes on in the clear;
    // an empty password is refused like a wrong one (28P01).
    let mut s = TcpStream::connect(("127.0.0.1", l.pg_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"N");
    s.write_all(&startup("nobody")).unwrap();
    read_until(&mut s, b'R').expect("an authentication request");
    s.write_all(&[b'p', 0, 0, 0, 5, 0]).unwrap();
    let (code, msg) = error_fields(&read_until(&mut s, b'E').expect("an error response"));
    assert_eq!(code, "28P01", "{msg}");
    assert!(msg.contains("read token"), "{msg}");

    // Garbage where the startup message belongs: the connection is closed, nothing else.
    let mut s = TcpStream::connect(("127.0.0.1", l.pg_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut junk = vec![0, 0, 0, 40];
    junk.extend((0..36u8).map(|i| i.wrapping_mul(97)));
    s.write_all(&junk).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // Messages out of order on a logged-in session (Execute of a portal never bound): an
    // error, and the session still answers.
    let mut s = raw_login(l.pg_port);
    s.write_all(&[b'E', 0, 0, 0, 13, b'n', b'o', b'p', b'e', 0, 0, 0, 0, 0]).unwrap();
    s.write_all(&[b'S', 0, 0, 0, 4]).unwrap();
    let (code, msg) = error_fields(&read_until(&mut s, b'E').expect("an error response"));
    assert!(!code.is_empty() && msg.contains("nope"), "{code} {msg}");
    read_until(&mut s, b'Z').expect("ready again after Sync");
    let q = b"select 6\0";
    let mut m = vec![b'Q'];
    m.extend_from_slice(&((q.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(q);
    s.write_all(&m).unwrap();
    let row = read_until(&mut s, b'D').expect("a row");
    assert_eq!(&row[row.len() - 1..], b"6");
    let out = psql(l.pg_port, READ_TOKEN, &["-At", "-c", "select 8"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "8", "{}", text(&out));

    // A CancelRequest with the session's process id but a forged secret key is ignored:
    // the query runs on to its time limit.
    let got = python(&["cancel-wrong-key", &l.dsn(READ_TOKEN), &l.pg_port.to_string()]);
    assert_eq!(got["sqlstate"], "57014", "{got}");
    assert!(got["error"].as_str().unwrap().contains("time limit"), "{got}");
    assert_eq!(got["after"], 42, "{got}");

    // A logged-in session that goes quiet is closed at pg.idle_timeout, told why (57P05).
    let mut idle = raw_login(l.pg_port);
    let t0 = Instant::now();
    let body = read_until(&mut idle, b'E').expect("an error response at the idle timeout");
    let (code, msg) = error_fields(&body);
    assert_eq!(code, "57P05", "{msg}");
    assert!(msg.contains("pg.idle_timeout"), "{msg}");
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());

    // The connection cap: three sessions held, the fourth refused with 53300; one leaves,
    // and a new one gets in.
    let got = python(&["hold", &l.dsn(READ_TOKEN), "3"]);
    println!("{got:#}");
    assert!(got["extra"].as_str().unwrap().contains("too many connections"), "{got}");
    assert_eq!(got["after_one_left"], 7, "{got}");

    let metrics = reqwest::get(format!("{}/metrics", l.lake.url)).await.unwrap().text().await.unwrap();
    for name in ["lake_pg_connections_refused_total", "lake_pg_dropped_total", "lake_pg_errors_total"] {
        let v: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0);
        assert!(v >= 1, "{name} counted:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_sslmode_require_and_tokens_added_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("pg.crt"), dir.path().join("pg.key"));
    let out = run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl",
    );
    assert!(out.status.success(), "{}", text(&out));
    let l = start(&format!("tls_cert = {:?}\ntls_key = {:?}", cert, key), "").await;
    // `lake check-config` loads the pair too: a good one is summed up, a missing one named.
    let out = run(Command::new(lake_bin()).args(["check-config", "--config"]).arg(&l.lake.config), "lake");
    assert!(out.status.success() && text(&out).contains("(TLS offered)"), "{}", text(&out));
    let broken = dir.path().join("broken.toml");
    let config_text = std::fs::read_to_string(&l.lake.config).unwrap();
    std::fs::write(&broken, config_text.replace(&format!("{:?}", cert), "\"/nonexistent/pg.crt\"")).unwrap();
    let out = run(Command::new(lake_bin()).args(["check-config", "--config"]).arg(&broken), "lake");
    assert!(!out.status.success() && text(&out).contains("pg.tls_cert = /nonexistent/pg.crt"), "{}", text(&out));

    let out = run(
        Command::new("psql")
            .arg(format!("host=127.0.0.1 port={} user=ops dbname=lake sslmode=require", l.pg_port))
            .args(["-X", "-At", "-c", "select count(*) from metrics where name = 'pg_seq'", "-c", r"\conninfo"])
            .env("PGPASSWORD", READ_TOKEN),
        "psql",
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.starts_with("12\n"), "{t}");
    assert!(t.contains("SSL connection (protocol: TLSv1.3"), "{t}");

    // A read token added to the tokens file is accepted without a restart.
    let out = run(
        Command::new(lake_bin()).args(["token", "add", "--role", "read", "--config"]).arg(&l.lake.config),
        "lake token add",
    );
    assert!(out.status.success(), "{}", text(&out));
    let new_token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let new_token = new_token.as_str();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = psql(l.pg_port, new_token, &["-At", "-c", "select 3"]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
            break;
        }
        assert!(Instant::now() < deadline, "the added token was never accepted: {}", text(&out));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Grafana's PostgreSQL macros (pkg/tsdb/grafana-postgresql-datasource/macros.go) and
/// variables, expanded as Grafana does before sending a panel's SQL: the fixtures' window,
/// a 5 minute interval, `$host`/`$vhost` as quoted lists.
fn grafana_expand(sql: &str) -> String {
    let (from, to) = ("2026-12-07T10:00:00Z", "2026-12-07T11:00:00Z");
    let group = regex::Regex::new(r"\$__timeGroupAlias\(([^,)]+),\s*\$__interval\)").unwrap();
    let filter = regex::Regex::new(r"\$__timeFilter\(([^)]*)\)").unwrap();
    let s = group.replace_all(sql, "floor(extract(epoch from $1)/300)*300 AS \"time\"");
    let s = filter.replace_all(&s, format!("$1 BETWEEN '{from}' AND '{to}'").as_str());
    s.replace("$__interval_ms", "300000").replace("$host", &format!("'{NODE}'")).replace("$vhost", "'shop.example'")
}

/// Every query of the Web dashboard converted to the PostgreSQL data source (panels,
/// variables, annotations) runs over the wire as Grafana would send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_web_dashboard_runs_every_query() {
    let l = start("", "").await;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/grafana/postgres/web-postgres.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut sqls: Vec<(String, String)> = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "lake-pg", "{t}");
            sqls.push((format!("panel {} {}", p["title"], t["refId"]), t["rawSql"].as_str().unwrap().to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        sqls.push((format!("variable {}", v["name"]), v["query"].as_str().unwrap().to_string()));
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(sql) = a["target"]["rawSql"].as_str() {
            sqls.push((format!("annotation {}", a["name"]), sql.to_string()));
        }
    }
    assert!(sqls.len() >= 10, "{sqls:?}");
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (what, sql)) in sqls.iter().enumerate() {
        let expanded = grafana_expand(sql);
        assert!(!expanded.contains('$'), "{what}: a macro left unexpanded: {expanded}");
        let f = dir.path().join(format!("q{i:02}.sql"));
        std::fs::write(&f, expanded).unwrap();
        files.push(f.to_string_lossy().into_owned());
    }
    let mut args = vec!["replay".to_string(), l.dsn(READ_TOKEN)];
    args.extend(files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let got = python(&args);
    for (i, (what, _)) in sqls.iter().enumerate() {
        let r = &got[format!("q{i:02}")];
        assert!(r.get("error").is_none() && r.get("rows").is_some(), "{what}: {r}");
    }
    // The host variable lists the seeded node.
    let hosts = sqls.iter().position(|(w, _)| w == "variable \"host\"").unwrap();
    assert_eq!(got[format!("q{hosts:02}")]["rows"], json!([[NODE]]));
}
