//! The Grafana JSON datasource API, mounted by the server under `/grafana`.
//!
//! Compatible with the `simpod-json-datasource` plugin (`GET /`, `POST /metrics`,
//! `/metric-payload-options`, `/query`, `/variable`, `/tag-keys`, `/tag-values`) and with
//! the older simple-json plugin (`/search`, `/annotations`). Authentication is the SQL
//! API's: `Authorization: Bearer <read token>` (set it in the datasource's HTTP headers),
//! none when no read token is configured.
//!
//! A target is a named query ([`lake_query::named`], `target` = its name) or raw SQL
//! (`payload.sql`, or a `target` starting with SELECT, WITH or FROM). Its SQL goes through
//! [`macros::expand`] (time range, buckets, template variables as bound parameters), then
//! the dashboard's ad-hoc filters (`adhoc`), then [`Engine::query_params`]: the same
//! sandbox, read-only check and limits as the SQL API. The answer is time series or a
//! table (`response`): `payload.format` decides (`"table"` / `"timeseries"`), else the
//! named query's kind, else the result's shape.
//!
//! Template variables come from `scopedVars` and from the target's payload (every key
//! but `sql` and `format`): a payload `{"host": "$host"}` lets Grafana fill the value in,
//! and the query's `$host` is then bound as a parameter. Errors are the SQL API's JSON
//! `{"error": "..."}`: 400 for a wrong request, an unknown named query or DuckDB
//! refusing the SQL, 403 for SQL leaving the sandbox (as the SQL API), 401 for auth, 408
//! for the time limit or a body slower than `http.body_timeout`, 413 for a body over 2 MiB.

#[doc(hidden)]
pub mod fuzzing;
use lake_query::grafana::macros;

mod adhoc;
mod annotations;
mod request;
mod response;

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use duckdb::types::Value;
use serde_json::{json, Value as JsonValue};

use crate::auth::Verifier;
use crate::http::body::{read_body, MAX_READ_BODY};
use crate::http::error::ApiError;
use crate::http::sql::authorize;
use lake_query::engine::{Engine, EngineError, QueryResult};
use lake_query::named::{NamedQuery, Panel};
use request::{
    now_ms, parse, payload_object, range_ms, AdhocFilter, AnnotationRequest, PayloadOptionsRequest, QueryRequest,
    SearchRequest, TagValuesRequest, Target, VariableRequest,
};

/// What the Grafana routes answer from. Routed under `/grafana` in
/// [`crate::http::router`]; read tokens are checked with `auth`; `queries` are the named
/// queries offered as metrics (defaults included: see [`lake_query::named::merge`]).
#[derive(Debug)]
pub struct Grafana {
    engine: Arc<Engine>,
    auth: Arc<Verifier>,
    queries: Vec<NamedQuery>,
}

impl Grafana {
    /// The Grafana API's state.
    pub fn new(engine: Arc<Engine>, auth: Arc<Verifier>, queries: Vec<NamedQuery>) -> Arc<Grafana> {
        Arc::new(Grafana { engine, auth, queries })
    }
}

/// The Grafana routes alone, relative (the benches mount them with `.nest("/grafana", …)`),
/// with plaintext read tokens (hashed here; none: no auth), for the unit tests and the
/// benches; `lake serve` routes them in [`crate::http::router`].
#[doc(hidden)]
pub fn router(engine: Arc<Engine>, read_tokens: Vec<String>, queries: Vec<NamedQuery>) -> Router {
    let auth = Arc::new(Verifier::with_read_tokens(&read_tokens));
    Router::new()
        .route("/", get(health))
        .route("/metrics", post(metrics))
        .route("/metric-payload-options", post(payload_options))
        .route("/query", post(query))
        .route("/variable", post(variable))
        .route("/tag-keys", post(tag_keys))
        .route("/tag-values", post(tag_values))
        .route("/search", post(search))
        .route("/annotations", post(annotations))
        .with_state(Grafana::new(engine, auth, queries))
}

type Shared = State<Arc<Grafana>>;
type Reply = Result<Json<JsonValue>, ApiError>;

/// "Save & test".
pub async fn health(State(s): Shared, headers: HeaderMap) -> Reply {
    authorize(&s.auth, &headers)?;
    Ok(Json(json!({ "status": "ok" })))
}

