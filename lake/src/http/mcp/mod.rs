//! `/mcp`: the lake as a Model Context Protocol server, so an operator's AI agents (Claude
//! Desktop or Code, MetaMCP, any streamable-HTTP MCP client) reason over the telemetry
//! with the same sandbox, row and time limits as `/v1/sql`, without shell access. The
//! tools are in [`tools`].
//!
//! Off unless `[mcp] enabled = true`: `/mcp` then answers 404 with a message naming the
//! setting, so a client pointed at a lake that does not serve MCP is told why rather than
//! sent to guess. Read tokens as `/v1/sql` ([`crate::auth`], tokens-file reloads
//! included); a missing or wrong one is 401 with `WWW-Authenticate: Bearer`.
//!
//! # Protocol
//!
//! The streamable HTTP transport of MCP revision 2025-06-18, negotiating down to
//! 2025-03-26 (an `initialize` asking for any other revision is answered with 2025-06-18,
//! the client then decides). Implemented here rather than with the official Rust SDK
//! (`rmcp` 3.11) because that crate does not fit the lake's dependency set: with
//! `server` and `transport-streamable-http-server` it adds 24 crates, among them `sha2`
//! 0.11 (a second SHA-256 beside ring, and second majors of `digest`, `block-buffer` and
//! `crypto-common`), `schemars` 1 and five proc-macro crates (`darling`, `schemars_derive`,
//! `rmcp-macros`, …): ~90 s of compile time on this 2-core machine (rmcp alone 33 s,
//! measured with `cargo build --timings`, debug). And its session manager has no bound on
//! the number of sessions (a worker task and channels each). The lake needs a small,
//! fixed subset, written out below.
//!
//! - `POST /mcp` carries one JSON-RPC 2.0 message (a batch, a JSON array, only on a
//!   2025-03-26 session: 2025-06-18 removed batching). Requests are answered with
//!   `application/json` (no SSE: the lake never sends server-initiated requests, and
//!   every answer is ready when it is sent); notifications and responses alone with 202.
//! - Methods: `initialize`, `ping`, `tools/list`, `tools/call`; notifications
//!   (`notifications/initialized`, `notifications/cancelled`, …) are accepted and ignored.
//!   An unknown method is JSON-RPC `-32601`, an unknown tool `-32602`.
//! - Tool failures (bad arguments, SQL errors, sandbox refusals, time limits) are results
//!   with `isError: true` and the lake's own message (the one `/v1/sql` answers), so the
//!   model reads them and corrects itself; JSON-RPC errors are kept for the protocol.
//! - Sessions: `initialize` opens one and answers its id in `Mcp-Session-Id`; every later
//!   request must carry it (without: 400, as for a `tools/call` before `initialize`; an
//!   unknown or expired one: 404, upon which a client starts a new session). A session
//!   idle for `[mcp] session_idle` expires; at most `[mcp] max_sessions` are kept, and
//!   beyond that the least recently used one is closed, so a careless client opening
//!   sessions in a loop only ever pushes out idle ones. `DELETE /mcp` ends a session.
//! - `MCP-Protocol-Version` on a later request must be a supported revision (else 400);
//!   without it the session's negotiated revision applies.
//! - `GET /mcp` is 405: the lake offers no server-initiated stream.
//! - `Origin`: a request carrying one (a browser's) is refused with 403 unless it is in
//!   `[mcp] allowed_origins`, as the transport asks to defeat DNS rebinding: a web page
//!   whose name resolves to the lake's address cannot drive it through a visitor's browser.
//!   Like every 401 and 403, the refusal is logged on the `lake_auth` line fail2ban reads
//!   ([`crate::http::refused`]).
//! - Limits: a body over 1 MiB is 413, the body deadline and the router's request time
//!   limit (408) apply, and every query runs under the engine's limits.
//!
//! Every tool call is logged (target `lake::mcp`: tool, arguments summarised, duration,
//! rows, outcome; never the token) and counted on `/metrics` ([`McpStats`]).

mod tools;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{ACCEPT, ALLOW, CONTENT_TYPE, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Denied, Verifier};
use crate::http::body;
use lake_format::units::Dur;
use lake_query::named::NamedQuery;
use lake_query::Engine;

