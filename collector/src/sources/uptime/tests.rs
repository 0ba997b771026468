//! Uptime tests, loopback only: an in-process axum server for http, listening and closed
//! ports for tcp, a real Caddy (`tls internal`) for tls, a real dnsmasq for dns, and for
//! icmp the loopback addresses and a network namespace made with iproute2 (the ICMP
//! socket kinds are tested in child processes with the sysctl and capability changed).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::get;
use axum::Router;

use super::*;
use crate::sources::probe::testing;

fn config(toml_text: &str) -> anyhow::Result<UptimeConfig> {
    let file: UptimeFile = toml::from_str(toml_text).map_err(|e| anyhow::anyhow!("{e}"))?;
    file.validate()
}

fn err(toml_text: &str) -> String {
    format!("{:#}", config(toml_text).unwrap_err())
}

fn check(kind: &str, target: &str, extra: &str) -> CheckConfig {
    let timeout = if extra.contains("timeout") { "" } else { "timeout = \"2s\"\n" };
    let text = format!("[[checks]]\nname = \"c\"\nkind = \"{kind}\"\ntarget = \"{target}\"\n{timeout}{extra}");
    config(&text).unwrap().checks.remove(0)
}

#[test]
fn validation_names_the_field() {
    let two = "[[checks]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\n[[checks]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:2\"\n";
    assert!(err(two).contains("uptime.checks[1].name"), "{}", err(two));
    let e = err("[[checks]]\nname = \"a\"\nkind = \"smtp\"\ntarget = \"h\"\n");
    assert!(e.contains("uptime.checks[0].kind"), "{e}");
    let e = err("[[checks]]\nname = \"a\"\nkind = \"http\"\ntarget = \"not a url\"\n");
    assert!(e.contains("uptime.checks[0].target"), "{e}");
    let e = err("[[checks]]\nname = \"a\"\nkind = \"http\"\ntarget = \"ftp://x/\"\n");
    assert!(e.contains("uptime.checks[0].target"), "{e}");
    let e = err("[[checks]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"x\"\n[[checks]]\nname = \"b\"\nkind = \"tcp\"\ntarget = \"h\"\n");
    assert!(e.contains("uptime.checks[0].target") && e.contains("port"), "{e}");
    let e = err("[[checks]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:22\"\nkeyword = \"x\"\n");
    assert!(e.contains("uptime.checks[0].keyword"), "{e}");
    let e =
        err("[[checks]]\nname = \"a\"\nkind = \"http\"\ntarget = \"http://h/\"\nexpect_status = [\"2xx\", \"600\"]\n");
    assert!(e.contains("uptime.checks[0].expect_status[1]"), "{e}");
    let e =
        err("[[checks]]\nname = \"a\"\nkind = \"http\"\ntarget = \"http://h/\"\nmethod = \"HEAD\"\nkeyword = \"k\"\n");
    assert!(e.contains("uptime.checks[0].keyword"), "{e}");
    let e = err("[[checks]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\ninterval = \"1s\"\ntimeout = \"5s\"\n");
    assert!(e.contains("uptime.checks[0].timeout"), "{e}");
    assert!(err("[[checks]]\nname = \"a\"\nkind = \"tcp\"\ntarget = \"h:1\"\ncolour = 1\n").contains("colour"));
}

#[test]
fn defaults_and_options_are_typed() {
    assert!(config("").unwrap().checks.is_empty());
    let c = check("http", "https://h/x", "expect_status = [204, \"2xx\", \"300-302\"]");
    assert_eq!((c.interval, c.timeout), (Duration::from_secs(60), Duration::from_secs(2)));
    let CheckKind::Http(h) = c.kind else { panic!() };
    assert_eq!(h.expect_status, vec![(204, 204), (200, 299), (300, 302)]);
    assert!(h.follow_redirects && h.verify_tls && h.method == reqwest::Method::GET);
    let CheckKind::Http(h) = check("http", "http://h/", "").kind else { panic!() };
    assert!(h.accepts(200) && h.accepts(399) && !h.accepts(404));
    let CheckKind::Tls(t) = check("tls", "[::1]:8443", "").kind else { panic!() };
    assert_eq!((t.host.as_str(), t.port, t.server_name.as_str()), ("::1", 8443, "::1"));
    let CheckKind::Tcp { host, port } = check("tcp", "db.internal:5432", "").kind else { panic!() };
    assert_eq!((host.as_str(), port), ("db.internal", 5432));
}

