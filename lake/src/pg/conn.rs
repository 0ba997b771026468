//! One PostgreSQL session: the TLS negotiation, the message size limit, the startup and
//! idle deadlines, then pgwire's message processing with the lake's handlers.
//!
//! pgwire's own `process_socket` is not used: it allows 60 s to authenticate, waits for
//! ever between messages and buffers a statement of up to 1 GiB. Here the same steps run
//! with `[pg]`'s limits, and the bytes are framed ([`Limited`]) before pgwire buffers
//! them, so an oversized message is refused from its 5-byte header.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{SinkExt, StreamExt};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::{ClientInfo, DefaultClient, NoopHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::PgWireBackendMessage;
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::handler::{Backend, Login};
use super::Shared;

/// The 8-byte requests that may open a connection: (length 8, code).
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// A session's byte stream: plain TCP or TLS over it, after [`negotiate`].
enum Io {
    Plain(Prefixed<TcpStream>),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A stream whose first bytes were already read (the head of a startup message read
/// while looking for an `SSLRequest`): they are handed out again first.
struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The frontend byte stream, framed as it passes: the first message (startup, cancel)
/// has a 4-byte length, every later one a type byte and a 4-byte length. A length over
/// `max` fails the read before the message is buffered.
pub(super) struct Limited<S> {
    inner: S,
    max: usize,
    /// Whether the untyped first message is behind us.
    typed: bool,
    header: [u8; 5],
    have: usize,
    /// Body bytes of the current message still to pass.
    skip: u64,
}

/// The error [`Limited`] fails a read with; found again by [`too_large`].
#[derive(Debug)]
pub(super) struct TooLarge {
    pub(super) len: u64,
    pub(super) max: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a message of {} bytes is over pg.max_message ({} bytes)", self.len, self.max)
    }
}

impl std::error::Error for TooLarge {}

impl<S> Limited<S> {
    pub(super) fn new(inner: S, max: usize) -> Limited<S> {
        Limited { inner, max, typed: false, header: [0; 5], have: 0, skip: 0 }
    }

    /// Follows the framing over `bytes` (just read).
    pub(super) fn scan(&mut self, mut bytes: &[u8]) -> Result<(), TooLarge> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = bytes.len().min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let want = if self.typed { 5 } else { 4 };
            let n = (want - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == want {
                let at = want - 4;
                let len = u32::from_be_bytes([
                    self.header[at],
                    self.header[at + 1],
                    self.header[at + 2],
                    self.header[at + 3],
                ]) as u64;
                if len > self.max as u64 || len < 4 {
                    return Err(TooLarge { len, max: self.max });
                }
                self.skip = len - 4;
                self.have = 0;
                self.typed = true;
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                match this.scan(new) {
                    Ok(()) => Poll::Ready(Ok(())),
                    Err(e) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e))),
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The [`TooLarge`] inside a read error, if that is what it is.
fn too_large(e: &PgWireError) -> Option<String> {
    match e {
        PgWireError::IoError(io) => io.get_ref().and_then(|i| i.downcast_ref::<TooLarge>()).map(ToString::to_string),
        _ => None,
    }
}

/// Answers `SSLRequest`/`GSSENCRequest` until the client starts its session; TLS when
/// configured and asked for. `None`: the client left, or sent what is no PostgreSQL.
async fn negotiate(mut tcp: TcpStream, shared: &Shared) -> io::Result<Option<(Io, bool)>> {
    tcp.set_nodelay(true)?;
    loop {
        let mut head = [0u8; 8];
        if tcp.read_exact(&mut head).await.is_err() {
            return Ok(None);
        }
        let len = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        match (len, code) {
            (8, SSL_REQUEST) => match &shared.tls {
                Some(acceptor) => {
                    tcp.write_all(b"S").await?;
                    let tls = acceptor.accept(tcp).await?;
                    return Ok(Some((Io::Tls(Box::new(tls)), true)));
                }
                None => tcp.write_all(b"N").await?,
            },
            (8, GSSENC_REQUEST) => tcp.write_all(b"N").await?,
            _ => return Ok(Some((Io::Plain(Prefixed { prefix: head.to_vec(), at: 0, inner: tcp }), false))),
        }
    }
}

type Socket = Framed<Limited<Io>, PgWireMessageServerCodec<String>>;

/// Answers CancelRequests: the session with that process id and secret key has its
/// running statement interrupted; anything else is ignored, as PostgreSQL does.
#[derive(Debug)]
pub(super) struct Canceller(pub(super) Arc<Shared>);

#[async_trait::async_trait]
impl CancelHandler for Canceller {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let target = {
            let map = self.0.cancels.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&request.pid)
                .filter(|(secret, _)| request.secret_key.as_i32() == Some(*secret))
                .map(|e| Arc::clone(&e.1))
        };
        if let Some(notify) = target {
            // Only a statement running now is interrupted: no permit is kept for the next.
            notify.notify_waiters();
        }
    }
}

/// A session's entry in [`Shared::cancels`], removed when the session ends.
struct CancelKey {
    shared: Arc<Shared>,
    pid: i32,
    notify: Arc<tokio::sync::Notify>,
}

