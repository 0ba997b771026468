//! A real Docker daemon for a test, offline: `dockerd` as root with the `vfs` storage
//! driver, no bridge and no iptables, its data, exec root, pid file and socket in a
//! directory of its own (so tests may each run one at once), and an image `bb:1`
//! imported from a directory holding Debian's `busybox-static` (no registry needed).
//! See `shared/reference/docker-offline.md`; `scripts/setup peers` installs `docker.io`
//! and `busybox-static`.
//!
//! [`Dockerd::start`] says why when no daemon can start here (not root, no `dockerd`, no
//! busybox): the test prints `SKIPPED: <why>` and returns. The daemon is stopped (SIGTERM,
//! then SIGKILL) and its directory removed when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The image every test container runs: busybox with its applets as `/bin/<name>`.
pub const IMAGE: &str = "bb:1";

/// Applets linked into the image.
const APPLETS: &[&str] = &["sh", "echo", "sleep", "cat", "printf", "seq", "true", "false", "yes", "head"];

/// A running daemon of a test.
#[derive(Debug)]
pub struct Dockerd {
    dir: PathBuf,
    socket: PathBuf,
    child: Child,
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

impl Dockerd {
    /// Starts a daemon and imports [`IMAGE`]; `Err(why)` when this machine cannot.
    pub fn start() -> Result<Dockerd, String> {
        let dockerd = which("dockerd").ok_or("no dockerd in PATH (Debian package docker.io)")?;
        which("docker").ok_or("no docker client in PATH (Debian package docker.io)")?;
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("no busybox (Debian package busybox-static)")?;
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("id -u: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("dockerd needs root".into());
        }
        static N: AtomicU64 = AtomicU64::new(0);
        // Short: the socket path must fit a sockaddr_un (108 bytes).
        let dir = std::env::temp_dir().join(format!(
            "lt-dockerd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(dockerd)
            .args(["--storage-driver", "vfs", "--iptables=false", "--bridge=none"])
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        let d = Dockerd { dir, socket, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if d.docker(&["info", "--format", "{{.ServerVersion}}"]).status.success() {
                break;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(d.dir.join("dockerd.log")).unwrap_or_default();
                return Err(format!("dockerd did not answer in 30s; its log ends: {}", tail(&log)));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let rootfs = d.dir.join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).map_err(|e| e.to_string())?;
        std::fs::copy(&busybox, rootfs.join("bin/busybox")).map_err(|e| e.to_string())?;
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).map_err(|e| e.to_string())?;
        }
        let import = Command::new("sh")
            .arg("-c")
            .arg(format!("tar -C {} -c . | docker import - {IMAGE}", rootfs.display()))
            .env("DOCKER_HOST", d.host())
            .output()
            .map_err(|e| e.to_string())?;
        if !import.status.success() {
            return Err(format!("docker import: {}", String::from_utf8_lossy(&import.stderr)));
        }
        Ok(d)
    }

    /// The daemon's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://<socket>`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Runs the docker client against this daemon.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.host())
            .stdin(Stdio::null())
            .output()
            .expect("run the docker client")
    }

    /// Runs the docker client, which must succeed; its stdout, trimmed. `docker run`
    /// without `-d` waits for the container, whose non-zero exit is not a failure here.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        let run = args.first() == Some(&"run") && !args.contains(&"-d");
        assert!(out.status.success() || run, "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs container `name` until the kernel kills it for memory (`-m 16m`, no swap):
    /// exit 137, an `oom` event. It sleeps a second first: a process killed before
    /// containerd watches its cgroup's OOM notifications dies with 137 but no `oom` event.
    pub fn run_oom_killed(&self, name: &str) {
        let hog = "sleep 1; x=a; while true; do x=\"$x$x\"; done";
        self.ok(&[
            "run",
            "--network",
            "none",
            "--name",
            name,
            "-m",
            "16m",
            "--memory-swap",
            "16m",
            IMAGE,
            "sh",
            "-c",
            hog,
        ]);
    }

    /// `docker inspect -f <format> <name>`.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name])
    }

    /// Polls `docker inspect -f <format> <name>` until it prints `want` (30 s at most).
    pub fn wait_inspect(&self, name: &str, format: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.inspect(name, format);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{name}: {format} is {got:?}, waited for {want:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, quickly: a daemon stopping waits 10 s per running container.
        let ids = self.docker(&["ps", "-aq"]);
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout).split_whitespace().map(String::from).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.docker(&args);
        }
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
