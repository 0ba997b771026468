//! Running one command: its own process group, a deadline, bounded output.
//!
//! The command starts in a new process group (`setpgid(0, 0)`), stdin from `/dev/null`,
//! stdout and stderr piped, without `LAKE_TOKEN` in its environment. Its stdout is kept up
//! to `max_output` bytes (the rest is read and discarded, so the command is never blocked
//! on a full pipe; the run says it was cut); the last 4 KiB of stderr are kept.
//!
//! At the deadline the whole group gets SIGKILL — the command and anything it started
//! that did not leave the group — and the leader is reaped. A leader that exits while
//! other members of its group still hold its stdout or stderr open (a background child)
//! is waited for until the deadline too, then the group is killed: no run leaves
//! processes behind in its group. Shutdown kills the group the same way.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{ChildStderr, ChildStdout, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Bytes of stderr kept (its end: that is where a program says why it failed).
pub const STDERR_TAIL: usize = 4096;
/// How long the pipes may stay open after the group was killed before they are dropped
/// (a process that left the group with `setsid` may still hold them).
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The program (a bare name is looked up in `PATH`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the collector's environment (`LAKE_TOKEN` is removed).
    pub env: BTreeMap<String, String>,
    /// Working directory; the collector's when `None`.
    pub working_dir: Option<PathBuf>,
    /// Time allowed, start to exit.
    pub timeout: Duration,
    /// Bytes of stdout kept.
    pub max_output: usize,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Exited by itself with this code.
    Exited(i32),
    /// Killed by this signal (not by us).
    Signaled(i32),
    /// Still running at the deadline: the group was killed.
    TimedOut,
    /// Shutdown came first: the group was killed, nothing of the run is kept.
    Cancelled,
    /// Could not be started or waited for.
    Failed(String),
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub ended: Ended,
    /// Stdout, up to `max_output` bytes.
    pub stdout: Vec<u8>,
    /// Bytes of stdout beyond `max_output`, read and discarded.
    pub stdout_discarded: u64,
    /// The end of stderr, lossily decoded, trimmed.
    pub stderr_tail: String,
    /// The leader exited but its group still held the output at the deadline, and was killed.
    pub leftovers_killed: bool,
    /// Time from start to the end of the run.
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether the command ran and exited with code 0.
    pub fn success(&self) -> bool {
        self.ended == Ended::Exited(0)
    }
}

/// Sends SIGKILL to process group `pgid`.
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; a negative pid
    // addresses the process group. `pgid` is a child's pid that we made a group leader
    // (process_group(0)) and have not reaped yet, or whose group still holds our pipes,
    // so the group id cannot have been reused.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Both output pipes, read as data comes.
struct Pipes {
    out: Option<ChildStdout>,
    err: Option<ChildStderr>,
    stdout: Vec<u8>,
    discarded: u64,
    max: usize,
    stderr: Vec<u8>,
}

impl Pipes {
    fn closed(&self) -> bool {
        self.out.is_none() && self.err.is_none()
    }

    /// Reads one chunk from whichever pipe has data; a pipe at EOF (or failing) is closed.
    /// Cancel safe: a read that does not complete consumes nothing.
    async fn read_some(&mut self) {
        let mut a = [0u8; 16 << 10];
        let mut b = [0u8; 4096];
        let Pipes { out, err, .. } = self;
        tokio::select! {
            r = async { out.as_mut().expect("guarded").read(&mut a).await }, if out.is_some() => {
                match r {
                    Ok(0) | Err(_) => self.out = None,
                    Ok(n) => {
                        let room = self.max.saturating_sub(self.stdout.len());
                        let keep = n.min(room);
                        self.stdout.extend_from_slice(&a[..keep]);
                        self.discarded += (n - keep) as u64;
                    }
                }
            }
            r = async { err.as_mut().expect("guarded").read(&mut b).await }, if err.is_some() => {
                match r {
                    Ok(0) | Err(_) => self.err = None,
                    Ok(n) => {
                        self.stderr.extend_from_slice(&b[..n]);
                        if self.stderr.len() > STDERR_TAIL {
                            self.stderr.drain(..self.stderr.len() - STDERR_TAIL);
                        }
                    }
                }
            }
        }
    }

    /// Reads until both pipes close or `until`.
    async fn drain_until(&mut self, until: Instant) {
        while !self.closed() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = self.read_some() => {}
            }
        }
    }
}

/// The command of `spec`, configured as the module docs say.
fn command(spec: &Spec) -> Command {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_remove(crate::config::TOKEN_ENV)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(d) = &spec.working_dir {
        cmd.current_dir(d);
    }
    cmd
}

