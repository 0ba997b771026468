//! The one error type of the lake's HTTP handlers (ingest, OTLP aside, `/v1/sql`,
//! Grafana, tables, alerts, silences, admin, UI): 4xx answers carry an actionable message;
//! 5xx answers are logged in full and return a generic message.
//!
//! Wire format, every endpoint: `{"error": "<message>"}`, with `Retry-After` on 503 and
//! 507, and `"code"` plus its fields on a clock-skew refusal. One difference is kept from
//! when the read API lived in its own crate: the generic 500 message of `/v1/sql` and
//! `/grafana/…` reads `internal error, see the lake's log` ([`ApiError::internal_query`]),
//! the others' `internal error; see the lake's log`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lake_query::EngineError;
use serde_json::json;

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
    /// A machine-readable reason beside the message: `"code"` and its fields.
    code: Option<(&'static str, serde_json::Map<String, serde_json::Value>)>,
    /// What a 5xx other than 503 and 507 answers instead of `message` (which is logged).
    generic: &'static str,
}

/// The generic 500 message of most endpoints.
const GENERIC: &str = "internal error; see the lake's log";
/// The generic 500 message of `/v1/sql` and `/grafana/…`, worded as they always answered.
const GENERIC_QUERY: &str = "internal error, see the lake's log";

/// `"code"` of a 400 for rows stamped too far ahead of the lake's clock.
pub const CLOCK_SKEW: &str = "clock_skew";

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None, code: None, generic: GENERIC }
    }
    /// 400 for a batch with a row out of bounds ([`super::bounds::check`]). A `ts` too far
    /// ahead of the lake's clock also carries `"code": "clock_skew"`, the row's `ts_us`
    /// and the lake's `lake_now_us` (µs since 1970): a collector keeps such a batch and
    /// retries while its clock and the lake's disagree, instead of setting it aside.
    pub fn rows_refused(m: impl Into<String>, v: &super::bounds::Violation) -> Self {
        Self::bad_request(m).with_skew(v.skew)
    }
    /// Adds `"code": "clock_skew"` and its fields when `skew` is set (see
    /// [`ApiError::rows_refused`]).
    pub fn with_skew(mut self, skew: Option<super::bounds::Skew>) -> Self {
        if let Some(skew) = skew {
            let mut fields = serde_json::Map::new();
            fields.insert("ts_us".into(), skew.ts.into());
            fields.insert("lake_now_us".into(), skew.now.into());
            self.code = Some((CLOCK_SKEW, fields));
        }
        self
    }
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    /// 401.
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    /// 403.
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    /// 408: the client was too slow (the collector retries it).
    pub fn timeout(m: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, m)
    }
    /// 415.
    pub fn unsupported_media_type(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, m)
    }
    /// 413.
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, m)
    }
    /// 503 with `Retry-After`.
    pub fn unavailable(m: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError { retry_after: Some(retry_after_secs), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, m) }
    }
    /// 507 with `Retry-After`: the lake's disk is full; nothing was stored.
    pub fn insufficient_storage(m: impl Into<String>, retry_after_secs: u64) -> Self {
        ApiError { retry_after: Some(retry_after_secs), ..Self::new(StatusCode::INSUFFICIENT_STORAGE, m) }
    }
    /// 499 (nginx's "client closed request"): only ever seen when nobody listens any more.
    pub fn client_closed(m: impl Into<String>) -> Self {
        Self::new(StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST), m)
    }
    /// 500; the detail is logged, not sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, detail)
    }
    /// 500 of `/v1/sql` and `/grafana/…`; the detail is logged, not sent (their generic
    /// message differs by a comma, see the module docs).
    pub fn internal_query(detail: impl std::fmt::Display) -> Self {
        ApiError { generic: GENERIC_QUERY, ..Self::internal(detail.to_string()) }
    }
    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The message (for a 4xx, what the client is told; for a 5xx, what is logged).
    pub fn message(&self) -> &str {
        &self.message
    }
    /// Whether the client gets a generic message instead of [`ApiError::message`].
    fn hidden(&self) -> bool {
        let answerable = [StatusCode::SERVICE_UNAVAILABLE, StatusCode::INSUFFICIENT_STORAGE];
        self.status.is_server_error() && !answerable.contains(&self.status)
    }
    /// What the client reads: the message, or the generic one for a hidden 5xx (a streamed
    /// answer's `Lake-Error` trailer uses this too).
    pub fn client_message(&self) -> &str {
        if self.hidden() {
            self.generic
        } else {
            &self.message
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Sql(msg) => ApiError::bad_request(msg),
            EngineError::Forbidden(msg) => ApiError::forbidden(msg),
            EngineError::Timeout(limit) => {
                ApiError::timeout(format!("query interrupted: it ran longer than the limit of {limit:?}"))
            }
            EngineError::Cancelled => ApiError::client_closed(e.to_string()),
            EngineError::Internal(_) => ApiError::internal_query(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = if self.hidden() {
            tracing::error!(status = %self.status, error = %self.message, "request failed");
            self.generic.to_string()
        } else {
            self.message
        };
        let mut body = json!({ "error": message });
        if let (Some((code, fields)), serde_json::Value::Object(obj)) = (self.code, &mut body) {
            obj.insert("code".into(), code.into());
            obj.extend(fields);
        }
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::bounds::{Skew, Violation};

    async fn body_of(e: ApiError) -> serde_json::Value {
        let resp = e.into_response();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_clock_refusal_is_machine_readable_and_others_are_not() {
        let v = Violation {
            row: 3,
            column: "ts".into(),
            message: "ahead".into(),
            skew: Some(Skew { ts: 5_000, now: 1_000 }),
        };
        let body = body_of(ApiError::rows_refused("table metrics: row 3", &v)).await;
        assert_eq!(
            body,
            json!({"error": "table metrics: row 3", "code": "clock_skew", "ts_us": 5_000, "lake_now_us": 1_000})
        );
        let v = Violation { skew: None, ..v };
        let body = body_of(ApiError::rows_refused("too many labels", &v)).await;
        assert_eq!(body, json!({"error": "too many labels"}));
    }
}
