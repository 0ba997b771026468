//! DNS checks: one query to a given server with a minimal client of our own (RFC 1035:
//! a question out, the answer section read back), over UDP and again over TCP when the
//! UDP answer is truncated (TC set), as a stub resolver does.
//!
//! No resolver crate: the check needs one question, five record types and the rcode, and
//! a resolver would add caching, search lists and retries that hide what the server said.
//! The reader is defensive: a UDP datagram whose id or question is not ours is ignored
//! (a late answer to an earlier run, or a spoofing attempt), compression pointers may
//! only point backwards and are bounded, and every length is checked against the packet.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{DnsCheck, Outcome, RecordType};

/// Largest UDP answer read (the server keeps to 512 bytes without EDNS; anything longer
/// is still read whole rather than cut).
const UDP_BUF: usize = 65_535;
/// `attrs.answers` is cut after this many bytes (a TXT-heavy answer can be kilobytes).
const MAX_ANSWERS_ATTR: usize = 1_000;

/// Response codes by name (RFC 1035 §4.1.1, RFC 2136).
pub(super) const RCODES: [(&str, u8); 6] =
    [("NOERROR", 0), ("FORMERR", 1), ("SERVFAIL", 2), ("NXDOMAIN", 3), ("NOTIMP", 4), ("REFUSED", 5)];

/// The name of a response code (`RCODE17` beyond the common ones).
pub(super) fn rcode_name(code: u8) -> String {
    RCODES.iter().find(|(_, c)| *c == code).map_or_else(|| format!("RCODE{code}"), |(n, _)| (*n).to_string())
}

impl RecordType {
    /// The QTYPE number.
    pub(super) fn code(self) -> u16 {
        match self {
            RecordType::A => 1,
            RecordType::Cname => 5,
            RecordType::Mx => 15,
            RecordType::Txt => 16,
            RecordType::Aaaa => 28,
        }
    }
}

/// The wire form of `name` (dot-separated, a trailing dot allowed), checked.
pub(super) fn encode_name(name: &str) -> Result<Vec<u8>, String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("{name:?}: every label must have 1 to 63 bytes"));
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() > 255 {
        return Err(format!("{name:?}: longer than 255 bytes"));
    }
    Ok(out)
}

/// A query with recursion desired.
pub(super) fn query(id: u16, qname: &[u8], qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + qname.len() + 4);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&[0; 6]); // AN, NS, AR
    q.extend_from_slice(qname);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // IN
    q
}

/// One answer record, its data rendered as text.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Record {
    pub(super) rtype: u16,
    pub(super) data: String,
}

/// What the reader took from a response.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Response {
    pub(super) id: u16,
    pub(super) truncated: bool,
    pub(super) rcode: u8,
    /// The question echoed back, in wire form (lower-cased), with its type.
    pub(super) question: Option<(Vec<u8>, u16)>,
    pub(super) answers: Vec<Record>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("the answer is cut short")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A name at the cursor, following compression pointers; (wire form lower-cased, text).
    fn name(&mut self) -> Result<(Vec<u8>, String), String> {
        let (wire, text, end) = read_name(self.buf, self.pos)?;
        self.pos = end;
        Ok((wire, text))
    }
}