/// Runs `spec` once; see the module docs. Never panics, never outlives its deadline by
/// more than a second.
pub async fn run(spec: &Spec, cancel: &CancellationToken) -> Outcome {
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let mut cmd = command(spec);
    let failed = |reason: String| Outcome {
        ended: Ended::Failed(reason),
        stdout: Vec::new(),
        stdout_discarded: 0,
        stderr_tail: String::new(),
        leftovers_killed: false,
        elapsed: start.elapsed(),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start {}: {e}", spec.program.display())),
    };
    let Some(pgid) = child.id() else {
        return failed("the command exited before its pid was known".to_string());
    };
    let mut pipes = Pipes {
        out: child.stdout.take(),
        err: child.stderr.take(),
        stdout: Vec::new(),
        discarded: 0,
        max: spec.max_output,
        stderr: Vec::new(),
    };

    let mut status: Option<std::io::Result<std::process::ExitStatus>> = None;
    let mut timed_out = false;
    let mut cancelled = false;
    while status.is_none() || !pipes.closed() {
        tokio::select! {
            r = child.wait(), if status.is_none() => status = Some(r),
            _ = pipes.read_some(), if !pipes.closed() => {}
            _ = tokio::time::sleep_until(deadline) => { timed_out = true; break }
            _ = cancel.cancelled() => { cancelled = true; break }
        }
    }
    let mut leftovers_killed = false;
    if timed_out || cancelled {
        // The leader is unreaped (or its group still holds our pipes): the group id is ours.
        kill_group(pgid);
        if status.is_none() {
            status = Some(child.wait().await);
        } else if !cancelled {
            leftovers_killed = true;
        }
        pipes.drain_until(Instant::now() + PIPE_GRACE).await;
    }
    let ended = if cancelled {
        Ended::Cancelled
    } else if timed_out && !leftovers_killed {
        Ended::TimedOut
    } else {
        match status {
            Some(Ok(s)) => match (s.code(), s.signal()) {
                (Some(code), _) => Ended::Exited(code),
                (None, Some(sig)) => Ended::Signaled(sig),
                (None, None) => Ended::Failed(format!("unknown exit status {s}")),
            },
            Some(Err(e)) => Ended::Failed(format!("cannot wait for the command: {e}")),
            None => Ended::Failed("no exit status".to_string()),
        }
    };
    Outcome {
        ended,
        stdout: pipes.stdout,
        stdout_discarded: pipes.discarded,
        stderr_tail: String::from_utf8_lossy(&pipes.stderr).trim().to_string(),
        leftovers_killed,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout_ms: u64) -> Spec {
        Spec {
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), script.into()],
            env: BTreeMap::new(),
            working_dir: None,
            timeout: Duration::from_millis(timeout_ms),
            max_output: 1 << 20,
        }
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[tokio::test]
    async fn output_exit_code_and_stderr_tail() {
        let c = CancellationToken::new();
        let o = run(&sh("echo out; echo err >&2; exit 3", 5000), &c).await;
        assert_eq!(o.ended, Ended::Exited(3));
        assert_eq!(o.stdout, b"out\n");
        assert_eq!(o.stderr_tail, "err");
        assert!(!o.success());
        let mut spec = sh("echo \"$X\"", 5000);
        spec.env.insert("X".into(), "y".into());
        let o = run(&spec, &c).await;
        assert_eq!(o.stdout, b"y\n");
        assert!(o.success());
        // The collector's token never reaches a command.
        let cmd = command(&spec);
        let envs: Vec<_> = cmd.as_std().get_envs().collect();
        assert!(envs.contains(&(std::ffi::OsStr::new(crate::config::TOKEN_ENV), None)), "{envs:?}");
    }

    #[tokio::test]
    async fn a_hanging_command_and_its_children_are_killed_at_the_deadline() {
        let c = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 600 & echo $! > {}; echo started; wait", pidfile.display());
        let t = std::time::Instant::now();
        let o = run(&sh(&script, 700), &c).await;
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(o.ended, Ended::TimedOut);
        assert_eq!(o.stdout, b"started\n", "what it printed before is kept");
        let child: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The background sleep was in the group: it is gone (possibly a zombie of init).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        assert!(!alive(child) || state.contains(") Z "), "sleep {child} survived: {state}");
    }

    #[tokio::test]
    async fn a_leader_that_leaves_a_child_holding_its_output_is_cleaned_up() {
        let c = CancellationToken::new();
        let o = run(&sh("sleep 600 & echo bye", 500), &c).await;
        assert!(o.leftovers_killed);
        assert_eq!(o.ended, Ended::Exited(0));
        assert_eq!(o.stdout, b"bye\n");
    }

    #[tokio::test]
    async fn output_beyond_the_bound_is_discarded_and_counted() {
        let c = CancellationToken::new();
        let mut spec = sh("head -c 100000 /dev/zero", 5000);
        spec.max_output = 1000;
        let o = run(&spec, &c).await;
        assert!(o.success());
        assert_eq!(o.stdout.len(), 1000);
        assert_eq!(o.stdout_discarded, 99_000);
    }

    #[tokio::test]
    async fn missing_program_and_cancel() {
        let c = CancellationToken::new();
        let mut spec = sh("", 1000);
        spec.program = PathBuf::from("/nonexistent/prog");
        let o = run(&spec, &c).await;
        assert!(matches!(&o.ended, Ended::Failed(m) if m.contains("/nonexistent/prog")), "{:?}", o.ended);
        let c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c2.cancel();
        });
        let t = std::time::Instant::now();
        let o = run(&sh("sleep 600", 60_000), &c).await;
        assert_eq!(o.ended, Ended::Cancelled);
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
