//! The `ack` file and the sources' states: the acknowledged seq and the newest state of
//! every source, rewritten atomically (temp, fsync, rename, directory fsync) before any
//! segment is deleted, so a state outlives the records that carried it (see the spool's
//! module docs). Format:
//! `{"version":2,"acked":<seq>,"states":{<source>:{"seq":…,"state":"<json>"}}}`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

use lake_format::durable;
use serde::{Deserialize, Serialize};

use super::{io_err, Result, SpoolError};

pub(super) const ACK_FILE: &str = "ack";
pub(super) const ACK_VERSION: u32 = 2;

/// The newest state of a source and the seq it was saved with.
#[derive(Debug, Clone)]
pub(super) struct SavedState {
    pub(super) seq: u64,
    pub(super) json: Vec<u8>,
    /// The state as the `ack` file holds it (`{"seq":…,"state":"…"}`), rendered by the
    /// first write that needs it: a large state that rarely changes (inventory's package
    /// list) is escaped once, not at every rewrite of the `ack` file.
    rendered: OnceLock<String>,
}

impl PartialEq for SavedState {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq && self.json == other.json
    }
}

impl Eq for SavedState {}

impl SavedState {
    pub(super) fn new(seq: u64, json: Vec<u8>) -> SavedState {
        SavedState { seq, json, rendered: OnceLock::new() }
    }

    fn rendered(&self) -> &str {
        self.rendered.get_or_init(|| {
            let state = AckStateRef {
                seq: self.seq,
                // Checked UTF-8 on append; the ack file never holds anything else.
                state: &String::from_utf8_lossy(&self.json),
            };
            serde_json::to_string(&state).expect("a struct of a number and a string serializes")
        })
    }
}

/// The `ack` file, version 2.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AckFile {
    pub(super) version: u32,
    pub(super) acked: u64,
    #[serde(default)]
    pub(super) states: BTreeMap<String, AckState>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AckState {
    pub(super) seq: u64,
    /// The source's JSON, kept as a string so it round-trips byte for byte.
    pub(super) state: String,
}

/// [`AckState`] borrowed, to render it.
#[derive(Serialize)]
struct AckStateRef<'a> {
    seq: u64,
    state: &'a str,
}

/// Keeps `saved` as the state of `source` if it is newer than the one known (a tie keeps
/// the known one: the `ack` file is merged first and was written later). Returns whether
/// it was kept.
pub(super) fn merge_state(states: &mut BTreeMap<String, SavedState>, source: String, saved: SavedState) -> bool {
    match states.get(&source) {
        Some(known) if known.seq >= saved.seq => false,
        _ => {
            states.insert(source, saved);
            true
        }
    }
}

/// Checks a source state before it is appended: its name fits the record, its JSON the
/// `ack` file.
pub(super) fn check_state(source: &str, json: &[u8]) -> Result<()> {
    let bad = |reason| SpoolError::SourceState { source_name: source.to_string(), reason };
    if source.is_empty() || source.len() > 255 {
        return Err(bad("the source name must have 1 to 255 bytes"));
    }
    if json.len() > u32::MAX as usize / 2 {
        return Err(bad("the state is too large"));
    }
    if std::str::from_utf8(json).is_err() {
        return Err(bad("the state is not UTF-8 (JSON)"));
    }
    Ok(())
}

/// The acknowledged seq and the source states of the `ack` file (none when missing).
pub(super) fn read_ack(dir: &Path) -> Result<(u64, BTreeMap<String, SavedState>)> {
    let path = dir.join(ACK_FILE);
    let bytes = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, BTreeMap::new())),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let bad = |reason: String| SpoolError::State { path: path.clone(), reason };
    let file: AckFile = serde_json::from_slice(&bytes).map_err(|e| {
        bad(format!("expected {{\"version\":{ACK_VERSION},...}} (an older spool format is not read): {e}"))
    })?;
    if file.version != ACK_VERSION {
        return Err(bad(format!("version {} is not supported", file.version)));
    }
    let states =
        file.states.into_iter().map(|(source, s)| (source, SavedState::new(s.seq, s.state.into_bytes()))).collect();
    Ok((file.acked, states))
}

/// Replaces the `ack` file atomically (through `ack.tmp`).
pub(super) fn write_ack(dir: &Path, acked: u64, states: &BTreeMap<String, SavedState>) -> Result<()> {
    let path = dir.join(ACK_FILE);
    durable::write_atomic(&path, &render_ack(acked, states)).map_err(io_err(&path))
}

/// The `ack` file's bytes: what serde_json writes for an [`AckFile`], assembled from each
/// state's cached rendering.
pub(super) fn render_ack(acked: u64, states: &BTreeMap<String, SavedState>) -> Vec<u8> {
    let len: usize = states.iter().map(|(source, s)| source.len() + s.rendered().len() + 8).sum();
    let mut out = Vec::with_capacity(64 + len);
    out.extend_from_slice(format!("{{\"version\":{ACK_VERSION},\"acked\":{acked},\"states\":{{").as_bytes());
    for (i, (source, s)) in states.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, source).expect("writing a string to a Vec cannot fail");
        out.push(b':');
        out.extend_from_slice(s.rendered().as_bytes());
    }
    out.extend_from_slice(b"}}\n");
    out
}
