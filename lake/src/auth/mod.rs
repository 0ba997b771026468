//! Bearer tokens, all in one place: the keys and their checking ([`verify`]: [`Verifier`],
//! [`KeySet`], SHA-256 hashes compared in constant time), the tokens file `lake token`
//! manages, and its reloading while `lake serve` runs.
//!
//! In: `tokens.toml` (default `<data_dir>/tokens.toml`, or `[auth] tokens_file`), written
//! only by `lake token add/revoke`, plus the tokens of `lake.toml` itself. Out: the
//! [`KeySet`] in force, installed in the [`Verifier`] every endpoint checks with.
//!
//! # The file
//!
//! ```toml
//! version = 1
//!
//! [[tokens]]
//! id = "3fa9c2d1"                 # short, unique; what `lake token revoke` takes
//! role = "ingest"                 # ingest | read | admin
//! node = "gateway"                # ingest only: the node the token sends as
//! sha256 = "9f86d08…"             # SHA-256 of the token, 64 hex digits
//! created = "2026-11-25T10:00:00Z"
//! expires = "2027-02-23T10:00:00Z"  # optional: refused from then on
//! comment = "rotation 2026-11"    # optional
//! ```
//!
//! Invariants: the token itself is never stored (it is shown once, by `lake token add`);
//! ids and hashes are unique across the file and `lake.toml`; the file is replaced
//! atomically (temporary file, fsync, rename, fsync of the directory), mode 600, keeping
//! the owner of the file it replaces (a new file gets its directory's owner when written
//! by root, so `sudo lake token add` leaves it readable by the `lake` user). Writers
//! serialise on an `flock` of `.<name>.lock` beside it.
//!
//! # Reloading
//!
//! `lake serve` checks the file's modification time, size and inode every
//! [`POLL_INTERVAL`], and re-reads it on SIGHUP. A valid file replaces the file's keys at
//! once (requests in flight keep the set they started with); an invalid one leaves the
//! keys in force, logs the error and counts it (`lake_auth_reload_errors_total`). A
//! missing file is an empty one. A token is therefore rotated without downtime: add the
//! new one, move the client to it, revoke the old one — both are valid in between.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use lake_format::wire::validate_node_name;
pub mod verify;

pub use verify::{
    basic_credentials, basic_password, bearer_token, find_constant_time, AdminAccess, BadHash, Denied, DuplicateToken,
    Key, KeySet, Role, SilenceDenied, TokenHash, UnknownRole, Verifier,
};

/// How often `lake serve` looks for a changed tokens file.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Name of the tokens file in the data directory when `[auth] tokens_file` is not set.
pub const DEFAULT_FILE: &str = "tokens.toml";

/// The tokens file as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    /// Format version: 1.
    pub version: u32,
    /// The entries, oldest first.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

impl Default for TokensFile {
    fn default() -> Self {
        TokensFile { version: 1, tokens: Vec::new() }
    }
}

/// One `[[tokens]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Short unique id.
    pub id: String,
    /// `ingest`, `read` or `admin`.
    pub role: String,
    /// The node of an ingest token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// RFC 3339 time of creation.
    pub created: String,
    /// RFC 3339 time from which the token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

lake_format::metrics! {
    /// Counters of the tokens file, on `/metrics` (each doc line is its help there).
    pub struct AuthStats {
        /// tokens file reloads installed
        pub reloads: Counter("lake_auth_reloads_total"),
        /// tokens file reloads refused as invalid (tokens in force kept)
        pub reload_errors: Counter("lake_auth_reload_errors_total"),
    }
}

/// Reads the file; `None` when it does not exist.
pub fn read_file(path: &Path) -> anyhow::Result<Option<TokensFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading the tokens file {}", path.display())),
    };
    let file: TokensFile = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if file.version != 1 {
        bail!("{}: version = {} is not supported (this lake reads version = 1)", path.display(), file.version);
    }
    Ok(Some(file))
}

