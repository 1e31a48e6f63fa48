//! Schedule endpoints under `/data/core/ups/config/schedules` (`api.md` §6).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::api::extract::{AppJson, AppPath, AppQuery};
use crate::schedule::schedules::{self, NewSchedule, Schedule, ScheduleError};

const BASE: &str = "/data/core/ups/config/schedules";

/// Routes of schedules.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, get(schedules_list).post(schedules_create))
        .route(
            &format!("{BASE}/{{id}}"),
            get(schedules_get)
                .patch(schedules_patch)
                .delete(schedules_delete),
        )
}

impl From<ScheduleError> for ApiError {
    fn from(error: ScheduleError) -> Self {
        match error {
            ScheduleError::Invalid(message) => ApiError::validation(message),
            ScheduleError::OnePerSandbox(_) => {
                ApiError::new(ErrorCode::Conflict, error.to_string())
            }
            ScheduleError::TooManyPolicies(_) => {
                ApiError::new(ErrorCode::Unprocessable, error.to_string())
            }
            ScheduleError::NotFound(id) => ApiError::not_found("schedule", &id),
            ScheduleError::Store(error) => error.into(),
        }
    }
}

/// Creates a schedule (200); inactive unless `state: active`.
#[utoipa::path(post, path = "/data/core/ups/config/schedules", tag = "schedules", request_body = NewSchedule,
    responses((status = 200, description = "Created"), (status = 400, description = "Invalid"), (status = 409, description = "One schedule per sandbox"),
        (status = 422, description = "Too many merge policies")))]
pub async fn schedules_create(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<NewSchedule>,
) -> ApiResult<Json<Schedule>> {
    let now_s = state.clock.now().timestamp();
    let tenant = scope.tenant;
    Ok(Json(
        state
            .metadata
            .call(move |connection| {
                Ok(schedules::create_blocking(
                    connection, &tenant, request, now_s,
                ))
            })
            .await??,
    ))
}

/// Returns one schedule.
#[utoipa::path(get, path = "/data/core/ups/config/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 200, description = "The schedule"), (status = 404, description = "Not found")))]
pub async fn schedules_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<Schedule>> {
    let tenant = scope.tenant;
    Ok(Json(
        state
            .metadata
            .call(move |connection| Ok(schedules::get_blocking(connection, &tenant, &id)))
            .await??,
    ))
}

/// Paging of the list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScheduleListQuery {
    /// Offset (default 0).
    pub start: Option<usize>,
    /// Page size (default 100, positive).
    pub limit: Option<usize>,
}

/// Lists schedules: `{_page, children, _links}`.
#[utoipa::path(get, path = "/data/core/ups/config/schedules", tag = "schedules", params(ScheduleListQuery),
    responses((status = 200, description = "A page of schedules")))]
pub async fn schedules_list(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(query): AppQuery<ScheduleListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = query.limit.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "limit must be positive",
        ));
    }
    let start = query.start.unwrap_or(0);
    let tenant = scope.tenant;
    let all = state
        .metadata
        .call(move |connection| Ok(schedules::list_blocking(connection, &tenant)))
        .await??;
    let total = all.len();
    let page: Vec<&Schedule> = all.iter().skip(start).take(limit).collect();
    let next_start = start + page.len();
    let (next, link) = if next_start < total {
        (
            json!(next_start.to_string()),
            json!({"href": format!("{BASE}?start={next_start}&limit={limit}")}),
        )
    } else {
        (Value::Null, json!({}))
    };
    Ok(Json(
        json!({"_page": {"totalCount": total, "pageSize": page.len(), "next": next}, "children": page, "_links": {"next": link}}),
    ))
}

/// Applies an RFC 6902 patch to `/state`, `/schedule` or `/timeZone`, atomically: 204.
#[utoipa::path(patch, path = "/data/core/ups/config/schedules/{id}", tag = "schedules", params(("id" = String, Path)), request_body = Object,
    responses((status = 204, description = "Updated"), (status = 400, description = "Invalid patch (nothing changed)")))]
pub async fn schedules_patch(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
    AppJson(operations): AppJson<Value>,
) -> ApiResult<StatusCode> {
    let now_s = state.clock.now().timestamp();
    let tenant = scope.tenant;
    state
        .metadata
        .call(move |connection| {
            Ok(schedules::patch_blocking(
                connection, &tenant, &id, operations, now_s,
            ))
        })
        .await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a schedule: 204.
#[utoipa::path(delete, path = "/data/core/ups/config/schedules/{id}", tag = "schedules", params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, description = "Not found")))]
pub async fn schedules_delete(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let tenant = scope.tenant;
    state
        .metadata
        .call(move |connection| Ok(schedules::delete_blocking(connection, &tenant, &id)))
        .await??;
    Ok(StatusCode::NO_CONTENT)
}
