//! The built-in web UI in a real browser: a `lake serve` over a lake written by
//! `lake-gen`, driven in Debian's headless Chromium by playwright-core
//! (`tests/browser/ui.mjs`, no browser download).
//!
//! The script asks for the read token through the page's dialog, opens every view
//! (fleet, web, security, mesh, uptime, alerts) and checks each panel drew its data
//! (uPlot canvases with points, tables with rows, numbers), uses the Logs page (filters,
//! a hostile text filter, "Load older", a line's fields, the live tail showing a line sent
//! over OTLP once), walks the focus order with
//! Tab, changes the time range, a filter and auto-refresh, runs a query in the SQL console
//! and downloads it as CSV, loads two views at phone size, and fails on any console error,
//! page error, failed request, token in a URL or request to another origin.
//!
//! Screenshots of every view land in `<target dir>/ui-screenshots/` (with the CSV and
//! `result.txt`). Needs `/usr/bin/chromium` and `tests/browser/node_modules`
//! (`scripts/setup peers` installs both); fails, never skips, without them.

mod common;
#[path = "dashboards/support.rs"]
mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{repo_root, GeneratedLake};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The whole browser run, start to end, at most.
const DEADLINE: Duration = Duration::from_secs(300);

/// `<target dir>/ui-screenshots`, beside the `debug/` holding the lake binary.
fn screenshot_dir() -> PathBuf {
    let bin = common::lake_bin();
    bin.parent().and_then(|p| p.parent()).expect("target dir").join("ui-screenshots")
}

#[test]
fn web_ui_in_headless_chromium() {
    let dir = repo_root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "{}/node_modules/playwright-core missing: run `scripts/setup peers` (npm ci there)",
        dir.display()
    );
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} missing: run `scripts/setup peers` (apt-get install chromium)"
    );

    let lake = GeneratedLake::start();
    let out = screenshot_dir();
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();

    let mut child = Command::new("node")
        .arg("ui.mjs")
        .current_dir(&dir)
        .env("LAKE_URL", lake.url())
        .env("LAKE_TOKEN", common::READ_TOKEN)
        .env("LAKE_INGEST_TOKEN", common::TOKEN)
        .env("OUT_DIR", &out)
        .env("CHROMIUM", CHROMIUM)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running node (scripts/setup installs npm and node)");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = reader.join().unwrap();
    let errors = err_reader.join().unwrap();
    println!("{output}");
    if !errors.trim().is_empty() {
        println!("stderr:\n{errors}");
    }
    let status = status.unwrap_or_else(|| panic!("the browser test ran longer than {DEADLINE:?}"));
    assert!(status.success(), "the browser test failed ({status}); screenshots in {}", out.display());
    assert!(output.contains(" passed, 0 failed"), "no summary line");
    for view in [
        "fleet",
        "web",
        "security",
        "mesh",
        "uptime",
        "alerts",
        "containers",
        "logs",
        "logs-detail",
        "sql",
        "fleet-phone",
        "web-phone",
    ] {
        let png = out.join(format!("{view}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} missing or blank ({len} bytes)", png.display());
    }
    println!("screenshots in {}", out.display());
}
