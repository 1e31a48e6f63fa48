//! Merge policy endpoints under `/data/core/ups/config/mergePolicies` (`ingest-api.md` §8).

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
use crate::profile::policies::{self, MergePolicyResource, MergePolicySpec, PolicyError};

const BASE: &str = "/data/core/ups/config/mergePolicies";

/// Routes of the merge policy resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, get(merge_policies_list).post(merge_policies_create))
        .route(&format!("{BASE}/bulk-get"), post(merge_policies_bulk_get))
        .route(
            &format!("{BASE}/{{id}}"),
            get(merge_policies_get)
                .put(merge_policies_replace)
                .patch(merge_policies_patch)
                .delete(merge_policies_delete),
        )
}

impl From<PolicyError> for ApiError {
    fn from(error: PolicyError) -> Self {
        match error {
            PolicyError::Invalid(message) => ApiError::validation(message),
            PolicyError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message),
            PolicyError::NotFound(id) => ApiError::not_found("merge policy", &id),
            PolicyError::Store(error) => error.into(),
        }
    }
}

/// Creates a merge policy; `default: true` clears the previous default of the class.
#[utoipa::path(post, path = "/data/core/ups/config/mergePolicies", tag = "merge policies", request_body = MergePolicySpec,
    responses((status = 200, description = "Created", body = MergePolicyResource), (status = 400, description = "Invalid"),
        (status = 409, description = "Limit or edge conflict")))]
pub async fn merge_policies_create(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(spec): AppJson<MergePolicySpec>,
) -> ApiResult<Json<MergePolicyResource>> {
    let now = state.clock.now().timestamp();
    let tenant = scope.tenant;
    let policy = state
        .metadata
        .call(move |connection| Ok(policies::create_blocking(connection, &tenant, spec, now)))
        .await??;
    Ok(Json(policy))
}

/// Returns one merge policy.
#[utoipa::path(get, path = "/data/core/ups/config/mergePolicies/{id}", tag = "merge policies",
    params(("id" = String, Path)), responses((status = 200, description = "The policy", body = MergePolicyResource), (status = 404, description = "Not found")))]
pub async fn merge_policies_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<MergePolicyResource>> {
    let tenant = scope.tenant;
    let policy = state
        .metadata
        .call(move |connection| Ok(policies::get_blocking(connection, &tenant, &id)))
        .await??;
    Ok(Json(policy))
}

/// List filters and paging (`ingest-api.md` §8.2). `start` is the 0-based offset, as a string cursor.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PolicyListQuery {
    /// Only the default (true) or non-default (false) policies.
    pub default: Option<bool>,
    /// Page size, 1 to 100 (default 20).
    pub limit: Option<usize>,
    /// `name`, `+name` or `-name` (default ascending).
    #[serde(rename = "orderBy", alias = "orderby")]
    pub order_by: Option<String>,
    /// Only policies active (or not) on edge.
    #[serde(rename = "isActiveOnEdge")]
    pub is_active_on_edge: Option<bool>,
    /// Only this schema class.
    #[serde(rename = "schema.name")]
    pub schema_name: Option<String>,
    /// Only this identity graph type.
    #[serde(rename = "identityGraph.type")]
    pub identity_graph_type: Option<String>,
    /// Only this attribute merge type.
    #[serde(rename = "attributeMerge.type")]
    pub attribute_merge_type: Option<String>,
    /// Cursor from `_links.next`.
    pub start: Option<String>,
    /// Only this version.
    pub version: Option<u64>,
}

/// Lists merge policies with filters and paging.
#[utoipa::path(get, path = "/data/core/ups/config/mergePolicies", tag = "merge policies", params(PolicyListQuery),
    responses((status = 200, description = "A page of policies")))]
