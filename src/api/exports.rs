//! Export job endpoints under `/data/core/ups/export/jobs` (`api.md` §5) and the Data Access
//! endpoints that read exported batches back (`api.md` §10).

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::api::extract::{AppJson, AppPath, AppQuery, page_limit};
use crate::catalog::batches::{self, BatchStatus};
use crate::export::jobs::{self, ExportJob, ExportJobError, ExportStatus, NewExportJob, batch_dir};

const BASE: &str = "/data/core/ups/export/jobs";

/// Routes of export jobs and Data Access.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, get(export_jobs_list).post(export_jobs_create))
        .route(
            &format!("{BASE}/{{id}}"),
            get(export_jobs_get).delete(export_jobs_delete),
        )
        .route(
            "/data/foundation/export/batches/{batch_id}/files",
            get(batch_files_list),
        )
        .route("/data/foundation/export/files/{file_id}", get(files_get))
}

impl From<ExportJobError> for ApiError {
    fn from(error: ExportJobError) -> Self {
        match error {
            ExportJobError::Invalid(message) => ApiError::validation(message),
            ExportJobError::NotImplemented(what) => ApiError::not_implemented(what),
            ExportJobError::NotFound(id) => ApiError::not_found("export job", &id),
            ExportJobError::Store(error) => error.into(),
        }
    }
}

/// Creates an export job (200, `NEW`, with `X-Location`) and starts it.
#[utoipa::path(post, path = "/data/core/ups/export/jobs", tag = "exports", request_body = NewExportJob,
    responses((status = 200, description = "The new job"), (status = 400, description = "Invalid request or target dataset"),
        (status = 501, description = "An option segmentd does not implement")))]
pub async fn export_jobs_create(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<NewExportJob>,
) -> ApiResult<(HeaderMap, Json<ExportJob>)> {
    let now_ms = state.clock.now().timestamp_millis();
    let tenant = scope.tenant.clone();
    let job = state
        .metadata
        .call(move |connection| Ok(jobs::create_blocking(connection, &tenant, request, now_ms)))
        .await??;
    state.exports.start(scope.tenant, job.id);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("{BASE}/{}", job.id)) {
        headers.insert("x-location", value);
    }
    Ok((headers, Json(job)))
}

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidPath,
            format!("export job id `{id}` is not a number"),
        )
    })
}

/// Returns one job.
#[utoipa::path(get, path = "/data/core/ups/export/jobs/{id}", tag = "exports", params(("id" = i64, Path)),
    responses((status = 200, description = "The job"), (status = 404, description = "Not found")))]
pub async fn export_jobs_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<ExportJob>> {
    let id = parse_id(&id)?;
    let tenant = scope.tenant;
    Ok(Json(
        state
            .metadata
            .call(move |connection| Ok(jobs::get_blocking(connection, &tenant, id)))
            .await??,
    ))
}

/// List parameters (`api.md` §5.3).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportListQuery {
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Cursor `{creationTime}_{id}`: jobs older than it.
    pub offset: Option<String>,
    /// Only jobs in this status.
    pub status: Option<String>,
}

/// Lists jobs newest first: `{records, page, link}`.
#[utoipa::path(get, path = "/data/core/ups/export/jobs", tag = "exports", params(ExportListQuery),
    responses((status = 200, description = "A page of jobs")))]
