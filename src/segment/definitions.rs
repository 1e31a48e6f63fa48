//! Segment definitions (`api.md` §2): validation, storage and the dependency rules between them.
//!
//! A definition's expression is parsed and type-checked on every write (400 with positions on error).
//! `inSegment` references must name existing definitions of the same sandbox, and no write may close a
//! cycle; a definition that others reference cannot be deleted. The name is unique per sandbox (422).
//! The requested `evaluationInfo` is kept only where the expression is eligible (`pql.md` §6): an
//! ineligible streaming or edge request silently becomes batch, as Adobe does.

use std::collections::{BTreeSet, HashMap};

use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::pql::{self, PqlErrors, PqlFormat};
use crate::profile::policies::{self, PolicyError, SandboxInfo};
use crate::store::metadata::StoreError;
use crate::tenant::Tenant;

/// The profile class, the only one segmented.
pub const PROFILE_CLASS: &str = "_xdm.context.profile";
/// The profile class's schema id, accepted in `schema.id`.
const PROFILE_SCHEMA_ID: &str = "https://ns.adobe.com/xdm/context/profile";

/// `expression: {type, format, value}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Expression {
    /// `PQL`.
    #[serde(rename = "type")]
    pub expression_type: String,
    /// `pql/text` or `pql/json`.
    pub format: String,
    /// The PQL text, or the `pql/json` document serialized as a string.
    pub value: String,
}

/// `schema: {name}` or `schema: {id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SchemaReference {
    /// The XDM class name, e.g. `_xdm.context.profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The schema id, e.g. `https://ns.adobe.com/xdm/context/profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `{enabled}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enabled {
    /// Whether this evaluation method is on.
    #[serde(default)]
    pub enabled: bool,
}

/// `evaluationInfo`: batch, continuous (streaming) and synchronous (edge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationInfo {
    /// Batch evaluation.
    #[serde(default)]
    pub batch: Enabled,
    /// Streaming evaluation.
    #[serde(default)]
    pub continuous: Enabled,
    /// Edge evaluation.
    #[serde(default)]
    pub synchronous: Enabled,
}

/// The client-writable part of a definition (create and whole-object update). Output-only fields a
/// client echoes back (`id`, timestamps...) are accepted and ignored, as Adobe's samples send them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefinitionRequest {
    /// Unique name in the sandbox.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The PQL expression.
    pub expression: Expression,
    /// The schema class.
    pub schema: SchemaReference,
    /// Requested evaluation methods; batch when absent.
    #[serde(default)]
    pub evaluation_info: Option<EvaluationInfo>,
    /// The merge policy; the sandbox default when absent.
    #[serde(default)]
    pub merge_policy_id: Option<String>,
    /// E.g. `ups`.
    #[serde(default)]
    pub profile_instance_id: Option<String>,
    /// Undocumented; kept as given.
    #[serde(default)]
    pub payload_schema: Option<String>,
    /// Older docs' time to live; kept as given.
    #[serde(default)]
    pub ttl_in_days: Option<u32>,
    /// Ignored (output only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub id: Option<Value>,
    /// Ignored (output only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub creation_time: Option<Value>,
    /// Ignored (output only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub update_time: Option<Value>,
    /// Ignored (output only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub update_epoch: Option<Value>,
    /// Ignored (output only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub ims_org_id: Option<Value>,
    /// Ignored (output only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub sandbox: Option<Value>,
    /// Ignored (output only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub version: Option<Value>,
    /// Ignored (output only).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data_governance_policy: Option<Value>,
}

/// `dataGovernancePolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataGovernancePolicy {
    /// Opted-out profiles are excluded (always true).
    pub exclude_opt_out: bool,
}

/// A stored segment definition (`api.md` §2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentDefinition {
    /// The id (UUID).
    pub id: String,
    /// Unique name in the sandbox.
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The expression as given.
    pub expression: Expression,
    /// `{name: "_xdm.context.profile"}`.
    pub schema: SchemaReference,
    /// Effective evaluation methods (ineligible requests fall back to batch).
    pub evaluation_info: EvaluationInfo,
    /// The merge policy the definition is evaluated with.
    pub merge_policy_id: String,
    /// E.g. `ups`.
    pub profile_instance_id: String,
    /// Kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_schema: Option<String>,
    /// Kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_in_days: Option<u32>,
    /// Always `{excludeOptOut: true}`.
    pub data_governance_policy: DataGovernancePolicy,
    /// Owning organization.
    pub ims_org_id: String,
    /// Owning sandbox.
    pub sandbox: SandboxInfo,
    /// Creation, Unix ms.
    pub creation_time: i64,
    /// Last update, Unix ms.
    pub update_time: i64,
    /// Last update, Unix s.
    pub update_epoch: i64,
    /// Incremented on every update, starting at 1.
    pub version: u64,
    /// Ids this definition's `inSegment` calls reference (derived from the expression).
    #[serde(default)]
    pub referenced_segments: Vec<String>,
}

