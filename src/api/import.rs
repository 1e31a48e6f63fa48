//! Batch Ingestion endpoints under `/data/foundation/import` (`ingest-api.md` §4): create a batch,
//! upload its files (streamed to disk, never buffered whole), then `COMPLETE` or `ABORT` it.

use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::api::AppState;
use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::api::extract::{AppJson, AppPath, AppQuery};
use crate::catalog::batches::{
    self, Batch, BatchStatus, FileFormat, InputFormat, NewBatch, Transition,
};
use crate::catalog::datasets;
use crate::catalog::files::BatchFiles;

/// Routes of the Batch Ingestion service.
pub fn router(upload_limit_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/data/foundation/import/batches", post(batches_create))
        .route(
            "/data/foundation/import/batches/{batch_id}",
            post(batches_action),
        )
        .route(
            "/data/foundation/import/batches/{batch_id}/datasets/{dataset_id}/files/{*file_path}",
            // The upload is streamed and counted against its own limit, not the JSON body limit.
            put(files_upload).layer(DefaultBodyLimit::max(upload_limit_bytes)),
        )
}

/// The body of `POST /batches`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateBatchRequest {
    /// The target dataset.
    pub dataset_id: String,
    /// The file format: `{"format": "json" | "parquet", "isMultiLineJson": false}`.
    pub input_format: RequestedFormat,
    /// A client-side id.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
}

/// The requested input format, compared case-insensitively.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestedFormat {
    /// `json` or `parquet` (any case).
    pub format: String,
    /// JSON only: one array per file instead of JSON Lines.
    #[serde(default)]
    pub is_multi_line_json: bool,
}

/// Creates a batch in `loading` state for one of the caller's datasets.
#[utoipa::path(post, path = "/data/foundation/import/batches", tag = "import", request_body = CreateBatchRequest,
    responses((status = 201, description = "Created", body = Batch), (status = 400, description = "Invalid request")))]
pub async fn batches_create(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<CreateBatchRequest>,
) -> ApiResult<(StatusCode, Json<Batch>)> {
    let format = FileFormat::parse(&request.input_format.format).ok_or_else(|| {
        ApiError::validation(format!(
            "inputFormat.format `{}` is not supported: use json or parquet",
            request.input_format.format
        ))
    })?;
    if datasets::get_dataset(&state.metadata, &scope.tenant, &request.dataset_id)
        .await?
        .is_none()
    {
        return Err(ApiError::validation(format!(
            "dataset {} does not exist",
            request.dataset_id
        )));
    }
    let new = NewBatch {
        dataset_id: request.dataset_id,
        input_format: InputFormat {
            format,
            is_multi_line_json: request.input_format.is_multi_line_json,
        },
        external_id: request.external_id,
        tags: request.tags,
        created_client: scope.api_key.clone(),
    };
    let batch = batches::create_batch(
        &state.metadata,
        &scope.tenant,
        new,
        state.clock.now().timestamp_millis(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(batch)))
}

/// Path of a file upload.
#[derive(Debug, Deserialize)]
pub struct FilePath {
    batch_id: String,
    dataset_id: String,
    file_path: String,
}

/// Uploads (or replaces) one file of a `loading` batch: 201 when created, 200 when replaced.
#[utoipa::path(put, path = "/data/foundation/import/batches/{batch_id}/datasets/{dataset_id}/files/{file_path}",
    tag = "import",
    params(("batch_id" = String, Path), ("dataset_id" = String, Path), ("file_path" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "File created"), (status = 200, description = "File replaced"),
        (status = 404, description = "No such batch"), (status = 409, description = "Batch is not loading")))]
pub async fn files_upload(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(path): AppPath<FilePath>,
    body: Body,
) -> ApiResult<StatusCode> {
    let batch = batches::get_batch(&state.metadata, &scope.tenant, &path.batch_id)
        .await?
        .filter(|batch| batch.dataset_id() == path.dataset_id)
        .ok_or_else(|| ApiError::not_found("batch", &path.batch_id))?;
    if batch.status != BatchStatus::Loading {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "batch {} is {:?}: files can only be uploaded while it is loading",
                batch.id, batch.status
            ),
        ));
    }
    let final_path = state
        .ingestor
        .files()
        .final_path(&batch.id, &path.file_path)
        .map_err(|error| ApiError::new(ErrorCode::InvalidPath, error.to_string()))?;
    let existed = tokio::fs::try_exists(&final_path).await.unwrap_or(false);
    write_streamed(body, &final_path, state.settings.http.upload_limit_bytes).await?;
    Ok(if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    })
}

