//! Test helpers shared by the workspace's crates (a dev-dependency only, never linked into
//! a product binary): what several test files used to carry a copy of each.
//!
//! - [`free_port`]: a loopback port nobody listens on, for a peer or a `lake serve`.
//! - [`KillOnDrop`]: a child process (Caddy, an exporter, …) that cannot outlive its test.
//! - [`caddy_in`]: a real Caddy serving one site on a free port, killed on drop.
//! - [`LakeToml`]: a `lake.toml` written from parts, so a test states only what it changes.
//! - [`batch_to_json`], [`table_rows`], [`same`]: record batches as JSON rows, so a test can
//!   state every column, and a comparison that forgives float round trips;
//!   [`expect_jsonl`]: rows against a golden file (`LAKE_BLESS=1` rewrites it).
//! - [`tree_of`]: what a directory holds, to show a request created or left nothing.
//! - [`docker::Dockerd`]: a real Docker daemon of a test, offline, with a busybox image.
//! - [`replay::Replay`]: a local HTTP server replaying canned (vendor-documented or hostile)
//!   answers and recording the requests, for the collector's `[[pull]]` tests.
//! - [`spool`] (feature `spool`): every record of a collector's spool, read back as rows.

use std::process::Child;

mod caddy;
pub mod docker;
mod json;
mod lake_toml;
pub mod replay;
#[cfg(feature = "spool")]
pub mod spool;

pub use caddy::{caddy_in, Caddy};
pub use json::{batch_to_json, expect_jsonl, same, table_rows};
pub use lake_toml::LakeToml;

/// Every file and directory under `dir`, relative to it, sorted.
pub fn tree_of(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A loopback port free at the time of the call (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (and reaped) when dropped, so a failing test leaves no peer behind.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
