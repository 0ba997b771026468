//! `POST /v1/hooks/<name>` (and `/v1/hooks/<name>/<secret>`): webhooks in — a third
//! party's own requests, configured by `[[webhooks]]` in `lake.toml` ([`config`]), with no
//! lake token and no batch id.
//!
//! **Auth** ([`auth`]): per hook, an HMAC-SHA256 signature of the body
//! (`X-Hub-Signature-256: sha256=<hex>`, GitHub's), Stripe's `Stripe-Signature`
//! (`t=<unix>,v1=<hex>` over `"<t>.<body>"`, the timestamp within `tolerance`, any of
//! several `v1`), HTTP basic auth (Postmark's), or a secret as the URL's last segment. A
//! refusal is 401, counted (`lake_hooks_unauthorized_total`) and logged at warn with the
//! hook's name and the reason — at most one line per hook every [`LOG_EVERY`], with the
//! number of refusals since, so one attacker cannot flood the log — never the secret.
//!
//! **Rows** ([`presets`]): one row per request in the hook's custom table, through the
//! custom-table path of `/v1/ingest/json` (schema inferred, columns added as they come,
//! WAL fsynced before the 200): the table's time column holds the event's own time
//! (Stripe `created`, Postmark `DeliveredAt`/`BouncedAt`/`ReceivedAt`, GitHub's object's
//! `updated_at`, listmonk's `created_at`, the generic preset's `ts_pointer`; the time of
//! receipt when the payload has none, or one the lake cannot read or store), `host` the
//! hook's `host` (default `lake`), `event` and `event_id`, the preset's flat columns, and
//! `payload`, the whole body as JSON text.
//!
//! **Retries** ([`seen`]): a request whose event id (Stripe's `id`, GitHub's
//! `X-GitHub-Delivery`, Postmark's record type, message and recipient, listmonk's record
//! `id` or body digest, the generic `id_pointer`) was stored is answered 200 with
//! `"duplicate": true` and not stored again, also after a restart (the newest `remember`
//! ids per hook are kept on disk).
//!
//! **Bounds**: unknown hook → 404; a body past the hook's `max_body` (default 1 MiB) →
//! 413; a body that is not one JSON object (serde_json's nesting limit, the custom tables'
//! field limit) → 400 naming the problem. Bodies are read within the ingest memory budget
//! ([`super::budget`]: 503 when it is in use) and each hook reads at most
//! [`CONCURRENT_PER_HOOK`] bodies at once (503 beyond), so a hostile or careless sender
//! of one hook cannot take the lake's memory from the other hooks and ingest.

pub mod auth;
pub mod config;
pub mod presets;
pub mod seen;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Map, Value};

use lake_format::rows::now_micros;
use lake_format::BatchId;

use super::error::ApiError;
use super::ingest::{self, Ingest, Payload};
use crate::ingest::state::Admission;
pub use config::{HookAuth, HookConfig};

/// Node name of the batch ids the lake assigns to webhook rows.
pub const ID_NODE: &str = "_hooks";
/// Bodies one hook reads at once at most.
pub const CONCURRENT_PER_HOOK: usize = 8;
/// How often one hook's refusals are logged at most.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

lake_format::metrics! {
    /// Counters of `/v1/hooks/<name>` (stored rows also count in the `lake_ingest_*` totals).
    pub struct HookStats {
        /// webhook requests stored
        pub stored: Counter("lake_hooks_stored_total"),
        /// webhook retries answered 200 without storing (event id seen before)
        pub duplicates: Counter("lake_hooks_duplicates_total"),
        /// webhook requests refused 401 (signature, password or URL secret)
        pub unauthorized: Counter("lake_hooks_unauthorized_total"),
        /// webhook requests refused with another 4xx (unknown hook, too large, not a JSON object)
        pub rejected: Counter("lake_hooks_rejected_total"),
    }
}

/// One configured hook and its live state.
#[derive(Debug)]
struct Hook {
    config: HookConfig,
    /// Bodies being read.
    reading: Arc<tokio::sync::Semaphore>,
    /// Its refusals, for the log.
    refusals: RefusalLog,
}

/// Counts a hook's refusals and says when one may be logged: the first, then at most one
/// every [`LOG_EVERY`], carrying the number of refusals since the last line.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// When a line was last logged, and the refusals not yet in a line.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    /// Counts a refusal at `now`; `Some(n)` when a line is due, `n` the refusals it reports.
    pub fn note(&self, now: Instant) -> Option<u64> {
        let mut r = self.state.lock().unwrap_or_else(|p| p.into_inner());
        r.1 += 1;
        if r.0.is_none_or(|last| now.duration_since(last) >= LOG_EVERY) {
            let n = r.1;
            *r = (Some(now), 0);
            Some(n)
        } else {
            None
        }
    }
}

/// The state of the webhook routes.
#[derive(Debug)]
pub struct Hooks {
    ingest: Arc<Ingest>,
    hooks: HashMap<String, Hook>,
    seen: Arc<seen::Seen>,
    epoch: u64,
    /// Last seq used; held across each store so seqs reach the WAL in order.
    seq: tokio::sync::Mutex<u64>,
    /// Counters, shared with `/metrics`.
    pub stats: Arc<HookStats>,
}

