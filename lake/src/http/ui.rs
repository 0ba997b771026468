//! The built-in web UI: `GET /` and `GET /ui/…`, for people who don't run Grafana.
//!
//! Everything it serves is embedded in the binary at build time (`include_bytes!`), so a
//! lake on a tailnet without internet access shows its dashboards: the page, its plain
//! JavaScript modules and stylesheet from `lake/ui/`, the vendored uPlot chart library
//! (`lake/ui/vendor/uplot/`, MIT), and the Grafana dashboards of
//! `dashboards/grafana/dashboards/`, which the page renders itself, so the UI and Grafana
//! show the same panels from the same SQL.
//!
//! The page reads data through the lake's own APIs (`/grafana/query`, `/grafana/variable`,
//! `/v1/sql`) with the read token the user typed, kept in the browser's localStorage and
//! sent only in the `Authorization` header, never in a URL. `GET /ui/auth` tells the page
//! whether a token is needed and whether the one it holds is accepted, always with a 200,
//! so asking does not log a failed request in the browser.
//!
//! Every answer carries a `Content-Security-Policy` allowing only the lake's own origin
//! (no inline script or style, no other host), `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer` and `X-Frame-Options: DENY`. Assets are revalidated on
//! every load (`Cache-Control: no-cache` with an `ETag`), so a new lake binary never
//! leaves a browser on old JavaScript.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::Verifier;

/// `Content-Security-Policy` of every UI answer: the lake's own origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; manifest-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug, Clone, Copy)]
struct Asset {
    /// Path under `/ui/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $ty:expr) => {
        Asset { path: $path, content_type: $ty, body: include_bytes!($file) }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JSON: &str = "application/json";

/// The dashboards the UI offers, in navigation order: `/ui/dashboards/<name>.json`, the
/// same files Grafana is provisioned with. `logs` is drawn by the Logs page (`logs.js`),
/// which takes its histogram panel from it.
pub const DASHBOARDS: [&str; 7] = ["fleet", "web", "security", "mesh", "uptime", "alerts", "logs"];

const ASSETS: &[Asset] = &[
    asset!("index.html", "../../ui/index.html", HTML),
    asset!("app.js", "../../ui/app.js", JS),
    asset!("api.js", "../../ui/api.js", JS),
    asset!("format.js", "../../ui/format.js", JS),
    asset!("dashboard.js", "../../ui/dashboard.js", JS),
    asset!("panels.js", "../../ui/panels.js", JS),
    asset!("sql.js", "../../ui/sql.js", JS),
    asset!("logs.js", "../../ui/logs.js", JS),
    asset!("style.css", "../../ui/style.css", CSS),
    asset!("favicon.svg", "../../ui/favicon.svg", "image/svg+xml"),
    asset!("vendor/uplot/uPlot.iife.min.js", "../../ui/vendor/uplot/uPlot.iife.min.js", JS),
    asset!("vendor/uplot/uPlot.min.css", "../../ui/vendor/uplot/uPlot.min.css", CSS),
    asset!("vendor/uplot/LICENSE", "../../ui/vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
    asset!("dashboards/fleet.json", "../../../dashboards/grafana/dashboards/fleet.json", JSON),
    asset!("dashboards/web.json", "../../../dashboards/grafana/dashboards/web.json", JSON),
    asset!("dashboards/security.json", "../../../dashboards/grafana/dashboards/security.json", JSON),
    asset!("dashboards/mesh.json", "../../../dashboards/grafana/dashboards/mesh.json", JSON),
    asset!("dashboards/uptime.json", "../../../dashboards/grafana/dashboards/uptime.json", JSON),
    asset!("dashboards/alerts.json", "../../../dashboards/grafana/dashboards/alerts.json", JSON),
    asset!("dashboards/logs.json", "../../../dashboards/grafana/dashboards/logs.json", JSON),
];

/// What the UI routes share: the embedded files with their entity tags, and the tokens
/// `/ui/auth` checks against. The routes (`/`, `/ui`, `/ui/auth`, `/ui/<asset>`) are in
/// [`crate::http::router`]; without read tokens in `auth` the lake's read APIs are open,
/// and the page asks for no token.
#[derive(Debug)]
pub struct Ui {
    assets: Vec<(Asset, HeaderValue)>,
    auth: Arc<Verifier>,
}

impl Ui {
    /// The UI's state over the embedded assets.
    pub fn new(auth: Arc<Verifier>) -> Arc<Ui> {
        let assets = ASSETS.iter().map(|a| (*a, etag(a.body))).collect();
        Arc::new(Ui { assets, auth })
    }

    fn find(&self, path: &str) -> Option<&(Asset, HeaderValue)> {
        self.assets.iter().find(|(a, _)| a.path == path)
    }
}

/// The UI's routes alone, for the unit tests.
#[cfg(test)]
fn router(auth: Arc<Verifier>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/auth", get(auth_state))
        .route("/ui/{*path}", get(asset))
        .with_state(Ui::new(auth))
}

/// A strong entity tag from the content: FNV-1a, 64 bits (a cache key, not a MAC).
fn etag(body: &[u8]) -> HeaderValue {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    HeaderValue::from_str(&format!("\"{hash:016x}-{}\"", body.len())).expect("hex digits are a valid header value")
}

/// The headers every UI answer carries.
fn security_headers(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
}

fn serve(ui: &Ui, path: &str, request: &HeaderMap) -> Response {
    let Some((asset, tag)) = ui.find(path) else {
        let mut r = (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "not found\n")
            .into_response();
        security_headers(r.headers_mut());
        return r;
    };
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag.to_str().unwrap_or_default() || t.trim() == "*"));
    let mut r = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let h = r.headers_mut();
    if !fresh {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    }
    h.insert(header::ETAG, tag.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    security_headers(h);
    r
}

pub async fn index(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    serve(&ui, "index.html", &headers)
}

pub async fn asset(State(ui): State<Arc<Ui>>, Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&ui, &path, &headers)
}

