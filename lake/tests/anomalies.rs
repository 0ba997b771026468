//! `lake anomalies` end to end on a generated lake: `lake-gen` writes 29 days of a small
//! fleet (3 hosts, a few samples an hour) with two injected incidents in the last day — a
//! 5xx storm on example.org and an error burst of nginx.service on amber-web — beside its
//! own routine ones (short 5xx incidents on most days, hour-long CPU spikes). The injected
//! hours rank first: from the data directory, from a running lake (`--url`), through the
//! `anomalies` named query of `/v1/sql`, and as an alert of a `kind = "anomaly"` rule.
//! Custom tables answer `lake top`, `lake anomalies --table` and the `events` view.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const HOUR: u64 = 3600;

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn lake(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(lake_bin()).args(args).env("LAKE_TOKEN", READ_TOKEN).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The rows of `lake anomalies --format json`, each cell as text.
fn json_rows(out: &str) -> Vec<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let cell = |c: &serde_json::Value| c.as_str().map_or_else(|| c.to_string(), String::from);
    v["rows"].as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(cell).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_incidents_rank_first_everywhere() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let end = now / HOUR * HOUR;
    let (storm, burst) = (end - 5 * HOUR, end - 10 * HOUR);
    let gen = Command::new(env!("CARGO_BIN_EXE_lake-gen"))
        .args(["--days", "29", "--hosts", "3", "--http-rows", "150000", "--metric-samples", "400000", "--seed", "3"])
        .args(["--end", &rfc3339(end), "--data-dir"])
        .arg(&data)
        .arg("--incident")
        .arg(format!("5xx:example.org@{}", rfc3339(storm)))
        .arg("--incident")
        .arg(format!("log-errors:amber-web/nginx.service@{}", rfc3339(burst)))
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    // A mistaken incident is refused with what there is.
    let bad = Command::new(env!("CARGO_BIN_EXE_lake-gen"))
        .args(["--days", "1", "--data-dir"])
        .arg(dir.path().join("other"))
        .args(["--incident", "5xx:nope.example@2000-01-01T00:00:00Z"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && err.contains("not inside the generated days"), "{err}");

    // From the data directory, as people read it.
    let data_dir = data.to_str().unwrap();
    let (ok, table, err) = lake(&["anomalies", "--data-dir", data_dir, "--limit", "8"]);
    assert!(ok, "{err}");
    eprintln!("lake anomalies --since 24h (the default):\n{table}");
    let (ok, out, err) = lake(&["anomalies", "--data-dir", data_dir, "--format", "json"]);
    assert!(ok, "{err}");
    let rows = json_rows(&out);
    let head: Vec<(&str, &str, &str)> =
        rows.iter().take(2).map(|r| (r[0].as_str(), r[1].as_str(), r[6].as_str())).collect();
    assert_eq!(
        head,
        [
            ("logs", "host=amber-web unit=nginx.service priority=err", "up"),
            ("http", "vhost=example.org status=5xx", "up")
        ],
        "{table}"
    );
    assert!(rows[0][2].starts_with(&rfc3339(burst)[..19]) && rows[1][2].starts_with(&rfc3339(storm)[..19]), "{rows:?}");
    // 600 error lines where none is usual; most of the storm hour's requests failed.
    assert_eq!(rows[0][3], "600.0", "{rows:?}");
    let (z0, z1, z2): (f64, f64, f64) =
        (rows[0][5].parse().unwrap(), rows[1][5].parse().unwrap(), rows[2][5].parse().unwrap());
    assert!(z0 > 100.0 && z1 > 50.0 && z1 > 1.5 * z2, "{table}");

    eprintln!("generated and ranked in {:?}", started.elapsed());
    // The same from a running lake, and as the named query.
    let port = free_port();
    let config = lake_toml(dir.path(), port)
        .section(
            r#"
[alerts]
builtins = false

[[rules]]
name = "log_anomaly"
kind = "anomaly"
table = "logs"
by = ["host", "unit", "priority"]
window = "24h"
threshold = 100
direction = "up"
every = "1s"
"#,
        )
        .write();
    let lake_run = Lake::start(&config, port);
    let url = lake_run.url.as_str();
    let (ok, out, err) = lake(&["anomalies", "--url", url, "--format", "json", "--limit", "2"]);
    assert!(ok, "{err}");
    assert_eq!(
        json_rows(&out).iter().map(|r| r[1].clone()).collect::<Vec<_>>(),
        [rows[0][1].clone(), rows[1][1].clone()]
    );
    let (ok, out, err) =
        lake(&["anomalies", "--url", url, "--format", "json", "--table", "http", "--by", "vhost,status"]);
    assert!(ok, "{err}");
    assert!(json_rows(&out).iter().take(2).any(|r| r[1] == "vhost=example.org status=503"), "{out}");
    let (ok, out, err) = lake(&["anomalies", "--url", url, "--format", "json", "--metric", "cpu_usage_percent"]);
    assert!(ok, "{err}");
    assert!(json_rows(&out).iter().all(|r| r[1].starts_with("cpu_usage_percent")), "{out}");
    for (args, want) in [
        (&["--table", "http", "--by", "nope"][..], "has no column \"nope\""),
        (&["--table", "nothere"][..], "nothere"),
        (&["--since", "8d"][..], "1h to 7d"),
        (&["--weeks", "0"][..], "weeks 0"),
        (&["--metric", "x' or 1=1"][..], "only letters"),
        (&["--by", "vhost"][..], "--table"),
    ] {
        let (ok, _, err) = lake(&[&["anomalies", "--url", url][..], args].concat());
        assert!(!ok && err.contains(want), "{args:?}: {err}");
    }

    let c = reqwest::Client::new();
    let r = c
        .post(format!("{url}/v1/sql"))
        .bearer_auth(READ_TOKEN)
        .json(&serde_json::json!({"query": "anomalies", "since": "24h", "format": "json"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["rows"][0][1], rows[0][1].as_str(), "{v}");
    assert_eq!(v["rows"][1][1], rows[1][1].as_str(), "{v}");

    // The anomaly rule fires for the burst alone (threshold 100, up, logs only).
    let deadline = Instant::now() + Duration::from_secs(60);
    let firing = loop {
        let rows =
            sql(&c, url, "select labels['series'], state from alerts where rule = 'log_anomaly' and state = 'firing'")
                .await;
        if !rows.as_array().unwrap().is_empty() {
            break rows;
        }
        assert!(Instant::now() < deadline, "the anomaly rule never fired");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(firing, serde_json::json!([["host=amber-web unit=nginx.service priority=3", "firing"]]));
    eprintln!("the rule fired after {:?}", started.elapsed());

    // A custom table: `lake top`, `lake anomalies --table` and the events view.
    let body = (0..6)
        .map(|i| {
            format!(
                "{{\"plan\": \"{}\", \"client_ip\": \"203.0.113.9\", \"amount\": {i}}}",
                if i < 4 { "pro" } else { "free" }
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let (s, b) = send_custom(&c, url, "json", "signups", &format!("{NODE}/9/1"), &body).await;
    assert_eq!(s, 200, "{b}");
    let (ok, out, err) = lake(&["top", "--url", url, "--table", "signups", "--by", "plan", "--format", "json"]);
    assert!(ok, "{err}");
    assert_eq!(json_rows(&out), [["pro", "4"], ["free", "2"]], "{out}");
    let (ok, _, err) = lake(&["top", "--url", url, "--table", "signups", "--by", "nope"]);
    assert!(!ok && err.contains("has no column \"nope\"") && err.contains("plan"), "{err}");
    let (ok, out, err) = lake(&["correlate", "--url", url, "--ip", "203.0.113.9"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("signups").count(), 6, "{out}");
    assert!(out.contains("plan=pro") && out.contains("amount=3"), "{out}");
    let (ok, _, err) = lake(&["anomalies", "--url", url, "--table", "signups", "--by", "plan"]);
    assert!(ok, "{err}");
    // A custom table's numeric column is a series (one bucket here: no correlation row).
    let (ok, _, err) = lake(&["correlate", "--url", url, "signups:amount", "metric:load1", "--format", "json"]);
    assert!(ok, "{err}");
    let (ok, _, err) = lake(&["correlate", "--url", url, "signups:plan", "metric:load1"]);
    assert!(!ok && err.contains("not numeric"), "{err}");
}
