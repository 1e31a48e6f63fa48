//! Segment job endpoints under `/data/core/ups/segment/jobs` (`api.md` §4).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::api::extract::{AppJson, AppPath, AppQuery, check_bulk_size, page_limit};
use crate::jobs::segment::{self, JobErrorKind, JobOrigin, JobSelection, JobStatus, SegmentJob};

const BASE: &str = "/data/core/ups/segment/jobs";

/// Routes of segment jobs.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, get(segment_jobs_list).post(segment_jobs_create))
        .route(&format!("{BASE}/bulk-get"), post(segment_jobs_bulk_get))
        .route(
            &format!("{BASE}/{{id}}"),
            get(segment_jobs_get).delete(segment_jobs_cancel),
        )
}

impl From<JobErrorKind> for ApiError {
    fn from(error: JobErrorKind) -> Self {
        match error {
            JobErrorKind::Invalid(message) => ApiError::validation(message),
            JobErrorKind::NotFound(id) => ApiError::not_found("segment job", &id),
            JobErrorKind::Store(error) => error.into(),
        }
    }
}

/// Reads the two request forms: `[{"segmentId": ...}]` or `{"schema": ..., "segments": [{"segmentId": "*"}]}`.
fn selection(body: &Value) -> ApiResult<JobSelection> {
    let entries = match body {
        Value::Array(entries) => entries,
        Value::Object(object) => object
            .get("segments")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ApiError::validation("the body's segments must be an array of {\"segmentId\": ...}")
            })?,
        _ => {
            return Err(ApiError::validation(
                "the body must be an array of {\"segmentId\": ...} or {\"segments\": [...]}",
            ));
        }
    };
    let ids: Vec<String> = entries
        .iter()
        .map(|entry| {
            entry
                .get("segmentId")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| ApiError::validation("every entry needs a string segmentId"))?;
    if ids.iter().any(|id| id == "*") {
        return if ids.len() == 1 {
            Ok(JobSelection::All)
        } else {
            Err(ApiError::validation("\"*\" cannot be combined with ids"))
        };
    }
    Ok(JobSelection::Ids(ids))
}

/// Creates a job (200 with the job, `QUEUED`).
#[utoipa::path(post, path = "/data/core/ups/segment/jobs", tag = "segment jobs", request_body = Object,
    responses((status = 200, description = "The queued job"), (status = 400, description = "Invalid request")))]
pub async fn segment_jobs_create(
    State(state): State<AppState>,
    scope: RequestScope,
    headers: axum::http::HeaderMap,
    AppJson(body): AppJson<Value>,
) -> ApiResult<Json<SegmentJob>> {
    let selection = selection(&body)?;
    let origin = JobOrigin {
        source: "api".into(),
        properties: Default::default(),
        request_id: headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    };
    let now_ms = state.clock.now().timestamp_millis();
    let tenant = scope.tenant;
    let job = state
        .metadata
        .call(move |connection| {
            Ok(segment::create_blocking(
                connection, &tenant, selection, origin, now_ms,
            ))
        })
        .await??;
    state.segment_jobs.notify();
    Ok(Json(job))
}

/// Returns one job.
#[utoipa::path(get, path = "/data/core/ups/segment/jobs/{id}", tag = "segment jobs", params(("id" = String, Path)),
    responses((status = 200, description = "The job"), (status = 404, description = "Not found")))]
pub async fn segment_jobs_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<SegmentJob>> {
    let tenant = scope.tenant;
    Ok(Json(
        state
            .metadata
            .call(move |connection| Ok(segment::get_blocking(connection, &tenant, &id)))
            .await??,
    ))
}

/// List parameters (`api.md` §4.2).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobListQuery {
    /// Offset (by creation time).
    pub start: Option<usize>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only jobs in this status.
    pub status: Option<String>,
    /// `creationTime:desc` (default) or `:asc`, also `updateTime`.
    pub sort: Option<String>,
    /// `path==value` or `array~key==value`.
    pub property: Option<String>,
    /// Accepted for compatibility; segmentd keeps no snapshots.
    #[serde(rename = "snapshot.name")]
    pub snapshot_name: Option<String>,
}

/// Returns the value at a dotted path of a JSON document.
fn at_path<'a>(document: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(document, |node, key| node.get(key))
}

/// Tells whether `value` equals the text of a property filter (strings compare as text, others as JSON).
fn equals_text(value: &Value, text: &str) -> bool {
    match value {
        Value::String(string) => string == text,
        other => other.to_string() == text,
    }
}

/// Parses a `property` filter into a predicate over jobs.
fn property_filter(property: &str) -> ApiResult<impl Fn(&Value) -> bool + '_> {
    let (left, expected) = property.split_once("==").ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            format!("property `{property}`: use path==value or array~key==value"),
        )
    })?;
    Ok(move |job: &Value| match left.split_once('~') {
        Some((array, key)) => at_path(job, array)
            .and_then(Value::as_array)
            .is_some_and(|items| {
                items.iter().any(|item| {
                    at_path(item, key).is_some_and(|value| equals_text(value, expected))
                })
            }),
        None => at_path(job, left).is_some_and(|value| equals_text(value, expected)),
    })
}

