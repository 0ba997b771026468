//! The framed record: the unit both the collector's spool and the lake's WAL append, and
//! check again after a crash.
//!
//! ```text
//! magic u32 LE | payload length u32 LE | crc32(payload) u32 LE | payload
//! ```
//!
//! The CRC (CRC-32/ISO-HDLC, as `crc32fast` computes it) covers the payload only; the
//! header is checked by its magic and by the length fitting the file and the format's
//! bounds. Each user keeps its own magic and bounds in a [`Frame`] (spool `LKS2`, WAL
//! `LAKW`), so their files stay byte-for-byte what they always were, and what the
//! payload holds is the user's business.
//!
//! A torn write (a crash mid-append) leaves a tail that is not a whole frame; damage
//! elsewhere (a bad sector, a stray write) leaves bytes that fail the checks with intact
//! frames after them. [`Frame::scan`] tells the two apart in a file read whole; the
//! spool, which never reads a segment whole, uses [`Frame::read_at`] and
//! [`Frame::magic_offsets`] on the file itself.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// Bytes before the payload: magic, length, CRC.
pub const HEADER_LEN: usize = 12;

/// One on-disk format's framing: its magic and the payload lengths it can hold. A length
/// outside the bounds is damage, never a record, which also bounds what a damaged header
/// can make a reader allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// First four bytes of every record (stored little-endian).
    pub magic: u32,
    /// Shortest payload a record of this format has.
    pub min_payload: u32,
    /// Longest payload a record of this format may have.
    pub max_payload: u32,
}

/// Why the bytes at an offset are not a whole, intact record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Fewer bytes than a header are left.
    ShortHeader,
    /// The header does not start with the format's magic.
    BadMagic,
    /// The length is outside the format's bounds.
    ImpossibleLength,
    /// The file ends before the payload the header announces.
    ShortPayload,
    /// The payload does not match its CRC.
    BadChecksum,
}

impl Bad {
    /// Short lowercase reason, for logs.
    pub fn reason(self) -> &'static str {
        match self {
            Bad::ShortHeader => "short header",
            Bad::BadMagic => "bad magic",
            Bad::ImpossibleLength => "impossible length",
            Bad::ShortPayload => "short payload",
            Bad::BadChecksum => "bad checksum",
        }
    }
}

/// A header that passed its checks (magic, bounds, fits the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of payload after the header.
    pub payload_len: u32,
    /// CRC-32 the payload must have.
    pub crc: u32,
}

impl Header {
    /// Bytes of the whole record on disk.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.payload_len)
    }
}

/// What is found at an offset of a file.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<T> {
    /// A whole record (its header, or its CRC-checked payload).
    Frame(T),
    /// The offset is the end of the file: no more records.
    End,
    /// Bytes that are not a whole, intact record: a torn write or damage.
    Bad(Bad),
}

/// The records of a buffer holding a whole file, as [`Frame::scan`] found them.
#[derive(Debug)]
pub struct Scan<T> {
    /// Every intact record, decoded, with its bytes in the buffer, in order.
    pub records: Vec<(T, Range<usize>)>,
    /// Unreadable ranges with an intact record after them: damage, not a torn write.
    pub damaged: Vec<Range<usize>>,
    /// Start of unreadable bytes running to the end of the buffer (a torn tail in the
    /// file appended to last; damage anywhere else).
    pub tail: Option<usize>,
    /// Length of the buffer scanned.
    pub len: usize,
}

impl<T> Scan<T> {
    /// Bytes of the intact records.
    pub fn good_len(&self) -> usize {
        self.records.iter().map(|(_, r)| r.len()).sum()
    }

    /// Bytes of the unreadable tail: what cutting the torn tail removes.
    pub fn cut(&self) -> usize {
        self.tail.map_or(0, |t| self.len - t)
    }
}

impl Frame {
    /// The framing of a format with `magic` and payloads of `min_payload..=max_payload`
    /// bytes.
    pub const fn new(magic: u32, min_payload: u32, max_payload: u32) -> Frame {
        Frame { magic, min_payload, max_payload }
    }

