//! Salvage of a damaged segment that is not the last one.
//!
//! Only the last segment is ever appended to, so only it can end in a torn write (that
//! case stays in [`super::recovery::recover_segment`]: the unfinished group is cut). A bad record
//! in any other segment was written whole and fsynced long ago: it is damage (a bad
//! sector, a stray write), and the records after it are as good as before. Cutting the
//! segment there, as a torn tail is cut, would silently drop every record after the
//! damage, acknowledged by nobody.
//!
//! So the segment is read record by record; at a bad record the scan looks for the next
//! intact one — a [`segment::MAGIC`] whose length fits, whose CRC matches, whose payload
//! decodes and whose seq lies between the last good seq and the next segment's first —
//! and goes on from there. The framing makes this reliable: a false match needs a
//! magic and a CRC-32 to agree by chance. The intact runs are kept:
//!
//! - each run after the damage is written as a segment of its own, named by its first
//!   seq (seqs are contiguous inside a segment), via temp file, fsync and rename;
//! - then the records before the damage replace the damaged file the same way (or the
//!   file is removed when none is left);
//! - a run ending in the middle of a group gets its last record's "group continues"
//!   flag cleared, so the file never looks torn if it becomes the last one.
//!
//! A crash half-way leaves the damaged file beside runs already written; the next open
//! salvages it again, bounded by the first of them, and writes the same files.
//!
//! What was lost is loud: an `error` naming the file, the damaged byte range and the
//! seqs (batch ids) that were in it, counted in `spool_damaged_records` and
//! `dropped_batches` (only seqs not yet acknowledged by the lake count as lost).

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use lake_format::durable;
use tracing::{error, warn};

use super::ack::SavedState;
use super::recovery::scan_segment;
use super::segment::{self, Read};
use super::segment::{segment_name, Segment};
use super::{io_err, sync_dir, Result};
use crate::stats::Stats;

/// A recovered segment and the source states its records carry.
pub(super) type Recovered = (Segment, Vec<(String, SavedState)>);

/// Records with contiguous seqs read from one offset on.
#[derive(Debug)]
struct Run {
    start: u64,
    end: u64,
    first_seq: u64,
    count: u64,
    last_held: u64,
    states: Vec<(String, SavedState)>,
    /// Offset of the last record, and whether it says the group goes on.
    last_at: u64,
    last_continues: bool,
}

/// Reads intact records from `start` while their seqs go on from `first_seq` and stay
/// below `below`.
fn read_run(file: &File, start: u64, first_seq: u64, file_len: u64, below: u64) -> io::Result<Run> {
    let mut run = Run {
        start,
        end: start,
        first_seq,
        count: 0,
        last_held: 0,
        states: Vec::new(),
        last_at: start,
        last_continues: false,
    };
    loop {
        match segment::read_at(file, run.end, file_len)? {
            Read::Record { len, record } if record.seq == first_seq + run.count && record.seq < below => {
                run.last_at = run.end;
                run.last_continues = record.continues;
                run.end += len;
                run.count += 1;
                if record.held {
                    run.last_held = record.seq;
                }
                if let Some((source, json)) = record.state {
                    run.states.push((source, SavedState::new(record.seq, json)));
                }
            }
            _ => return Ok(run),
        }
    }
}

/// The first intact record at or after `from` whose seq is in `seqs`: its offset and seq.
fn resync(file: &File, from: u64, file_len: u64, seqs: &Range<u64>) -> io::Result<Option<(u64, u64)>> {
    for offset in segment::magic_offsets(file, from, file_len)? {
        if let Read::Record { record, .. } = segment::read_at(file, offset, file_len)? {
            if seqs.contains(&record.seq) {
                return Ok(Some((offset, record.seq)));
            }
        }
    }
    Ok(None)
}

