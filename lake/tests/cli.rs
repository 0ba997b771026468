//! The operator's commands against a real lake: `lake query` formats, `lake correlate
//! --ip` across tables, `lake correlate` of two series, `lake top`, `lake logs` (filters,
//! paging through equal timestamps, hostile filter text, `-f` printing each line once).

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lake_format::logs::{LogRow, LogsBuilder};
use lake_format::rows::{now_micros, MetricsBuilder, TableBuilder};
use lake_format::{wire, Table};

fn run(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(lake_bin()).args(args).arg("--url").arg(url).env("LAKE_TOKEN", READ_TOKEN).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn batch(table: Table, rows: usize, fill: impl Fn(&mut TableBuilder, usize)) -> Vec<u8> {
    let mut b = TableBuilder::new(table);
    for i in 0..rows {
        fill(&mut b, i);
        b.end_row();
    }
    let batch = b.finish().unwrap();
    wire::encode(&batch.schema(), &[batch]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlate_top_and_query_formats() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1h"), port);
    let c = reqwest::Client::new();
    let now = now_micros();
    let ip = "203.0.113.7";
    let http = batch(Table::Http, 3, |b, i| {
        let c = |n| b.column(n).unwrap();
        let (ts, host, path, status, rip) = (c("ts"), c("host"), c("path"), c("status"), c("remote_ip"));
        b.ts(ts, now - 50_000_000 + i as i64);
        b.text(host, Some(NODE));
        b.text(path, Some(["/wp-login.php", "/", "/.env"][i]));
        b.int(status, Some(404));
        b.text(rip, Some(if i == 1 { "198.51.100.1" } else { ip }));
    });
    let fw = batch(Table::Firewall, 1, |b, _| {
        let c = |n| b.column(n).unwrap();
        let (ts, host, action, src, proto, dpt) =
            (c("ts"), c("host"), c("action"), c("src"), c("proto"), c("dst_port"));
        b.ts(ts, now - 40_000_000);
        b.text(host, Some(NODE));
        b.text(action, Some("BLOCK"));
        b.text(src, Some(ip));
        b.text(proto, Some("TCP"));
        b.int(dpt, Some(22));
    });
    let bans = batch(Table::Bans, 1, |b, _| {
        let c = |n| b.column(n).unwrap();
        let (ts, host, jail, action, bip) = (c("ts"), c("host"), c("jail"), c("action"), c("ip"));
        b.ts(ts, now - 30_000_000);
        b.text(host, Some(NODE));
        b.text(jail, Some("sshd"));
        b.text(action, Some("ban"));
        b.text(bip, Some(ip));
    });
    let mut m = MetricsBuilder::new();
    for i in 0..30i64 {
        let t = now - (30 - i) * 60_000_000;
        m.push(t, NODE, "load1", i as f64, &[]);
        m.push(t, NODE, "cpu_usage_percent", 2.0 * i as f64 + 1.0, &[("cpu", "total")]);
    }
    let metrics = encode(&m.finish());
    for (seq, (table, body)) in
        [("http", http), ("firewall", fw), ("bans", bans), ("metrics", metrics)].into_iter().enumerate()
    {
        let (s, b) = post(&c, &lake.url, table, TOKEN, &format!("{NODE}/1/{}", seq + 1), body).await;
        assert_eq!(s, 200, "{table}: {b}");
    }

    let (ok, out, err) = run(&lake.url, &["correlate", "--ip", ip]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[2].contains("http") && lines[2].contains("/wp-login.php"), "{out}");
    assert!(lines[3].contains("http") && lines[3].contains("/.env"), "{out}");
    assert!(lines[4].contains("firewall") && lines[4].contains("BLOCK TCP"), "{out}");
    assert!(lines[5].contains("bans") && lines[5].contains("sshd ban"), "{out}");
    assert!(!out.contains("198.51.100.1"), "{out}");

    let (ok, out, err) = run(
        &lake.url,
        &[
            "correlate",
            "metric:load1",
            "metric:cpu_usage_percent",
            "--host",
            NODE,
            "--bucket",
            "1m",
            "--max-lag",
            "3",
            "--format",
            "csv",
        ],
    );
    assert!(ok, "{err}");
    let best: Vec<&str> = out.lines().nth(1).unwrap().split(',').collect();
    assert_eq!((best[0], best[2]), ("0", "1.0"), "{out}");

    let (ok, out, err) = run(&lake.url, &["top", "--table", "http", "--by", "remote_ip", "--format", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"][0], serde_json::json!([ip, 2]));

    let (ok, _, err) = run(&lake.url, &["top", "--table", "http", "--by", "x; drop"]);
    assert!(!ok && err.contains("has no column"), "{err}");
    let (ok, _, err) = run(&lake.url, &["correlate", "metric:a' or '1", "metric:b"]);
    assert!(!ok && err.contains("only letters"), "{err}");

    let (ok, out, err) = run(&lake.url, &["query", "--named", "top_blocked_sources", "--since", "1h"]);
    assert!(ok && out.contains(ip), "{out}{err}");
    let (ok, _, err) = run(&lake.url, &["query", "--named", "no_such_query"]);
    assert!(!ok && err.contains("unknown named query"), "{err}");

    // Grafana's datasource API is mounted under /grafana of the same server.
    let r = c.get(format!("{}/grafana/", lake.url)).bearer_auth(READ_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = serde_json::json!({
        "range": {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        "intervalMs": 60000, "maxDataPoints": 100,
        "targets": [{"refId": "A", "target": "bans_per_jail"}]
    });
    let r = c.post(format!("{}/grafana/query", lake.url)).bearer_auth(READ_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v.to_string().contains("sshd"), "{v}");

    let (ok, out, _) =
        run(&lake.url, &["query", "--format", "csv", "select status, count(*) as n from http group by 1"]);
    assert!(ok);
    assert_eq!(out, "status,n\n404,3\n");
}

/// `(ts µs, host, unit, priority, message)` rows of `logs` with source journald.
fn log_batch(rows: &[(i64, &str, &str, i64, &str)]) -> Vec<u8> {
    let mut b = LogsBuilder::new();
    for &(ts, host, unit, priority, message) in rows {
        let row = LogRow {
            ts,
            host,
            source: "journald",
            unit: Some(unit),
            pid: Some(42),
            priority: Some(priority),
            message: Some(message),
            ..LogRow::default()
        };
        b.push(&row, [("stream", "stdout")]);
    }
    let batch = b.finish().unwrap();
    wire::encode(&batch.schema(), &[batch]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_filters_pages_and_follows() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A row limit of 5 makes `lake logs` page, twice inside a group of lines sharing one
    // instant.
    let config = lake_toml(dir.path(), port).flush("1h").query("max_rows = 5").write();
    let lake = Lake::start(&config, port);
    let c = reqwest::Client::new();
    let t = now_micros() - 60_000_000;
    let hostile = "'; DROP TABLE logs; --";
    let rows = [
        (t, NODE, "nginx.service", 6, "GET / 200"),
        (t + 1, NODE, "nginx.service", 3, "upstream timed out (110: Connection timed out)"),
        (t + 2, NODE, "sshd.service", 6, "Accepted publickey for root"),
        // Four lines of one instant, two of them identical.
        (t + 3, NODE, "app.service", 6, "same instant a"),
        (t + 3, NODE, "app.service", 6, "same instant c"),
        (t + 3, NODE, "app.service", 6, "same instant c"),
        (t + 3, NODE, "app.service", 4, "same instant d"),
        (t + 4, NODE, "app.service", 6, &format!("user typed {hostile}")),
        (t + 5, NODE, "app.service", 6, "100% done_ok"),
        (t + 6, NODE, "app.service", 7, "bell \x07 and \x1b[31mescape"),
    ];
    let (s, b) = post(&c, &lake.url, "logs", TOKEN, &format!("{NODE}/1/1"), log_batch(&rows)).await;
    assert_eq!(s, 200, "{b}");

    // Every line, oldest first, through pages of 5 that end inside the group of t+3.
    let (ok, out, err) = run(&lake.url, &["logs", "--since", "1h", "-n", "100"]);
    assert!(ok, "{err}");
    let got: Vec<&str> = out.lines().map(|l| l.split_once(": ").unwrap().1).collect();
    let mut want: Vec<String> = rows.iter().map(|r| r.4.to_string()).collect();
    want[9] = "bell \\u{7} and \\u{1b}[31mescape".into();
    let mut sorted_got = got.clone();
    sorted_got[3..7].sort_unstable();
    assert_eq!(sorted_got, want, "{out}");
    assert!(out.lines().next().unwrap().contains(" node-a nginx.service[42]: GET / 200"), "{out}");
    assert!(!out.contains('\x1b'), "colour or a raw escape in piped output: {out:?}");

    // -n: the newest lines, oldest first.
    let (ok, out, _) = run(&lake.url, &["logs", "--since", "1h", "-n", "2"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().next().unwrap().ends_with("100% done_ok"), "{out}");

    // --unit without .service, --priority as journalctl -p, --grep ignoring case.
    let (ok, out, _) = run(&lake.url, &["logs", "--since", "1h", "--unit", "nginx"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (ok, out, _) = run(&lake.url, &["logs", "--since", "1h", "-p", "warning"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].ends_with("upstream timed out (110: Connection timed out)") && lines[1].ends_with("same instant d")
    );
    let (ok, out, _) = run(&lake.url, &["logs", "--since", "1h", "--grep", "CONNECTION TIMED"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 1, "{out}");
    // `%` and `_` are text, not LIKE wildcards; a quote is text, not SQL.
    let (ok, out, _) = run(&lake.url, &["logs", "--since", "1h", "--grep", "0% done_"]);
    assert!(ok && out.lines().count() == 1, "{out}");
    let (ok, out, _) = run(&lake.url, &["logs", "--since", "1h", "--grep", "%_"]);
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out, err) = run(&lake.url, &["logs", "--since", "1h", "--grep", hostile, "--unit", "x' OR '1'='1"]);
    assert!(ok && out.is_empty(), "{out}{err}");
    let (ok, out, err) = run(&lake.url, &["logs", "--since", "1h", "--grep", hostile, "-o", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["message"], format!("user typed {hostile}"));
    assert_eq!(v["attrs"]["stream"], "stdout");
    assert_eq!(v["host"], NODE);
    let (ok, out, _) = run(&lake.url, &["query", "--format", "csv", "select count(*) as n from logs"]);
    assert!(ok && out == "n\n10\n", "{out}");

    // --host, and a range that holds nothing.
    let (ok, out, _) = run(&lake.url, &["logs", "--since", "1h", "--host", "node-b"]);
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out, _) = run(&lake.url, &["logs", "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-02T00:00:00Z"]);
    assert!(ok && out.is_empty(), "{out}");

    // Bad input names the flag and the value.
    let (ok, _, err) = run(&lake.url, &["logs", "--since", "10x"]);
    assert!(!ok && err.contains("--since") && err.contains("10x") && err.contains("RFC 3339"), "{err}");
    let (ok, _, err) = run(&lake.url, &["logs", "-p", "loud"]);
    assert!(!ok && err.contains("loud") && err.contains("warning"), "{err}");
    let (ok, _, err) = run(&lake.url, &["logs", "--since", "1h", "--until", "2h"]);
    assert!(!ok && err.contains("--since must be before --until"), "{err}");

    // -f: the last 2 lines, then every new line once, including lines sharing an instant,
    // identical lines, and a line arriving late for an instant already printed.
    let mut child = Command::new(lake_bin())
        .args(["logs", "--since", "1h", "-n", "2", "-f", "--interval", "200ms", "--url", &lake.url])
        .env("LAKE_TOKEN", READ_TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let collect = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
                got.push(l.split_once(": ").unwrap().1.to_string());
            }
        }
        // Anything more within a few polls would be a repeat.
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(800)) {
            got.push(format!("EXTRA {l}"));
        }
        got
    };
    assert_eq!(collect(2), ["100% done_ok", "bell \\u{7} and \\u{1b}[31mescape"]);
    let t2 = now_micros();
    let new = [
        (t2, NODE, "app.service", 6, "new 1"),
        (t2, NODE, "app.service", 6, "new 1"),
        (t2, NODE, "app.service", 6, "new 2"),
    ];
    let (s, b) = post(&c, &lake.url, "logs", TOKEN, &format!("{NODE}/1/2"), log_batch(&new)).await;
    assert_eq!(s, 200, "{b}");
    let mut got = collect(3);
    got.sort_unstable();
    assert_eq!(got, ["new 1", "new 1", "new 2"]);
    let late = [(t2 - 1, NODE, "app.service", 6, "late for an earlier instant"), (t2, NODE, "app.service", 6, "new 2")];
    let (s, b) = post(&c, &lake.url, "logs", TOKEN, &format!("{NODE}/1/3"), log_batch(&late)).await;
    assert_eq!(s, 200, "{b}");
    let mut got = collect(2);
    got.sort_unstable();
    assert_eq!(got, ["late for an earlier instant", "new 2"]);
    child.kill().unwrap();
    let _ = child.wait();
}
