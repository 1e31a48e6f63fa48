//! Profile Access under `/data/core/ups/access/entities` (`ingest-api.md` §7): a merged profile by
//! any of its identities (or its XID), a profile's events, and deleting a profile.

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
use crate::api::extract::{AppJson, AppQuery, check_bulk_size, page_limit};
use crate::profile::{policies, projection, xid};
use crate::store::profiles::{MergedProfile, ProfileStoreError};

/// The profile class.
const PROFILE_SCHEMA: &str = "_xdm.context.profile";
/// The event class.
const EVENT_SCHEMA: &str = "_xdm.context.experienceevent";
/// Default and largest page of events.
const DEFAULT_EVENT_LIMIT: usize = 1000;

/// Routes of Profile Access.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/data/core/ups/access/entities",
        get(entities_get)
            .post(entities_bulk_get)
            .delete(entities_delete),
    )
}

/// Query of `GET /access/entities`, for profiles and for events.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EntitiesQuery {
    /// `_xdm.context.profile` or `_xdm.context.experienceevent`.
    #[serde(rename = "schema.name")]
    pub schema_name: String,
    /// Profiles: the identity value, or an XID when `entityIdNS` is absent.
    #[serde(rename = "entityId")]
    pub entity_id: Option<String>,
    /// Profiles: the identity namespace, e.g. `email`.
    #[serde(rename = "entityIdNS")]
    pub entity_id_ns: Option<String>,
    /// Events: `_xdm.context.profile`.
    #[serde(rename = "relatedSchema.name")]
    pub related_schema_name: Option<String>,
    /// Events: the profile's identity value or XID.
    #[serde(rename = "relatedEntityId")]
    pub related_entity_id: Option<String>,
    /// Events: the profile identity's namespace.
    #[serde(rename = "relatedEntityIdNS")]
    pub related_entity_id_ns: Option<String>,
    /// Comma-separated dotted paths to return; default all.
    pub fields: Option<String>,
    /// The merge policy; default the sandbox's default.
    #[serde(rename = "mergePolicyId")]
    pub merge_policy_id: Option<String>,
    /// Events: inclusive lower bound on `timestamp`, Unix ms.
    #[serde(rename = "startTime")]
    pub start_time: Option<i64>,
    /// Events: exclusive upper bound on `timestamp`, Unix ms.
    #[serde(rename = "endTime")]
    pub end_time: Option<i64>,
    /// Events: page size (default and maximum 1000).
    pub limit: Option<usize>,
    /// Events: `+timestamp` (default) or `-timestamp`.
    #[serde(alias = "orderBy")]
    pub orderby: Option<String>,
    /// Events: the cursor from `_page.next` (an event id).
    pub start: Option<String>,
    /// Accepted for compatibility; segmentd has no computed attributes yet.
    #[serde(rename = "withCA")]
    pub with_ca: Option<bool>,
}

/// Resolves `(id, namespace?)` to a namespace and id: without a namespace the id must be an XID.
fn identity_of(
    id: Option<&str>,
    namespace: Option<&str>,
    id_name: &str,
) -> ApiResult<(String, String)> {
    let id = id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| ApiError::validation(format!("{id_name} is required")))?;
    match namespace.filter(|namespace| !namespace.is_empty()) {
        Some(namespace) => Ok((namespace.to_owned(), id.to_owned())),
        None => xid::decode(id).ok_or_else(|| {
            ApiError::validation(format!(
                "{id_name} `{id}` is not an XID: give its namespace in {id_name}NS"
            ))
        }),
    }
}

impl From<ProfileStoreError> for ApiError {
    fn from(error: ProfileStoreError) -> Self {
        match error {
            ProfileStoreError::GraphTooLarge(count) => ApiError::new(
                ErrorCode::Unprocessable,
                format!(
                    "Too many related identities: the profile's identity graph has {count}, more than 50"
                ),
            ),
            other => ApiError::internal(other),
        }
    }
}

