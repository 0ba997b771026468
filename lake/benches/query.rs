//! Query benchmark: the default named queries and typical Grafana panels over a generated
//! 30-day lake (50 M `http` rows, 100 M `metrics` samples), through the lake's HTTP APIs
//! and as the same SQL in plain DuckDB on the same files.
//!
//! ```sh
//! cargo bench -p lake --bench query -- --data /var/tmp/lake-bench-data
//! LAKE_BENCH_DATA=/var/tmp/lake-bench-data cargo bench -p lake --bench query
//! cargo bench -p lake --bench query -- --data DIR --runs 9 --range 7d --only http --out report.json
//! cargo bench -p lake --bench query -- --data DIR --only bans_per_jail --runs 50 --sides lake
//! cargo bench -p lake --bench query -- --data DIR --url http://127.0.0.1:8080 --no-duckdb
//! ```
//! A missing data directory is generated first with `lake-gen --data-dir DIR` (its
//! defaults: 30 days, 5 hosts, 50 M http rows, 100 M samples; a few minutes).
//!
//! - **Lake**: an in-process server (the `lake-query` SQL and Grafana routers, an engine
//!   with the default limits of `lake.toml`: 2 threads, 2 GB, over the lake's own write
//!   buffers — empty: the lake between two flushes, so pooled connections reuse their
//!   views as in `lake serve`) on a loopback port, asked
//!   over real HTTP with a keep-alive client, as Grafana would: named queries through
//!   `POST /v1/sql` (their SQL with the macros expanded over the range), panels through
//!   `POST /grafana/query` (raw SQL with macros, a named target, template variables and
//!   an ad-hoc filter). The time is request to last byte of the JSON answer.
//! - **DuckDB**: `Connection::open_in_memory`, the same threads and memory limit, a view
//!   per table over `read_parquet('<data>/tables/<t>/date=*/*.parquet')`, and exactly the
//!   SQL the lake runs (same expansion, same bound parameters, the ad-hoc wrapper), rows
//!   fetched as Arrow.
//! - `--url`: the lake asked is a running `lake serve` on `DIR` instead of the in-process
//!   server (`bench/run --only scale` measures the server's memory during the queries);
//!   the engine's in-process time is then not measured. `--no-duckdb` leaves out the
//!   plain DuckDB side (on a 90-day lake it would double the run's time).
//! - The range is the last `--range` (default 24h) of the data, ending at its newest
//!   `http` row. Each query runs once on each side to warm up, then `--runs` (default 7)
//!   times alternating sides; the medians are compared.
//!
//! `--sides lake,engine,duckdb` (the default: all three) runs only the sides named, for a
//! profiler: each case's timed runs happen inside [`measured`], a function that is never
//! inlined, so `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*'`
//! counts the instructions of those runs alone (every thread, the server's included, as
//! callgrind runs one thread at a time) — divided by `--runs`, one query's cost on one
//! side, independent of the machine's load.
//!
//! Prints a Markdown table and writes JSON (`--out`, default
//! `target/query-bench.json`). Targets: p50 under 300 ms per query on this 2-core machine
//! (issue 6); the API's overhead over plain DuckDB at most 10 % or 1 ms, whichever is
//! larger (issue 23 §3).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duckdb::types::Value;
use lake_query::engine::{Engine, Limits};
use lake_query::grafana::macros::{expand, MacroContext};
use serde_json::{json, Value as Json};

const TARGET_P50_MS: f64 = 300.0;
const TARGET_OVERHEAD_PCT: f64 = 10.0;
/// The overhead allowed whatever the query's own time: a small query's fixed cost.
const TARGET_OVERHEAD_MS: f64 = 1.0;
const THREADS: usize = 2;
const MEMORY: &str = "2GB";