async fn http_server() -> SocketAddr {
    let app = Router::new()
        .route("/ok", get(|| async { "status: all good" }))
        .route(
            "/health.json",
            get(|| async {
                ([("content-type", "application/json")], r#"{"status":"ok","n":1,"checks":[{"ok":true}]}"#)
            }),
        )
        .route(
            "/echo",
            axum::routing::any(|method: axum::http::Method, headers: axum::http::HeaderMap, body: String| async move {
                // Answers 401 without the token, else what it was sent, as JSON.
                if headers.get("x-token").and_then(|v| v.to_str().ok()) != Some("s3cret") {
                    return (StatusCode::UNAUTHORIZED, "no token".to_string());
                }
                let sent: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                (StatusCode::OK, serde_json::json!({ "method": method.as_str(), "sent": sent }).to_string())
            }),
        )
        .route("/big", get(|| async { "x".repeat(2 << 20) }))
        .route("/down", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance") }))
        .route("/moved", get(|| async { Redirect::temporary("/ok") }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn run_one(c: &CheckConfig) -> ProbeRow {
    let probers = Probers::new(std::slice::from_ref(c)).unwrap();
    check_row(now_micros(), c, probers.probe(c).await)
}

#[tokio::test]
async fn http_checks_follow_status_and_keyword() {
    let addr = http_server().await;
    let url = |p: &str| format!("http://{addr}{p}");

    let r = run_one(&check("http", &url("/ok"), "keyword = \"all good\"")).await;
    assert!(r.ok, "{r:?}");
    assert_eq!((r.kind.as_str(), r.status, r.error.as_deref()), ("http", Some(200), None));
    assert!(r.latency_ms.is_some_and(|l| l > 0.0));
    assert_eq!(r.attrs.get("name").map(String::as_str), Some("c"));
    assert_eq!(r.attrs.get("address"), Some(&addr.to_string()));
    assert_eq!(r.cert_days_left, None);

    let r = run_one(&check("http", &url("/ok"), "keyword = \"nope\"")).await;
    assert!(!r.ok);
    assert_eq!(r.error.as_deref(), Some("keyword \"nope\" not found in the body"));

    let r = run_one(&check("http", &url("/down"), "")).await;
    assert_eq!((r.ok, r.status, r.error.as_deref()), (false, Some(503), Some("status 503 not expected")));
    let r = run_one(&check("http", &url("/down"), "expect_status = [503]\nkeyword = \"maint\"")).await;
    assert!(r.ok, "{r:?}");

    let r = run_one(&check("http", &url("/moved"), "")).await;
    assert_eq!((r.ok, r.status), (true, Some(200)));
    assert_eq!(r.attrs.get("final_url"), Some(&url("/ok")));
    let r = run_one(&check("http", &url("/moved"), "follow_redirects = false")).await;
    assert_eq!((r.ok, r.status), (true, Some(307)), "3xx is accepted by default");
    let r = run_one(&check("http", &url("/moved"), "follow_redirects = false\nexpect_status = [\"2xx\"]")).await;
    assert_eq!(r.error.as_deref(), Some("status 307 not expected"));

    let started = Instant::now();
    let r = run_one(&check("http", &url("/slow"), "timeout = \"300ms\"")).await;
    assert_eq!((r.ok, r.error.as_deref()), (false, Some("timeout after 300ms")));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http_names_connection_refused() {
    let port = closed_port();
    let r = run_one(&check("http", &format!("http://127.0.0.1:{port}/"), "")).await;
    assert!(!r.ok);
    let e = r.error.unwrap_or_default();
    assert!(e.to_lowercase().contains("connection refused"), "{e}");
}

/// A loopback port nobody listens on (bound then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn tcp_checks_connect_or_say_why_not() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = run_one(&check("tcp", &addr.to_string(), "")).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.attrs.get("address"), Some(&addr.to_string()));
    assert!(r.latency_ms.is_some());
    let r = run_one(&check("tcp", &format!("127.0.0.1:{}", closed_port()), "")).await;
    assert_eq!((r.ok, r.error.as_deref(), r.latency_ms), (false, Some("connection refused"), None));
    let r = run_one(&check("tcp", "no-such-host.invalid:80", "")).await;
    assert!(!r.ok && r.error.as_deref().is_some_and(|e| e.starts_with("connect:")), "{r:?}");
}

/// A real Caddy serving `tls internal` on a loopback port, killed on drop.
struct Caddy {
    child: Child,
    https_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_caddy() -> Caddy {
    let found = Command::new("caddy").arg("version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs Caddy as a real TLS peer: install it with `apt-get install -y caddy` \
         (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (http_port, https_port) = (closed_port(), closed_port());
    let caddyfile = dir.path().join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!(
            "{{\n  admin off\n  skip_install_trust\n  local_certs\n  http_port {http_port}\n  https_port {https_port}\n  \
             auto_https disable_redirects\n  storage file_system {}\n}}\n\
             https://localhost:{https_port} {{\n  bind 127.0.0.1\n  tls internal\n  respond \"caddy says hi\" 200\n}}\n",
            dir.path().join("storage").display()
        ),
    )
    .unwrap();
    let child = Command::new("caddy")
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .env("HOME", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("caddy.log")).unwrap())
        .spawn()
        .unwrap();
    Caddy { child, https_port, _dir: dir }
}

/// Retries the check until Caddy has its certificate (it issues it just after start).
async fn tls_row(c: &CheckConfig, log: &Path) -> ProbeRow {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = run_one(c).await;
        if r.cert_days_left.is_some() || Instant::now() > deadline {
            assert!(
                r.cert_days_left.is_some(),
                "{r:?}\ncaddy log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn tls_checks_against_caddy_report_days_left_and_trust() {
    let caddy = start_caddy();
    let log = caddy._dir.path().join("caddy.log");
    let target = format!("127.0.0.1:{}", caddy.https_port);

    // Untrusted internal CA, not verified: ok, and days left of Caddy's 12h internal leaf.
    let c = check("tls", &target, "server_name = \"localhost\"\nverify_tls = false");
    let r = tls_row(&c, &log).await;
    assert!(r.ok, "{r:?}");
    let days = r.cert_days_left.unwrap();
    assert!(days > 0.4 && days <= 0.5 + 1e-3, "Caddy's internal leaf lives 12h: {days}");
    assert!(r.attrs.get("cert_issuer").is_some_and(|i| i.contains("Caddy Local Authority")), "{r:?}");
    assert!(r.attrs.get("tls_version").is_some_and(|v| v.starts_with("TLSv1_")), "{r:?}");
    assert!(r.attrs.contains_key("cert_not_after") && r.latency_ms.is_some());

    // Verified: the handshake fails on the unknown issuer, and days left are still there.
    let c = check("tls", &target, "server_name = \"localhost\"");
    let r = tls_row(&c, &log).await;
    assert!(!r.ok);
    assert!(r.error.as_deref().is_some_and(|e| e.contains("UnknownIssuer")), "{r:?}");
    assert!(r.cert_days_left.is_some_and(|d| d > 0.4));

    // https through the http kind: days left from the same connection.
    let url = format!("https://localhost:{}/", caddy.https_port);
    let r = run_one(&check("http", &url, "verify_tls = false\nkeyword = \"says hi\"")).await;
    assert!(r.ok, "{r:?}");
    assert!(r.cert_days_left.is_some_and(|d| d > 0.4 && d <= 0.501), "{r:?}");
    let r = run_one(&check("http", &url, "")).await;
    assert!(!r.ok && r.error.as_deref().is_some_and(|e| e.contains("UnknownIssuer")), "{r:?}");
}

#[tokio::test]
async fn the_source_runs_each_check_and_batches_rows() {
    let addr = http_server().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = listener.local_addr().unwrap();
    let cfg = config(&format!(
        "interval = \"100ms\"\ntimeout = \"100ms\"\n\
         [[checks]]\nname = \"web\"\nkind = \"http\"\ntarget = \"http://{addr}/ok\"\ntimeout = \"1s\"\ninterval = \"1s\"\n\
         [[checks]]\nname = \"port\"\nkind = \"tcp\"\ntarget = \"{tcp_addr}\"\n"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = testing::context(dir.path()).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(UptimeSource::new(cfg, ctx.clone()).run(cancel.clone()));
    let mut rows = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(rows.iter().any(|r: &ProbeRow| r.kind == "http") && rows.iter().filter(|r| r.kind == "tcp").count() >= 2) {
        assert!(Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        rows.extend(testing::drain(&ctx).await);
    }
    assert!(!task.is_finished());
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert!(rows.iter().all(|r| r.ok), "{rows:?}");
    let names: std::collections::BTreeSet<_> = rows.iter().filter_map(|r| r.attrs.get("name").cloned()).collect();
    assert_eq!(names, ["port".to_string(), "web".to_string()].into());
}

#[test]
fn the_collector_config_carries_both_sections() {
    let text = "[lake]\ntoken = \"t\"\n[tailscale]\nenabled = true\npeers = [\"a\"]\n\
                [uptime]\ninterval = \"30s\"\n[[uptime.checks]]\nname = \"s\"\nkind = \"tls\"\ntarget = \"example.com:443\"\n";
    let c = crate::Config::from_toml(text, None).unwrap();
    assert!(c.tailscale.enabled);
    assert_eq!(c.uptime.checks[0].interval, Duration::from_secs(30));
    let bad = text.replace("example.com:443", "example.com");
    let e = format!("{:#}", crate::Config::from_toml(&bad, None).unwrap_err());
    assert!(e.contains("uptime.checks[0].target"), "{e}");
    let example = crate::Config::from_toml(include_str!("../../../examples/collector.toml"), None).unwrap();
    assert!(!example.tailscale.enabled && example.uptime.checks.is_empty());
}

#[test]
fn new_kinds_are_validated_with_the_field_named() {
    let one = |kind: &str, target: &str, extra: &str| {
        err(&format!("[[checks]]\nname = \"a\"\nkind = \"{kind}\"\ntarget = \"{target}\"\n{extra}\n"))
    };
    let e = one("icmp", "1.1.1.1:80", "");
    assert!(e.contains("uptime.checks[0].target") && e.contains("no port"), "{e}");
    let e = one("icmp", "1.1.1.1", "count = 0");
    assert!(e.contains("uptime.checks[0].count"), "{e}");
    let e = one("icmp", "1.1.1.1", "count = 101");
    assert!(e.contains("uptime.checks[0].count"), "{e}");
    // 60 requests 200 ms apart take 11.8 s: more than the default 10 s timeout.
    let e = one("icmp", "1.1.1.1", "count = 60");
    assert!(e.contains("uptime.checks[0].count") && e.contains("timeout"), "{e}");
    let e = one("icmp", "1.1.1.1", "count = 3\nmax_lost = 3");
    assert!(e.contains("uptime.checks[0].max_lost"), "{e}");
    let e = one("icmp", "1.1.1.1", "socket = \"packet\"");
    assert!(e.contains("uptime.checks[0].socket"), "{e}");
    let e = one("icmp", "1.1.1.1", "keyword = \"x\"");
    assert!(e.contains("uptime.checks[0].keyword applies to kind = \"http\" only"), "{e}");
    let e = one("tcp", "h:1", "count = 3");
    assert!(e.contains("uptime.checks[0].count applies to kind = \"icmp\" only"), "{e}");
    let e = one("dns", "example.com", "");
    assert!(e.contains("uptime.checks[0].server is required"), "{e}");
    let e = one("dns", "example.com", "server = \"dns.google\"");
    assert!(e.contains("uptime.checks[0].server"), "{e}");
    let e = one("dns", "example.com", "server = \"1.1.1.1\"\nrecord = \"SRV\"");
    assert!(e.contains("uptime.checks[0].record"), "{e}");
    let e = one("dns", "example.com", "server = \"1.1.1.1\"\nexpect_rcode = \"GONE\"");
    assert!(e.contains("uptime.checks[0].expect_rcode") && e.contains("NXDOMAIN"), "{e}");
    let e = one("dns", "example.com", "server = \"1.1.1.1\"\nexpect_rcode = \"NXDOMAIN\"\nexpect = \"1.2.3.4\"");
    assert!(e.contains("uptime.checks[0].expect"), "{e}");
    let long = format!("{}.com", "a".repeat(64));
    let e = one("dns", &long, "server = \"1.1.1.1\"");
    assert!(e.contains("uptime.checks[0].target") && e.contains("63"), "{e}");
    let e = one("dns", "a..b", "server = \"1.1.1.1\"");
    assert!(e.contains("uptime.checks[0].target"), "{e}");
    let e = one("http", "http://h/", "method = \"BREW\"");
    assert!(e.contains("uptime.checks[0].method"), "{e}");
    let e = one("http", "http://h/", "headers = { \"bad name\" = \"v\" }");
    assert!(e.contains("uptime.checks[0].headers") && e.contains("bad name"), "{e}");
    let e = one("http", "http://h/", "headers = { X-A = \"line\\nbreak\" }");
    assert!(e.contains("uptime.checks[0].headers.X-A"), "{e}");
    let e = one("http", "http://h/", "expect_json = { pointer = \"status\", value = \"ok\" }");
    assert!(e.contains("uptime.checks[0].expect_json.pointer"), "{e}");
    let e = one("http", "http://h/", "method = \"HEAD\"\nexpect_json = { pointer = \"/s\", value = 1 }");
    assert!(e.contains("uptime.checks[0].expect_json"), "{e}");
    let e = one("http", "http://h/", "expect_json = { pointer = \"/s\" }");
    assert!(e.contains("value"), "{e}");
    let e = one("dns", "example.com", "server = \"1.1.1.1\"\nbody = \"x\"");
    assert!(e.contains("uptime.checks[0].body applies to kind = \"http\" only"), "{e}");

    let c = check("icmp", "[::1]", "count = 5\noutside = true");
    assert!(c.outside);
    assert_eq!(describe(&c), "c icmp ::1 x5 (max_lost 4, dgram, else raw socket) every 1m, timeout 2s, outside");
    let CheckKind::Icmp(i) = c.kind else { panic!() };
    assert_eq!((i.host.as_str(), i.count, i.max_lost, i.socket), ("::1", 5, 4, None));
    let CheckKind::Dns(d) = check("dns", "Example.COM.", "server = \"[::1]:5353\"\nrecord = \"mx\"").kind else {
        panic!()
    };
    assert_eq!((d.server.to_string().as_str(), d.record, d.expect_rcode), ("[::1]:5353", RecordType::Mx, 0));
    let CheckKind::Dns(d) = check("dns", "example.com", "server = \"9.9.9.9\"\nexpect_rcode = \"nxdomain\"").kind
    else {
        panic!()
    };
    assert_eq!((d.server.port(), d.expect_rcode), (53, 3));
    let c = check("http", "http://h/", "method = \"post\"\nheaders = { X-A = \"1\" }\nbody = \"{}\"");
    assert!(!c.outside);
    let CheckKind::Http(h) = c.kind else { panic!() };
    assert_eq!(
        (h.method, h.headers["x-a"].to_str().unwrap(), h.body.as_deref()),
        (reqwest::Method::POST, "1", Some("{}"))
    );
}

#[tokio::test]
async fn http_checks_send_method_headers_body_and_read_json() {
    let addr = http_server().await;
    let url = |p: &str| format!("http://{addr}{p}");
    let post = "method = \"POST\"\nheaders = { X-Token = \"s3cret\", Content-Type = \"application/json\" }\n\
                body = '{\"ping\": 1}'";

    let r = run_one(&check(
        "http",
        &url("/echo"),
        &format!("{post}\nexpect_json = {{ pointer = \"/sent/ping\", value = 1.0 }}"),
    ))
    .await;
    assert!(r.ok, "{r:?}");
    let r = run_one(&check(
        "http",
        &url("/echo"),
        &format!("{post}\nexpect_json = {{ pointer = \"/method\", value = \"POST\" }}\nkeyword = \"ping\""),
    ))
    .await;
    assert!(r.ok, "{r:?}");
    let r =
        run_one(&check("http", &url("/echo"), "method = \"PUT\"\nexpect_status = [401]\nkeyword = \"no token\"")).await;
    assert!(r.ok, "the token is sent only when configured: {r:?}");

    let json = |pointer: &str, value: &str| format!("expect_json = {{ pointer = \"{pointer}\", value = {value} }}");
    let r = run_one(&check("http", &url("/health.json"), &json("/status", "\"ok\""))).await;
    assert!(r.ok, "{r:?}");
    let r = run_one(&check("http", &url("/health.json"), &json("/checks/0/ok", "true"))).await;
    assert!(r.ok, "{r:?}");
    let r = run_one(&check("http", &url("/health.json"), &json("/status", "\"degraded\""))).await;
    assert_eq!(r.error.as_deref(), Some("JSON at \"/status\" is \"ok\", expected \"degraded\""));
    let r = run_one(&check("http", &url("/health.json"), &json("/missing", "1"))).await;
    assert_eq!(r.error.as_deref(), Some("no JSON value at \"/missing\""));
    let r = run_one(&check("http", &url("/ok"), &json("/status", "\"ok\""))).await;
    assert!(!r.ok && r.error.as_deref().is_some_and(|e| e.starts_with("the body is not JSON")), "{r:?}");
    // A body past the 1 MiB read limit is refused, not parsed from its first MiB.
    let r = run_one(&check("http", &url("/big"), &json("/x", "1"))).await;
    assert_eq!(r.error.as_deref(), Some("the body is larger than 1 MiB: expect_json reads no more"));
    // Status is judged first.
    let r = run_one(&check("http", &url("/down"), &json("/status", "\"ok\""))).await;
    assert_eq!(r.error.as_deref(), Some("status 503 not expected"));
}

// ---- ICMP ----

/// 127.0.0.1 and ::1 answer; the socket is whichever this process may open.
#[tokio::test]
async fn icmp_pings_loopback_v4_and_v6() {
    for target in ["127.0.0.1", "::1", "localhost"] {
        let r = run_one(&check("icmp", target, "count = 3")).await;
        assert!(r.ok, "{r:?}");
        assert_eq!(r.kind, "icmp");
        assert_eq!(
            (r.attrs["sent"].as_str(), r.attrs["received"].as_str(), r.attrs["loss_percent"].as_str()),
            ("3", "3", "0.0")
        );
        let (min, avg, max): (f64, f64, f64) = (
            r.attrs["rtt_min_ms"].parse().unwrap(),
            r.attrs["rtt_avg_ms"].parse().unwrap(),
            r.attrs["rtt_max_ms"].parse().unwrap(),
        );
        assert!(min <= avg && avg <= max && max < 100.0, "{r:?}");
        assert!((r.latency_ms.unwrap() - avg).abs() < 0.01, "{r:?}");
        assert!(["dgram", "raw"].contains(&r.attrs["socket"].as_str()), "{r:?}");
    }
}

/// Runs a command, panicking with its output when it fails.
fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace joined to this one by a veth pair (iproute2), removed on drop:
/// `10.213.N.1` and `fd00:213:N::1` on this side, `.2` and `::2` inside it.
struct Netns {
    name: String,
    v4: [String; 2],
    v6: [String; 2],
}

impl Netns {
    fn new() -> Netns {
        let found = Command::new("ip").arg("-V").output();
        assert!(found.is_ok_and(|o| o.status.success()), "this test needs iproute2 (`apt-get install -y iproute2`)");
        let n = std::process::id() % 250;
        let name = format!("lkp{}", std::process::id());
        let (here, there) = (format!("lkp{n}h{}", std::process::id() % 1000), "lkpn".to_string());
        let v4 = [format!("10.213.{n}.1"), format!("10.213.{n}.2")];
        let v6 = [format!("fd00:213:{n:x}::1"), format!("fd00:213:{n:x}::2")];
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name: name.clone(), v4: v4.clone(), v6: v6.clone() };
        sh(&["ip", "link", "add", &here, "type", "veth", "peer", "name", &there, "netns", &name]);
        sh(&["ip", "addr", "add", &format!("{}/29", v4[0]), "dev", &here]);
        sh(&["ip", "-6", "addr", "add", &format!("{}/64", v6[0]), "dev", &here, "nodad"]);
        sh(&["ip", "link", "set", &here, "up"]);
        sh(&["ip", "-n", &name, "addr", "add", &format!("{}/29", v4[1]), "dev", &there]);
        sh(&["ip", "-n", &name, "-6", "addr", "add", &format!("{}/64", v6[1]), "dev", &there, "nodad"]);
        sh(&["ip", "-n", &name, "link", "set", &there, "up"]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

#[tokio::test]
async fn icmp_through_a_network_namespace_reached_and_unreachable() {
    let ns = Netns::new();
    for target in [&ns.v4[1], &ns.v6[1]] {
        let r = run_one(&check("icmp", target, "count = 4\ntimeout = \"3s\"")).await;
        assert!(r.ok, "{r:?}");
        assert_eq!((r.attrs["received"].as_str(), r.attrs["address"].as_str()), ("4", target.as_str()), "{r:?}");
    }
    // .5 is inside the namespace's subnet and nobody holds it: every request is lost.
    let gone = format!("{}5", ns.v4[0].strip_suffix('1').unwrap());
    let started = Instant::now();
    let r = run_one(&check("icmp", &gone, "count = 2\ntimeout = \"1s\"")).await;
    assert!(!r.ok);
    let attr = |k: &str| r.attrs.get(k).map(String::as_str);
    assert_eq!((attr("sent"), attr("received"), attr("loss_percent")), (Some("2"), Some("0"), Some("100.0")), "{r:?}");
    assert_eq!(r.latency_ms, None);
    assert!(
        r.error.as_deref().is_some_and(|e| e.starts_with(&format!("no reply from {gone} to 2 request(s)"))),
        "{r:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1800), "bounded by the timeout: {:?}", started.elapsed());
    // max_lost = 0: up only when every request is answered, as the peer does.
    let r = run_one(&check("icmp", &ns.v4[1], "count = 2\nmax_lost = 0")).await;
    assert!(r.ok, "{r:?}");
}

/// The child half of the socket-kind tests: pings 127.0.0.1 and checks what
/// `LAKE_ICMP_CHILD` says should happen. Run by the tests below, not on its own.
#[tokio::test]
#[ignore = "run by icmp_socket_kinds_in_child_processes"]
async fn icmp_child() {
    let Ok(expect) = std::env::var("LAKE_ICMP_CHILD") else { return };
    let r = run_one(&check("icmp", "127.0.0.1", "count = 2")).await;
    match expect.as_str() {
        "dgram" => {
            assert!(r.ok, "{r:?}");
            assert_eq!(r.attrs["socket"], "dgram");
        }
        "denied" => {
            assert!(!r.ok);
            let e = r.error.unwrap_or_default();
            assert!(e.starts_with("ICMP is not permitted"), "{e}");
            assert!(e.contains("net.ipv4.ping_group_range") && e.contains("CAP_NET_RAW"), "{e}");
            println!("LAKE_ICMP_CHILD error: {e}");
        }
        "raw-only" => {
            // socket = "raw" asked for and CAP_NET_RAW gone: only the capability is named.
            let r = run_one(&check("icmp", "127.0.0.1", "socket = \"raw\"")).await;
            let e = r.error.unwrap_or_default();
            assert!(e.contains("CAP_NET_RAW") && !e.contains("ping_group_range"), "{e}");
        }
        other => panic!("LAKE_ICMP_CHILD = {other:?}"),
    }
    println!("LAKE_ICMP_CHILD {expect} passed");
}

/// In a fresh network namespace (its own `ping_group_range`) without CAP_NET_RAW:
/// with the group allowed, a datagram socket works; without it, the error names both.
#[test]
fn icmp_socket_kinds_in_child_processes() {
    let exe = std::env::current_exe().unwrap();
    let run = |expect: &str, range: &str| {
        let script = format!(
            "ip link set lo up && sysctl -qw net.ipv4.ping_group_range=\"{range}\" && \
             exec setpriv --bounding-set=-net_raw --inh-caps=-net_raw \"$0\" --exact \
             sources::uptime::tests::icmp_child --ignored --nocapture --test-threads=1"
        );
        let out = Command::new("unshare")
            .args(["--net", "sh", "-c", &script])
            .arg(&exe)
            .env("LAKE_ICMP_CHILD", expect)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("LAKE_ICMP_CHILD {expect} passed")),
            "{expect}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("dgram", "0 2147483647");
    // The kernel's default range, "1 0", allows no group.
    run("denied", "1 0");
    run("raw-only", "0 2147483647");
}

// ---- DNS ----

#[test]
fn dns_wire_format_reads_defensively() {
    assert_eq!(dns::encode_name("a.B.").unwrap(), b"\x01a\x01B\x00");
    assert_eq!(dns::encode_name(".").unwrap(), b"\x00");
    let q = dns::query(0xbeef, &dns::encode_name("h.test").unwrap(), 1);
    assert_eq!(&q[..4], &[0xbe, 0xef, 0x01, 0x00]);
    // A query is not a response.
    assert!(dns::parse(&q).unwrap_err().contains("QR"));
    // A response: question h.test A, answers a CNAME (compressed to the question's name)
    // and an A record.
    let mut resp = q.clone();
    resp[2] = 0x81;
    resp[3] = 0x80;
    resp[7] = 2;
    resp.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'x', 0xc0, 12]);
    resp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
    let r = dns::parse(&resp).unwrap();
    assert_eq!((r.id, r.truncated, r.rcode), (0xbeef, false, 0));
    let data: Vec<&str> = r.answers.iter().map(|a| a.data.as_str()).collect();
    assert_eq!(data, ["x.h.test", "192.0.2.7"]);
    // Every cut of it is an error, never a panic.
    for cut in 12..resp.len() {
        assert!(dns::parse(&resp[..cut]).is_err(), "cut at {cut}");
    }
    // A pointer to itself, one forwards, a pointer loop, a bad label type.
    let mut looped = resp.clone();
    let at = q.len();
    looped[at] = 0xc0;
    looped[at + 1] = at as u8;
    assert!(dns::parse(&looped).unwrap_err().contains("forwards"));
    looped[at + 1] = 200;
    assert!(dns::parse(&looped).unwrap_err().contains("forwards"));
    let mut bad = resp.clone();
    bad[at] = 0x80;
    assert!(dns::parse(&bad).unwrap_err().contains("label type"));
    // An A record with 5 bytes of data.
    let mut five = resp.clone();
    let a_len = five.len() - 5;
    five[a_len] = 5;
    five.push(0);
    assert!(dns::parse(&five).unwrap_err().contains("type 1 record has 5 bytes"));
    // A name that jumps back into a label sequence ending in a pointer back again: the
    // jump count stops it.
    let mut msg = vec![0, 1, 0x81, 0x80, 0, 0, 0, 1, 0, 0, 0, 0];
    msg.extend_from_slice(&[1, b'a', 0xc0, 12]); // at 12: "a" then a pointer back to 12
    msg.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4]);
    assert!(dns::parse(&msg).unwrap_err().contains("too many compression pointers"));
    assert_eq!(dns::rcode_name(3), "NXDOMAIN");
    assert_eq!(dns::rcode_name(9), "RCODE9");
}

/// A real dnsmasq on a loopback port, killed on drop.
struct Dnsmasq {
    child: Child,
    port: u16,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Six 200-byte TXT records: over 512 bytes, so the UDP answer is truncated, and over
/// the 1000 bytes `attrs.answers` keeps.
fn big_txt(i: usize) -> String {
    format!("{i}{}", "z".repeat(199))
}

fn start_dnsmasq() -> Dnsmasq {
    let found = Command::new("dnsmasq").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs dnsmasq as a real DNS server: `apt-get install -y dnsmasq-base` (scripts/setup does)"
    );
    let port = closed_port();
    let mut args = vec![
        "--no-daemon".to_string(),
        "--conf-file=/dev/null".into(),
        format!("--port={port}"),
        "--listen-address=127.0.0.1".into(),
        "--bind-interfaces".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--user=root".into(),
        "--group=root".into(),
        // Names under .test that are not below are NXDOMAIN, not forwarded.
        "--local=/test/".into(),
        "--address=/a.test/192.0.2.10".into(),
        "--host-record=h.test,192.0.2.11,2001:db8::11".into(),
        "--cname=alias.test,h.test".into(),
        "--mx-host=mail.test,mx1.mail.test,10".into(),
        // No shell: the argument is the record, quotes would be part of it.
        "--txt-record=t.test,v=spf1 -all".into(),
    ];
    for i in 0..6 {
        args.push(format!("--txt-record=big.test,{}", big_txt(i)));
    }
    let child = Command::new("dnsmasq")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = Dnsmasq { child, port };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "dnsmasq did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    d
}

#[tokio::test]
async fn dns_checks_against_dnsmasq() {
    let d = start_dnsmasq();
    let server = format!("server = \"127.0.0.1:{}\"", d.port);
    let dns = |name: &str, extra: &str| check("dns", name, &format!("{server}\n{extra}"));

    let r = run_one(&dns("a.test", "expect = \"192.0.2.10\"")).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(
        (r.attrs["rcode"].as_str(), r.attrs["answers"].as_str(), r.attrs["transport"].as_str()),
        ("NOERROR", "192.0.2.10", "udp")
    );
    assert!(r.latency_ms.is_some());
    let r = run_one(&dns("h.test", "record = \"AAAA\"\nexpect = \"2001:0db8::0011\"")).await;
    assert!(r.ok, "the address is compared as an address: {r:?}");
    let r = run_one(&dns("H.Test", "")).await;
    assert!(r.ok && r.attrs["answers"] == "192.0.2.11", "{r:?}");
    let r = run_one(&dns("alias.test", "record = \"CNAME\"\nexpect = \"h.test\"")).await;
    assert!(r.ok, "{r:?}");
    let r = run_one(&dns("alias.test", "expect = \"192.0.2.11\"")).await;
    assert!(r.ok, "the A record behind the CNAME: {r:?}");
    let r = run_one(&dns("mail.test", "record = \"MX\"\nexpect = \"mx1.mail.test\"")).await;
    assert!(r.ok && r.attrs["answers"] == "10 mx1.mail.test", "{r:?}");
    let r = run_one(&dns("t.test", "record = \"TXT\"\nexpect = \"spf1\"")).await;
    assert!(r.ok && r.attrs["answers"] == "v=spf1 -all", "{r:?}");

    let r = run_one(&dns("a.test", "expect = \"192.0.2.99\"")).await;
    assert_eq!((r.ok, r.error.as_deref()), (false, Some("no A record matching \"192.0.2.99\" in the answer")));
    let r = run_one(&dns("t.test", "record = \"MX\"")).await;
    assert_eq!(r.error.as_deref(), Some("no MX record in the answer"), "{r:?}");
    let r = run_one(&dns("nowhere.test", "")).await;
    assert_eq!((r.ok, r.error.as_deref()), (false, Some("rcode NXDOMAIN, expected NOERROR")));
    let r = run_one(&dns("nowhere.test", "expect_rcode = \"NXDOMAIN\"")).await;
    assert!(r.ok, "{r:?}");

    // Over 512 bytes: truncated over UDP, asked again over TCP.
    let r = run_one(&dns("big.test", "record = \"TXT\"\nexpect = \"5zzz\"")).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.attrs["transport"], "tcp");
    let answers = &r.attrs["answers"];
    assert!(answers.contains(&big_txt(5)) && answers.ends_with('…') && answers.len() < 1300, "{r:?}");

    // Nobody answers on a closed port: bounded by the timeout.
    let started = Instant::now();
    let r = run_one(&check("dns", "a.test", &format!("server = \"127.0.0.1:{}\"\ntimeout = \"500ms\"", closed_port())))
        .await;
    assert!(!r.ok && started.elapsed() < Duration::from_secs(2), "{r:?}");
}

/// A server that first answers with a forged id and a forged question, then garbage,
/// then truthfully: only the true answer is taken.
#[tokio::test]
async fn dns_ignores_answers_that_are_not_ours() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let (n, from) = sock.recv_from(&mut buf).await.unwrap();
        let q = &buf[..n];
        let answer = |id: [u8; 2], qname: &[u8], ip: u8| {
            let mut r = vec![id[0], id[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
            r.extend_from_slice(qname);
            r.extend_from_slice(&[0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, ip]);
            r
        };
        let qname = &q[12..n - 4];
        let id = [q[0], q[1]];
        let wrong_id = [q[0] ^ 0xff, q[1]];
        sock.send_to(&answer(wrong_id, qname, 66), from).await.unwrap();
        sock.send_to(&answer(id, b"\x05other\x04test\x00", 66), from).await.unwrap();
        sock.send_to(b"\x00\x01garbage", from).await.unwrap();
        sock.send_to(&answer(id, qname, 7), from).await.unwrap();
    });
    let r = run_one(&check("dns", "h.test", &format!("server = \"{addr}\""))).await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.attrs["answers"], "192.0.2.7");
}

#[tokio::test]
async fn outside_checks_are_marked_in_attrs() {
    let r = run_one(&check("icmp", "127.0.0.1", "count = 1\noutside = true")).await;
    assert_eq!(r.attrs.get("outside").map(String::as_str), Some("true"));
    let r = run_one(&check("icmp", "127.0.0.1", "count = 1")).await;
    assert!(!r.attrs.contains_key("outside"));
}

/// What a raw socket sees besides our replies: other pingers' replies, our own requests
/// on loopback, other ICMP types, forged and cut packets. Only ours count.
#[test]
fn icmp_replies_are_matched_on_type_id_token_and_sequence() {
    let (id, token) = (0x1234, *b"lake-tok");
    let request = icmp::echo_request(false, id, 7, token);
    assert_eq!(icmp::checksum(&request), 0, "a packet with its checksum sums to zero");
    let reply = |v6: bool, id: u16, seq: u16, token: [u8; 8]| {
        let mut p = icmp::echo_request(v6, id, seq, token);
        p[0] = if v6 { 129 } else { 0 };
        p
    };
    let mut with_ip = vec![0x45u8];
    with_ip.resize(20, 0);
    with_ip.extend_from_slice(&reply(false, id, 7, token));
    let raw = PingSocket::Raw;
    assert_eq!(icmp::parse_reply(&with_ip, false, raw, id, token), Some(7));
    assert_eq!(icmp::parse_reply(&reply(true, id, 3, token), true, raw, id, token), Some(3));
    // A datagram socket's identifier is the kernel's: not compared.
    assert_eq!(icmp::parse_reply(&reply(false, 999, 2, token), false, PingSocket::Dgram, id, token), Some(2));
    // Our own request (loopback), another pinger's reply, another token.
    assert_eq!(icmp::parse_reply(&request, false, PingSocket::Dgram, id, token), None);
    let mut other = vec![0x45u8];
    other.resize(20, 0);
    other.extend_from_slice(&reply(false, id + 1, 7, token));
    assert_eq!(icmp::parse_reply(&other, false, raw, id, token), None);
    assert_eq!(icmp::parse_reply(&reply(true, id, 3, *b"not-ours"), true, raw, id, token), None);
    // A sequence in the header that differs from the one in the payload (forged).
    let mut forged = reply(true, id, 3, token);
    forged[7] = 4;
    assert_eq!(icmp::parse_reply(&forged, true, raw, id, token), None);
    // Destination unreachable, cut packets, a bad IP header length: never a panic.
    let mut unreachable = reply(true, id, 3, token);
    unreachable[0] = 1;
    assert_eq!(icmp::parse_reply(&unreachable, true, raw, id, token), None);
    for cut in 0..with_ip.len() {
        assert_eq!(icmp::parse_reply(&with_ip[..cut], false, raw, id, token), None, "cut at {cut}");
    }
    let mut bad_ihl = with_ip.clone();
    bad_ihl[0] = 0x4f;
    assert_eq!(icmp::parse_reply(&bad_ihl, false, raw, id, token), None);
    bad_ihl[0] = 0x41;
    assert_eq!(icmp::parse_reply(&bad_ihl, false, raw, id, token), None);
}
