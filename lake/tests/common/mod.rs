//! Helpers for the lake's end-to-end tests: a real `lake serve` process on a free
//! loopback port over a temporary data directory, and an HTTP client for it.
#![allow(dead_code, unreachable_pub, unused_imports)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use lake_format::rows::MetricsBuilder;
use lake_format::{wire, Table};
pub use lake_test_support::{free_port, LakeToml};

pub const NODE: &str = "node-a";
pub const TOKEN: &str = "ingest-token-node-a-0123456789";
pub const READ_TOKEN: &str = "read-token-0123456789abcdef";

pub fn lake_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lake"))
}

/// The collector binary, built by `cargo test --workspace` beside `lake`.
pub fn collector_bin() -> PathBuf {
    let p = lake_bin().with_file_name("lake-collector");
    assert!(p.exists(), "{} missing: run `cargo build --bin lake-collector` (make test does)", p.display());
    p
}

/// The lake.toml most tests start from: `NODE` ingesting with `TOKEN`, `READ_TOKEN` reading;
/// a test adds its own `[ingest]`, `[query]` lines and sections.
pub fn lake_toml(dir: &Path, port: u16) -> LakeToml {
    LakeToml::new(dir, port).node(NODE, TOKEN).read_tokens(&[READ_TOKEN])
}

/// [`lake_toml`] flushing every `flush`, written to `<dir>/lake.toml`.
pub fn write_config(dir: &Path, port: u16, flush: &str) -> PathBuf {
    lake_toml(dir, port).flush(flush).write()
}

/// A `lake serve` child process.
pub struct Lake {
    pub child: Child,
    pub url: String,
    pub config: PathBuf,
}

impl Lake {
    pub fn start(config: &Path, port: u16) -> Lake {
        Lake::start_at(config, &format!("http://127.0.0.1:{port}"))
    }

    /// Starts a lake whose config listens at `url`'s address.
    pub fn start_at(config: &Path, url: &str) -> Lake {
        let lake = Lake::spawn(config, url);
        lake.wait_healthy();
        lake
    }