/// Looks up the merged profile of an identity under the requested (or default) merge policy.
async fn lookup(
    state: &AppState,
    scope: &RequestScope,
    namespace: String,
    id: String,
    merge_policy_id: Option<String>,
) -> ApiResult<(String, Option<MergedProfile>)> {
    let tenant = scope.tenant.clone();
    let (policy_id, policy) = state
        .metadata
        .call(move |connection| {
            Ok(policies::resolve_blocking(
                connection,
                &tenant,
                merge_policy_id.as_deref(),
            ))
        })
        .await??;
    let (profiles, tenant) = (state.ingestor.profiles().clone(), scope.tenant.clone());
    let profile =
        tokio::task::spawn_blocking(move || profiles.lookup(&tenant, &namespace, &id, &policy))
            .await
            .map_err(ApiError::internal)??;
    Ok((policy_id, profile))
}

/// Returns the XID of a merged profile: its primary identity's.
fn profile_xid(profile: &MergedProfile) -> String {
    profile.xid().unwrap_or_default()
}

/// Returns a merged profile (`schema.name=_xdm.context.profile`) or a profile's events
/// (`schema.name=_xdm.context.experienceevent`).
#[utoipa::path(get, path = "/data/core/ups/access/entities", tag = "profile access", params(EntitiesQuery),
    responses((status = 200, description = "The profile keyed by XID, or a page of events"), (status = 404, description = "Unknown identity"),
        (status = 422, description = "More than 50 related identities")))]
pub async fn entities_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(query): AppQuery<EntitiesQuery>,
) -> ApiResult<Json<Value>> {
    match query.schema_name.as_str() {
        PROFILE_SCHEMA => profile_get(&state, &scope, query).await,
        EVENT_SCHEMA => events_get(&state, &scope, query).await,
        other => Err(ApiError::validation(format!(
            "schema.name `{other}` is not supported: use {PROFILE_SCHEMA} or {EVENT_SCHEMA}"
        ))),
    }
}

async fn profile_get(
    state: &AppState,
    scope: &RequestScope,
    query: EntitiesQuery,
) -> ApiResult<Json<Value>> {
    let (namespace, id) = identity_of(
        query.entity_id.as_deref(),
        query.entity_id_ns.as_deref(),
        "entityId",
    )?;
    let fields = query
        .fields
        .as_deref()
        .map(projection::parse_fields)
        .unwrap_or_default();
    let (entity_id, entry) = profile_entry(
        state,
        scope,
        namespace.clone(),
        id.clone(),
        query.merge_policy_id,
        &fields,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("profile", &format!("{namespace}:{id}")))?;
    Ok(Json(json!({ entity_id: entry })))
}

/// Looks up one identity and renders its merged profile as Profile Access does; None when unknown.
async fn profile_entry(
    state: &AppState,
    scope: &RequestScope,
    namespace: String,
    id: String,
    merge_policy_id: Option<String>,
    fields: &[String],
) -> ApiResult<Option<(String, Value)>> {
    let (policy_id, profile) = lookup(state, scope, namespace, id, merge_policy_id).await?;
    let Some(profile) = profile else {
        return Ok(None);
    };
    let entity_id = profile_xid(&profile);
    let identity_graph: Vec<String> = profile
        .identities
        .iter()
        .map(|identity| xid::encode(&identity.namespace, &identity.id))
        .collect();
    let identities: Vec<Value> = profile
        .identities
        .iter()
        .map(|identity| {
            let mut entry = json!({"id": identity.id, "namespace": {"code": identity.namespace}});
            if identity.primary {
                entry["primary"] = json!(true);
            }
            entry
        })
        .collect();
    let mut entity = projection::project(&profile.attributes, fields);
    if fields.is_empty() || fields.iter().any(|field| field == "identities") {
        entity["identities"] = Value::Array(identities);
    }
    if fields.is_empty()
        || fields
            .iter()
            .any(|field| field.starts_with("segmentMembership"))
    {
        let (memberships, tenant, profile_xid) = (
            state.segment_jobs.memberships().clone(),
            scope.tenant.clone(),
            entity_id.clone(),
        );
        let memberships =
            tokio::task::spawn_blocking(move || memberships.get(&tenant, &profile_xid))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
        if !memberships.is_empty() {
            entity["segmentMembership"] = json!({crate::jobs::segment::UPS_NAMESPACE: memberships});
        }
    }
    let entry = json!({
        "entityId": entity_id,
        "mergePolicy": {"id": policy_id},
        "identityGraph": identity_graph,
        "entity": entity,
    });
    Ok(Some((entity_id, entry)))
}

