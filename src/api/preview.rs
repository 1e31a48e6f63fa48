//! Previews and estimates under `/data/core/ups` (`api.md` §3): `POST /preview`,
//! `GET /preview/{id}`, `DELETE /preview/{id}`, `GET /estimate/{id}`, and the sample's status.
//!
//! Extensions beyond Adobe's fields (all optional, documented in the OpenAPI): `mergePolicyId` and
//! `targetRelativeHalfWidth` on create (stop once the 95% interval's half-width is at most that
//! fraction of the estimate), and `estimatedSizeLowerBound` / `estimatedSizeUpperBound` on estimates:
//! the anytime-valid 95% bounds, valid however often they are polled.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::auth::RequestScope;
use crate::api::error::{ApiError, ApiResult, ErrorCode};
use crate::api::extract::{AppJson, AppPath, AppQuery, page_limit};
use crate::estimate::preview::{NewPreview, PreviewError, PreviewJob};
use crate::pql::{self, PqlFormat};
use crate::sample::service::SampleError;
use crate::sample::store::Sample;

/// Default and largest preview page.
const DEFAULT_PAGE: usize = 1000;
/// Seconds a client is asked to wait when the preview queue is full.
const RETRY_AFTER_SECS: u64 = 2;

/// Routes of previews, estimates and the sample status.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/data/core/ups/preview",
            axum::routing::post(previews_create),
        )
        .route(
            "/data/core/ups/preview/{id}",
            get(previews_get).delete(previews_delete),
        )
        .route("/data/core/ups/estimate/{id}", get(estimates_get))
        .route(
            "/data/core/ups/previewsamplestatus",
            get(sample_status).post(sample_refresh),
        )
}

/// The body of `POST /preview`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreatePreview {
    /// The PQL predicate.
    pub predicate_expression: String,
    /// `pql/text` (default) or `pql/json`.
    #[serde(default)]
    pub predicate_type: Option<String>,
    /// The model, `_xdm.context.profile`.
    #[serde(default)]
    pub predicate_model: Option<String>,
    /// `none` or `pdg`: overrides the merge policy's identity graph.
    #[serde(default)]
    pub graph_type: Option<String>,
    /// Extension: the merge policy (default: the sandbox's default).
    #[serde(default)]
    pub merge_policy_id: Option<String>,
    /// Extension: stop once the interval's relative half-width is at most this (e.g. 0.05).
    #[serde(default)]
    pub target_relative_half_width: Option<f64>,
}

impl From<SampleError> for ApiError {
    fn from(error: SampleError) -> Self {
        match error {
            SampleError::UnknownPolicy(_) | SampleError::BadGraph(_) => {
                ApiError::validation(error.to_string())
            }
            SampleError::Metadata(error) => error.into(),
            SampleError::Profiles(error) => error.into(),
            SampleError::Build(error) => ApiError::internal(error),
        }
    }
}

/// Creates a preview (and its estimate, same id): 201 with `previewId`; the expression is checked
/// first (400 with positions); 429 with `Retry-After` when too many previews wait.
#[utoipa::path(post, path = "/data/core/ups/preview", tag = "previews", request_body = CreatePreview,
    responses((status = 201, description = "Created"), (status = 400, description = "Invalid expression"),
        (status = 429, description = "Too many previews waiting")))]
