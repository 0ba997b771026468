//! What a PostgreSQL session does: log in with a read token ([`Login`]), then answer
//! statements ([`Backend`]) through the engine, the catalog answers or the few session
//! statements clients send on their own (`BEGIN`, `COMMIT`, `SET`: accepted, nothing to
//! do in a read-only lake).

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use duckdb::types::Value;
use futures::sink::{Sink, SinkExt};
use futures::StreamExt;
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata, DefaultServerParameterProvider,
    StartupHandler,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{send_query_response, ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::DataRow;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::catalog::{self, Answer};
use super::{encode, Shared};
use crate::auth::Role;
use lake_query::engine::{EngineError, QueryResult};

/// Batches (≤ 2048 rows each) waiting between the query thread and the socket: what one
/// session holds in memory of a large result.
const CHANNEL_CHUNKS: usize = 8;

/// An error response the client shows (`ERROR`, the session goes on).
pub(super) fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())))
}

/// The engine's verdict as a PostgreSQL error: what the sandbox refused is `42501`, a
/// syntax error `42601`, an unknown table or column `42P01`/`42703`, the time limit `57014`.
pub(super) fn engine_error(e: EngineError) -> PgWireError {
    match e {
        EngineError::Forbidden(m) => user_error("42501", m),
        EngineError::Timeout(_) | EngineError::Cancelled => user_error("57014", e.to_string()),
        EngineError::Internal(m) => {
            tracing::error!(error = %m, "pg: query failed inside the lake");
            user_error("XX000", "internal error in the lake (details in its log)")
        }
        EngineError::Sql(m) => {
            let code = if m.starts_with("Parser Error") {
                "42601"
            } else if m.starts_with("Catalog Error") {
                "42P01"
            } else if m.starts_with("Binder Error") {
                "42703"
            } else if m.starts_with("Conversion Error") {
                "22P02"
            } else {
                "42000"
            };
            user_error(code, m)
        }
    }
}

/// Startup: protocol negotiation, then a cleartext password that must be a live read
/// token — none asked while no read token exists (reads are open, as on HTTP).
#[derive(Debug)]
pub(super) struct Login {
    shared: Arc<Shared>,
    parameters: DefaultServerParameterProvider,
}

impl Login {
    pub(super) fn new(shared: Arc<Shared>) -> Login {
        let mut parameters = DefaultServerParameterProvider::default();
        // psql and Grafana choose their catalog queries by the version (see `catalog`).
        parameters.server_version = "15.0 (lake)".to_owned();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.search_path = catalog::SCHEMA.to_owned();
        Login { shared, parameters }
    }
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if !self.shared.auth.read_required() {
                    return finish_authentication(client, &self.parameters).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                if self.shared.auth.check(Role::Read, &pwd.password).is_some() {
                    return finish_authentication(client, &self.parameters).await;
                }
                self.shared.stats.auth_failures.add(1);
                let user = client.metadata().get(pgwire::api::METADATA_USER).cloned().unwrap_or_default();
                tracing::warn!(peer = %client.socket_addr(), %user, "pg: login refused, the password is not a read token");
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "FATAL".to_owned(),
                    "28P01".to_owned(),
                    "password authentication failed: the password must be one of this lake's read tokens \
                     (`lake token add --role read`); the user name is free"
                        .to_owned(),
                ))));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Statements are kept as their text: the engine parses them when they run.
#[derive(Debug)]
pub(super) struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = String;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<String>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(sql.to_owned())
    }
}

