//! Segment definition endpoints under `/data/core/ups/segment` (`api.md` §2): definitions CRUD,
//! bulk-get, and `pql/text` ↔ `pql/json` conversion.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::api::extract::{AppJson, AppPath, AppQuery, check_bulk_size, page_limit};
use crate::pql::{self, PqlErrors, PqlFormat};
use crate::profile::policies::SandboxInfo;
use crate::segment::definitions::{
    self, DefinitionError, DefinitionRequest, Expression, SegmentDefinition,
};

const BASE: &str = "/data/core/ups/segment/definitions";

/// Routes of segment definitions and conversion.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, get(definitions_list).post(definitions_create))
        .route(&format!("{BASE}/bulk-get"), post(definitions_bulk_get))
        .route(
            &format!("{BASE}/{{id}}"),
            get(definitions_get)
                .patch(definitions_replace)
                .delete(definitions_delete),
        )
        .route(
            "/data/core/ups/segment/conversion",
            post(segment_conversion),
        )
}

/// Turns PQL errors into the 400 envelope, one entry per error with its position.
pub fn pql_error(errors: &PqlErrors) -> ApiError {
    let first = errors
        .0
        .first()
        .map(|error| format!("{error}"))
        .unwrap_or_else(|| "the expression is invalid".into());
    let mut api_error = ApiError::new(
        ErrorCode::InvalidExpression,
        format!("Invalid PQL expression: {first}"),
    );
    for error in &errors.0 {
        let extra = match serde_json::to_value(error) {
            Ok(Value::Object(mut fields)) => {
                // `code` and `message` are the envelope entry's own members.
                fields.remove("message");
                if let Some(class) = fields.remove("code") {
                    fields.insert("errorClass".into(), class);
                }
                fields
            }
            _ => Default::default(),
        };
        api_error = api_error.with_detail(error.message.clone(), extra);
    }
    api_error
}

impl From<DefinitionError> for ApiError {
    fn from(error: DefinitionError) -> Self {
        match error {
            DefinitionError::Expression(errors) => pql_error(&errors),
            DefinitionError::Invalid(message) => ApiError::validation(message),
            DefinitionError::DuplicateName(_) => {
                ApiError::new(ErrorCode::DuplicateName, error.to_string())
            }
            DefinitionError::InUse(message) => ApiError::new(ErrorCode::Conflict, message),
            DefinitionError::NotFound(id) => ApiError::new(
                ErrorCode::NotFound,
                format!("The segment definition {id} was not found."),
            ),
            DefinitionError::Policy(error) => error.into(),
            DefinitionError::Store(error) => error.into(),
        }
    }
}

fn location(id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("{BASE}/{id}")) {
        headers.insert("x-location", value);
    }
    headers
}

/// Creates a definition: 200 (as Adobe) with the definition and `X-Location`; 400 with positions for a
/// bad expression; 422 for a duplicate name.
#[utoipa::path(post, path = "/data/core/ups/segment/definitions", tag = "segment definitions", request_body = DefinitionRequest,
    responses((status = 200, description = "Created", body = SegmentDefinition), (status = 400, description = "Invalid"),
        (status = 422, description = "Duplicate name")))]
pub async fn definitions_create(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<DefinitionRequest>,
) -> ApiResult<(HeaderMap, Json<SegmentDefinition>)> {
    let now_ms = state.clock.now().timestamp_millis();
    let tenant = scope.tenant;
    let definition = state
        .metadata
        .call(move |connection| {
            Ok(definitions::create_blocking(
                connection, &tenant, request, now_ms,
            ))
        })
        .await??;
    Ok((location(&definition.id), Json(definition)))
}

/// Returns one definition.
#[utoipa::path(get, path = "/data/core/ups/segment/definitions/{id}", tag = "segment definitions",
    params(("id" = String, Path)), responses((status = 200, description = "The definition", body = SegmentDefinition),
        (status = 404, description = "Not found")))]
pub async fn definitions_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<SegmentDefinition>> {
    let tenant = scope.tenant;
    let definition = state
        .metadata
        .call(move |connection| Ok(definitions::get_blocking(connection, &tenant, &id)))
        .await??;
    Ok(Json(definition))
}

