//! The operator's commands against a real lake: `lake query` formats, `lake correlate
//! --ip` across tables, `lake correlate` of two series, `lake top`.

mod common;

use std::process::Command;

use common::*;
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