impl CancelKey {
    /// A fresh process id and secret key for a session.
    fn register(shared: &Arc<Shared>) -> (CancelKey, i32) {
        use rand::Rng;
        let mut rng = rand::rng();
        let secret: i32 = rng.random();
        let notify = Arc::new(tokio::sync::Notify::new());
        let mut map = shared.cancels.lock().unwrap_or_else(|p| p.into_inner());
        let pid = loop {
            let pid = rng.random_range(1..i32::MAX);
            if !map.contains_key(&pid) {
                break pid;
            }
        };
        map.insert(pid, (secret, Arc::clone(&notify)));
        (CancelKey { shared: Arc::clone(shared), pid, notify }, secret)
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.shared.cancels.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.pid);
    }
}

/// Sends a FATAL error and closes: the session ends here.
async fn fatal(socket: &mut Socket, code: &str, message: String) {
    let info = ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message);
    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
    let _ = socket.close().await;
}

/// Serves one connection to its end. `refuse`: over `max_connections`, the client is told
/// so (53300) once it has said hello.
pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    refuse: bool,
    cancel: CancellationToken,
) {
    let config = shared.config.clone();
    let auth_deadline = tokio::time::Instant::now() + config.auth_timeout;
    let negotiated = tokio::select! {
        _ = cancel.cancelled() => return,
        n = tokio::time::timeout_at(auth_deadline, negotiate(tcp, &shared)) => n,
    };
    let (io, secure) = match negotiated {
        Ok(Ok(Some(io))) => io,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%peer, %e, "pg: TLS negotiation failed");
            return;
        }
        Err(_) => {
            shared.stats.dropped.add(1);
            tracing::info!(%peer, "pg: connection closed, no startup within pg.auth_timeout");
            return;
        }
    };
    let client = DefaultClient::new(peer, secure);
    let mut socket: Socket = Framed::new(Limited::new(io, config.max_message), PgWireMessageServerCodec::new(client));
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    // The key a CancelRequest must show (sent to the client when it has logged in).
    let (cancel_key, secret) = CancelKey::register(&shared);
    socket.set_pid_and_secret_key(cancel_key.pid, SecretKey::I32(secret));
    let canceller = Arc::new(Canceller(Arc::clone(&shared)));

    let backend = Arc::new(Backend::new(Arc::clone(&shared)));
    let login = Arc::new(Login::new(Arc::clone(&shared)));
    let noop = Arc::new(NoopHandler);
    loop {
        let authenticating = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let deadline = if authenticating { auth_deadline } else { tokio::time::Instant::now() + config.idle_timeout };
        let next = tokio::select! {
            _ = cancel.cancelled() => {
                fatal(&mut socket, "57P01", "the lake is shutting down".into()).await;
                return;
            }
            n = tokio::time::timeout_at(deadline, socket.next()) => n,
        };
        let message = match next {
            Err(_) => {
                shared.stats.dropped.add(1);
                let (code, why) = if authenticating {
                    ("08P01", format!("no login within pg.auth_timeout ({:?})", config.auth_timeout))
                } else {
                    ("57P05", format!("idle for pg.idle_timeout ({:?}): session closed", config.idle_timeout))
                };
                tracing::info!(%peer, "pg: {why}");
                fatal(&mut socket, code, why).await;
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                if let Some(why) = too_large(&e) {
                    shared.stats.dropped.add(1);
                    tracing::warn!(%peer, "pg: {why}");
                    fatal(&mut socket, "54000", why).await;
                } else {
                    tracing::debug!(%peer, %e, "pg: unreadable message");
                    fatal(&mut socket, "08P01", format!("unreadable message: {e}")).await;
                }
                return;
            }
            Ok(Some(Ok(m))) => m,
        };
        if refuse {
            fatal(
                &mut socket,
                "53300",
                format!(
                    "too many connections: the lake serves at most {} PostgreSQL sessions (pg.max_connections)",
                    config.max_connections
                ),
            )
            .await;
            return;
        }
        let extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(e) => e,
            _ => message.is_extended_query(),
        };
        // A statement and its answer get pg.idle_timeout too: a client that stops reading
        // its rows must not hold a session (and the query's memory) for ever. A cancel
        // drops the statement (its query is interrupted as its stream goes away).
        let cancelled = cancel_key.notify.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        let processed = tokio::select! {
            p = tokio::time::timeout(
                config.idle_timeout,
                process_message(
                    message,
                    &mut socket,
                    Arc::clone(&login),
                    Arc::clone(&backend),
                    Arc::clone(&backend),
                    Arc::clone(&noop),
                    Arc::clone(&canceller),
                ),
            ) => p,
            _ = &mut cancelled => {
                tracing::info!(%peer, "pg: statement cancelled by the client");
                shared.stats.errors.add(1);
                let e = super::handler::user_error("57014", "canceling statement due to user request");
                if process_error(&mut socket, e, extended).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let Ok(processed) = processed else {
            shared.stats.dropped.add(1);
            tracing::warn!(%peer, "pg: session closed, its answer was not taken within pg.idle_timeout");
            return;
        };
        if let Err(e) = processed {
            let info = ErrorInfo::from(e);
            let is_fatal = info.is_fatal();
            if process_error(&mut socket, PgWireError::UserError(Box::new(info)), extended).await.is_err() || is_fatal {
                return;
            }
        }
    }
}