/// The named queries, for the metric picker, with the `format` payload option.
pub async fn metrics(State(s): Shared, headers: HeaderMap) -> Reply {
    authorize(&s.auth, &headers)?;
    let list: Vec<JsonValue> = s
        .queries
        .iter()
        .map(|q| {
            json!({
                "label": q.name,
                "value": q.name,
                "payloads": [{
                    "label": "Format",
                    "name": "format",
                    "type": "select",
                    "placeholder": q.kind.to_string(),
                    "reloadMetric": false,
                    "options": format_options(),
                }],
            })
        })
        .collect();
    Ok(Json(JsonValue::Array(list)))
}

fn format_options() -> JsonValue {
    json!([
        { "label": "Time series", "value": "timeseries" },
        { "label": "Table", "value": "table" },
    ])
}

pub async fn payload_options(State(s): Shared, headers: HeaderMap, body: Body) -> Reply {
    authorize(&s.auth, &headers)?;
    let body = read_body(&headers, body, MAX_READ_BODY, "Grafana requests").await?;
    let req: PayloadOptionsRequest = parse(&body)?;
    Ok(Json(match req.name.as_deref() {
        Some("format") => format_options(),
        _ => json!([]),
    }))
}

/// How a target's result is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    TimeSeries,
    Table,
    /// Time series when the result has a time and a numeric column, else a table.
    Auto,
}

/// A target resolved to SQL.
#[derive(Debug)]
struct Resolved<'a> {
    /// For error messages: the refId and what was asked.
    label: String,
    sql: Cow<'a, str>,
    shape: Shape,
    /// The named query, whose variable defaults fill what the request leaves out.
    named: Option<&'a NamedQuery>,
}

impl Grafana {
    fn named(&self, name: &str) -> Option<&NamedQuery> {
        self.queries.iter().find(|q| q.name == name)
    }

    fn unknown(&self, name: &str) -> ApiError {
        let known: Vec<&str> = self.queries.iter().map(|q| q.name.as_str()).collect();
        ApiError::bad_request(format!(
            "unknown named query {name:?} (known: {}; or give SQL in payload.sql)",
            known.join(", ")
        ))
    }

    /// The SQL of a target; `None` for an empty one (a panel being edited).
    fn resolve<'a>(
        &'a self,
        target: &'a Target,
        payload: &'a serde_json::Map<String, JsonValue>,
    ) -> Result<Option<Resolved<'a>>, ApiError> {
        let ref_id = target.ref_id.as_deref().unwrap_or("?");
        let mut shape = match payload.get("format") {
            None | Some(JsonValue::Null) => Shape::Auto,
            Some(JsonValue::String(f)) => match f.to_ascii_lowercase().as_str() {
                "table" => Shape::Table,
                "timeseries" | "time_series" | "timeserie" => Shape::TimeSeries,
                "" => Shape::Auto,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "target {ref_id}: payload.format {f:?} is not \"timeseries\" or \"table\""
                    )))
                }
            },
            Some(_) => return Err(ApiError::bad_request(format!("target {ref_id}: payload.format must be a string"))),
        };
        // simple-json sends `type: "timeserie"` by default, so only `table` is a choice.
        if shape == Shape::Auto && target.kind.as_deref() == Some("table") {
            shape = Shape::Table;
        }
        if let Some(sql) = payload.get("sql").and_then(JsonValue::as_str) {
            if !sql.trim().is_empty() {
                return Ok(Some(Resolved {
                    label: format!("target {ref_id} (payload.sql)"),
                    sql: Cow::Borrowed(sql),
                    shape,
                    named: None,
                }));
            }
        }
        let text = target.target.as_deref().unwrap_or("").trim();
        if text.is_empty() {
            return Ok(None);
        }
        if let Some(q) = self.named(text) {
            if shape == Shape::Auto {
                shape = match q.kind {
                    Panel::TimeSeries => Shape::TimeSeries,
                    Panel::Table => Shape::Table,
                };
            }
            return Ok(Some(Resolved {
                label: format!("target {ref_id} ({})", q.name),
                sql: Cow::Borrowed(&q.sql),
                shape,
                named: Some(q),
            }));
        }
        if looks_like_sql(text) {
            return Ok(Some(Resolved {
                label: format!("target {ref_id}"),
                sql: Cow::Borrowed(text),
                shape,
                named: None,
            }));
        }
        Err(self.unknown(text))
    }

    /// Runs expanded SQL with the ad-hoc filters that concern its result.
    async fn run(&self, sql: String, params: Vec<Value>, filters: &[AdhocFilter]) -> Result<QueryResult, EngineError> {
        if filters.is_empty() {
            return self.engine.query_params(sql, params).await;
        }
        // Which columns the target returns decides which filters apply: the engine shows
        // them (a LIMIT 0 probe) before running the target, wrapped or not, on the same
        // connection.
        let filters = filters.to_vec();
        let target = adhoc::strip_semicolons(&sql).to_string();
        let bound = params.clone();
        self.engine
            .query_params_with(sql, params, move |columns| {
                adhoc::wrap(&target, &bound, &filters, columns).map_err(api_to_engine)
            })
            .await
    }
}

