//! Opening the spool after a crash: reading every segment back, cutting the torn tail of
//! the last one to its last whole group ([`recover_segment`]; damage in the others is
//! [`super::salvage`]'s), drawing the epoch of the open, and reading the saved source
//! states without opening the spool ([`read_states`]).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use tracing::{debug, warn};

use super::ack::{merge_state, read_ack, SavedState};
use super::segment::{self, segment_name, segment_names, Read, Segment};
use super::{io_err, Result};
use crate::stats::Stats;

/// Written by versions whose epoch was fixed at the spool's creation; no longer used.
pub(super) const LEGACY_EPOCH_FILE: &str = "epoch";

/// What a scan of one segment found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Bytes of whole groups from the start.
    pub(super) good_len: u64,
    /// Records in them.
    pub(super) count: u64,
    /// Highest seq of a held record in them, 0 if none.
    pub(super) last_held: u64,
    /// States carried by them, oldest first.
    pub(super) states: Vec<(String, SavedState)>,
    /// Why the scan stopped before the end of the file.
    pub(super) problem: Option<&'static str>,
}

/// Reads every record of a segment, keeping whole groups only.
pub(super) fn scan_segment(file: &File, first_seq: u64, file_len: u64) -> io::Result<Scan> {
    let mut scan = Scan::default();
    // The group being read: its records, highest held seq and state so far.
    let (mut offset, mut count, mut held) = (0, 0, 0);
    let mut state = None;
    loop {
        match segment::read_at(file, offset, file_len)? {
            Read::End if count == scan.count => return Ok(scan),
            Read::End => {
                scan.problem = Some("file ends inside a group");
                return Ok(scan);
            }
            Read::Record { len, record } if record.seq == first_seq + count => {
                offset += len;
                count += 1;
                if record.held {
                    held = record.seq;
                }
                if let Some((source, json)) = record.state {
                    state = Some((source, SavedState::new(record.seq, json)));
                }
                if !record.continues {
                    scan.good_len = offset;
                    scan.count = count;
                    scan.last_held = scan.last_held.max(held);
                    scan.states.extend(state.take());
                }
            }
            Read::Record { .. } => {
                scan.problem = Some("seq out of order");
                return Ok(scan);
            }
            Read::Bad(why) => {
                scan.problem = Some(why);
                return Ok(scan);
            }
        }
    }
}

/// Scans one segment, truncating it back to the start of the first group that holds a
/// torn, damaged or out-of-sequence record, or that the file ends inside. Returns the
/// segment and the states its groups carry.
pub(super) fn recover_segment(
    dir: &Path,
    first_seq: u64,
    stats: &Stats,
) -> Result<(Segment, Vec<(String, SavedState)>)> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
    let file_len = file.metadata().map_err(io_err(&path))?.len();
    let scan = scan_segment(&file, first_seq, file_len).map_err(io_err(&path))?;
    if let Some(reason) = scan.problem {
        warn!(
            path = %path.display(),
            offset = scan.good_len,
            bytes_cut = file_len - scan.good_len,
            reason,
            "spool segment truncated at its last whole group"
        );
        Stats::add(&stats.spool_truncations, 1);
        file.set_len(scan.good_len).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
    }
    let segment = Segment { first_seq, count: scan.count, size: scan.good_len, last_held: scan.last_held };
    Ok((segment, scan.states))
}

/// The states of the sources saved in the spool in `dir`, without changing anything:
/// safe while a collector runs on it (a group being written is not seen yet). For tests
/// and inspection; a collector uses [`Spool::source_state`].
pub fn read_states(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    // Segments before the ack file: the ack file is rewritten with every state before a
    // segment is deleted, so a segment gone missing meanwhile has its states in there.
    let mut found = Vec::new();
    for first_seq in segment_names(dir, false)? {
        let path = dir.join(segment_name(first_seq));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let len = file.metadata().map_err(io_err(&path))?.len();
        found.extend(scan_segment(&file, first_seq, len).map_err(io_err(&path))?.states);
    }
    let (_, mut states) = read_ack(dir)?;
    for (source, saved) in found {
        merge_state(&mut states, source, saved);
    }
    Ok(states.into_iter().map(|(k, v)| (k, v.json)).collect())
}

/// The epoch of the records this open appends: 64 random bits (never 0), new at every
/// open, so a copy of the spool (a cloned VM, a restored snapshot) opened elsewhere never
/// gives out a batch id the original gives out too. The `epoch` file of earlier versions
/// (unix seconds at creation, shared by every copy) is removed: records carry their own
/// epoch.
pub(super) fn new_epoch(dir: &Path) -> u64 {
    let legacy = dir.join(LEGACY_EPOCH_FILE);
    match fs::remove_file(&legacy) {
        Ok(()) => debug!(path = %legacy.display(), "removed the epoch file of an older version"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            warn!(path = %legacy.display(), %error, "cannot remove the epoch file of an older version; it is not used")
        }
    }
    rand::random::<u64>().max(1)
}