/// Overwrites a definition with a whole new body (the PATCH of `api.md` §2.6 is not JSON Patch).
#[utoipa::path(patch, path = "/data/core/ups/segment/definitions/{id}", tag = "segment definitions",
    params(("id" = String, Path)), request_body = DefinitionRequest,
    responses((status = 200, description = "Updated", body = SegmentDefinition), (status = 400, description = "Invalid")))]
pub async fn definitions_replace(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
    AppJson(request): AppJson<DefinitionRequest>,
) -> ApiResult<(HeaderMap, Json<SegmentDefinition>)> {
    let now_ms = state.clock.now().timestamp_millis();
    let tenant = scope.tenant;
    let definition = state
        .metadata
        .call(move |connection| {
            Ok(definitions::replace_blocking(
                connection, &tenant, &id, request, now_ms,
            ))
        })
        .await??;
    Ok((location(&definition.id), Json(definition)))
}

/// Deletes a definition; refused (409) while another definition's `inSegment` depends on it.
#[utoipa::path(delete, path = "/data/core/ups/segment/definitions/{id}", tag = "segment definitions",
    params(("id" = String, Path)), responses((status = 200, description = "Deleted"), (status = 409, description = "In use")))]
pub async fn definitions_delete(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<Value>> {
    let tenant = scope.tenant;
    let deleted = id.clone();
    state
        .metadata
        .call(move |connection| Ok(definitions::delete_blocking(connection, &tenant, &id)))
        .await??;
    Ok(Json(
        json!({"status": true, "message": format!("segment definition {deleted} deleted")}),
    ))
}

/// Paging, sort and filters of the list (`api.md` §2.2).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DefinitionListQuery {
    /// Offset of the first definition.
    pub start: Option<usize>,
    /// Page size (default 100, at most 1000).
    pub limit: Option<usize>,
    /// 0-based page number; the offset is `page × limit` (overrides `start`).
    pub page: Option<usize>,
    /// `field:asc|desc`, field one of `creationTime`, `updateTime`, `name` (default `creationTime:desc`).
    pub sort: Option<String>,
    /// Only streaming (or non-streaming) definitions.
    #[serde(rename = "evaluationInfo.continuous.enabled")]
    pub continuous: Option<bool>,
    /// Only edge (or non-edge) definitions.
    #[serde(rename = "evaluationInfo.synchronous.enabled")]
    pub synchronous: Option<bool>,
}

/// Lists definitions: `{segments, page, link}`.
#[utoipa::path(get, path = "/data/core/ups/segment/definitions", tag = "segment definitions", params(DefinitionListQuery),
    responses((status = 200, description = "A page of definitions")))]
pub async fn definitions_list(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(query): AppQuery<DefinitionListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(query.limit, 100, 1000)?;
    let (sort_field, descending) = parse_sort(query.sort.as_deref())?;
    let tenant = scope.tenant;
    let mut all = state
        .metadata
        .call(move |connection| Ok(definitions::list_blocking(connection, &tenant)))
        .await??;
    all.retain(|definition| {
        query
            .continuous
            .is_none_or(|wanted| definition.evaluation_info.continuous.enabled == wanted)
            && query
                .synchronous
                .is_none_or(|wanted| definition.evaluation_info.synchronous.enabled == wanted)
    });
    all.sort_by(|left, right| {
        let order = match sort_field {
            "updateTime" => left.update_time.cmp(&right.update_time),
            "name" => left.name.cmp(&right.name),
            _ => left.creation_time.cmp(&right.creation_time),
        }
        .then_with(|| left.id.cmp(&right.id));
        if descending { order.reverse() } else { order }
    });
    let offset = query
        .page
        .map_or(query.start.unwrap_or(0), |page| page.saturating_mul(limit));
    let total = all.len();
    let page: Vec<&SegmentDefinition> = all.iter().skip(offset).take(limit).collect();
    Ok(Json(json!({
        "segments": page,
        "page": {
            "totalCount": total,
            "totalPages": total.div_ceil(limit),
            "sortField": sort_field,
            "sort": if descending { "desc" } else { "asc" },
            "pageSize": page.len(),
            "limit": limit,
        },
        "link": {},
    })))
}