/// Streams `body` to a temporary file, syncs it, and renames it to `final_path`.
async fn write_streamed(body: Body, final_path: &std::path::Path, limit: usize) -> ApiResult<()> {
    let parent = final_path
        .parent()
        .expect("batch files live in a directory");
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(ApiError::internal)?;
    let temporary = BatchFiles::temporary_path(final_path);
    let result = async {
        let mut file = tokio::fs::File::create(&temporary)
            .await
            .map_err(ApiError::internal)?;
        let mut stream = body.into_data_stream();
        let mut written = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::new(
                    ErrorCode::MalformedBody,
                    format!("the upload was interrupted: {error}"),
                )
            })?;
            written += chunk.len();
            if written > limit {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("the file is larger than the upload limit of {limit} bytes"),
                ));
            }
            file.write_all(&chunk).await.map_err(ApiError::internal)?;
        }
        if written == 0 {
            return Err(ApiError::validation(
                "the file is empty: files must hold at least one byte",
            ));
        }
        file.sync_all().await.map_err(ApiError::internal)?;
        tokio::fs::rename(&temporary, final_path)
            .await
            .map_err(ApiError::internal)
    }
    .await;
    if result.is_err() {
        // Best effort: a leftover temporary file is never listed and is removed with the batch.
        let _ = tokio::fs::remove_file(&temporary).await;
    }
    result
}

/// The `action` of `POST /batches/{id}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BatchAction {
    /// `COMPLETE` or `ABORT` (any case).
    pub action: String,
}

/// Completes (`COMPLETE`) or aborts (`ABORT`) a batch. `COMPLETE` answers 200 when the batch is
/// accepted for processing, and again (unchanged) for a batch already accepted; poll
/// `GET /data/foundation/catalog/batches/{id}` for `success` or `failed`.
#[utoipa::path(post, path = "/data/foundation/import/batches/{batch_id}", tag = "import",
    params(("batch_id" = String, Path), BatchAction),
    responses((status = 200, description = "Accepted", body = Batch), (status = 404, description = "No such batch"),
        (status = 409, description = "The batch's state forbids the action")))]
pub async fn batches_action(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(batch_id): AppPath<String>,
    AppQuery(query): AppQuery<BatchAction>,
) -> ApiResult<Json<Batch>> {
    let now_ms = state.clock.now().timestamp_millis();
    let (target, allowed): (BatchStatus, fn(BatchStatus) -> bool) =
        match query.action.to_ascii_uppercase().as_str() {
            "COMPLETE" => (BatchStatus::Staging, |status| {
                status == BatchStatus::Loading
            }),
            "ABORT" => (BatchStatus::Aborted, |status| {
                status == BatchStatus::Loading
            }),
            other => {
                return Err(ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("action `{other}` is not supported: use COMPLETE or ABORT"),
                ));
            }
        };
    let (tenant, id) = (scope.tenant.clone(), batch_id.clone());
    let transition = state
        .metadata
        .call(move |connection| {
            batches::transition_blocking(connection, &tenant, &id, allowed, |batch| {
                batch.status = target;
                batch.updated = now_ms;
                if target == BatchStatus::Staging {
                    batch.started = Some(now_ms);
                }
            })
        })
        .await?;
    match transition {
        Transition::NotFound => Err(ApiError::not_found("batch", &batch_id)),
        Transition::Done(batch) if target == BatchStatus::Staging => {
            let (state, tenant) = (state.clone(), scope.tenant.clone());
            tokio::spawn(async move {
                match state
                    .ingestor
                    .process(tenant.clone(), batch_id.clone())
                    .await
                {
                    Ok(_) => state.samples.refresh_tenant(&tenant, false).await,
                    // The batch stays in staging and is processed again at the next start-up.
                    Err(error) => tracing::error!(batch_id, %error, "batch processing failed"),
                }
            });
            Ok(Json(batch))
        }
        Transition::Done(batch) => {
            if let Err(error) = state.ingestor.files().remove(&batch.id) {
                tracing::warn!(batch_id = batch.id, %error, "cannot delete staged files");
            }
            Ok(Json(batch))
        }
        // COMPLETE is safe to retry: an already accepted batch answers success, unchanged (§4.4).
        Transition::WrongState(batch)
            if target == BatchStatus::Staging && batch.status != BatchStatus::Aborted =>
        {
            Ok(Json(batch))
        }
        Transition::WrongState(batch) => Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "batch {} is {:?}; {} needs a loading batch",
                batch.id, batch.status, query.action
            ),
        )),
    }
}
