//! TCP framing (RFC 6587), told per frame: a frame that starts with a digit is
//! octet-counted (`<len> <message>`, §3.4.1); any other is non-transparent, ended by LF
//! (or NUL, which some senders use; a CR before the LF is dropped) — §3.4.2.
//!
//! Memory is bounded by `max` whatever the sender does: a message longer than `max` is
//! cut to its first `max` bytes (the frame says `truncated`) and the rest of it is read
//! and thrown away as it arrives, never held. Empty frames (blank lines, `0 `) are
//! skipped. An octet count that does not read (more than 9 digits, no space after it)
//! makes the frame a non-transparent one: its bytes are kept as a message.

/// One message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message (at most `max` bytes).
    pub bytes: Vec<u8>,
    /// Whether the message was longer and cut.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// At a frame's start or inside one being read.
    No,
    /// Bytes of an octet-counted message past `max` still to throw away.
    Octets(usize),
    /// The rest of a non-transparent message past `max`, up to its delimiter.
    ToDelimiter,
}

/// Splits a TCP byte stream into messages.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max: usize,
    skip: Skip,
}

/// Longest octet count read: 9 digits (up to 999,999,999 bytes, more than any limit).
const MAX_COUNT_DIGITS: usize = 9;

impl Framer {
    /// A framer cutting messages at `max` bytes.
    pub fn new(max: usize) -> Framer {
        Framer { buf: Vec::new(), max, skip: Skip::No }
    }

    /// Bytes held waiting for the rest of their frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Reads `data`, appending every complete frame to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Frame>) {
        while !data.is_empty() {
            match self.skip {
                Skip::Octets(n) => {
                    let k = n.min(data.len());
                    data = &data[k..];
                    self.skip = if n > k { Skip::Octets(n - k) } else { Skip::No };
                }
                Skip::ToDelimiter => match data.iter().position(|b| matches!(b, b'\n' | b'\0')) {
                    Some(i) => {
                        data = &data[i + 1..];
                        self.skip = Skip::No;
                    }
                    None => data = &[],
                },
                Skip::No => {
                    // Take no more than one frame can need, so `buf` stays bounded.
                    let room = (self.max + MAX_COUNT_DIGITS + 2).saturating_sub(self.buf.len()).max(1);
                    let k = room.min(data.len());
                    self.buf.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    self.drain(out);
                }
            }
        }
    }

    /// Takes every complete frame out of `buf`.
    fn drain(&mut self, out: &mut Vec<Frame>) {
        let mut start = 0;
        while self.skip == Skip::No && start < self.buf.len() {
            let b = &self.buf[start..];
            match octet_count(b) {
                Count::Yes(len, header) => {
                    let body = &b[header..];
                    if len > self.max {
                        if body.len() < self.max {
                            break;
                        }
                        out.push(Frame { bytes: body[..self.max].to_vec(), truncated: true });
                        // The part past `max` already buffered is thrown away now, the
                        // rest as it arrives.
                        let extra = len - self.max;
                        let here = (body.len() - self.max).min(extra);
                        start += header + self.max + here;
                        if here < extra {
                            self.skip = Skip::Octets(extra - here);
                        }
                    } else if body.len() >= len {
                        if len > 0 {
                            out.push(Frame { bytes: body[..len].to_vec(), truncated: false });
                        }
                        start += header + len;
                    } else {
                        break;
                    }
                }
                Count::NeedMore => break,
                Count::No => match b.iter().position(|c| matches!(c, b'\n' | b'\0')) {
                    Some(i) if i <= self.max => {
                        let line = &b[..i];
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        if !line.is_empty() {
                            out.push(Frame { bytes: line.to_vec(), truncated: false });
                        }
                        start += i + 1;
                    }
                    _ if b.len() > self.max => {
                        out.push(Frame { bytes: b[..self.max].to_vec(), truncated: true });
                        // The cut frame's delimiter may already be in the buffer.
                        match b[self.max..].iter().position(|c| matches!(c, b'\n' | b'\0')) {
                            Some(i) => start += self.max + i + 1,
                            None => {
                                start = self.buf.len();
                                self.skip = Skip::ToDelimiter;
                            }
                        }
                    }
                    _ => break,
                },
            }
        }
        self.buf.drain(..start);
    }

    /// The stream ended: what is left is the last message (a sender may end a
    /// non-transparent stream without its delimiter); an octet-counted frame cut short
    /// is kept as far as it came, marked truncated.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        let b = std::mem::take(&mut self.buf);
        if self.skip != Skip::No || b.is_empty() {
            return;
        }
        match octet_count(&b) {
            Count::Yes(_, header) if b.len() > header => {
                out.push(Frame { bytes: b[header..].to_vec(), truncated: true });
            }
            Count::Yes(..) => {}
            _ => {
                let line = b.strip_suffix(b"\r").unwrap_or(&b);
                if !line.is_empty() {
                    out.push(Frame { bytes: line.to_vec(), truncated: false });
                }
            }
        }
    }
}

enum Count {
    /// Octet-counted: the message length and the header's length (digits and space).
    Yes(usize, usize),
    /// Digits so far, the stream has not said more yet.
    NeedMore,
    /// Not an octet count: a non-transparent frame.
    No,
}

fn octet_count(b: &[u8]) -> Count {
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_COUNT_DIGITS {
        return Count::No;
    }
    match b.get(digits) {
        None => Count::NeedMore,
        Some(b' ') => {
            let len = std::str::from_utf8(&b[..digits]).ok().and_then(|s| s.parse().ok());
            len.map_or(Count::No, |len| Count::Yes(len, digits + 1))
        }
        Some(_) => Count::No,
    }
}