/// `{"required": bool, "valid": bool}`: whether the read APIs need a token, and whether
/// the request's `Authorization: Bearer` one is accepted.
pub async fn auth_state(State(ui): State<Arc<Ui>>, headers: HeaderMap) -> Response {
    let required = ui.auth.read_required();
    let valid = ui.auth.read(&headers).is_ok();
    let mut r = Json(json!({ "required": required, "valid": valid })).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    security_headers(h);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(app: &Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = r.into_parts();
        (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn index_and_assets_carry_their_type_and_the_security_headers() {
        let app = router(Arc::new(Verifier::default()));
        for (path, ty) in
            [("/", HTML), ("/ui", HTML), ("/ui/app.js", JS), ("/ui/style.css", CSS), ("/ui/dashboards/web.json", JSON)]
        {
            let (status, h, body) = get(&app, path, &[]).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(h[header::CONTENT_TYPE], ty, "{path}");
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY, "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            assert!(!body.is_empty(), "{path}");
        }
        let (status, h, _) = get(&app, "/ui/nope.js", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let (status, _, _) = get(&app, "/ui/../Cargo.toml", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_unchanged_asset_is_answered_304() {
        let app = router(Arc::new(Verifier::default()));
        let (_, h, _) = get(&app, "/ui/app.js", &[]).await;
        let tag = h[header::ETAG].to_str().unwrap().to_string();
        let (status, h, body) = get(&app, "/ui/app.js", &[("if-none-match", &tag)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        assert_eq!(h[header::ETAG], tag.as_str());
        let (status, _, _) = get(&app, "/ui/app.js", &[("if-none-match", "\"other\"")]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn auth_says_whether_a_token_is_needed_and_accepted() {
        let open = router(Arc::new(Verifier::with_read_tokens(&[])));
        let (_, _, body) = get(&open, "/ui/auth", &[]).await;
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            json!({"required": false, "valid": true})
        );
        let closed = router(Arc::new(Verifier::with_read_tokens(&["secret-read-token".into()])));
        for (given, valid) in [(None, false), (Some("Bearer wrong"), false), (Some("Bearer secret-read-token"), true)] {
            let headers: Vec<(&str, &str)> = given.map(|g| ("authorization", g)).into_iter().collect();
            let (status, h, body) = get(&closed, "/ui/auth", &headers).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(h[header::CACHE_CONTROL], "no-store");
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                json!({"required": true, "valid": valid})
            );
        }
    }

    #[test]
    fn every_dashboard_is_embedded_and_linked_from_the_page() {
        let index = std::str::from_utf8(ASSETS[0].body).unwrap();
        for name in DASHBOARDS {
            let path = format!("dashboards/{name}.json");
            assert!(ASSETS.iter().any(|a| a.path == path), "{path} not embedded");
            assert!(index.contains(&format!("href=\"#/{name}\"")), "index.html has no link to #/{name}");
        }
        let embedded = ASSETS.iter().filter(|a| a.path.starts_with("dashboards/")).count();
        assert_eq!(embedded, DASHBOARDS.len());
        // Nothing is fetched from elsewhere.
        for a in ASSETS.iter().filter(|a| a.content_type == HTML || a.content_type == CSS || a.path.ends_with(".js")) {
            let text = String::from_utf8_lossy(a.body);
            let from_elsewhere =
                ["src=\"http", "href=\"http", "url(http", "import(\"http", "from \"http", "from 'http"];
            assert!(!from_elsewhere.iter().any(|p| text.contains(p)), "{} loads from another origin", a.path);
        }
    }

    #[test]
    fn vendored_uplot_matches_the_recorded_checksums() {
        let readme = include_str!("../../ui/vendor/uplot/README.md");
        for a in ASSETS.iter().filter(|a| a.path.starts_with("vendor/uplot/uPlot")) {
            let file = a.path.rsplit('/').next().unwrap();
            let digest = ring::digest::digest(&ring::digest::SHA256, a.body);
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
            let line = readme
                .lines()
                .find(|l| l.starts_with(&format!("| {file} |")))
                .unwrap_or_else(|| panic!("{file} not in the README"));
            assert!(line.contains(&hex), "{file}: sha256 {hex} differs from the README's: {line}");
        }
    }
}
