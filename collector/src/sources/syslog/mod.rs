//! `[syslog]`: a syslog receiver, so routers, NAS boxes, UPS units, Proxmox hosts and
//! anything else without a collector can log to the nearest node. RFC 5424 and RFC 3164
//! messages ([`parse`], told per message) over UDP (one datagram, one message) and TCP
//! (octet-counted or LF/NUL-delimited framing, told per frame: [`frame`]) become `logs`
//! rows with source `syslog`.
//!
//! **Rows.** ts = the message's time (the receive time when it has none, it does not
//! read, or it is further than `max_clock_skew` from the receive time: attrs
//! `ts_received` says which), priority = severity, ident = APP-NAME or TAG, pid = PROCID,
//! message = MSG; attrs: `facility`, `hostname` (HOSTNAME), `msgid`, `sd.<id>.<param>`,
//! `sender` (the peer's IP address), `transport` (`udp`/`tcp`), `format`, and the damage
//! flags of [`parse`] and `truncated`. `host` is this collector's node: the lake takes
//! from a node's token only rows of that node and of its `[[nodes]] hosts`, so a device's
//! name is kept in attrs. With `host = "hostname"` the HOSTNAME of the devices listed in
//! `hostnames` (which lake.toml must list in the node's `[[nodes]] hosts`) becomes
//! `host`; any other sender keeps the node, so an unlisted or misnamed device cannot get
//! the batch it shares with others refused.
//!
//! **Limits.** A message longer than `max_message_bytes` is cut there and kept (attrs
//! `truncated` = "true", counted in `truncated`); the rest of it is read and thrown away,
//! never held. Received messages wait for their batch in a queue of at most
//! `queue_bytes`: when it is full (the spool is full and the source waits for room, or a
//! sender floods faster than batches are written) a UDP datagram is dropped (counted in
//! `dropped`) and a TCP connection is no longer read, so its sender is held back by TCP
//! itself. At most `max_connections` TCP connections at once (one more is closed at once,
//! counted in `refused`), each closed after `idle_timeout` without a byte (counted in
//! `refused` too). Damaged messages (bad PRI or header, not UTF-8) are kept and counted
//! in `parse_errors`.
//!
//! **Durability.** Syslog cannot be read again, so batches are spooled as held groups
//! without a position: while the spool is full the source waits (counted in `paused`)
//! and the queue above fills. At shutdown the queued messages are spooled; a batch that
//! cannot be (the spool full at that moment) is counted in `dropped`.

pub mod frame;
pub mod parse;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use arrow_array::RecordBatch;
use lake_format::logs::{LogRow, LogsBuilder};
use lake_format::rows::now_micros;
use lake_format::units::{ByteSize, Dur};
use lake_format::{wire, Table};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::frame::{Frame, Framer};
use self::parse::Reading;
use super::{tailed, Emitted, SourceContext, SourceError};
use crate::stats::{SourceStats, Stats};

/// Name of the source: counters, `logs.source`.
pub const NAME: &str = "syslog";

/// Bytes a queued message costs beyond its own: a blank flood still fills the queue.
const QUEUE_OVERHEAD: usize = 256;
/// Pause after an accept or receive error (out of file descriptors): no busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

fn default_host() -> String {
    "node".to_string()
}
fn default_timezone() -> String {
    "local".to_string()
}
const fn default_max_message() -> ByteSize {
    ByteSize(64 << 10)
}
const fn default_max_connections() -> usize {
    256
}
const fn default_idle_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}
const fn default_queue() -> ByteSize {
    ByteSize(16 << 20)
}
const fn default_max_clock_skew() -> Dur {
    Dur(Duration::from_secs(86_400))
}
const fn default_batch_lines() -> usize {
    5000
}
const fn default_batch_wait() -> Dur {
    Dur(Duration::from_secs(1))
}

/// `[syslog]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogFile {
    #[serde(default)]
    udp: Option<String>,
    #[serde(default)]
    tcp: Option<String>,
    #[serde(default = "default_host")]
    host: String,
    #[serde(default)]
    hostnames: Vec<String>,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default = "default_max_message")]
    max_message_bytes: ByteSize,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: Dur,
    #[serde(default = "default_queue")]
    queue_bytes: ByteSize,
    #[serde(default = "default_max_clock_skew")]
    max_clock_skew: Dur,
    #[serde(default = "default_batch_lines")]
    batch_lines: usize,
    #[serde(default = "default_batch_wait")]
    batch_wait: Dur,
}

