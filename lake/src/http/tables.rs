//! `GET /v1/tables`: every table with its columns, rows, bytes and time span (what
//! `lake tables` prints). Read tokens as for `/v1/sql`; `?format=json|csv|arrow|table`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::auth::Verifier;
use lake_query::engine::Engine;
use lake_query::output::{self, Format};

use super::error::ApiError;

/// What the endpoint needs.
#[derive(Debug)]
pub struct Tables {
    /// The query engine.
    pub engine: Arc<Engine>,
    /// The tokens in force; without read tokens the endpoint is open (loopback deployments).
    pub auth: Arc<Verifier>,
}

/// Query string.
#[derive(Debug, Deserialize)]
pub struct Params {
    format: Option<String>,
}

/// The handler.
pub async fn tables(
    State(s): State<Arc<Tables>>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Response, ApiError> {
    if s.auth.read(&headers).is_err() {
        return Err(ApiError::unauthorized("missing or unknown read token (Authorization: Bearer <read token>)"));
    }
    let format: Format = p
        .format
        .as_deref()
        .unwrap_or("json")
        .parse()
        .map_err(|e: output::UnknownFormat| ApiError::bad_request(e.to_string()))?;
    let engine = Arc::clone(&s.engine);
    let result = tokio::task::spawn_blocking(move || engine.describe_tables_blocking())
        .await
        .map_err(|e| ApiError::internal(format!("tables task failed: {e}")))?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut body = Vec::new();
    output::write(format, &result, &mut body).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, format.content_type())], body).into_response())
}
