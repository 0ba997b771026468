//! `/mcp` end to end against a real `lake serve` holding data:
//! - the official MCP Python SDK (`tests/mcp/client.py`) initializes, lists the tools and
//!   calls each one; a write, a file read, `INSTALL` and `ATTACH` through `run_sql` are
//!   refused with exactly the message `/v1/sql` answers; a wrong token is refused;
//! - raw HTTP for the protocol's edge cases: tokens and `WWW-Authenticate`, `Origin`,
//!   sessions (missing, unknown, ended, bounded), revision negotiation and the header,
//!   batches per revision, notifications, malformed and oversized bodies, `GET`, and the
//!   404 of a lake with `[mcp]` off; then the counters on `/metrics`.
//!
//! Needs the MCP Python SDK as `python3` on PATH sees it (`scripts/setup peers` installs
//! it into the peers' virtual environment, which `make test` puts first on PATH); fails
//! (never skips) without it.

mod common;

use std::process::Command;

use common::*;
use lake_format::rows::MetricsBuilder;
use serde_json::{json, Value};

const SDK: &str = "the MCP Python SDK (mcp==1.30.0)";

/// A lake with `[mcp]` on (and `extra` lines in the section) and a user named query.
fn start(dir: &std::path::Path, extra: &str) -> Lake {
    start_with(dir, extra, "")
}

/// [`start`] with `query` lines in `[query]`.
fn start_with(dir: &std::path::Path, extra: &str, query: &str) -> Lake {
    let port = free_port();
    let config = lake_toml(dir, port)
        .flush("1h")
        .query(query)
        .section(&format!("[mcp]\nenabled = true\n{extra}"))
        .section(
            "[[queries]]\nname = \"metric_avg\"\ndescription = \"average of one metric per host\"\nsql = \"SELECT host, round(avg(value), 2) AS avg, count(*) AS n FROM metrics WHERE name = $metric AND $__timeFilter(ts) GROUP BY 1\"",
        )
        .write();
    Lake::start(&config, port)
}

/// 60 minutes of `cpu` (0..60) and `load` (2·cpu + 1), one sample a minute, ending now.
async fn ingest(c: &reqwest::Client, url: &str) {
    let now = lake_format::rows::now_micros() / 60_000_000 * 60_000_000;
    let mut b = MetricsBuilder::new();
    for i in 0..60i64 {
        let ts = now - (60 - i) * 60_000_000;
        b.push(ts, NODE, "cpu", i as f64, &[]);
        b.push(ts, NODE, "load", 2.0 * i as f64 + 1.0, &[]);
    }
    let (s, m) = post(c, url, "metrics", TOKEN, &format!("{NODE}/1/1"), encode(&b.finish())).await;
    assert_eq!(s, 200, "{m}");
}

/// Runs the Python client with `calls`; the JSON it prints.
async fn python_client(url: &str, token: &str, calls: &Value) -> Value {
    python_peer("mcp/client.py", &[&format!("{url}/mcp"), token], &calls.to_string(), SDK).await
}