/// The keys of a parsed file, each entry checked; errors name the file, entry and key.
pub fn keys_of(path: &Path, file: &TokensFile) -> anyhow::Result<Vec<Key>> {
    let mut keys = Vec::with_capacity(file.tokens.len());
    for (i, t) in file.tokens.iter().enumerate() {
        let at = format!("{}: tokens[{i}] (id {:?})", path.display(), t.id);
        if t.id.is_empty()
            || t.id.len() > 32
            || !t.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("{at}.id: use 1-32 of [A-Za-z0-9_-]");
        }
        if file.tokens[..i].iter().any(|o| o.id == t.id) {
            bail!("{at}.id: another entry has this id");
        }
        let role: Role = t.role.parse().map_err(|e| anyhow::anyhow!("{at}.role: {e}"))?;
        let node = match (role, &t.node) {
            (Role::Ingest, Some(n)) => {
                validate_node_name(n).map_err(|e| anyhow::anyhow!("{at}.node = {n:?}: {e}"))?;
                Some(n.clone())
            }
            (Role::Ingest, None) => bail!("{at}.node: an ingest token needs the node it sends as"),
            (_, Some(_)) => bail!("{at}.node: only ingest tokens belong to a node (role is {role})"),
            (_, None) => None,
        };
        let hash = TokenHash::from_hex(&t.sha256).map_err(|e| anyhow::anyhow!("{at}.sha256 = {:?}: {e}", t.sha256))?;
        t.created
            .parse::<jiff::Timestamp>()
            .map_err(|e| anyhow::anyhow!("{at}.created = {:?}: not an RFC 3339 time: {e}", t.created))?;
        let expires = match &t.expires {
            Some(x) => Some(
                x.parse::<jiff::Timestamp>()
                    .map_err(|e| anyhow::anyhow!("{at}.expires = {x:?}: not an RFC 3339 time: {e}"))?
                    .as_second(),
            ),
            None => None,
        };
        keys.push(Key { source: format!("{} id {}", path.display(), t.id), role, node, hash, expires });
    }
    Ok(keys)
}

/// The keys of the file at `path` (none when it is missing).
pub fn load_keys(path: &Path) -> anyhow::Result<Vec<Key>> {
    match read_file(path)? {
        Some(f) => keys_of(path, &f),
        None => Ok(Vec::new()),
    }
}

/// The set in force: the keys of `lake.toml`, then the file's.
pub fn combine(config_keys: &[Key], file_keys: Vec<Key>) -> anyhow::Result<KeySet> {
    let mut all = config_keys.to_vec();
    all.extend(file_keys);
    Ok(KeySet::new(all)?)
}

/// Replaces the file atomically with `file`, mode 600 (see the module docs for the owner).
pub fn write_file(path: &Path, file: &TokensFile) -> anyhow::Result<()> {
    let dir = parent(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(DEFAULT_FILE);
    let body = toml::to_string(file).context("encoding the tokens file")?;
    let text = format!(
        "# Bearer tokens of the lake, managed by `lake token add/list/revoke` (only their SHA-256\n\
         # is kept; a running lake re-reads this file within {}s). Edit with care.\n{body}",
        POLL_INTERVAL.as_secs()
    );
    // The owner the file should keep: the old file's, or for a new file written by root,
    // the directory's (the lake's user owns its data directory).
    let owner = match std::fs::metadata(path) {
        Ok(m) => Some((m.uid(), m.gid())),
        Err(_) => std::fs::metadata(dir).ok().map(|m| (m.uid(), m.gid())),
    };
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("fsync of {}", tmp.display()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if let (true, Some((uid, gid))) = (root, owner) {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid))
                .with_context(|| format!("chown of {}", tmp.display()))?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("fsync of {}", dir.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive hold on the tokens file for one read-modify-write, released on drop.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for the lock of the tokens file at `path`.
    pub fn acquire(path: &Path) -> anyhow::Result<FileLock> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(DEFAULT_FILE);
        let lock = parent(path).join(format!(".{name}.lock"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock)
            .with_context(|| format!("opening {}", lock.display()))?;
        // SAFETY: the descriptor is open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("locking {}", lock.display()));
        }
        Ok(FileLock { _file: file })
    }
}

/// What tells a changed file from an unchanged one.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino()))
}

/// Keeps the [`Verifier`] in step with the tokens file.
#[derive(Debug)]
pub struct Reloader {
    verifier: Arc<Verifier>,
    config_keys: Vec<Key>,
    path: PathBuf,
    stats: Arc<AuthStats>,
    stamp: Stamp,
}

impl Reloader {
    /// Loads the file (an invalid one is an error: the lake does not start) and builds the
    /// verifier over it and `config_keys` (those of `lake.toml`).
    pub fn start(config_keys: Vec<Key>, path: &Path) -> anyhow::Result<Reloader> {
        let stamp = stamp(path);
        let set = combine(&config_keys, load_keys(path)?)?;
        tracing::info!(file = %path.display(), keys = set.keys().len(), "tokens loaded");
        Ok(Reloader {
            verifier: Arc::new(Verifier::new(set)),
            config_keys,
            path: path.to_path_buf(),
            stats: Arc::default(),
            stamp,
        })
    }

    /// The verifier the endpoints check with.
    pub fn verifier(&self) -> Arc<Verifier> {
        Arc::clone(&self.verifier)
    }

