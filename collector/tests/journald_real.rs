//! The journald source against real journal files: export-format input is turned into a
//! journal by `systemd-journal-remote` and read back through `journalctl --directory`,
//! into a real spool. Covers the mapping (binary/invalid UTF-8, multi-line and 1 MiB
//! messages, unit filter), routing to `firewall` and `bans`, restarts from the saved
//! cursor (clean stop, task abort, and `kill -9` of the real binary: every entry spooled
//! exactly once), and a missing or failing journalctl. Needs Debian's `systemd-journal-remote`
//! and `journalctl` (CI installs them); without them these tests fail, saying so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use lake_collector::config::Config;
use lake_collector::sources::journald::{JournaldSource, JournaldState};
use lake_collector::sources::SourceContext;
use lake_collector::spool::{Spool, SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use lake_format::wire;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const BOOT: &str = "0123456789abcdef0123456789abcdef";
const OPTS: SpoolOptions = SpoolOptions { max_size: 1 << 30, segment_size: 8 << 20 };

fn require_tools() {
    assert!(
        Path::new(JOURNAL_REMOTE).exists(),
        "{JOURNAL_REMOTE} is missing: run `apt-get install -y systemd-journal-remote` (CI installs it)"
    );
    let ok = std::process::Command::new("journalctl").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(ok, "journalctl is missing: install systemd (Debian package `systemd`)");
}

/// One journal entry in export format: text values as `K=v`, others (newline, control
/// bytes, invalid UTF-8) in the binary form `K\n<u64 le length><bytes>\n`.
fn export_entry(out: &mut Vec<u8>, fields: &[(&str, &[u8])]) {
    for (k, v) in fields {
        let binary = std::str::from_utf8(v).is_err() || v.iter().any(|b| *b < 0x20);
        out.extend_from_slice(k.as_bytes());
        if binary {
            out.push(b'\n');
            out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            out.extend_from_slice(v);
            out.push(b'\n');
        } else {
            out.push(b'=');
            out.extend_from_slice(v);
            out.push(b'\n');
        }
    }
    out.push(b'\n');
}

/// A plain entry `n` with message `msg` of `unit`, at 1795374070 s + n ms.
fn plain(out: &mut Vec<u8>, n: u64, unit: &str, msg: &[u8]) {
    let rt = (1_795_374_070_000_000 + n * 1000).to_string();
    let mono = (1_000 + n).to_string();
    export_entry(
        out,
        &[
            ("__REALTIME_TIMESTAMP", rt.as_bytes()),
            ("__MONOTONIC_TIMESTAMP", mono.as_bytes()),
            ("_BOOT_ID", BOOT.as_bytes()),
            ("_HOSTNAME", b"salem-storage"),
            ("_TRANSPORT", b"stdout"),
            ("_SYSTEMD_UNIT", unit.as_bytes()),
            ("PRIORITY", b"6"),
            ("MESSAGE", msg),
        ],
    );
}

/// Writes `export` into `<dir>/<name>.journal` with systemd-journal-remote.
fn build_journal(dir: &Path, name: &str, export: &[u8]) {
    let input = dir.join(format!("{name}.export"));
    std::fs::write(&input, export).unwrap();
    let jdir = dir.join("journal");
    std::fs::create_dir_all(&jdir).unwrap();
    let out = std::process::Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", jdir.join(format!("{name}.journal")).display()))
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "journal-remote failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn first_batch() -> Vec<u8> {
    let mut e = Vec::new();
    // A full entry: source time, pid, identifier, code location.
    export_entry(
        &mut e,
        &[
            ("__REALTIME_TIMESTAMP", b"1795374070000500"),
            ("__MONOTONIC_TIMESTAMP", b"900"),
            ("_BOOT_ID", BOOT.as_bytes()),
            ("_HOSTNAME", b"salem-storage"),
            ("_TRANSPORT", b"syslog"),
            ("_SYSTEMD_UNIT", b"ssh.service"),
            ("SYSLOG_IDENTIFIER", b"sshd"),
            ("SYSLOG_FACILITY", b"4"),
            ("_PID", b"812"),
            ("_UID", b"0"),
            ("_COMM", b"sshd"),
            ("PRIORITY", b"5"),
            ("_SOURCE_REALTIME_TIMESTAMP", b"1795374070000400"),
            ("CODE_FILE", b"auth.c"),
            ("MESSAGE", b"m-0 Accepted publickey for root"),
        ],
    );
    plain(&mut e, 1, "ssh.service", b"m-1 bin\xff\xfeary");
    plain(&mut e, 2, "ssh.service", b"m-2 first line\nsecond line");
    export_entry(
        &mut e,
        &[
            ("__REALTIME_TIMESTAMP", b"1795374070003000"),
            ("__MONOTONIC_TIMESTAMP", b"1003"),
            ("_BOOT_ID", BOOT.as_bytes()),
            ("_HOSTNAME", b"salem-storage"),
            ("_TRANSPORT", b"kernel"),
            ("SYSLOG_IDENTIFIER", b"kernel"),
            ("PRIORITY", b"4"),
            ("MESSAGE", b"[UFW BLOCK] IN=eth0 OUT= MAC=00:00:00:00:00:00:00:00:00:00:00:00:08:00 SRC=203.0.113.7 DST=198.51.100.2 LEN=60 TOS=0x00 PREC=0x00 TTL=52 ID=4242 DF PROTO=TCP SPT=54321 DPT=22 WINDOW=64240 RES=0x00 SYN URGP=0"),
        ],
    );
    export_entry(
        &mut e,
        &[
            ("__REALTIME_TIMESTAMP", b"1795374070004000"),
            ("__MONOTONIC_TIMESTAMP", b"1004"),
            ("_BOOT_ID", BOOT.as_bytes()),
            ("_HOSTNAME", b"salem-storage"),
            ("_TRANSPORT", b"journal"),
            ("_SYSTEMD_UNIT", b"fail2ban.service"),
            ("SYSLOG_IDENTIFIER", b"fail2ban-server"),
            ("_PID", b"700"),
            ("PRIORITY", b"5"),
            ("MESSAGE", b"fail2ban.actions        [700]: NOTICE  [sshd] Ban 203.0.113.7"),
        ],
    );
    plain(&mut e, 5, "cron.service", b"m-5 excluded by the unit filter");
    let mut huge = b"m-6 ".to_vec();
    huge.resize(1 << 20, b'h');
    plain(&mut e, 6, "ssh.service", &huge);
    e
}

fn more(from: u64, to: u64) -> Vec<u8> {
    let mut e = Vec::new();
    for n in from..to {
        plain(&mut e, n, "app.service", format!("m-{n} more").as_bytes());
    }
    e
}

const TOML: &str = r#"
[journald]
enabled = true
start_at = "beginning"
exclude_units = ["cron*"]
batch_wait = "50ms"
[ufw]
enabled = true
[fail2ban]
enabled = true
timezone = "UTC"
"#;

fn config(dir: &Path, extra: &str) -> Config {
    let text = format!(
        "node = \"test-node\"\ndata_dir = {:?}\n[lake]\ntoken = \"t\"\nurl = \"http://127.0.0.1:9\"\n[host]\nenabled = false\ninterval = \"1h\"\n{TOML}{extra}",
        dir.join("data").display().to_string()
    );
    let text = text
        .replace("[journald]\n", &format!("[journald]\ndirectory = {:?}\n", dir.join("journal").display().to_string()));
    Config::from_toml(&text, None).unwrap()
}

/// Takes every record out of the spool: (table, rows).
async fn drain(spool: &SpoolHandle) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Some(rec) = spool.peek().await.unwrap() {
        // The collector's own metrics share the spool; only this source's tables matter.
        let mine = ["logs", "firewall", "bans"].contains(&rec.table.as_str());
        let (_, batches) = wire::decode(&rec.body).unwrap();
        for b in batches.iter().filter(|_| mine) {
            out.extend(lake_test_support::batch_to_json(b).into_iter().map(|r| (rec.table.clone(), r)));
        }
        spool.ack(rec.seq).await.unwrap();
    }
    out
}