pub async fn merge_policies_list(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(query): AppQuery<PolicyListQuery>,
) -> ApiResult<Json<Value>> {
    let limit = page_limit(query.limit, 20, 100)?;
    let start: usize = match &query.start {
        None => 0,
        Some(cursor) => cursor.parse().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("start `{cursor}` is not a cursor from _links.next"),
            )
        })?,
    };
    let descending = match query.order_by.as_deref().map(str::trim) {
        None | Some("") | Some("name") | Some("+name") => false,
        Some("-name") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("orderBy `{other}` is not supported: use name or -name"),
            ));
        }
    };
    let tenant = scope.tenant;
    let mut all = state
        .metadata
        .call(move |connection| Ok(policies::list_blocking(connection, &tenant)))
        .await??;
    all.retain(|policy| {
        let value = serde_json::to_value(policy).unwrap_or_default();
        query
            .default
            .is_none_or(|wanted| policy.spec.default == wanted)
            && query
                .is_active_on_edge
                .is_none_or(|wanted| policy.spec.is_active_on_edge == wanted)
            && query
                .schema_name
                .as_ref()
                .is_none_or(|wanted| &policy.spec.schema.name == wanted)
            && query
                .identity_graph_type
                .as_ref()
                .is_none_or(|wanted| value["identityGraph"]["type"] == wanted.as_str())
            && query
                .attribute_merge_type
                .as_ref()
                .is_none_or(|wanted| value["attributeMerge"]["type"] == wanted.as_str())
            && query.version.is_none_or(|wanted| policy.version == wanted)
    });
    if descending {
        all.reverse();
    }
    let total = all.len();
    let page: Vec<&MergePolicyResource> = all.iter().skip(start).take(limit).collect();
    let next_start = start + page.len();
    let next = if next_start < total {
        format!(
            "@/mergePolicies?start={next_start}&orderBy={}&limit={limit}",
            query.order_by.as_deref().unwrap_or("")
        )
    } else {
        String::new()
    };
    Ok(Json(json!({
        "_page": {"totalCount": total, "pageSize": page.len(), "count": page.len(), "next": if next.is_empty() { Value::Null } else { json!(next_start.to_string()) }},
        "children": page,
        "_links": {"next": {"href": next}},
    })))
}

/// Replaces a policy's writable fields (PUT).
#[utoipa::path(put, path = "/data/core/ups/config/mergePolicies/{id}", tag = "merge policies",
    params(("id" = String, Path)), request_body = MergePolicySpec, responses((status = 200, description = "The policy", body = MergePolicyResource)))]
pub async fn merge_policies_replace(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
    AppJson(spec): AppJson<MergePolicySpec>,
) -> ApiResult<Json<MergePolicyResource>> {
    update(&state, scope, id, move |_| Ok(spec)).await
}

/// Applies `change` to a stored policy in one metadata transaction and answers the result.
async fn update(
    state: &AppState,
    scope: RequestScope,
    id: String,
    change: impl FnOnce(&MergePolicySpec) -> Result<MergePolicySpec, PolicyError> + Send + 'static,
) -> ApiResult<Json<MergePolicyResource>> {
    let now = state.clock.now().timestamp();
    let tenant = scope.tenant;
    let policy = state
        .metadata
        .call(move |connection| {
            Ok(policies::update_blocking(
                connection, &tenant, &id, change, now,
            ))
        })
        .await??;
    Ok(Json(policy))
}

/// Applies `add` (or `replace`) operations to a policy (`ingest-api.md` §8.5): one operation object or
/// an array, paths such as `/default`, `/identityGraph.type`, `/attributeMerge.order`; string booleans
/// are accepted. All operations apply or none.
#[utoipa::path(patch, path = "/data/core/ups/config/mergePolicies/{id}", tag = "merge policies",
    params(("id" = String, Path)), request_body = Object, responses((status = 200, description = "The policy", body = MergePolicyResource)))]
pub async fn merge_policies_patch(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
    AppJson(body): AppJson<Value>,
) -> ApiResult<Json<MergePolicyResource>> {
    let operations = match body {
        Value::Array(operations) => operations,
        single @ Value::Object(_) => vec![single],
        _ => {
            return Err(ApiError::validation(
                "the body must be a JSON Patch operation or an array of them",
            ));
        }
    };
    update(&state, scope, id, move |spec| {
        apply_patch(spec, &operations)
    })
    .await
}