/// The statements `/v1/sql` refuses, by what they try.
const REFUSED: [&str; 6] = [
    "CREATE TABLE t AS SELECT 1",
    "COPY (SELECT 1) TO '/tmp/lake-mcp-copy.csv'",
    "INSTALL httpfs",
    "SELECT * FROM read_csv('/etc/passwd')",
    "ATTACH '/tmp/lake-mcp-attach.db' AS x",
    "SELECT 1; SELECT 2",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_lists_and_calls_every_tool_and_is_refused_as_v1_sql_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let lake = start(dir.path(), "");
    let c = reqwest::Client::new();
    ingest(&c, &lake.url).await;
    let signup = r#"{"ts": "2026-11-25T10:00:00Z", "plan": "pro", "amount": 9.5}"#;
    let (s, v) = send_custom(&c, &lake.url, "json", "signups", &format!("{NODE}/2/1"), signup).await;
    assert_eq!(s, 200, "{v}");

    let mut calls = vec![
        json!(["list_tables", {}]),
        json!(["describe_table", {"table": "http"}]),
        json!(["describe_table", {"table": "events"}]),
        json!(["describe_table", {"table": "signups"}]),
        json!(["describe_table", {"table": "nope"}]),
        json!(["describe_table", {"table": "x\" OR 1=1"}]),
        json!(["run_sql", {"sql": "SELECT name, count(*) AS n, sum(value) AS total FROM metrics GROUP BY 1 ORDER BY 1"}]),
        json!(["run_sql", {"sql": "SELECT * FROM range(1000)", "max_rows": 5}]),
        json!(["named_query", {"name": "metric_avg", "since": "3h", "vars": {"metric": "cpu"}}]),
        json!(["correlate", {"a": "metric:cpu", "b": "metric:load", "bucket": "1m", "max_lag": 2, "since": "3h"}]),
        json!(["correlate", {"ip": "203.0.113.7"}]),
        json!(["top", {"table": "metrics", "by": "name", "since": "3h"}]),
        // Mistakes: an unknown tool (a JSON-RPC error), wrong argument types and an
        // unknown named query (tool errors the model reads).
        json!(["no_such_tool", {}]),
        json!(["run_sql", {"sql": 5}]),
        json!(["top", {"table": "metrics", "by": "nope"}]),
        json!(["named_query", {"name": "nope"}]),
    ];
    let first_refusal = calls.len();
    calls.extend(REFUSED.iter().map(|sql| json!(["run_sql", {"sql": sql}])));
    // `top` over a custom table, one of its missing columns, a table the lake lacks.
    let first_custom = calls.len();
    calls.push(json!(["top", {"table": "signups", "by": "plan", "since": "30d"}]));
    calls.push(json!(["top", {"table": "signups", "by": "nope"}]));
    calls.push(json!(["top", {"table": "nothere", "by": "x"}]));
    // `anomalies`: three hours of metrics have no earlier week (no rows); its mistakes.
    calls.push(json!(["anomalies", {"since": "6h", "direction": "up", "max_rows": 5}]));
    calls.push(json!(["anomalies", {"table": "signups", "by": ["nope"]}]));
    calls.push(json!(["anomalies", {"since": "30d"}]));
    let out = python_client(&lake.url, READ_TOKEN, &Value::from(calls)).await;
    println!("client output: {}", serde_json::to_string_pretty(&out).unwrap());

    assert_eq!(out["protocol"], "2025-06-18", "the SDK asks for a newer revision; the lake answers its own");
    assert_eq!(out["server"], "lake");
    assert_eq!(out["session"], true);
    assert_eq!(out["ping"], true);
    let tools: Vec<&str> = out["tools"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(tools.len(), 7, "{tools:?}");
    for t in ["list_tables", "describe_table", "run_sql", "named_query", "correlate", "top", "anomalies"] {
        assert_eq!(out["tools"][t]["type"], "object", "{t}'s input schema");
    }
    assert_eq!(out["tools"]["run_sql"]["required"], json!(["sql"]));

    let r = &out["calls"];
    let text = |i: usize| {
        assert_eq!(r[i]["isError"], false, "call {i}: {}", r[i]);
        r[i]["text"].as_str().unwrap().to_string()
    };
    let tables = text(0);
    assert!(tables.contains("metrics") && tables.contains("catalog") && tables.contains("events"), "{tables}");
    assert!(tables.lines().any(|l| l.starts_with("metrics ") && l.contains(" 120 ")), "120 rows in metrics:\n{tables}");
    assert!(tables.lines().any(|l| l.starts_with("signups ") && l.contains(" custom ")), "{tables}");
    let http = text(1);
    assert!(http.contains("- status BIGINT: response status code") && http.contains("- remote_ip "), "{http}");
    assert!(text(2).contains("- summary VARCHAR"), "{}", text(2));
    let custom = text(3);
    assert!(custom.starts_with("signups (custom table)") && custom.contains("- plan VARCHAR"), "{custom}");
    for (i, says) in [(4, "nope"), (5, "lower-case letters")] {
        assert_eq!(r[i]["isError"], true, "{}", r[i]);
        assert!(r[i]["text"].as_str().unwrap().contains(says), "{}", r[i]);
    }
    let r = &out["calls"].as_array().unwrap()[3..];
    let text = |i: usize| {
        assert_eq!(r[i]["isError"], false, "call {i}: {}", r[i]);
        r[i]["text"].as_str().unwrap().to_string()
    };
    let sql = text(3);
    assert_eq!(sql.lines().collect::<Vec<_>>()[2..], ["cpu  | 60 | 1770.0", "load | 60 | 3600.0", "(2 rows)"], "{sql}");
    let cut = text(4);
    assert!(cut.contains("(5 rows)") && cut.contains("showing the first 5 of 1000 rows"), "{cut}");
    let named = text(5);
    assert!(named.contains(&format!("{NODE} | 29.5 | 60")), "{named}");
    let corr = text(6);
    let lag0 = corr.lines().nth(2).unwrap_or_default().to_string();
    assert!(lag0.starts_with("          0 |           0 |       1.0 |"), "lag 0, r = 1 first:\n{corr}");
    assert!(text(7).contains("(0 rows)"), "{}", text(7));
    let top = text(8);
    assert!(top.contains("cpu  |    60") && top.contains("load |    60"), "{top}");

    assert_eq!(r[9]["code"], -32602, "{}", r[9]);
    assert!(r[9]["error"].as_str().unwrap().contains("unknown tool \"no_such_tool\""), "{}", r[9]);
    assert_eq!(r[10]["isError"], true);
    assert!(r[10]["text"].as_str().unwrap().starts_with("invalid arguments for run_sql"), "{}", r[10]);
    assert_eq!(r[11]["isError"], true);
    assert!(r[11]["text"].as_str().unwrap().contains("has no column \"nope\""), "{}", r[11]);
    assert_eq!(r[12]["isError"], true);
    assert!(r[12]["text"].as_str().unwrap().contains("unknown named query \"nope\""), "{}", r[12]);

    // Each refusal is /v1/sql's, word for word.
    for (i, statement) in REFUSED.iter().enumerate() {
        let (status, answer) = try_sql(&c, &lake.url, statement).await;
        assert!(status == 403 || status == 400, "{statement}: {status} {answer}");
        let got = &out["calls"][first_refusal + i];
        assert_eq!(got["isError"], true, "{statement}: {got}");
        assert_eq!(got["text"], answer["error"], "{statement}");
        println!("refused alike ({status}): {statement} -> {}", got["text"]);
    }
    assert!(!std::path::Path::new("/tmp/lake-mcp-copy.csv").exists());
    let custom = &out["calls"].as_array().unwrap()[first_custom..];
    assert_eq!(custom[0]["isError"], false, "{}", custom[0]);
    assert!(custom[0]["text"].as_str().unwrap().contains("pro  |     1"), "{}", custom[0]);
    assert_eq!(custom[3]["isError"], false, "{}", custom[3]);
    assert!(custom[3]["text"].as_str().unwrap().contains("source | series | hour"), "{}", custom[3]);
    for (call, says) in [
        (&custom[1], "has no column \"nope\" (it has: ts, host, amount, plan)"),
        (&custom[2], "no table \"nothere\""),
        (&custom[4], "has no column \"nope\""),
        (&custom[5], "1h to 7d"),
    ] {
        assert_eq!(call["isError"], true, "{call}");
        assert!(call["text"].as_str().unwrap().contains(says), "{call}");
    }

    assert_eq!(out["wrong_token"], 401, "{}", out["wrong_token"]);

    // Counted: 12 good calls, 6 refusals and 9 mistakes as tool errors, the unknown tool and
    // the wrong token as rejected requests.
    let metrics = c.get(format!("{}/metrics", lake.url)).send().await.unwrap().text().await.unwrap();
    for line in ["lake_mcp_tool_calls_total 12", "lake_mcp_tool_errors_total 15", "lake_mcp_sessions_opened_total 1"] {
        assert!(metrics.contains(&format!("\n{line}\n")), "{line}:\n{metrics}");
    }
    assert!(!metrics.contains("\nlake_mcp_rejected_total 0\n"), "{metrics}");
}

/// A raw MCP POST: status, headers, JSON body (null when none).
async fn rpc(
    c: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    extra: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = c.post(format!("{url}/mcp")).bearer_auth(READ_TOKEN).header("content-type", "application/json");
    if !extra.iter().any(|(k, _)| *k == "accept") {
        r = r.header("accept", "application/json, text/event-stream");
    }
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let r = r.body(body).send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// Opens a session asking for `version`: its id and the revision answered.
async fn initialize(c: &reqwest::Client, url: &str, version: &str) -> (String, String) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let (s, h, v) = rpc(c, url, None, &[], body.to_string()).await;
    assert_eq!(s, 200, "{v}");
    let id = h["mcp-session-id"].to_str().unwrap().to_string();
    assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    (id, v["result"]["protocolVersion"].as_str().unwrap().to_string())
}

fn msg(id: i64, method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_edges_over_raw_http() {
    let dir = tempfile::tempdir().unwrap();
    let lake = start(dir.path(), "max_sessions = 2\nallowed_origins = [\"http://localhost:6274\"]");
    let (c, url) = (reqwest::Client::new(), lake.url.clone());
    let ping = |id| msg(id, "ping", json!({}));

    // Tokens: none or a wrong one is 401 with WWW-Authenticate: Bearer.
    for auth in [None, Some("wrong")] {
        let mut r = c.post(format!("{url}/mcp")).header("content-type", "application/json").body(ping(1));
        if let Some(t) = auth {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    }
    // Origin: a browser page from elsewhere is refused (DNS rebinding); a listed one is not.
    let (s, _, v) = rpc(&c, &url, None, &[("origin", "http://evil.example")], ping(1)).await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("allowed_origins"), "{v}");

    // Negotiation: the lake's revisions are kept, any other answered with the latest.
    let (a, va) = initialize(&c, &url, "2025-06-18").await;
    assert_eq!(va, "2025-06-18");
    let (old, vold) = initialize(&c, &url, "2025-03-26").await;
    assert_eq!(vold, "2025-03-26");

    // A request before initialize (no session), an unknown session.
    let call = msg(2, "tools/call", json!({"name": "list_tables", "arguments": {}}));
    let (s, _, v) = rpc(&c, &url, None, &[], call.clone()).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("initialize first"), "{v}");
    let (s, _, _) = rpc(&c, &url, Some("00000000000000000000000000000000"), &[], call.clone()).await;
    assert_eq!(s, 404);

    // With the session: a tool call, from an allowed origin too; notifications get 202.
    let (s, _, v) = rpc(&c, &url, Some(&a), &[("origin", "http://localhost:6274")], call.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], 2);
    assert_eq!(v["result"]["isError"], false, "{v}");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let (s, _, _) = rpc(&c, &url, Some(&a), &[("mcp-protocol-version", "2025-06-18")], note).await;
    assert_eq!(s, 202);

    // The revision header: a known one passes, another is 400.
    let (s, _, v) = rpc(&c, &url, Some(&a), &[("mcp-protocol-version", "2099-01-01")], ping(3)).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("unsupported MCP-Protocol-Version"), "{v}");

    // Batches: refused on a 2025-06-18 session, answered on a 2025-03-26 one (an invalid
    // member gets its own error, a notification no answer).
    let batch = format!("[{}, {}, {}]", ping(4), r#"{"jsonrpc": "2.0", "method": "notifications/x"}"#, r#"{"id": 5}"#);
    let (s, _, v) = rpc(&c, &url, Some(&a), &[], batch.clone()).await;
    assert_eq!(s, 400, "{v}");
    let (s, _, v) = rpc(&c, &url, Some(&old), &[], batch).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v[0], json!({"jsonrpc": "2.0", "id": 4, "result": {}}));
    assert_eq!(v[1]["error"]["code"], -32600, "{v}");
    assert_eq!(v.as_array().unwrap().len(), 2);
    let init_in_batch = format!("[{}]", msg(6, "initialize", json!({"protocolVersion": "2025-03-26"})));
    let (s, _, _) = rpc(&c, &url, Some(&old), &[], init_in_batch).await;
    assert_eq!(s, 400);

    // Malformed: not JSON, an unknown method, initialize without a revision, a body over 1 MiB.
    let (s, _, v) = rpc(&c, &url, Some(&a), &[], "{not json").await;
    assert_eq!((s, v["error"]["code"].as_i64()), (400, Some(-32700)), "{v}");
    let (s, _, v) = rpc(&c, &url, Some(&a), &[], msg(7, "resources/list", json!({}))).await;
    assert_eq!((s, v["error"]["code"].as_i64()), (200, Some(-32601)), "{v}");
    let (s, _, v) = rpc(&c, &url, None, &[], msg(8, "initialize", json!({}))).await;
    assert_eq!(v["error"]["code"], -32602, "{s} {v}");
    let huge = msg(9, "tools/call", json!({"name": "run_sql", "arguments": {"sql": "x".repeat(2 << 20)}}));
    let (s, _, _) = rpc(&c, &url, Some(&a), &[], huge).await;
    assert_eq!(s, 413);
    let (s, _, _) = rpc(&c, &url, Some(&a), &[("accept", "text/html")], ping(10)).await;
    assert_eq!(s, 406);

    // No server-initiated stream.
    let r =
        c.get(format!("{url}/mcp")).bearer_auth(READ_TOKEN).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status(), 405);

    // Bounded sessions: a third pushes out the least recently used (old; a was used since).
    let (s, _, _) = rpc(&c, &url, Some(&a), &[], ping(11)).await;
    assert_eq!(s, 200);
    let (b, _) = initialize(&c, &url, "2025-06-18").await;
    let (s, _, _) = rpc(&c, &url, Some(&old), &[], ping(12)).await;
    assert_eq!(s, 404, "the least recently used session made room");
    for live in [&a, &b] {
        let (s, _, _) = rpc(&c, &url, Some(live), &[], ping(13)).await;
        assert_eq!(s, 200);
    }
    // DELETE ends a session.
    let del = |id: String| c.delete(format!("{url}/mcp")).bearer_auth(READ_TOKEN).header("mcp-session-id", id).send();
    assert_eq!(del(a.clone()).await.unwrap().status(), 204);
    assert_eq!(del(a.clone()).await.unwrap().status(), 404);
    let (s, _, _) = rpc(&c, &url, Some(&a), &[], ping(14)).await;
    assert_eq!(s, 404);

    let metrics = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    for line in ["lake_mcp_sessions 1", "lake_mcp_sessions_opened_total 3", "lake_mcp_tool_calls_total 1"] {
        assert!(metrics.contains(&format!("\n{line}\n")), "{line}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_is_off_unless_enabled_and_says_how_to_turn_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1h"), port);
    let r = reqwest::Client::new()
        .post(format!("{}/mcp", lake.url))
        .bearer_auth(READ_TOKEN)
        .body(msg(1, "ping", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("[mcp] enabled = true"), "{v}");
    assert!(check_config(&lake.config).contains("  mcp             off ([mcp] enabled = true serves /mcp)"));
    let on = tempfile::tempdir().unwrap();
    let lake = start(on.path(), "allowed_origins = [\"http://localhost:6274\"]");
    let said = check_config(&lake.config);
    assert!(
        said.contains(
            "/mcp on (read tokens): 200 rows shown, 64 sessions idle 3600s, browser origins http://localhost:6274"
        ),
        "{said}"
    );
}