    /// Spawns `lake serve` (logging warnings) without waiting for it to answer: for a test
    /// that expects an unhealthy lake.
    pub fn spawn(config: &Path, url: &str) -> Lake {
        let child = Command::new(lake_bin())
            .args(["serve", "--config"])
            .arg(config)
            .env("LOG_FILTER", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Lake { child, url: url.to_string(), config: config.to_path_buf() }
    }

    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = blocking_get(&format!("{}/health", self.url)) {
                if r.0 == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("lake did not become healthy at {}", self.url);
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub fn term(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
    }
}

impl Drop for Lake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET with std only: usable inside or outside a tokio runtime.
fn blocking_get(url: &str) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("not http")?;
    let (addr, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or("no status line")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

/// `n` samples named `seq_<batch>` whose values are 0..n, one ts each.
pub fn metrics_batch(batch: u64, n: usize) -> RecordBatch {
    let mut b = MetricsBuilder::new();
    let base = 1_795_374_070_000_000 + batch as i64 * 1_000_000;
    for i in 0..n {
        b.push(base + i as i64, NODE, "seq", i as f64, &[("batch", &batch.to_string())]);
    }
    b.finish()
}

pub fn encode(batch: &RecordBatch) -> Vec<u8> {
    wire::encode(&Table::Metrics.schema(), std::slice::from_ref(batch)).unwrap()
}

pub async fn post(
    client: &reqwest::Client,
    url: &str,
    table: &str,
    token: &str,
    id: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let r = client
        .post(format!("{url}/v1/ingest/{table}"))
        .bearer_auth(token)
        .header(wire::BATCH_HEADER, id)
        .header("content-type", wire::CONTENT_TYPE)
        .body(body)
        .send()
        .await;
    match r {
        Ok(r) => {
            let s = r.status().as_u16();
            (s, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Runs SQL through the HTTP API and returns the JSON rows.
pub async fn sql(client: &reqwest::Client, url: &str, sql: &str) -> serde_json::Value {
    let (status, v) = try_sql(client, url, sql).await;
    assert!((200..300).contains(&status), "{sql}: {status} {v}");
    v["rows"].clone()
}

/// Status and JSON answer of `/v1/sql` (`null` when not JSON), without asserting success.
pub async fn try_sql(client: &reqwest::Client, url: &str, sql: &str) -> (u16, serde_json::Value) {
    let r = client
        .post(format!("{url}/v1/sql"))
        .bearer_auth(READ_TOKEN)
        .json(&serde_json::json!({"sql": sql, "format": "json"}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// POSTs `body` to a custom table's ingest (`kind` `json`, `csv`, …) as `NODE`: status and
/// JSON answer (`null` when the answer is not JSON).
pub async fn send_custom(
    client: &reqwest::Client,
    url: &str,
    kind: &str,
    table: &str,
    id: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let r = client
        .post(format!("{url}/v1/ingest/{kind}/{table}"))
        .bearer_auth(TOKEN)
        .header(wire::BATCH_HEADER, id)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

pub async fn count(client: &reqwest::Client, url: &str, sql_text: &str) -> i64 {
    sql(client, url, sql_text).await[0][0].as_i64().unwrap()
}

/// The collector binary running `config`, logging warnings.
pub fn start_collector(config: &Path) -> Child {
    Command::new(collector_bin())
        .arg("--config")
        .arg(config)
        .env("LOG_FILTER", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Polls the count `q` until it reaches `want` (30 s at most); the last count.
pub async fn wait_for(c: &reqwest::Client, url: &str, q: &str, want: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(c, url, q).await;
        if n >= want || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a Python peer of these tests (`script`, a path under `lake/tests/`) with `args`,
/// writing `stdin` to it, and returns the one JSON line it prints. The scripts exit 3 when
/// their library is missing: `packages` names them for the message, which says how
/// `scripts/setup peers` installs them into the peers' virtual environment (first on PATH
/// under `make test`).
pub async fn python_peer(script: &str, args: &[&str], stdin: &str, packages: &str) -> serde_json::Value {
    use std::io::Write as _;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(script);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let input = stdin.to_string();
    let install = format!(
        "`scripts/setup peers` ({packages} into ~/.cache/lake/peers-venv), then put its bin/ first on PATH as \
         `make test` does: `PATH=~/.cache/lake/peers-venv/bin:$PATH cargo test`"
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .arg(&path)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child.stdin.take().expect("stdin").write_all(input.as_bytes())?;
        child.wait_with_output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3, then {install}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!("{packages} missing: run {install}\n{stderr}"),
        _ => panic!("{script} failed ({}):\nstdout: {stdout}\nstderr: {stderr}", out.status),
    }
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
}

/// How the SMTP test server's peers are installed.
pub const SMTP_SETUP: &str = "run `scripts/setup peers` (aiosmtpd into ~/.cache/lake/peers-venv, openssl) and put the venv's bin/ first on PATH, as `make test` does";

/// An aiosmtpd server (`tests/alerts/smtpd.py`) on a loopback port writing what it
/// accepts to a directory: `mode` plain, starttls or tls; `tls` its certificate and key
/// (with AUTH as lake / s3cret-smtp-password).
pub struct Smtpd {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Smtpd {
    pub fn start(root: &Path, name: &str, mode: &str, tls: Option<(&Path, &Path)>) -> Smtpd {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/alerts/smtpd.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(port.to_string()).arg(&dir).arg(mode);
        if let Some((cert, key)) = tls {
            cmd.args(["lake", "s3cret-smtp-password"]).arg(cert).arg(key);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {SMTP_SETUP}"));
        // "ready" on stdout once listening; exit 3 when aiosmtpd is missing.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        if line.trim() != "ready" {
            let status = child.wait().unwrap();
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("smtpd.py did not start ({status}): {err}\n{SMTP_SETUP}");
        }
        Smtpd { child, port, dir }
    }

    /// The messages received so far, oldest first: (decoded record, raw message).
    pub fn messages(&self) -> Vec<(serde_json::Value, String)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                (v, std::fs::read_to_string(p.with_extension("eml")).unwrap())
            })
            .collect()
    }
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
