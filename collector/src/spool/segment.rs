//! One spool record on disk, reading a segment file record by record, and segment files:
//! their names and what the spool keeps of each in memory.
//!
//! Record: `magic u32 | payload length u32 | crc32(payload) u32 | payload`, all
//! little-endian. Payload:
//!
//! ```text
//! epoch u64 | seq u64 | flags u8 | table length u16 | source length u16 | state length u32
//! | table (UTF-8) | source (UTF-8) | state (JSON) | body
//! ```
//!
//! Flags: [`CONTINUES`] (the next record belongs to the same group) and [`HELD`] (the
//! record belongs to a source that holds its position, so the size bound may not drop
//! it). A source state (`source length > 0`) is carried by the last record of a group.
//!
//! The framing (magic, length, CRC) is [`lake_format::durable::Frame`], shared with the
//! lake's WAL; this module owns the spool's magic and bounds and the payload.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use lake_format::durable::{self, Frame};

use super::{io_err, Result};

/// "LKS2": lake spool, record format 2 (groups, flags, source states). Format 1 is not
/// read: nothing was deployed with it.
pub(crate) const MAGIC: u32 = 0x4C4B_5332;
/// Bytes before the payload.
pub(crate) const HEADER_LEN: u64 = durable::HEADER_LEN as u64;
/// Bytes of the payload before the table name.
const PAYLOAD_FIXED: usize = 8 + 8 + 1 + 2 + 2 + 4;
/// A length beyond this is garbage, not a record: it guards allocations when a header is
/// damaged but still fits inside the file.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 30;
/// Flag: the group goes on with the next record.
pub(crate) const CONTINUES: u8 = 1;
/// Flag: the record is held data (a holding source's), never dropped by the size bound.
pub(crate) const HELD: u8 = 2;
const KNOWN_FLAGS: u8 = CONTINUES | HELD;
/// The spool's framing: a payload shorter than its fixed part cannot be a record.
pub(crate) const FRAME: Frame = Frame::new(MAGIC, PAYLOAD_FIXED as u32, MAX_PAYLOAD);

/// A record as stored: which table its body belongs to and its batch id parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Epoch of the spool open that appended it, part of the batch id.
    pub epoch: u64,
    /// Position in the spool, part of the batch id.
    pub seq: u64,
    /// Table the body is for.
    pub table: String,
    /// Arrow IPC stream (zstd), sent as is.
    pub body: Vec<u8>,
    /// Another record of the same group follows.
    pub continues: bool,
    /// Held (a holding source's) rather than droppable.
    pub held: bool,
    /// `(source, state JSON)` saved with this record, on the last record of a group.
    pub state: Option<(String, Vec<u8>)>,
}

/// Size on disk of a record carrying `table`, a body of `body_len` bytes and the state.
pub(crate) fn encoded_len(table: &str, body_len: usize, state: Option<(&str, &[u8])>) -> u64 {
    let state_len = state.map_or(0, |(s, j)| s.len() + j.len());
    HEADER_LEN + (PAYLOAD_FIXED + table.len() + state_len + body_len) as u64
}

