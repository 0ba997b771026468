//! Tests of the Tailscale source: the parsers against `fixtures/tailscale/`, and the
//! source against a stand-in `tailscale` script.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::sources::probe::testing;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tailscale")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

fn config(path: &Path) -> TailscaleConfig {
    TailscaleFile {
        enabled: true,
        tailscale_path: path.to_path_buf(),
        interval: Dur(Duration::from_secs(60)),
        timeout: Dur(Duration::from_secs(1)),
        concurrency: 3,
        peers: None,
    }
    .validate()
    .unwrap()
}

#[test]
fn status_fixture_gives_the_expected_peers() {
    let peers = parse_status(read("status.json").as_bytes()).unwrap();
    let want: Vec<Peer> = serde_json::from_str(&read("status.expected.json")).unwrap();
    assert_eq!(peers, want);
}

#[test]
fn ping_fixtures_give_the_expected_results() {
    for case in ["direct", "derp", "timeout", "no-reply", "garbage"] {
        let mut output = read(&format!("ping-{case}.stdout"));
        if let Ok(stderr) = std::fs::read_to_string(fixtures().join(format!("ping-{case}.stderr"))) {
            output.push_str(&stderr);
        }
        let exit_ok = read(&format!("ping-{case}.exit")).trim() == "0";
        let want: PingResult = serde_json::from_str(&read(&format!("ping-{case}.expected.json"))).unwrap();
        assert_eq!(parse_ping(&output, exit_ok), want, "ping-{case}");
    }
}

#[test]
fn ping_parsing_edge_cases() {
    let r = parse_ping("pong from a (100.64.0.1) via 10.0.0.2:41641 in 850µs\n", true);
    assert_eq!((r.ok, r.latency_ms, r.direct), (true, Some(0.85), Some(true)));
    let r = parse_ping("pong from a (100.64.0.1) via DERP(nyc) in 1.25s\n", false);
    assert_eq!((r.ok, r.latency_ms, r.path.as_deref()), (true, Some(1250.0), Some("DERP(nyc)")));
    let r = parse_ping("pong from a (100.64.0.1) via DERP(nyc) in soon\n", true);
    assert!(!r.ok);
    assert_eq!(parse_ping("", false).error.as_deref(), Some("tailscale ping failed without output"));
    let long = "x".repeat(1000);
    assert!(parse_ping(&long, false).error.unwrap().chars().count() <= MAX_ERROR_LEN + 1);
    assert_eq!(parse_go_duration_ms("1m2s"), Some(62_000.0));
    assert_eq!(parse_go_duration_ms("0s"), Some(0.0));
    assert_eq!(parse_go_duration_ms("12"), None);
}