/// The revision answered when a client asks for one the lake does not speak.
pub const LATEST_VERSION: &str = "2025-06-18";
/// Revisions the lake speaks, newest first.
pub const VERSIONS: [&str; 2] = [LATEST_VERSION, "2025-03-26"];
/// The one revision of those with JSON-RPC batches (2025-06-18 removed them).
const BATCHING_VERSION: &str = "2025-03-26";
/// Largest request body: a JSON-RPC message with SQL in it is a few KiB.
pub const MAX_BODY: usize = 1 << 20;
/// The session header.
pub const SESSION_HEADER: &str = "mcp-session-id";
/// The negotiated-revision header.
pub const VERSION_HEADER: &str = "mcp-protocol-version";

const fn default_max_sessions() -> usize {
    64
}
const fn default_session_idle() -> Dur {
    Dur(Duration::from_secs(3600))
}
const fn default_max_rows() -> usize {
    200
}

/// `[mcp]` of lake.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpFile {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    allowed_origins: Vec<String>,
    #[serde(default = "default_max_sessions")]
    max_sessions: usize,
    #[serde(default = "default_session_idle")]
    session_idle: Dur,
    #[serde(default = "default_max_rows")]
    max_rows: usize,
}

impl Default for McpFile {
    fn default() -> Self {
        McpFile {
            enabled: false,
            allowed_origins: Vec::new(),
            max_sessions: default_max_sessions(),
            session_idle: default_session_idle(),
            max_rows: default_max_rows(),
        }
    }
}

/// The validated `[mcp]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpConfig {
    /// Whether `/mcp` serves MCP (else it answers 404 naming the setting).
    pub enabled: bool,
    /// Origins (`scheme://host[:port]`, lower case) a browser-borne request may come from.
    pub allowed_origins: Vec<String>,
    /// Sessions kept at most; the least recently used is closed to make room.
    pub max_sessions: usize,
    /// A session unused this long expires.
    pub session_idle: Duration,
    /// Rows a tool shows at most (a call may ask for fewer); the engine's row limit
    /// (`query.max_rows`) still bounds what a query produces.
    pub max_rows: usize,
}

impl McpFile {
    /// Checks the section.
    pub fn validate(self) -> anyhow::Result<McpConfig> {
        if !(1..=10_000).contains(&self.max_sessions) {
            bail!("mcp.max_sessions = {} must be between 1 and 10000", self.max_sessions);
        }
        if !(1..=10_000).contains(&self.max_rows) {
            bail!("mcp.max_rows = {} must be between 1 and 10000", self.max_rows);
        }
        if self.session_idle.0 < Duration::from_secs(10) {
            bail!("mcp.session_idle = {:?} must be at least 10s", self.session_idle.0);
        }
        let mut origins = Vec::new();
        for (i, o) in self.allowed_origins.iter().enumerate() {
            let lower = o.trim().to_ascii_lowercase();
            let host = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://"));
            if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
                bail!("mcp.allowed_origins[{i}] = {o:?}: write an origin as a browser sends it, e.g. \"https://agents.example.net\" or \"http://localhost:6274\" (scheme, host, optional port, no path)");
            }
            origins.push(lower);
        }
        Ok(McpConfig {
            enabled: self.enabled,
            allowed_origins: origins,
            max_sessions: self.max_sessions,
            session_idle: self.session_idle.0,
            max_rows: self.max_rows,
        })
    }
}

lake_format::metrics! {
    /// Counters of `/mcp`.
    pub struct McpStats {
        /// MCP tool calls answered with a result
        pub calls: Counter("lake_mcp_tool_calls_total"),
        /// MCP tool calls answered with isError (bad arguments, SQL errors, sandbox refusals, time limit)
        pub tool_errors: Counter("lake_mcp_tool_errors_total"),
        /// MCP requests refused (token, origin, session, malformed message) or answered with a JSON-RPC error
        pub rejected: Counter("lake_mcp_rejected_total"),
        /// MCP sessions opened
        pub sessions_opened: Counter("lake_mcp_sessions_opened_total"),
        /// MCP sessions open now
        pub sessions: Gauge("lake_mcp_sessions"),
    }
}

/// One session.
#[derive(Debug)]
struct Session {
    /// The negotiated revision.
    version: &'static str,
    last_used: Instant,
}

/// What `/mcp` answers from. Routed in [`crate::http::router`].
#[derive(Debug)]
pub struct Mcp {
    engine: Arc<Engine>,
    auth: Arc<Verifier>,
    queries: Vec<NamedQuery>,
    config: McpConfig,
    sessions: Mutex<HashMap<String, Session>>,
    stats: Arc<McpStats>,
}