impl Default for SyslogFile {
    fn default() -> Self {
        SyslogFile {
            udp: None,
            tcp: None,
            host: default_host(),
            hostnames: Vec::new(),
            timezone: default_timezone(),
            max_message_bytes: default_max_message(),
            max_connections: default_max_connections(),
            idle_timeout: default_idle_timeout(),
            queue_bytes: default_queue(),
            max_clock_skew: default_max_clock_skew(),
            batch_lines: default_batch_lines(),
            batch_wait: default_batch_wait(),
        }
    }
}

/// What a row's `host` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostFrom {
    /// This collector's node (the default).
    Node,
    /// The message's HOSTNAME when it is one of these, else the node.
    Hostname(Vec<String>),
}

/// `[syslog]`, validated.
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// UDP address listened on, if any.
    pub udp: Option<SocketAddr>,
    /// TCP address listened on, if any.
    pub tcp: Option<SocketAddr>,
    /// What `host` is.
    pub host: HostFrom,
    /// Zone of BSD timestamps and the bound on senders' clocks.
    pub reading: Reading,
    /// Longest message kept, bytes.
    pub max_message_bytes: usize,
    /// Most TCP connections at once.
    pub max_connections: usize,
    /// A TCP connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Bytes of received messages waiting for their batch, at most.
    pub queue_bytes: usize,
    /// Most rows per spooled batch.
    pub batch_lines: usize,
    /// Longest a received message waits for its batch.
    pub batch_wait: Duration,
}

impl SyslogConfig {
    /// Whether the source listens at all.
    pub fn enabled(&self) -> bool {
        self.udp.is_some() || self.tcp.is_some()
    }
}

fn address(key: &str, v: Option<String>) -> anyhow::Result<Option<SocketAddr>> {
    match v {
        None => Ok(None),
        Some(a) => a.trim().parse().map(Some).map_err(|_| {
            anyhow::anyhow!(
                "syslog.{key} = {a:?}: write an address and port like \"127.0.0.1:5514\" or \"0.0.0.0:514\" (leave the key out to turn {key} off)"
            )
        }),
    }
}

impl SyslogFile {
    /// Checks the section.
    pub fn validate(self) -> anyhow::Result<SyslogConfig> {
        let udp = address("udp", self.udp)?;
        let tcp = address("tcp", self.tcp)?;
        let host = match self.host.as_str() {
            "node" => {
                ensure!(
                    self.hostnames.is_empty(),
                    "syslog.hostnames is set but syslog.host = \"node\": set host = \"hostname\" to use it"
                );
                HostFrom::Node
            }
            "hostname" => {
                ensure!(
                    !self.hostnames.is_empty(),
                    "syslog.host = \"hostname\" needs syslog.hostnames: the devices' HOSTNAMEs, each also listed in lake.toml under this node's [[nodes]] hosts (the lake refuses rows of other hosts)"
                );
                for (i, h) in self.hostnames.iter().enumerate() {
                    wire::validate_node_name(h).with_context(|| format!("syslog.hostnames[{i}] = {h:?}"))?;
                }
                HostFrom::Hostname(self.hostnames)
            }
            other => {
                bail!("syslog.host = {other:?}: use \"node\" (this collector's node, the default) or \"hostname\"")
            }
        };
        let tz = super::zone::parse_zone(&self.timezone)
            .map_err(anyhow::Error::msg)
            .map_err(|e| e.context("syslog.timezone"))?;
        let max = self.max_message_bytes.0;
        ensure!(
            (480..=(16 << 20)).contains(&max),
            "syslog.max_message_bytes = {}: must be between 480 bytes (RFC 5424's least) and 16MiB",
            self.max_message_bytes
        );
        ensure!(
            (1..=65_536).contains(&self.max_connections),
            "syslog.max_connections = {}: must be between 1 and 65536",
            self.max_connections
        );
        ensure!(!self.idle_timeout.0.is_zero(), "syslog.idle_timeout must be more than zero");
        ensure!(
            self.queue_bytes.0 >= 2 * (max + QUEUE_OVERHEAD as u64) && self.queue_bytes.0 <= 1 << 30,
            "syslog.queue_bytes = {}: must be at least twice max_message_bytes ({}) and at most 1GiB",
            self.queue_bytes,
            self.max_message_bytes
        );
        ensure!(
            self.max_clock_skew.0 >= Duration::from_secs(60),
            "syslog.max_clock_skew = {}: must be at least 1m",
            self.max_clock_skew
        );
        tailed::check_batch_lines("syslog", self.batch_lines)?;
        ensure!(!self.batch_wait.0.is_zero(), "syslog.batch_wait must be more than zero");
        Ok(SyslogConfig {
            udp,
            tcp,
            host,
            reading: Reading { tz, max_skew: i64::try_from(self.max_clock_skew.0.as_micros()).unwrap_or(i64::MAX) },
            max_message_bytes: max as usize,
            max_connections: self.max_connections,
            idle_timeout: self.idle_timeout.0,
            queue_bytes: self.queue_bytes.0 as usize,
            batch_lines: self.batch_lines,
            batch_wait: self.batch_wait.0,
        })
    }
}

