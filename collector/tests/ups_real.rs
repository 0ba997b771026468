//! The `[[ups]]` source against Debian's real NUT: `upsd` (nut-server) serving a UPS of the
//! `dummy-ups` driver, which re-reads a `.dev` file the test rewrites — the UPS goes on
//! battery, to low battery, back on line; then the driver and upsd are stopped. Every
//! step is read back from the spool as the rows the source wrote: the numbers, the status
//! flags, the status-change rows, `nut_up`. A hostile upsd (an endless line, silence) is
//! a small listener here: the real one cannot be made to misbehave.
//!
//! Needs `/lib/nut/upsd` and `/lib/nut/dummy-ups` (`scripts/setup peers` installs
//! nut-server); fails (never skips) without them. Runs them as root (`-u root`), as the
//! tests run here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lake_collector::config::Config;
use lake_collector::sources::ups::UpsSource;
use lake_collector::sources::SourceContext;
use lake_collector::spool::{SpoolHandle, SpoolOptions};
use lake_collector::stats::Stats;
use lake_test_support::{free_port, KillOnDrop};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const UPSD: &str = "/lib/nut/upsd";
const DRIVER: &str = "/lib/nut/dummy-ups";
const OPTS: SpoolOptions = SpoolOptions { max_size: 256 << 20, segment_size: 8 << 20 };

const ONLINE: &str = "battery.charge: 100\nbattery.runtime: 3600\nups.load: 23\ninput.voltage: 231.5\n\
                      ups.status: OL\ndevice.mfr: Dummy\nups.model: Test \"quoted\" UPS\n";

/// A NUT server with one UPS, `home`, in `dir`.
struct Nut {
    dir: PathBuf,
    port: u16,
    driver: Option<KillOnDrop>,
    upsd: Option<KillOnDrop>,
}