/// An [`ApiError`] from [`adhoc::wrap`] is a 400: carried through as a SQL error.
fn api_to_engine(e: ApiError) -> EngineError {
    EngineError::Sql(e.message().to_string())
}

/// Raw SQL in the target field, as opposed to a named query.
fn looks_like_sql(text: &str) -> bool {
    let first = text.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
    ["select", "with", "from"].iter().any(|k| first.eq_ignore_ascii_case(k))
}

/// A 400 naming the target, or the engine's own answer for timeouts and internal errors.
fn target_error(label: &str, e: EngineError) -> ApiError {
    match e {
        EngineError::Sql(msg) => ApiError::bad_request(format!("{label}: {msg}")),
        EngineError::Forbidden(msg) => ApiError::forbidden(format!("{label}: {msg}")),
        other => other.into(),
    }
}

/// The panels' answer, written as JSON text target by target ([`response`]), not as a
/// `serde_json::Value` tree.
pub async fn query(State(s): Shared, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    authorize(&s.auth, &headers)?;
    let body = read_body(&headers, body, MAX_READ_BODY, "Grafana requests").await?;
    let req: QueryRequest = parse(&body)?;
    let now = now_ms();
    let mut out = vec![b'['];
    for target in req.targets.iter().filter(|t| !t.hide) {
        let payload = payload_object(target.payload.as_ref())?;
        let Some(resolved) = s.resolve(target, &payload)? else {
            continue;
        };
        let mut ctx = req.context(&payload, now)?;
        if let Some(q) = resolved.named {
            q.fill_vars(&mut ctx.vars);
        }
        let expanded = macros::expand(&resolved.sql, &ctx)
            .map_err(|e| ApiError::bad_request(format!("{}: {e}", resolved.label)))?;
        let result = s
            .run(expanded.sql, expanded.params, &req.adhoc_filters)
            .await
            .map_err(|e| target_error(&resolved.label, e))?;
        let series = match resolved.shape {
            Shape::TimeSeries => true,
            Shape::Table => false,
            Shape::Auto => response::fits_time_series(&result),
        };
        if series {
            response::time_series(&result, &mut out)
                .map_err(|e| ApiError::bad_request(format!("{}: {}", resolved.label, e.message())))?;
        } else {
            response::table(&result, &mut out)?;
        }
    }
    out.push(b']');
    Ok(([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], out).into_response())
}

/// Template variable values: `[{__text, __value}]` from the first column (or the
/// `__text`/`__value` columns, or the first two as text and value).
pub async fn variable(State(s): Shared, headers: HeaderMap, body: Body) -> Reply {
    authorize(&s.auth, &headers)?;
    let body = read_body(&headers, body, MAX_READ_BODY, "Grafana requests").await?;
    let req: VariableRequest = parse(&body)?;
    let payload = payload_object(req.payload.as_ref())?;
    let text = payload.get("target").and_then(JsonValue::as_str).or(req.target.as_deref()).unwrap_or("").trim();
    if text.is_empty() {
        return Err(ApiError::bad_request("give the variable's query in payload.target: SQL or a named query"));
    }
    let sql = match s.named(text) {
        Some(q) => q.sql.as_str(),
        None if looks_like_sql(text) => text,
        None => return Err(s.unknown(text)),
    };
    let (from_ms, to_ms) = range_ms(req.range.as_ref(), now_ms())?;
    let ctx = macros::MacroContext {
        from_ms,
        to_ms,
        interval_ms: macros::auto_interval_ms(to_ms - from_ms, 1000),
        vars: Default::default(),
    };
    let expanded = macros::expand(sql, &ctx).map_err(|e| ApiError::bad_request(format!("variable: {e}")))?;
    let result = s.engine.query_params(expanded.sql, expanded.params).await.map_err(|e| target_error("variable", e))?;
    let names: Vec<&str> = result.schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names.is_empty() {
        return Ok(Json(json!([])));
    }
    let (t, v) = match (names.iter().position(|n| *n == "__text"), names.iter().position(|n| *n == "__value")) {
        (Some(t), Some(v)) => (t, v),
        _ if names.len() >= 2 => (0, 1),
        _ => (0, 0),
    };
    let mut list = Vec::new();
    for batch in &result.batches {
        for row in 0..batch.num_rows() {
            list.push(json!({
                "__text": response::text_cell(batch.column(t).as_ref(), row),
                "__value": response::text_cell(batch.column(v).as_ref(), row),
            }));
        }
    }
    Ok(Json(JsonValue::Array(list)))
}

