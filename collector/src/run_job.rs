//! `lake-collector run-job NAME -- cmd args…`: runs a command as one run of a job the
//! lake watches (`[[jobs]]` in lake.toml, `/v1/jobs` on the lake).
//!
//! It reports `start` (with a fresh `run_id`), runs the command with its stdin, stdout and
//! stderr passed through (the two outputs copied to run-job's own as they come), keeps
//! their last [`TAIL`] bytes, then reports `success` (exit code 0) or `fail` with the exit
//! code, the duration and that tail, and exits with the command's exit code (128 + the
//! signal's number when a signal ended it, 127 when it could not be started).
//!
//! **The command always runs.** A lake that is unreachable, slow (each report waits at
//! most [`REPORT_TIMEOUT`]) or refusing (an undeclared job, a wrong token), or a
//! collector.toml that does not load, is said on stderr (`lake-collector run-job: …`) and
//! changes nothing else: the command runs and its exit code is run-job's. A backup must
//! not be skipped because its monitor is down; the lake's `job_late` then tells that the
//! run was not seen.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;

/// Output kept for the report: the lake stores the last 4 KiB.
pub const TAIL: usize = 4096;
/// Longest wait for one report.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `command` as a run of job `name`; the exit code to exit with. `config` is the
/// loaded collector.toml, or why it could not be loaded (the command runs anyway).
pub async fn run(config: Result<Config, String>, name: &str, command: &[String]) -> i32 {
    let reporter = match config {
        Ok(c) => Reporter::new(&c, name),
        Err(e) => {
            say(&format!("{e}; running the command without reporting it"));
            None
        }
    };
    let run_id = format!("{:016x}", rand::random::<u64>());
    if let Some(r) = &reporter {
        r.send("start", serde_json::json!({"run_id": run_id, "source": "run-job"})).await;
    }
    let started = Instant::now();
    let (code, output) = execute(command).await;
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(r) = &reporter {
        let event = if code == 0 { "success" } else { "fail" };
        let body = serde_json::json!({
            "run_id": run_id,
            "exit_code": code,
            "duration_ms": duration_ms,
            "output": output,
            "source": "run-job",
        });
        r.send(event, body).await;
    }
    code
}

fn say(what: &str) {
    eprintln!("lake-collector run-job: {what}");
}

/// Sends the reports of one run.
struct Reporter {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Reporter {
    fn new(config: &Config, name: &str) -> Option<Reporter> {
        let timeout = config.lake.timeout.min(REPORT_TIMEOUT);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("lake-collector/", env!("CARGO_PKG_VERSION")))
            .build();
        match client {
            Ok(client) => Some(Reporter {
                client,
                base: format!("{}/v1/jobs/{}", config.lake.url, percent_path(name)),
                token: config.lake.token.expose().to_string(),
            }),
            Err(e) => {
                say(&format!("cannot build an HTTP client ({e}); running the command without reporting it"));
                None
            }
        }
    }

    /// Reports `event`; a failure is said on stderr, nothing more.
    async fn send(&self, event: &str, body: serde_json::Value) {
        let url = format!("{}/{event}", self.base);
        let sent = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => {
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let why = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or(text);
                say(&format!(
                    "the lake refused the {event} report ({status}): {why}; the command's result is unchanged"
                ));
            }
            Err(e) => say(&format!(
                "could not report {event} to {url}: {}; the command's result is unchanged",
                error_chain(&e.without_url())
            )),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A job name as a URL path segment (names the lake accepts need no escaping; others are
/// escaped so the lake can answer what is wrong with them).
fn percent_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs the command, passing its output through: its exit code and the last [`TAIL`]
/// bytes of its stdout and stderr (in the order they came), lossily decoded. Blocking
/// work (a child, two copying threads) on the blocking pool.
async fn execute(command: &[String]) -> (i32, String) {
    let command = command.to_vec();
    tokio::task::spawn_blocking(move || execute_blocking(&command))
        .await
        .unwrap_or_else(|e| (1, format!("run-job: the command's task failed: {e}")))
}

fn execute_blocking(command: &[String]) -> (i32, String) {
    let Some((program, args)) = command.split_first() else {
        say("no command given (lake-collector run-job NAME -- command args…)");
        return (127, "run-job: no command given".into());
    };
    let mut child = match std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot run {program:?}: {e}");
            say(&why);
            let code = if e.kind() == std::io::ErrorKind::PermissionDenied { 126 } else { 127 };
            return (code, why);
        }
    };
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
    let out = child.stdout.take().map(|s| {
        let tail = Arc::clone(&tail);
        std::thread::spawn(move || pass(s, std::io::stdout(), &tail))
    });
    let err = child.stderr.take().map(|s| {
        let tail = Arc::clone(&tail);
        std::thread::spawn(move || pass(s, std::io::stderr(), &tail))
    });
    let status = child.wait();
    for thread in [out, err].into_iter().flatten() {
        let _ = thread.join();
    }
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(0)
        }),
        Err(e) => {
            say(&format!("waiting for {program:?} failed: {e}"));
            1
        }
    };
    let bytes: Vec<u8> = tail.lock().map(|t| t.iter().copied().collect()).unwrap_or_default();
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

/// Copies `from` to `to` as it comes, keeping the last [`TAIL`] bytes in `tail`. A
/// closed `to` (run-job's own output gone) does not stop the reading: the command must
/// not block on a full pipe.
fn pass(mut from: impl Read, mut to: impl Write, tail: &Mutex<VecDeque<u8>>) {
    let mut buf = vec![0u8; 8192];
    let mut writing = true;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if writing && (to.write_all(&buf[..n]).is_err() || to.flush().is_err()) {
            writing = false;
        }
        if let Ok(mut t) = tail.lock() {
            let chunk = &buf[n.saturating_sub(TAIL)..n];
            let over = (t.len() + chunk.len()).saturating_sub(TAIL);
            t.drain(..over);
            t.extend(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_command_runs_and_its_tail_and_code_are_kept() {
        let (code, out) = execute(&["sh".into(), "-c".into(), "echo hi; echo oops >&2; exit 3".into()]).await;
        assert_eq!(code, 3);
        assert!(out.contains("hi\n") && out.contains("oops\n"), "{out:?}");
        let (code, out) =
            execute(&["sh".into(), "-c".into(), "head -c 10000 /dev/zero | tr '\\0' x; echo END".into()]).await;
        assert_eq!(code, 0);
        assert_eq!(out.len(), TAIL, "only the tail is kept");
        assert!(out.ends_with("xEND\n"));
        let (code, out) = execute(&["/nonexistent/command".into()]).await;
        assert_eq!(code, 127);
        assert!(out.contains("cannot run"), "{out}");
        let (code, _) = execute(&["sh".into(), "-c".into(), "kill -TERM $$".into()]).await;
        assert_eq!(code, 128 + 15);
    }

    #[test]
    fn names_are_escaped_in_the_path() {
        assert_eq!(percent_path("pg_dump-1.x"), "pg_dump-1.x");
        assert_eq!(percent_path("a/b c"), "a%2Fb%20c");
    }

    #[tokio::test]
    async fn an_unreachable_lake_changes_nothing_but_stderr() {
        let config = Err("no collector.toml".to_string());
        assert_eq!(run(config, "x", &["sh".into(), "-c".into(), "exit 4".into()]).await, 4);
    }
}