/// Lists jobs with `start`, `limit`, `status`, `sort` and `property`.
#[utoipa::path(get, path = "/data/core/ups/segment/jobs", tag = "segment jobs", params(JobListQuery),
    responses((status = 200, description = "A page of jobs")))]
pub async fn segment_jobs_list(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(query): AppQuery<JobListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(query.limit, 100, 1000)?;
    let status = match &query.status {
        None => None,
        Some(name) => Some(JobStatus::parse(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("status `{name}` is not a job status"),
            )
        })?),
    };
    let (sort_field, descending) = match query
        .sort
        .as_deref()
        .unwrap_or("creationTime:desc")
        .split_once(':')
    {
        Some((field @ ("creationTime" | "updateTime"), direction @ ("asc" | "desc"))) => {
            (field.to_owned(), direction == "desc")
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "sort must be creationTime or updateTime, :asc or :desc",
            ));
        }
    };
    let filter = query.property.as_deref().map(property_filter).transpose()?;
    let tenant = scope.tenant;
    let jobs = state
        .metadata
        .call(move |connection| Ok(segment::list_blocking(connection, &tenant)))
        .await??;
    let mut documents: Vec<Value> = Vec::new();
    for job in jobs {
        if status.is_some_and(|wanted| job.status != wanted) {
            continue;
        }
        let document = serde_json::to_value(&job).map_err(ApiError::internal)?;
        if filter.as_ref().is_none_or(|matches| matches(&document)) {
            documents.push(document);
        }
    }
    documents.sort_by(|left, right| {
        let order = left[&sort_field]
            .as_i64()
            .cmp(&right[&sort_field].as_i64())
            .then_with(|| left["id"].as_str().cmp(&right["id"].as_str()));
        if descending { order.reverse() } else { order }
    });
    let total = documents.len();
    let start = query.start.unwrap_or(0);
    let page: Vec<Value> = documents.into_iter().skip(start).take(limit).collect();
    let next = if start + page.len() < total {
        json!({"href": format!("{BASE}?start={}&limit={limit}", start + page.len())})
    } else {
        json!({})
    };
    Ok(Json(
        json!({"_page": {"totalCount": total, "pageSize": page.len()}, "children": page, "_links": {"next": next}}),
    ))
}

/// Returns several jobs (207); unknown ids are omitted.
#[utoipa::path(post, path = "/data/core/ups/segment/jobs/bulk-get", tag = "segment jobs", request_body = crate::api::merge_policies::BulkGetRequest,
    responses((status = 207, description = "The jobs found")))]
pub async fn segment_jobs_bulk_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<crate::api::merge_policies::BulkGetRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_bulk_size(request.ids.len())?;
    let tenant = scope.tenant;
    let jobs = state
        .metadata
        .call(move |connection| Ok(segment::list_blocking(connection, &tenant)))
        .await??;
    let mut results = serde_json::Map::new();
    for wanted in &request.ids {
        if let Some(job) = jobs.iter().find(|job| job.id == wanted.id) {
            results.insert(
                job.id.clone(),
                serde_json::to_value(job).map_err(ApiError::internal)?,
            );
        }
    }
    Ok((StatusCode::MULTI_STATUS, Json(json!({"results": results}))))
}

/// Requests cancellation: the job moves to `CANCELLING`, then the runner makes it `CANCELLED`
/// (memberships unchanged). A finished job cannot be cancelled (409). Answers 200 with a message.
#[utoipa::path(delete, path = "/data/core/ups/segment/jobs/{id}", tag = "segment jobs", params(("id" = String, Path)),
    responses((status = 200, description = "Marked for cancelling"), (status = 404, description = "Not found"), (status = 409, description = "Already finished")))]
pub async fn segment_jobs_cancel(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<Value>> {
    let now_ms = state.clock.now().timestamp_millis();
    let (tenant, job_id) = (scope.tenant, id.clone());
    let job = state
        .metadata
        .call(move |connection| {
            Ok(segment::update_blocking(
                connection,
                &tenant,
                &job_id,
                now_ms,
                |job| {
                    if !job.status.is_final() {
                        job.status = JobStatus::Cancelling;
                    }
                },
            ))
        })
        .await??;
    if job.status != JobStatus::Cancelling {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "segment job {id} is {} and cannot be cancelled",
                job.status.as_str()
            ),
        ));
    }
    state.segment_jobs.request_cancel(&id);
    Ok(Json(
        json!({"status": true, "message": format!("Segment job with id '{id}' has been marked for cancelling")}),
    ))
}
