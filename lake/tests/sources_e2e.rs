//! The file sources end to end, with the real binaries: a collector follows a Caddy
//! access log, an rsyslog-style ufw.log and a fail2ban.log, ships to a real lake, is
//! stopped, the files grow, it starts again — and every line is in its table exactly
//! once, with lines that do not parse kept in `logs` as `<source>-unparsed`; and the same
//! for `[[log_file]]` with real nginx and Python lines. And `[uptime]` probes: ping and
//! an HTTP check with a JSON answer, from the collector's config to `probes` rows.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::*;

fn caddy_line(n: u64) -> String {
    format!(
        r#"{{"level":"info","ts":{}.25,"logger":"http.log.access.log0","msg":"handled request","request":{{"remote_ip":"127.0.0.1","remote_port":"5000","proto":"HTTP/1.1","method":"GET","host":"e2e.test:8080","uri":"/n/{n}?q=1","headers":{{}}}},"user_id":"","duration":0.002,"size":5,"status":200,"resp_headers":{{}}}}"#,
        1_795_374_070 + n
    )
}

fn ufw_line(n: u64) -> String {
    format!(
        "2026-11-22T10:15:01.{n:06}+00:00 gw kernel: [12345.678] [UFW BLOCK] IN=eth0 OUT= MAC=00:00 SRC=203.0.113.{} DST=198.51.100.2 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT={} DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0",
        n % 250,
        10_000 + n
    )
}

fn fail2ban_line(n: u64) -> String {
    format!("2026-11-22 10:15:03,002 fail2ban.actions        [812]: NOTICE  [sshd] Ban 192.0.2.{}", n % 250) + &format!("\n2026-11-22 10:15:03,003 fail2ban.filter         [812]: INFO    [sshd] Found 10.{}.0.1 - 2026-11-22 10:15:03", n)
}

fn append(path: &Path, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_ufw_and_fail2ban_files_arrive_exactly_once_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1s"), port);
    let (caddy, ufw, f2b) =
        (dir.path().join("access.log"), dir.path().join("ufw.log"), dir.path().join("fail2ban.log"));
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\
             [host]\nenabled = false\n[shipper]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\
             [caddy]\nenabled = true\npaths = [\"{}\"]\npoll_interval = \"100ms\"\nbatch_wait = \"100ms\"\n\
             [ufw]\nenabled = true\nfrom_journald = false\npaths = [\"{}\"]\ntimezone = \"UTC\"\n\
             [fail2ban]\nenabled = true\nfrom_journald = false\npaths = [\"{}\"]\ntimezone = \"UTC\"\n",
            dir.path().join("collector").display(),
            lake.url,
            caddy.display(),
            ufw.display(),
            f2b.display()
        ),
    )
    .unwrap();
    let first = 1..=50u64;
    append(&caddy, &first.clone().map(caddy_line).chain(["not json at all".to_string()]).collect::<Vec<_>>());
    append(
        &ufw,
        &first
            .clone()
            .map(ufw_line)
            .chain(["Nov 22 10:15:01 gw sshd[1]: not a ufw line".to_string()])
            .collect::<Vec<_>>(),
    );
    append(&f2b, &first.clone().map(fail2ban_line).collect::<Vec<_>>());

    let mut collector = start_collector(&config);
    let c = reqwest::Client::new();
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from http", 50).await, 50);
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from firewall", 50).await, 50);
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from bans", 100).await, 100);

    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    assert!(collector.wait().unwrap().success());
    let second = 51..=80u64;
    append(&caddy, &second.clone().map(caddy_line).collect::<Vec<_>>());
    append(&ufw, &second.clone().map(ufw_line).collect::<Vec<_>>());
    append(&f2b, &second.clone().map(fail2ban_line).collect::<Vec<_>>());
    let mut collector = start_collector(&config);

    assert_eq!(wait_for(&c, &lake.url, "select count(*) from http", 80).await, 80);
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from firewall", 80).await, 80);
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from bans", 160).await, 160);
    // Settle, then check nothing arrived twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = sql(
        &c,
        &lake.url,
        "select (select count(*) from http), (select count(distinct uri) from http), (select count(distinct vhost) from http),
                (select count(*) from firewall), (select count(distinct src_port) from firewall),
                (select count(*) from bans where action = 'ban'), (select count(*) from bans where action = 'found'),
                (select count(*) from logs where source = 'caddy-unparsed'), (select count(*) from logs where source = 'ufw-unparsed')",
    )
    .await;
    let v: Vec<i64> = r[0].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    assert_eq!(
        v,
        vec![80, 80, 1, 80, 80, 80, 80, 1, 1],
        "http, uris, vhosts, firewall, ports, bans, found, unparsed caddy, unparsed ufw"
    );
    let ts = sql(&c, &lake.url, "select min(ts)::varchar from firewall").await;
    assert_eq!(ts[0][0], "2026-11-22 10:15:01.000001+00", "ufw rows take the file's own timestamp");
    let _ = collector.kill();
    let _ = collector.wait();
}

