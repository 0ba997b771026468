//! `[[log_file]]` against real programs started here: Debian's nginx (a `combined` and an
//! `escape=json` access log of requests sent by the test), PostgreSQL 15 (its stderr
//! log with the default `log_line_prefix`, errors with DETAIL, HINT, CONTEXT and a
//! statement spread over lines) and util-linux `logger` (RFC 5424 and RFC 3164 messages,
//! received on a UDP socket and written one a line, as a syslog daemon's file has them).
//! The source tails their files as in production and the spooled rows are asserted
//! exactly. `scripts/setup peers` installs nginx and PostgreSQL; `logger` is essential.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lake_collector::sources::log_file::{validate_all, LogFileConfig, LogFileFile, LogFileSource};
use lake_collector::sources::SourceContext;
use lake_collector::spool::{SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const NGINX: &str = "/usr/sbin/nginx";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn config(name: &str, format: &str, path: &Path) -> LogFileConfig {
    #[derive(serde::Deserialize)]
    struct F {
        log_file: Vec<LogFileFile>,
    }
    let toml = format!(
        "[[log_file]]\nname = \"{name}\"\npaths = [{:?}]\nformat = \"{format}\"\ntimezone = \"UTC\"\nbatch_wait = \"50ms\"\npoll_interval = \"50ms\"\n[log_file.multiline]\nmax_wait = \"300ms\"\n",
        path.display().to_string()
    );
    // A short wait for PostgreSQL's last record; the other formats have no multiline.
    let toml =
        if format != "postgres" { toml.replace("[log_file.multiline]\nmax_wait = \"300ms\"\n", "") } else { toml };
    let f: F = toml::from_str(&toml).unwrap();
    validate_all(f.log_file).unwrap().remove(0)
}

/// Tails with the real source until `rows` rows were spooled; the rows of every table
/// (with their `table`).
async fn tail(config: &LogFileConfig, dir: &Path, rows: u64) -> Vec<Value> {
    let stats = Arc::new(Stats::default());
    let opts = SpoolOptions { max_size: 64 << 20, segment_size: 1 << 20 };
    let spool = SpoolHandle::open(dir.join("spool"), opts, Arc::clone(&stats)).await.unwrap();
    let ctx = SourceContext { node: Arc::from("test-node"), spool, stats: Arc::clone(&stats) };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(LogFileSource::new(config.clone(), ctx).run(cancel.clone()));
    let src = stats.source(config.source);
    for _ in 0..200 {
        if src.rows.load(Ordering::Relaxed) >= rows {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer: a row too many would show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(src.parse_errors.load(Ordering::Relaxed), 0);
    let records = lake_test_support::spool::spooled(&dir.join("spool")).await;
    records.into_iter().flat_map(|(_, _, rows)| rows).collect()
}

/// One HTTP/1.1 request (`head`: request line and headers) on its own connection; the
/// response read to its end.
fn request(port: u16, head: &str, body: &str) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let length = if body.is_empty() { String::new() } else { format!("Content-Length: {}\r\n", body.len()) };
    s.write_all(format!("{head}{length}Connection: close\r\n\r\n{body}").as_bytes()).unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nginx_access_logs_become_http_rows() {
    assert!(Path::new(NGINX).exists(), "{NGINX} is missing: apt-get install nginx (scripts/setup peers does)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = lake_test_support::free_port();
    std::fs::create_dir(d.join("tmp")).unwrap();
    let conf = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/nginx/nginx.conf"))
        .unwrap()
        .replace("/tmp/ngx", &d.display().to_string())
        .replace("18080", &port.to_string());
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let started = lake_format::rows::now_micros();
    let _nginx = lake_test_support::KillOnDrop(
        Command::new(NGINX)
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg(d.join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    request(port, &format!("GET /hello?x=1 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: {firefox}\r\nReferer: https://example.org/\"q\"\r\n"), "");
    request(port, "GET /missing HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: python-requests/2.31.0\r\n", "");
    let googlebot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    request(port, &format!("POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: {googlebot}\r\n"), "a=1");
    let ended = lake_format::rows::now_micros();

    // One test of both logs: the fields each format carries, the rest null.
    let want = |vhost: bool| {
        let v = |s: &'static str| if vhost { json!(s) } else { Value::Null };
        vec![
            json!({"method": "GET", "uri": "/hello?x=1", "path": "/hello", "proto": "HTTP/1.1", "status": 200, "size": 3,
                   "remote_ip": "127.0.0.1", "client_ip": "127.0.0.1", "user_agent": firefox, "referer": "https://example.org/\"q\"",
                   "client_class": "human", "client_name": null, "vhost": v("shop.example")}),
            json!({"method": "GET", "uri": "/missing", "path": "/missing", "proto": "HTTP/1.1", "status": 404, "size": 153,
                   "remote_ip": "127.0.0.1", "client_ip": "127.0.0.1", "user_agent": "python-requests/2.31.0", "referer": null,
                   "client_class": "other_bot", "client_name": "python-requests", "vhost": v("shop.example")}),
            json!({"method": "POST", "uri": "/form", "path": "/form", "proto": "HTTP/1.1", "status": 200, "size": 3,
                   "remote_ip": "127.0.0.1", "client_ip": "127.0.0.1", "user_agent": googlebot, "referer": null,
                   "client_class": "search_bot", "client_name": "Googlebot", "vhost": v("127.0.0.1")}),
        ]
    };
    for (format, file, vhost) in [("nginx_combined", "access.log", false), ("nginx_json", "access.json", true)] {
        let state = d.join(format);
        let rows = tail(&config("web", format, &d.join(file)), &state, 3).await;
        assert_eq!(rows.len(), 3, "{format}: {rows:#?}");
        for (row, want) in rows.iter().zip(want(vhost)) {
            assert_eq!(row["table"], "http");
            assert_eq!(row["host"], "test-node");
            for (k, v) in want.as_object().unwrap() {
                assert_eq!(&row[k], v, "{format} {k}: {row}");
            }
            let ts = row["ts"].as_i64().unwrap();
            // combined has whole seconds, msec milliseconds; nginx logs a request after its
            // response is sent, so a little after the client saw it.
            let (from, to) = (started / 1_000_000 * 1_000_000, ended + 1_000_000);
            assert!((from..=to).contains(&ts), "{format}: ts {ts} in [{from}, {to}]");
        }
        if vhost {
            assert!(rows[2]["bytes_read"].as_i64().unwrap() > 3, "request_length counts the head and body");
            assert!(rows[0]["duration_ms"].as_f64().unwrap() >= 0.0);
        }
        println!("{format}: {}", rows.iter().map(Value::to_string).collect::<Vec<_>>().join("\n"));
    }
}

/// Runs a PostgreSQL program, as `nobody` when the test runs as root (PostgreSQL refuses
/// to run as root).
fn pg(program: &str) -> Command {
    let path = PathBuf::from(PG_BIN).join(program);
    if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_postgres_stderr_log_becomes_logs_rows_with_its_details() {
    assert!(
        Path::new(PG_BIN).join("postgres").exists(),
        "{PG_BIN}/postgres is missing: apt-get install postgresql-15 (scripts/setup peers does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("pg");
    std::fs::create_dir(&d).unwrap();
    if as_root() {
        assert!(Command::new("chown").args(["nobody:nogroup"]).arg(&d).status().unwrap().success());
    }
    let data = d.join("data");
    let out = pg("initdb").arg("-D").arg(&data).args(["-U", "postgres", "--auth=trust"]).output().unwrap();
    assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
    let log_path = dir.path().join("postgresql.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = lake_test_support::free_port().to_string();
    let mut server = pg("postgres")
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(&d)
        .args(["-p", &port, "-c", "listen_addresses=", "-c", "logging_collector=off", "-c", "log_timezone=UTC"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if std::fs::read_to_string(&log_path).unwrap().contains("ready to accept connections") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sql = "create table t (id int primary key);\ninsert into t values (1);\ninsert into t values (1);\nselect id,\n       nope\n  from t;\ndo $$ begin raise warning 'slow query' using detail = 'took 3s', hint = 'add an index'; end $$;\n";
    let mut psql = Command::new(PathBuf::from(PG_BIN).join("psql"))
        .arg("-h")
        .arg(&d)
        .args(["-p", &port, "-U", "postgres", "-X", "-q", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    psql.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    psql.wait().unwrap();
    let pid = std::fs::read_to_string(data.join("postmaster.pid")).unwrap().lines().next().unwrap().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    server.wait().unwrap();

    let text = std::fs::read_to_string(&log_path).unwrap();
    let levels = ["LOG", "ERROR", "WARNING", "FATAL", "PANIC", "NOTICE", "INFO"];
    let records = text.lines().filter(|l| levels.iter().any(|w| l.contains(&format!("] {w}:  ")))).count() as u64;
    let rows = tail(&config("postgres", "postgres", &log_path), &dir.path().join("state"), records).await;
    println!("{} lines, {records} records, {} rows", text.lines().count(), rows.len());
    assert_eq!(rows.len() as u64, records, "{rows:#?}");
    assert!(rows.iter().all(|r| r["table"] == "logs" && r["source"] == "postgres" && r["pid"].is_i64()));
    let find = |start: &str| -> &Value {
        rows.iter().find(|r| r["message"].as_str().unwrap().starts_with(start)).unwrap_or_else(|| panic!("{start}"))
    };
    let dup = find("duplicate key");
    assert_eq!(
        dup["message"],
        "duplicate key value violates unique constraint \"t_pkey\"\nDETAIL:  Key (id)=(1) already exists.\nSTATEMENT:  insert into t values (1);"
    );
    assert_eq!(dup["priority"], 3);
    let col = find("column \"nope\"");
    assert_eq!(
        col["message"],
        "column \"nope\" does not exist at character 19\nSTATEMENT:  select id,\n\t       nope\n\t  from t;"
    );
    assert_eq!(col["pid"], dup["pid"], "one session");
    let warn = find("slow query");
    assert_eq!(
        warn["message"],
        "slow query\nDETAIL:  took 3s\nHINT:  add an index\nCONTEXT:  PL/pgSQL function inline_code_block line 1 at RAISE"
    );
    assert_eq!(warn["priority"], 4);
    let ready = find("database system is ready to accept connections");
    assert_eq!(ready["priority"], 6);
    let shut = find("database system is shut down");
    assert!(shut["ts"].as_i64().unwrap() > ready["ts"].as_i64().unwrap());
    for r in &rows {
        println!("{} [{}] p{} {:?}", r["ts"], r["pid"], r["priority"], r["message"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_logger_messages_become_syslog_rows() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let started = lake_format::rows::now_micros();
    let logger = |args: &[&str]| {
        let status = Command::new("logger")
            .args(["-n", "127.0.0.1", "-P", &port, "-d"])
            .args(args)
            // Classic RFC 3164 times are local: the entry reads them in UTC.
            .env("TZ", "UTC")
            .status()
            .expect("util-linux logger");
        assert!(status.success());
    };
    logger(
        &["--rfc5424", "-t", "backup", "-p", "daemon.err", "--msgid", "BK1"]
            .iter()
            .chain(&["--sd-id", "meta@32473", "--sd-param", "job=\"nightly\"", "backup of /home failed: disk full"])
            .copied()
            .collect::<Vec<_>>(),
    );
    logger(&["--rfc3164", "-t", "sshd", "-i", "-p", "auth.info", "Accepted publickey for deploy from 203.0.113.7"]);
    let ended = lake_format::rows::now_micros();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("syslog");
    let mut file = std::fs::File::create(&log).unwrap();
    let mut buf = [0u8; 65536];
    for _ in 0..2 {
        let n = sock.recv(&mut buf).unwrap();
        file.write_all(buf[..n].strip_suffix(b"\n").unwrap_or(&buf[..n])).unwrap();
        file.write_all(b"\n").unwrap();
    }
    println!("{}", std::fs::read_to_string(&log).unwrap());
    let rows = tail(&config("syslog", "syslog", &log), &dir.path().join("state"), 2).await;
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let (a, b) = (&rows[0], &rows[1]);
    assert_eq!(
        (a["source"].as_str(), a["ident"].as_str(), a["priority"].as_i64()),
        (Some("syslog"), Some("backup"), Some(3))
    );
    assert_eq!(a["message"], "backup of /home failed: disk full");
    assert_eq!((a["attrs"]["facility"].as_str(), a["attrs"]["msgid"].as_str()), (Some("3"), Some("BK1")));
    assert!(a["attrs"]["structured_data"].as_str().unwrap().ends_with("[meta@32473 job=\"nightly\"]"), "{a}");
    assert_eq!((b["ident"].as_str(), b["priority"].as_i64()), (Some("sshd"), Some(6)));
    assert_eq!(b["message"], "Accepted publickey for deploy from 203.0.113.7");
    assert_eq!(b["attrs"]["facility"], "4");
    assert!(b["pid"].as_i64().unwrap() > 0, "logger -i sends its pid");
    for r in &rows {
        assert!(!r["attrs"]["hostname"].as_str().unwrap().is_empty());
        let ts = r["ts"].as_i64().unwrap();
        let (from, to) = (started / 1_000_000 * 1_000_000, ended + 1_000_000);
        assert!((from..=to).contains(&ts), "ts {ts} in [{from}, {to}]");
    }
}