pub async fn previews_create(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<CreatePreview>,
) -> ApiResult<(StatusCode, HeaderMap, Json<Value>)> {
    let format = match request.predicate_type.as_deref() {
        None | Some("pql/text") | Some("PQL") => PqlFormat::Text,
        Some("pql/json") => PqlFormat::Json,
        Some(other) => {
            return Err(ApiError::validation(format!(
                "predicateType `{other}` is not supported: use pql/text"
            )));
        }
    };
    if let Some(model) = request
        .predicate_model
        .as_deref()
        .filter(|model| *model != "_xdm.context.profile" && *model != "xdm.model.profile")
    {
        return Err(ApiError::validation(format!(
            "predicateModel `{model}` is not supported: use _xdm.context.profile"
        )));
    }
    if let Some(target) = request
        .target_relative_half_width
        .filter(|target| !(target.is_finite() && *target > 0.0))
    {
        return Err(ApiError::validation(format!(
            "targetRelativeHalfWidth must be a positive number, not {target}"
        )));
    }
    let expr = pql::parse(&request.predicate_expression, format)
        .map_err(|errors| crate::api::segments::pql_error(&errors))?;
    let query = pql::compile(&expr).map_err(|errors| crate::api::segments::pql_error(&errors))?;
    let sample = state
        .samples
        .current(
            &scope.tenant,
            request.merge_policy_id,
            request.graph_type.as_deref(),
            false,
        )
        .await?;
    let new = NewPreview {
        tenant: scope.tenant.clone(),
        expression: request.predicate_expression,
        query,
        sample,
        target_relative_half_width: request.target_relative_half_width,
        now: state.clock.now(),
    };
    let (preview_id, job) = state.previews.start(new).map_err(|error| match error {
        PreviewError::QueueFull(_) => ApiError::new(ErrorCode::TooManyRequests, error.to_string())
            .with_retry_after(RETRY_AFTER_SECS),
        PreviewError::Sample(message) => ApiError::internal(message),
    })?;
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("/data/core/ups/preview/{preview_id}")) {
        headers.insert("x-location", value);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        Json(json!({
            "state": "NEW",
            "previewQueryId": job.query_id,
            "previewQueryStatus": "NEW",
            "previewId": preview_id,
            "previewExecutionId": 0,
        })),
    ))
}

fn find(
    state: &AppState,
    scope: &RequestScope,
    id: &str,
    kind: &str,
) -> ApiResult<Arc<PreviewJob>> {
    state
        .previews
        .get(&scope.tenant, id, state.clock.now())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotFound,
                format!("The {kind} job was not found."),
            )
        })
}

/// Returns the estimate of a preview: progress, estimate, standard error and the anytime-valid bounds.
#[utoipa::path(get, path = "/data/core/ups/estimate/{id}", tag = "previews", params(("id" = String, Path)),
    responses((status = 200, description = "The estimate"), (status = 404, description = "The estimate job was not found.")))]
pub async fn estimates_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<Value>> {
    let job = find(&state, &scope, &id, "estimate")?;
    let progress = job.progress();
    let estimate = progress.estimate;
    let distribution: Vec<Value> = progress
        .namespace_matches
        .iter()
        .map(|(namespace, count)| json!({"namespaceId": namespace, "profilesMatchedSoFar": count}))
        .collect();
    Ok(Json(json!({
        "estimatedSize": estimate.estimated_size,
        "estimatedSizeLowerBound": estimate.lower,
        "estimatedSizeUpperBound": estimate.upper,
        "exact": estimate.exact,
        "numRowsToRead": estimate.sample_size,
        "totalRows": estimate.sample_size,
        "storeSize": estimate.store_size,
        "estimatedNamespaceDistribution": distribution,
        "state": progress.state,
        "profilesReadSoFar": estimate.read,
        "profilesMatchedSoFar": estimate.matched,
        "standardError": estimate.standard_error,
        "confidenceInterval": "95%",
        "sampleTime": job.sample.built_at.to_rfc3339(),
        "error": {"description": progress.error.clone().unwrap_or_default(), "traceback": ""},
        "_links": {"preview": format!("/data/core/ups/preview/{id}?previewQueryId={}", job.query_id)},
    })))
}

/// Paging of previews.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PreviewPage {
    /// Offset of the first match.
    pub offset: Option<usize>,
    /// Page size, 1 to 1000 (default 1000).
    pub limit: Option<usize>,
    /// Accepted for compatibility with `_links.preview`.
    #[serde(rename = "previewQueryId")]
    pub preview_query_id: Option<String>,
}

/// Returns a page of the matching profiles found so far, in the docs' shape.
#[utoipa::path(get, path = "/data/core/ups/preview/{id}", tag = "previews", params(("id" = String, Path), PreviewPage),
    responses((status = 200, description = "A page of matching profiles"), (status = 404, description = "The preview job was not found.")))]
