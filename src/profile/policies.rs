//! Merge policies as a resource (`ingest-api.md` §8, `api.md` §11): CRUD per organization and sandbox,
//! one default per schema class, at most one policy active on edge, and their translation into the
//! [`MergePolicy`] the merge step takes.
//!
//! Limits (documented choices): at most [`MAX_POLICIES`] policies per organization and sandbox (Adobe's
//! guardrail says per organization; segmentd scopes every resource by sandbox), and exactly one
//! policy per sandbox may be active on edge: marking a second one is refused with 409 naming the first.
//! When no policy exists the built-in default applies ([`BUILT_IN_DEFAULT_ID`]: timestamp ordered over
//! the private graph), so every tenant can segment before configuring anything.

use rusqlite::params;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::metadata::StoreError;
use crate::store::profiles::{AttributeMerge, IdentityGraph, MergePolicy};
use crate::tenant::Tenant;

/// Policies one organization and sandbox may hold.
pub const MAX_POLICIES: usize = 5;
/// The only schema class profiles are segmented on.
pub const PROFILE_CLASS: &str = "_xdm.context.profile";
/// Id of the built-in default policy used while a tenant has no default of its own.
pub const BUILT_IN_DEFAULT_ID: &str = "ups-default";

/// `schema: {name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaName {
    /// The XDM class, e.g. `_xdm.context.profile`.
    pub name: String,
}

/// `identityGraph: {type}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityGraphSpec {
    /// `none` or `pdg`.
    #[serde(rename = "type")]
    pub graph_type: GraphType,
}

/// Identity graph types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum GraphType {
    /// No stitching: only fragments of the identical identity merge.
    None,
    /// The private identity graph.
    Pdg,
}

/// `attributeMerge: {type, order}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributeMergeSpec {
    /// `timestampOrdered` or `dataSetPrecedence`.
    #[serde(rename = "type")]
    pub merge_type: MergeType,
    /// Dataset ids, highest priority first; required with `dataSetPrecedence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<Vec<String>>,
}

/// Attribute merge types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum MergeType {
    /// The newest fragment wins.
    TimestampOrdered,
    /// The first listed dataset wins.
    DataSetPrecedence,
}

/// Accepts `true`/`false` and the strings `"true"`/`"false"` that Adobe's samples also print.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(deserializer)? {
        Flag::Bool(value) => Ok(value),
        Flag::Text(text) => match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "expected a boolean, found `{other}`"
            ))),
        },
    }
}

/// The client-writable part of a merge policy (create and full update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MergePolicySpec {
    /// Display name.
    pub name: String,
    /// The schema class.
    pub schema: SchemaName,
    /// Which fragments merge.
    pub identity_graph: IdentityGraphSpec,
    /// How attributes resolve.
    pub attribute_merge: AttributeMergeSpec,
    /// Whether edge segmentation uses this policy.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub is_active_on_edge: bool,
    /// Whether this is the default for its schema class.
    #[serde(default, deserialize_with = "lenient_bool")]
    pub default: bool,
}

/// Sandbox description echoed on resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    /// Sandbox name.
    pub sandbox_name: String,
    /// `production` for `prod`, else `development`.
    #[serde(rename = "type")]
    pub sandbox_type: String,
    /// Whether this is the default sandbox (`prod`).
    pub default: bool,
}

impl SandboxInfo {
    /// Describes a tenant's sandbox.
    pub fn of(tenant: &Tenant) -> Self {
        let production = tenant.sandbox == "prod";
        Self {
            sandbox_name: tenant.sandbox.clone(),
            sandbox_type: if production {
                "production"
            } else {
                "development"
            }
            .into(),
            default: production,
        }
    }
}

/// A stored merge policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MergePolicyResource {
    /// The policy id.
    pub id: String,
    /// The owning organization.
    pub ims_org_id: String,
    /// The owning sandbox.
    pub sandbox: SandboxInfo,
    /// The client-writable fields.
    #[serde(flatten)]
    pub spec: MergePolicySpec,
    /// Incremented on every update.
    pub version: u64,
    /// Last update, Unix seconds.
    pub update_epoch: i64,
}

