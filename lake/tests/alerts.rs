//! Alerting end to end, against a real `lake serve` and real peers:
//!
//! - a real SMTP server (aiosmtpd, `tests/alerts/smtpd.py`) in three set-ups — plain,
//!   STARTTLS with AUTH, implicit TLS with AUTH, both TLS ones with a certificate from a
//!   CA made here with openssl — receives the firing and the resolved email of an uptime
//!   check that goes down and comes back;
//! - a webhook receiver (axum, in this test) gets every payload shape: lake's JSON,
//!   Alertmanager's (checked field by field), ntfy, Slack, Discord; two instances that
//!   fire together arrive as one message; a receiver answering 500 is retried and then
//!   shown as failed by `lake alerts` and in the `alerts` table;
//! - a lake killed with SIGKILL while an alert fires neither sends it again nor forgets
//!   to send its resolution, and writes no transition row twice;
//! - `lake silence add/list/remove` (with an alerts token) hold and release notifications;
//! - `site_offline` tells a site's uplink down (its outside probes failing while its
//!   collector reports) and names the failing targets.
//!
//! Needs python3 with aiosmtpd and openssl (`scripts/setup peers` installs them); fails,
//! never skips, without them.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use lake_format::rows::{now_micros, TableBuilder};
use lake_format::{wire, Table};
use serde_json::Value;

const SETUP: &str = SMTP_SETUP;

// ---------------------------------------------------------------- peers

/// A CA and a server certificate for 127.0.0.1 it signed.
struct Certs {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): {SETUP}"));
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lake test CA",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "req.csr", "-subj", "/CN=127.0.0.1"]);
    run(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    Certs { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") }
}

/// One POST a webhook receiver got.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", self.path, String::from_utf8_lossy(&self.body)))
    }
}