/// Recovers segment `first_seq`, which is followed by segment `next_first`: as it is when
/// intact, else salvaged into the segments that replace it (none when nothing in it was
/// intact). Records acknowledged up to `acked` do not count as lost.
pub(super) fn recover_inner(
    dir: &Path,
    first_seq: u64,
    next_first: u64,
    acked: u64,
    stats: &Stats,
) -> Result<Vec<Recovered>> {
    let path = dir.join(segment_name(first_seq));
    let file = File::open(&path).map_err(io_err(&path))?;
    let file_len = file.metadata().map_err(io_err(&path))?.len();
    let scan = scan_segment(&file, first_seq, file_len).map_err(io_err(&path))?;
    if scan.problem.is_none() && first_seq + scan.count <= next_first {
        let segment = Segment { first_seq, count: scan.count, size: scan.good_len, last_held: scan.last_held };
        return Ok(vec![(segment, scan.states)]);
    }

    let prefix = read_run(&file, 0, first_seq, file_len, next_first).map_err(io_err(&path))?;
    let (mut pos, mut expected) = (prefix.end, first_seq + prefix.count);
    let mut runs = Vec::new();
    while pos < file_len {
        let seqs = expected..next_first;
        let (to, resumes) = match resync(&file, pos, file_len, &seqs).map_err(io_err(&path))? {
            Some((offset, seq)) => (offset, Some(seq)),
            None => (file_len, None),
        };
        report_hole(&path, pos..to, expected..resumes.unwrap_or(next_first), acked, stats);
        let Some(seq) = resumes else { break };
        let run = read_run(&file, to, seq, file_len, next_first).map_err(io_err(&path))?;
        pos = run.end;
        expected = seq + run.count;
        runs.push(run);
    }

    let mut out = Vec::with_capacity(runs.len() + 1);
    for run in runs {
        write_run(dir, &file, &run)?;
        out.push(run);
    }
    if prefix.count == 0 {
        fs::remove_file(&path).map_err(io_err(&path))?;
        sync_dir(dir)?;
    } else {
        write_run(dir, &file, &prefix)?;
        out.insert(0, prefix);
    }
    Ok(out
        .into_iter()
        .map(|run| {
            let segment = Segment {
                first_seq: run.first_seq,
                count: run.count,
                size: run.end - run.start,
                last_held: run.last_held,
            };
            (segment, run.states)
        })
        .collect())
}

/// Logs and counts the damaged bytes `bytes` of `path`, which held the seqs `seqs`.
fn report_hole(path: &Path, bytes: Range<u64>, seqs: Range<u64>, acked: u64, stats: &Stats) {
    let lost = seqs.end.saturating_sub(seqs.start.max(acked + 1));
    let byte_range = format!("{}..{}", bytes.start, bytes.end);
    if lost > 0 {
        let seq_range = format!("{}..={}", seqs.start, seqs.end - 1);
        error!(
            path = %path.display(),
            bytes = %byte_range,
            seqs = %seq_range,
            lost,
            "damaged spool segment: the records in these bytes are lost; the intact records after them are kept and shipped"
        );
        Stats::add(&stats.spool_damaged_records, lost);
        Stats::add(&stats.dropped_batches, lost);
    } else if !bytes.is_empty() {
        warn!(
            path = %path.display(),
            bytes = %byte_range,
            "unreadable bytes in a spool segment skipped; no unshipped record was in them"
        );
    }
}

/// Writes `run` (bytes of `file`) as the segment named by its first seq, atomically.
fn write_run(dir: &Path, file: &File, run: &Run) -> Result<()> {
    let name = segment_name(run.first_seq);
    let tmp = dir.join(format!("{name}.tmp"));
    let dest = dir.join(&name);
    let mut bytes = vec![0u8; (run.end - run.start) as usize];
    file.read_exact_at(&mut bytes, run.start).map_err(io_err(&dest))?;
    if run.last_continues {
        segment::end_group(&mut bytes[(run.last_at - run.start) as usize..]);
    }
    // `<name>.seg.tmp`: the spool's leftovers end in `.tmp`, which open removes.
    durable::write_atomic_via(&dest, &tmp, [&bytes[..]]).map_err(io_err(&dest))
}
