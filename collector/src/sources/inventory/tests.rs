//! The inventory on this machine (real dpkg, real `/proc`), the units parser on the
//! listings in `fixtures/systemd/` — written in systemctl's output format, NOT captured
//! from a running systemd: this machine does not run systemd as PID 1 (see that
//! directory's README) — and the state that keeps a restart from shipping twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::*;
use crate::config::Config;
use crate::sources::test_support::{context, drain, drain_until, Spooled};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/systemd")
}

fn config() -> InventoryConfig {
    Config::from_toml("", Some("t")).unwrap().inventory
}

fn rows_of(records: &[Spooled], table: &str) -> Vec<Value> {
    records.iter().filter(|r| r.table == table).flat_map(|r| r.rows()).collect()
}

/// `dpkg-query -W` lines, and how many are installed (not `rc`/`un`).
fn dpkg_query_counts() -> (usize, usize) {
    let all = std::process::Command::new("dpkg-query").arg("-W").output().unwrap();
    let all = String::from_utf8(all.stdout).unwrap().lines().count();
    let st = std::process::Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}\\n"]).output().unwrap();
    let installed = String::from_utf8(st.stdout)
        .unwrap()
        .lines()
        .filter(|l| !matches!(l.as_bytes().get(1), Some(b'n' | b'c')))
        .count();
    (all, installed)
}

#[test]
fn units_fixtures_parse_to_their_expected_units() {
    // Written in systemd 252's list-units format (JSON and plain table) by hand: there is
    // no systemd PID 1 on this machine to capture from. See fixtures/systemd/README.md.
    for (inputs, expected) in [
        (&["list-units.json", "list-units.txt"][..], "list-units.expected.json"),
        (&["list-units-jobs.json", "list-units-jobs.txt"][..], "list-units-jobs.expected.json"),
    ] {
        let want: BTreeMap<String, UnitStateJson> =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join(expected)).unwrap()).unwrap();
        for input in inputs {
            let text = std::fs::read_to_string(fixtures().join(input)).unwrap();
            let (got, bad) = units::parse(&text).unwrap();
            assert!(bad.is_empty(), "{input}: {bad:?}");
            let got: BTreeMap<String, UnitStateJson> = got
                .into_iter()
                .map(|(k, s)| {
                    (k, UnitStateJson { load: s.load, active: s.active, sub: s.sub, description: s.description })
                })
                .collect();
            assert_eq!(got, want, "{input}");
        }
    }
    // A failed unit from the fixture is shipped as failed against a snapshot where it ran.
    let (now, _) = units::parse(&std::fs::read_to_string(fixtures().join("list-units.json")).unwrap()).unwrap();
    let mut before = now.clone();
    before.get_mut("postgresql@15-main.service").unwrap().active = "active".into();
    before.get_mut("postgresql@15-main.service").unwrap().sub = "running".into();
    let d = units::diff(Some(&before), &now);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].unit.as_str(), d[0].change), ("postgresql@15-main.service", "failed"));
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct UnitStateJson {
    load: String,
    active: String,
    sub: String,
    description: String,
}

