//! [`Spool`], the queue itself: appending groups to the last segment, reading the oldest
//! unacknowledged record, acknowledging, and deleting or dropping segments within the
//! size bound. Opening runs [`super::recovery`] first.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::ack::{check_state, merge_state, read_ack, write_ack, SavedState};
use super::recovery::{new_epoch, recover_segment};
use super::segment::{self, segment_name, segment_names, Read, Segment};
use super::{io_err, salvage, sync_dir, OnFull, Record, Result, SpoolError, SpoolOptions, ACK_PERSIST_EVERY};
use crate::stats::Stats;

/// At most one warning per this long about droppable appends dropped for held data.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// Where the record with `seq` starts, remembered so reading in order does not rescan.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    seq: u64,
    segment: u64,
    offset: u64,
}

/// The spool, synchronous. Use it through [`super::SpoolHandle`] from async code.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    epoch: u64,
    opts: SpoolOptions,
    /// Oldest first.
    pub(super) segments: VecDeque<Segment>,
    /// Append handle of the last segment; `None` means the next append starts a segment.
    active: Option<File>,
    acked: u64,
    /// The acked seq the `ack` file holds (at most `acked`).
    pub(super) acked_on_disk: u64,
    /// When the `ack` file was last written.
    pub(super) ack_written: Option<Instant>,
    next_seq: u64,
    cursor: Option<Cursor>,
    reader: Option<(u64, File)>,
    /// Newest state of every source.
    states: BTreeMap<String, SavedState>,
    /// `states` holds something the `ack` file does not.
    states_dirty: bool,
    last_drop_warn: Option<Instant>,
    stats: Arc<Stats>,
}

impl Spool {
    /// Opens the spool in `dir`, creating it on first use, draws the epoch of this open,
    /// and recovers from a crash: torn tails and unfinished groups are truncated, damaged
    /// inner segments salvaged, fully acknowledged segments deleted.
    pub fn open(dir: &Path, opts: SpoolOptions, stats: Arc<Stats>) -> Result<Spool> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let epoch = new_epoch(dir);
        let (acked, mut states) = read_ack(dir)?;

        let mut segments = VecDeque::new();
        let mut states_dirty = false;
        let names = segment_names(dir, true)?;
        for (i, &first_seq) in names.iter().enumerate() {
            // Only the last segment can end in a torn write; damage anywhere else is
            // salvaged around (see the module docs).
            let recovered = match names.get(i + 1) {
                None => vec![recover_segment(dir, first_seq, &stats)?],
                Some(&next_first) => salvage::recover_inner(dir, first_seq, next_first, acked, &stats)?,
            };
            for (segment, found) in recovered {
                segments.push_back(segment);
                for (source, saved) in found {
                    states_dirty |= merge_state(&mut states, source, saved);
                }
            }
        }

        let mut spool = Spool {
            dir: dir.to_path_buf(),
            epoch,
            opts,
            segments,
            active: None,
            acked,
            acked_on_disk: acked,
            ack_written: None,
            next_seq: 1,
            cursor: None,
            reader: None,
            states,
            states_dirty,
            last_drop_warn: None,
            stats,
        };
        let from_segments = spool.segments.back().map_or(1, Segment::end_seq);
        spool.next_seq = from_segments.max(acked + 1);

