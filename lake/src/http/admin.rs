//! The admin API of a running lake: maintenance jobs the CLI cannot run itself while
//! `lake serve` owns the data directory.
//!
//! - `POST /v1/admin/archive` (`{"retention": true}` by default): the nightly run now.
//! - `POST /v1/admin/restore` (`{"table", "from", "to", "keep_days"?}`).
//! - `GET /v1/admin/archive/status[?table=T]`: JSON array of [`StatusRow`]s.
//!
//! Jobs answer `200` with `application/x-ndjson`: one [`Event`] per line while the job
//! runs, ending with `done` (the report) or `error`. The job runs in its own task, so a
//! client that disconnects does not stop it; one job runs at a time (`409` otherwise).
//!
//! Auth: with admin tokens configured (`[admin] tokens`, `tokens_env`, `tokens_sha256`, or
//! `lake token add --role admin`), a bearer token of that role ([`crate::auth`]); with
//! none, only loopback clients (the peer address of the connection), so a lake listening
//! on the tailnet does not expose its admin API by default. Read and ingest tokens never
//! grant admin access.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::auth::{AdminAccess, Key, Role, Verifier};
use crate::http::error::ApiError;
use crate::maintenance::archive::restore::RestoreRequest;
use crate::maintenance::archive::{ArchiveError, Maintenance, StatusRow};
use crate::progress::{Event, EventProgress, EVENT_CHANNEL};

/// Content type of the job streams.
pub const NDJSON: &str = "application/x-ndjson";

/// `[admin]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminFile {
    #[serde(default)]
    tokens: Vec<lake_format::Secret>,
    tokens_env: Option<String>,
    #[serde(default)]
    tokens_sha256: Vec<String>,
}

impl std::fmt::Debug for AdminFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminFile").field("tokens_env", &self.tokens_env).finish_non_exhaustive()
    }
}

impl AdminFile {
    /// The admin keys; plaintext ones at least 16 characters (hashed here).
    pub(crate) fn keys(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        warnings: &mut Vec<String>,
    ) -> anyhow::Result<Vec<Key>> {
        let hashes: Vec<&str> = self.tokens_sha256.iter().map(String::as_str).collect();
        crate::config::KeySource {
            role: Role::Admin,
            node: None,
            key: "admin.tokens",
            inline: &self.tokens,
            env_key: "admin.tokens_env",
            env_var: self.tokens_env.as_deref(),
            hash_key: "admin.tokens_sha256",
            hashes: &hashes,
        }
        .keys(env, warnings)
    }
}

/// What the admin routes share. Their routes are in [`crate::http::router`], each behind
/// [`check_auth`]; the server passes the peer address (`ConnectInfo`) so the loopback rule
/// can see it.
#[derive(Debug)]
pub struct Admin {
    maintenance: Arc<Maintenance>,
    auth: Arc<Verifier>,
    cancel: CancellationToken,
}

impl Admin {
    /// The admin API's state. `cancel` stops running jobs at their next safe point (shutdown).
    pub fn new(maintenance: Arc<Maintenance>, auth: Arc<Verifier>, cancel: CancellationToken) -> Arc<Admin> {
        Arc::new(Admin { maintenance, auth, cancel })
    }
}

/// The admin routes alone, for the unit tests.
#[cfg(test)]
fn router(maintenance: Arc<Maintenance>, auth: Arc<Verifier>, cancel: CancellationToken) -> axum::Router {
    use axum::routing::{get, post};
    let admin = Admin::new(maintenance, auth, cancel);
    let guarded = |m: axum::routing::MethodRouter<Arc<Admin>>| {
        m.layer(axum::middleware::from_fn_with_state(Arc::clone(&admin), check_auth)).with_state(Arc::clone(&admin))
    };
    axum::Router::new()
        .route("/v1/admin/archive", guarded(post(archive)))
        .route("/v1/admin/restore", guarded(post(restore)))
        .route("/v1/admin/compact", guarded(post(compact)))
        .route("/v1/admin/archive/status", guarded(get(status)))
}