#[tokio::test]
async fn without_systemd_as_pid_1_units_say_so_in_one_sentence() {
    // This machine: systemd installed, not PID 1.
    let captured = std::fs::read_to_string(fixtures().join("not-booted.stderr")).unwrap();
    assert!(captured.contains("has not been booted with systemd"));
    let c = config();
    if Path::new("/run/systemd/system").is_dir() {
        eprintln!("systemd runs here: the absence path is checked with a fake run dir only");
    }
    let mut c2 = c.clone();
    c2.systemd_run_dir = tempfile::tempdir().unwrap().path().join("nothing");
    let err = read_units(&c2).await.unwrap_err();
    assert!(
        matches!(&err, Unavailable::Absent(m) if m.contains("not the init system") && m.contains("units are not inventoried")),
        "{err:?}"
    );
    // systemd "running" but no systemctl: also one sentence.
    let fake_run = tempfile::tempdir().unwrap();
    std::fs::create_dir(fake_run.path().join("system")).unwrap();
    let mut c3 = c.clone();
    c3.systemd_run_dir = fake_run.path().to_path_buf();
    c3.systemctl_path = PathBuf::from("systemctl-that-does-not-exist");
    let err = read_units(&c3).await.unwrap_err();
    assert!(matches!(&err, Unavailable::Absent(m) if m.contains("systemctl-that-does-not-exist not found")), "{err:?}");
    // And a systemctl that runs but cannot reach systemd (the real one here) is a failure
    // with its stderr, not a crash.
    if !Path::new("/run/systemd/system").is_dir() && Path::new("/usr/bin/systemctl").exists() {
        c3.systemctl_path = PathBuf::from("/usr/bin/systemctl");
        let err = read_units(&c3).await.unwrap_err();
        assert!(
            matches!(&err, Unavailable::Failed(m) if m.contains("Failed to connect to bus") || m.contains("booted")),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn no_dpkg_is_said_clearly() {
    let mut c = config();
    c.dpkg_query_path = PathBuf::from("/nonexistent/dpkg-query");
    let err = read_packages(&c).await.unwrap_err();
    assert!(
        matches!(&err, Unavailable::Absent(m) if m.contains("no known package manager") && m.contains("only dpkg")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_listener_opened_here_appears_with_its_process() {
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let uport = udp.local_addr().unwrap().port();
    let (l, _) = read_listeners(&config()).await.unwrap();
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string();
    let me = std::process::id();
    let tcp = l
        .iter()
        .find(|x| x.proto == "tcp" && x.addr == "127.0.0.1" && x.port == port)
        .unwrap_or_else(|| panic!("{port} not in {l:#?}"));
    assert_eq!((tcp.process.as_deref(), tcp.pid), (Some(comm.as_str()), Some(me)));
    let u = l.iter().find(|x| x.proto == "udp" && x.port == uport).unwrap();
    assert_eq!(u.pid, Some(me));
    drop(sock);
    let (after, _) = read_listeners(&config()).await.unwrap();
    let d = listeners::diff(Some(&l), &after);
    assert!(d.iter().any(|c| c.change == "closed" && c.listener.port == port), "{d:#?}");
}

#[tokio::test]
async fn this_machine_first_snapshot_then_only_changes_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (dpkg_lines, installed) = dpkg_query_counts();
    let mut c = config();
    // Fast parts every second so the test sees them; packages/hosts at start.
    c.units_interval = Duration::from_secs(1);
    c.listeners_interval = Duration::from_secs(1);
    let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();

    let ctx = context(dir.path()).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(InventorySource::new(c.clone(), ctx.clone()).run(cancel.clone()));
    let first = drain_until(&ctx, 60, |all| {
        ["packages", "hosts", "listeners"].iter().all(|t| all.iter().any(|r| r.table == *t))
    })
    .await;
    cancel.cancel();
    task.await.unwrap().unwrap();

    let packages = rows_of(&first, "packages");
    eprintln!("dpkg-query -W lists {dpkg_lines} packages, {installed} installed; packages rows: {}", packages.len());
    assert_eq!(packages.len(), installed, "one row per installed package");
    assert_eq!(installed, dpkg_lines, "this machine has no removed-but-configured packages");
    assert!(packages.iter().all(|p| p["change"] == "present" && p["manager"] == "dpkg" && p["host"] == "test-node"));
    assert!(packages.iter().any(|p| p["name"] == "dpkg" && p["arch"].is_string() && p["version"].is_string()));
    let hosts = rows_of(&first, "hosts");
    assert_eq!(hosts.len(), 1);
    assert!(hosts[0]["os"].as_str().unwrap().contains("Debian"), "{}", hosts[0]);
    assert_eq!(hosts[0]["reboot_required"], Path::new("/var/run/reboot-required").exists());
    assert_eq!(hosts[0]["collector_version"], env!("CARGO_PKG_VERSION"));
    let listeners = rows_of(&first, "listeners");
    let mine = listeners.iter().find(|l| l["port"] == i64::from(port)).unwrap();
    assert_eq!(
        (mine["proto"].as_str(), mine["addr"].as_str(), mine["change"].as_str()),
        (Some("tcp"), Some("127.0.0.1"), Some("present"))
    );
    assert_eq!(mine["pid"], i64::from(std::process::id()));
    assert!(rows_of(&first, "units").is_empty(), "no systemd PID 1 here: no unit rows");
    let saved: InventoryState = ctx.load_state(SOURCE).await.unwrap().unwrap();
    assert_eq!(saved.packages.as_ref().map(|p| p.len()), Some(installed));

    // Restart on the same spool: the saved snapshots hold, packages and hosts are not
    // shipped again; the closed listener is shipped as closed.
    drop(sock);
    // The first process is gone (its spool closed, which persists its last ack).
    drop(ctx);
    let ctx = context(dir.path()).await;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(InventorySource::new(c, ctx.clone()).run(cancel.clone()));
    let second =
        drain_until(&ctx, 30, |all| rows_of(all, "listeners").iter().any(|l| l["port"] == i64::from(port))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut second = second;
    second.extend(drain(&ctx).await);
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert!(rows_of(&second, "packages").is_empty(), "packages shipped again after a restart");
    assert!(rows_of(&second, "hosts").is_empty(), "hosts shipped again after a restart");
    let closed = rows_of(&second, "listeners").into_iter().find(|l| l["port"] == i64::from(port)).unwrap();
    assert_eq!(closed["change"], "closed");
    if !Path::new("/run/systemd/system").is_dir() {
        assert_eq!(ctx.stats.source(SOURCE).errors.load(Ordering::Relaxed), 1, "units absence said and counted once");
    }
}

#[test]
fn a_package_change_ships_one_row_and_the_new_state() {
    let mut p = Packages::new();
    p.insert("openssl:amd64".into(), "3.0.15-1~deb12u1".into());
    let state = InventoryState { packages: Some(p.clone()), ..Default::default() };
    p.insert("openssl:amd64".into(), "3.0.17-1~deb12u2".into());
    let s = step(&state, "n", 7, Reading::Packages(p.clone())).unwrap();
    let (table, batch) = s.batch.unwrap();
    assert_eq!(table, Table::Packages);
    let rows = lake_test_support::batch_to_json(&batch);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["change"], "upgraded");
    assert_eq!(rows[0]["previous_version"], "3.0.15-1~deb12u1");
    assert_eq!(rows[0]["arch"], "amd64");
    assert_eq!(s.state.packages, Some(p.clone()));
    let again = step(&s.state, "n", 8, Reading::Packages(p)).unwrap();
    assert!(again.batch.is_none() && again.state == s.state);
}

#[test]
fn config_section_defaults_and_unknown_keys() {
    let c = config();
    assert!(c.enabled);
    assert_eq!(
        (c.interval, c.units_interval, c.listeners_interval),
        (Duration::from_secs(3600), Duration::from_secs(30), Duration::from_secs(60))
    );
    assert!(Config::from_toml("[inventory]\nenable = false\n", Some("t")).is_err());
    assert!(Config::from_toml("[inventory]\nunits_interval = \"0s\"\n", Some("t")).is_err());
    assert!(!Config::from_toml("[inventory]\nenabled = false\n", Some("t")).unwrap().inventory.enabled);
}