/// Reads a name at `start`: its wire form (lower-cased, uncompressed), its text (no
/// trailing dot; `.` for the root) and where the name ends at `start`'s level.
fn read_name(buf: &[u8], start: usize) -> Result<(Vec<u8>, String, usize), String> {
    let mut wire = Vec::new();
    let mut text = String::new();
    let mut pos = start;
    let mut end = None;
    // Pointers must go backwards, so a name cannot loop; the count is a second bound.
    let mut jumps = 0;
    loop {
        let len = *buf.get(pos).ok_or("a name runs past the end")?;
        match len & 0xc0 {
            0x00 => {
                let len = usize::from(len);
                if len == 0 {
                    wire.push(0);
                    if wire.len() > 255 {
                        return Err("a name is longer than 255 bytes".into());
                    }
                    let end = end.unwrap_or(pos + 1);
                    if text.is_empty() {
                        text.push('.');
                    }
                    return Ok((wire, text, end));
                }
                let label = buf.get(pos + 1..pos + 1 + len).ok_or("a label runs past the end")?;
                wire.push(len as u8);
                wire.extend(label.iter().map(u8::to_ascii_lowercase));
                if wire.len() > 255 {
                    return Err("a name is longer than 255 bytes".into());
                }
                if !text.is_empty() {
                    text.push('.');
                }
                for &b in label {
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        text.push(char::from(b));
                    } else {
                        let _ = write!(text, "\\{b:03}");
                    }
                }
                pos += 1 + len;
            }
            0xc0 => {
                let low = *buf.get(pos + 1).ok_or("a pointer runs past the end")?;
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                if target >= pos {
                    return Err("a compression pointer points forwards".into());
                }
                jumps += 1;
                if jumps > 64 {
                    return Err("too many compression pointers".into());
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(format!("label type {:#04x} is not supported", len & 0xc0)),
        }
    }
}

/// Reads a response; only the header, the question and the answer section.
pub(super) fn parse(buf: &[u8]) -> Result<Response, String> {
    let mut r = Reader { buf, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err("not a response (QR is 0)".into());
    }
    let (qd, an) = (r.u16()?, r.u16()?);
    r.take(4)?; // NS and AR counts: those sections are not read.
    let mut question = None;
    for _ in 0..qd {
        let (wire, _) = r.name()?;
        let qtype = r.u16()?;
        r.take(2)?;
        question.get_or_insert((wire, qtype));
    }
    let mut answers = Vec::new();
    for _ in 0..an {
        r.name()?;
        let rtype = r.u16()?;
        r.take(6)?; // class, TTL
        let len = usize::from(r.u16()?);
        let start = r.pos;
        let rdata = r.take(len)?;
        let data = match rtype {
            1 if len == 4 => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
            28 if len == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(rdata);
                Ipv6Addr::from(o).to_string()
            }
            5 => read_name(buf, start)?.1,
            15 if len >= 3 => {
                let pref = u16::from_be_bytes([rdata[0], rdata[1]]);
                format!("{pref} {}", read_name(buf, start + 2)?.1)
            }
            16 => txt(rdata)?,
            1 | 28 | 15 => return Err(format!("a type {rtype} record has {len} bytes of data")),
            other => format!("type {other} ({len} bytes)"),
        };
        answers.push(Record { rtype, data });
    }
    Ok(Response { id, truncated: flags & 0x0200 != 0, rcode: (flags & 0x000f) as u8, question, answers })
}

/// TXT data: its character-strings joined, as text.
fn txt(rdata: &[u8]) -> Result<String, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < rdata.len() {
        let n = usize::from(rdata[i]);
        out.extend_from_slice(rdata.get(i + 1..i + 1 + n).ok_or("a TXT string runs past its record")?);
        i += 1 + n;
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Whether `r` answers our query `id` for (`qname`, `qtype`).
fn is_ours(r: &Response, id: u16, qname: &[u8], qtype: u16) -> bool {
    let lower: Vec<u8> = qname.iter().map(u8::to_ascii_lowercase).collect();
    r.id == id && r.question.as_ref().is_some_and(|(n, t)| *n == lower && *t == qtype)
}

async fn over_udp(server: SocketAddr, q: &[u8], id: u16, qname: &[u8], qtype: u16) -> Result<Response, String> {
    let bind: SocketAddr =
        if server.is_ipv6() { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).await.map_err(|e| format!("UDP socket: {e}"))?;
    // connect() makes the kernel drop datagrams from any other address.
    sock.connect(server).await.map_err(|e| format!("UDP to {server}: {e}"))?;
    sock.send(q).await.map_err(|e| format!("sending to {server}: {e}"))?;
    let mut buf = vec![0u8; UDP_BUF];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|e| format!("reading from {server} (UDP): {e}"))?;
        // Not parseable or not ours: keep waiting for the real answer until the timeout.
        if let Ok(r) = parse(&buf[..n]) {
            if is_ours(&r, id, qname, qtype) {
                return Ok(r);
            }
        }
    }
}