/// One identity of a bulk lookup: `{entityId, entityIdNS: {code}}` or `{entityId: XID}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkIdentity {
    /// The identity value or XID.
    pub entity_id: String,
    /// `{code}` of the namespace; absent for an XID.
    #[serde(rename = "entityIdNS", default)]
    #[schema(value_type = Option<Object>)]
    pub entity_id_ns: Option<Value>,
}

/// The body of `POST /access/entities` (profiles; `ingest-api.md` §7.2).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkLookup {
    /// `{name: "_xdm.context.profile"}`.
    #[serde(rename = "schema")]
    #[schema(value_type = Object)]
    pub schema: Value,
    /// The identities, 1 to 100.
    pub identities: Vec<BulkIdentity>,
    /// Dotted paths to return.
    #[serde(default)]
    pub fields: Vec<String>,
    /// The merge policy.
    #[serde(default)]
    pub merge_policy_id: Option<String>,
    /// Accepted for compatibility; segmentd has no computed attributes yet.
    #[serde(rename = "withCA", default)]
    pub with_ca: Option<bool>,
}

/// Looks up several profiles; an unknown identity comes back as an empty entity, as Adobe does.
#[utoipa::path(post, path = "/data/core/ups/access/entities", tag = "profile access", request_body = BulkLookup,
    responses((status = 200, description = "Profiles keyed by XID")))]
pub async fn entities_bulk_get(
    State(state): State<AppState>,
    scope: RequestScope,
    AppJson(request): AppJson<BulkLookup>,
) -> ApiResult<Json<Value>> {
    if request.schema.get("name").and_then(Value::as_str) != Some(PROFILE_SCHEMA) {
        return Err(ApiError::validation(format!(
            "schema.name must be {PROFILE_SCHEMA}; events are read with GET /access/entities"
        )));
    }
    check_bulk_size(request.identities.len())?;
    let mut results = serde_json::Map::new();
    for identity in request.identities {
        let namespace = identity
            .entity_id_ns
            .as_ref()
            .and_then(|ns| ns.get("code"))
            .and_then(Value::as_str);
        let (namespace, id) = identity_of(Some(&identity.entity_id), namespace, "entityId")?;
        let requested = xid::encode(&namespace, &id);
        match profile_entry(
            &state,
            &scope,
            namespace,
            id,
            request.merge_policy_id.clone(),
            &request.fields,
        )
        .await?
        {
            Some((entity_id, entry)) => {
                results.insert(entity_id, entry);
            }
            None => {
                results.insert(
                    requested.clone(),
                    json!({"entityId": requested, "sources": [""], "entity": {}, "lastModifiedAt": "1970-01-01T00:00:00Z"}),
                );
            }
        }
    }
    Ok(Json(Value::Object(results)))
}

