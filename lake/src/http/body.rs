//! Request bodies at the server, whatever the route: a deadline for receiving them,
//! draining what a handler left unread, and reading a whole read-side body.
//!
//! - [`DeadlineBody`] wraps a request's body when its headers arrive; reading it fails
//!   with [`BodyTimeout`] once `http.body_timeout` has passed, however the bytes trickle in
//!   (the deadline is checked before every read, so a client sending a byte a second
//!   cannot keep it alive). Ingest answers 408 (the collector retries it), and so do
//!   `/v1/sql` and Grafana ([`read_body`]). Nothing of a timed-out body is stored: every
//!   handler reads its whole body first.
//! - [`Unread`] keeps a handle on the body the handler gets, so that after an early
//!   answer (413 on `Content-Length`, 401 before reading) the server reads and discards
//!   the rest before sending it ([`Unread::drain`]). Otherwise hyper closes a connection
//!   with bytes still unread, the kernel answers them with a reset, and the reset wipes
//!   the answer from the client's receive buffer: the collector would see "connection
//!   reset" (and retry for ever) instead of the 413 that tells it to set the batch aside.
//!   The drain is bounded by the same deadline and by [`MAX_DRAIN`] bytes.
//! - [`read_body`] buffers a `/v1/sql` or Grafana body of at most [`MAX_READ_BODY`] bytes
//!   and answers like the rest of the API, in JSON: 413 when it is larger (at once when
//!   `Content-Length` says so), 408 when it does not arrive in time, 400 when the
//!   connection breaks off. Axum's `Bytes` extractor would answer plain text and turn the
//!   deadline into a 400.
//! - [`unsnappy`] inflates a snappy block (Prometheus remote_write, Loki push) against a
//!   limit read from the block's header before anything is allocated.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::HeaderMap;
use bytes::BytesMut;
use http_body::{Frame, SizeHint};

use super::error::ApiError;

/// Largest body of a `/v1/sql` or Grafana request (2 MiB, axum's default limit before).
pub const MAX_READ_BODY: usize = 2 << 20;

/// The body did not arrive in time.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("request body not received within {}s (http.body_timeout)", .0.as_secs_f64())]
pub struct BodyTimeout(pub Duration);

/// A request body that fails once its deadline passes.
#[derive(Debug)]
pub struct DeadlineBody {
    inner: Body,
    limit: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    /// `body` with a deadline `limit` from now. A body already complete is returned as is.
    pub fn wrap(body: Body, limit: Duration) -> Body {
        if body.is_end_stream() {
            return body;
        }
        Body::new(DeadlineBody { inner: body, limit, sleep: Box::pin(tokio::time::sleep(limit)) })
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        // The deadline first: a body whose bytes are always ready (a byte at a time) must
        // still end when its time is up.
        if this.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
        }
        Pin::new(&mut this.inner).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The [`BodyTimeout`] behind a body-reading error, if that is what it is.
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> Option<BodyTimeout> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<BodyTimeout>() {
            return Some(*t);
        }
        cur = err.source();
    }
    None
}

/// The request's `Content-Length`, if it has a readable one: a body declaring more than a
/// limit is refused before a byte of it is read.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
}

/// Reads a whole body of at most `max` bytes; `what` names the endpoint in the 413.
pub async fn read_body(headers: &HeaderMap, body: Body, max: usize, what: &str) -> Result<Bytes, ApiError> {
    let too_large = || ApiError::too_large(format!("request body larger than the {max} byte limit of {what}"));
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut out = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    let mut body = body;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(e)) => {
                return Err(match timed_out(&e) {
                    Some(t) => ApiError::timeout(t.to_string()),
                    None => ApiError::bad_request(format!("reading the request body failed: {e}")),
                })
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if out.len() + data.len() > max {
                        return Err(too_large());
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
    Ok(out.freeze())
}

/// Most bytes drained after an early answer; a client sending more gets a closed
/// connection (and may miss the answer).
pub const MAX_DRAIN: usize = 256 << 20;

/// A request body the server can still read after the handler is done with it.
#[derive(Debug, Clone)]
pub struct Unread(Arc<Mutex<Body>>);

impl Unread {
    /// Splits `body` into the one the handler reads and the server's handle on it.
    pub fn share(body: Body) -> (Body, Unread) {
        let shared = Unread(Arc::new(Mutex::new(body)));
        (Body::new(shared.clone()), shared)
    }

    /// Reads and discards what the handler left unread, up to [`MAX_DRAIN`] bytes or the
    /// body's deadline, so the connection can carry the answer and stay open. Returns the
    /// bytes discarded.
    pub async fn drain(&self) -> usize {
        let mut drained = 0usize;
        loop {
            let frame = std::future::poll_fn(|cx| {
                let mut body = self.0.lock().unwrap_or_else(|p| p.into_inner());
                if body.is_end_stream() {
                    return Poll::Ready(None);
                }
                Pin::new(&mut *body).poll_frame(cx)
            })
            .await;
            match frame {
                Some(Ok(f)) => {
                    drained += f.data_ref().map_or(0, |d| d.len());
                    if drained > MAX_DRAIN {
                        return drained;
                    }
                }
                Some(Err(_)) | None => return drained,
            }
        }
    }
}

impl HttpBody for Unread {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut body = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).size_hint()
    }
}

