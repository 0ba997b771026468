//! Uptime tests, loopback only: an in-process axum server for http, listening and closed
//! ports for tcp, and a real Caddy (`tls internal`) for tls.

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
    let e = err("[[checks]]\nname = \"a\"\nkind = \"icmp\"\ntarget = \"h\"\n");
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
    assert!(h.follow_redirects && h.verify_tls && h.method == HttpMethod::Get);
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
