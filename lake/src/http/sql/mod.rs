//! The SQL HTTP API: `POST /v1/sql` (and named queries through it).
//!
//! Request body: JSON `{"sql": "...", "format": "json"|"csv"|"arrow"|"table"}` when the
//! `Content-Type` is `application/json`, otherwise the SQL itself as text with the format
//! in `?format=` (default `json`). A JSON body's `format` wins over the query parameter.
//!
//! Response: the result rendered by [`lake_query::output`]. Errors are JSON `{"error": "..."}`:
//! 400 for SQL DuckDB rejects (its own message: syntax, unknown column, …), 403 when the
//! SQL tries to leave the sandbox (a statement that is not a read, `COPY`, `ATTACH`,
//! `INSTALL`/`LOAD`, `SET`/`PRAGMA`, a file outside `<data>/tables/` or a URL; the
//! message says what is not allowed), 408 when the time limit interrupted the query or the
//! body did not arrive within `http.body_timeout`, 413 for a body over 2 MiB
//! ([`body::MAX_READ_BODY`]), 401 without a valid read token ([`crate::auth`]), 500
//! (generic message, detail logged) for our own failures.
//!
//! # Streaming
//!
//! JSON, CSV and Arrow answers are streamed (`stream`): DuckDB's batches are encoded on
//! the query thread and flow to the body through a bounded channel, so memory stays
//! bounded whatever the result's size. The row limit and the time limit still apply to
//! the whole stream, and a client that disconnects cancels the query.
//!
//! The response head is held back until the first MiB of the answer is encoded or the
//! result ends, whichever comes first. So:
//! - an error before that is a proper error response (400/403/408 with JSON), and
//! - a result that fits (most) is answered whole, with `Content-Length` and
//!   `Lake-Truncated: true` in the head when the row limit cut it, as before.
//!
//! A larger result is sent chunked, announcing `Trailer: lake-truncated, lake-error`:
//! - truncation: JSON's final `"truncated"` and `"row_count"` fields (always), and the
//!   `Lake-Truncated` trailer (HTTP/1.1 sends trailers only to clients asking with
//!   `TE: trailers`);
//! - an error after the head (time limit, DuckDB failing mid-way): JSON ends the document
//!   with an `"error"` field after `row_count` (still valid JSON) and the `Lake-Error`
//!   trailer; CSV and Arrow abort the body (the chunked encoding is cut without its final
//!   chunk, so no client mistakes a partial result for a whole one).
//!
//! The terminal `table` format needs every row for its column widths: it is collected
//! (up to the row limit) and sent whole.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use crate::auth::{Denied, Verifier};
use crate::http::body;
use crate::http::error::ApiError;
use lake_query::engine::Engine;
use lake_query::grafana::macros::{expand, parse_duration_ms, MacroContext};
use lake_query::named::NamedQuery;
use lake_query::output::{self, Format};

mod stream;

pub use crate::auth::bearer_token;

/// Response header (or trailer, for a streamed answer) set to `true` when the result was
/// cut at the row limit.
pub const TRUNCATED_HEADER: &str = "lake-truncated";
/// Trailer of a streamed answer that failed after its head was sent.
pub const ERROR_TRAILER: &str = "lake-error";

/// What `/v1/sql` answers from: the engine, the tokens, the named queries. Routed in
/// [`crate::http::router`].
///
/// Besides SQL, a JSON body may name one of `queries` (`{"query": "http_5xx_ratio",
/// "since": "6h"}`): its macros are expanded over the last `since` (default 24h), or
/// over `from`..`to` (Unix epoch milliseconds) when given, with parameters, as Grafana
/// panels are. `vars` gives its template variables (`{"host": ["a", "b"], "grep":
/// "x"}`: a string is one value), bound as parameters; those left out take the query's
/// defaults ([`NamedQuery::vars`]).
#[derive(Debug)]
pub struct Sql {
    engine: Arc<Engine>,
    auth: Arc<Verifier>,
    queries: Vec<NamedQuery>,
}

impl Sql {
    /// The SQL API's state, checking read tokens with `auth`.
    pub fn new(engine: Arc<Engine>, auth: Arc<Verifier>, queries: Vec<NamedQuery>) -> Arc<Sql> {
        Arc::new(Sql { engine, auth, queries })
    }
}

/// `/v1/sql` alone with plaintext read tokens (hashed here; none: no auth), for the unit
/// tests and the benches; `lake serve` routes it in [`crate::http::router`].
#[doc(hidden)]
pub fn router(engine: Arc<Engine>, read_tokens: Vec<String>, queries: Vec<NamedQuery>) -> Router {
    let auth = Arc::new(Verifier::with_read_tokens(&read_tokens));
    Router::new().route("/v1/sql", post(sql)).with_state(Sql::new(engine, auth, queries))
}

/// `/v1/sql`'s query string.
#[derive(Debug, Deserialize)]
pub struct SqlParams {
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    #[serde(default)]
    sql: String,
    /// A named query instead of `sql`.
    query: Option<String>,
    /// Time span a named query covers, e.g. "6h" (default 24h).
    since: Option<String>,
    /// Start of a named query's range, epoch milliseconds (instead of `since`).
    from: Option<i64>,
    /// End of a named query's range, epoch milliseconds (default now).
    to: Option<i64>,
    /// A named query's template variables.
    #[serde(default)]
    vars: BTreeMap<String, OneOrMany>,
    format: Option<String>,
}