async fn events_get(
    state: &AppState,
    scope: &RequestScope,
    query: EntitiesQuery,
) -> ApiResult<Json<Value>> {
    if query.related_schema_name.as_deref() != Some(PROFILE_SCHEMA) {
        return Err(ApiError::validation(format!(
            "relatedSchema.name must be {PROFILE_SCHEMA} for events"
        )));
    }
    let limit = page_limit(query.limit, DEFAULT_EVENT_LIMIT, DEFAULT_EVENT_LIMIT)?;
    let descending = match query.orderby.as_deref() {
        None | Some("timestamp") | Some("+timestamp") => false,
        Some("-timestamp") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("orderby `{other}`: use +timestamp or -timestamp"),
            ));
        }
    };
    let (namespace, id) = identity_of(
        query.related_entity_id.as_deref(),
        query.related_entity_id_ns.as_deref(),
        "relatedEntityId",
    )?;
    let (_, profile) = lookup(
        state,
        scope,
        namespace.clone(),
        id.clone(),
        query.merge_policy_id.clone(),
    )
    .await?;
    let profile =
        profile.ok_or_else(|| ApiError::not_found("profile", &format!("{namespace}:{id}")))?;
    let related = profile_xid(&profile);
    let mut events: Vec<_> = profile
        .events
        .iter()
        .filter(|event| {
            query
                .start_time
                .is_none_or(|start| event.timestamp_ms >= start)
        })
        .filter(|event| query.end_time.is_none_or(|end| event.timestamp_ms < end))
        .collect();
    if descending {
        events.reverse();
    }
    let first = match &query.start {
        None => 0,
        Some(cursor) => events
            .iter()
            .position(|event| &event.id == cursor)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidQuery,
                    format!("start `{cursor}` is not a cursor of this profile's events"),
                )
            })?,
    };
    let fields = query
        .fields
        .as_deref()
        .map(projection::parse_fields)
        .unwrap_or_default();
    let page = &events[first..events.len().min(first + limit)];
    let mut children = Vec::with_capacity(page.len());
    for event in page {
        let body = event.to_value().map_err(ApiError::internal)?;
        children.push(json!({
            "relatedEntityId": related,
            "entityId": event.id,
            "timestamp": event.timestamp_ms,
            "entity": projection::project(&body, &fields),
        }));
    }
    let next = events
        .get(first + limit)
        .map(|event| event.id.clone())
        .unwrap_or_default();
    let href = if next.is_empty() {
        String::new()
    } else {
        format!(
            "/entities?start={next}&orderby={}&limit={limit}&schema.name={EVENT_SCHEMA}&relatedSchema.name={PROFILE_SCHEMA}&relatedEntityId={related}",
            if descending {
                "-timestamp"
            } else {
                "%2Btimestamp"
            }
        )
    };
    Ok(Json(json!({
        "_page": {"orderby": "timestamp", "start": page.first().map(|event| event.id.clone()).unwrap_or_default(), "count": page.len(), "next": next},
        "children": children,
        "_links": {"next": {"href": href}},
    })))
}

/// Query of `DELETE /access/entities`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Must be `_xdm.context.profile`.
    #[serde(rename = "schema.name")]
    pub schema_name: String,
    /// The identity value or XID.
    #[serde(rename = "entityId")]
    pub entity_id: String,
    /// The identity namespace.
    #[serde(rename = "entityIdNS")]
    pub entity_id_ns: Option<String>,
    /// Accepted for compatibility; a delete removes the person's data whatever the policy.
    #[serde(rename = "mergePolicyId")]
    pub merge_policy_id: Option<String>,
}

/// Deletes the whole profile an identity belongs to (fragments, events, identities), durably: 202.
#[utoipa::path(delete, path = "/data/core/ups/access/entities", tag = "profile access", params(DeleteQuery),
    responses((status = 202, description = "Deleted"), (status = 404, description = "Unknown identity")))]
pub async fn entities_delete(
    State(state): State<AppState>,
    scope: RequestScope,
    AppQuery(query): AppQuery<DeleteQuery>,
) -> ApiResult<StatusCode> {
    if query.schema_name != PROFILE_SCHEMA {
        return Err(ApiError::validation(format!(
            "only {PROFILE_SCHEMA} profiles can be deleted"
        )));
    }
    let (namespace, id) = identity_of(
        Some(&query.entity_id),
        query.entity_id_ns.as_deref(),
        "entityId",
    )?;
    let (profiles, tenant) = (state.ingestor.profiles().clone(), scope.tenant.clone());
    let (lookup_namespace, lookup_id) = (namespace.clone(), id.clone());
    let existed = tokio::task::spawn_blocking(move || {
        profiles.delete_person(&tenant, &lookup_namespace, &lookup_id)
    })
    .await
    .map_err(ApiError::internal)??;
    if !existed {
        return Err(ApiError::not_found("profile", &format!("{namespace}:{id}")));
    }
    Ok(StatusCode::ACCEPTED)
}
