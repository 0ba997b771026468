use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::Ordering;

use super::frame::{Frame, Framer};
use super::parse::{parse, Message, Reading};
use super::*;
use crate::sources::test_support::{context, drain_until};

/// 2026-12-07T05:00:00Z.
const NOW: i64 = 1_796_619_600_000_000;

fn utc() -> Reading {
    Reading { tz: jiff::tz::TimeZone::UTC, max_skew: 86_400_000_000 }
}

fn p(s: &str) -> Message {
    parse(s.as_bytes(), &utc(), NOW)
}

fn attrs(m: &Message) -> BTreeMap<&str, &str> {
    m.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn micros(s: &str) -> i64 {
    s.parse::<jiff::Timestamp>().unwrap().as_microsecond()
}

#[test]
fn rfc5424_with_structured_data_bom_and_nilvalues() {
    let m = p(
        "<165>1 2026-12-07T04:59:58.123456+01:00 mymachine.example.com evntslog 8710 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\\"ic\\]at\\\\ion\" eventID=\"1011\"][examplePriority@32473 class=\"high\"][flag@1] \u{feff}An application event",
    );
    assert_eq!(m.ts, micros("2026-12-07T03:59:58.123456Z"));
    assert_eq!((m.priority, m.pid), (Some(5), Some(8710)));
    assert_eq!(m.ident.as_deref(), Some("evntslog"));
    assert_eq!(m.message, "An application event", "the BOM is dropped");
    let a = attrs(&m);
    assert_eq!(a["facility"], "20");
    assert_eq!(a["hostname"], "mymachine.example.com");
    assert_eq!(a["msgid"], "ID47");
    assert_eq!(a["sd.exampleSDID@32473.eventSource"], "Appl\"ic]at\\ion");
    assert_eq!(a["sd.exampleSDID@32473.iut"], "3");
    assert_eq!(a["sd.examplePriority@32473.class"], "high");
    assert_eq!(a["sd.flag@1"], "");
    assert_eq!(a["format"], "rfc5424");
    assert!(!m.damaged && !a.contains_key("ts_received"));

    let m = p("<34>1 - - - - - -");
    assert_eq!((m.ts, m.priority, m.ident.as_deref(), m.pid), (NOW, Some(2), None, None));
    assert_eq!(m.message, "");
    let a = attrs(&m);
    assert_eq!((a["ts_received"], a["facility"]), ("absent", "4"));
    assert!(!a.contains_key("hostname") && !a.contains_key("msgid"));

    // A PROCID that is not a number stays in attrs; a repeated SD param joins.
    let m = p("<14>1 2026-12-07T05:00:00Z h app worker-3 - [x a=\"1\" a=\"2\"] hi");
    assert_eq!((m.pid, attrs(&m)["procid"], attrs(&m)["sd.x.a"]), (None, "worker-3", "1,2"));
}

#[test]
fn rfc5424_damage_is_kept_and_said() {
    for (text, why) in [
        ("<14>1 2026-12-07T05:00:00Z host", "ends before APP-NAME"),
        ("<14>1 2026-12-07T05:00:00Z h a p m [x a=1] msg", "not quoted"),
        ("<14>1 2026-12-07T05:00:00Z h a p m [x a=\"1] msg", "not closed"),
        ("<14>1 2026-12-07T05:00:00Z h a p m junk msg", "neither '-' nor '['"),
        ("<14>1 2026-12-07T05:00:00Z  a p m - msg", "HOSTNAME is empty"),
    ] {
        let m = p(text);
        assert!(m.damaged, "{text}");
        assert!(attrs(&m)["malformed"].contains(why), "{text}: {:?}", attrs(&m)["malformed"]);
        assert_eq!(m.message, &text[4..], "the text after PRI is kept whole");
        assert_eq!(m.priority, Some(6));
    }
}