impl Nut {
    fn start(dir: &Path) -> Nut {
        for bin in [UPSD, DRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run `scripts/setup peers` (apt-get install nut-server)"
            );
        }
        let port = free_port();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let w = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        w(
            "ups.conf",
            format!("[home]\ndriver = dummy-ups\nport = {}\ndesc = \"lake test\"\n", dir.join("home.dev").display()),
        );
        w("upsd.conf", format!("LISTEN 127.0.0.1 {port}\n"));
        w("upsd.users", String::new());
        w("nut.conf", "MODE=standalone\n".into());
        w("home.dev", ONLINE.into());
        let mut nut = Nut { dir: dir.to_path_buf(), port, driver: None, upsd: None };
        nut.driver = Some(nut.spawn(DRIVER, &["-a", "home", "-u", "root", "-F"]));
        // upsd refuses to start before the driver's socket exists.
        for _ in 0..100 {
            if std::fs::read_dir(dir.join("state"))
                .unwrap()
                .any(|e| e.unwrap().file_name().to_string_lossy().starts_with("dummy-ups"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        nut.upsd = Some(nut.spawn(UPSD, &["-u", "root", "-F"]));
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return nut;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("upsd did not listen on {port}");
    }

    fn spawn(&self, bin: &str, args: &[&str]) -> KillOnDrop {
        let state = self.dir.join("state");
        let child = Command::new(bin)
            .args(args)
            .env("NUT_CONFPATH", &self.dir)
            .env("NUT_STATEPATH", &state)
            .env("NUT_ALTPIDPATH", &state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        KillOnDrop(child)
    }

    /// Rewrites the driver's `.dev` file (it re-reads it when it changes).
    fn set(&self, text: &str) {
        let tmp = self.dir.join("home.dev.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, self.dir.join("home.dev")).unwrap();
    }
}

/// Every spooled row (with its table), acknowledged.
async fn drain(spool: &SpoolHandle) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some(rec) = spool.peek().await.unwrap() {
        let (_, batches) = lake_format::wire::decode(&rec.body).unwrap();
        out.extend(batches.iter().flat_map(|b| lake_test_support::table_rows(&rec.table, b)));
        spool.ack(rec.seq).await.unwrap();
    }
    out
}

struct Running {
    spool: SpoolHandle,
    stats: Arc<Stats>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), lake_collector::sources::SourceError>>,
    rows: Vec<Value>,
}

impl Running {
    async fn start(dir: &Path, server: &str) -> Running {
        let toml =
            format!("[[ups]]\nname = \"home\"\nserver = \"{server}\"\ninterval = \"500ms\"\ntimeout = \"500ms\"\n");
        let config = Config::from_toml(&toml, Some("t")).unwrap().ups.remove(0);
        let stats = Arc::new(Stats::default());
        let spool = SpoolHandle::open(dir.join("spool"), OPTS, Arc::clone(&stats)).await.unwrap();
        let ctx = SourceContext { node: Arc::from("pi"), spool: spool.clone(), stats: Arc::clone(&stats) };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(UpsSource::new(config, ctx).run(cancel.clone()));
        Running { spool, stats, cancel, task, rows: Vec::new() }
    }

    /// Waits until a new row matches `want` (rows seen before are kept in `self.rows`).
    async fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..400 {
            let new = drain(&self.spool).await;
            let hit = new.iter().find(|r| want(r)).cloned();
            self.rows.extend(new);
            if let Some(r) = hit {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}; rows: {:#?}", &self.rows[self.rows.len().saturating_sub(40)..]);
    }

    async fn stop(self) -> Arc<Stats> {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
        self.stats
    }
}

fn metric<'a>(name: &'a str, flag: Option<&'a str>, value: f64) -> impl Fn(&Value) -> bool + 'a {
    move |r: &Value| {
        r["table"] == "metrics"
            && r["name"] == name
            && r["value"] == value
            && flag.is_none_or(|f| r["labels"]["flag"] == f)
    }
}

fn status_row(priority: i64) -> impl Fn(&Value) -> bool {
    move |r: &Value| r["table"] == "logs" && r["source"] == "ups" && r["ident"] == "upsd" && r["priority"] == priority
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_upsd_on_battery_low_battery_back_and_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut nut = Nut::start(&dir.path().join("nut"));
    let mut s = Running::start(dir.path(), &format!("127.0.0.1:{}", nut.port)).await;

    // On line: the numbers, the flags, up.
    // (upsd may answer before the driver has read its file: status WAIT, no battery.)
    s.until("the battery's charge", metric("nut_battery_charge", None, 100.0)).await;
    assert!(s.rows.iter().any(metric("nut_up", None, 1.0)));
    let value = |rows: &[Value], name: &str| -> f64 {
        rows.iter().rev().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no {name}"))["value"].as_f64().unwrap()
    };
    assert_eq!(value(&s.rows, "nut_battery_charge"), 100.0);
    assert_eq!(value(&s.rows, "nut_battery_runtime"), 3600.0);
    assert_eq!(value(&s.rows, "nut_input_voltage"), 231.5);
    assert_eq!(value(&s.rows, "nut_ups_load"), 23.0);
    let ol = s.rows.iter().rev().find(|r| r["name"] == "nut_ups_status" && r["labels"]["flag"] == "OL").unwrap();
    assert_eq!(
        (ol["value"].as_f64(), ol["host"].as_str(), ol["labels"]["ups"].as_str()),
        (Some(1.0), Some("pi"), Some("home"))
    );
    assert!(s.rows.iter().all(|r| r["table"] != "logs"), "no row for an on-line UPS at start: {:#?}", s.rows);

    // The power goes: on battery.
    nut.set(&ONLINE.replace("ups.status: OL", "ups.status: OB DISCHRG").replace("charge: 100", "charge: 83"));
    let row = s.until("the on-battery row", status_row(4)).await;
    assert_eq!(row["message"], "UPS home on battery: OB DISCHRG (was OL)");
    assert_eq!(row["unit"], "home");
    assert_eq!(row["attrs"]["battery_charge"], "83");
    s.until("OB = 1", metric("nut_ups_status", Some("OB"), 1.0)).await;

    // Low battery, then the power is back.
    nut.set(&ONLINE.replace("ups.status: OL", "ups.status: OB DISCHRG LB").replace("charge: 100", "charge: 9"));
    let row = s.until("the low-battery row", status_row(2)).await;
    assert_eq!(row["message"], "UPS home low battery: OB DISCHRG LB (was OB DISCHRG)");
    nut.set(&ONLINE.replace("ups.status: OL", "ups.status: OL CHRG").replace("charge: 100", "charge: 12"));
    let row = s.until("the back-on-line row", status_row(5)).await;
    assert_eq!(row["message"], "UPS home back on line power: OL CHRG (was OB DISCHRG LB)");

    // The driver stops: upsd answers an error; upsd stops: nobody answers. nut_up = 0
    // each time, with a note saying why.
    nut.driver.take();
    let note = s
        .until("a note about the driver", |r| r["table"] == "logs" && r["source"] == "ups" && r["priority"] == 3)
        .await;
    let message = note["message"].as_str().unwrap();
    assert!(message.starts_with("UPS home at 127.0.0.1:"), "{message}");
    assert!(message.contains("ERR DRIVER-NOT-CONNECTED") || message.contains("ERR DATA-STALE"), "{message}");
    s.until("nut_up = 0", metric("nut_up", None, 0.0)).await;
    nut.upsd.take();
    s.until("a note about upsd gone", |r| {
        r["table"] == "logs" && r["priority"] == 3 && r["message"].as_str().is_some_and(|m| m.contains("connect"))
    })
    .await;
    let stats = s.stop().await;
    assert!(stats.source("ups/home").errors.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_upsd_costs_a_failed_poll_not_the_collector() {
    // Not NUT: a listener that answers `LIST VAR` with an endless line, then one that
    // never answers. Each poll fails within its timeout, bounded in memory.
    let dir = tempfile::tempdir().unwrap();
    let endless = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = endless.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = endless.accept().await {
            tokio::spawn(async move {
                let chunk = vec![b'x'; 64 << 10];
                while sock.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let mut s = Running::start(dir.path(), &addr.to_string()).await;
    let note = s.until("a note about the endless line", |r| r["table"] == "logs" && r["priority"] == 3).await;
    assert!(note["message"].as_str().unwrap().contains("a line longer than 8192 bytes"), "{note}");
    s.stop().await;

    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = silent.accept().await {
            held.push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut s = Running::start(dir.path(), &addr.to_string()).await;
    let note = s.until("a note about silence", |r| r["table"] == "logs" && r["priority"] == 3).await;
    assert!(note["message"].as_str().unwrap().contains("no answer from upsd within 500ms"), "{note}");
    s.until("nut_up = 0", metric("nut_up", None, 0.0)).await;
    s.stop().await;
}