/// Decompresses a snappy block (the raw format, as Prometheus remote_write and Loki's
/// protobuf push send it), refusing (413) a block that declares more than `max` bytes:
/// the declared length is the block's first bytes, checked before anything is allocated,
/// and the output is taken from the ingest memory budget first (503 when it is in use).
/// `limit` names the limit in the 413 message.
pub(crate) fn unsnappy(
    raw: &[u8],
    max: usize,
    limit: &str,
    reservation: &mut super::budget::Reservation,
) -> Result<Vec<u8>, ApiError> {
    let not_snappy = |e: snap::Error| ApiError::bad_request(format!("body is not a snappy block: {e}"));
    let len = snap::raw::decompress_len(raw).map_err(not_snappy)?;
    if len > max {
        return Err(ApiError::too_large(format!(
            "snappy body declares {len} bytes decompressed, more than the {max} byte limit ({limit})"
        )));
    }
    reservation.grow(len)?;
    let mut bytes = vec![0; len];
    snap::raw::Decoder::new().decompress(raw, &mut bytes).map_err(not_snappy)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_trickling_body_ends_at_its_deadline() {
        // A byte every 100ms against a 550ms deadline (real time: tokio's test-util is off).
        let chunks = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
        });
        let body = DeadlineBody::wrap(Body::from_stream(chunks), Duration::from_millis(550));
        let mut stream = body.into_data_stream();
        let mut got = 0;
        let err = loop {
            match stream.next().await {
                Some(Ok(b)) => got += b.len(),
                Some(Err(e)) => break e,
                None => panic!("the body never ends"),
            }
        };
        assert!((2..=5).contains(&got), "{got}");
        let t = timed_out(&err).expect("a BodyTimeout");
        assert_eq!(t.0, Duration::from_millis(550));
        assert!(err.to_string().contains("http.body_timeout"), "{err}");
    }

    #[tokio::test]
    async fn what_the_handler_leaves_is_drained() {
        let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from_static(b"0123456789"))));
        let (body, unread) = Unread::share(Body::from_stream(chunks));
        let mut stream = body.into_data_stream();
        assert_eq!(stream.next().await.unwrap().unwrap().len(), 10);
        drop(stream);
        assert_eq!(unread.drain().await, 90);
    }

    #[tokio::test]
    async fn a_prompt_body_is_untouched() {
        let body = DeadlineBody::wrap(Body::from("hello"), Duration::from_secs(5));
        let bytes = axum::body::to_bytes(body, 100).await.unwrap();
        assert_eq!(&bytes[..], b"hello");
    }

    /// A body sending `b"x"` every `pace`, for ever.
    struct Trickle(Pin<Box<tokio::time::Sleep>>, Duration);

    impl HttpBody for Trickle {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let next = tokio::time::Instant::now() + self.1;
                    self.0.as_mut().reset(next);
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn a_trickling_body_is_a_json_408() {
        // Real time (tokio's test-util is off): a byte every 20ms against a 150ms deadline.
        let pace = Duration::from_millis(20);
        let body = DeadlineBody::wrap(
            Body::new(Trickle(Box::pin(tokio::time::sleep(pace)), pace)),
            Duration::from_millis(150),
        );
        let e = read_body(&HeaderMap::new(), body, 1 << 20, "/v1/sql").await.unwrap_err();
        assert_eq!(e.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(e.message().contains("http.body_timeout"), "{}", e.message());
    }

    #[tokio::test]
    async fn too_large_is_a_413_by_length_or_by_bytes() {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::CONTENT_LENGTH, "11".parse().unwrap());
        let e = read_body(&h, Body::from("hello world"), 10, "/v1/sql").await.unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.message().contains("10 byte limit of /v1/sql"), "{}", e.message());
        let e = read_body(&HeaderMap::new(), Body::from("hello world"), 10, "/v1/sql").await.unwrap_err();
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(&read_body(&HeaderMap::new(), Body::from("hello"), 10, "x").await.unwrap()[..], b"hello");
    }
}