pub async fn tag_keys(State(s): Shared, headers: HeaderMap) -> Reply {
    authorize(&s.auth, &headers)?;
    let keys: Vec<JsonValue> =
        adhoc::TAG_KEYS.iter().map(|(key, _, _)| json!({ "type": "string", "text": key })).collect();
    Ok(Json(JsonValue::Array(keys)))
}

pub async fn tag_values(State(s): Shared, headers: HeaderMap, body: Body) -> Reply {
    authorize(&s.auth, &headers)?;
    let body = read_body(&headers, body, MAX_READ_BODY, "Grafana requests").await?;
    let req: TagValuesRequest = parse(&body)?;
    let condition = match &req.range {
        Some(r) => Some(time_condition(Some(r))?),
        None => None,
    };
    let Some(sql) = adhoc::values_sql(&req.key, condition.as_deref()) else {
        let known: Vec<&str> = adhoc::TAG_KEYS.iter().map(|(k, _, _)| *k).collect();
        return Err(ApiError::bad_request(format!("unknown tag key {:?} (known: {})", req.key, known.join(", "))));
    };
    let result = s.engine.query_params(sql, Vec::new()).await?;
    let mut values = Vec::new();
    for batch in &result.batches {
        for row in 0..batch.num_rows() {
            values.push(json!({ "text": response::text_cell(batch.column(0).as_ref(), row) }));
        }
    }
    Ok(Json(JsonValue::Array(values)))
}

/// `ts` within a request's range, rendered from parsed milliseconds.
fn time_condition(range: Option<&request::Range>) -> Result<String, ApiError> {
    let (from_ms, to_ms) = range_ms(range, now_ms())?;
    let ctx = macros::MacroContext { from_ms, to_ms, interval_ms: 1000, vars: Default::default() };
    macros::expand("$__timeFilter(ts)", &ctx).map(|e| e.sql).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// simple-json's metric search: the names of the named queries containing `target`.
pub async fn search(State(s): Shared, headers: HeaderMap, body: Body) -> Reply {
    authorize(&s.auth, &headers)?;
    let body = read_body(&headers, body, MAX_READ_BODY, "Grafana requests").await?;
    let req: SearchRequest = parse(&body)?;
    let needle = req.target.unwrap_or_default().to_ascii_lowercase();
    let names: Vec<&str> = s.queries.iter().map(|q| q.name.as_str()).filter(|n| n.contains(needle.trim())).collect();
    Ok(Json(json!(names)))
}

pub async fn annotations(State(s): Shared, headers: HeaderMap, body: Body) -> Reply {
    authorize(&s.auth, &headers)?;
    let body = read_body(&headers, body, MAX_READ_BODY, "Grafana requests").await?;
    let req: AnnotationRequest = parse(&body)?;
    let sources = annotations::sources(req.annotation.get("query").and_then(JsonValue::as_str))?;
    let (from_ms, to_ms) = range_ms(req.range.as_ref(), now_ms())?;
    let ctx = macros::MacroContext { from_ms, to_ms, interval_ms: 1000, vars: Default::default() };
    let literal = |m: &str| macros::expand(m, &ctx).map(|e| e.sql).map_err(|e| ApiError::bad_request(e.to_string()));
    let (from, to) = (literal("$__timeFrom()")?, literal("$__timeTo()")?);
    let mut events = Vec::new();
    for source in sources {
        let result = s.engine.query_params(source.sql(&from, &to), Vec::new()).await?;
        events.extend(source.events(&result, &req.annotation));
    }
    events.sort_by_key(|e| e["time"].as_i64());
    Ok(Json(JsonValue::Array(events)))
}

#[cfg(test)]
mod tests;
