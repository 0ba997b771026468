//! `/v1/alerts` and `/v1/silences` ([`crate::auth`]).
//!
//! - `GET /v1/alerts`: the [`Snapshot`] as JSON. A read or an alerts token.
//! - `GET /v1/silences`: the silences. A read or an alerts token.
//! - `POST /v1/silences` `{"rule": "uptime_down", "labels": {"target": "…"}, "duration": "2h",
//!   "comment": "…"}` → 201 and the silence (durable when answered). An alerts or an admin
//!   token: a silence mutes notifications, so a read token (Grafana's, say) gets 403.
//! - `DELETE /v1/silences/{id}` → 200, or 404 for an unknown id. As `POST`.
//!
//! A lake with no read, alerts or admin token at all (loopback use) asks for none.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::auth::{Denied, SilenceDenied, Verifier};

use super::api::{NewSilence, SilenceView, Snapshot};
use super::Command;
use crate::http::error::ApiError;

/// What the alert routes share: the alerter's snapshots, its command channel, and the
/// tokens. The routes are in [`crate::http::router`].
#[derive(Debug)]
pub struct Routes {
    pub(super) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) auth: Arc<Verifier>,
}

fn authorize(r: &Routes, headers: &HeaderMap) -> Result<(), ApiError> {
    match r.auth.alerts_read(headers) {
        Ok(()) => Ok(()),
        Err(Denied::Missing) => Err(ApiError::unauthorized("missing Authorization: Bearer <read or alerts token>")),
        Err(Denied::Invalid) => Err(ApiError::unauthorized("invalid token (a read or an alerts token lists alerts)")),
    }
}

/// Adding and removing silences: an alerts or an admin token.
fn authorize_change(r: &Routes, headers: &HeaderMap) -> Result<(), ApiError> {
    const NEEDED: &str = "adding or removing silences needs a token of the alerts role (`lake token add --role alerts`) or an admin token";
    match r.auth.change_silences(headers) {
        Ok(()) => Ok(()),
        Err(SilenceDenied::ReadOnly) => {
            Err(ApiError::forbidden(format!("{NEEDED}; this read token only lists alerts and silences")))
        }
        Err(SilenceDenied::Missing) => {
            Err(ApiError::unauthorized(format!("missing Authorization: Bearer <token>: {NEEDED}")))
        }
        Err(SilenceDenied::Invalid) => Err(ApiError::unauthorized(format!("invalid token: {NEEDED}"))),
    }
}

pub async fn alerts(State(r): State<Arc<Routes>>, headers: HeaderMap) -> Result<Json<Snapshot>, ApiError> {
    authorize(&r, &headers)?;
    let snap = Arc::clone(&r.snapshot.borrow());
    Ok(Json((*snap).clone()))
}

pub async fn silences(State(r): State<Arc<Routes>>, headers: HeaderMap) -> Result<Json<Vec<SilenceView>>, ApiError> {
    authorize(&r, &headers)?;
    let snap = Arc::clone(&r.snapshot.borrow());
    Ok(Json(snap.silences.clone()))
}

async fn ask<T>(r: &Routes, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    r.commands.send(make(tx)).await.map_err(|_| ApiError::unavailable("the alerter is stopping", 5))?;
    rx.await.map_err(|_| ApiError::unavailable("the alerter is stopping", 5))
}

pub async fn add_silence(
    State(r): State<Arc<Routes>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    authorize_change(&r, &headers)?;
    let req: NewSilence = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("body: {e} (expected {{\"rule\", \"labels\", \"duration\", \"comment\"}})"))
    })?;
    let s = ask(&r, |reply| Command::AddSilence { req, reply }).await?.map_err(ApiError::bad_request)?;
    Ok((StatusCode::CREATED, Json(s)))
}

pub async fn remove_silence(
    State(r): State<Arc<Routes>>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<Value>, ApiError> {
    authorize_change(&r, &headers)?;
    if ask(&r, |reply| Command::RemoveSilence { id, reply }).await? {
        Ok(Json(json!({ "removed": id })))
    } else {
        Err(ApiError::not_found(format!("no silence {id} (see GET /v1/silences)")))
    }
}
