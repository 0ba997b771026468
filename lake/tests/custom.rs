//! Custom tables end to end against a real `lake serve`: inference and evolution over
//! three batches, a conflicting type refused, CSV, a 10,000-column attack refused,
//! idempotent replay, `kill -9` between batches, a join with `http` on time buckets,
//! `lake tables` and `lake ingest`.

mod common;

use std::process::Command;

use common::*;
use lake::testing::http_rows;
use lake_format::{wire, Table};

/// 2026-11-25T10:00:00Z plus `minute` minutes, in RFC 3339.
fn at(minute: u32) -> String {
    format!("2026-11-25T{:02}:{:02}:00Z", 10 + minute / 60, minute % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_tables_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = lake_toml(dir.path(), port)
        .flush("300ms")
        .section("[custom]\nmax_columns = 100\n\n[custom.tables.ups]\nlenient = true\nts_field = \"time\"")
        .write();
    let mut lake = Lake::start(&config, port);
    let client = reqwest::Client::new();
    let url = lake.url.clone();

    // Batch 1 infers the schema.
    let b1: String = (0..60)
        .map(|m| format!("{{\"ts\": \"{}\", \"plan\": \"pro\", \"amount\": {m}.5, \"trial\": false}}\n", at(m)))
        .collect();
    let (s, v) = send_custom(&client, &url, "json", "signups", &format!("{NODE}/1/1"), &b1).await;
    assert_eq!((s, v["rows"].as_i64()), (200, Some(60)), "{v}");
    // Batch 2 adds a column (a JSON array body this time).
    let b2 = format!("[{{\"ts\": \"{}\", \"plan\": \"free\", \"amount\": 0, \"country\": \"NZ\"}}]", at(61));
    let (s, v) = send_custom(&client, &url, "json", "signups", &format!("{NODE}/1/2"), &b2).await;
    assert_eq!(s, 200, "{v}");
    // Batch 3 conflicts with a type: refused, naming field, line and both types.
    let b3 = format!("{{\"ts\": \"{}\", \"plan\": \"pro\"}}\n{{\"ts\": \"{}\", \"trial\": \"yes\"}}\n", at(62), at(63));
    let (s, v) = send_custom(&client, &url, "json", "signups", &format!("{NODE}/1/3"), &b3).await;
    assert_eq!(s, 400);
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("line 2") && msg.contains("\"trial\"") && msg.contains("string") && msg.contains("bool"),
        "{msg}"
    );
    // Replaying batch 1 is acknowledged without storing it again.
    let (s, v) = send_custom(&client, &url, "json", "signups", &format!("{NODE}/1/1"), &b1).await;
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)));
    // Lenient table: the conflicting value is kept in _extra.
    let (s, v) = send_custom(
        &client,
        &url,
        "json",
        "ups",
        &format!("{NODE}/1/4"),
        "{\"time\": 1795000000, \"load\": 40}\n{\"time\": 1795000060, \"load\": \"n/a\"}\n",
    )
    .await;
    assert_eq!((s, v["lenient_values"].as_i64()), (200, Some(1)), "{v}");
    // CSV with quoting and an embedded newline.
    let csv =
        "ts,campaign,opens\n2026-11-25T10:00:00Z,\"Black \"\"Friday\"\"\nteaser\",120\n2026-11-25T11:00:00Z,plain,7\n";
    let (s, v) = send_custom(&client, &url, "csv", "campaigns", &format!("{NODE}/1/5"), csv).await;
    assert_eq!(s, 200, "{v}");
    // 10,000 columns: refused, nothing created.
    let wide: serde_json::Map<String, serde_json::Value> = (0..10_000).map(|i| (format!("c{i}"), i.into())).collect();
    let (s, v) = send_custom(
        &client,
        &url,
        "json",
        "attack",
        &format!("{NODE}/1/6"),
        &serde_json::Value::Object(wide).to_string(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("10000 fields"), "{v}");
    // Bad table names.
    let (s, _) = send_custom(&client, &url, "json", "http", &format!("{NODE}/1/7"), "{\"a\":1}").await;
    assert_eq!(s, 400);

    assert_eq!(count(&client, &url, "SELECT count(*) FROM signups").await, 61);
    assert_eq!(count(&client, &url, "SELECT count(*) FROM signups WHERE country = 'NZ' AND trial IS NULL").await, 1);
    let rows = sql(&client, &url, "SELECT campaign FROM campaigns ORDER BY ts").await;
    assert_eq!(rows[0][0], "Black \"Friday\"\nteaser");
    let rows = sql(&client, &url, "SELECT load, _extra FROM ups ORDER BY ts").await;
    assert_eq!(rows[1][0], serde_json::Value::Null);
    assert_eq!(rows[1][1], "{\"load\":\"n/a\"}");

    // kill -9 between batches: every acknowledged row is there once after the restart.
    lake.kill9();
    let lake = Lake::start(&config, port);
    let b4: String = (0..10)
        .map(|m| format!("{{\"ts\": \"{}\", \"plan\": \"team\", \"amount\": 1, \"seats\": {m}}}\n", at(70 + m)))
        .collect();
    let (s, _) = send_custom(&client, &url, "json", "signups", &format!("{NODE}/1/8"), &b4).await;
    assert_eq!(s, 200);
    let (s, v) = send_custom(&client, &url, "json", "signups", &format!("{NODE}/1/2"), &b2).await;
    assert_eq!((s, v["duplicate"].as_bool()), (200, Some(true)), "batch 2 was acknowledged before the kill");
    assert_eq!(count(&client, &url, "SELECT count(*) FROM signups").await, 71);
    assert_eq!(
        count(&client, &url, "SELECT count(*) FROM (SELECT ts, count(*) c FROM signups GROUP BY ts HAVING c > 1)")
            .await,
        0
    );

    // Join with http on 10-minute buckets.
    let http = http_rows(NODE, 600, 7, 1_795_600_800_000_000, None); // 2026-11-25T10:00:00Z
    let body = wire::encode(&Table::Http.schema(), &[http]).unwrap();
    let (s, m) = post(&client, &url, "http", TOKEN, &format!("{NODE}/1/9"), body).await;
    assert_eq!(s, 200, "{m}");
    let joined = sql(
        &client,
        &url,
        "WITH s AS (SELECT time_bucket(INTERVAL 10 MINUTE, ts) b, count(*) n FROM signups GROUP BY 1), \
              h AS (SELECT time_bucket(INTERVAL 10 MINUTE, ts) b, count(*) r FROM http GROUP BY 1) \
         SELECT count(*), sum(n), sum(r) FROM s JOIN h USING (b)",
    )
    .await;
    assert!(joined[0][0].as_i64().unwrap() >= 1, "{joined}");

    // After a flush the table is Parquet under tables/signups/.
    std::thread::sleep(std::time::Duration::from_millis(800));
    let part = dir.path().join("data/tables/signups/date=2026-11-25");
    assert!(std::fs::read_dir(&part).unwrap().count() >= 1);
    assert_eq!(count(&client, &url, "SELECT count(*) FROM signups").await, 71);

    // `lake tables` and `lake ingest` from the command line.
    let ndjson = dir.path().join("weather.ndjson");
    std::fs::write(
        &ndjson,
        (0..1000)
            .map(|i| {
                format!("{{\"ts\": {}, \"temp_c\": {}.25, \"station\": \"wlg\"}}\n", 1_795_600_800 + i * 60, i % 30)
            })
            .collect::<String>(),
    )
    .unwrap();
    let out = Command::new(lake_bin())
        .args(["ingest", "weather"])
        .arg(&ndjson)
        .args(["--url", &url, "--node", NODE, "--token", TOKEN, "--batch-rows", "300"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ingested 1000 rows into weather in 4 batches");
    let out = Command::new(lake_bin()).args(["tables", "--url", &url, "--token", READ_TOKEN]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let out = Command::new(lake_bin())
        .args(["tables", "--url", &url, "--token", READ_TOKEN, "--format", "csv"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for want in ["weather", "signups", "campaigns", "ups", "temp_c float64", "country string", "custom", "catalog"] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    assert!(!text.contains("attack"));
    drop(lake);
}