#[test]
fn rfc3164_and_its_variants() {
    let m = p("<38>Dec  7 04:59:01 web1 sshd[812]: Accepted publickey for deploy");
    assert_eq!((m.ts, m.priority, m.pid), (micros("2026-12-07T04:59:01Z"), Some(6), Some(812)));
    assert_eq!((m.ident.as_deref(), m.message.as_str()), (Some("sshd"), "Accepted publickey for deploy"));
    assert_eq!((attrs(&m)["hostname"], attrs(&m)["facility"], attrs(&m)["format"]), ("web1", "4", "rfc3164"));

    // No HOSTNAME: the first word is the TAG.
    let m = p("<13>Dec  7 05:00:03 backup: nightly run done");
    assert_eq!(
        (m.ident.as_deref(), m.hostname.as_deref(), m.message.as_str()),
        (Some("backup"), None, "nightly run done")
    );
    // `<PRI>` only: the receive time, said.
    let m = p("<13>just a message");
    assert_eq!((m.ts, m.message.as_str(), m.ident.as_deref()), (NOW, "just a message", None));
    assert_eq!(attrs(&m)["ts_received"], "absent");
    // A tag without host or time.
    let m = p("<13>app[7]: hello");
    assert_eq!((m.ident.as_deref(), m.pid, m.message.as_str()), (Some("app"), Some(7), "hello"));
    // RFC 3339 time (rsyslog's forwarding template).
    let m = p("<30>2026-12-07T05:00:01.5+00:00 nas smartd[1]: Device: /dev/sda, SMART OK");
    assert_eq!((m.ts, m.hostname.as_deref()), (micros("2026-12-07T05:00:01.5Z"), Some("nas")));
    // Cisco IOS: sequence number, unsynchronized-clock mark, milliseconds, zone, no host.
    let m = p("<189>42: *Dec  7 04:58:11.123 UTC: %SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.5)");
    assert_eq!(m.ts, micros("2026-12-07T04:58:11.123Z"));
    assert_eq!((m.priority, m.ident.as_deref()), (Some(5), Some("%SYS-5-CONFIG_I")));
    assert_eq!(m.message, "Configured from console by vty0 (10.0.0.5)");
    assert_eq!((attrs(&m)["sequence"], attrs(&m)["facility"]), ("42", "23"));
    // A year and a fraction in the BSD time.
    let m = p("<14>Dec  7 2026 04:00:00.25 ups1 upsmon[99]: On battery");
    assert_eq!(m.ts, micros("2026-12-07T04:00:00.25Z"));
    // A time in the configured zone.
    let paris = Reading { tz: jiff::tz::TimeZone::get("Europe/Paris").unwrap(), max_skew: 86_400_000_000 };
    let m = parse(b"<14>Dec  7 05:00:00 r x: y", &paris, NOW);
    assert_eq!(m.ts, micros("2026-12-07T04:00:00Z"));
}

#[test]
fn yearless_times_resolve_around_new_year() {
    let jan1 = micros("2027-01-01T00:00:05Z");
    let m = parse(b"<13>Dec 31 23:59:58 h t: late", &utc(), jan1);
    assert_eq!(m.ts, micros("2026-12-31T23:59:58Z"), "last year's, received just after midnight");
    let dec31 = micros("2026-12-31T23:59:58Z");
    let m = parse(b"<13>Jan  1 00:00:01 h t: early", &utc(), dec31);
    assert_eq!(m.ts, micros("2027-01-01T00:00:01Z"), "next year's, from a clock a few seconds ahead");
}

#[test]
fn bad_pri_bad_time_skew_and_bytes_are_kept_and_said() {
    for (text, why, rest) in [
        ("Dec  7 05:00:00 h t: no pri", "no <PRI>", "no pri"),
        ("<999>Dec  7 05:00:00 h t: big", "not 0 to 191", "big"),
        ("<ab>Dec  7 05:00:00 h t: letters", "not a number", "letters"),
        ("<13 no close", "not closed", "<13 no close"),
        ("<>x", "not a number", "x"),
    ] {
        let m = p(text);
        assert!(m.damaged, "{text}");
        assert_eq!(m.priority, None);
        assert!(attrs(&m)["malformed"].contains(why), "{text}: {:?}", attrs(&m));
        assert_eq!(m.message, rest, "{text}");
    }
    let m = p("<13>1 2026-13-45T99:00:00Z h a - - - msg");
    assert_eq!((m.ts, attrs(&m)["ts_received"], attrs(&m)["sent_ts"]), (NOW, "unparsable", "2026-13-45T99:00:00Z"));
    // An unset device clock: 1970 would make the lake refuse the batch.
    let m = p("<13>1 1970-01-01T00:00:10Z h a - - - msg");
    assert_eq!((m.ts, attrs(&m)["ts_received"], attrs(&m)["sent_ts"]), (NOW, "skewed", "1970-01-01T00:00:10Z"));
    let m = parse(b"<13>t: caf\xe9 \xff", &utc(), NOW);
    assert!(m.damaged);
    assert_eq!(m.message, "caf\u{fffd} \u{fffd}");
    assert_eq!((attrs(&m)["invalid_utf8"], attrs(&m)["raw_hex"]), ("true", "3c31333e743a20636166e920ff"));
    // Trailing delimiters of a datagram are not part of the message.
    assert_eq!(p("<13>t: x\r\n\0").message, "x");
}

