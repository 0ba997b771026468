//! The few Docker Engine API calls the source makes, as HTTP/1.1 over the daemon's unix
//! socket with the hyper already linked (one connection per request: the daemon is local,
//! and a followed stream holds its connection anyway).
//!
//! Paths are unversioned (`/events`, not `/v1.47/events`): the daemon answers them with
//! its own API version, so the source works with Docker 20.10 (API 1.41), Docker 25+
//! and Podman's compatible socket without negotiating; the fields read here exist in
//! all of them.
//!
//! Why not a client crate: bollard (the maintained one) fits the TLS and hyper rules with
//! its TLS features off, but brings its generated model crate (every type of the whole
//! API) for the five calls and dozen fields used here; owning these ~150 lines is
//! cheaper than that build and keeps the exact bytes of log streams in our hands.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tokio::task::AbortHandle;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The socket could not be reached (daemon down, wrong path, no permission).
    #[error("cannot connect to {path}: {error}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("{what}: {error}")]
    Http {
        /// The request.
        what: String,
        /// The error.
        error: hyper::Error,
    },
    /// The daemon answered with an error status.
    #[error("{what}: HTTP {status}: {message}")]
    Status {
        /// The request.
        what: String,
        /// The status.
        status: StatusCode,
        /// The daemon's message.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("{what}: unexpected answer: {error}")]
    Decode {
        /// The request.
        what: String,
        /// The error.
        error: String,
    },
}

impl ApiError {
    /// The daemon answered 404: the container is gone.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ApiError::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// A client of one daemon socket.
#[derive(Debug, Clone)]
pub struct Docker {
    socket: PathBuf,
}

/// A response body read chunk by chunk; the connection closes when it is dropped.
#[derive(Debug)]
pub struct Stream {
    body: Incoming,
    what: String,
    conn: AbortHandle,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Stream {
    /// The next chunk of the body, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(error)) => return Err(ApiError::Http { what: self.what.clone(), error }),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    /// The whole body.
    async fn bytes(mut self) -> Result<Vec<u8>, ApiError> {
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            out.extend_from_slice(&c);
        }
        Ok(out)
    }
}

impl Docker {
    /// A client of the daemon listening on `socket`.
    pub fn new(socket: &Path) -> Self {
        Docker { socket: socket.to_path_buf() }
    }

    /// `GET path_and_query`, the body left to stream (a 2xx answer only).
    pub async fn get(&self, path_and_query: &str) -> Result<Stream, ApiError> {
        let what = format!("GET {path_and_query}");
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|error| ApiError::Connect { path: self.socket.clone(), error })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|error| ApiError::Http { what: what.clone(), error })?;
        // The connection task ends with the response, or is aborted when the stream is
        // dropped (a follow that is stopped).
        let conn = tokio::spawn(conn).abort_handle();
        let req = Request::get(path_and_query)
            .header(hyper::header::HOST, "docker")
            .body(Empty::new())
            .map_err(|e| ApiError::Decode { what: what.clone(), error: e.to_string() })?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(error) => {
                conn.abort();
                return Err(ApiError::Http { what, error });
            }
        };
        let status = resp.status();
        let stream = Stream { body: resp.into_body(), what: what.clone(), conn };
        if !status.is_success() {
            let body = stream.bytes().await.unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(ApiError::Status { what, status, message });
        }
        Ok(stream)
    }

    /// `GET path_and_query` decoded as JSON.
    pub async fn json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ApiError> {
        let body = self.get(path_and_query).await?.bytes().await?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::Decode { what: format!("GET {path_and_query}"), error: e.to_string() })
    }
}

/// Nanoseconds since the epoch as the `seconds.nanoseconds` Docker's `since` takes.
pub fn since_param(nanos: i64) -> String {
    let nanos = nanos.max(0);
    format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
}