/// Patchable paths, with the OpenAPI's misspelling `idActiveOnEdge` accepted.
fn patch_target(path: &str) -> Option<&'static [&'static str]> {
    Some(
        match path.trim_start_matches('/').replace('/', ".").as_str() {
            "name" => &["name"],
            "schema.name" => &["schema", "name"],
            "identityGraph.type" => &["identityGraph", "type"],
            "attributeMerge.type" => &["attributeMerge", "type"],
            "attributeMerge.order" => &["attributeMerge", "order"],
            "default" => &["default"],
            "isActiveOnEdge" | "idActiveOnEdge" => &["isActiveOnEdge"],
            _ => return None,
        },
    )
}

fn apply_patch(
    spec: &MergePolicySpec,
    operations: &[Value],
) -> Result<MergePolicySpec, PolicyError> {
    let mut document = serde_json::to_value(spec)?;
    for operation in operations {
        let op = operation.get("op").and_then(Value::as_str).unwrap_or("");
        if op != "add" && op != "replace" {
            return Err(PolicyError::Invalid(format!(
                "operation `{op}` is not supported: use add"
            )));
        }
        let path = operation.get("path").and_then(Value::as_str).unwrap_or("");
        let target = patch_target(path).ok_or_else(|| {
            PolicyError::Invalid(format!(
                "path `{path}` cannot be patched: use /name, /schema.name, /identityGraph.type, /attributeMerge.type, /attributeMerge.order, /default or /isActiveOnEdge"
            ))
        })?;
        let value = operation
            .get("value")
            .cloned()
            .ok_or_else(|| PolicyError::Invalid(format!("operation on `{path}` has no value")))?;
        let (leaf, parents) = target.split_last().expect("targets are non-empty");
        let mut node = &mut document;
        for parent in parents {
            node = node
                .as_object_mut()
                .expect("spec sections are objects")
                .entry(*parent)
                .or_insert_with(|| json!({}));
        }
        node.as_object_mut()
            .expect("spec sections are objects")
            .insert((*leaf).to_owned(), value);
    }
    // Switching to timestampOrdered drops a precedence list that no longer applies.
    if document["attributeMerge"]["type"] == "timestampOrdered" {
        if let Some(merge) = document["attributeMerge"].as_object_mut() {
            merge.remove("order");
        }
    }
    serde_json::from_value(document)
        .map_err(|error| PolicyError::Invalid(format!("the patched policy is invalid: {error}")))
}

/// Deletes a policy (200, empty body).
#[utoipa::path(delete, path = "/data/core/ups/config/mergePolicies/{id}", tag = "merge policies",
    params(("id" = String, Path)), responses((status = 200, description = "Deleted"), (status = 409, description = "Active on edge")))]
pub async fn merge_policies_delete(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<StatusCode> {
    let tenant = scope.tenant;
    state
        .metadata
        .call(move |connection| Ok(policies::delete_blocking(connection, &tenant, &id)))
        .await??;
    Ok(StatusCode::OK)
}

/// The body of bulk-get.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkGetRequest {
    /// `[{"id": "..."}]`.
    pub ids: Vec<BulkId>,
}

/// One requested id.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkId {
    /// The policy id.
    pub id: String,
}

/// Returns several policies (207); an unknown id gets an `error` member.
#[utoipa::path(post, path = "/data/core/ups/config/mergePolicies/bulk-get", tag = "merge policies", request_body = BulkGetRequest,
    responses((status = 207, description = "Per-id results")))]
pub async fn merge_policies_bulk_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<BulkGetRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    check_bulk_size(request.ids.len())?;
    let tenant = scope.tenant;
    let all = state
        .metadata
        .call(move |connection| Ok(policies::list_blocking(connection, &tenant)))
        .await??;
    let mut results = serde_json::Map::new();
    for BulkId { id } in request.ids {
        let entry = match all.iter().find(|policy| policy.id == id) {
            Some(policy) => serde_json::to_value(policy).map_err(ApiError::internal)?,
            None => {
                json!({"error": {"status": 404, "message": format!("merge policy {id} not found")}})
            }
        };
        results.insert(id, entry);
    }
    Ok((StatusCode::MULTI_STATUS, Json(json!({"results": results}))))
}