fn frames(max: usize, chunks: &[&[u8]]) -> (Vec<Frame>, Framer) {
    let mut f = Framer::new(max);
    let mut out = Vec::new();
    for c in chunks {
        f.push(c, &mut out);
        assert!(f.buffered() <= max + 11, "the framer holds {} bytes", f.buffered());
    }
    (out, f)
}

fn msgs(out: &[Frame]) -> Vec<(String, bool)> {
    out.iter().map(|f| (String::from_utf8_lossy(&f.bytes).into_owned(), f.truncated)).collect()
}

#[test]
fn framing_is_told_per_frame_and_survives_any_split() {
    let stream: &[u8] = b"11 <13>hello a\n<13>line one\r\n<13>nul\x00\n\n5 <13>x0 3 abc";
    let want = [
        ("<13>hello a".to_string(), false),
        ("<13>line one".to_string(), false),
        ("<13>nul".to_string(), false),
        ("<13>x".to_string(), false),
        ("abc".to_string(), false),
    ];
    // Whole, then split at every byte.
    let (out, _) = frames(1024, &[stream]);
    assert_eq!(msgs(&out), want);
    for i in 0..stream.len() {
        let (a, b) = stream.split_at(i);
        let (out, _) = frames(1024, &[a, b]);
        assert_eq!(msgs(&out), want, "split at {i}");
    }
    // One byte at a time.
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let (mut out, mut f) = frames(1024, &bytes);
    f.finish(&mut out);
    assert_eq!(msgs(&out), want);
    // The last LF-less frame is kept at the end of the stream.
    let (mut out, mut f) = frames(1024, &[b"<13>a\n<13>last"]);
    f.finish(&mut out);
    assert_eq!(msgs(&out), vec![("<13>a".into(), false), ("<13>last".into(), false)]);
    // An octet-counted frame cut short by the end of the stream is kept, marked.
    let (mut out, mut f) = frames(1024, &[b"20 <13>short"]);
    f.finish(&mut out);
    assert_eq!(msgs(&out), vec![("<13>short".into(), true)]);
    // Digits not followed by a space: a non-transparent frame.
    let (out, _) = frames(1024, &[b"12345x\n1234567890123 y\n"]);
    assert_eq!(msgs(&out), vec![("12345x".into(), false), ("1234567890123 y".into(), false)]);
}

#[test]
fn huge_frames_are_cut_and_their_rest_never_held() {
    // Octet-counted, 10 MB announced: the first 600 bytes kept, the rest skipped.
    let big = vec![b'a'; 10_000];
    let mut stream = b"10000 ".to_vec();
    stream.extend_from_slice(&big);
    stream.extend_from_slice(b"5 <13>z");
    let chunks: Vec<&[u8]> = stream.chunks(777).collect();
    let (out, _) = frames(600, &chunks);
    assert_eq!(out.len(), 2);
    assert_eq!((out[0].bytes.len(), out[0].truncated), (600, true));
    assert_eq!(msgs(&out[1..]), vec![("<13>z".into(), false)]);
    // The same whole in one read.
    let (out, _) = frames(600, &[&stream]);
    assert_eq!((out.len(), out[0].bytes.len(), msgs(&out[1..])), (2, 600, vec![("<13>z".into(), false)]));
    // A line without end: cut, then skipped to its LF.
    let mut stream = vec![b'b'; 5000];
    stream.extend_from_slice(b"\n<13>after\n");
    for size in [100, 1000, 6000] {
        let chunks: Vec<&[u8]> = stream.chunks(size).collect();
        let (out, _) = frames(600, &chunks);
        assert_eq!(out.len(), 2, "chunks of {size}");
        assert_eq!((out[0].bytes.len(), out[0].truncated), (600, true));
        assert_eq!(msgs(&out[1..]), vec![("<13>after".into(), false)]);
    }
    // A flood of bytes with no delimiter at all stays bounded (checked in `frames`).
    let flood = vec![b'c'; 1 << 20];
    let chunks: Vec<&[u8]> = flood.chunks(65_536).collect();
    let (out, _) = frames(600, &chunks);
    assert_eq!(out.len(), 1);
}

fn config(extra: &str) -> anyhow::Result<SyslogConfig> {
    #[derive(serde::Deserialize)]
    struct F {
        syslog: SyslogFile,
    }
    let tz = if extra.contains("timezone") { "" } else { "timezone = \"UTC\"\n" };
    let f: F = toml::from_str(&format!("[syslog]\n{tz}{extra}")).map_err(|e| anyhow::anyhow!("{e}"))?;
    f.syslog.validate()
}