impl Hooks {
    /// The routes' state over the ingest path, after WAL replay (the epoch of the lake's
    /// batch ids is above every one used). Reads each hook's stored event ids.
    pub fn new(
        ingest: Arc<Ingest>,
        configs: Vec<HookConfig>,
        data: &std::path::Path,
        stats: Arc<HookStats>,
    ) -> std::io::Result<Hooks> {
        let names: Vec<(String, usize)> = configs.iter().map(|c| (c.name.clone(), c.remember)).collect();
        let seen = Arc::new(seen::Seen::open(data, &names)?);
        let known = ingest.batches.marks().get(ID_NODE).and_then(|e| e.keys().next_back().copied()).unwrap_or(0);
        let epoch = u64::try_from(now_micros()).unwrap_or(0).max(known.saturating_add(1));
        let hooks = configs
            .into_iter()
            .map(|config| {
                let hook = Hook {
                    config,
                    reading: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_PER_HOOK)),
                    refusals: RefusalLog::default(),
                };
                (hook.config.name.clone(), hook)
            })
            .collect();
        Ok(Hooks { ingest, hooks, seen, epoch, seq: tokio::sync::Mutex::new(0), stats })
    }

    /// Logs a refusal of `hook` unless one was logged less than [`LOG_EVERY`] ago.
    fn log_refusal(&self, hook: &Hook, reason: &str) {
        if let Some(refusals) = hook.refusals.note(Instant::now()) {
            tracing::warn!(
                hook = %hook.config.name,
                auth = hook.config.auth.kind(),
                reason,
                refusals,
                "webhook request refused (401); refusals of this hook are logged at most every 10s, with the count since the last line"
            );
        }
    }
}

/// `POST /v1/hooks/{name}`.
pub async fn post(
    State(s): State<Arc<Hooks>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    counted(&s, receive(&s, &name, None, &headers, body).await)
}

/// `POST /v1/hooks/{name}/{secret}`.
pub async fn post_with_secret(
    State(s): State<Arc<Hooks>>,
    Path((name, secret)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    counted(&s, receive(&s, &name, Some(&secret), &headers, body).await)
}

fn counted(s: &Hooks, result: Result<Json<Value>, ApiError>) -> Result<Json<Value>, ApiError> {
    if let Err(e) = &result {
        if e.status() == axum::http::StatusCode::UNAUTHORIZED {
            s.stats.unauthorized.add(1);
            s.ingest.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        } else {
            s.ingest.count_refusal(e, &s.stats.rejected);
        }
    }
    result
}

async fn receive(
    s: &Arc<Hooks>,
    name: &str,
    url_secret: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(hook) = s.hooks.get(name) else {
        let name: String = name.chars().take(64).collect();
        return Err(ApiError::not_found(format!("no webhook {name:?} is configured ([[webhooks]] in lake.toml)")));
    };
    let c = &hook.config;
    // Credentials that do not need the body are checked before it is read.
    let early = matches!(c.auth, HookAuth::Basic { .. } | HookAuth::UrlSecret(_));
    let now_s = now_micros() / 1_000_000;
    let refuse = |reason: String| {
        s.log_refusal(hook, &reason);
        ApiError::unauthorized(format!("webhook {}: {reason}", c.name))
    };
    if early {
        auth::check(&c.auth, headers, url_secret, b"", now_s).map_err(refuse)?;
    }
    let Ok(_reading) = Arc::clone(&hook.reading).try_acquire_owned() else {
        return Err(ApiError::unavailable(
            format!("webhook {}: {CONCURRENT_PER_HOOK} requests are being read already; retry in a moment", c.name),
            1,
        ));
    };
    let mut reservation = s.ingest.budget.reservation();
    let limit = format!("webhooks.max_body of hook {}", c.name);
    let raw = ingest::read_body(headers, body, c.max_body, &limit, &mut reservation).await?;
    if !early {
        auth::check(&c.auth, headers, url_secret, &raw, now_s).map_err(refuse)?;
    }
    // The parsed payload and the row made of it, held until the row is built: taken from
    // the budget as a custom body's parse is.
    reservation.grow(raw.len().saturating_mul(super::budget::CUSTOM_FACTOR))?;
    let payload: Map<String, Value> = match serde_json::from_slice::<Value>(&raw) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(ApiError::bad_request(format!("webhook {}: the body is JSON but not an object", c.name))),
        Err(e) => {
            // GitHub's other content type: a form field holding the JSON.
            let form = headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
            let hint = if form { " (the sender posts a form: set its content type to application/json)" } else { "" };
            return Err(ApiError::bad_request(format!("webhook {}: the body is not JSON{hint}: {e}", c.name)));
        }
    };
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let request = presets::Request {
        payload: &payload,
        raw: &raw,
        github_event: text("x-github-event"),
        github_delivery: text("x-github-delivery"),
    };
    let mapped = presets::map(c.preset, &c.pointers, request);
    let options = s.ingest.custom.options(&c.table);
    let line = row(&mapped, Value::Object(payload), &options.ts_field, now_micros());
    let key = mapped.event_id.as_deref().map(|id| seen::key(&format!("{}\n{id}", c.preset.name())));
    if let Some(k) = key {
        match s.seen.begin(&c.name, k) {
            seen::Begin::New => {}
            seen::Begin::Duplicate => {
                s.stats.duplicates.add(1);
                s.ingest.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return Ok(Json(json!({"hook": c.name, "event_id": mapped.event_id, "duplicate": true})));
            }
            seen::Begin::InFlight => {
                return Err(ApiError::unavailable(
                    format!("webhook {}: the same event is being stored by another request", c.name),
                    1,
                ))
            }
        }
    }
    // Stored, and its id recorded, in a task of its own: a sender hanging up half-way
    // cannot leave the row in the WAL with its id unrecorded (stored twice on retry) nor
    // the id reserved for ever.
    let (task_s, table, host, event_id) = (Arc::clone(s), c.table.clone(), c.host.clone(), mapped.event_id.clone());
    let hook_name = c.name.clone();
    let body = bytes::Bytes::from(line);
    tokio::spawn(async move {
        let result = store(&task_s, table, host, body, reservation).await;
        if let Some(k) = key {
            match &result {
                Ok(()) => {
                    let (seen, n) = (Arc::clone(&task_s.seen), hook_name.clone());
                    let recorded = tokio::task::spawn_blocking(move || seen.stored(&n, k)).await;
                    if let Err(e) = recorded.map_err(std::io::Error::other).and_then(|r| r) {
                        // The row is stored: the 200 stands; only a retry may store it again.
                        tracing::error!(hook = %hook_name, error = %e, "recording a webhook event id failed; a retry of it would be stored again");
                    }
                }
                Err(_) => task_s.seen.failed(&hook_name, k),
            }
        }
        result
    })
    .await
    .map_err(|e| ApiError::internal(format!("webhook store task failed: {e}")))??;
    s.stats.stored.add(1);
    Ok(Json(json!({"hook": c.name, "event_id": event_id, "rows": 1})))
}

