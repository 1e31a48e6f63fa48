//! Streaming ingestion under `/collection` (`ingest-api.md` §5): one message, or many in one request.
//!
//! The connection id is accepted as given (segmentd has no Flow Service); each message names its
//! dataset in `header.datasetId`, which must be one of the caller's. See [`crate::ingest::stream`] for
//! why invalid records are refused synchronously in both modes.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{AppJson, AppPath, AppQuery};
use crate::catalog::datasets;
use crate::ingest::stream::{self, MessageError, StreamMessage};
use crate::store::profiles::RecordKind;

/// Largest streaming request, as DCS (§5.6).
const STREAM_BODY_LIMIT: usize = 1024 * 1024;

/// Sequence number making transaction ids unique within a process.
static TRANSACTION_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Routes of the streaming inlet.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/collection/{connection_id}", post(collection_send))
        .route(
            "/collection/batch/{connection_id}",
            post(collection_send_batch),
        )
        .layer(DefaultBodyLimit::max(STREAM_BODY_LIMIT))
}

/// Query of the single-message endpoint.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendQuery {
    /// Report validation in the response (`syncValidation.status: pass`).
    #[serde(default)]
    pub sync_validation: bool,
}

/// Validates and durably stores one message; 200 means it is on disk.
#[utoipa::path(post, path = "/collection/{connection_id}", tag = "streaming",
    params(("connection_id" = String, Path), SendQuery), request_body = Object,
    responses((status = 200, description = "Stored"), (status = 400, description = "Invalid message")))]
pub async fn collection_send(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(connection_id): AppPath<String>,
    AppQuery(query): AppQuery<SendQuery>,
    AppJson(message): AppJson<Value>,
) -> ApiResult<Json<Value>> {
    let received_ms = state.clock.now().timestamp_millis();
    let transaction_id = new_transaction_id(received_ms);
    store_message(&state, &scope, &message)
        .await
        .map_err(|error| match error {
            Stored::Rejected(error) => ApiError::validation(error.to_string()),
            Stored::Failed(error) => error,
        })?;
    let sync = if query.sync_validation {
        json!({"status": "pass"})
    } else {
        json!({"skipped": true})
    };
    Ok(Json(json!({
        "inletId": connection_id,
        "xactionId": transaction_id,
        "receivedTimeMs": received_ms,
        "syncValidation": sync,
    })))
}

/// The body of the batch endpoint.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBatch {
    /// The messages, each a single-message envelope.
    #[schema(value_type = Vec<Object>)]
    pub messages: Vec<Value>,
}

/// Stores each message independently and answers 207 with one response per message, in order.
#[utoipa::path(post, path = "/collection/batch/{connection_id}", tag = "streaming",
    params(("connection_id" = String, Path)), request_body = MessageBatch,
    responses((status = 207, description = "Per-message outcomes")))]
pub async fn collection_send_batch(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(connection_id): AppPath<String>,
    AppJson(batch): AppJson<MessageBatch>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let received_ms = state.clock.now().timestamp_millis();
    let batch_id = new_transaction_id(received_ms);
    let mut responses = Vec::with_capacity(batch.messages.len());
    for (index, message) in batch.messages.iter().enumerate() {
        let response = match store_message(&state, &scope, message).await {
            Ok(()) => json!({"xactionId": format!("{batch_id}:{index}")}),
            Err(Stored::Rejected(error)) => json!({
                "statusCode": 400,
                "message": format!("inletId: [{connection_id}] imsOrgId: [{}] {error}", scope.tenant.org_id),
            }),
            // A store failure is ours, not the client's: the whole request fails so nothing is
            // reported as stored that might not be.
            Err(Stored::Failed(error)) => return Err(error),
        };
        responses.push(response);
    }
    Ok((
        StatusCode::MULTI_STATUS,
        Json(
            json!({"inletId": connection_id, "batchId": batch_id, "receivedTimeMs": received_ms, "responses": responses}),
        ),
    ))
}

/// Why a message was not stored.
enum Stored {
    /// The client's message is wrong.
    Rejected(MessageError),
    /// The service failed.
    Failed(ApiError),
}

async fn store_message(
    state: &AppState,
    scope: &RequestScope,
    message: &Value,
) -> Result<(), Stored> {
    let StreamMessage { dataset_id, entity } =
        stream::parse_message(message, &scope.tenant.org_id).map_err(Stored::Rejected)?;
    let dataset = datasets::get_dataset(&state.metadata, &scope.tenant, &dataset_id)
        .await
        .map_err(|error| Stored::Failed(error.into()))?
        .ok_or_else(|| {
            Stored::Rejected(MessageError::Format(format!(
                "dataset {dataset_id} does not exist"
            )))
        })?;
    let kind: RecordKind = stream::validate_entity(&dataset, &entity).map_err(Stored::Rejected)?;
    if !dataset.tag_enabled("unifiedProfile") {
        return Ok(());
    }
    let (profiles, tenant) = (state.ingestor.profiles().clone(), scope.tenant.clone());
    tokio::task::spawn_blocking(move || profiles.apply_one(&tenant, &dataset_id, kind, entity))
        .await
        .map_err(|error| Stored::Failed(ApiError::internal(error)))?
        .map_err(|error| Stored::Failed(ApiError::internal(error)))?;
    Ok(())
}

/// Returns a transaction id shaped like DCS's `{ms}:{n}`.
fn new_transaction_id(received_ms: i64) -> String {
    format!(
        "{received_ms}:{}",
        TRANSACTION_SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}