    /// Appends one record to `out`: the header, then the payload `payload` writes to the
    /// buffer, then the length and CRC filled in. The payload must respect the bounds
    /// (the caller checks its input before encoding).
    pub fn encode_with(&self, out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        out.extend_from_slice(&self.magic.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        payload(out);
        let len = out.len() - start - HEADER_LEN;
        debug_assert!(
            (self.min_payload as usize..=self.max_payload as usize).contains(&len),
            "a {len}-byte payload is outside the format's bounds"
        );
        out[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
        self.reseal(&mut out[start..]);
    }

    /// Recomputes the CRC of the one whole record `record` after its payload was changed
    /// in place.
    pub fn reseal(&self, record: &mut [u8]) {
        if record.len() < HEADER_LEN {
            return;
        }
        let crc = crc32fast::hash(&record[HEADER_LEN..]);
        record[8..12].copy_from_slice(&crc.to_le_bytes());
    }

    /// Checks the header `head`, followed by `after` more bytes in the file.
    pub fn header(&self, head: &[u8; HEADER_LEN], after: u64) -> Result<Header, Bad> {
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        if word(0) != self.magic {
            return Err(Bad::BadMagic);
        }
        let payload_len = word(4);
        if payload_len > self.max_payload || payload_len < self.min_payload {
            return Err(Bad::ImpossibleLength);
        }
        if after < u64::from(payload_len) {
            return Err(Bad::ShortPayload);
        }
        Ok(Header { payload_len, crc: word(8) })
    }

    /// The CRC-checked payload of the record at `at` of `buf`.
    pub fn frame_at<'a>(&self, buf: &'a [u8], at: usize) -> Result<&'a [u8], Bad> {
        let head = buf.get(at..).and_then(|b| b.first_chunk::<HEADER_LEN>()).ok_or(Bad::ShortHeader)?;
        let after = (buf.len() - at - HEADER_LEN) as u64;
        let header = self.header(head, after)?;
        let payload = &buf[at + HEADER_LEN..at + HEADER_LEN + header.payload_len as usize];
        if crc32fast::hash(payload) != header.crc {
            return Err(Bad::BadChecksum);
        }
        Ok(payload)
    }

    /// The decoded record at `at` of `buf` and its length on disk.
    fn record_at<T>(&self, buf: &[u8], at: usize, decode: impl Fn(&[u8]) -> Option<T>) -> Option<(T, usize)> {
        let payload = self.frame_at(buf, at).ok()?;
        decode(payload).map(|rec| (rec, HEADER_LEN + payload.len()))
    }

    /// The header of the record at `offset` of `file`, `file_len` bytes long.
    pub fn header_at(&self, file: &File, offset: u64, file_len: u64) -> io::Result<Read<Header>> {
        if offset == file_len {
            return Ok(Read::End);
        }
        let left = file_len.saturating_sub(offset);
        if left < HEADER_LEN as u64 {
            return Ok(Read::Bad(Bad::ShortHeader));
        }
        let mut head = [0u8; HEADER_LEN];
        file.read_exact_at(&mut head, offset)?;
        Ok(match self.header(&head, left - HEADER_LEN as u64) {
            Ok(h) => Read::Frame(h),
            Err(bad) => Read::Bad(bad),
        })
    }

