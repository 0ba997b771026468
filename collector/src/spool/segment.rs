//! One spool record on disk, and reading a segment file record by record.
//!
//! Record: `magic u32 | payload length u32 | crc32(payload) u32 | payload`, all
//! little-endian. Payload: `epoch u64 | seq u64 | table length u16 | table (UTF-8) | body`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// "LKS1": lake spool, record format 1.
pub(crate) const MAGIC: u32 = 0x4C4B_5331;
/// Bytes before the payload.
pub(crate) const HEADER_LEN: u64 = 12;
/// Bytes of the payload before the table name.
const PAYLOAD_FIXED: usize = 8 + 8 + 2;
/// A length beyond this is garbage, not a record: it guards allocations when a header is
/// damaged but still fits inside the file.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 30;

/// A record as stored: which table its body belongs to and its batch id parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Spool generation, part of the batch id.
    pub epoch: u64,
    /// Position in the spool, part of the batch id.
    pub seq: u64,
    /// Table the body is for.
    pub table: String,
    /// Arrow IPC stream (zstd), sent as is.
    pub body: Vec<u8>,
}

/// Size on disk of a record carrying `table` and a body of `body_len` bytes.
pub(crate) fn encoded_len(table: &str, body_len: usize) -> u64 {
    HEADER_LEN + (PAYLOAD_FIXED + table.len() + body_len) as u64
}

/// The full on-disk bytes of one record. `table` must be shorter than 64KiB.
pub(crate) fn encode(epoch: u64, seq: u64, table: &str, body: &[u8]) -> Vec<u8> {
    let payload_len = PAYLOAD_FIXED + table.len() + body.len();
    let mut out = Vec::with_capacity(HEADER_LEN as usize + payload_len);
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&epoch.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(table.len() as u16).to_le_bytes());
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out[HEADER_LEN as usize..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
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

/// Header fields of the record at `offset`, or why there is none.
fn header_at(file: &File, offset: u64, file_len: u64) -> io::Result<Result<(u32, u32), Read>> {
    if offset == file_len {
        return Ok(Err(Read::End));
    }
    if file_len - offset < HEADER_LEN {
        return Ok(Err(Read::Bad("short header")));
    }
    let mut h = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut h, offset)?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if word(0) != MAGIC {
        return Ok(Err(Read::Bad("bad magic")));
    }
    let len = word(4);
    if len > MAX_PAYLOAD || (len as usize) < PAYLOAD_FIXED {
        return Ok(Err(Read::Bad("impossible length")));
    }
    if file_len - offset - HEADER_LEN < u64::from(len) {
        return Ok(Err(Read::Bad("short payload")));
    }
    Ok(Ok((len, word(8))))
}

/// Length on disk of the record at `offset`, checking its header only.
pub(crate) fn skip_at(file: &File, offset: u64, file_len: u64) -> io::Result<Result<u64, Read>> {
    Ok(header_at(file, offset, file_len)?.map(|(len, _)| HEADER_LEN + u64::from(len)))
}

/// Reads and verifies the record at `offset` of a file `file_len` bytes long.
pub(crate) fn read_at(file: &File, offset: u64, file_len: u64) -> io::Result<Read> {
    let (len, crc) = match header_at(file, offset, file_len)? {
        Ok(h) => h,
        Err(r) => return Ok(r),
    };
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + HEADER_LEN)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(Read::Bad("bad checksum"));
    }
    Ok(match decode_payload(payload) {
        Some(record) => Read::Record {
            len: HEADER_LEN + u64::from(len),
            record,
        },
        None => Read::Bad("malformed payload"),
    })
}

fn decode_payload(mut payload: Vec<u8>) -> Option<Record> {
    let u64_at = |p: &[u8], i: usize| {
        p.get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let epoch = u64_at(&payload, 0)?;
    let seq = u64_at(&payload, 8)?;
    let tlen = payload
        .get(16..18)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))? as usize;
    let table = std::str::from_utf8(payload.get(PAYLOAD_FIXED..PAYLOAD_FIXED + tlen)?)
        .ok()?
        .to_string();
    // Reuse the allocation for the body, the big part.
    let body = payload.split_off(PAYLOAD_FIXED + tlen);
    Some(Record {
        epoch,
        seq,
        table,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_record_round_trips_and_any_damage_is_detected() {
        let bytes = encode(7, 42, "metrics", b"arrow body");
        assert_eq!(bytes.len() as u64, encoded_len("metrics", 10));
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
                        body: b"arrow body".to_vec()
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
            assert!(
                matches!(read_at(&g, 0, len).unwrap(), Read::Bad(_)),
                "flip at byte {i} not detected"
            );
        }
    }
}