/// How a statement is answered.
enum Plan {
    /// Only comments and semicolons (pgx's `-- ping`).
    Empty,
    /// `BEGIN`: every statement reads one snapshot anyway.
    Begin,
    /// `COMMIT`/`ROLLBACK` (the tag to answer).
    End(&'static str),
    /// `SET`, `RESET`, `DISCARD`, `DEALLOCATE`: sessions have no settings to change here.
    Session(String),
    /// From [`catalog::answer`].
    Catalog(QueryResult),
    /// `COPY (query) TO STDOUT`, or `COPY table TO STDOUT`: the query, and whether CSV.
    Copy { sql: String, csv: bool, header: bool },
    /// Anything else: the engine.
    Engine,
}

/// The statement without comments, for classifying it (not what runs).
fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if rest.starts_with('\'') || rest.starts_with('"') {
            // A quoted string or name runs to its closing quote, comments markers and all.
            let q = rest.as_bytes()[0] as char;
            let end = rest[1..].find(q).map_or(rest.len(), |i| i + 2);
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

fn plan(sql: &str, shared: &Shared) -> PgWireResult<Plan> {
    let bare = strip_comments(sql);
    let trimmed = bare.trim().trim_end_matches(|c: char| c == ';' || c.is_whitespace()).trim();
    if trimmed.is_empty() {
        return Ok(Plan::Empty);
    }
    let lower = trimmed.to_ascii_lowercase();
    let first = lower.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap_or("");
    match first {
        "begin" | "start" => return Ok(Plan::Begin),
        "commit" | "end" => return Ok(Plan::End("COMMIT")),
        "rollback" | "abort" => return Ok(Plan::End("ROLLBACK")),
        "set" | "reset" | "discard" | "deallocate" => return Ok(Plan::Session(first.to_ascii_uppercase())),
        "copy" => return copy_plan(trimmed, &lower).map(|(sql, csv, header)| Plan::Copy { sql, csv, header }),
        _ => {}
    }
    if !catalog::is_catalog(sql) {
        return Ok(Plan::Engine);
    }
    // The table list (custom tables' schemas from disk) only for catalog queries.
    match catalog::answer(sql, &catalog::tables(&shared.data_dir)) {
        Answer::NotCatalog => Ok(Plan::Engine),
        Answer::Rows(r) => Ok(Plan::Catalog(r)),
        Answer::Unsupported(m) => Err(user_error("0A000", m)),
    }
}

/// `COPY (query) TO STDOUT [WITH] [(FORMAT csv, HEADER)]` or `COPY table TO STDOUT`: the
/// query to run; `COPY ... FROM` is a write and refused.
fn copy_plan(sql: &str, lower: &str) -> PgWireResult<(String, bool, bool)> {
    let body = sql[4..].trim_start();
    let offset = sql.len() - body.len();
    let (query, rest) = if body.starts_with('(') {
        let Some(close) = matching_paren(body) else {
            return Err(user_error("42601", "COPY: the query in COPY (query) TO STDOUT has no closing parenthesis"));
        };
        (body[1..close].to_string(), &lower[offset + close + 1..])
    } else {
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        (format!("SELECT * FROM {}", &body[..name_end]), &lower[offset + name_end..])
    };
    let rest = rest.trim();
    if rest.starts_with("from") {
        return Err(user_error("42501", "COPY ... FROM writes into a table: the lake's PostgreSQL port is read-only"));
    }
    if !rest.starts_with("to stdout") {
        return Err(user_error(
            "0A000",
            "COPY here writes to STDOUT only (COPY (query) TO STDOUT, or psql's \\copy (query) TO 'file'); \
             the lake reads no server files",
        ));
    }
    let options = &rest["to stdout".len()..];
    let csv = options.contains("csv");
    if !csv && (options.contains("binary") || options.contains("format")) {
        return Err(user_error("0A000", "COPY TO STDOUT: the text and CSV formats are served, not binary"));
    }
    Ok((query, csv, options.contains("header")))
}

/// The index of the parenthesis closing the one `s` starts with (quotes skipped).
fn matching_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quoted: Option<char> = None;
    for (i, c) in s.char_indices() {
        match quoted {
            Some(q) if c == q => quoted = None,
            Some(_) => {}
            None => match c {
                '\'' | '"' => quoted = Some(c),
                '(' => depth += 1,
                ')' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

/// Answers statements with the shared engine.
#[derive(Debug)]
pub(super) struct Backend {
    shared: Arc<Shared>,
    parser: Arc<Parser>,
}

impl Backend {
    pub(super) fn new(shared: Arc<Shared>) -> Backend {
        Backend { shared, parser: Arc::new(Parser) }
    }

    /// Runs one statement: its response, or the error the client sees. `cut` is set once
    /// the engine's rows ended at the row limit.
    async fn run<C>(
        &self,
        client: &mut C,
        sql: &str,
        params: Vec<Value>,
        format: &Format,
        cut: Arc<AtomicBool>,
    ) -> PgWireResult<Response>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.shared.stats.queries.add(1);
        let result = match plan(sql, &self.shared) {
            Ok(Plan::Empty) => Ok(Response::EmptyQuery),
            Ok(Plan::Begin) => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Ok(Plan::End(tag)) => Ok(Response::TransactionEnd(Tag::new(tag))),
            Ok(Plan::Session(tag)) => Ok(Response::Execution(Tag::new(&tag))),
            Ok(Plan::Catalog(r)) => collected(r, format),
            Ok(Plan::Copy { sql, csv, header }) => self.copy_out(client, sql, params, csv, header).await,
            Ok(Plan::Engine) => self.stream(sql.to_owned(), params, format, cut).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            self.shared.stats.errors.add(1);
        }
        result
    }

    /// The engine's rows, streamed: batches are encoded on the query thread as DuckDB
    /// produces them, so a large result is never held whole.
    async fn stream(
        &self,
        sql: String,
        params: Vec<Value>,
        format: &Format,
        cut: Arc<AtomicBool>,
    ) -> PgWireResult<Response> {
        let fmt = format.clone();
        let mut fields_for_rows: Option<Arc<Vec<FieldInfo>>> = None;
        let encode = move |batch: &RecordBatch| -> std::io::Result<PgWireResult<Vec<DataRow>>> {
            let f = fields_for_rows.get_or_insert_with(|| Arc::new(encode::fields(&batch.schema(), &fmt)));
            Ok(encode::rows(batch, f))
        };
        let stream =
            self.shared.engine.query_stream(sql, params, CHANNEL_CHUNKS, encode).await.map_err(engine_error)?;
        let fields = Arc::new(encode::fields(stream.schema(), format));
        let rows = futures::stream::unfold(Some(stream), move |s| {
            let cut = Arc::clone(&cut);
            async move {
                let mut s = s?;
                match s.next().await {
                    Ok(Some(chunk)) => Some((chunk, Some(s))),
                    Ok(None) => {
                        if s.end().is_some_and(|e| e.truncated) {
                            cut.store(true, Ordering::SeqCst);
                        }
                        None
                    }
                    Err(e) => Some((Err(engine_error(e)), None)),
                }
            }
        })
        .flat_map(|chunk| {
            futures::stream::iter(match chunk {
                Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    /// `COPY ... TO STDOUT`: CopyOutResponse, one CopyData per row, CopyDone; the
    /// caller's response is the `COPY n` completion.
    async fn copy_out<C>(
        &self,
        client: &mut C,
        sql: String,
        params: Vec<Value>,
        csv: bool,
        header: bool,
    ) -> PgWireResult<Response>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let result = self.shared.engine.query_params(sql, params).await.map_err(engine_error)?;
        let fields = Arc::new(encode::fields(&result.schema, &Format::UnifiedText));
        let columns = i16::try_from(fields.len()).map_err(|_| user_error("54011", "COPY: too many columns"))?;
        client
            .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(0, columns, vec![0; fields.len()])))
            .await?;
        if csv && header {
            let names: Vec<Option<&[u8]>> = fields.iter().map(|f| Some(f.name().as_bytes())).collect();
            client.feed(PgWireBackendMessage::CopyData(CopyData::new(copy_line(&names, true)))).await?;
        }
        let mut n = 0usize;
        for batch in &result.batches {
            for row in encode::rows(batch, &fields)? {
                let values = row_fields(&row)?;
                client.feed(PgWireBackendMessage::CopyData(CopyData::new(copy_line(&values, csv)))).await?;
                n += 1;
            }
        }
        client.send(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
        Ok(Response::Execution(Tag::new("COPY").with_rows(n)))
    }

    fn params(portal: &Portal<String>) -> PgWireResult<Vec<Value>> {
        (0..portal.parameter_len())
            .map(|i| {
                let ty = portal.statement.parameter_types.get(i).cloned().flatten().unwrap_or(Type::UNKNOWN);
                // A client may send one format code for all parameters, or one each; fewer
                // than that is read as text rather than trusted.
                let binary = match &portal.parameter_format {
                    Format::Individual(codes) => codes.get(i) == Some(&1),
                    f => f.is_binary(0),
                };
                encode::param(i, &ty, binary, portal.parameters[i].as_deref())
            })
            .collect()
    }

    /// The columns `sql` returns, without running it: the statement under `LIMIT 0` (the
    /// same sandbox and views; the same Arrow types, so the same PostgreSQL types).
    async fn describe(&self, sql: &str, params: Vec<Value>, format: &Format) -> PgWireResult<Option<Vec<FieldInfo>>> {
        match plan(sql, &self.shared)? {
            Plan::Empty | Plan::Begin | Plan::End(_) | Plan::Session(_) | Plan::Copy { .. } => Ok(None),
            Plan::Catalog(r) => Ok(Some(encode::fields(&r.schema, format))),
            Plan::Engine => {
                let body = sql.trim_end().trim_end_matches(|c: char| c == ';' || c.is_whitespace());
                let probe = format!("SELECT * FROM (\n{body}\n) AS lake_describe LIMIT 0");
                let r = self.shared.engine.query_params(probe, params).await.map_err(engine_error)?;
                Ok(Some(encode::fields(&r.schema, format)))
            }
        }
    }
}

/// The fields of a text-format DataRow (length-prefixed, -1 for NULL).
fn row_fields(row: &DataRow) -> PgWireResult<Vec<Option<&[u8]>>> {
    let mut out = Vec::with_capacity(row.field_count as usize);
    let mut b = &row.data[..];
    for _ in 0..row.field_count {
        if b.len() < 4 {
            return Err(user_error("XX000", "COPY: a malformed row"));
        }
        let len = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        b = &b[4..];
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(Some(&b[..len.min(b.len())]));
            b = &b[len.min(b.len())..];
        }
    }
    Ok(out)
}

/// One line of COPY's text format (tab-separated, `\N` for NULL, backslash escapes) or
/// CSV (comma-separated, quoted when needed, NULL as nothing).
fn copy_line(values: &[Option<&[u8]>], csv: bool) -> Bytes {
    let mut line = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            line.push(if csv { b',' } else { b'\t' });
        }
        match (v, csv) {
            (None, false) => line.extend_from_slice(b"\\N"),
            (None, true) => {}
            (Some(v), false) => {
                for &c in *v {
                    match c {
                        b'\\' => line.extend_from_slice(b"\\\\"),
                        b'\t' => line.extend_from_slice(b"\\t"),
                        b'\n' => line.extend_from_slice(b"\\n"),
                        b'\r' => line.extend_from_slice(b"\\r"),
                        c => line.push(c),
                    }
                }
            }
            (Some(v), true) => {
                let quote = v.is_empty() || v.iter().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r'));
                if quote {
                    line.push(b'"');
                    for &c in *v {
                        if c == b'"' {
                            line.push(b'"');
                        }
                        line.push(c);
                    }
                    line.push(b'"');
                } else {
                    line.extend_from_slice(v);
                }
            }
        }
    }
    line.push(b'\n');
    Bytes::from(line)
}

/// A collected result (the catalog's) as a response.
fn collected(r: QueryResult, format: &Format) -> PgWireResult<Response> {
    let fields = Arc::new(encode::fields(&r.schema, format));
    let mut rows = Vec::new();
    for b in &r.batches {
        rows.extend(encode::rows(b, &fields)?.into_iter().map(Ok));
    }
    Ok(Response::Query(QueryResponse::new(fields, futures::stream::iter(rows))))
}

/// How many `$n` parameters `sql` names (the highest n), outside quotes and comments.
pub(super) fn placeholder_count(sql: &str) -> usize {
    let bare = strip_comments(sql);
    let mut max = 0usize;
    let mut quoted: Option<char> = None;
    let chars: Vec<char> = bare.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quoted {
            Some(q) if c == q => quoted = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quoted = Some(c),
            None if c == '$' => {
                let digits: String = chars[i + 1..].iter().take_while(|d| d.is_ascii_digit()).collect();
                if let Ok(n) = digits.parse::<usize>() {
                    max = max.max(n);
                }
                i += digits.len();
            }
            None => {}
        }
        i += 1;
    }
    max
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let cut = Arc::new(AtomicBool::new(false));
        match self.run(client, query, Vec::new(), &Format::UnifiedText, Arc::clone(&cut)).await? {
            // Rows are sent here rather than by pgwire so that a result cut at the row
            // limit can be told (a NOTICE after its rows, as /v1/sql flags it), which
            // psql shows under the rows.
            Response::Query(mut rows) => {
                if let Err(e) = send_query_response(client, &mut rows, true).await {
                    self.shared.stats.errors.add(1);
                    return Err(e);
                }
                if cut.load(Ordering::SeqCst) {
                    let max = self.shared.engine.limits().max_rows;
                    let notice = ErrorInfo::new(
                        "NOTICE".to_owned(),
                        "01000".to_owned(),
                        format!("result cut at the lake's row limit of {max} rows (query.max_rows): narrow the query or aggregate"),
                    );
                    client.send(PgWireBackendMessage::NoticeResponse(notice.into())).await?;
                }
                Ok(Vec::new())
            }
            other => Ok(vec![other]),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = String;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<String>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let params = Backend::params(portal)?;
        // The extended protocol's rows go through pgwire (it suspends portals at the
        // client's max_rows), so a cut there is not told; the simple protocol tells it.
        let cut = Arc::new(AtomicBool::new(false));
        self.run(client, &portal.statement.statement, params, &portal.result_column_format, cut).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        stmt: &StoredStatement<String>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let n = placeholder_count(&stmt.statement).max(stmt.parameter_types.len());
        // Undeclared parameters are text: DuckDB casts them where the statement needs.
        let types: Vec<Type> =
            (0..n).map(|i| stmt.parameter_types.get(i).cloned().flatten().unwrap_or(Type::TEXT)).collect();
        let nulls = vec![Value::Null; placeholder_count(&stmt.statement)];
        match self.describe(&stmt.statement, nulls, &Format::UnifiedText).await? {
            Some(fields) => Ok(DescribeStatementResponse::new(types, fields)),
            None => Ok(DescribeStatementResponse::new(types, Vec::new())),
        }
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        portal: &Portal<String>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = String>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let params = Backend::params(portal)?;
        match self.describe(&portal.statement.statement, params, &portal.result_column_format).await? {
            Some(fields) => Ok(DescribePortalResponse::new(fields)),
            None => Ok(DescribePortalResponse::no_data()),
        }
    }
}