/// One line of `--check`.
pub fn describe(c: &SyslogConfig) -> String {
    let show = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
    let host = match &c.host {
        HostFrom::Node => "node".to_string(),
        HostFrom::Hostname(h) => format!("hostname of {}", h.join(", ")),
    };
    format!(
        "udp={} tcp={} host={host} max_message_bytes={} max_connections={}",
        show(c.udp),
        show(c.tcp),
        c.max_message_bytes,
        c.max_connections
    )
}

/// `logs` rows of received messages.
#[derive(Debug)]
pub struct SyslogRows {
    logs: LogsBuilder,
    host: HostFrom,
    reading: Reading,
}

impl SyslogRows {
    /// Rows made as `config` says.
    pub fn new(config: &SyslogConfig) -> SyslogRows {
        SyslogRows { logs: LogsBuilder::new(), host: config.host.clone(), reading: config.reading.clone() }
    }

    /// Adds the row of one message (`bytes`, cut if `truncated`) from `sender` over
    /// `transport`, received at `received` (µs), on `node`. Whether it was damaged.
    pub fn push(
        &mut self,
        node: &str,
        bytes: &[u8],
        truncated: bool,
        sender: &str,
        transport: &str,
        received: i64,
    ) -> bool {
        let m = parse::parse(bytes, &self.reading, received);
        let host = match (&self.host, &m.hostname) {
            (HostFrom::Hostname(list), Some(h)) if list.iter().any(|l| l == h) => h.as_str(),
            _ => node,
        };
        let row = LogRow {
            ts: m.ts,
            host,
            source: NAME,
            unit: None,
            ident: m.ident.as_deref(),
            pid: m.pid,
            priority: m.priority,
            message: Some(&m.message),
            boot_id: None,
        };
        let mut attrs: Vec<(&str, &str)> = m.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        attrs.push(("sender", sender));
        attrs.push(("transport", transport));
        if truncated {
            attrs.push(("truncated", "true"));
        }
        self.logs.push(&row, attrs);
        m.damaged
    }

    /// Rows added since the last `finish`.
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether no row waits.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// The batch of the rows added; the builder starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, SourceError> {
        self.logs.finish().map_err(|e| SourceError::Encode { source_name: NAME, error: e.to_string() })
    }
}

/// Whether a frame holds nothing but delimiters (a blank line, an empty datagram).
fn blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'\n' | b'\r' | b'\0' | b' '))
}

/// A message waiting for its batch, with its share of the queue.
#[derive(Debug)]
struct Received {
    frame: Frame,
    sender: IpAddr,
    transport: &'static str,
    at: i64,
    queued: OwnedSemaphorePermit,
}

/// What the listeners share.
#[derive(Clone)]
struct Inbox {
    tx: mpsc::UnboundedSender<Received>,
    queue: Arc<Semaphore>,
    stats: Arc<SourceStats>,
    max: usize,
}

impl Inbox {
    fn cost(frame: &Frame) -> u32 {
        u32::try_from(frame.bytes.len() + QUEUE_OVERHEAD).unwrap_or(u32::MAX)
    }

