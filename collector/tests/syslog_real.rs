//! `[syslog]` against real senders started here: util-linux `logger --server` over UDP,
//! TCP (newline framing) and TCP with `--octet-count`, in RFC 5424 and RFC 3164; and a
//! real `rsyslogd` (Debian's rsyslog, its own config, work directory and pid file in a
//! temporary directory, no system socket) receiving from `logger` and forwarding with
//! `omfwd` to the source over TCP octet-counted (RFC 5424 template) and UDP (its default
//! BSD format). Every row the source spools is asserted, every column (`ts` within the
//! time of the test). `scripts/setup peers` installs rsyslog; `logger` is essential.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lake_collector::sources::syslog::{SyslogFile, SyslogSource, NAME};
use lake_collector::sources::SourceContext;
use lake_collector::spool::{SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

fn logger(port: u16, args: &[&str]) {
    let port = port.to_string();
    let mut all = vec!["--server", "127.0.0.1", "--port", &port];
    all.extend_from_slice(args);
    let st = Command::new("logger").args(&all).status().expect("logger (bsdutils) runs");
    assert!(st.success(), "logger {all:?}");
}

fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_and_rsyslog_reach_the_source_as_exact_rows() {
    assert!(Path::new(RSYSLOGD).exists(), "{RSYSLOGD} is missing: apt-get install rsyslog (scripts/setup peers does)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = lake_test_support::free_port();
    #[derive(serde::Deserialize)]
    struct F {
        syslog: SyslogFile,
    }
    let toml = format!(
        "[syslog]\nudp = \"127.0.0.1:{port}\"\ntcp = \"127.0.0.1:{port}\"\ntimezone = \"local\"\nbatch_wait = \"50ms\"\n"
    );
    let config = toml::from_str::<F>(&toml).unwrap().syslog.validate().unwrap();
    let stats = Arc::new(Stats::default());
    let opts = SpoolOptions { max_size: 64 << 20, segment_size: 1 << 20 };
    let spool = SpoolHandle::open(d.join("spool"), opts, Arc::clone(&stats)).await.unwrap();
    let ctx = SourceContext { node: Arc::from("test-node"), spool, stats: Arc::clone(&stats) };
    let cancel = CancellationToken::new();
    let task = tokio::spawn(SyslogSource::new(config, ctx).run(cancel.clone()));
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = lake_format::rows::now_micros() - 1_000_000;

    // logger straight to the source. `notq`: no timeQuality element, whose isSynced says
    // whether this machine's clock is synchronized.
    logger(
        port,
        &[
            "--udp",
            "--rfc5424=notq",
            "-t",
            "backup",
            "--msgid",
            "BK1",
            "-p",
            "daemon.err",
            "--sd-id",
            "meta@32473",
            "--sd-param",
            "job=\"nightly\"",
            "udp 5424",
        ],
    );
    logger(port, &["--tcp", "--rfc3164", "-t", "sshd", "--id=812", "-p", "auth.info", "tcp 3164"]);
    logger(port, &["--tcp", "--octet-count", "--rfc5424=notq", "-t", "app", "-p", "local3.notice", "octet 5424 café"]);

    // rsyslogd between logger and the source.
    let inport = lake_test_support::free_port();
    let conf = format!(
        r#"global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{inport}" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="udp")
}}
"#,
        work = d.display()
    );
    std::fs::write(d.join("rsyslog.conf"), conf).unwrap();
    let _rsyslogd = lake_test_support::KillOnDrop(
        Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Until rsyslogd's UDP input is bound (a datagram sent before would be lost).
    let bound = |port: u16| {
        let table = std::fs::read_to_string("/proc/net/udp").unwrap();
        table.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(&format!(":{port:04X}"))))
    };
    for _ in 0..100 {
        if bound(inport) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(bound(inport), "rsyslogd did not bind its UDP input");
    logger(inport, &["--udp", "--rfc3164", "-t", "cron", "--id=4242", "-p", "cron.info", "via rsyslog"]);
    let src = stats.source(NAME);
    for _ in 0..200 {
        if src.rows.load(Ordering::Relaxed) >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer: a row too many would show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ended = lake_format::rows::now_micros() + 1_000_000;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(src.parse_errors.load(Ordering::Relaxed), 0);

    let mut rows: Vec<Value> =
        lake_test_support::spool::spooled(&d.join("spool")).await.into_iter().flat_map(|(_, _, rows)| rows).collect();
    for r in &mut rows {
        let ts = r.as_object_mut().unwrap().remove("ts").unwrap().as_i64().unwrap();
        assert!((started..=ended).contains(&ts), "ts {ts} not within the test: {r}");
    }
    rows.sort_by_key(|r| (r["message"].as_str().unwrap_or("").to_string(), r["attrs"]["transport"].to_string()));
    let host = machine_hostname();
    let row = |ident: &str, pid: Value, priority: i64, message: &str, attrs: Value| {
        let mut a = attrs;
        a["hostname"] = json!(host);
        a["sender"] = json!("127.0.0.1");
        json!({"table": "logs", "host": "test-node", "source": "syslog", "unit": null, "ident": ident, "pid": pid,
               "priority": priority, "message": message, "boot_id": null, "attrs": a})
    };
    let want = vec![
        row(
            "app",
            Value::Null,
            5,
            "octet 5424 café",
            json!({"facility": "19", "format": "rfc5424", "transport": "tcp"}),
        ),
        row("sshd", json!(812), 6, "tcp 3164", json!({"facility": "4", "format": "rfc3164", "transport": "tcp"})),
        row(
            "backup",
            Value::Null,
            3,
            "udp 5424",
            json!({"facility": "3", "format": "rfc5424", "msgid": "BK1", "sd.meta@32473.job": "nightly", "transport": "udp"}),
        ),
        row("cron", json!(4242), 6, "via rsyslog", json!({"facility": "9", "format": "rfc5424", "transport": "tcp"})),
        row("cron", json!(4242), 6, "via rsyslog", json!({"facility": "9", "format": "rfc3164", "transport": "udp"})),
    ];
    let mut want = want;
    want.sort_by_key(|r| (r["message"].as_str().unwrap_or("").to_string(), r["attrs"]["transport"].to_string()));
    assert_eq!(rows, want);
}