pub async fn export_jobs_list(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(query): AppQuery<ExportListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(query.limit, 100, 1000)?;
    let cursor = match &query.offset {
        None => None,
        Some(offset) => {
            let parsed = offset
                .split_once('_')
                .and_then(|(time, id)| Some((time.parse::<i64>().ok()?, id.parse::<i64>().ok()?)));
            Some(parsed.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("offset `{offset}` is not a {{creationTime}}_{{id}} cursor"),
                )
            })?)
        }
    };
    let tenant = scope.tenant;
    let all = state
        .metadata
        .call(move |connection| Ok(jobs::list_blocking(connection, &tenant)))
        .await??;
    let page: Vec<&ExportJob> = all
        .iter()
        .filter(|job| {
            query
                .status
                .as_deref()
                .is_none_or(|status| job.status.as_str() == status)
        })
        .filter(|job| cursor.is_none_or(|cursor| (job.creation_time, job.id) < cursor))
        .take(limit)
        .collect();
    let last = page
        .last()
        .map(|job| format!("{}_{}", job.creation_time, job.id));
    let more = page.len() == limit && last.is_some();
    Ok(Json(json!({
        "records": page,
        "page": {"sortField": "createdTime", "sort": "desc", "pageOffset": query.offset.clone().unwrap_or_default(), "pageSize": page.len()},
        "link": {"next": if more { format!("/export/jobs/?limit={limit}&offset={}", last.unwrap_or_default()) } else { String::new() }},
    })))
}

/// Cancels a running job, or deletes a finished one.
#[utoipa::path(delete, path = "/data/core/ups/export/jobs/{id}", tag = "exports", params(("id" = i64, Path)),
    responses((status = 200, description = "Marked for cancelling or deleted"), (status = 404, description = "Not found")))]
pub async fn export_jobs_delete(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    let tenant = scope.tenant;
    let job = state
        .metadata
        .call(move |connection| Ok(jobs::get_blocking(connection, &tenant, id)))
        .await??;
    if matches!(job.status, ExportStatus::New | ExportStatus::Processing) {
        state.exports.request_cancel(id);
        return Ok(Json(
            json!({"status": true, "message": "Export job has been marked for cancelling"}),
        ));
    }
    Err(ApiError::new(
        ErrorCode::Conflict,
        format!(
            "export job {id} is {} and cannot be cancelled",
            job.status.as_str()
        ),
    ))
}

/// Files of an exported batch, in Data Access's shape (`dataSetFileId` = `{batchId}-{n}`).
fn batch_files(
    state: &AppState,
    batch_id: &str,
) -> ApiResult<Vec<(String, std::path::PathBuf, u64)>> {
    let dir = batch_dir(state.exports.data_dir(), batch_id);
    let mut names: Vec<(String, std::path::PathBuf, u64)> = std::fs::read_dir(&dir)
        .map_err(|_| ApiError::not_found("batch", batch_id))?
        .filter_map(Result::ok)
        .filter(|entry| {
            entry.file_name().to_string_lossy().ends_with(".parquet")
                && !entry.file_name().to_string_lossy().starts_with('.')
        })
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
                entry.metadata().map(|meta| meta.len()).unwrap_or(0),
            )
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Checks the batch is a published export batch of the caller's sandbox.
async fn published_batch(
    state: &AppState,
    scope: &RequestScope,
    batch_id: &str,
) -> ApiResult<batches::Batch> {
    batches::get_batch(&state.metadata, &scope.tenant, batch_id)
        .await?
        .filter(|batch| {
            batch.status == BatchStatus::Success && batch.created_client == "export-job"
        })
        .ok_or_else(|| ApiError::not_found("batch", batch_id))
}

/// Paging of the file list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FilePage {
    /// Offset.
    pub start: Option<usize>,
    /// Page size (at most 100).
    pub limit: Option<usize>,
}

/// Lists the files of an exported batch.
#[utoipa::path(get, path = "/data/foundation/export/batches/{batch_id}/files", tag = "data access", params(("batch_id" = String, Path), FilePage),
    responses((status = 200, description = "The batch's files"), (status = 404, description = "No such published batch")))]