/// The admin role's check, a layer on every admin route: an admin token, or with none
/// configured a loopback peer.
pub async fn check_auth(State(a): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    match a.auth.admin(req.headers()) {
        AdminAccess::Granted => {}
        AdminAccess::Denied => {
            return ApiError::unauthorized("admin API: missing or wrong bearer token (an admin token)").into_response();
        }
        AdminAccess::LoopbackOnly => {
            let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_canonical());
            if !peer.is_some_and(|ip| ip.is_loopback()) {
                return ApiError::forbidden(
                    "the admin API only answers loopback clients unless admin tokens are configured (`lake token add --role admin`)",
                )
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Options of `POST /v1/admin/archive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveBody {
    #[serde(default = "yes")]
    retention: bool,
}

const fn yes() -> bool {
    true
}

fn busy(e: ArchiveError) -> Response {
    (StatusCode::CONFLICT, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

/// Starts `job` in its own task and streams its events.
fn stream_job<F, Fut>(a: &Arc<Admin>, name: &'static str, job: F) -> Response
where
    F: FnOnce(Arc<Maintenance>, Arc<EventProgress>, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<serde_json::Value, ArchiveError>> + Send + 'static,
{
    let guard = match a.maintenance.try_job(name) {
        Ok(g) => g,
        Err(e) => return busy(e),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(EVENT_CHANNEL);
    let progress = Arc::new(EventProgress::new(tx));
    let (m, cancel) = (Arc::clone(&a.maintenance), a.cancel.child_token());
    tokio::spawn(async move {
        let _guard = guard;
        let last = match job(m, Arc::clone(&progress), cancel).await {
            Ok(report) => Event::Done { report },
            Err(e) => {
                tracing::error!(job = name, error = %e, "admin job failed");
                Event::Error { message: e.to_string() }
            }
        };
        progress.send_last(last).await;
        if progress.dropped() > 0 {
            tracing::warn!(job = name, dropped = progress.dropped(), "progress events dropped: the client read slowly");
        }
    });
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|e| {
            e.map(|e| {
                let mut line = serde_json::to_vec(&e).unwrap_or_default();
                line.push(b'\n');
                Ok::<_, Infallible>(Bytes::from(line))
            })
        })
    });
    ([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(stream)).into_response()
}

pub async fn archive(State(a): State<Arc<Admin>>, body: Bytes) -> Response {
    let opts: ArchiveBody = if body.iter().all(u8::is_ascii_whitespace) {
        ArchiveBody { retention: true }
    } else {
        match serde_json::from_slice(&body) {
            Ok(o) => o,
            Err(e) => return ApiError::bad_request(format!("archive options: {e}")).into_response(),
        }
    };
    stream_job(&a, "archive", move |m, p, cancel| async move {
        let report =
            if opts.retention { m.nightly(p.as_ref(), &cancel).await? } else { m.archive(p.as_ref(), &cancel).await? };
        Ok(serde_json::to_value(report).unwrap_or_default())
    })
}

pub async fn restore(State(a): State<Arc<Admin>>, body: Bytes) -> Response {
    let req: RestoreRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::bad_request(format!("restore request: {e}")).into_response(),
    };
    if let Err(e) = req.parse() {
        return ApiError::bad_request(format!("restore request: {e}")).into_response();
    }
    stream_job(&a, "restore", move |m, p, cancel| async move {
        let report = m.restore(&req, p.as_ref(), &cancel).await?;
        Ok(serde_json::to_value(report).unwrap_or_default())
    })
}

/// `POST /v1/admin/compact` options: all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompactBody {
    table: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

pub async fn compact(State(a): State<Arc<Admin>>, body: Bytes) -> Response {
    let opts: CompactBody = if body.iter().all(u8::is_ascii_whitespace) {
        CompactBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(o) => o,
            Err(e) => return ApiError::bad_request(format!("compact options: {e}")).into_response(),
        }
    };
    let filter = match crate::maintenance::compact::Filter::parse(
        opts.table.as_deref(),
        opts.from.as_deref(),
        opts.to.as_deref(),
    ) {
        Ok(f) => f,
        Err(e) => return ApiError::bad_request(format!("compact options: {e}")).into_response(),
    };
    stream_job(&a, "compact", move |m, p, _cancel| async move {
        let report = m.compact(filter, p.as_ref()).await?;
        Ok(serde_json::to_value(report).unwrap_or_default())
    })
}

#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    table: Option<String>,
}

pub async fn status(
    State(a): State<Arc<Admin>>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<Vec<StatusRow>>, ApiError> {
    let table = match q.table.as_deref() {
        Some(t) => Some(t.parse().map_err(|e| ApiError::bad_request(format!("table: {e}")))?),
        None => None,
    };
    let m = Arc::clone(&a.maintenance);
    let rows = tokio::task::spawn_blocking(move || m.status(table))
        .await
        .map_err(|e| ApiError::internal(format!("status task: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use axum::Router;
    use tower::ServiceExt;

    fn admin(dir: &std::path::Path, tokens: Vec<&str>) -> (Router, Arc<Maintenance>) {
        let keys = tokens.iter().map(|t| Key::plain("test", Role::Admin, None, t)).collect();
        let auth = Arc::new(Verifier::new(crate::auth::KeySet::new(keys).unwrap()));
        let data = dir.join("data");
        let mut archive = crate::maintenance::archive::config::ArchiveConfig::defaults(&data);
        archive.store = crate::maintenance::archive::config::StoreConfig::Local { path: dir.join("archive") };
        let swapper = Arc::new(crate::maintenance::swap::Swapper::open(&data, std::time::Duration::ZERO).unwrap());
        let m = Arc::new(
            Maintenance::new(
                &data,
                archive,
                Default::default(),
                swapper,
                Arc::new(crate::ingest::writer::Buffers::default()),
            )
            .unwrap(),
        );
        (router(Arc::clone(&m), auth, CancellationToken::new()), m)
    }

    fn req(method: &str, uri: &str, peer: [u8; 4], token: Option<&str>) -> Request {
        let mut r = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let mut r = r.body(Body::empty()).unwrap();
        r.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40000))));
        r
    }

    #[tokio::test]
    async fn loopback_only_without_tokens_and_bearer_tokens_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _) = admin(dir.path(), Vec::new());
        let r = app.clone().oneshot(req("GET", "/v1/admin/archive/status", [127, 0, 0, 1], None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = app.oneshot(req("GET", "/v1/admin/archive/status", [100, 64, 0, 7], None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);

        let token = "admin-token-0123456789";
        let (app, _) = admin(dir.path(), vec![token]);
        let r = app.clone().oneshot(req("GET", "/v1/admin/archive/status", [127, 0, 0, 1], None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = app
            .clone()
            .oneshot(req("GET", "/v1/admin/archive/status", [100, 64, 0, 7], Some("wrong-token-0123456789")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = app.oneshot(req("GET", "/v1/admin/archive/status", [100, 64, 0, 7], Some(token))).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn jobs_stream_ndjson_and_a_second_job_gets_409() {
        let dir = tempfile::tempdir().unwrap();
        let (app, m) = admin(dir.path(), Vec::new());
        let r = app.clone().oneshot(req("POST", "/v1/admin/archive", [127, 0, 0, 1], None)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], NDJSON);
        let body = to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let events: Vec<Event> =
            body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert!(matches!(events.last(), Some(Event::Done { report }) if report["files_uploaded"] == 0), "{events:?}");

        let _held = m.try_job("archive").unwrap();
        let body = Body::from(r#"{"table":"metrics","from":"2026-11-01","to":"2026-11-02"}"#);
        let mut r = Request::builder().method("POST").uri("/v1/admin/restore").body(body).unwrap();
        r.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert_eq!(app.clone().oneshot(r).await.unwrap().status(), StatusCode::CONFLICT);
        let body = Body::from(r#"{"table":"No-Such","from":"2026-11-01","to":"2026-11-02"}"#);
        let mut r = Request::builder().method("POST").uri("/v1/admin/restore").body(body).unwrap();
        r.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
        assert_eq!(app.oneshot(r).await.unwrap().status(), StatusCode::BAD_REQUEST);
    }
}