/// Parses `field:asc|desc`.
fn parse_sort(sort: Option<&str>) -> ApiResult<(&'static str, bool)> {
    let Some(sort) = sort.filter(|sort| !sort.is_empty()) else {
        return Ok(("creationTime", true));
    };
    let (field, direction) = sort.split_once(':').unwrap_or((sort, "asc"));
    let field = match field {
        "creationTime" => "creationTime",
        "updateTime" => "updateTime",
        "name" => "name",
        other => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("sort field `{other}`: use creationTime, updateTime or name"),
            ));
        }
    };
    match direction {
        "asc" => Ok((field, false)),
        "desc" => Ok((field, true)),
        other => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("sort direction `{other}`: use asc or desc"),
        )),
    }
}

/// The body of bulk-get.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefinitionBulkGet {
    /// `[{"id": "..."}]`, 1 to 100 of them.
    pub ids: Vec<crate::api::merge_policies::BulkId>,
}

/// Returns several definitions (207); unknown ids are omitted, and 404 when none is found.
#[utoipa::path(post, path = "/data/core/ups/segment/definitions/bulk-get", tag = "segment definitions", request_body = DefinitionBulkGet,
    responses((status = 207, description = "The found definitions"), (status = 404, description = "None found")))]
pub async fn definitions_bulk_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<DefinitionBulkGet>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_bulk_size(request.ids.len())?;
    let tenant = scope.tenant;
    let all = state
        .metadata
        .call(move |connection| Ok(definitions::list_blocking(connection, &tenant)))
        .await??;
    let mut results = serde_json::Map::new();
    for wanted in &request.ids {
        if let Some(definition) = all.iter().find(|definition| definition.id == wanted.id) {
            results.insert(
                wanted.id.clone(),
                serde_json::to_value(definition).map_err(ApiError::internal)?,
            );
        }
    }
    if results.is_empty() {
        let ids: Vec<&str> = request
            .ids
            .iter()
            .map(|wanted| wanted.id.as_str())
            .collect();
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("The entity {} is not found.", ids.join(",")),
        ));
    }
    Ok((StatusCode::MULTI_STATUS, Json(json!({"results": results}))))
}

/// The body of a conversion: a definition-shaped object; only `expression` is required.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversionRequest {
    /// Name, echoed.
    #[serde(default)]
    pub name: Option<String>,
    /// Description, echoed.
    #[serde(default)]
    pub description: Option<String>,
    /// The expression to convert.
    pub expression: Expression,
    /// Schema, echoed.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Echoed.
    #[serde(default)]
    pub profile_instance_id: Option<String>,
    /// Echoed.
    #[serde(default)]
    pub payload_schema: Option<String>,
    /// Echoed.
    #[serde(default)]
    pub ttl_in_days: Option<u32>,
}

/// Converts `pql/text` to `pql/json` and back; nothing is stored.
#[utoipa::path(post, path = "/data/core/ups/segment/conversion", tag = "segment definitions", request_body = ConversionRequest,
    responses((status = 200, description = "The same object in the other format"), (status = 400, description = "Invalid expression")))]
pub async fn segment_conversion(
    scope: RequestScope,
    AppJson(request): AppJson<ConversionRequest>,
) -> ApiResult<Json<Value>> {
    let expr = definitions::parse_expression(&request.expression)?;
    let (format, value) = match request.expression.format.parse::<PqlFormat>() {
        Ok(PqlFormat::Text) => (PqlFormat::Json, pql::to_json(&expr).to_string()),
        _ => (PqlFormat::Text, pql::to_text(&expr)),
    };
    let mut body = json!({
        "imsOrgId": scope.tenant.org_id,
        "sandbox": SandboxInfo::of(&scope.tenant),
        "expression": {"type": "PQL", "format": format.as_str(), "value": value},
    });
    let echoed = [
        ("name", request.name.map(Value::from)),
        ("description", request.description.map(Value::from)),
        ("schema", request.schema),
        (
            "profileInstanceId",
            request.profile_instance_id.map(Value::from),
        ),
        ("payloadSchema", request.payload_schema.map(Value::from)),
        ("ttlInDays", request.ttl_in_days.map(Value::from)),
    ];
    for (key, value) in echoed {
        if let Some(value) = value {
            body[key] = value;
        }
    }
    Ok(Json(body))
}
