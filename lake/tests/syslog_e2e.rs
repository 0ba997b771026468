//! `[syslog]` end to end, with the real binaries and real senders: a collector listens for
//! syslog on UDP and TCP, util-linux `logger --server` and a real `rsyslogd` (forwarding
//! with omfwd, octet-counted TCP and UDP) and a router's RFC 5424 datagram send to it,
//! and the rows reach a real lake — the router's HOSTNAME as `host` (listed in the
//! collector's `hostnames` and in the lake's `[[nodes]] hosts`), every other sender under
//! the collector's node with its HOSTNAME in attrs, damage kept and said.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn logger(port: u16, args: &[&str]) {
    let port = port.to_string();
    let mut all = vec!["--server", "127.0.0.1", "--port", &port];
    all.extend_from_slice(args);
    assert!(Command::new("logger").args(&all).status().expect("logger runs").success(), "logger {all:?}");
}

fn udp_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table.lines().any(|l| l.split_whitespace().nth(1).is_some_and(|a| a.ends_with(&format!(":{port:04X}"))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logger_rsyslog_and_a_router_reach_the_lake_through_the_collector() {
    assert!(
        Path::new("/usr/sbin/rsyslogd").exists(),
        "rsyslogd is missing: apt-get install rsyslog (scripts/setup peers does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // NODE may write rows of the router it receives syslog for.
    let config = LakeToml::new(dir.path(), port)
        .node_with(NODE, &format!("token = \"{TOKEN}\"\nhosts = [\"router1\"]"))
        .read_tokens(&[READ_TOKEN])
        .flush("1s")
        .write();
    let lake = Lake::start(&config, port);
    let sport = free_port();
    let collector_toml = dir.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "version = 1\nnode = \"{NODE}\"\ndata_dir = \"{}\"\n[lake]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\n\
             [host]\nenabled = false\ninterval = \"1s\"\n[shipper]\nbackoff_min = \"50ms\"\nbackoff_max = \"500ms\"\n\
             [syslog]\nudp = \"127.0.0.1:{sport}\"\ntcp = \"127.0.0.1:{sport}\"\nhost = \"hostname\"\nhostnames = [\"router1\"]\n\
             timezone = \"UTC\"\nbatch_wait = \"100ms\"\n",
            dir.path().join("collector").display(),
            lake.url,
        ),
    )
    .unwrap();
    let mut collector = start_collector(&collector_toml);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", sport)).is_ok() && udp_bound(sport) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    logger(sport, &["--udp", "--rfc5424=notq", "-t", "backup", "--msgid", "BK1", "-p", "daemon.err", "udp 5424"]);
    logger(sport, &["--tcp", "--octet-count", "--rfc3164", "-t", "sshd", "--id=812", "-p", "auth.info", "tcp 3164"]);
    // A router: its own HOSTNAME, an RFC 5424 datagram with structured data.
    let now = jiff::Timestamp::now().to_string();
    let router = format!("<190>1 {now} router1 dnsmasq-dhcp 991 - [lease@1 ip=\"10.0.0.50\"] DHCPACK(br0) 10.0.0.50");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(router.as_bytes(), ("127.0.0.1", sport)).unwrap();
    // A careless sender: no PRI, not UTF-8, over TCP.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", sport)).unwrap();
        s.write_all(b"no pri \xff here\n").unwrap();
    }

    // rsyslogd between logger and the collector.
    let inport = free_port();
    let conf = format!(
        r#"global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{inport}" ruleset="fwd")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{sport}" protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
  action(type="omfwd" target="127.0.0.1" port="{sport}" protocol="udp")
}}
"#,
        work = dir.path().display()
    );
    std::fs::write(dir.path().join("rsyslog.conf"), conf).unwrap();
    let _rsyslogd = lake_test_support::KillOnDrop(
        Command::new("/usr/sbin/rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(dir.path().join("rsyslog.conf"))
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if udp_bound(inport) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    logger(inport, &["--udp", "--rfc3164", "-t", "cron", "--id=4242", "-p", "cron.info", "via rsyslog"]);

    let c = reqwest::Client::new();
    assert_eq!(wait_for(&c, &lake.url, "select count(*) from logs where source = 'syslog'", 6).await, 6);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = sql(
        &c,
        &lake.url,
        "select host, ident, pid, priority, message, attrs['hostname'], attrs['transport'], attrs['format'], \
                attrs['facility'], attrs['malformed'], attrs['invalid_utf8'], attrs['sd.lease@1.ip'], \
                abs(epoch_ms(ts) - epoch_ms(now())) < 60000 \
         from logs where source = 'syslog' order by message, attrs['transport']",
    )
    .await;
    let me = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
    let want = serde_json::json!([
        [
            "router1",
            "dnsmasq-dhcp",
            991,
            6,
            "DHCPACK(br0) 10.0.0.50",
            "router1",
            "udp",
            "rfc5424",
            "23",
            null,
            null,
            "10.0.0.50",
            true
        ],
        [NODE, null, null, null, "no pri \u{fffd} here", null, "tcp", "rfc3164", null, "no <PRI>", "true", null, true],
        [NODE, "sshd", 812, 6, "tcp 3164", me, "tcp", "rfc3164", "4", null, null, null, true],
        [NODE, "backup", null, 3, "udp 5424", me, "udp", "rfc5424", "3", null, null, null, true],
        [NODE, "cron", 4242, 6, "via rsyslog", me, "tcp", "rfc5424", "9", null, null, null, true],
        [NODE, "cron", 4242, 6, "via rsyslog", me, "udp", "rfc3164", "9", null, null, null, true],
    ]);
    assert_eq!(rows, want);

    // The collector's own counters of the source reach the lake too.
    let counter = |name: &str| {
        format!("select count(*) from metrics where name = 'lake_collector_source_{name}_total' and labels['source'] = 'syslog'")
    };
    assert!(wait_for(&c, &lake.url, &format!("{} and value = 6", counter("rows")), 1).await >= 1);
    let last = |name: &str| {
        format!(
            "select arg_max(value, ts) from metrics where name = 'lake_collector_source_{name}_total' and labels['source'] = 'syslog'"
        )
    };
    let mut got = Vec::new();
    for name in ["read", "rows", "parse_errors", "dropped", "truncated", "refused"] {
        got.push((name, sql(&c, &lake.url, &last(name)).await[0][0].as_f64()));
    }
    assert_eq!(
        got,
        [
            ("read", Some(6.0)),
            ("rows", Some(6.0)),
            ("parse_errors", Some(1.0)),
            ("dropped", Some(0.0)),
            ("truncated", Some(0.0)),
            ("refused", Some(0.0))
        ]
    );
    let _ = collector.kill();
    let _ = collector.wait();
}