/// A variable's values: a string is one.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// What a request asks to run.
#[derive(Debug)]
enum Statement {
    Sql(String),
    Named { name: String, from_ms: Option<i64>, to_ms: Option<i64>, since_ms: u64, vars: BTreeMap<String, Vec<String>> },
}

/// `POST /v1/sql`.
pub async fn sql(
    State(state): State<Arc<Sql>>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&state.auth, &headers)?;
    let body = body::read_body(&headers, body, body::MAX_READ_BODY, "/v1/sql").await?;
    let (statement, format) = parse_request(&headers, params, &body)?;
    let (sql, params) = match statement {
        Statement::Sql(sql) => (sql, Vec::new()),
        Statement::Named { name, from_ms, to_ms, since_ms, vars } => {
            expand_named(&state.queries, &name, from_ms, to_ms, since_ms, vars)?
        }
    };
    if format != Format::Table {
        return stream::respond(&state.engine, sql, params, format).await;
    }
    let result = state.engine.query_params(sql, params).await?;
    let truncated = result.truncated;
    let rendered = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        output::write(format, &result, &mut out).map(|()| out)
    })
    .await
    .map_err(|e| ApiError::internal_query(&e))?
    .map_err(|e| ApiError::internal_query(&e))?;

    let mut response = rendered.into_response();
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if truncated {
        h.insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The SQL and bound parameters of the named query `name` over `from_ms`..`to_ms` (epoch
/// milliseconds; `to_ms` defaults to now, `from_ms` to `since_ms` before it), with `vars`
/// completed by the query's defaults. Shared by `/v1/sql` and the MCP `named_query` tool,
/// so both expand a name the same way and refuse the same mistakes in the same words.
pub(crate) fn expand_named(
    queries: &[NamedQuery],
    name: &str,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    since_ms: u64,
    mut vars: BTreeMap<String, Vec<String>>,
) -> Result<(String, Vec<lake_query::ParamValue>), ApiError> {
    let q = queries.iter().find(|q| q.name == name).ok_or_else(|| {
        let known: Vec<&str> = queries.iter().map(|q| q.name.as_str()).collect();
        ApiError::bad_request(format!("unknown named query {name:?} (known: {})", known.join(", ")))
    })?;
    let now_ms = lake_format::rows::now_micros() / 1000;
    let to_ms = to_ms.unwrap_or(now_ms);
    let span = match from_ms {
        Some(from) if from < to_ms => to_ms - from,
        Some(from) => {
            return Err(ApiError::bad_request(format!("from ({from}) must be before to ({to_ms})")));
        }
        None => i64::try_from(since_ms).unwrap_or(i64::MAX),
    };
    let mut ctx = MacroContext::last(to_ms, span, 200);
    q.fill_vars(&mut vars);
    ctx.vars = vars;
    let expanded = expand(&q.sql, &ctx).map_err(|e| ApiError::bad_request(format!("named query {name}: {e}")))?;
    Ok((expanded.sql, expanded.params))
}

fn parse_request(headers: &HeaderMap, params: SqlParams, body: &[u8]) -> Result<(Statement, Format), ApiError> {
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let (sql, format) = if is_json {
        let b: SqlBody =
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
        let format = b.format.or(params.format);
        if let Some(name) = b.query {
            if !b.sql.trim().is_empty() {
                return Err(ApiError::bad_request("give either sql or query, not both"));
            }
            let since_ms = match b.since.as_deref() {
                Some(s) => parse_duration_ms(s)
                    .ok_or_else(|| ApiError::bad_request(format!("since {s:?}: use e.g. 30m, 6h, 7d")))?,
                None => 24 * 3_600_000,
            };
            let format = parse_format(format)?;
            let vars = b
                .vars
                .into_iter()
                .map(|(k, v)| match v {
                    OneOrMany::One(s) => (k, vec![s]),
                    OneOrMany::Many(list) => (k, list),
                })
                .collect();
            return Ok((Statement::Named { name, from_ms: b.from, to_ms: b.to, since_ms, vars }, format));
        }
        if b.from.is_some() || b.to.is_some() || !b.vars.is_empty() {
            return Err(ApiError::bad_request("from, to and vars are for a named query (\"query\"), not for sql"));
        }
        (b.sql, format)
    } else {
        let sql = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the SQL body is not valid UTF-8"))?;
        (sql.to_string(), params.format)
    };
    let format = parse_format(format)?;
    if sql.trim().is_empty() {
        return Err(ApiError::bad_request("empty SQL"));
    }
    Ok((Statement::Sql(sql), format))
}

fn parse_format(format: Option<String>) -> Result<Format, ApiError> {
    match format {
        Some(f) => Format::from_str(&f).map_err(|e| ApiError::bad_request(e.to_string())),
        None => Ok(Format::Json),
    }
}

/// 401 unless the request holds a read token (or no read token is configured).
pub(crate) fn authorize(auth: &Verifier, headers: &HeaderMap) -> Result<(), ApiError> {
    match auth.read(headers) {
        Ok(()) => Ok(()),
        Err(Denied::Missing) => Err(ApiError::unauthorized("missing Authorization: Bearer <read token>")),
        Err(Denied::Invalid) => Err(ApiError::unauthorized("invalid read token")),
    }
}

#[cfg(test)]
mod tests;