/// A webhook receiver on a loopback port: records every POST; paths under `/fail` answer 500.
struct Hook {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Hook {
    async fn start() -> Hook {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        async fn record(
            State(hits): State<Arc<Mutex<Vec<Hit>>>>,
            uri: Uri,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> StatusCode {
            let headers =
                headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("?").to_string())).collect();
            hits.lock().unwrap().push(Hit { path: uri.path().to_string(), headers, body: body.to_vec() });
            if uri.path().starts_with("/fail") {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
        let app = axum::Router::new().fallback(record).with_state(Arc::clone(&hits));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hook { url, hits }
    }

    fn at(&self, path: &str) -> Vec<Hit> {
        self.hits.lock().unwrap().iter().filter(|h| h.path == path).cloned().collect()
    }
}

// ---------------------------------------------------------------- lake side

/// A lake.toml: one node, a read token, rows flushed hourly (so restarts go through the
/// WAL), `uptime_down` evaluated every second without `for`, plus `extra`.
fn config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    lake_toml(dir, port)
        .flush("1h")
        .section("[alerts]\nexternal_url = \"http://lake.test:7470\"\n\n[[rules]]\nname = \"uptime_down\"\nevery = \"1s\"\nfor = \"0s\"")
        .section(extra)
        .write()
}

/// Posts one `probes` row per (target, ok) from node-a, stamped now.
async fn probes(c: &reqwest::Client, url: &str, seq: u64, rows: &[(&str, bool)]) {
    let mut b = TableBuilder::new(Table::Probes);
    let col = |b: &TableBuilder, n: &str| b.column(n).unwrap();
    let (ts, host, kind, target, ok, error) =
        (col(&b, "ts"), col(&b, "host"), col(&b, "kind"), col(&b, "target"), col(&b, "ok"), col(&b, "error"));
    for (t, up) in rows {
        b.ts(ts, now_micros());
        b.text(host, Some(NODE));
        b.text(kind, Some("http"));
        b.text(target, Some(t));
        b.bool(ok, Some(*up));
        b.text(error, (!up).then_some("connection refused"));
        b.end_row();
    }
    let batch = b.finish().unwrap();
    let body = wire::encode(&batch.schema(), &[batch]).unwrap();
    let (status, text) = post(c, url, "probes", TOKEN, &format!("{NODE}/1/{seq}"), body).await;
    assert_eq!(status, 200, "{text}");
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the `lake` CLI against `url` with the read token; (exit code, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    cli_as(url, READ_TOKEN, args)
}

/// Runs the `lake` CLI against `url` with `token`.
fn cli_as(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(lake_bin()).args(args).arg("--url").arg(url).env("LAKE_TOKEN", token).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn alerts_json(url: &str) -> Value {
    let url = url.to_string();
    let (code, out, err) =
        tokio::task::spawn_blocking(move || cli(&url, &["alerts", "--format", "json"])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

async fn rows(c: &reqwest::Client, url: &str, q: &str) -> Vec<Value> {
    sql(c, url, q).await.as_array().unwrap().clone()
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_firing_and_resolved_through_a_real_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let tls = certs(dir.path());
    let plain = Smtpd::start(dir.path(), "plain", "plain", None);
    let starttls = Smtpd::start(dir.path(), "starttls", "starttls", Some((&tls.cert, &tls.key)));
    let smtps = Smtpd::start(dir.path(), "smtps", "tls", Some((&tls.cert, &tls.key)));
    let pass = dir.path().join("smtp.pass");
    std::fs::write(&pass, "s3cret-smtp-password\n").unwrap();
    let email = |name: &str, port: u16, mode: &str, auth: bool| {
        let auth = if auth {
            format!("username = \"lake\"\npassword_file = \"{}\"\nca_file = \"{}\"\n", pass.display(), tls.ca.display())
        } else {
            String::new()
        };
        format!(
            "[[notify.email]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"{mode}\"\n{auth}\
             from = \"lake <alerts@lake.test>\"\nto = [\"ops@example.com\", \"Me <me@example.com>\"]\ntimeout = \"10s\"\n\n"
        )
    };
    let extra = [
        email("plain", plain.port, "none", false),
        email("starttls", starttls.port, "starttls", true),
        email("smtps", smtps.port, "tls", true),
    ]
    .concat();
    let port = free_port();
    let lake = Lake::start(&config(dir.path(), port, &extra), port);
    let c = reqwest::Client::new();

    probes(&c, &lake.url, 1, &[("http://shop.test/", false)]).await;
    let servers = [("plain", &plain), ("starttls", &starttls), ("smtps", &smtps)];
    wait_until("the firing emails", Duration::from_secs(30), || servers.iter().all(|(_, s)| !s.messages().is_empty()))
        .await;
    probes(&c, &lake.url, 2, &[("http://shop.test/", true)]).await;
    wait_until("the resolved emails", Duration::from_secs(30), || servers.iter().all(|(_, s)| s.messages().len() >= 2))
        .await;

    for (name, server) in servers {
        let m = server.messages();
        assert_eq!(m.len(), 2, "{name}: exactly one firing and one resolved email");
        let (firing, resolved) = (&m[0].0, &m[1].0);
        assert_eq!(
            firing["subject"],
            "[FIRING] uptime_down: http://shop.test/ is down from 1 of 1 vantage point(s) (node-a): connection refused",
            "{name}"
        );
        assert!(
            resolved["subject"].as_str().unwrap().starts_with("[RESOLVED] uptime_down: http://shop.test/"),
            "{name}: {resolved}"
        );
        assert_eq!(firing["rcpt_tos"], serde_json::json!(["ops@example.com", "me@example.com"]));
        assert_eq!(firing["mail_from"], "alerts@lake.test");
        assert_eq!(firing["content_type"], "text/plain");
        let body = firing["body"].as_str().unwrap().replace("\r\n", "\n");
        for want in [
            "What:  uptime_down (critical)\n",
            "Where: kind=http target=http://shop.test/\n",
            "Since: 20",
            "Value: 1\n",
            "Error: connection refused\n",
            "Down from: node-a\n",
            "Vantage points: 1\n",
            "Dashboard: http://lake.test:7470/\n",
            "Silence: lake silence add --rule uptime_down --label kind=http --label target=http://shop.test/ --for 2h\n",
        ] {
            assert!(body.contains(want), "{name}: {want:?} missing from\n{body}");
        }
        let rbody = resolved["body"].as_str().unwrap();
        assert!(rbody.contains("(resolved 20"), "{name}: {rbody}");
        // Who got TLS and who logged in.
        let (tls_version, login) = (firing["tls"].clone(), firing["login"].clone());
        match name {
            "plain" => assert_eq!((tls_version, login), (Value::Null, Value::Null)),
            _ => {
                assert!(tls_version.as_str().is_some_and(|v| v.starts_with("TLSv1.")), "{name}: {tls_version}");
                assert_eq!(login, "lake", "{name}");
            }
        }
    }
    println!("--- the firing email as delivered over STARTTLS ---\n{}", starttls.messages()[0].1);
    println!("--- the resolved email as delivered over STARTTLS ---\n{}", starttls.messages()[1].1);

    // Every transition and every delivery is a row.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&c, &lake.url, "select count(*) from alerts where state = 'sent'").await < 6 {
        assert!(Instant::now() < deadline, "timed out waiting for the delivery rows");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = rows(&c, &lake.url, "select state, count(*) from alerts where rule = 'uptime_down' group by 1 order by 1")
        .await;
    assert_eq!(
        r,
        [serde_json::json!(["firing", 1]), serde_json::json!(["resolved", 1]), serde_json::json!(["sent", 6])]
    );
    let r = rows(&c, &lake.url, "select channels from alerts where state = 'firing'").await;
    assert_eq!(r[0][0], serde_json::json!(["plain", "starttls", "smtps"]));

    let url = lake.url.clone();
    let (code, table, err) = tokio::task::spawn_blocking(move || cli(&url, &["alerts"])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    println!("--- lake alerts ---\n{table}");
    assert!(table.contains("No alerts firing or pending."), "{table}");
    assert!(table.contains("Recently resolved:"), "{table}");
    assert!(table.contains("plain: resolved sent; smtps: resolved sent; starttls: resolved sent"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_each_shape_grouped_and_failures_show_in_lake_alerts() {
    let hook = Hook::start().await;
    let dir = tempfile::tempdir().unwrap();
    let h = &hook.url;
    let extra = format!(
        r#"[notify]
retries = 2
retry_initial = "100ms"
retry_max = "200ms"

[[notify.webhook]]
name = "json"
url = "{h}/json"

[[notify.webhook]]
name = "am"
format = "alertmanager"
url = "{h}/am"

[[notify.webhook]]
name = "ntfy"
format = "ntfy"
url = "{h}/ntfy/lake-alerts"
bearer_token = "tk_ntfy_token"

[[notify.webhook]]
name = "slack"
format = "slack"
url = "{h}/slack"

[[notify.webhook]]
name = "discord"
format = "discord"
url = "{h}/discord"

[[notify.webhook]]
name = "broken"
url = "{h}/fail"
"#
    );
    let port = free_port();
    let lake = Lake::start(&config(dir.path(), port, &extra), port);
    let c = reqwest::Client::new();

    // Two targets go down together: one message per channel, with both.
    probes(&c, &lake.url, 1, &[("http://a.test/", false), ("http://b.test/", false)]).await;
    let paths = ["/json", "/am", "/ntfy/lake-alerts", "/slack", "/discord"];
    wait_until("a message on every working webhook", Duration::from_secs(30), || {
        paths.iter().all(|p| !hook.at(p).is_empty())
    })
    .await;
    wait_until("three attempts on the failing webhook", Duration::from_secs(30), || hook.at("/fail").len() >= 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in paths {
        assert_eq!(hook.at(p).len(), 1, "{p}: grouped into one message, sent once");
    }
    assert_eq!(hook.at("/fail").len(), 3, "first attempt and 2 retries, no more");

    let g = hook.at("/json")[0].json();
    assert_eq!(g["rule"], "uptime_down");
    assert_eq!(g["status"], "firing");
    assert_eq!(g["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(g["alerts"][0]["labels"]["target"], "http://a.test/");
    assert_eq!(g["alerts"][1]["labels"]["target"], "http://b.test/");
    assert_eq!(g["alerts"][0]["details"]["error"], "connection refused");
    assert_eq!(hook.at("/json")[0].headers["content-type"], "application/json");

    // Alertmanager's webhook payload, field by field as its documentation lists them.
    let am = hook.at("/am")[0].json();
    assert_eq!(am["version"], "4");
    assert!(am["groupKey"].is_string());
    assert_eq!(am["truncatedAlerts"], 0);
    assert_eq!(am["status"], "firing");
    assert_eq!(am["receiver"], "am");
    assert_eq!(am["groupLabels"], serde_json::json!({"alertname": "uptime_down"}));
    assert_eq!(am["commonLabels"]["alertname"], "uptime_down");
    assert_eq!(am["commonLabels"]["severity"], "critical");
    assert_eq!(am["commonLabels"]["kind"], "http");
    assert!(am["commonLabels"].get("target").is_none(), "targets differ");
    assert!(am["commonAnnotations"].is_object());
    assert_eq!(am["externalURL"], "http://lake.test:7470");
    let alerts = am["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    for a in alerts {
        assert_eq!(a["status"], "firing");
        for k in ["labels", "annotations"] {
            assert!(a[k].as_object().unwrap().values().all(Value::is_string), "{k} are strings: {a}");
        }
        assert_eq!(a["labels"]["alertname"], "uptime_down");
        assert!(a["annotations"]["summary"].as_str().unwrap().contains("is down from 1 of 1"));
        let starts = a["startsAt"].as_str().unwrap();
        assert!(starts.len() >= 20 && starts.ends_with('Z') && starts.contains('T'), "RFC 3339: {starts}");
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a["generatorURL"], "http://lake.test:7470/");
        let fp = a["fingerprint"].as_str().unwrap();
        assert!(fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()), "{fp}");
    }

    let ntfy = &hook.at("/ntfy/lake-alerts")[0];
    assert_eq!(ntfy.headers["title"], "[FIRING:2] uptime_down (critical): 2 alerts");
    assert_eq!(ntfy.headers["priority"], "5");
    assert_eq!(ntfy.headers["tags"], "rotating_light,uptime_down,critical");
    assert_eq!(ntfy.headers["click"], "http://lake.test:7470/");
    assert_eq!(ntfy.headers["authorization"], "Bearer tk_ntfy_token");
    let text = String::from_utf8(ntfy.body.clone()).unwrap();
    assert!(
        text.contains("2 firing:\n\n1. http://a.test/ is down") && text.contains("2. http://b.test/ is down"),
        "{text}"
    );
    assert!(hook.at("/slack")[0].json()["text"].as_str().unwrap().starts_with("[FIRING:2] uptime_down"));
    assert!(hook.at("/discord")[0].json()["content"].as_str().unwrap().starts_with("[FIRING:2] uptime_down"));

    // The failure is visible: in lake alerts (JSON and table) and as rows.
    let mut snap = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        snap = alerts_json(&lake.url).await;
        if snap["alerts"][0]["deliveries"]["broken"]["state"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let broken = &snap["alerts"][0]["deliveries"]["broken"];
    assert_eq!(broken["state"], "failed", "{snap:#}");
    assert_eq!(broken["attempts"], 3);
    assert!(broken["error"].as_str().unwrap().contains("HTTP 500"), "{broken}");
    assert_eq!(snap["alerts"][0]["deliveries"]["json"]["state"], "sent");
    assert_eq!(snap["counters"]["notifications_failed"], 1);
    assert_eq!(snap["counters"]["notifications_sent"], 5);
    assert_eq!(snap["counters"]["delivery_retries"], 2);
    let url = lake.url.clone();
    let (code, table, err) = tokio::task::spawn_blocking(move || cli(&url, &["alerts"])).await.unwrap();
    assert_eq!(code, 0, "{err}");
    println!("--- lake alerts ---\n{table}");
    assert!(table.contains("broken: firing failed (3 tries): "), "{table}");
    assert!(table.contains("HTTP 500"), "{table}");
    assert!(table.starts_with("STATE"), "{table}");
    let failed =
        count(&c, &lake.url, "select count(*) from alerts where state = 'failed' and channels = ['broken']").await;
    assert_eq!(failed, 2, "one failed row per alert of the message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lake_killed_while_an_alert_fires_neither_resends_nor_forgets() {
    let hook = Hook::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[[notify.webhook]]\nname = \"hook\"\nurl = \"{}/hook\"\n", hook.url);
    let port = free_port();
    let cfg = config(dir.path(), port, &extra);
    let mut lake = Lake::start(&cfg, port);
    let c = reqwest::Client::new();

    probes(&c, &lake.url, 1, &[("http://down.test/", false)]).await;
    wait_until("the firing message", Duration::from_secs(30), || hook.at("/hook").len() == 1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&c, &lake.url, "select count(*) from alerts where state = 'sent'").await < 1 {
        assert!(Instant::now() < deadline, "no sent row");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lake.kill9();

    let lake = Lake::start(&cfg, port);
    // Several evaluations later, nothing more has been sent.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(hook.at("/hook").len(), 1, "the restarted lake sent the firing alert again");
    let snap = alerts_json(&lake.url).await;
    assert_eq!(snap["alerts"][0]["state"], "firing", "{snap:#}");
    assert_eq!(snap["alerts"][0]["deliveries"]["hook"]["state"], "sent");

    probes(&c, &lake.url, 2, &[("http://down.test/", true)]).await;
    wait_until("the resolved message", Duration::from_secs(30), || hook.at("/hook").len() == 2).await;
    let resolved = hook.at("/hook")[1].json();
    assert_eq!(resolved["status"], "resolved");
    assert!(resolved["alerts"][0]["ends_at"].is_string());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.at("/hook").len(), 2);
    let r = rows(&c, &lake.url, "select state, count(*) from alerts group by 1 order by 1").await;
    assert_eq!(
        r,
        [serde_json::json!(["firing", 1]), serde_json::json!(["resolved", 1]), serde_json::json!(["sent", 2])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_hold_notifications_until_removed() {
    let hook = Hook::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[[notify.webhook]]\nname = \"hook\"\nurl = \"{}/hook\"\n", hook.url);
    let port = free_port();
    let config = config(dir.path(), port, &extra);
    // Silences are changed with a token of the alerts role (a read token only lists them).
    let out =
        Command::new(lake_bin()).args(["token", "add", "--role", "alerts", "--config"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let lake = Lake::start(&config, port);
    let c = reqwest::Client::new();
    let url = lake.url.clone();
    let run = move |args: Vec<&'static str>| {
        let (url, token) = (url.clone(), token.clone());
        async move { tokio::task::spawn_blocking(move || cli_as(&url, &token, &args)).await.unwrap() }
    };

    let (code, out, err) = run(vec![
        "silence",
        "add",
        "--rule",
        "uptime_down",
        "--label",
        "target=http://quiet.test/",
        "--for",
        "2h",
        "--comment",
        "maintenance",
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("silence 1 added: uptime_down target=http://quiet.test/ until 20"), "{out}");
    let (code, _, err) = run(vec!["silence", "add", "--rule", "nope", "--for", "2h"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("unknown rule \"nope\""), "{err}");

    probes(&c, &lake.url, 1, &[("http://quiet.test/", false), ("http://loud.test/", false)]).await;
    wait_until("the loud alert", Duration::from_secs(30), || !hook.at("/hook").is_empty()).await;
    let first = hook.at("/hook")[0].json();
    assert_eq!(first["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(first["alerts"][0]["labels"]["target"], "http://loud.test/");

    let (_, table, _) = run(vec!["alerts"]).await;
    assert!(table.contains("firing (silenced)"), "{table}");
    assert!(table.contains("Silences:"), "{table}");
    let (code, list, _) = run(vec!["silence", "list"]).await;
    assert_eq!(code, 0);
    assert!(
        list.contains("uptime_down") && list.contains("target=http://quiet.test/") && list.contains("maintenance"),
        "{list}"
    );
    assert!(list.lines().nth(1).unwrap().starts_with("1 "), "{list}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hook.at("/hook").len(), 1, "the silenced alert notified nobody");
    assert_eq!(count(&c, &lake.url, "select count(*) from alerts where state = 'silenced'").await, 1);

    let (code, out, err) = run(vec!["silence", "remove", "1"]).await;
    assert_eq!((code, out.trim()), (0, "silence 1 removed"), "{err}");
    wait_until("the released alert", Duration::from_secs(30), || hook.at("/hook").len() == 2).await;
    assert_eq!(hook.at("/hook")[1].json()["alerts"][0]["labels"]["target"], "http://quiet.test/");
    let (code, _, err) = run(vec!["silence", "remove", "1"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no silence 1"), "{err}");

    // The API is behind the read tokens.
    let r = c.get(format!("{}/v1/alerts", lake.url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.post(format!("{}/v1/silences", lake.url)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn check_config_names_the_file_the_rule_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let p = dir.path().join("lake.toml");
        std::fs::write(&p, text).unwrap();
        let out = Command::new(lake_bin()).args(["check-config", "--config"]).arg(&p).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = check("[[rules]]\nname = \"api\"\nsql = \"select 1 as value\"\ncondition = \"=> 1\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("lake.toml") && err.contains("rules[0] (api).condition: \"=> 1\" must start with"), "{err}");
    let (code, _, err) = check(
        "[[rules]]\nname = \"api\"\nsql = \"select hots as host, 1 as value from metrics\"\ncondition = \"> 1\"\n",
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("rule api (sql): Binder Error") && err.contains("hots"), "{err}");
    let (code, _, err) = check("[[rules]]\nname = \"api\"\nsql = \"select host from metrics\"\ncondition = \"> 1\"\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("rule api (sql): the query returns no column named value (it returns: host)"), "{err}");
    let (code, out, err) = check(
        "[[notify.webhook]]\nname = \"phone\"\nformat = \"ntfy\"\nurl = \"https://ntfy.sh/lake\"\n\
         [[rules]]\nname = \"filesystem_full\"\ncondition = \"> 0.95\"\n[[rules]]\nname = \"fail2ban_burst\"\nenabled = false\n",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("channel         phone: webhook (ntfy) to https://ntfy.sh/…"), "{out}");
    assert!(
        out.contains("rule            filesystem_full (built-in): value > 0.95 for 5m every 1m, warning, to phone"),
        "{out}"
    );
    assert!(out.contains("rule            fail2ban_burst: disabled"), "{out}");
}

/// `site_offline` end to end: node-a keeps reporting (its metrics arrive), and both of its
/// outside targets have failed for 5 minutes while a target inside the site answers: the
/// lake says "uplink down", not "silent", and `uptime_down` says nothing of the outside
/// targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_offline_fires_for_an_uplink_down_while_the_collector_reports() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&config(dir.path(), port, "[[rules]]\nname = \"site_offline\"\nevery = \"1s\""), port);
    let c = reqwest::Client::new();
    let now = now_micros();
    let mut b = TableBuilder::new(Table::Probes);
    let col = |b: &TableBuilder, n: &str| b.column(n).unwrap();
    let (ts, host, kind, target, ok, error, attrs) = (
        col(&b, "ts"),
        col(&b, "host"),
        col(&b, "kind"),
        col(&b, "target"),
        col(&b, "ok"),
        col(&b, "error"),
        col(&b, "attrs"),
    );
    for ago in [420, 360, 300, 240, 180, 120, 60, 5] {
        for (t, outside) in [("1.1.1.1", true), ("9.9.9.9", true), ("192.168.1.1", false)] {
            let up = !outside || ago > 300;
            b.ts(ts, now - ago * 1_000_000);
            b.text(host, Some(NODE));
            b.text(kind, Some("icmp"));
            b.text(target, Some(t));
            b.bool(ok, Some(up));
            b.text(error, (!up).then_some("no reply from it to 3 request(s) in 2s"));
            if outside {
                b.map(attrs, [("name", t), ("outside", "true")]);
            } else {
                b.map(attrs, [("name", t)]);
            }
            b.end_row();
        }
    }
    let batch = b.finish().unwrap();
    let body = wire::encode(&batch.schema(), &[batch]).unwrap();
    let (status, text) = post(&c, &lake.url, "probes", TOKEN, &format!("{NODE}/1/1"), body).await;
    assert_eq!(status, 200, "{text}");
    let mut m = lake_format::rows::MetricsBuilder::new();
    m.push(now, NODE, "load1", 0.1, &[]);
    let batch = m.finish();
    let body = wire::encode(&batch.schema(), &[batch]).unwrap();
    let (status, text) = post(&c, &lake.url, "metrics", TOKEN, &format!("{NODE}/1/2"), body).await;
    assert_eq!(status, 200, "{text}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        let snap = alerts_json(&lake.url).await;
        let found = snap["alerts"].as_array().and_then(|a| a.iter().find(|a| a["rule"] == "site_offline").cloned());
        if let Some(a) = found {
            break a;
        }
        assert!(Instant::now() < deadline, "site_offline did not fire: {snap:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = alert.to_string();
    println!("site_offline: {}", alert["message"]);
    assert_eq!(alert["state"], "firing", "{alert:#}");
    assert!(text.contains("node-a offline for") && text.contains("uplink down: its collector runs"), "{alert:#}");
    assert!(text.contains("1.1.1.1: no reply") && text.contains("9.9.9.9: no reply"), "{alert:#}");
    let snap = alerts_json(&lake.url).await;
    assert!(snap["alerts"].as_array().unwrap().iter().all(|a| a["rule"] != "uptime_down"), "{snap:#}");
}
