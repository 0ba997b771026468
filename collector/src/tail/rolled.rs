//! Rolled files: the names a rotation gives a followed file, and how a rolled file's
//! content is recognised (its first decompressed bytes). See the parent module for how
//! the engine uses them.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use flate2::read::MultiGzDecoder;

use super::{fnv1a, Fingerprint, HEAD_MAX};

/// Eight digits: the date of logrotate's `dateext` (`-%Y%m%d`, or longer formats).
const DATE8: &str = "[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]";
/// Caddy's (lumberjack's) backup time: `2026-11-22T10-15-01.000`.
const LUMBERJACK: &str = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*";

/// The glob patterns of the rolled names of the files `pattern` matches:
///
/// - `P.gz`;
/// - logrotate's numbered `P.1`, `P.2.gz` (`P.[0-9]*`);
/// - logrotate's `dateext`, `P-20261122`, `P-20261122.gz`;
/// - for a file name `stem.ext`: Caddy's `stem-2026-11-22T10-15-01.000.ext` and logrotate's
///   `dateext` with `extension .ext`, `stem-20261122.ext`, each also with `.gz`.
///
/// Names that merely start like the file (`P.bak`, `stem-2.ext`) are not rolled names. A
/// pattern that ends in `.gz` has none (it names rolled files itself).
pub fn rolled_patterns(pattern: &str) -> Vec<String> {
    if pattern.ends_with(".gz") {
        return Vec::new();
    }
    let mut out = vec![format!("{pattern}.gz"), format!("{pattern}.[0-9]*"), format!("{pattern}-{DATE8}*")];
    let (dir, name) = match pattern.rfind('/') {
        Some(i) => pattern.split_at(i + 1),
        None => ("", pattern),
    };
    if let Some(dot) = name.rfind('.').filter(|&d| d > 0 && d + 1 < name.len()) {
        let (stem, ext) = (&name[..dot], &name[dot + 1..]);
        for stamp in [LUMBERJACK, DATE8] {
            let star = if stamp == DATE8 { "*" } else { "" };
            out.push(format!("{dir}{stem}-{stamp}{star}.{ext}"));
            out.push(format!("{dir}{stem}-{stamp}{star}.{ext}.gz"));
        }
    }
    out
}

/// Whether `path` is a gzip file (by its name: Caddy and logrotate name them `.gz`).
pub(super) fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// The first bytes of a rolled file's content (decompressed for a `.gz`).
#[derive(Debug)]
pub(super) struct Head {
    /// Up to [`HEAD_MAX`] bytes.
    pub(super) bytes: Vec<u8>,
    /// Their hash: most fingerprints compared cover the whole head, and a rolled pass
    /// compares each rolled file with every followed file and every one read.
    hash: u64,
    /// Whether `bytes` is the whole head: [`HEAD_MAX`] bytes or the whole content. A
    /// `.gz` whose first KiB does not decompress (still being written, or corrupt) is not.
    pub(super) complete: bool,
    /// When this (unchanged) file was first fingerprinted.
    pub(super) since: Instant,
    /// Whether an incomplete head was counted as an error already.
    pub(super) reported: bool,
}

impl Head {
    /// Reads the head of the file at `path` (opened by the caller as `file`).
    pub(super) fn read(path: &Path, file: &File, len: u64) -> io::Result<Head> {
        let (bytes, complete) = if is_gz(path) { gz_head(file)? } else { (plain_head(file, len)?, true) };
        Ok(Head { hash: fnv1a(&bytes), bytes, complete, since: Instant::now(), reported: false })
    }

    /// The fingerprint of the whole head.
    pub(super) fn fingerprint(&self) -> Fingerprint {
        Fingerprint { head_len: self.bytes.len() as u32, head_hash: self.hash }
    }

    /// Whether the content starts with the `head_len` bytes hashed to `head_hash` (a file
    /// followed, or a position to resume): a copy of a file that may have grown since.
    pub(super) fn starts_with(&self, head_len: u32, head_hash: u64) -> bool {
        let n = head_len as usize;
        match n {
            0 => false,
            n if n == self.bytes.len() => self.hash == head_hash,
            n => self.bytes.len() > n && fnv1a(&self.bytes[..n]) == head_hash,
        }
    }