impl Mcp {
    /// The server's state.
    pub fn new(
        engine: Arc<Engine>,
        auth: Arc<Verifier>,
        queries: Vec<NamedQuery>,
        config: McpConfig,
        stats: Arc<McpStats>,
    ) -> Arc<Mcp> {
        Arc::new(Mcp { engine, auth, queries, config, sessions: Mutex::new(HashMap::new()), stats })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves only a map of sessions behind: keep going.
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session at `version`, making room first: expired sessions go, then the
    /// least recently used one if the map is still full.
    fn open_session(&self, version: &'static str) -> String {
        let id = new_session_id();
        let now = Instant::now();
        let mut map = self.sessions();
        let idle = self.config.session_idle;
        map.retain(|_, s| now.duration_since(s.last_used) < idle);
        while map.len() >= self.config.max_sessions {
            let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| k.clone()) else { break };
            map.remove(&oldest);
            tracing::info!(target: "lake::mcp", "MCP session closed to make room under mcp.max_sessions");
        }
        map.insert(id.clone(), Session { version, last_used: now });
        self.stats.sessions.set(map.len() as u64);
        self.stats.sessions_opened.add(1);
        id
    }

    /// The revision of session `id`, touched; `None` when unknown or expired.
    fn touch_session(&self, id: &str) -> Option<&'static str> {
        let now = Instant::now();
        let mut map = self.sessions();
        let idle = self.config.session_idle;
        let found = match map.get_mut(id) {
            Some(s) if now.duration_since(s.last_used) < idle => {
                s.last_used = now;
                Some(s.version)
            }
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        };
        self.stats.sessions.set(map.len() as u64);
        found
    }

    fn end_session(&self, id: &str) -> bool {
        let mut map = self.sessions();
        let found = map.remove(id).is_some();
        self.stats.sessions.set(map.len() as u64);
        found
    }
}

/// 128 random bits, hex: visible ASCII as the transport asks, and not guessable.
fn new_session_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// JSON-RPC error codes.
mod code {
    pub(super) const PARSE: i64 = -32700;
    pub(super) const INVALID_REQUEST: i64 = -32600;
    pub(super) const METHOD_NOT_FOUND: i64 = -32601;
    pub(super) const INVALID_PARAMS: i64 = -32602;
}

fn rpc_error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

fn rpc_result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An HTTP-level refusal with a JSON-RPC error body (no id: it answers no one request).
fn refuse(mcp: &Mcp, status: StatusCode, code: i64, message: impl Into<String>) -> Response {
    mcp.stats.rejected.add(1);
    let message = message.into();
    // Debug, not info: a client hammering with a wrong token must not flood the log.
    tracing::debug!(target: "lake::mcp", status = status.as_u16(), %message, "MCP request refused");
    (status, axum::Json(rpc_error(Value::Null, code, message))).into_response()
}

/// The checks every method shares, `Origin` then the read token: the refusal, if any.
fn refused(mcp: &Mcp, headers: &HeaderMap) -> Option<Response> {
    if let Some(origin) = headers.get(ORIGIN) {
        let o = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
        if !mcp.config.allowed_origins.contains(&o) {
            return Some(refuse(
                mcp,
                StatusCode::FORBIDDEN,
                code::INVALID_REQUEST,
                format!("Origin {o:?} is not allowed (list it in [mcp] allowed_origins of lake.toml)"),
            ));
        }
    }
    let denied = match mcp.auth.read(headers) {
        Ok(()) => return None,
        Err(Denied::Missing) => "missing Authorization: Bearer <read token>",
        Err(Denied::Invalid) => "invalid read token",
    };
    let mut r = refuse(mcp, StatusCode::UNAUTHORIZED, code::INVALID_REQUEST, denied);
    r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"lake\""));
    Some(r)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// `/mcp` while `[mcp] enabled` is false.