pub async fn previews_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
    AppQuery(page): AppQuery<PreviewPage>,
) -> ApiResult<Json<Value>> {
    let job = find(&state, &scope, &id, "preview")?;
    let limit = page_limit(page.limit, DEFAULT_PAGE, DEFAULT_PAGE)?;
    let offset = page.offset.unwrap_or(0);
    let state_now = job.progress().state;
    let (indexes, total) = job.matches_page(offset, limit);
    let href = |xid: &str| {
        format!("/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId={xid}")
    };
    let results: Vec<Value> = indexes
        .iter()
        .map(|index| {
            let index = *index as usize;
            let xid = job.sample.xid(index);
            let related: serde_json::Map<String, Value> = job
                .sample
                .identity_xids(index)
                .into_iter()
                .filter(|other| other != xid)
                .map(|other| {
                    let link = json!({"_href": href(&other)});
                    (other, link)
                })
                .collect();
            json!({xid: {"_href": href(xid), "endCustomerIds": related}})
        })
        .collect();
    let link = |offset: usize| format!("/data/core/ups/preview/{id}?offset={offset}&limit={limit}");
    let next = if offset + indexes.len() < total {
        link(offset + indexes.len())
    } else {
        String::new()
    };
    let prev = if offset > 0 {
        link(offset.saturating_sub(limit))
    } else {
        String::new()
    };
    Ok(Json(json!({
        "results": results,
        "state": state_now,
        "links": {"_self": link(offset), "next": next, "prev": prev},
        "page": {"offset": offset, "size": results.len()},
    })))
}

/// Cancels a preview and frees it: `{"status": true, "message": "KILLED"}`.
#[utoipa::path(delete, path = "/data/core/ups/preview/{id}", tag = "previews", params(("id" = String, Path)),
    responses((status = 200, description = "Killed"), (status = 404, description = "Not found")))]
pub async fn previews_delete(
    State(state): State<AppState>,
    scope: RequestScope,
    AppPath(id): AppPath<String>,
) -> ApiResult<Json<Value>> {
    if !state.previews.remove(&scope.tenant, &id) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "The preview job was not found.",
        ));
    }
    Ok(Json(json!({"status": true, "message": "KILLED"})))
}

fn describe(sample: &Sample, current_store_size: Option<u64>) -> Value {
    json!({
        "mergePolicyId": sample.merge_policy_id,
        "graphType": crate::sample::service::graph_name(sample.graph),
        "sampleTime": sample.built_at.to_rfc3339(),
        "sampleSize": sample.len(),
        "sampleBytes": sample.heap_bytes(),
        "sampledStoreSize": sample.store_size,
        "storeSize": current_store_size,
        "tier": sample.tier,
    })
}

/// Reports the tenant's samples: when built, their size, the store size then and now, and the tier.
#[utoipa::path(get, path = "/data/core/ups/previewsamplestatus", tag = "previews",
    responses((status = 200, description = "The samples of this sandbox")))]
pub async fn sample_status(
    State(state): State<AppState>,
    scope: RequestScope,
) -> ApiResult<Json<Value>> {
    let (profiles, tenant) = (state.ingestor.profiles().clone(), scope.tenant.clone());
    let store_size = tokio::task::spawn_blocking(move || profiles.profile_count(&tenant))
        .await
        .map_err(ApiError::internal)??;
    let samples: Vec<Value> = state
        .samples
        .of_tenant(&scope.tenant)
        .iter()
        .map(|sample| describe(sample, Some(store_size)))
        .collect();
    Ok(Json(json!({"storeSize": store_size, "samples": samples})))
}

/// Query of the on-demand rebuild.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshQuery {
    /// The merge policy (default: the sandbox's default).
    pub merge_policy_id: Option<String>,
    /// `none` or `pdg`.
    pub graph_type: Option<String>,
}

/// Rebuilds a sample now (the on-demand sample job) and reports it.
#[utoipa::path(post, path = "/data/core/ups/previewsamplestatus", tag = "previews", params(RefreshQuery),
    responses((status = 200, description = "The rebuilt sample")))]
pub async fn sample_refresh(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(query): AppQuery<RefreshQuery>,
) -> ApiResult<Json<Value>> {
    let sample = state
        .samples
        .current(
            &scope.tenant,
            query.merge_policy_id,
            query.graph_type.as_deref(),
            true,
        )
        .await?;
    Ok(Json(describe(&sample, Some(sample.store_size))))
}