#[test]
fn a_stopped_backend_or_bad_json_is_an_error() {
    let err = parse_status(br#"{"BackendState":"NeedsLogin","Peer":null}"#).unwrap_err();
    assert!(err.to_string().contains("NeedsLogin"), "{err}");
    assert!(parse_status(b"not json").is_err());
    // No peers at all is fine: nothing to probe.
    assert_eq!(parse_status(br#"{"BackendState":"Running","Peer":null}"#).unwrap(), vec![]);
}

#[test]
fn explicit_peers_match_by_name_dns_or_ip() {
    let peers = parse_status(read("status.json").as_bytes()).unwrap();
    let laptop = peers.iter().find(|p| p.host_name == "laptop").unwrap();
    for name in ["laptop", "ops-laptop", "ops-laptop.tail1234.ts.net.", "100.101.102.110"] {
        assert!(laptop.matches(name), "{name}");
    }
    assert!(!laptop.matches("100.101.102.11"));
    assert_eq!(laptop.ping_target(), "100.101.102.110");
}

#[test]
fn config_validation_names_the_field() {
    let base = || TailscaleFile::default();
    let err = |f: TailscaleFile| format!("{:#}", f.validate().unwrap_err());
    assert!(err(TailscaleFile { concurrency: 0, ..base() }).contains("tailscale.concurrency"));
    assert!(err(TailscaleFile { timeout: Dur(Duration::from_secs(90)), ..base() }).contains("tailscale.timeout"));
    assert!(err(TailscaleFile { peers: Some(vec!["a".into(), " ".into()]), ..base() }).contains("tailscale.peers[1]"));
    let c = base().validate().unwrap();
    assert!(!c.enabled);
    assert_eq!(c.tailscale_path, PathBuf::from("tailscale"));
    assert_eq!((c.interval, c.timeout, c.concurrency), (Duration::from_secs(60), Duration::from_secs(5), 4));
}

/// Writes a stand-in `tailscale` CLI. No real tailscale can run here (it is not in
/// Debian's archive and the machine has no network to a tailnet), so this script replays
/// the captured-shape outputs of `fixtures/tailscale/`: `status --json` prints
/// `status.json`; `ping` answers per peer IP with a fixture (direct, DERP with exit 1,
/// timeout, no reply, garbage) or, for par-slow, hangs past the timeout.
fn fake_tailscale(dir: &Path) -> PathBuf {
    let fx = fixtures();
    let fx = fx.display();
    let case = |ip: &str, name: &str| {
        let stderr = if name == "derp" { format!("cat {fx}/ping-derp.stderr >&2; ") } else { String::new() };
        format!("    {ip}) cat {fx}/ping-{name}.stdout; {stderr}exit $(cat {fx}/ping-{name}.exit) ;;\n")
    };
    let mut script = format!(
        "#!/bin/sh\n\
         # stand-in for the tailscale CLI (see the test's doc comment)\n\
         if [ \"$1\" = status ]; then cat {fx}/status.json; exit 0; fi\n\
         if [ \"$1\" != ping ] || [ \"$2 $3 $4\" != \"--c 1 --timeout\" ]; then echo \"bad args: $*\" >&2; exit 2; fi\n\
         for last; do :; done\n\
         case \"$last\" in\n"
    );
    script.push_str(&case("100.101.102.103", "direct"));
    script.push_str(&case("100.101.102.104", "derp"));
    script.push_str(&case("100.101.102.105", "timeout"));
    script.push_str(&case("100.101.102.106", "no-reply"));
    script.push_str(&case("100.101.102.107", "garbage"));
    script.push_str("    100.101.102.108) exec sleep 30 ;;\n");
    script.push_str("    *) echo \"unexpected peer $last\" >&2; exit 3 ;;\nesac\n");
    let path = dir.join("tailscale");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn without_ts(mut rows: Vec<ProbeRow>) -> Vec<ProbeRow> {
    for r in &mut rows {
        assert!(r.ts > 0);
        r.ts = 0;
    }
    rows
}

#[tokio::test]
async fn the_source_produces_the_expected_rows_from_the_fake_cli() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = testing::context(dir.path()).await;
    let bin = fake_tailscale(dir.path());
    let mut source = TailscaleSource::new(config(&bin), ctx.clone());
    let started = std::time::Instant::now();
    assert_eq!(source.tick().await.unwrap(), 7);
    // The hung ping is killed at timeout + grace, not awaited for its 30s.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let rows = without_ts(testing::drain(&ctx).await);
    let want: Vec<ProbeRow> = serde_json::from_str(&read("expected-rows.json")).unwrap();
    assert_eq!(rows, want);
    let stats = ctx.source_stats(SOURCE);
    assert_eq!(stats.read.load(std::sync::atomic::Ordering::Relaxed), 7);
    assert_eq!(stats.rows.load(std::sync::atomic::Ordering::Relaxed), 7);
    assert_eq!(stats.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test]
async fn explicit_peers_include_unknown_ones_as_failures() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = testing::context(dir.path()).await;
    let bin = fake_tailscale(dir.path());
    let mut cfg = config(&bin);
    cfg.peers = Some(vec!["gone-host".into(), "ams-web.tail1234.ts.net".into()]);
    let mut source = TailscaleSource::new(cfg, ctx.clone());
    assert_eq!(source.tick().await.unwrap(), 2);
    let rows = testing::drain(&ctx).await;
    assert_eq!(rows[0].target, "gone-host");
    assert_eq!(rows[0].error.as_deref(), Some("peer not in tailscale status"));
    assert_eq!((rows[1].target.as_str(), rows[1].ok), ("ams-web", true));
}

#[tokio::test]
async fn a_missing_binary_idles_counts_once_and_recovers_when_installed() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = testing::context(dir.path()).await;
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let mut source = TailscaleSource::new(config(&bin_dir.join("tailscale")), ctx.clone());
    let errors = || ctx.source_stats(SOURCE).errors.load(std::sync::atomic::Ordering::Relaxed);
    for _ in 0..3 {
        assert_eq!(source.tick().await.unwrap(), 0);
    }
    assert_eq!(errors(), 1, "one error per change of state, not per tick");
    assert_eq!(source.state, Availability::Down("tailscale binary not found".into()));
    assert!(testing::drain(&ctx).await.is_empty());

    // Installing tailscale later is picked up at the next tick, without a restart.
    fake_tailscale(&bin_dir);
    assert_eq!(source.tick().await.unwrap(), 7);
    assert_eq!(source.state, Availability::Up);
    assert_eq!(errors(), 1);
}

#[tokio::test]
async fn the_run_loop_keeps_going_without_tailscale_and_stops_on_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = testing::context(dir.path()).await;
    let mut cfg = config(Path::new("/nonexistent/tailscale"));
    cfg.interval = Duration::from_millis(20);
    cfg.timeout = Duration::from_millis(10);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(TailscaleSource::new(cfg, ctx.clone()).run(cancel.clone()));
    // Wait for the first (and only) counted error, then a few more intervals.
    let errors = || ctx.source_stats(SOURCE).errors.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(5), async {
        while errors() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "the source must stay up, idle");
    assert_eq!(errors(), 1);
    cancel.cancel();
    task.await.unwrap().unwrap();
}
