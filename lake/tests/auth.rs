//! Bearer tokens against a real `lake serve` (issue 10, part 3): `lake token add/list/revoke`
//! change what a running lake accepts within its reload interval, two tokens of a node
//! are valid at once during a changeover, roles do not cross (a read token cannot ingest,
//! an ingest token cannot read), `token_sha256` in lake.toml works, and a tokens file with
//! a bad entry is refused naming the file and the key — at start, and on reload (the
//! tokens in force are kept).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Longest a change may take to reach the lake: the 2s poll plus slack for a busy machine.
const RELOAD_WITHIN: Duration = Duration::from_secs(6);

const NODE_B: &str = "node-b";
const TOKEN_B: &str = "node-b-token-from-lake-toml-0123";

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
}

impl Setup {
    /// lake.toml: node-a declared without a token (its tokens come from the tokens file),
    /// node-b with `token_sha256`, no read token (the tokens file has them).
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = LakeToml::new(dir.path(), port)
            .node_with(NODE, "")
            .node_with(NODE_B, &format!("token_sha256 = \"{}\"", sha256_hex(TOKEN_B)))
            .flush("1s")
            .write();
        Setup { dir, config, port }
    }

    fn tokens_file(&self) -> PathBuf {
        self.dir.path().join("data").join("tokens.toml")
    }

    /// `lake token <args> --config lake.toml`: (exit code, stdout, stderr).
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(lake_bin()).arg("token").args(args).arg("--config").arg(&self.config).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Adds a token; returns (token, id).
    fn add(&self, args: &[&str]) -> (String, String) {
        let mut all = vec!["add"];
        all.extend_from_slice(args);
        let (code, out, err) = self.cli(&all);
        assert_eq!(code, 0, "{err}");
        let token = out.trim().to_string();
        let id = err.split("added ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
        (token, id)
    }

    fn start(&self) -> Lake {
        Lake::start(&self.config, self.port)
    }
}

fn sha256_hex(s: &str) -> String {
    lake::auth::TokenHash::of(s).to_hex()
}