    /// Whether this is the content of a file read to its end with fingerprint `fp`: the
    /// same first KiB, or the same whole content when it was shorter.
    pub(super) fn is(&self, fp: &Fingerprint) -> bool {
        let n = fp.head_len as usize;
        (n == HEAD_MAX || n == self.bytes.len()) && self.starts_with(fp.head_len, fp.head_hash)
    }
}

/// The first [`HEAD_MAX`] bytes of a plain file of `len` bytes.
pub(super) fn plain_head(file: &File, len: u64) -> io::Result<Vec<u8>> {
    let want = len.min(HEAD_MAX as u64) as usize;
    let mut head = vec![0; want];
    let mut got = 0;
    while got < want {
        let n = file.read_at(&mut head[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    head.truncate(got);
    Ok(head)
}

/// The first [`HEAD_MAX`] decompressed bytes of a gzip file, and whether they are all
/// there (a stream that ends early or does not decode yet is not complete).
fn gz_head(file: &File) -> io::Result<(Vec<u8>, bool)> {
    let mut d = MultiGzDecoder::new(file.try_clone()?);
    let mut head = vec![0; HEAD_MAX];
    let mut got = 0;
    while got < HEAD_MAX {
        match d.read(&mut head[got..]) {
            Ok(0) => {
                head.truncate(got);
                return Ok((head, true));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                head.truncate(got);
                return Ok((head, false));
            }
        }
    }
    Ok((head, true))
}

/// A gzip stream of `file` positioned `offset` bytes into its decompressed content (or
/// at its end when shorter), and the position reached.
pub(super) fn gz_at(file: File, offset: u64) -> io::Result<(MultiGzDecoder<File>, u64)> {
    let mut d = MultiGzDecoder::new(file);
    let n = io::copy(&mut (&mut d).take(offset), &mut io::sink())?;
    Ok((d, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        rolled_patterns(pattern).iter().any(|p| glob::Pattern::new(p).unwrap().matches(name))
    }

    #[test]
    fn rolled_names_of_caddy_and_logrotate_and_not_others() {
        let caddy = "/l/access.log";
        for n in [
            "/l/access-2026-11-22T10-15-01.000.log",
            "/l/access-2026-11-22T10-15-01.000.log.gz",
            "/l/access.log.gz",
            "/l/access.log.1",
            "/l/access.log.2.gz",
            "/l/access.log-20261122",
            "/l/access.log-20261122.gz",
            "/l/access-20261122.log",
            "/l/access-2026112210.log.gz",
        ] {
            assert!(matches(caddy, n), "{n}");
        }
        for n in [
            "/l/access.log",
            "/l/access.log.bak",
            "/l/access-2.log",
            "/l/access.log-old",
            "/l/other-2026-11-22T10-15-01.000.log",
        ] {
            assert!(!matches(caddy, n), "{n}");
        }
        assert!(matches("/l/access*.log", "/l/access-site-2026-11-22T10-15-01.000.log.gz"));
        assert!(matches("/var/log/syslog", "/var/log/syslog.1"));
        assert!(matches("/var/log/syslog", "/var/log/syslog.4.gz"));
        assert!(rolled_patterns("/l/*.gz").is_empty());
    }

    #[test]
    fn gz_heads_are_decompressed_and_a_cut_gz_is_incomplete() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<u8> = (0..200).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        let path = dir.path().join("a.log.gz");
        std::fs::write(&path, &gz).unwrap();
        let f = File::open(&path).unwrap();
        let h = Head::read(&path, &f, gz.len() as u64).unwrap();
        assert!(h.complete);
        assert_eq!(h.bytes, text[..HEAD_MAX]);
        std::fs::write(&path, &gz[..gz.len() / 3]).unwrap();
        let f = File::open(&path).unwrap();
        assert!(!Head::read(&path, &f, 0).unwrap().complete);
        let short = dir.path().join("b.log");
        std::fs::write(&short, b"one\n").unwrap();
        let f = File::open(&short).unwrap();
        let h = Head::read(&short, &f, 4).unwrap();
        assert!(h.complete && h.is(&h.fingerprint()));
        assert!(!h.is(&Fingerprint { head_len: 3, head_hash: fnv1a(b"one") }));
        assert!(h.starts_with(3, fnv1a(b"one")));
    }
}