    /// The reload counters.
    pub fn stats(&self) -> Arc<AuthStats> {
        Arc::clone(&self.stats)
    }

    /// Re-reads the file now; on error the keys in force stay.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        self.stamp = stamp(&self.path);
        let loaded = load_keys(&self.path).and_then(|k| combine(&self.config_keys, k));
        match loaded {
            Ok(set) => {
                let n = set.keys().len();
                self.verifier.install(set);
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %self.path.display(), keys = n, "tokens reloaded");
                Ok(())
            }
            Err(e) => {
                self.stats.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = format!("{e:#}"), "tokens file invalid; the tokens in force are kept");
                Err(e)
            }
        }
    }

    /// Polls the file every [`POLL_INTERVAL`] and reloads it when it changed or on SIGHUP,
    /// until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(%e, "cannot listen for SIGHUP; the tokens file is still polled");
                None
            }
        };
        loop {
            let forced = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if !forced && stamp(&self.path) == self.stamp {
                continue;
            }
            if forced {
                tracing::info!("SIGHUP: reloading the tokens file");
            }
            let mut this = self;
            self = match tokio::task::spawn_blocking(move || {
                let _ = this.reload();
                this
            })
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(%e, "tokens reload task failed; tokens no longer reloaded");
                    return;
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, role: &str, node: Option<&str>, token: &str) -> TokenEntry {
        TokenEntry {
            id: id.into(),
            role: role.into(),
            node: node.map(str::to_string),
            sha256: TokenHash::of(token).to_hex(),
            created: "2026-11-25T10:00:00Z".into(),
            expires: None,
            comment: None,
        }
    }

    #[test]
    fn written_files_read_back_with_mode_600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        assert!(load_keys(&path).unwrap().is_empty(), "a missing file is an empty one");
        let file = TokensFile {
            version: 1,
            tokens: vec![entry("a1", "ingest", Some("node-a"), "t1"), entry("r1", "read", None, "t2")],
        };
        write_file(&path, &file).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let keys = load_keys(&path).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].node.as_deref(), Some("node-a"));
        assert_eq!(keys[1].hash, TokenHash::of("t2"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("tokens.toml")], "no temporary file left");
    }

    #[test]
    fn bad_entries_are_refused_naming_the_file_and_key() {
        let path = Path::new("/etc/lake/tokens.toml");
        let mut bad = entry("x1", "read", None, "t");
        bad.sha256 = "abc".into();
        let cases = [
            (bad, "tokens[0] (id \"x1\").sha256 = \"abc\": not a SHA-256 digest"),
            (entry("x1", "writer", None, "t"), ".role: unknown role \"writer\""),
            (entry("x1", "ingest", None, "t"), ".node: an ingest token needs"),
            (entry("x1", "read", Some("n"), "t"), ".node: only ingest tokens"),
            (entry("x/1", "read", None, "t"), ".id: use 1-32"),
        ];
        for (e, says) in cases {
            let err = format!("{:#}", keys_of(path, &TokensFile { version: 1, tokens: vec![e] }).unwrap_err());
            assert!(err.contains("/etc/lake/tokens.toml: tokens[0]") && err.contains(says), "{err}");
        }
        let twice =
            TokensFile { version: 1, tokens: vec![entry("a", "read", None, "t1"), entry("a", "read", None, "t2")] };
        assert!(format!("{:#}", keys_of(path, &twice).unwrap_err()).contains("tokens[1] (id \"a\").id: another entry"));
    }

    #[test]
    fn a_reload_of_an_invalid_file_keeps_the_keys_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        write_file(&path, &TokensFile { version: 1, tokens: vec![entry("r1", "read", None, "tok-1")] }).unwrap();
        let mut r = Reloader::start(Vec::new(), &path).unwrap();
        let v = r.verifier();
        assert!(v.check(Role::Read, "tok-1").is_some());
        std::fs::write(&path, "version = 1\n[[tokens]]\nid = \"r1\"\nrole = \"read\"\nsha256 = \"zz\"\ncreated = \"2026-11-25T10:00:00Z\"\n").unwrap();
        let e = format!("{:#}", r.reload().unwrap_err());
        assert!(e.contains("tokens[0] (id \"r1\").sha256"), "{e}");
        assert!(v.check(Role::Read, "tok-1").is_some(), "old keys kept");
        assert_eq!(r.stats().reload_errors.load(Ordering::Relaxed), 1);
        write_file(&path, &TokensFile { version: 1, tokens: vec![entry("r2", "read", None, "tok-2")] }).unwrap();
        r.reload().unwrap();
        assert!(v.check(Role::Read, "tok-1").is_none());
        assert!(v.check(Role::Read, "tok-2").is_some());
    }
}
