//! Catalog endpoints under `/data/foundation/catalog`: datasets and batch status.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::api::AppState;
use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{AppJson, AppPath, AppQuery, page_limit};
use crate::catalog::batches::{self, Batch};
use crate::catalog::datasets::{self as catalog, Dataset, NewDataset};

/// Catalog's largest page.
const MAX_PAGE: usize = 100;
/// Catalog's default page size.
const DEFAULT_PAGE: usize = 50;

/// Routes of the Catalog service.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/data/foundation/catalog/dataSets",
            get(datasets_list).post(datasets_create),
        )
        .route("/data/foundation/catalog/dataSets/{id}", get(datasets_get))
        .route("/data/foundation/catalog/batches/{id}", get(batches_get))
}

/// Creates a dataset and answers `["@/dataSets/{id}"]` with 201 and a `Location` header.
#[utoipa::path(post, path = "/data/foundation/catalog/dataSets", tag = "catalog",
    request_body = NewDataset,
    responses((status = 201, description = "Created", body = [String]), (status = 400, description = "Invalid body")))]
pub async fn datasets_create(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<NewDataset>,
) -> ApiResult<impl IntoResponse> {
    if request.schema_ref.id.trim().is_empty() {
        return Err(ApiError::validation("schemaRef.id is required"));
    }
    let now_ms = state.clock.now().timestamp_millis();
    let (id, _) = catalog::create_dataset(&state.metadata, &scope.tenant, request, now_ms).await?;
    let location = format!("/data/foundation/catalog/dataSets/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(vec![format!("@/dataSets/{id}")]),
    ))
}

/// Returns `{id: dataset}` for one dataset of the caller's sandbox.
#[utoipa::path(get, path = "/data/foundation/catalog/dataSets/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Dataset id")),
    responses((status = 200, description = "The dataset keyed by id"), (status = 404, description = "Not found")))]
pub async fn datasets_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<BTreeMap<String, Dataset>>> {
    let dataset = catalog::get_dataset(&state.metadata, &scope.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("dataset", &id))?;
    Ok(Json(BTreeMap::from([(id, dataset)])))
}

/// Paging parameters of Catalog lists.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CatalogPage {
    /// Page size, at most 100 (default 50).
    pub limit: Option<usize>,
    /// 0-based offset.
    pub start: Option<usize>,
}

/// Lists the caller's datasets as `{id: dataset, ...}`, oldest first.
#[utoipa::path(get, path = "/data/foundation/catalog/dataSets", tag = "catalog", params(CatalogPage),
    responses((status = 200, description = "Datasets keyed by id")))]
pub async fn datasets_list(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(page): AppQuery<CatalogPage>,
) -> ApiResult<Json<serde_json::Map<String, serde_json::Value>>> {
    let limit = page_limit(page.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let datasets = catalog::list_datasets(
        &state.metadata,
        &scope.tenant,
        page.start.unwrap_or(0),
        limit,
    )
    .await?;
    let mut body = serde_json::Map::new();
    for (id, dataset) in datasets {
        body.insert(
            id,
            serde_json::to_value(dataset).map_err(ApiError::internal)?,
        );
    }
    Ok(Json(body))
}

/// Returns `{id: batch}` for one batch of the caller's sandbox: status, metrics and errors.
#[utoipa::path(get, path = "/data/foundation/catalog/batches/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Batch id")),
    responses((status = 200, description = "The batch keyed by id"), (status = 404, description = "Not found")))]
pub async fn batches_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<BTreeMap<String, Batch>>> {
    let batch = batches::get_batch(&state.metadata, &scope.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("batch", &id))?;
    Ok(Json(BTreeMap::from([(id, batch)])))
}
