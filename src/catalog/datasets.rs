//! Catalog datasets (`ingest-api.md` §3.1–3.3): the containers that profile records, experience events and
//! export batches belong to. A dataset's `schemaRef.id` names its XDM class, and its `unifiedProfile`
//! tag decides whether its data feeds the profile store.

use std::collections::BTreeMap;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::store::metadata::{MetadataStore, StoreError};
use crate::tenant::Tenant;

/// XDM class of profile records.
pub const PROFILE_SCHEMA: &str = "https://ns.adobe.com/xdm/context/profile";
/// XDM class of experience events.
pub const EVENT_SCHEMA: &str = "https://ns.adobe.com/xdm/context/experienceevent";
/// The profile union schema, the class of export target datasets.
pub const PROFILE_UNION_SCHEMA: &str = "https://ns.adobe.com/xdm/context/profile__union";

/// A reference to the XDM schema a dataset conforms to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRef {
    /// The schema's `$id`, e.g. `https://ns.adobe.com/xdm/context/profile`.
    pub id: String,
    /// The schema's content type, e.g. `application/vnd.adobe.xed-full+json;version=1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// The body of `POST /dataSets`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewDataset {
    /// Human-readable name.
    #[serde(default)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The XDM schema; required.
    pub schema_ref: SchemaRef,
    /// Tags such as `unifiedProfile: ["enabled:true"]`.
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<String>>,
    /// Dataset-level opt-in for error diagnostics.
    #[serde(default)]
    pub enable_error_diagnostics: Option<bool>,
    /// File hints; `persisted: true` marks an export target.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub file_description: Option<serde_json::Value>,
}

/// A stored dataset, in Catalog's response shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dataset {
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Owning organization.
    pub ims_org: String,
    /// Owning sandbox.
    pub sandbox_name: String,
    /// Tags.
    pub tags: BTreeMap<String, Vec<String>>,
    /// The XDM schema.
    pub schema_ref: SchemaRef,
    /// Error diagnostics opt-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_error_diagnostics: Option<bool>,
    /// File hints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub file_description: Option<serde_json::Value>,
    /// Catalog object version.
    pub version: String,
    /// Creation time, Unix milliseconds.
    pub created: i64,
    /// Last update time, Unix milliseconds.
    pub updated: i64,
    /// Link to the dataset's files.
    pub files: String,
}

impl Dataset {
    /// Returns true when a tag like `unifiedProfile` holds `enabled:true` (spaces tolerated, as in
    /// Adobe's samples that write `enabled: true`).
    pub fn tag_enabled(&self, tag: &str) -> bool {
        self.tags.get(tag).is_some_and(|values| {
            values.iter().any(|value| {
                let mut parts = value.splitn(2, ':').map(str::trim);
                parts.next() == Some("enabled") && parts.next() == Some("true")
            })
        })
    }
}

/// Creates a new dataset id: 24 lowercase hex digits like Catalog's, time-ordered (UUIDv7 prefix).
fn new_dataset_id() -> String {
    let uuid = uuid::Uuid::now_v7().simple().to_string();
    // Bytes 0-5 are the timestamp and 6-11 mostly random: 24 digits keep order and 48+ random bits.
    uuid[..12].to_string() + &uuid[20..32]
}

/// Stores a new dataset; returns its id and the stored resource.
pub fn create_dataset_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    request: NewDataset,
    now_ms: i64,
) -> Result<(String, Dataset), StoreError> {
    let id = new_dataset_id();
    let dataset = Dataset {
        name: request.name,
        description: request.description,
        ims_org: tenant.org_id.clone(),
        sandbox_name: tenant.sandbox.clone(),
        tags: request.tags,
        schema_ref: request.schema_ref,
        enable_error_diagnostics: request.enable_error_diagnostics,
        file_description: request.file_description,
        version: "1.0.0".into(),
        created: now_ms,
        updated: now_ms,
        files: format!("@/dataSetFiles?dataSetId={id}"),
    };
    connection.execute(
        "INSERT INTO datasets (org_id, sandbox, id, created_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            tenant.org_id,
            tenant.sandbox,
            id,
            now_ms,
            serde_json::to_string(&dataset)?
        ],
    )?;
    Ok((id, dataset))
}

/// Stores a new dataset on the blocking pool; returns its id and the stored resource.
pub async fn create_dataset(
    store: &MetadataStore,
    tenant: &Tenant,
    request: NewDataset,
    now_ms: i64,
) -> Result<(String, Dataset), StoreError> {
    let tenant = tenant.clone();
    store
        .call(move |connection| create_dataset_blocking(connection, &tenant, request, now_ms))
        .await
}

/// Returns the dataset with this id in this tenant, if any.
pub fn get_dataset_blocking(
    connection: &rusqlite::Connection,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<Dataset>, StoreError> {
    crate::store::metadata::get_document(connection, "datasets", tenant, id)
}

/// Returns the dataset with this id in this tenant, if any.
pub async fn get_dataset(
    store: &MetadataStore,
    tenant: &Tenant,
    id: &str,
) -> Result<Option<Dataset>, StoreError> {
    let (tenant, id) = (tenant.clone(), id.to_owned());
    store
        .call(move |connection| get_dataset_blocking(connection, &tenant, &id))
        .await
}

/// Returns a page of the tenant's datasets, oldest first.
pub async fn list_datasets(
    store: &MetadataStore,
    tenant: &Tenant,
    start: usize,
    limit: usize,
) -> Result<Vec<(String, Dataset)>, StoreError> {
    let tenant = tenant.clone();
    store
        .call(move |connection| {
            let mut statement = connection.prepare(
                "SELECT id, body FROM datasets WHERE org_id = ?1 AND sandbox = ?2
                 ORDER BY created_ms, id LIMIT ?3 OFFSET ?4",
            )?;
            let rows = statement.query_map(
                params![tenant.org_id, tenant.sandbox, limit as i64, start as i64],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
            )?;
            let mut datasets = Vec::new();
            for row in rows {
                let (id, body) = row?;
                datasets.push((id, serde_json::from_str(&body)?));
            }
            Ok(datasets)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_ids_are_24_hex_digits_and_ordered() {
        let first = new_dataset_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_dataset_id();
        assert_eq!(first.len(), 24);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(first < second);
    }

    #[test]
    fn profile_tag_parsing_is_lenient_about_spaces() {
        let mut dataset: Dataset = serde_json::from_value(serde_json::json!({
            "imsOrg": "o", "sandboxName": "prod", "tags": {"unifiedProfile": ["enabled: true"]},
            "schemaRef": {"id": PROFILE_SCHEMA}, "version": "1.0.0", "created": 0, "updated": 0, "files": ""
        }))
        .unwrap();
        assert!(dataset.tag_enabled("unifiedProfile"));
        dataset
            .tags
            .insert("unifiedProfile".into(), vec!["enabled:false".into()]);
        assert!(!dataset.tag_enabled("unifiedProfile"));
    }
}