/// The full on-disk bytes of one record, appended to `out`. `table` and the source name
/// must be shorter than 64KiB, the state shorter than 4GiB (checked by the spool).
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    epoch: u64,
    seq: u64,
    flags: u8,
    table: &str,
    body: &[u8],
    state: Option<(&str, &[u8])>,
) {
    let (source, json) = state.unwrap_or(("", b""));
    let payload_len = PAYLOAD_FIXED + table.len() + source.len() + json.len() + body.len();
    out.reserve(HEADER_LEN as usize + payload_len);
    FRAME.encode_with(out, |out| {
        out.extend_from_slice(&epoch.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.push(flags);
        out.extend_from_slice(&(table.len() as u16).to_le_bytes());
        out.extend_from_slice(&(source.len() as u16).to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(table.as_bytes());
        out.extend_from_slice(source.as_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(body);
    });
}

/// The bytes of one record on its own.
#[cfg(test)]
pub(crate) fn encode(
    epoch: u64,
    seq: u64,
    flags: u8,
    table: &str,
    body: &[u8],
    state: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, epoch, seq, flags, table, body, state);
    out
}

/// Clears [`CONTINUES`] on the encoded record `bytes` (one whole record) and fixes its
/// CRC: salvage ends a run of records cut out of a damaged segment as a whole group, so
/// the file it lands in never looks torn.
pub(crate) fn end_group(bytes: &mut [u8]) {
    let flags_at = HEADER_LEN as usize + 16;
    if bytes.len() <= flags_at {
        return;
    }
    bytes[flags_at] &= !CONTINUES;
    FRAME.reseal(bytes);
}

/// Offsets in `from..file_len` where [`MAGIC`] starts: the candidates for the next
/// intact record after damage.
pub(crate) fn magic_offsets(file: &File, from: u64, file_len: u64) -> io::Result<Vec<u64>> {
    FRAME.magic_offsets(file, from, file_len)
}

/// Extension of segment files.
pub(super) const SEGMENT_EXT: &str = "seg";

/// A segment file as the spool keeps it in memory: its seqs, size and held data.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) first_seq: u64,
    pub(super) count: u64,
    pub(super) size: u64,
    /// Highest seq of a held record in the segment; 0 when none is.
    pub(super) last_held: u64,
}

impl Segment {
    pub(super) fn end_seq(&self) -> u64 {
        self.first_seq + self.count
    }
}

/// File name of the segment whose first seq is `first_seq`.
pub(super) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

/// Segment files of `dir` by first seq, in order; with `clean`, leftover `.tmp` files of
/// interrupted state writes are removed (the old file is authoritative).
pub(super) fn segment_names(dir: &Path, clean: bool) -> Result<Vec<u64>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".tmp") {
            if clean {
                let _ = fs::remove_file(entry.path());
            }
            continue;
        }
        if let Some(first) = name.strip_suffix(".seg").and_then(|s| s.parse::<u64>().ok()) {
            names.push(first);
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// What is found at an offset of a segment.
#[derive(Debug)]
pub(crate) enum Read {
    /// A whole, intact record of `len` bytes on disk.
    Record { len: u64, record: Record },
    /// The offset is the end of the file: no more records.
    End,
    /// Bytes that are not a whole record: a torn write or damage.
    Bad(&'static str),
}

/// Length on disk of the record at `offset`, checking its header only.
pub(crate) fn skip_at(file: &File, offset: u64, file_len: u64) -> io::Result<Result<u64, Read>> {
    Ok(match FRAME.header_at(file, offset, file_len)? {
        durable::Read::Frame(h) => Ok(h.frame_len()),
        durable::Read::End => Err(Read::End),
        durable::Read::Bad(bad) => Err(Read::Bad(bad.reason())),
    })
}

/// Reads and verifies the record at `offset` of a file `file_len` bytes long.
pub(crate) fn read_at(file: &File, offset: u64, file_len: u64) -> io::Result<Read> {
    Ok(match FRAME.read_at(file, offset, file_len)? {
        durable::Read::Frame(payload) => {
            let len = HEADER_LEN + payload.len() as u64;
            match decode_payload(payload) {
                Some(record) => Read::Record { len, record },
                None => Read::Bad("malformed payload"),
            }
        }
        durable::Read::End => Read::End,
        durable::Read::Bad(bad) => Read::Bad(bad.reason()),
    })
}

fn decode_payload(mut payload: Vec<u8>) -> Option<Record> {
    let u64_at = |p: &[u8], i: usize| p.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let u16_at = |p: &[u8], i: usize| p.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let epoch = u64_at(&payload, 0)?;
    let seq = u64_at(&payload, 8)?;
    let flags = *payload.get(16)?;
    if flags & !KNOWN_FLAGS != 0 {
        return None;
    }
    let tlen = usize::from(u16_at(&payload, 17)?);
    let slen = usize::from(u16_at(&payload, 19)?);
    let jlen = payload.get(21..25).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))? as usize;
    let text = |from: usize, len: usize| std::str::from_utf8(payload.get(from..from + len)?).ok().map(str::to_string);
    let table = text(PAYLOAD_FIXED, tlen)?;
    let source = text(PAYLOAD_FIXED + tlen, slen)?;
    let json_at = PAYLOAD_FIXED + tlen + slen;
    let json = payload.get(json_at..json_at + jlen)?.to_vec();
    let state = match (slen, jlen) {
        (0, 0) => None,
        (0, _) => return None,
        _ => Some((source, json)),
    };
    // Reuse the allocation for the body, the big part.
    let body = payload.split_off(json_at + jlen);
    Some(Record { epoch, seq, table, body, continues: flags & CONTINUES != 0, held: flags & HELD != 0, state })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The bytes spools on disk already hold: the shared framing must not change them.
    #[test]
    fn the_on_disk_bytes_are_unchanged() {
        let bytes = encode(7, 42, CONTINUES | HELD, "t", b"b", Some(("s", b"{}")));
        // Computed independently (Python struct + zlib.crc32) from the format above.
        let want = "32534b4c1e000000d52874f007000000000000002a0000000000000003010001000200000074737b7d62";
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, want);
    }

    #[test]
    fn a_record_round_trips_and_any_damage_is_detected() {
        let state = Some(("journald", &b"{\"cursor\":\"s=1\"}"[..]));
        let bytes = encode(7, 42, CONTINUES | HELD, "metrics", b"arrow body", state);
        assert_eq!(bytes.len() as u64, encoded_len("metrics", 10, state));
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        let len = bytes.len() as u64;
        match read_at(&f, 0, len).unwrap() {
            Read::Record { len: l, record } => {
                assert_eq!(l, len);
                assert_eq!(
                    record,
                    Record {
                        epoch: 7,
                        seq: 42,
                        table: "metrics".into(),
                        body: b"arrow body".to_vec(),
                        continues: true,
                        held: true,
                        state: Some(("journald".into(), b"{\"cursor\":\"s=1\"}".to_vec())),
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(read_at(&f, len, len).unwrap(), Read::End));
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x10;
            let mut g = tempfile::tempfile().unwrap();
            g.write_all(&damaged).unwrap();
            assert!(matches!(read_at(&g, 0, len).unwrap(), Read::Bad(_)), "flip at byte {i} not detected");
        }
        // No state, no flags: an empty body still decodes.
        let bytes = encode(1, 2, 0, "t", b"", None);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        match read_at(&f, 0, bytes.len() as u64).unwrap() {
            Read::Record { record, .. } => {
                assert!(!record.continues && !record.held && record.state.is_none());
                assert!(record.body.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }
}
