//! `[[pull]]` end to end with the real binaries: a `lake-collector` pulls from a local
//! server that **replays** Cloudflare's and Open-Meteo's documented answers
//! (`fixtures/pull/`, documentation cited in its README — the vendors cannot be reached
//! offline) and ships to a real `lake serve`; the rows are queried back through
//! `/v1/sql`. The collector is stopped and started again: the Cloudflare window resumes at
//! the saved cursor and the weather reading it already shipped is not shipped twice.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use lake_test_support::replay::{Answer, Replay};
use lake_test_support::KillOnDrop;
use serde_json::{json, Value};

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pull").join(name)).unwrap()
}

/// Stops the collector as systemd does and checks it exited cleanly.
fn stop(mut collector: KillOnDrop) {
    unsafe { libc::kill(collector.0.id() as i32, libc::SIGTERM) };
    assert!(collector.0.wait().unwrap().success());
}

/// Polls `select count(*) from <table>` until it reaches `want` (30 s at most): a custom
/// table does not exist before its first rows arrive.
async fn wait_rows(c: &reqwest::Client, url: &str, table: &str, want: i64) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = try_sql(c, url, &format!("select count(*) from {table}")).await;
        let n = if status == 200 { v["rows"][0][0].as_i64().unwrap_or(0) } else { 0 };
        if n >= want || std::time::Instant::now() > deadline {
            if n < want {
                eprintln!("{table}: {status} {v}");
            }
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_and_open_meteo_replays_land_in_the_lake_once_across_a_restart() {
    let server = Replay::start();
    let empty_zone = json!({"data": {"viewer": {"zones": [{"httpRequestsAdaptiveGroups": [], "firewallEventsAdaptive": []}]}}, "errors": null});
    server.route(
        "/client/v4/graphql",
        vec![
            Answer::Ok(fixture("cloudflare/zone.json"), "application/json"),
            Answer::Ok(empty_zone.to_string().into_bytes(), "application/json"),
        ],
    );
    server.route("/v1/forecast", vec![Answer::Ok(fixture("open_meteo/current.json"), "application/json")]);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1s"), port);
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\
             [host]\nenabled = false\n[inventory]\nenabled = false\n[shipper]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\
             [[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nurl = \"{url}/client/v4/graphql\"\nzones = [\"{ZONE}\"]\n\
             bearer_token = \"cf-token\"\ninterval = \"1s\"\ntimeout = \"1s\"\n\
             [[pull]]\nname = \"home\"\npreset = \"open_meteo\"\nurl = \"{url}/v1/forecast\"\nlatitude = 52.52\nlongitude = 13.41\n\
             variables = [\"temperature_2m\", \"relative_humidity_2m\", \"weather_code\", \"wind_speed_10m\"]\ninterval = \"1s\"\ntimeout = \"1s\"\n",
            dir.path().join("collector").display(),
            lake.url,
            url = server.url,
        ),
    )
    .unwrap();
    let check =
        std::process::Command::new(collector_bin()).arg("--config").arg(&config).arg("--check").output().unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{out}{}", String::from_utf8_lossy(&check.stderr));
    assert!(
        out.contains("pull          cf (Cloudflare) POST") && out.contains("json/cloudflare_http + firewall"),
        "{out}"
    );

    let collector = KillOnDrop(start_collector(&config));
    let c = reqwest::Client::new();
    assert_eq!(wait_rows(&c, &lake.url, "cloudflare_http", 3).await, 3);
    assert_eq!(wait_rows(&c, &lake.url, "firewall", 2).await, 2);
    assert_eq!(wait_rows(&c, &lake.url, "weather", 1).await, 1);
    // Several more pulls of the same weather reading, then a restart.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop(collector);
    let before = server.received().len();
    server.route("/v1/forecast", vec![Answer::Ok(fixture("open_meteo/current-later.json"), "application/json")]);
    let collector = KillOnDrop(start_collector(&config));
    assert_eq!(wait_rows(&c, &lake.url, "weather", 2).await, 2);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop(collector);

    let http = sql(
        &c,
        &lake.url,
        "select strftime(ts, '%Y-%m-%dT%H:%M:%SZ'), host, zone, vhost, status, country, cache_status, method, requests, bytes, visits \
         from cloudflare_http order by ts, status",
    )
    .await;
    println!("cloudflare_http: {http}");
    assert_eq!(
        http,
        json!([
            ["2022-07-21T10:00:00Z", NODE, ZONE, "hostname.example.com", 200, "GB", "hit", "GET", 4350, 19849385, 4383],
            ["2022-07-21T10:00:00Z", NODE, ZONE, "hostname.example.com", 403, "CN", "dynamic", "POST", 12, 3464, 0],
            ["2022-07-21T10:01:00Z", NODE, ZONE, "www.example.com", 200, "NL", "miss", "GET", 4302, 17563009, 4375]
        ])
    );
    let fw = sql(
        &c,
        &lake.url,
        "select strftime(ts, '%Y-%m-%dT%H:%M:%SZ'), action, src, source, attrs['cf_action'], attrs['vhost'], attrs['path'] \
         from firewall where source = 'cloudflare' order by ts",
    )
    .await;
    println!("firewall: {fw}");
    assert_eq!(
        fw,
        json!([
            [
                "2022-07-21T10:00:12Z",
                "BLOCK",
                "203.0.113.7",
                "cloudflare",
                "block",
                "hostname.example.com",
                "/wp-login.php"
            ],
            [
                "2022-07-21T10:01:30Z",
                "CHALLENGE",
                "2001:db8::1",
                "cloudflare",
                "managed_challenge",
                "www.example.com",
                "/"
            ]
        ])
    );
    let weather = sql(
        &c,
        &lake.url,
        "select strftime(ts, '%Y-%m-%dT%H:%M:%SZ'), location, temperature_2m, relative_humidity_2m, weather_code, wind_speed_10m \
         from weather order by ts",
    )
    .await;
    println!("weather: {weather}");
    assert_eq!(
        weather,
        json!([
            ["2025-09-08T07:00:00Z", "home", 15.6, 82.0, 3, 7.9],
            ["2025-09-08T07:15:00Z", "home", 16.0, 80.0, 2, 9.4]
        ])
    );

    // Every Cloudflare window after the restart starts where the spooled one ended.
    let windows: Vec<(String, String)> = server
        .received()
        .iter()
        .filter(|r| r.target == "/client/v4/graphql")
        .map(|r| {
            let v: Value = serde_json::from_str(&r.body).unwrap();
            (
                v["variables"]["since"].as_str().unwrap().to_string(),
                v["variables"]["until"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!windows.is_empty());
    for w in windows.windows(2) {
        // The next window, or the same one again when a stop came before it was spooled.
        assert!(w[1].0 == w[0].1 || w[1] == w[0], "windows are contiguous, across the restart too: {windows:?}");
    }
    assert!(
        server.received()[before..].iter().any(|r| r.target.starts_with("/v1/forecast")),
        "pulled after the restart"
    );
}