#[derive(Debug)]
struct Args {
    data: PathBuf,
    runs: usize,
    range_ms: i64,
    range: String,
    only: Option<String>,
    out: PathBuf,
    sides: Sides,
    /// A running lake to ask instead of the in-process server.
    url: Option<String>,
}

/// Which sides are timed.
#[derive(Debug, Clone, Copy)]
struct Sides {
    lake: bool,
    engine: bool,
    duckdb: bool,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut data = std::env::var("LAKE_BENCH_DATA").ok().map(PathBuf::from);
    let mut runs = 7;
    let mut range = "24h".to_string();
    let mut only = None;
    let mut out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/query-bench.json");
    let mut sides = Sides { lake: true, engine: true, duckdb: true };
    let mut url = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data" => data = it.next().map(PathBuf::from),
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).expect("--runs N"),
            "--range" => range = it.next().expect("--range 24h"),
            "--only" => only = it.next(),
            "--out" => out = it.next().map(PathBuf::from).expect("--out FILE"),
            "--sides" => {
                let list = it.next().expect("--sides lake,engine,duckdb");
                let has = |s: &str| list.split(',').any(|w| w.trim() == s);
                sides = Sides { lake: has("lake"), engine: has("engine"), duckdb: has("duckdb") };
                assert!(sides.lake || sides.engine || sides.duckdb, "--sides names none of lake, engine, duckdb");
            }
            "--url" => url = Some(it.next().expect("--url http://HOST:PORT").trim_end_matches('/').to_string()),
            "--no-duckdb" => sides.duckdb = false,
            // `cargo bench` passes --bench; anything else is a mistake worth saying.
            "--bench" => {}
            other => eprintln!("query bench: ignoring argument {other:?}"),
        }
    }
    let data = data.unwrap_or_else(|| PathBuf::from("/var/tmp/lake-bench-data"));
    let range_ms = lake_query::grafana::macros::parse_duration_ms(&range).expect("--range like 24h or 7d") as i64;
    Args { data, runs: runs.max(1), range_ms, range, only, out, sides, url }
}

/// How the lake is asked.
#[derive(Debug, Clone)]
enum Ask {
    /// `POST /v1/sql` running this named query over (from, to) in epoch milliseconds, its
    /// variables at their defaults (JSON answer).
    Named(String, i64, i64),
    /// `POST /grafana/query` with this body.
    Grafana(Json),
}

#[derive(Debug)]
struct Case {
    name: String,
    api: &'static str,
    ask: Ask,
    /// What DuckDB runs: the SQL the lake ends up running, with its parameters.
    sql: String,
    params: Vec<Value>,
}

