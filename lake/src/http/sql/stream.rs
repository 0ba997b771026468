//! Streamed `/v1/sql` answers (JSON, CSV, Arrow): the head held back for a window, then
//! a body fed by [`Engine::query_stream`]. The contract is in the [parent's docs](super).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arrow_array::RecordBatch;
use axum::body::Body;
use axum::http::header::{CONTENT_TYPE, TRAILER};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use duckdb::types::Value;
use http_body::Frame;

use super::{ERROR_TRAILER, TRUNCATED_HEADER};
use crate::http::error::ApiError;
use lake_query::engine::{Engine, QueryStream};
use lake_query::output::{self, BatchEncoder, Format, Tail};

/// Encoded bytes the head waits for: a result ending within them is answered whole, with
/// its truncation in the head and any error as a proper error response.
pub(crate) const WINDOW: usize = 1 << 20;

/// Chunks (one DuckDB vector, ≤ 2048 rows, each) waiting between the query thread and
/// the body: with [`WINDOW`], what one streamed answer holds in memory.
const CHANNEL_CHUNKS: usize = 8;

/// The encoded rows of one batch.
#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    rows: usize,
}

/// Runs the query and answers it, whole or streamed.
pub(super) async fn respond(
    engine: &Arc<Engine>,
    sql: String,
    params: Vec<Value>,
    format: Format,
) -> Result<Response, ApiError> {
    let mut encoder: Option<BatchEncoder> = None;
    let encode = move |batch: &RecordBatch| -> std::io::Result<Chunk> {
        let e = match &mut encoder {
            Some(e) => e,
            None => encoder.insert(BatchEncoder::new(format, &batch.schema())?),
        };
        Ok(Chunk { bytes: Bytes::from(e.batch(batch)?), rows: batch.num_rows() })
    };
    let mut stream = engine.query_stream(sql, params, CHANNEL_CHUNKS, encode).await?;
    let head = output::head(format, stream.schema()).map_err(|e| ApiError::internal_query(&e))?;
    let mut pending = VecDeque::from([Bytes::from(head)]);
    let (mut buffered, mut rows) = (0usize, 0usize);
    while buffered < WINDOW {
        // Nothing is sent yet: an error here is an ordinary error response.
        match stream.next().await? {
            Some(chunk) => {
                buffered += chunk.bytes.len();
                rows += chunk.rows;
                pending.push_back(chunk.bytes);
            }
            None => {
                let end = stream.end().unwrap_or(lake_query::engine::StreamEnd { rows, truncated: false });
                pending.push_back(Bytes::from(output::tail(
                    format,
                    &Tail { truncated: end.truncated, rows: end.rows, error: None },
                )));
                return Ok(whole(format, pending, end.truncated));
            }
        }
    }
    let body = StreamedBody { format, pending, stream: Some(stream), rows, trailers: None };
    let mut response = Body::new(body).into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    h.insert(TRAILER, HeaderValue::from_static("lake-truncated, lake-error"));
    Ok(response)
}

/// A result that ended within the window: one body, truncation in the head.
fn whole(format: Format, parts: VecDeque<Bytes>, truncated: bool) -> Response {
    let mut body = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        body.extend_from_slice(&p);
    }
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if truncated {
        h.insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// The body of a streamed answer: the bytes held back for the window, then the stream's
/// chunks, then the format's tail and the trailers.
struct StreamedBody {
    format: Format,
    pending: VecDeque<Bytes>,
    /// `None` once the stream ended (its tail and trailers are queued).
    stream: Option<QueryStream<Chunk>>,
    rows: usize,
    trailers: Option<HeaderMap>,
}

impl StreamedBody {
    /// The stream ended (`error` when it failed): queue the tail and the trailers.
    fn finish(&mut self, truncated: bool, error: Option<&str>) {
        self.stream = None;
        let tail = output::tail(self.format, &Tail { truncated, rows: self.rows, error });
        if !tail.is_empty() {
            self.pending.push_back(Bytes::from(tail));
        }
        let mut trailers = HeaderMap::new();
        trailers.insert(
            HeaderName::from_static(TRUNCATED_HEADER),
            HeaderValue::from_static(if truncated { "true" } else { "false" }),
        );
        if let Some(e) = error {
            trailers.insert(HeaderName::from_static(ERROR_TRAILER), header_text(e));
        }
        self.trailers = Some(trailers);
    }
}

/// A message as a header value: visible ASCII only, one line, at most 1000 bytes.
fn header_text(message: &str) -> HeaderValue {
    let clean: String =
        message.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' }).take(1000).collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("query failed"))
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(bytes) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match std::task::ready!(stream.poll_next(cx)) {
                Ok(Some(chunk)) => {
                    this.rows += chunk.rows;
                    return Poll::Ready(Some(Ok(Frame::data(chunk.bytes))));
                }
                Ok(None) => {
                    let truncated = stream.end().is_some_and(|e| e.truncated);
                    this.finish(truncated, None);
                }
                Err(e) => {
                    let api = ApiError::from(e);
                    tracing::warn!(status = %api.status(), error = api.message(), rows = this.rows, "streamed query failed after its head was sent");
                    // The client reads what an error response would have said: the generic
                    // line for our own failures, never their detail.
                    if this.format == Format::Json {
                        let message = api.client_message().to_string();
                        this.finish(false, Some(&message));
                    } else {
                        // CSV and Arrow cannot say it in band: cut the body.
                        this.stream = None;
                        this.pending.clear();
                        return Poll::Ready(Some(Err(std::io::Error::other(api.client_message().to_string()))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none() && self.pending.is_empty() && self.trailers.is_none()
    }
}