/// `lake check-config`'s report.
fn check_config(config: &std::path::Path) -> String {
    let out = Command::new(lake_bin()).args(["check-config", "--config"]).arg(config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_added_while_running_opens_mcp_and_the_time_limit_reads_as_on_v1_sql() {
    let dir = tempfile::tempdir().unwrap();
    let lake = start_with(dir.path(), "", "timeout = \"1s\"");
    let (c, url) = (reqwest::Client::new(), lake.url.clone());
    let init = msg(1, "initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}}));
    let status_with = |token: String| {
        let (c, url, init) = (c.clone(), url.clone(), init.clone());
        async move {
            let r = c.post(format!("{url}/mcp")).bearer_auth(token).header("content-type", "application/json");
            r.body(init).send().await.unwrap().status().as_u16()
        }
    };

    // `lake token add --role read` writes the tokens file; the running lake takes it.
    let out = Command::new(lake_bin())
        .args(["token", "add", "--role", "read", "--config"])
        .arg(&lake.config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while status_with(token.clone()).await != 200 {
        assert!(std::time::Instant::now() < deadline, "the added read token was not accepted on /mcp");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status_with("lake_r_wrong".into()).await, 401);

    // A query past query.timeout: interrupted, in /v1/sql's words.
    let (session, _) = initialize(&c, &url, "2025-06-18").await;
    let slow = "SELECT count(*) FROM range(100000000) a, range(100000) b WHERE a.range + b.range = -1";
    let call = msg(2, "tools/call", json!({"name": "run_sql", "arguments": {"sql": slow}}));
    let (s, _, v) = rpc(&c, &url, Some(&session), &[], call).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["isError"], true, "{v}");
    let (status, answer) = try_sql(&c, &url, slow).await;
    assert_eq!(status, 408, "{answer}");
    assert_eq!(v["result"]["content"][0]["text"], answer["error"]);
    println!("time limit alike: {}", answer["error"]);
}
