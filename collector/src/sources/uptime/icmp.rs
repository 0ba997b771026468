//! ICMP echo ("ping") checks over IPv4 and IPv6.
//!
//! The socket is an unprivileged ICMP datagram socket when the kernel allows it (the
//! process's group is within `net.ipv4.ping_group_range`, which also governs IPv6), and a
//! raw socket otherwise (needs CAP_NET_RAW). A datagram socket gets only the replies to
//! its own requests (the kernel sets the identifier to the socket's port and filters);
//! a raw socket gets every ICMP packet of the host, so replies are matched on the
//! identifier and on a random token in the payload. The kernel computes the ICMPv6
//! checksum (it covers a pseudo-header with addresses only the kernel knows); ICMPv4
//! checksums are ours.
//!
//! A run sends `count` requests `PACKET_GAP` apart and waits for the replies until the
//! check's timeout; `ok` means at least `count - max_lost` replies came back. Latency is
//! the average round trip; min/avg/max and the loss go in attrs.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use super::{IcmpCheck, Outcome, PingSocket as SocketKind};

/// Time between two requests of one run (ping's default is 1 s; a check wants its answer
/// within its timeout).
pub(super) const PACKET_GAP: Duration = Duration::from_millis(200);
/// Bytes after the ICMP header: an 8-byte token, then the request's sequence number.
const PAYLOAD: usize = 16;
/// Largest packet read: an IPv4 header with options, ICMP header and our payload, with room.
const RECV_BUF: usize = 1500;

/// How to allow unprivileged ICMP sockets.
const ALLOW_DGRAM: &str = "an unprivileged ICMP socket needs the collector's group within the sysctl \
     net.ipv4.ping_group_range (e.g. `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`)";
/// How to allow raw sockets.
const ALLOW_RAW: &str =
    "a raw socket needs the capability CAP_NET_RAW (`AmbientCapabilities=CAP_NET_RAW` in the systemd unit)";

/// The error when no allowed socket kind may be opened: names the sysctl and the capability.
pub(super) fn not_permitted(dgram: Option<&io::Error>, raw: Option<&io::Error>) -> String {
    let mut why = Vec::new();
    if let Some(e) = dgram {
        why.push(format!("{ALLOW_DGRAM}; it was refused: {e}"));
    }
    if let Some(e) = raw {
        why.push(format!("{ALLOW_RAW}; it was refused: {e}"));
    }
    format!("ICMP is not permitted: {}", why.join(", and "))
}

/// An open ICMP socket of either kind for one address family.
struct IcmpSocket {
    fd: AsyncFd<OwnedFd>,
    kind: SocketKind,
}