impl MergePolicyResource {
    /// Returns the merge step's view of this policy.
    pub fn merge_policy(&self) -> MergePolicy {
        MergePolicy {
            attribute_merge: match self.spec.attribute_merge.merge_type {
                MergeType::TimestampOrdered => AttributeMerge::TimestampOrdered,
                MergeType::DataSetPrecedence => AttributeMerge::DataSetPrecedence(
                    self.spec.attribute_merge.order.clone().unwrap_or_default(),
                ),
            },
            identity_graph: match self.spec.identity_graph.graph_type {
                GraphType::None => IdentityGraph::None,
                GraphType::Pdg => IdentityGraph::Pdg,
            },
        }
    }
}

/// Why a policy change was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The request is invalid (message says why).
    #[error("{0}")]
    Invalid(String),
    /// The change conflicts with another policy or a limit.
    #[error("{0}")]
    Conflict(String),
    /// No such policy in this tenant.
    #[error("merge policy {0} not found")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for PolicyError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
}

impl From<serde_json::Error> for PolicyError {
    fn from(error: serde_json::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Checks a spec on its own and against the tenant's datasets.
fn validate_spec(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    spec: &MergePolicySpec,
) -> Result<(), PolicyError> {
    if spec.name.trim().is_empty() {
        return Err(PolicyError::Invalid("name must not be empty".into()));
    }
    if spec.schema.name.trim().is_empty() {
        return Err(PolicyError::Invalid("schema.name must not be empty".into()));
    }
    match (spec.attribute_merge.merge_type, &spec.attribute_merge.order) {
        (MergeType::DataSetPrecedence, None) => {
            return Err(PolicyError::Invalid(
                "attributeMerge.order is required with dataSetPrecedence".into(),
            ));
        }
        (MergeType::DataSetPrecedence, Some(order)) if order.is_empty() => {
            return Err(PolicyError::Invalid(
                "attributeMerge.order must list at least one dataset".into(),
            ));
        }
        (MergeType::TimestampOrdered, Some(_)) => {
            return Err(PolicyError::Invalid(
                "attributeMerge.order only applies to dataSetPrecedence".into(),
            ));
        }
        _ => {}
    }
    if let Some(order) = &spec.attribute_merge.order {
        let mut unknown = Vec::new();
        for dataset_id in order {
            if crate::catalog::datasets::get_dataset_blocking(connection, tenant, dataset_id)?
                .is_none()
            {
                unknown.push(dataset_id.as_str());
            }
        }
        if !unknown.is_empty() {
            return Err(PolicyError::Invalid(format!(
                "attributeMerge.order names datasets that do not exist in this sandbox: {}",
                unknown.join(", ")
            )));
        }
    }
    Ok(())
}

/// Returns every policy of the tenant, ordered by name then id.
pub fn list_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
) -> Result<Vec<MergePolicyResource>, PolicyError> {
    Ok(crate::store::metadata::list_documents(
        connection,
        "merge_policies",
        tenant,
        "name, id",
    )?)
}

/// Returns one policy.
pub fn get_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<MergePolicyResource, PolicyError> {
    crate::store::metadata::get_document(connection, "merge_policies", tenant, id)?
        .ok_or_else(|| PolicyError::NotFound(id.to_owned()))
}

/// Writes `policy`, enforcing the default and edge rules, in the caller's transaction.
fn save(
    transaction: &rusqlite::Transaction<'_>,
    tenant: &Tenant,
    policy: &MergePolicyResource,
) -> Result<(), PolicyError> {
    for other in list_blocking(transaction, tenant)? {
        if other.id == policy.id {
            continue;
        }
        if policy.spec.is_active_on_edge && other.spec.is_active_on_edge {
            return Err(PolicyError::Conflict(format!(
                "merge policy {} is already active on edge; only one policy per sandbox can be",
                other.id
            )));
        }
        // Setting a new default clears the old one of the same class (§8.4).
        if policy.spec.default
            && other.spec.default
            && other.spec.schema.name == policy.spec.schema.name
        {
            let mut cleared = other.clone();
            cleared.spec.default = false;
            cleared.version += 1;
            cleared.update_epoch = policy.update_epoch;
            write_row(transaction, tenant, &cleared)?;
        }
    }
    write_row(transaction, tenant, policy)
}

fn write_row(
    transaction: &rusqlite::Transaction<'_>,
    tenant: &Tenant,
    policy: &MergePolicyResource,
) -> Result<(), PolicyError> {
    transaction.execute(
        "INSERT INTO merge_policies (org_id, sandbox, id, name, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (org_id, sandbox, id) DO UPDATE SET name = excluded.name, body = excluded.body",
        params![tenant.org_id, tenant.sandbox, policy.id, policy.spec.name, serde_json::to_string(policy)?],
    )?;
    Ok(())
}

/// Creates a policy.
pub fn create_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    spec: MergePolicySpec,
    now_secs: i64,
) -> Result<MergePolicyResource, PolicyError> {
    let transaction = connection.transaction()?;
    validate_spec(&transaction, tenant, &spec)?;
    if list_blocking(&transaction, tenant)?.len() >= MAX_POLICIES {
        return Err(PolicyError::Conflict(format!(
            "this sandbox already has {MAX_POLICIES} merge policies, the most allowed; delete one first"
        )));
    }
    let policy = MergePolicyResource {
        id: uuid::Uuid::new_v4().to_string(),
        ims_org_id: tenant.org_id.clone(),
        sandbox: SandboxInfo::of(tenant),
        spec,
        version: 1,
        update_epoch: now_secs,
    };
    save(&transaction, tenant, &policy)?;
    transaction.commit()?;
    Ok(policy)
}