    fn count(&self, frame: &Frame) {
        Stats::add(&self.stats.read, 1);
        if frame.truncated {
            Stats::add(&self.stats.truncated, 1);
        }
    }

    /// Queues a datagram's message, or drops it (counted) when the queue is full.
    fn offer(&self, frame: Frame, sender: IpAddr) {
        self.count(&frame);
        match Arc::clone(&self.queue).try_acquire_many_owned(Self::cost(&frame)) {
            Ok(permit) => {
                let r = Received { frame, sender, transport: "udp", at: now_micros(), queued: permit };
                let _ = self.tx.send(r);
            }
            Err(_) => {
                Stats::add(&self.stats.dropped, 1);
                let n = self.stats.dropped.load(Ordering::Relaxed);
                if n.is_power_of_two() {
                    warn!(
                        source = NAME,
                        dropped = n,
                        "syslog queue full: UDP messages dropped (spool full or a sender flooding)"
                    );
                }
            }
        }
    }

    /// Queues a stream's message, waiting for room (the connection is not read
    /// meanwhile); false when cancelled.
    async fn put(&self, frame: Frame, sender: IpAddr, cancel: &CancellationToken) -> bool {
        self.count(&frame);
        let permit = tokio::select! {
            _ = cancel.cancelled() => return false,
            p = Arc::clone(&self.queue).acquire_many_owned(Self::cost(&frame)) => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
        };
        let r = Received { frame, sender, transport: "tcp", at: now_micros(), queued: permit };
        self.tx.send(r).is_ok()
    }
}

/// The running source.
#[derive(Debug)]
pub struct SyslogSource {
    config: SyslogConfig,
    ctx: SourceContext,
}

impl SyslogSource {
    /// A source for `config`.
    pub fn new(config: SyslogConfig, ctx: SourceContext) -> SyslogSource {
        SyslogSource { config, ctx }
    }

    /// Listens until `cancel`; a socket that cannot be bound stops it with the reason.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), SourceError> {
        let start = |what: &str, a: SocketAddr, e: std::io::Error| SourceError::Start {
            source_name: NAME,
            reason: format!("cannot listen on {what} {a}: {e}"),
        };
        let udp = match self.config.udp {
            Some(a) => Some(UdpSocket::bind(a).await.map_err(|e| start("UDP", a, e))?),
            None => None,
        };
        let tcp = match self.config.tcp {
            Some(a) => Some(TcpListener::bind(a).await.map_err(|e| start("TCP", a, e))?),
            None => None,
        };
        info!(
            udp = ?udp.as_ref().and_then(|s| s.local_addr().ok()),
            tcp = ?tcp.as_ref().and_then(|s| s.local_addr().ok()),
            "syslog receiver listening"
        );
        let stats = self.ctx.source_stats(NAME);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inbox = Inbox {
            tx,
            queue: Arc::new(Semaphore::new(self.config.queue_bytes)),
            stats,
            max: self.config.max_message_bytes,
        };
        let listeners = cancel.child_token();
        let mut tasks = JoinSet::new();
        if let Some(sock) = udp {
            tasks.spawn(receive_udp(sock, inbox.clone(), listeners.clone()));
        }
        if let Some(l) = tcp {
            let c = &self.config;
            tasks.spawn(accept_tcp(l, inbox.clone(), c.max_connections, c.idle_timeout, listeners.clone()));
        }
        drop(inbox);