/// Why a definition write was refused.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The expression does not parse or type-check.
    #[error("the segment definition's expression is invalid")]
    Expression(PqlErrors),
    /// Another field is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Another definition of the sandbox has this name.
    #[error(
        "a segment definition named `{0}` already exists in this sandbox; use PATCH to update it"
    )]
    DuplicateName(String),
    /// The definition is referenced and cannot be deleted.
    #[error("{0}")]
    InUse(String),
    /// No such definition in this tenant.
    #[error("segment definition {0} not found")]
    NotFound(String),
    /// The merge policy could not be resolved.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for DefinitionError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
}

impl From<serde_json::Error> for DefinitionError {
    fn from(error: serde_json::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Parses a definition's expression in its declared format.
pub fn parse_expression(expression: &Expression) -> Result<pql::Expr, DefinitionError> {
    if !expression.expression_type.eq_ignore_ascii_case("PQL") {
        return Err(DefinitionError::Invalid(format!(
            "expression.type `{}` is not supported: only PQL is",
            expression.expression_type
        )));
    }
    let format: PqlFormat = expression
        .format
        .parse()
        .map_err(|error: pql::UnknownFormat| DefinitionError::Invalid(error.to_string()))?;
    pql::parse(&expression.value, format).map_err(DefinitionError::Expression)
}

/// Checks that the schema names the profile class (by name or id).
fn check_schema(schema: &SchemaReference) -> Result<SchemaReference, DefinitionError> {
    let is_profile = schema.name.as_deref() == Some(PROFILE_CLASS)
        || schema.id.as_deref() == Some(PROFILE_SCHEMA_ID);
    let names_something = schema.name.is_some() || schema.id.is_some();
    if !names_something {
        return Err(DefinitionError::Invalid(
            "schema.name (or schema.id) is required".into(),
        ));
    }
    if !is_profile {
        return Err(DefinitionError::Invalid(format!(
            "schema `{}` cannot be segmented: use {PROFILE_CLASS}",
            schema
                .name
                .clone()
                .or_else(|| schema.id.clone())
                .unwrap_or_default()
        )));
    }
    Ok(SchemaReference {
        name: Some(PROFILE_CLASS.into()),
        id: None,
    })
}

/// Keeps the requested streaming/edge flags only where the expression is eligible.
fn effective_evaluation(requested: Option<EvaluationInfo>, expr: &pql::Expr) -> EvaluationInfo {
    let eligibility = pql::eligibility(expr);
    let requested = requested.unwrap_or_default();
    let continuous = requested.continuous.enabled && eligibility.streaming;
    let synchronous = requested.synchronous.enabled && eligibility.edge;
    EvaluationInfo {
        // Batch whenever asked, and always when nothing else applies (§2.1 rules).
        batch: Enabled {
            enabled: requested.batch.enabled || !(continuous || synchronous),
        },
        continuous: Enabled {
            enabled: continuous,
        },
        synchronous: Enabled {
            enabled: synchronous,
        },
    }
}

/// Returns one definition.
pub fn get_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<SegmentDefinition, DefinitionError> {
    crate::store::metadata::get_document(connection, "segment_definitions", tenant, id)?
        .ok_or_else(|| DefinitionError::NotFound(id.to_owned()))
}

/// Returns every definition of the tenant, oldest first.
pub fn list_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
) -> Result<Vec<SegmentDefinition>, DefinitionError> {
    Ok(crate::store::metadata::list_documents(
        connection,
        "segment_definitions",
        tenant,
        "created_ms, id",
    )?)
}

/// Checks references exist and that `id` referencing `references` closes no cycle.
fn check_references(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
    references: &[String],
) -> Result<(), DefinitionError> {
    let graph: HashMap<String, Vec<String>> = list_blocking(connection, tenant)?
        .into_iter()
        .map(|definition| (definition.id, definition.referenced_segments))
        .collect();
    let missing: Vec<&str> = references
        .iter()
        .filter(|reference| !graph.contains_key(*reference))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(DefinitionError::Invalid(format!(
            "inSegment references segment definitions that do not exist in this sandbox: {}",
            missing.join(", ")
        )));
    }
    // Depth-first from each reference: reaching `id` again means the write would close a cycle.
    let mut pending: Vec<&str> = references.iter().map(String::as_str).collect();
    let mut seen = BTreeSet::new();
    while let Some(current) = pending.pop() {
        if current == id {
            return Err(DefinitionError::Invalid(format!(
                "inSegment references would form a cycle through segment definition {id}"
            )));
        }
        if seen.insert(current) {
            pending.extend(graph.get(current).into_iter().flatten().map(String::as_str));
        }
    }
    Ok(())
}