    /// The CRC-checked payload of the record at `offset` of `file`, `file_len` bytes
    /// long, read with one allocation of the (bounded) length its header claims.
    pub fn read_at(&self, file: &File, offset: u64, file_len: u64) -> io::Result<Read<Vec<u8>>> {
        let header = match self.header_at(file, offset, file_len)? {
            Read::Frame(h) => h,
            Read::End => return Ok(Read::End),
            Read::Bad(bad) => return Ok(Read::Bad(bad)),
        };
        let mut payload = vec![0u8; header.payload_len as usize];
        file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)?;
        if crc32fast::hash(&payload) != header.crc {
            return Ok(Read::Bad(Bad::BadChecksum));
        }
        Ok(Read::Frame(payload))
    }

    /// Offsets in `from..file_len` of `file` where the magic starts, read in chunks: the
    /// candidates for the next intact record after damage.
    pub fn magic_offsets(&self, file: &File, from: u64, file_len: u64) -> io::Result<Vec<u64>> {
        const CHUNK: u64 = 1 << 20;
        let magic = self.magic.to_le_bytes();
        let mut found = Vec::new();
        let mut pos = from;
        let mut buf = Vec::new();
        while pos + 4 <= file_len {
            // Chunks overlap by three bytes so a magic across a boundary is seen.
            let len = CHUNK.min(file_len - pos);
            buf.resize(len as usize, 0);
            file.read_exact_at(&mut buf, pos)?;
            found.extend(buf.windows(4).enumerate().filter(|(_, w)| *w == magic).map(|(i, _)| pos + i as u64));
            if pos + len >= file_len {
                break;
            }
            pos += len - 3;
        }
        found.dedup();
        Ok(found)
    }

    /// Reads every record of `buf` (a whole file), decoding payloads with `decode` (a
    /// payload it refuses counts as damage). After an unreadable record, reading resumes
    /// at the next intact one (see [`Frame::resume_after`]); unreadable bytes with no
    /// intact record after them are the [`Scan::tail`].
    pub fn scan<T>(&self, buf: &[u8], decode: impl Fn(&[u8]) -> Option<T>) -> Scan<T> {
        let mut out = Scan { records: Vec::new(), damaged: Vec::new(), tail: None, len: buf.len() };
        let mut at = 0;
        while at < buf.len() {
            if let Some((rec, len)) = self.record_at(buf, at, &decode) {
                out.records.push((rec, at..at + len));
                at += len;
                continue;
            }
            match self.resume_after(buf, at, &decode) {
                Some(next) if next < buf.len() => {
                    out.damaged.push(at..next);
                    at = next;
                }
                _ => {
                    out.tail = Some(at);
                    break;
                }
            }
        }
        out
    }

    /// Where the first intact record after the unreadable record at `at` starts, if any.
    ///
    /// When the header at `at` still looks right (magic, a length that fits) and an intact
    /// record (or the end of the buffer) is exactly where it says it ends, only that
    /// record is skipped: the damage was inside its payload. Otherwise the bytes are
    /// searched for the next offset holding an intact record. Trying the record's own
    /// boundary first matters: a search that starts inside a payload could take bytes a
    /// sender put in its body for a record.
    pub fn resume_after<T>(&self, buf: &[u8], at: usize, decode: impl Fn(&[u8]) -> Option<T>) -> Option<usize> {
        let intact = |at: usize| self.record_at(buf, at, &decode).is_some();
        if let Some(head) = buf.get(at..).and_then(|b| b.first_chunk::<HEADER_LEN>()) {
            let after = (buf.len() - at - HEADER_LEN) as u64;
            if let Ok(h) = self.header(head, after) {
                let end = at + h.frame_len() as usize;
                if end == buf.len() || intact(end) {
                    return Some(end);
                }
            }
        }
        let magic = self.magic.to_le_bytes();
        let mut from = at + 1;
        while from + HEADER_LEN <= buf.len() {
            let hit = from + buf[from..].windows(4).position(|w| w == magic)?;
            if intact(hit) {
                return Some(hit);
            }
            from = hit + 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A format whose payloads have at least one byte, so a zero length is damage.
    const F: Frame = Frame::new(0x4C4B_5454, 1, 1 << 20);

    fn record(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        F.encode_with(&mut out, |o| o.extend_from_slice(payload));
        out
    }

    fn file(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn decode(p: &[u8]) -> Option<Vec<u8>> {
        Some(p.to_vec())
    }

    #[test]
    fn the_layout_is_magic_length_crc_payload_little_endian() {
        let bytes = record(b"hello");
        assert_eq!(&bytes[0..4], &0x4C4B_5454u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &5u32.to_le_bytes());
        assert_eq!(&bytes[8..12], &crc32fast::hash(b"hello").to_le_bytes());
        assert_eq!(&bytes[12..], b"hello");
        // Records append: the second starts where the first ends.
        let mut two = bytes.clone();
        F.encode_with(&mut two, |o| o.push(7));
        assert_eq!(F.frame_at(&two, 0), Ok(&b"hello"[..]));
        assert_eq!(F.frame_at(&two, bytes.len()), Ok(&[7u8][..]));
    }

    #[test]
    fn a_torn_tail_at_every_offset_is_cut_back_to_the_last_whole_record() {
        let first = record(b"first record");
        let second = record(b"second one");
        let whole = [first.clone(), second.clone()].concat();
        for cut in 0..=whole.len() {
            let buf = &whole[..cut];
            let scan = F.scan(buf, decode);
            let kept = usize::from(cut >= first.len()) + usize::from(cut == whole.len());
            assert_eq!(scan.records.len(), kept, "cut at {cut}");
            assert!(scan.damaged.is_empty(), "cut at {cut}");
            let good = if cut == whole.len() { whole.len() } else { first.len().min(cut) * usize::from(kept > 0) };
            assert_eq!(scan.good_len(), good, "cut at {cut}");
            assert_eq!(scan.cut(), cut - good, "cut at {cut}");
            assert_eq!(scan.tail, (cut > good).then_some(good), "cut at {cut}");
            // The same verdicts reading the file in place.
            let f = file(buf);
            let at = if cut >= first.len() { first.len() } else { 0 };
            let read = F.read_at(&f, at as u64, cut as u64).unwrap();
            match cut - at {
                0 => assert_eq!(read, Read::End),
                n if n < HEADER_LEN => assert_eq!(read, Read::Bad(Bad::ShortHeader)),
                n if n < second.len() && at > 0 || n < first.len() && at == 0 => {
                    assert_eq!(read, Read::Bad(Bad::ShortPayload), "cut at {cut}")
                }
                _ => assert!(matches!(read, Read::Frame(_))),
            }
        }
    }

    #[test]
    fn a_flip_anywhere_is_detected() {
        let bytes = record(b"payload with some length");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(F.frame_at(&bad, 0).is_err(), "flip at byte {i} not detected");
            assert!(matches!(F.read_at(&file(&bad), 0, bad.len() as u64).unwrap(), Read::Bad(_)), "flip at {i}");
        }
    }

    #[test]
    fn bad_crc_bad_magic_zero_and_huge_lengths_are_named() {
        let good = record(b"abc");
        let mut crc = good.clone();
        crc[8] ^= 1;
        assert_eq!(F.frame_at(&crc, 0), Err(Bad::BadChecksum));
        let mut magic = good.clone();
        magic[0] ^= 1;
        assert_eq!(F.frame_at(&magic, 0), Err(Bad::BadMagic));
        let mut zero = good.clone();
        zero[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(F.frame_at(&zero, 0), Err(Bad::ImpossibleLength));
        // A huge claim is refused from the header: nothing of that size is allocated.
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(F.frame_at(&huge, 0), Err(Bad::ImpossibleLength));
        let f = file(&huge);
        assert_eq!(F.read_at(&f, 0, huge.len() as u64).unwrap(), Read::Bad(Bad::ImpossibleLength));
        assert_eq!(F.header_at(&f, 0, huge.len() as u64).unwrap(), Read::Bad(Bad::ImpossibleLength));
        // Within bounds but past the end of the file.
        let mut long = good.clone();
        long[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(F.frame_at(&long, 0), Err(Bad::ShortPayload));
        // A format that allows empty payloads reads one.
        let empty = Frame::new(1, 0, 16);
        let mut out = Vec::new();
        empty.encode_with(&mut out, |_| {});
        assert_eq!(empty.frame_at(&out, 0), Ok(&[][..]));
        // Another format's records are not this one's.
        assert_eq!(empty.frame_at(&good, 0), Err(Bad::BadMagic));
        assert_eq!(Bad::BadChecksum.reason(), "bad checksum");
    }

    #[test]
    fn damage_in_the_middle_is_skipped_and_the_records_after_it_kept() {
        let recs: Vec<Vec<u8>> = (0..4u8).map(|i| record(&[i; 40])).collect();
        let whole = recs.concat();
        let len = recs[0].len();
        // Payload damage: the record's own header says where the next one starts.
        let mut buf = whole.clone();
        buf[len + HEADER_LEN + 5] ^= 0xFF;
        let scan = F.scan(&buf, decode);
        assert_eq!(scan.records.iter().map(|(r, _)| r[0]).collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!(scan.damaged, vec![len..2 * len]);
        assert_eq!(scan.tail, None);
        // Header damage: found again by the magic.
        let mut buf = whole.clone();
        buf[len + 5] ^= 0xFF;
        let scan = F.scan(&buf, decode);
        assert_eq!(scan.records.len(), 3);
        assert_eq!(scan.damaged, vec![len..2 * len]);
        // A payload the decoder refuses is damage too.
        let scan = F.scan(&whole, |p: &[u8]| (p[0] != 1).then_some(p[0]));
        assert_eq!(scan.records.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [0, 2, 3]);
        // Damage in the last record with nothing intact after it is the tail.
        let mut buf = whole.clone();
        buf[3 * len + HEADER_LEN] ^= 0xFF;
        let scan = F.scan(&buf, decode);
        assert_eq!((scan.records.len(), scan.tail, scan.cut()), (3, Some(3 * len), len));
    }

    #[test]
    fn a_record_resealed_after_an_edit_reads_again() {
        let mut bytes = record(b"abc");
        bytes[HEADER_LEN] = b'x';
        assert_eq!(F.frame_at(&bytes, 0), Err(Bad::BadChecksum));
        F.reseal(&mut bytes);
        assert_eq!(F.frame_at(&bytes, 0), Ok(&b"xbc"[..]));
    }

    #[test]
    fn magic_offsets_are_found_across_chunk_boundaries() {
        // A record straddling the 1 MiB chunk boundary, and one right after it.
        let pad = (1 << 20) - 2;
        let mut bytes = vec![0u8; pad];
        bytes.extend(record(b"one"));
        let second = bytes.len();
        bytes.extend(record(b"two"));
        let f = file(&bytes);
        let len = bytes.len() as u64;
        assert_eq!(F.magic_offsets(&f, 0, len).unwrap(), [pad as u64, second as u64]);
        assert_eq!(F.magic_offsets(&f, pad as u64 + 1, len).unwrap(), [second as u64]);
        assert!(F.magic_offsets(&f, len, len).unwrap().is_empty());
    }
}