fn open(v6: bool, ty: libc::c_int) -> io::Result<OwnedFd> {
    let (domain, proto) = if v6 { (libc::AF_INET6, libc::IPPROTO_ICMPV6) } else { (libc::AF_INET, libc::IPPROTO_ICMP) };
    // SAFETY: plain socket(2) call; the returned descriptor is owned by the OwnedFd below.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl IcmpSocket {
    /// A datagram socket, else a raw one (or only the kind asked for), else the error
    /// naming the sysctl and the capability.
    fn new(v6: bool, only: Option<SocketKind>) -> Result<IcmpSocket, String> {
        let mut dgram_err = None;
        let mut opened = None;
        if only != Some(SocketKind::Raw) {
            match open(v6, libc::SOCK_DGRAM) {
                Ok(fd) => opened = Some((fd, SocketKind::Dgram)),
                Err(e) => dgram_err = Some(e),
            }
        }
        let mut raw_err = None;
        if opened.is_none() && only != Some(SocketKind::Dgram) {
            match open(v6, libc::SOCK_RAW) {
                Ok(fd) => opened = Some((fd, SocketKind::Raw)),
                Err(e) => raw_err = Some(e),
            }
        }
        let Some((fd, kind)) = opened else {
            return Err(not_permitted(dgram_err.as_ref(), raw_err.as_ref()));
        };
        // SAFETY: the OwnedFd is a valid descriptor that stays open and unreplaced for as
        // long as the AsyncFd owns it.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| format!("ICMP socket: {e}"))?;
        Ok(IcmpSocket { fd, kind })
    }

    fn send_to(&self, packet: &[u8], to: IpAddr) -> io::Result<()> {
        let (storage, len) = sockaddr(SocketAddr::new(to, 0));
        // SAFETY: packet and storage are valid for the lengths given.
        let n = unsafe {
            libc::sendto(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len(), 0, (&raw const storage).cast(), len)
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One datagram and the address it came from.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Option<IpAddr>)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_from(fd.as_raw_fd(), buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_from(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<IpAddr>)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: buf and storage are valid for the lengths given; recvfrom writes at most that.
    let n =
        unsafe { libc::recvfrom(fd, buf.as_mut_ptr().cast(), buf.len(), 0, storage.as_mut_ptr().cast(), &raw mut len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zeroed storage is a valid sockaddr_storage; recvfrom filled a prefix of it.
    let storage = unsafe { storage.assume_init() };
    Ok((n as usize, from_sockaddr(&storage)))
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(s: &libc::sockaddr_storage) -> Option<IpAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let sin: &libc::sockaddr_in = unsafe { &*std::ptr::from_ref(s).cast() };
            Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 = unsafe { &*std::ptr::from_ref(s).cast() };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

/// The Internet checksum (RFC 1071).
pub(super) fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from(chunk[0]) << 8 };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request: type, code, checksum, identifier, sequence, then token and sequence.
pub(super) fn echo_request(v6: bool, id: u16, seq: u16, token: [u8; 8]) -> Vec<u8> {
    let mut p = vec![0u8; 8 + PAYLOAD];
    p[0] = if v6 { 128 } else { 8 };
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(&token);
    p[16..18].copy_from_slice(&seq.to_be_bytes());
    if !v6 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The sequence number of an echo reply to us in `packet`, `None` for anything else
/// (other ICMP traffic a raw socket sees, other pingers' replies, our own requests on
/// loopback, truncated or forged packets).
pub(super) fn parse_reply(packet: &[u8], v6: bool, kind: SocketKind, id: u16, token: [u8; 8]) -> Option<u16> {
    // A raw IPv4 socket hands over the IP header too; skip it by its length field.
    let icmp = if !v6 && kind == SocketKind::Raw {
        let ihl = usize::from(*packet.first()? & 0x0f) * 4;
        if ihl < 20 {
            return None;
        }
        packet.get(ihl..)?
    } else {
        packet
    };
    if icmp.len() < 8 + PAYLOAD || icmp[0] != if v6 { 129 } else { 0 } || icmp[1] != 0 {
        return None;
    }
    // A datagram socket's identifier is the kernel's (its port); the kernel already
    // filtered on it.
    if kind == SocketKind::Raw && u16::from_be_bytes([icmp[4], icmp[5]]) != id {
        return None;
    }
    if icmp[8..16] != token {
        return None;
    }
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    (u16::from_be_bytes([icmp[16], icmp[17]]) == seq).then_some(seq)
}

/// Round-trip summary of a run.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Summary {
    pub(super) sent: u32,
    pub(super) received: u32,
    pub(super) rtts: Vec<Duration>,
}

impl Summary {
    fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            return 100.0;
        }
        f64::from(self.sent - self.received) * 100.0 / f64::from(self.sent)
    }
}

/// Resolves the target (an IP address, or a name: its first address).
async fn resolve(host: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs = tokio::net::lookup_host((host, 0)).await.map_err(|e| format!("resolving {host}: {e}"))?;
    addrs.next().map(|a| a.ip()).ok_or_else(|| format!("resolving {host}: no address"))
}

/// One run of an ICMP check, within `timeout` (the caller's backstop adds a margin).
pub(super) async fn probe(check: &IcmpCheck, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let ip = match tokio::time::timeout_at(deadline, resolve(&check.host)).await {
        Ok(Ok(ip)) => ip,
        Ok(Err(e)) => return Outcome::failed(e),
        Err(_) => return Outcome::failed(format!("resolving {}: timeout", check.host)),
    };
    let v6 = ip.is_ipv6();
    let socket = match IcmpSocket::new(v6, check.socket) {
        Ok(s) => s,
        Err(e) => return Outcome::failed(e),
    };
    let id: u16 = rand::random();
    let token: [u8; 8] = rand::random();
    let mut summary = Summary { sent: 0, received: 0, rtts: Vec::new() };
    let mut sent_at: Vec<Option<Instant>> = vec![None; check.count as usize];
    let mut next_send = tokio::time::Instant::now();
    let mut buf = vec![0u8; RECV_BUF];
    // The first send or receive error, the likely reason of losses.
    let mut reason = None;
    let mut errors = 0u32;
    loop {
        let all_sent = summary.sent >= check.count;
        if all_sent && summary.received >= summary.sent {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = tokio::time::sleep_until(next_send), if !all_sent => {
                let seq = summary.sent as u16;
                match socket.send_to(&echo_request(v6, id, seq, token), ip) {
                    Ok(()) => sent_at[usize::from(seq)] = Some(Instant::now()),
                    // Counted as lost (e.g. "network unreachable"); the first reason is kept.
                    Err(e) => { reason.get_or_insert_with(|| e.to_string()); }
                }
                summary.sent += 1;
                next_send += PACKET_GAP;
            }
            got = socket.recv_from(&mut buf) => {
                let (n, from) = match got {
                    Ok(x) => x,
                    // An ICMP error the kernel reports on the socket ("no route to host"
                    // after a failed ARP): those requests are lost, the run goes on. The
                    // error is cleared once read; the count bounds a socket that keeps failing.
                    Err(e) => {
                        errors += 1;
                        if errors > 4 * check.count {
                            return Outcome::failed(format!("reading ICMP replies: {e}"));
                        }
                        reason.get_or_insert_with(|| e.to_string());
                        continue;
                    }
                };
                if from.is_some_and(|f| f != ip) {
                    continue;
                }
                let Some(seq) = parse_reply(&buf[..n], v6, socket.kind, id, token) else { continue };
                // Each request counts once, however many duplicates come back.
                if let Some(at) = sent_at.get_mut(usize::from(seq)).and_then(Option::take) {
                    summary.received += 1;
                    summary.rtts.push(at.elapsed());
                }
            }
        }
    }
    outcome(check, ip, socket.kind, &summary, reason, start.elapsed())
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn outcome(
    check: &IcmpCheck,
    ip: IpAddr,
    kind: SocketKind,
    s: &Summary,
    reason: Option<String>,
    took: Duration,
) -> Outcome {
    let mut out = Outcome::default();
    out.attrs.push(("address", ip.to_string()));
    out.attrs.push(("socket", kind.name().to_string()));
    out.attrs.push(("sent", s.sent.to_string()));
    out.attrs.push(("received", s.received.to_string()));
    out.attrs.push(("loss_percent", format!("{:.1}", s.loss_percent())));
    if let (Some(min), Some(max)) = (s.rtts.iter().min(), s.rtts.iter().max()) {
        let avg = s.rtts.iter().sum::<Duration>() / s.rtts.len() as u32;
        out.latency = Some(avg);
        out.attrs.push(("rtt_min_ms", ms(*min)));
        out.attrs.push(("rtt_avg_ms", ms(avg)));
        out.attrs.push(("rtt_max_ms", ms(*max)));
    }
    let lost = s.sent - s.received;
    out.ok = s.received > 0 && lost <= check.max_lost;
    if !out.ok {
        let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
        out.error = Some(if s.received == 0 {
            format!("no reply from {ip} to {} request(s) in {}{why}", s.sent, lake_format::units::Dur(took))
        } else {
            format!("{lost} of {} request(s) to {ip} lost (max_lost = {}){why}", s.sent, check.max_lost)
        });
    }
    out
}
