//! Unauthenticated liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::error::{ApiError, ApiResult, ErrorCode};

/// Answers 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Answers 200 when the stores answer, 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready")))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.metadata.ping().await.map_err(|error| {
        ApiError::new(
            ErrorCode::Unavailable,
            format!("metadata store is not ready: {error}"),
        )
    })?;
    Ok(Json(json!({"status": "ready"})))
}