/// Replaces a policy's writable fields (PUT, and PATCH after the patch is applied).
pub fn update_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
    change: impl FnOnce(&MergePolicySpec) -> Result<MergePolicySpec, PolicyError>,
    now_secs: i64,
) -> Result<MergePolicyResource, PolicyError> {
    let transaction = connection.transaction()?;
    let mut policy = get_blocking(&transaction, tenant, id)?;
    let spec = change(&policy.spec)?;
    validate_spec(&transaction, tenant, &spec)?;
    policy.spec = spec;
    policy.version += 1;
    policy.update_epoch = now_secs;
    save(&transaction, tenant, &policy)?;
    transaction.commit()?;
    Ok(policy)
}

/// Deletes a policy; one active on edge must be edited first (§8.6).
pub fn delete_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<(), PolicyError> {
    let transaction = connection.transaction()?;
    let policy = get_blocking(&transaction, tenant, id)?;
    if policy.spec.is_active_on_edge {
        return Err(PolicyError::Conflict(format!(
            "merge policy {id} is active on edge; set isActiveOnEdge to false before deleting it"
        )));
    }
    let users = crate::segment::definitions::using_policy_blocking(&transaction, tenant, id)?;
    if !users.is_empty() {
        return Err(PolicyError::Conflict(format!(
            "merge policy {id} is used by segment definitions {}; change their mergePolicyId first",
            users.join(", ")
        )));
    }
    transaction.execute(
        "DELETE FROM merge_policies WHERE org_id = ?1 AND sandbox = ?2 AND id = ?3",
        params![tenant.org_id, tenant.sandbox, id],
    )?;
    transaction.commit()?;
    Ok(())
}

/// Resolves the policy a request names, or the tenant's default for profiles, or the built-in
/// default; returns its id and the merge step's view of it.
pub fn resolve_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    requested: Option<&str>,
) -> Result<(String, MergePolicy), PolicyError> {
    if let Some(id) = requested.filter(|id| *id != BUILT_IN_DEFAULT_ID) {
        let policy = get_blocking(connection, tenant, id)?;
        return Ok((policy.id.clone(), policy.merge_policy()));
    }
    if requested.is_none() {
        let default = list_blocking(connection, tenant)?
            .into_iter()
            .find(|policy| policy.spec.default && policy.spec.schema.name == PROFILE_CLASS);
        if let Some(policy) = default {
            return Ok((policy.id.clone(), policy.merge_policy()));
        }
    }
    Ok((BUILT_IN_DEFAULT_ID.to_owned(), MergePolicy::default()))
}