/// Waits until `f` is true, at most [`RELOAD_WITHIN`]; returns how long it took.
async fn within<F, Fut>(what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < RELOAD_WITHIN {
        if f().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {RELOAD_WITHIN:?}");
}

async fn read_status(c: &reqwest::Client, url: &str, path: &str, token: &str) -> u16 {
    let body = if path == "/v1/sql" { "{\"sql\": \"select 1\"}" } else { "{}" };
    c.post(format!("{url}{path}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn metric(c: &reqwest::Client, url: &str, name: &str) -> u64 {
    let text = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_change_without_a_restart_and_roles_do_not_cross() {
    let s = Setup::new();
    let (read, read_id) = s.add(&["--role", "read", "--comment", "grafana"]);
    assert!(read.starts_with("lake_r_") && read.len() == 50, "{read}");
    let lake = s.start();
    let (url, c) = (lake.url.clone(), reqwest::Client::new());

    // The tokens file holds hashes only, mode 600.
    let text = std::fs::read_to_string(s.tokens_file()).unwrap();
    assert!(!text.contains(&read) && text.contains(&sha256_hex(&read)), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(s.tokens_file()).unwrap().permissions().mode() & 0o777, 0o600);

    // Reads need the read token: SQL and Grafana alike.
    assert_eq!(read_status(&c, &url, "/v1/sql", &read).await, 200);
    assert_eq!(read_status(&c, &url, "/grafana/metrics", &read).await, 200);
    assert_eq!(read_status(&c, &url, "/v1/sql", "lake_r_wrong").await, 401);

    // node-a has no token yet; one added while the lake runs works without a restart.
    let (old, old_id) = s.add(&["--role", "ingest", "--node", NODE, "--comment", "first"]);
    assert!(old.starts_with("lake_i_"), "{old}");
    let mut seq = 0u64;
    let took = within("the added ingest token accepted", || {
        seq += 1;
        let (c, url, old, id) = (c.clone(), url.clone(), old.clone(), format!("{NODE}/1/{seq}"));
        async move { post(&c, &url, "metrics", &old, &id, encode(&metrics_batch(1, 1))).await.0 == 200 }
    })
    .await;
    println!("a new token was accepted after {took:?}");

    // Changeover: a second token for node-a; both are valid at once.
    let (new, _new_id) = s.add(&["--role", "ingest", "--node", NODE, "--comment", "rotation"]);
    within("the second ingest token accepted", || {
        let (c, url, new) = (c.clone(), url.clone(), new.clone());
        async move { post(&c, &url, "metrics", &new, "node-a/2/1", encode(&metrics_batch(2, 1))).await.0 == 200 }
    })
    .await;
    let (st, b) = post(&c, &url, "metrics", &old, "node-a/2/2", encode(&metrics_batch(2, 1))).await;
    assert_eq!(st, 200, "the old token still works during the changeover: {b}");

    // `list` shows ids, roles, nodes and comments, never a token or a hash.
    let (code, list, err) = s.cli(&["list"]);
    assert_eq!(code, 0, "{err}");
    for want in [read_id.as_str(), old_id.as_str(), "ingest", "read", NODE, "grafana", "rotation"] {
        assert!(list.contains(want), "{want} missing from:\n{list}");
    }
    for secret in [&read, &old, &new] {
        assert!(!list.contains(secret.as_str()) && !list.contains(&sha256_hex(secret)[..16]), "{list}");
    }

    // Revoked: refused within the reload interval; the new token goes on.
    let (code, _, err) = s.cli(&["revoke", &old_id]);
    assert_eq!(code, 0, "{err}");
    let mut seq = 0u64;
    let took = within("the revoked token refused", || {
        seq += 1;
        let (c, url, old, id) = (c.clone(), url.clone(), old.clone(), format!("{NODE}/3/{seq}"));
        async move { post(&c, &url, "metrics", &old, &id, encode(&metrics_batch(3, 1))).await.0 == 401 }
    })
    .await;
    println!("a revoked token was refused after {took:?}");
    let (st, b) = post(&c, &url, "metrics", &new, "node-a/4/1", encode(&metrics_batch(4, 1))).await;
    assert_eq!(st, 200, "{b}");
    let (code, _, err) = s.cli(&["revoke", &old_id]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("no token with id {old_id:?}")), "{err}");

    // Roles do not cross: a read token cannot ingest, an ingest token cannot read.
    let (st, b) = post(&c, &url, "metrics", &read, "node-a/5/1", encode(&metrics_batch(5, 1))).await;
    assert_eq!(st, 401, "{b}");
    assert_eq!(read_status(&c, &url, "/v1/sql", &new).await, 401);
    assert_eq!(read_status(&c, &url, "/grafana/query", &new).await, 401);
    // An ingest token identifies its node: node-b's (a hash in lake.toml) works for node-b
    // only (and for rows of host node-b), and node-a's cannot send node-b's batches.
    let mut own = lake_format::rows::MetricsBuilder::new();
    own.push(lake_format::rows::now_micros(), "node-b", "seq", 1.0, &[]);
    let (st, b) = post(&c, &url, "metrics", TOKEN_B, "node-b/1/1", encode(&own.finish())).await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = post(&c, &url, "metrics", TOKEN_B, "node-b/1/9", encode(&metrics_batch(6, 1))).await;
    assert_eq!(st, 400, "node-b's token cannot write node-a's rows: {b}");
    let (st, b) = post(&c, &url, "metrics", &new, "node-b/1/2", encode(&metrics_batch(6, 1))).await;
    assert_eq!(st, 403, "{b}");
    assert!(b.contains("belongs to \\\"node-a\\\""), "{b}");

    // Revoking the last read token would open the read APIs after a restart: refused.
    let (code, _, err) = s.cli(&["revoke", &read_id]);
    assert_eq!(code, 2);
    assert!(err.contains("last read token") && err.contains("--allow-open"), "{err}");
    // Forced, the running lake locks reads rather than opening them.
    let (code, _, err) = s.cli(&["revoke", &read_id, "--allow-open"]);
    assert_eq!(code, 0, "{err}");
    within("the last read token refused", || {
        let (c, url, read) = (c.clone(), url.clone(), read.clone());
        async move { read_status(&c, &url, "/v1/sql", &read).await == 401 }
    })
    .await;
    let r = c.post(format!("{url}/v1/sql")).body("select 1").send().await.unwrap();
    assert_eq!(r.status(), 401, "no read token left: closed, not open");
    assert!(metric(&c, &url, "lake_auth_reloads_total").await >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tokens_file_is_refused_naming_the_file_and_key() {
    let s = Setup::new();
    let (read, _) = s.add(&["--role", "read"]);
    let good = std::fs::read_to_string(s.tokens_file()).unwrap();
    let bad = good.replace(&sha256_hex(&read), "not-a-sha256");
    let file = s.tokens_file();
    let named = |e: &str| {
        e.contains(&file.display().to_string())
            && e.contains("tokens[0] (id ")
            && e.contains(").sha256 = \"not-a-sha256\": not a SHA-256 digest")
    };

    // At start: `lake check-config` and `lake serve` refuse it.
    std::fs::write(&file, &bad).unwrap();
    let out = Command::new(lake_bin()).args(["check-config", "--config"]).arg(&s.config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(named(&err), "{err}");
    let out = Command::new(lake_bin())
        .args(["serve", "--config"])
        .arg(&s.config)
        .env("LOG_FILTER", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && named(&err), "{err}");
    let (code, _, err) = s.cli(&["add", "--role", "read"]);
    assert!(code == 2 && named(&err), "the CLI does not build on a broken file: {err}");

    // While running: a broken file is refused, counted, and the tokens in force are kept.
    std::fs::write(&file, &good).unwrap();
    let lake = s.start();
    let (url, c) = (lake.url.clone(), reqwest::Client::new());
    assert_eq!(read_status(&c, &url, "/v1/sql", &read).await, 200);
    std::fs::write(&file, &bad).unwrap();
    within("the reload error counted", || {
        let (c, url) = (c.clone(), url.clone());
        async move { metric(&c, &url, "lake_auth_reload_errors_total").await == 1 }
    })
    .await;
    assert_eq!(read_status(&c, &url, "/v1/sql", &read).await, 200, "the tokens in force are kept");

    // SIGHUP re-reads the file at once, even unchanged.
    std::fs::write(&file, &good).unwrap();
    within("the fixed file reloaded", || {
        let (c, url) = (c.clone(), url.clone());
        async move { metric(&c, &url, "lake_auth_reloads_total").await == 1 }
    })
    .await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(lake.child.id() as i32, libc::SIGHUP) };
    let took = within("SIGHUP reloads", || {
        let (c, url) = (c.clone(), url.clone());
        async move { metric(&c, &url, "lake_auth_reloads_total").await == 2 }
    })
    .await;
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(read_status(&c, &url, "/v1/sql", &read).await, 200);
}