pub async fn disabled() -> Response {
    let body =
        json!({"error": "MCP is off on this lake: set [mcp] enabled = true in lake.toml and restart lake serve"});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// `GET /mcp`: no server-initiated stream here.
pub async fn get(State(mcp): State<Arc<Mcp>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&mcp, &headers) {
        return r;
    }
    let mut r = refuse(
        &mcp,
        StatusCode::METHOD_NOT_ALLOWED,
        code::INVALID_REQUEST,
        "the lake offers no server-initiated stream: POST JSON-RPC messages to /mcp",
    );
    r.headers_mut().insert(ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}

/// `DELETE /mcp`: ends the session named by `Mcp-Session-Id`.
pub async fn delete(State(mcp): State<Arc<Mcp>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&mcp, &headers) {
        return r;
    }
    match header(&headers, SESSION_HEADER) {
        None => {
            refuse(&mcp, StatusCode::BAD_REQUEST, code::INVALID_REQUEST, "missing Mcp-Session-Id: no session to end")
        }
        Some(id) if mcp.end_session(id) => {
            tracing::info!(target: "lake::mcp", "MCP session ended by its client");
            StatusCode::NO_CONTENT.into_response()
        }
        Some(_) => refuse(&mcp, StatusCode::NOT_FOUND, code::INVALID_REQUEST, "unknown or expired MCP session"),
    }
}

/// What one message of a POST is.
enum Message {
    Request {
        id: Value,
        method: String,
        params: Value,
    },
    /// A notification or a response to a server request (the lake sends none): nothing to answer.
    Ignored,
    Invalid {
        id: Value,
        message: String,
    },
}

fn classify(v: Value) -> Message {
    let Value::Object(mut o) = v else {
        return Message::Invalid { id: Value::Null, message: "a JSON-RPC message is a JSON object".into() };
    };
    let id = o.remove("id");
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Message::Invalid { id: id.unwrap_or(Value::Null), message: "\"jsonrpc\": \"2.0\" is required".into() };
    }
    let method = match o.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => {
            return Message::Invalid { id: id.unwrap_or(Value::Null), message: "\"method\" must be a string".into() }
        }
        None if o.contains_key("result") || o.contains_key("error") => return Message::Ignored,
        None => return Message::Invalid { id: id.unwrap_or(Value::Null), message: "no \"method\"".into() },
    };
    match id {
        None => Message::Ignored,
        Some(id @ (Value::String(_) | Value::Number(_))) => {
            Message::Request { id, method, params: o.remove("params").unwrap_or(Value::Null) }
        }
        Some(_) => Message::Invalid { id: Value::Null, message: "\"id\" must be a string or a number".into() },
    }
}

/// `POST /mcp`.
pub async fn post(State(mcp): State<Arc<Mcp>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(r) = refused(&mcp, &headers) {
        return r;
    }
    // The answer is JSON: a client whose Accept headers all rule it out gets 406. No
    // Accept at all is taken as anything, as HTTP says.
    let accepts: Vec<String> =
        headers.get_all(ACCEPT).iter().map(|v| v.to_str().unwrap_or("").to_ascii_lowercase()).collect();
    let json_ok = |a: &String| ["application/json", "application/*", "*/*"].iter().any(|t| a.contains(t));
    if !accepts.is_empty() && !accepts.iter().any(json_ok) {
        return refuse(&mcp, StatusCode::NOT_ACCEPTABLE, code::INVALID_REQUEST, "Accept must allow application/json");
    }
    let body = match body::read_body(&headers, body, MAX_BODY, "/mcp").await {
        Ok(b) => b,
        Err(e) => {
            mcp.stats.rejected.add(1);
            return e.into_response();
        }
    };
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return refuse(&mcp, StatusCode::BAD_REQUEST, code::PARSE, format!("not JSON: {e}")),
    };
    let (messages, batch) = match parsed {
        Value::Array(list) if list.is_empty() => {
            return refuse(&mcp, StatusCode::BAD_REQUEST, code::INVALID_REQUEST, "an empty batch");
        }
        Value::Array(list) => (list, true),
        one => (vec![one], false),
    };
    let messages: Vec<Message> = messages.into_iter().map(classify).collect();
    let is_initialize = |m: &Message| matches!(m, Message::Request { method, .. } if method == "initialize");

    // initialize opens a session; it stands alone (in a batch it is refused, as both
    // revisions say).
    if messages.iter().any(is_initialize) {
        if batch {
            return refuse(
                &mcp,
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "initialize must not be part of a batch",
            );
        }
        let Some(Message::Request { id, params, .. }) = messages.into_iter().next() else {
            unreachable!("one message, an initialize request")
        };
        return initialize(&mcp, id, &params);
    }

    let Some(session) = header(&headers, SESSION_HEADER) else {
        return refuse(
            &mcp,
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "missing Mcp-Session-Id: send initialize first and repeat the session id it answers",
        );
    };
    let Some(negotiated) = mcp.touch_session(session) else {
        return refuse(
            &mcp,
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "unknown or expired MCP session: send initialize again",
        );
    };
    let version = match header(&headers, VERSION_HEADER) {
        None => negotiated,
        Some(v) => match VERSIONS.iter().find(|s| **s == v) {
            Some(s) => *s,
            None => {
                return refuse(
                    &mcp,
                    StatusCode::BAD_REQUEST,
                    code::INVALID_REQUEST,
                    format!("unsupported MCP-Protocol-Version {v:?} (this lake speaks {})", VERSIONS.join(", ")),
                )
            }
        },
    };
    if batch && version != BATCHING_VERSION {
        return refuse(
            &mcp,
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            format!("MCP {version} has no JSON-RPC batches: send one message per request"),
        );
    }

    let mut answers = Vec::new();
    for m in messages {
        match m {
            Message::Ignored => {}
            Message::Invalid { id, message } => {
                mcp.stats.rejected.add(1);
                answers.push(rpc_error(id, code::INVALID_REQUEST, message));
            }
            Message::Request { id, method, params } => answers.push(request(&mcp, id, &method, params).await),
        }
    }
    match (answers.len(), batch) {
        (0, _) => StatusCode::ACCEPTED.into_response(),
        (_, true) => axum::Json(Value::Array(answers)).into_response(),
        (_, false) => axum::Json(answers.swap_remove(0)).into_response(),
    }
}