/// `[[log_file]]` end to end: real nginx and Python log lines (the captured fixtures) go
/// through a real collector into a real lake — access lines into `http` with traffic
/// classes, Python records into `logs` with the traceback joined into its record — once
/// each across a restart, a record still pending at the stop included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_nginx_and_python_records_arrive_exactly_once_across_a_restart() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let nginx_lines = std::fs::read(fixtures.join("nginx/access.log")).unwrap();
    let python_lines = std::fs::read(fixtures.join("python/stderr.log")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1s"), port);
    let (access, app) = (dir.path().join("access.log"), dir.path().join("app.log"));
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\
             [host]\nenabled = false\n[shipper]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\
             [[log_file]]\nname = \"nginx\"\npaths = [\"{}\"]\nformat = \"nginx_combined\"\npoll_interval = \"100ms\"\nbatch_wait = \"100ms\"\n\
             [[log_file]]\nname = \"api\"\npaths = [\"{}\"]\nformat = \"python\"\npoll_interval = \"100ms\"\nbatch_wait = \"100ms\"\n\
             [log_file.multiline]\nmax_wait = \"300ms\"\n",
            dir.path().join("collector").display(),
            lake.url,
            access.display(),
            app.display(),
        ),
    )
    .unwrap();
    let append_bytes = |path: &Path, bytes: &[u8]| {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    };
    append_bytes(&access, &nginx_lines);
    append_bytes(&app, &python_lines);

    // The fixtures hold 5 access lines and 5 Python records (8 lines: one traceback).
    let mut collector = start_collector(&config);
    let c = reqwest::Client::new();
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from http", 5).await, 5);
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from logs where source = 'api'", 5).await, 5);

    // Stopped with a record still open: the first line of the next batch waits for more.
    unsafe { libc::kill(collector.id() as i32, libc::SIGTERM) };
    assert!(collector.wait().unwrap().success());
    append_bytes(&access, &nginx_lines);
    append_bytes(&app, &python_lines);
    let mut collector = start_collector(&config);
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from http", 10).await, 10);
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from logs where source = 'api'", 10).await, 10);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let r = sql(
        &c,
        &lake.url,
        "select (select count(*) from http), (select count(*) from http where client_class = 'search_bot'),
                (select count(*) from http where status = 404),
                (select count(*) from logs where source = 'api'),
                (select count(*) from logs where source = 'api' and message like '%Traceback%KeyError%'),
                (select count(*) from logs where source like '%-unparsed')",
    )
    .await;
    let v: Vec<i64> = r[0].as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    assert_eq!(v, vec![10, 2, 2, 10, 2, 0], "http, search bots, 404s, api records, tracebacks joined, unparsed");
    let _ = collector.kill();
    let _ = collector.wait();
}

/// `[uptime]` from a collector.toml to the lake: an icmp check of 127.0.0.1 marked
/// `outside`, and a POST with a header and a body whose JSON answer is checked, one that
/// matches and one that does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uptime_icmp_and_http_json_checks_arrive_in_probes() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/api/status",
        post(|headers: axum::http::HeaderMap, body: String| async move {
            let token = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer t0k");
            serde_json::json!({ "status": if token && body == "{}" { "ok" } else { "denied" } }).to_string()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let lake = Lake::start(&write_config(dir.path(), port, "1s"), port);
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\
             [host]\nenabled = false\n[shipper]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\
             [uptime]\ninterval = \"1s\"\ntimeout = \"900ms\"\n\
             [[uptime.checks]]\nname = \"loopback\"\nkind = \"icmp\"\ntarget = \"127.0.0.1\"\ncount = 2\noutside = true\n\
             [[uptime.checks]]\nname = \"api\"\nkind = \"http\"\ntarget = \"http://{api}/api/status\"\nmethod = \"POST\"\n\
             headers = {{ Authorization = \"Bearer t0k\" }}\nbody = \"{{}}\"\nexpect_json = {{ pointer = \"/status\", value = \"ok\" }}\n\
             [[uptime.checks]]\nname = \"api-no-token\"\nkind = \"http\"\ntarget = \"http://{api}/api/status\"\nmethod = \"POST\"\n\
             expect_json = {{ pointer = \"/status\", value = \"ok\" }}\n",
            dir.path().join("collector").display(),
            lake.url,
        ),
    )
    .unwrap();
    let mut collector = start_collector(&config);
    let c = reqwest::Client::new();
    wait_for(&c, &lake.url, "select count(distinct attrs['name']) from probes", 3).await;
    let r = sql(
        &c,
        &lake.url,
        "select attrs['name'], kind, arg_max(ok, ts), arg_max(error, ts), arg_max(attrs['received'], ts),
                arg_max(attrs['outside'], ts), arg_max(latency_ms, ts) is not null
         from probes group by 1, 2 order by 1",
    )
    .await;
    println!("probes: {r}");
    let rows = r.as_array().unwrap();
    assert_eq!(rows[0], serde_json::json!(["api", "http", true, null, null, null, true]));
    assert_eq!(
        rows[1],
        serde_json::json!([
            "api-no-token",
            "http",
            false,
            "JSON at \"/status\" is \"denied\", expected \"ok\"",
            null,
            null,
            true
        ])
    );
    assert_eq!(rows[2], serde_json::json!(["loopback", "icmp", true, null, "2", "true", true]));
    let _ = collector.kill();
    let _ = collector.wait();
}