#[test]
fn config_is_checked() {
    let c = config("").unwrap();
    assert!(!c.enabled(), "off unless an address is given");
    assert_eq!((c.max_message_bytes, c.max_connections, c.host.clone()), (65_536, 256, HostFrom::Node));
    let c = config("udp = \"127.0.0.1:5514\"\ntcp = \"[::1]:5514\"\n").unwrap();
    assert!(c.enabled());
    let bad = |extra: &str, says: &str| {
        let e = format!("{:#}", config(extra).unwrap_err());
        assert!(e.contains(says), "{extra}: {e}");
    };
    bad("udp = \"localhost\"\n", "syslog.udp = \"localhost\"");
    bad("host = \"hostname\"\n", "needs syslog.hostnames");
    bad("hostnames = [\"a\"]\n", "set host = \"hostname\"");
    bad("host = \"hostname\"\nhostnames = [\"bad name\"]\n", "syslog.hostnames[0]");
    bad("host = \"device\"\n", "use \"node\"");
    bad("max_message_bytes = \"100B\"\n", "max_message_bytes");
    bad("max_connections = 0\n", "max_connections");
    bad("queue_bytes = \"64KiB\"\n", "queue_bytes");
    bad("idle_timeout = \"0s\"\n", "idle_timeout");
    bad("max_clock_skew = \"1s\"\n", "max_clock_skew");
    bad("timezone = \"Mars/Base\"\n", "syslog.timezone");
    bad("listen = \"x\"\n", "listen");
}

#[test]
fn rows_carry_the_node_or_a_listed_hostname() {
    let c = config("host = \"hostname\"\nhostnames = [\"router1\"]\n").unwrap();
    let mut rows = SyslogRows::new(&c);
    rows.push("node-a", b"<13>Dec  7 05:00:00 router1 t: a", false, "10.0.0.1", "udp", NOW);
    rows.push("node-a", b"<13>Dec  7 05:00:00 printer t: b", true, "10.0.0.2", "tcp", NOW);
    let rows = lake_test_support::batch_to_json(&rows.finish().unwrap());
    assert_eq!((rows[0]["host"].as_str(), rows[1]["host"].as_str()), (Some("router1"), Some("node-a")));
    assert_eq!(rows[1]["attrs"]["hostname"], "printer");
    assert_eq!(
        (rows[1]["attrs"]["sender"].as_str(), rows[1]["attrs"]["truncated"].as_str()),
        (Some("10.0.0.2"), Some("true"))
    );
    assert_eq!(rows[0]["source"], "syslog");
}

async fn started(extra: &str) -> (tempfile::TempDir, SourceContext, CancellationToken, SocketAddr, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path()).await;
    // Free ports: bind, read the port, let go.
    let port = lake_test_support::free_port();
    let c = config(&format!("udp = \"127.0.0.1:{port}\"\ntcp = \"127.0.0.1:{port}\"\nbatch_wait = \"50ms\"\n{extra}"))
        .unwrap();
    let (udp, tcp) = (c.udp.unwrap(), c.tcp.unwrap());
    let cancel = CancellationToken::new();
    tokio::spawn(SyslogSource::new(c, ctx.clone()).run(cancel.clone()));
    // Until the TCP side accepts (the UDP socket is bound just before it).
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(tcp).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (dir, ctx, cancel, udp, tcp)
}

fn logs(spooled: &[crate::sources::test_support::Spooled]) -> Vec<serde_json::Value> {
    spooled.iter().filter(|s| s.table == "logs").flat_map(|s| s.rows()).collect()
}

#[tokio::test]
async fn udp_and_tcp_messages_become_rows() {
    let (_dir, ctx, cancel, udp, tcp) = started("max_message_bytes = \"1KiB\"\n").await;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(b"<14>1 2026-12-07T05:00:00Z nas app 1 - - over udp", udp).unwrap();
    sock.send_to(b"\n", udp).unwrap();
    let mut s = std::net::TcpStream::connect(tcp).unwrap();
    let huge = format!("<13>t: {}", "x".repeat(3000));
    s.write_all(format!("19 <13>octet counted!\n<13>newline framed\n\n{huge}\n").as_bytes()).unwrap();
    s.write_all(b"<13>ba\xffd\n").unwrap();
    drop(s);
    let spooled = drain_until(&ctx, 10, |s| logs(s).len() >= 5).await;
    let mut rows = logs(&spooled);
    rows.sort_by_key(|r| r["message"].as_str().unwrap_or("").to_string());
    let msgs: Vec<&str> = rows.iter().map(|r| r["message"].as_str().unwrap()).collect();
    assert_eq!(msgs.len(), 5, "{msgs:?}");
    assert!(msgs.contains(&"octet counted!") && msgs.contains(&"newline framed") && msgs.contains(&"over udp"));
    let cut = rows.iter().find(|r| r["attrs"]["truncated"] == "true").unwrap();
    assert_eq!(cut["message"].as_str().unwrap().len(), 1024 - 7);
    let bad = rows.iter().find(|r| r["attrs"]["invalid_utf8"] == "true").unwrap();
    assert_eq!(
        (bad["message"].as_str(), bad["attrs"]["raw_hex"].as_str()),
        (Some("ba\u{fffd}d"), Some("3c31333e6261ff64"))
    );
    let udp_row = rows.iter().find(|r| r["message"] == "over udp").unwrap();
    assert_eq!(
        (udp_row["attrs"]["transport"].as_str(), udp_row["attrs"]["sender"].as_str()),
        (Some("udp"), Some("127.0.0.1"))
    );
    let st = ctx.stats.source(NAME);
    assert_eq!(st.read.load(Ordering::Relaxed), 5, "blank frames are not messages");
    assert_eq!((st.truncated.load(Ordering::Relaxed), st.parse_errors.load(Ordering::Relaxed)), (1, 1));
    cancel.cancel();
}