/// Validates a request into a definition (without storing it).
fn build(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: String,
    request: DefinitionRequest,
) -> Result<SegmentDefinition, DefinitionError> {
    if request.name.trim().is_empty() {
        return Err(DefinitionError::Invalid("name must not be empty".into()));
    }
    let schema = check_schema(&request.schema)?;
    let expr = parse_expression(&request.expression)?;
    let compiled = pql::compile(&expr).map_err(DefinitionError::Expression)?;
    let referenced_segments: Vec<String> = compiled.referenced_segments().to_vec();
    check_references(connection, tenant, &id, &referenced_segments)?;
    let (merge_policy_id, _) =
        match policies::resolve_blocking(connection, tenant, request.merge_policy_id.as_deref()) {
            Err(PolicyError::NotFound(policy)) => {
                return Err(DefinitionError::Invalid(format!(
                    "mergePolicyId {policy} does not exist in this sandbox"
                )));
            }
            other => other?,
        };
    Ok(SegmentDefinition {
        id,
        name: request.name,
        description: request.description,
        evaluation_info: effective_evaluation(request.evaluation_info, &expr),
        expression: request.expression,
        schema,
        merge_policy_id,
        profile_instance_id: request.profile_instance_id.unwrap_or_else(|| "ups".into()),
        payload_schema: request.payload_schema,
        ttl_in_days: request.ttl_in_days,
        data_governance_policy: DataGovernancePolicy {
            exclude_opt_out: true,
        },
        ims_org_id: tenant.org_id.clone(),
        sandbox: SandboxInfo::of(tenant),
        creation_time: 0,
        update_time: 0,
        update_epoch: 0,
        version: 1,
        referenced_segments,
    })
}

fn write(
    transaction: &rusqlite::Transaction<'_>,
    tenant: &Tenant,
    definition: &SegmentDefinition,
) -> Result<(), DefinitionError> {
    let result = transaction.execute(
        "INSERT INTO segment_definitions (org_id, sandbox, id, name, created_ms, merge_policy_id, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (org_id, sandbox, id) DO UPDATE
         SET name = excluded.name, merge_policy_id = excluded.merge_policy_id, body = excluded.body",
        params![
            tenant.org_id,
            tenant.sandbox,
            definition.id,
            definition.name,
            definition.creation_time,
            definition.merge_policy_id,
            serde_json::to_string(definition)?
        ],
    );
    match result {
        Err(rusqlite::Error::SqliteFailure(failure, _))
            if failure.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(DefinitionError::DuplicateName(definition.name.clone()))
        }
        other => other.map(drop).map_err(Into::into),
    }
}

/// Creates a definition.
pub fn create_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    request: DefinitionRequest,
    now_ms: i64,
) -> Result<SegmentDefinition, DefinitionError> {
    let transaction = connection.transaction()?;
    let mut definition = build(
        &transaction,
        tenant,
        uuid::Uuid::new_v4().to_string(),
        request,
    )?;
    definition.creation_time = now_ms;
    definition.update_time = now_ms;
    definition.update_epoch = now_ms / 1000;
    write(&transaction, tenant, &definition)?;
    transaction.commit()?;
    Ok(definition)
}

/// Overwrites a definition with a whole new body (`api.md` §2.6), bumping its version.
pub fn replace_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
    request: DefinitionRequest,
    now_ms: i64,
) -> Result<SegmentDefinition, DefinitionError> {
    let transaction = connection.transaction()?;
    let existing = get_blocking(&transaction, tenant, id)?;
    let mut definition = build(&transaction, tenant, id.to_owned(), request)?;
    definition.creation_time = existing.creation_time;
    definition.update_time = now_ms;
    definition.update_epoch = now_ms / 1000;
    definition.version = existing.version + 1;
    write(&transaction, tenant, &definition)?;
    transaction.commit()?;
    Ok(definition)
}

/// Deletes a definition unless another definition references it.
pub fn delete_blocking(
    connection: &mut rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<(), DefinitionError> {
    let transaction = connection.transaction()?;
    get_blocking(&transaction, tenant, id)?;
    let dependents: Vec<String> = list_blocking(&transaction, tenant)?
        .into_iter()
        .filter(|definition| {
            definition
                .referenced_segments
                .iter()
                .any(|reference| reference == id)
        })
        .map(|definition| definition.id)
        .collect();
    if !dependents.is_empty() {
        return Err(DefinitionError::InUse(format!(
            "segment definition {id} cannot be deleted: inSegment in {} depends on it",
            dependents.join(", ")
        )));
    }
    let schedules = crate::schedule::schedules::naming_segment_blocking(&transaction, tenant, id)?;
    if !schedules.is_empty() {
        return Err(DefinitionError::InUse(format!(
            "segment definition {id} cannot be deleted: schedule {} evaluates it",
            schedules.join(", ")
        )));
    }
    transaction.execute(
        "DELETE FROM segment_definitions WHERE org_id = ?1 AND sandbox = ?2 AND id = ?3",
        params![tenant.org_id, tenant.sandbox, id],
    )?;
    transaction.commit()?;
    Ok(())
}

/// Returns the ids of definitions evaluated with a merge policy (a policy in use cannot be deleted).
pub fn using_policy_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    policy_id: &str,
) -> Result<Vec<String>, StoreError> {
    let mut statement = connection.prepare(
        "SELECT id FROM segment_definitions WHERE org_id = ?1 AND sandbox = ?2 AND merge_policy_id = ?3 ORDER BY id",
    )?;
    let rows = statement.query_map(params![tenant.org_id, tenant.sandbox, policy_id], |row| {
        row.get(0)
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
