//! The event ids each hook has stored, so a provider's retry is answered 200 and stored
//! once, also after a restart.
//!
//! Per hook, `<data>/state/hooks/<name>.ids` holds one id a line: the first 16 bytes of the
//! SHA-256 of the provider's id, in hex (fixed-size lines, and nothing a sender wrote ends
//! up in the file). An id is appended and fsynced once its row is in the WAL; the file is
//! rewritten (atomically) with the newest `remember` ids when it holds twice as many, so it
//! stays bounded. The newest `remember` ids are kept in memory.
//!
//! Order of events: the row reaches the WAL (fsynced), then the id is recorded. A crash in
//! between makes the provider's retry store the event a second time — at least once, never
//! lost.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An event id as stored: 16 bytes of its SHA-256.
pub type Key = [u8; 16];

/// The key of a provider's event id.
pub fn key(event_id: &str) -> Key {
    let d = ring::digest::digest(&ring::digest::SHA256, event_id.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d.as_ref()[..16]);
    k
}

/// What to do with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// Not stored yet: store it, then [`Seen::stored`] (or [`Seen::failed`]).
    New,
    /// Stored before: answer 200 without storing.
    Duplicate,
    /// Another request is storing it now.
    InFlight,
}

#[derive(Debug)]
struct Hook {
    path: PathBuf,
    remember: usize,
    set: HashSet<Key>,
    order: VecDeque<Key>,
    lines: usize,
    file: Option<File>,
    in_flight: HashSet<Key>,
}

impl Hook {
    fn open(path: PathBuf, remember: usize) -> io::Result<Hook> {
        let mut order = VecDeque::new();
        let mut lines = 0;
        match File::open(&path) {
            Ok(f) => {
                for line in io::BufReader::new(f).lines() {
                    let line = line?;
                    lines += 1;
                    // A torn last line (a crash mid-append) is skipped: its event was
                    // in the WAL, so its retry is stored again at worst.
                    if let Some(k) = parse(&line) {
                        order.push_back(k);
                        if order.len() > remember {
                            order.pop_front();
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let set = order.iter().copied().collect();
        Ok(Hook { path, remember, set, order, lines, file: None, in_flight: HashSet::new() })
    }

    fn append(&mut self, k: Key) -> io::Result<()> {
        if self.lines >= self.remember.saturating_mul(2).max(16) {
            self.rewrite()?;
        }
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(format!("{}\n", lake_format::logs::hex(&k)).as_bytes())?;
        f.sync_data()?;
        self.lines += 1;
        Ok(())
    }

    /// The file with only the ids in memory (the newest `remember`).
    fn rewrite(&mut self) -> io::Result<()> {
        let text: String = self.order.iter().map(|k| format!("{}\n", lake_format::logs::hex(k))).collect();
        lake_format::durable::write_atomic(&self.path, text.as_bytes())?;
        self.file = None;
        self.lines = self.order.len();
        Ok(())
    }
}

fn parse(line: &str) -> Option<Key> {
    let line = line.trim();
    if line.len() != 32 {
        return None;
    }
    let mut k = [0u8; 16];
    for (i, pair) in line.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        k[i] = (hi << 4 | lo) as u8;
    }
    Some(k)
}

/// Every hook's stored event ids.
#[derive(Debug)]
pub struct Seen {
    hooks: HashMap<String, Mutex<Hook>>,
}

impl Seen {
    /// Loads the ids of each `(hook, remember)` under `data`.
    pub fn open(data: &Path, hooks: &[(String, usize)]) -> io::Result<Seen> {
        let dir = data.join("state").join("hooks");
        let mut map = HashMap::new();
        for (name, remember) in hooks {
            let hook = Hook::open(dir.join(format!("{name}.ids")), *remember)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.join(format!("{name}.ids")).display())))?;
            map.insert(name.clone(), Mutex::new(hook));
        }
        Ok(Seen { hooks: map })
    }

    fn hook(&self, name: &str) -> std::sync::MutexGuard<'_, Hook> {
        // Every critical section is a few set operations and one append: a panic in one
        // leaves the sets consistent.
        self.hooks.get(name).expect("a configured hook").lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `k` is new to `hook`, reserving it if so.
    pub fn begin(&self, hook: &str, k: Key) -> Begin {
        let mut h = self.hook(hook);
        if h.set.contains(&k) {
            Begin::Duplicate
        } else if !h.in_flight.insert(k) {
            Begin::InFlight
        } else {
            Begin::New
        }
    }

    /// The event is in the WAL: remember it (appended and fsynced). Blocking.
    pub fn stored(&self, hook: &str, k: Key) -> io::Result<()> {
        let mut h = self.hook(hook);
        h.in_flight.remove(&k);
        if h.set.insert(k) {
            h.order.push_back(k);
            if h.order.len() > h.remember {
                if let Some(old) = h.order.pop_front() {
                    h.set.remove(&old);
                }
            }
        }
        h.append(k)
    }

    /// Storing failed: a retry may store it.
    pub fn failed(&self, hook: &str, k: Key) {
        self.hook(hook).in_flight.remove(&k);
    }
}