#[tokio::test]
async fn connections_beyond_the_limit_and_idle_ones_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_dir, ctx, cancel, _udp, tcp) = started("max_connections = 2\nidle_timeout = \"300ms\"\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = ctx.stats.source(NAME);
    let before = st.refused.load(Ordering::Relaxed);
    let mut a = tokio::net::TcpStream::connect(tcp).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(tcp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = tokio::net::TcpStream::connect(tcp).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "the third connection is closed at once");
    assert_eq!(st.refused.load(Ordering::Relaxed), before + 1);
    // The two open ones still deliver; then, silent, they are closed.
    a.write_all(b"<13>t: from a\n").await.unwrap();
    b.write_all(b"<13>t: from b\n").await.unwrap();
    let spooled = drain_until(&ctx, 5, |s| logs(s).len() >= 2).await;
    assert_eq!(logs(&spooled).len(), 2);
    let n = tokio::time::timeout(Duration::from_secs(3), a.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "idle: closed");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(st.refused.load(Ordering::Relaxed), before + 3);
    cancel.cancel();
}

#[tokio::test]
async fn a_full_queue_drops_udp_counted_and_holds_tcp_back() {
    // A spool too small to take a batch: the source waits, its queue fills.
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let opts = crate::spool::SpoolOptions { max_size: 8192, segment_size: 4096 };
    let spool = crate::spool::SpoolHandle::open(dir.path().join("spool"), opts, Arc::clone(&stats)).await.unwrap();
    let ctx = SourceContext { node: Arc::from("test-node"), spool, stats: Arc::clone(&stats) };
    let port = lake_test_support::free_port();
    let c = config(&format!(
        "udp = \"127.0.0.1:{port}\"\ntcp = \"127.0.0.1:{port}\"\nbatch_wait = \"10ms\"\nbatch_lines = 1\nmax_message_bytes = \"1KiB\"\nqueue_bytes = \"4KiB\"\n"
    ))
    .unwrap();
    let (udp, tcp) = (c.udp.unwrap(), c.tcp.unwrap());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(SyslogSource::new(c, ctx.clone()).run(cancel.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // TCP: the writer blocks once the socket buffers are full; nothing is dropped.
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        let mut s = tokio::net::TcpStream::connect(tcp).await.unwrap();
        let line = format!("<13>t: {}\n", "t".repeat(900));
        let mut sent = 0u64;
        loop {
            if tokio::time::timeout(Duration::from_secs(1), s.write_all(line.as_bytes())).await.is_err() {
                return sent;
            }
            sent += 1;
        }
    });
    let sent =
        tokio::time::timeout(Duration::from_secs(30), writer).await.expect("the TCP sender is held back").unwrap();
    let st = stats.source(NAME);
    let tcp_read = st.read.load(Ordering::Relaxed);
    assert!(tcp_read < sent, "TCP lines read {tcp_read} < sent {sent}: the rest waits in the sockets");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let line = format!("<13>t: {}", "u".repeat(900));
    for _ in 0..200 {
        sock.send_to(line.as_bytes(), udp).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The queue is full of TCP lines: every datagram received is dropped, counted.
    let (dropped, udp_read) = (st.dropped.load(Ordering::Relaxed), st.read.load(Ordering::Relaxed) - tcp_read);
    assert!(dropped > 0 && dropped == udp_read, "UDP dropped {dropped} of {udp_read}");
    assert!(st.paused.load(Ordering::Relaxed) >= 1, "the source waits for room");
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