/// The row as one NDJSON line: the time column, `event`, `event_id`, the preset's columns
/// that hold a value, and `payload`. A column the payload names like the time column or a column every row
/// has is kept as `body_<name>`.
fn row(m: &presets::Mapped, payload: Value, ts_field: &str, now: i64) -> Vec<u8> {
    let mut out = Map::new();
    let ts = m.ts.as_ref().filter(|t| readable_time(t, now)).cloned();
    out.insert(ts_field.to_string(), ts.unwrap_or(Value::Null));
    out.insert("event".into(), m.event.clone().map_or(Value::Null, Value::String));
    out.insert("event_id".into(), m.event_id.clone().map_or(Value::Null, Value::String));
    // A NULL is left out: a column is created by its first value, with that value's type
    // (a column first seen as NULL would be text for ever).
    for (name, v) in m.columns.iter().filter(|(_, v)| !v.is_null()) {
        let taken = lake_format::custom::same_name(name, ts_field)
            || out.keys().any(|k| lake_format::custom::same_name(k, name));
        let name = if taken { format!("body_{name}") } else { name.clone() };
        if !out.keys().any(|k| lake_format::custom::same_name(k, &name)) {
            out.insert(name, v.clone());
        }
    }
    out.insert("payload".into(), payload);
    let mut line = serde_json::to_vec(&Value::Object(out)).expect("a JSON value serializes");
    line.push(b'\n');
    line
}

/// Whether the payload's time can be the row's: RFC 3339 or an epoch number, within the
/// times the lake stores. Otherwise the row takes the time of receipt (the payload keeps
/// the original): a provider's odd time must not cost its event.
fn readable_time(t: &Value, now: i64) -> bool {
    use crate::custom::build::{epoch_micros, rfc3339_micros};
    let micros = match t {
        Value::String(s) => rfc3339_micros(s),
        Value::Number(n) => n.as_f64().and_then(epoch_micros),
        _ => None,
    };
    micros.is_some_and(|m| super::bounds::Window::at(now).check(m).is_ok())
}

/// Stores one row under a fresh lake-assigned batch id, through the custom-table path.
async fn store(
    s: &Arc<Hooks>,
    table: String,
    host: String,
    body: bytes::Bytes,
    reservation: super::budget::Reservation,
) -> Result<(), ApiError> {
    let mut seq = s.seq.lock().await;
    *seq += 1;
    let id = BatchId { node: ID_NODE.to_string(), epoch: s.epoch, seq: *seq };
    match s.ingest.batches.admit(&id) {
        Admission::New => {}
        other => return Err(ApiError::internal(format!("lake-assigned batch id {id} is not new ({other:?})"))),
    }
    let sender = s.ingest.policy.sender(host);
    let payload = Payload::Custom { table, sender, csv: false, body };
    ingest::store_payload(&s.ingest, &id, payload, reservation).await.map(|_| ())
}