pub async fn batch_files_list(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(batch_id): AppPath<String>,
    AppQuery(page): AppQuery<FilePage>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(page.limit, 100, 100)?;
    let batch = published_batch(&state, &scope, &batch_id).await?;
    let start = page.start.unwrap_or(0);
    let files = batch_files(&state, &batch_id)?;
    let data: Vec<Value> = files
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(index, (_, _, size))| {
            let file_id = format!("{batch_id}-{}", index + 1);
            json!({"dataSetFileId": file_id, "dataSetViewId": batch.dataset_id(), "version": "1.0.0", "created": batch.created.to_string(),
                   "updated": batch.updated.to_string(), "size": size.to_string(), "isValid": true,
                   "_links": {"self": {"href": format!("/data/foundation/export/files/{file_id}")}}})
        })
        .collect();
    let next = if start + data.len() < files.len() {
        json!({"href": format!("/data/foundation/export/batches/{batch_id}/files?start={}&limit={limit}", start + data.len())})
    } else {
        json!({})
    };
    Ok(Json(
        json!({"data": data, "_page": {"limit": limit, "count": data.len()}, "_links": {"next": next}}),
    ))
}

/// Query of a file: `path` selects the file to download.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// The file name from the listing; without it the listing is returned.
    pub path: Option<String>,
}

/// Lists a file entry, or downloads it with `?path=` (with `Range: bytes=a-b` support: 206).
#[utoipa::path(get, path = "/data/foundation/export/files/{file_id}", tag = "data access", params(("file_id" = String, Path), FileQuery),
    responses((status = 200, description = "Listing or file bytes"), (status = 206, description = "A byte range"),
        (status = 404, description = "Not found"), (status = 416, description = "Range not satisfiable")))]
pub async fn files_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(file_id): AppPath<String>,
    AppQuery(query): AppQuery<FileQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (batch_id, index) = file_id
        .rsplit_once('-')
        .and_then(|(batch, index)| Some((batch.to_owned(), index.parse::<usize>().ok()?)))
        .ok_or_else(|| ApiError::not_found("file", &file_id))?;
    published_batch(&state, &scope, &batch_id).await?;
    let files = batch_files(&state, &batch_id)?;
    let (name, path, size) = files
        .get(index.wrapping_sub(1))
        .cloned()
        .ok_or_else(|| ApiError::not_found("file", &file_id))?;
    let Some(requested) = query.path else {
        return Ok(Json(json!({"data": [{"name": name, "length": size.to_string(),
            "_links": {"self": {"href": format!("/data/foundation/export/files/{file_id}?path={name}")}}}]}))
        .into_response());
    };
    if requested != name {
        return Err(ApiError::not_found("file", &requested));
    }
    let bytes = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok());
    let Some(range) = range else {
        return Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::ACCEPT_RANGES, "bytes"),
            ],
            bytes,
        )
            .into_response());
    };
    let Some((first, last)) = parse_range(range, size) else {
        let mut response = ApiError::new(
            ErrorCode::RangeNotSatisfiable,
            format!("range `{range}` is not satisfiable for {size} bytes"),
        )
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
            response.headers_mut().insert(header::CONTENT_RANGE, value);
        }
        return Ok(response);
    };
    let body = Body::from(bytes[first as usize..=last as usize].to_vec());
    Ok((
        StatusCode::PARTIAL_CONTENT,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_RANGE,
                format!("bytes {first}-{last}/{size}"),
            ),
        ],
        body,
    )
        .into_response())
}

/// Parses one `bytes=a-b`, `bytes=a-` or `bytes=-n` range against a size; None when unsatisfiable.
fn parse_range(range: &str, size: u64) -> Option<(u64, u64)> {
    let spec = range.strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (first, last) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().ok()?;
            (size.saturating_sub(suffix), size - 1)
        }
        (start, "") => (start.parse().ok()?, size - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(size - 1)),
    };
    (first <= last && first < size).then_some((first, last))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=990-2000", 1000), Some((990, 999)));
        for bad in [
            "bytes=1000-",
            "bytes=5-1",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=a-b",
        ] {
            assert_eq!(parse_range(bad, 1000), None, "{bad}");
        }
    }
}
