//! A real Caddy for a test: Debian's `caddy` from PATH (CI installs it with `apt-get
//! install -y caddy`), serving one site on a free loopback port, with everything it writes
//! (its state, its stderr in `caddy.out`) under the test's directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, KillOnDrop};

/// How long Caddy may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Caddy, killed when dropped.
#[derive(Debug)]
pub struct Caddy {
    /// The loopback port its site listens on.
    pub port: u16,
    _child: KillOnDrop,
}

impl Caddy {
    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Starts Caddy with `site_block` (the directives inside the site's braces: `log { … }`,
/// `respond …`) as the only site, `http://127.0.0.1:<a free port>`, admin API and
/// automatic HTTPS off; its Caddyfile, state and `caddy.out` in `dir`. Returns once it
/// listens; panics naming the cause (not on PATH, its stderr) otherwise.
pub fn caddy_in(dir: &Path, site_block: &str) -> Caddy {
    let caddy = on_path("caddy").unwrap_or_else(|| {
        panic!("`caddy` is not on PATH: install it (Debian: apt-get install -y caddy); CI installs it")
    });
    let port = free_port();
    let caddyfile = dir.join("Caddyfile");
    let site = site_block.lines().map(|l| format!("\t{l}\n")).collect::<String>();
    std::fs::write(
        &caddyfile,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\nhttp://127.0.0.1:{port} {{\n{site}}}\n"),
    )
    .unwrap();
    let out = dir.join("caddy.out");
    let child = Command::new(caddy)
        .args(["run", "--config"])
        .arg(&caddyfile)
        .args(["--adapter", "caddyfile"])
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let caddy = Caddy { port, _child: KillOnDrop(child) };
    let deadline = Instant::now() + START_TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() >= deadline {
            panic!(
                "caddy did not listen within {START_TIMEOUT:?}: {}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    caddy
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}