        let mut rows = SyslogRows::new(&self.config);
        // Queue room of the rows not spooled yet, given back once they are.
        let mut held: Vec<OwnedSemaphorePermit> = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let wait = deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = rx.recv() => {
                    let Some(r) = r else { break };
                    self.push(&mut rows, &r);
                    held.push(r.queued);
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.config.batch_wait);
                    if rows.len() >= self.config.batch_lines {
                        self.flush(&mut rows, &mut held, &cancel).await?;
                        deadline = None;
                    }
                }
                _ = tokio::time::sleep_until(wait), if deadline.is_some() => {
                    self.flush(&mut rows, &mut held, &cancel).await?;
                    deadline = None;
                }
            }
        }
        // Stop reading, then spool what was already received.
        listeners.cancel();
        while tasks.join_next().await.is_some() {}
        while let Ok(r) = rx.try_recv() {
            self.push(&mut rows, &r);
            held.push(r.queued);
        }
        self.flush(&mut rows, &mut held, &cancel).await
    }

    fn push(&self, rows: &mut SyslogRows, r: &Received) {
        let sender = r.sender.to_canonical().to_string();
        let damaged = rows.push(&self.ctx.node, &r.frame.bytes, r.frame.truncated, &sender, r.transport, r.at);
        if damaged {
            Stats::add(&self.ctx.source_stats(NAME).parse_errors, 1);
        }
    }

    /// Spools the rows (their queue room is given back once they are spooled).
    async fn flush(
        &self,
        rows: &mut SyslogRows,
        held: &mut Vec<OwnedSemaphorePermit>,
        cancel: &CancellationToken,
    ) -> Result<(), SourceError> {
        if rows.is_empty() {
            return Ok(());
        }
        let n = rows.len() as u64;
        let batch = rows.finish()?;
        let got = self.ctx.emit_group::<()>(NAME, vec![(NAME, Table::Logs, batch)], None, cancel).await?;
        if got == Emitted::Cancelled {
            Stats::add(&self.ctx.source_stats(NAME).dropped, n);
            warn!(source = NAME, messages = n, "shutdown while the spool was full: received syslog messages lost");
        }
        held.clear();
        Ok(())
    }
}

async fn receive_udp(sock: UdpSocket, inbox: Inbox, cancel: CancellationToken) {
    // The largest UDP payload: a datagram is read whole, then cut to the limit.
    let mut buf = vec![0u8; 65_536];
    loop {
        let got = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => r,
        };
        match got {
            Ok((n, peer)) => {
                let bytes = &buf[..n];
                if blank(bytes) {
                    continue;
                }
                let truncated = n > inbox.max;
                let frame = Frame { bytes: bytes[..n.min(inbox.max)].to_vec(), truncated };
                inbox.offer(frame, peer.ip());
            }
            Err(e) => {
                Stats::add(&inbox.stats.errors, 1);
                warn!(source = NAME, error = %e, "syslog UDP receive failed");
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
}

async fn accept_tcp(
    listener: TcpListener,
    inbox: Inbox,
    max_connections: usize,
    idle: Duration,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                    Ok(slot) => {
                        conns.spawn(connection(stream, peer, inbox.clone(), idle, cancel.clone(), slot));
                    }
                    Err(_) => {
                        Stats::add(&inbox.stats.refused, 1);
                        // Logged at 1, 2, 4, 8, … refusals: a connection flood must not flood the log.
                        let n = inbox.stats.refused.load(Ordering::Relaxed);
                        if n.is_power_of_two() {
                            warn!(source = NAME, %peer, max_connections, refused = n, "syslog TCP connection refused: too many at once");
                        }
                        drop(stream);
                    }
                },
                Err(e) => {
                    Stats::add(&inbox.stats.errors, 1);
                    warn!(source = NAME, error = %e, "syslog TCP accept failed");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
        }
    }
    while conns.join_next().await.is_some() {}
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    inbox: Inbox,
    idle: Duration,
    cancel: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    debug!(source = NAME, %peer, "syslog TCP connection");
    let mut framer = Framer::new(inbox.max);
    let mut buf = vec![0u8; 16 << 10];
    let mut frames = Vec::new();
    loop {
        let read = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(idle, stream.read(&mut buf)) => r,
        };
        let eof = match read {
            Err(_) => {
                Stats::add(&inbox.stats.refused, 1);
                // A relay that had nothing to send reconnects when it has: not worth a warning.
                debug!(source = NAME, %peer, ?idle, "syslog TCP connection closed: idle");
                return;
            }
            Ok(Err(e)) => {
                debug!(source = NAME, %peer, error = %e, "syslog TCP connection failed");
                true
            }
            Ok(Ok(0)) => true,
            Ok(Ok(n)) => {
                framer.push(&buf[..n], &mut frames);
                false
            }
        };
        if eof {
            framer.finish(&mut frames);
        }
        for f in frames.drain(..) {
            if blank(&f.bytes) {
                continue;
            }
            if !inbox.put(f, peer.ip(), &cancel).await {
                return;
            }
        }
        if eof {
            return;
        }
    }
}