fn logs_messages(rows: &[(String, Value)]) -> Vec<String> {
    rows.iter()
        .filter(|(t, _)| t == "logs")
        .map(|(_, r)| r["message"].as_str().unwrap().split(' ').next().unwrap().to_string())
        .collect()
}

/// The cursor saved in the spool, read without disturbing a collector running on it.
fn saved_cursor(data: &Path) -> Option<String> {
    let states = lake_collector::spool::read_states(&data.join("spool")).ok()?;
    let v: Value = serde_json::from_slice(states.get("journald")?).unwrap();
    let s: JournaldState = serde_json::from_value(v["state"].clone()).unwrap();
    Some(s.cursor)
}

struct Running {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), lake_collector::sources::SourceError>>,
}

fn start(cfg: &Config, ctx: &SourceContext) -> Running {
    let cancel = CancellationToken::new();
    let src = JournaldSource::new(cfg.journald.clone(), ctx.clone(), true, Some(cfg.fail2ban.timezone.clone()));
    let task = tokio::spawn(src.run(cancel.clone()));
    Running { cancel, task }
}

/// Waits until the saved cursor satisfies `want` (journal-remote numbers the entries of
/// each file from 1: `i=<hex>`, and each file has its own `s=<seqnum id>`).
async fn wait_for_checkpoint(data: &Path, want: impl Fn(&str) -> bool) {
    for _ in 0..400 {
        if saved_cursor(data).is_some_and(|c| want(&c)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("checkpoint never reached the expected cursor: {:?}", saved_cursor(data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_journal_rows_and_restarts() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    build_journal(dir.path(), "one", &first_batch());
    let cfg = config(dir.path(), "");
    let data = dir.path().join("data");
    let stats = Arc::new(Stats::default());
    let spool = SpoolHandle::open(data.join("spool"), OPTS, Arc::clone(&stats)).await.unwrap();
    let ctx = SourceContext { node: Arc::from("test-node"), spool: spool.clone(), stats: Arc::clone(&stats) };

    // 1. Everything from the beginning.
    let run = start(&cfg, &ctx);
    wait_for_checkpoint(&data, |c| c.contains(";i=7;")).await;
    run.cancel.cancel();
    run.task.await.unwrap().unwrap();
    let rows = drain(&spool).await;
    let logs: Vec<&Value> = rows.iter().filter(|(t, _)| t == "logs").map(|(_, r)| r).collect();
    assert_eq!(logs.len(), 6, "cron.service is filtered out: {:?}", logs_messages(&rows));
    assert_eq!(
        logs[0],
        &json!({
            "ts": 1795374070000400i64, "host": "test-node", "source": "journald", "unit": "ssh.service",
            "ident": "sshd", "pid": 812, "priority": 5, "message": "m-0 Accepted publickey for root",
            "boot_id": BOOT,
            "attrs": {"CODE_FILE": "auth.c", "SYSLOG_FACILITY": "4", "_COMM": "sshd", "_TRANSPORT": "syslog",
                      "_UID": "0", "__REALTIME_TIMESTAMP": "1795374070000500", "hostname": "salem-storage"}
        })
    );
    assert_eq!(logs[1]["message"], "m-1 bin\u{fffd}\u{fffd}ary");
    assert_eq!(logs[1]["attrs"]["MESSAGE_hex"], "6d2d312062696efffe617279");
    assert_eq!(logs[1]["ts"], 1795374070001000i64);
    assert_eq!(logs[2]["message"], "m-2 first line\nsecond line");
    assert!(logs[2]["attrs"].get("MESSAGE_hex").is_none(), "valid UTF-8 needs no hex");
    assert_eq!(logs[3]["ident"], "kernel");
    assert_eq!(logs[3]["unit"], Value::Null);
    assert_eq!(logs[4]["unit"], "fail2ban.service");
    assert_eq!(logs[5]["message"].as_str().unwrap().len(), 1 << 20, "1 MiB message kept whole");
    let fw: Vec<&Value> = rows.iter().filter(|(t, _)| t == "firewall").map(|(_, r)| r).collect();
    assert_eq!(fw.len(), 1);
    assert_eq!(
        fw[0],
        &json!({
            "ts": 1795374070003000i64, "host": "test-node", "action": "BLOCK", "source": "ufw", "in_if": "eth0", "out_if": null,
            "src": "203.0.113.7", "dst": "198.51.100.2", "proto": "TCP", "src_port": 54321, "dst_port": 22,
            "len": 60, "ttl": 52,
            "attrs": {"DF": "", "ID": "4242", "MAC": "00:00:00:00:00:00:00:00:00:00:00:00:08:00", "PREC": "0x00",
                      "RES": "0x00", "SYN": "", "TOS": "0x00", "URGP": "0", "WINDOW": "64240"}
        })
    );
    let bans: Vec<&Value> = rows.iter().filter(|(t, _)| t == "bans").map(|(_, r)| r).collect();
    assert_eq!(
        bans,
        vec![&json!({
            "ts": 1795374070004000i64, "host": "test-node", "jail": "sshd", "action": "ban", "ip": "203.0.113.7",
            "ban_count": null, "attrs": {"level": "NOTICE", "logger": "fail2ban.actions", "pid": "700"}
        })]
    );
    let st = stats.source("journald");
    assert_eq!(st.read.load(Ordering::Relaxed), 7);
    assert_eq!(st.rows.load(Ordering::Relaxed), 6);

    // 2. Clean stop, more input (a second journal file), restart: only the new entries.
    build_journal(dir.path(), "two", &more(10, 13));
    let run = start(&cfg, &ctx);
    wait_for_checkpoint(&data, |c| c.contains(";i=3;")).await;
    run.cancel.cancel();
    run.task.await.unwrap().unwrap();
    let rows = drain(&spool).await;
    assert_eq!(logs_messages(&rows), ["m-10", "m-11", "m-12"]);

    // 3. The task is aborted (as by a crash) right after spooling a batch: the rows and
    //    the cursor were spooled together, so a restart repeats nothing.
    build_journal(dir.path(), "three", &more(20, 22));
    let run = start(&cfg, &ctx);
    wait_for_checkpoint(&data, |c| c.contains(";i=2;") && c.contains(&cursor_seqnum(dir.path(), "three"))).await;
    run.task.abort();
    let _ = run.task.await;
    build_journal(dir.path(), "four", &more(30, 31));
    let run = start(&cfg, &ctx);
    wait_for_checkpoint(&data, |c| c.contains(&cursor_seqnum(dir.path(), "four"))).await;
    run.cancel.cancel();
    run.task.await.unwrap().unwrap();
    let rows = drain(&spool).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in logs_messages(&rows) {
        *seen.entry(m).or_default() += 1;
    }
    assert_eq!(seen, BTreeMap::from([("m-20".into(), 1), ("m-21".into(), 1), ("m-30".into(), 1)]));
}

/// The `s=` part of the cursors of one journal file, read with journalctl.
fn cursor_seqnum(dir: &Path, name: &str) -> String {
    let out = std::process::Command::new("journalctl")
        .arg(format!("--file={}", dir.join("journal").join(format!("{name}.journal")).display()))
        .args(["-o", "json", "-n", "1", "--no-pager"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let c = v["__CURSOR"].as_str().unwrap();
    c.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_real_collector_loses_nothing() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    build_journal(dir.path(), "one", &more(0, 50));
    let cfg_text = {
        format!(
            "node = \"test-node\"\ndata_dir = {:?}\n[lake]\ntoken = \"t\"\nurl = \"http://127.0.0.1:9\"\n[host]\nenabled = false\ninterval = \"1h\"\n{}",
            dir.path().join("data").display().to_string(),
            TOML.replace("[journald]\n", &format!("[journald]\ndirectory = {:?}\n", dir.path().join("journal").display().to_string()))
        )
    };
    let cfg_path = dir.path().join("collector.toml");
    std::fs::write(&cfg_path, cfg_text).unwrap();
    let data = dir.path().join("data");
    let run_until = |want: String| {
        let cfg_path = cfg_path.clone();
        let data = data.clone();
        async move {
            let mut child = collector(&cfg_path);
            wait_for_checkpoint(&data, |c| c.contains(&want)).await;
            // SIGKILL: no shutdown path runs.
            child.kill().await.unwrap();
        }
    };
    run_until(format!("{};i=32;", cursor_seqnum(dir.path(), "one"))).await;
    build_journal(dir.path(), "two", &more(100, 120));
    run_until(format!("{};i=14;", cursor_seqnum(dir.path(), "two"))).await;

    let spool = Spool::open(&data.join("spool"), OPTS, Arc::new(Stats::default())).unwrap();
    let spool = SpoolHandle::new(spool);
    let rows = drain(&spool).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in logs_messages(&rows) {
        *seen.entry(m).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = (0..50).chain(100..120).map(|n| (format!("m-{n}"), 1)).collect();
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_failing_journalctl_is_counted_and_retried() {
    for (path, what) in
        [(PathBuf::from("/nonexistent/journalctl"), "missing"), (PathBuf::from("/bin/false"), "failing")]
    {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), "");
        cfg.journald.journalctl_path = path;
        cfg.journald.restart_backoff_min = Duration::from_millis(10);
        cfg.journald.restart_backoff_max = Duration::from_millis(20);
        let data = dir.path().join("data");
        let stats = Arc::new(Stats::default());
        let spool = SpoolHandle::open(data.join("spool"), OPTS, Arc::clone(&stats)).await.unwrap();
        let ctx = SourceContext { node: Arc::from("test-node"), spool, stats: Arc::clone(&stats) };
        let run = start(&cfg, &ctx);
        let errors = &stats.source("journald").errors;
        for _ in 0..200 {
            if errors.load(Ordering::Relaxed) >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(errors.load(Ordering::Relaxed) >= 3, "{what} journalctl: retried and counted");
        assert!(!run.task.is_finished(), "{what} journalctl must not stop the source");
        run.cancel.cancel();
        run.task.await.unwrap().unwrap();
    }
}

const BOOT2: &str = "fedcba9876543210fedcba9876543210";
const BOOT3: &str = "00112233445566778899aabbccddeeff";

/// Entries `from..to` of boot `boot` (message `m-<n> …`), one millisecond apart, their
/// monotonic clock counting from that boot's start.
fn boot_entries(boot: &str, from: u64, to: u64) -> Vec<u8> {
    let mut e = Vec::new();
    for n in from..to {
        let rt = (1_795_374_070_000_000 + n * 1000).to_string();
        let mono = (1_000_000 + (n - from) * 1000).to_string();
        let msg = format!("m-{n} in boot {}", &boot[..4]);
        export_entry(
            &mut e,
            &[
                ("__REALTIME_TIMESTAMP", rt.as_bytes()),
                ("__MONOTONIC_TIMESTAMP", mono.as_bytes()),
                ("_BOOT_ID", boot.as_bytes()),
                ("_HOSTNAME", b"salem-storage"),
                ("_TRANSPORT", b"stdout"),
                ("_SYSTEMD_UNIT", b"app.service"),
                ("PRIORITY", b"6"),
                ("MESSAGE", msg.as_bytes()),
            ],
        );
    }
    e
}

/// A journal holding two boots, 10,000 entries each (m-0 … m-19999), as one file written by
/// systemd-journal-remote, the way a machine's journal holds the boots it kept.
fn two_boot_journal(dir: &Path) {
    let mut export = boot_entries(BOOT, 0, 10_000);
    export.extend(boot_entries(BOOT2, 10_000, 20_000));
    build_journal(dir, "boots", &export);
    let out = std::process::Command::new("journalctl")
        .arg(format!("--directory={}", dir.join("journal").display()))
        .args(["--list-boots", "--no-pager"])
        .output()
        .unwrap();
    let boots = String::from_utf8_lossy(&out.stdout);
    assert!(boots.contains(BOOT) && boots.contains(BOOT2), "journalctl sees both boots: {boots}");
}

/// The cursor of the `n`th entry (from 1) of the journal in `dir`, read with journalctl.
fn cursor_of_entry(dir: &Path, n: usize) -> String {
    let out = std::process::Command::new("journalctl")
        .arg(format!("--directory={}", dir.join("journal").display()))
        .args(["-o", "json", "--no-pager"])
        .output()
        .unwrap();
    let line = out.stdout.split(|b| *b == b'\n').nth(n - 1).unwrap();
    let v: Value = serde_json::from_slice(line).unwrap();
    v["__CURSOR"].as_str().unwrap().to_string()
}

/// How many times each entry number `m-<n>` was spooled to `logs`.
fn entry_counts(rows: &[(String, Value)]) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for m in logs_messages(rows) {
        *seen.entry(m.trim_start_matches("m-").parse::<u64>().unwrap()).or_default() += 1;
    }
    seen
}

/// Checks `seen` holds exactly the entries `want`, each once, saying what differs.
fn assert_exactly_once(seen: &BTreeMap<u64, usize>, want: std::ops::Range<u64>) {
    let missing = want.clone().filter(|n| !seen.contains_key(n)).count();
    let twice = seen.values().filter(|c| **c > 1).count();
    let extra = seen.keys().filter(|n| !want.contains(n)).count();
    assert!(
        missing == 0 && twice == 0 && extra == 0,
        "{} entries spooled ({} distinct) for {} wanted: {missing} missing, {twice} spooled twice, {extra} not wanted",
        seen.values().sum::<usize>(),
        seen.len(),
        want.end - want.start
    );
}

/// Waits (up to two minutes: 20,000 entries on a loaded machine) until the saved cursor
/// satisfies `want`.
async fn wait_for_cursor(data: &Path, want: impl Fn(&str) -> bool) -> String {
    for _ in 0..2400 {
        if let Some(c) = saved_cursor(data).filter(|c| want(c)) {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("checkpoint never reached the expected cursor: {:?}", saved_cursor(data));
}

async fn open_ctx(data: &Path) -> (SpoolHandle, SourceContext) {
    let spool = SpoolHandle::open(data.join("spool"), OPTS, Arc::new(Stats::default())).await.unwrap();
    let ctx = SourceContext { node: Arc::from("test-node"), spool: spool.clone(), stats: Arc::new(Stats::default()) };
    (spool, ctx)
}

/// The real collector on `cfg_path`, quiet, killed if the test ends first.
fn collector(cfg_path: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_lake-collector"))
        .arg("--config")
        .arg(cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A fresh directory holding the two-boot journal, the source's config over it and a spool.
struct TwoBoots {
    dir: tempfile::TempDir,
    data: PathBuf,
    cfg: Config,
    spool: SpoolHandle,
    ctx: SourceContext,
}

impl TwoBoots {
    async fn new() -> TwoBoots {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        two_boot_journal(dir.path());
        let cfg = config(dir.path(), "");
        let data = dir.path().join("data");
        let (spool, ctx) = open_ctx(&data).await;
        TwoBoots { dir, data, cfg, spool, ctx }
    }

    /// Runs the source until it has checkpointed the journal's last entry (i=4e20: the
    /// 20,000th of the file), stops it, and checks the spool holds each of `want` once.
    async fn read_to_the_end_holds(self, want: std::ops::Range<u64>) {
        let run = start(&self.cfg, &self.ctx);
        wait_for_cursor(&self.data, |c| c.contains(";i=4e20;")).await;
        run.cancel.cancel();
        run.task.await.unwrap().unwrap();
        assert_exactly_once(&entry_counts(&drain(&self.spool).await), want);
    }
}

/// `start_at = "beginning"` on a journal of two boots stores both (journalctl --follow
/// alone shows only the last boot: 10,000 of the 20,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_boots_from_the_beginning_are_all_stored() {
    TwoBoots::new().await.read_to_the_end_holds(0..20_000).await;
}

/// A saved cursor in the earlier boot (the collector was behind when the machine
/// rebooted) resumes with exactly the rest of that boot and all of the next: 19,900
/// entries (journalctl --follow --after-cursor gives 9,999, from the later boot only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_in_the_earlier_boot_resumes_with_the_rest_of_every_boot() {
    let boots = TwoBoots::new().await;
    let cursor = cursor_of_entry(boots.dir.path(), 100);
    assert!(cursor.contains(&format!("b={BOOT}")), "{cursor}");
    // The checkpoint a collector that had spooled m-0 … m-99 left.
    let saved = boots
        .ctx
        .emit_with_state("journald", Vec::new(), &JournaldState { cursor }, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(saved, lake_collector::sources::Emitted::Spooled(Vec::new()));
    boots.read_to_the_end_holds(100..20_000).await;
}

/// `kill -9` of the real collector while it catches up through the earlier boot, then a
/// restart: every entry of both boots exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_catch_up_then_restart_is_exactly_once() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    two_boot_journal(dir.path());
    let toml = TOML.replace(
        "[journald]\n",
        &format!("[journald]\ndirectory = {:?}\nbatch_size = 100\n", dir.path().join("journal").display().to_string()),
    );
    let cfg_path = dir.path().join("collector.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "node = \"test-node\"\ndata_dir = {:?}\n[lake]\ntoken = \"t\"\nurl = \"http://127.0.0.1:9\"\n[host]\nenabled = false\ninterval = \"1h\"\n{toml}",
            dir.path().join("data").display().to_string(),
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = collector(&cfg_path);
    // Some batches of the earlier boot are spooled: the catch-up is under way.
    let at = wait_for_cursor(&data, |c| c.contains(&format!("b={BOOT}"))).await;
    child.kill().await.unwrap();
    let after_kill = saved_cursor(&data).unwrap();
    assert!(
        after_kill.contains(&format!("b={BOOT}")),
        "killed during the earlier boot's catch-up (cursor {at}, then {after_kill})"
    );
    let mut child = collector(&cfg_path);
    wait_for_cursor(&data, |c| c.contains(";i=4e20;")).await;
    child.kill().await.unwrap();
    let spool = Spool::open(&data.join("spool"), OPTS, Arc::new(Stats::default())).unwrap();
    let rows = drain(&SpoolHandle::new(spool)).await;
    assert_exactly_once(&entry_counts(&rows), 0..20_000);
}

/// The machine shipping its journal into the directory reboots while the collector
/// follows it: the new boot's entries are followed too (journalctl --follow alone keeps
/// to the boot it started in, and shows none of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boot_that_starts_while_following_is_followed() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    build_journal(dir.path(), "first", &boot_entries(BOOT2, 0, 100));
    let cfg = config(dir.path(), "");
    let data = dir.path().join("data");
    let (spool, ctx) = open_ctx(&data).await;
    let run = start(&cfg, &ctx);
    wait_for_cursor(&data, |c| c.contains(";i=64;")).await;
    // Following now; a new boot arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;
    build_journal(dir.path(), "second", &boot_entries(BOOT3, 100, 200));
    wait_for_checkpoint(&data, |c| c.contains(&format!("b={BOOT3}")) && c.contains(";i=64;")).await;
    run.cancel.cancel();
    run.task.await.unwrap().unwrap();
    assert_exactly_once(&entry_counts(&drain(&spool).await), 0..200);
}
