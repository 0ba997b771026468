//! `[[pull]]` against a local HTTP server that **replays** the vendors' documented answers
//! (`fixtures/pull/`, see its README for the documentation each file follows): Cloudflare
//! and Open-Meteo cannot be reached offline, so the server stands in for them; and the
//! hostile answers a real API gives (500, garbage, 100 MB, no answer).

use std::sync::Arc;
use std::time::Duration;

use lake_test_support::replay::{Answer, Replay};
use serde_json::json;

use super::*;
use crate::spool::{SpoolHandle, SpoolOptions};

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";

fn fixture(path: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pull").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn config(toml: &str) -> anyhow::Result<PullConfig> {
    #[derive(Deserialize)]
    struct F {
        pull: Vec<PullFile>,
    }
    let f: F = toml::from_str(toml)?;
    let env = |v: &str| (v == "CF_TOKEN").then(|| "cf-s3cret".to_string());
    Ok(validate_all(f.pull, &env)?.remove(0))
}

fn micros(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_microsecond()
}

/// The NDJSON lines of the custom-table records.
fn lines(p: &Pulled, table: &str) -> Vec<Value> {
    p.records
        .iter()
        .filter(|r| r.table == format!("json/{table}"))
        .flat_map(|r| String::from_utf8(r.body.clone()).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

/// The rows of the Arrow records of `table`.
fn arrow_rows(p: &Pulled, table: &str) -> Vec<Value> {
    p.records
        .iter()
        .filter(|r| r.table == table)
        .flat_map(|r| {
            let (_, batches) = lake_format::wire::decode(&r.body).unwrap();
            batches.iter().flat_map(|b| lake_test_support::table_rows(table, b)).collect::<Vec<_>>()
        })
        .collect()
}

async fn once(c: &PullConfig, state: &mut PullState, now: i64) -> Option<Pulled> {
    let client = client(c).unwrap();
    pull_once(&client, c, "edge-1", 0, state, now).await.unwrap()
}

#[test]
fn config_checks_every_field_and_hides_secrets() {
    let c = config(&format!(
        "[[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nzones = [\"{ZONE}\"]\nbearer_token_env = \"CF_TOKEN\"\n"
    ))
    .unwrap();
    assert_eq!(
        (c.table.as_str(), c.method.as_str(), c.url.as_str()),
        ("cloudflare_http", "POST", cloudflare::DEFAULT_URL)
    );
    assert_eq!(c.secret_headers[0].1.expose(), "Bearer cf-s3cret");
    assert!(!format!("{c:?}").contains("s3cret"), "secrets never in Debug");
    let m =
        config("[[pull]]\nname = \"home\"\npreset = \"open_meteo\"\nlatitude = 52.52\nlongitude = 13.41\n").unwrap();
    assert_eq!(m.table, "weather");
    assert!(m.url.starts_with(
        "https://api.open-meteo.com/v1/forecast?latitude=52.52&longitude=13.41&current=temperature_2m%2C"
    ));
    assert!(m.url.ends_with("&timeformat=unixtime"), "{}", m.url);
    assert_eq!(m.key, ["ts", "location"]);
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tok");
    std::fs::write(&tok, "file-s3cret\n").unwrap();
    let g = config(&format!(
        "[[pull]]\nname = \"g\"\nurl = \"https://x.example/items?since={{cursor}}\"\ntable = \"items\"\nrows = \"/result/items\"\n\
         columns = {{ n = \"/n\", v = {{ pointer = \"/v\", type = \"float\" }} }}\nts = \"/t\"\nts_format = \"unix_ms\"\n\
         cursor = \"max_ts\"\nkey = [\"ts\", \"n\"]\nsecret_header = \"X-Api-Key\"\nsecret_file = \"{}\"\n",
        tok.display()
    ))
    .unwrap();
    assert_eq!(g.secret_headers[0].0, "X-Api-Key");
    assert_eq!(g.secret_headers[0].1.expose(), "file-s3cret");
    let bad = [
        ("[[pull]]\nname = \"g\"\ntable = \"t\"\n", "url is required"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\n", "table is required"),
        ("[[pull]]\nname = \"g\"\nurl = \"ftp://x/\"\ntable = \"t\"\n", "http:// or https://"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"http\"\n", "table"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\nrows = \"result\"\n", "start it with /"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\ncursor = \"next\"\n", "JSON pointer"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\ncursor = \"max_ts\"\n", "needs ts"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\ncolumns = { host = \"/h\" }\n", "vhost"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\ncolumns = { a = \"/a\" }\nkey = [\"b\"]\n", "not a column"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\nheaders = { Authorization = \"Bearer x\" }\n", "never logged"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\nbearer_token = \"a\"\nbearer_token_env = \"CF_TOKEN\"\n", "give at most one of"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\nbearer_token_env = \"NOPE\"\n", "NOPE is not set"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\nsecret = \"a\"\n", "needs secret_header"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\ntimeout = \"2m\"\n", "must not exceed"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\nmethod = \"PUT\"\n", "GET"),
        ("[[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nzones = [\"abc\"]\n", "API token"),
        ("[[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nbearer_token = \"t\"\n", "needs zones"),
        ("[[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nzones = [\"a b\"]\nbearer_token = \"t\"\n", "zone tag"),
        ("[[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nzones = [\"ab\"]\nbearer_token = \"t\"\nrows = \"/x\"\n", "maps the answer itself"),
        ("[[pull]]\nname = \"w\"\npreset = \"open_meteo\"\nlatitude = 95.0\nlongitude = 1.0\n", "latitude"),
        ("[[pull]]\nname = \"w\"\npreset = \"open_meteo\"\nlongitude = 1.0\n", "needs latitude"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\n[[pull]]\nname = \"g\"\nurl = \"http://y/\"\ntable = \"t\"\n", "used by two"),
        ("[[pull]]\nname = \"g\"\nurl = \"http://x/\"\ntable = \"t\"\nbogus = 1\n", "unknown field"),
    ];
    for (toml, want) in bad {
        let e = format!("{:#}", config(toml).unwrap_err());
        assert!(e.contains(want), "{toml}\n→ {e}\n(want {want:?})");
    }
}

#[test]
fn rows_paths_iterate_arrays_and_name_what_is_missing() {
    let doc = json!({"data": {"zones": [{"g": [{"a": 1}, {"a": 2}]}, {"g": [{"a": 3}]}], "one": {"a": 4}, "s": "x"}});
    let p = RowsPath::parse("/data/zones/[]/g").unwrap();
    assert_eq!(p.records(&doc).unwrap().len(), 3);
    assert_eq!(RowsPath::parse("/data/one").unwrap().records(&doc).unwrap(), [&json!({"a": 4})]);
    assert_eq!(
        RowsPath::parse("/data/zones/[]/h").unwrap().records(&doc).unwrap_err().to_string(),
        "nothing at pointer /data/zones/[]/h"
    );
    assert_eq!(
        RowsPath::parse("/data/s").unwrap().records(&doc).unwrap_err().to_string(),
        "pointer /data/s: a string, not an array of records or one record (object)"
    );
    assert_eq!(
        RowsPath::parse("/data/one/[]/a").unwrap().records(&doc).unwrap_err().to_string(),
        "pointer /data/one: an object, not an array (the path iterates it with [])"
    );
    assert_eq!(
        map::csv_records("a,b\r\n1,\"x, \"\"y\"\"\"\n\n2,z\n").unwrap(),
        json!([{"a": "1", "b": "x, \"y\""}, {"a": "2", "b": "z"}])
    );
    assert!(map::csv_records("a,b\n1\n").unwrap_err().to_string().contains("row 2 has 1 fields"));
    assert!(map::csv_records("a\n\"open\n").is_err());
    assert_eq!(TsFormat::UnixMs.parse(&json!(1_700_000_000_123i64)).unwrap(), 1_700_000_000_123_000);
    assert_eq!(TsFormat::UnixS.parse(&json!("1700000000.5")).unwrap(), 1_700_000_000_500_000);
    assert!(TsFormat::UnixS.parse(&json!(1_700_000_000_123_000_000i64)).unwrap_err().contains("out of range"));
    assert!(TsFormat::Rfc3339.parse(&json!("2025-09-08T07:00")).unwrap_err().contains("offset"));
}

#[tokio::test]
async fn cloudflare_documented_answer_maps_to_cloudflare_http_and_firewall_over_settled_windows() {
    let server = Replay::start();
    server.route("/client/v4/graphql", vec![Answer::Ok(fixture("cloudflare/zone.json"), "application/json")]);
    let c = config(&format!(
        "[[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nurl = \"{}/client/v4/graphql\"\nzones = [\"{ZONE}\"]\nbearer_token_env = \"CF_TOKEN\"\n",
        server.url
    ))
    .unwrap();
    let mut state = PullState::default();
    let p = once(&c, &mut state, micros("2022-07-21T10:10:30Z")).await.expect("a window settled");
    assert_eq!(p.failure, None);
    // The request: a GraphQL POST for [now - settle - backfill, now - settle), minute-aligned.
    let r = &server.received()[0];
    assert_eq!((r.method.as_str(), r.header("authorization")), ("POST", Some("Bearer cf-s3cret")));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        body["variables"],
        json!({"zoneTag": ZONE, "since": "2022-07-21T09:05:00Z", "until": "2022-07-21T10:05:00Z"})
    );
    let q = body["query"].as_str().unwrap();
    let limit = format!("limit: {}", cloudflare::LIMIT);
    assert!(q.contains(&format!("httpRequestsAdaptiveGroups({limit},")), "{q}");
    assert!(q.contains(&format!("firewallEventsAdaptive({limit},")), "{q}");
    assert_eq!(
        lines(&p, "cloudflare_http"),
        [
            json!({"ts": "2022-07-21T10:00:00.000000Z", "vhost": "hostname.example.com", "status": 200, "country": "GB",
                   "cache_status": "hit", "method": "GET", "requests": 4350, "bytes": 19849385, "visits": 4383, "zone": ZONE}),
            json!({"ts": "2022-07-21T10:00:00.000000Z", "vhost": "hostname.example.com", "status": 403, "country": "CN",
                   "cache_status": "dynamic", "method": "POST", "requests": 12, "bytes": 3464, "visits": 0, "zone": ZONE}),
            json!({"ts": "2022-07-21T10:01:00.000000Z", "vhost": "www.example.com", "status": 200, "country": "NL",
                   "cache_status": "miss", "method": "GET", "requests": 4302, "bytes": 17563009, "visits": 4375, "zone": ZONE}),
        ]
    );
    let fw = arrow_rows(&p, "firewall");
    assert_eq!(fw.len(), 2);
    assert_eq!(fw[0]["host"], "edge-1");
    assert_eq!(fw[0]["ts"], micros("2022-07-21T10:00:12Z"));
    assert_eq!((&fw[0]["action"], &fw[0]["src"]), (&json!("BLOCK"), &json!("203.0.113.7")));
    assert_eq!(fw[0]["source"], "cloudflare");
    assert_eq!(
        fw[0]["attrs"],
        json!({"zone": ZONE, "cf_action": "block", "cf_source": "firewallManaged", "country": "CN",
               "vhost": "hostname.example.com", "method": "POST", "path": "/wp-login.php",
               "rule_id": "efb7b8c949ac4650a09736fc376e9aee", "ray": "72b7b1e4ab3d2f1a", "user_agent": "Mozilla/5.0 (compatible; scanner)"})
    );
    assert_eq!((&fw[1]["action"], &fw[1]["src"]), (&json!("CHALLENGE"), &json!("2001:db8::1")));
    assert_eq!(fw[1]["attrs"]["cf_action"], "managed_challenge");
    assert!(fw[1]["attrs"].get("rule_id").is_none(), "empty values are left out");
    assert_eq!((p.rows, p.bad), (5, 0));
    assert_eq!(state.zones[ZONE], micros("2022-07-21T10:05:00Z"), "the zone's cursor is the window's end");

    // Nothing settled since: no request. A minute later, exactly the next minute.
    assert!(once(&c, &mut state, micros("2022-07-21T10:10:59Z")).await.is_none());
    assert_eq!(server.received().len(), 1);
    once(&c, &mut state, micros("2022-07-21T10:11:00Z")).await.unwrap();
    let body: Value = serde_json::from_str(&server.received()[1].body).unwrap();
    assert_eq!(
        (&body["variables"]["since"], &body["variables"]["until"]),
        (&json!("2022-07-21T10:05:00Z"), &json!("2022-07-21T10:06:00Z"))
    );
}

#[tokio::test]
async fn cloudflare_errors_in_a_200_are_a_failure_naming_the_pull_and_the_cursor_holds() {
    let server = Replay::start();
    server.route("/graphql", vec![Answer::Ok(fixture("cloudflare/error.json"), "application/json")]);
    let c = config(&format!(
        "[[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nurl = \"{}/graphql?key=hidden\"\nzones = [\"{ZONE}\"]\nbearer_token = \"t\"\n",
        server.url
    ))
    .unwrap();
    let mut state = PullState::default();
    let p = once(&c, &mut state, micros("2022-07-21T10:10:30Z")).await.unwrap();
    assert_eq!(
        p.failure.as_deref(),
        Some(&*format!(
            "pull cf (zone {ZONE}): POST {}/graphql?…: the API answered with errors: cannot request data older than 2678400s",
            server.url
        ))
    );
    assert_eq!(state, PullState::default(), "nothing shipped, the window is asked again");
    let notes = arrow_rows(&p, "logs");
    assert_eq!((notes.len(), &notes[0]["source"], &notes[0]["ident"]), (1, &json!("pull"), &json!("cf")));
    assert!(!notes[0]["message"].as_str().unwrap().contains("hidden"));
}

#[tokio::test]
async fn open_meteo_current_weather_ships_each_reading_once() {
    let server = Replay::start();
    let (a, b) = (fixture("open_meteo/current.json"), fixture("open_meteo/current-later.json"));
    server.route(
        "/v1/forecast",
        vec![
            Answer::Ok(a.clone(), "application/json"),
            Answer::Ok(a, "application/json"),
            Answer::Ok(b, "application/json"),
        ],
    );
    let c = config(&format!(
        "[[pull]]\nname = \"home\"\npreset = \"open_meteo\"\nurl = \"{}/v1/forecast\"\nlatitude = 52.52\nlongitude = 13.41\n\
         variables = [\"temperature_2m\", \"relative_humidity_2m\", \"weather_code\", \"wind_speed_10m\"]\n",
        server.url
    ))
    .unwrap();
    let mut state = PullState::default();
    let p = once(&c, &mut state, 1).await.unwrap();
    assert_eq!(
        server.received()[0].target,
        "/v1/forecast?latitude=52.52&longitude=13.41&current=temperature_2m%2Crelative_humidity_2m%2Cweather_code%2Cwind_speed_10m&timeformat=unixtime"
    );
    let want = json!({"ts": "2025-09-08T07:00:00.000000Z", "temperature_2m": 15.6, "relative_humidity_2m": 82.0,
                      "weather_code": 3, "wind_speed_10m": 7.9, "location": "home", "latitude": 52.52, "longitude": 13.41});
    assert_eq!(lines(&p, "weather"), [want]);
    let raw = String::from_utf8(p.records[0].body.clone()).unwrap();
    assert!(raw.contains("\"relative_humidity_2m\":82.0"), "a float column stays a float: {raw}");
    // The same 15-minute reading again: nothing new.
    let p = once(&c, &mut state, 2).await.unwrap();
    assert_eq!((p.rows, p.repeated, lines(&p, "weather").len()), (0, 1, 0));
    let p = once(&c, &mut state, 3).await.unwrap();
    assert_eq!(lines(&p, "weather")[0]["ts"], "2025-09-08T07:15:00.000000Z");
    assert_eq!(state.seen.len(), 2);
}

#[tokio::test]
async fn generic_pages_follow_the_cursor_and_bad_records_are_kept_raw() {
    let server = Replay::start();
    let page1 = json!({"result": {"items": [
        {"id": 1, "at": "2026-01-01T00:00:00Z", "v": 1},
        {"id": 2, "at": "2026-01-01T00:01:00Z", "v": "2.5"},
        {"id": 3, "v": 3},
        {"id": 4, "at": "2026-01-01T00:02:00Z", "v": "n/a"}
    ]}, "next": "p 2"});
    let page2 = json!({"result": {"items": [{"id": 2, "at": "2026-01-01T00:01:00Z", "v": 2.5}]}, "next": null});
    server.route(
        "/items",
        vec![
            Answer::Ok(page1.to_string().into_bytes(), "application/json"),
            Answer::Ok(page2.to_string().into_bytes(), "application/json"),
        ],
    );
    let c = config(&format!(
        "[[pull]]\nname = \"g\"\nmethod = \"POST\"\nurl = \"{}/items?page={{cursor}}\"\nbody = '{{\"after\":\"{{cursor}}\"}}'\n\
         table = \"items\"\nrows = \"/result/items\"\ncolumns = {{ id = \"/id\", v = {{ pointer = \"/v\", type = \"float\" }} }}\n\
         ts = \"/at\"\ncursor = \"/next\"\ncursor_initial = \"first\"\nkey = [\"id\"]\nheaders = {{ Accept = \"application/json\" }}\n",
        server.url
    ))
    .unwrap();
    let mut state = PullState::default();
    let p = once(&c, &mut state, 1).await.unwrap();
    assert_eq!(
        lines(&p, "items"),
        [
            json!({"ts": "2026-01-01T00:00:00.000000Z", "id": 1, "v": 1.0}),
            json!({"ts": "2026-01-01T00:01:00.000000Z", "id": 2, "v": 2.5})
        ]
    );
    let bad = arrow_rows(&p, "logs");
    assert_eq!(bad.len(), 2);
    assert_eq!(bad[0]["source"], "pull-unparsed");
    assert_eq!(bad[0]["attrs"]["error"], "nothing at pointer /result/items/at");
    assert_eq!(bad[1]["attrs"]["error"], "pointer /result/items/v: \"n/a\" is not a number");
    assert_eq!((p.rows, p.bad, p.more), (2, 2, true));
    assert_eq!(state.cursor.as_deref(), Some("p 2"));
    let p = once(&c, &mut state, 2).await.unwrap();
    assert_eq!((p.rows, p.repeated, p.more), (0, 1, false), "the overlapping row is skipped by its key");
    assert_eq!(state.cursor.as_deref(), Some("p 2"), "no next page: the cursor stays");
    let got = server.received();
    assert_eq!((got[0].target.as_str(), got[0].body.as_str()), ("/items?page=first", "{\"after\":\"first\"}"));
    assert_eq!((got[1].target.as_str(), got[1].body.as_str()), ("/items?page=p%202", "{\"after\":\"p 2\"}"));
    assert_eq!(got[0].header("accept"), Some("application/json"));
}

#[tokio::test]
async fn csv_with_max_ts_cursor() {
    let server = Replay::start();
    server.route(
        "/export.csv",
        vec![Answer::Ok(b"\xef\xbb\xbfday,signups\r\n1767225600,12\r\n1767312000,\"15\"\r\n".to_vec(), "text/csv")],
    );
    let c = config(&format!(
        "[[pull]]\nname = \"s\"\nurl = \"{}/export.csv?since={{cursor}}\"\nformat = \"csv\"\ntable = \"signups\"\n\
         columns = {{ signups = {{ pointer = \"/signups\", type = \"int\" }} }}\nts = \"/day\"\nts_format = \"unix_s\"\ncursor = \"max_ts\"\ncursor_initial = \"0\"\n",
        server.url
    ))
    .unwrap();
    let mut state = PullState::default();
    let p = once(&c, &mut state, 1).await.unwrap();
    assert_eq!(
        lines(&p, "signups"),
        [
            json!({"ts": "2026-01-01T00:00:00.000000Z", "signups": 12}),
            json!({"ts": "2026-01-02T00:00:00.000000Z", "signups": 15})
        ]
    );
    assert_eq!(state.cursor.as_deref(), Some("1767312000"));
    once(&c, &mut state, 2).await.unwrap();
    assert_eq!(server.received()[1].target, "/export.csv?since=1767312000");
}

/// Every record spooled, as (table, rows), acknowledged.
async fn drain(spool: &SpoolHandle) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    while let Some(rec) = spool.peek().await.unwrap() {
        let rows = if let Some(t) = custom::custom_name(&rec.table) {
            let _ = t;
            String::from_utf8(rec.body.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        } else {
            let (_, batches) = lake_format::wire::decode(&rec.body).unwrap();
            batches.iter().flat_map(|b| lake_test_support::table_rows(&rec.table, b)).collect()
        };
        out.push((rec.table.clone(), rows));
        spool.ack(rec.seq).await.unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_are_counted_and_the_next_pull_still_works_then_a_restart_resumes() {
    let server = Replay::start();
    let ok = |n: i64| Answer::Ok(json!({"items": [{"n": n, "t": n}]}).to_string().into_bytes(), "application/json");
    server.route(
        "/api",
        vec![
            Answer::Status(500, "upstream exploded".into()),
            Answer::Ok(b"<html>not json".to_vec(), "text/html"),
            Answer::Huge(100 << 20),
            Answer::Slow(Duration::from_secs(3), b"{}".to_vec()),
            ok(1_767_225_600),
        ],
    );
    let c = config(&format!(
        "[[pull]]\nname = \"h\"\nurl = \"{}/api?after={{cursor}}\"\ntable = \"things\"\nrows = \"/items\"\nts = \"/t\"\nts_format = \"unix_s\"\n\
         cursor = \"max_ts\"\nkey = [\"n\"]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nmax_bytes = \"1MiB\"\n",
        server.url
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = SpoolOptions { max_size: 64 << 20, segment_size: 4 << 20 };
    let stats = Arc::new(Stats::default());
    let spool = SpoolHandle::open(dir.path().join("spool"), opts, Arc::clone(&stats)).await.unwrap();
    let ctx = SourceContext { node: Arc::from("n1"), spool: spool.clone(), stats: Arc::clone(&stats) };
    let cancel = CancellationToken::new();
    let t0 = std::time::Instant::now();
    let task = tokio::spawn(PullSource::new(c.clone(), ctx.clone()).run(cancel.clone()));
    let mut all = Vec::new();
    for _ in 0..100 {
        all.extend(drain(&spool).await);
        if all.iter().any(|(t, _)| t == "json/things") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let things: Vec<&Value> = all.iter().filter(|(t, _)| t == "json/things").flat_map(|(_, r)| r).collect();
    assert_eq!(things, [&json!({"ts": "2026-01-01T00:00:00.000000Z", "n": 1_767_225_600, "t": 1_767_225_600})]);
    let notes: Vec<String> = all
        .iter()
        .filter(|(t, _)| t == "logs")
        .flat_map(|(_, r)| r)
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    let url = format!("GET {}/api?…", server.url);
    assert_eq!(notes.len(), 4, "{notes:#?}");
    assert_eq!(notes[0], format!("pull h: {url}: status 500: upstream exploded"));
    assert!(notes[1].starts_with(&format!("pull h: {url}: the response is not JSON: ")), "{}", notes[1]);
    assert_eq!(notes[2], format!("pull h: {url}: body larger than max_bytes (1048576 bytes): refused"));
    assert_eq!(notes[3], format!("pull h: {url}: no answer within the timeout (300ms)"));
    assert!(t0.elapsed() < Duration::from_secs(10), "the 100 MB body was not read to its end: {:?}", t0.elapsed());
    let s = stats.source(c.source);
    assert_eq!(s.errors.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(s.rows.load(std::sync::atomic::Ordering::Relaxed), 5, "the row and the four notes");
    cancel.cancel();
    task.await.unwrap().unwrap();

    // A restart resumes from the spooled state: the cursor is the row's time, the key known.
    let saved: PullState = ctx.load_state(c.source).await.unwrap().unwrap();
    assert_eq!(saved.cursor.as_deref(), Some("1767225600"));
    let before = server.received().len();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(PullSource::new(c.clone(), ctx.clone()).run(cancel.clone()));
    for _ in 0..50 {
        if server.received().len() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(server.received()[before].target, "/api?after=1767225600");
    assert!(drain(&spool).await.iter().all(|(t, _)| t != "json/things"), "the same row is not shipped again");
}

#[test]
fn the_commented_examples_in_the_example_config_parse() {
    let example = include_str!("../../../examples/collector.toml");
    let start = example.find("# [[pull]]\n# name = \"cloudflare\"").expect("the pull examples");
    let block: String = example[start..]
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{}\n", l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l)))
        .collect();
    #[derive(Deserialize)]
    struct F {
        pull: Vec<PullFile>,
    }
    let f: F = toml::from_str(&block).unwrap();
    let env = |v: &str| (v == "CLOUDFLARE_API_TOKEN").then(|| "t".to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut files = f.pull;
    let tok = dir.path().join("shop-token");
    std::fs::write(&tok, "s").unwrap();
    files[2].bearer_token_file = Some(tok);
    let c = validate_all(files, &env).unwrap();
    let presets: Vec<Preset> = c.iter().map(|c| c.preset).collect();
    assert_eq!(presets, [Preset::Cloudflare, Preset::OpenMeteo, Preset::Generic]);
    assert_eq!(c[2].key, ["id"]);
}

#[tokio::test]
async fn error_bodies_are_cut_and_redirects_are_not_followed() {
    let server = Replay::start();
    server.route("/long", vec![Answer::Status(503, "y".repeat(5000))]);
    server.route("/moved", vec![Answer::Status(302, String::new())]);
    for (path, want) in [("/long", format!("status 503: {}", "y".repeat(200))), ("/moved", "status 302".to_string())] {
        let c = config(&format!("[[pull]]\nname = \"e\"\nurl = \"{}{path}\"\ntable = \"t\"\n", server.url)).unwrap();
        let p = once(&c, &mut PullState::default(), 1).await.unwrap();
        assert_eq!(p.failure.unwrap(), format!("pull e: GET {}{path}: {want}", server.url));
    }
}

#[test]
fn a_cloudflare_window_at_the_api_limit_ships_and_says_the_rest_is_missing() {
    let c = config(&format!(
        "[[pull]]\nname = \"cf\"\npreset = \"cloudflare\"\nzones = [\"{ZONE}\"]\nbearer_token = \"t\"\nfirewall = false\n"
    ))
    .unwrap();
    let group = json!({"count": 1, "sum": {"edgeResponseBytes": 1, "visits": 1},
                       "dimensions": {"datetimeMinute": "2022-07-21T10:00:00Z", "edgeResponseStatus": 200}});
    let doc = json!({"data": {"viewer": {"zones": [{"httpRequestsAdaptiveGroups": vec![group; cloudflare::LIMIT]}]}}, "errors": null});
    let mut state = PullState::default();
    let now = micros("2022-07-21T10:10:30Z");
    let step = request(&c, &state, 0, now).unwrap();
    assert!(!step.req.body.as_deref().unwrap().contains("firewallEventsAdaptive"), "firewall = false");
    let p = process(&c, "n", &step, Ok(doc.to_string().into_bytes()), &mut state, now).unwrap();
    assert_eq!((p.rows, p.truncated, p.failure.as_deref()), (cloudflare::LIMIT as u64, true, None));
    let notes = arrow_rows(&p, "logs");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["priority"], 4);
    assert!(
        notes[0]["message"].as_str().unwrap().ends_with(
            "10000 rows in the window 2022-07-21T09:05:00.000000Z – 2022-07-21T10:05:00.000000Z, the API's limit: the rest of it is missing; lower max_window"
        ),
        "{}",
        notes[0]["message"]
    );
}