async fn over_tcp(server: SocketAddr, q: &[u8], id: u16, qname: &[u8], qtype: u16) -> Result<Response, String> {
    let mut s =
        TcpStream::connect(server).await.map_err(|e| format!("TCP to {server}: {}", super::tcp::connect_error(&e)))?;
    let mut msg = Vec::with_capacity(q.len() + 2);
    msg.extend_from_slice(&(q.len() as u16).to_be_bytes());
    msg.extend_from_slice(q);
    s.write_all(&msg).await.map_err(|e| format!("sending to {server} (TCP): {e}"))?;
    let len = s.read_u16().await.map_err(|e| format!("reading from {server} (TCP): {e}"))?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.map_err(|e| format!("reading from {server} (TCP): {e}"))?;
    let r = parse(&buf).map_err(|e| format!("bad answer from {server}: {e}"))?;
    if !is_ours(&r, id, qname, qtype) {
        return Err(format!("the answer from {server} is not for our question"));
    }
    Ok(r)
}

/// Whether an answer matches `expect`: the same address when it is one, else the text
/// contained in the record's data (case-insensitive, as names are).
fn matches(record: &Record, expect: &str) -> bool {
    match (expect.parse::<IpAddr>(), record.data.parse::<IpAddr>()) {
        (Ok(want), Ok(got)) => want == got,
        _ => record.data.to_ascii_lowercase().contains(&expect.to_ascii_lowercase()),
    }
}

/// One run of a DNS check.
pub(super) async fn probe(check: &DnsCheck, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let qtype = check.record.code();
    let id: u16 = rand::random();
    let q = query(id, &check.qname, qtype);
    let mut transport = "udp";
    let work = async {
        let r = over_udp(check.server, &q, id, &check.qname, qtype).await?;
        if !r.truncated {
            return Ok(r);
        }
        transport = "tcp";
        over_tcp(check.server, &q, id, &check.qname, qtype).await
    };
    let got = tokio::time::timeout(timeout, work).await;
    let mut out = Outcome::default();
    out.attrs.push(("server", check.server.to_string()));
    out.attrs.push(("transport", transport.to_string()));
    let r = match got {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            out.error = Some(e);
            return out;
        }
        Err(_) => {
            out.error = Some(format!("no answer from {} in {}", check.server, lake_format::units::Dur(timeout)));
            return out;
        }
    };
    out.latency = Some(start.elapsed());
    let rcode = rcode_name(r.rcode);
    out.attrs.push(("rcode", rcode.clone()));
    let mut answers = String::new();
    for a in &r.answers {
        if answers.len() >= MAX_ANSWERS_ATTR {
            answers.push('…');
            break;
        }
        if !answers.is_empty() {
            answers.push_str(", ");
        }
        answers.push_str(&a.data);
    }
    out.attrs.push(("answers", answers));
    let wanted: Vec<&Record> = r.answers.iter().filter(|a| a.rtype == qtype).collect();
    out.error = if r.rcode != check.expect_rcode {
        Some(format!("rcode {rcode}, expected {}", rcode_name(check.expect_rcode)))
    } else if let Some(expect) = &check.expect {
        (!wanted.iter().any(|a| matches(a, expect)))
            .then(|| format!("no {} record matching {expect:?} in the answer", check.record.name()))
    } else if check.expect_rcode == 0 && wanted.is_empty() {
        Some(format!("no {} record in the answer", check.record.name()))
    } else {
        None
    };
    out.ok = out.error.is_none();
    out
}