fn initialize(mcp: &Mcp, id: Value, params: &Value) -> Response {
    let asked = params.get("protocolVersion").and_then(Value::as_str);
    let Some(asked) = asked else {
        mcp.stats.rejected.add(1);
        let e = rpc_error(id, code::INVALID_PARAMS, "initialize: params.protocolVersion (a string) is required");
        return (StatusCode::OK, axum::Json(e)).into_response();
    };
    let version = VERSIONS.iter().find(|v| **v == asked).copied().unwrap_or(LATEST_VERSION);
    let client = params.pointer("/clientInfo/name").and_then(Value::as_str).unwrap_or("?");
    let session = mcp.open_session(version);
    tracing::info!(target: "lake::mcp", client = %summarize(client, 64), asked = %summarize(asked, 32), version, "MCP session opened");
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": {"name": "lake", "title": "lake telemetry", "version": env!("CARGO_PKG_VERSION")},
        "instructions": tools::INSTRUCTIONS,
    });
    let mut r = axum::Json(rpc_result(id, result)).into_response();
    if let Ok(v) = HeaderValue::from_str(&session) {
        r.headers_mut().insert(SESSION_HEADER, v);
    }
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn request(mcp: &Arc<Mcp>, id: Value, method: &str, params: Value) -> Value {
    match method {
        "ping" => rpc_result(id, json!({})),
        "tools/list" => rpc_result(id, json!({"tools": tools::list(&mcp.queries, mcp.config.max_rows)})),
        "tools/call" => {
            let name = params.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            if !tools::NAMES.contains(&name.as_str()) {
                mcp.stats.rejected.add(1);
                let known = tools::NAMES.join(", ");
                return rpc_error(id, code::INVALID_PARAMS, format!("unknown tool {name:?} (known: {known})"));
            }
            let args = params.get("arguments").cloned().unwrap_or(Value::Null);
            rpc_result(id, call(mcp, &name, args).await)
        }
        _ => {
            mcp.stats.rejected.add(1);
            rpc_error(id, code::METHOD_NOT_FOUND, format!("method {:?} not found", summarize(method, 64)))
        }
    }
}

/// Runs one tool call: logged, counted, answered as a `CallToolResult`.
async fn call(mcp: &Arc<Mcp>, name: &str, args: Value) -> Value {
    let started = Instant::now();
    let summary = summarize(&args.to_string(), 200);
    let outcome = tools::call(mcp, name, args).await;
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(done) => {
            mcp.stats.calls.add(1);
            tracing::info!(target: "lake::mcp", tool = name, args = %summary, duration_ms = ms, rows = done.rows, outcome = "ok", "MCP tool call");
            json!({"content": [{"type": "text", "text": done.text}], "isError": false})
        }
        Err(message) => {
            mcp.stats.tool_errors.add(1);
            tracing::info!(target: "lake::mcp", tool = name, args = %summary, duration_ms = ms, outcome = "error", error = %message, "MCP tool call");
            json!({"content": [{"type": "text", "text": message}], "isError": true})
        }
    }
}

/// `s` cut to `max` characters (an ellipsis marks the cut), for logs.
fn summarize(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