        // Append to the last segment only if the seqs continue it; otherwise start anew.
        if let Some(last) = spool.segments.back() {
            if last.end_seq() == spool.next_seq {
                let path = spool.segment_path(last.first_seq);
                let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
                spool.active = Some(file);
            } else if last.count == 0 {
                let path = spool.segment_path(last.first_seq);
                fs::remove_file(&path).map_err(io_err(&path))?;
                spool.segments.pop_back();
            }
        }
        spool.delete_acked_segments()?;
        spool.update_gauges();
        debug!(dir = %dir.display(), epoch, acked, next_seq = spool.next_seq, segments = spool.segments.len(), sources = spool.states.len(), "spool open");
        Ok(spool)
    }

    /// The epoch of the records this open appends (part of their batch ids).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The newest state saved by `source`, if it ever saved one.
    pub fn source_state(&self, source: &str) -> Option<&[u8]> {
        self.states.get(source).map(|s| s.json.as_slice())
    }

    /// Appends one droppable or held record without a state; returns its seq.
    pub fn append(&mut self, table: &str, body: &[u8], on_full: OnFull) -> Result<u64> {
        let seqs = self.append_records(&[(table, body)], None, on_full)?;
        Ok(seqs[0])
    }

    /// Appends a group: every record of `records` (`(table, body)`) and, with the last one,
    /// the new `state` of a source (`(source, json)`), all durable together or not at
    /// all. Returns the seqs of the records. A group without records but with a state
    /// saves the state in the `ack` file and returns no seq.
    pub fn append_group(
        &mut self,
        records: Vec<(String, Vec<u8>)>,
        state: Option<(String, Vec<u8>)>,
        on_full: OnFull,
    ) -> Result<Vec<u64>> {
        let refs: Vec<(&str, &[u8])> = records.iter().map(|(t, b)| (t.as_str(), b.as_slice())).collect();
        let state = state.as_ref().map(|(s, j)| (s.as_str(), j.as_slice()));
        self.append_records(&refs, state, on_full)
    }

    fn append_records(
        &mut self,
        records: &[(&str, &[u8])],
        state: Option<(&str, &[u8])>,
        on_full: OnFull,
    ) -> Result<Vec<u64>> {
        for (table, _) in records {
            if table.is_empty() || table.len() > 255 {
                return Err(SpoolError::Table((*table).to_string()));
            }
        }
        if let Some((source, json)) = state {
            check_state(source, json)?;
        }
        if records.is_empty() {
            if let Some((source, json)) = state {
                self.save_state_only(source, json)?;
            }
            return Ok(Vec::new());
        }

        let n = records.len();
        let last_state = |i: usize| if i + 1 == n { state } else { None };
        let len: u64 =
            records.iter().enumerate().map(|(i, (t, b))| segment::encoded_len(t, b.len(), last_state(i))).sum();
        let max = self.opts.max_size;
        if len > max {
            return Err(SpoolError::TooLarge { len, max });
        }
        while self.size() + len > max {
            match on_full {
                OnFull::Reject => return Err(SpoolError::Full { size: self.size(), needed: len, max }),
                OnFull::DropOldest => {
                    if !self.drop_oldest()? {
                        self.count_dropped_group(n as u64, len);
                        return Err(SpoolError::Dropped { records: n as u64 });
                    }
                }
            }
        }

        let roll = match (&self.active, self.segments.back()) {
            (Some(_), Some(last)) => last.size > 0 && last.size + len > self.opts.segment_size,
            _ => true,
        };
        if roll {
            self.start_segment()?;
        }
        let held = on_full == OnFull::Reject;
        let mut bytes = Vec::with_capacity(len as usize);
        for (i, (table, body)) in records.iter().enumerate() {
            let mut flags = if held { segment::HELD } else { 0 };
            if i + 1 < n {
                flags |= segment::CONTINUES;
            }
            let seq = self.next_seq + i as u64;
            segment::encode_into(&mut bytes, self.epoch, seq, flags, table, body, last_state(i));
        }
        let (Some(file), Some(last)) = (self.active.as_mut(), self.segments.back_mut()) else {
            unreachable!("start_segment leaves an active segment");
        };
        let path = self.dir.join(segment_name(last.first_seq));
        let written = file.write_all(&bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut the partial group off so the segment stays well-formed; if even that
            // fails, stop appending to it (open() truncates the tail later).
            if file.set_len(last.size).is_err() {
                self.active = None;
            }
            return Err(io_err(&path)(e));
        }
        let first = self.next_seq;
        self.next_seq += n as u64;
        last.count += n as u64;
        last.size += len;
        if held {
            last.last_held = self.next_seq - 1;
        }
        if let Some((source, json)) = state {
            let saved = SavedState::new(self.next_seq - 1, json.to_vec());
            self.states.insert(source.to_string(), saved);
            self.states_dirty = true;
        }
        self.update_gauges();
        Ok((first..self.next_seq).collect())
    }

    /// A state with no records: straight into the `ack` file, at the last seq given out.
    fn save_state_only(&mut self, source: &str, json: &[u8]) -> Result<()> {
        let saved = SavedState::new(self.next_seq - 1, json.to_vec());
        if self.states.get(source) == Some(&saved) {
            return Ok(());
        }
        let old = self.states.insert(source.to_string(), saved);
        if let Err(e) = self.write_ack_file() {
            // Not saved: the previous state stays the one in force.
            match old {
                Some(o) => self.states.insert(source.to_string(), o),
                None => self.states.remove(source),
            };
            return Err(e);
        }
        Ok(())
    }

    fn count_dropped_group(&mut self, records: u64, len: u64) {
        Stats::add(&self.stats.dropped_batches, records);
        let now = Instant::now();
        if self.last_drop_warn.is_none_or(|t| now.duration_since(t) >= DROP_WARN_EVERY) {
            self.last_drop_warn = Some(now);
            warn!(
                records,
                bytes = len,
                max_size = self.opts.max_size,
                "spool full of held (log) data: droppable records dropped"
            );
        }
    }

    /// The oldest record not yet acknowledged, read from disk.
    pub fn peek(&mut self) -> Result<Option<Record>> {
        loop {
            let target = self.acked + 1;
            let Some(seg) = self.segments.iter().find(|s| s.count > 0 && s.end_seq() > target) else {
                return Ok(None);
            };
            let (first_seq, seg_size) = (seg.first_seq, seg.size);
            // Records before `target` may have been dropped with their segment.
            let seq = target.max(first_seq);
            let path = self.segment_path(first_seq);
            let offset = match self.cursor {
                Some(c) if c.seq == seq && c.segment == first_seq => c.offset,
                _ => self.find_offset(first_seq, seq, seg_size)?,
            };
            let file = self.reader_for(first_seq)?;
            match segment::read_at(file, offset, seg_size).map_err(io_err(&path))? {
                Read::Record { len, record } if record.seq == seq => {
                    self.cursor = Some(Cursor { seq: seq + 1, segment: first_seq, offset: offset + len });
                    return Ok(Some(record));
                }
                other => {
                    // Damaged after open (the open scan verified it): skip the record,
                    // count it, and keep the queue moving.
                    warn!(path = %path.display(), seq, offset, found = ?other, "unreadable spool record skipped");
                    Stats::add(&self.stats.dropped_batches, 1);
                    self.acked = seq;
                    self.cursor = None;
                }
            }
        }
    }

    /// Marks every record up to `seq` as delivered and deletes segments that hold nothing
    /// else. The ack is persisted with the source states before a segment is deleted, and
    /// otherwise at most every [`ACK_PERSIST_EVERY`] (see the module docs). Acking a seq
    /// already acked or dropped is a no-op.
    pub fn ack(&mut self, seq: u64) -> Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        if seq >= self.next_seq {
            return Err(SpoolError::AckBeyondEnd { seq, last: self.next_seq - 1 });
        }
        let previous = self.acked;
        self.acked = seq;
        let due = self.ack_written.is_none_or(|t| t.elapsed() >= ACK_PERSIST_EVERY);
        if due {
            if let Err(e) = self.write_ack_file() {
                self.acked = previous;
                return Err(e);
            }
        }
        // Persists the ack first when it deletes a segment.
        self.delete_acked_segments()?;
        self.update_gauges();
        Ok(())
    }

    /// Writes an ack not persisted yet (see [`Spool::ack`]); the spool does it when
    /// dropped too. A no-op when the `ack` file is up to date.
    pub fn sync_ack(&mut self) -> Result<()> {
        if self.acked_on_disk < self.acked {
            self.write_ack_file()?;
        }
        Ok(())
    }

    /// Rewrites the `ack` file with the acked seq and every state.
    fn write_ack_file(&mut self) -> Result<()> {
        write_ack(&self.dir, self.acked, &self.states)?;
        self.acked_on_disk = self.acked;
        self.ack_written = Some(Instant::now());
        self.states_dirty = false;
        Ok(())
    }

    /// Bytes of segment files on disk.
    pub fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    /// Records not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.segments.iter().map(|s| s.end_seq().saturating_sub(s.first_seq.max(self.acked + 1))).sum()
    }

    fn segment_path(&self, first_seq: u64) -> PathBuf {
        self.dir.join(segment_name(first_seq))
    }

    fn start_segment(&mut self) -> Result<()> {
        let path = self.segment_path(self.next_seq);
        // `create` rather than `create_new`: an empty file of that name can remain from a
        // crash between creating it and writing the first record.
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        file.set_len(0).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment { first_seq: self.next_seq, count: 0, size: 0, last_held: 0 });
        self.active = Some(file);
        Ok(())
    }

    /// Writes the states and the ack to the `ack` file if it lacks some: called before
    /// deleting a segment, whose records may be the only copy of a state.
    fn persist_states(&mut self) -> Result<()> {
        if self.states_dirty || self.acked_on_disk < self.acked {
            self.write_ack_file()?;
        }
        Ok(())
    }

    /// Deletes the oldest segment (rolling first if it is the one being appended to) if
    /// none of its unacknowledged records is held; `false` when it holds one.
    fn drop_oldest(&mut self) -> Result<bool> {
        match self.segments.front() {
            Some(seg) if seg.last_held > self.acked => return Ok(false),
            Some(_) => {}
            None => return Ok(false),
        }
        self.persist_states()?;
        if self.segments.len() == 1 && self.active.is_some() {
            // Start the next segment before deleting the only one: its name keeps the
            // next seq across a crash, so no batch id (nor a state's seq) is given twice.
            self.start_segment()?;
        }
        let Some(seg) = self.segments.pop_front() else {
            return Ok(false);
        };
        let lost = seg.end_seq().saturating_sub(seg.first_seq.max(self.acked + 1));
        self.remove_segment_file(seg.first_seq)?;
        if lost > 0 {
            Stats::add(&self.stats.dropped_batches, lost);
            warn!(
                segment = seg.first_seq,
                records = lost,
                max_size = self.opts.max_size,
                "spool full: dropped the oldest unshipped droppable records"
            );
        }
        Ok(true)
    }

    fn delete_acked_segments(&mut self) -> Result<()> {
        loop {
            let deletable = match self.segments.front() {
                Some(first) => {
                    let is_active = self.segments.len() == 1 && self.active.is_some();
                    !is_active && first.end_seq() <= self.acked + 1
                }
                None => false,
            };
            if !deletable {
                return Ok(());
            }
            self.persist_states()?;
            if let Some(seg) = self.segments.pop_front() {
                self.remove_segment_file(seg.first_seq)?;
            }
        }
    }

    fn remove_segment_file(&mut self, first_seq: u64) -> Result<()> {
        if self.reader.as_ref().is_some_and(|(s, _)| *s == first_seq) {
            self.reader = None;
        }
        if self.cursor.is_some_and(|c| c.segment == first_seq) {
            self.cursor = None;
        }
        let path = self.segment_path(first_seq);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn reader_for(&mut self, first_seq: u64) -> Result<&File> {
        if self.reader.as_ref().is_none_or(|(s, _)| *s != first_seq) {
            let path = self.segment_path(first_seq);
            let file = File::open(&path).map_err(io_err(&path))?;
            self.reader = Some((first_seq, file));
        }
        match &self.reader {
            Some((_, f)) => Ok(f),
            None => unreachable!("reader set above"),
        }
    }

    /// Offset of `seq` in segment `first_seq`, walking record headers from the start.
    fn find_offset(&mut self, first_seq: u64, seq: u64, seg_size: u64) -> Result<u64> {
        let path = self.segment_path(first_seq);
        let file = self.reader_for(first_seq)?;
        let mut offset = 0;
        for _ in first_seq..seq {
            match segment::skip_at(file, offset, seg_size).map_err(io_err(&path))? {
                Ok(len) => offset += len,
                // Verified at open; reading the damaged record reports and skips it.
                Err(_) => break,
            }
        }
        Ok(offset)
    }

    fn update_gauges(&self) {
        Stats::set(&self.stats.spool_bytes, self.size());
        Stats::set(&self.stats.spool_records, self.pending());
    }
}

impl Drop for Spool {
    /// Persists an ack still in memory only, so a clean stop resends nothing.
    fn drop(&mut self) {
        if let Err(error) = self.sync_ack() {
            warn!(%error, "cannot persist the last ack; those batches are sent again on start");
        }
    }
}
