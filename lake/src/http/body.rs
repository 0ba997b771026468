//! Request bodies at the server, whatever the route: a deadline for receiving them, and
//! draining what a handler left unread.
//!
//! - [`DeadlineBody`] wraps a request's body when its headers arrive; reading it fails
//!   with [`BodyTimeout`] once `http.body_timeout` has passed, however the bytes trickle in
//!   (the deadline is checked before every read, so a client sending a byte a second
//!   cannot keep it alive). Ingest answers 408 (the collector retries it), and so do
//!   `/v1/sql` and Grafana (`lake_query::http::body::read_body`). Nothing of a timed-out
//!   body is stored: every handler reads its whole body first.
//! - [`Unread`] keeps a handle on the body the handler gets, so that after an early
//!   answer (413 on `Content-Length`, 401 before reading) the server reads and discards
//!   the rest before sending it ([`Unread::drain`]). Otherwise hyper closes a connection
//!   with bytes still unread, the kernel answers them with a reset, and the reset wipes
//!   the answer from the client's receive buffer: the collector would see "connection
//!   reset" (and retry for ever) instead of the 413 that tells it to set the batch aside.
//!   The drain is bounded by the same deadline and by [`MAX_DRAIN`] bytes.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};

/// The deadline lives in `lake-query`, whose `/v1/sql` and Grafana handlers must tell a
/// timed-out body (408) from a broken one (400) too.
pub use lake_query::http::body::{timed_out, BodyTimeout, DeadlineBody};

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

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::time::Duration;

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
}