#[derive(Debug)]
struct Measured {
    lake_ms: Vec<f64>,
    duck_ms: Vec<f64>,
    /// The same SQL through `Engine::query_params_blocking` in process: the engine's
    /// share of the lake's time (sandbox check, views, fresh rows), without HTTP and JSON.
    engine_ms: Vec<f64>,
    lake_rows: usize,
    /// None without the DuckDB side (`--no-duckdb`).
    duck_rows: Option<usize>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() {
    let args = args();
    if !args.data.join("tables").is_dir() {
        eprintln!("query bench: {} has no lake; generating one with `lake-gen` (a few minutes)", args.data.display());
        let status = Command::new(env!("CARGO_BIN_EXE_lake-gen"))
            .arg("--data-dir")
            .arg(&args.data)
            .status()
            .expect("run lake-gen");
        assert!(status.success(), "lake-gen failed");
    }
    let data = args.data.canonicalize().expect("data dir");
    let duck = plain_duckdb(&data);
    let (end_ms, http_rows, metric_rows): (i64, i64, i64) = duck
        .query_row("select epoch_ms(max(ts)) + 1, count(*), (select count(*) from metrics) from http", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("data end");
    let from_ms = end_ms - args.range_ms;
    eprintln!(
        "query bench: {} ({http_rows} http rows, {metric_rows} samples), range {} before {}",
        data.display(),
        args.range,
        jiff::Timestamp::from_millisecond(end_ms).map(|t| t.to_string()).unwrap_or_default()
    );
    let mut cases = cases(from_ms, end_ms);
    if let Some(only) = &args.only {
        cases.retain(|c| c.name.contains(only.as_str()));
    }

    // The lake: its query routers on a loopback port, on a runtime of their own — or the
    // running lake of `--url`.
    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(THREADS).enable_all().build().expect("runtime");
    let (url, engine) = match &args.url {
        Some(url) => (url.clone(), None),
        None => {
            let limits = Limits {
                threads: THREADS,
                memory_limit: MEMORY.into(),
                timeout: Duration::from_secs(120),
                ..Limits::default()
            };
            // The fresh rows of `lake serve` (its write buffers, here empty), with their
            // generation of the committed files: the lake between two flushes, as a
            // dashboard sees it.
            let fresh = Arc::new(lake::ingest::writer::Buffers::default());
            let engine = Arc::new(Engine::open(&data, fresh, limits).expect("engine"));
            let queries = lake_query::named::defaults();
            let app = lake::http::sql::router(Arc::clone(&engine), Vec::new(), queries.clone())
                .nest("/grafana", lake::http::grafana::router(Arc::clone(&engine), Vec::new(), queries));
            let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            server_rt.spawn(async move { axum::serve(listener, app).await });
            (url, Some(engine))
        }
    };
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = reqwest::Client::new();

    let mut results = Vec::new();
    for case in &cases {
        let lake =
            || client_rt.block_on(ask_lake(&client, &url, &case.ask)).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let plain = || {
            args.sides.duckdb.then(|| {
                run_duckdb(&duck, &case.sql, &case.params).unwrap_or_else(|e| panic!("{} in DuckDB: {e}", case.name))
            })
        };
        let in_process = || {
            engine.as_ref().map(|engine| {
                let t = Instant::now();
                let r = engine
                    .query_params_blocking(&case.sql, case.params.clone())
                    .unwrap_or_else(|e| panic!("{} in the engine: {e}", case.name));
                (t.elapsed().as_secs_f64() * 1e3, r.num_rows())
            })
        };
        let sides = args.sides;
        let lake_rows = if sides.lake { lake().1 } else { 0 };
        let duck_rows = plain().map(|(_, rows)| rows);
        if sides.engine {
            in_process();
        }
        let mut m = Measured { lake_ms: Vec::new(), duck_ms: Vec::new(), engine_ms: Vec::new(), lake_rows, duck_rows };
        measured(args.runs, &mut || {
            if sides.lake {
                m.lake_ms.push(lake().0);
            }
            m.duck_ms.extend(plain().map(|(ms, _)| ms));
            if sides.engine {
                m.engine_ms.extend(in_process().map(|(ms, _)| ms));
            }
        });
        eprintln!(
            "  {:<44} lake {:>7.1} ms  engine {:>7.1} ms  duckdb {:>7.1} ms  ({} / {} rows)",
            case.name,
            median(&m.lake_ms),
            median(&m.engine_ms),
            median(&m.duck_ms),
            m.lake_rows,
            m.duck_rows.map_or_else(|| "-".to_string(), |r| r.to_string())
        );
        results.push(m);
    }
    report(&args, &data, http_rows, metric_rows, &cases, &results);
}

/// The timed runs of one case: `runs` calls of `run`, in a function of its own that is
/// never inlined, so that a profiler can count them alone (see the module docs).
#[inline(never)]
fn measured(runs: usize, run: &mut dyn FnMut()) {
    for _ in 0..runs {
        run();
    }
}

/// Plain DuckDB over the same files: a view per table with data.
fn plain_duckdb(data: &Path) -> duckdb::Connection {
    let conn = duckdb::Connection::open_in_memory().expect("duckdb");
    conn.execute_batch(&format!("SET threads = {THREADS}; SET memory_limit = '{MEMORY}'; SET TimeZone = 'UTC';"))
        .expect("settings");
    for table in lake_format::Table::ALL {
        let dir = lake_format::layout::table_dir(data, table.name());
        if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            conn.execute_batch(&format!(
                "CREATE VIEW {t} AS SELECT * FROM read_parquet('{}/date=*/*.parquet');",
                dir.display(),
                t = table.name()
            ))
            .expect("view");
        }
    }
    conn
}

/// (milliseconds, rows) of the query in plain DuckDB, every row fetched as Arrow.
fn run_duckdb(conn: &duckdb::Connection, sql: &str, params: &[Value]) -> duckdb::Result<(f64, usize)> {
    let t = Instant::now();
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_arrow(duckdb::params_from_iter(params.iter()))?.map(|b| b.num_rows()).sum();
    Ok((t.elapsed().as_secs_f64() * 1e3, rows))
}

/// (milliseconds, rows) of the query through the lake's HTTP API.
async fn ask_lake(client: &reqwest::Client, url: &str, ask: &Ask) -> Result<(f64, usize), String> {
    let t = Instant::now();
    let req = match ask {
        Ask::Named(name, from, to) => client
            .post(format!("{url}/v1/sql"))
            .json(&json!({ "query": name, "from": from, "to": to, "format": "json" })),
        Ask::Grafana(body) => client.post(format!("{url}/grafana/query")).json(body),
    };
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let v: Json = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let rows = match ask {
        Ask::Named(..) => v["row_count"].as_u64().unwrap_or(0) as usize,
        // Time series: one point per row and value column; tables: their rows.
        Ask::Grafana(_) => v
            .as_array()
            .map(|a| a.iter().map(|t| t["datapoints"].as_array().or(t["rows"].as_array()).map_or(0, Vec::len)).sum())
            .unwrap_or(0),
    };
    Ok((ms, rows))
}

/// The queries: every default named query, then the panels.
fn cases(from_ms: i64, to_ms: i64) -> Vec<Case> {
    let mut out = Vec::new();
    // Named queries as the SQL API runs them (`{"query": name, "from": …, "to": …}`):
    // macros expanded over the range with about 200 buckets, variables (the log views'
    // filters) at their defaults and bound as parameters — DuckDB gets the same.
    for q in lake_query::named::defaults() {
        let mut ctx = MacroContext::last(to_ms, to_ms - from_ms, 200);
        q.fill_vars(&mut ctx.vars);
        let e = expand(&q.sql, &ctx).expect("named query expands");
        out.push(Case {
            name: format!("named: {}", q.name),
            api: "/v1/sql",
            ask: Ask::Named(q.name.clone(), from_ms, to_ms),
            sql: e.sql,
            params: e.params,
        });
    }
    let interval_ms = 60_000u64;
    let range = json!({
        "from": jiff::Timestamp::from_millisecond(from_ms).expect("from").to_string(),
        "to": jiff::Timestamp::from_millisecond(to_ms).expect("to").to_string(),
    });
    // A panel as simpod-json-datasource sends it.
    let grafana = |target: Json, adhoc: Json| {
        json!({
            "app": "dashboard", "requestId": "Q1", "timezone": "utc", "panelId": 1,
            "range": range.clone(), "interval": "1m", "intervalMs": interval_ms, "maxDataPoints": 1440,
            "targets": [target], "adhocFilters": adhoc,
            "scopedVars": {"__interval": {"text": "1m", "value": "1m"}},
        })
    };
    let ctx = |vars: &[(&str, &str)]| MacroContext {
        from_ms,
        to_ms,
        interval_ms,
        vars: vars.iter().map(|(k, v)| (k.to_string(), vec![v.to_string()])).collect(),
    };
    // (name, SQL, template variables, format)
    type Panel<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let panels: [Panel<'_>; 6] = [
        (
            "panel: cpu of one host ($host)",
            "SELECT $__timeGroup(ts, $__interval) AS time, avg(value) AS cpu_percent FROM metrics \
             WHERE name = 'cpu_usage_percent' AND labels['cpu'] = 'total' AND host = $host AND $__timeFilter(ts) \
             GROUP BY 1 ORDER BY 1",
            &[("host", "amber-web")],
            "timeseries",
        ),
        (
            "panel: requests per minute per vhost",
            "SELECT $__timeGroup(ts, 1m) AS time, vhost, count(*) AS requests FROM http \
             WHERE $__timeFilter(ts) GROUP BY 1, 2 ORDER BY 1",
            &[],
            "timeseries",
        ),
        (
            "panel: status classes",
            // As the web dashboard asks it: grouped by the integer class, labelled after.
            "SELECT time, CAST(class AS VARCHAR) || 'xx' AS class, requests FROM (\
             SELECT $__timeGroup(ts, $__interval) AS time, status // 100 AS class, count(*) AS requests \
             FROM http WHERE $__timeFilter(ts) GROUP BY 1, 2) ORDER BY 1",
            &[],
            "timeseries",
        ),
        (
            "panel: top paths",
            "SELECT path, count(*) AS requests, round(avg(duration_ms), 1) AS avg_ms FROM http \
             WHERE $__timeFilter(ts) GROUP BY path ORDER BY requests DESC LIMIT 20",
            &[],
            "table",
        ),
        (
            "panel: ufw blocks by source",
            "SELECT src, count(*) AS blocks, count(DISTINCT dst_port) AS ports FROM firewall \
             WHERE action = 'BLOCK' AND $__timeFilter(ts) GROUP BY src ORDER BY blocks DESC LIMIT 20",
            &[],
            "table",
        ),
        (
            "panel: net rx per host",
            "SELECT $__timeGroup(ts, $__interval) AS time, host, avg(value) AS rx_bytes_per_second FROM metrics \
             WHERE name = 'net_rx_bytes_per_second' AND labels['iface'] = 'eth0' AND $__timeFilter(ts) \
             GROUP BY 1, 2 ORDER BY 1",
            &[],
            "timeseries",
        ),
    ];
    for (name, sql, vars, format) in panels {
        let mut payload = json!({ "format": format });
        for (k, v) in vars {
            payload[*k] = json!(v);
        }
        let target = json!({"refId": "A", "datasource": {"type": "simpod-json-datasource", "uid": "lake"}, "target": sql, "payload": payload});
        let e = expand(sql, &ctx(vars)).expect("panel expands");
        out.push(Case {
            name: name.to_string(),
            api: "/grafana/query",
            ask: Ask::Grafana(grafana(target, json!([]))),
            sql: e.sql,
            params: e.params,
        });
    }
    // p95 per vhost as a dashboard has it: the named query as the panel's target.
    let q = lake_query::named::defaults().into_iter().find(|q| q.name == "p95_latency_per_vhost").expect("default");
    let e = expand(&q.sql, &ctx(&[])).expect("expands");
    let target = json!({"refId": "A", "target": q.name, "payload": {}});
    out.push(Case {
        name: "panel: p95 latency per vhost (named)".into(),
        api: "/grafana/query",
        ask: Ask::Grafana(grafana(target, json!([]))),
        sql: e.sql,
        params: e.params,
    });
    // The filter bar: requests per minute of one vhost, applied by wrapping the target.
    let sql = "SELECT $__timeGroup(ts, 1m) AS time, vhost, count(*) AS requests FROM http WHERE $__timeFilter(ts) GROUP BY 1, 2 ORDER BY 1";
    let e = expand(sql, &ctx(&[])).expect("expands");
    let wrapped = format!("SELECT * FROM (\n{}\n) AS __lake_target WHERE \"vhost\" = ?", e.sql);
    let target = json!({"refId": "A", "target": sql, "payload": {"format": "timeseries"}});
    let adhoc = json!([{"key": "vhost", "operator": "=", "value": "api.example.org"}]);
    out.push(Case {
        name: "panel: ad-hoc filter vhost=api.example.org".into(),
        api: "/grafana/query",
        ask: Ask::Grafana(grafana(target, adhoc)),
        sql: wrapped,
        params: vec![Value::Text("api.example.org".into())],
    });
    out
}

fn report(args: &Args, data: &Path, http_rows: i64, metric_rows: i64, cases: &[Case], results: &[Measured]) {
    println!();
    println!(
        "Query benchmark: {http_rows} http rows, {metric_rows} samples, range {} ({} runs, medians; {THREADS} DuckDB threads both sides)",
        args.range, args.runs
    );
    println!();
    println!("| query | API | lake p50 ms | duckdb p50 ms | overhead % | p50 < {TARGET_P50_MS:.0} ms | overhead ≤ {TARGET_OVERHEAD_PCT:.0} % or {TARGET_OVERHEAD_MS:.0} ms | engine in-process p50 ms |");
    println!("|---|---|---:|---:|---:|:---:|:---:|---:|");
    let mut rows = Vec::new();
    for (c, m) in cases.iter().zip(results) {
        let lake = median(&m.lake_ms);
        // Without a DuckDB side (`--no-duckdb`) there is no overhead to compare.
        let duck = (!m.duck_ms.is_empty()).then(|| median(&m.duck_ms));
        let overhead = duck.map(|duck| (lake / duck - 1.0) * 100.0);
        let pass_p50 = lake < TARGET_P50_MS;
        let pass_overhead =
            duck.map(|duck| lake - duck <= (duck * TARGET_OVERHEAD_PCT / 100.0).max(TARGET_OVERHEAD_MS));
        let mark = |b: bool| if b { "pass" } else { "FAIL" };
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "—".into());
        println!(
            "| {} | `{}` | {lake:.1} | {} | {} | {} | {} | {} |",
            c.name.replace('|', "\\|"),
            c.api,
            or_dash(duck.map(|d| format!("{d:.1}"))),
            or_dash(duck.map(|d| format!("{:+.1} ({:+.2} ms)", (lake / d - 1.0) * 100.0, lake - d))),
            mark(pass_p50),
            or_dash(pass_overhead.map(|p| mark(p).to_string())),
            or_dash((!m.engine_ms.is_empty()).then(|| format!("{:.1}", median(&m.engine_ms))))
        );
        rows.push(json!({
            "query": c.name, "api": c.api,
            "lake_p50_ms": lake, "duckdb_p50_ms": duck, "overhead_pct": overhead, "overhead_ms": duck.map(|d| lake - d),
            "pass_p50": pass_p50, "pass_overhead": pass_overhead,
            "engine_p50_ms": median(&m.engine_ms),
            "lake_ms": m.lake_ms, "duckdb_ms": m.duck_ms, "engine_ms": m.engine_ms,
            "lake_rows": m.lake_rows, "duckdb_rows": m.duck_rows,
        }));
    }
    let report = json!({
        "data": data.display().to_string(), "http_rows": http_rows, "metric_rows": metric_rows,
        "range": args.range, "runs": args.runs, "threads": THREADS, "memory_limit": MEMORY,
        "lake_url": args.url, "duckdb": args.sides.duckdb,
        "target_p50_ms": TARGET_P50_MS, "target_overhead_pct": TARGET_OVERHEAD_PCT,
        "target_overhead_ms": TARGET_OVERHEAD_MS, "queries": rows,
    });
    if let Some(dir) = args.out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&args.out, serde_json::to_vec_pretty(&report).expect("json")) {
        Ok(()) => eprintln!("query bench: wrote {}", args.out.display()),
        Err(e) => eprintln!("query bench: cannot write {}: {e}", args.out.display()),
    }
}
